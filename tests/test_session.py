"""Session: prompts, anchors, both-way propagation, corrections, objects, undo, limits, cache.

Tiny random models (``sam2_med.models.testing``) on small synthetic volumes: the masks mean
nothing, but geometry, bookkeeping and counters are exact.
"""

from __future__ import annotations

import numpy as np
import pytest

from sam2_med.errors import PromptError
from sam2_med.models import LoadedModel
from sam2_med.models.testing import random_model, tiny_config
from sam2_med.session import Session, SliceResult
from sam2_med.volume import Volume
from tests._geometry import blob_volume


@pytest.fixture(scope="module")
def model():
    return LoadedModel.from_module(random_model(tiny_config(128), seed=0), name="tiny-test")


@pytest.fixture(scope="module")
def absent_model():
    """A model whose object score always says "no object"."""
    return LoadedModel.from_module(random_model(tiny_config(128), seed=1, object_score_bias=-10.0))


def _volume(name: str = "LPS", shape=(36, 44, 24)) -> Volume:
    return blob_volume(name, shape)


def _blob(shape, center, radii) -> np.ndarray:
    a, b = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return ((a - center[0]) / radii[0]) ** 2 + ((b - center[1]) / radii[1]) ** 2 < 1


def _asymmetric_mask(shape) -> np.ndarray:
    m = np.zeros(shape, bool)
    a, b = shape
    m[a // 5 : a // 2, b // 6 : (3 * b) // 4] = True  # off-centre rectangle
    m[a // 2 : (4 * a) // 5, b // 6 : b // 3] = True  # an L foot: not symmetric under flips
    return m


# -- geometry oracle ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "axis"),
    [("LPS", "axial"), ("oblique", "axial"), ("sagittal_permuted", "sagittal"), ("LPS", "coronal")],
)
def test_mask_prompt_comes_back_on_exactly_its_voxels(model, name: str, axis: str) -> None:
    vol = _volume(name)
    s = Session(model, vol, axis=axis)
    lab = s.add_object("organ")
    k = s.n_slices // 2
    mask = _asymmetric_mask(s.stream.slice_shape)
    res = s.add_mask(lab, k, mask)
    assert res.slice_index == k and res.direction == 0
    np.testing.assert_array_equal(res.masks[lab], mask)
    lm = s.label_map().array
    np.testing.assert_array_equal(np.argwhere(lm == lab), np.argwhere(_on_slice(s, k, mask)))
    # the model saw the mask in the same place: its own low-res logits map back onto it
    back = s.stream.frame_logits_to_slice(res.logits[lab]) > 0
    assert (back & mask).sum() / (back | mask).sum() > 0.8
    list(s.propagate())
    lm = s.label_map().array
    np.testing.assert_array_equal(np.take(lm, k, axis=s.axis_index) == lab, mask)


def _on_slice(s: Session, k: int, mask2d: np.ndarray) -> np.ndarray:
    out = np.zeros(s.volume.shape, bool)
    out[s.stream.slice_to_volume_index(k)] = mask2d
    return out


def test_point_prompt_preview_is_on_the_clicked_slice(model) -> None:
    vol = _volume("oblique")
    s = Session(model, vol, axis="axial")
    lab = s.add_object()
    res = s.add_points(lab, [[18, 22, 9], [10, 10, 9]], [1, 0])
    assert res.slice_index == 9 and isinstance(res, SliceResult)
    assert res.masks[lab].shape == s.stream.slice_shape and res.masks[lab].dtype == bool
    assert res.areas[lab] == res.masks[lab].sum() > 0
    assert res.logits[lab].shape == (32, 32)
    assert s.anchors(lab) == (9,)
    assert s.stats.decoded_slices == [9] and s.stats.encoder_calls == 1


# -- propagation --------------------------------------------------------------------------------
def test_propagation_covers_every_slice_both_ways(model) -> None:
    s = Session(model, _volume())
    lab = s.add_object()
    s.add_box(lab, [10, 12, 12], [26, 30, 12])
    seen = []
    calls = []
    for res in s.propagate(progress=lambda d, t: calls.append((d, t))):
        seen.append((res.slice_index, res.direction))
    assert sorted(k for k, _ in seen) == [k for k in range(24) if k != 12]
    assert all(d == (1 if k > 12 else -1) for k, d in seen)
    # forward first, then backward from the anchor
    assert [k for k, _ in seen] == list(range(13, 24)) + list(range(11, -1, -1))
    assert calls[-1] == (23, 23)
    prof = s.profile(lab)
    assert np.all(np.isfinite(prof.scores)) and np.all(np.isfinite(prof.areas))
    assert prof.anchors == (12,)
    assert s.pending() == 0 and list(s.propagate()) == []


def test_correction_reruns_only_between_neighbouring_anchors(model) -> None:
    s = Session(model, _volume(), memory_budget_mb=64)
    lab = s.add_object()
    s.add_points(lab, [[18, 22, 4]], [1])
    s.add_points(lab, [[18, 22, 20]], [1])
    list(s.propagate())
    assert s.stats.encoder_calls == 24
    # nearest-anchor split: 0..3 backward and 5..12 forward from 4, 13..19 backward and 21..23
    # forward from 20; frame-major: every forward stretch in one sweep up, then the backward
    # ones in one sweep down
    assert s.stats.decoded_slices == [
        4,
        20,
        *range(5, 13),
        21,
        22,
        23,
        *range(19, 12, -1),
        *range(3, -1, -1),
    ]
    before = dict(s._objects[lab].results)
    s.stats.reset()
    s.add_points(lab, [[20, 22, 11]], [0])
    done = [r.slice_index for r in s.propagate()]
    # slice 11 now owns 8..15 (nearer to it than to 4 or 20): only those are re-run, from 11
    assert done == [12, 13, 14, 15, 10, 9, 8]
    assert s.stats.decoded_slices == [11, *done]
    assert s.stats.encoder_calls == 0  # every slice came from the feature cache
    after = s._objects[lab].results
    for k in [*range(8), *range(16, 24)]:
        assert after[k] is before[k]  # accepted slices elsewhere untouched
    for k in range(8, 16):
        assert after[k] is not before[k]


def test_correction_stops_early_once_masks_agree_again(model) -> None:
    vol = _volume()
    runs = {}
    for converge in (None, 2):
        s = Session(model, vol, converge_after=converge, converge_iou=0.5)
        lab = s.add_object()
        s.add_points(lab, [[18, 22, 6]], [1])
        list(s.propagate())
        before = dict(s._objects[lab].results)
        s.stats.reset()
        s.add_points(lab, [[18, 22, 14], [19, 23, 14]], [1, 1])
        list(s.propagate())
        runs[converge] = (list(s.stats.decoded_slices), before, s)
    full, _, _ = runs[None]
    short, before, s = runs[2]
    assert full == [14, *range(15, 24), *range(13, 10, -1)]
    assert short[:3] == [14, 15, 16] and len(short) < len(full) and s.pending() == 0
    # what was not re-run is the accepted result from before the correction
    after = s._objects[1].results
    kept = [k for k in range(11, 24) if k not in short]
    assert kept and all(after[k] is before[k] for k in kept)


def test_two_objects_first_accepted_voxels_survive(model) -> None:
    s = Session(model, _volume())
    a = s.add_object("first")
    b = s.add_object("second")
    assert s.objects == {a: "first", b: "second"}
    k = 12
    shape = s.stream.slice_shape
    s.add_mask(a, k, _blob(shape, (18, 22), (8, 8)))
    list(s.propagate())
    first = s.label_map().array == a
    assert first.sum() > 0
    s.add_mask(b, k, _blob(shape, (22, 22), (10, 12)))  # overlaps the first object
    list(s.propagate())
    lm = s.label_map()
    assert lm.names == {a: "first", b: "second"}
    assert lm.array.dtype == np.uint8
    np.testing.assert_array_equal(lm.array[first], a)
    assert (lm.array == b).sum() > 0
    # the second object alone does claim some of the first's voxels
    assert (s.object_volume(b) & first).sum() > 0


def test_undo_restores_masks_and_anchors(model) -> None:
    s = Session(model, _volume())
    lab = s.add_object()
    s.add_points(lab, [[18, 22, 12]], [1])
    list(s.propagate())
    lm0 = s.label_map().array.copy()
    s.add_points(lab, [[18, 22, 18]], [0])
    list(s.propagate())
    assert s.anchors(lab) == (12, 18)
    assert s.undo() is True
    assert s.anchors(lab) == (12,)
    np.testing.assert_array_equal(s.label_map().array, lm0)
    assert s.pending() == 0
    assert s.undo() is True
    assert s.anchors(lab) == () and s.label_map().array.max() == 0
    assert s.undo() is False


def test_cancel_and_resume_finishes_without_recomputing(model) -> None:
    vol = _volume()
    ref = Session(model, vol)
    lab = ref.add_object()
    ref.add_points(lab, [[18, 22, 12]], [1])
    ref_res = {r.slice_index: r for r in ref.propagate()}

    s = Session(model, vol)
    s.add_object()
    s.add_points(lab, [[18, 22, 12]], [1])
    n = 0

    def cancel() -> bool:
        return n >= 5

    first = []
    for r in s.propagate(cancel=cancel):
        first.append(r.slice_index)
        n += 1
    assert len(first) == 5 and s.pending() == 23 - 5
    rest = [r for r in s.propagate()]
    assert sorted(first + [r.slice_index for r in rest]) == sorted(ref_res)
    assert len(s.stats.decoded_slices) == 24  # nothing decoded twice
    for r in rest:
        np.testing.assert_allclose(r.logits[lab], ref_res[r.slice_index].logits[lab], atol=1e-5)
    # breaking out of the loop also suspends cleanly
    s2 = Session(model, vol)
    s2.add_object()
    s2.add_points(lab, [[18, 22, 12]], [1])
    for _ in s2.propagate():
        break
    assert s2.pending() == 22
    assert len(list(s2.propagate())) == 22


def test_stop_after_empty_and_slice_limits(model, absent_model) -> None:
    vol = _volume()
    s = Session(absent_model, vol, stop_after_empty=2)
    lab = s.add_object()
    s.add_points(lab, [[18, 22, 12]], [1])
    done = sorted(r.slice_index for r in s.propagate())
    assert done == [10, 11, 13, 14]
    prof = s.profile(lab)
    assert np.isnan(prof.scores[:10]).all() and np.isnan(prof.scores[15:]).all()
    assert s.label_map().array.max() == 0 and s.pending() == 0

    # a model that keeps saying "present" but draws nothing stops alike (an empty mask is an
    # absent object too)
    blank = random_model(tiny_config(128), seed=1, object_score_bias=10.0, blank_masks=True)
    s = Session(LoadedModel.from_module(blank), vol, stop_after_empty=2)
    lab = s.add_object()
    s.add_points(lab, [[18, 22, 12]], [1])
    assert sorted(r.slice_index for r in s.propagate()) == [10, 11, 13, 14]
    assert (s.profile(lab).scores[[10, 11, 13, 14]] > 0).all()

    s = Session(model, vol, max_slices=3, slice_range=(8, 22))
    lab = s.add_object()
    s.add_points(lab, [[18, 22, 20]], [1])
    done = sorted(r.slice_index for r in s.propagate())
    assert done == [17, 18, 19, 21, 22]
    assert np.isfinite(s.profile(lab).scores).sum() == 6


def test_prompt_validation(model) -> None:
    s = Session(model, _volume())
    lab = s.add_object()
    with pytest.raises(PromptError, match="several axial slices"):
        s.add_points(lab, [[1, 1, 3], [1, 1, 4]], [1, 1])
    with pytest.raises(PromptError, match="outside the volume"):
        s.add_points(lab, [[40, 1, 3]], [1])
    with pytest.raises(PromptError, match="point labels"):
        s.add_points(lab, [[1, 1, 3]], [2])
    with pytest.raises(PromptError, match="2 points but 1"):
        s.add_points(lab, [[1, 1, 3], [2, 2, 3]], [1])
    with pytest.raises(PromptError, match="box corners lie on several"):
        s.add_box(lab, [1, 1, 3], [5, 5, 6])
    with pytest.raises(PromptError, match="mask shape"):
        s.add_mask(lab, 3, np.ones((44, 36), bool))
    with pytest.raises(PromptError, match="no object with label 7"):
        s.add_points(7, [[1, 1, 3]], [1])
    with pytest.raises(PromptError, match="integer voxel"):
        s.add_points(lab, [[1.5, 1, 3]], [1])
    assert s.anchors(lab) == () and s.stats.decoded_slices == []


def test_memory_budget_evicts_features(model) -> None:
    vol = _volume()
    logits = []
    for budget in (0.3, 64):  # two slices of tiny features, and all of them
        s = Session(model, vol, memory_budget_mb=budget)
        lab = s.add_object()
        s.add_points(lab, [[18, 22, 12]], [1])
        logits.append({r.slice_index: r.logits[lab] for r in s.propagate()})
        if budget == 0.3:
            assert len(s._cache) <= 2 and s.stats.cache_evictions >= 21
            assert s.stats.cache_peak_bytes <= 0.3 * 2**20
            s.stats.reset()
            s.add_points(lab, [[18, 22, 6]], [1])
            list(s.propagate())
            assert s.stats.encoder_calls >= len(set(s.stats.decoded_slices)) - 2
    # evicted buffers are re-used for later slices without mixing features up
    for k in logits[1]:
        np.testing.assert_array_equal(logits[0][k], logits[1][k])


def test_default_cache_bound_holds_a_slice_count_at_any_input_size(model) -> None:
    """The default bound scales with the size of one slice's features (128 slices), never
    below 512 MiB and never above a quarter of the available memory; it does not depend on
    the volume's length."""
    import torch

    from sam2_med._session_cache import FeatureCache, SessionStats
    from sam2_med.session import DEFAULT_CACHE_SLICES, DEFAULT_MEMORY_BUDGET_MB

    mib = 2**20
    s = Session(model, _volume())
    cache = s._cache
    assert cache.min_slices == DEFAULT_CACHE_SLICES == 128
    assert cache.budget_bytes == DEFAULT_MEMORY_BUDGET_MB * mib
    assert cache.limit(4 * mib) == 512 * mib  # 512 px tiny features: the floor
    assert cache.limit(16 * mib) == min(2048 * mib, cache.max_bytes)  # 1024 px
    assert 0 < cache.max_bytes < 2**40
    assert Session(model, _volume(), memory_budget_mb=64)._cache.limit(16 * mib) == 64 * mib

    def encode(ks):  # 1 MiB of float32 per slice
        return [[torch.full((2**18,), float(k))] for k in ks], [torch.zeros(1)]

    fc = FeatureCache(encode, 2 * mib, SessionStats(), min_slices=5, max_bytes=4 * mib)
    for k in range(10):
        assert float(fc.features(k)[0][0][0]) == k
    assert fc.slices == [6, 7, 8, 9]  # min_slices raised the bound to 5, the cap held it at 4


def test_remove_object_and_suspicious_slices(model) -> None:
    s = Session(model, _volume())
    a = s.add_object()
    s.add_points(a, [[18, 22, 12]], [1])
    list(s.propagate())
    sus = s.suspicious_slices(a)
    assert all(0 <= k < 24 for k in sus) and 12 not in sus
    s.remove_object(a)
    assert s.objects == {} and s.label_map().array.max() == 0
    with pytest.raises(PromptError):
        s.profile(a)


def test_session_on_a_model_loaded_from_a_meta_checkpoint(model, tmp_path) -> None:
    """The random model written in Meta's format and loaded back gives the same session."""
    from sam2_med.models import TINY_ARCH, load_model, save_meta_checkpoint

    path = save_meta_checkpoint(model.model, tmp_path / "tiny_meta.pt")
    loaded = load_model(checkpoint=path, arch=TINY_ARCH)
    vol = _volume("oblique")
    out = []
    for lm in (model, loaded):
        s = Session(lm, vol)
        lab = s.add_object()
        s.add_points(lab, [[18, 22, 12]], [1])
        out.append({r.slice_index: r.logits[lab] for r in s.propagate()})
    assert sorted(out[0]) == sorted(out[1]) == [k for k in range(24) if k != 12]
    for k in out[0]:
        np.testing.assert_allclose(out[1][k], out[0][k], atol=1e-5)


def test_bfloat16_autocast_keeps_masks_close(model) -> None:
    import torch

    vol = _volume()
    bf16 = LoadedModel.from_module(model.model, name="tiny-bf16", dtype=torch.bfloat16)
    masks = []
    for lm in (model, bf16):
        s = Session(lm, vol)
        assert s.autocast == (lm is bf16)
        lab = s.add_object()
        s.add_points(lab, [[18, 22, 12]], [1])
        list(s.propagate())
        masks.append(s.label_map().array == lab)
    inter = (masks[0] & masks[1]).sum()
    union = (masks[0] | masks[1]).sum()
    assert union > 0 and inter / union > 0.9


def test_two_objects_propagate_in_one_call_with_progress(model) -> None:
    s = Session(model, _volume(), slice_range=(6, 17))
    a = s.add_object("a")
    b = s.add_object("b", label=300)
    assert b == 300 and s.add_object("renamed", label=a) == a and s.objects[a] == "renamed"
    s.add_points(a, [[18, 22, 10]], [1])
    s.add_points(b, [[12, 30, 14]], [1])
    calls: list[tuple[int, int]] = []
    got = [
        (next(iter(r.masks)), r.slice_index)
        for r in s.propagate(progress=lambda d, t: calls.append((d, t)))
    ]
    # frame-major: one sweep up for both objects' forward stretches, one down for the backward
    # ones; on a shared slice the object added first goes first
    up = [(a, 11), (a, 12), (a, 13), (a, 14), (a, 15), (b, 15), (a, 16), (b, 16), (a, 17), (b, 17)]
    down = [(b, 13), (b, 12), (b, 11), (b, 10)] + [(x, k) for k in (9, 8, 7, 6) for x in (a, b)]
    assert got == up + down
    assert sorted(k for lab, k in got if lab == a) == [k for k in range(6, 18) if k != 10]
    assert [d for d, _ in calls] == [*range(1, 23), 22] and {t for _, t in calls} == {22}
    lm = s.label_map()
    assert lm.array.dtype == np.uint16 and set(np.unique(lm.array)) <= {0, a, b}
    outside = np.ones(24, bool)
    outside[6:18] = False
    assert not np.take(lm.array, np.flatnonzero(outside), axis=2).any()


# -- SAM 2's correction semantics ---------------------------------------------------------------
class _MemorySpy:
    """Counts the memory tokens the decoder attends to, per memory-attention call."""

    def __init__(self, model) -> None:
        self.calls: list[tuple[int, int]] = []  # (memory tokens, object-pointer tokens)
        self._h = model.model.memory_attention.register_forward_pre_hook(
            self._hook, with_kwargs=True
        )

    def _hook(self, module, args, kwargs):
        self.calls.append(
            (int(kwargs["memory"].shape[0]), int(kwargs["num_object_pointer_tokens"]))
        )

    def take(self) -> list[tuple[int, int]]:
        out, self.calls = self.calls, []
        return out

    def close(self) -> None:
        self._h.remove()


def test_correction_click_is_decoded_with_memory_a_first_prompt_is_not(model) -> None:
    s = Session(model, _volume())
    lab = s.add_object()
    spy = _MemorySpy(model)
    try:
        s.add_prompts(lab, points=[[18, 22, 12]], point_labels=[1])  # untracked: no memory
        assert spy.take() == []
        list(s.propagate())
        assert len(spy.take()) == 23  # every tracked slice reads memory
        # a negative click on slice 18, tracked forward from 12: a correction
        s.add_prompts(lab, points=[[20, 22, 18]], point_labels=[0])
        [(tokens, pointers)] = spy.take()
        [(label, k, behind)] = s.stats.correction_memory
        assert (label, k, behind) == (lab, 18, (17, 16, 15, 14, 13))  # 12 is the anchor
        hw = (128 // 16) ** 2
        splits = model.model.hidden_dim // model.model.mem_dim  # a pointer is split in tokens
        # the anchor's memory + the 5 tracked slices', and 16 pointers: the anchor's and those
        # of 17..3 except the anchor (Meta's window of 15 slices behind)
        assert pointers == 15 * splits
        assert tokens == (1 + len(behind)) * hw + pointers
        assert s.anchors(lab) == (12, 18)
        # a first prompt on a slice no propagation reached yet: memory-free again
        other = s.add_object()
        s.add_prompts(other, points=[[18, 22, 5]], point_labels=[1])
        assert spy.take() == []
        # a mask prompt never reads memory, even on a tracked slice
        s.add_prompts(lab, mask=np.ones(s.stream.slice_shape, bool), slice_index=8)
        assert spy.take() == [] and len(s.stats.correction_memory) == 1
        # more clicks on the first anchor stay memory-free (it was made that way)
        s.add_prompts(lab, points=[[19, 22, 12]], point_labels=[1])
        assert spy.take() == []
        # more clicks on the corrected slice are corrections again
        s.add_prompts(lab, points=[[16, 22, 18]], point_labels=[1])
        assert len(spy.take()) == 1 and len(s.stats.correction_memory) == 2
    finally:
        spy.close()


def test_add_prompts_checks_the_combinations_in_one_place(model) -> None:
    s = Session(model, _volume())
    lab = s.add_object()
    mask = np.ones(s.stream.slice_shape, bool)
    with pytest.raises(PromptError, match="whole prompt of its slice"):
        s.add_prompts(lab, points=[[1, 1, 3]], point_labels=[1], mask=mask, slice_index=3)
    with pytest.raises(PromptError, match="whole prompt of its slice"):
        s.add_prompts(lab, box=([1, 1, 3], [5, 5, 3]), mask=mask, slice_index=3)
    with pytest.raises(PromptError, match="no prompt"):
        s.add_prompts(lab)
    with pytest.raises(PromptError, match="go together"):
        s.add_prompts(lab, points=[[1, 1, 3]])
    with pytest.raises(PromptError, match="needs slice_index"):
        s.add_prompts(lab, mask=mask)
    with pytest.raises(PromptError, match="box is on slice 4, the points on slice 3"):
        s.add_prompts(lab, points=[[1, 1, 3]], point_labels=[1], box=([1, 1, 4], [5, 5, 4]))
    with pytest.raises(PromptError, match="not on slice_index 5"):
        s.add_prompts(lab, points=[[1, 1, 3]], point_labels=[1], slice_index=5)
    assert s.anchors(lab) == () and s.interactions()["events"] == [
        {"op": "add_object", "label": lab, "name": "object 1"}
    ]
    # a box with clicks is one decoder run, the box first; later clicks accumulate
    s.add_prompts(lab, points=[[18, 22, 3]], point_labels=[1], box=([10, 12, 3], [26, 30, 3]))
    assert s._objects[lab].prompts[3].labels.tolist() == [2, 3, 1]
    s.add_prompts(lab, points=[[20, 20, 3]], point_labels=[0])
    assert s._objects[lab].prompts[3].labels.tolist() == [2, 3, 1, 0]
    s.add_prompts(lab, box=([11, 12, 3], [26, 30, 3]))  # a new box restarts the slice
    assert s._objects[lab].prompts[3].labels.tolist() == [2, 3]
    assert s.stats.decoded_slices == [3, 3, 3]


def test_prompts_outside_the_slice_range_are_refused(model) -> None:
    s = Session(model, _volume(), slice_range=(10, 15))
    lab = s.add_object()
    with pytest.raises(
        PromptError, match=r"slice 4 is outside this session's slice_range 10\.\.15"
    ):
        s.add_prompts(lab, points=[[18, 22, 4]], point_labels=[1])
    with pytest.raises(PromptError, match="outside this session's slice_range"):
        s.add_prompts(lab, mask=np.ones(s.stream.slice_shape, bool), slice_index=16)
    s.add_prompts(lab, points=[[18, 22, 12]], point_labels=[1])
    done = [r.slice_index for r in s.propagate()]
    assert done == [13, 14, 15, 11, 10]  # never a jump, never outside
    prof = s.profile(lab)
    assert np.isnan(prof.scores[:10]).all() and np.isnan(prof.scores[16:]).all()
    lm = s.label_map().array
    assert not lm[:, :, :10].any() and not lm[:, :, 16:].any()


def test_reset_between_directions_is_medsam2s_default(model) -> None:
    vol = _volume()
    assert Session(model, vol).reset_between_directions is False
    med = LoadedModel.from_module(model.model, name="medsam2")
    assert Session(med, vol).reset_between_directions is True
    assert Session(med, vol, reset_between_directions=False).reset_between_directions is False
    out = {}
    for reset in (False, True):
        s = Session(model, vol, reset_between_directions=reset)
        lab = s.add_object()
        s.add_prompts(lab, points=[[18, 22, 12]], point_labels=[1])
        out[reset] = {r.slice_index: r.logits[lab] for r in s.propagate()}
    for k in range(13, 24):  # the forward part is the same
        np.testing.assert_array_equal(out[True][k], out[False][k])
    assert max(np.abs(out[True][k] - out[False][k]).max() for k in range(12)) > 1e-4


def test_squashed_scores_are_not_called_probabilities(model) -> None:
    s = Session(model, _volume())
    lab = s.add_object()
    s.add_prompts(lab, points=[[18, 22, 12]], point_labels=[1])
    prof = s.profile(lab)
    assert not hasattr(prof, "probabilities")
    sq = prof.squashed_scores
    assert np.isnan(sq[0]) and 0 < sq[12] < 1
    assert sq[12] == pytest.approx(1 / (1 + np.exp(-prof.scores[12])))
