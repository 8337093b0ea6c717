"""Acceptance: a Session on the parity fixture reproduces Meta's predictor logits.

The fixture (tests/fixtures/parity, README there) holds a reduced SAM 2.1 in Meta's checkpoint
format, a 20-frame clip, a box + click prompt on frame 9 and Meta's low-resolution logits for
propagation forward then reverse in one state. Here the clip becomes a Volume whose axial
slices display exactly as the clip frames, the prompt goes in as voxel indices through the
public Session API, and the Session's own schedule (forward from the anchor, then backward in
the same tracking state, with its memory pruning and shared feature cache) must give Meta's
logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sam2_med.intensity import IntensityTransform
from sam2_med.models import load_model
from sam2_med.session import Session
from sam2_med.volume import Volume

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "parity"
TOLERANCE = 1e-4


def _clip_volume(clip: np.ndarray) -> Volume:
    """(T, S, S) clip -> LPS-stored volume whose axial slice k displays as clip[k].

    With an LPS affine, ``i`` runs right -> left and ``j`` anterior -> posterior, which is the
    radiological display orientation, so display ``(row, col) = (j, i)``.
    """
    arr = np.ascontiguousarray(clip.transpose(2, 1, 0))  # arr[i, j, k] = clip[k, j, i]
    return Volume(arr, np.diag([-1.0, -1.0, 1.0, 1.0]), modality="OT")


CUDA = pytest.param(
    "cuda",
    marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA device here (CI has none)"
    ),
)


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("family", ["sam2.1", "sam2.0"])
def test_session_reproduces_meta_logits(family: str, device: str, tmp_path: Path) -> None:
    if device == "cuda":  # full float32: TF32 would move logits by about 1e-3
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    config = json.loads((FIXTURE / "config.json").read_text())
    ref_path = FIXTURE / ("reference.npz" if family == "sam2.1" else "reference_sam2.0.npz")
    assert ref_path.exists(), f"{ref_path} missing: rerun scripts/make_parity_fixture.py"
    if family == "sam2.1":
        lm = load_model(checkpoint=FIXTURE / "meta_reduced.pt", arch=config["arch"], device=device)
    else:
        state = torch.load(FIXTURE / "meta_reduced.pt", weights_only=True)["model"]
        for key in config["sam2.1_only_keys"]:
            del state[key]
        torch.save({"model": state}, tmp_path / "sam20.pt")
        arch = {**config["arch"], **config["sam2.0_arch_overrides"]}
        lm = load_model(checkpoint=tmp_path / "sam20.pt", arch=arch, device=device)
    ref = np.load(ref_path)
    clip = np.load(FIXTURE / "clip.npy")
    vol = _clip_volume(clip)
    session = Session(lm, vol, axis="axial", window=IntensityTransform.fixed_range(0.0, 255.0))
    assert session.axis_index == 2 and session.stream.display_shape == clip.shape[1:]
    # the frames are the fixture's pixels
    mean = torch.tensor(config["pixels"]["mean"])[:, None, None]
    std = torch.tensor(config["pixels"]["std"])[:, None, None]
    pixels = (torch.from_numpy(clip[3]).float().div(255.0) - mean) / std
    torch.testing.assert_close(session.stream.frame(3), pixels, rtol=0, atol=1e-6)

    p = config["prompt"]
    k = p["frame"]
    (x0, y0, x1, y1) = (int(v) for v in p["box_xyxy"])
    clicks = [[int(x), int(y), k] for x, y in p["points_xy"]]
    lab = session.add_object("ellipse", label=p["obj_id"])
    preview = session.add_points(lab, clicks, p["labels"], box=([x0, y0, k], [x1, y1, k]))
    results = {r.slice_index: r for r in session.propagate()}
    order = [r for r in session.stats.decoded_slices]
    fwd = ref["forward_frames"].tolist()
    rev = ref["reverse_frames"].tolist()
    assert order == [k, *fwd[1:], *rev[1:]]  # the anchor, forward, then reverse
    worst = 0.0
    for direction, frames in (("forward", fwd), ("reverse", rev)):
        for i, t in enumerate(frames):
            r = preview if t == k else results[t]
            worst = max(worst, float(np.abs(r.logits[lab] - ref[f"{direction}_logits"][i]).max()))
            assert r.scores[lab] == pytest.approx(
                float(ref[f"{direction}_object_score_logits"][i]), abs=1e-4
            )
    assert worst <= TOLERANCE, f"max |logit difference| {worst:.3g} > {TOLERANCE}"
    # masks are the logits brought back to the slice: positive logits inside
    m = session.mask(lab, 12)
    assert m is not None and m.sum() > 0
    assert m.shape == vol.shape[:2]
