"""save_rtstruct: contours read back and rasterised land on the mask's pixels, and dciodvfy agrees.

The read-back is independent of the writer's geometry: each contour is placed with the
Image Position / Orientation (Patient) and Pixel Spacing of the source image its Contour Image
Sequence names (read here with pydicom), rasterised with scikit-image's pixel-centre rule (holes
by the even-odd rule), and compared with the mask plane of that SOP instance.
"""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from skimage.draw import polygon2mask

from sam2_med.io import MaskWriteError, OutputExistsError, load_volume, save_rtstruct
from sam2_med.io.rtstruct import RTSTRUCT_SOP_CLASS_UID, contours_for_slice
from sam2_med.phantom import PHANTOM_LABELS, make_phantom, write_phantom
from sam2_med.prompts import mask_to_image_grid
from tests.conftest import shared_path

DCIODVFY = shutil.which("dciodvfy")


def _read(path: str) -> pydicom.Dataset:
    blob = Path(path).read_bytes()
    if blob[:2] == b"\x1f\x8b":
        blob = gzip.decompress(blob)
    return pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True)


def rasterise(rt: pydicom.Dataset, sources: dict[str, pydicom.Dataset]) -> dict[int, dict]:
    """ROI number -> SOP Instance UID -> (Rows, Columns) bool mask, from the DICOM geometry."""
    out: dict[int, dict] = {}
    for rc in rt.ROIContourSequence:
        planes: dict[str, np.ndarray] = {}
        for c in rc.get("ContourSequence", []):
            assert c.ContourGeometricType == "CLOSED_PLANAR"
            [ref] = c.ContourImageSequence
            src = sources[ref.ReferencedSOPInstanceUID]
            pts = np.asarray(c.ContourData, dtype=np.float64).reshape(-1, 3)
            assert len(pts) == int(c.NumberOfContourPoints)
            ipp = np.asarray(src.ImagePositionPatient, dtype=np.float64)
            iop = np.asarray(src.ImageOrientationPatient, dtype=np.float64)
            row_sp, col_sp = (float(v) for v in src.PixelSpacing)
            d = pts - ipp
            normal = np.cross(iop[:3], iop[3:])
            assert np.abs(d @ normal).max() < 0.01, "contour off its image plane"
            col = d @ iop[:3] / col_sp
            row = d @ iop[3:] / row_sp
            shape = (int(src.Rows), int(src.Columns))
            filled = polygon2mask(shape, np.column_stack([row, col]))
            uid = ref.ReferencedSOPInstanceUID
            planes[uid] = planes.get(uid, np.zeros(shape, bool)) ^ filled
        out[int(rc.ReferencedROINumber)] = planes
    return out


def dice_per_label(rt_path, volume, labels: np.ndarray) -> dict[int, tuple[float, int]]:
    """Label -> (Dice of the rasterised contours against the mask, voxel count)."""
    rt = pydicom.dcmread(rt_path)
    frames = volume.provenance.source_frames
    sources = {sf.sop_instance_uid: _read(sf.path) for sf in frames}
    planes = rasterise(rt, sources)
    out = {}
    for value in [int(v) for v in np.unique(labels) if v]:
        truth = labels == value
        got = np.zeros_like(truth)
        for k, sf in enumerate(frames):
            plane = planes.get(value, {}).get(sf.sop_instance_uid)
            if plane is not None:
                got[:, :, k] = plane.T  # rows = j, columns = i
        inter = np.logical_and(truth, got).sum()
        out[value] = (2.0 * inter / (truth.sum() + got.sum()), int(truth.sum()))
    return out


def dciodvfy_errors(path) -> list[str]:
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


needs_dciodvfy = pytest.mark.skipif(
    DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) not installed; .ci/run installs it"
)


@pytest.fixture(scope="module")
def phantom_series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom")
    written = write_phantom(folder)  # oblique grid, shuffled file names
    volume = load_volume(written["dicom"])
    labels = mask_to_image_grid(load_volume(written["labels"]), volume, where=written["labels"])
    return volume, labels.astype(np.uint8)


def test_phantom_round_trip_and_references(phantom_series, tmp_path):
    volume, labels = phantom_series
    out = save_rtstruct(labels, tmp_path / "rt.dcm", reference=volume, label_names=PHANTOM_LABELS)
    rt = pydicom.dcmread(out)
    assert rt.SOPClassUID == RTSTRUCT_SOP_CLASS_UID and rt.Modality == "RTSTRUCT"
    first = _read(volume.provenance.source_frames[0].path)
    assert rt.StudyInstanceUID == first.StudyInstanceUID
    assert rt.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert rt.PatientID == first.PatientID
    names = {int(r.ROINumber): r.ROIName for r in rt.StructureSetROISequence}
    assert names == dict(PHANTOM_LABELS)
    [frame_ref] = rt.ReferencedFrameOfReferenceSequence
    [series] = frame_ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence
    assert series.SeriesInstanceUID == volume.provenance.series_uid
    listed = {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence}
    assert listed == {sf.sop_instance_uid for sf in volume.provenance.source_frames}
    for value, (dice, n) in dice_per_label(out, volume, labels).items():
        assert dice >= 0.98, (PHANTOM_LABELS[value], dice, n)


@needs_dciodvfy
def test_phantom_rtstruct_passes_dciodvfy(phantom_series, tmp_path):
    volume, labels = phantom_series
    out = save_rtstruct(labels, tmp_path / "rt.dcm", reference=volume)
    assert dciodvfy_errors(out) == []


@pytest.mark.shared_data
def test_shared_ct_round_trip_and_dciodvfy(tmp_path):
    case = shared_path("dicom", "ct_siemens_j2k")
    volume = load_volume(case / "series")
    labels = mask_to_image_grid(load_volume(case / "labels.nii.gz"), volume, where=case)
    labels = labels.astype(np.uint8)
    out = save_rtstruct(labels, tmp_path / "rt.dcm", reference=volume)
    scores = dice_per_label(out, volume, labels)
    assert len(scores) > 10
    for value, (dice, n) in scores.items():
        if n > 8:  # "larger than a few voxels"
            assert dice >= 0.98, (value, dice, n)
    if DCIODVFY is not None:
        assert dciodvfy_errors(out) == []


@pytest.mark.shared_data
def test_enhanced_multiframe_source_references_frames(tmp_path):
    volume = load_volume(shared_path("dicom", "mr_philips_classic_vs_enhanced", "enhanced"))
    labels = np.zeros(volume.shape, np.uint8)
    c = np.array(volume.shape) // 2
    labels[c[0] - 8 : c[0] + 8, c[1] - 5 : c[1] + 6, c[2] - 3 : c[2] + 3] = 1
    out = save_rtstruct(labels, tmp_path / "rt.dcm", reference=volume, label_names=["box"])
    rt = pydicom.dcmread(out)
    frames = {sf.frame for sf in volume.provenance.source_frames}
    got = [
        int(c.ContourImageSequence[0].ReferencedFrameNumber)
        for c in rt.ROIContourSequence[0].ContourSequence
    ]
    assert len(got) == 6 and {f - 1 for f in got} <= frames
    if DCIODVFY is not None:
        assert dciodvfy_errors(out) == []


def test_contours_rasterise_back_exactly():
    """A random blob with holes and diagonal pixel contacts comes back pixel for pixel."""
    rng = np.random.default_rng(4)
    mask = rng.random((40, 33)) > 0.55
    got = np.zeros_like(mask)
    for poly in contours_for_slice(mask):
        got ^= polygon2mask(mask.shape, poly)
    assert np.array_equal(got, mask)


def test_bad_inputs_one_clear_line(tmp_path):
    volume, labels = make_phantom(shape=(20, 16, 6), spacing=(4.0, 4.0, 6.0))
    with pytest.raises(MaskWriteError, match="needs an image read from DICOM") as err:
        save_rtstruct(labels, tmp_path / "rt.dcm", reference=volume)
    assert "\n" not in str(err.value) and str(tmp_path / "rt.dcm") in str(err.value)


def test_empty_label_map_and_existing_output(phantom_series, tmp_path):
    volume, labels = phantom_series
    with pytest.raises(MaskWriteError, match="empty"):
        save_rtstruct(np.zeros_like(labels), tmp_path / "rt.dcm", reference=volume)
    assert not (tmp_path / "rt.dcm").exists()
    out = save_rtstruct(labels == 1, tmp_path / "rt.dcm", reference=volume)
    with pytest.raises(OutputExistsError):
        save_rtstruct(labels == 1, out, reference=volume)
    save_rtstruct(labels == 2, out, reference=volume, overwrite=True)
    assert pydicom.dcmread(out).StructureSetROISequence[0].ROIName == "label_1"
