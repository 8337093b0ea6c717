"""save_mask refusals, dtype choice, sidecar contents and atomic, all-or-nothing output."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

import sam2_med
from sam2_med import Provenance, SourceFrame, Volume
from sam2_med.io import MaskWriteError, OutputExistsError, save_mask
from sam2_med.io import writers as writers_mod
from sam2_med.labels import LabelVolume

SHAPE = (6, 7, 5)


@pytest.fixture
def ref() -> Volume:
    affine = np.diag([0.8, -0.8, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 30.0]
    return Volume(np.zeros(SHAPE, np.int16), affine, modality="CT")


def _labels(seed=0, hi=4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, hi, size=SHAPE).astype(np.int64)


def _listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


def test_writes_uint8_with_identity_scaling_and_label_intent(ref, tmp_path):
    out = save_mask(_labels(), tmp_path / "m.nii.gz", reference=ref)
    assert out == tmp_path / "m.nii.gz"
    img = nib.load(out)
    hdr = img.header
    assert img.get_data_dtype() == np.uint8
    assert hdr.get_slope_inter() == (None, None)  # NaN-unset: readers do not rescale
    assert hdr.get_intent()[0] == "label"
    assert hdr.get_xyzt_units()[0] == "mm"
    assert np.asarray(img.dataobj).dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(img.dataobj), _labels())


def test_uint16_promotion_when_a_label_exceeds_255(ref, tmp_path):
    labels = _labels()
    labels[0, 0, 0] = 256
    labels[1, 0, 0] = 65535
    img = nib.load(save_mask(labels, tmp_path / "m.nii", reference=ref))
    assert img.get_data_dtype() == np.uint16
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)


def test_bool_mask_becomes_label_one(ref, tmp_path):
    mask = _labels() > 1
    img = nib.load(save_mask(mask, tmp_path / "m.nii.gz", reference=ref))
    np.testing.assert_array_equal(np.asarray(img.dataobj), mask.astype(np.uint8))


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.full(SHAPE, -1), "must be >= 0"),
        (np.full(SHAPE, 65536), "<= 65535"),
        (np.full(SHAPE, 1.0), "must be integers"),
    ],
)
def test_refuses_bad_label_values(ref, tmp_path, labels, match):
    with pytest.raises(MaskWriteError, match=match):
        save_mask(labels, tmp_path / "m.nii.gz", reference=ref)
    assert _listing(tmp_path) == []


def test_shape_mismatch_names_both_shapes(ref, tmp_path):
    with pytest.raises(MaskWriteError) as info:
        save_mask(np.zeros((7, 6, 5), np.uint8), tmp_path / "m.nii.gz", reference=ref)
    assert "(7, 6, 5)" in str(info.value) and str(SHAPE) in str(info.value)
    assert str(tmp_path / "m.nii.gz") in str(info.value)


@pytest.mark.parametrize("name", ["m.nrrd", "m.nii.bz2", "m", "m.dcm"])
def test_refuses_non_nifti_suffix(ref, tmp_path, name):
    with pytest.raises(MaskWriteError, match="NIfTI"):
        save_mask(_labels(), tmp_path / name, reference=ref)


def test_refuses_missing_folder(ref, tmp_path):
    with pytest.raises(MaskWriteError, match="folder does not exist"):
        save_mask(_labels(), tmp_path / "no" / "m.nii.gz", reference=ref)


def test_refuses_non_volume_reference(tmp_path):
    with pytest.raises(MaskWriteError, match="reference must be"):
        save_mask(_labels(), tmp_path / "m.nii.gz", reference=np.eye(4))


def test_overwrite_refused_then_allowed(ref, tmp_path):
    out = tmp_path / "m.nii.gz"
    save_mask(_labels(0), out, reference=ref)
    before = out.read_bytes()
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        save_mask(_labels(1), out, reference=ref)
    assert out.read_bytes() == before
    save_mask(_labels(1), out, reference=ref, overwrite=True)
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), _labels(1))
    assert _listing(tmp_path) == ["m.json", "m.nii.gz"]


def test_an_existing_sidecar_alone_blocks_the_write(ref, tmp_path):
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(MaskWriteError, match="not a sam2-med sidecar"):
        save_mask(_labels(), tmp_path / "m.nii.gz", reference=ref)
    assert _listing(tmp_path) == ["m.json"]


def test_never_overwrites_the_reference_file(tmp_path):
    src = tmp_path / "image.nii.gz"
    nib.Nifti1Image(np.zeros(SHAPE, np.int16), np.eye(4)).to_filename(src)
    before = src.read_bytes()
    volume = sam2_med.io.load_volume(src)
    with pytest.raises(MaskWriteError, match="reference image was read from"):
        save_mask(_labels(), src, reference=volume, overwrite=True)
    assert src.read_bytes() == before


def test_no_temporary_files_left_after_success(ref, tmp_path):
    save_mask(_labels(), tmp_path / "a.nii.gz", reference=ref)
    save_mask(_labels(), tmp_path / "a.nii.gz", reference=ref, overwrite=True)
    assert _listing(tmp_path) == ["a.json", "a.nii.gz"]


def test_failure_while_encoding_leaves_nothing(ref, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(writers_mod, "_nifti_bytes", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_mask(_labels(), tmp_path / "m.nii.gz", reference=ref)
    assert _listing(tmp_path) == []


def test_failure_mid_write_leaves_no_partial_output(ref, tmp_path, monkeypatch):
    """The second file's write fails after the first temp file is complete: nothing published."""
    real_fsync = os.fsync
    calls = []

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(MaskWriteError, match="No space left"):
        save_mask(_labels(), tmp_path / "m.nii.gz", reference=ref)
    assert _listing(tmp_path) == []


def test_failed_overwrite_keeps_the_old_files(ref, tmp_path, monkeypatch):
    out = tmp_path / "m.nii.gz"
    save_mask(_labels(0), out, reference=ref)
    old = out.read_bytes(), (tmp_path / "m.json").read_bytes()

    def failing_replace(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(MaskWriteError):
        save_mask(_labels(1), out, reference=ref, overwrite=True)
    assert (out.read_bytes(), (tmp_path / "m.json").read_bytes()) == old
    assert _listing(tmp_path) == ["m.json", "m.nii.gz"]


def test_sidecar_contents(tmp_path):
    prov = Provenance(
        format="dicom",
        paths=("/data/a.dcm", "/data/b.dcm"),
        series_uid="1.2.3.4",
        study_uid="1.2.3",
        frame_of_reference_uid="1.2.3.9",
        source_orientation="LPS",
        source_frames=(SourceFrame("/data/a.dcm", "1.2.3.4.1"),),
    )
    ref = Volume(np.zeros(SHAPE, np.int16), np.diag([-0.7, -0.7, 3.0, 1.0]), modality="CT",
                 provenance=prov)  # fmt: skip
    labels = np.zeros(SHAPE, np.uint8)
    labels[0, 0, :] = 3
    labels[1, :, 0] = 7
    out = save_mask(labels, tmp_path / "liver.nii.gz", reference=ref,
                    label_names={3: "liver", "7": "spleen", 9: "kidney"})  # fmt: skip
    meta = json.loads((tmp_path / "liver.json").read_text())
    assert meta["sam2_med_version"] == sam2_med.__version__
    assert meta["created_utc"].endswith("+00:00")
    assert meta["mask"]["file"] == out.name and meta["mask"]["dtype"] == "uint8"
    assert meta["label_names"] == {"3": "liver", "7": "spleen", "9": "kidney"}
    by_value = {entry["value"]: entry for entry in meta["labels"]}
    assert by_value[3]["voxels"] == 5 and by_value[7]["voxels"] == 7
    assert by_value[9]["voxels"] == 0
    r = meta["reference"]
    assert r["format"] == "dicom" and r["series_instance_uid"] == "1.2.3.4"
    assert r["paths"] == ["/data/a.dcm", "/data/b.dcm"]
    assert r["orientation"] == "LPS" and r["modality"] == "CT"
    np.testing.assert_allclose(r["affine_ras"], ref.affine)
    # DICOM-derived reference: scanner-anatomical codes, as dcm2niix writes them
    hdr = nib.load(out).header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (1, 1)


def test_label_volume_input_and_sequence_names(ref, tmp_path):
    lv = LabelVolume(_labels().astype(np.uint8), ref, names={1: "a", 2: "b"}, extra={"score": 0.9})
    save_mask(lv, tmp_path / "lv.nii.gz", reference=ref)
    meta = json.loads((tmp_path / "lv.json").read_text())
    assert meta["label_names"] == {"1": "a", "2": "b", "3": "label_3"}
    assert meta["extra"] == {"score": 0.9}
    save_mask(lv, tmp_path / "lv2.nii.gz", reference=ref, label_names=["x", "y", "z"])
    meta = json.loads((tmp_path / "lv2.json").read_text())
    assert meta["label_names"] == {"1": "x", "2": "y", "3": "z"}


def test_label_volume_from_another_grid_is_refused(ref, tmp_path):
    other = ref.replace(affine=np.diag([1.0, 1.0, 1.0, 1.0]))
    lv = LabelVolume(_labels().astype(np.uint8), other)
    with pytest.raises(MaskWriteError, match="different image grid"):
        save_mask(lv, tmp_path / "m.nii.gz", reference=ref)


def test_nifti_reference_whose_affine_was_replaced_uses_the_affine(tmp_path):
    """The Volume's affine is the truth; stale header fields from the source are not reused."""
    src = tmp_path / "image.nii.gz"
    nib.Nifti1Image(np.zeros(SHAPE, np.int16), np.diag([2.0, 2.0, 2.0, 1.0])).to_filename(src)
    moved = sam2_med.io.load_volume(src).replace(affine=np.diag([3.0, 3.0, 3.0, 1.0]))
    out = save_mask(_labels(), tmp_path / "m.nii.gz", reference=moved)
    np.testing.assert_array_equal(nib.load(out).affine, moved.affine)


def test_nifti2_reference_gets_a_nifti2_mask_with_identical_float64_geometry(tmp_path):
    affine = np.array(
        [[0.0, 0.0, 1.1, -12.123456789012], [-0.9, 0.0, 0.0, 33.000000001],
         [0.0, 1.3, 0.0, 7.77777777777], [0, 0, 0, 1]]
    )  # fmt: skip
    src = tmp_path / "img.nii"
    nib.Nifti2Image(np.zeros(SHAPE, np.int16), affine).to_filename(src)
    ref = sam2_med.io.load_volume(src)
    out = save_mask(_labels(), tmp_path / "m.nii.gz", reference=ref)
    img = nib.load(out)
    assert isinstance(img, nib.Nifti2Image)
    np.testing.assert_array_equal(img.affine, ref.affine)
    np.testing.assert_array_equal(img.header.get_sform(), nib.load(src).header.get_sform())


def test_reference_without_transforms_keeps_codes_zero(tmp_path):
    """qform_code = sform_code = 0 (pixdim only): each reader must see the mask as it sees the
    image, so the codes are copied rather than 'upgraded' to a transform the image lacks."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(SHAPE)
    hdr.set_zooms((1.5, 2.0, 2.5))
    hdr.set_qform(None, code=0)
    hdr.set_sform(None, code=0)
    src = tmp_path / "img.nii"
    nib.Nifti1Image(np.zeros(SHAPE, np.int16), None, hdr).to_filename(src)
    ref = sam2_med.io.load_volume(src)
    img = nib.load(save_mask(_labels(), tmp_path / "m.nii.gz", reference=ref))
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (0, 0)
    np.testing.assert_array_equal(img.affine, nib.load(src).affine)
    np.testing.assert_array_equal(img.header["pixdim"][1:4], [1.5, 2.0, 2.5])
