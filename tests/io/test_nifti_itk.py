"""read_itk (NRRD, MetaImage): ITK's LPS geometry becomes the same RAS affine nibabel reads.

The oracle: SimpleITK writes one image (non-identity direction) as NRRD, MHA and NIfTI; NIfTI
stores RAS, NRRD/MHA store LPS. read_itk on the NRRD/MHA must give the affine nibabel reads from
the NIfTI, and the same voxel at the same index.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from sam2_med.io import NotAVolumeError, UnsupportedImageError, load_volume
from sam2_med.io.nifti import read_itk


def _oblique_direction() -> tuple[float, ...]:
    a, b = 0.4, -0.3
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    flip = np.diag([1.0, -1.0, 1.0])  # a left-handed grid as well
    return tuple((rz @ rx @ flip).ravel())


def _sitk_image(shape_xyz=(7, 6, 5), dtype=np.int16) -> tuple[sitk.Image, np.ndarray]:
    zyx = np.arange(np.prod(shape_xyz), dtype=dtype).reshape(shape_xyz[::-1])
    image = sitk.GetImageFromArray(zyx)  # numpy (z, y, x) -> ITK size (x, y, z)
    image.SetSpacing((0.7, 1.3, 2.9))
    image.SetOrigin((12.5, -40.25, 88.0))
    image.SetDirection(_oblique_direction())
    return image, zyx


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nhdr", ".mhd"])
def test_itk_affine_agrees_with_nibabel_on_the_same_image(tmp_path, suffix):
    image, zyx = _sitk_image()
    sitk.WriteImage(image, str(tmp_path / f"img{suffix}"))
    sitk.WriteImage(image, str(tmp_path / "img.nii.gz"))
    vol = load_volume(tmp_path / f"img{suffix}")
    nii = nib.load(tmp_path / "img.nii.gz")
    np.testing.assert_allclose(vol.affine, nii.affine, atol=1e-5)
    assert vol.shape == nii.shape == (7, 6, 5)
    np.testing.assert_array_equal(vol.array, np.asarray(nii.dataobj))
    np.testing.assert_array_equal(vol.array, zyx.transpose(2, 1, 0))
    assert vol.provenance.format == ("nrrd" if "n" in suffix[1:3] else "mha")
    # voxel (i, j, k) sits where ITK puts index (i, j, k), flipped LPS -> RAS
    ijk = (3, 2, 4)
    lps = np.array(image.TransformIndexToPhysicalPoint(ijk))
    np.testing.assert_allclose(vol.voxel_to_world(ijk), lps * [-1, -1, 1], atol=1e-9)


def test_nrrd_4d_needs_index(tmp_path):
    t_zyx = np.random.default_rng(0).integers(0, 50, size=(3, 5, 6, 7)).astype(np.int16)
    image = sitk.GetImageFromArray(t_zyx, isVector=False)  # 4D scalar, not 3D vector
    assert image.GetDimension() == 4
    path = tmp_path / "t.nrrd"
    sitk.WriteImage(image, str(path))
    with pytest.raises(UnsupportedImageError, match=r"4D image with 3 volumes.*pass index="):
        read_itk(path)
    vol = read_itk(path, index=2)
    np.testing.assert_array_equal(vol.array, t_zyx[2].transpose(2, 1, 0))


def test_vector_pixels_are_refused(tmp_path):
    rgb = np.zeros((5, 6, 7, 3), np.uint8)
    path = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path))
    with pytest.raises(UnsupportedImageError, match="component"):
        load_volume(path)


def test_2d_is_not_a_volume(tmp_path):
    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 7), np.int16)), str(path))
    with pytest.raises(NotAVolumeError):
        load_volume(path)
