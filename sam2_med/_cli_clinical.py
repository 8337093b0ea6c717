"""The command line's clinical outputs: ``sam2-med measure``, ``segment --rtstruct/--report``,
``batch --measurements``.

Kept apart from :mod:`sam2_med.cli` so the main command-line module only holds a few hooks;
everything here reuses its parser helpers and its one-line error handling (errors are
:class:`~sam2_med.errors.Sam2MedError` subclasses with the offending path).
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import Sam2MedError

MEASURE_HELP = """\
measurements (sam2_med.measure; definitions also in every JSON output):
  volume = voxel count x voxel volume (as 3D Slicer); surface = unsmoothed marching-cubes
  mesh (Slicer smooths its mesh: ~9% lower on a sphere); centroid in RAS and LPS mm;
  intensity in the image units (HU for CT): mean, SD (n-1), min, max, median, percentiles;
  RECIST on the --axis plane: the longest in-plane diameter over all slices (long axis) and,
  on that slice, the longest chord exactly perpendicular to it (short axis), end points in
  RAS and LPS mm. Anisotropic and oblique grids are measured exactly from the affine.
"""


# ------------------------------------------------------------------------------ parsers
def add_measure_command(
    sub: Any,
    *,
    formatter: Callable[[str], argparse.HelpFormatter],
    add_common: Callable[[argparse.ArgumentParser], None],
    epilog: str,
) -> argparse.ArgumentParser:
    """The ``sam2-med measure`` subcommand."""
    p = sub.add_parser(
        "measure",
        help="measure a mask: volume, surface, HU statistics, RECIST axes; RTSTRUCT, report",
        formatter_class=formatter,
        description=textwrap.dedent(
            """\
            Measure every structure of a label map on its image: voxel count, volume (mL),
            surface area, bounding box, centroid, intensity statistics (HU for CT) and the
            RECIST long and short axis. Prints a table; writes CSV/JSON, an RT Structure Set
            (DICOM images) and an HTML report on request. MASK must be on IMAGE's voxel grid
            (the same voxels, in any axis order).

            examples:
              sam2-med measure liver.nii.gz --image ct.nii.gz
              sam2-med measure organs.nii.gz --image ct.nii.gz --csv m.csv --json m.json
              sam2-med measure organs.nii.gz --image dicom/series/ --rtstruct rs.dcm --report rep/
              sam2-med measure organs.nii.gz --image ct.nii.gz --label liver --label 2
            """
        ),
        epilog=MEASURE_HELP + "\n" + epilog,
    )
    p.add_argument("mask", metavar="MASK", help="label map (NIfTI, NRRD, MHA) on IMAGE's grid")
    p.add_argument(
        "--image", required=True, metavar="IMAGE", help="the image (file or DICOM folder)"
    )
    p.add_argument("--series-uid", metavar="UID", help="series of a DICOM folder")
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="N|NAME",
        help="structure to measure, by value or name; repeatable (default: all present)",
    )
    p.add_argument(
        "--names",
        metavar="FILE.json",
        help='label names {"1": "liver", ...} (default: MASK\'s sidecar <stem>.json if present)',
    )
    p.add_argument(
        "--axis",
        default="axial",
        choices=("axial", "coronal", "sagittal"),
        help="plane of the RECIST slices, chosen from the affine (default axial)",
    )
    g = p.add_argument_group("outputs (the table is always printed)")
    g.add_argument("--csv", metavar="FILE.csv", help="one row per structure")
    g.add_argument("--json", metavar="FILE.json", help="every measurement, with definitions")
    add_clinical_outputs(g)
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_common(p)
    p.set_defaults(func=cmd_measure)
    return p


def add_clinical_outputs(group: Any) -> None:
    """``--rtstruct`` and ``--report`` (for ``segment`` and ``measure``)."""
    group.add_argument(
        "--rtstruct",
        metavar="OUT.dcm",
        help="also write a DICOM RT Structure Set referencing the source series (DICOM input)",
    )
    group.add_argument(
        "--report",
        metavar="DIR",
        help="also write DIR/report.html with a picture per structure and the measurements",
    )


# ------------------------------------------------------------------------------ checks
def check_clinical_outputs(args: argparse.Namespace, volume: Any, image_arg: Any) -> None:
    """Refuse before any work: an existing output, RTSTRUCT of a non-DICOM image."""
    from .cli import _check_output
    from .io import MaskWriteError, OutputExistsError
    from .report import REPORT_NAME

    if getattr(args, "rtstruct", None):
        _check_output(args.rtstruct, args.overwrite, suffixes=(".dcm",))
        if volume is not None and volume.provenance.format != "dicom":
            raise MaskWriteError(
                f"--rtstruct needs a DICOM image (this one is {volume.provenance.format}): an "
                "RT Structure Set references the source images",
                image_arg,
            )
    if getattr(args, "report", None):
        folder = Path(args.report)
        if folder.exists() and not folder.is_dir():
            raise MaskWriteError("--report must name a folder", folder)
        if (folder / REPORT_NAME).exists() and not args.overwrite:
            raise OutputExistsError(
                "a report exists in this folder; pass --overwrite to replace it", folder
            )


def write_clinical_outputs(
    args: argparse.Namespace, labels: Any, measurements: Sequence[Any], out: Any
) -> None:
    """Write ``--rtstruct`` and ``--report`` for a label map (after the mask itself)."""
    from .io import save_rtstruct
    from .report import write_report

    if getattr(args, "rtstruct", None):
        path = Path(args.rtstruct)
        path.parent.mkdir(parents=True, exist_ok=True)
        out.info(
            f"wrote {save_rtstruct(labels, path, reference=labels.reference, overwrite=args.overwrite)}"
        )
    if getattr(args, "report", None):
        report = write_report(
            labels, args.report, measurements=measurements, overwrite=args.overwrite
        )
        out.info(f"wrote {report}")


# ------------------------------------------------------------------------------ measure
def _label_names(args: argparse.Namespace, mask_path: Path) -> dict[int, str]:
    from .evaluate import read_label_names
    from .prompts import _sidecar_names

    return read_label_names(args.names) if args.names else _sidecar_names(mask_path)


def _requested(items: Sequence[str], names: dict[int, str], where: Path) -> list[int] | None:
    if not items:
        return None
    by_name = {v.lower(): k for k, v in names.items()}
    values = []
    for item in items:
        text = str(item).strip()
        if text.isdigit():
            values.append(int(text))
        elif text.lower() in by_name:
            values.append(by_name[text.lower()])
        else:
            known = ", ".join(sorted(names.values())[:8])
            hint = f" (known names: {known})" if names else " (name labels with --names)"
            raise Sam2MedError(f"unknown label {text!r}{hint}", where)
    return values


def cmd_measure(args: argparse.Namespace, out: Any) -> int:
    import numpy as np

    from .cli import EXIT_OK, _check_output
    from .io import load_volume
    from .labels import LabelVolume
    from .measure import (
        format_table,
        load_labels,
        measure,
        measurement_rows,
        measurements_json,
        write_measurements,
    )

    mask_path = Path(args.mask)
    if args.csv:
        _check_output(args.csv, args.overwrite, suffixes=(".csv",))
    if args.json:
        _check_output(args.json, args.overwrite, suffixes=(".json",))
    check_clinical_outputs(args, None, args.image)
    volume = load_volume(args.image, series_uid=args.series_uid)
    check_clinical_outputs(args, volume, args.image)
    names = _label_names(args, mask_path)
    labels = load_labels(mask_path, volume, names=names or None)
    names = dict(labels.names)
    wanted = _requested(args.label, names, mask_path)
    ms = measure(labels, label_values=wanted, plane=args.axis, where=mask_path)
    out.result(format_table(ms))
    if args.csv:
        out.info(
            f"wrote {write_measurements(args.csv, measurement_rows(ms), overwrite=args.overwrite)}"
        )
    if args.json:
        doc = measurements_json(ms, image=volume, mask=str(mask_path), plane=args.axis)
        out.info(f"wrote {write_measurements(args.json, doc, overwrite=args.overwrite)}")
    if wanted is not None:  # the RT Structure Set and report hold the chosen structures only
        chosen = np.where(np.isin(labels.array, wanted), labels.array, 0)
        labels = LabelVolume(chosen.astype(labels.array.dtype), volume, names)
    write_clinical_outputs(args, labels, ms, out)
    return EXIT_OK


# -------------------------------------------------------------------------------- batch
def add_batch_measurements(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--measurements",
        metavar="FILE.csv",
        help="write one row per finished case and structure (volume, RECIST, HU...), from the "
        "masks' sidecars; rewritten on every run",
    )


def write_batch_measurements(path: Any, outcomes: Sequence[Any], out: Any) -> Path:
    """One CSV row per finished job and structure, read from each mask's sidecar (measured
    again from the image and mask when the sidecar has none, e.g. from an older version)."""
    from .io._atomic import write_files_atomically
    from .io.writers import sidecar_path
    from .measure import _csv_text

    rows: list[dict[str, Any]] = []
    for o in outcomes:
        if o.status not in ("done", "skipped"):
            continue
        try:
            meta = json.loads(sidecar_path(o.job.output).read_text(encoding="utf-8"))
            structures = (meta.get("measurements") or {}).get("structures")
        except (OSError, ValueError, AttributeError):
            structures = None
        if structures is None:
            rows += _measure_job(o.job)
            continue
        rows += [_row_from_sidecar(o.job.name, s) for s in structures]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = _csv_text(rows) if rows else "case,label,name\n"
    write_files_atomically({p: text.encode("utf-8")}, overwrite=True)
    out.info(f"measurements: {p} ({len(rows)} rows)")
    return p


def _measure_job(job: Any) -> list[dict[str, Any]]:
    from .io import load_volume
    from .measure import load_labels, measure, measurement_rows

    labels = load_labels(job.output, load_volume(job.image))
    if not labels.array.any():
        return []
    return measurement_rows(measure(labels, where=job.output), case=job.name)


def _row_from_sidecar(case: str, s: dict[str, Any]) -> dict[str, Any]:
    """The CSV row of one structure from its sidecar entry (the columns of ``to_row``)."""
    from .measure import StructureMeasurements

    return {"case": case, **StructureMeasurements.from_dict(s).to_row()}
