"""Write label maps as a DICOM RT Structure Set (PS3.3 A.19) referencing the source series.

What radiotherapy planning systems import: one ROI per label, each a stack of closed planar
contours in patient coordinates (LPS+ mm, PS3.3 C.7.6.2.1.1), one or more per image slice, each
contour naming the source image (SOP Instance, and frame for a multi-frame source) it was drawn
on (PS3.3 C.8.8.6, ROI Contour Module).

How the contours are made
-------------------------
Slice ``k`` of a DICOM-derived volume is source frame ``k`` (``provenance.source_frames``; the
voxel grid is ``i`` = column, ``j`` = row). On each slice the mask's boundary is traced with
marching squares at level 0.5 (:func:`sam2_med.measure.slice_contours`), so every vertex lies
half-way between an inside and an outside pixel centre, and vertices that lie exactly on the
line through their neighbours are dropped (straight runs of the pixel boundary), which changes
no polygon. Rasterising the contours back with the usual "pixel centre inside the
polygon" rule, holes as inner contours (even-odd rule), gives back the mask. Vertices are the
voxel-index points mapped through the volume's LPS affine, which is first checked against every
source frame's Image Position / Orientation (Patient) and Pixel Spacing (the same check the DICOM
SEG writer does), so contours land on the pixels they were computed for.

Why not rt-utils
----------------
rt-utils (MIT, last release 1.2.7 in January 2023) needs ``opencv-python``, whose wheels bundle
their own Qt and clash with napari's PyQt6, and its output does not pass ``dciodvfy``: 1,248
errors for the liver of the LPS phantom series (Contour Data values longer than the 16 characters a DS allows,
Frame of Reference UID, Referring Physician's Name, Accession Number, Operators' Name and
Position Reference Indicator missing). This writer uses pydicom and the source-series handling
of :mod:`sam2_med.io.dicom_seg`; its output is checked with ``dciodvfy`` in the test suite.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import LabelVolume
from ..volume import Volume
from ._atomic import check_writable, write_files_atomically
from .errors import MaskWriteError
from .writers import _refuse_reference_paths, normalize_label_names, prepare_labels

__all__ = ["RTSTRUCT_SOP_CLASS_UID", "contours_for_slice", "save_rtstruct"]

#: RT Structure Set Storage (PS3.4 B.5).
RTSTRUCT_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.481.3"
#: Series number of the structure set; a high one sorts after the source series.
RTSTRUCT_SERIES_NUMBER = 9902
# The study reference's SOP class in RT Referenced Study Sequence items (as planning systems
# write it): Detached Study Management.
_STUDY_REFERENCE_CLASS = "1.2.840.10008.3.1.2.3.1"
# ROI display colours (RGB 0-255), cycled by label value.
_PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 190),
)


def _ds(v: float) -> str:
    """A Decimal String of at most 16 characters, to 1e-4 mm."""
    text = f"{float(v):.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def contours_for_slice(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed boundary polygons of one slice, without collinear or repeated vertices.

    Parameters
    ----------
    mask2d : (I, J) ndarray of bool
        Slice ``k`` of the mask, indexed ``(i, j)`` = (column, row).

    Returns
    -------
    list of (N, 2) ndarray of float64
        Vertices in voxel index coordinates ``(i, j)``, N >= 3, not closed (the first point is
        not repeated: an RT contour of type CLOSED_PLANAR closes itself).

    Examples
    --------
    >>> square = np.zeros((5, 5), bool); square[1:4, 1:4] = True
    >>> contours_for_slice(square)[0].shape  # an octagon: corners cut half a pixel
    (8, 2)
    """
    from ..measure import slice_contours

    out = []
    for c in slice_contours(mask2d):
        poly = c[:-1] if len(c) > 1 and np.allclose(c[0], c[-1]) else c
        poly = _drop_collinear(poly)
        if len(poly) >= 3:
            out.append(poly)
    return out


def _drop_collinear(poly: np.ndarray) -> np.ndarray:
    """Remove vertices of a closed polygon that lie on the segment joining their neighbours.

    Only corners are kept, so the polygon is the same point set (straight runs of a pixel
    boundary become one edge).
    """
    if len(poly) < 3:
        return poly
    a = poly - np.roll(poly, 1, axis=0)
    b = np.roll(poly, -1, axis=0) - poly
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    straight = (np.abs(cross) < 1e-9) & (np.einsum("ij,ij->i", a, b) >= 0)
    return poly[~straight]


def _referenced_image(hd_ds: Any, frame: int | None) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = hd_ds.SOPClassUID
    item.ReferencedSOPInstanceUID = hd_ds.SOPInstanceUID
    if frame is not None:
        item.ReferencedFrameNumber = int(frame) + 1
    return item


def _copy(target: Any, source: Any, keywords: Sequence[str]) -> None:
    """Copy attributes from the source image (empty when absent: they are Type 2)."""
    for kw in keywords:
        value = source.get(kw)
        setattr(target, kw, "" if value is None else value)


def save_rtstruct(
    labels: np.ndarray | LabelVolume,
    path: str | os.PathLike[str],
    *,
    reference: Volume,
    label_names: Mapping[Any, str] | Sequence[str] | None = None,
    overwrite: bool = False,
    structure_set_label: str = "SAM2MED",
) -> Path:
    """Write an RT Structure Set whose contours reference the reference's source images.

    Parameters
    ----------
    labels : (I, J, K) ndarray of int or bool, or LabelVolume
        Indexed like ``reference.array``: ``i`` = column, ``j`` = row, ``k`` = slice in the
        order of ``reference.provenance.source_frames``. 0 = background.
    path : path-like
        The output file (conventionally ``.dcm``).
    reference : Volume
        A DICOM-derived volume whose ``source_frames`` name the file and SOP Instance UID of
        every slice. The source files are re-read (headers only), never written.
    label_names : mapping of int -> str, or sequence of str, optional
        ROI names per label value (a sequence names labels 1, 2, ...); default the
        LabelVolume's names, then ``"label_<n>"``.
    overwrite : bool
        Replace an existing output. Default: refuse.
    structure_set_label : str
        Structure Set Label (at most 16 characters).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    MaskWriteError
        Not a DICOM reference, bad labels or shape, an empty label map, source files missing or
        changed, or the reference grid not matching the source frames.
    OutputExistsError
        ``path`` exists and ``overwrite`` is false.

    Notes
    -----
    One ROI per label value with voxels, ROI Number = the label value, in increasing order;
    named labels without voxels are left out. Generation algorithm SEMIAUTOMATIC, approval
    status UNAPPROVED (a clinician reviews before use). Contour Data are LPS+ mm to 1e-4 mm. The
    transfer syntax is Implicit VR Little Endian, whose 4-byte lengths hold Contour Data of any
    size (an explicit-VR DS element stops at 64 KiB, about 2,000 points).
    """
    out = Path(path)
    if not isinstance(reference, Volume) or reference.provenance.format != "dicom":
        fmt = getattr(getattr(reference, "provenance", None), "format", type(reference).__name__)
        raise MaskWriteError(
            f"an RT Structure Set needs an image read from DICOM (this one is {fmt!r}): its "
            "contours must reference the source images",
            out,
        )
    array, base_names = prepare_labels(labels, reference, out)
    _refuse_reference_paths([out], reference)
    check_writable([out], overwrite=overwrite)
    present = [int(v) for v in np.unique(array) if v != 0]
    if not present:
        raise MaskWriteError(
            "the label map is empty (no labelled voxels): an RT Structure Set needs at least "
            "one contour",
            out,
        )
    names = normalize_label_names(label_names, base_names, present, out)

    from .dicom_seg import _load_sources

    sources, frame_index = _load_sources(reference, out)
    n_slices = reference.shape[2]
    # slice k -> (dataset, frame number or None)
    per_slice = [
        (sources[0], int(frame_index[k])) if frame_index is not None else (sources[k], None)
        for k in range(n_slices)
    ]
    first = sources[0]
    ds = _build_dataset(
        first,
        per_slice,
        array,
        names,
        present,
        reference.lps_affine,
        structure_set_label=structure_set_label,
        out=out,
    )
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    write_files_atomically({out: buf.getvalue()}, overwrite=overwrite)
    return out


def _build_dataset(
    first: Any,
    per_slice: list[tuple[Any, int | None]],
    array: np.ndarray,
    names: Mapping[int, str],
    present: Sequence[int],
    lps: np.ndarray,
    *,
    structure_set_label: str,
    out: Path,
) -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ImplicitVRLittleEndian, generate_uid

    from .. import __version__

    now = _dt.datetime.now()
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS_UID
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    # SOP Common
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS_UID
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    # Patient, General Study (copied from the source: the structure set joins its study)
    _copy(ds, first, ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"))
    ds.StudyInstanceUID = first.StudyInstanceUID
    _copy(
        ds,
        first,
        ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"),
    )
    if first.get("StudyDescription"):
        ds.StudyDescription = first.StudyDescription
    # RT Series
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = RTSTRUCT_SERIES_NUMBER
    ds.SeriesDescription = "sam2-med structures"
    ds.OperatorsName = ""
    # General Equipment
    ds.Manufacturer = "sam2-med"
    ds.ManufacturerModelName = "sam2-med"
    ds.SoftwareVersions = __version__
    # Frame of Reference
    for_uid = str(first.FrameOfReferenceUID)
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "") or ""
    # Structure Set
    ds.StructureSetLabel = structure_set_label[:16]
    ds.StructureSetName = "sam2-med"
    ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = now.strftime("%H%M%S")
    ds.InstanceNumber = 1

    seen: set[tuple[str, int | None]] = set()
    images = []
    for src, frame in per_slice:
        key = (str(src.SOPInstanceUID), frame)
        if key not in seen:
            seen.add(key)
            images.append(_referenced_image(src, frame))
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = DicomSequence(images)
    study = Dataset()
    study.ReferencedSOPClassUID = _STUDY_REFERENCE_CLASS
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = DicomSequence([series])
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = for_uid
    frame_ref.RTReferencedStudySequence = DicomSequence([study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame_ref])

    rois, roi_contours, observations = [], [], []
    for number, value in enumerate(present, start=1):
        roi = Dataset()
        roi.ROINumber = int(value)
        roi.ReferencedFrameOfReferenceUID = for_uid
        roi.ROIName = str(names.get(value, f"label_{value}"))[:64]
        roi.ROIGenerationAlgorithm = "SEMIAUTOMATIC"
        roi.ROIGenerationDescription = f"sam2-med {__version__}, label {value}"
        rois.append(roi)

        contours = []
        mask = array == value
        for k in np.flatnonzero(mask.any(axis=(0, 1))):
            src, frame = per_slice[int(k)]
            for poly in contours_for_slice(mask[:, :, k]):
                ijk = np.column_stack([poly, np.full(len(poly), float(k))])
                pts = ijk @ lps[:3, :3].T + lps[:3, 3]
                c = Dataset()
                c.ContourImageSequence = DicomSequence([_referenced_image(src, frame)])
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(pts)
                c.ContourNumber = len(contours) + 1
                c.ContourData = [_ds(x) for x in pts.ravel()]
                contours.append(c)
        rc = Dataset()
        rc.ROIDisplayColor = list(_PALETTE[(int(value) - 1) % len(_PALETTE)])
        rc.ReferencedROINumber = int(value)
        rc.ContourSequence = DicomSequence(contours)
        roi_contours.append(rc)

        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = int(value)
        obs.RTROIInterpretedType = ""
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = DicomSequence(rois)
    ds.ROIContourSequence = DicomSequence(roi_contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    # Approval: structures made by a tool are reviewed before clinical use
    ds.ApprovalStatus = "UNAPPROVED"
    return ds
