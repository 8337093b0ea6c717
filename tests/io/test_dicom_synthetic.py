"""The DICOM reader on small series written here with pydicom: known geometry, every refusal."""

from __future__ import annotations

import gzip
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from sam2_med.io import load_volume
from sam2_med.io._dicom_geometry import position_tolerance, slice_normal
from sam2_med.io.dicom import list_series, read_dicom
from sam2_med.io.errors import (
    CorruptFileError,
    GeometryError,
    NotAVolumeError,
    UnsupportedFormatError,
    UnsupportedImageError,
    VolumeReadError,
)

#: An oblique orientation: rows rotated 30 degrees about z then 20 degrees about x (LPS).
_A, _B = np.radians(30.0), np.radians(20.0)
_ROT = np.array([[1, 0, 0], [0, np.cos(_B), -np.sin(_B)], [0, np.sin(_B), np.cos(_B)]]) @ np.array(
    [[np.cos(_A), -np.sin(_A), 0], [np.sin(_A), np.cos(_A), 0], [0, 0, 1]]
)
OBLIQUE_IOP = np.concatenate([_ROT[:, 0], _ROT[:, 1]])


def voxel_value(k: int, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """Stored value of slice ``k`` (acquisition order), unique per voxel."""
    return (1000 * k + 10 * row + col).astype(np.int16)


def make_slice(
    k: int,
    *,
    rows: int = 6,
    cols: int = 8,
    iop: Sequence[float] = OBLIQUE_IOP,
    ipp: Sequence[float] = (0.0, 0.0, 0.0),
    spacing: Sequence[float] = (0.7, 0.9),
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    slope: float | None = 1.0,
    intercept: float | None = -1024.0,
    photometric: str = "MONOCHROME2",
) -> Dataset:
    """One CT slice as a Part 10 data set (explicit VR little endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.Modality = "CT"
    ds.SeriesDescription = "synthetic"
    ds.SeriesNumber = 7
    ds.InstanceNumber = k + 1
    ds.ImageOrientationPatient = [round(float(v), 10) for v in iop]
    ds.ImagePositionPatient = [round(float(v), 6) for v in ipp]
    ds.PixelSpacing = [float(v) for v in spacing]
    ds.SliceThickness = 99.0  # deliberately wrong: the step must come from positions
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.WindowCenter, ds.WindowWidth = [40, 400], [400, 2000]
    r, c = np.mgrid[0:rows, 0:cols]
    ds.PixelData = voxel_value(k, r, c).tobytes()
    return ds


def write_series(
    folder: Path,
    n: int = 5,
    *,
    step: float = 2.5,
    origin: Sequence[float] = (-12.0, 30.0, 7.5),
    iop: Sequence[float] = OBLIQUE_IOP,
    shuffle_seed: int | None = 0,
    positions: Sequence[Sequence[float]] | None = None,
    gz: bool = False,
    **kwargs,
) -> list[Path]:
    """Write ``n`` slices at ``origin + k * step * normal`` (file names in shuffled order)."""
    folder.mkdir(parents=True, exist_ok=True)
    if positions is None:
        normal = slice_normal(iop)
        positions = [np.asarray(origin) + k * step * normal for k in range(n)]
    names = [f"IM{i:03d}.dcm" for i in range(len(positions))]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(names)
    paths = []
    for k, (pos, name) in enumerate(zip(positions, names, strict=True)):
        ds = make_slice(k, iop=iop, ipp=pos, **kwargs)
        p = folder / name
        ds.save_as(p, enforce_file_format=True)
        if gz:
            gp = p.with_name(p.name + ".gz")
            gp.write_bytes(gzip.compress(p.read_bytes()))
            p.unlink()
            p = gp
        paths.append(p)
    return paths


def expected_ras(iop, origin, spacing, step, ijk) -> np.ndarray:
    """RAS mm of voxel (i=col, j=row, k) by the Image Plane equation (PS3.3 C.7.6.2.1.1)."""
    iop = np.asarray(iop, float)
    i, j, k = ijk
    lps = (
        np.asarray(origin, float)
        + i * spacing[1] * iop[:3]
        + j * spacing[0] * iop[3:]
        + k * step * slice_normal(iop)
    )
    return lps * [-1, -1, 1]


def test_oblique_shuffled_series_geometry_and_values(tmp_path: Path) -> None:
    origin, step, spacing = (-12.0, 30.0, 7.5), 2.5, (0.7, 0.9)
    write_series(tmp_path / "s", origin=origin, step=step, spacing=spacing)
    vol = load_volume(tmp_path / "s")
    assert vol.shape == (8, 6, 5)
    assert vol.dtype == np.int16  # exact integer rescale
    np.testing.assert_allclose(vol.spacing, (0.9, 0.7, 2.5), atol=1e-6)
    for ijk in [(0, 0, 0), (7, 0, 0), (0, 5, 0), (3, 2, 4), (7, 5, 4)]:
        np.testing.assert_allclose(
            vol.voxel_to_world(ijk),
            expected_ras(OBLIQUE_IOP, origin, spacing, step, ijk),
            atol=1e-5,
        )
        i, j, k = ijk
        assert vol.array[i, j, k] == voxel_value(k, np.array(j), np.array(i)) - 1024
    np.testing.assert_allclose(vol.lps_affine[:3, 3], origin, atol=1e-6)
    assert [f.path.endswith(".dcm") for f in vol.provenance.source_frames] == [True] * 5
    assert vol.window is not None and (vol.window.center, vol.window.width) == (40.0, 400.0)
    assert vol.provenance.extra["slice_step_mm"] == pytest.approx(2.5)
    assert vol.provenance.source_orientation == vol.orientation


def test_reversed_slice_order(tmp_path: Path) -> None:
    """Acquired against the normal: k still runs along the normal, from the lowest position."""
    origin, step, spacing = (5.0, -3.0, 40.0), -3.0, (0.7, 0.9)
    write_series(tmp_path / "s", origin=origin, step=step, spacing=spacing, shuffle_seed=3)
    vol = load_volume(tmp_path / "s")
    normal = slice_normal(OBLIQUE_IOP)
    lowest = np.asarray(origin) + 4 * step * normal  # acquisition slice 4
    np.testing.assert_allclose(vol.lps_affine[:3, 3], lowest, atol=1e-5)
    np.testing.assert_allclose(vol.lps_affine[:3, 2], normal * 3.0, atol=1e-6)
    # Array slice k holds acquisition slice 4 - k.
    for k in range(5):
        assert vol.array[2, 1, k] == voxel_value(4 - k, np.array(1), np.array(2)) - 1024
        ras = vol.voxel_to_world((2, 1, k))
        np.testing.assert_allclose(
            ras, expected_ras(OBLIQUE_IOP, origin, spacing, step, (2, 1, 4 - k)), atol=1e-5
        )
    sop = [f.sop_instance_uid for f in vol.provenance.source_frames]
    assert len(set(sop)) == 5


def test_gzip_and_list_input(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s", gz=True)
    before = {p: p.read_bytes() for p in paths}
    vol = read_dicom(list(reversed(paths)))
    assert vol.shape == (8, 6, 5)
    assert all(f.path.endswith(".dcm.gz") for f in vol.provenance.source_frames)
    assert sorted((tmp_path / "s").iterdir()) == sorted(paths)  # nothing written beside them
    assert all(p.read_bytes() == b for p, b in before.items())


def test_float_rescale_and_no_rescale(tmp_path: Path) -> None:
    write_series(tmp_path / "f", slope=0.5, intercept=0.25)
    vol = load_volume(tmp_path / "f")
    assert vol.dtype == np.float32
    assert vol.array[1, 2, 3] == pytest.approx(0.5 * (3000 + 20 + 1) + 0.25)
    write_series(tmp_path / "n", slope=None)
    raw = load_volume(tmp_path / "n")
    assert raw.dtype == np.int16 and raw.array[1, 2, 3] == 3021


def test_monochrome1_keeps_values_and_says_so(tmp_path: Path) -> None:
    write_series(tmp_path / "s", photometric="MONOCHROME1")
    vol = load_volume(tmp_path / "s")
    assert vol.array[1, 2, 3] == 3021 - 1024
    assert any("MONOCHROME1" in n for n in vol.provenance.notes)


def test_rgb_is_refused(tmp_path: Path) -> None:
    write_series(tmp_path / "s", photometric="RGB")
    with pytest.raises(UnsupportedImageError, match="RGB"):
        load_volume(tmp_path / "s")


def test_gantry_tilt_is_refused(tmp_path: Path) -> None:
    iop = [1, 0, 0, 0, 1, 0]
    positions = [(0.0, 0.2 * k, 2.0 * k) for k in range(5)]  # y drifts: ~5.7 degree shear
    write_series(tmp_path / "s", iop=iop, positions=positions)
    with pytest.raises(GeometryError, match="gantry tilt"):
        load_volume(tmp_path / "s")


def test_tiny_drift_within_tolerance_is_accepted(tmp_path: Path) -> None:
    iop = [1, 0, 0, 0, 1, 0]
    tol = position_tolerance(2.0)
    positions = [(0.0, 0.0, 2.0 * k + (0.4 * tol if k == 2 else 0.0)) for k in range(5)]
    write_series(tmp_path / "s", iop=iop, positions=positions)
    assert load_volume(tmp_path / "s").spacing[2] == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("zs", "words"),
    [
        ([0, 2, 4, 8, 10], "missing slices"),
        ([0, 2, 4, 5, 7], "uneven slice spacing"),
        ([0, 2, 4, 6.1, 8.1], "uneven slice spacing"),
    ],
)
def test_uneven_spacing_is_refused(tmp_path: Path, zs: list[float], words: str) -> None:
    write_series(tmp_path / "s", iop=[1, 0, 0, 0, 1, 0], positions=[(0, 0, z) for z in zs])
    with pytest.raises(GeometryError, match=words):
        load_volume(tmp_path / "s")


def test_mixed_orientation_size_spacing_are_refused(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "o", iop=[1, 0, 0, 0, 1, 0])
    make_slice(9, iop=[1, 0, 0, 0, 0, -1], ipp=(0, 0, 50)).save_as(paths[0])
    with pytest.raises(GeometryError, match="inconsistent orientation"):
        load_volume(tmp_path / "o")

    paths = write_series(tmp_path / "z", iop=[1, 0, 0, 0, 1, 0])
    make_slice(9, iop=[1, 0, 0, 0, 1, 0], ipp=(0, 0, 50), rows=7).save_as(paths[0])
    with pytest.raises(NotAVolumeError, match="different sizes"):
        load_volume(tmp_path / "z")

    paths = write_series(tmp_path / "p", iop=[1, 0, 0, 0, 1, 0])
    make_slice(9, iop=[1, 0, 0, 0, 1, 0], ipp=(0, 0, 50), spacing=(0.5, 0.5)).save_as(paths[0])
    with pytest.raises(NotAVolumeError, match="mixed PixelSpacing"):
        load_volume(tmp_path / "p")


def test_duplicate_positions_are_refused(tmp_path: Path) -> None:
    iop = [1, 0, 0, 0, 1, 0]
    write_series(tmp_path / "t", iop=iop, positions=[(0, 0, z) for z in (0, 0, 2, 2, 4, 4)])
    with pytest.raises(UnsupportedImageError, match="4D"):
        load_volume(tmp_path / "t")
    write_series(tmp_path / "d", iop=iop, positions=[(0, 0, z) for z in (0, 2, 2, 4)])
    with pytest.raises(NotAVolumeError, match="distinct slice positions"):
        load_volume(tmp_path / "d")


def test_single_slice_and_bad_orientation(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s", n=1)
    with pytest.raises(NotAVolumeError, match="single image"):
        load_volume(paths[0])
    write_series(tmp_path / "b", iop=[1, 0, 0, 1, 0, 0], positions=[(0, 0, z) for z in range(3)])
    with pytest.raises(GeometryError, match="orthogonal"):
        load_volume(tmp_path / "b")


def test_missing_geometry_is_refused(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s")
    ds = pydicom.dcmread(paths[0])
    del ds.ImagePositionPatient
    ds.save_as(paths[0])
    with pytest.raises(GeometryError, match="no ImagePositionPatient"):
        load_volume(tmp_path / "s")


def test_non_image_objects_are_set_aside(tmp_path: Path) -> None:
    write_series(tmp_path / "s")
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID
    sr.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.99"
    sr.Modality = "SR"
    sr.save_as(tmp_path / "s" / "report.dcm", enforce_file_format=True)
    infos = list_series(tmp_path / "s")
    assert [(i.modality, i.is_image) for i in infos] == [("CT", True), ("SR", False)]
    vol = load_volume(tmp_path / "s")
    assert vol.shape == (8, 6, 5)
    assert any("non-image" in n and "SR" in n for n in vol.provenance.notes)


def test_not_dicom_and_empty_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnsupportedFormatError, match="no DICOM files"):
        read_dicom(tmp_path / "empty")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"hello world" * 20)
    with pytest.raises(UnsupportedFormatError, match="not a DICOM file"):
        load_volume(junk)
    notdicom_gz = tmp_path / "text.dcm.gz"
    notdicom_gz.write_bytes(gzip.compress(b"x" * 400))
    with pytest.raises(UnsupportedFormatError, match="not a DICOM file"):
        load_volume(notdicom_gz)
    (gz,) = write_series(tmp_path / "g", n=1, gz=True)
    gz.write_bytes(gz.read_bytes()[:-300])
    with pytest.raises(CorruptFileError, match="gzip"):
        load_volume(gz)
    with pytest.raises(VolumeReadError, match="no such file"):
        read_dicom(tmp_path / "nope")
    with pytest.raises(VolumeReadError, match="empty list"):
        read_dicom([])


def test_truncated_file_in_a_series_is_an_error(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s")
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 40])
    with pytest.raises(CorruptFileError) as info:
        load_volume(tmp_path / "s")
    assert str(info.value).startswith(str(paths[2]))


def test_mixed_photometric_and_frame_of_reference_are_refused(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "m", iop=[1, 0, 0, 0, 1, 0])
    ds = pydicom.dcmread(paths[1])
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(paths[1])
    with pytest.raises(NotAVolumeError, match="mixed PhotometricInterpretation"):
        load_volume(tmp_path / "m")
    paths = write_series(tmp_path / "f", iop=[1, 0, 0, 0, 1, 0])
    ds = pydicom.dcmread(paths[1])
    ds.FrameOfReferenceUID = "1.2.3.4.5"
    ds.save_as(paths[1])
    with pytest.raises(GeometryError, match="FrameOfReferenceUID"):
        load_volume(tmp_path / "f")


def _item(**attrs) -> Dataset:
    item = Dataset()
    for key, value in attrs.items():
        setattr(item, key, value)
    return item


def test_enhanced_multiframe_shared_and_per_frame_groups(tmp_path: Path) -> None:
    """Orientation, spacing and rescale shared; positions per frame, stored out of order
    (PS3.3 C.7.6.16): frames come back sorted, with their frame index in the provenance."""
    base = make_slice(0, rows=6, cols=8, iop=[1, 0, 0, 0, 1, 0], slope=None)
    for kw in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
        delattr(base, kw)
    enhanced_mr = "1.2.840.10008.5.1.4.1.1.4.1"
    base.SOPClassUID = base.file_meta.MediaStorageSOPClassUID = enhanced_mr
    base.Modality = "MR"
    zs = [6.0, 0.0, 9.0, 3.0]  # frame f lies at z = zs[f]
    base.NumberOfFrames = len(zs)
    base.SharedFunctionalGroupsSequence = [
        _item(
            PlaneOrientationSequence=[_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])],
            PixelMeasuresSequence=[_item(PixelSpacing=[0.5, 0.25], SliceThickness=1.0)],
            PixelValueTransformationSequence=[
                _item(RescaleSlope=2.0, RescaleIntercept=1.0, RescaleType="US")
            ],
        )
    ]
    base.PerFrameFunctionalGroupsSequence = [
        _item(PlanePositionSequence=[_item(ImagePositionPatient=[10.0, 20.0, z])]) for z in zs
    ]
    r, c = np.mgrid[0:6, 0:8]
    base.PixelData = np.stack([voxel_value(f, r, c) for f in range(len(zs))]).tobytes()
    path = tmp_path / "enhanced.dcm"
    base.save_as(path, enforce_file_format=True)

    vol = load_volume(path)
    assert vol.shape == (8, 6, 4) and vol.modality == "MR"
    assert [f.frame for f in vol.provenance.source_frames] == [1, 3, 0, 2]
    np.testing.assert_allclose(vol.spacing, (0.25, 0.5, 3.0))
    np.testing.assert_allclose(vol.lps_affine[:3, 3], (10.0, 20.0, 0.0))
    # Slice k=1 is frame 3; value = 2 * stored + 1, an exact integer -> integer dtype.
    assert np.issubdtype(vol.dtype, np.integer)
    assert vol.array[5, 4, 1] == 2 * int(voxel_value(3, np.array(4), np.array(5))) + 1


def test_zero_rescale_slope_is_refused(tmp_path: Path) -> None:
    write_series(tmp_path / "s", slope=0.0, intercept=5.0)
    with pytest.raises(CorruptFileError, match="RescaleSlope is 0"):
        load_volume(tmp_path / "s")


def test_4d_series_needs_an_index(tmp_path: Path) -> None:
    """Three time points at four positions: index picks one; files shuffled on disk."""
    folder = tmp_path / "t"
    folder.mkdir()
    iop = [1, 0, 0, 0, 1, 0]
    names = [f"IM{n:02d}.dcm" for n in range(12)]
    random.Random(5).shuffle(names)
    for n, name in enumerate(names):
        t, z = divmod(n, 4)
        ds = make_slice(10 * t + z, iop=iop, ipp=(0.0, 0.0, 3.0 * z))
        ds.TemporalPositionIdentifier = t + 1
        ds.InstanceNumber = 100 - n  # deliberately not in time order
        ds.save_as(folder / name, enforce_file_format=True)
    with pytest.raises(UnsupportedImageError, match=r"3 images at each of 4 .*index=0\.\.2"):
        load_volume(folder)
    for t in range(3):
        vol = load_volume(folder, index=t)
        assert vol.shape == (8, 6, 4)
        assert vol.array[0, 0, 2] == voxel_value(10 * t + 2, np.array(0), np.array(0)) - 1024
        assert f"volume {t} of 3" in vol.provenance.notes[0]
    with pytest.raises(VolumeReadError, match="out of range"):
        load_volume(folder, index=3)
    write_series(tmp_path / "s")
    with pytest.raises(VolumeReadError, match="3D"):
        load_volume(tmp_path / "s", index=1)
    assert load_volume(tmp_path / "s", index=0).shape == (8, 6, 5)


def test_4d_volumes_that_would_mix_kinds_are_refused(tmp_path: Path) -> None:
    """Images at each position that do not sort into homogeneous volumes: refused, not mixed."""
    folder = tmp_path / "m"
    folder.mkdir()
    for z in range(3):
        for n, image_type in enumerate(("M", "P")):
            ds = make_slice(z, iop=[1, 0, 0, 0, 1, 0], ipp=(0.0, 0.0, 2.0 * z))
            ds.ImageType = ["ORIGINAL", "PRIMARY", image_type]
            # Instance numbers put the phase image first at the middle position only.
            ds.InstanceNumber = 10 * z + (1 - n if z == 1 else n)
            ds.save_as(folder / f"{z}{image_type}.dcm", enforce_file_format=True)
    with pytest.raises(UnsupportedImageError, match="cannot be matched"):
        load_volume(folder, index=0)


def test_damaged_dicom_named_file_in_a_folder_is_an_error(tmp_path: Path) -> None:
    """A .dcm.gz whose gzip header is damaged is not skipped as 'not DICOM' (the series would
    silently lose its end slice); an unnamed non-DICOM file beside the series is skipped."""
    paths = write_series(tmp_path / "s", gz=True, shuffle_seed=None)
    paths[-1].write_bytes(b"\x1f\x8b\x08" + b"\x00" * 5)
    (tmp_path / "s" / "README").write_text("acquisition notes")
    with pytest.raises(CorruptFileError) as info:
        load_volume(tmp_path / "s")
    assert str(info.value).startswith(str(paths[-1]))
    paths[-1].unlink()
    vol = load_volume(tmp_path / "s")
    assert vol.shape[2] == 4
    assert "skipped 1 non-DICOM file(s) (unrecognised content: README)" in vol.provenance.notes
