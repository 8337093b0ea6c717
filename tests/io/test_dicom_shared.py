"""The DICOM reader against real series and their reference conversions in ../shared/data/dicom.

References were made by dcm2niix (single-case folders) and dicom2nifti (``multivendor_dicom2nifti``,
``<series>_ground_truth.nii.gz`` beside each series folder). Both sides are reoriented to the
closest canonical (RAS+) voxel order with nibabel before comparing, so the test checks world
geometry and voxel values, not array layout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sam2_med.io import MultipleSeriesError, VolumeReadError, list_series, load_volume
from sam2_med.io._dicom_files import read_dataset
from sam2_med.io.dicom import read_dicom
from sam2_med.io.errors import GeometryError, NotAVolumeError, UnsupportedImageError
from tests.conftest import shared_path

pytestmark = pytest.mark.shared_data

MV = "multivendor_dicom2nifti"

#: (series folder, reference NIfTI) relative to shared/data/dicom.
REFERENCE_CASES = [
    ("ct_siemens_j2k/series", "ct_siemens_j2k/reference_dcm2niix.nii.gz"),
    ("ct_head_ge/series", "ct_head_ge/reference_dcm2niix.nii.gz"),
    ("mr_t1_sagittal_siemens_gz/series", "mr_t1_sagittal_siemens_gz/reference_dcm2niix.nii.gz"),
    (
        "mr_philips_classic_vs_enhanced/classic",
        "mr_philips_classic_vs_enhanced/reference_classic_dcm2niix.nii.gz",
    ),
    (
        "mr_philips_classic_vs_enhanced/enhanced",
        "mr_philips_classic_vs_enhanced/reference_enhanced_dcm2niix.nii.gz",
    ),
] + [
    (f"{MV}/{series}", f"{MV}/{series}_ground_truth.nii.gz")
    for series in (
        "anatomical/001",
        "anatomical/001_implicit",
        "ge/anatomical/001",
        "ge/anatomical/001_implicit",
        "generic/anatomical/001",
        "generic/anatomical/001_implicit",
        "generic/anatomical/002_non_isotropic",
        "generic/compressed/001",
        "generic/compressed_j2k/001",
        "generic/compressed_jpeg/001",
        "generic/compressed_jpegls/001",
        "generic/compressed_rle/001",
        "hitachi/anatomical/001",
        "hitachi/anatomical/001_implicit",
        "hyperfine/anatomical/001",
        "philips/anatomical/001",
        "philips/anatomical/001_implicit",
        "philips_enhanced/anatomical/001",
        "philips_enhanced/anatomical/001_implicit",
        "siemens/anatomical/001",
        "siemens/anatomical/001_implicit",
        "siemens_multiframe/anatomical/001",
        # Under failing/ in dicom2nifti's suite because dicom2nifti wants >= 3 slices; two
        # parallel, evenly spaced slices are a valid (thin) volume here, matching its reference.
        "failing/slicecount/001",
    )
]

#: Affine tolerance in mm (per matrix element after canonical reorientation).
AFFINE_ATOL = 0.01
#: Case-specific tolerances, each with its reason.
AFFINE_ATOL_CASE = {
    # dcm2niix takes the slice step from the first two positions (2.0001 mm) while the other 94
    # steps are 2.0000 mm: its last slice lands 0.0100 mm away from that slice's
    # ImagePositionPatient. Ours uses (last - first) / (K - 1) and passes through every position
    # (test_affine_passes_through_every_position); the 0.0100 mm difference is dcm2niix's.
    "mr_t1_sagittal_siemens_gz/series": 0.0101,
}


def _canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(array), affine))
    return np.asarray(img.dataobj), img.affine


@pytest.mark.parametrize(
    ("series", "reference"), REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES]
)
def test_matches_reference_conversion(series: str, reference: str) -> None:
    vol = load_volume(shared_path("dicom", series))
    ref = nib.load(shared_path("dicom", reference))
    # Scaled references (scl_slope, float64 ground truths) compare as their real-world values.
    ref_data = np.asanyarray(ref.dataobj)
    if ref_data.ndim == 4:  # dicom2nifti writes some enhanced MR as (X, Y, Z, 1)
        assert ref_data.shape[3] == 1
        ref_data = ref_data[..., 0]
    ours, our_affine = _canonical(vol.array, vol.affine)
    theirs, their_affine = _canonical(ref_data, ref.affine)

    assert ours.shape == theirs.shape
    np.testing.assert_allclose(
        our_affine, their_affine, rtol=0, atol=AFFINE_ATOL_CASE.get(series, AFFINE_ATOL)
    )
    if np.issubdtype(vol.dtype, np.integer) and np.issubdtype(theirs.dtype, np.integer):
        np.testing.assert_array_equal(ours, theirs)
    else:
        # Non-integer rescale (Philips slopes 0.1 / 4.2588..., per-slice slopes of
        # 002_non_isotropic): we store float32, references store float32/float64.
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6 * np.abs(theirs).max())


@pytest.mark.parametrize(
    "series",
    ["ct_siemens_j2k/series", "mr_t1_sagittal_siemens_gz/series",
     "mr_philips_classic_vs_enhanced/classic"],
)  # fmt: skip
def test_affine_passes_through_every_position(series: str) -> None:
    """Voxel (0, 0, k) lands on slice k's own ImagePositionPatient (LPS -> RAS)."""
    vol = load_volume(shared_path("dicom", series))
    for k, src in enumerate(vol.provenance.source_frames):
        ds = read_dataset(Path(src.path), header_only=True)
        ipp_ras = np.array([float(x) for x in ds.ImagePositionPatient]) * [-1, -1, 1]
        np.testing.assert_allclose(vol.voxel_to_world([0, 0, k]), ipp_ras, atol=1e-3)


def test_ct_siemens_j2k_details() -> None:
    """HU as int16, 2 mm step from positions (SliceThickness says 3 mm), SOP class from meta."""
    vol = load_volume(shared_path("dicom", "ct_siemens_j2k", "series"))
    assert vol.dtype == np.int16
    assert vol.modality == "CT"
    assert vol.spacing[2] == pytest.approx(2.0, abs=1e-4)
    assert vol.provenance.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert vol.provenance.format == "dicom"
    assert len(vol.provenance.source_frames) == vol.shape[2] == 20
    assert vol.array.min() < -900  # air in HU
    # Anonymised with empty UIDs in the data set: SOP class and instance come from the file meta.
    assert vol.provenance.series_uid is None
    assert vol.provenance.frame_of_reference_uid
    assert all(f.sop_instance_uid.startswith("1.3.12.2") for f in vol.provenance.source_frames)
    assert vol.window is not None and (vol.window.center, vol.window.width) == (40.0, 300.0)


def test_window_hint_is_kept() -> None:
    vol = load_volume(shared_path("dicom", "mr_philips_classic_vs_enhanced", "classic"))
    assert vol.window is not None
    assert vol.window.width > 0


def test_philips_classic_equals_enhanced() -> None:
    base = shared_path("dicom", "mr_philips_classic_vs_enhanced")
    classic = load_volume(base / "classic")
    enhanced = load_volume(base / "enhanced")
    assert classic.shape == enhanced.shape
    assert classic.dtype == enhanced.dtype
    np.testing.assert_allclose(classic.affine, enhanced.affine, atol=1e-4)
    np.testing.assert_array_equal(classic.array, enhanced.array)
    assert [f.frame for f in enhanced.provenance.source_frames] == list(range(40))
    assert {f.frame for f in classic.provenance.source_frames} == {None}


#: Every case under failing/ (plus two refused outside it) and the words its message must hold.
REFUSED_CASES = [
    (f"{MV}/failing/gantrytilting/001", GeometryError, ["gantry tilt"]),
    (f"{MV}/failing/sliceincrement/001", GeometryError, ["missing slices"]),
    # Tilted AND missing a slice: dicom2nifti's reference resamples it; we refuse and name both.
    (f"{MV}/failing/sliceincrement/002", GeometryError, ["gantry tilt", "missing slices"]),
    (f"{MV}/failing/sliceorientation/001", GeometryError, ["inconsistent orientation"]),
    (f"{MV}/failing/notavolume/001", NotAVolumeError, ["not a volume", "same position"]),
    # A single slice: the third voxel size would have to come from SliceThickness; refused
    # (dicom2nifti's reference for it does exactly that guess).
    (f"{MV}/ge/anatomical/001_single_slice", NotAVolumeError, ["single image", "2 slices"]),
    # Magnitude and phase images interleaved at the same 4 positions (no reference: dicom2nifti
    # refuses it too); loadable one at a time with index= (test_philips_magnitude_phase_index).
    (
        f"{MV}/philips/anatomical/002",
        UnsupportedImageError,
        ["4D", "2 images at each of 4", "index=0..1"],
    ),
]


@pytest.mark.parametrize(
    ("series", "error", "words"), REFUSED_CASES, ids=[c[0] for c in REFUSED_CASES]
)
def test_refuses_with_a_clear_message(series: str, error: type, words: list[str]) -> None:
    folder = shared_path("dicom", series)
    with pytest.raises(error) as info:
        load_volume(folder)
    message = str(info.value)
    assert message.startswith(str(folder))
    for word in words:
        assert word in message


def test_every_failing_case_is_covered() -> None:
    failing = shared_path("dicom", MV, "failing")
    folders = {str(p.parent.relative_to(failing.parent.parent)) for p in failing.rglob("*.dcm")}
    covered = {c[0] for c in REFUSED_CASES} | {c[0] for c in REFERENCE_CASES}
    assert folders <= covered


def _two_series_folder(tmp_path: Path) -> Path:
    root = tmp_path / "study"
    for name, src in (
        ("a", shared_path("dicom", "ct_head_ge", "series")),
        ("b", shared_path("dicom", MV, "hitachi", "anatomical", "001")),
    ):
        (root / name).mkdir(parents=True)
        for f in src.iterdir():
            (root / name / f.name).symlink_to(f)
    (root / "notes.txt").write_text("not DICOM")
    return root


def test_two_series_need_a_choice(tmp_path: Path) -> None:
    root = _two_series_folder(tmp_path)
    infos = list_series(root)
    assert sorted(i.n_slices for i in infos) == [4, 93]
    assert all(i.is_image for i in infos)
    by_modality = {i.modality: i for i in infos}
    assert set(by_modality) == {"CT", "MR"}
    assert by_modality["CT"].n_files == 93 and (by_modality["CT"].rows, by_modality["CT"].cols) == (
        64,
        64,
    )
    assert by_modality["MR"].n_slices == 4

    with pytest.raises(MultipleSeriesError) as info:
        load_volume(root)
    message = str(info.value)
    for i in infos:
        assert i.series_uid in message
    assert "93 slices" in message and "4 slices" in message
    assert len(info.value.series) == 2

    ct = load_volume(root, series_uid=by_modality["CT"].series_uid)
    assert ct.shape == (64, 64, 93) and ct.modality == "CT"
    mr = read_dicom(root, series_uid=by_modality["MR"].series_uid)
    assert mr.shape == (64, 64, 4) and mr.modality == "MR"
    assert any("non-DICOM" in n for n in ct.provenance.notes)


def test_unknown_series_uid_is_refused(tmp_path: Path) -> None:
    root = _two_series_folder(tmp_path)
    with pytest.raises(VolumeReadError, match=r"series 1\.2\.3\.4 not found"):
        load_volume(root, series_uid="1.2.3.4")


def test_list_of_files_and_single_enhanced_file() -> None:
    folder = shared_path("dicom", "ct_head_ge", "series")
    files = [folder / f"CTHead{n}.dcm" for n in range(1, 11)]
    vol = load_volume([str(f) for f in reversed(files)])
    assert vol.shape[2] == 10
    enhanced = shared_path(
        "dicom", "mr_philips_classic_vs_enhanced", "enhanced", "1901_WIP_3DpCASL_real.dcm.gz"
    )
    assert load_volume(enhanced).shape == (96, 96, 40)


def test_inputs_are_not_modified(tmp_path: Path) -> None:
    src = shared_path("dicom", "mr_t1_sagittal_siemens_gz", "series")
    copy = tmp_path / "series"
    shutil.copytree(src, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    load_volume(copy)
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before


def test_philips_magnitude_phase_index() -> None:
    folder = shared_path("dicom", MV, "philips", "anatomical", "002")
    magnitude = load_volume(folder, index=0)
    phase = load_volume(folder, index=1)
    assert magnitude.shape == phase.shape == (768, 768, 4)
    np.testing.assert_allclose(magnitude.affine, phase.affine)
    assert "SW_M" in magnitude.provenance.notes[0] and "SW_P" in phase.provenance.notes[0]
    assert {Path(f.path).name for f in magnitude.provenance.source_frames} == {
        "001.dcm",
        "002.dcm",
        "003.dcm",
        "004.dcm",
    }
    assert magnitude.provenance.extra["rescale_slopes"] != phase.provenance.extra["rescale_slopes"]
    with pytest.raises(VolumeReadError, match="out of range"):
        load_volume(folder, index=2)
