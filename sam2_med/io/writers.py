"""Write label maps as NIfTI on exactly the grid of the image they were drawn on.

The contract: every viewer, nibabel, SimpleITK and MONAI's ``LoadImage`` put each mask voxel on
the image voxel it was computed for. That holds when the mask has the reference image's shape
and the same voxel -> world transform *as the file header spells it*:

* Reference read from NIfTI: the mask copies the image header's geometry fields verbatim
  (``pixdim``, ``quatern_b/c/d``, ``qoffset_x/y/z``, ``srow_x/y/z``, ``qform_code``,
  ``sform_code``), so the qform and sform matrices and codes are bit-identical. NIfTI-1 gives
  two transforms and readers pick one by the codes (sform when ``sform_code > 0``, else the
  qform); copying both with their codes makes every reader pick the same one it picked for the
  image.
* Any other reference (DICOM, NRRD, MetaImage, synthetic): its RAS+ affine is written as both
  sform and qform with code 1, ``NIFTI_XFORM_SCANNER_ANAT``. DICOM patient coordinates (PS3.3
  C.7.6.2.1.1) are the scanner's coordinates, so "scanner-based anatomical" is the honest code;
  it is also what dcm2niix writes. The qform is the rigid (quaternion) approximation NIfTI-1
  allows; the sform keeps any shear exactly (to float32, the precision of the NIfTI-1 header).

Voxels are uint8 (uint16 when a label exceeds 255) with ``scl_slope = 1``, ``scl_inter = 0`` so
no reader rescales them, ``intent_code = NIFTI_INTENT_LABEL`` (1002) and ``xyzt_units`` mm.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import geometry
from ..labels import LabelVolume
from ..volume import Volume
from . import _atomic
from ._atomic import check_writable
from .errors import MaskWriteError
from .nifti import NIFTI_GEOMETRY_FIELDS

__all__ = [
    "check_output_paths",
    "mask_payloads",
    "normalize_label_names",
    "prepare_labels",
    "save_mask",
    "save_outputs",
    "sidecar_path",
]

NIFTI_INTENT_LABEL = 1002
NIFTI_XFORM_SCANNER_ANAT = 1

# What the reader keeps of a NIfTI header's geometry, less pixdim (only its first four
# entries carry over: a 4D reference's time step does not belong in a 3D mask).
_GEOMETRY_FIELDS = tuple(f for f in NIFTI_GEOMETRY_FIELDS if f != "pixdim")


# -- inputs shared with the DICOM SEG writer ---------------------------------------------------
def prepare_labels(
    labels: np.ndarray | LabelVolume, reference: Volume, path: str | os.PathLike[str]
) -> tuple[np.ndarray, dict[int, str]]:
    """Validate a label map against its reference and return it as uint8/uint16.

    Parameters
    ----------
    labels : (I, J, K) ndarray of int or bool, or LabelVolume
        Indexed like ``reference.array``; 0 is background.
    reference : Volume
        The image the labels were drawn on.
    path : path-like
        The output, for error messages.

    Returns
    -------
    array : (I, J, K) ndarray of uint8 or uint16
        uint16 only when the largest label exceeds 255.
    names : dict of int -> str
        Names carried by a LabelVolume (empty for a bare array).

    Raises
    ------
    MaskWriteError
        Not a Volume reference, shape differs (both shapes named), non-integer dtype, negative
        labels or labels above 65535, or a LabelVolume tied to a different grid.
    """
    if not isinstance(reference, Volume):
        raise MaskWriteError(
            f"reference must be the sam2_med.Volume the labels belong to, got "
            f"{type(reference).__name__}",
            path,
        )
    names: dict[int, str] = {}
    if isinstance(labels, LabelVolume):
        if labels.reference is not reference and (
            labels.reference.shape != reference.shape
            or not np.allclose(labels.reference.affine, reference.affine, atol=1e-6)
        ):
            raise MaskWriteError(
                "the LabelVolume belongs to a different image grid than `reference`", path
            )
        names = {int(k): str(v) for k, v in labels.names.items()}
        arr = np.asarray(labels.array)
    else:
        arr = np.asarray(labels)
    if arr.shape != reference.shape:
        raise MaskWriteError(
            f"label map shape {arr.shape} differs from the reference image shape "
            f"{reference.shape}; a mask must be on the reference grid",
            path,
        )
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8), names
    if not np.issubdtype(arr.dtype, np.integer):
        raise MaskWriteError(
            f"labels must be integers or booleans, got dtype {arr.dtype}; round or cast first",
            path,
        )
    lo = int(arr.min()) if arr.size else 0
    hi = int(arr.max()) if arr.size else 0
    if lo < 0:
        raise MaskWriteError(f"labels must be >= 0, found {lo}", path)
    if hi > 65535:
        raise MaskWriteError(f"labels must be <= 65535 (uint16), found {hi}", path)
    return arr.astype(np.uint8 if hi <= 255 else np.uint16, copy=False), names


def normalize_label_names(
    label_names: Mapping[Any, str] | Sequence[str] | None,
    base: Mapping[int, str],
    present: Sequence[int],
    path: str | os.PathLike[str],
) -> dict[int, str]:
    """Label value -> name for every present or named label.

    ``label_names`` may be a mapping (keys ints or digit strings, as in a ``labels.json``) or a
    sequence naming labels 1, 2, 3, ... in order; it overrides ``base`` (a LabelVolume's names).
    Present labels without a name become ``"label_<n>"``.
    """
    names = dict(base)
    if label_names is not None:
        if isinstance(label_names, Mapping):
            items = label_names.items()
        elif isinstance(label_names, (str, bytes)):
            raise MaskWriteError("label_names must be a mapping or a list of names", path)
        else:
            items = enumerate(label_names, start=1)
        for key, name in items:
            try:
                value = int(key)
            except (TypeError, ValueError):
                raise MaskWriteError(f"label_names key {key!r} is not an integer", path) from None
            if not 0 < value <= 65535:
                raise MaskWriteError(f"label_names key {value} is outside 1..65535", path)
            names[value] = str(name)
    for value in present:
        names.setdefault(int(value), f"label_{int(value)}")
    return dict(sorted(names.items()))


def sidecar_path(path: Path) -> Path:
    """``mask.nii.gz`` -> ``mask.json``; ``mask.nii`` -> ``mask.json``."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_name(name + ".json")


def reference_inputs(reference: Volume) -> list[str]:
    """Every file the reference was read from: the image files, and a JSON sidecar the reader
    took metadata from (dcm2niix's ``<stem>.json``)."""
    prov = reference.provenance
    extra = prov.extra.get("json_sidecar")
    return [*prov.paths, *([str(extra)] if extra else [])]


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """``a`` and ``b`` name one file (same absolute path, or the same inode via links)."""
    if Path(os.path.abspath(a)) == Path(os.path.abspath(b)):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _refuse_reference_paths(outputs: Sequence[Path], reference: Volume) -> None:
    """Never overwrite a file the reference was read from, whatever ``overwrite`` says."""
    for src in reference_inputs(reference):
        for out in outputs:
            if same_file(out, src):
                raise MaskWriteError(
                    "refusing to overwrite a file the reference image was read from", out
                )


def check_derived_sidecar(mask: Path, side: Path) -> None:
    """Refuse, whatever ``overwrite`` says, to replace a file at the sidecar path that is not
    the sam2-med sidecar of this mask: the user named the mask, never the sidecar.

    Raises
    ------
    MaskWriteError
        ``side`` exists and is not a sam2-med sidecar whose ``mask.file`` is ``mask``'s name
        (a prompt JSON, dcm2niix's sidecar, the sidecar of ``a.nii.gz`` when writing
        ``a.nii``...).
    """
    if not (side.exists() or side.is_symlink()):
        return
    owner = None
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        if isinstance(meta, dict) and "sam2_med_version" in meta:
            owner = (meta.get("mask") or {}).get("file")
    except (OSError, ValueError, UnicodeDecodeError, RecursionError, AttributeError):
        owner = None
    if owner == mask.name:
        return
    what = (
        f"the sidecar of another mask, {owner}"
        if isinstance(owner, str)
        else "not a sam2-med sidecar"
    )
    raise MaskWriteError(
        f"refusing to replace this file: it is {what}, and the sidecar of {mask.name} would be "
        "written here; choose another mask name",
        side,
    )


def reference_summary(reference: Volume) -> dict[str, Any]:
    """JSON-ready description of where the reference came from and its grid (RAS+ affine)."""
    prov = reference.provenance
    return {
        "format": prov.format,
        "paths": list(prov.paths),
        "description": prov.description,
        "modality": reference.modality,
        "series_instance_uid": prov.series_uid,
        "study_instance_uid": prov.study_uid,
        "frame_of_reference_uid": prov.frame_of_reference_uid,
        "sop_class_uid": prov.sop_class_uid,
        "source_orientation": prov.source_orientation,
        "orientation": reference.orientation,
        "shape": list(reference.shape),
        "spacing_mm": list(reference.spacing),
        "affine_ras": reference.affine.tolist(),
        "n_source_frames": len(prov.source_frames),
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


# -- NIfTI header ----------------------------------------------------------------------------
def _nifti_header(reference: Volume, array: np.ndarray) -> tuple[Any, str]:
    """A Nifti1Header for ``array`` on ``reference``'s grid, and how the geometry was chosen."""
    import nibabel as nib

    prov = reference.provenance
    # A NIfTI-2 reference stores its transforms in float64: answer in kind to keep them exact.
    nifti2 = prov.format == "nifti" and prov.extra.get("nifti_version") == 2
    hdr = nib.Nifti2Header() if nifti2 else nib.Nifti1Header()
    hdr.set_data_dtype(array.dtype)
    hdr.set_data_shape(array.shape)
    how = ""
    raw = prov.extra.get("nifti_header") if prov.format == "nifti" else None
    if raw is not None:
        for name in _GEOMETRY_FIELDS:
            hdr[name] = raw[name]
        pixdim = np.array(hdr["pixdim"])
        pixdim[:4] = np.asarray(raw["pixdim"])[:4]
        hdr["pixdim"] = pixdim
        how = "copied from the reference NIfTI header"
    elif prov.format == "nifti" and prov.nifti_sform is not None and prov.nifti_qform is not None:
        hdr.set_qform(prov.nifti_qform, code=int(prov.nifti_qform_code))
        hdr.set_sform(prov.nifti_sform, code=int(prov.nifti_sform_code))
        how = "reference NIfTI qform/sform matrices and codes"
    if how and not np.allclose(hdr.get_best_affine(), reference.affine, rtol=1e-6, atol=1e-4):
        # The Volume's affine no longer matches its NIfTI header (it was replaced after reading):
        # the affine is the truth that every other module used.
        how = ""
    if not how:
        affine = np.asarray(reference.affine, dtype=np.float64)
        hdr.set_qform(affine, code=NIFTI_XFORM_SCANNER_ANAT)
        hdr.set_sform(affine, code=NIFTI_XFORM_SCANNER_ANAT)
        how = "reference RAS affine as sform and qform, code 1 (scanner anatomical)"
    hdr.set_xyzt_units(xyz="mm", t="sec")
    hdr.set_intent("label", (), name="labels")
    hdr.set_slope_inter(1.0, 0.0)
    hdr["cal_min"] = 0
    hdr["cal_max"] = float(array.max()) if array.size else 0.0
    hdr["descrip"] = b"sam2-med label map"
    return hdr, how


def _nifti_bytes(array: np.ndarray, hdr: Any, gz: bool) -> bytes:
    import nibabel as nib

    # affine=None: nibabel keeps the header's qform/sform fields exactly as set.
    image_class = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
    img = image_class(array, None, header=hdr)
    img.header.set_slope_inter(1.0, 0.0)
    data = img.to_bytes()
    if not gz:
        return data
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6, mtime=0) as fh:
        fh.write(data)
    return buf.getvalue()


def save_mask(
    labels: np.ndarray | LabelVolume,
    path: str | os.PathLike[str],
    *,
    reference: Volume,
    label_names: Mapping[Any, str] | Sequence[str] | None = None,
    overwrite: bool = False,
    measurements: Sequence[Any] | bool = True,
) -> Path:
    """Write a label map as NIfTI on exactly ``reference``'s voxel grid, plus a JSON sidecar.

    Parameters
    ----------
    labels : (I, J, K) ndarray of int or bool, or LabelVolume
        Indexed like ``reference.array`` (voxel ``(i, j, k)``); 0 = background.
    path : path-like
        Output ending in ``.nii.gz`` (compressed) or ``.nii``. The sidecar goes next to it as
        ``<stem>.json``.
    reference : Volume
        The image the labels were drawn on. Its file is never written to.
    label_names : mapping of int -> str, or sequence of str, optional
        Names per label value (a sequence names labels 1, 2, ...). Defaults to a LabelVolume's
        names; unnamed labels become ``"label_<n>"``.
    overwrite : bool
        Replace existing outputs (mask and sidecar). Default: refuse.
    measurements : bool or sequence of StructureMeasurements
        ``True`` (default): measure every present label (:func:`sam2_med.measure.measure`:
        volume, surface, centroid, intensity statistics, axial RECIST axes) into the sidecar's
        ``"measurements"``; a sequence: those, already computed; ``False``: none.

    Returns
    -------
    Path
        The NIfTI file written.

    Raises
    ------
    MaskWriteError
        Wrong suffix, shape mismatch, non-integer/negative/too-large labels, output would
        replace the reference, folder missing or unwritable.
    OutputExistsError
        An output exists and ``overwrite`` is false.

    Notes
    -----
    Geometry: with a NIfTI reference the header's qform/sform fields and codes are copied bit
    for bit; otherwise the RAS+ affine becomes sform and qform with code 1 (scanner anatomical).
    The affine a reader reconstructs equals ``reference.affine`` to float32 precision (exactly,
    for NIfTI references). Both files are written atomically (temp file, fsync, rename).
    """
    out = Path(path)
    contents = mask_payloads(
        labels, out, reference=reference, label_names=label_names, measurements=measurements
    )
    check_output_paths(list(contents), reference, overwrite=overwrite)
    _atomic.write_files_atomically(contents, overwrite=overwrite)
    return out


def check_output_paths(
    outputs: Sequence[Path],
    reference: Volume,
    *,
    overwrite: bool,
    inputs: Sequence[str | os.PathLike[str]] = (),
    create_folders: bool = False,
) -> None:
    """Every refusal an output set can meet, before any work: an output that is an input (of
    the reference, or in ``inputs``), a sidecar path holding a file sam2-med did not write, two
    outputs on one path, an existing output without ``overwrite``, a missing folder.

    Parameters
    ----------
    outputs : sequence of Path
        The files to write: masks (``.nii``/``.nii.gz``, their sidecars are checked too) and
        any other output (a DICOM SEG).
    reference : Volume
    overwrite : bool
    inputs : sequence of path-like
        Other files the run reads (prompt JSON, mask prompt, checkpoint...): never written.
    create_folders : bool
        The caller creates missing output folders (they are not refused).

    Raises
    ------
    MaskWriteError, OutputExistsError
    """
    paths: list[Path] = []
    for out in map(Path, outputs):
        paths.append(out)
        if out.name.lower().endswith((".nii.gz", ".nii")):
            side = sidecar_path(out)
            if side not in outputs:
                paths.append(side)
    for i, a in enumerate(paths):
        for b in paths[:i]:
            if same_file(a, b):
                raise MaskWriteError("two outputs of this run are the same file", a)
    _refuse_reference_paths(paths, reference)
    for src in inputs:
        for out in paths:
            if same_file(out, src):
                raise MaskWriteError("refusing to overwrite an input of this run", out)
    for out in paths:
        if out.name.lower().endswith(".json"):
            mask = next((m for m in paths if sidecar_path(m) == out and m != out), None)
            if mask is not None:
                check_derived_sidecar(mask, out)
    check_writable(paths, overwrite=overwrite, folders_may_be_missing=create_folders)


def mask_payloads(
    labels: np.ndarray | LabelVolume,
    path: str | os.PathLike[str],
    *,
    reference: Volume,
    label_names: Mapping[Any, str] | Sequence[str] | None = None,
    measurements: Sequence[Any] | bool = True,
) -> dict[Path, bytes]:
    """The bytes of a mask and its sidecar, keyed by path (see :func:`save_mask`); nothing is
    written."""
    out = Path(path)
    lower = out.name.lower()
    if not lower.endswith((".nii.gz", ".nii")):
        raise MaskWriteError(
            "a mask must be written as NIfTI: use a .nii.gz or .nii suffix "
            "(DICOM SEG: sam2_med.io.save_dicom_seg)",
            out,
        )
    side = sidecar_path(out)
    array, base_names = prepare_labels(labels, reference, out)

    values, counts = np.unique(array, return_counts=True)
    present = [int(v) for v in values if v != 0]
    names = normalize_label_names(label_names, base_names, present, out)
    voxels = dict(zip((int(v) for v in values), (int(c) for c in counts), strict=True))

    hdr, how = _nifti_header(reference, array)
    payload = _nifti_bytes(array, hdr, gz=lower.endswith(".gz"))

    from .. import __version__

    sidecar = {
        "sam2_med_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mask": {
            "file": out.name,
            "dtype": str(array.dtype),
            "shape": list(array.shape),
            "affine_ras": reference.affine.tolist(),
            "orientation": geometry.axcodes(reference.affine),
            "geometry": how,
            "background": 0,
        },
        "labels": [{"value": v, "name": n, "voxels": voxels.get(v, 0)} for v, n in names.items()],
        "label_names": {str(v): n for v, n in names.items()},
        "reference": reference_summary(reference),
    }
    if isinstance(labels, LabelVolume) and labels.extra:
        sidecar["extra"] = _jsonable(labels.extra)
    if measurements is not False:
        sidecar["measurements"] = _sidecar_measurements(
            array, reference, names, present, measurements
        )
    text = json.dumps(sidecar, indent=2, allow_nan=False) + "\n"
    return {out: payload, side: text.encode("utf-8")}


def save_outputs(
    labels: np.ndarray | LabelVolume,
    reference: Volume,
    *,
    mask: str | os.PathLike[str] | None,
    dicom_seg: str | os.PathLike[str] | None = None,
    label_names: Mapping[Any, str] | Sequence[str] | None = None,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike[str]] = (),
    measurements: Sequence[Any] | bool = True,
) -> list[Path]:
    """Write a mask (with its sidecar) and optionally a DICOM SEG as one unit.

    All outputs are built in memory, checked (:func:`check_output_paths`), then published by
    one :func:`~sam2_med.io._atomic.write_files_atomically` call: a run that races another on
    the same outputs replaces all of them or none.

    Parameters
    ----------
    labels, reference, label_names, overwrite
        As in :func:`save_mask`.
    mask : path-like or None
        ``.nii.gz`` or ``.nii``; the sidecar ``<stem>.json`` goes beside it. None: no mask
        (a DICOM SEG alone).
    dicom_seg : path-like, optional
        Also a DICOM SEG (DICOM references only; see :func:`sam2_med.io.save_dicom_seg`).
    inputs : sequence of path-like
        Files the run read (prompts...), which no output may replace.
    measurements : bool or sequence of StructureMeasurements
        The sidecar's measurements, as in :func:`save_mask`.

    Returns
    -------
    list of Path
        Mask, sidecar and SEG, as written.
    """
    contents: dict[Path, bytes] = {}
    if mask is not None:
        contents = mask_payloads(
            labels, mask, reference=reference, label_names=label_names, measurements=measurements
        )
    outputs = list(contents)
    if dicom_seg is not None:
        from .dicom_seg import check_seg_reference

        check_seg_reference(reference, Path(dicom_seg))
        outputs.append(Path(dicom_seg))
    check_output_paths(outputs, reference, overwrite=overwrite, inputs=inputs)
    if dicom_seg is not None:
        from .dicom_seg import seg_payload

        seg = Path(dicom_seg)
        contents[seg] = seg_payload(labels, seg, reference=reference, label_names=label_names)
    _atomic.write_files_atomically(contents, overwrite=overwrite)
    return list(contents)


def _sidecar_measurements(
    array: np.ndarray,
    reference: Volume,
    names: Mapping[int, str],
    present: Sequence[int],
    given: Sequence[Any] | bool,
) -> dict[str, Any]:
    """The sidecar's ``"measurements"`` block (see :mod:`sam2_med.measure`).

    A failure to measure must not cost the user the mask: it is recorded in the block (and
    warned about) instead of stopping the write.
    """
    import warnings

    from ..measure import measure, measurements_json

    try:
        found = (
            list(given)
            if not isinstance(given, bool)
            else measure(array, reference, label_values=present, names=names)
        )
        return _jsonable(measurements_json(found, plane="axial"))
    except Exception as err:  # never lose the mask over a measurement
        warnings.warn(f"mask written without measurements: {err}", RuntimeWarning, stacklevel=3)
        return {"error": f"{type(err).__name__}: {err}"}
