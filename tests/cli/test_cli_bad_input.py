"""Bad input that used to hang, pass silently or crash (issue 11, item 20): special files,
non-finite voxels, deeply nested JSON."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_path

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX named pipes")


@pytest.fixture
def no_hang():
    """A read blocked on a FIFO is interrupted after 20 s (the command then fails) instead of
    hanging the test run."""
    import signal

    def interrupt(signum, frame):
        raise TimeoutError("blocked reading a special file")

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_fifo_inputs_are_refused_not_read(cli, tmp_path, tiny_checkpoint, no_hang):
    mr = shared_path("volumes", "mr_abdomen_small", "image.nii.gz")
    fifo = tmp_path / "pipe.nii.gz"
    os.mkfifo(fifo)
    out = tmp_path / "m.nii.gz"
    code, _, err = cli("segment", fifo, "--point", "1,1,1", "--out", out)
    assert code == 2, err
    assert err.startswith(f"sam2-med: error: {fifo}: is a named pipe (FIFO)")
    ckpt, arch = tiny_checkpoint
    code, _, err = cli("segment", mr, "--mask-prompt", fifo, "--out", out, "--checkpoint", ckpt,
                       "--arch", arch)  # fmt: skip
    assert code == 2 and "named pipe" in err, err
    pipe_ckpt = tmp_path / "model.pt"
    os.mkfifo(pipe_ckpt)
    code, _, err = cli("segment", mr, "--point", "50,50,10", "--out", out, "--checkpoint",
                       pipe_ckpt)  # fmt: skip
    assert code == 2 and "named pipe" in err, err
    code, _, err = cli("info", fifo)
    assert code == 2 and "named pipe" in err, err
    assert not out.exists()


@pytest.fixture
def nan_image(tmp_path):
    data = np.random.default_rng(0).normal(100, 20, size=(40, 40, 12)).astype(np.float32)
    data[0:3, 0:4, :] = np.nan  # 144 NaN
    data[39, 39, 0:6] = np.inf  # 6 inf
    path = tmp_path / "nan.nii.gz"
    nib.Nifti1Image(data, np.diag([1.0, 1.0, 3.0, 1.0])).to_filename(path)
    return path


def test_non_finite_voxels_are_counted_and_reported(cli, tmp_path, nan_image, model_args):
    code, out, err = cli("info", nan_image)
    assert code == 0, err
    assert "150 non-finite voxels (144 NaN, 6 infinite)" in out
    code, out, err = cli(
        "segment", nan_image, "--point", "20,20,6", "--out", tmp_path / "m.nii.gz", *model_args
    )
    assert code == 0, err
    assert "sam2-med: warning: " in err and "150 non-finite voxels" in err
    side = json.loads((tmp_path / "m.json").read_text())
    assert any("150 non-finite voxels" in n for n in side["extra"]["sam2_med_run"]["image_notes"])


def test_a_point_on_a_nan_voxel_is_refused(cli, tmp_path, nan_image, model_args):
    code, _, err = cli(
        "segment", nan_image, "--point", "1,1,6", "--out", tmp_path / "m.nii.gz", *model_args
    )
    assert code == 2, err
    assert "(1, 1, 6)" in err and "NaN" in err
    assert not (tmp_path / "m.nii.gz").exists()


def test_deeply_nested_prompt_json_is_a_bad_input_error(cli, tmp_path, model_args):
    mr = shared_path("volumes", "mr_abdomen_small", "image.nii.gz")
    prompts = tmp_path / "deep.json"
    depth = 100_000
    prompts.write_text('{"space": "voxel", "objects": ' + "[" * depth + "]" * depth + "}")
    code, _, err = cli("segment", mr, "--prompts", prompts, "--out", tmp_path / "m.nii.gz",
                       *model_args)  # fmt: skip
    assert code == 2, err
    assert err.startswith(f"sam2-med: error: {prompts}: ") and "nested" in err
    assert "internal error" not in err
    arch = tmp_path / "arch.json"
    arch.write_text("[" * depth + "]" * depth)
    code, _, err = cli("segment", mr, "--point", "50,50,10", "--out", tmp_path / "m.nii.gz",
                       "--checkpoint", model_args[1], "--arch", arch)  # fmt: skip
    assert code == 2 and "nested" in err, err
