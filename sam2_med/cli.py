"""The ``sam2-med`` command line: segment, batch, evaluate, measure, finetune, info, weights.

Exit codes (documented in ``sam2-med --help``):

* 0: success.
* 1: some batch jobs or evaluation cases failed (the others completed), or an internal error
  (a bug: rerun with ``--debug`` and report the traceback).
* 2: bad input or setup, anywhere: a missing, corrupt or unsupported file, invalid prompts,
  a prompt outside the image, an existing output without ``--overwrite``, bad options, missing
  model weights (the message says how to import them). One line on stderr,
  ``sam2-med: error: <path>: <problem>``, and no traceback unless ``--debug``.
* 130: interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import sys
import textwrap
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .errors import Sam2MedError

__all__ = ["main"]

PROG = "sam2-med"
EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

COORDINATES_HELP = """\
coordinates:
  --point and --box take 0-based voxel indices (i,j,k) of the image exactly as nibabel
  indexes the file (nib.load(f).get_fdata()[i, j, k]). napari shows the same 0-based
  indices (sam2-med's napari reader keeps the file's axis order unless the axes are
  permuted, e.g. a sagittal PSR series). ITK-SNAP shows 1-based voxel coordinates:
  subtract 1 from each of its numbers. For a DICOM folder, i = column, j = row and
  k = slice in position order (`sam2-med info` prints the grid). With --space world_ras
  or world_lps the numbers are millimetres (RAS: NIfTI/nibabel/3D Slicer; LPS: DICOM,
  ITK-SNAP and SimpleITK world coordinates); each point is taken in the voxel containing it.
"""

PROMPTS_HELP = """\
prompt JSON (--prompts FILE.json):
  {"space": "voxel",                       # required: voxel | world_ras | world_lps
   "objects": [
     {"name": "liver", "label": 1,         # optional; label 1..65535
      "points": [[i, j, k, 1], [i, j, k, 0]],   # 1 = positive, 0 = negative
      "boxes": [[i0, j0, k0, i1, j1, k1]],       # corners on one slice of --axis
      "mask": "liver_slice.nii.gz"}]}            # or {"file":..., "value": 5, "slice": 12}
  Mask paths are relative to the JSON file. Full schema: python -m pydoc sam2_med.prompts
  A mask sidecar written by sam2-med (MASK.json beside MASK.nii.gz, from segment, batch or
  the napari plugin) is also accepted: it replays the recorded session (its clicks, boxes,
  masks, propagations and undos, in order, with its axis and window) and writes the same
  label map voxel for voxel with the same model. Schema: python -m pydoc sam2_med.interactions
"""

MASK_HELP = """\
mask prompts (--mask-prompt FILE):
  a label map on the image grid (same voxels; another axis order or direction of the same
  grid is re-indexed exactly). Each distinct nonzero value becomes one object with that
  label (names from FILE's sidecar <stem>.json if present), prompted with the one slice
  along --axis where that label has the most voxels (lowest index on ties). Other slices
  of the file are not used: propagation fills them.
"""

EXIT_HELP = """\
exit codes:
  0 success; 1 some batch jobs / evaluation cases failed, or an internal error;
  2 bad input or setup (missing/corrupt file, invalid prompt, existing output without
  --overwrite, missing model weights): one line "sam2-med: error: <path>: <problem>"
  on stderr, the traceback only with --debug; 130 interrupted.
"""

MODEL_HELP = """\
models:
  --model NAME uses a registered model (see `sam2-med weights list`); its weights are
  downloaded once into the cache, or imported by hand on a machine without internet:
  `sam2-med weights import FILE.pt --model NAME`. --checkpoint FILE uses a local
  checkpoint (Meta's SAM 2 format or MedSAM2) instead: a published file is recognised
  by its SHA-256 whatever its name; any other file gets the architecture of the
  registered model it fits (a warning says which), or the one --arch names: a
  registered model (--arch medsam2) or an architecture JSON. Default model: {default}.
"""


# ------------------------------------------------------------------------------- parsing
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``sam2-med: error: ...``) and exit code 2.

    A value that starts like a negative number (``--point -31.5,12,40.2``, ``--window
    -600,1500``) is a value, not an option: no sam2-med option looks like a number.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # argparse's own pattern accepts only a single number ("-5", "-.5"); ours also takes
        # the comma-separated lists --point, --box and --window need
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str) -> NoReturn:
        hint = f" (see `{self.prog} --help`)"
        self.exit(EXIT_USAGE, f"{PROG}: error: {message}{hint}\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32, width=100)


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output and diagnostics")
    g.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of any error",
    )
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bar and no messages except errors",
    )


def _add_model(p: argparse.ArgumentParser) -> None:
    from .api import DEFAULT_MODEL
    from .protocols import PROTOCOLS

    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        metavar="NAME",
        help=f"registered model name (default: {DEFAULT_MODEL}; list: sam2-med weights list)",
    )
    g.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="local checkpoint file (Meta SAM 2 / MedSAM2 .pt) instead of a registered model",
    )
    g.add_argument(
        "--arch",
        metavar="NAME|FILE.json",
        help="architecture of a --checkpoint that is not a published file: a registered model "
        "name (e.g. medsam2 for a MedSAM2 fine-tune) or an architecture JSON",
    )
    g.add_argument(
        "--device", default="cpu", help="cpu (default), cuda, cuda:N or mps; never chosen for you"
    )
    g.add_argument(
        "--precision",
        "--dtype",
        dest="dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="compute precision: auto (default) runs bfloat16 where the device computes it "
        "natively (CUDA with bf16, CPUs with AMX-BF16 or AVX512-BF16) and float32 elsewhere; "
        "--dtype is its older name",
    )
    g.add_argument(
        "--protocol",
        default=None,
        choices=PROTOCOLS,
        help="sam2: sam2-med's float pipeline; medsam2: MedSAM2's published CT script (8-bit "
        "frames, SimpleITK slice layout, --window as clip bounds CENTER-+WIDTH/2, largest 3D "
        "component). Default: the model's own (medsam2 for --model medsam2, else sam2; a "
        "replayed session: the recorded one)",
    )


def _add_index(g: Any) -> None:
    g.add_argument(
        "--index",
        type=int,
        metavar="N",
        help="which volume of a 4D image or 4D DICOM series (0-based; required for 4D input)",
    )


def _add_slicing(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("slicing and intensity")
    g.add_argument(
        "--axis",
        default=None,
        choices=("axial", "coronal", "sagittal"),
        help="plane of the slices fed to the model; the voxel axis is chosen from "
        "the affine (default axial; a replayed session: the recorded one)",
    )
    g.add_argument(
        "--window",
        default=None,
        metavar="W",
        help="intensity: auto (the default: CT soft-tissue window, else 0.5-99.5 "
        "percentiles), a CT preset (soft_tissue, abdomen, liver, lung, bone, brain...), "
        "dicom, percentile, minmax, or CENTER,WIDTH in HU (a replayed session: the recorded "
        "one)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``sam2-med`` argument parser (all subcommands)."""
    from .api import DEFAULT_MODEL

    parser = _Parser(
        prog=PROG,
        formatter_class=_formatter,
        description=textwrap.dedent(
            """\
            Segment CT and MRI volumes with SAM 2: prompt one slice, propagate through the
            volume both ways, write a label map on the exact voxel grid of the image.

            Start here:
              sam2-med info scan.nii.gz                      # grid, orientation, voxel convention
              sam2-med segment scan.nii.gz --point 80,60,14 --out liver.nii.gz
              sam2-med segment scan.nii.gz --prompts prompts.json --out mask.nii.gz
              sam2-med batch jobs.csv --datalist datalist.json
              sam2-med evaluate ct.nii.gz --labels gt.nii.gz --label liver --label spleen
              sam2-med measure liver.nii.gz --image ct.nii.gz --csv liver.csv
              sam2-med weights list

            Run `sam2-med COMMAND --help` for each command's options and examples.
            """
        ),
        epilog=COORDINATES_HELP + "\n" + EXIT_HELP,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # -- segment ---------------------------------------------------------------------------
    seg = sub.add_parser(
        "segment",
        help="segment one image from prompts on one or more slices",
        formatter_class=_formatter,
        description=textwrap.dedent(
            """\
            Segment one image: prompts on one or more slices (points, boxes, a mask slice),
            propagated through the volume both ways. Writes a NIfTI label map on exactly the
            image's voxel grid (same shape and affine) plus a JSON sidecar <stem>.json with
            label names, the prompts in voxel indices, the model, per-slice scores and the
            session's interaction log (--prompts <stem>.json replays it exactly).

            examples:
              sam2-med segment ct.nii.gz --point 80,60,14 --point 60,60,14:neg --out liver.nii.gz
              sam2-med segment ct.nii.gz --box 50,40,14,110,90,14 --name liver --out liver.nii.gz
              sam2-med segment ct.nii.gz --mask-prompt liver_slice14.nii.gz --out liver.nii.gz
              sam2-med segment ct.nii.gz --prompts prompts.json --out organs.nii.gz
              sam2-med segment dicom/series/ --point 256,240,10 --out m.nii.gz --dicom-seg m.dcm
              sam2-med segment mr.nii.gz --space world_ras --point -31.5,12,40.2 --out m.nii.gz
              sam2-med segment ct.nii.gz --prompts p.json --checkpoint MedSAM2_latest.pt --out m.nii.gz
              sam2-med segment ct.nii.gz --prompts p.json --checkpoint my_finetune.pt --arch medsam2 \\
                  --out m.nii.gz
              sam2-med segment fmri.nii.gz --index 0 --point 40,40,20 --out m.nii.gz
              sam2-med segment ct.nii.gz --prompts liver.json --out liver_again.nii.gz  # replay
            """
        ),
        epilog="\n".join(
            [
                COORDINATES_HELP,
                PROMPTS_HELP,
                MASK_HELP,
                MODEL_HELP.format(default=DEFAULT_MODEL),
                EXIT_HELP,
            ]
        ),
    )
    seg.add_argument(
        "image",
        metavar="IMAGE",
        help="NIfTI (.nii/.nii.gz), NRRD, MHA/MHD, or a DICOM folder or file",
    )
    seg.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="MASK",
        help="label map to write (.nii.gz or .nii); sidecar <stem>.json beside it",
    )
    g = seg.add_argument_group("prompts (at least one; combined by label)")
    g.add_argument(
        "--point",
        action="append",
        default=[],
        metavar="i,j,k[:neg]",
        help="a point on the object (':neg' = outside it); repeatable",
    )
    g.add_argument(
        "--box",
        action="append",
        default=[],
        metavar="i0,j0,k0,i1,j1,k1",
        help="two opposite box corners on one slice of --axis; repeatable",
    )
    g.add_argument(
        "--space",
        default="voxel",
        choices=("voxel", "world_ras", "world_lps"),
        help="what --point/--box numbers mean (default voxel: 0-based i,j,k)",
    )
    g.add_argument(
        "--label",
        type=int,
        default=1,
        metavar="N",
        help="label value of the --point/--box object (default 1)",
    )
    g.add_argument("--name", metavar="NAME", help="structure name of the --point/--box object")
    g.add_argument(
        "--mask-prompt",
        metavar="FILE",
        help="label map on the image grid; its largest slice per label is the prompt",
    )
    g.add_argument(
        "--prompts",
        metavar="FILE.json",
        help="prompt JSON (schema below), or a sam2-med mask sidecar to replay its session",
    )
    gi = seg.add_argument_group("input and output")
    gi.add_argument(
        "--series-uid",
        metavar="UID",
        help="which series to read from a DICOM folder holding several",
    )
    _add_index(gi)
    gi.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (default: refuse)"
    )
    gi.add_argument(
        "--dicom-seg",
        metavar="OUT.dcm",
        help="also write a DICOM SEG referencing the source series (DICOM input only)",
    )
    gi.add_argument(
        "--compare",
        metavar="GT",
        help="a label map with known labels (same label values as the prompts): print each "
        "object's Dice against it",
    )
    from ._cli_clinical import add_clinical_outputs  # --rtstruct, --report

    add_clinical_outputs(gi)
    _add_slicing(seg)
    _add_model(seg)
    _add_common(seg)
    seg.set_defaults(func=cmd_segment)

    # -- batch -----------------------------------------------------------------------------
    bat = sub.add_parser(
        "batch",
        help="segment many images from a jobs table (resumable)",
        formatter_class=_formatter,
        description=textwrap.dedent(
            """\
            Segment every job of a CSV or YAML table. Columns (CSV header) or keys (YAML list
            of mappings, or {"jobs": [...]}):
              image    image path (NIfTI, NRRD, MHA, DICOM folder)
              prompts  prompt JSON, or a label map on the image grid (mask prompts)
              output   mask to write (.nii.gz)
              name     optional case name (default: the output's stem)
            Relative paths are relative to the jobs file. The model is loaded once.

            Resumable: a job whose output exists and whose sidecar records a complete run of
            the same prompts file (SHA-256) is skipped. A failing job is reported on one line
            and the others continue; a summary ends the run, and the exit code is 1 if any
            job failed. An existing output that is not a finished run (or was made from
            other prompts) is never replaced without --overwrite.

            examples:
              sam2-med batch jobs.csv --datalist datalist.json
              sam2-med batch jobs.yaml --checkpoint MedSAM2_latest.pt --model medsam2

            jobs.csv:
              name,image,prompts,output
              case01,images/case01.nii.gz,prompts/case01.json,masks/case01.nii.gz
            """
        ),
        epilog="\n".join([PROMPTS_HELP, MODEL_HELP.format(default=DEFAULT_MODEL), EXIT_HELP]),
    )
    bat.add_argument("jobs", metavar="JOBS", help="jobs table (.csv, .tsv or .yaml)")
    bat.add_argument(
        "--datalist",
        metavar="PATH",
        help='write a MONAI/Decathlon datalist {"training": [{"image", "label"}]} of '
        "every finished image/mask pair (paths relative to PATH's folder)",
    )
    bat.add_argument(
        "--overwrite", action="store_true", help="recompute every job and replace its outputs"
    )
    from ._cli_clinical import add_batch_measurements  # --measurements FILE.csv

    add_batch_measurements(bat)
    from ._cli_dask import DASK_HELP, add_dask_options  # --cluster, --scheduler

    add_dask_options(bat)
    bat.epilog = f"{DASK_HELP}\n{bat.epilog}"
    _add_slicing(bat)
    _add_model(bat)
    _add_common(bat)
    bat.set_defaults(func=cmd_batch)

    # -- evaluate ----------------------------------------------------------------------------
    ev = sub.add_parser(
        "evaluate",
        help="prompt from ground truth, propagate, report Dice / NSD / HD95",
        formatter_class=_formatter,
        description=textwrap.dedent(
            """\
            The research protocol (as in the SAM 2 / MedSAM2 3D evaluations): for each
            structure, derive one prompt from the ground truth on one slice (--prompt-slice
            largest: where it is largest; middle: halfway between its first and last slice),
            as a box (its bounding box there), a point (its most interior pixel) or its mask,
            propagate through the volume, and compare the 3D prediction with the ground truth:
            Dice, normalised surface distance at --nsd-tol mm and 95th-percentile Hausdorff
            distance in mm (MONAI metrics, voxel spacing from the image). All slices count,
            the prompt slice included. An empty prediction scores Dice 0, NSD 0, HD95 nan.

            examples:
              sam2-med evaluate ct.nii.gz --labels gt.nii.gz --label 1 --label 5
              sam2-med evaluate ct.nii.gz --labels gt.nii.gz --label liver --names labels.json \\
                  --prompt-mode point --prompt-slice middle --nsd-tol 1 --out-csv results.csv
              sam2-med evaluate --cases cases.csv --label liver --label spleen --out-csv all.csv

            cases.csv:  name,image,labels   (one ground-truth label map per image)
            """
        ),
        epilog="\n".join([MODEL_HELP.format(default=DEFAULT_MODEL), EXIT_HELP]),
    )
    ev.add_argument("image", nargs="?", metavar="IMAGE", help="image (omit with --cases)")
    ev.add_argument("--labels", metavar="GT", help="ground-truth label map on the image grid")
    ev.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="N|NAME",
        help="structure to evaluate, by value or name; repeatable (default: all)",
    )
    ev.add_argument(
        "--names",
        metavar="FILE.json",
        help='label names {"1": "spleen", ...} (default: the label map\'s sidecar '
        "<stem>.json if present)",
    )
    ev.add_argument("--cases", metavar="FILE", help="CSV/YAML of cases: image, labels[, name]")
    ev.add_argument(
        "--prompt-mode",
        default="box",
        choices=("box", "point", "mask"),
        help="prompt derived from the ground truth (default box)",
    )
    ev.add_argument(
        "--prompt-slice",
        default="largest",
        choices=("largest", "middle"),
        help="slice the prompt is placed on (default largest)",
    )
    ev.add_argument(
        "--nsd-tol",
        type=float,
        default=2.0,
        metavar="MM",
        help="surface tolerance of the normalised surface distance in mm (default 2)",
    )
    ev.add_argument("--out-csv", metavar="FILE", help="write one row per structure as CSV")
    ev.add_argument("--series-uid", metavar="UID", help="series of a DICOM folder")
    _add_index(ev)
    _add_slicing(ev)
    _add_model(ev)
    _add_common(ev)
    ev.set_defaults(func=cmd_evaluate)

    # -- measure (sam2_med._cli_clinical) -------------------------------------------------------
    from ._cli_clinical import add_measure_command

    add_measure_command(sub, formatter=_formatter, add_common=_add_common, epilog=EXIT_HELP)

    # -- finetune ----------------------------------------------------------------------------
    ft = sub.add_parser(
        "finetune",
        help="fine-tune SAM 2 on labelled volumes (or train a small model on phantoms)",
        formatter_class=_formatter,
        description=textwrap.dedent(
            """\
            Train SAM 2's video model on clips of consecutive slices of labelled volumes,
            with simulated clicks, boxes, masks and corrective clicks, and SAM 2's losses
            (focal 20, dice 1, IoU 1, object score 1; best of the multimask outputs).
            Starting weights: --model NAME or --checkpoint FILE (fine-tuning; the result
            inherits their licence), or --arch FILE.json alone (random weights). Data: a MONAI
            Decathlon datalist (its "training" section; "validation", if present, is scored
            every --val-every steps with the evaluation protocol), --image/--labels pairs, or
            --phantoms (random synthetic phantoms from the training seeds).

            OUT receives last.pt (Meta's checkpoint format: use it with --checkpoint and
            --arch OUT/arch.json), last.json (the training record), last.state.pt (to
            --resume), best.pt/best.json (highest validation Dice) and arch.json. Ctrl-C saves
            the current step; a non-finite loss stops the run and keeps the last checkpoint.

            examples:
              sam2-med finetune runs/liver --datalist dataset.json --model sam2.1_hiera_tiny \\
                  --steps 2000 --lr 1e-5 --freeze image_encoder
              sam2-med finetune runs/demo --phantoms --arch arch.json --steps 4000 --lr 1e-3
              sam2-med finetune runs/liver --resume
            """
        ),
        epilog=EXIT_HELP,
    )
    ft.add_argument("out_dir", metavar="OUT", help="output folder")
    g = ft.add_argument_group("data")
    g.add_argument("--datalist", metavar="FILE.json", help="MONAI Decathlon datalist")
    g.add_argument(
        "--image", action="append", default=[], metavar="FILE", help="image (repeatable)"
    )
    g.add_argument(
        "--labels", action="append", default=[], metavar="FILE", help="its label map (repeatable)"
    )
    g.add_argument("--phantoms", action="store_true", help="random synthetic phantoms")
    g.add_argument("--first-seed", type=int, default=0, metavar="N", help="first phantom seed")
    g.add_argument(
        "--val-phantoms",
        type=int,
        default=0,
        metavar="N",
        help="validate on N evaluation-seed phantoms (with --phantoms)",
    )
    g = ft.add_argument_group("starting weights")
    g.add_argument("--model", metavar="NAME", help="registered model to fine-tune")
    g.add_argument("--checkpoint", metavar="FILE", help="Meta-format checkpoint to fine-tune")
    g.add_argument("--arch", metavar="FILE.json", help="architecture (alone: random weights)")
    g.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    g = ft.add_argument_group("training")
    g.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    g.add_argument("--batch", type=int, default=4, help="clips per step (default 4)")
    g.add_argument("--clip-length", type=int, default=4, help="slices per clip (default 4)")
    g.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    g.add_argument("--warmup", type=int, default=100, help="warm-up steps (default 100)")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    g.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm clip (0: off)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument(
        "--object-score-weight",
        type=_non_negative,
        default=1.0,
        metavar="W",
        help="weight of the object-score loss (default 1, Meta's; from random weights use 20, "
        "the mask losses' weight, or the model never learns that an organ ends)",
    )
    g.add_argument(
        "--past-end",
        type=_fraction,
        default=0.0,
        metavar="P",
        help="share of clips that start near an object's end and run past it (default 0; "
        "0.5 with --object-score-weight 20 from random weights)",
    )
    g.add_argument(
        "--mask-loss-on-absent",
        action="store_true",
        help="also score masks on slices without the object, against an empty target (not "
        "Meta's training; from random weights it teaches the decoder where an organ ends)",
    )
    g.add_argument(
        "--freeze",
        action="append",
        default=[],
        choices=(
            "image_encoder",
            "prompt_encoder",
            "mask_decoder",
            "memory_attention",
            "memory_encoder",
        ),
        help="module group not to train (repeatable)",
    )
    g.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="auto: bfloat16 autocast only where the hardware has it natively (default)",
    )
    g.add_argument("--val-every", type=int, default=0, metavar="N", help="validate every N steps")
    g.add_argument("--checkpoint-every", type=int, default=100, metavar="N")
    g.add_argument("--no-augment", action="store_true", help="no MONAI augmentation of clips")
    g.add_argument("--resume", action="store_true", help="continue the run in OUT")
    g.add_argument("--overwrite", action="store_true", help="replace a run in OUT")
    _add_common(ft)
    ft.set_defaults(func=cmd_finetune)

    # -- info --------------------------------------------------------------------------------
    info = sub.add_parser(
        "info",
        help="print an image's grid: shape, spacing, orientation, affine, modality",
        formatter_class=_formatter,
        description=textwrap.dedent(
            """\
            Print what sam2-med reads from an image: shape (i, j, k), voxel spacing in mm,
            orientation code (which world direction each voxel axis points to), the voxel ->
            RAS and voxel -> LPS affines, modality, the stored display window, the intensity
            transform --window auto would use, and which voxel axis each plane's slices are
            stacked along. For a DICOM folder, every series found is listed first.

            examples:
              sam2-med info ct.nii.gz
              sam2-med info dicom_folder/ --series-uid 1.2.840...
              sam2-med info ct.nii.gz --json
            """
        ),
        epilog=COORDINATES_HELP,
    )
    info.add_argument("image", metavar="IMAGE", help="image file or DICOM folder")
    info.add_argument("--series-uid", metavar="UID", help="series of a DICOM folder")
    _add_index(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_common(info)
    info.set_defaults(func=cmd_info)

    # -- weights -----------------------------------------------------------------------------
    w = sub.add_parser(
        "weights",
        help="list, import and verify model weights",
        formatter_class=_formatter,
        description=textwrap.dedent(
            """\
            Model weights live in a cache folder ($SAM2_MED_CACHE, default ~/.cache/sam2-med).

            examples:
              sam2-med weights list                 # registered models, licences, cached files
              sam2-med weights import sam2.1_hiera_tiny.pt --model sam2.1_hiera_tiny
              sam2-med weights verify               # re-hash cached files against checksums
            """
        ),
    )
    wsub = w.add_subparsers(dest="weights_command", metavar="ACTION", parser_class=_Parser)
    wl = wsub.add_parser(
        "list", help="registered models, licences and cached files", formatter_class=_formatter
    )
    wl.add_argument("--cache-dir", metavar="DIR", help="weights cache (default: see above)")
    _add_common(wl)
    wl.set_defaults(func=cmd_weights_list)
    wi = wsub.add_parser(
        "import",
        help="install a downloaded checkpoint file into the cache",
        formatter_class=_formatter,
        description="Copy a checkpoint into the cache after checking its "
        "SHA-256 against the published one and its architecture.",
    )
    wi.add_argument("file", metavar="FILE", help="the downloaded .pt file")
    wi.add_argument("--model", required=True, metavar="NAME", help="registered model name")
    wi.add_argument("--cache-dir", metavar="DIR", help="weights cache")
    _add_common(wi)
    wi.set_defaults(func=cmd_weights_import)
    wv = wsub.add_parser(
        "verify",
        help="re-hash cached weights and compare with checksums",
        formatter_class=_formatter,
    )
    wv.add_argument("--cache-dir", metavar="DIR", help="weights cache")
    _add_common(wv)
    wv.set_defaults(func=cmd_weights_verify)
    w.set_defaults(func=lambda args, out: _missing_action(w))
    return parser


def _missing_action(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


# -------------------------------------------------------------------------------- helpers
class _Out:
    """stdout/stderr printing that respects --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def info(self, text: str = "") -> None:
        if not self.quiet:
            print(text, flush=True)

    def result(self, text: str = "") -> None:
        print(text, flush=True)

    def warn(self, text: str) -> None:
        if not self.quiet:
            print(f"{PROG}: warning: {text}", file=sys.stderr, flush=True)

    def volume_notes(self, volume: Any, where: Any) -> None:
        """Warn about what the reader found wrong but tolerated (non-finite voxels)."""
        if volume.provenance.extra.get("non_finite_voxels"):
            note = next(n for n in volume.provenance.notes if "non-finite" in n)
            self.warn(f"{where}: {note}")


def _non_negative(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0.0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _fraction(text: str) -> float:
    """argparse type: a number between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number between 0 and 1, got {text!r}"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text}")
    return value


def _window_arg(text: str) -> Any:
    parts = text.split(",")
    if len(parts) == 2:
        try:
            return (float(parts[0]), float(parts[1]))
        except ValueError:
            pass
    return text


def _check_output(
    path: str | os.PathLike[str], overwrite: bool, *, suffixes: Sequence[str]
) -> Path:
    """Fail early (before any work) on an output that exists or has the wrong suffix.

    Missing parent folders are created when the output is written."""
    from .io import MaskWriteError, OutputExistsError

    p = Path(path)
    if not p.name.lower().endswith(tuple(suffixes)):
        raise MaskWriteError(f"output must end in {' or '.join(suffixes)}", p)
    if p.exists() and not overwrite:
        raise OutputExistsError("output exists; pass --overwrite to replace it", p)
    if p.is_dir():
        raise MaskWriteError("output is a folder; give a file name", p)
    return p


def _arch(args: argparse.Namespace) -> str | dict[str, Any] | None:
    """--arch: a registered model name or an architecture JSON file."""
    from .api import resolve_arch

    return resolve_arch(args.arch) if getattr(args, "arch", None) else None


def _load_model(args: argparse.Namespace, out: _Out) -> Any:
    from .api import DEFAULT_MODEL
    from .models import load_model

    arch = _arch(args)
    name = args.model
    if args.checkpoint is None and name is None:
        name = DEFAULT_MODEL
    if arch is not None and args.checkpoint is None:
        raise Sam2MedError("--arch describes a --checkpoint file; give --checkpoint FILE too")
    lm = load_model(
        name,
        checkpoint=args.checkpoint,
        device=args.device,
        precision=args.dtype,
        arch=arch,
        protocol=getattr(args, "protocol", None),
    )
    out.info(f"model: {lm.name} ({lm.image_size} px) on {lm.device}, weights {lm.source}")
    from .protocols import PROTOCOL_SUMMARY
    from .session import resolve_protocol

    protocol, layout = resolve_protocol(lm)
    out.info(f"protocol: {protocol} ({PROTOCOL_SUMMARY[protocol]}), {layout} slice layout")
    if args.checkpoint is not None:
        sha = f"sha256 {lm.sha256}" if lm.sha256 else "a transformers folder"
        if lm.published:
            out.info(f"checkpoint: the published checkpoint of {lm.published} ({sha})")
        else:
            out.info(
                f"checkpoint: not a published checkpoint ({sha}); architecture: "
                f"{lm.arch_from or 'its config.json'}"
            )
    if lm.name != "custom":
        out.info(f"licence: {lm.licence}")
    return lm


#: Seconds between plain progress lines when stderr is not a terminal (a log file).
PLAIN_PROGRESS_SECONDS = 30.0


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _progress(
    out: _Out, desc: str, *, objects: int = 1, slices: int | None = None
) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A progress callback ``(done, total)`` on stderr, and a function that ends it.

    The count is slices per object ("object-slices": a slice tracked for two objects counts
    twice), and the bar or line says so when there is more than one object. On a terminal it
    is a tqdm bar; otherwise (a log file, a pipe) a plain line every
    :data:`PLAIN_PROGRESS_SECONDS` and one at the end. Nothing when quiet.
    """
    if out.quiet:
        return None, lambda: None
    unit = "slices" if objects == 1 else "object-slices"
    what = f" ({objects} objects x {slices} slices)" if objects > 1 and slices else ""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=None, unit=unit[:-1], desc=f"{desc}{what}", file=sys.stderr, leave=False)

        def update(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        return update, bar.close

    start = time.monotonic()
    state = {"last": start, "line": "", "printed": ""}

    def line(done: int, total: int) -> str:
        elapsed = time.monotonic() - start
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        left = ""
        if 0 < done < total:
            left = f", ~{_duration(elapsed * (total - done) / done)} left"
        return (
            f"{PROG}: {desc}: {done}/{total} {unit}{what}{pct}, {_duration(elapsed)} elapsed{left}"
        )

    def update(done: int, total: int) -> None:
        now = time.monotonic()
        state["line"] = line(done, total)
        if now - state["last"] >= PLAIN_PROGRESS_SECONDS:
            print(state["line"], file=sys.stderr, flush=True)
            state["last"], state["printed"] = now, state["line"]

    def close() -> None:
        # a run long enough to have printed progress ends with its final count
        if state["printed"] and state["line"] != state["printed"]:
            print(state["line"], file=sys.stderr, flush=True)

    return update, close


def _summary_of(result: Any) -> str:
    import numpy as np

    from .interactions import InteractionLog

    arr = result.labels.array
    lines = []
    other = tuple(a for a in range(3) if a != result.axis_index)
    if isinstance(result.prompts, InteractionLog):
        prompted = result.prompts.prompted_slices()
        objects = [(lab, name, prompted[lab]) for lab, name in result.prompts.names.items()]
    else:
        objects = [
            (o.label, o.name, list(o.slices(result.axis_index))) for o in result.prompts.objects
        ]
    for label, name, slices in objects:
        m = arr == label
        n_slices = int(np.count_nonzero(m.any(axis=other)))
        lines.append(
            f"  {label:>3} {name}: {int(m.sum())} voxels on {n_slices} "
            f"{result.axis} slices (prompted on {slices})"
        )
    return "\n".join(lines)


# -------------------------------------------------------------------------------- segment
def _gather_prompts(args: argparse.Namespace, volume: Any) -> Any:
    from .errors import PromptError
    from .prompts import (
        PromptSet,
        axis_index_for,
        check_points_on_finite_voxels,
        cli_object,
        load_prompts,
        mask_prompt_objects,
        merge_objects,
    )

    objects = []
    if args.prompts and _is_session_record(args.prompts):
        return _replay_log(args, volume)
    if args.prompts:
        objects += list(load_prompts(args.prompts, volume, axis=args.axis).objects)
    if args.mask_prompt:
        p = Path(args.mask_prompt)
        if not p.exists():
            raise PromptError("mask prompt file not found", p)
        objects += mask_prompt_objects(p, volume, axis=args.axis)
    obj = cli_object(
        volume,
        points=args.point,
        boxes=args.box,
        space=args.space,
        axis=args.axis,
        label=args.label,
        name=args.name,
        where=args.image,
    )
    if obj is not None:
        objects.append(obj)
    if not objects:
        raise PromptError(
            "no prompts: give --point, --box, --mask-prompt or --prompts (see sam2-med segment "
            "--help)",
            args.image,
        )
    prompt_set = PromptSet(
        tuple(merge_objects(objects, where=args.image)),
        args.axis,
        axis_index_for(volume, args.axis, args.image),
        source=args.prompts,
    )
    try:
        check_points_on_finite_voxels(prompt_set, volume)
    except PromptError as err:
        raise PromptError(err.problem, err.path or args.image) from None
    return prompt_set


def _is_session_record(path: Any) -> bool:
    """True when ``path`` is a JSON file holding a recorded session (a mask sidecar)."""
    from .api import _holds_interactions

    p = Path(path)
    return p.is_file() and p.suffix.lower() == ".json" and _holds_interactions(p)


def _replay_log(args: argparse.Namespace, volume: Any) -> Any:
    """The interaction log of ``--prompts SIDECAR.json``, checked against the other options."""
    from .errors import PromptError
    from .interactions import load_interactions

    if args.mask_prompt or args.point or args.box:
        raise PromptError(
            "a recorded session replays on its own: drop --point, --box and --mask-prompt "
            "(or give a plain prompt JSON instead)",
            args.prompts,
        )
    log = load_interactions(args.prompts, volume)
    if getattr(args, "axis_given", False) and args.axis != log.axis:
        raise PromptError(
            f"the recorded session slices {log.axis}; drop --axis {args.axis} to replay it",
            args.prompts,
        )
    if getattr(args, "window_given", False):
        raise PromptError(
            "a replay uses the recorded intensity window; drop --window to replay it",
            args.prompts,
        )
    if args.protocol is not None and args.protocol != log.protocol:
        raise PromptError(
            f"the recorded session used the {log.protocol} protocol; drop --protocol "
            f"{args.protocol} to replay it",
            args.prompts,
        )
    return log


def cmd_segment(args: argparse.Namespace, out: _Out) -> int:
    from .api import segment_volume
    from .batch import file_digest
    from .errors import PromptError
    from .io import load_volume
    from .io.writers import check_output_paths

    mask_path = _check_output(args.out, args.overwrite, suffixes=(".nii.gz", ".nii"))
    seg_path = None
    if args.dicom_seg:
        seg_path = _check_output(args.dicom_seg, args.overwrite, suffixes=(".dcm",))
    volume = load_volume(args.image, series_uid=args.series_uid, index=args.index)
    if seg_path is not None and volume.provenance.format != "dicom":
        raise PromptError("--dicom-seg needs a DICOM input image", args.image)
    out.volume_notes(volume, args.image)
    inputs = _input_files(args)
    # every output refusal now, before prompts are checked and the model loads: an output
    # that is an input, a sidecar path holding someone else's file, an existing file
    rtstruct = [Path(args.rtstruct)] if getattr(args, "rtstruct", None) else []
    check_output_paths(
        [mask_path, *([seg_path] if seg_path else []), *rtstruct],
        volume,
        overwrite=args.overwrite,
        inputs=inputs,
        create_folders=True,
    )
    from ._cli_clinical import check_clinical_outputs, write_clinical_outputs

    check_clinical_outputs(args, volume, args.image)  # --rtstruct, --report
    from .interactions import InteractionLog

    prompts = _gather_prompts(args, volume)
    replaying = isinstance(prompts, InteractionLog)
    window = None if replaying else _window_arg(args.window)
    if not replaying:
        _check_window(volume, window, args.image)
    truth = None
    if args.compare:
        from .evaluate import load_ground_truth

        truth = load_ground_truth(args.compare, volume)  # before any work: fail fast
    out.info(
        f"image: {args.image} {volume.shape} {volume.orientation}, spacing "
        f"{', '.join(f'{s:.3g}' for s in volume.spacing)} mm"
    )
    lm = _load_model(args, out)
    if replaying:
        out.info(
            f"replaying the session recorded in {args.prompts} ({len(prompts.events)} "
            f"interactions, {prompts.axis} slices)"
        )
        if prompts.model != lm.name:
            out.info(
                f"note: the session was recorded with the model {prompts.model}; replaying it "
                f"with {lm.name} gives that model's masks (give --model {prompts.model} for the "
                "same label map)"
            )
    progress, close = _progress(
        out,
        "propagating",
        objects=len(prompts.labels),
        slices=volume.shape[prompts.axis_index],
    )
    try:
        result = segment_volume(
            volume,
            prompts,
            lm,
            window=window,
            progress=progress,
            protocol=args.protocol,
            keep_object_masks=True,
        )
    finally:
        close()
    result.record["inputs"] = {
        "image": str(args.image),
        "series_uid": volume.provenance.series_uid,
        "index": args.index,
        "prompts": None if args.prompts is None else str(args.prompts),
        "prompts_file_sha256": None if args.prompts is None else file_digest(args.prompts),
        "mask_prompt": None if args.mask_prompt is None else str(args.mask_prompt),
        "command_line_prompts": {"point": args.point, "box": args.box, "space": args.space},
    }
    for p in (mask_path, seg_path):
        if p is not None:
            p.parent.mkdir(parents=True, exist_ok=True)
    from .measure import format_table

    present = [lab for lab in result.prompts.labels if (result.labels.array == lab).any()]
    measurements = result.measure(label_values=present) if present else []
    # mask, sidecar and SEG in one unit: a run racing this one replaces all or none of them
    written = result.save(
        mask_path,
        dicom_seg=seg_path,
        overwrite=args.overwrite,
        inputs=inputs,
        measurements=measurements,
    )
    out.info(f"wrote {written} ({result.seconds:.1f} s)")
    if seg_path is not None:
        out.info(f"wrote {seg_path}")
    out.info(_summary_of(result))
    if measurements:
        out.info(format_table(measurements))
    if not measurements and (args.rtstruct or args.report):
        raise Sam2MedError(
            f"every object came back empty, so no RT Structure Set or report was written "
            f"(the empty mask is in {written})",
            args.image,
        )
    write_clinical_outputs(args, result.labels, measurements, out)
    if truth is not None:
        out.result(_compare_line(result, truth, args.compare))
    return EXIT_OK


def _input_files(args: argparse.Namespace) -> list[str]:
    """Files a run reads besides the image (which the image's provenance lists)."""
    names = ("prompts", "mask_prompt", "checkpoint", "arch", "compare")
    return [str(v) for n in names if (v := getattr(args, n, None)) and Path(v).exists()]


def _compare_line(result: Any, truth: Any, where: Any) -> str:
    """``Dice against GT: liver 0.951, spleen 0.934`` (each object's own mask, 3D)."""

    parts = []
    for obj in result.prompts.objects:
        gt = truth == obj.label
        pred = (result.object_masks or {}).get(obj.label, result.labels.array == obj.label)
        den = int(gt.sum()) + int(pred.sum())
        dice = 2 * int((gt & pred).sum()) / den if den else 1.0
        parts.append(f"{obj.name or obj.label} {dice:.3f}" + ("" if gt.any() else " (absent)"))
    return f"Dice against {where}: " + ", ".join(parts)


def _check_window(volume: Any, window: Any, where: Any) -> None:
    from .intensity import resolve_intensity

    try:
        resolve_intensity(volume, window)
    except ValueError as err:
        raise Sam2MedError(f"--window: {err}", where) from None


# ---------------------------------------------------------------------------------- batch
def cmd_batch(args: argparse.Namespace, out: _Out) -> int:
    from .api import resolve_prompts, segment_volume
    from .batch import file_digest, finished_state, load_jobs, run_batch
    from .interactions import InteractionLog
    from .io import load_volume

    jobs = load_jobs(args.jobs)
    window = _window_arg(args.window)
    from ._cli_dask import run_on_dask, wants_dask

    if wants_dask(args):  # on a Dask cluster, whose workers load the model
        # None: the default for prompt files, the recorded one for a replayed session
        given = window if args.window_given else None
        return _finish_batch(args, run_on_dask(args, jobs, given, out), out)
    pending = [j for j in jobs if args.overwrite or finished_state(j.output)[0] != "finished"]
    model: list[Any] = []
    if pending:
        model.append(_load_model(args, out))  # once, and failing fast on a bad model

    def segment_job(job: Any, overwrite: bool) -> None:
        volume = load_volume(job.image)
        out.volume_notes(volume, job.image)
        prompts = resolve_prompts(job.prompts, volume, axis=args.axis)
        replaying = isinstance(prompts, InteractionLog)
        if replaying:  # a recorded session replays as recorded
            if args.window_given or (args.axis_given and args.axis != prompts.axis):
                raise Sam2MedError(
                    "a recorded session replays with its own axis and window; drop --axis "
                    "and --window for this batch",
                    job.prompts,
                )
            if args.protocol is not None and args.protocol != prompts.protocol:
                raise Sam2MedError(
                    f"a recorded session replays with its own protocol ({prompts.protocol}); "
                    f"drop --protocol {args.protocol} for this batch",
                    job.prompts,
                )
        else:
            _check_window(volume, window, job.image)
        progress, close = _progress(
            out,
            f"{job.name}: propagating",
            objects=len(prompts.labels),
            slices=volume.shape[prompts.axis_index],
        )
        try:
            result = segment_volume(
                volume,
                prompts,
                model[0],
                window=None if replaying else window,
                progress=progress,
                protocol=args.protocol,
            )
        finally:
            close()
        if result.cancelled:
            raise Sam2MedError("propagation was cancelled", job.output)
        result.record["inputs"] = {
            "image": str(job.image),
            "prompts": str(job.prompts),
            "prompts_file_sha256": file_digest(job.prompts),
        }
        job.output.parent.mkdir(parents=True, exist_ok=True)
        # the run record goes into the sidecar; the prompts file is an input, never an output
        result.save(job.output, overwrite=overwrite, inputs=[str(job.prompts)])

    outcomes = run_batch(
        jobs,
        segment_job,
        overwrite=args.overwrite,
        log=out.info,
        debug=getattr(args, "debug", False),
    )
    return _finish_batch(args, outcomes, out)


def _finish_batch(args: argparse.Namespace, outcomes: list[Any], out: _Out) -> int:
    """The end of a batch, wherever its jobs ran: failures when quiet, datalist, measurements,
    summary line; the exit code."""
    from .batch import summary_line, write_datalist

    for o in outcomes:
        if o.status == "failed" and out.quiet:
            print(f"{PROG}: {o.job.name}: {o.message}", file=sys.stderr)
    line = summary_line(outcomes)
    if args.datalist:
        names = _names_from_outputs(o.job.output for o in outcomes if o.status != "failed")
        p = write_datalist(outcomes, args.datalist, label_names=names)
        out.info(f"datalist: {p}")
    if args.measurements:
        from ._cli_clinical import write_batch_measurements

        write_batch_measurements(args.measurements, outcomes, out)
    out.result(line)
    return EXIT_FAILURES if any(o.status == "failed" for o in outcomes) else EXIT_OK


def _names_from_outputs(outputs: Any) -> dict[int, str]:
    from .io.writers import sidecar_path

    names: dict[int, str] = {}
    for path in outputs:
        try:
            meta = json.loads(sidecar_path(Path(path)).read_text(encoding="utf-8"))
            for k, v in (meta.get("label_names") or {}).items():
                names.setdefault(int(k), str(v))
        except (OSError, ValueError, AttributeError):
            continue
    return names


# ------------------------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace, out: _Out) -> int:
    from .api import segment_volume
    from .evaluate import (
        CaseSpec,
        evaluate_case,
        format_table,
        load_cases,
        load_ground_truth,
        read_label_names,
        resolve_structures,
        write_csv,
    )
    from .io import load_volume

    if args.cases:
        if args.image or args.labels:
            raise Sam2MedError(
                "give either IMAGE --labels GT or --cases FILE, not both", args.cases
            )
        cases = load_cases(args.cases)
    else:
        if not args.image or not args.labels:
            raise Sam2MedError("evaluate needs IMAGE and --labels GT (or --cases FILE)")
        cases = [
            CaseSpec(
                name=_case_name(Path(args.image)), image=Path(args.image), labels=Path(args.labels)
            )
        ]
    if args.nsd_tol < 0 or not math.isfinite(args.nsd_tol):
        raise Sam2MedError(f"--nsd-tol must be a non-negative number of mm, got {args.nsd_tol}")
    if args.out_csv:
        _check_output(args.out_csv, True, suffixes=(".csv",))
    names_override = read_label_names(args.names) if args.names else None
    window = _window_arg(args.window)
    single = len(cases) == 1

    def prepare(case: CaseSpec) -> tuple[Any, Any, dict[int, str]]:
        import numpy as np

        from .prompts import _sidecar_names

        volume = load_volume(case.image, series_uid=args.series_uid, index=args.index)
        out.volume_notes(volume, case.image)
        gt = load_ground_truth(case.labels, volume)
        names = names_override if names_override is not None else _sidecar_names(case.labels)
        present = [int(v) for v in np.unique(gt) if v != 0]
        structures = resolve_structures(args.label, names, present, case.labels)
        _check_window(volume, window, case.image)
        return volume, gt, structures

    prepared = []
    failures = 0
    for case in cases:  # validate every input before loading the model
        try:
            prepared.append((case, *prepare(case)))
        except Sam2MedError as err:
            if single:
                raise
            failures += 1
            print(f"{PROG}: case {case.name} FAILED: {err.cli_one_line()}", file=sys.stderr)
    rows = []
    if prepared:
        lm = _load_model(args, out)

        def run(volume: Any, prompt_set: Any) -> Any:
            progress, close = _progress(
                out,
                "propagating",
                objects=len(prompt_set.objects),
                slices=volume.shape[prompt_set.axis_index],
            )
            try:
                return segment_volume(
                    volume, prompt_set, lm, window=window, progress=progress, keep_object_masks=True
                )
            finally:
                close()

        for case, volume, gt, structures in prepared:
            out.info(
                f"case {case.name}: {len(structures)} structure(s), prompt "
                f"{args.prompt_mode} on the {args.prompt_slice} slice"
            )
            try:
                rows += evaluate_case(
                    volume,
                    gt,
                    structures,
                    run,
                    case=case.name,
                    axis=args.axis,
                    mode=args.prompt_mode,
                    slice_choice=args.prompt_slice,
                    nsd_tol=args.nsd_tol,
                )
            except Sam2MedError as err:
                if single:
                    raise
                failures += 1
                print(f"{PROG}: case {case.name} FAILED: {err.cli_one_line()}", file=sys.stderr)
    out.result(format_table(rows))
    if args.out_csv:
        out.info(f"wrote {write_csv(rows, args.out_csv)}")
    if failures:
        out.result(f"{failures} of {len(cases)} case(s) failed")
    return EXIT_FAILURES if failures else EXIT_OK


def _case_name(image: Path) -> str:
    from .evaluate import _stem

    return _stem(image)


# ----------------------------------------------------------------------------------- info
def describe_volume(volume: Any, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """JSON-ready geometry and intensity summary of a Volume (what ``sam2-med info`` prints)."""
    import numpy as np

    from . import geometry
    from .intensity import resolve_intensity

    prov = volume.provenance
    try:
        auto = resolve_intensity(volume, "auto").describe()
    except ValueError as err:
        auto = f"unavailable: {err}"
    arr = np.asarray(volume.array)
    finite = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr
    return {
        "path": str(path) if path is not None else (prov.paths[0] if prov.paths else None),
        "format": prov.format,
        "modality": volume.modality,
        "description": prov.description,
        "series_uid": prov.series_uid,
        "shape_ijk": list(volume.shape),
        "dtype": str(volume.dtype),
        "spacing_mm": [round(float(s), 6) for s in volume.spacing],
        "orientation": volume.orientation,
        "source_orientation": prov.source_orientation or volume.orientation,
        "oblique": geometry.is_oblique(volume.affine),
        "affine_ras": np.round(volume.affine, 6).tolist(),
        "affine_lps": np.round(volume.lps_affine, 6).tolist(),
        "slice_axis": {
            plane: {"axis": "ijk"[ax], "slices": int(volume.shape[ax])}
            for plane in ("axial", "coronal", "sagittal")
            for ax in [geometry.slice_axis(volume.affine, plane)]
        },
        "value_range": [float(finite.min()), float(finite.max())] if finite.size else None,
        "window_hint": (
            None
            if volume.window is None
            else {
                "center": volume.window.center,
                "width": volume.window.width,
                "explanation": volume.window.explanation,
            }
        ),
        "window_auto": auto,
        "notes": list(prov.notes),
    }


def _format_info(d: dict[str, Any]) -> str:
    def row(m: list[float]) -> str:
        return "  [" + " ".join(f"{v:>11.4f}" for v in m) + "]"

    hint = d["window_hint"]
    lines = [
        f"path:         {d['path']}",
        f"format:       {d['format']}" + (f" ({d['description']})" if d["description"] else ""),
        f"modality:     {d['modality']}"
        + ("  (unknown: NIfTI does not record it)" if d["modality"] == "OT" else ""),
        f"shape (i,j,k): {' x '.join(str(s) for s in d['shape_ijk'])}  ({d['dtype']})",
        f"spacing:      {' x '.join(f'{s:g}' for s in d['spacing_mm'])} mm",
        f"orientation:  {d['orientation']} (voxel axes i, j, k point towards "
        f"{', '.join(d['orientation'])}; nibabel axcodes)" + ("  OBLIQUE" if d["oblique"] else ""),
        "affine voxel (i,j,k) -> RAS mm:",
        *(row(r) for r in d["affine_ras"][:3]),
        "affine voxel (i,j,k) -> LPS mm (DICOM, ITK-SNAP):",
        *(row(r) for r in d["affine_lps"][:3]),
        "slices:       "
        + ", ".join(f"{p} along {v['axis']} ({v['slices']})" for p, v in d["slice_axis"].items()),
    ]
    if d["value_range"] is not None:
        lines.append(f"values:       {d['value_range'][0]:g} .. {d['value_range'][1]:g}")
    lines.append(
        "window hint:  "
        + (
            "none stored"
            if hint is None
            else f"center {hint['center']:g}, width {hint['width']:g}"
            + (f" ({hint['explanation']})" if hint["explanation"] else "")
        )
    )
    lines.append(f"--window auto: {d['window_auto']}")
    if d["series_uid"]:
        lines.append(f"series UID:   {d['series_uid']}")
    for note in d["notes"]:
        lines.append(f"note:         {note}")
    lines.append(
        "voxel indices are 0-based (i, j, k) as nibabel indexes the file; "
        "ITK-SNAP shows them 1-based"
    )
    return "\n".join(lines)


def cmd_finetune(args: argparse.Namespace, out: _Out) -> int:
    from .training import LossWeights, PhantomSource, TrainConfig, finetune
    from .training.trainer import TrainingError

    sources = [bool(args.datalist), bool(args.image or args.labels), args.phantoms]
    if sum(sources) != 1:
        raise TrainingError(
            "give exactly one of --datalist FILE, --image/--labels pairs, --phantoms"
        )
    if len(args.image) != len(args.labels):
        raise TrainingError(
            f"{len(args.image)} --image but {len(args.labels)} --labels: give them in pairs"
        )
    val: Any = None
    if args.phantoms:
        from .phantom import make_random_phantom, phantom_seed
        from .training import Case

        data: Any = PhantomSource(args.first_seed)
        val = []
        for i in range(args.val_phantoms):
            vol, lab = make_random_phantom(phantom_seed("eval", i))
            val.append(Case(f"eval_phantom_{i}", vol, lab.array, dict(lab.names), "eval seed"))
    elif args.datalist:
        data = args.datalist
    else:
        data = [{"image": i, "label": lab} for i, lab in zip(args.image, args.labels, strict=True)]
    config = TrainConfig(
        steps=args.steps,
        batch=args.batch,
        clip_length=args.clip_length,
        lr=args.lr,
        warmup=args.warmup,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        seed=args.seed,
        past_end=args.past_end,
        weights=LossWeights(
            object_score=args.object_score_weight, mask_on_absent=args.mask_loss_on_absent
        ),
        freeze=tuple(args.freeze),
        precision=args.precision,
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
        augment=not args.no_augment,
    )
    if args.resume and not (args.model or args.checkpoint or args.arch):
        arch_file = Path(args.out_dir) / "arch.json"
        if arch_file.is_file():
            args.arch = str(arch_file)
    result = finetune(
        args.out_dir,
        data=data,
        model=args.model,
        checkpoint=args.checkpoint,
        arch=_arch(args),
        config=config,
        val_data=val,
        device=args.device,
        resume=args.resume,
        overwrite=args.overwrite,
        log=None if not out.quiet else (lambda s: None),
    )
    val_text = "" if result.val_dice is None else f", validation Dice {result.val_dice:.4f}"
    out.result(f"{result.status} at step {result.step}: {result.checkpoint}{val_text}")
    return EXIT_INTERRUPTED if result.status == "interrupted" else EXIT_OK


def cmd_info(args: argparse.Namespace, out: _Out) -> int:
    from .io import MultipleSeriesError, list_series, load_volume

    p = Path(args.image)
    series_rows = None
    if p.is_dir():
        series = list_series(p)
        series_rows = [
            {
                "series_uid": s.series_uid,
                "description": s.description,
                "modality": s.modality,
                "slices": s.n_slices,
                "rows": s.rows,
                "cols": s.cols,
                "files": s.n_files,
                "series_number": s.series_number,
                "is_image": s.is_image,
                "summary": s.summary(),
            }
            for s in series
        ]
    try:
        volume = load_volume(p, series_uid=args.series_uid, index=args.index)
        desc: dict[str, Any] | None = describe_volume(volume, p)
    except MultipleSeriesError:
        desc = None  # several series and none chosen: the list says which to pick
    if args.json:
        out.result(json.dumps({"series": series_rows, "volume": desc}, indent=2))
        return EXIT_OK
    if series_rows is not None:
        out.result(f"{len(series_rows)} DICOM series under {p}:")
        for s in series_rows:
            out.result(f"  {s['summary']}")
        out.result("")
    if desc is None:
        out.result("several image series: choose one with --series-uid UID")
    else:
        out.result(_format_info(desc))
    return EXIT_OK


# -------------------------------------------------------------------------------- weights
def cmd_weights_list(args: argparse.Namespace, out: _Out) -> int:
    from .api import DEFAULT_MODEL
    from .config import user_model_dir
    from .models import cached_weights, default_cache_dir, get_spec, list_models
    from .models.loader import download_urls

    cache = args.cache_dir or default_cache_dir()
    cached = {e.name: e for e in cached_weights(args.cache_dir)}
    out.result(f"weights cache: {cache}")
    out.result(f"your model files (YAML): {user_model_dir()}")
    for name in list_models():
        spec = get_spec(name)
        entry = cached.get(name)
        mark = " (default)" if name == DEFAULT_MODEL else ""
        state = f"cached, {entry.size / 2**20:.1f} MiB, {entry.status}" if entry else "not cached"
        if spec.local_file is not None:
            state = f"{'' if entry else 'missing '}local file {spec.local_file}"
        out.result(f"{name}{mark}: {spec.description}")
        out.result(f"    licence: {spec.licence}; sha256: {spec.sha256 or 'none published'}")
        for note in spec.notes if spec.local_file is not None else ():
            out.result(f"    note: {note}")
        out.result(
            f"    weights: {state}"
            + ("" if entry else f"; get {spec.filename} from {' or '.join(download_urls(spec))}")
        )
    return EXIT_OK


def cmd_weights_import(args: argparse.Namespace, out: _Out) -> int:
    from .models import get_spec, import_weights

    spec = get_spec(args.model)
    dest = import_weights(args.file, args.model, cache_dir=args.cache_dir)
    out.result(f"imported {args.file} as {args.model} -> {dest}")
    out.result(f"licence: {spec.licence_text}")
    return EXIT_OK


def cmd_weights_verify(args: argparse.Namespace, out: _Out) -> int:
    from .models import default_cache_dir, verify_cache

    entries = verify_cache(args.cache_dir)
    cache = Path(args.cache_dir or default_cache_dir()).expanduser()
    if not any(cache in e.path.parents for e in entries):
        # what is listed besides comes with the package or a user's model file
        out.result(f"no cached weights in {cache}")
    bad = 0
    for e in entries:
        ok = e.status in ("verified", "unverified")
        bad += not ok
        out.result(f"{e.name}: {e.status} ({e.path}, sha256 {e.sha256})")
    if bad:
        print(
            f"{PROG}: error: {bad} cached file(s) failed verification; re-import them",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return EXIT_OK


# ----------------------------------------------------------------------------------- main
def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())


#: Libraries whose log records reach stderr through Python's last-resort handler.
_QUIET_LOGGERS = ("highdicom", "pydicom")


@contextlib.contextmanager
def _warnings_as_lines(quiet: bool) -> Iterator[None]:
    """Warnings on stderr as one line each, ``sam2-med: warning: <text>``, in command-line
    wording (:class:`~sam2_med.errors.Sam2MedWarning` carries one); with ``-q`` none at all, and
    the libraries' own log records below ERROR are silenced too. Restored on exit."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
            for lg in loggers:
                lg.setLevel(logging.ERROR)
        else:

            def show(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
                text = getattr(message, "cli", None) or str(message)
                print(f"{PROG}: warning: {' '.join(str(text).split())}", file=sys.stderr)

            warnings.showwarning = show
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def console_main() -> int:
    """Entry point of the ``sam2-med`` command and ``python -m sam2_med``: the process is ours, so
    the allocator is tuned for propagation (see :mod:`sam2_med._malloc`), then :func:`main`."""
    from ._malloc import tune_malloc_for_propagation

    tune_malloc_for_propagation()
    return main()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sam2-med`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    out = _Out(bool(getattr(args, "quiet", False)))
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    # --axis/--window default to axial/auto; None keeps "not given" for replays
    for name, default in (("axis", "axial"), ("window", "auto")):
        if hasattr(args, name):
            setattr(args, f"{name}_given", getattr(args, name) is not None)
            if getattr(args, name) is None:
                setattr(args, name, default)
    try:
        with _warnings_as_lines(out.quiet):
            return int(args.func(args, out))
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Sam2MedError as err:
        if debug:
            traceback.print_exc()
        head, *details = err.cli_lines()
        print(f"{PROG}: error: {head}", file=sys.stderr)
        for line in details:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # e.g. a folder that cannot be written
        if debug:
            traceback.print_exc()
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        print(f"{PROG}: error: {where}{err.strerror or _one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:
        if debug:
            traceback.print_exc()
        print(
            f"{PROG}: error: internal error: {type(err).__name__}: {_one_line(err)} "
            f"(rerun with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_FAILURES


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
