"""What ``sam2-med segment`` writes: checked before the model loads, never over an input or a file
the user did not name, as one unit, with the umask's permissions, and quietly with ``-q``
(issue 11, items 11, 17, 18, 19 and 21)."""

from __future__ import annotations

import json
import os
import shutil
import stat

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import dciodvfy_errors, shared_path


@pytest.fixture
def mr():
    return shared_path("volumes", "mr_abdomen_small", "image.nii.gz")


@pytest.fixture
def no_model(monkeypatch):
    """Fail loudly if the command gets as far as loading the model."""
    import sam2_med.cli as cli_module

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr(cli_module, "_load_model", refuse)


def _assert_refused(code, err, path, *words):
    assert code == 2, err
    assert err.startswith(f"sam2-med: error: {path}: "), err
    for w in words:
        assert w in err, err


# ------------------------------------------------------------------------------- item 18
def test_sidecar_never_replaces_the_prompt_file(cli, tmp_path, mr, no_model):
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"space": "voxel", "objects": [{"points": [[50, 50, 10, 1]]}]}))
    before = prompts.read_bytes()
    code, _, err = cli("segment", mr, "--prompts", prompts, "--out", tmp_path / "p.nii.gz",
                       "--overwrite", "--checkpoint", "x.pt")  # fmt: skip
    _assert_refused(code, err, prompts, "refusing")
    assert prompts.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["p.json"]


def test_sidecar_never_replaces_the_dcm2niix_sidecar_of_the_image(cli, tmp_path, no_model):
    image = tmp_path / "ct.nii.gz"
    shutil.copy(shared_path("volumes", "ct_abdomen_small", "image.nii.gz"), image)
    side = tmp_path / "ct.json"
    side.write_text(json.dumps({"Modality": "CT", "ConversionSoftware": "dcm2niix"}))
    before = side.read_bytes()
    code, _, err = cli("segment", image, "--point", "60,50,15", "--out", tmp_path / "ct.nii",
                       "--overwrite", "--checkpoint", "x.pt")  # fmt: skip
    _assert_refused(code, err, side, "refusing")
    assert side.read_bytes() == before


# ------------------------------------------------------------------------------- item 19
def test_output_equal_to_the_input_is_refused_before_the_model_loads(cli, tmp_path, mr, no_model):
    image = tmp_path / "mr.nii.gz"
    shutil.copy(mr, image)
    before = image.read_bytes()
    code, _, err = cli("segment", image, "--point", "50,50,10", "--out", image, "--overwrite",
                       "--checkpoint", "x.pt")  # fmt: skip
    _assert_refused(code, err, image, "refusing to overwrite")
    assert image.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["mr.nii.gz"]


def test_dicom_seg_onto_a_source_file_is_refused_before_the_model_loads(cli, tmp_path, no_model):
    series = tmp_path / "series"
    shutil.copytree(shared_path("dicom", "ct_head_ge"), series)
    source = sorted(p for p in series.rglob("*") if p.is_file())[3]
    before = source.read_bytes()
    out = tmp_path / "m.nii.gz"
    code, _, err = cli("segment", series, "--point", "30,30,40", "--out", out,
                       "--dicom-seg", source, "--overwrite", "--checkpoint", "x.pt")  # fmt: skip
    assert code == 2, err
    assert f"{source}: refusing to overwrite" in err
    assert source.read_bytes() == before
    assert not out.exists()


# --------------------------------------------------------------- items 11, 17 and 21
def test_outputs_written_together_with_umask_modes_and_quiet(
    cli, tmp_path, model_args, monkeypatch
):
    from sam2_med.io import _atomic

    calls = []
    real = _atomic.write_files_atomically

    def spy(contents, **kwargs):
        calls.append(sorted(p.name for p in contents))
        return real(contents, **kwargs)

    monkeypatch.setattr(_atomic, "write_files_atomically", spy)
    series = shared_path("dicom", "ct_head_ge")
    out, seg = tmp_path / "m.nii.gz", tmp_path / "m_seg.dcm"
    old = os.umask(0o002)
    try:
        code, _, err = cli("segment", series, "--point", "30,30,40", "--out", out,
                           "--dicom-seg", seg, "-q", *model_args)  # fmt: skip
    finally:
        os.umask(old)
    assert code == 0, err
    assert err == ""  # -q: no highdicom/pydicom warnings either
    assert calls == [["m.json", "m.nii.gz", "m_seg.dcm"]]  # one unit
    for p in (out, tmp_path / "m.json", seg):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o664, p
    assert np.asarray(nib.load(out).dataobj).shape == (64, 64, 93)
    assert dciodvfy_errors(seg) == []
