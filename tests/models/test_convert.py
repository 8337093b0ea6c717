"""Strict key mapping between Meta's checkpoints and transformers' Sam2VideoModel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import Sam2VideoModel

from sam2_med.models import (
    CheckpointError,
    arch_to_config,
    get_spec,
    hf_to_meta_state_dict,
    infer_arch,
    meta_to_hf_state_dict,
    random_model,
    tiny_config,
)
from sam2_med.models.convert import load_meta_state_dict

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
META_KEYS = json.loads((FIXTURE / "meta_keys.json").read_text())


def _meta_tensors(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v, device="meta") for k, v in shapes.items()}


def _model_shapes(arch: dict) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = Sam2VideoModel(arch_to_config(arch))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(META_KEYS))
def test_every_meta_key_maps_and_every_shape_matches(name: str) -> None:
    meta = _meta_tensors(META_KEYS[name])
    spec = get_spec(name)
    converted = meta_to_hf_state_dict(meta)
    expected = _model_shapes(spec.arch_dict())
    assert set(converted) == set(expected)
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    # and back: the inverse gives exactly Meta's key set and shapes
    back = hf_to_meta_state_dict(converted)
    assert {k: list(v.shape) for k, v in back.items()} == META_KEYS[name]
    # what the weights show agrees with the registry entry
    inferred = infer_arch(meta)
    assert {k: spec.arch[k] for k in inferred} == inferred


def test_medsam2_has_the_sam21_tiny_key_set() -> None:
    meta = _meta_tensors(META_KEYS["sam2.1_hiera_tiny"])
    converted = meta_to_hf_state_dict(meta)
    expected = _model_shapes(get_spec("medsam2").arch_dict())
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected


def test_unmatched_key_is_named() -> None:
    meta = _meta_tensors(META_KEYS["sam2.1_hiera_tiny"])
    meta["sam_mask_decoder.extra_head.weight"] = torch.empty(3, device="meta")
    with pytest.raises(CheckpointError, match=r"sam_mask_decoder\.extra_head\.weight"):
        meta_to_hf_state_dict(meta)


def test_missing_extra_and_misshapen_keys_are_named_and_nothing_loads() -> None:
    model = random_model(tiny_config(), seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    good = hf_to_meta_state_dict(random_model(tiny_config(), seed=2).state_dict())

    missing = dict(good)
    del missing["memory_attention.layers.0.linear1.weight"]
    with pytest.raises(
        CheckpointError, match=r"lacks: memory_attention\.layers\.0\.linear1\.weight"
    ):
        load_meta_state_dict(model, missing)

    extra = dict(good)
    extra["memory_attention.layers.1.linear1.weight"] = torch.zeros(16, 128)
    with pytest.raises(CheckpointError, match=r"memory_attention\.layers\.1\.linear1\.weight"):
        load_meta_state_dict(model, extra)

    misshapen = dict(good)
    misshapen["no_obj_ptr"] = torch.zeros(1, 64)
    with pytest.raises(CheckpointError, match=r"no_object_pointer \(1, 64\) vs \(1, 128\)"):
        load_meta_state_dict(model, misshapen)

    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_round_trip_of_values() -> None:
    sd = random_model(tiny_config(), seed=5).state_dict()
    back = meta_to_hf_state_dict(hf_to_meta_state_dict(sd))
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
