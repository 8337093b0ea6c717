"""The training half of the seam: differentiable steps that compute what inference computes.

Training and inference must never disagree about a frame: with one clip, the model in eval mode
and gradients off, the training steps give the logits and object scores (within 1e-6) of
:meth:`Sam2Engine.decode_prompt` and :meth:`Sam2Engine.track`; with gradients on, every module
that inference uses receives a gradient.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from transformers import Sam2VideoModel

from sam2_med.models.engine import Sam2Engine, Sam2TrainingEngine, logits_of, score_of
from sam2_med.models.testing import random_model, tiny_config

#: The private members of transformers the training steps call, with the parameters passed.
TRAINING_INTERNALS = {
    "_prepare_memory_conditioned_features": {
        "inference_session",
        "frame_idx",
        "obj_idx",
        "is_initial_conditioning_frame",
        "current_vision_features",
        "current_vision_positional_embeddings",
        "num_total_frames",
        "track_in_reverse_time",
        "streaming",
    },
    "_encode_new_memory": {
        "current_vision_feats",
        "pred_masks_high_res",
        "object_score_logits",
        "is_mask_from_pts",
    },
    "_use_multimask": {"is_init_cond_frame", "point_inputs"},
    "_gather_memory_frame_outputs": {
        "inference_session",
        "obj_idx",
        "frame_idx",
        "track_in_reverse_time",
    },
    "_build_memory_attention_inputs": {"temporal_positions_and_previous_outputs", "device"},
    "_get_object_pointers": {
        "inference_session",
        "obj_idx",
        "frame_idx",
        "num_total_frames",
        "device",
        "track_in_reverse_time",
        "streaming",
    },
    "_process_object_pointers": {
        "temporal_offsets",
        "pointer_tokens",
        "max_object_pointers_to_use",
        "batch_size",
        "num_channels",
        "device",
    },
}


@pytest.mark.parametrize("name", sorted(TRAINING_INTERNALS))
def test_transformers_internals_the_training_steps_use_exist(name) -> None:
    fn = getattr(Sam2VideoModel, name, None)
    assert fn is not None, f"transformers Sam2VideoModel.{name} is gone: update engine.py"
    missing = TRAINING_INTERNALS[name] - set(inspect.signature(fn).parameters)
    assert not missing, f"Sam2VideoModel.{name} lost parameters {sorted(missing)}"


class _Features:
    def __init__(self, feats, pos) -> None:
        self.feats, self.pos = feats, pos

    def features(self, k: int):
        return self.feats[k], self.pos


def _video(n: int = 6, size: int = 128) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("multimask_tracking", [True, False])
def test_training_steps_equal_inference_steps(multimask_tracking) -> None:
    model = random_model(
        tiny_config(128, multimask_output_for_tracking=multimask_tracking), seed=5
    ).eval()
    video = _video()
    points = torch.tensor([[40.0, 50.0]])
    labels = torch.tensor([1], dtype=torch.int32)
    inf = Sam2Engine(model)
    trn = Sam2TrainingEngine(model)
    with torch.no_grad():
        clip = trn.encode_clips(video, batch=1)
        per_frame = [clip.frame(t)[0] for t in range(len(video))]
        source = _Features(per_frame, clip.frame(0)[1])
        st = inf.new_state(20, source)
        ref = [inf.decode_prompt(st, 0, points=points, labels=labels)]
        ref += [inf.track(st, k, reverse=False) for k in range(1, len(video))]

        ts = trn.train_state(20)
        f, pos = clip.frame(0)
        pix = trn.condition(ts, 0, f, pos, with_memory=False)
        step = trn.decode_train(pix, f, points=points[None], labels=labels[None])
        trn.commit(ts, 0, f, step, conditioning=True, from_prompt=True)
        got = [step]
        for t in range(1, len(video)):
            f, pos = clip.frame(t)
            step = trn.decode_train(
                trn.condition(ts, t, f, pos, with_memory=True), f, initial=False
            )
            trn.commit(ts, t, f, step, conditioning=False, from_prompt=False)
            got.append(step)
    assert got[0].multimask_logits.shape[1] == 3  # one click: three masks
    assert got[1].multimask_logits.shape[1] == (3 if multimask_tracking else 1)
    for t, (r, g) in enumerate(zip(ref, got, strict=True)):
        # equal up to float summation order (a few 1e-9 from frame 4 on)
        torch.testing.assert_close(g.logits[0], logits_of(r), atol=1e-6, rtol=0, msg=f"frame {t}")
        assert float(g.object_score[0, 0]) == pytest.approx(score_of(r), abs=1e-6)


def test_mask_prompt_equals_inference() -> None:
    model = random_model(tiny_config(128), seed=4).eval()
    video = _video(3)
    mask = torch.zeros(128, 128)
    mask[30:70, 40:90] = 1.0
    inf, trn = Sam2Engine(model), Sam2TrainingEngine(model)
    with torch.no_grad():
        clip = trn.encode_clips(video, batch=1)
        source = _Features([clip.frame(t)[0] for t in range(3)], clip.frame(0)[1])
        st = inf.new_state(20, source)
        ref = [inf.decode_prompt(st, 0, mask=mask), inf.track(st, 1, reverse=False)]
        ts = trn.train_state(20)
        f, _ = clip.frame(0)
        s0 = trn.mask_as_output(f, mask[None])
        trn.commit(ts, 0, f, s0, conditioning=True, from_prompt=True)
        f, pos = clip.frame(1)
        s1 = trn.decode_train(trn.condition(ts, 1, f, pos, with_memory=True), f, initial=False)
    assert s0.from_mask
    torch.testing.assert_close(s0.logits[0], logits_of(ref[0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(s1.logits[0], logits_of(ref[1]), atol=1e-6, rtol=0)


def test_batched_clips_equal_single_clips() -> None:
    """B clips in one batch give each clip's own result (the batch is only a speed-up)."""
    model = random_model(tiny_config(128), seed=2).eval()
    trn = Sam2TrainingEngine(model)
    videos = [_video(4), torch.flip(_video(4), dims=[-1])]
    pts = torch.tensor([[[30.0, 60.0]], [[90.0, 20.0]]])
    lab = torch.ones(2, 1, dtype=torch.int32)

    def run(video: torch.Tensor, p, lab_, b: int) -> list[torch.Tensor]:
        clip = trn.encode_clips(video, batch=b)
        st = trn.train_state(20)
        f, pos = clip.frame(0)
        s = trn.decode_train(
            trn.condition(st, 0, f, pos, with_memory=False), f, points=p, labels=lab_
        )
        trn.commit(st, 0, f, s, conditioning=True, from_prompt=True)
        out = [s.logits]
        for t in range(1, 4):
            f, pos = clip.frame(t)
            s = trn.decode_train(trn.condition(st, t, f, pos, with_memory=True), f, initial=False)
            trn.commit(st, t, f, s, conditioning=False, from_prompt=False)
            out.append(s.logits)
        return out

    with torch.no_grad():
        both = torch.stack(videos, 1).reshape(8, 3, 128, 128)  # frame-major
        batched = run(both, pts, lab, 2)
        for b in range(2):
            alone = run(videos[b], pts[b : b + 1], lab[b : b + 1], 1)
            for t in range(4):
                torch.testing.assert_close(batched[t][b], alone[t][0], atol=2e-4, rtol=1e-4)


def test_gradients_reach_every_module_inference_uses() -> None:
    model = random_model(tiny_config(128), seed=0)
    model.train()
    trn = Sam2TrainingEngine(model)
    clip = trn.encode_clips(_video(3), batch=1)
    st = trn.train_state(20)
    f, pos = clip.frame(0)
    s0 = trn.decode_train(
        trn.condition(st, 0, f, pos, with_memory=False),
        f,
        points=torch.tensor([[[60.0, 60.0]]]),
        labels=torch.ones(1, 1, dtype=torch.int32),
    )
    trn.commit(st, 0, f, s0, conditioning=True, from_prompt=True)
    loss = s0.multimask_logits.sigmoid().mean() + s0.iou.sum() + s0.object_score.sum()
    for t in (1, 2):
        f, pos = clip.frame(t)
        s = trn.decode_train(trn.condition(st, t, f, pos, with_memory=True), f, initial=False)
        trn.commit(st, t, f, s, conditioning=False, from_prompt=False)
        loss = loss + s.logits.sigmoid().mean() + s.object_score.sum()
    loss.backward()
    reached = {
        name.split(".")[0]
        for name, p in model.named_parameters()
        if p.grad is not None and p.grad.abs().sum() > 0
    }
    for module in (
        "vision_encoder",
        "prompt_encoder",
        "mask_decoder",
        "memory_attention",
        "memory_encoder",
        "object_pointer_proj",
    ):
        assert module in reached, module
