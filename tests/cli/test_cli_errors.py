"""Bad input anywhere: one line ``sam2-med: error: <path>: <problem>``, exit code 2, no traceback
(unless --debug). None of these needs a Session: inputs are checked before the model runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_path


@pytest.fixture
def mr():
    return shared_path("volumes", "mr_abdomen_small", "image.nii.gz")


def assert_one_line_error(code: int, err: str, starts: str, *contains: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"sam2-med: error: {starts}"), lines[0]
    for text in contains:
        assert text in lines[0], lines[0]
    assert "Traceback" not in err


def test_missing_image(cli, tmp_path, model_args):
    missing = tmp_path / "nope.nii.gz"
    code, _, err = cli(
        "segment", missing, "--point", "1,1,1", "--out", tmp_path / "o.nii.gz", *model_args
    )
    assert_one_line_error(code, err, f"{missing}: ", "no such file")


def test_corrupt_image(cli, tmp_path, model_args):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b garbage, not a gzip stream" * 10)
    code, _, err = cli(
        "segment", bad, "--point", "1,1,1", "--out", tmp_path / "o.nii.gz", *model_args
    )
    assert_one_line_error(code, err, f"{bad}: ")
    assert not (tmp_path / "o.nii.gz").exists()


def test_point_outside_the_image(cli, tmp_path, mr, model_args):
    code, _, err = cli(
        "segment", mr, "--point", "117,10,5", "--out", tmp_path / "o.nii.gz", *model_args
    )
    assert_one_line_error(
        code, err, f"{mr}: ", "--point (117, 10, 5) is outside the image", "0..116, 0..90, 0..19"
    )


def test_world_prompt_outside_the_image(cli, tmp_path, mr, model_args):
    p = tmp_path / "p.json"
    p.write_text(
        json.dumps({"space": "world_lps", "objects": [{"name": "x", "points": [[0, 0, 5000, 1]]}]})
    )
    code, _, err = cli("segment", mr, "--prompts", p, "--out", tmp_path / "o.nii.gz", *model_args)
    assert_one_line_error(code, err, f"{p}: ", "world_lps", "outside the image")


def test_bad_json(cli, tmp_path, mr, model_args):
    p = tmp_path / "p.json"
    p.write_text('{"space": "voxel", "objects": [{"points": [[1, 2, 3]],}]}')
    code, _, err = cli("segment", mr, "--prompts", p, "--out", tmp_path / "o.nii.gz", *model_args)
    assert_one_line_error(code, err, f"{p}: ", "invalid JSON at line 1 column")


def test_prompt_schema_error(cli, tmp_path, mr, model_args):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"objects": [{"points": [[1, 2, 3]]}]}))
    code, _, err = cli("segment", mr, "--prompts", p, "--out", tmp_path / "o.nii.gz", *model_args)
    assert_one_line_error(code, err, f"{p}: ", "missing 'space'")


def test_existing_output_without_overwrite(cli, tmp_path, mr, model_args):
    out = tmp_path / "o.nii.gz"
    out.write_bytes(b"precious")
    code, _, err = cli("segment", mr, "--point", "50,50,10", "--out", out, *model_args)
    assert_one_line_error(code, err, f"{out}: ", "--overwrite")
    assert out.read_bytes() == b"precious"


def test_mask_prompt_off_grid(cli, tmp_path, mr, model_args):
    m = tmp_path / "m.nii.gz"
    nib.Nifti1Image(np.ones((10, 10, 10), np.uint8), np.eye(4)).to_filename(m)
    code, _, err = cli(
        "segment", mr, "--mask-prompt", m, "--out", tmp_path / "o.nii.gz", *model_args
    )
    assert_one_line_error(code, err, f"{m}: ", "not on the image grid")


def test_dicom_seg_needs_a_dicom_image(cli, tmp_path, mr, model_args):
    code, _, err = cli(
        "segment",
        mr,
        "--point",
        "50,50,10",
        "--out",
        tmp_path / "o.nii.gz",
        "--dicom-seg",
        tmp_path / "o.dcm",
        *model_args,
    )
    assert_one_line_error(code, err, f"{mr}: ", "--dicom-seg needs a DICOM input image")


def test_no_prompts(cli, tmp_path, mr, model_args):
    code, _, err = cli("segment", mr, "--out", tmp_path / "o.nii.gz", *model_args)
    assert_one_line_error(code, err, f"{mr}: ", "no prompts")


def test_missing_checkpoint_and_bad_arch(cli, tmp_path, mr, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    code, _, err = cli(
        "segment",
        mr,
        "--point",
        "50,50,10",
        "--out",
        tmp_path / "o.nii.gz",
        "--checkpoint",
        tmp_path / "none.pt",
    )
    assert_one_line_error(code, err, f"{tmp_path / 'none.pt'}: ", "no such checkpoint")
    arch = tmp_path / "arch.json"
    arch.write_text("{not json")
    code, _, err = cli(
        "segment",
        mr,
        "--point",
        "50,50,10",
        "--out",
        tmp_path / "o.nii.gz",
        "--checkpoint",
        ckpt,
        "--arch",
        arch,
    )
    assert_one_line_error(code, err, f"{arch}: ", "invalid JSON")


def test_unknown_model(cli, tmp_path, mr):
    code, _, err = cli(
        "segment", mr, "--point", "50,50,10", "--out", tmp_path / "o.nii.gz", "--model", "sam9"
    )
    assert code == 2 and "sam9" in err and len(err.strip().splitlines()) == 1


def test_missing_weights_fails_fast_with_the_import_recipe(cli, tmp_path, mr):
    start = time.monotonic()
    code, _, err = cli("segment", mr, "--point", "50,50,10", "--out", tmp_path / "o.nii.gz")
    assert time.monotonic() - start < 30
    assert code == 2
    first, *recipe = err.strip().splitlines()  # the error, then a few lines saying what to do
    assert first.startswith("sam2-med: error: ") and "not in the cache" in first
    assert any(
        "sam2-med weights import sam2.1_hiera_tiny.pt --model sam2.1_hiera_tiny" in line
        for line in recipe
    )
    assert not (tmp_path / "o.nii.gz").exists()


def test_usage_errors_are_one_line(cli):
    code, _, err = cli("segment")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("sam2-med: error: ") and "--help" in err
    code, _, err = cli("segment", "x.nii.gz", "--out", "o.nii.gz", "--axis", "oblique")
    assert code == 2 and "invalid choice" in err
    code, _, err = cli("frobnicate")
    assert code == 2 and "invalid choice" in err


def test_evaluate_and_batch_input_errors(cli, tmp_path, model_args):
    image = shared_path("volumes", "ct_abdomen_small", "image.nii.gz")
    labels = shared_path("volumes", "ct_abdomen_small", "labels.nii.gz")
    code, _, err = cli(
        "evaluate", image, "--labels", labels, "--label", "pancreas_tail", *model_args
    )
    assert_one_line_error(code, err, f"{labels}: ", "unknown label 'pancreas_tail'")
    code, _, err = cli("evaluate", image, "--labels", labels, "--label", "12", *model_args)
    assert_one_line_error(code, err, f"{labels}: ", "label 12", "absent")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("image,output\na.nii.gz,b.nii.gz\n")
    code, _, err = cli("batch", jobs, *model_args)
    assert_one_line_error(code, err, f"{jobs}: ", "lacks column(s) ['prompts']")
    code, _, err = cli("batch", tmp_path / "none.yaml", *model_args)
    assert_one_line_error(code, err, f"{tmp_path / 'none.yaml'}: ", "file not found")


def test_debug_shows_the_traceback(cli, tmp_path):
    missing = tmp_path / "nope.nii.gz"
    code, _, err = cli("--debug", "info", missing)
    assert code == 2 and "Traceback" in err
    assert err.strip().splitlines()[-1].startswith(f"sam2-med: error: {missing}: ")
    code, _, err = cli("info", missing, "--debug")
    assert code == 2 and "Traceback" in err


def test_internal_error_is_exit_1_and_says_debug(cli, monkeypatch, tmp_path):
    import sam2_med.cli as cli_module

    def boom(args, out):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(cli_module, "cmd_info", boom)
    code, _, err = cli("info", tmp_path)
    assert code == 1 and "internal error: RuntimeError: unexpected" in err and "--debug" in err
    assert "Traceback" not in err


def test_subprocess_error_exit_code_and_stderr(tmp_path):
    missing = tmp_path / "nope.nii.gz"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sam2_med",
            "segment",
            str(missing),
            "--point",
            "1,1,1",
            "--out",
            str(tmp_path / "o.nii.gz"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == f"sam2-med: error: {missing}: no such file or folder\n"
