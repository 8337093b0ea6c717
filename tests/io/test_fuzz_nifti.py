"""Damaged NIfTI and NRRD files: load_volume returns a Volume or raises VolumeReadError, nothing else.

Each example starts from a small valid file and truncates it and/or overwrites bytes, biased
towards the header where dims, datatype, vox_offset, scaling and geometry live. Derandomized so
CI sees the same examples every run.
"""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sam2_med import Volume
from sam2_med.io import VolumeReadError, load_volume

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def _nifti_bytes() -> bytes:
    data = np.arange(5 * 4 * 3, dtype=np.int16).reshape(5, 4, 3)
    affine = np.array([[0, 0, 2.0, 1], [-1.5, 0, 0, 2], [0, 1.0, 0, 3], [0, 0, 0, 1]])
    return nib.Nifti1Image(data, affine).to_bytes()


def _nrrd_bytes(tmp_dir, compress: bool) -> bytes:
    image = sitk.GetImageFromArray(np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    image.SetDirection((0, 0, 1, 1, 0, 0, 0, 1, 0))
    path = tmp_dir / f"base_{int(compress)}.nrrd"
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path.read_bytes()


def _mutate(blob: bytes, cut: int | None, edits: list[tuple[int, int]], header: int) -> bytes:
    buf = bytearray(blob)
    for pos, value in edits:
        if buf:
            buf[pos % min(len(buf), header)] = value
    if cut is not None:
        buf = buf[: cut % (len(buf) + 1)]
    return bytes(buf)


edits_st = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8)
cut_st = st.one_of(st.none(), st.integers(0, 10_000))


def _check(path) -> None:
    try:
        result = load_volume(path)
    except VolumeReadError:
        return
    assert isinstance(result, Volume)
    assert result.array.ndim == 3 and np.all(np.isfinite(result.affine))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(cut=cut_st, edits=edits_st, gz_mode=st.sampled_from(["nii", "gz-inner", "gz-outer"]))
def test_damaged_nifti(workdir, cut, edits, gz_mode):
    blob = _nifti_bytes()
    if gz_mode == "nii":
        out, name = _mutate(blob, cut, edits, header=352), "x.nii"
    elif gz_mode == "gz-inner":  # damaged NIfTI inside an intact gzip stream
        out, name = gzip.compress(_mutate(blob, cut, edits, header=352), mtime=0), "x.nii.gz"
    else:  # damaged gzip stream (header, deflate data, CRC/size trailer)
        out, name = _mutate(gzip.compress(blob, mtime=0), cut, edits, 10**9), "x.nii.gz"
    path = workdir / name
    path.write_bytes(out)
    _check(path)


@FUZZ
@given(
    cut=cut_st,
    edits=edits_st,
    compress=st.booleans(),
    field=st.sampled_from([None, "sizes", "dimension", "type", "space directions", "encoding"]),
    value=st.sampled_from(["0", "-3", "99999 99999 99999", "1 1", "nan", "float", "(1,0)", "x"]),
)
def test_damaged_nrrd(workdir, cut, edits, compress, field, value):
    blob = _nrrd_bytes(workdir, compress)
    head, sep, body = blob.partition(b"\n\n")
    if field is not None:
        lines = [
            f"{field}: {value}".encode() if ln.startswith(field.encode() + b":") else ln
            for ln in head.split(b"\n")
        ]
        head = b"\n".join(lines)
    out = _mutate(head + sep + body, cut, edits, header=len(head) + len(sep))
    path = workdir / "x.nrrd"
    path.write_bytes(out)
    _check(path)


def test_gzip_helper_roundtrip_sanity(workdir):
    """The undamaged inputs read fine, so the fuzzers start from valid files."""
    (workdir / "ok.nii.gz").write_bytes(gzip.compress(_nifti_bytes()))
    assert load_volume(workdir / "ok.nii.gz").shape == (5, 4, 3)
    (workdir / "ok.nrrd").write_bytes(_nrrd_bytes(workdir, True))
    assert load_volume(workdir / "ok.nrrd").shape == (5, 4, 3)


@FUZZ
@given(cut=cut_st, edits=edits_st, compress=st.booleans())
def test_damaged_metaimage(workdir, cut, edits, compress):
    image = sitk.GetImageFromArray(np.arange(60, dtype=np.float32).reshape(3, 4, 5))
    base = workdir / f"base_{int(compress)}.mha"
    if not base.exists():
        sitk.WriteImage(image, str(base), useCompression=compress)
    blob = base.read_bytes()
    header_len = blob.find(b"ElementDataFile")
    header_len = blob.find(b"\n", header_len) + 1 if header_len >= 0 else len(blob)
    path = workdir / "x.mha"
    path.write_bytes(_mutate(blob, cut, edits, header=header_len))
    _check(path)
