"""Reading volumes and writing masks without ever misplacing a voxel.

Public entry points
-------------------
load_volume(path, *, series_uid=None, index=None) -> Volume
    NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``, ``.mhd``),
    DICOM (a folder searched recursively, one file, a list of files, ``.dcm.gz``).
list_series(path) -> list[SeriesInfo]
    The DICOM series found under a folder.
save_mask(labels, path, *, reference, label_names=None, overwrite=False) -> Path
    A uint8/uint16 NIfTI label map on exactly the reference grid, plus a JSON sidecar.
save_dicom_seg(labels, path, *, reference, label_names=None, overwrite=False) -> Path
    A DICOM Segmentation referencing the source instances (DICOM references only).
save_rtstruct(labels, path, *, reference, label_names=None, overwrite=False) -> Path
    A DICOM RT Structure Set (contours per slice, LPS mm) referencing the source images.

Every failure is a :class:`VolumeReadError` / :class:`MaskWriteError` subclass whose message
starts with the offending path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import (
    CorruptFileError,
    GeometryError,
    MaskWriteError,
    MissingDependencyError,
    MultipleSeriesError,
    NotAVolumeError,
    OutputExistsError,
    UnsupportedFormatError,
    UnsupportedImageError,
    VolumeReadError,
)

if TYPE_CHECKING:
    from ..volume import Volume
    from .dicom import SeriesInfo

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_SUFFIXES = (".dcm", ".dcm.gz", ".dicom", ".ima")

__all__ = [
    "CorruptFileError",
    "GeometryError",
    "MaskWriteError",
    "MissingDependencyError",
    "MultipleSeriesError",
    "NotAVolumeError",
    "OutputExistsError",
    "UnsupportedFormatError",
    "UnsupportedImageError",
    "VolumeReadError",
    "list_series",
    "load_volume",
    "note_non_finite",
    "save_dicom_seg",
    "save_mask",
    "save_rtstruct",
    "sniff_format",
]


def _has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


def sniff_format(path: str | os.PathLike[str]) -> str | None:
    """Guess the format of ``path`` without reading the whole file.

    Returns ``"nifti"``, ``"itk"``, ``"dicom"`` (a DICOM file or a folder) or ``None``.
    Cheap enough for a napari reader's ``get_reader``: at most the first 132 bytes are read.
    """
    p = Path(path)
    if p.is_dir():
        return "dicom"
    if _has_suffix(p, NIFTI_SUFFIXES):
        return "nifti"
    if _has_suffix(p, ITK_SUFFIXES):
        return "itk"
    if _has_suffix(p, DICOM_SUFFIXES):
        return "dicom"
    if p.is_file():
        try:
            with open(p, "rb") as fh:
                head = fh.read(132)
        except OSError:
            return None
        if len(head) == 132 and head[128:132] == b"DICM":
            return "dicom"
    return None


def load_volume(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    series_uid: str | None = None,
    index: int | None = None,
) -> Volume:
    """Read a 3D image into a :class:`~sam2_med.Volume` (RAS+ affine, array as stored).

    Parameters
    ----------
    path : path or sequence of paths
        A NIfTI/NRRD/MHA file, a DICOM file, a folder of DICOM files (searched recursively), or
        a list of DICOM files.
    series_uid : str, optional
        Which DICOM series to load when a folder holds several.
    index : int, optional
        Which volume of a 4D image to load (required for 4D input).

    Returns
    -------
    Volume
        ``array`` indexed ``(i, j, k)``, ``affine`` voxel -> RAS mm. CT is in HU.

    Raises
    ------
    VolumeReadError
        Or a subclass, naming the file and the problem. Nothing else is raised for bad input.
    """
    if isinstance(path, (list, tuple)):
        from .dicom import read_dicom

        return note_non_finite(
            read_dicom([Path(p) for p in path], series_uid=series_uid, index=index)
        )
    p = Path(path)
    if not p.exists():
        raise VolumeReadError("no such file or folder", p)
    from .._files import check_regular_file

    check_regular_file(p, "volume", VolumeReadError)  # a FIFO would block the read forever
    fmt = sniff_format(p)
    if fmt == "nifti":
        from .nifti import read_nifti

        return note_non_finite(read_nifti(p, index=index))
    if fmt == "itk":
        from .nifti import read_itk

        return note_non_finite(read_itk(p, index=index))
    if fmt == "dicom":
        from .dicom import read_dicom

        return note_non_finite(read_dicom(p, series_uid=series_uid, index=index))
    raise UnsupportedFormatError(
        "not a file type sam2-med reads (NIfTI .nii/.nii.gz, NRRD, MHA/MHD, DICOM)", p
    )


def note_non_finite(volume: Volume) -> Volume:
    """Count NaN and infinite voxels; when there are any, say so in the provenance.

    The intensity transform maps NaN and -inf to 0 (black) and +inf to 1 (white), so the model
    sees them as image content; the count is recorded as ``provenance.extra
    ["non_finite_voxels"]`` (and ``"nan_voxels"``, ``"inf_voxels"``) and as a note that the
    command line prints as a warning.
    """
    import numpy as np

    arr = np.asarray(volume.array)
    if not np.issubdtype(arr.dtype, np.floating):
        return volume
    nan = int(np.count_nonzero(np.isnan(arr)))
    inf = int(np.count_nonzero(np.isinf(arr)))
    if not nan and not inf:
        return volume
    note = (
        f"{nan + inf} non-finite voxels ({nan} NaN, {inf} infinite): the model sees NaN and "
        "-inf as the lowest intensity, +inf as the highest"
    )
    prov = volume.provenance
    extra = {**prov.extra, "non_finite_voxels": nan + inf, "nan_voxels": nan, "inf_voxels": inf}
    return volume.with_provenance(notes=(*prov.notes, note), extra=extra)


def list_series(path: str | os.PathLike[str]) -> list[SeriesInfo]:
    """Describe every DICOM series under ``path`` (see :class:`sam2_med.io.dicom.SeriesInfo`)."""
    from .dicom import list_series as _list

    return _list(Path(path))


def save_mask(labels, path, *, reference, label_names=None, overwrite=False):
    """Write an integer label map as NIfTI on ``reference``'s grid; see
    :func:`sam2_med.io.writers.save_mask`."""
    from .writers import save_mask as _save

    return _save(labels, path, reference=reference, label_names=label_names, overwrite=overwrite)


def save_dicom_seg(labels, path, *, reference, label_names=None, overwrite=False):
    """Write a DICOM SEG referencing ``reference``'s source instances; see
    :func:`sam2_med.io.dicom_seg.save_dicom_seg`."""
    from .dicom_seg import save_dicom_seg as _save

    return _save(labels, path, reference=reference, label_names=label_names, overwrite=overwrite)


def save_rtstruct(labels, path, *, reference, label_names=None, overwrite=False):
    """Write an RT Structure Set referencing ``reference``'s source images; see
    :func:`sam2_med.io.rtstruct.save_rtstruct`."""
    from .rtstruct import save_rtstruct as _save

    return _save(labels, path, reference=reference, label_names=label_names, overwrite=overwrite)
