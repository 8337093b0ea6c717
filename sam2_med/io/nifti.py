"""Readers for single-file research formats: NIfTI-1/2 (nibabel) and NRRD/MetaImage (SimpleITK).

Both readers return a :class:`~sam2_med.Volume` whose ``array`` is the voxel grid exactly as
stored (no resampling, no reorientation) and whose ``affine`` maps a voxel index ``(i, j, k)``
(voxel centre) to **RAS+** world millimetres.

Geometry conventions
--------------------
* **NIfTI** world space is RAS+. The affine is nibabel's ``img.affine``, which follows the
  NIfTI-1 rules (``nifti1.h``, "method 3 / method 2 / method 1"): the sform (``srow_x/y/z``)
  when ``sform_code > 0``, else the qform (quaternion + ``pixdim`` + ``qoffset``) when
  ``qform_code > 0``, else a scaling by ``pixdim`` alone. Both transforms and their codes are kept
  in :class:`~sam2_med.Provenance` (``nifti_qform``/``nifti_sform`` and the raw header fields in
  ``extra["nifti_header"]``) so :func:`sam2_med.io.writers.save_mask` can write a mask whose
  header geometry is bit-for-bit the image's.
* **ITK** (NRRD, MetaImage) world space is DICOM's LPS+. ITK describes the grid by ``origin``
  (LPS mm of voxel ``(0, 0, 0)``), ``spacing`` (mm) and a ``direction`` matrix whose columns are
  the LPS unit vectors of the index axes, so ``x_lps = D @ diag(spacing) @ ijk + origin``. We
  build that LPS affine and flip it to RAS+ with :func:`sam2_med.geometry.lps_to_ras`.
  SimpleITK returns arrays in ``(z, y, x)`` order; they are transposed to ``(i, j, k) =
  (x, y, z)`` so that ``array[i, j, k]`` is the voxel at ITK index ``(i, j, k)``.

Only :class:`~sam2_med.Volume` or a :class:`~sam2_med.io.errors.VolumeReadError` subclass ever
comes out of these functions, whatever bytes the file holds.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .. import geometry
from ..volume import Provenance, Volume
from .errors import (
    CorruptFileError,
    MissingDependencyError,
    NotAVolumeError,
    UnsupportedImageError,
    VolumeReadError,
)

__all__ = ["read_itk", "read_nifti"]

#: Largest ratio of uncompressed to compressed size that deflate (gzip) can reach (RFC 1951
#: codes a run of 258 bytes in about 2 bits, so the ratio is bounded near 1032:1).
_DEFLATE_MAX_RATIO = 1032

#: Header fields that together define NIfTI geometry; copied verbatim into masks.
NIFTI_GEOMETRY_FIELDS = (
    "pixdim",
    "quatern_b",
    "quatern_c",
    "quatern_d",
    "qoffset_x",
    "qoffset_y",
    "qoffset_z",
    "srow_x",
    "srow_y",
    "srow_z",
    "qform_code",
    "sform_code",
)

#: DICOM modality codes a sidecar or hint may name.
_KNOWN_MODALITIES = frozenset(
    {"CT", "MR", "PT", "NM", "US", "XA", "CR", "DX", "MG", "OT", "SEG", "RTDOSE"}
)


# -- shared helpers --------------------------------------------------------------------------
def _physical_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _check_plausible_size(
    path: Path, n_bytes: int, *, compressed: bool, available: int | None, what: str = "header"
) -> None:
    """Refuse headers that claim more voxel data than the file (or machine) can hold.

    Parameters
    ----------
    n_bytes : int
        Voxel data size the header claims, in bytes.
    compressed : bool
        The data is deflate-compressed (``.gz`` / NRRD ``encoding: gzip``).
    available : int or None
        Bytes of (compressed or raw) data actually present after the header, if known.
    """
    if n_bytes < 0:
        raise CorruptFileError(f"{what} gives a negative data size", path)
    if available is not None:
        limit = available * _DEFLATE_MAX_RATIO + 1024 if compressed else available
        if n_bytes > limit:
            kind = "compressed " if compressed else ""
            raise CorruptFileError(
                f"truncated or damaged: the {what} describes {n_bytes} bytes of voxel data "
                f"but only {available} {kind}bytes follow it",
                path,
            )
    mem = _physical_memory_bytes()
    if mem is not None and n_bytes > mem:
        raise CorruptFileError(
            f"the {what} describes {n_bytes / 2**30:.1f} GiB of voxel data, more than this "
            f"machine's memory; the header is probably damaged",
            path,
        )


def _spatial_and_index(
    path: Path, shape: tuple[int, ...], index: int | None
) -> tuple[tuple[int, int, int], int | None]:
    """Validate a data shape ``(I, J, K[, T, 1, ...])``; return the 3D shape and the 4th-axis index.

    Trailing singleton dimensions beyond the third are dropped. A 4th axis longer than one needs
    ``index``; more non-singleton axes are refused. Fewer than three axes, or a spatial axis of
    length one, is a single image, not a volume.
    """
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) < 3 or min(dims[:3]) <= 1:
        raise NotAVolumeError(
            f"image of shape {tuple(shape)} is a single 2D slice, not a 3D volume", path
        )
    if len(dims) == 3:
        if index not in (None, 0):
            raise VolumeReadError(
                f"index={index} given but the image is 3D {tuple(shape)}",
                path,
                cli=f"--index {index} given but the image is 3D {tuple(shape)}",
            )
        return (dims[0], dims[1], dims[2]), None
    if len(dims) > 4:
        raise UnsupportedImageError(
            f"{len(dims)}D image of shape {tuple(shape)} (vector or multi-component data); "
            "sam2-med reads 3D volumes or one volume of a 4D series",
            path,
        )
    n = dims[3]
    if index is None:
        what = f"4D image with {n} volumes (shape {tuple(shape)})"
        raise UnsupportedImageError(
            f"{what}; pass index= to pick one (0..{n - 1})",
            path,
            cli=f"{what}; give --index N to pick one (0..{n - 1})",
        )
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
        raise UnsupportedImageError(
            f"index={index!r} is out of range for a 4D image with {n} volumes (0..{n - 1})",
            path,
            cli=f"--index {index} is out of range for a 4D image with {n} volumes (0..{n - 1})",
        )
    return (dims[0], dims[1], dims[2]), int(index)


def _check_affine(path: Path, affine: np.ndarray) -> None:
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise CorruptFileError(
            "the header's voxel-to-world transform is not finite and invertible", path
        )


def _make_volume(path: Path, array: np.ndarray, affine: np.ndarray, **kwargs) -> Volume:
    _check_affine(path, affine)
    try:
        return Volume(array, affine, **kwargs)
    except ValueError as exc:  # defensive: Volume validates shape and affine again
        raise CorruptFileError(str(exc), path) from exc


def _json_sidecar(path: Path) -> Path:
    """``<stem>.json`` beside a NIfTI file (BIDS / dcm2niix)."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(name + ".json")


def _sidecar_modality(path: Path) -> str | None:
    """The ``Modality`` of a BIDS / dcm2niix JSON sidecar (``<stem>.json``), if any."""
    sidecar = _json_sidecar(path)
    try:
        if not sidecar.is_file() or sidecar.stat().st_size > 1_000_000:
            return None
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    value = meta.get("Modality") if isinstance(meta, dict) else None
    if isinstance(value, str) and value.upper() in _KNOWN_MODALITIES:
        return value.upper()
    return None


def _clean_modality(hint: str | None) -> str | None:
    if hint is None:
        return None
    return hint.upper() if hint.upper() in _KNOWN_MODALITIES else None


# -- NIfTI -------------------------------------------------------------------------------------
def _is_gzip(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def read_nifti(
    path: str | os.PathLike[str], *, index: int | None = None, modality: str | None = None
) -> Volume:
    """Read a NIfTI-1 or NIfTI-2 file (``.nii`` or ``.nii.gz``) into a :class:`Volume`.

    Parameters
    ----------
    path : path-like
        A single-file NIfTI image.
    index : int, optional
        For a 4D image ``(I, J, K, T)``: which volume ``t`` to read (0-based). Required for 4D;
        must be ``None`` or 0 for 3D.
    modality : str, optional
        DICOM modality code to record (``"CT"``, ``"MR"``...). Otherwise taken from a
        BIDS/dcm2niix JSON sidecar's ``"Modality"`` when present, else ``"OT"``.

    Returns
    -------
    Volume
        ``array``: shape ``(I, J, K)`` indexed exactly as stored (nibabel order, no
        reorientation). Integer data without scaling keeps its stored dtype; when
        ``scl_slope``/``scl_inter`` are set and not identity they are applied (NIfTI-1:
        ``value = scl_slope * stored + scl_inter``; a slope of 0 or NaN means unscaled).
        ``affine``: voxel index -> **RAS+** mm, nibabel's ``img.affine`` (sform if
        ``sform_code > 0``, else qform if ``qform_code > 0``, else ``pixdim`` scaling).
        ``provenance.format == "nifti"`` with qform/sform matrices and codes.

    Raises
    ------
    NotAVolumeError
        A 2D image or a single slice.
    UnsupportedImageError
        4D without ``index`` (the message says how many volumes), 5D+, RGB or complex data.
    CorruptFileError
        Truncated or damaged header, gzip stream or voxel data.
    VolumeReadError
        Any other reason the file cannot be read; nothing else is raised for bad input.
    """
    path = Path(path)
    try:
        import nibabel as nib
        from nibabel.filebasedimages import ImageFileError
        from nibabel.spatialimages import HeaderDataError
    except ImportError as exc:  # pragma: no cover - nibabel is a hard dependency
        raise MissingDependencyError(
            "reading NIfTI needs nibabel: pip install nibabel", path
        ) from exc

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise VolumeReadError(f"cannot open: {exc.strerror or exc}", path) from exc

    compressed = _is_gzip(path)
    read_errors = (
        ImageFileError, HeaderDataError, EOFError, OSError, zlib.error, gzip.BadGzipFile,
        struct.error, ValueError, TypeError, IndexError, OverflowError,
    )  # fmt: skip
    try:
        img = nib.load(str(path))
    except FileNotFoundError as exc:
        raise VolumeReadError("no such file", path) from exc
    except read_errors as exc:
        raise CorruptFileError(f"not a readable NIfTI file ({exc})", path) from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise CorruptFileError(f"not a NIfTI image (nibabel read a {type(img).__name__})", path)

    hdr = img.header
    tolerated = _header_problems(path, type(hdr), compressed)
    try:
        shape = tuple(int(d) for d in img.shape)
        dtype = hdr.get_data_dtype()
        offset = int(img.dataobj.offset)
        slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    except read_errors as exc:
        raise CorruptFileError(f"damaged NIfTI header ({exc})", path) from exc

    if dtype.fields is not None or dtype.kind in "cVO" or dtype.names:
        raise UnsupportedImageError(
            f"{'RGB/vector' if dtype.names else dtype} voxels (dtype {dtype}) are not a scalar "
            "volume; convert to one channel first",
            path,
        )
    spatial, t = _spatial_and_index(path, shape, index)
    n_bytes = int(np.prod(shape, dtype=np.float64) * dtype.itemsize)
    _check_plausible_size(
        path, n_bytes, compressed=compressed, available=max(size - (0 if compressed else offset), 0)
    )

    try:
        proxy = img.dataobj
        if t is None:
            raw = np.asarray(proxy.get_unscaled()).reshape(spatial)
        elif slope == 1.0 and inter == 0.0:  # read just the one volume
            raw = np.asarray(proxy[(slice(None),) * 3 + (t,) + (0,) * (len(shape) - 4)])
        else:
            raw = np.asarray(proxy.get_unscaled()).reshape(*spatial, shape[3])[..., t]
    except read_errors as exc:
        raise CorruptFileError(f"truncated or damaged voxel data ({exc})", path) from exc
    except MemoryError as exc:
        raise CorruptFileError("voxel data too large to read; damaged header?", path) from exc

    if not raw.dtype.isnative:  # big-endian files: hand on native byte order (torch needs it)
        raw = raw.astype(raw.dtype.newbyteorder("="))
    array = _apply_nifti_scaling(raw, slope, inter)

    try:
        affine = np.asarray(img.affine, dtype=np.float64)
        qform = np.asarray(hdr.get_qform(), dtype=np.float64)
        sform = np.asarray(hdr.get_sform(), dtype=np.float64)
        raw_geometry = {name: np.array(hdr[name]).copy() for name in NIFTI_GEOMETRY_FIELDS}
    except read_errors as exc:
        raise CorruptFileError(f"damaged NIfTI geometry ({exc})", path) from exc
    raw_geometry["xyzt_units"] = np.array(hdr["xyzt_units"]).copy()
    _check_affine(path, affine)

    descrip = (
        bytes(np.asarray(hdr["descrip"]).tobytes())
        .split(b"\0", 1)[0]
        .decode("latin-1", errors="replace")
        .strip()
    )
    notes: tuple[str, ...] = ()
    if t is not None:
        notes = (f"volume {t} of a 4D image with {shape[3]} volumes",)
    if not (slope == 1.0 and inter == 0.0):
        notes = (*notes, f"applied scl_slope={slope:g}, scl_inter={inter:g}")
    notes = (*notes, *(f"header fixed on read: {msg}" for msg in tolerated))
    if int(hdr["sform_code"]) == 0 and int(hdr["qform_code"]) == 0:
        notes = (*notes, "qform_code and sform_code are 0: geometry from pixdim only")
    provenance = Provenance(
        format="nifti",
        paths=(str(path),),
        description=descrip or path.name,
        source_orientation=geometry.axcodes(affine),
        nifti_qform=qform,
        nifti_qform_code=int(hdr["qform_code"]),
        nifti_sform=sform,
        nifti_sform_code=int(hdr["sform_code"]),
        notes=notes,
        extra={
            "nifti_header": raw_geometry,
            "nifti_version": 2 if isinstance(img, nib.Nifti2Image) else 1,
            "shape_on_disk": shape,
            "index": t,
            "scl_slope": slope,
            "scl_inter": inter,
            "nifti_intent_code": int(hdr["intent_code"]),
        },
    )
    from_sidecar = None if _clean_modality(modality) else _sidecar_modality(path)
    mod = _clean_modality(modality) or from_sidecar or "OT"
    if from_sidecar:
        # the sidecar is an input too: no output may ever replace it
        provenance.extra["json_sidecar"] = str(_json_sidecar(path))
    return _make_volume(path, array, affine, modality=mod, provenance=provenance)


#: nibabel header problems that make the geometry or voxel layout untrustworthy; nibabel would
#: "fix" them silently (for example drop an invalid sform_code and fall back to the qform).
_FATAL_HEADER_PROBLEMS = ("sizeof_hdr", "sform_code", "qform_code", "magic string", "bitpix")


def _header_problems(path: Path, header_class, compressed: bool) -> tuple[str, ...]:
    """Check the raw header as stored; refuse damage nibabel would paper over.

    Returns the tolerated problems (for example ``pixdim[0]`` = 0, which NIfTI-1 readers treat
    as qfac = 1) so they can be recorded in the provenance notes. Non-positive voxel sizes are
    fatal only when the geometry comes from the qform or pixdim (``sform_code == 0``).
    """
    try:
        opener = gzip.open if compressed else open
        with opener(path, "rb") as fh:
            raw = fh.read(int(header_class.sizeof_hdr))
        report = header_class.diagnose_binaryblock(raw)
        sform_code = int(header_class(raw, check=False)["sform_code"])  # endian-aware
    except (OSError, EOFError, ValueError, zlib.error, struct.error, TypeError) as exc:
        raise CorruptFileError(f"damaged NIfTI header ({exc})", path) from exc
    problems = tuple(line.strip() for line in report.splitlines() if line.strip())
    for msg in problems:
        if any(key in msg for key in _FATAL_HEADER_PROBLEMS) or (
            "pixdim[1,2,3]" in msg and sform_code == 0
        ):
            raise CorruptFileError(f"damaged NIfTI header: {msg}", path)
    return problems


def _apply_nifti_scaling(raw: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """Apply NIfTI ``scl_slope``/``scl_inter`` (``slope * raw + inter``) only when not identity.

    Integer data with integral slope and intercept stays integer (the smallest of int16/int32/
    int64 holding the result range); otherwise float32 for small integer types, float64 else.
    """
    if slope == 1.0 and inter == 0.0:
        return raw
    if not (np.isfinite(slope) and np.isfinite(inter)):
        return raw  # nibabel already maps NaN/inf scaling to "unscaled"; belt and braces
    if raw.dtype.kind in "iub" and float(slope).is_integer() and float(inter).is_integer():
        lo = int(raw.min()) if raw.size else 0
        hi = int(raw.max()) if raw.size else 0
        ends = [lo * int(slope) + int(inter), hi * int(slope) + int(inter)]
        for cand in (np.int16, np.int32, np.int64):
            info = np.iinfo(cand)
            if info.min <= min(ends) and max(ends) <= info.max:
                return raw.astype(cand) * cand(int(slope)) + cand(int(inter))
    out_dtype = np.float32 if raw.dtype.itemsize <= 2 and raw.dtype.kind in "iub" else np.float64
    return (raw.astype(np.float64) * slope + inter).astype(out_dtype)


# -- ITK (NRRD / MetaImage) -------------------------------------------------------------------
def _itk_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    if name.endswith((".mha", ".mhd")):
        return "mha"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    return "itk"


def _attached_payload(path: Path) -> tuple[int | None, bool]:
    """For attached-data NRRD/MHA: (bytes after the text header, compressed?) when cheaply known."""
    name = path.name.lower()
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536)
        size = path.stat().st_size
    except OSError:
        return None, False
    if name.endswith(".nrrd"):
        end = head.find(b"\n\n")
        if end < 0:
            return None, False
        text = head[:end].lower()
        compressed = any(k in text for k in (b"encoding: gz", b"encoding: gzip", b"encoding: bz"))
        detached = b"data file:" in text or b"datafile:" in text
        if detached:
            return None, compressed
        return size - (end + 2), compressed or b"encoding: raw" not in text
    if name.endswith(".mha"):
        marker = head.find(b"ElementDataFile")
        if marker < 0:
            return None, False
        eol = head.find(b"\n", marker)
        if eol < 0:
            return None, False
        line = head[marker:eol]
        if b"LOCAL" not in line:
            return None, False
        compressed = (
            b"CompressedData = True" in head[:marker] or b"CompressedData=True" in head[:marker]
        )
        return size - (eol + 1), compressed
    return None, False


def read_itk(
    path: str | os.PathLike[str], *, index: int | None = None, modality: str | None = None
) -> Volume:
    """Read an image through SimpleITK (NRRD ``.nrrd``/``.nhdr``, MetaImage ``.mha``/``.mhd``).

    Parameters
    ----------
    path : path-like
        The image (for detached headers, the header file).
    index : int, optional
        For a 4D image: which volume along the 4th axis to read (0-based). Required for 4D.
    modality : str, optional
        DICOM modality code to record; ``"OT"`` by default.

    Returns
    -------
    Volume
        ``array``: shape ``(I, J, K)`` = ITK ``(size_x, size_y, size_z)``, i.e. SimpleITK's
        ``(z, y, x)`` array transposed so ``array[i, j, k]`` is ITK index ``(i, j, k)``.
        ``affine``: voxel index -> **RAS+** mm, built from ITK's LPS+ geometry as
        ``diag(-1, -1, 1, 1) @ [[D @ diag(spacing), origin], [0, 1]]``.
        ``provenance.format`` is ``"nrrd"`` or ``"mha"``.

    Raises
    ------
    NotAVolumeError, UnsupportedImageError, CorruptFileError, VolumeReadError
        As for :func:`read_nifti`: 2D, 4D without ``index``, vector/RGB pixels, damaged files.
    """
    path = Path(path)
    try:
        import SimpleITK as sitk
    except ImportError as exc:  # pragma: no cover - SimpleITK is a hard dependency
        raise MissingDependencyError(
            "reading NRRD/MetaImage needs SimpleITK: pip install SimpleITK", path
        ) from exc
    if not path.exists():
        raise VolumeReadError("no such file", path)

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        size = tuple(int(s) for s in reader.GetSize())
        n_comp = int(reader.GetNumberOfComponents())
        pixel_id = reader.GetPixelID()
    except RuntimeError as exc:
        raise CorruptFileError(f"not a readable image header ({_itk_message(exc)})", path) from exc

    if n_comp != 1:
        raise UnsupportedImageError(
            f"{n_comp}-component (RGB/vector) pixels are not a scalar volume; convert to one "
            "channel first",
            path,
        )
    if pixel_id in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise UnsupportedImageError("complex-valued voxels are not supported", path)
    spatial, t = _spatial_and_index(path, size, index)
    n_bytes = int(np.prod(size, dtype=np.float64)) * _itk_itemsize(sitk, pixel_id)
    available, compressed = _attached_payload(path)
    _check_plausible_size(path, n_bytes, compressed=compressed, available=available)

    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise CorruptFileError(
            f"truncated or damaged voxel data ({_itk_message(exc)})", path
        ) from exc
    except MemoryError as exc:
        raise CorruptFileError("voxel data too large to read; damaged header?", path) from exc

    dim = image.GetDimension()
    try:
        if dim > 3:
            extract = [0] * dim
            extract_size = [int(s) for s in image.GetSize()]
            for axis in range(3, dim):
                extract_size[axis] = 0  # collapse
            if t is not None:
                extract[3] = t
            image = sitk.Extract(
                image, extract_size, extract, sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX
            )
        array = sitk.GetArrayFromImage(image)  # (z, y, x)
        spacing = np.array(image.GetSpacing(), dtype=np.float64)
        origin = np.array(image.GetOrigin(), dtype=np.float64)
        direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    except (RuntimeError, ValueError) as exc:
        raise CorruptFileError(
            f"cannot interpret image geometry ({_itk_message(exc)})", path
        ) from exc

    array = np.ascontiguousarray(array.transpose(2, 1, 0))
    if array.shape != spatial:  # defensive: ITK index order must match the header size
        raise CorruptFileError(f"array shape {array.shape} does not match size {spatial}", path)
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing[np.newaxis, :]
    lps[:3, 3] = origin
    affine = geometry.lps_to_ras(lps)
    _check_affine(path, affine)
    notes: tuple[str, ...] = ()
    if t is not None:
        notes = (f"volume {t} of a 4D image with {size[3]} volumes",)
    provenance = Provenance(
        format=_itk_format(path),
        paths=(str(path),),
        description=path.name,
        source_orientation=geometry.axcodes(affine),
        notes=notes,
        extra={"itk_origin_lps": tuple(origin), "itk_spacing": tuple(spacing),
               "itk_direction_lps": tuple(direction.ravel()), "shape_on_disk": size, "index": t},
    )  # fmt: skip
    return _make_volume(path, array, affine, modality=_clean_modality(modality) or "OT",
                        provenance=provenance)  # fmt: skip


def _itk_itemsize(sitk, pixel_id: int) -> int:
    """Bytes per voxel of a scalar SimpleITK pixel type (8 when unknown: an upper bound)."""
    sizes = {
        sitk.sitkUInt8: 1, sitk.sitkInt8: 1, sitk.sitkUInt16: 2, sitk.sitkInt16: 2,
        sitk.sitkUInt32: 4, sitk.sitkInt32: 4, sitk.sitkFloat32: 4,
    }  # fmt: skip
    return sizes.get(pixel_id, 8)


def _itk_message(exc: BaseException) -> str:
    """The last meaningful line of an ITK exception (they are long C++ traces)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.lower().startswith("description:"):
            return ln.split(":", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__
