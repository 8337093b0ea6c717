"""The evaluation protocol: prompts derived from ground truth, propagation, MONAI metrics.

For each structure (a label value of a ground-truth map on the image grid):

1. **Prompt slice.** ``"largest"``: the slice along the propagation axis where the structure
   has the most voxels (lowest index on ties), as in the SAM 2 / MedSAM2 3D evaluations;
   ``"middle"``: the slice halfway between the first and last slice holding the structure
   (``(k_first + k_last) // 2``), or the nearest non-empty slice (lower on ties) if the structure
   skips it.
2. **Prompt** on that slice, from the ground truth only:
   ``"mask"``: the ground-truth slice itself; ``"box"``: its bounding box (two inclusive corner
   voxels); ``"point"``: one positive point at the structure's most interior pixel on the slice
   (the maximum of the 2D Euclidean distance transform, in voxel units; first in C order on
   ties). Deterministic, so runs are reproducible.
3. **Propagation** through the volume from that one slice, all structures of a case in one
   session (each its own object, tracked independently); each structure is scored on its own
   mask, before the label map resolves overlaps between structures.
4. **Metrics** in 3D on every slice, the prompt slice included, each structure against its own
   ground truth, with MONAI (voxel spacing in mm from the image affine):

   * Dice (:func:`monai.metrics.compute_dice`);
   * normalised surface distance at tolerance ``nsd_tol`` mm
     (:func:`monai.metrics.compute_surface_dice`);
   * 95th-percentile Hausdorff distance in mm (:func:`monai.metrics.compute_hausdorff_distance`,
     ``percentile=95``, symmetric).

   An empty prediction scores Dice 0 and NSD 0; its HD95 is undefined and reported as NaN
   (``nan`` in tables and CSV), and means over structures skip NaN.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PromptError, Sam2MedError
from .prompts import AXIS_NAMES, ObjectPrompts, PromptSet, axis_index_for, mask_to_image_grid
from .volume import Volume

__all__ = [
    "PROMPT_MODES",
    "SLICE_CHOICES",
    "CaseSpec",
    "StructureResult",
    "choose_slice",
    "corrective_click",
    "derive_prompt",
    "evaluate_case",
    "format_table",
    "load_cases",
    "load_ground_truth",
    "overlap_metrics",
    "summarize",
    "write_csv",
]

PROMPT_MODES = ("box", "point", "mask")
SLICE_CHOICES = ("largest", "middle")


@dataclass(frozen=True)
class StructureResult:
    """Metrics of one structure of one case.

    Attributes
    ----------
    case : str
    label : int
        Label value in the ground truth (and in the prediction).
    name : str
    prompt_mode : str
        ``"box"``, ``"point"`` or ``"mask"``.
    prompt_slice : int
        Slice index along the propagation axis the prompt was placed on.
    dice : float
        In [0, 1].
    nsd : float
        Normalised surface distance at ``nsd_tol`` mm, in [0, 1].
    hd95 : float
        95th-percentile symmetric Hausdorff distance in mm; NaN for an empty prediction.
    nsd_tol : float
        Tolerance in mm.
    gt_voxels, pred_voxels : int
    """

    case: str
    label: int
    name: str
    prompt_mode: str
    prompt_slice: int
    dice: float
    nsd: float
    hd95: float
    nsd_tol: float
    gt_voxels: int
    pred_voxels: int


# ---------------------------------------------------------------------------------- metrics
def overlap_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    *,
    nsd_tol: float = 2.0,
) -> dict[str, float]:
    """Dice, NSD and HD95 of one binary prediction against one binary ground truth (MONAI).

    Parameters
    ----------
    pred, gt : (I, J, K) array_like of bool
        Masks on the same voxel grid, indexed ``(i, j, k)``.
    spacing : (3,) sequence of float
        Voxel size in mm along ``(i, j, k)`` (``Volume.spacing``).
    nsd_tol : float
        Surface tolerance in mm for the normalised surface distance.

    Returns
    -------
    dict
        ``{"dice": float, "nsd": float, "hd95": float (mm)}``. An empty ``pred`` gives Dice 0,
        NSD 0 and HD95 NaN.

    Raises
    ------
    ValueError
        Different shapes, or an empty ground truth (nothing to evaluate).

    Examples
    --------
    >>> gt = np.zeros((12, 6, 6), bool); gt[2:7, 1:5, 1:5] = True
    >>> m = overlap_metrics(np.roll(gt, 1, axis=0), gt, (2.0, 1.0, 1.0), nsd_tol=2.0)
    >>> round(m["dice"], 6), m["hd95"], m["nsd"]
    (0.8, 2.0, 1.0)
    """
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    p = np.asarray(pred, dtype=bool)
    g = np.asarray(gt, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    if not g.any():
        raise ValueError("the ground truth is empty: nothing to evaluate")
    if not p.any():
        return {"dice": 0.0, "nsd": 0.0, "hd95": math.nan}
    tp = torch.as_tensor(p[None, None].astype(np.float32))
    tg = torch.as_tensor(g[None, None].astype(np.float32))
    sp = [float(s) for s in spacing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI deprecation chatter about its own internals
        dice = float(compute_dice(tp, tg, include_background=True)[0, 0])
        nsd = float(
            compute_surface_dice(
                tp, tg, class_thresholds=[float(nsd_tol)], include_background=True, spacing=sp
            )[0, 0]
        )
        hd95 = float(
            compute_hausdorff_distance(tp, tg, include_background=True, percentile=95, spacing=sp)[
                0, 0
            ]
        )
    return {"dice": dice, "nsd": nsd, "hd95": hd95}


# --------------------------------------------------------------------------------- protocol
def choose_slice(mask: np.ndarray, axis_index: int, choice: str = "largest") -> int:
    """The slice index along ``axis_index`` to prompt a structure on.

    Parameters
    ----------
    mask : (I, J, K) ndarray of bool
        The structure's ground truth.
    axis_index : int
        Voxel axis of the propagation.
    choice : {"largest", "middle"}
        See the module docstring.

    Examples
    --------
    >>> m = np.zeros((3, 3, 9), bool); m[1, 1, [2, 3, 7]] = True; m[:, :, 7] = True
    >>> choose_slice(m, 2, "largest"), choose_slice(m, 2, "middle")
    (7, 3)
    """
    if choice not in SLICE_CHOICES:
        raise ValueError(f"unknown slice choice {choice!r}; use one of {list(SLICE_CHOICES)}")
    other = tuple(a for a in range(3) if a != axis_index)
    area = np.asarray(mask, dtype=bool).sum(axis=other)
    nonzero = np.flatnonzero(area)
    if nonzero.size == 0:
        raise ValueError("the structure is empty")
    if choice == "largest":
        return int(np.argmax(area))
    mid = (int(nonzero[0]) + int(nonzero[-1])) // 2
    return int(nonzero[np.argmin(np.abs(nonzero - mid))])


def derive_prompt(
    mask: np.ndarray,
    axis_index: int,
    *,
    label: int,
    name: str,
    mode: str = "box",
    slice_choice: str = "largest",
) -> ObjectPrompts:
    """The prompt the protocol gives for one structure, from its ground truth alone.

    Parameters
    ----------
    mask : (I, J, K) ndarray of bool
        Ground truth of the structure, indexed ``(i, j, k)``.
    axis_index : int
        Voxel axis of the propagation.
    label, name
        Of the object to create.
    mode : {"box", "point", "mask"}
    slice_choice : {"largest", "middle"}

    Returns
    -------
    ObjectPrompts
        With exactly one box, one positive point, or one mask, on the chosen slice.
    """
    from scipy.ndimage import distance_transform_edt

    if mode not in PROMPT_MODES:
        raise ValueError(f"unknown prompt mode {mode!r}; use one of {list(PROMPT_MODES)}")
    m = np.asarray(mask, dtype=bool)
    k = choose_slice(m, axis_index, slice_choice)
    plane = np.take(m, k, axis=axis_index)
    in_plane = [a for a in range(3) if a != axis_index]
    if mode == "mask":
        return ObjectPrompts(label=label, name=name, masks=((k, plane),))
    if mode == "box":
        rows, cols = np.nonzero(plane)
        lo = np.zeros(3, dtype=np.int64)
        hi = np.zeros(3, dtype=np.int64)
        lo[axis_index] = hi[axis_index] = k
        lo[in_plane[0]], hi[in_plane[0]] = rows.min(), rows.max()
        lo[in_plane[1]], hi[in_plane[1]] = cols.min(), cols.max()
        return ObjectPrompts(label=label, name=name, boxes=((lo, hi),))
    dist = distance_transform_edt(np.pad(plane, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    pt = np.zeros(3, dtype=np.int64)
    pt[axis_index] = k
    pt[in_plane[0]], pt[in_plane[1]] = r, c
    return ObjectPrompts(
        label=label,
        name=name,
        points=pt[None, :],
        point_labels=np.ones(1, dtype=np.int64),
    )


def corrective_click(
    pred: np.ndarray, gt: np.ndarray, axis_index: int
) -> tuple[np.ndarray, int] | None:
    """The simulated corrective click of the protocol, or None when the prediction is exact.

    On the slice along ``axis_index`` with the most wrong voxels (false positives plus false
    negatives; lowest index on ties), at the most interior pixel of its largest connected error
    region (maximum of the 2D distance transform; first in C order on ties): positive (1) where
    the object was missed, negative (0) on a false positive.

    Parameters
    ----------
    pred, gt : (I, J, K) ndarray of bool
        Prediction and ground truth of one structure, indexed ``(i, j, k)``.
    axis_index : int

    Returns
    -------
    (ijk, label) : ((3,) int64 ndarray, int) or None
    """
    from scipy.ndimage import distance_transform_edt
    from scipy.ndimage import label as cc_label

    err = np.asarray(pred, bool) != np.asarray(gt, bool)
    other = tuple(a for a in range(3) if a != axis_index)
    per_slice = err.sum(axis=other)
    if per_slice.max() == 0:
        return None
    k = int(np.argmax(per_slice))
    plane = np.take(err, k, axis=axis_index)
    comp, _ = cc_label(plane)
    biggest = comp == int(np.argmax(np.bincount(comp.ravel())[1:])) + 1
    dist = distance_transform_edt(np.pad(biggest, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    ijk = np.zeros(3, np.int64)
    ijk[axis_index] = k
    ijk[other[0]], ijk[other[1]] = r, c
    return ijk, int(bool(np.asarray(gt)[tuple(ijk)]))


SegmentFn = Callable[[Volume, PromptSet], Any]


def evaluate_case(
    volume: Volume,
    ground_truth: np.ndarray,
    structures: Mapping[int, str],
    segment_fn: SegmentFn,
    *,
    case: str = "case",
    axis: str = "axial",
    mode: str = "box",
    slice_choice: str = "largest",
    nsd_tol: float = 2.0,
) -> list[StructureResult]:
    """Run the protocol on one image.

    Parameters
    ----------
    volume : Volume
    ground_truth : (I, J, K) ndarray of int
        Label map on ``volume``'s grid (see :func:`load_ground_truth`).
    structures : mapping int -> str
        Label values to evaluate and their names; each must be present in ``ground_truth``.
    segment_fn : callable(volume, prompt_set) -> result
        Runs the propagation. Each structure is scored on ``result.object_masks[label]`` when
        present (its own mask, before the label map resolves overlaps between structures, so
        the order structures were added does not change their scores), else on
        ``result.labels.array == label``. In the CLI: :func:`sam2_med.api.segment_volume` with
        a loaded model and ``keep_object_masks=True``.
    case : str
        Name of the case in the results.
    axis, mode, slice_choice, nsd_tol
        See the module docstring.

    Returns
    -------
    list of StructureResult
        One per structure, in label order.
    """
    if axis not in AXIS_NAMES:
        raise PromptError(f"unknown axis {axis!r}; use one of {list(AXIS_NAMES)}")
    gt = np.asarray(ground_truth)
    axis_index = axis_index_for(volume, axis, None)
    objects = []
    for label in sorted(structures):
        m = gt == label
        if not m.any():
            raise Sam2MedError(
                f"label {label} ({structures[label]}) is absent from the ground truth"
            )
        objects.append(
            derive_prompt(
                m,
                axis_index,
                label=label,
                name=structures[label],
                mode=mode,
                slice_choice=slice_choice,
            )
        )
    prompt_set = PromptSet(tuple(objects), axis, axis_index, source=f"ground truth ({mode})")
    result = segment_fn(volume, prompt_set)
    own = getattr(result, "object_masks", None) or {}
    labels = getattr(result, "labels", result)
    pred = np.asarray(getattr(labels, "array", labels))
    out = []
    for obj in objects:
        mask = own[obj.label] if obj.label in own else pred == obj.label
        metrics = overlap_metrics(mask, gt == obj.label, volume.spacing, nsd_tol=nsd_tol)
        out.append(
            StructureResult(
                case=case,
                label=obj.label,
                name=obj.name,
                prompt_mode=mode,
                prompt_slice=obj.slices(axis_index)[0],
                nsd_tol=float(nsd_tol),
                gt_voxels=int((gt == obj.label).sum()),
                pred_voxels=int(np.count_nonzero(mask)),
                **metrics,
            )
        )
    return out


# ------------------------------------------------------------------------------- inputs
def load_ground_truth(path: str | os.PathLike[str], volume: Volume) -> np.ndarray:
    """Read a ground-truth label map and put it on ``volume``'s grid (exact re-indexing only).

    Returns
    -------
    (I, J, K) ndarray of int64
        Indexed like ``volume.array``.

    Raises
    ------
    Sam2MedError
        Unreadable file, off-grid map, or non-integer values.
    """
    from .io import load_volume

    p = Path(path)
    gt = load_volume(p)
    arr = mask_to_image_grid(gt, volume, where=p)
    if np.issubdtype(arr.dtype, np.floating) and not np.all(arr == np.round(arr)):
        raise PromptError("ground truth must hold integer labels, found fractional values", p)
    return arr.astype(np.int64)


def read_label_names(path: str | os.PathLike[str]) -> dict[int, str]:
    """Label names from a JSON file: ``{"1": "spleen", ...}`` or a sam2-med sidecar
    (``"label_names"``)."""
    import json

    p = Path(path)
    if not p.is_file():
        raise Sam2MedError("label names file not found", p)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise Sam2MedError(
            f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}", p
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise Sam2MedError(f"cannot read label names: {err}", p) from None
    except RecursionError:
        raise Sam2MedError("JSON nested too deeply to read; not a label names file", p) from None
    if isinstance(data, dict) and isinstance(data.get("label_names"), dict):
        data = data["label_names"]
    if not isinstance(data, dict):
        raise Sam2MedError('label names must be a JSON object like {"1": "spleen"}', p)
    out = {}
    for key, value in data.items():
        try:
            out[int(key)] = str(value)
        except (TypeError, ValueError):
            raise Sam2MedError(f"label names key {key!r} is not an integer", p) from None
    return out


def resolve_structures(
    requested: Sequence[str], names: Mapping[int, str], present: Sequence[int], where: Any
) -> dict[int, str]:
    """Label values and names to evaluate from ``--label`` values (numbers or names).

    With nothing requested, every label present in the ground truth is evaluated.
    """
    present_set = {int(v) for v in present}
    by_name = {v.lower(): k for k, v in names.items()}
    out: dict[int, str] = {}
    for item in requested or [str(v) for v in sorted(present_set)]:
        text = str(item).strip()
        if text.isdigit():
            value = int(text)
        elif text.lower() in by_name:
            value = by_name[text.lower()]
        else:
            known = ", ".join(sorted(names.values())[:8])
            hint = f" (known names: {known}...)" if names else " (give label names with --names)"
            raise Sam2MedError(f"unknown label {text!r}{hint}", where)
        if value not in present_set:
            raise Sam2MedError(f"label {value} ({names.get(value, text)}) is absent", where)
        out[value] = names.get(value, f"label_{value}")
    return out


@dataclass(frozen=True)
class CaseSpec:
    """One line of a ``--cases`` file: image, ground truth, optional name."""

    name: str
    image: Path
    labels: Path


def load_cases(path: str | os.PathLike[str]) -> list[CaseSpec]:
    """Read a cases file: CSV with a header ``image,labels[,name]`` or YAML (a list of mappings,
    or ``{"cases": [...]}``). Relative paths are resolved against the file's folder."""
    from .batch import read_table

    p = Path(path)
    rows = read_table(p, required=("image", "labels"), optional=("name",), list_key="cases")
    out = []
    for row in rows:
        image = _resolve(p, row["image"])
        name = row.get("name") or _stem(image)
        out.append(CaseSpec(name=str(name), image=image, labels=_resolve(p, row["labels"])))
    return out


def _resolve(base_file: Path, value: str) -> Path:
    q = Path(os.path.expanduser(str(value)))
    return q if q.is_absolute() else base_file.parent / q


def _stem(path: Path) -> str:
    """A case name from an image path: the file name without its image suffix, or the folder's
    name for generic names (``case01/image.nii.gz`` -> ``case01``) and DICOM folders."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            stem = name[: -len(suffix)]
            return stem if stem not in ("image", "img", "") else (path.parent.name or stem)
    return name


# ------------------------------------------------------------------------------ reporting
def summarize(rows: Sequence[StructureResult]) -> list[dict[str, Any]]:
    """Per-case means (NaN skipped) of Dice, NSD and HD95: ``[{"case", "dice", "nsd", "hd95",
    "n"}]``."""
    out = []
    for case in dict.fromkeys(r.case for r in rows):
        sel = [r for r in rows if r.case == case]
        out.append(
            {
                "case": case,
                "n": len(sel),
                **{k: _nanmean([getattr(r, k) for r in sel]) for k in ("dice", "nsd", "hd95")},
            }
        )
    return out


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else math.nan


def _f(v: float, digits: int = 3) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.{digits}f}"


def format_table(rows: Sequence[StructureResult]) -> str:
    """A plain-text table: one line per structure, then one mean line per case (and overall)."""
    if not rows:
        return "(no results)"
    tol = rows[0].nsd_tol
    header = ["case", "structure", "label", "prompt", "slice", "dice", f"nsd@{tol:g}mm", "hd95_mm"]
    lines = [
        [
            r.case,
            r.name,
            str(r.label),
            r.prompt_mode,
            str(r.prompt_slice),
            _f(r.dice),
            _f(r.nsd),
            _f(r.hd95, 2),
        ]
        for r in rows
    ]
    for s in summarize(rows):
        lines.append(
            [
                s["case"],
                f"mean of {s['n']}",
                "",
                "",
                "",
                _f(s["dice"]),
                _f(s["nsd"]),
                _f(s["hd95"], 2),
            ]
        )
    if len({r.case for r in rows}) > 1:
        lines.append(
            [
                "ALL",
                f"mean of {len(rows)}",
                "",
                "",
                "",
                _f(_nanmean([r.dice for r in rows])),
                _f(_nanmean([r.nsd for r in rows])),
                _f(_nanmean([r.hd95 for r in rows]), 2),
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    numeric = {2, 4, 5, 6, 7}

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines)])


def write_csv(rows: Sequence[StructureResult], path: str | os.PathLike[str]) -> Path:
    """One CSV row per structure with every :class:`StructureResult` field (NaN as ``nan``)."""
    p = Path(path)
    fields = list(StructureResult.__dataclass_fields__)
    try:
        with open(p, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            for r in rows:
                w.writerow(asdict(r))
    except OSError as err:
        raise Sam2MedError(f"cannot write CSV: {err.strerror or err}", p) from None
    return p
