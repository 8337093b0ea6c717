"""Bounded per-slice image-feature cache for :class:`sam2_med.session.Session`.

SAM 2's image encoder output for a slice does not depend on prompts or memory, so a session
computes it at most once per slice while it stays in the cache, and every tracking state of the
session (one per object and run) reads it from here. The cache is an LRU bounded in bytes; the
position encodings, identical for every frame, are stored once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["FeatureCache", "SessionStats"]


@dataclass
class SessionStats:
    """Counters a test or a benchmark can read; nothing here changes behaviour.

    Attributes
    ----------
    encoder_calls : int
        Slices run through the image encoder (a batch of ``n`` slices counts ``n``).
    encoder_batches : int
        Calls of the image encoder.
    decoded_slices : list of int
        Slice index of every mask-decoder run (prompt previews and propagation), in order.
    decoded : list of (int, int)
        ``(label, slice_index)`` of every mask-decoder run, in order.
    correction_memory : list of (int, int, tuple of int)
        ``(label, slice_index, memory_slices)`` of every prompt decoded as a correction: the
        tracked slices whose memory it was given (besides the other anchors).
    cache_hits, cache_misses, cache_evictions : int
        Feature-cache lookups served, missed, and entries dropped for the memory budget.
    cache_peak_bytes : int
        Largest number of bytes the feature cache held.
    """

    encoder_calls: int = 0
    encoder_batches: int = 0
    decoded_slices: list[int] = field(default_factory=list)
    decoded: list[tuple[int, int]] = field(default_factory=list)
    correction_memory: list[tuple[int, int, tuple[int, ...]]] = field(default_factory=list)
    cache_hits: int = 0
    cache_misses: int = 0
    cache_evictions: int = 0
    cache_peak_bytes: int = 0

    def reset(self) -> None:
        """Zero every counter (the cache contents are untouched)."""
        self.__init__()  # type: ignore[misc]


def _owns(t: torch.Tensor) -> bool:
    """True when ``t`` spans its whole storage (not a slice of a batch it would keep alive)."""
    return t.untyped_storage().nbytes() == t.numel() * t.element_size()


def _nbytes(ts: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


class FeatureCache:
    """LRU of backbone features per slice: the :class:`~sam2_med.models.engine.FeatureSource`
    of every tracking state of a session, so all of them share one set of features.

    Parameters
    ----------
    encode : callable
        ``encode(slice_indices) -> (feats, pos)``: ``feats`` a list over slices of lists of
        per-level tensors ``(HW_l, 1, C_l)``; ``pos`` the per-level position encodings
        ``(HW_l, 1, C)`` (the same for every slice).
    budget_bytes : int
        Upper bound of the bytes held by cached features (position encodings excluded: they
        are stored once). At least one slice is always kept.
    stats : SessionStats
        Updated in place.
    min_slices : int
        Raise the bound to hold at least this many slices once the size of one slice's
        features is known (it grows with the square of the model's input size).
    max_bytes : int, optional
        Hard ceiling of the bound, applied after ``min_slices``.
    """

    def __init__(
        self,
        encode: Callable[[Sequence[int]], tuple[list[list[torch.Tensor]], list[torch.Tensor]]],
        budget_bytes: int,
        stats: SessionStats,
        *,
        min_slices: int = 0,
        max_bytes: int | None = None,
    ) -> None:
        self._encode = encode
        self.budget_bytes = int(budget_bytes)
        self.min_slices = int(min_slices)
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        self.stats = stats
        self._feats: OrderedDict[int, list[torch.Tensor]] = OrderedDict()
        self._pos: list[torch.Tensor] | None = None
        self.nbytes = 0

    def __contains__(self, k: int) -> bool:
        return k in self._feats

    def __len__(self) -> int:
        return len(self._feats)

    @property
    def slices(self) -> list[int]:
        """Cached slice indices, least recently used first."""
        return list(self._feats)

    def limit(self, slice_bytes: int) -> int:
        """The byte bound for slices of ``slice_bytes`` each (see the class parameters)."""
        limit = max(self.budget_bytes, self.min_slices * int(slice_bytes))
        return limit if self.max_bytes is None else min(limit, self.max_bytes)

    def _store(self, k: int, feats: list[torch.Tensor]) -> None:
        if k in self._feats:
            self.nbytes -= _nbytes(self._feats.pop(k))
        size = _nbytes(feats)
        limit = self.limit(size)
        old: list[torch.Tensor] | None = None
        if self._feats and self.nbytes + size > limit:
            # full: the least recently used slice's buffers take the new features, so a long
            # volume streams through a fixed set of allocations instead of freeing and
            # allocating megabytes per slice (which fragments the heap and grows RSS)
            _, old = self._feats.popitem(last=False)
            self.nbytes -= _nbytes(old)
            self.stats.cache_evictions += 1
            if [(t.shape, t.dtype) for t in old] == [(t.shape, t.dtype) for t in feats]:
                for dst, src in zip(old, feats, strict=True):
                    dst.copy_(src)
                feats = old
        if feats is not old:
            feats = [t if _owns(t) else t.clone() for t in feats]
        self._feats[k] = feats
        self.nbytes += size
        while self.nbytes > limit and len(self._feats) > 1:
            _, old = self._feats.popitem(last=False)
            self.nbytes -= _nbytes(old)
            self.stats.cache_evictions += 1
        self.stats.cache_peak_bytes = max(self.stats.cache_peak_bytes, self.nbytes)

    def ensure(self, ks: Sequence[int]) -> None:
        """Encode the slices of ``ks`` that are not cached, in one encoder call."""
        missing = [int(k) for k in dict.fromkeys(ks) if int(k) not in self._feats]
        for k in ks:
            if int(k) in self._feats:
                self._feats.move_to_end(int(k))
        if not missing:
            return
        feats, pos = self._encode(missing)
        if self._pos is None:
            self._pos = pos
        with torch.inference_mode():  # the buffers are inference tensors
            for k, f in zip(missing, feats, strict=True):
                self._store(k, f)

    def features(self, k: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(feats, pos)`` of slice ``k``, encoding it if needed."""
        k = int(k)
        if k in self._feats:
            self.stats.cache_hits += 1
            self._feats.move_to_end(k)
        else:
            self.stats.cache_misses += 1
            self.ensure([k])
        assert self._pos is not None
        return self._feats[k], self._pos

    def clear_all(self) -> None:
        """Drop every cached slice."""
        self._feats.clear()
        self.nbytes = 0
