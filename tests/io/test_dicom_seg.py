"""save_dicom_seg: each SEG frame holds the mask plane of the source instance it references.

Synthetic single-frame CT series (oblique, optionally gzip-wrapped) are written with pydicom;
the reference Volume is built by hand with the conventions the DICOM reader follows (i = column,
j = row, k = slice in source_frames order, RAS affine). The SEG is read back with highdicom and
compared, per source SOP instance, voxel by voxel with the mask.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.orientations import axcodes2ornt, ornt_transform
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from sam2_med import Provenance, SourceFrame, Volume
from sam2_med.geometry import lps_to_ras
from sam2_med.io import MaskWriteError, OutputExistsError, load_volume, save_dicom_seg
from tests.conftest import dciodvfy_errors, shared_path

ROWS, COLS, N_SLICES = 12, 10, 6
ROW_DIR = np.array([np.cos(0.3), np.sin(0.3), 0.0])  # IOP[0:3]: direction of increasing column
COL_DIR = np.array([-np.sin(0.3) * np.cos(0.2), np.cos(0.3) * np.cos(0.2), np.sin(0.2)])
SPACING = (0.75, 0.6)  # PixelSpacing: (between rows, between columns) in mm
STEP = 2.5


def _write_series(folder: Path, *, gz: bool = False, shuffle: bool = True) -> list[Path]:
    """A single-frame CT series; files named in a shuffled order so order comes from UIDs."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    normal = np.cross(ROW_DIR, COL_DIR)
    origin = np.array([-40.0, 25.0, 110.0])
    names = np.random.default_rng(3).permutation(N_SLICES) if shuffle else range(N_SLICES)
    paths = []
    for k, name in zip(range(N_SLICES), names, strict=True):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Seg", "P1", "", "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "120000", "", "1"
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 3, k + 1
        ds.ImageOrientationPatient = [round(float(v), 10) for v in (*ROW_DIR, *COL_DIR)]
        ds.ImagePositionPatient = [round(float(v), 6) for v in origin + k * STEP * normal]
        ds.PixelSpacing = list(SPACING)
        ds.SliceThickness = STEP
        ds.Rows, ds.Columns = ROWS, COLS
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (np.full((ROWS, COLS), k, dtype=np.int16)).tobytes()
        path = folder / f"img{name:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        if gz:
            gz_path = path.with_suffix(".dcm.gz")
            gz_path.write_bytes(gzip.compress(path.read_bytes()))
            path.unlink()
            path = gz_path
        paths.append(path)
    return paths  # in slice order k = 0..N-1


def _reference_from(paths: list[Path]) -> Volume:
    """What read_dicom returns for this series: (column, row, slice) array, RAS affine."""
    datasets = []
    for p in paths:
        blob = p.read_bytes()
        blob = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
        datasets.append(pydicom.dcmread(pydicom.filebase.DicomBytesIO(blob)))
    first = datasets[0]
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    row_sp, col_sp = (float(v) for v in first.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * col_sp
    lps[:3, 1] = iop[3:] * row_sp
    lps[:3, 2] = np.asarray(datasets[1].ImagePositionPatient, float) - np.asarray(
        first.ImagePositionPatient, float
    )
    lps[:3, 3] = np.asarray(first.ImagePositionPatient, float)
    array = np.stack([ds.pixel_array.T for ds in datasets], axis=-1)
    frames = tuple(SourceFrame(str(p), str(ds.SOPInstanceUID)) for p, ds in zip(paths, datasets, strict=True))  # fmt: skip
    prov = Provenance(
        format="dicom",
        paths=tuple(str(p) for p in paths),
        series_uid=str(first.SeriesInstanceUID),
        study_uid=str(first.StudyInstanceUID),
        frame_of_reference_uid=str(first.FrameOfReferenceUID),
        sop_class_uid=str(first.SOPClassUID),
        source_frames=frames,
    )
    return Volume(array, lps_to_ras(lps), modality="CT", provenance=prov)


def _random_labels(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    labels[rng.random(shape) < 0.3] = 2
    labels[rng.random(shape) < 0.2] = 5
    labels[:, :, 1] = 0  # an empty slice: its frame is omitted
    return labels


def _assert_seg_matches(seg_path: Path, ref: Volume, labels: np.ndarray, values: list[int]):
    seg = hd.seg.segread(seg_path)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.segmentation_type == hd.seg.SegmentationTypeValues.BINARY
    assert seg.number_of_segments == len(values)
    uids = [sf.sop_instance_uid for sf in ref.provenance.source_frames]
    assert {u for _, _, u in seg.get_source_image_uids()} == set(uids)
    pixels = seg.get_pixels_by_source_instance(uids, assert_missing_frames_are_empty=True)
    assert pixels.shape == (len(uids), ref.shape[1], ref.shape[0], len(values))
    for number, value in enumerate(values, start=1):
        desc = seg.get_segment_description(number)
        assert desc.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
        assert desc.algorithm_identification[0].AlgorithmName == "sam2-med"
        assert desc.tracking_id == f"sam2-med label {value}"
        for k in range(len(uids)):
            # frame for source instance k (rows, cols) == mask slice k transposed, voxel by voxel
            np.testing.assert_array_equal(
                pixels[k, :, :, number - 1], (labels[:, :, k] == value).T, err_msg=f"k={k}"
            )
    return seg


@pytest.mark.parametrize("gz", [False, True])
def test_seg_frames_land_on_their_source_instances(tmp_path, gz):
    paths = _write_series(tmp_path, gz=gz)
    ref = _reference_from(paths)
    labels = _random_labels(ref.shape)
    before = {p: p.read_bytes() for p in paths}

    out = save_dicom_seg(labels, tmp_path / "seg.dcm", reference=ref,
                         label_names={2: "liver", 5: "spleen"})  # fmt: skip

    seg = _assert_seg_matches(out, ref, labels, [2, 5])
    assert dciodvfy_errors(out) == []
    assert [seg.get_segment_description(n).segment_label for n in (1, 2)] == ["liver", "spleen"]
    assert seg.StudyInstanceUID == ref.provenance.study_uid
    assert seg.FrameOfReferenceUID == ref.provenance.frame_of_reference_uid
    assert {p: p.read_bytes() for p in paths} == before  # sources untouched
    assert sorted(x.name for x in tmp_path.iterdir() if not x.name.startswith("img")) == ["seg.dcm"]


def test_wrong_grid_is_refused(tmp_path):
    """A reference whose j axis is flipped relative to the rows would misplace every pixel."""
    paths = _write_series(tmp_path)
    ref = _reference_from(paths)
    flipped = ref.affine.copy()
    flipped[:3, 1] *= -1
    with pytest.raises(MaskWriteError, match="does not match source frame 0"):
        save_dicom_seg(np.ones(ref.shape, np.uint8), tmp_path / "seg.dcm",
                       reference=ref.replace(affine=flipped))  # fmt: skip
    shuffled = ref.with_provenance(source_frames=ref.provenance.source_frames[::-1])
    with pytest.raises(MaskWriteError, match="does not match source frame"):
        save_dicom_seg(np.ones(ref.shape, np.uint8), tmp_path / "seg.dcm", reference=shuffled)
    assert not (tmp_path / "seg.dcm").exists()


def test_refusals(tmp_path):
    paths = _write_series(tmp_path)
    ref = _reference_from(paths)
    nifti_like = ref.with_provenance(format="nifti")
    with pytest.raises(MaskWriteError, match="NIfTI"):
        save_dicom_seg(np.zeros(ref.shape, np.uint8), tmp_path / "s.dcm", reference=nifti_like)
    with pytest.raises(MaskWriteError, match=r"\(10, 12, 5\)"):
        save_dicom_seg(np.zeros((10, 12, 5), np.uint8), tmp_path / "s.dcm", reference=ref)
    out = save_dicom_seg(np.ones(ref.shape, bool), tmp_path / "s.dcm", reference=ref)
    with pytest.raises(OutputExistsError):
        save_dicom_seg(np.ones(ref.shape, bool), out, reference=ref)
    save_dicom_seg(np.ones(ref.shape, bool), out, reference=ref, overwrite=True)
    paths[2].unlink()
    with pytest.raises(MaskWriteError, match="cannot read source"):
        save_dicom_seg(np.ones(ref.shape, bool), tmp_path / "t.dcm", reference=ref)


def test_empty_mask_and_named_absent_label(tmp_path):
    paths = _write_series(tmp_path)
    ref = _reference_from(paths)
    labels = np.zeros(ref.shape, np.uint8)
    out = save_dicom_seg(labels, tmp_path / "e.dcm", reference=ref, label_names=["tumour"])
    _assert_seg_matches(out, ref, labels, [1])


# -- real data ----------------------------------------------------------------------------------
@pytest.mark.shared_data
def test_seg_for_ct_siemens_j2k(tmp_path):
    """Acceptance: SEG for the JPEG 2000 CT series, mask from its labels.nii.gz (same grid)."""
    case = shared_path("dicom", "ct_siemens_j2k")
    ref = load_volume(case / "series")
    lab_img = nib.load(case / "labels.nii.gz")
    names = {int(k): v for k, v in json.loads((case / "labels.json").read_text()).items()}
    # labels.nii.gz is on the series grid, stored LAS; bring its axes into the reference's order
    xform = ornt_transform(
        axcodes2ornt(nib.aff2axcodes(lab_img.affine)), axcodes2ornt(ref.orientation)
    )
    lab_img = lab_img.as_reoriented(xform)
    np.testing.assert_allclose(lab_img.affine, ref.affine, atol=0.01)
    lab = np.asarray(lab_img.dataobj)
    organs = [v for v in sorted(names) if (lab == v).any()][:4]
    assert len(organs) >= 3
    labels = np.where(np.isin(lab, organs), lab, 0).astype(np.uint8)
    out = save_dicom_seg(labels, tmp_path / "seg.dcm", reference=ref,
                         label_names={v: names[v] for v in organs})  # fmt: skip
    seg = _assert_seg_matches(out, ref, labels, organs)
    assert dciodvfy_errors(out) == []
    assert [seg.get_segment_description(n).segment_label for n in range(1, len(organs) + 1)] == [
        names[v] for v in organs
    ]
    # pydicom view of the same file: one referenced source instance per stored frame
    ds = pydicom.dcmread(out)
    refs = {
        fr.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for fr in ds.PerFrameFunctionalGroupsSequence
    }
    assert refs <= {sf.sop_instance_uid for sf in ref.provenance.source_frames}


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "series",
    ["mr_t1_sagittal_siemens_gz/series", "mr_philips_classic_vs_enhanced/enhanced"],
)
def test_seg_for_gzip_and_multiframe_sources(tmp_path, series):
    """.dcm.gz sources are read in memory; enhanced multi-frame frames map by frame number."""
    ref = load_volume(shared_path("dicom", *series.split("/")))
    labels = _random_labels(ref.shape, seed=4)
    out = save_dicom_seg(labels, tmp_path / "seg.dcm", reference=ref)
    assert dciodvfy_errors(out) == []
    frames = ref.provenance.source_frames
    if frames[0].frame is None:
        _assert_seg_matches(out, ref, labels, [2, 5])
        return
    seg = hd.seg.segread(out)
    pixels = seg.get_pixels_by_source_frame(
        frames[0].sop_instance_uid, [sf.frame + 1 for sf in frames],
        assert_missing_frames_are_empty=True,
    )  # fmt: skip
    for number, value in enumerate([2, 5], start=1):
        for k in range(ref.shape[2]):
            np.testing.assert_array_equal(pixels[k, :, :, number - 1], (labels[:, :, k] == value).T)
