"""Frame-major propagation of several objects, and a cancel that lands inside a slice."""

from __future__ import annotations

import numpy as np
import pytest

from sam2_med import Volume
from sam2_med.models import LoadedModel, random_model, tiny_config
from sam2_med.session import Session

TINY_CACHE_MB = 1e-6  # the feature cache keeps one slice: every eviction shows as an encoder call


@pytest.fixture(scope="module")
def model():
    return LoadedModel.from_module(random_model(tiny_config(128), seed=0), name="tiny-test")


def _volume(n: int = 24) -> Volume:
    rng = np.random.default_rng(0)
    arr = rng.normal(0.0, 30.0, (36, 44, n)).astype(np.float32)
    ii, jj, kk = np.meshgrid(*[np.linspace(-1, 1, s) for s in arr.shape], indexing="ij")
    arr[(ii / 0.6) ** 2 + (jj / 0.5) ** 2 + (kk / 0.8) ** 2 < 1] += 250.0
    return Volume(arr, np.diag([-1.0, -1.0, 2.0, 1.0]), modality="CT")


CLICKS = {1: [18, 22, 12], 2: [10, 30, 12], 3: [26, 14, 12]}


def _session(model, vol, labels, clicks=CLICKS, **kw) -> Session:
    s = Session(model, vol, window=(40, 400), **kw)
    for lab in labels:
        s.add_object(label=lab)
        s.add_points(lab, [clicks[lab]], [1])
    return s


def _logits(session: Session) -> dict[tuple[int, int], np.ndarray]:
    return {(lab, r.slice_index): r.logits[lab] for r in session.propagate() for lab in r.logits}


def test_encoder_runs_once_per_slice_for_all_objects_with_a_tiny_cache(model) -> None:
    vol = _volume()
    many = _session(model, vol, [1, 2, 3], memory_budget_mb=TINY_CACHE_MB)
    many.stats.reset()
    together = _logits(many)
    one_by_one = _logits(
        _session(model, vol, [1, 2, 3], memory_budget_mb=TINY_CACHE_MB, batch_objects=False)
    )
    assert one_by_one.keys() == together.keys()
    for key, logits in one_by_one.items():
        np.testing.assert_allclose(together[key], logits, rtol=0, atol=1e-6)
    # one encoder call per slice for three objects; object by object it was 3 x 23
    assert many.stats.encoder_calls == 23 and many.stats.encoder_batches == 23
    assert len(many.stats.decoded) == 3 * 23
    # each object's results are those of the object tracked alone
    for lab in CLICKS:
        alone = _session(model, vol, [lab], memory_budget_mb=TINY_CACHE_MB)
        for (lab_, k), logits in _logits(alone).items():
            np.testing.assert_allclose(together[(lab_, k)], logits, rtol=0, atol=1e-6)


def test_objects_on_different_slices_share_the_sweeps(model) -> None:
    """Anchors at 8, 12 and 16: the slices between the outer anchors are in both sweeps, so
    with a one-slice cache they are encoded twice, never once per object."""
    vol = _volume()
    clicks = {1: [18, 22, 8], 2: [10, 30, 12], 3: [26, 14, 16]}
    s = _session(model, vol, [1, 2, 3], clicks=clicks, memory_budget_mb=TINY_CACHE_MB)
    s.stats.reset()
    got = _logits(s)
    assert len(got) == 3 * 23
    # up sweep 9..23, down sweep 15..0: 15 + 16 slices; object by object it was 3 x 23
    assert s.stats.encoder_calls == 15 + 16
    # with the default cache every slice is encoded once
    s = _session(model, vol, [1, 2, 3], clicks=clicks)
    enc0 = s.stats.encoder_calls  # the three prompted slices
    assert _logits(s).keys() == got.keys()
    assert s.stats.encoder_calls - enc0 == 24 - 3


class _Spy:
    """Counts calls of a module and flips a flag on the n-th one (a forward pre-hook)."""

    def __init__(self, module, fire_at: int | None = None) -> None:
        self.calls = 0
        self.fire_at = fire_at
        self.fired = False
        self._h = module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args) -> None:
        self.calls += 1
        if self.fire_at is not None and self.calls == self.fire_at:
            self.fired = True

    def remove(self) -> None:
        self._h.remove()


@pytest.mark.parametrize("batch", [False, True])
def test_cancel_inside_a_slice_stops_before_the_slice_ends(model, batch) -> None:
    vol = _volume()
    ref = _logits(_session(model, vol, [1, 2]))
    m = model.model
    s = _session(model, vol, [1, 2], batch_objects=batch)
    s._cache.ensure(range(24))  # features cached: a slice is memory attention + decoder + memory
    # the cancel turns True when slice 15's memory attention starts (object 1's, or both's)
    spy = _Spy(m.memory_attention, fire_at=3 if batch else 5)
    decoder = _Spy(m.mask_decoder)
    results = []
    try:
        for r in s.propagate(cancel=lambda: spy.fired):
            results.append((next(iter(r.masks)), r.slice_index))
    finally:
        spy.remove()
        decoder.remove()
    # two slices finished; the third stopped inside memory attention: its decoder never ran
    assert results == [(1, 13), (2, 13), (1, 14), (2, 14)]
    assert decoder.calls == (2 if batch else 4)
    assert s.pending() == 2 * 23 - 4
    assert s.interactions()["events"][-1] == {"op": "propagate", "slices": 4, "complete": False}
    # the interrupted step left no trace: resuming gives what an uninterrupted run gives
    rest = _logits(s)
    assert set(rest) | {(lab, k) for lab, k in results} == set(ref)
    assert len(s.stats.decoded) == 2 + 2 * 23  # the two prompts, and nothing decoded twice
    for key, logits in rest.items():
        np.testing.assert_allclose(logits, ref[key], rtol=0, atol=1e-6)


def test_stopping_between_the_objects_of_a_batch(model) -> None:
    """A caller that stops after object 1's result on a slice: object 2's result there, computed
    in the same batch, is forgotten and computed again on resume, to the same values."""
    vol = _volume()
    ref = _logits(_session(model, vol, [1, 2]))
    s = _session(model, vol, [1, 2])
    got = {}
    for r in s.propagate():
        lab = next(iter(r.masks))
        got[(lab, r.slice_index)] = r.logits[lab]
        if len(got) == 3:  # (1, 13), (2, 13), (1, 14)
            break
    assert s.pending() == 2 * 23 - 3
    for r in s.propagate():
        lab = next(iter(r.masks))
        got[(lab, r.slice_index)] = r.logits[lab]
    assert got.keys() == ref.keys()
    for key, logits in got.items():
        np.testing.assert_allclose(logits, ref[key], rtol=0, atol=1e-6)


def test_cancel_inside_the_image_encoder(model) -> None:
    vol = _volume()
    s = _session(model, vol, [1], memory_budget_mb=TINY_CACHE_MB)
    s.stats.reset()
    blocks = list(model.model.vision_encoder.backbone.blocks)
    first = _Spy(blocks[0])
    second = _Spy(blocks[1], fire_at=3)  # the 3rd slice encoded: slice 15
    last = _Spy(blocks[-1])
    try:
        got = [r.slice_index for r in s.propagate(cancel=lambda: second.fired)]
    finally:
        for spy in (first, second, last):
            spy.remove()
    assert got == [13, 14]
    # the third encoding stopped after its first block: no later block ran, nothing stored
    assert (first.calls, second.calls, last.calls) == (3, 3, 2)
    assert s.stats.encoder_calls == 2 and 15 not in s._cache
    assert [r.slice_index for r in s.propagate()] == [*range(15, 24), *range(11, -1, -1)]


def test_interruption_hooks_cover_every_stage_and_go_away(model) -> None:
    s = Session(model, _volume())
    names = [name for name, _ in s.engine.checkpoint_modules()]
    assert names[0] == "image encoder block 0" and "image encoder neck" in names
    for stage in ("memory attention layer 0", "prompt encoder", "mask decoder", "memory encoder"):
        assert stage in names
    mods = [mod for _, mod in s.engine.checkpoint_modules()]
    before = [len(mod._forward_pre_hooks) for mod in mods]
    with s.engine.interruptible(lambda: False):
        assert [len(mod._forward_pre_hooks) for mod in mods] == [n + 1 for n in before]
    assert [len(mod._forward_pre_hooks) for mod in mods] == before
