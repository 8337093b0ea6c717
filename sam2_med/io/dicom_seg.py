"""Write label maps as a DICOM Segmentation (PS3.3 A.51) that references the source instances.

A DICOM SEG frame carries no free-floating geometry of its own in this writer: every frame is
derived from one source frame (PS3.3 C.8.20.2 Segmentation Image Module, Derivation Image and
Source Image sequences per frame), and its plane position and orientation are copied from that
source frame. A viewer places the mask where it places the source slice, so the writer's one
job is to hand highdicom mask plane ``k`` together with *the* source frame of slice ``k``.

Axis conventions
----------------
sam2-med DICOM volumes are indexed ``(i, j, k)`` = (column, row, slice), slices in the order of
``reference.provenance.source_frames`` (see :mod:`sam2_med.geometry`). highdicom expects
``(frames, rows, columns)``, so mask plane ``k`` is ``labels[:, :, k].T``. Before writing, the
reference's LPS affine is checked against every source frame's Image Position / Orientation
(Patient) and Pixel Spacing (PS3.3 C.7.6.2); a mismatch (e.g. a transposed or flipped
volume) is refused rather than written onto the wrong pixels.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import LabelVolume
from ..volume import SourceFrame, Volume
from ._seg_coding import needs_unicode, segment_coding, segment_label
from .errors import MaskWriteError, MissingDependencyError
from .writers import normalize_label_names, prepare_labels

__all__ = ["save_dicom_seg"]

#: Largest SEG series number we use; any value is valid, a high one sorts after the source.
SEG_SERIES_NUMBER = 9901


def _read_source(path: str, out: Path) -> Any:
    """Read a source DICOM header (``.dcm.gz`` decompressed in memory), pixels skipped."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise MaskWriteError(
            f"cannot read source DICOM file {path} ({exc.strerror or exc}); the SEG must "
            "reference the files the reference volume was read from",
            out,
        ) from exc
    if blob[:2] == b"\x1f\x8b":
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError) as exc:
            raise MaskWriteError(f"source file {path} is a damaged gzip stream", out) from exc
    try:
        return pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise MaskWriteError(f"source file {path} is not readable DICOM ({exc})", out) from exc


def _fill_identifiers(ds: Any, reference: Volume, out: Path, path: str) -> None:
    """Fill identifiers that some (anonymised) files keep only in the file meta, in memory only."""
    from pydicom.uid import generate_uid

    meta = getattr(ds, "file_meta", None)
    if not ds.get("SOPClassUID") and meta is not None and meta.get("MediaStorageSOPClassUID"):
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
    if not ds.get("SOPInstanceUID") and meta is not None and meta.get("MediaStorageSOPInstanceUID"):
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    prov = reference.provenance
    # Anonymised series sometimes carry empty Study/Series UIDs; the SEG still needs valid ones.
    # Use what the reader recorded, else derive a stable UID from the Frame of Reference so
    # every SEG written for this series agrees.
    seed = [str(ds.get("FrameOfReferenceUID", "")), str(ds.get("StudyDate", ""))]
    if not ds.get("StudyInstanceUID"):
        ds.StudyInstanceUID = prov.study_uid or generate_uid(entropy_srcs=["study", *seed])
    if not ds.get("SeriesInstanceUID"):
        ds.SeriesInstanceUID = prov.series_uid or generate_uid(entropy_srcs=["series", *seed])
    if not ds.get("FrameOfReferenceUID"):
        # Old files (e.g. pre-2000 GE CT) lack it; highdicom needs one for patient coordinates.
        # A stable UID derived from the series keeps every SEG of that series consistent.
        ds.FrameOfReferenceUID = prov.frame_of_reference_uid or generate_uid(
            entropy_srcs=["frame-of-reference", str(ds.SeriesInstanceUID)]
        )
    for keyword in ("SOPClassUID", "SOPInstanceUID"):
        if not ds.get(keyword):
            raise MaskWriteError(f"source file {path} has no {keyword}", out)


def _share_constant_groups(ds: Any, out: Path, path: str) -> None:
    """Move per-frame Pixel Measures / Plane Orientation that are equal in every frame to shared.

    PS3.3 C.7.6.16 lets an enhanced multi-frame image carry a functional group either shared or
    per frame; highdicom reads these two only from the shared group. Re-encoding a group that
    is identical in every frame as shared changes no frame's geometry. Done on the in-memory
    copy only.
    """
    if "PerFrameFunctionalGroupsSequence" not in ds:
        return
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if "SharedFunctionalGroupsSequence" not in ds or not ds.SharedFunctionalGroupsSequence:
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence as DicomSequence

        ds.SharedFunctionalGroupsSequence = DicomSequence([Dataset()])
    shared = ds.SharedFunctionalGroupsSequence[0]
    for keyword in ("PixelMeasuresSequence", "PlaneOrientationSequence"):
        if keyword in shared:
            continue
        items = [item.get(keyword) for item in per_frame]
        if any(seq is None for seq in items):
            raise MaskWriteError(f"source file {path} has frames without {keyword}", out)
        if any(list(seq) != list(items[0]) for seq in items[1:]):  # type: ignore[arg-type]
            raise MaskWriteError(
                f"source file {path} has a different {keyword} per frame; a DICOM SEG "
                "needs one shared pixel spacing and orientation",
                out,
            )
        shared[keyword] = per_frame[0][keyword]
        for item in per_frame:
            del item[keyword]


def _frame_geometry(ds: Any, frame: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IPP (3,), IOP (6,), PixelSpacing (2,)) of one frame, LPS mm (PS3.3 C.7.6.2)."""
    if frame is None:
        return (
            np.asarray(ds.ImagePositionPatient, dtype=np.float64),
            np.asarray(ds.ImageOrientationPatient, dtype=np.float64),
            np.asarray(ds.PixelSpacing, dtype=np.float64),
        )
    shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
    per = ds.PerFrameFunctionalGroupsSequence[frame]

    def find(seq_name: str, attr: str):
        for group in (per, shared):
            if group is not None and seq_name in group:
                item = group[seq_name].value[0]
                if attr in item:
                    return np.asarray(item[attr].value, dtype=np.float64)
        raise KeyError(f"{seq_name}/{attr}")

    return (
        find("PlanePositionSequence", "ImagePositionPatient"),
        find("PlaneOrientationSequence", "ImageOrientationPatient"),
        find("PixelMeasuresSequence", "PixelSpacing"),
    )


def _check_geometry(
    reference: Volume, datasets: dict[str, Any], frames: Sequence[SourceFrame], out: Path
) -> None:
    """Refuse when the reference's voxel grid is not the source frames' pixel grid.

    For slice ``k`` (source frame ``frames[k]``): voxel ``(0, 0, k)`` must sit at the frame's
    Image Position (Patient); the ``i`` axis must run along the row direction (IOP[0:3]) with
    step PixelSpacing[1], the ``j`` axis down the column direction (IOP[3:6]) with step
    PixelSpacing[0]. Tolerance: a tenth of the smallest voxel size.
    """
    lps = reference.lps_affine
    cols, rows = reference.shape[0], reference.shape[1]
    tol = 0.1 * min(reference.spacing)
    for k, sf in enumerate(frames):
        ds = datasets[sf.path]
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise MaskWriteError(
                f"source frame {k} ({sf.path}) is {ds.Rows}x{ds.Columns} (rows x columns) but "
                f"the reference volume has {rows} rows (j) and {cols} columns (i)",
                out,
            )
        try:
            ipp, iop, spacing = _frame_geometry(ds, sf.frame)
        except (AttributeError, KeyError, IndexError, ValueError, TypeError) as exc:
            raise MaskWriteError(
                f"source frame {k} ({sf.path}) lacks plane geometry ({exc})", out
            ) from exc
        expected = np.column_stack(
            [iop[:3] * spacing[1], iop[3:6] * spacing[0], lps[:3, 3] + lps[:3, 2] * k]
        )
        got = np.column_stack([lps[:3, 0], lps[:3, 1], ipp])
        err = np.abs(expected - got)
        if err[:, 2].max() > tol or err[:, :2].max() > 1e-3 * max(reference.spacing):
            raise MaskWriteError(
                f"reference grid does not match source frame {k} ({sf.path}): voxel (0,0,{k}) "
                f"is at LPS {np.round(lps[:3, 3] + lps[:3, 2] * k, 3).tolist()} but the frame's "
                f"ImagePositionPatient is {np.round(ipp, 3).tolist()} (or the row/column "
                "directions differ); refusing to write a mask onto the wrong pixels",
                out,
            )


def _load_sources(reference: Volume, out: Path) -> tuple[list[Any], np.ndarray | None]:
    """Source datasets for highdicom and, for one multi-frame source, slice -> frame indices."""
    frames = reference.provenance.source_frames
    if len(frames) != reference.shape[2]:
        raise MaskWriteError(
            f"the reference has {reference.shape[2]} slices but its provenance lists "
            f"{len(frames)} source frames; cannot map mask planes to DICOM instances",
            out,
        )
    datasets: dict[str, Any] = {}
    for sf in frames:
        if sf.path not in datasets:
            ds = _read_source(sf.path, out)
            _fill_identifiers(ds, reference, out, sf.path)
            if sf.frame is not None:
                _share_constant_groups(ds, out, sf.path)
            datasets[sf.path] = ds
    for k, sf in enumerate(frames):
        uid = str(datasets[sf.path].SOPInstanceUID)
        if uid != sf.sop_instance_uid:
            raise MaskWriteError(
                f"source frame {k}: {sf.path} now holds SOP Instance {uid}, not "
                f"{sf.sop_instance_uid}; the files changed since the volume was read",
                out,
            )
    _check_geometry(reference, datasets, frames, out)

    multi = [sf.frame is not None for sf in frames]
    if all(multi):
        if len(datasets) != 1:
            raise MaskWriteError(
                "the reference mixes frames of several multi-frame files; a DICOM SEG can "
                "reference one multi-frame image or a series of single-frame images",
                out,
            )
        frame_index = np.array([sf.frame for sf in frames], dtype=np.int64)
        if len(set(frame_index.tolist())) != len(frame_index):
            raise MaskWriteError("two slices reference the same source frame", out)
        return list(datasets.values()), frame_index
    if any(multi):
        raise MaskWriteError("the reference mixes single-frame and multi-frame sources", out)
    if len(datasets) != len(frames):
        raise MaskWriteError("two slices reference the same single-frame file", out)
    return [datasets[sf.path] for sf in frames], None


def _segment_descriptions(hd: Any, names: Mapping[int, str]) -> list[Any]:
    """One Segment Description per label: a valid LO label and SNOMED codes chosen from the
    name (see :mod:`sam2_med.io._seg_coding`)."""
    from pydicom.sr.codedict import codes

    from .. import __version__

    algorithm = hd.AlgorithmIdentificationSequence(
        name="sam2-med", family=codes.cid7162.ArtificialIntelligence, version=__version__
    )
    descriptions = []
    for number, (value, name) in enumerate(names.items(), start=1):
        category, kind = segment_coding(name)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=segment_label(name, value),
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
                algorithm_identification=algorithm,
                tracking_id=f"sam2-med label {value}",
                tracking_uid=hd.UID(),
            )
        )
    return descriptions


def save_dicom_seg(
    labels: np.ndarray | LabelVolume,
    path: str | os.PathLike[str],
    *,
    reference: Volume,
    label_names: Mapping[Any, str] | Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a BINARY DICOM Segmentation whose frames reference the reference's source frames.

    Parameters
    ----------
    labels : (I, J, K) ndarray of int or bool, or LabelVolume
        Indexed like ``reference.array``: ``i`` = column, ``j`` = row, ``k`` = slice in the
        order of ``reference.provenance.source_frames``. 0 = background.
    path : path-like
        The output file (conventionally ``.dcm``).
    reference : Volume
        A DICOM-derived volume (``provenance.format == "dicom"``) whose ``source_frames`` name
        the file, SOP Instance UID and (multi-frame) frame index of every slice. The source
        files are re-read (headers only; ``.dcm.gz`` decompressed in memory), never written.
    label_names : mapping of int -> str, or sequence of str, optional
        Segment labels per label value (a sequence names labels 1, 2, ...).
    overwrite : bool
        Replace an existing output. Default: refuse.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    MaskWriteError
        Not a DICOM reference (use :func:`sam2_med.io.save_mask` for NIfTI), bad labels or
        shape, source files missing or changed, reference grid not matching the source frames.
    OutputExistsError
        ``path`` exists and ``overwrite`` is false.

    Notes
    -----
    One segment per label value (present in the mask or named), numbered 1..N in increasing
    label order; each segment's Tracking ID records the label value. Algorithm type
    SEMIAUTOMATIC, algorithm "sam2-med" (PS3.3 C.8.20.2, Segment Description). Empty frames
    are omitted, as PS3.3 A.51 allows; readers treat missing frames as empty. Segment labels
    are made valid LO values (no backslash or control characters, at most 64 characters, never
    empty); a label outside ASCII makes the SEG's Specific Character Set ``ISO_IR 192``
    (UTF-8). Each segment's category and type are SNOMED CT concepts chosen from its name
    (lesion-like names: Morphologically Abnormal Structure; organs and structures: Anatomical
    Structure of that type; otherwise Tissue).
    """
    from .writers import save_outputs

    written = save_outputs(
        labels,
        reference,
        mask=None,
        dicom_seg=path,
        label_names=label_names,
        overwrite=overwrite,
    )
    return written[-1]


def check_seg_reference(reference: Any, out: Path) -> None:
    """Refuse a reference that was not read from DICOM (a SEG must reference instances)."""
    if not isinstance(reference, Volume) or reference.provenance.format != "dicom":
        fmt = getattr(getattr(reference, "provenance", None), "format", type(reference).__name__)
        raise MaskWriteError(
            f"DICOM SEG needs a reference read from DICOM (this one is {fmt!r}); NIfTI via "
            "sam2_med.io.save_mask is the format for non-DICOM references",
            out,
        )


def seg_payload(
    labels: np.ndarray | LabelVolume,
    path: str | os.PathLike[str],
    *,
    reference: Volume,
    label_names: Mapping[Any, str] | Sequence[str] | None = None,
) -> bytes:
    """The bytes of the DICOM SEG :func:`save_dicom_seg` writes; nothing is written."""
    out = Path(path)
    check_seg_reference(reference, out)
    try:
        import highdicom as hd
    except ImportError as exc:  # pragma: no cover - highdicom is a hard dependency
        raise MissingDependencyError(
            "writing DICOM SEG needs highdicom: pip install highdicom", out
        ) from exc

    array, base_names = prepare_labels(labels, reference, out)
    present = [int(v) for v in np.unique(array) if v != 0]
    names = normalize_label_names(label_names, base_names, present, out)
    sources, frame_index = _load_sources(reference, out)

    # label value -> segment number 1..N; (I, J, K) -> (K, J, I) = (frames, rows, columns)
    lut = np.zeros(int(max(names, default=0)) + 1 if names else 1, dtype=np.uint16)
    for number, value in enumerate(names, start=1):
        lut[value] = number
    planes = lut[array].transpose(2, 1, 0)
    if frame_index is not None:
        n_frames = int(sources[0].get("NumberOfFrames", 1))
        if frame_index.max(initial=0) >= n_frames or frame_index.min(initial=0) < 0:
            raise MaskWriteError("a source frame index exceeds the file's NumberOfFrames", out)
        full = np.zeros((n_frames, *planes.shape[1:]), dtype=planes.dtype)
        full[frame_index] = planes
        planes = full
    planes = planes.astype(np.uint8 if len(names) <= 255 else np.uint16)

    from .. import __version__

    descriptions = _segment_descriptions(hd, names)
    charset = {}
    if needs_unicode([str(d.SegmentLabel) for d in descriptions]):
        charset = {"specific_character_set": "ISO_IR 192"}
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=planes,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="sam2-med",
            manufacturer_model_name="sam2-med",
            software_versions=__version__,
            device_serial_number="0",
            content_label="SAM2MED",
            content_description="SAM 2 semi-automatic segmentation",
            series_description="sam2-med segmentation",
            omit_empty_frames=bool(planes.any()),
            **charset,
        )
        buf = io.BytesIO()
        seg.save_as(buf, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise MaskWriteError(f"highdicom refused to build the segmentation: {exc}", out) from exc
    return buf.getvalue()
