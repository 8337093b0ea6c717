"""``--protocol`` on the command line (issue 16): MedSAM2's published CT protocol on request,
said in the messages and recorded in the sidecar; a replay keeps the recorded protocol."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest


@pytest.fixture
def ct(tmp_path):
    """A small RAS-stored CT (the layout in which MedSAM2 and sam2-med's display differ)."""
    rng = np.random.default_rng(0)
    arr = rng.normal(0.0, 30.0, (40, 36, 10)).astype(np.int16)
    arr[10:30, 8:28, 2:8] += 200
    img = nib.Nifti1Image(arr, np.diag([0.8, 0.8, 2.5, 1.0]))
    img.header["descrip"] = b"CT"
    path = tmp_path / "ct.nii.gz"
    nib.save(img, path)
    return path


def test_segment_with_the_medsam2_protocol(cli, ct, tmp_path, model_args) -> None:
    out = tmp_path / "m.nii.gz"
    code, stdout, err = cli(
        "segment", ct, "--box", "12,10,5,26,24,5", "--window", "50,450",
        "--protocol", "medsam2", "--out", out, *model_args,
    )  # fmt: skip
    assert code == 0, err
    said = stdout + err
    assert "protocol: medsam2 (MedSAM2's published CT script" in said, said
    assert "sitk slice layout" in said
    run = json.loads((tmp_path / "m.json").read_text())["extra"]["sam2_med_run"]
    assert (run["protocol"], run["slice_layout"]) == ("medsam2", "sitk")
    assert run["protocol_uint8"]["clip"] == [-175.0, 275.0]
    assert run["interactions"]["session"]["protocol"] == "medsam2"

    # a replay keeps the recorded protocol: the same mask without --protocol, refused with
    # another, and the advice names the flag, not a Python argument
    again = tmp_path / "again.nii.gz"
    code, _, err = cli("segment", ct, "--prompts", tmp_path / "m.json", "--out", again, *model_args)
    assert code == 0, err
    np.testing.assert_array_equal(
        np.asarray(nib.load(again).dataobj), np.asarray(nib.load(out).dataobj)
    )
    code, _, err = cli(
        "segment", ct, "--prompts", tmp_path / "m.json", "--protocol", "sam2",
        "--out", tmp_path / "x.nii.gz", *model_args,
    )  # fmt: skip
    assert code == 2
    assert err.startswith(f"sam2-med: error: {tmp_path / 'm.json'}: "), err
    assert "medsam2 protocol; drop --protocol sam2" in err and "protocol=" not in err


def test_the_default_protocol_is_the_models_and_a_bad_one_is_refused(
    cli, ct, tmp_path, model_args
) -> None:
    out = tmp_path / "m.nii.gz"
    code, stdout, err = cli("segment", ct, "--point", "20,18,5", "--out", out, *model_args)
    assert code == 0, err
    assert "protocol: sam2 (" in stdout + err and "radiological slice layout" in stdout + err
    run = json.loads((tmp_path / "m.json").read_text())["extra"]["sam2_med_run"]
    assert (run["protocol"], run["slice_layout"]) == ("sam2", "radiological")
    code, _, err = cli("segment", ct, "--point", "20,18,5", "--protocol", "meta",
                       "--out", tmp_path / "y.nii.gz", *model_args)  # fmt: skip
    assert code == 2 and "--protocol: invalid choice: 'meta'" in err
