"""DICOM series -> :class:`~sam2_med.volume.Volume`, refusing anything that is not one regular grid.

What is read
------------
* A folder (searched recursively), one file, or a list of files and folders; plain Part 10 files,
  preamble-less data sets, and gzip-wrapped files (``.dcm.gz``, decompressed in memory).
* Classic single-frame images (one file per slice) and enhanced multi-frame images, whose
  per-frame geometry and rescale come from the Per-Frame Functional Groups Sequence with the
  Shared Functional Groups Sequence as fallback (PS3.3 C.7.6.16).
* Any transfer syntax pydicom decodes with the installed plugins (native, deflate, JPEG baseline
  and lossless, JPEG-LS, JPEG 2000, RLE).

How it becomes a volume
-----------------------
Files are grouped by Series Instance UID. Non-image objects (SR, presentation states, SEG,
RT structure sets, ...) are set aside and noted. With several image series, ``series_uid`` must
choose one (:class:`MultipleSeriesError` lists them).

Slices are sorted by Image Position (Patient) projected on the slice normal (row x column
direction cosines, PS3.3 C.7.6.2.1.1); the slice step comes from those positions, never from
Slice Thickness. The stack must be regular: see :mod:`sam2_med.io._dicom_geometry` for the
tolerances (``max(0.01 mm, 1 % of the step)`` for uneven spacing and for in-plane drift).

Voxel values are the output of the Modality LUT (PS3.3 C.11.1; pydicom's
``apply_modality_lut``): Hounsfield units for CT. They are stored as the stored integer dtype when
no rescale is needed, as ``int16``/``uint16``/``int32`` when the rescale maps integers to
integers, and as ``float32`` otherwise. MONOCHROME1 images keep their values (a higher value is
displayed darker); a note in the provenance says so. Window Center/Width (first value, PS3.3
C.11.2) is kept as :class:`~sam2_med.volume.WindowHint`.

``Volume.array`` is indexed ``(i, j, k)`` = (column, row, slice in position order), the transpose
of pydicom's ``pixel_array`` stacked along slices, as dcm2niix and nibabel order it. The affine
is built in DICOM LPS+ and converted to RAS+ with :func:`sam2_med.geometry.lps_to_ras`.

Refused inputs (never guessed)
------------------------------
gantry tilt, missing slices or uneven spacing, inconsistent orientation / size / pixel spacing /
frame of reference within a series, a single slice, several images at one position (repeated
acquisitions; 4D time series, multiple echoes or image types unless ``index`` picks one volume
and that volume is homogeneous), colour and floating-point images, a zero rescale slope, files
that are not DICOM or are truncated, decoder failures. Every failure is a :class:`~sam2_med.io.errors.VolumeReadError`
subclass whose message starts with the offending file or folder.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from .. import geometry
from ..volume import Provenance, SourceFrame, Volume, WindowHint
from . import _dicom_files as files
from . import _dicom_geometry as geo
from .errors import (
    CorruptFileError,
    GeometryError,
    MultipleSeriesError,
    NotAVolumeError,
    UnsupportedFormatError,
    UnsupportedImageError,
    VolumeReadError,
)

__all__ = ["SeriesInfo", "list_series", "read_dicom"]

#: SOP Class UID prefixes of objects that are not images to stack (PS3.4 B.5): structured
#: reports, presentation states, raw data / spatial registration / SEG / surfaces, RT structure
#: sets, plans and treatment records (RT Image 481.1 and RT Dose 481.2 excluded from the list on
#: purpose: they are images, and are then checked like any other).
NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports, key object selection
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, spatial registration, fiducials, SEG, surfaces
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF/CDA/STL
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT structure set
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT plan
    "1.2.840.10008.5.1.4.1.1.481.4",  # RT beams treatment record
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
)


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found under a folder (from headers only).

    Attributes
    ----------
    series_uid : str
        Series Instance UID (``""`` for files that lack one).
    description : str or None
        Series Description.
    modality : str
        Modality code, ``"OT"`` when absent.
    n_slices : int
        Image planes in the series: files for classic images, frames for multi-frame files.
    rows, cols : int or None
        Image size of the first image (``None`` for non-image series).
    n_files : int
    study_uid : str or None
    series_number : int or None
    sop_class_uid : str or None
        Of the first file (from the data set, else from the file meta information).
    is_image : bool
        False for SR, presentation states, SEG, RT structure sets and other non-image objects.
    """

    series_uid: str
    description: str | None
    modality: str
    n_slices: int
    rows: int | None
    cols: int | None
    n_files: int
    study_uid: str | None = None
    series_number: int | None = None
    sop_class_uid: str | None = None
    is_image: bool = True

    def summary(self) -> str:
        """One line: UID, description, modality, slices and size."""
        size = f" {self.rows}x{self.cols}" if self.rows and self.cols else ""
        kind = "" if self.is_image else " (not an image)"
        return (
            f"{self.series_uid or '<no SeriesInstanceUID>'}  {self.description or '(no description)'!r}  "
            f"{self.modality}  {self.n_slices} slices{size} in {self.n_files} files{kind}"
        )


@dataclass(frozen=True)
class _Header:
    path: Path
    ds: Dataset


@dataclass(frozen=True)
class _Frame:
    """One image plane, with everything needed to place it (LPS) and rescale it."""

    path: Path
    sop_instance_uid: str
    frame: int | None
    rows: int
    cols: int
    iop: np.ndarray
    ipp: np.ndarray
    pixel_spacing: np.ndarray
    slope: float
    intercept: float
    has_lut: bool
    window: WindowHint | None
    #: Sort key among images at one position (temporal position, trigger time / echo, instance
    #: or frame number): volume ``t`` of a 4D series is the ``t``-th image at every position.
    order_key: tuple = ()
    #: What tells images at one position apart (image/frame type, echo, temporal position);
    #: every image of one selected volume must share it.
    kind: tuple = ()


# -- small readers of header values ------------------------------------------------------------
def _str(ds: Dataset, keyword: str) -> str | None:
    try:
        value = ds.get(keyword)
    except Exception:
        return None
    if value is None or value == "":
        return None
    return str(value).strip() or None


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value is None or value == "" else int(value)
    except Exception:
        return None


def _sop_class(ds: Dataset) -> str | None:
    uid = _str(ds, "SOPClassUID")
    if uid is None:
        meta = getattr(ds, "file_meta", None)
        uid = _str(meta, "MediaStorageSOPClassUID") if meta is not None else None
    return uid


def _sop_instance(ds: Dataset) -> str:
    uid = _str(ds, "SOPInstanceUID")
    if uid is None:
        meta = getattr(ds, "file_meta", None)
        uid = _str(meta, "MediaStorageSOPInstanceUID") if meta is not None else None
    return uid or ""


def _floats(item: Dataset | None, keyword: str, n: int, path: Path) -> np.ndarray | None:
    """``n`` finite floats from a (multi-)valued attribute; ``None`` when absent."""
    if item is None:
        return None
    try:
        if keyword not in item:
            return None
        value = item[keyword].value
        if value is None or value == "":
            return None
        seq = [value] if isinstance(value, (str, bytes, int, float)) else list(value)
        arr = np.array([float(v) for v in seq], dtype=np.float64)
    except Exception:
        raise CorruptFileError(f"unreadable {keyword} value", path) from None
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise CorruptFileError(f"{keyword} must hold {n} finite numbers, got {seq!r}", path)
    return arr


def _first_float(item: Dataset | None, keyword: str, path: Path) -> float | None:
    if item is None:
        return None
    try:
        if keyword not in item:
            return None
        value = item[keyword].value
        if value is None or value == "":
            return None
        if not isinstance(value, (str, bytes, int, float)):
            value = next(iter(value))
        out = float(value)
    except Exception:
        raise CorruptFileError(f"unreadable {keyword} value", path) from None
    if not np.isfinite(out):
        raise CorruptFileError(f"{keyword} is not finite", path)
    return out


def _maybe_float(item: Dataset | None, keyword: str) -> float | None:
    """A first value as float, or ``None`` when absent or unreadable (sorting hints only)."""
    try:
        return _first_float(item, keyword, Path())
    except VolumeReadError:
        return None


def _strings(item: Dataset | None, keyword: str) -> tuple[str, ...]:
    try:
        value = item.get(keyword) if item is not None else None
        if value is None:
            return ()
        return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)
    except Exception:
        return ()


def _window(item: Dataset | None, path: Path) -> WindowHint | None:
    center = _first_float(item, "WindowCenter", path)
    width = _first_float(item, "WindowWidth", path)
    if center is None or width is None or width <= 0:
        return None
    explanation = None
    try:
        raw = item.get("WindowCenterWidthExplanation")  # type: ignore[union-attr]
        if raw:
            explanation = str(raw if isinstance(raw, str) else next(iter(raw)))
    except Exception:
        explanation = None
    return WindowHint(center=center, width=width, explanation=explanation)


def _is_image(ds: Dataset) -> bool:
    """An image to stack: not a known non-image SOP class, and either an image storage SOP class
    or Rows/Columns present (a damaged image file stays an image and is then refused)."""
    uid = _sop_class(ds) or ""
    if uid.startswith(NON_IMAGE_SOP_PREFIXES):
        return False
    if uid.startswith("1.2.840.10008.5.1.4.1.1."):
        return True
    return "Rows" in ds and "Columns" in ds


# -- scanning ----------------------------------------------------------------------------------
def _as_inputs(path_or_list: Any) -> tuple[list[Path], Path]:
    """(paths, label): the inputs as paths and the path that names the input in messages."""
    if isinstance(path_or_list, (str, os.PathLike)):
        paths = [Path(path_or_list)]
    else:
        try:
            paths = [Path(p) for p in path_or_list]
        except TypeError:
            raise VolumeReadError(
                f"expected a path or a list of paths, got {type(path_or_list).__name__}"
            ) from None
    if not paths:
        raise VolumeReadError("empty list of DICOM files")
    for p in paths:
        if not p.exists():
            raise VolumeReadError("no such file or folder", p)
    label = paths[0] if len(paths) == 1 else paths[0].parent
    return paths, label


def _slim(ds: Dataset) -> Dataset:
    """Drop private elements from a header kept in memory (vendor blobs such as Siemens CSA
    headers are often the bulk of a header and are never used here)."""
    # Top level only, without parsing the elements (Dataset.remove_private_tags would convert
    # every raw element, nested ones included, and doubled the read time).
    for tag in [t for t in ds.keys() if t.is_private]:
        del ds[tag]
    return ds


def _scan(path_or_list: Any) -> tuple[list[_Header], list[str], Path]:
    """Read the headers of every DICOM file in the input.

    In a folder, files that are not DICOM (by name or by their first bytes) are skipped and
    counted in a note; a file that claims to be DICOM but is damaged is an error. Files named
    explicitly must all be DICOM.
    """
    inputs, label = _as_inputs(path_or_list)
    notes: list[str] = []
    headers: list[_Header] = []
    skipped = 0
    sniffed_out: list[str] = []  # skipped by content, not by name: worth naming in the note
    for top in inputs:
        if top.is_dir():
            candidates, by_name = files.candidate_files(top)
            skipped += by_name
            for p in candidates:
                # A file named like DICOM must be DICOM: a damaged slice is an error, never a
                # silently shorter series. Other names are skipped when they are not DICOM.
                named_dicom = p.name.lower().endswith(files.DICOM_SUFFIXES)
                if not named_dicom and not files.sniff(p):
                    skipped += 1
                    sniffed_out.append(p.name)
                    continue
                try:
                    ds = files.read_dataset(p, header_only=True)
                except UnsupportedFormatError:
                    if named_dicom:
                        raise
                    skipped += 1
                    sniffed_out.append(p.name)
                    continue
                headers.append(_Header(p, _slim(ds)))
        else:
            headers.append(_Header(top, _slim(files.read_dataset(top, header_only=True))))
    if skipped:
        named = f" (unrecognised content: {', '.join(sniffed_out[:5])}" + (
            ", ...)" if len(sniffed_out) > 5 else ")"
        )
        notes.append(f"skipped {skipped} non-DICOM file(s)" + (named if sniffed_out else ""))
    if not headers:
        raise UnsupportedFormatError("no DICOM files found", label)
    return headers, notes, label


def _group(headers: list[_Header]) -> dict[str, list[_Header]]:
    groups: dict[str, list[_Header]] = {}
    for h in headers:
        groups.setdefault(_str(h.ds, "SeriesInstanceUID") or "", []).append(h)
    return groups


def _series_info(uid: str, headers: list[_Header]) -> SeriesInfo:
    ds = headers[0].ds
    image = any(_is_image(h.ds) for h in headers)
    n = 0
    for h in headers:
        if _is_image(h.ds):
            n += max(_int(h.ds, "NumberOfFrames") or 1, 1)
    return SeriesInfo(
        series_uid=uid,
        description=_str(ds, "SeriesDescription"),
        modality=_str(ds, "Modality") or "OT",
        n_slices=n,
        rows=_int(ds, "Rows") if image else None,
        cols=_int(ds, "Columns") if image else None,
        n_files=len(headers),
        study_uid=_str(ds, "StudyInstanceUID"),
        series_number=_int(ds, "SeriesNumber"),
        sop_class_uid=_sop_class(ds),
        is_image=image,
    )


def list_series(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[SeriesInfo]:
    """Describe every DICOM series under ``path`` from file headers only.

    Parameters
    ----------
    path : path or sequence of paths
        A folder (searched recursively), a file, or a list of them.

    Returns
    -------
    list of SeriesInfo
        Image series first, then non-image ones, each group by series number and UID.

    Raises
    ------
    VolumeReadError
        Or a subclass: nothing DICOM there, or a damaged DICOM file.
    """
    headers, _, _ = _scan(path)
    infos = [_series_info(uid, hs) for uid, hs in _group(headers).items()]
    return sorted(infos, key=lambda s: (not s.is_image, s.series_number or 0, s.series_uid))


def _choose_series(
    groups: dict[str, list[_Header]], series_uid: str | None, label: Path, notes: list[str]
) -> tuple[str, list[_Header]]:
    infos = {uid: _series_info(uid, hs) for uid, hs in groups.items()}
    images = {uid: info for uid, info in infos.items() if info.is_image}
    others = [info for info in infos.values() if not info.is_image]
    if series_uid is not None:
        if series_uid not in groups:
            listing = "; ".join(i.summary() for i in infos.values())
            raise VolumeReadError(f"series {series_uid} not found; found: {listing}", label)
        if series_uid not in images:
            raise NotAVolumeError(
                f"series {series_uid} holds no images ({infos[series_uid].summary()})", label
            )
        return series_uid, groups[series_uid]
    if not images:
        listing = "; ".join(i.summary() for i in others)
        raise NotAVolumeError(f"no image series found, only: {listing}", label)
    if len(images) > 1:
        ordered = sorted(images.values(), key=lambda s: (s.series_number or 0, s.series_uid))
        listing = [s.summary() for s in ordered]
        raise MultipleSeriesError(
            f"{len(images)} image series found; choose one with series_uid=...",
            label,
            series=ordered,
            cli=f"{len(images)} image series found; choose one with --series-uid UID",
            details=listing,
        )
    if others:
        notes.append("ignored non-image series: " + "; ".join(i.summary() for i in others))
    uid = next(iter(images))
    if uid == "":
        notes.append("the files have no SeriesInstanceUID: read as one series")
    return uid, groups[uid]


# -- frames ------------------------------------------------------------------------------------
def _fg_item(groups: Sequence[Dataset | None], keyword: str) -> Dataset | None:
    """First item of a functional-group macro sequence, per-frame group first (C.7.6.16)."""
    for g in groups:
        if g is None:
            continue
        try:
            if keyword in g:
                seq = g[keyword].value
                if seq is not None and len(seq) > 0:
                    return seq[0]
        except Exception:
            continue
    return None


def _check_pixel_format(ds: Dataset, path: Path) -> None:
    spp = _int(ds, "SamplesPerPixel") or 1
    photometric = (_str(ds, "PhotometricInterpretation") or "MONOCHROME2").upper()
    if spp != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedImageError(
            f"{photometric} image with {spp} samples per pixel: sam2-med reads grayscale "
            "(MONOCHROME1/MONOCHROME2) images only",
            path,
        )


def _frames_of(h: _Header) -> list[_Frame]:
    """Every image plane of one file with its geometry and rescale."""
    ds, path = h.ds, h.path
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if not rows or not cols or rows < 1 or cols < 1:
        raise CorruptFileError("missing or invalid Rows/Columns", path)
    _check_pixel_format(ds, path)
    sop = _sop_instance(ds)
    has_lut = "ModalityLUTSequence" in ds
    n_frames = _int(ds, "NumberOfFrames")
    try:
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        shared_seq = ds.get("SharedFunctionalGroupsSequence")
        shared = shared_seq[0] if shared_seq else None
    except Exception:
        raise CorruptFileError("unreadable functional groups", path) from None

    if per_frame is None:
        if n_frames is not None and n_frames > 1:
            raise UnsupportedImageError(
                f"multi-frame file with {n_frames} frames but no per-frame functional groups: "
                "the frames cannot be placed in space",
                path,
            )
        iop = _floats(ds, "ImageOrientationPatient", 6, path)
        ipp = _floats(ds, "ImagePositionPatient", 3, path)
        ps = _floats(ds, "PixelSpacing", 2, path)
        slope = _first_float(ds, "RescaleSlope", path)
        intercept = _first_float(ds, "RescaleIntercept", path)
        temporal = _int(ds, "TemporalPositionIdentifier")
        echo = _int(ds, "EchoNumbers")
        trigger = _maybe_float(ds, "TriggerTime")
        hints = [
            (
                (temporal or 0, trigger or 0.0, echo or 0, _int(ds, "InstanceNumber") or 0),
                (_strings(ds, "ImageType"), echo, temporal),
            )
        ]
        planes = [(None, iop, ipp, ps, slope, intercept, _window(ds, path))]
    else:
        if n_frames is None or n_frames != len(per_frame):
            raise CorruptFileError(
                f"NumberOfFrames ({n_frames}) does not match the {len(per_frame)} items of "
                "PerFrameFunctionalGroupsSequence",
                path,
            )
        planes = []
        hints = []
        for f, item in enumerate(per_frame):
            groups = (item, shared, ds)
            content = _fg_item(groups, "FrameContentSequence")
            temporal = _int(content, "TemporalPositionIndex") if content is not None else None
            echo = _maybe_float(_fg_item(groups, "MREchoSequence"), "EffectiveEchoTime")
            frame_type = ()
            for kw in (
                "MRImageFrameTypeSequence",
                "CTImageFrameTypeSequence",
                "PETFrameTypeSequence",
            ):
                frame_type = frame_type or _strings(_fg_item(groups, kw), "FrameType")
            hints.append(((temporal or 0, echo or 0.0, 0, f), (frame_type, echo, temporal)))
            pos = _fg_item(groups, "PlanePositionSequence")
            ori = _fg_item(groups, "PlaneOrientationSequence")
            meas = _fg_item(groups, "PixelMeasuresSequence")
            pvt = _fg_item(groups, "PixelValueTransformationSequence")
            voi = _fg_item(groups, "FrameVOILUTSequence")
            planes.append(
                (
                    f,
                    _floats(ori, "ImageOrientationPatient", 6, path),
                    _floats(pos, "ImagePositionPatient", 3, path),
                    _floats(meas, "PixelSpacing", 2, path),
                    _first_float(pvt, "RescaleSlope", path)
                    if pvt is not None
                    else _first_float(ds, "RescaleSlope", path),
                    _first_float(pvt, "RescaleIntercept", path)
                    if pvt is not None
                    else _first_float(ds, "RescaleIntercept", path),
                    _window(voi, path) if voi is not None else _window(ds, path),
                )
            )

    out = []
    for (f, iop, ipp, ps, slope, intercept, window), (order_key, kind) in zip(
        planes, hints, strict=True
    ):
        where = "" if f is None else f" (frame {f})"
        missing = [
            name
            for name, v in (
                ("ImageOrientationPatient", iop),
                ("ImagePositionPatient", ipp),
                ("PixelSpacing", ps),
            )
            if v is None
        ]
        if missing:
            raise GeometryError(
                f"no {', '.join(missing)}{where}: the image cannot be placed in space", path
            )
        assert iop is not None and ipp is not None and ps is not None
        if slope == 0:
            raise CorruptFileError(f"RescaleSlope is 0{where}: every voxel would be equal", path)
        if np.any(ps <= 0):
            raise GeometryError(f"PixelSpacing {ps.tolist()} is not positive{where}", path)
        out.append(
            _Frame(
                path=path,
                sop_instance_uid=sop,
                frame=f,
                rows=rows,
                cols=cols,
                iop=iop,
                ipp=ipp,
                pixel_spacing=ps,
                slope=1.0 if slope is None else slope,
                intercept=0.0 if intercept is None else intercept,
                has_lut=has_lut,
                window=window,
                order_key=order_key,
                kind=kind,
            )
        )
    return out


def _where(frame: _Frame) -> str:
    return f"{frame.path}" + ("" if frame.frame is None else f" frame {frame.frame}")


def _check_consistent(frames: list[_Frame], label: Path) -> None:
    """Same size, pixel spacing and orientation for every plane."""
    first = frames[0]
    sizes = sorted({(f.rows, f.cols) for f in frames})
    if len(sizes) > 1:
        raise NotAVolumeError(
            f"images of different sizes (rows x columns {sizes}) in one series: not one volume",
            label,
        )
    for f in frames[1:]:
        if not geo.same_orientation(f.iop, first.iop):
            n_groups = len({tuple(np.round(x.iop, 3)) for x in frames})
            raise GeometryError(
                "inconsistent orientation within the series: "
                f"{n_groups} different ImageOrientationPatient values (e.g. {_where(first)}: "
                f"{first.iop.round(4).tolist()} vs {_where(f)}: {f.iop.round(4).tolist()}); "
                "a localiser or a multi-planar series is not one volume",
                label,
            )
        if not np.allclose(f.pixel_spacing, first.pixel_spacing, rtol=1e-4, atol=1e-6):
            raise NotAVolumeError(
                "mixed PixelSpacing within the series "
                f"({first.pixel_spacing.tolist()} vs {f.pixel_spacing.tolist()} in {_where(f)})",
                label,
            )


def _describe_kind(kind: tuple) -> str:
    image_type, echo, temporal = kind
    parts = []
    if image_type:
        parts.append("type " + "\\".join(image_type))
    if echo is not None:
        parts.append(f"echo {echo:g}")
    if temporal is not None:
        parts.append(f"temporal position {temporal}")
    return ", ".join(parts) or "no distinguishing attribute"


def _stack(
    frames: list[_Frame], index: int | None, label: Path, notes: list[str]
) -> tuple[list[_Frame], float]:
    """Pick the planes of one volume and sort them along the normal; refuse anything irregular.

    Returns the planes in slice order and the slice step (mm). Several images at each position
    (4D: time points, echoes, magnitude/phase) need ``index``: volume ``t`` is the ``t``-th image
    at every position in the order of :attr:`_Frame.order_key`, and all of them must share one
    :attr:`_Frame.kind`, else the series is refused rather than mixed.
    """
    if len(frames) < 2:
        raise NotAVolumeError(
            "a single image is not a volume: at least 2 slices are needed (the slice step is "
            "measured from their positions, never taken from SliceThickness)",
            label,
        )
    try:
        normal = geo.slice_normal(frames[0].iop)
    except ValueError as exc:
        raise GeometryError(str(exc), frames[0].path) from None
    d = np.stack([f.ipp for f in frames]) @ normal
    # Planes at the same place along the normal: repeated acquisitions, 4D, echoes, image types.
    by_d = np.argsort(d, kind="stable")
    gaps = np.diff(d[by_d])
    distinct = gaps[gaps > geo.POSITION_ATOL_MM]
    scale = float(np.median(distinct)) if distinct.size else 0.0
    same = gaps <= 0.5 * geo.position_tolerance(scale)
    if np.any(same):
        n_positions = int(np.sum(~same)) + 1
        if n_positions == 1:
            raise NotAVolumeError(
                f"not a volume: all {len(frames)} images lie at the same position along the "
                "slice normal (repeated acquisitions of one slice?)",
                label,
            )
        starts = np.flatnonzero(np.concatenate([[True], ~same]))
        counts = np.diff(np.append(starts, len(frames)))
        if not np.all(counts == counts[0]):
            raise NotAVolumeError(
                f"not a volume: {len(frames)} images at only {n_positions} distinct slice "
                f"positions, with up to {int(counts.max())} images at one position "
                "(repeated or overlapping acquisitions)",
                label,
            )
        m = int(counts[0])
        clusters = [
            sorted((frames[i] for i in by_d[a : a + m]), key=lambda f: f.order_key) for a in starts
        ]
        kinds = [_describe_kind(c.kind) for c in clusters[0]]
        if index is None:
            listing = "; ".join(f"{t}: {k}" for t, k in enumerate(kinds))
            what = (
                f"{m} images at each of {n_positions} slice positions: a 4D series (time "
                "points, echoes, or several image types such as magnitude/phase)"
            )
            raise UnsupportedImageError(
                f"{what}; pass index=0..{m - 1} to load one volume ({listing})",
                label,
                cli=f"{what}; give --index N (0..{m - 1}) to load one volume ({listing})",
            )
        if (
            isinstance(index, bool)
            or not isinstance(index, (int, np.integer))
            or not 0 <= index < m
        ):
            raise VolumeReadError(
                f"index={index!r} is out of range for a 4D series of {m} volumes (0..{m - 1})",
                label,
                cli=f"--index {index} is out of range for a 4D series of {m} volumes (0..{m - 1})",
            )
        frames = [c[int(index)] for c in clusters]
        if len({f.kind for f in frames}) > 1:
            raise UnsupportedImageError(
                f"the {m} images at each position cannot be matched into volumes consistently "
                f"(volume {index} would mix {sorted({_describe_kind(f.kind) for f in frames})})",
                label,
            )
        notes.append(f"4D series: loaded volume {index} of {m} ({kinds[int(index)]})")
    elif index not in (None, 0):
        raise VolumeReadError(
            f"index={index!r} given but the series is 3D",
            label,
            cli=f"--index {index} given but the series is 3D",
        )
    order, step, problems = geo.stack_problems(np.stack([f.ipp for f in frames]), normal)
    if problems:
        raise GeometryError("; ".join(problems), label)
    return [frames[i] for i in order], step


# -- pixels ------------------------------------------------------------------------------------
def _decode(h: _Header, rows: int, cols: int) -> np.ndarray:
    """Stored values of a file: ``(n_frames, rows, cols)``."""
    ds = files.read_dataset(h.path, header_only=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except (NotImplementedError, ImportError) as exc:
        tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise UnsupportedFormatError(
            f"no decoder for transfer syntax {tsyntax} ({exc}); install pylibjpeg, "
            "pylibjpeg-openjpeg, pylibjpeg-libjpeg, pylibjpeg-rle and pyjpegls",
            h.path,
        ) from None
    except MemoryError:
        raise CorruptFileError("damaged pixel data (absurd image size)", h.path) from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # Rust decoders (pyo3) panic with a BaseException subclass
        raise CorruptFileError(
            f"cannot decode pixel data ({type(exc).__name__}: {exc})", h.path
        ) from None
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        raise UnsupportedImageError(
            "floating-point pixel data (Float Pixel Data): sam2-med reads integer stored values",
            h.path,
        )
    multi = h.ds.get("PerFrameFunctionalGroupsSequence") is not None
    expected = (_int(h.ds, "NumberOfFrames") or 1, rows, cols) if multi else (rows, cols)
    if arr.shape != expected or arr.dtype.kind not in "iub":
        raise CorruptFileError(
            f"decoded pixel data has shape {arr.shape} {arr.dtype}, expected {expected} integers",
            h.path,
        )
    return arr.reshape((-1, rows, cols))


def _lut_dataset(frame: _Frame, ds: Dataset | None) -> Dataset:
    """The attributes of the Modality LUT module (C.11.1) that apply to one plane."""
    if frame.has_lut and ds is not None:
        return ds
    item = Dataset()
    item.RescaleSlope = frame.slope
    item.RescaleIntercept = frame.intercept
    return item


def _output_dtype(raw: np.ndarray, frames: list[_Frame], notes: list[str]) -> np.dtype:
    """Smallest dtype holding the modality-LUT output exactly (float32 for fractional output)."""
    if any(f.has_lut for f in frames):
        notes.append("Modality LUT Sequence applied (PS3.3 C.11.1)")
        return np.dtype(np.float32)
    slopes = np.array([f.slope for f in frames])
    inter = np.array([f.intercept for f in frames])
    if np.all(slopes == 1) and np.all(inter == 0):
        return raw.dtype
    if np.all(slopes == np.round(slopes)) and np.all(inter == np.round(inter)):
        lo = hi = None
        for k in range(raw.shape[0]):
            a, b = int(raw[k].min()), int(raw[k].max())
            ends = (a * slopes[k] + inter[k], b * slopes[k] + inter[k])
            lo = min(ends) if lo is None else min(lo, *ends)
            hi = max(ends) if hi is None else max(hi, *ends)
        for dt in (np.int16, np.uint16, np.int32):
            info = np.iinfo(dt)
            if info.min <= lo and hi <= info.max:
                return np.dtype(dt)
    notes.append("rescale slope/intercept give non-integer values: stored as float32")
    return np.dtype(np.float32)


def _pixels(
    sorted_frames: list[_Frame], ds_of: dict[Path, _Header], notes: list[str]
) -> np.ndarray:
    """Decode every file once and apply the Modality LUT (PS3.3 C.11.1) slice by slice.

    Returns ``(K, rows, cols)`` in slice order. Stored values are decoded straight into their
    sorted place; the LUT output reuses that buffer when its dtype has the same item size, so
    the peak is one volume of stored values plus one decoded file (plus the output volume only
    when the output is wider, e.g. float32 from 16-bit stored values).
    """
    rows, cols = sorted_frames[0].rows, sorted_frames[0].cols
    by_file: dict[Path, list[tuple[int, _Frame]]] = {}
    for k, f in enumerate(sorted_frames):
        by_file.setdefault(f.path, []).append((k, f))
    raw: np.ndarray | None = None
    for path, items in by_file.items():
        part = _decode(ds_of[path], rows, cols)
        if raw is None:
            raw = np.empty((len(sorted_frames), rows, cols), dtype=part.dtype)
        elif not np.can_cast(part.dtype, raw.dtype, casting="safe"):
            raw = raw.astype(np.result_type(raw.dtype, part.dtype))
        for k, f in items:
            raw[k] = part[f.frame or 0]
        del part
    assert raw is not None
    out_dtype = _output_dtype(raw, sorted_frames, notes)
    identity = [f.slope == 1 and f.intercept == 0 and not f.has_lut for f in sorted_frames]
    if out_dtype == raw.dtype and all(identity):
        return raw
    if out_dtype.itemsize == raw.dtype.itemsize:
        out = raw.view(out_dtype)  # each slice is read into a temporary before it is overwritten
    else:
        out = np.empty(raw.shape, dtype=out_dtype)
    for k, f in enumerate(sorted_frames):
        if identity[k] and out_dtype == raw.dtype:
            continue
        out[k] = apply_modality_lut(raw[k], _lut_dataset(f, ds_of[f.path].ds))
    return out


# -- the reader --------------------------------------------------------------------------------
def read_dicom(
    path_or_list: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    series_uid: str | None = None,
    index: int | None = None,
) -> Volume:
    """Read one DICOM image series as a :class:`~sam2_med.volume.Volume`.

    Parameters
    ----------
    path_or_list : path or sequence of paths
        A folder (searched recursively; non-DICOM files skipped), one DICOM file (an enhanced
        multi-frame file is a whole volume), or a list of files/folders. ``.dcm.gz`` files are
        decompressed in memory.
    series_uid : str, optional
        The Series Instance UID to load when the input holds several image series.
    index : int, optional
        Which volume of a 4D series (several images at every slice position: time points,
        echoes, magnitude/phase) to load, ``0..m-1`` in temporal-position / echo / instance
        order; required for such series, and only ``None`` or ``0`` for a 3D one.

    Returns
    -------
    Volume
        ``array`` of shape ``(I, J, K)`` = (columns, rows, slices), slices in ascending position
        along the normal ``row x column`` of Image Orientation (Patient); values after the
        Modality LUT (HU for CT). ``affine`` maps voxel ``(i, j, k)`` to RAS+ mm.
        ``provenance.source_frames[k]`` names the file (and frame) of slice ``k``.

    Raises
    ------
    VolumeReadError
        Or a subclass (:class:`MultipleSeriesError`, :class:`GeometryError`,
        :class:`NotAVolumeError`, :class:`UnsupportedImageError`, :class:`CorruptFileError`,
        :class:`UnsupportedFormatError`), naming the file or folder and the problem. No other
        exception escapes for bad input.
    """
    try:
        return _read(path_or_list, series_uid, index)
    except VolumeReadError:
        raise
    except MemoryError:
        raise VolumeReadError("not enough memory to read this series") from None
    except Exception as exc:  # a bug or an input case not foreseen: still the documented type
        where = path_or_list if isinstance(path_or_list, (str, os.PathLike)) else None
        raise VolumeReadError(
            f"unexpected {type(exc).__name__} while reading DICOM: {exc}", where
        ) from exc


def _read(path_or_list: Any, series_uid: str | None, index: int | None) -> Volume:
    headers, notes, label = _scan(path_or_list)
    uid, chosen = _choose_series(_group(headers), series_uid, label, notes)
    images = [h for h in chosen if _is_image(h.ds)]
    if len(images) < len(chosen):
        notes.append(f"ignored {len(chosen) - len(images)} non-image object(s) in the series")
    if len(images) == 1:
        label = images[0].path

    frames = [f for h in images for f in _frames_of(h)]
    _check_consistent(frames, label)
    photometrics = {(_str(h.ds, "PhotometricInterpretation") or "").upper() for h in images}
    if len(photometrics) > 1:
        raise NotAVolumeError(
            f"mixed PhotometricInterpretation {sorted(photometrics)} in one series", label
        )
    frors = {_str(h.ds, "FrameOfReferenceUID") for h in images} - {None}
    if len(frors) > 1:
        raise GeometryError(
            f"{len(frors)} different FrameOfReferenceUIDs in one series: not one coordinate system",
            label,
        )
    sorted_frames, step = _stack(frames, index, label, notes)
    used = {f.path for f in sorted_frames}
    images = [h for h in images if h.path in used]

    out = _pixels(sorted_frames, {h.path: h for h in images}, notes)
    array = out.transpose(2, 1, 0)  # (slice, row, col) -> (i=col, j=row, k=slice)

    k0 = sorted_frames[0]
    lps = geo.lps_affine(k0.iop, k0.ipp, k0.pixel_spacing, step)
    affine = geometry.lps_to_ras(lps)

    ds0 = images[0].ds
    photometric = (_str(ds0, "PhotometricInterpretation") or "").upper()
    if photometric == "MONOCHROME1":
        notes.append(
            "MONOCHROME1: values kept as stored after the modality LUT; a display must invert "
            "them (higher values are darker)"
        )
    if any(
        _int(h.ds, "NumberOfFrames") and h.ds.get("PerFrameFunctionalGroupsSequence")
        for h in images
    ):
        notes.append("enhanced multi-frame: geometry and rescale from functional groups (C.7.6.16)")
    source_frames = tuple(
        SourceFrame(path=str(f.path), sop_instance_uid=f.sop_instance_uid, frame=f.frame)
        for f in sorted_frames
    )
    tsyntaxes = sorted(
        {str(getattr(getattr(h.ds, "file_meta", None), "TransferSyntaxUID", "")) for h in images}
    )
    provenance = Provenance(
        format="dicom",
        paths=tuple(str(h.path) for h in images),
        series_uid=uid or None,
        study_uid=_str(ds0, "StudyInstanceUID"),
        frame_of_reference_uid=next(iter(frors)) if frors else None,
        sop_class_uid=_sop_class(ds0),
        source_frames=source_frames,
        description=_str(ds0, "SeriesDescription"),
        source_orientation=geometry.axcodes(affine),
        notes=tuple(notes),
        extra={
            "slice_step_mm": float(step),
            "transfer_syntaxes": tsyntaxes,
            "series_number": _int(ds0, "SeriesNumber"),
            "photometric_interpretation": photometric or None,
            "rescale_slopes": sorted({f.slope for f in sorted_frames}),
            "rescale_intercepts": sorted({f.intercept for f in sorted_frames}),
        },
    )
    return Volume(
        array,
        affine,
        modality=_str(ds0, "Modality") or "OT",
        provenance=provenance,
        window=k0.window,
    )
