"""Which architecture a checkpoint file gets (issue 11, item 9).

A published file is recognised by its SHA-256 whatever it is called; an unknown file of a shape
several registered models share (SAM 2.1 tiny at 1024 px, MedSAM2 at 512 px) loads with an
assumed architecture and one warning saying which and how to choose another; ``arch=`` takes a
registered model name. A small registry of test entries reproduces the ambiguity with the tiny
random model; one test builds the real SAM 2.1-tiny shape.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from pathlib import Path
from types import MappingProxyType

import pytest

from sam2_med.errors import Sam2MedWarning
from sam2_med.models import (
    TINY_ARCH,
    ChecksumError,
    WeightSource,
    get_spec,
    load_model,
    random_model,
    registry,
    save_meta_checkpoint,
    tiny_config,
)
from sam2_med.models.arch import complete_arch


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("identify")
    return save_meta_checkpoint(random_model(tiny_config(), seed=3), folder / "tiny_128.pt")


def _register(monkeypatch, name: str, size: int, sha: str | None, filename: str) -> None:
    spec = dataclasses.replace(
        get_spec("sam2.1_hiera_tiny"),
        name=name,
        image_size=size,
        arch=MappingProxyType(complete_arch({**TINY_ARCH, "image_size": size})),
        filename=filename,
        sources=(WeightSource(url=f"https://sam2-med.invalid/{filename}"),),
        sha256=sha,
    )
    monkeypatch.setitem(registry._REGISTRY, name, spec)


@pytest.fixture
def two_sizes(monkeypatch, tiny_file) -> None:
    """Two registered models with the tiny test architecture: 128 px (published digest: some
    other file) and 256 px (no published digest, file name tiny_256_latest.pt)."""
    _register(monkeypatch, "test_tiny", 128, "0" * 64, "test_tiny.pt")
    _register(monkeypatch, "test_tiny_256", 256, None, "tiny_256_latest.pt")


def test_unknown_file_of_a_shared_shape_loads_with_one_warning(tiny_file, two_sizes):
    with pytest.warns(Sam2MedWarning) as record:
        lm = load_model(checkpoint=tiny_file)
    assert len(record) == 1
    w = record[0].message
    assert lm.image_size == 128 and lm.name == "custom"
    assert lm.arch_from == "assumed: test_tiny" and lm.published is None
    assert lm.sha256 == _sha(tiny_file) and lm.arch["image_size"] == 128
    assert "assumed the architecture of test_tiny (128 px)" in str(w)
    assert "test_tiny_256 (256 px)" in str(w)
    assert "arch='test_tiny_256'" in str(w)
    assert "--arch test_tiny_256" in w.cli and "arch=" not in w.cli
    assert "\n" not in w.cli


def test_arch_accepts_a_registered_name(tiny_file, two_sizes):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lm = load_model(checkpoint=tiny_file, arch="test_tiny_256")
    assert lm.image_size == 256 and lm.arch_from == "arch='test_tiny_256'"


def test_file_name_of_a_registered_model_picks_its_architecture(tiny_file, two_sizes, tmp_path):
    named = tmp_path / "tiny_256_latest.pt"
    named.write_bytes(tiny_file.read_bytes())
    with pytest.warns(Sam2MedWarning, match=r"test_tiny_256 \(by its file name\) \(256 px\)"):
        lm = load_model(checkpoint=named)
    assert lm.image_size == 256


def test_published_file_is_recognised_by_checksum_under_any_name(tiny_file, monkeypatch, tmp_path):
    _register(monkeypatch, "test_tiny", 128, _sha(tiny_file), "test_tiny.pt")
    _register(monkeypatch, "test_tiny_256", 256, None, "tiny_256_latest.pt")
    renamed = tmp_path / "downloaded (1).pt"
    renamed.write_bytes(tiny_file.read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lm = load_model(checkpoint=renamed)
    assert lm.name == "test_tiny" and lm.published == "test_tiny" and lm.image_size == 128
    assert lm.licence == get_spec("test_tiny").licence_text


def test_fine_tune_under_a_published_name_says_how_to_load_it(tiny_file, two_sizes):
    with pytest.raises(ChecksumError) as info:
        load_model("test_tiny", checkpoint=tiny_file)
    assert "arch='test_tiny'" in str(info.value)
    assert "--arch test_tiny" in info.value.cli_lines()[0]


@pytest.mark.slow
def test_real_sam21_tiny_shape_is_not_refused(tmp_path):
    """A file with the true SAM 2.1 Hiera-tiny shape (Meta's and MedSAM2's): a fine-tune loads
    as SAM 2.1 tiny with the warning naming medsam2; named MedSAM2_latest.pt it is medsam2;
    with Meta's digest it is sam2.1_hiera_tiny, silently."""
    from sam2_med.models.arch import arch_to_config

    spec = get_spec("sam2.1_hiera_tiny")
    model = random_model(arch_to_config(spec.arch_dict()), seed=0)
    ckpt = save_meta_checkpoint(model, tmp_path / "finetune.pt")
    del model
    with pytest.warns(Sam2MedWarning, match="medsam2 \\(512 px\\)"):
        lm = load_model(checkpoint=ckpt)
    assert lm.image_size == 1024 and lm.arch_from == "assumed: sam2.1_hiera_tiny"
    med = ckpt.rename(tmp_path / "MedSAM2_latest.pt")
    with pytest.warns(Sam2MedWarning, match="by its file name"):
        lm = load_model(checkpoint=med)
    assert lm.image_size == 512
    sha = _sha(med)
    monkey = pytest.MonkeyPatch()
    try:
        monkey.setitem(
            registry._REGISTRY, spec.name, dataclasses.replace(spec, sha256=sha)
        )  # pretend this is Meta's published file
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            lm = load_model(checkpoint=med)
        assert lm.name == "sam2.1_hiera_tiny" and lm.image_size == 1024
    finally:
        monkey.undo()
