"""Fixtures for the command-line tests: a random-weight checkpoint in Meta's format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sam2_med.cli import main


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint.pt, arch.json): a random tiny SAM 2.1-like model saved as Meta saves one.

    The weights are random (masks mean nothing); they go through the real loading path.
    """
    from sam2_med.models import TINY_ARCH, random_model, save_meta_checkpoint, tiny_config

    folder = tmp_path_factory.mktemp("ckpt")
    ckpt = save_meta_checkpoint(random_model(tiny_config(), seed=0), folder / "tiny.pt")
    arch = folder / "arch.json"
    arch.write_text(json.dumps(TINY_ARCH))
    return ckpt, arch


@pytest.fixture
def model_args(tiny_checkpoint) -> list[str]:
    ckpt, arch = tiny_checkpoint
    return ["--checkpoint", str(ckpt), "--arch", str(arch)]


@pytest.fixture(autouse=True)
def _no_network_no_user_cache(monkeypatch, tmp_path_factory):
    """Never download weights and never touch the user's cache from a test."""
    monkeypatch.setenv("SAM2_MED_OFFLINE", "1")
    monkeypatch.setenv("SAM2_MED_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def cli(capsys):
    """Run ``sam2-med`` in-process: returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
