"""Prompts as plain data: parse, validate and convert them to voxel indices of one image.

A researcher writes prompts as JSON (or a Python dict of the same shape); this module turns them
into :class:`ObjectPrompts` that a :class:`~sam2_med.session.Session` accepts, every coordinate
an integer voxel index ``(i, j, k)`` of the image, checked against its shape.

Coordinate conventions
----------------------
Every prompt says which space its coordinates are in (there is no silent default):

``"voxel"``
    0-based array indices ``(i, j, k)`` exactly as nibabel indexes the file
    (``nib.load(f).get_fdata()[i, j, k]``); napari shows the same 0-based indices (sam2-med's
    napari reader keeps the file's axis order unless the axes are permuted, e.g. sagittal PSR). For a DICOM series ``i`` is the column, ``j`` the row and ``k`` the
    slice in position order (the order sam2-med's reader stacks them; see ``sam2-med info``).
    ITK-SNAP shows **1-based** voxel coordinates: subtract 1 from each of its numbers.
``"world_ras"``
    World millimetres in RAS+ (+x Right, +y Anterior, +z Superior; NIfTI, nibabel, 3D Slicer).
``"world_lps"``
    World millimetres in LPS+ (+x Left, +y Posterior, +z Superior; DICOM patient coordinates,
    ITK-SNAP's and SimpleITK's world coordinates).

A world point is converted to the voxel that contains it (voxel ``n`` spans ``[n - 0.5,
n + 0.5)`` along each axis). A point or box outside the image is an error, never clipped.

Prompt JSON schema
------------------
::

    {
      "space": "voxel",                      # required: "voxel" | "world_ras" | "world_lps"
      "objects": [                           # required: one entry per structure
        {
          "name": "liver",                   # optional; default "object_<label>"
          "label": 1,                        # optional, 1..65535; default: next free value
          "points": [[i, j, k, 1],           # optional; 4th value 1 = positive (inside),
                     [i, j, k, 0]],          #   0 = negative (outside); [i, j, k] = positive
          "boxes": [[i0, j0, k0, i1, j1, k1]],  # optional; two opposite corners, both included,
                                             #   on one slice of the propagation axis
          "mask": "liver_slice.nii.gz",      # optional; NIfTI on the image grid (path relative
                                             #   to the JSON file), or {"file": ..., "value": 5,
                                             #   "slice": 12}: voxels equal to "value" (default:
                                             #   any nonzero) on slice "slice" of the propagation
                                             #   axis (default: the slice where the mask is
                                             #   largest)
          "space": "world_lps"               # optional: overrides the top-level space for this
        }                                    #   object's points and boxes
      ]
    }

Each object needs at least one point, box or mask. Objects that share a label are one object
(their prompts are merged). Unknown keys are refused, so a typo does not silently drop a prompt.

Mask prompts
------------
A mask file must be on the image's voxel grid: the same shape and affine, or the same voxels in
another axis order or direction (for example a LAS label map of an LPS DICOM series), which is
re-indexed exactly. Anything that would need interpolation is refused. One slice of the mask
along the propagation axis is used: the one named by ``"slice"``, else the one where the mask
has the most voxels (the lowest such index on ties).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import geometry
from .errors import PromptError
from .volume import Volume

__all__ = [
    "AXIS_NAMES",
    "SPACES",
    "ObjectPrompts",
    "PromptSet",
    "check_slices",
    "cli_object",
    "load_prompts",
    "mask_prompt_objects",
    "mask_to_image_grid",
    "merge_objects",
    "parse_box_arg",
    "parse_point_arg",
    "parse_prompts",
    "to_voxel",
]

#: Coordinate spaces a prompt may be given in.
SPACES = ("voxel", "world_ras", "world_lps")

#: Propagation axes by anatomical plane (the slice axis is chosen from the affine).
AXIS_NAMES = ("axial", "coronal", "sagittal")

_OBJECT_KEYS = {"name", "label", "points", "boxes", "mask", "space"}
_TOP_KEYS = {"space", "objects", "description"}
_MASK_KEYS = {"file", "value", "slice"}
_GRID_TOL_MM = 1e-3


@dataclass(frozen=True)
class ObjectPrompts:
    """Every prompt of one object, in voxel indices of the image.

    Attributes
    ----------
    label : int
        Label value of the object in the output map, 1..65535.
    name : str
        Structure name (written to the label-names sidecar).
    points : (N, 3) ndarray of int64
        Voxel indices ``(i, j, k)`` of the point prompts.
    point_labels : (N,) ndarray of int64
        1 for a positive point (inside the object), 0 for a negative one.
    boxes : tuple of ((3,) ndarray, (3,) ndarray)
        Two opposite corners ``(i, j, k)`` of each box, both inside the box; both corners lie on
        the same slice of the propagation axis.
    masks : tuple of (int, ndarray)
        ``(slice_index, mask2d)``: a bool mask shaped like
        ``np.take(volume.array, slice_index, axis=axis_index)``.
    """

    label: int
    name: str
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    point_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    boxes: tuple[tuple[np.ndarray, np.ndarray], ...] = ()
    masks: tuple[tuple[int, np.ndarray], ...] = ()

    def is_empty(self) -> bool:
        """True when the object has no point, box or mask."""
        return len(self.points) == 0 and not self.boxes and not self.masks

    def slices(self, axis_index: int) -> tuple[int, ...]:
        """Sorted slice indices (along ``axis_index``) that carry a prompt of this object."""
        ks = {int(p[axis_index]) for p in self.points}
        ks.update(int(a[axis_index]) for a, _ in self.boxes)
        ks.update(int(k) for k, _ in self.masks)
        return tuple(sorted(ks))

    def points_by_slice(self, axis_index: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Points grouped by slice: ``[(k, points (n, 3), labels (n,)), ...]`` sorted by ``k``."""
        out = []
        ks = self.points[:, axis_index] if len(self.points) else np.zeros(0, dtype=np.int64)
        for k in sorted({int(v) for v in ks}):
            sel = ks == k
            out.append((k, self.points[sel], self.point_labels[sel]))
        return out

    def describe(self, axis_index: int) -> dict[str, Any]:
        """JSON-ready summary (counts and slices) for sidecars and logs."""
        return {
            "label": self.label,
            "name": self.name,
            "points": self.points.tolist(),
            "point_labels": self.point_labels.tolist(),
            "boxes": [[*a.tolist(), *b.tolist()] for a, b in self.boxes],
            "mask_slices": [int(k) for k, _ in self.masks],
            "mask_voxels": [int(m.sum()) for _, m in self.masks],
            "prompted_slices": list(self.slices(axis_index)),
        }


@dataclass(frozen=True)
class PromptSet:
    """The prompts of every object for one image and one propagation axis.

    Attributes
    ----------
    objects : tuple of ObjectPrompts
        Sorted by label; labels are unique.
    axis : str
        ``"axial"``, ``"coronal"`` or ``"sagittal"``.
    axis_index : int
        The voxel axis (0, 1 or 2 of ``(i, j, k)``) the slices are stacked along, chosen from
        the image affine (:func:`sam2_med.geometry.slice_axis`).
    source : str or None
        Where the prompts came from (a file), for messages.
    """

    objects: tuple[ObjectPrompts, ...]
    axis: str
    axis_index: int
    source: str | None = None

    def __post_init__(self) -> None:
        labels = [o.label for o in self.objects]
        if len(set(labels)) != len(labels):
            raise PromptError(f"labels must be unique, got {labels}", self.source)
        for obj in self.objects:
            check_slices(obj, self.axis_index, where=self.source)

    @property
    def labels(self) -> tuple[int, ...]:
        return tuple(o.label for o in self.objects)

    @property
    def names(self) -> dict[int, str]:
        """Label value -> name."""
        return {o.label: o.name for o in self.objects}

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary of every object's prompts, in voxel indices."""
        return {
            "space": "voxel",
            "axis": self.axis,
            "axis_index": self.axis_index,
            "source": self.source,
            "objects": [o.describe(self.axis_index) for o in self.objects],
        }


def check_slices(obj: ObjectPrompts, axis_index: int, *, where: Any = None) -> None:
    """Refuse prompt combinations on one slice that SAM 2 would silently reduce.

    Per object and slice: a mask prompt is the slice's whole prompt (points or a box beside it
    would replace it), and there is at most one box (a second box would replace the first).
    Points and one box on a slice are fine: they go to the decoder together.

    Raises
    ------
    PromptError
    """
    mask_slices = [int(k) for k, _ in obj.masks]
    box_slices = [int(a[axis_index]) for a, _ in obj.boxes]
    point_slices = {int(p[axis_index]) for p in obj.points}
    dup = sorted({k for k in box_slices if box_slices.count(k) > 1})
    if dup:
        raise PromptError(
            f"object {obj.label} ({obj.name}) has several boxes on slice {dup[0]}; give one box "
            "per slice (add points to refine it)",
            where,
        )
    clash = sorted(set(mask_slices) & (set(box_slices) | point_slices))
    if clash:
        raise PromptError(
            f"object {obj.label} ({obj.name}) has a mask and points or a box on slice "
            f"{clash[0]}; a mask prompt is the whole prompt of its slice",
            where,
        )


# ----------------------------------------------------------------------------- coordinates
def to_voxel(
    coords: np.ndarray | Sequence[Sequence[float]],
    volume: Volume,
    space: str,
    *,
    where: str | os.PathLike[str] | None = None,
    what: str = "point",
) -> np.ndarray:
    """Convert coordinates to the integer voxel indices of ``volume`` and check they are inside.

    Parameters
    ----------
    coords : (N, 3) array_like
        Points in ``space``: voxel indices ``(i, j, k)`` (integers), or world mm ``(x, y, z)``.
    volume : Volume
        The image whose voxels are meant.
    space : {"voxel", "world_ras", "world_lps"}
    where : path-like, optional
        File named in error messages.
    what : str
        What the coordinates are (``"point"``, ``"box corner"``), for error messages.

    Returns
    -------
    (N, 3) ndarray of int64
        Voxel indices; world points map to the voxel that contains them.

    Raises
    ------
    PromptError
        Unknown space, non-integer voxel indices, non-finite values, or a point outside the
        image (the message gives the point, the voxel it falls in and the image shape).

    Examples
    --------
    >>> vol = Volume(np.zeros((4, 5, 6)), np.diag([2.0, 2.0, 2.0, 1.0]))
    >>> to_voxel([[4.1, 0.0, 9.9]], vol, "world_ras").tolist()
    [[2, 0, 5]]
    >>> to_voxel([[-4.1, -0.0, 9.9]], vol, "world_lps").tolist()
    [[2, 0, 5]]
    """
    if space not in SPACES:
        raise PromptError(f"unknown coordinate space {space!r}; use one of {list(SPACES)}", where)
    arr = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
    if not np.all(np.isfinite(arr)):
        raise PromptError(f"{what} coordinates must be finite numbers, got {arr.tolist()}", where)
    if space == "voxel":
        if not np.all(arr == np.round(arr)):
            bad = arr[np.any(arr != np.round(arr), axis=1)][0]
            raise PromptError(
                f"voxel {what} {_fmt(bad)} is not integer; voxel indices are whole numbers "
                f"(use space world_ras/world_lps for millimetres)",
                where,
            )
        ijk = arr.astype(np.int64)
    else:
        xyz = arr.copy()
        if space == "world_lps":
            xyz[:, :2] *= -1.0
        ijk = volume.world_to_voxel(xyz, containing=True).astype(np.int64).reshape(-1, 3)
    shape = np.asarray(volume.shape)
    outside = np.any((ijk < 0) | (ijk >= shape), axis=1)
    if np.any(outside):
        n = int(np.argmax(outside))
        if space == "voxel":
            said = f"{what} {_fmt(ijk[n])}"
        else:
            said = f"{what} {_fmt(arr[n])} mm ({space}) falls in voxel {_fmt(ijk[n])}, which"
        raise PromptError(
            f"{said} is outside the image; valid 0-based voxel indices (i, j, k) are "
            f"0..{shape[0] - 1}, 0..{shape[1] - 1}, 0..{shape[2] - 1}",
            where,
        )
    return ijk


def _fmt(v: Iterable[float]) -> str:
    return "(" + ", ".join(f"{float(x):g}" for x in v) + ")"


# ---------------------------------------------------------------------------- mask prompts
def mask_to_image_grid(
    mask: Volume, volume: Volume, *, where: str | os.PathLike[str]
) -> np.ndarray:
    """Re-index a mask volume onto ``volume``'s voxel grid without interpolation.

    Parameters
    ----------
    mask : Volume
        The mask as read (any orientation).
    volume : Volume
        The image.
    where : path-like
        The mask file, for error messages.

    Returns
    -------
    (I, J, K) ndarray
        ``mask`` values at every voxel of ``volume``, indexed like ``volume.array``.

    Raises
    ------
    PromptError
        The mask's voxels are not exactly the image's voxels (in some axis order or direction):
        different voxel size, shifted or rotated grid, or a different extent.
    """
    # T maps image voxel -> mask voxel; it must be a signed permutation plus an integer offset.
    t = np.linalg.inv(mask.affine) @ volume.affine
    rot = t[:3, :3]
    perm = np.round(rot)
    tol = _GRID_TOL_MM / max(min(volume.spacing), 1e-6)
    ok = (
        np.allclose(rot, perm, atol=tol)
        and np.all(np.abs(perm).sum(axis=0) == 1)
        and np.all(np.abs(perm).sum(axis=1) == 1)
        and np.allclose(t[:3, 3], np.round(t[:3, 3]), atol=tol)
    )
    if not ok:
        raise PromptError(
            f"mask is not on the image grid (mask {mask.orientation} {mask.shape} at "
            f"{_fmt(mask.spacing)} mm, image {volume.orientation} {volume.shape} at "
            f"{_fmt(volume.spacing)} mm, or the grids are shifted or rotated); "
            f"resample it onto the image first",
            where,
        )
    # image voxel (i, j, k) -> mask index perm @ ijk + offset
    offset = np.round(t[:3, 3]).astype(np.int64)
    perm = perm.astype(np.int64)
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in volume.shape], indexing="ij"))
    corners = corners.reshape(3, -1).T
    mapped = corners @ perm.T + offset
    if (
        mapped.min() < 0
        or np.any(mapped.max(axis=0) >= np.asarray(mask.shape))
        or int(np.prod(mask.shape)) != int(np.prod(volume.shape))
    ):
        raise PromptError(
            f"mask covers a different extent than the image (mask {mask.shape}, image "
            f"{volume.shape} after matching axes); it must cover exactly the image's voxels",
            where,
        )
    arr = np.asarray(mask.array)
    # mask axis m corresponds to image axis a where perm[m, a] != 0
    order = [int(np.nonzero(perm[m])[0][0]) for m in range(3)]
    # transpose mask axes into image order, then flip the negative ones
    src_axis_for_image = [order.index(a) for a in range(3)]
    out = np.transpose(arr, src_axis_for_image)
    for a in range(3):
        if perm[src_axis_for_image[a], a] < 0:
            out = np.flip(out, axis=a)
    return np.ascontiguousarray(out)


def _read_mask(path: Path, volume: Volume) -> np.ndarray:
    from .io import VolumeReadError, load_volume

    try:
        mask = load_volume(path)
    except VolumeReadError as err:
        # keep the reader's message; it already starts with the path
        raise PromptError(f"cannot read mask prompt: {err.problem}", err.path or path) from err
    arr = mask_to_image_grid(mask, volume, where=path)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise PromptError("mask prompt must hold integer labels, found fractional values", path)
    return arr


def _pick_slice(
    sel: np.ndarray, axis_index: int, slice_index: int | None, where: Path, what: str
) -> tuple[int, np.ndarray]:
    n = sel.shape[axis_index]
    if slice_index is not None:
        if not 0 <= slice_index < n:
            raise PromptError(
                f"mask slice {slice_index} is outside the image (0..{n - 1} along axis "
                f"{'ijk'[axis_index]})",
                where,
            )
        plane = np.take(sel, slice_index, axis=axis_index)
        if not plane.any():
            raise PromptError(f"{what} is empty on slice {slice_index}", where)
        return int(slice_index), plane
    other = tuple(a for a in range(3) if a != axis_index)
    area = sel.sum(axis=other)
    if not area.any():
        raise PromptError(f"{what} is empty: no voxel to prompt with", where)
    k = int(np.argmax(area))
    return k, np.take(sel, k, axis=axis_index)


def mask_prompt_objects(
    path: str | os.PathLike[str],
    volume: Volume,
    *,
    axis: str = "axial",
    values: Sequence[int] | None = None,
    slice_index: int | None = None,
    names: Mapping[int, str] | None = None,
) -> list[ObjectPrompts]:
    """Objects from a label-map file: one object per label value, each prompted by one slice.

    Parameters
    ----------
    path : path-like
        NIfTI (or any format :func:`sam2_med.io.load_volume` reads) on the image grid (see
        :func:`mask_to_image_grid`). Each distinct nonzero value is one object with that label.
    volume : Volume
        The image.
    axis : {"axial", "coronal", "sagittal"}
        Propagation plane; the mask slice is taken along the voxel axis closest to its normal.
    values : sequence of int, optional
        Only these label values (each must be present).
    slice_index : int, optional
        Use this slice for every object; default: per object the slice where it has the most
        voxels (lowest index on ties).
    names : mapping int -> str, optional
        Names per value; default: from the mask's sidecar (``<stem>.json``, sam2-med's
        ``"label_names"`` or a plain ``{"1": "spleen"}`` map), else ``"label_<n>"``.

    Returns
    -------
    list of ObjectPrompts
        One per label value, sorted by value, each with one ``(k, mask2d)`` mask prompt.
    """
    p = Path(path)
    axis_index = axis_index_for(volume, axis, p)
    arr = _read_mask(p, volume)
    present = [int(v) for v in np.unique(arr) if v != 0]
    if values is None:
        chosen = present
        if not chosen:
            raise PromptError("mask prompt is empty: no nonzero voxel", p)
    else:
        chosen = [int(v) for v in values]
        missing = [v for v in chosen if v not in present]
        if missing:
            raise PromptError(f"label value(s) {missing} not in the mask prompt", p)
    if any(v < 0 or v > 65535 for v in chosen):
        raise PromptError("mask labels must be in 1..65535", p)
    known = dict(names) if names is not None else _sidecar_names(p)
    out = []
    for v in chosen:
        k, plane = _pick_slice(arr == v, axis_index, slice_index, p, f"label {v} of the mask")
        out.append(ObjectPrompts(label=v, name=known.get(v, f"label_{v}"), masks=((k, plane),)))
    return out


def _sidecar_names(path: Path) -> dict[int, str]:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    side = path.with_name(name + ".json")
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return {}
    if isinstance(data, dict) and isinstance(data.get("label_names"), dict):
        data = data["label_names"]
    out: dict[int, str] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and key.strip().isdigit() and isinstance(value, str):
                out[int(key)] = value
    return out


# ------------------------------------------------------------------------------- parsing
def axis_index_for(volume: Volume, axis: str, where: Any = None) -> int:
    """The voxel axis (0, 1, 2 of ``(i, j, k)``) that ``axis`` slices are stacked along.

    Chosen from the affine (:func:`sam2_med.geometry.slice_axis`), never from the array order.

    Raises
    ------
    PromptError
        ``axis`` is not ``"axial"``, ``"coronal"`` or ``"sagittal"`` (``where`` is named).
    """
    if axis not in AXIS_NAMES:
        raise PromptError(f"unknown axis {axis!r}; use one of {list(AXIS_NAMES)}", where)
    return geometry.slice_axis(volume.affine, axis)


def _as_list(value: Any, key: str, where: Any, ctx: str) -> list[Any]:
    if not isinstance(value, list):
        raise PromptError(f"{ctx}: {key!r} must be a list, got {type(value).__name__}", where)
    return value


def _numbers(row: Any, n: Sequence[int], where: Any, ctx: str) -> list[float]:
    if (
        not isinstance(row, list)
        or len(row) not in n
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in row)
    ):
        want = " or ".join(str(x) for x in n)
        raise PromptError(f"{ctx} must be a list of {want} numbers, got {json.dumps(row)}", where)
    return [float(x) for x in row]


def _parse_label(value: Any, where: Any, ctx: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise PromptError(f"{ctx}: 'label' must be an integer in 1..65535, got {value!r}", where)
    return int(value)


def _box_corners(
    row: list[float], volume: Volume, space: str, axis_index: int, where: Any, ctx: str
) -> tuple[np.ndarray, np.ndarray]:
    corners = to_voxel([row[:3], row[3:]], volume, space, where=where, what=f"{ctx} corner")
    a, b = corners[0], corners[1]
    if a[axis_index] != b[axis_index]:
        raise PromptError(
            f"{ctx} corners fall on slices {int(a[axis_index])} and {int(b[axis_index])} of "
            f"axis {'ijk'[axis_index]}; a box lies on one slice of the propagation axis",
            where,
        )
    if np.sum(a != b) < 2:
        raise PromptError(f"{ctx} is degenerate: corners {_fmt(a)} and {_fmt(b)}", where)
    return a, b


def parse_prompts(
    data: Any,
    volume: Volume,
    *,
    axis: str = "axial",
    source: str | os.PathLike[str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> PromptSet:
    """Validate prompt plain data (see the module docstring's schema) against one image.

    Parameters
    ----------
    data : dict
        ``{"space": ..., "objects": [...]}`` as in the schema.
    volume : Volume
        The image the prompts refer to.
    axis : {"axial", "coronal", "sagittal"}
        Propagation plane; boxes and mask slices are checked against it.
    source : path-like, optional
        The file the data came from; named in every error message.
    base_dir : path-like, optional
        Folder that relative mask paths are resolved against; default: ``source``'s folder, else
        the working directory.

    Returns
    -------
    PromptSet
        Objects sorted by label, every coordinate a voxel index inside the image.

    Raises
    ------
    PromptError
        One line naming ``source`` and what is wrong.
    """
    where = str(source) if source is not None else "prompts"
    if base_dir is None:
        base_dir = Path(source).parent if source is not None else Path.cwd()
    axis_index = axis_index_for(volume, axis, where)
    if not isinstance(data, dict):
        raise PromptError(
            f"prompts must be a JSON object with 'space' and 'objects', got {type(data).__name__}",
            where,
        )
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise PromptError(f"unknown key(s) {unknown}; expected 'space' and 'objects'", where)
    if "space" not in data:
        raise PromptError(
            "missing 'space': say which coordinates the prompts use "
            "('voxel', 'world_ras' or 'world_lps')",
            where,
        )
    top_space = data["space"]
    if top_space not in SPACES:
        raise PromptError(f"'space' must be one of {list(SPACES)}, got {top_space!r}", where)
    objects_data = _as_list(data.get("objects"), "objects", where, "prompts")
    if not objects_data:
        raise PromptError("'objects' is empty: give at least one object to segment", where)
    objects: list[ObjectPrompts] = []
    used = {
        o["label"] for o in objects_data if isinstance(o, dict) and isinstance(o.get("label"), int)
    }
    next_label = 1
    for n, obj in enumerate(objects_data):
        ctx = f"objects[{n}]"
        if not isinstance(obj, dict):
            raise PromptError(f"{ctx} must be an object, got {json.dumps(obj)}", where)
        unknown = sorted(set(obj) - _OBJECT_KEYS)
        if unknown:
            raise PromptError(
                f"{ctx}: unknown key(s) {unknown}; allowed: {sorted(_OBJECT_KEYS)}", where
            )
        if "label" in obj:
            label = _parse_label(obj["label"], where, ctx)
        else:
            while next_label in used:
                next_label += 1
            label = next_label
            used.add(label)
        name = obj.get("name", f"object_{label}")
        if not isinstance(name, str) or not name.strip():
            raise PromptError(f"{ctx}: 'name' must be a non-empty string", where)
        space = obj.get("space", top_space)
        if space not in SPACES:
            raise PromptError(f"{ctx}: 'space' must be one of {list(SPACES)}, got {space!r}", where)
        rows = [
            _numbers(r, (3, 4), where, f"{ctx}.points[{m}]")
            for m, r in enumerate(_as_list(obj.get("points", []), "points", where, ctx))
        ]
        pts = np.zeros((0, 3), dtype=np.int64)
        plabels = np.zeros((0,), dtype=np.int64)
        if rows:
            pts = to_voxel([r[:3] for r in rows], volume, space, where=where, what=f"{ctx} point")
            pl = []
            for m, r in enumerate(rows):
                v = r[3] if len(r) == 4 else 1.0
                if v not in (0.0, 1.0):
                    raise PromptError(
                        f"{ctx}.points[{m}]: the 4th value must be 1 (positive) or 0 "
                        f"(negative), got {v:g}",
                        where,
                    )
                pl.append(int(v))
            plabels = np.asarray(pl, dtype=np.int64)
        boxes = tuple(
            _box_corners(
                _numbers(r, (6,), where, f"{ctx}.boxes[{m}]"),
                volume,
                space,
                axis_index,
                where,
                f"{ctx}.boxes[{m}]",
            )
            for m, r in enumerate(_as_list(obj.get("boxes", []), "boxes", where, ctx))
        )
        masks: tuple[tuple[int, np.ndarray], ...] = ()
        if "mask" in obj:
            masks = (_parse_mask_entry(obj["mask"], volume, axis_index, base_dir, where, ctx),)
        item = ObjectPrompts(
            label=label, name=name, points=pts, point_labels=plabels, boxes=boxes, masks=masks
        )
        if item.is_empty():
            raise PromptError(f"{ctx} ({name}) has no points, boxes or mask", where)
        objects.append(item)
    return PromptSet(
        objects=tuple(merge_objects(objects, where=where)),
        axis=axis,
        axis_index=axis_index,
        source=None if source is None else str(source),
    )


def _parse_mask_entry(
    entry: Any, volume: Volume, axis_index: int, base_dir: Any, where: Any, ctx: str
) -> tuple[int, np.ndarray]:
    if isinstance(entry, str):
        entry = {"file": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise PromptError(
            f'{ctx}: \'mask\' must be a file name or {{"file": ..., "value": n, "slice": k}}',
            where,
        )
    unknown = sorted(set(entry) - _MASK_KEYS)
    if unknown:
        raise PromptError(f"{ctx}.mask: unknown key(s) {unknown}", where)
    value = entry.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise PromptError(f"{ctx}.mask: 'value' must be an integer, got {value!r}", where)
    k = entry.get("slice")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int)):
        raise PromptError(f"{ctx}.mask: 'slice' must be an integer, got {k!r}", where)
    path = Path(os.path.expanduser(entry["file"]))
    if not path.is_absolute():
        path = Path(base_dir) / path
    if not path.exists():
        raise PromptError(f"mask prompt file not found (named in {where} {ctx})", path)
    arr = _read_mask(path, volume)
    sel = arr != 0 if value is None else arr == value
    what = "mask prompt" if value is None else f"value {value} of the mask prompt"
    return _pick_slice(sel, axis_index, k, path, what)


def merge_objects(objects: Iterable[ObjectPrompts], *, where: Any = None) -> list[ObjectPrompts]:
    """Merge objects that share a label (prompts concatenated), sorted by label.

    Two names for one label are refused (``PromptError``). Two mask prompts on one slice of one
    object are combined by union.
    """
    by_label: dict[int, ObjectPrompts] = {}
    for obj in objects:
        old = by_label.get(obj.label)
        if old is None:
            by_label[obj.label] = obj
            continue
        name = old.name
        generic = (f"object_{obj.label}", f"label_{obj.label}")
        if obj.name != old.name:
            if old.name in generic:
                name = obj.name
            elif obj.name not in generic:
                raise PromptError(
                    f"label {obj.label} is given two names, {old.name!r} and {obj.name!r}", where
                )
        masks: dict[int, np.ndarray] = {}
        for k, m in (*old.masks, *obj.masks):
            masks[k] = m if k not in masks else (masks[k] | m)
        by_label[obj.label] = ObjectPrompts(
            label=obj.label,
            name=name,
            points=np.concatenate([old.points, obj.points]).astype(np.int64),
            point_labels=np.concatenate([old.point_labels, obj.point_labels]).astype(np.int64),
            boxes=old.boxes + obj.boxes,
            masks=tuple(sorted(masks.items(), key=lambda kv: kv[0])),
        )
    return [by_label[k] for k in sorted(by_label)]


def check_points_on_finite_voxels(prompt_set: PromptSet, volume: Volume) -> None:
    """Refuse a point prompt on a NaN or infinite voxel: the model sees a fill value there
    (black or white), not the image, so the click cannot mean what the user meant.

    Raises
    ------
    PromptError
        Naming the point (voxel indices) and what the voxel holds.
    """
    arr = volume.array
    if not np.issubdtype(arr.dtype, np.floating):
        return
    for obj in prompt_set.objects:
        for p in np.asarray(obj.points, dtype=np.int64).reshape(-1, 3):
            value = float(arr[tuple(p)])
            if not np.isfinite(value):
                raise PromptError(
                    f"point {tuple(int(v) for v in p)} of {obj.name!r} sits on a "
                    f"{'NaN' if np.isnan(value) else 'infinite'} voxel, which the model sees "
                    "as a fill value, not image: place it on the structure",
                    prompt_set.source,
                )


def load_prompts(path: str | os.PathLike[str], volume: Volume, *, axis: str = "axial") -> PromptSet:
    """Read a prompt JSON file (schema in the module docstring) and validate it against ``volume``.

    Relative mask paths are resolved against the JSON file's folder.

    Raises
    ------
    PromptError
        Missing or unreadable file, invalid JSON (with line and column), or any schema problem.
    """
    p = Path(path)
    if not p.is_file():
        raise PromptError("prompt file not found" if not p.exists() else "not a file", p)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PromptError(f"cannot read prompt file: {err}", p) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise PromptError(
            f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}", p
        ) from None
    except RecursionError:
        raise PromptError(TOO_DEEP, p) from None
    try:
        return parse_prompts(data, volume, axis=axis, source=p)
    except RecursionError:
        raise PromptError(TOO_DEEP, p) from None


#: Message for JSON nested beyond what Python's parser (or our validation) can follow.
TOO_DEEP = "JSON nested too deeply to read (thousands of levels); not a prompt file"


# ---------------------------------------------------------------------- command-line syntax
def parse_point_arg(text: str) -> tuple[list[float], int]:
    """Parse ``--point`` syntax: ``"i,j,k"`` or ``"i,j,k:pos"`` / ``"i,j,k:neg"``.

    Returns
    -------
    coords : list of 3 float
    label : int
        1 (positive, the default) or 0 (``:neg``).

    Raises
    ------
    PromptError
        Anything else.

    Examples
    --------
    >>> parse_point_arg("10,20,5:neg")
    ([10.0, 20.0, 5.0], 0)
    """
    body, _, kind = text.partition(":")
    kind = kind.strip().lower()
    if kind not in ("", "pos", "neg", "+", "-"):
        raise PromptError(f"--point {text!r}: suffix must be ':pos' or ':neg', got ':{kind}'")
    coords = _csv_numbers(body, 3, f"--point {text!r}", "i,j,k[:neg]")
    return coords, 0 if kind in ("neg", "-") else 1


def parse_box_arg(text: str) -> list[float]:
    """Parse ``--box`` syntax ``"i0,j0,k0,i1,j1,k1"`` into six numbers.

    >>> parse_box_arg("1,2,3,10,20,3")
    [1.0, 2.0, 3.0, 10.0, 20.0, 3.0]
    """
    return _csv_numbers(text, 6, f"--box {text!r}", "i0,j0,k0,i1,j1,k1")


def _csv_numbers(text: str, n: int, ctx: str, syntax: str) -> list[float]:
    parts = [s.strip() for s in text.split(",")]
    try:
        values = [float(s) for s in parts]
    except ValueError:
        values = []
    if len(values) != n or not all(np.isfinite(values)):
        raise PromptError(f"{ctx}: expected {n} comma-separated numbers, {syntax}")
    return values


def cli_object(
    volume: Volume,
    *,
    points: Sequence[str] = (),
    boxes: Sequence[str] = (),
    space: str = "voxel",
    axis: str = "axial",
    label: int = 1,
    name: str | None = None,
    where: str | os.PathLike[str] | None = None,
) -> ObjectPrompts | None:
    """The object described by ``--point``/``--box`` options (``None`` when there are none).

    Parameters
    ----------
    volume : Volume
        The image.
    points, boxes : sequence of str
        ``--point`` values (``"i,j,k[:neg]"``) and ``--box`` values (``"i0,j0,k0,i1,j1,k1"``).
    space : {"voxel", "world_ras", "world_lps"}
        What the numbers mean (see the module docstring).
    axis : {"axial", "coronal", "sagittal"}
    label : int
        Label value of the object, 1..65535.
    name : str, optional
        Structure name; default ``"object_<label>"``.
    where : path-like, optional
        Named in error messages (the image path).
    """
    if not points and not boxes:
        return None
    if space not in SPACES:
        raise PromptError(f"unknown --space {space!r}; use one of {list(SPACES)}", where)
    axis_index = axis_index_for(volume, axis, where)
    _parse_label(label, where, "--label")
    rows = [parse_point_arg(t) for t in points]
    pts = np.zeros((0, 3), dtype=np.int64)
    if rows:
        pts = to_voxel([c for c, _ in rows], volume, space, where=where, what="--point")
    plabels = np.asarray([lab for _, lab in rows], dtype=np.int64)
    box_list = tuple(
        _box_corners(parse_box_arg(t), volume, space, axis_index, where, f"--box {t}")
        for t in boxes
    )
    return ObjectPrompts(
        label=int(label),
        name=name or f"object_{label}",
        points=pts,
        point_labels=plabels,
        boxes=box_list,
    )
