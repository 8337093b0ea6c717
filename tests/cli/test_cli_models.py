"""``--checkpoint`` and ``--arch`` on the command line, and what the sidecar records of the model
and the intensity window (issue 11, items 9 and 14).

Two registered test models share the tiny random model's shape at 128 and 256 px, as SAM 2.1
tiny (1024 px) and MedSAM2 (512 px) share one shape: ``--checkpoint FILE`` alone must not be
refused, must say in one command-line line which architecture it assumed, and ``--arch NAME``
must choose another.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from types import MappingProxyType

import pytest

from sam2_med.models import TINY_ARCH, WeightSource, get_spec, registry
from sam2_med.models.arch import complete_arch
from tests.conftest import shared_path


@pytest.fixture
def mr():
    return shared_path("volumes", "mr_abdomen_small", "image.nii.gz")


def _register(monkeypatch, name, size, sha, filename):
    spec = dataclasses.replace(
        get_spec("sam2.1_hiera_tiny"),
        name=name,
        image_size=size,
        arch=MappingProxyType(complete_arch({**TINY_ARCH, "image_size": size})),
        filename=filename,
        sources=(WeightSource(url=f"https://sam2-med.invalid/{filename}"),),
        sha256=sha,
        licence="test",
        licence_text="random weights for tests",
    )
    monkeypatch.setitem(registry._REGISTRY, name, spec)


@pytest.fixture
def shared_shape(monkeypatch):
    _register(monkeypatch, "test_tiny", 128, "0" * 64, "test_tiny.pt")
    _register(monkeypatch, "test_tiny_256", 256, None, "tiny_256_latest.pt")


def _run_record(out):
    side = json.loads(out.with_name(out.name.replace(".nii.gz", ".json")).read_text())
    return side["extra"]["sam2_med_run"]


def test_checkpoint_alone_of_a_shared_shape_runs_and_says_what_it_assumed(
    cli, tmp_path, mr, tiny_checkpoint, shared_shape
):
    ckpt, _ = tiny_checkpoint
    out = tmp_path / "m.nii.gz"
    code, _, err = cli("segment", mr, "--point", "50,50,10", "--out", out, "--checkpoint", ckpt)
    assert code == 0, err
    warning = [ln for ln in err.splitlines() if "assumed the architecture" in ln]
    assert len(warning) == 1, err
    (line,) = warning
    assert line.startswith("sam2-med: warning: ")
    assert "test_tiny (128 px)" in line and "--arch test_tiny_256" in line
    assert "arch=" not in line and "name=" not in line
    rec = _run_record(out)
    assert rec["model_image_size"] == 128
    assert rec["model_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert rec["model_arch"]["embed_dim"] == TINY_ARCH["embed_dim"]
    assert rec["model_arch_from"] == "assumed: test_tiny"


def test_arch_takes_a_registered_model_name(cli, tmp_path, mr, tiny_checkpoint, shared_shape):
    ckpt, _ = tiny_checkpoint
    out = tmp_path / "m.nii.gz"
    code, _, err = cli(
        "segment",
        mr,
        "--point",
        "50,50,10",
        "--out",
        out,
        "--checkpoint",
        ckpt,
        "--arch",
        "test_tiny_256",
    )
    assert code == 0, err
    assert "assumed" not in err
    assert _run_record(out)["model_image_size"] == 256


def test_unknown_arch_value_names_both_forms(cli, tmp_path, mr, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    code, _, err = cli(
        "segment",
        mr,
        "--point",
        "50,50,10",
        "--out",
        tmp_path / "m.nii.gz",
        "--checkpoint",
        ckpt,
        "--arch",
        "sam9_tiny",
    )
    assert code == 2
    assert "--arch sam9_tiny" in err and "sam2.1_hiera_tiny" in err and "JSON" in err


def test_published_file_is_recognised_by_checksum(cli, tmp_path, mr, tiny_checkpoint, monkeypatch):
    ckpt, _ = tiny_checkpoint
    _register(monkeypatch, "test_tiny", 128, hashlib.sha256(ckpt.read_bytes()).hexdigest(), "t.pt")
    out = tmp_path / "m.nii.gz"
    code, stdout, err = cli(
        "segment", mr, "--point", "50,50,10", "--out", out, "--checkpoint", ckpt
    )
    assert code == 0, err
    assert "warning" not in err
    assert "model: test_tiny" in stdout and "published checkpoint" in stdout
    rec = _run_record(out)
    assert rec["model"] == "test_tiny" and rec["model_published"] == "test_tiny"


def test_sidecar_records_the_applied_window(cli, tmp_path, mr, model_args):
    out = tmp_path / "m.nii.gz"
    code, _, err = cli("segment", mr, "--point", "50,50,10", "--out", out, *model_args)
    assert code == 0, err
    window = _run_record(out)["window"]
    assert window["requested"] == "auto"
    assert window["kind"] == "percentile"  # MR: auto means the 0.5-99.5 percentiles
    assert window["low"] < window["high"]
    assert "auto" not in window["applied"]
    ct = shared_path("volumes", "ct_abdomen_small", "image.nii.gz")
    out = tmp_path / "ct.nii.gz"
    code, _, err = cli(
        "segment", ct, "--point", "60,50,15", "--out", out, "--window", "-600,1500", *model_args
    )
    assert code == 0, err
    window = _run_record(out)["window"]
    assert (window["center"], window["width"]) == (-600.0, 1500.0)
