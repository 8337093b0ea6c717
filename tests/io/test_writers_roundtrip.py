"""save_mask puts every label on the reference's voxels for nibabel, MONAI and SimpleITK.

Real NIfTI volumes (RAS and LPS) and synthetic references (oblique, sagittal PSR, LPS) are
written with save_mask and read back; affine and label voxels must match the reference.
"""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest

from sam2_med import Provenance, Volume
from sam2_med.io import load_volume, save_mask
from sam2_med.io.nifti import read_itk
from tests.conftest import shared_path

VOLUMES = ("ct_abdomen_small", "mr_abdomen_small", "ct_abdomen_pelvis")


@pytest.fixture(scope="module")
def monai_transforms():
    """MONAI's loaders (imported once per module: importing torch takes seconds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from monai.transforms import Compose, LoadImage, LoadImaged, Orientationd
    return LoadImage, LoadImaged, Orientationd, Compose


def _rotation(axis: int, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    a, b = [ax for ax in range(3) if ax != axis]
    r = np.eye(3)
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


def make_rand_affine(rng: np.random.Generator) -> np.ndarray:
    """Voxel -> RAS affine: rotations about two world axes, random flips, anisotropic spacing.

    Rounded to float32 because the NIfTI-1 sform stores float32; the round trip is then exact.
    """
    rot = _rotation(2, rng.uniform(-0.6, 0.6)) @ _rotation(0, rng.uniform(-0.6, 0.6))
    flips = np.diag(rng.choice([-1.0, 1.0], size=3))
    spacing = np.diag(rng.uniform(0.4, 4.0, size=3))
    affine = np.eye(4)
    affine[:3, :3] = rot @ flips @ spacing
    affine[:3, 3] = rng.uniform(-200, 200, size=3)
    return affine.astype(np.float32).astype(np.float64)


def _sagittal_psr() -> np.ndarray:
    # i -> posterior, j -> superior, k -> right (a sagittal stack read in PSR order)
    return np.array(
        [[0, 0, 1.2, -80.0], [-0.9, 0, 0, 120.0], [0, 0.9, 0, -60.0], [0, 0, 0, 1]],
        dtype=np.float64,
    )


SYNTHETIC = {
    "oblique": lambda rng: make_rand_affine(rng),
    "sagittal_psr": lambda rng: _sagittal_psr(),
    "lps": lambda rng: (
        np.diag([-0.8, -0.8, 2.5, 1.0])
        + np.array([[0, 0, 0, 100.0], [0, 0, 0, 90.0], [0, 0, 0, -30.0], [0, 0, 0, 0]])
    ),
}


def _assert_labels_identical(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    for value in np.unique(expected):
        np.testing.assert_array_equal(got == value, expected == value, err_msg=f"label {value}")
    np.testing.assert_array_equal(got, expected)


def _monai_checks(monai_transforms, image_path, mask_path, ref_labels_path, affine):
    LoadImage, LoadImaged, Orientationd, Compose = monai_transforms
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mt = LoadImage(image_only=True, ensure_channel_first=False)(str(mask_path))
        loaded = Compose(
            [
                LoadImaged(["image", "mask", "ref"], ensure_channel_first=True),
                Orientationd(["image", "mask", "ref"], axcodes="RAS"),
            ]
        )({"image": str(image_path), "mask": str(mask_path), "ref": str(ref_labels_path)})
    # MONAI: MetaTensor affine is float64 torch; LoadImage converts voxels to float32 by default.
    np.testing.assert_allclose(mt.affine.numpy(), affine, atol=1e-6, rtol=0)
    ref_labels = np.asarray(nib.load(ref_labels_path).dataobj)
    _assert_labels_identical(np.asarray(mt).astype(np.int64), ref_labels.astype(np.int64))

    img, mask, ref = loaded["image"], loaded["mask"], loaded["ref"]
    np.testing.assert_allclose(mask.affine.numpy(), img.affine.numpy(), atol=1e-6, rtol=0)
    assert mask.shape == img.shape
    _assert_labels_identical(np.asarray(mask).astype(np.int64), np.asarray(ref).astype(np.int64))
    # ... and the reorientation is the one nibabel computes for the reference labels.
    canon = nib.as_closest_canonical(nib.load(ref_labels_path))
    np.testing.assert_allclose(mask.affine.numpy(), canon.affine, atol=1e-5, rtol=0)
    _assert_labels_identical(np.asarray(mask)[0].astype(np.int64), np.asarray(canon.dataobj))


@pytest.mark.shared_data
@pytest.mark.parametrize("case", VOLUMES)
def test_round_trip_real_volumes(case, tmp_path, monai_transforms):
    image_path = shared_path("volumes", case, "image.nii.gz")
    labels_path = shared_path("volumes", case, "labels.nii.gz")
    ref = load_volume(image_path)
    labels = np.asarray(nib.load(labels_path).dataobj)

    out = save_mask(labels, tmp_path / "mask.nii.gz", reference=ref)

    # nibabel: same affine, same header geometry bit for bit, same voxels.
    mask_img = nib.load(out)
    ref_img = nib.load(image_path)
    np.testing.assert_array_equal(mask_img.affine, ref.affine)
    for field in ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
                  "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z"):  # fmt: skip
        np.testing.assert_array_equal(mask_img.header[field], ref_img.header[field], err_msg=field)
    np.testing.assert_array_equal(mask_img.header["pixdim"][:4], ref_img.header["pixdim"][:4])
    np.testing.assert_array_equal(mask_img.header.get_qform(), ref_img.header.get_qform())
    np.testing.assert_array_equal(mask_img.header.get_sform(), ref_img.header.get_sform())
    assert mask_img.get_data_dtype() == np.uint8
    _assert_labels_identical(np.asarray(mask_img.dataobj), labels)

    # our own reader and SimpleITK (LPS internally) agree too.
    back = load_volume(out)
    np.testing.assert_array_equal(back.affine, ref.affine)
    np.testing.assert_allclose(read_itk(out).affine, ref.affine, atol=1e-4)

    _monai_checks(monai_transforms, image_path, out, labels_path, ref.affine)


@pytest.mark.parametrize("kind", sorted(SYNTHETIC))
@pytest.mark.parametrize("seed", [0, 1])
def test_round_trip_synthetic_references(kind, seed, tmp_path, monai_transforms):
    rng = np.random.default_rng(seed)
    affine = SYNTHETIC[kind](rng)
    shape = tuple(int(n) for n in rng.integers(6, 14, size=3))
    image = rng.normal(size=shape).astype(np.float32)
    ref = Volume(image, affine, provenance=Provenance(format="synthetic"))
    labels = rng.integers(0, 5, size=shape).astype(np.int32)

    out = save_mask(labels, tmp_path / "mask.nii.gz", reference=ref)

    mask_img = nib.load(out)
    # Non-NIfTI reference: affine as sform and qform, code 1 (scanner anatomical).
    assert int(mask_img.header["sform_code"]) == 1
    assert int(mask_img.header["qform_code"]) == 1
    np.testing.assert_allclose(mask_img.affine, affine, atol=1e-6, rtol=0)
    # the quaternion qform is the same rigid grid (to float32 precision)
    np.testing.assert_allclose(mask_img.header.get_qform(), affine, atol=1e-4)
    _assert_labels_identical(np.asarray(mask_img.dataobj), labels)
    np.testing.assert_allclose(read_itk(out).affine, affine, atol=1e-4)

    # MONAI needs the image on disk beside the mask; labels also as a plain reference file.
    image_path = tmp_path / "image.nii.gz"
    nib.Nifti1Image(image, affine).to_filename(image_path)
    ref_labels_path = tmp_path / "ref_labels.nii.gz"
    nib.Nifti1Image(labels.astype(np.uint8), affine).to_filename(ref_labels_path)
    _monai_checks(monai_transforms, image_path, out, ref_labels_path, affine)


def test_float64_affine_is_kept_to_float32_precision(tmp_path):
    """NIfTI-1 stores the sform in float32: a float64 affine comes back within ~1e-7 relative."""
    affine = np.array(
        [[0.7071067811865476, -0.7071067811865476, 0, -123.456789012],
         [0.7071067811865476, 0.7071067811865476, 0, 98.7654321098],
         [0, 0, 1.23456789, 55.5555555555], [0, 0, 0, 1]]
    )  # fmt: skip
    ref = Volume(np.zeros((4, 5, 6), np.int16), affine)
    out = save_mask(np.ones((4, 5, 6), np.uint8), tmp_path / "m.nii", reference=ref)
    got = nib.load(out).affine
    np.testing.assert_allclose(got, affine, rtol=2e-7, atol=2e-5)


@pytest.mark.shared_data
def test_mask_for_a_dicom_reference_lands_on_the_dicom_voxels(tmp_path, monai_transforms):
    """DICOM series -> save_mask -> NIfTI: code 1 (scanner) and the same world placement.

    labels.nii.gz of ct_siemens_j2k was made on the series grid (stored LAS); after bringing it
    into the reader's axis order and writing it for the DICOM volume, both files must put every
    label at the same world position (compared in RAS-canonical order).
    """
    from nibabel.orientations import axcodes2ornt, ornt_transform

    case = shared_path("dicom", "ct_siemens_j2k")
    ref = load_volume(case / "series")
    lab_img = nib.load(case / "labels.nii.gz")
    xform = ornt_transform(
        axcodes2ornt(nib.aff2axcodes(lab_img.affine)), axcodes2ornt(ref.orientation)
    )
    labels = np.asarray(lab_img.as_reoriented(xform).dataobj)

    out = save_mask(labels, tmp_path / "mask.nii.gz", reference=ref)

    mask_img = nib.load(out)
    assert (int(mask_img.header["qform_code"]), int(mask_img.header["sform_code"])) == (1, 1)
    np.testing.assert_allclose(mask_img.affine, ref.affine, atol=1e-4)
    canon_mask = nib.as_closest_canonical(mask_img)
    canon_ref = nib.as_closest_canonical(lab_img)
    np.testing.assert_allclose(canon_mask.affine, canon_ref.affine, atol=0.01)
    _assert_labels_identical(np.asarray(canon_mask.dataobj), np.asarray(canon_ref.dataobj))

    LoadImage = monai_transforms[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mt = LoadImage(image_only=True, ensure_channel_first=False)(str(out))
    np.testing.assert_allclose(mt.affine.numpy(), ref.affine, atol=1e-4)
