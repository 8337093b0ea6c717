"""The synthetic CT phantom: exact labels, anatomy in world RAS, files that agree on geometry."""

from __future__ import annotations

import doctest
import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from sam2_med import geometry, phantom
from sam2_med.io import OutputExistsError, load_volume
from sam2_med.phantom import (
    BODY_CENTER_RAS,
    PHANTOM_HU,
    PHANTOM_LABELS,
    make_phantom,
    phantom_affine,
    write_phantom,
)

ORIENTATIONS = ("LPS", "RAS", "oblique")
SMALL = {"shape": (56, 48, 20), "spacing": (1.8, 1.8, 5.0)}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The default phantom written once for the file tests."""
    out = tmp_path_factory.mktemp("phantom")
    return write_phantom(out)


def _centroids(volume, labels) -> dict[str, np.ndarray]:
    """Body-centred RAS mm centroid of each label."""
    centre = np.asarray(BODY_CENTER_RAS)
    return {
        name: volume.voxel_to_world(np.argwhere(labels.array == value)).mean(axis=0) - centre
        for value, name in PHANTOM_LABELS.items()
    }


def _canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient to the closest RAS+ voxel axes, as nibabel's ``as_closest_canonical`` does."""
    ornt = io_orientation(affine)
    return apply_orientation(array, ornt), affine @ inv_ornt_aff(ornt, array.shape)


def test_doctests() -> None:
    result = doctest.testmod(phantom)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_labels_are_exactly_the_hu_objects(orientation) -> None:
    vol, lab = make_phantom(orientation=orientation, noise_hu=0, **SMALL)
    assert vol.array.dtype == np.int16 and lab.array.dtype == np.uint8
    assert lab.reference is vol and dict(lab.names) == dict(PHANTOM_LABELS)
    for value, name in PHANTOM_LABELS.items():
        inside = lab.array == value
        assert inside.any(), name
        assert np.all(vol.array[inside] == PHANTOM_HU[name]), name
    background = {PHANTOM_HU["air"], PHANTOM_HU["fat"], PHANTOM_HU["soft_tissue"]}
    assert set(np.unique(vol.array[lab.array == 0]).tolist()) == background
    # every organ value appears only inside labels (kidneys share one value, both labelled)
    organ_hu = {PHANTOM_HU[n] for n in PHANTOM_LABELS.values()}
    assert not np.isin(vol.array[lab.array == 0], list(organ_hu)).any()


def test_noise_is_seeded_and_mild() -> None:
    clean, _ = make_phantom(noise_hu=0, **SMALL)
    noisy, _ = make_phantom(seed=3, **SMALL)
    again, _ = make_phantom(seed=3, **SMALL)
    other, _ = make_phantom(seed=4, **SMALL)
    np.testing.assert_array_equal(noisy.array, again.array)
    assert not np.array_equal(noisy.array, other.array)
    diff = noisy.array.astype(np.int32) - clean.array
    body = clean.array > PHANTOM_HU["air"]
    assert 4 < diff[body].std() < 8 and np.abs(diff[body]).max() < 60
    assert noisy.array.min() >= -1024


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_organs_in_their_anatomical_place(orientation) -> None:
    vol, lab = make_phantom(orientation=orientation)
    assert vol.modality == "CT" and vol.provenance.format == "synthetic"
    assert (vol.window.center, vol.window.width) == (40.0, 400.0)
    c = _centroids(vol, lab)
    # RAS: +x is the patient's right, +y anterior, +z superior
    assert c["liver"][0] > 10 and c["kidney_right"][0] > 10
    assert c["spleen"][0] < -10 and c["kidney_left"][0] < -10
    assert c["vertebra"][1] < -10 and abs(c["vertebra"][0]) < 1
    assert c["aorta"][1] > c["vertebra"][1] + 10  # aorta in front of the spine
    assert c["aorta"][0] < 0  # ... slightly to the left
    assert c["liver"][2] > c["kidney_right"][2]  # liver above the kidney
    for name, value in (("liver", 1), ("vertebra", 6)):
        assert np.any(lab.array == value), name


def test_orientation_only_changes_the_grid() -> None:
    """The same anatomy, resampled: voxel counts agree within partial-sampling noise."""
    counts = {}
    for orientation in ORIENTATIONS:
        _, lab = make_phantom(orientation=orientation)
        counts[orientation] = np.bincount(lab.array.ravel(), minlength=7)[1:]
    np.testing.assert_array_equal(counts["LPS"], counts["RAS"])
    np.testing.assert_allclose(counts["oblique"], counts["LPS"], rtol=0.05)


def test_affines() -> None:
    assert geometry.axcodes(phantom_affine(orientation="LPS")) == "LPS"
    assert geometry.axcodes(phantom_affine(orientation="RAS")) == "RAS"
    obl = phantom_affine(orientation="oblique")
    assert geometry.is_oblique(obl)
    assert geometry.voxel_spacing(obl) == pytest.approx((0.9, 0.9, 2.5))
    centre = (np.asarray(phantom.DEFAULT_SHAPE) - 1) / 2
    assert geometry.voxel_to_world(obl, centre) == pytest.approx(BODY_CENTER_RAS)
    lps = geometry.lps_to_ras(obl)[:3, :3]
    # k runs along the DICOM slice normal (row x column cosines in LPS)
    assert np.dot(np.cross(lps[:, 0], lps[:, 1]), lps[:, 2]) > 0
    with pytest.raises(ValueError, match="orientation"):
        phantom_affine(orientation="PSR")  # type: ignore[arg-type]


def test_write_refuses_to_overwrite(tmp_path) -> None:
    out = tmp_path / "p"
    (out / "phantom_dicom").mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="phantom_dicom"):
        write_phantom(out)
    with pytest.raises(FileExistsError):
        write_phantom(out)
    written = write_phantom(out, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"
    assert len(list(written["dicom"].glob("*.dcm"))) == phantom.DEFAULT_SHAPE[2]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["keep.txt", *phantom.PHANTOM_OUTPUTS.values()]
    )  # no temporary folder left behind


def test_written_nifti_equals_the_phantom(written) -> None:
    vol, lab = make_phantom()
    img = load_volume(written["image"])
    np.testing.assert_array_equal(img.array, vol.array)
    np.testing.assert_allclose(img.affine, vol.affine, atol=1e-4)
    raw = nib.load(written["image"])
    assert int(raw.header["qform_code"]) == 1 and int(raw.header["sform_code"]) == 1
    np.testing.assert_allclose(raw.get_qform(), raw.get_sform(), atol=1e-4)
    labels = load_volume(written["labels"])
    np.testing.assert_array_equal(labels.array, lab.array)
    np.testing.assert_allclose(labels.affine, vol.affine, atol=1e-4)
    sidecar = json.loads(written["label_names"].read_text())
    assert sidecar["label_names"] == {str(k): v for k, v in PHANTOM_LABELS.items()}
    assert sidecar["phantom"]["third_party_data"] is False


def test_dicom_headers_and_geometry(written) -> None:
    vol, _ = make_phantom()
    files = sorted(written["dicom"].glob("*.dcm"))
    datasets = [pydicom.dcmread(f) for f in files]
    ds0 = datasets[0]
    assert ds0.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds0.SOPClassUID == pydicom.uid.CTImageStorage and ds0.Modality == "CT"
    assert str(ds0.PatientName) == "Phantom^SAM2MED"
    assert len({d.SeriesInstanceUID for d in datasets}) == 1
    assert len({d.FrameOfReferenceUID for d in datasets}) == 1
    assert len({d.SOPInstanceUID for d in datasets}) == len(files)

    lps = geometry.lps_to_ras(vol.affine)
    row, col = np.asarray(ds0.ImageOrientationPatient, dtype=float).reshape(2, 3)
    np.testing.assert_allclose(row * vol.spacing[0], lps[:3, 0], atol=1e-5)
    np.testing.assert_allclose(col * vol.spacing[1], lps[:3, 1], atol=1e-5)
    assert geometry.is_oblique(vol.affine)
    normal = np.cross(row, col)
    positions = np.array([np.asarray(d.ImagePositionPatient, dtype=float) for d in datasets])
    along = positions @ normal
    assert not np.all(np.diff(along) > 0)  # file order is shuffled against position order
    order = np.argsort(along)
    steps = np.diff(along[order])
    np.testing.assert_allclose(steps, vol.spacing[2], atol=1e-5)
    assert float(ds0.SliceThickness) != pytest.approx(vol.spacing[2])  # as real scanners do
    for k, idx in enumerate(order):
        ds = datasets[idx]
        np.testing.assert_allclose(positions[idx], lps[:3, :3] @ [0, 0, k] + lps[:3, 3], atol=1e-5)
        hu = ds.pixel_array.astype(np.int32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu.T, vol.array[:, :, k])


def test_dicom_uids_are_deterministic(tmp_path) -> None:
    a = write_phantom(tmp_path / "a")["dicom"]
    b = write_phantom(tmp_path / "b")["dicom"]
    uids_a = sorted(pydicom.dcmread(f).SOPInstanceUID for f in a.glob("*.dcm"))
    uids_b = sorted(pydicom.dcmread(f).SOPInstanceUID for f in b.glob("*.dcm"))
    assert uids_a == uids_b


def test_dicom_series_reads_back_as_the_nifti(written) -> None:
    """``load_volume`` on the DICOM folder and on the NIfTI give the same voxels in world space."""
    dcm = load_volume(written["dicom"])
    nii = load_volume(written["image"])
    assert dcm.modality == "CT" and dcm.provenance.format == "dicom"
    a_arr, a_aff = _canonical(np.asarray(dcm.array), dcm.affine)
    b_arr, b_aff = _canonical(np.asarray(nii.array), nii.affine)
    np.testing.assert_array_equal(a_arr, b_arr)
    np.testing.assert_allclose(a_aff, b_aff, atol=0.01)
    assert (dcm.window.center, dcm.window.width) == (40.0, 400.0)


@pytest.mark.parametrize("orientation", ["LPS", "RAS"])
def test_dicom_reads_back_for_axis_aligned_grids(tmp_path, orientation) -> None:
    written = write_phantom(tmp_path, orientation=orientation, seed=1)
    dcm = load_volume(written["dicom"])
    vol, _ = make_phantom(orientation=orientation, seed=1)
    assert dcm.orientation == orientation
    np.testing.assert_array_equal(dcm.array, vol.array)
    np.testing.assert_allclose(dcm.affine, vol.affine, atol=0.01)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_prompt_file_clicks_inside_each_prompted_structure(tmp_path, orientation) -> None:
    """The README's prompt file: each click lands on a voxel of its own structure's label, on
    every grid orientation (the clicks are world millimetres, read through the prompt parser)."""
    from sam2_med.prompts import load_prompts

    written = write_phantom(tmp_path, orientation=orientation)
    image = load_volume(written["image"])
    assert image.modality == "CT"  # from phantom_ct.json, so "auto" picks a HU window
    labels = np.asarray(nib.load(written["labels"]).dataobj)
    prompts = load_prompts(written["prompts"], image)
    assert [o.name for o in prompts.objects] == list(phantom.PROMPTED_STRUCTURES)
    for obj in prompts.objects:
        assert PHANTOM_LABELS[obj.label] == obj.name
        (point,) = obj.points
        assert obj.point_labels.tolist() == [1]
        assert labels[tuple(point)] == obj.label
