"""read_nifti: array as stored, nibabel's RAS affine, header geometry kept, clear refusals."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from sam2_med.io import (
    CorruptFileError,
    NotAVolumeError,
    UnsupportedImageError,
    VolumeReadError,
    load_volume,
)
from sam2_med.io.nifti import read_nifti
from tests.conftest import shared_path

AFFINE = np.array(
    [[0.0, 0.0, -2.0, 40.0], [-1.5, 0.0, 0.0, 10.0], [0.0, 1.25, 0.0, -7.5], [0, 0, 0, 1]]
)


def _save(tmp_path, data, name="img.nii.gz", affine=AFFINE, **header):
    img = nib.Nifti1Image(data, affine)
    for key, value in header.items():
        img.header[key] = value
    path = tmp_path / name
    img.to_filename(path)
    return path


@pytest.mark.shared_data
@pytest.mark.parametrize("case", ["ct_abdomen_small", "mr_abdomen_small"])
def test_real_volume_matches_nibabel(case):
    path = shared_path("volumes", case, "image.nii.gz")
    img = nib.load(path)
    vol = read_nifti(path)
    np.testing.assert_array_equal(vol.affine, img.affine)
    assert vol.dtype == img.get_data_dtype() == np.int16  # unscaled integer data keeps its dtype
    np.testing.assert_array_equal(vol.array, np.asarray(img.dataobj))
    prov = vol.provenance
    assert prov.format == "nifti" and prov.paths == (str(path),)
    assert (prov.nifti_qform_code, prov.nifti_sform_code) == (0, 2)
    np.testing.assert_array_equal(prov.nifti_sform, img.header.get_sform())
    np.testing.assert_array_equal(prov.nifti_qform, img.header.get_qform())
    assert prov.source_orientation == vol.orientation == ("LPS" if "mr" in case else "RAS")
    assert vol.modality == "OT"


def test_axes_and_affine_as_stored(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    vol = load_volume(_save(tmp_path, data))
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_allclose(vol.affine, AFFINE)
    assert vol.orientation == "PSL"
    assert not vol.array.flags.writeable


def test_qform_only_file_uses_the_qform(tmp_path):
    img = nib.Nifti1Image(np.zeros((3, 4, 5), np.uint8), None)
    aff = np.diag([-2.0, 3.0, 4.0, 1.0])
    img.header.set_qform(aff, code=1)
    img.header.set_sform(np.eye(4), code=0)
    path = tmp_path / "q.nii"
    img.to_filename(path)
    vol = read_nifti(path)
    np.testing.assert_allclose(vol.affine, aff)
    assert (vol.provenance.nifti_qform_code, vol.provenance.nifti_sform_code) == (1, 0)


def test_scaling_applied_only_when_not_identity(tmp_path):
    raw = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    path = _save(tmp_path, raw, name="hu.nii")
    with open(path, "r+b") as fh:  # scl_slope, scl_inter: float32 at byte 112 of NIfTI-1
        fh.seek(112)
        fh.write(np.array([1.0, -1024.0], dtype="<f4").tobytes())
    vol = read_nifti(path)
    assert np.issubdtype(vol.dtype, np.integer)
    np.testing.assert_array_equal(vol.array, raw.astype(np.int32) - 1024)

    with open(path, "r+b") as fh:
        fh.seek(112)
        fh.write(np.array([0.5, 0.0], dtype="<f4").tobytes())
    vol = read_nifti(path)
    assert vol.dtype == np.float32
    np.testing.assert_allclose(vol.array, raw * 0.5)


def test_4d_needs_an_index(tmp_path):
    data = np.random.default_rng(0).integers(0, 100, size=(4, 5, 6, 7)).astype(np.int16)
    path = _save(tmp_path, data)
    with pytest.raises(UnsupportedImageError, match=r"4D image with 7 volumes.*pass index="):
        load_volume(path)
    vol = load_volume(path, index=3)
    np.testing.assert_array_equal(vol.array, data[..., 3])
    np.testing.assert_allclose(vol.affine, AFFINE)
    assert "volume 3 of a 4D image with 7 volumes" in vol.provenance.notes
    with pytest.raises(UnsupportedImageError, match="out of range"):
        load_volume(path, index=7)


def test_4d_scaled_volume_index(tmp_path):
    data = np.arange(2 * 3 * 4 * 2, dtype=np.float64).reshape(2, 3, 4, 2) * 0.25
    path = _save(tmp_path, data.astype(np.float32))
    np.testing.assert_allclose(read_nifti(path, index=1).array, data[..., 1])


@pytest.mark.parametrize("shape", [(4, 5, 6, 1), (4, 5, 6, 1, 1)])
def test_trailing_singleton_dims_are_a_volume(tmp_path, shape):
    data = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    vol = read_nifti(_save(tmp_path, data))
    assert vol.shape == (4, 5, 6)
    np.testing.assert_array_equal(vol.array, data.reshape(4, 5, 6))


def test_vector_5d_is_refused(tmp_path):
    data = np.zeros((4, 5, 6, 1, 3), np.float32)
    with pytest.raises(UnsupportedImageError, match="5D"):
        read_nifti(_save(tmp_path, data))


def test_rgb_is_refused(tmp_path):
    rgb = np.zeros((4, 5, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = _save(tmp_path, rgb)
    with pytest.raises(UnsupportedImageError, match="RGB"):
        load_volume(path)


@pytest.mark.parametrize("shape", [(8, 9), (8, 9, 1)])
def test_2d_is_not_a_volume(tmp_path, shape):
    path = _save(tmp_path, np.zeros(shape, np.int16))
    with pytest.raises(NotAVolumeError, match="not a 3D volume"):
        load_volume(path)


def test_truncated_gzip_is_corrupt(tmp_path):
    path = _save(tmp_path, np.random.default_rng(1).normal(size=(20, 20, 20)).astype(np.float32))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorruptFileError) as info:
        load_volume(path)
    assert str(path) in str(info.value)


def test_truncated_uncompressed_data_is_corrupt(tmp_path):
    path = _save(tmp_path, np.ones((20, 20, 20), np.int16), name="img.nii")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptFileError, match="truncated"):
        load_volume(path)


def test_truncated_header_is_corrupt(tmp_path):
    path = _save(tmp_path, np.ones((4, 4, 4), np.int16), name="img.nii")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptFileError):
        load_volume(path)


def test_huge_dims_in_a_small_gzip_are_refused_before_reading(tmp_path):
    path = _save(tmp_path, np.ones((4, 4, 4), np.int16), name="img.nii")
    blob = bytearray(path.read_bytes())
    blob[42:48] = np.array([30000, 30000, 30000], dtype="<i2").tobytes()  # dim[1..3]
    gz = tmp_path / "huge.nii.gz"
    gz.write_bytes(gzip.compress(bytes(blob)))
    with pytest.raises(CorruptFileError, match="bytes of voxel data"):
        load_volume(gz)


def test_not_nifti_bytes(tmp_path):
    path = tmp_path / "junk.nii"
    path.write_bytes(b"hello, not an image" * 30)
    with pytest.raises(VolumeReadError):
        load_volume(path)


def test_modality_from_sidecar_or_hint(tmp_path):
    path = _save(tmp_path, np.zeros((3, 4, 5), np.int16), name="t1.nii.gz")
    assert read_nifti(path).modality == "OT"
    assert read_nifti(path, modality="ct").modality == "CT"
    (tmp_path / "t1.json").write_text(json.dumps({"Modality": "MR"}))
    assert read_nifti(path).modality == "MR"


def test_nifti2(tmp_path):
    data = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    path = tmp_path / "two.nii"
    nib.Nifti2Image(data, AFFINE).to_filename(path)
    vol = load_volume(path)
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_allclose(vol.affine, AFFINE)
    assert vol.provenance.extra["nifti_version"] == 2


def test_big_endian_file_gives_native_int16(tmp_path):
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    img = nib.Nifti1Image(data, AFFINE, nib.Nifti1Header(endianness=">"))
    img.set_data_dtype(np.int16)
    path = tmp_path / "be.nii.gz"
    img.to_filename(path)
    assert nib.load(path).header.endianness == ">"
    vol = read_nifti(path)
    assert vol.dtype == np.dtype("int16") and vol.dtype.isnative
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_allclose(vol.affine, AFFINE)


@pytest.mark.parametrize(
    ("offset", "value", "match"),
    [(0, np.int32(347), "sizeof_hdr"), (254, np.int16(148), "sform_code"),
     (72, np.int16(8), "bitpix")],
)  # fmt: skip
def test_damaged_header_fields_are_refused_not_fixed(tmp_path, offset, value, match):
    """nibabel would silently "fix" these (e.g. drop the sform); a damaged header is refused."""
    path = _save(tmp_path, np.zeros((3, 4, 5), np.int16), name="bad.nii")
    blob = bytearray(path.read_bytes())
    raw = value.astype(value.dtype.newbyteorder("<")).tobytes()
    blob[offset : offset + len(raw)] = raw
    path.write_bytes(bytes(blob))
    with pytest.raises(CorruptFileError, match=match):
        read_nifti(path)


def test_qfac_zero_is_tolerated_and_noted(tmp_path):
    path = _save(tmp_path, np.zeros((3, 4, 5), np.int16), name="q.nii")
    blob = bytearray(path.read_bytes())
    blob[76:80] = np.float32(0).tobytes()  # pixdim[0]: NIfTI-1 readers treat 0 as qfac = 1
    path.write_bytes(bytes(blob))
    vol = read_nifti(path)
    np.testing.assert_allclose(vol.affine, AFFINE)
    assert any("qfac" in note for note in vol.provenance.notes)


@pytest.mark.parametrize("bad", ["singular", "nan"])
def test_singular_or_nan_sform_is_corrupt(tmp_path, bad):
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    if bad == "singular":
        aff[:3, 2] = 0.0
    else:
        aff[0, 3] = np.nan
    hdr = nib.Nifti1Header()
    hdr.set_sform(aff, code=1)
    path = tmp_path / "s.nii"
    nib.Nifti1Image(np.zeros((3, 4, 5), np.int16), None, hdr).to_filename(path)
    with pytest.raises(CorruptFileError, match="not finite and invertible"):
        read_nifti(path)
