"""Loading weights: registry, cache, import, checksums, untrusted files, formats, devices."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import time
from pathlib import Path
from types import MappingProxyType

import pytest
import torch

from sam2_med.errors import Sam2MedError
from sam2_med.models import (
    TINY_ARCH,
    CheckpointError,
    ChecksumError,
    DeviceUnavailableError,
    UnknownModelError,
    WeightsNotFoundError,
    WeightSource,
    cached_weights,
    get_spec,
    import_weights,
    list_models,
    load_model,
    random_model,
    registry,
    save_meta_checkpoint,
    tiny_config,
    verify_cache,
)
from sam2_med.models.arch import complete_arch

from ._helpers import propagate_points

UNREACHABLE = "https://sam2-med.invalid/test_tiny.pt"  # .invalid never resolves (RFC 2606)


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, atol: float = 0.0) -> None:
    video = torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    oa = propagate_points(a, video, 1, [(64.0, 64.0)], [1])
    ob = propagate_points(b, video, 1, [(64.0, 64.0)], [1])
    for d in ("forward", "reverse"):
        assert list(oa[d]) == list(ob[d])
        for t in oa[d]:
            assert torch.allclose(oa[d][t], ob[d][t], rtol=0, atol=atol)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    model = random_model(tiny_config(), seed=7)
    path = save_meta_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "test_tiny.pt")
    return path, model


@pytest.fixture
def test_spec(monkeypatch: pytest.MonkeyPatch, tiny_file) -> registry.ModelSpec:
    """A registry entry for the random tiny checkpoint, with its true digest."""
    path, _ = tiny_file
    spec = dataclasses.replace(
        get_spec("sam2.1_hiera_tiny"),
        name="test_tiny",
        image_size=128,
        arch=MappingProxyType(complete_arch(TINY_ARCH)),
        filename="test_tiny.pt",
        sources=(WeightSource(url=UNREACHABLE),),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        licence="test",
        licence_text="random weights for tests",
    )
    monkeypatch.setitem(registry._REGISTRY, "test_tiny", spec)
    return spec


# ------------------------------------------------------------------------------- registry
def test_registry_lists_models_with_licences_and_published_digests() -> None:
    names = list_models()
    for family in ("sam2.1", "sam2"):
        for size in ("tiny", "small", "base_plus", "large"):
            assert f"{family}_hiera_{size}" in names
    assert "medsam2" in names
    assert get_spec("sam2_hiera_tiny").sha256 == (
        "65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125"
    )
    med = get_spec("medsam2")
    assert (med.image_size, med.arch["image_size"], med.sha256) == (512, 512, None)
    assert "research" in med.licence
    for name in names:
        spec = get_spec(name)
        assert spec.licence and spec.licence_text and spec.where_to_get()


def test_unknown_model_lists_the_names() -> None:
    with pytest.raises(UnknownModelError, match=r"sam2\.1_hiera_tiny") as info:
        get_spec("sam3")
    assert isinstance(info.value, Sam2MedError)


# ------------------------------------------------------------------------------- formats
def test_meta_checkpoint_round_trip_gives_identical_outputs(tiny_file) -> None:
    path, model = tiny_file
    lm = load_model(checkpoint=path, arch=TINY_ARCH)
    assert lm.name == "custom" and lm.image_size == 128 and not lm.model.training
    assert "unknown" in lm.licence
    ref = model.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in lm.model.state_dict().items())
    _same_outputs(model, lm.model)


def test_transformers_folder_loads(tmp_path: Path, tiny_file) -> None:
    _, model = tiny_file
    model.save_pretrained(tmp_path / "hf")
    assert not list((tmp_path / "hf").glob("*.bin"))
    lm = load_model(checkpoint=tmp_path / "hf")
    assert lm.image_size == 128 and lm.source == str(tmp_path / "hf")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in lm.model.state_dict().items())
    # equal weights; logits differ by ~1e-8 (tensors from safetensors take other kernel paths)
    _same_outputs(model, lm.model, atol=1e-6)


def test_architecture_conflict_is_named(tiny_file) -> None:
    path, _ = tiny_file
    with pytest.raises(CheckpointError, match=r"memory_attention_layers=1 \(not 3\)"):
        load_model(checkpoint=path, arch={**TINY_ARCH, "memory_attention_layers": 3})
    with pytest.raises(CheckpointError, match="fits no registered architecture"):
        load_model(checkpoint=path)


def test_pickle_with_code_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for payload in (Evil(), {"model": {"w": Evil()}}):
        path = tmp_path / "evil.pt"
        with open(path, "wb") as f:
            pickle.dump(payload, f)
        with pytest.raises(CheckpointError, match="weights-only"):
            load_model(checkpoint=path, arch=TINY_ARCH)
        torch.save(payload, path)  # the zip container torch itself writes
        with pytest.raises(CheckpointError, match="weights-only"):
            load_model(checkpoint=path, arch=TINY_ARCH)
    assert not marker.exists()


# ------------------------------------------------------------------------------- cache
def test_offline_and_uncached_fails_fast_and_says_how_to_import(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as info:
        load_model("sam2.1_hiera_tiny", cache_dir=tmp_path, offline=True)
    assert time.perf_counter() - t0 < 2.0
    msg = str(info.value)
    assert "sam2-med weights import sam2.1_hiera_tiny.pt --model sam2.1_hiera_tiny" in msg
    assert "huggingface.co/facebook/sam2.1-hiera-tiny" in msg
    assert get_spec("sam2.1_hiera_tiny").sha256 in msg
    assert isinstance(info.value, Sam2MedError)


def test_unreachable_source_fails_within_seconds(tmp_path: Path, test_spec) -> None:
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match=r"sam2-med weights import test_tiny\.pt"):
        load_model("test_tiny", cache_dir=tmp_path, offline=False)
    assert time.perf_counter() - t0 < 10.0
    assert not any(tmp_path.iterdir())  # no partial files or folders left


def test_import_then_load_offline(tmp_path: Path, tiny_file, test_spec) -> None:
    path, model = tiny_file
    cached = import_weights(path, "test_tiny", cache_dir=tmp_path)
    assert cached == tmp_path / "test_tiny" / "test_tiny.pt"
    # (the package's own demo weights are listed too, from the package folder)
    in_cache = [(e.name, e.status) for e in cached_weights(tmp_path) if tmp_path in e.path.parents]
    assert in_cache == [("test_tiny", "verified")]
    assert not [p for p in cached.parent.iterdir() if p.name.endswith(".partial")]
    lm = load_model("test_tiny", cache_dir=tmp_path, offline=True)
    assert lm.name == "test_tiny" and lm.licence == "random weights for tests"
    assert str(cached) in lm.source and "imported from" in lm.source
    _same_outputs(model, lm.model)
    # a cached file damaged later is caught by verify_cache and refused by load_model
    with open(cached, "r+b") as f:
        f.seek(-100, os.SEEK_END)
        f.write(b"\0" * 8)
    checked = verify_cache(tmp_path)
    assert [e.status for e in checked if tmp_path in e.path.parents] == ["checksum mismatch"]
    assert {e.status for e in checked if tmp_path not in e.path.parents} <= {"verified"}
    with pytest.raises(ChecksumError):
        load_model("test_tiny", cache_dir=tmp_path, offline=True)


def test_tampered_file_is_refused(tmp_path: Path, tiny_file, test_spec) -> None:
    path, _ = tiny_file
    bad = tmp_path / "test_tiny.pt"
    data = bytearray(path.read_bytes())
    data[-200] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as info:
        import_weights(bad, "test_tiny", cache_dir=tmp_path / "cache")
    assert info.value.expected == test_spec.sha256
    assert info.value.actual == hashlib.sha256(bytes(data)).hexdigest()
    assert info.value.expected in str(info.value) and info.value.actual in str(info.value)
    assert not (tmp_path / "cache" / "test_tiny" / "test_tiny.pt").exists()
    with pytest.raises(ChecksumError):
        load_model("test_tiny", checkpoint=bad)


# ------------------------------------------------------------------------------- devices
def test_device_and_dtype_are_validated(tiny_file) -> None:
    path, _ = tiny_file
    lm = load_model(checkpoint=path, arch=TINY_ARCH, dtype="bfloat16")
    assert lm.dtype == torch.bfloat16 and lm.device == torch.device("cpu")
    assert next(lm.model.parameters()).dtype == torch.float32
    assert lm.precision is not None and lm.precision.record()["requested"] == "bfloat16"
    with pytest.raises(DeviceUnavailableError, match="precision"):
        load_model(checkpoint=path, arch=TINY_ARCH, dtype="float16")
    with pytest.raises(DeviceUnavailableError, match="disagree"):
        load_model(checkpoint=path, arch=TINY_ARCH, precision="float32", dtype="bfloat16")
    with pytest.raises(DeviceUnavailableError):
        load_model(checkpoint=path, arch=TINY_ARCH, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
            load_model(checkpoint=path, arch=TINY_ARCH, device="cuda")
