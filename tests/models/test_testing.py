"""The random tiny models that other tests (sessions, propagation) rely on."""

from __future__ import annotations

import pytest
import torch

from sam2_med.models import LoadedModel, random_model, tiny_config
from sam2_med.models.arch import arch_to_config

from ._helpers import propagate_points


@pytest.mark.parametrize("size", [128, 256, 512])
def test_tiny_model_propagates_non_empty_masks(size: int) -> None:
    model = random_model(tiny_config(size))
    n = 8 if size == 128 else 3
    video = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))
    out = propagate_points(model, video, 0, [(size / 2, size / 2)], [1], reverse_too=False)
    assert sorted(out["forward"]) == list(range(n))
    for logits in out["forward"].values():
        assert logits.shape == (1, 1, size // 4, size // 4)
        assert (logits > 0).any()


def test_random_model_is_seeded_and_has_no_zero_parameter() -> None:
    a = random_model(tiny_config(), seed=3)
    b = random_model(tiny_config(), seed=3)
    c = random_model(tiny_config(), seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    for name, p in a.named_parameters():
        assert (p != 0).all(), name
    assert not a.training
    bias = a.mask_decoder.pred_obj_score_head.proj_out.bias
    assert float(bias.detach()) == 10.0


def test_loaded_model_from_module() -> None:
    lm = LoadedModel.from_module(random_model(tiny_config(256)), name="t")
    assert (lm.name, lm.image_size, lm.device, lm.dtype) == (
        "t",
        256,
        torch.device("cpu"),
        torch.float32,
    )
    with pytest.raises(AttributeError):
        lm.name = "x"  # type: ignore[misc]


def test_arch_refuses_unknown_keys_and_sizes() -> None:
    with pytest.raises(ValueError, match="unknown architecture keys"):
        arch_to_config({"nope": 1})
    with pytest.raises(ValueError, match="multiple of 32"):
        arch_to_config({"image_size": 100})
    with pytest.raises(ValueError, match="d_model"):
        arch_to_config({"d_model": 64})
