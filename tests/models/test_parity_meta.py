"""Acceptance: a Meta-format checkpoint, loaded by sam2-med, reproduces Meta's own predictor.

The fixture (tests/fixtures/parity, made by scripts/make_parity_fixture.py with Meta's sam2
1.1.0) holds a reduced SAM 2.1 with random weights, a 20-frame clip, a box + click prompt on
frame 9, and Meta's low-resolution logits propagating forward then reverse in one state, for
SAM 2.1 and (same weights minus three tensors) SAM 2.0 behaviour. Here the plain transformers
loop (no sam2-med session) runs the fixture's ``one_anchor`` scenario; the session's scenarios are
in tests/test_parity_session.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sam2_med.models import TINY_ARCH, load_model

from ._helpers import propagate_points

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
TOLERANCE = 1e-5


def clip_to_pixels(clip: np.ndarray, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 (T, S, S) -> float32 (T, 3, S, S), exactly as the fixture script does."""
    x = torch.from_numpy(clip).float().div(255.0)[:, None].expand(-1, 3, -1, -1)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return ((x - m) / s).contiguous()


@pytest.fixture(scope="module")
def config() -> dict:
    return json.loads((FIXTURE / "config.json").read_text())


def test_fixture_arch_is_the_tiny_arch(config: dict) -> None:
    assert config["arch"] == TINY_ARCH
    assert (FIXTURE / "meta_reduced.pt").stat().st_size < 1.5e6


@pytest.mark.parametrize("family", ["sam2.1", "sam2.0"])
def test_transformers_reproduces_meta_logits(config: dict, family: str, tmp_path: Path) -> None:
    if family == "sam2.1":
        lm = load_model(checkpoint=FIXTURE / "meta_reduced.pt", arch=config["arch"])
        ref = np.load(FIXTURE / "reference.npz")
    else:  # same weights minus the SAM 2.1-only tensors, SAM 2.0 switches
        state = torch.load(FIXTURE / "meta_reduced.pt", weights_only=True)["model"]
        for key in config["sam2.1_only_keys"]:
            del state[key]
        torch.save({"model": state}, tmp_path / "sam20.pt")
        arch = {**config["arch"], **config["sam2.0_arch_overrides"]}
        lm = load_model(checkpoint=tmp_path / "sam20.pt", arch=arch)
        ref = np.load(FIXTURE / "reference_sam2.0.npz")
    assert (lm.name, lm.image_size) == ("custom", 128)
    clip = np.load(FIXTURE / "clip.npy")
    pixels = clip_to_pixels(clip, config["pixels"]["mean"], config["pixels"]["std"])
    p = config["prompt"]
    got = propagate_points(
        lm.model, pixels, p["frame"], p["transformers_points_xy"], p["transformers_labels"]
    )
    frames = ref["one_anchor__frames"].tolist()
    k = p["frame"]
    assert list(got["forward"]) == frames[: len(got["forward"])]  # 9..19, then 8..0
    assert list(got["reverse"]) == [k, *frames[len(got["forward"]) :]]
    worst = 0.0
    for i, t in enumerate(frames):
        direction = "forward" if t >= k else "reverse"
        logits = got[direction][t][0, 0].numpy()
        worst = max(worst, float(np.abs(logits - ref["one_anchor__logits"][i]).max()))
        score = got["object_score_logits"][direction][t]
        assert score == pytest.approx(float(ref["one_anchor__scores"][i]), abs=TOLERANCE)
    assert worst <= TOLERANCE, f"max |logit difference| {worst:.3g} > {TOLERANCE}"
    assert (ref["one_anchor__logits"] > 0).any(axis=(1, 2)).all()  # the masks are not empty
