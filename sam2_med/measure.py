"""Measurements of labelled structures in world millimetres: what a radiologist reads off a mask.

Everything here works on a label map and the image it belongs to (a
:class:`~sam2_med.labels.LabelVolume` and its :class:`~sam2_med.Volume`); no model, no torch.
Geometry comes from the volume's voxel -> RAS affine, so anisotropic, oblique and even sheared
grids are measured exactly (no resampling).

Definitions (and how they relate to 3D Slicer's *Segment Statistics* module)
------------------------------------------------------------------------------
voxel count, volume
    Number of voxels with the label; volume = count x voxel volume, the voxel volume being
    ``|det(affine[:3, :3])|`` mm³ (the product of the spacings for any non-sheared grid). mL = cm³
    = mm³ / 1000. **Same as Slicer's labelmap and scalar-volume statistics** ("Volume mm3" =
    voxel count x product of spacings).
surface area
    Area (mm²) of a closed triangle mesh of the mask: marching cubes (Lewiner, scikit-image) at
    level 0.5 on the binary mask padded by one empty voxel, vertices mapped through the affine.
    Slicer's *closed surface* statistics is also the area of a closed mesh (``vtkMassProperties``
    on the segment's closed-surface representation), but Slicer smooths that mesh by default
    (smoothing factor 0.5) and ours is not smoothed: the voxel staircase makes ours larger on
    curved surfaces, by about 9 % on a sphere of radius 10-20 voxels (measured in
    ``tests/test_measure.py``). Slicer's *labelmap* statistics report another surface area,
    computed from the voxels rather than a mesh.
centroid
    Mean position of the voxel centres, as a voxel index and in world RAS and LPS mm. **Same as
    Slicer's labelmap "Centroid"** (Slicer shows RAS).
bounding box
    Smallest and largest voxel index of the structure along ``i``, ``j``, ``k`` (inclusive) and
    its size along those axes in mm (``(max - min + 1) x spacing``). Slicer reports an oriented
    bounding box instead.
intensity statistics
    Over the voxels of the structure, in the image's units (HU for CT, after the modality LUT):
    mean, standard deviation with the corrected (n - 1) sample formula, minimum, maximum, median
    and percentiles (numpy's linear interpolation). Slicer's scalar-volume statistics use the
    same standard deviation formula; its median comes from a histogram (binned), ours is exact.
    Non-finite voxels (NaN in a float MR) are left out and counted.
RECIST long and short axis
    On each slice of the chosen plane (axial by default: the voxel axis whose direction is
    closest to superior-inferior, so an oblique acquisition is measured in its own tilted
    slices), the boundary of the structure is traced with marching squares at level 0.5 (points
    half-way between inside and outside voxel centres). The **long axis** of a slice is the
    longest distance between two boundary points (the diameter of their convex hull, scipy
    Qhull); the structure's long axis is the largest over slices, and that slice is the RECIST
    slice. The **short axis** is, on that same slice, the longest chord *exactly* perpendicular
    to the long axis: for each boundary point, the line through it perpendicular to the long
    axis is intersected with the boundary and the chord runs from the first to the last
    crossing. Perpendicularity is exact (constructed, not searched among pairs of boundary
    points): the tolerance is 0 degrees up to floating-point rounding (tested to 1e-9). A
    structure with several parts on a slice is measured as one (the chords may span the gap);
    RECIST 1.1 measures one lesion at a time, so give each lesion its own label. Lengths are in
    world mm (the in-plane metric of the affine, so anisotropic and oblique pixels are exact);
    end points are given as continuous voxel indices and in world RAS and LPS mm, so any viewer
    can draw them.

Everything is computed on the bounding box of each structure, so measuring a small lesion in a
large volume is cheap.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import geometry
from .errors import Sam2MedError
from .labels import LabelVolume
from .volume import Volume

__all__ = [
    "DEFAULT_PERCENTILES",
    "DEFINITIONS",
    "IntensityStats",
    "MeasurementError",
    "Recist",
    "StructureMeasurements",
    "format_table",
    "load_labels",
    "measure",
    "measurement_rows",
    "measurements_json",
    "write_measurements",
]

#: Percentiles of the intensity statistics (the median is always reported on its own).
DEFAULT_PERCENTILES = (5, 10, 25, 75, 90, 95)

#: One line per measurement, written into every JSON output so a reader knows what it got.
DEFINITIONS: Mapping[str, str] = {
    "volume": "voxel count x |det(affine)| mm3 (as 3D Slicer's labelmap statistics); mL = mm3/1000",
    "surface": "area of the unsmoothed marching-cubes mesh (level 0.5) of the mask, mm2; "
    "3D Slicer's closed-surface area is smoothed and reads lower (~9% on a sphere)",
    "centroid": "mean of the voxel centres (as 3D Slicer's labelmap centroid), RAS and LPS mm",
    "bounding_box": "inclusive voxel index range along i, j, k and its size in mm",
    "intensity": "in the image units (HU for CT): mean, SD with n-1 (as 3D Slicer), min, max, "
    "exact median and percentiles (linear interpolation), finite voxels only",
    "recist": "per slice of the plane: longest distance between marching-squares boundary "
    "points (convex hull diameter); long axis = largest over slices; short axis = longest "
    "chord exactly perpendicular to it on that slice (tolerance 0 degrees)",
}

_CT_UNITS = "HU"


class MeasurementError(Sam2MedError, ValueError):
    """A label map that cannot be measured: not on the image grid, an empty label, bad options."""


# ------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class IntensityStats:
    """Voxel values of one structure, in the image's units.

    Attributes
    ----------
    units : str or None
        ``"HU"`` for CT (``Volume.array`` is in HU after the modality LUT); ``None`` when the
        image's units are not known (MR signal, NIfTI without a modality).
    count : int
        Finite voxels the statistics are over.
    nonfinite : int
        Voxels left out because their value is NaN or infinite.
    mean, sd, minimum, maximum, median : float
        ``sd`` uses the corrected sample formula (n - 1); NaN for a single voxel.
    percentiles : dict of int -> float
        Percentile -> value (numpy ``method="linear"``).
    """

    units: str | None
    count: int
    nonfinite: int
    mean: float
    sd: float
    minimum: float
    maximum: float
    median: float
    percentiles: dict[int, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IntensityStats:
        """Inverse of :meth:`to_dict` (None -> NaN)."""
        return cls(
            units=d.get("units"),
            count=int(d.get("count") or 0),
            nonfinite=int(d.get("nonfinite") or 0),
            mean=_f(d.get("mean")),
            sd=_f(d.get("sd")),
            minimum=_f(d.get("min")),
            maximum=_f(d.get("max")),
            median=_f(d.get("median")),
            percentiles={int(float(k)): _f(v) for k, v in (d.get("percentiles") or {}).items()},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "count": self.count,
            "nonfinite": self.nonfinite,
            "mean": _num(self.mean),
            "sd": _num(self.sd),
            "min": _num(self.minimum),
            "max": _num(self.maximum),
            "median": _num(self.median),
            "percentiles": {str(p): _num(v) for p, v in self.percentiles.items()},
        }


@dataclass(frozen=True)
class Recist:
    """RECIST long and short axis of one structure (see the module docstring).

    Attributes
    ----------
    plane : str
        ``"axial"``, ``"coronal"`` or ``"sagittal"``.
    axis_index : int
        Voxel axis (0, 1, 2 of ``(i, j, k)``) the plane's slices are stacked along.
    slice_index : int
        The slice (index along ``axis_index``) where the long axis is largest.
    long_mm, short_mm : float
        Lengths in world mm.
    long_ijk, short_ijk : (2, 3) ndarray of float64
        End points as continuous voxel indices ``(i, j, k)`` (voxel centres at integers);
        ``[:, axis_index] == slice_index``.
    long_ras, short_ras : (2, 3) ndarray of float64
        The same end points in world RAS+ mm.
    """

    plane: str
    axis_index: int
    slice_index: int
    long_mm: float
    short_mm: float
    long_ijk: np.ndarray
    short_ijk: np.ndarray
    long_ras: np.ndarray
    short_ras: np.ndarray

    @property
    def long_lps(self) -> np.ndarray:
        """(2, 3) long-axis end points in DICOM LPS+ mm."""
        return self.long_ras * np.array([-1.0, -1.0, 1.0])

    @property
    def short_lps(self) -> np.ndarray:
        """(2, 3) short-axis end points in DICOM LPS+ mm."""
        return self.short_ras * np.array([-1.0, -1.0, 1.0])

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recist:
        """Inverse of :meth:`to_dict`."""
        return cls(
            plane=str(d["plane"]),
            axis_index=int(d["axis_index"]),
            slice_index=int(d["slice_index"]),
            long_mm=_f(d.get("long_mm")),
            short_mm=_f(d.get("short_mm")),
            long_ijk=_arr(d["long_endpoints_ijk"]),
            short_ijk=_arr(d["short_endpoints_ijk"]),
            long_ras=_arr(d["long_endpoints_ras"]),
            short_ras=_arr(d["short_endpoints_ras"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "plane": self.plane,
            "axis_index": self.axis_index,
            "slice_index": self.slice_index,
            "long_mm": _num(self.long_mm),
            "short_mm": _num(self.short_mm),
            "long_endpoints_ijk": _pts(self.long_ijk),
            "long_endpoints_ras": _pts(self.long_ras),
            "long_endpoints_lps": _pts(self.long_lps),
            "short_endpoints_ijk": _pts(self.short_ijk),
            "short_endpoints_ras": _pts(self.short_ras),
            "short_endpoints_lps": _pts(self.short_lps),
            "perpendicularity_tolerance_deg": 0.0,
        }


@dataclass(frozen=True)
class StructureMeasurements:
    """Everything measured for one label value (see the module docstring for definitions).

    Attributes
    ----------
    label : int
    name : str
    voxel_count : int
    voxel_volume_mm3 : float
    volume_mm3 : float
    surface_mm2 : float or None
        ``None`` when not computed (``surface=False``).
    centroid_ijk, centroid_ras : (3,) ndarray of float64
        Voxel index and world RAS+ mm of the centroid.
    bbox_min_ijk, bbox_max_ijk : tuple of int
        Inclusive voxel index range.
    bbox_size_mm : (3,) ndarray of float64
        ``(max - min + 1) x spacing`` along ``i, j, k``.
    intensity : IntensityStats or None
        ``None`` without image values (or ``intensity=False``).
    recist : Recist or None
        ``None`` when not computed (``recist=False``).
    """

    label: int
    name: str
    voxel_count: int
    voxel_volume_mm3: float
    volume_mm3: float
    surface_mm2: float | None
    centroid_ijk: np.ndarray
    centroid_ras: np.ndarray
    bbox_min_ijk: tuple[int, int, int]
    bbox_max_ijk: tuple[int, int, int]
    bbox_size_mm: np.ndarray
    intensity: IntensityStats | None = None
    recist: Recist | None = None

    @property
    def volume_ml(self) -> float:
        """Volume in millilitres (cm³)."""
        return self.volume_mm3 / 1000.0

    @property
    def centroid_lps(self) -> np.ndarray:
        """(3,) centroid in DICOM LPS+ mm."""
        return self.centroid_ras * np.array([-1.0, -1.0, 1.0])

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StructureMeasurements:
        """Inverse of :meth:`to_dict` (e.g. a structure read back from a mask's sidecar)."""
        return cls(
            label=int(d["label"]),
            name=str(d["name"]),
            voxel_count=int(d["voxel_count"]),
            voxel_volume_mm3=_f(d.get("voxel_volume_mm3")),
            volume_mm3=_f(d.get("volume_mm3")),
            surface_mm2=None if d.get("surface_mm2") is None else float(d["surface_mm2"]),
            centroid_ijk=_arr(d["centroid_ijk"]),
            centroid_ras=_arr(d["centroid_ras"]),
            bbox_min_ijk=tuple(int(v) for v in d["bbox_min_ijk"]),  # type: ignore[arg-type]
            bbox_max_ijk=tuple(int(v) for v in d["bbox_max_ijk"]),  # type: ignore[arg-type]
            bbox_size_mm=_arr(d["bbox_size_mm"]),
            intensity=IntensityStats.from_dict(d["intensity"]) if d.get("intensity") else None,
            recist=Recist.from_dict(d["recist"]) if d.get("recist") else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict (what the mask sidecar and ``--json`` hold)."""
        return {
            "label": self.label,
            "name": self.name,
            "voxel_count": self.voxel_count,
            "voxel_volume_mm3": _num(self.voxel_volume_mm3),
            "volume_mm3": _num(self.volume_mm3),
            "volume_ml": _num(self.volume_ml),
            "surface_mm2": None if self.surface_mm2 is None else _num(self.surface_mm2),
            "centroid_ijk": _vec(self.centroid_ijk),
            "centroid_ras": _vec(self.centroid_ras),
            "centroid_lps": _vec(self.centroid_lps),
            "bbox_min_ijk": list(self.bbox_min_ijk),
            "bbox_max_ijk": list(self.bbox_max_ijk),
            "bbox_size_mm": _vec(self.bbox_size_mm),
            "intensity": None if self.intensity is None else self.intensity.to_dict(),
            "recist": None if self.recist is None else self.recist.to_dict(),
        }

    def to_row(self) -> dict[str, Any]:
        """One flat CSV row (column -> value; missing values are empty strings)."""
        row: dict[str, Any] = {
            "label": self.label,
            "name": self.name,
            "voxel_count": self.voxel_count,
            "volume_ml": _r(self.volume_ml, 4),
            "volume_mm3": _r(self.volume_mm3, 2),
            "surface_mm2": "" if self.surface_mm2 is None else _r(self.surface_mm2, 2),
        }
        for prefix, vec in (
            ("centroid_ras", self.centroid_ras),
            ("centroid_lps", self.centroid_lps),
        ):
            for axis, v in zip("xyz", vec, strict=True):
                row[f"{prefix}_{axis}"] = _r(v, 3)
        for name, vec in (("bbox_min", self.bbox_min_ijk), ("bbox_max", self.bbox_max_ijk)):
            for axis, v in zip("ijk", vec, strict=True):
                row[f"{name}_{axis}"] = int(v)
        r = self.recist
        row["recist_plane"] = r.plane if r else ""
        row["recist_slice"] = r.slice_index if r else ""
        row["recist_long_mm"] = _r(r.long_mm, 2) if r else ""
        row["recist_short_mm"] = _r(r.short_mm, 2) if r else ""
        for which in ("long", "short"):
            pts = getattr(r, f"{which}_ras") if r else None
            for end in (0, 1):
                for axis in range(3):
                    key = f"recist_{which}_p{end + 1}_ras_{'xyz'[axis]}"
                    row[key] = _r(pts[end, axis], 3) if pts is not None else ""
        st = self.intensity
        row["intensity_units"] = (st.units or "") if st else ""
        for key, attr in (
            ("mean", "mean"),
            ("sd", "sd"),
            ("min", "minimum"),
            ("max", "maximum"),
            ("median", "median"),
        ):
            row[f"intensity_{key}"] = _r(getattr(st, attr), 3) if st else ""
        for p in DEFAULT_PERCENTILES:
            row[f"intensity_p{p:02d}"] = _r(st.percentiles.get(p, math.nan), 3) if st else ""
        return row


def _f(v: Any) -> float:
    return math.nan if v is None else float(v)


def _arr(v: Any) -> np.ndarray:
    return (
        np.array([[math.nan if x is None else x for x in row] for row in v], dtype=np.float64)
        if (len(v) and isinstance(v[0], (list, tuple)))
        else np.array([math.nan if x is None else x for x in v], dtype=np.float64)
    )


def _num(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _r(v: float, digits: int) -> float | str:
    v = float(v)
    return round(v, digits) if math.isfinite(v) else ""


def _vec(v: np.ndarray) -> list[float | None]:
    return [_num(x) for x in np.asarray(v, dtype=np.float64).ravel()]


def _pts(p: np.ndarray) -> list[list[float | None]]:
    return [_vec(row) for row in np.asarray(p, dtype=np.float64)]


# ---------------------------------------------------------------------------- measuring
def measure(
    labels: LabelVolume | np.ndarray,
    image: Volume | None = None,
    *,
    label_values: Iterable[int] | None = None,
    names: Mapping[int, str] | None = None,
    plane: str = "axial",
    surface: bool = True,
    recist: bool = True,
    intensity: bool = True,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    where: str | os.PathLike[str] | None = None,
) -> list[StructureMeasurements]:
    """Measure every structure (label value) of a label map in world millimetres.

    Parameters
    ----------
    labels : LabelVolume or (I, J, K) ndarray of int or bool
        Indexed like the image array ``(i, j, k)``; 0 is background.
    image : Volume, optional
        The image the labels belong to (its affine is the geometry, its array gives the
        intensity statistics). Defaults to ``labels.reference`` for a LabelVolume; required for
        a bare array. A LabelVolume whose reference has another grid is refused.
    label_values : iterable of int, optional
        Which labels to measure (in this order). Default: every non-zero value present. A
        requested label with no voxel is an error.
    names : mapping of int -> str, optional
        Structure names; default the LabelVolume's names, then ``"label_<n>"``.
    plane : {"axial", "coronal", "sagittal"}
        Plane of the RECIST slices; the voxel axis is chosen from the affine
        (:func:`sam2_med.geometry.slice_axis`).
    surface, recist, intensity : bool
        Compute the surface area, the RECIST axes and the intensity statistics (each can be
        turned off to save time; the rest is cheap).
    percentiles : sequence of float
        Intensity percentiles to report besides the median.
    where : path-like, optional
        The mask file, named in error messages.

    Returns
    -------
    list of StructureMeasurements
        One per label, in ``label_values`` order (default: increasing label value).

    Raises
    ------
    MeasurementError
        Shape or grid differs from the image, non-integer labels, an unknown plane, a requested
        label without voxels, or a label map with no labelled voxel at all (one line each).
    """
    arr, vol, base_names = _inputs(labels, image, where)
    try:
        axis_index = geometry.slice_axis(vol.affine, plane)
    except ValueError as err:
        raise MeasurementError(str(err), where) from None
    from scipy import ndimage as ndi

    present = [int(v) for v in np.unique(arr) if v != 0]
    if label_values is None:
        wanted = present
        if not wanted:
            raise MeasurementError(
                "the label map has no labelled voxels (all 0): nothing to measure", where
            )
    else:
        wanted = [int(v) for v in label_values]
    all_names = {**base_names, **{int(k): str(v) for k, v in (names or {}).items()}}
    for v in wanted:
        if v not in present:
            what = f"label {v}" + (f" ({all_names[v]})" if v in all_names else "")
            raise MeasurementError(
                f"{what} has no voxels in the label map: nothing to measure", where
            )
    if not wanted:
        return []
    objects = ndi.find_objects(arr.astype(np.int64, copy=False), max_label=max(wanted))
    values = _image_values(vol) if intensity else None
    out = []
    for v in wanted:
        box = objects[v - 1]
        assert box is not None  # present
        out.append(
            _measure_one(
                arr,
                box,
                v,
                all_names.get(v, f"label_{v}"),
                vol,
                values,
                plane=plane,
                axis_index=axis_index,
                surface=surface,
                recist=recist,
                percentiles=tuple(percentiles),
            )
        )
    return out


def load_labels(
    path: str | os.PathLike[str],
    image: Volume,
    *,
    names: Mapping[int, str] | None = None,
) -> LabelVolume:
    """Read a label-map file onto ``image``'s voxel grid, with its names, ready to measure.

    Parameters
    ----------
    path : path-like
        A label map (NIfTI, NRRD, MHA) on the image's grid: the same voxels, in any axis order
        or direction (re-indexed exactly, never resampled).
    image : Volume
        The image it belongs to.
    names : mapping of int -> str, optional
        Structure names; default: the file's sidecar ``<stem>.json`` (``"label_names"``).

    Returns
    -------
    LabelVolume
        uint8 (uint16 above 255) labels indexed like ``image.array``.

    Raises
    ------
    Sam2MedError
        Unreadable file, a mask not on the image grid, fractional or out-of-range values.
    """
    from .io import VolumeReadError, load_volume
    from .prompts import _sidecar_names, mask_to_image_grid

    p = Path(path)
    if not p.exists():
        raise VolumeReadError("no such file or folder", p)
    arr = mask_to_image_grid(load_volume(p), image, where=p)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise MeasurementError("a mask must hold integer labels, found fractional values", p)
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise MeasurementError("mask labels must be in 0..65535", p)
    dtype = np.uint16 if arr.max(initial=0) > 255 else np.uint8
    return LabelVolume(arr.astype(dtype), image, dict(names) if names else _sidecar_names(p))


def _inputs(
    labels: LabelVolume | np.ndarray, image: Volume | None, where: Any
) -> tuple[np.ndarray, Volume, dict[int, str]]:
    if isinstance(labels, LabelVolume):
        vol = labels.reference if image is None else image
        if (
            image is not None
            and labels.reference is not image
            and (
                labels.reference.shape != image.shape
                or not np.allclose(labels.reference.affine, image.affine, atol=1e-4)
            )
        ):
            raise MeasurementError(
                "the label map is not on the image grid (its reference has another shape or "
                "affine); resample it onto the image first",
                where,
            )
        arr = np.asarray(labels.array)
        base = {int(k): str(n) for k, n in labels.names.items()}
    else:
        if image is None:
            raise MeasurementError("measuring a bare label array needs the image it belongs to")
        vol, arr, base = image, np.asarray(labels), {}
    if not isinstance(vol, Volume):
        raise MeasurementError(f"image must be a sam2_med.Volume, got {type(vol).__name__}", where)
    if arr.shape != vol.shape:
        raise MeasurementError(
            f"mask is not on the image grid: label map shape {arr.shape}, image shape "
            f"{vol.shape}; resample it onto the image first",
            where,
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise MeasurementError(f"labels must be integers, got dtype {arr.dtype}", where)
    elif arr.size and int(arr.min()) < 0:
        raise MeasurementError(f"labels must be >= 0, found {int(arr.min())}", where)
    return arr, vol, base


def _image_values(vol: Volume) -> np.ndarray | None:
    """The image array, or None for a geometry-only placeholder (a broadcast array)."""
    a = vol.array
    if a.size > 1 and all(s == 0 for s in a.strides):
        return None
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        return None
    return a


def _measure_one(
    arr: np.ndarray,
    box: tuple[slice, slice, slice],
    value: int,
    name: str,
    vol: Volume,
    values: np.ndarray | None,
    *,
    plane: str,
    axis_index: int,
    surface: bool,
    recist: bool,
    percentiles: tuple[float, ...],
) -> StructureMeasurements:
    sub = arr[box] == value
    offset = np.array([s.start for s in box], dtype=np.int64)
    idx = np.nonzero(sub)
    count = int(idx[0].size)
    affine = vol.affine
    voxel_volume = float(abs(np.linalg.det(affine[:3, :3])))
    centroid_ijk = np.array([c.mean() for c in idx], dtype=np.float64) + offset
    lo = tuple(int(s.start) for s in box)
    hi = tuple(int(s.stop) - 1 for s in box)
    size_mm = (np.array(hi) - np.array(lo) + 1) * np.asarray(vol.spacing)
    stats = None
    if values is not None:
        stats = _intensity(np.asarray(values[box])[sub], vol.modality, percentiles)
    return StructureMeasurements(
        label=int(value),
        name=name,
        voxel_count=count,
        voxel_volume_mm3=voxel_volume,
        volume_mm3=count * voxel_volume,
        surface_mm2=_surface_area(sub, affine) if surface else None,
        centroid_ijk=centroid_ijk,
        centroid_ras=geometry.voxel_to_world(affine, centroid_ijk),
        bbox_min_ijk=lo,  # type: ignore[arg-type]
        bbox_max_ijk=hi,  # type: ignore[arg-type]
        bbox_size_mm=size_mm,
        intensity=stats,
        recist=_recist(sub, offset, affine, plane, axis_index) if recist else None,
    )


def _intensity(v: np.ndarray, modality: str, percentiles: tuple[float, ...]) -> IntensityStats:
    v = v.astype(np.float64, copy=False)
    finite = np.isfinite(v)
    good = v[finite]
    units = _CT_UNITS if (modality or "").upper() == "CT" else None
    n = int(good.size)
    if n == 0:
        nan = math.nan
        return IntensityStats(units, 0, int(v.size), nan, nan, nan, nan, nan, {})
    qs = np.percentile(good, [50.0, *percentiles], method="linear")
    return IntensityStats(
        units=units,
        count=n,
        nonfinite=int(v.size - n),
        mean=float(good.mean()),
        sd=float(good.std(ddof=1)) if n > 1 else math.nan,
        minimum=float(good.min()),
        maximum=float(good.max()),
        median=float(qs[0]),
        percentiles={
            int(p) if float(p).is_integer() else p: float(q)  # type: ignore[misc]
            for p, q in zip(percentiles, qs[1:], strict=True)
        },
    )


def _surface_area(sub: np.ndarray, affine: np.ndarray) -> float:
    """Area in mm² of the marching-cubes mesh of a cropped binary mask (see the module doc)."""
    from skimage.measure import marching_cubes, mesh_surface_area

    padded = np.pad(sub, 1).astype(np.float32)
    verts, faces, _, _ = marching_cubes(padded, level=0.5)
    world = verts.astype(np.float64) @ np.asarray(affine, dtype=np.float64)[:3, :3].T
    return float(mesh_surface_area(world, faces))


# ------------------------------------------------------------------------------- RECIST
def slice_contours(mask2d: np.ndarray) -> list[np.ndarray]:
    """Boundary polygons of a 2D mask: marching squares at level 0.5, in index coordinates.

    Parameters
    ----------
    mask2d : (U, V) ndarray of bool
        One slice of a mask.

    Returns
    -------
    list of (N, 2) ndarray of float64
        Closed polygons (first point == last) in the slice's index coordinates ``(u, v)``,
        vertices half-way between inside and outside pixel centres. A pixel centre is inside a
        polygon exactly when the pixel is in the mask (holes are inner polygons: use the
        even-odd rule).

    Examples
    --------
    >>> [c.shape for c in slice_contours(np.pad(np.ones((1, 1), bool), 2))]
    [(5, 2)]
    """
    from skimage.measure import find_contours

    m = np.asarray(mask2d, dtype=bool)
    if not m.any():
        return []
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    padded = np.pad(m[r0:r1, c0:c1], 1).astype(np.float32)
    shift = np.array([r0 - 1, c0 - 1], dtype=np.float64)
    return [c + shift for c in find_contours(padded, 0.5)]


def _plane_basis(
    affine: np.ndarray, axis_index: int
) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """In-plane axes ``(u, v)``, ``Q`` (3, 2) orthonormal and ``R`` (2, 2) with
    ``affine[:3, [u, v]] = Q @ R``: ``R @ (du, dv)`` is an in-plane step in mm."""
    u, v = (a for a in range(3) if a != axis_index)
    q, r = np.linalg.qr(np.asarray(affine, dtype=np.float64)[:3, [u, v]])
    return (u, v), q, r


def _hull_diameter(xy: np.ndarray) -> tuple[float, int, int]:
    """Longest distance between points ``xy`` (N, 2) and the indices of its end points."""
    from scipy.spatial import ConvexHull
    from scipy.spatial.distance import cdist

    candidates = np.arange(len(xy))
    if len(xy) >= 3:
        try:
            candidates = ConvexHull(xy).vertices
        except Exception:  # degenerate (collinear) points: every point is a candidate
            candidates = np.arange(len(xy))
    pts = xy[candidates]
    d = cdist(pts, pts)
    a, b = np.unravel_index(int(np.argmax(d)), d.shape)
    return float(d[a, b]), int(candidates[a]), int(candidates[b])


def _perpendicular_chord(
    polygons: list[np.ndarray], p1: np.ndarray, p2: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Longest chord of the polygons exactly perpendicular to ``p1 -> p2`` (2D mm coordinates).

    The chord on the line ``{x : x . u = t}`` runs from the first to the last crossing of the
    polygon edges. Its length is piecewise convex in ``t`` between vertex offsets, so its
    maximum is at the offset of some vertex: every vertex offset is tried.
    """
    u = (p2 - p1) / np.linalg.norm(p2 - p1)
    n = np.array([-u[1], u[0]])
    a = np.concatenate([poly[:-1] for poly in polygons if len(poly) > 1])
    b = np.concatenate([poly[1:] for poly in polygons if len(poly) > 1])
    ta, tb, sa, sb = a @ u, b @ u, a @ n, b @ n
    lo, hi = np.minimum(ta, tb), np.maximum(ta, tb)
    dt = tb - ta
    parallel = np.abs(dt) < 1e-12
    s_lo, s_hi = np.minimum(sa, sb), np.maximum(sa, sb)
    offsets = np.unique(np.concatenate([ta, tb]))
    best = (-1.0, 0.0, 0.0, 0.0)
    for start in range(0, len(offsets), 256):
        t = offsets[start : start + 256, None]
        cross = (lo <= t) & (t <= hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = np.clip(np.where(parallel, 0.0, (t - ta) / np.where(parallel, 1.0, dt)), 0, 1)
        s = sa + lam * (sb - sa)
        smax = np.where(cross, np.where(parallel, s_hi, s), -np.inf).max(axis=1)
        smin = np.where(cross, np.where(parallel, s_lo, s), np.inf).min(axis=1)
        length = smax - smin
        length[~np.isfinite(length)] = -1.0
        k = int(np.argmax(length))
        if length[k] > best[0]:
            best = (float(length[k]), float(t[k, 0]), float(smin[k]), float(smax[k]))
    length, t, smin, smax = best
    if length < 0:
        return 0.0, p1.copy(), p1.copy()
    return length, t * u + smin * n, t * u + smax * n


def _recist(
    sub: np.ndarray, offset: np.ndarray, affine: np.ndarray, plane: str, axis_index: int
) -> Recist:
    (u, v), _q, r = _plane_basis(affine, axis_index)
    best: tuple[float, int, np.ndarray, np.ndarray] | None = None
    kept: dict[int, list[np.ndarray]] = {}
    for kk in range(sub.shape[axis_index]):
        plane2d = np.take(sub, kk, axis=axis_index)
        polys = slice_contours(plane2d)
        if not polys:
            continue
        pts = np.concatenate(polys) + offset[[u, v]]
        xy = pts @ r.T
        d, a, b = _hull_diameter(xy)
        if best is None or d > best[0]:
            best = (d, kk, xy[a], xy[b])
            kept = {kk: [p + offset[[u, v]] for p in polys]}
    assert best is not None
    long_mm, kk, p1, p2 = best
    polys_xy = [p @ r.T for p in kept[kk]]
    if long_mm > 0:
        short_mm, s1, s2 = _perpendicular_chord(polys_xy, p1, p2)
    else:
        short_mm, s1, s2 = 0.0, p1, p1
    k = int(kk + offset[axis_index])
    r_inv = np.linalg.inv(r)

    def to_ijk(xy_pts: np.ndarray) -> np.ndarray:
        uv = np.asarray(xy_pts) @ r_inv.T
        ijk = np.empty((len(uv), 3))
        ijk[:, u], ijk[:, v], ijk[:, axis_index] = uv[:, 0], uv[:, 1], k
        return ijk

    long_ijk = to_ijk(np.stack([p1, p2]))
    short_ijk = to_ijk(np.stack([s1, s2]))
    return Recist(
        plane=plane,
        axis_index=axis_index,
        slice_index=k,
        long_mm=long_mm,
        short_mm=short_mm,
        long_ijk=long_ijk,
        short_ijk=short_ijk,
        long_ras=geometry.voxel_to_world(affine, long_ijk),
        short_ras=geometry.voxel_to_world(affine, short_ijk),
    )


# ------------------------------------------------------------------------------ outputs
def measurement_rows(
    measurements: Sequence[StructureMeasurements], *, case: str | None = None
) -> list[dict[str, Any]]:
    """Flat CSV rows, one per structure (a ``case`` column first when given)."""
    rows = []
    for m in measurements:
        row = m.to_row()
        rows.append({"case": case, **row} if case is not None else row)
    return rows


def measurements_json(
    measurements: Sequence[StructureMeasurements],
    *,
    image: Volume | None = None,
    mask: str | None = None,
    plane: str = "axial",
) -> dict[str, Any]:
    """The JSON document of ``--json`` and the sidecar's ``"measurements"`` block."""
    doc: dict[str, Any] = {"plane": plane, "definitions": dict(DEFINITIONS)}
    if mask is not None:
        doc["mask"] = mask
    if image is not None:
        prov = image.provenance
        doc["image"] = {
            "source": prov.paths[0] if prov.paths else prov.description,
            "format": prov.format,
            "modality": image.modality,
            "shape": list(image.shape),
            "spacing_mm": list(image.spacing),
            "affine_ras": np.asarray(image.affine).tolist(),
        }
    doc["structures"] = [m.to_dict() for m in measurements]
    return doc


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    return buf.getvalue()


def write_measurements(
    path: str | os.PathLike[str],
    rows_or_doc: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write measurement rows as CSV (``.csv``) or a JSON document (``.json``), atomically.

    Parameters
    ----------
    path : path-like
        ``.csv`` takes rows (:func:`measurement_rows`); ``.json`` takes the document of
        :func:`measurements_json` (or rows, written as a list).
    overwrite : bool
        Replace an existing file. Default: refuse.
    """
    from .io._atomic import write_files_atomically
    from .io.errors import MaskWriteError

    p = Path(path)
    lower = p.name.lower()
    if lower.endswith(".csv"):
        if isinstance(rows_or_doc, Mapping):
            rows_or_doc = rows_or_doc.get("rows") or []  # type: ignore[assignment]
        data = _csv_text(rows_or_doc).encode("utf-8")  # type: ignore[arg-type]
    elif lower.endswith(".json"):
        data = (json.dumps(rows_or_doc, indent=2, allow_nan=False) + "\n").encode("utf-8")
    else:
        raise MaskWriteError("measurements are written as .csv or .json", p)
    write_files_atomically({p: data}, overwrite=overwrite)
    return p


def format_table(measurements: Sequence[StructureMeasurements]) -> str:
    """A fixed-width text table for the terminal: one line per structure."""
    header = (
        f"{'label':>5}  {'name':<18} {'voxels':>9} {'volume mL':>10} {'surface mm2':>12} "
        f"{'long mm':>8} {'short mm':>8} {'slice':>6}  {'mean ± SD':<20} centroid RAS mm"
    )
    lines = [header, "-" * len(header)]
    for m in measurements:
        r, st = m.recist, m.intensity
        surf = f"{m.surface_mm2:.1f}" if m.surface_mm2 is not None else "-"
        if st is not None and st.count:
            sd = f"{st.sd:.1f}" if math.isfinite(st.sd) else "-"
            inten = f"{st.mean:.1f} ± {sd}" + (f" {st.units}" if st.units else "")
        else:
            inten = "-"
        cen = ", ".join(f"{c:.1f}" for c in m.centroid_ras)
        lines.append(
            f"{m.label:>5}  {m.name[:18]:<18} {m.voxel_count:>9} {m.volume_ml:>10.3f} {surf:>12} "
            f"{(f'{r.long_mm:.1f}' if r else '-'):>8} {(f'{r.short_mm:.1f}' if r else '-'):>8} "
            f"{(str(r.slice_index) if r else '-'):>6}  {inten:<20} ({cen})"
        )
    return "\n".join(lines)
