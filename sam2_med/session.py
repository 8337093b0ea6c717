"""Interactive SAM 2 segmentation of one volume along one axis: prompts, anchors, propagation.

A :class:`Session` feeds the slices of a :class:`~sam2_med.Volume` to a SAM 2 video model as
the frames of a video (frame ``k`` = slice ``k`` along the session axis, see
:class:`~sam2_med.frames.SliceStream`), lets a user prompt objects on slices, and propagates
each object through the volume in both directions.

Anchors and memory
------------------
Every slice that received a prompt for an object is an **anchor** of that object: a SAM 2
*conditioning frame*. Its output is decoded once, from the slice's own image features and its
prompts alone (no memory, as SAM 2 does for a first prompt on a frame); when the slice already
had a result for that object, those low-resolution logits are fed to the decoder as the dense
mask prompt, as SAM 2 does for correction clicks. A mask prompt is passed through as the output
(SAM 2's ``_use_mask_as_output``) and the slice's accepted mask is exactly the mask given.

Propagation fills the slices between anchors. Each slice belongs to its **nearest anchor**: the
gap between consecutive anchors ``A < B`` is split at ``m = (A + B) // 2``; ``A + 1 .. m`` is
tracked forward from ``A`` and ``m + 1 .. B - 1`` backward from ``B``; slices beyond the
outermost anchors are tracked outward from them. So every slice is at most half a gap away from
a prompted slice. A new prompt on slice ``j`` between anchors ``L`` and ``R`` takes over the
slices now nearer to ``j`` than to ``L`` or ``R`` (``(L + j) // 2 + 1 .. (j + R) // 2``), and
only those are re-run, from ``j`` outward; every other slice keeps its accepted result (the
slices still nearer to ``L`` or ``R`` are not re-run merely because ``j`` would now also be in
their memory). Optionally (``converge_after``) a correction run stops early in a direction once
its masks agree again with the accepted ones.

Each run from an anchor ``A`` uses a fresh SAM 2 tracking state seeded with *all* anchors of the
object as conditioning frames (SAM 2's memory bank: conditioning frames plus the last 6 tracked
frames and up to 16 object pointers). The run tracks its forward part first and then, in the
same state, its backward part, so the backward part sees the forward slices next to ``A`` as
memory, exactly as Meta's predictor does when it propagates forward and then in reverse without
a reset (MedSAM2's CT script resets between directions instead; keeping the memory lets both
halves agree at the anchor and reproduces Meta's outputs, which the parity test checks).
Accepted slices from earlier runs are *not* put back into the memory of later runs: a run's
outputs depend only on the anchors and the image, which keeps re-propagation deterministic and
the memory held by a session bounded.

Several objects
---------------
Objects are tracked independently (SAM 2 tracks each object with its own memory). The label map
resolves overlaps by **acceptance order**: objects are ranked by the order they were added with
:meth:`Session.add_object`; a voxel claimed by several objects goes to the earliest one, so a
structure accepted first is never overwritten by a later one, which takes only unclaimed voxels.

Cost
----
Image-encoder outputs are cached per slice in an LRU bounded by ``memory_budget_mb`` and shared
by all objects and runs: a re-propagation after a correction re-uses them (about 4 MiB per
slice at 512 px and 16 MiB at 1024 px for SAM 2.1 tiny; the position encodings, equal for every
slice, are stored once). The default bound holds :data:`DEFAULT_CACHE_SLICES` slices at any
input size (at least 512 MiB, at most a quarter of the available memory) and does not grow
with the volume's length. Every slice allocates and frees tensors of a few MiB; the ``sam2-med``
command therefore tunes glibc's allocator for its own process
(:func:`sam2_med._malloc.tune_malloc_for_propagation`, about 5 % faster), which a script that owns
its process may call too. Tracking states hold no pixels (frames are built lazily from the
volume), drop each frame's full-resolution mask once its memory is encoded, and forget the
frames SAM 2 will not read again (it reads the conditioning frames, the last 6 tracked frames
and up to 16 object pointers). Accepted results are stored per slice as bit-packed masks plus
float16 low-resolution logits (the mask prompt of a later correction click). With
``LoadedModel.dtype == torch.bfloat16`` everything runs under bfloat16 autocast.

A session is not thread-safe: call it from one thread at a time (a GUI runs ``propagate`` in a
worker and waits for it before sending prompts).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._session_cache import FeatureCache, SessionStats
from .errors import PromptError
from .frames import SliceStream
from .labels import LabelVolume
from .models.engine import FrameOutput, Sam2Engine, TrackingState, logits_of, score_of

if TYPE_CHECKING:
    from transformers import Sam2VideoModel

    from .intensity import IntensityTransform
    from .models import LoadedModel
    from .volume import Volume

__all__ = ["Session", "SessionStats", "SliceProfile", "SliceResult"]

#: Smallest default size of the image-feature cache: 512 MiB (about 120 slices of SAM 2.1
#: hiera-tiny features at 512 px, 30 at 1024 px).
DEFAULT_MEMORY_BUDGET_MB = 512.0

#: The default cache holds at least this many slices whatever the input size (about 2.1 GiB at
#: 1024 px), so corrections within a typical abdominal CT re-use every feature (see
#: ``Session(memory_budget_mb=...)``).
DEFAULT_CACHE_SLICES = 128


def _available_memory_bytes() -> int:
    """Memory the OS can give this process now (psutil), or 8 GiB when unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return 8 * 2**30


# -- public records -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SliceResult:
    """What the model produced on one slice.

    Attributes
    ----------
    slice_index : int
        Index along the session axis (voxel index along ``Session.axis_index``).
    masks : dict of int -> (A, B) bool ndarray
        Per label, the mask in the shape and order of
        ``np.take(volume.array, slice_index, axis=axis_index)``. Only the labels decoded in this
        step appear.
    scores : dict of int -> float
        Per label, SAM 2's object-score **logit** (> 0: object present).
    areas : dict of int -> int
        Per label, the number of voxels in the mask.
    logits : dict of int -> (h, w) float32 ndarray, optional
        Per label, SAM 2's low-resolution mask logits in frame orientation (``h = w =
        image_size / 4``), for tests and parity checks.
    direction : int
        ``+1`` tracked towards higher slice indices, ``-1`` towards lower, ``0`` a prompt preview.
    """

    slice_index: int
    masks: Mapping[int, np.ndarray]
    scores: Mapping[int, float]
    areas: Mapping[int, int]
    logits: Mapping[int, np.ndarray] | None = None
    direction: int = 0


@dataclass(frozen=True)
class SliceProfile:
    """Per-slice confidence of one object: the data a drift review needs.

    Attributes
    ----------
    label : int
    scores : (n_slices,) float64 ndarray
        Object-score logit per slice; NaN where nothing was computed (not reached, stopped,
        outside the range).
    areas : (n_slices,) float64 ndarray
        Mask voxel count per slice; NaN where nothing was computed.
    anchors : tuple of int
        Prompted slices.
    """

    label: int
    scores: np.ndarray
    areas: np.ndarray
    anchors: tuple[int, ...]

    @property
    def probabilities(self) -> np.ndarray:
        """``sigmoid(scores)``: probability that the object is present, NaN where unknown."""
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-self.scores))


# -- internal records ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Prompt:
    """The prompts of one object on one slice (model-input pixels)."""

    coords: np.ndarray  # (N, 2) float32 x, y; a box is the first two rows, labels 2 and 3
    labels: np.ndarray  # (N,) int32: 1 positive, 0 negative, 2/3 box corners
    mask: np.ndarray | None = None  # (A, B) bool, slice order

    @property
    def has_box(self) -> bool:
        return bool(self.labels.size >= 2 and self.labels[0] == 2)


@dataclass(frozen=True)
class _Record:
    """An accepted result of one object on one slice."""

    bits: np.ndarray  # packbits of the (A, B) mask
    area: int
    score: float
    logits: torch.Tensor | None  # (h, w) float16 low-resolution logits


@dataclass
class _Object:
    label: int
    name: str
    prompts: dict[int, _Prompt] = field(default_factory=dict)
    cond: dict[int, dict[str, Any]] = field(default_factory=dict)  # anchor -> SAM 2 output
    results: dict[int, _Record] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)
    generation: int = 0

    @property
    def anchors(self) -> list[int]:
        return sorted(self.prompts)

    def snapshot(self) -> tuple:
        return (dict(self.prompts), dict(self.cond), dict(self.results), set(self.dirty))

    def restore(self, snap: tuple) -> None:
        self.prompts, self.cond, self.results, self.dirty = (
            dict(snap[0]),
            dict(snap[1]),
            dict(snap[2]),
            set(snap[3]),
        )
        self.generation += 1


@dataclass
class _Run:
    """Tracking from one anchor: ``up`` slices (ascending) then ``down`` slices (descending)."""

    label: int
    anchor: int
    generation: int
    steps: list[tuple[int, int]]  # (slice, direction)
    state: Any = None
    pos: int = 0
    empty_run: dict[int, int] = field(default_factory=lambda: {1: 0, -1: 0})
    stopped: set[int] = field(default_factory=set)  # directions stopped by the empty rule
    agree_run: dict[int, int] = field(default_factory=lambda: {1: 0, -1: 0})
    converged: set[int] = field(default_factory=set)  # directions stopped by agreement


def _as_loaded(model: Any) -> Any:
    from .models import LoadedModel

    if isinstance(model, LoadedModel):
        return model
    return LoadedModel.from_module(model)


class Session:
    """Segment one volume along one axis with a SAM 2 video model.

    Parameters
    ----------
    model : LoadedModel or transformers.Sam2VideoModel
        The model; a bare module is wrapped with ``LoadedModel.from_module`` (float32). With
        ``LoadedModel.dtype == torch.bfloat16`` the image encoder and tracking run under
        bfloat16 autocast.
    volume : Volume
    axis : {"axial", "coronal", "sagittal"}
        Anatomical plane of the slices; the voxel axis is chosen from the affine.
    window : None, "auto", str, (center, width) or IntensityTransform
        Intensity transform, see :func:`sam2_med.intensity.resolve_intensity`.
    image_size : int, optional
        Model input side; must equal the model's (default: the model's).
    memory_budget_mb : float, optional
        Bound of the image-feature cache in MiB (LRU; at least one slice is always kept).
        None (default): room for :data:`DEFAULT_CACHE_SLICES` slices' features and at least
        :data:`DEFAULT_MEMORY_BUDGET_MB`, but at most a quarter of the memory available when
        the session starts. The bound does not grow with the volume's length, so a long
        volume streams through the cache; a correction re-encodes only evicted slices.
    stop_after_empty : int, optional
        Stop tracking in a direction after this many consecutive slices whose object score says
        "absent" (logit <= 0). The slices beyond are left empty (NaN in :meth:`profile`).
    max_slices : int, optional
        Track at most this many slices from each anchor in each direction.
    slice_range : (int, int), optional
        Inclusive range of slice indices propagation may fill (default: all).
    encoder_batch : int
        Slices encoded together when tracking reaches an uncached slice (look-ahead along the
        run; 1 disables batching).
    converge_after : int, optional
        Early stop of corrections: a run that re-computes slices which already had an accepted
        result stops in a direction after this many consecutive slices whose new mask agrees
        with the accepted one (intersection over union >= ``converge_iou``; two empty masks
        agree); the accepted results beyond are kept. None: always run to the end.
    converge_iou : float
        Agreement threshold of ``converge_after``.
    undo_depth : int
        Interactions :meth:`undo` can take back.

    Attributes
    ----------
    stream : SliceStream
    axis : str
    axis_index : int
        Voxel axis of the slices.
    n_slices : int
    stats : SessionStats
        Encoder/decoder counters for tests and benchmarks.
    """

    def __init__(
        self,
        model: LoadedModel | Sam2VideoModel,
        volume: Volume,
        *,
        axis: str = "axial",
        window: str | tuple[float, float] | IntensityTransform | None = "auto",
        image_size: int | None = None,
        memory_budget_mb: float | None = None,
        stop_after_empty: int | None = None,
        max_slices: int | None = None,
        slice_range: tuple[int, int] | None = None,
        encoder_batch: int = 1,
        converge_after: int | None = None,
        converge_iou: float = 0.98,
        undo_depth: int = 50,
    ) -> None:
        self.loaded = _as_loaded(model)
        self.model: Sam2VideoModel = self.loaded.model
        self.engine = Sam2Engine(self.model)
        size = int(self.loaded.image_size)
        if image_size is not None and int(image_size) != size:
            raise ValueError(
                f"image_size {image_size} differs from the model's input size {size}; the "
                "model's configuration fixes it"
            )
        self.stream = SliceStream(volume, axis=axis, intensity=window, image_size=size)
        self.volume = volume
        self.axis = self.stream.axis
        self.axis_index = self.stream.axis_index
        self.n_slices = self.stream.n_slices
        if stop_after_empty is not None and int(stop_after_empty) < 1:
            raise ValueError("stop_after_empty must be >= 1 or None")
        if max_slices is not None and int(max_slices) < 0:
            raise ValueError("max_slices must be >= 0 or None")
        self.stop_after_empty = None if stop_after_empty is None else int(stop_after_empty)
        self.max_slices = None if max_slices is None else int(max_slices)
        lo, hi = (0, self.n_slices - 1) if slice_range is None else map(int, slice_range)
        if not 0 <= lo <= hi < self.n_slices:
            raise ValueError(f"slice_range {slice_range} outside 0..{self.n_slices - 1}")
        self.slice_range = (lo, hi)
        self.encoder_batch = max(1, int(encoder_batch))
        if converge_after is not None and int(converge_after) < 1:
            raise ValueError("converge_after must be >= 1 or None")
        self.converge_after = None if converge_after is None else int(converge_after)
        self.converge_iou = float(converge_iou)
        self.undo_depth = int(undo_depth)
        self.device = torch.device(self.loaded.device)
        self.autocast = self.loaded.dtype == torch.bfloat16
        self.stats = SessionStats()
        default = memory_budget_mb is None  # then the bound scales with the slice size
        self._cache = FeatureCache(
            self._encode,
            int((DEFAULT_MEMORY_BUDGET_MB if default else memory_budget_mb) * 2**20),
            self.stats,
            min_slices=DEFAULT_CACHE_SLICES if default else 0,
            max_bytes=_available_memory_bytes() // 4 if default else None,
        )
        self._objects: dict[int, _Object] = {}
        self._history: list[tuple[int, tuple]] = []
        self._suspended: _Run | None = None
        self._n_mem = self.engine.num_maskmem - 1  # non-conditioning memory frames read
        self._n_ptr = self.engine.max_object_pointers - 1  # non-cond pointers read

    # -- objects ----------------------------------------------------------------------------
    @property
    def objects(self) -> dict[int, str]:
        """Label value -> name, in the order the objects were added (their priority)."""
        return {lab: o.name for lab, o in self._objects.items()}

    def add_object(self, name: str | None = None, label: int | None = None) -> int:
        """Add an object to segment and return its label value.

        Parameters
        ----------
        name : str, optional
            Defaults to ``"object <label>"``.
        label : int, optional
            Label value (1..65535) to use; default: the smallest unused. Adding a label that
            exists only renames it.

        Returns
        -------
        int
        """
        if label is None:
            label = 1
            while label in self._objects:
                label += 1
        label = int(label)
        if not 1 <= label <= 65535:
            raise ValueError(f"label must be in 1..65535, got {label}")
        if label in self._objects:
            if name is not None:
                self._objects[label].name = str(name)
            return label
        self._objects[label] = _Object(label, str(name) if name else f"object {label}")
        return label

    def remove_object(self, label: int) -> None:
        """Forget an object: prompts, results and its undo history."""
        self._obj(label)
        del self._objects[int(label)]
        self._history = [(lab, s) for lab, s in self._history if lab != int(label)]
        if self._suspended is not None and self._suspended.label == int(label):
            self._suspended = None

    def anchors(self, label: int) -> tuple[int, ...]:
        """Prompted slices of an object, ascending."""
        return tuple(self._obj(label).anchors)

    def _obj(self, label: int) -> _Object:
        try:
            return self._objects[int(label)]
        except KeyError:
            raise PromptError(
                f"no object with label {label}; add it with add_object() first "
                f"(objects: {sorted(self._objects)})"
            ) from None

    # -- prompts ----------------------------------------------------------------------------
    def _slice_of(self, ijk: np.ndarray, what: str) -> int:
        ijk = np.asarray(ijk)
        if ijk.ndim != 2 or ijk.shape[1] != 3 or ijk.shape[0] == 0:
            raise PromptError(f"{what} must be voxel indices of shape (N, 3), got {ijk.shape}")
        if not np.all(np.isfinite(ijk.astype(np.float64))):
            raise PromptError(f"{what} contain non-finite values")
        if not np.all(np.equal(np.mod(ijk.astype(np.float64), 1), 0)):
            raise PromptError(f"{what} must be integer voxel indices, got {ijk.tolist()}")
        ijk = ijk.astype(np.int64)
        shape = np.asarray(self.volume.shape)
        bad = np.any((ijk < 0) | (ijk >= shape), axis=1)
        if bad.any():
            raise PromptError(
                f"{what} {ijk[bad].tolist()} outside the volume of shape {tuple(shape)}"
            )
        ks = np.unique(ijk[:, self.axis_index])
        if ks.size != 1:
            raise PromptError(
                f"{what} lie on several {self.axis} slices {ks.tolist()} (voxel axis "
                f"{self.axis_index}); all prompts of one call must be on one slice"
            )
        return int(ks[0])

    def add_points(
        self,
        label: int,
        points_ijk: np.ndarray | Sequence,
        point_labels: np.ndarray | Sequence,
        *,
        box: tuple[np.ndarray | Sequence, np.ndarray | Sequence] | None = None,
    ) -> SliceResult:
        """Add clicks on one slice; that slice becomes an anchor of the object.

        Parameters
        ----------
        label : int
            The object.
        points_ijk : (N, 3) array_like of int
            Voxel indices ``(i, j, k)`` of ``volume.array``, all on one slice along the session
            axis.
        point_labels : (N,) array_like of int
            1 = positive (inside), 0 = negative (outside).
        box : (corner_a_ijk, corner_b_ijk), optional
            A box on the same slice given together with the clicks, in one decoder run (as
            :meth:`add_box` followed by clicks would be, except that the clicks do not see the
            box-only result as a mask prompt). It restarts the slice's prompts like
            :meth:`add_box`.

        Returns
        -------
        SliceResult
            The preview of that slice (the object's new anchor output).

        Notes
        -----
        Clicks accumulate on the slice after any earlier clicks or box; they replace a mask
        prompt of that slice (the mask's logits still guide the decoder). When the slice already
        has a result for the object, its low-resolution logits are the decoder's mask prompt.
        """
        obj = self._obj(label)
        pts = np.asarray(points_ijk)
        if pts.ndim == 1 and pts.size == 3:
            pts = pts[None]
        k = self._slice_of(pts, "points")
        labs = np.asarray(point_labels).reshape(-1)
        if labs.shape[0] != pts.shape[0]:
            raise PromptError(f"{pts.shape[0]} points but {labs.shape[0]} point labels")
        if not np.all(np.isin(labs, (0, 1))):
            raise PromptError(
                f"point labels must be 1 (positive) or 0 (negative), got {labs.tolist()}"
            )
        _, xy = self.stream.voxel_to_model_xy(pts.astype(np.int64))
        old = obj.prompts.get(k)
        if box is not None:
            bk, bxy = self._box_xy(box[0], box[1])
            if bk != k:
                raise PromptError(f"the box is on slice {bk}, the points on slice {k}")
            coords = np.concatenate([bxy, xy.astype(np.float32)])
            plabs = np.concatenate([np.array([2, 3], np.int32), labs.astype(np.int32)])
            return self._prompt(obj, k, _Prompt(coords, plabs))
        if old is not None and old.mask is None:
            coords = np.concatenate([old.coords, xy.astype(np.float32)])
            plabs = np.concatenate([old.labels, labs.astype(np.int32)])
        else:
            coords, plabs = xy.astype(np.float32), labs.astype(np.int32)
        return self._prompt(obj, k, _Prompt(coords, plabs))

    def add_box(
        self, label: int, corner_a_ijk: np.ndarray | Sequence, corner_b_ijk: np.ndarray | Sequence
    ) -> SliceResult:
        """Add a box on one slice; that slice becomes an anchor of the object.

        Parameters
        ----------
        label : int
        corner_a_ijk, corner_b_ijk : (3,) array_like of int
            Voxel indices of two opposite corners on the same slice; the box spans the centres
            of the two corner voxels (any order).

        Returns
        -------
        SliceResult

        Notes
        -----
        A box restarts the slice's prompts (as in SAM 2, a box comes before any click): earlier
        clicks, box or mask on that slice are replaced. Add clicks after the box to refine it.
        """
        obj = self._obj(label)
        k, box = self._box_xy(corner_a_ijk, corner_b_ijk)
        return self._prompt(obj, k, _Prompt(box, np.array([2, 3], np.int32)))

    def _box_xy(self, corner_a_ijk, corner_b_ijk) -> tuple[int, np.ndarray]:
        """Slice index and (2, 2) float32 model-pixel box ``[[x0, y0], [x1, y1]]``."""
        corners = np.stack(
            [np.asarray(corner_a_ijk).reshape(-1), np.asarray(corner_b_ijk).reshape(-1)]
        )
        k = self._slice_of(corners, "box corners")
        _, xy = self.stream.voxel_to_model_xy(corners.astype(np.int64))
        return k, np.stack([xy.min(axis=0), xy.max(axis=0)]).astype(np.float32)

    def add_mask(self, label: int, slice_index: int, mask2d: np.ndarray) -> SliceResult:
        """Give the object's mask on one slice; that slice becomes an anchor.

        Parameters
        ----------
        label : int
        slice_index : int
            Index along the session axis.
        mask2d : (A, B) array_like of bool
            Shaped like ``np.take(volume.array, slice_index, axis=session.axis_index)``.
            Replaces any clicks or box of that slice; the slice's accepted mask is exactly this.

        Returns
        -------
        SliceResult
        """
        obj = self._obj(label)
        k = int(slice_index)
        if not 0 <= k < self.n_slices:
            raise PromptError(f"slice index {k} outside 0..{self.n_slices - 1}")
        m = np.asarray(mask2d)
        if m.shape != self.stream.slice_shape:
            raise PromptError(
                f"mask shape {m.shape} differs from the {self.axis} slice shape "
                f"{self.stream.slice_shape} (np.take(volume.array, k, axis={self.axis_index}))"
            )
        m = m.astype(bool).copy()
        m.flags.writeable = False
        return self._prompt(obj, k, _Prompt(np.zeros((0, 2), np.float32), np.zeros(0, np.int32), m))

    def _prompt(self, obj: _Object, k: int, prompt: _Prompt) -> SliceResult:
        prior = None
        if prompt.mask is None:
            old = obj.results.get(k)
            if old is not None and old.logits is not None:
                prior = old.logits.to(torch.float32).clamp(-32.0, 32.0)[None, None]
        out = self._decode_anchor(obj.label, k, prompt, prior)
        self._history.append((obj.label, obj.snapshot()))
        del self._history[: max(0, len(self._history) - self.undo_depth)]
        # slices this anchor changes: its territory, the slices nearer to it than to the
        # neighbouring anchors (same midpoint rule as _plan); the range ends without one
        lo, hi = self.slice_range
        below = [a for a in obj.anchors if a < k]
        above = [a for a in obj.anchors if a > k]
        start = (below[-1] + k) // 2 + 1 if below else lo
        stop = (k + above[0]) // 2 if above else hi
        obj.prompts[k] = prompt
        obj.cond[k] = out
        obj.dirty.update(s for s in range(max(start, lo), min(stop, hi) + 1) if s != k)
        obj.dirty.discard(k)
        obj.generation += 1
        logits = logits_of(out).to("cpu", torch.float32)  # results live on the host
        mask = (
            prompt.mask
            if prompt.mask is not None
            else self.stream.frame_logits_to_slice(logits) > 0
        )
        score = score_of(out)
        obj.results[k] = self._record(mask, score, logits)
        return SliceResult(
            k,
            {obj.label: np.array(mask, bool)},
            {obj.label: score},
            {obj.label: int(mask.sum())},
            {obj.label: logits.numpy().copy()},
            0,
        )

    def undo(self) -> bool:
        """Take back the last prompt (with the propagation it caused).

        Restores the object's prompts, anchors, masks and pending work to what they were
        before that prompt. Returns False when there is nothing to undo.
        """
        while self._history:
            label, snap = self._history.pop()
            obj = self._objects.get(label)
            if obj is None:
                continue
            obj.restore(snap)
            if self._suspended is not None and self._suspended.label == label:
                self._suspended = None
            return True
        return False

    # -- model calls ------------------------------------------------------------------------
    def _compute(self) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.autocast:
            stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
        return stack

    def _encode(self, ks: Sequence[int]) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
        pixels = self.stream.frames(list(ks)).to(self.device)
        with self._compute():
            feats, pos = self.engine.encode(pixels)
        self.stats.encoder_calls += len(ks)
        self.stats.encoder_batches += 1
        # views into the encoder output; the cache copies them into its own buffers
        return feats, pos

    def _new_state(self, obj: _Object | None) -> TrackingState:
        return self.engine.new_state(self.n_slices, self._cache, obj.cond if obj else None)

    def _decode_anchor(
        self, label: int, k: int, prompt: _Prompt, prior: torch.Tensor | None
    ) -> FrameOutput:
        st = self._new_state(None)
        self._cache.ensure([k])
        with self._compute():
            if prompt.mask is not None:
                out = self.engine.decode_prompt(st, k, mask=self.stream.mask_to_frame(prompt.mask))
            else:
                out = self.engine.decode_prompt(
                    st,
                    k,
                    points=torch.from_numpy(prompt.coords),
                    labels=torch.from_numpy(prompt.labels),
                    prior=None if prior is None else prior[0, 0],
                )
        self.stats.decoded_slices.append(k)
        self.stats.decoded.append((label, k))
        return out

    def _record(self, mask: np.ndarray, score: float, logits: torch.Tensor | None) -> _Record:
        mask = np.asarray(mask, bool)
        return _Record(
            np.packbits(mask, axis=None),
            int(mask.sum()),
            float(score),
            None if logits is None else logits.detach().to(torch.float16).clone(),
        )

    def _agrees(self, mask: np.ndarray, rec: _Record) -> bool:
        union = int(mask.sum()) + rec.area
        if union == 0:
            return True
        inter = int((mask & self._mask_of(rec)).sum())
        return inter / (union - inter) >= self.converge_iou

    def _mask_of(self, rec: _Record) -> np.ndarray:
        a, b = self.stream.slice_shape
        return np.unpackbits(rec.bits, count=a * b).reshape(a, b).astype(bool)

    # -- propagation ------------------------------------------------------------------------
    def _plan(self, obj: _Object, exclude: set[int] = frozenset()) -> list[_Run]:  # type: ignore[assignment]
        """Runs that bring the object's dirty slices up to date (and drop unreachable ones).

        ``exclude``: dirty slices a resumed run will compute already.
        """
        lo, hi = self.slice_range
        anchors = obj.anchors
        runs: list[_Run] = []
        reached: set[int] = set()
        for n, a in enumerate(anchors):
            up_hi = hi if n == len(anchors) - 1 else min(hi, (a + anchors[n + 1]) // 2)
            down_lo = lo if n == 0 else max(lo, (anchors[n - 1] + a) // 2 + 1)
            todo = obj.dirty - exclude
            up_t = [s for s in todo if a < s <= up_hi]
            down_t = [s for s in todo if down_lo <= s < a]
            up = list(range(max(a + 1, lo), max(up_t) + 1)) if up_t else []
            down = list(range(min(a - 1, hi), min(down_t) - 1, -1)) if down_t else []
            if self.max_slices is not None:
                up = [s for s in up if s - a <= self.max_slices]
                down = [s for s in down if a - s <= self.max_slices]
            reached.update(up)
            reached.update(down)
            if up or down:
                runs.append(
                    _Run(
                        obj.label, a, obj.generation, [(s, 1) for s in up] + [(s, -1) for s in down]
                    )
                )
        # dirty slices no run reaches (slice limits): their stale results go
        for s in obj.dirty - reached - exclude:
            obj.results.pop(s, None)
        obj.dirty &= reached | exclude
        return runs

    def pending(self, label: int | None = None) -> int:
        """Number of slices that propagation still has to (re)compute."""
        labels = list(self._objects) if label is None else [int(label)]
        return sum(len(self._obj(lab).dirty) for lab in labels)

    def propagate(
        self,
        *,
        cancel: Callable[[], bool] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[SliceResult]:
        """Track every object from its anchors through the slices that need it.

        The first call covers the whole range (subject to the stop rules); after a new prompt
        on slice ``j`` only the slices nearer to ``j`` than to its neighbouring anchors are
        re-run, from ``j`` outward (see the module docstring). Objects are processed in the
        order they were added, each anchor's run forward first, then backward.

        Parameters
        ----------
        cancel : callable, optional
            Polled before each slice; returning True stops propagation there. The session stays
            consistent and the next call resumes the unfinished part without recomputing what
            was done.
        progress : callable, optional
            ``progress(done, total)`` after each slice; ``total`` counts the slices planned in
            this call (a stop rule may end a run early, and ``done`` then jumps).

        Yields
        ------
        SliceResult
            One per slice and object as it is computed (``masks`` holds that object only).
        """
        runs: list[_Run] = []
        resumed: set[int] = set()
        if self._suspended is not None:
            run = self._suspended
            self._suspended = None
            obj = self._objects.get(run.label)
            if obj is not None and obj.generation == run.generation:
                runs.append(run)
                resumed = {s for s, _ in run.steps[run.pos :]}
        for obj in self._objects.values():
            if obj.dirty:
                exclude = resumed if runs and runs[0].label == obj.label else set()
                runs.extend(self._plan(obj, exclude))
        total = sum(len(r.steps) - r.pos for r in runs)
        done = 0
        for run in runs:
            start = run.pos
            gen = self._step_run(run, cancel)
            try:
                for res in gen:
                    if progress is not None:
                        progress(done + run.pos - start, total)
                    yield res
            finally:
                if run.pos < len(run.steps):  # cancelled, or the caller stopped iterating
                    gen.close()
                    self._suspended = run
            if run.pos < len(run.steps):
                return
            done += run.pos - start
        if progress is not None and total:
            progress(total, total)

    def _step_run(self, run: _Run, cancel: Callable[[], bool] | None) -> Iterator[SliceResult]:
        obj = self._objects[run.label]
        if run.state is None:
            run.state = self._new_state(obj)
        st = run.state
        while run.pos < len(run.steps):
            k, d = run.steps[run.pos]
            if d in run.stopped:
                obj.results[k] = self._record(
                    np.zeros(self.stream.slice_shape, bool), math.nan, None
                )
                obj.dirty.discard(k)
                run.pos += 1
                continue
            if d in run.converged:  # the accepted result stands
                obj.dirty.discard(k)
                run.pos += 1
                continue
            if cancel is not None and cancel():
                return
            ahead = [s for s, dd in run.steps[run.pos : run.pos + self.encoder_batch] if dd == d]
            self._cache.ensure(ahead)
            with self._compute():
                out = self.engine.track(st, k, reverse=d < 0)
            self.stats.decoded_slices.append(k)
            self.stats.decoded.append((obj.label, k))
            logits = logits_of(out).to("cpu", torch.float32)  # results live on the host
            score = score_of(out)
            mask = self.stream.frame_logits_to_slice(logits) > 0
            old = obj.results.get(k)
            obj.results[k] = self._record(mask, score, logits)
            obj.dirty.discard(k)
            self._prune(run, k, d)
            run.pos += 1
            if self.converge_after is not None:
                agree = old is not None and math.isfinite(old.score) and self._agrees(mask, old)
                run.agree_run[d] = run.agree_run[d] + 1 if agree else 0
                if run.agree_run[d] >= self.converge_after:
                    run.converged.add(d)
            if self.stop_after_empty is not None:
                run.empty_run[d] = run.empty_run[d] + 1 if score <= 0 else 0
                if run.empty_run[d] >= self.stop_after_empty:
                    run.stopped.add(d)
            yield SliceResult(
                k,
                {obj.label: mask},
                {obj.label: score},
                {obj.label: int(mask.sum())},
                {obj.label: logits.numpy().copy()},
                d,
            )
        run.state = None  # the run is over: free its memory bank

    def _prune(self, run: _Run, k: int, d: int) -> None:
        """Drop what SAM 2 will not read again from the run's tracking state."""
        down_pending = d > 0 and any(dd < 0 for _, dd in run.steps[run.pos + 1 :])
        a = run.anchor

        def keep(f: int) -> str:
            behind = (k - f) * d
            near_anchor = down_pending and 0 < f - a
            if (0 <= behind <= self._n_ptr) or (near_anchor and f - a <= self._n_ptr):
                if behind > self._n_mem and not (near_anchor and f - a <= self._n_mem):
                    return "pointer"
                return "all"
            return "none"

        self.engine.forget(run.state, keep)

    # -- results ----------------------------------------------------------------------------
    def mask(self, label: int, slice_index: int) -> np.ndarray | None:
        """The accepted (A, B) bool mask of an object on one slice, or None if not computed."""
        rec = self._obj(label).results.get(int(slice_index))
        return None if rec is None else self._mask_of(rec)

    def object_volume(self, label: int) -> np.ndarray:
        """(I, J, K) bool mask of one object alone (no exclusion between objects)."""
        out = np.zeros(self.volume.shape, bool)
        for k, rec in self._obj(label).results.items():
            if rec.area:
                out[self.stream.slice_to_volume_index(k)] = self._mask_of(rec)
        return out

    def label_map(self) -> LabelVolume:
        """All objects merged into one label map on the volume's grid.

        Returns
        -------
        LabelVolume
            ``uint8`` (``uint16`` when a label exceeds 255), shape ``volume.shape``, names from
            :attr:`objects`. Overlaps go to the object added first: later objects take only
            voxels no earlier object claimed.
        """
        dtype = np.uint8 if max(self._objects, default=0) <= 255 else np.uint16
        out = np.zeros(self.volume.shape, dtype)
        for label, obj in self._objects.items():
            for k, rec in obj.results.items():
                if not rec.area:
                    continue
                idx = self.stream.slice_to_volume_index(k)
                view = out[idx]
                view[self._mask_of(rec) & (view == 0)] = label
        return LabelVolume(out, self.volume, dict(self.objects))

    def profile(self, label: int) -> SliceProfile:
        """Per-slice object score and mask area of one object (NaN where not computed)."""
        obj = self._obj(label)
        scores = np.full(self.n_slices, np.nan)
        areas = np.full(self.n_slices, np.nan)
        for k, rec in obj.results.items():
            if math.isfinite(rec.score):
                scores[k] = rec.score
                areas[k] = rec.area
        return SliceProfile(int(label), scores, areas, tuple(obj.anchors))

    def suspicious_slices(
        self,
        label: int,
        *,
        min_score: float = 0.0,
        max_area_change: float = 0.5,
        min_area: int = 20,
    ) -> list[int]:
        """Slices worth a look in a drift review.

        A computed, non-anchor slice is suspicious when its object-score logit is below
        ``min_score`` while slices on both sides have the object (a hole in the object), or
        when its area differs from the previous computed slice's by more than
        ``max_area_change`` of the larger of the two (both at least ``min_area`` voxels, or one
        of them empty while the other exceeds ``min_area``).

        Returns
        -------
        list of int
            Ascending slice indices.
        """
        prof = self.profile(label)
        anchors = set(prof.anchors)
        s, a = prof.scores, prof.areas
        done = np.flatnonzero(np.isfinite(s))
        out: set[int] = set()
        present = done[s[done] > min_score]
        for k in done:
            if k in anchors:
                continue
            if s[k] <= min_score and present.size and present.min() < k < present.max():
                out.add(int(k))
        for p, k in itertools.pairwise(done):
            if k - p != 1:
                continue
            big = max(a[p], a[k])
            if big >= min_area and abs(a[k] - a[p]) > max_area_change * big:
                out.add(int(k) if k not in anchors else int(p))
        return sorted(out - anchors)
