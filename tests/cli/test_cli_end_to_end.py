"""End to end: ``sam2-med`` with a random-weight checkpoint in Meta's format on the shared data.

The weights are random, so the masks mean nothing *except* on a prompted slice: a mask prompt
is passed through as SAM 2's output on its own slice, so that slice must come back exactly.
That, the output grid, and MONAI's view of image and mask are what these tests check.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import ROOT, shared_path

MONAI_KEYS = ["image", "label"]


def _monai_ras(image, label, *, reader=None):
    """Image and label as MONAI's LoadImaged + EnsureChannelFirstd + Orientationd(RAS) give them."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

    load = LoadImaged(keys=MONAI_KEYS, reader=reader) if reader else LoadImaged(keys=MONAI_KEYS)
    t = Compose(
        [load, EnsureChannelFirstd(keys=MONAI_KEYS), Orientationd(keys=MONAI_KEYS, axcodes="RAS")]
    )
    d = t({"image": str(image), "label": str(label)})
    return d["image"], d["label"]


def _single_plane(mask: np.ndarray) -> tuple[int, int]:
    """(axis, index) of the one plane holding every nonzero voxel of ``mask``."""
    for axis in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if idx.size == 1:
            return axis, int(idx[0])
    raise AssertionError("the prompt is not confined to one plane")


def _assert_monai_aligned(image, mask_file, prompt_file, value, *, reader=None):
    """MONAI puts the mask on the image's RAS grid, and the prompted plane of the mask equals
    the prompt after the same reorientation."""
    img_r, mask_r = _monai_ras(image, mask_file, reader=reader)
    _, prompt_r = _monai_ras(image, prompt_file, reader=reader)
    assert img_r.shape == mask_r.shape == prompt_r.shape
    np.testing.assert_allclose(np.asarray(img_r.affine), np.asarray(mask_r.affine), atol=1e-3)
    np.testing.assert_allclose(np.asarray(img_r.affine), np.asarray(prompt_r.affine), atol=1e-3)
    p = np.asarray(prompt_r[0]) == value
    m = np.asarray(mask_r[0]) == value
    axis, index = _single_plane(p)
    assert p.sum() > 100
    np.testing.assert_array_equal(np.take(m, index, axis=axis), np.take(p, index, axis=axis))


# ------------------------------------------------------------------------------ segment
def test_segment_mr_lps_mask_prompt_in_process(cli, tmp_path, model_args):
    image = shared_path("volumes", "mr_abdomen_small", "image.nii.gz")
    labels_img = nib.load(shared_path("volumes", "mr_abdomen_small", "labels.nii.gz"))
    labels = np.asarray(labels_img.dataobj)
    k = 12
    prompt = np.zeros(labels.shape, np.uint8)
    prompt[:, :, k][labels[:, :, k] == 5] = 5  # liver on one axial slice
    prompt_file = tmp_path / "liver_k12.nii.gz"
    nib.Nifti1Image(prompt, labels_img.affine, labels_img.header).to_filename(prompt_file)
    (tmp_path / "liver_k12.json").write_text(json.dumps({"5": "liver"}))
    out = tmp_path / "masks" / "mr_liver.nii.gz"  # the folder is created

    code, stdout, err = cli(
        "segment", image, "--mask-prompt", prompt_file, "--out", out, *model_args
    )
    assert code == 0, err
    assert f"wrote {out}" in stdout and "liver" in stdout

    src, got = nib.load(image), nib.load(out)
    assert got.shape == src.shape
    np.testing.assert_array_equal(got.affine, src.affine)
    assert got.header.get_sform(coded=True)[1] == src.header.get_sform(coded=True)[1]
    arr = np.asarray(got.dataobj)
    assert arr.dtype == np.uint8 and set(np.unique(arr)) <= {0, 5}
    np.testing.assert_array_equal(arr[:, :, k] == 5, prompt[:, :, k] == 5)  # the oracle
    side = json.loads((tmp_path / "masks" / "mr_liver.json").read_text())
    assert side["label_names"] == {"5": "liver"}
    run = side["extra"]["sam2_med_run"]
    assert run["status"] == "complete" and run["axis"] == "axial"
    assert run["prompts"]["objects"][0]["mask_slices"] == [k]
    assert len(run["scores"]["5"]) == src.shape[2]
    assert run["inputs"]["image"] == str(image) and run["inputs"]["mask_prompt"] == str(prompt_file)
    _assert_monai_aligned(image, out, prompt_file, 5)


def test_segment_dicom_ct_subprocess_with_dicom_seg(tmp_path, tiny_checkpoint):
    """A real ``sam2-med`` process on a JPEG 2000 DICOM series; the prompt comes from a label map
    stored LAS (the series is LPS), which is re-indexed exactly onto the series grid."""
    import pydicom

    from sam2_med.io import load_volume

    series = shared_path("dicom", "ct_siemens_j2k", "series")
    labels_img = nib.load(shared_path("dicom", "ct_siemens_j2k", "labels.nii.gz"))
    labels = np.asarray(labels_img.dataobj)
    k = 8
    prompt = np.zeros(labels.shape, np.uint8)
    prompt[:, :, k][labels[:, :, k] == 1] = 1  # spleen on one slice
    prompt_file = tmp_path / "spleen.nii.gz"
    nib.Nifti1Image(prompt, labels_img.affine).to_filename(prompt_file)
    ckpt, arch = tiny_checkpoint
    out, seg = tmp_path / "ct_mask.nii.gz", tmp_path / "ct_seg.dcm"
    exe = Path(sys.executable).with_name("sam2-med")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sam2_med"]
    env = {**os.environ, "SAM2_MED_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            *cmd,
            "segment",
            str(series),
            "--mask-prompt",
            str(prompt_file),
            "--out",
            str(out),
            "--dicom-seg",
            str(seg),
            "--checkpoint",
            str(ckpt),
            "--arch",
            str(arch),
            "--window",
            "abdomen",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    volume = load_volume(series)
    got = nib.load(out)
    assert got.shape == volume.shape == (512, 512, 20)
    np.testing.assert_allclose(got.affine, volume.affine, atol=1e-4)
    arr = np.asarray(got.dataobj)
    # the label map is LAS, the series LPS: j runs the other way
    expected = np.flip(prompt, axis=1)[:, :, k] == 1
    np.testing.assert_array_equal(arr[:, :, k] == 1, expected)
    ds = pydicom.dcmread(seg)
    assert ds.Modality == "SEG"
    _assert_monai_aligned(series, out, prompt_file, 1, reader="PydicomReader")


def test_segment_points_boxes_world_coordinates(cli, tmp_path, model_args):
    image = shared_path("volumes", "mr_abdomen_small", "image.nii.gz")
    vol_affine = nib.load(image).affine
    lps = (np.diag([-1, -1, 1, 1]) @ vol_affine @ np.array([40, 50, 10, 1.0]))[:3]
    prompts = tmp_path / "p.json"
    prompts.write_text(
        json.dumps(
            {
                "space": "world_lps",
                "objects": [{"name": "blob", "label": 3, "points": [[*lps.tolist(), 1]]}],
            }
        )
    )
    out = tmp_path / "m.nii.gz"
    code, _, err = cli(
        "segment",
        image,
        "--prompts",
        prompts,
        "--point",
        "60,40,10",
        "--point",
        "20,20,10:neg",
        "--box",
        "30,30,10,70,60,10",
        "--name",
        "box",
        "--out",
        out,
        "--quiet",
        *model_args,
    )
    assert code == 0, err
    run = json.loads((tmp_path / "m.json").read_text())["extra"]["sam2_med_run"]
    assert run["model_licence"].startswith("unknown: a custom checkpoint")  # --checkpoint
    objs = {o["label"]: o for o in run["prompts"]["objects"]}
    assert objs[3]["points"] == [[40, 50, 10]]  # the world point's voxel
    assert objs[1]["points"] == [[60, 40, 10], [20, 20, 10]]
    assert objs[1]["point_labels"] == [1, 0] and objs[1]["boxes"] == [[30, 30, 10, 70, 60, 10]]
    # rerun without --overwrite refuses; with it, replaces
    code, _, err = cli("segment", image, "--point", "60,40,10", "--out", out, *model_args)
    assert code == 2 and "--overwrite" in err
    code, _, err = cli(
        "segment", image, "--point", "60,40,10", "--out", out, "--overwrite", "-q", *model_args
    )
    assert code == 0, err


def test_api_segment_on_a_path(tmp_path, tiny_checkpoint):
    from sam2_med.api import segment

    ckpt, arch = tiny_checkpoint
    image = shared_path("volumes", "mr_abdomen_small", "image.nii.gz")
    seen = []
    result = segment(
        image,
        {"space": "voxel", "objects": [{"name": "x", "boxes": [[30, 30, 5, 70, 60, 5]]}]},
        checkpoint=ckpt,
        arch=arch,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert result.labels.array.shape == (117, 91, 20) and result.axis_index == 2
    assert result.scores[1].shape == (20,) and np.isfinite(result.scores[1]).all()
    assert seen and seen[-1][0] == seen[-1][1]
    assert not result.cancelled and result.model == "custom"


# -------------------------------------------------------------------------------- batch
def _mr_jobs(tmp_path: Path) -> Path:
    image = shared_path("volumes", "mr_abdomen_small", "image.nii.gz")
    (tmp_path / "in").mkdir()
    rows = ["name,image,prompts,output"]
    for n in range(5):
        img = tmp_path / "in" / f"case{n}.nii.gz"
        if n == 3:
            img.write_bytes(os.urandom(2048))  # a corrupt input
        else:
            img.write_bytes(image.read_bytes())
        p = tmp_path / "in" / f"case{n}.json"
        p.write_text(
            json.dumps(
                {
                    "space": "voxel",
                    "objects": [{"name": "liver", "label": 1, "points": [[40 + n, 45, 10, 1]]}],
                }
            )
        )
        rows.append(f"case{n},in/case{n}.nii.gz,in/case{n}.json,out/case{n}.nii.gz")
    jobs = tmp_path / "jobs.csv"  # out/ does not exist yet: batch creates it
    jobs.write_text("\n".join(rows) + "\n")
    return jobs


@pytest.fixture(scope="module")
def mr_batch(tmp_path_factory, tiny_checkpoint):
    """One ``sam2-med batch`` run over five jobs (one corrupt input), shared by the tests below:
    (folder, jobs file, datalist, exit code, stdout)."""
    import contextlib
    import io

    from sam2_med.cli import main

    tmp_path = tmp_path_factory.mktemp("batch")
    jobs = _mr_jobs(tmp_path)
    datalist = tmp_path / "out" / "datalist.json"
    ckpt, arch = tiny_checkpoint
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(
            [
                "batch",
                str(jobs),
                "--datalist",
                str(datalist),
                "--checkpoint",
                str(ckpt),
                "--arch",
                str(arch),
            ]
        )
    return tmp_path, jobs, datalist, code, out.getvalue()


def test_batch_one_corrupt_input_then_resume(cli, mr_batch, model_args):
    tmp_path, jobs, datalist, code, out = mr_batch
    assert code == 1, out
    outputs = sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz"))
    assert outputs == ["case0.nii.gz", "case1.nii.gz", "case2.nii.gz", "case4.nii.gz"]
    failed = [line for line in out.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and f"{tmp_path / 'in' / 'case3.nii.gz'}: " in failed[0]
    assert "5 jobs: 4 done, 0 skipped (already finished), 1 failed" in out
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("case*")}

    code, out, _ = cli("batch", jobs, "--datalist", datalist, *model_args)
    assert code == 1
    assert len(re.findall(r"case[0124]: skipped \(finished", out)) == 4
    assert "5 jobs: 0 done, 4 skipped (already finished), 1 failed" in out
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # not recomputed

    from monai.data import load_decathlon_datalist

    items = load_decathlon_datalist(str(datalist), True, "training")
    assert [Path(i["label"]).name for i in items] == outputs
    for item in items:
        img, lab = nib.load(item["image"]), nib.load(item["label"])
        assert img.shape == lab.shape
        np.testing.assert_array_equal(img.affine, lab.affine)


def test_monai_doc_snippet_runs(mr_batch):
    """The training-dataset block of docs/monai.md, on a datalist written by ``sam2-med batch``."""
    datalist = mr_batch[2]
    text = (ROOT / "docs" / "monai.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    snippet = next(b for b in blocks if "load_decathlon_datalist" in b)
    snippet = re.sub(r'^datalist = ".*"', f"datalist = {str(datalist)!r}", snippet, flags=re.M)
    code = compile(snippet, "docs/monai.md", "exec")
    printed = []
    exec(code, {"print": lambda *a: printed.append(a)})
    assert len(printed) == 4  # the four finished cases went through the transforms
    for name, shape, _labels in printed:
        assert name.endswith(".nii.gz") and shape[:2] == (1, 1)


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_three_organs_prints_the_table(cli, tmp_path, model_args):
    image = shared_path("volumes", "ct_abdomen_small", "image.nii.gz")
    labels = shared_path("volumes", "ct_abdomen_small", "labels.nii.gz")
    table_csv = tmp_path / "res.csv"
    code, out, err = cli(
        "evaluate",
        image,
        "--labels",
        labels,
        "--label",
        "spleen",
        "--label",
        "kidney_right",
        "--label",
        "5",
        "--prompt-mode",
        "box",
        "--nsd-tol",
        "3",
        "--out-csv",
        table_csv,
        *model_args,
    )
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("case  "))
    assert header.split() == [
        "case",
        "structure",
        "label",
        "prompt",
        "slice",
        "dice",
        "nsd@3mm",
        "hd95_mm",
    ]
    for name in ("spleen", "kidney_right", "liver"):
        assert re.search(
            rf"^ct_abdomen_small\s+{name}\s+\d+\s+box\s+\d+\s+[\d.]+\s+[\d.]+", out, flags=re.M
        ), out
    assert "mean of 3" in out
    rows = list(csv.DictReader(table_csv.open()))
    assert [r["name"] for r in rows] == ["spleen", "kidney_right", "liver"]
    # the protocol's prompt slice: where each organ is largest along the axial axis
    gt = np.asarray(nib.load(labels).dataobj)
    for r in rows:
        area = (gt == int(r["label"])).sum(axis=(0, 1))
        assert int(r["prompt_slice"]) == int(np.argmax(area))
        assert 0.0 <= float(r["dice"]) <= 1.0 and 0.0 <= float(r["nsd"]) <= 1.0
        assert int(r["gt_voxels"]) == int((gt == int(r["label"])).sum())


def test_evaluate_mask_mode_includes_the_exact_prompt_slice(cli, tmp_path, model_args):
    """With a mask prompt the prompt slice is reproduced exactly, which bounds Dice from below:
    Dice >= 2 |slice| / (|pred| + |gt|)."""
    image = shared_path("volumes", "ct_abdomen_small", "image.nii.gz")
    labels = shared_path("volumes", "ct_abdomen_small", "labels.nii.gz")
    res = tmp_path / "r.csv"
    code, _, err = cli(
        "evaluate",
        image,
        "--labels",
        labels,
        "--label",
        "liver",
        "--prompt-mode",
        "mask",
        "--prompt-slice",
        "middle",
        "--out-csv",
        res,
        "-q",
        *model_args,
    )
    assert code == 0, err
    (row,) = csv.DictReader(res.open())
    gt = np.asarray(nib.load(labels).dataobj) == 5
    k = int(row["prompt_slice"])
    ks = np.flatnonzero(gt.any(axis=(0, 1)))
    assert k == (ks[0] + ks[-1]) // 2
    bound = 2 * gt[:, :, k].sum() / (int(row["pred_voxels"]) + int(row["gt_voxels"]))
    assert float(row["dice"]) >= bound - 1e-6


# ------------------------------------------------------------------ phantom (README command)
@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from sam2_med.phantom import write_phantom

    return write_phantom(tmp_path_factory.mktemp("phantom"))


def test_readme_command_without_weights_fails_fast(cli, tmp_path, phantom):
    """The command for real scans (the default model, SAM 2.1) with no cached weights: an error
    line and a few lines saying how to import a checkpoint, exit code 2, within seconds, nothing
    written."""
    import time

    prompts = tmp_path / "phantom_prompts.json"
    from sam2_med.phantom import BODY_CENTER_RAS

    liver_centre = np.add(BODY_CENTER_RAS, [17.0, 4.0, 8.0]).tolist()  # phantom.py table
    prompts.write_text(
        json.dumps(
            {"space": "world_ras", "objects": [{"name": "liver", "points": [[*liver_centre, 1]]}]}
        )
    )
    out = tmp_path / "out" / "phantom_mask.nii.gz"
    out.parent.mkdir()
    start = time.monotonic()
    code, _, err = cli("segment", phantom["image"], "--prompts", prompts, "--out", out)
    assert time.monotonic() - start < 30
    assert code == 2
    first, *recipe = err.strip().splitlines()
    assert first.startswith("sam2-med: error: ")
    assert "sam2-med weights import sam2.1_hiera_tiny.pt --model sam2.1_hiera_tiny" in "\n".join(
        recipe
    )
    assert not out.exists()


def test_oblique_phantom_nifti_and_dicom_give_the_same_mask_grid(
    cli, tmp_path, phantom, model_args
):
    """The oblique phantom as NIfTI and as a DICOM series: the mask-prompted slice comes back
    exactly in both, and both masks sit on their image's grid."""
    from sam2_med.io import load_volume

    labels_img = nib.load(phantom["labels"])
    labels = np.asarray(labels_img.dataobj)
    vol = load_volume(phantom["image"])
    from sam2_med import geometry

    axis = geometry.slice_axis(vol.affine, "axial")
    area = (labels == 1).sum(axis=tuple(a for a in range(3) if a != axis))
    k = int(np.argmax(area))
    index = [slice(None)] * 3
    index[axis] = k
    prompt = np.zeros(labels.shape, np.uint8)
    prompt[tuple(index)] = (labels[tuple(index)] == 1).astype(np.uint8)
    prompt_file = tmp_path / "liver.nii.gz"
    nib.Nifti1Image(prompt, labels_img.affine).to_filename(prompt_file)
    for name, image in (("nifti", phantom["image"]), ("dicom", phantom["dicom"])):
        out = tmp_path / f"{name}.nii.gz"
        code, _, err = cli(
            "segment", image, "--mask-prompt", prompt_file, "--out", out, "-q", *model_args
        )
        assert code == 0, err
        ref = load_volume(image)
        got = nib.load(out)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got.affine, ref.affine, atol=1e-3)
        np.testing.assert_allclose(ref.affine, vol.affine, atol=1e-3)  # one grid for both
        arr = np.asarray(got.dataobj)
        np.testing.assert_array_equal(arr[tuple(index)] == 1, prompt[tuple(index)] == 1)


# ------------------------------------------------------------------- evaluate, many cases
def test_evaluate_cases_file_continues_past_a_broken_case(cli, tmp_path, model_args):
    image = shared_path("volumes", "ct_abdomen_small", "image.nii.gz")
    labels = shared_path("volumes", "ct_abdomen_small", "labels.nii.gz")
    mr_labels = shared_path("volumes", "mr_abdomen_small", "labels.nii.gz")
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        f"cases:\n  - {{name: a, image: {image}, labels: {labels}}}\n"
        f"  - {{name: wrong_grid, image: {image}, labels: {mr_labels}}}\n"
        f"  - {{name: b, image: {image}, labels: {labels}}}\n"
    )
    code, out, err = cli(
        "evaluate",
        "--cases",
        cases,
        "--label",
        "1",
        "--label",
        "5",
        "--prompt-mode",
        "point",
        *model_args,
    )
    assert code == 1
    assert f"case wrong_grid FAILED: {mr_labels}: mask is not on the image grid" in err
    assert re.search(r"^ALL\s+mean of 4", out, flags=re.M)
    assert len(re.findall(r"^[ab]\s+\S+\s+[15]\s+point", out, flags=re.M)) == 4
    assert "1 of 3 case(s) failed" in out


# ------------------------------------------------------------------------ progress bar
def test_progress_bar_on_a_terminal_only(monkeypatch, tmp_path, model_args):
    import io

    from sam2_med.cli import main

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    image = shared_path("volumes", "mr_abdomen_small", "image.nii.gz")
    for quiet, expect in (([], True), (["-q"], False)):
        term = Terminal()
        monkeypatch.setattr(sys, "stderr", term)
        code = main(
            [
                "segment",
                str(image),
                "--point",
                "50,50,10",
                "--out",
                str(tmp_path / "m.nii.gz"),
                "--overwrite",
                *quiet,
                *model_args,
            ]
        )
        monkeypatch.undo()
        assert code == 0
        assert ("propagating" in term.getvalue()) is expect
