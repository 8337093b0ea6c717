"""``sam2-med measure``, ``segment --rtstruct/--report`` and ``batch --measurements``.

The phantom's exact labels are measured through the command line and compared with the API;
segmentation runs use a random-weight model, so only the plumbing (files, references,
sidecars, rows) is checked, never the masks' quality.
"""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pydicom
import pytest

from sam2_med.io import load_volume
from sam2_med.labels import LabelVolume
from sam2_med.measure import measure
from sam2_med.phantom import PHANTOM_LABELS, make_phantom, write_phantom


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp("phantom"))


def test_measure_prints_table_and_writes_csv_json(cli, phantom, tmp_path):
    csv_out, json_out = tmp_path / "m.csv", tmp_path / "m.json"
    code, out, err = cli(
        "measure", phantom["labels"], "--image", phantom["image"], "--csv", csv_out,
        "--json", json_out,
    )  # fmt: skip
    assert code == 0, err
    assert "volume mL" in out and "liver" in out and "spleen" in out
    labels = LabelVolume(
        np.asarray(nib.load(phantom["labels"]).dataobj),
        load_volume(phantom["image"]),
        dict(PHANTOM_LABELS),
    )
    expected = measure(labels)
    with open(csv_out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == list(PHANTOM_LABELS.values())
    for row, m in zip(rows, expected, strict=True):
        assert float(row["volume_ml"]) == pytest.approx(m.volume_ml, abs=1e-4)
        assert float(row["recist_long_mm"]) == pytest.approx(m.recist.long_mm, abs=0.01)
        assert row["intensity_units"] == "HU"
    doc = json.loads(json_out.read_text())
    assert doc["image"]["modality"] == "CT" and "definitions" in doc
    assert doc["structures"][0]["recist"]["perpendicularity_tolerance_deg"] == 0.0
    # the mask's sidecar already carries the same measurements (written by save_mask)
    side = json.loads(phantom["label_names"].read_text())
    assert side["measurements"]["structures"][0]["voxel_count"] == expected[0].voxel_count
    # --label by name and by value, in that order
    code, out, _ = cli("measure", phantom["labels"], "--image", phantom["image"],
                       "--label", "spleen", "--label", "1")  # fmt: skip
    assert code == 0
    body = [line.split()[1] for line in out.splitlines()[2:]]
    assert body == ["spleen", "liver"]


def test_measure_dicom_rtstruct_and_report(cli, phantom, tmp_path):
    rt, rep = tmp_path / "rs.dcm", tmp_path / "report"
    code, _, err = cli(
        "measure", phantom["labels"], "--image", phantom["dicom"], "--rtstruct", rt,
        "--report", rep, "--label", "liver",
    )  # fmt: skip
    assert code == 0, err
    ds = pydicom.dcmread(rt)
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["liver"]
    assert (rep / "report.html").is_file() and (rep / "001_liver.png").is_file()
    html = (rep / "report.html").read_text()
    assert "001_liver.png" in html and "long" in html
    # a second run refuses to overwrite, then replaces with --overwrite
    code, _, err = cli("measure", phantom["labels"], "--image", phantom["dicom"],
                       "--rtstruct", rt)  # fmt: skip
    assert code == 2 and "--overwrite" in err
    code, _, err = cli("measure", phantom["labels"], "--image", phantom["dicom"],
                       "--report", rep, "--overwrite")  # fmt: skip
    assert code == 0, err
    assert (rep / "006_vertebra.png").is_file()


def _one_error_line(err: str, path) -> str:
    (line,) = err.strip().splitlines()
    assert line.startswith(f"sam2-med: error: {path}: "), line
    return line


def test_measure_bad_input_one_line_each(cli, phantom, tmp_path):
    img = nib.load(phantom["labels"])
    arr = np.asarray(img.dataobj)
    coarse = tmp_path / "coarse.nii.gz"
    nib.Nifti1Image(arr[::2, ::2], img.affine @ np.diag([2.0, 2.0, 1.0, 1.0])).to_filename(coarse)
    empty = tmp_path / "empty.nii.gz"
    nib.Nifti1Image(np.zeros_like(arr), img.affine).to_filename(empty)

    code, _, err = cli("measure", coarse, "--image", phantom["image"])
    assert code == 2 and "not on the image grid" in _one_error_line(err, coarse)
    code, _, err = cli("measure", empty, "--image", phantom["image"])
    assert code == 2 and "no labelled voxels" in _one_error_line(err, empty)
    code, _, err = cli("measure", phantom["labels"], "--image", phantom["image"], "--label", "9")
    assert code == 2 and "label 9 has no voxels" in _one_error_line(err, phantom["labels"])
    code, _, err = cli("measure", phantom["labels"], "--image", phantom["image"],
                       "--rtstruct", tmp_path / "x.dcm")  # fmt: skip
    line = _one_error_line(err, phantom["image"])
    assert code == 2 and "--rtstruct needs a DICOM image (this one is nifti)" in line
    assert not (tmp_path / "x.dcm").exists()


def _small_phantom(folder):
    """A coarse phantom NIfTI (fast to segment) and a mask prompt of the liver's largest slice."""
    from sam2_med.io import save_mask
    from sam2_med.phantom import _write_nifti_image

    folder.mkdir(parents=True, exist_ok=True)
    volume, labels = make_phantom(shape=(40, 36, 12), spacing=(2.5, 2.4, 8.0), orientation="LPS")
    image = folder / "ct.nii.gz"
    _write_nifti_image(volume, image)
    (folder / "ct.json").write_text(json.dumps({"Modality": "CT"}))
    prompt = np.zeros(volume.shape, np.uint8)
    k = int(np.argmax((labels.array == 1).sum(axis=(0, 1))))
    prompt[:, :, k] = labels.array[:, :, k] == 1
    save_mask(prompt, folder / "prompt.nii.gz", reference=volume, label_names={1: "liver"})
    return image, folder / "prompt.nii.gz"


def test_segment_writes_sidecar_measurements_report_and_refuses_rtstruct_for_nifti(
    cli, tmp_path, model_args
):
    image, prompt = _small_phantom(tmp_path / "in")
    out = tmp_path / "mask.nii.gz"
    code, _, err = cli("segment", image, "--mask-prompt", prompt, "--out", out,
                       "--rtstruct", tmp_path / "rs.dcm", *model_args)  # fmt: skip
    assert code == 2 and "--rtstruct needs a DICOM image" in _one_error_line(err, image)
    assert not out.exists()

    code, stdout, err = cli("segment", image, "--mask-prompt", prompt, "--out", out,
                            "--report", tmp_path / "rep", *model_args)  # fmt: skip
    assert code == 0, err
    assert "volume mL" in stdout
    side = json.loads((tmp_path / "mask.json").read_text())
    [liver] = side["measurements"]["structures"]
    assert liver["name"] == "liver" and liver["recist"]["long_mm"] > 0
    arr = np.asarray(nib.load(out).dataobj)
    assert liver["voxel_count"] == int((arr == 1).sum())
    assert (tmp_path / "rep" / "report.html").is_file()
    assert (tmp_path / "rep" / "001_liver.png").is_file()


def test_segment_dicom_with_rtstruct(cli, phantom, tmp_path, model_args):
    from sam2_med.io import save_mask
    from sam2_med.prompts import mask_to_image_grid

    vol = load_volume(phantom["dicom"])
    on_grid = mask_to_image_grid(load_volume(phantom["labels"]), vol, where="labels")
    k = int(np.argmax((on_grid == 2).sum(axis=(0, 1))))
    prompt = np.zeros(vol.shape, np.uint8)
    prompt[:, :, k] = np.where(on_grid[:, :, k] == 2, 2, 0)
    save_mask(prompt, tmp_path / "p.nii.gz", reference=vol, label_names={2: "spleen"})
    rt = tmp_path / "rs.dcm"
    code, _, err = cli("segment", phantom["dicom"], "--mask-prompt", tmp_path / "p.nii.gz",
                       "--out", tmp_path / "m.nii.gz", "--rtstruct", rt, "-q",
                       *model_args)  # fmt: skip
    assert code == 0, err
    ds = pydicom.dcmread(rt)
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["spleen"]
    uids = {sf.sop_instance_uid for sf in vol.provenance.source_frames}
    refs = {
        c.ContourImageSequence[0].ReferencedSOPInstanceUID
        for c in ds.ROIContourSequence[0].ContourSequence
    }
    assert refs and refs <= uids


def test_batch_measurements_one_row_per_case_and_structure(cli, tmp_path, model_args):
    _small_phantom(tmp_path / "in")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(
        "name,image,prompts,output\n"
        "a,in/ct.nii.gz,in/prompt.nii.gz,out/a.nii.gz\n"
        "b,in/ct.nii.gz,in/prompt.nii.gz,out/b.nii.gz\n"
    )
    table = tmp_path / "measurements.csv"
    code, out, err = cli("batch", jobs, "--measurements", table, *model_args)
    assert code == 0, err
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["case"], r["name"]) for r in rows] == [("a", "liver"), ("b", "liver")]
    assert float(rows[0]["volume_ml"]) > 0 and rows[0]["recist_long_mm"]
    # a resumed run (jobs skipped) rewrites the same rows from the sidecars
    code, out, err = cli("batch", jobs, "--measurements", table, *model_args)
    assert code == 0 and "2 skipped" in out
    with open(table, newline="") as fh:
        assert list(csv.DictReader(fh)) == rows
