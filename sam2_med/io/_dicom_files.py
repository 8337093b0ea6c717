"""Finding and opening DICOM files (plain or gzip-wrapped) without trusting their bytes.

Every failure leaves this module as a :class:`~sam2_med.io.errors.VolumeReadError` subclass
naming the file: a file that is not DICOM at all is :class:`UnsupportedFormatError`, a DICOM file
that is truncated or damaged (bad gzip stream, EOF inside an element, undecodable header) is
:class:`CorruptFileError`. Inputs are only read: ``.dcm.gz`` files are decompressed in memory and
nothing is ever written beside them.
"""

from __future__ import annotations

import gzip
import io
import warnings
import zlib
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .errors import CorruptFileError, UnsupportedFormatError, VolumeReadError

#: File names skipped while walking a folder: things that sit beside DICOM series in practice
#: (reference conversions, sidecars, notes) and are never DICOM.
SKIPPED_SUFFIXES = (
    ".nii", ".nii.gz", ".json", ".txt", ".md", ".csv", ".xml", ".html", ".png", ".jpg",
    ".jpeg", ".nrrd", ".mha", ".mhd", ".py", ".zip", ".bval", ".bvec",
)  # fmt: skip

#: Names that promise DICOM: in a folder, such a file that cannot be read is an error.
DICOM_SUFFIXES = (".dcm", ".dcm.gz", ".dicom", ".dicom.gz", ".ima", ".ima.gz")

_GZIP_MAGIC = b"\x1f\x8b"


def candidate_files(path: Path) -> tuple[list[Path], int]:
    """All files under a folder (recursively, sorted) that could be DICOM.

    Hidden files and files with a :data:`SKIPPED_SUFFIXES` suffix are left out.

    Returns
    -------
    files : list of Path
    skipped : int
        How many files were left out by name.
    """
    files: list[Path] = []
    skipped = 0
    for p in sorted(path.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(path).parts):
            continue
        if p.name.lower().endswith(SKIPPED_SUFFIXES):
            skipped += 1
            continue
        files.append(p)
    return files, skipped


def _head(path: Path, n: int = 132) -> tuple[bytes, bool]:
    """The first ``n`` bytes of the (decompressed) file and whether it is gzip-wrapped."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(n)
            if head[:2] != _GZIP_MAGIC:
                return head, False
        with gzip.open(path, "rb") as gz:
            return gz.read(n), True
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, (gzip.BadGzipFile, EOFError, zlib.error)):
            raise CorruptFileError(f"damaged gzip stream ({exc})", path) from None
        raise VolumeReadError(f"cannot read file ({exc})", path) from None


def looks_like_dicom(head: bytes) -> bool | None:
    """``True`` for a Part 10 file (``DICM`` at byte 128), ``None`` for a plausible preamble-less
    data set (starts with a group 0x0002 or 0x0008 tag), ``False`` otherwise."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if head[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08"):
        return None
    return False


def sniff(path: Path) -> bool:
    """Cheaply decide whether ``path`` (plain or gzip-wrapped) may be DICOM; never raises for
    unreadable files (they count as not DICOM)."""
    try:
        head, _ = _head(path)
    except VolumeReadError:
        return False
    return looks_like_dicom(head) is not False


def _fix_transfer_syntax(ds: Dataset) -> None:
    """Give a preamble-less data set the transfer syntax it was actually read with, so that its
    pixel data can be decoded (PS3.5 section 10: no file meta, so no Transfer Syntax UID)."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    if implicit is None:
        return
    if implicit:
        uid = ImplicitVRLittleEndian
    else:
        uid = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    if meta is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid


def read_dataset(path: Path, *, header_only: bool) -> Dataset:
    """Read one DICOM file (plain or ``.gz``) with pydicom.

    Parameters
    ----------
    path : Path
    header_only : bool
        Stop before the Pixel Data element (``stop_before_pixels``); a gzip file is then
        decompressed only up to that point.

    Returns
    -------
    pydicom.dataset.Dataset

    Raises
    ------
    UnsupportedFormatError
        The file is not DICOM.
    CorruptFileError
        The file is DICOM (or gzip) but truncated or damaged.
    """
    head, gz = _head(path)
    kind = looks_like_dicom(head)
    if kind is False:
        raise UnsupportedFormatError("not a DICOM file (no 'DICM' marker at byte 128)", path)
    try:
        with warnings.catch_warnings():
            # pydicom warns about every odd value it meets; the checks downstream report the
            # ones that matter, with the file name.
            warnings.simplefilter("ignore")
            if gz and header_only:
                with gzip.open(path, "rb") as fh:
                    ds = pydicom.dcmread(fh, stop_before_pixels=True, force=kind is None)
            elif gz:
                data = gzip.decompress(path.read_bytes())
                ds = pydicom.dcmread(io.BytesIO(data), force=kind is None)
            else:
                ds = pydicom.dcmread(path, stop_before_pixels=header_only, force=kind is None)
            _fix_transfer_syntax(ds)
    except InvalidDicomError as exc:
        raise UnsupportedFormatError(f"not a readable DICOM file ({exc})", path) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise CorruptFileError(f"damaged gzip stream ({exc})", path) from None
    except MemoryError:
        raise CorruptFileError(
            "damaged DICOM file (an element claims an absurd length)", path
        ) from None
    except Exception as exc:  # pydicom raises many types on damaged bytes; name it, never leak it
        raise CorruptFileError(
            f"truncated or damaged DICOM file ({type(exc).__name__}: {exc})", path
        ) from None
    return ds
