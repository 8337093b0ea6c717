"""The seam to transformers' private SAM 2 internals (``sam2_med.models.engine``).

When a transformers release moves an internal the seam calls, the first test here fails and
names it; the second proves the seam's single-frame operations equal transformers' own public
video loop on the same frames.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from transformers import Sam2VideoInferenceSession, Sam2VideoModel
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoMemoryAttention

from sam2_med.models.engine import (
    Sam2Engine,
    logits_of,
    pointer_of,
    score_logits_of,
    score_of,
)
from sam2_med.models.testing import random_model, tiny_config

from ._helpers import propagate_points

#: Every private member of transformers the seam relies on, with the parameters it passes.
INTERNALS = {
    (Sam2VideoModel, "_run_single_frame_inference"): {
        "inference_session",
        "frame_idx",
        "obj_idx",
        "batch_size",
        "is_init_cond_frame",
        "point_inputs",
        "mask_inputs",
        "reverse",
        "prev_sam_mask_logits",
        "streaming",
    },
    (Sam2VideoModel, "_batch_encode_memories"): {
        "inference_session",
        "frame_idx",
        "objects_needing_memory_encoding",
        "high_res_masks_for_memory",
        "object_score_logits_for_memory",
        "is_mask_from_pts_per_obj",
    },
    (Sam2VideoModel, "get_image_features"): {"pixel_values"},
    (Sam2VideoModel, "_prepare_vision_features"): {"inference_session", "frame_idx", "batch_size"},
    (Sam2VideoModel, "_single_frame_forward"): {
        "pixel_values",
        "input_masks",
        "image_embeddings",
        "multimask_output",
    },
    # Sam2Engine.track_many: the objects of a slice batched through the model
    (Sam2VideoModel, "_gather_memory_frame_outputs"): {
        "inference_session",
        "obj_idx",
        "frame_idx",
        "track_in_reverse_time",
    },
    (Sam2VideoModel, "_build_memory_attention_inputs"): {
        "temporal_positions_and_previous_outputs",
        "device",
    },
    (Sam2VideoModel, "_get_object_pointers"): {
        "inference_session",
        "obj_idx",
        "frame_idx",
        "num_total_frames",
        "device",
        "track_in_reverse_time",
        "streaming",
    },
    (Sam2VideoModel, "_process_object_pointers"): {
        "temporal_offsets",
        "pointer_tokens",
        "max_object_pointers_to_use",
        "batch_size",
        "num_channels",
        "device",
    },
    (Sam2VideoMemoryAttention, "forward"): {
        "current_vision_features",
        "memory",
        "current_vision_position_embeddings",
        "memory_posision_embeddings",
        "num_object_pointer_tokens",
    },
    (Sam2VideoModel, "_use_multimask"): {"is_init_cond_frame", "point_inputs"},
    (Sam2VideoModel, "_encode_new_memory"): {
        "current_vision_feats",
        "pred_masks_high_res",
        "object_score_logits",
        "is_mask_from_pts",
    },
    (Sam2VideoInferenceSession, "__init__"): {
        "video",
        "inference_device",
        "inference_state_device",
        "video_storage_device",
        "dtype",
    },
    (Sam2VideoInferenceSession, "store_output"): {
        "obj_idx",
        "frame_idx",
        "output_value",
        "is_conditioning_frame",
    },
}


@pytest.mark.parametrize("owner_name", sorted(INTERNALS, key=lambda x: x[1]), ids=lambda x: x[1])
def test_transformers_internals_the_seam_uses_exist(owner_name) -> None:
    owner, name = owner_name
    fn = getattr(owner, name, None)
    assert fn is not None, f"transformers {owner.__name__}.{name} is gone: update engine.py"
    params = set(inspect.signature(fn).parameters)
    missing = INTERNALS[owner_name] - params
    assert not missing, f"transformers {owner.__name__}.{name} lost parameters {sorted(missing)}"


#: Submodules, parameters and config-derived attributes of a Sam2VideoModel the seam reads.
MODEL_ATTRIBUTES = (
    "mask_downsample",
    "no_object_pointer",
    "backbone_feature_sizes",
    "hidden_dim",
    "memory_attention",
    "memory_encoder",
    "mask_decoder",
    "prompt_encoder",
    "vision_encoder",
)


def test_model_attributes_the_seam_reads() -> None:
    model = random_model(tiny_config(128), seed=0)
    missing = [a for a in MODEL_ATTRIBUTES if not hasattr(model, a)]
    assert not missing, f"transformers Sam2VideoModel lost {missing}: update engine.py"


def test_session_state_layout_the_seam_reads() -> None:
    st = Sam2VideoInferenceSession(video=None, dtype=torch.float32)
    st.obj_id_to_idx(1)
    assert set(st.output_dict_per_obj[0]) == {"cond_frame_outputs", "non_cond_frame_outputs"}
    assert st.frames_tracked_per_obj[0] == {}


class _Features:
    def __init__(self, engine: Sam2Engine, video: torch.Tensor) -> None:
        with torch.inference_mode():
            feats, self.pos = engine.encode(video)
        self.feats = [[f.clone() for f in fs] for fs in feats]

    def features(self, k: int):
        return self.feats[k], self.pos


def test_engine_steps_equal_transformers_video_loop() -> None:
    model = random_model(tiny_config(128), seed=3).eval()
    video = torch.randn(8, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    points, labels = [(40.0, 50.0), (70.0, 64.0)], [1, 0]
    ref = propagate_points(model, video, 3, points, labels)

    engine = Sam2Engine(model)
    source = _Features(engine, video)
    with torch.inference_mode():
        st = engine.new_state(8, source)
        cond = engine.decode_prompt(
            st, 3, points=torch.tensor(points), labels=torch.tensor(labels, dtype=torch.int32)
        )
        got = {"forward": {3: logits_of(cond)}, "reverse": {3: logits_of(cond)}}
        scores = {"forward": {3: score_of(cond)}}
        for k in range(4, 8):
            out = engine.track(st, k, reverse=False)
            got["forward"][k] = logits_of(out)
            scores["forward"][k] = score_of(out)
        for k in range(2, -1, -1):
            got["reverse"][k] = logits_of(engine.track(st, k, reverse=True))
    for direction in ("forward", "reverse"):
        assert set(got[direction]) == set(ref[direction])
        for k, logits in ref[direction].items():
            torch.testing.assert_close(got[direction][k], logits[0, 0], atol=0, rtol=0)
    for k, s in ref["object_score_logits"]["forward"].items():
        assert scores["forward"][k] == pytest.approx(s, abs=0)


def test_restored_tracked_frames_equal_the_tracked_ones() -> None:
    """A session keeps a tracked frame's logits, score and pointer; restoring them re-encodes
    the same memory, and a correction decoded on the restored state equals one decoded in the
    state that tracked the frames (what Meta's predictor would still hold)."""
    model = random_model(tiny_config(128), seed=3).eval()
    video = torch.randn(8, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    engine = Sam2Engine(model)
    source = _Features(engine, video)
    pts, labs = torch.tensor([(40.0, 50.0)]), torch.tensor([1], dtype=torch.int32)
    neg, neg_lab = torch.tensor([(60.0, 60.0)]), torch.tensor([0], dtype=torch.int32)
    with torch.inference_mode():
        st = engine.new_state(8, source)
        cond = engine.decode_prompt(st, 1, points=pts, labels=labs)
        tracked = {k: engine.track(st, k, reverse=False) for k in range(2, 7)}
        again = engine.new_state(8, source, {1: cond})
        for k, out in tracked.items():
            engine.restore_tracked(
                again,
                k,
                logits=logits_of(out),
                score_logits=score_logits_of(out),
                pointer=pointer_of(out),
                reverse=False,
                with_memory=True,
            )
            # Memory is stored in bfloat16 (as Meta stores it), encoded here one object at a
            # time and there as a batch: bit-equal on an AVX2 CPU, while on an AVX-512 one with
            # one thread the batched float32 sum rounds differently and an element can land one
            # bfloat16 step (2**-8 to 2**-7 relative) away. Equal within that step.
            torch.testing.assert_close(
                again.tracked[k]["maskmem_features"],
                out["maskmem_features"],
                atol=1e-6,
                rtol=2**-7,
            )
        prior = logits_of(tracked[6]).clone()
        kw = {"points": neg, "labels": neg_lab, "prior": prior, "with_memory": True}
        a = engine.decode_prompt(st, 6, **kw)
        b = engine.decode_prompt(again, 6, **kw)
        fresh = engine.decode_prompt(engine.new_state(8, source), 6, points=neg, labels=neg_lab)
    torch.testing.assert_close(logits_of(b), logits_of(a), atol=1e-5, rtol=1e-5)
    assert score_of(b) == pytest.approx(score_of(a), abs=1e-5)
    assert float((logits_of(a) - logits_of(fresh)).abs().max()) > 1e-3  # memory mattered
