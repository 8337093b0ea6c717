"""Interactive SAM 2 segmentation of one volume along one axis: prompts, anchors, propagation.

A :class:`Session` feeds the slices of a :class:`~sam2_med.Volume` to a SAM 2 video model as
the frames of a video (frame ``k`` = slice ``k`` along the session axis, see
:class:`~sam2_med.frames.SliceStream`), lets a user prompt objects on slices, and propagates
each object through the volume in both directions. Every front end (the Python API, the command
line, batch jobs and the napari widget) sends prompts through one method,
:meth:`Session.add_prompts`, and every session records its interactions in order
(:meth:`Session.interactions`), so that :func:`sam2_med.interactions.replay` rebuilds its label
map voxel for voxel.

Anchors and memory
------------------
Every slice that received a prompt for an object is an **anchor** of that object: a SAM 2
*conditioning frame*. How its output is decoded follows Meta's ``SAM2VideoPredictor``:

* a prompt on a slice that has no tracked result for the object is decoded from the slice's own
  image features and its prompts alone (SAM 2's initial conditioning frame, no memory);
* a prompt on a slice that propagation already filled for that object is a **correction**:
  decoded as SAM 2 decodes one, with the memory of the object's conditioning frames, of the
  tracked slices behind it in the direction it was reached (the last 6) and their object
  pointers (up to 15), and with the slice's earlier low-resolution logits as the dense mask
  prompt. It then becomes an anchor (Meta's ``add_all_frames_to_correct_as_cond=True``). The
  session keeps each tracked slice's logits, object score and object pointer, and re-encodes
  the memory of those neighbours from them when a correction needs it, exactly as it was first
  encoded (a few memory-encoder runs per correction instead of keeping every slice's memory
  features, so memory stays flat in the number of slices);
* further clicks on an anchor accumulate on its earlier clicks and are decoded the way the
  anchor was first decoded, with its current logits as the mask prompt;
* a mask prompt is the slice's result exactly (SAM 2's ``_use_mask_as_output``; no memory).

Propagation fills the slices between anchors. Each slice belongs to its **nearest anchor**: the
gap between consecutive anchors ``A < B`` is split at ``m = (A + B) // 2``; ``A + 1 .. m`` is
tracked forward from ``A`` and ``m + 1 .. B - 1`` backward from ``B``; slices beyond the
outermost anchors are tracked outward from them. So every slice is at most half a gap away from
a prompted slice. A new prompt on slice ``j`` between anchors ``L`` and ``R`` takes over the
slices now nearer to ``j`` than to ``L`` or ``R`` (``(L + j) // 2 + 1 .. (j + R) // 2``), and
only those are re-run, from ``j`` outward; every other slice keeps its accepted result.
Optionally (``converge_after``) a correction run stops early in a direction once its masks
agree again with the accepted ones.

Each run from an anchor ``A`` uses a fresh SAM 2 tracking state seeded with *all* anchors of the
object as conditioning frames (SAM 2's memory bank: conditioning frames plus the last 6 tracked
frames and up to 16 object pointers). The run tracks its forward part first and then, in the
same state, its backward part, so the backward part sees the forward slices next to ``A`` as
memory, exactly as Meta's predictor does when it propagates forward and then in reverse without
a reset. MedSAM2's CT script resets the memory between the two directions instead
(``reset_between_directions``, part of the ``"medsam2"`` protocol).

Protocols
---------
``protocol="sam2"`` (the default for every model that declares no other) is everything this
docstring describes. ``protocol="medsam2"`` reproduces MedSAM2's published CT script
(:mod:`sam2_med.protocols`): slices in SimpleITK's array layout, 8-bit frames resized by PIL,
prompts mapped ``x * S / W``, a fresh memory bank for the backward pass, no hole filling except
on CUDA, and the largest 3D connected component of each object in :meth:`Session.object_volume`
and :meth:`Session.label_map`. A registered model declares its default protocol and the slice
layout it was trained on (``protocol:`` and ``slice_layout:`` in its YAML file).

Post-processing is Meta's (``"sam2"`` protocol): small holes (``fill_hole_area`` = 8
low-resolution pixels) are filled in every output, computed with scipy
(:mod:`sam2_med.postprocess`); a prompted slice's memory is encoded from its filled logits and a
tracked slice's from its unfilled ones, as Meta does; small foreground sprinkles are removed from
outputs only if ``sprinkle_area`` is set (Meta's video predictor never removes them).

The deliberate departures from Meta's predictor are listed, with their reasons, in the
:class:`Session` docstring and the README.

Several objects
---------------
Objects are tracked independently (SAM 2 tracks each object with its own memory), but
together: propagation is frame-major (:meth:`Session.propagate`), one sweep up the slices for
every forward stretch and one down for every backward stretch, so a slice's image features are
computed once for all the objects on it, whatever their number and the size of the feature
cache. The label map resolves overlaps by **first object added wins**: a voxel claimed by
several objects goes to the one added earliest with :meth:`Session.add_object`; a later object
takes only unclaimed voxels.

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
and up to 16 object pointers). Accepted results are stored per slice and object as a bit-packed
mask, the float32 low-resolution logits (``(S/4)^2`` values: 256 KiB at 1024 px), the object
score and the object pointer. With ``LoadedModel.dtype == torch.bfloat16`` everything runs
under bfloat16 autocast.

A session is not thread-safe: call it from one thread at a time (a GUI runs ``propagate`` in a
worker and waits for it before sending prompts).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
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
from .labels import RUN_RECORD_KEY, LabelVolume
from .models.engine import (
    FrameOutput,
    Interrupted,
    Sam2Engine,
    TrackingState,
    logits_of,
    pointer_of,
    score_logits_of,
    score_of,
)
from .postprocess import fill_holes, remove_sprinkles
from .protocols import (
    check_protocol,
    check_slice_layout,
    default_fill_hole_area,
    largest_component,
)

if TYPE_CHECKING:
    from transformers import Sam2VideoModel

    from .intensity import IntensityTransform
    from .models import LoadedModel
    from .volume import Volume

__all__ = ["INTERACTIONS_SCHEMA", "Session", "SessionStats", "SliceProfile", "SliceResult"]

#: Smallest default size of the image-feature cache: 512 MiB (about 120 slices of SAM 2.1
#: hiera-tiny features at 512 px, 30 at 1024 px).
DEFAULT_MEMORY_BUDGET_MB = 512.0

#: The default cache holds at least this many slices whatever the input size (about 2.1 GiB at
#: 1024 px), so corrections within a typical abdominal CT re-use every feature (see
#: ``Session(memory_budget_mb=...)``).
DEFAULT_CACHE_SLICES = 128

#: Name and version of the interaction log a session writes (:meth:`Session.interactions`;
#: documented in :mod:`sam2_med.interactions`).
INTERACTIONS_SCHEMA = ("sam2-med/interactions", 1)

#: A click is decoded with the slice's earlier logits as mask prompt, clamped as Meta does.
_PRIOR_CLAMP = 32.0


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
        image_size / 4``) after the session's post-processing (hole filling): what the mask
        comes from, and what Meta's predictor outputs.
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
        SAM 2's object-score **logit** per slice (> 0: the model says the object is present);
        NaN where nothing was computed (not reached, stopped, outside the range). It is an
        uncalibrated score, not a probability.
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
    def squashed_scores(self) -> np.ndarray:
        """``sigmoid(scores)`` in (0, 1), NaN where unknown.

        A monotone rescaling of the object-score logit for display; SAM 2's object score is not
        calibrated, so this is **not** the probability that the object is present.
        """
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-self.scores))


# -- internal records ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Prompt:
    """The prompts of one object on one slice (model-input pixels) and how they are decoded."""

    coords: np.ndarray  # (N, 2) float32 x, y; a box is the first two rows, labels 2 and 3
    labels: np.ndarray  # (N,) int32: 1 positive, 0 negative, 2/3 box corners
    mask: np.ndarray | None = None  # (A, B) bool, slice order
    reached: int = 0  # 0: decoded from the slice alone; +1/-1: a correction of a slice tracked
    #                   in that direction, decoded with the memory of the slices behind it

    @property
    def has_box(self) -> bool:
        return bool(self.labels.size >= 2 and self.labels[0] == 2)


@dataclass(frozen=True)
class _Record:
    """An accepted result of one object on one slice."""

    bits: np.ndarray  # packbits of the (A, B) mask
    area: int
    score: float  # object-score logit; NaN: nothing computed (a stop rule left it empty)
    logits: torch.Tensor | None = None  # (h, w) float32 low-res logits before post-processing
    score_logits: torch.Tensor | None = None  # SAM 2's object-score tensor (host)
    pointer: torch.Tensor | None = None  # (1, C) object pointer (host)
    direction: int = 0  # +1/-1: tracked in that direction; 0: a prompted slice

    @property
    def tracked(self) -> bool:
        """A result of tracking that a correction can use as memory."""
        return self.direction != 0 and self.pointer is not None


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
    state_direction: int = 0  # direction the state has tracked in so far (0: none yet)
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


def _declared(loaded: Any) -> tuple[str | None, str | None]:
    """The protocol and slice layout a model declares: the LoadedModel's own, else those of the
    registered model of its name, else None."""
    protocol = getattr(loaded, "protocol", None)
    layout = getattr(loaded, "slice_layout", None)
    if protocol is None or layout is None:
        from .models import get_spec
        from .models.errors import UnknownModelError

        try:
            spec = get_spec(str(getattr(loaded, "name", "custom")))
        except (UnknownModelError, ValueError, KeyError):
            spec = None
        if spec is not None:
            protocol = protocol or spec.protocol
            layout = layout or spec.slice_layout
    return protocol, layout


def resolve_protocol(
    loaded: Any, protocol: str | None = None, slice_layout: str | None = None
) -> tuple[str, str]:
    """The protocol and slice layout a session uses with a model.

    Parameters
    ----------
    loaded : LoadedModel
    protocol, slice_layout : str, optional
        Given explicitly (these win).

    Returns
    -------
    (protocol, slice_layout)
        ``protocol``: as given, else the model's declared one (:class:`LoadedModel`
        ``protocol``, else its registry entry's), else ``"sam2"``. ``slice_layout``: as given,
        else ``"sitk"`` under the ``"medsam2"`` protocol (MedSAM2's script does not reorient),
        else the model's declared layout, else ``"radiological"``.

    Raises
    ------
    ValueError
        An unknown protocol or layout.
    """
    declared_protocol, declared_layout = _declared(loaded)
    p = check_protocol(protocol or declared_protocol or "sam2")
    if slice_layout is None:
        slice_layout = "sitk" if p == "medsam2" else declared_layout or "radiological"
    return p, check_slice_layout(slice_layout)


def _ijk_list(a: np.ndarray) -> list[list[int]]:
    return np.asarray(a, dtype=np.int64).reshape(-1, 3).tolist()


def encode_mask(mask2d: np.ndarray) -> dict[str, Any]:
    """A 2D bool mask as JSON-ready data: shape and base64 of its row-major packbits."""
    m = np.ascontiguousarray(np.asarray(mask2d, dtype=bool))
    return {
        "encoding": "packbits-base64",
        "shape": list(m.shape),
        "data": base64.b64encode(np.packbits(m, axis=None).tobytes()).decode("ascii"),
    }


def decode_mask(data: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_mask` (raises ValueError on malformed data)."""
    if data.get("encoding") != "packbits-base64":
        raise ValueError(f"unknown mask encoding {data.get('encoding')!r}")
    shape = tuple(int(v) for v in data["shape"])
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"a mask must be 2D, got shape {list(shape)}")
    raw = np.frombuffer(base64.b64decode(data["data"], validate=True), dtype=np.uint8)
    n = shape[0] * shape[1]
    if raw.size != (n + 7) // 8:
        raise ValueError(
            f"mask data holds {raw.size} bytes, shape {list(shape)} needs {(n + 7) // 8}"
        )
    return np.unpackbits(raw, count=n).reshape(shape).astype(bool)


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
        Stop tracking in a direction after this many consecutive slices without the object:
        its object score says "absent" (logit <= 0) or its mask holds no voxel. The slices
        beyond are left empty (NaN in :meth:`profile`).
    max_slices : int, optional
        Track at most this many slices from each anchor in each direction.
    slice_range : (int, int), optional
        Inclusive range of slice indices propagation may fill (default: all). Prompts outside
        it are refused (:class:`~sam2_med.errors.PromptError`): tracking never jumps a gap.
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
    fill_hole_area : int, optional
        Meta's hole filling: background regions of at most this many low-resolution pixels
        inside an output become foreground (0 turns it off). Applied where Meta applies it (see
        the module docstring). None (default): the protocol's
        (:func:`sam2_med.protocols.default_fill_hole_area`): 8, Meta's video-predictor setting;
        under ``"medsam2"`` 8 on CUDA and 0 elsewhere, because MedSAM2 fills holes only with
        its CUDA extension and its own code skips the step on a CPU.
    sprinkle_area : int
        Remove foreground regions of at most this many low-resolution pixels from outputs
        (Meta's image predictor's ``max_sprinkle_area``; default 0: off, as in Meta's video
        predictor). Never changes memory.
    reset_between_directions : bool, optional
        Track the backward part of each run from a fresh memory bank (the anchors alone), as
        MedSAM2's CT inference script does (forward, ``reset_state``, prompt again, reverse).
        False: the backward part sees the forward slices next to the anchor, as Meta's
        predictor does without a reset. None (default): True under the ``"medsam2"``
        protocol, False under ``"sam2"``.
    exact_mask_memory : bool
        True (default): a mask prompt's memory is encoded from the exact mask. False: from the
        mask brought to the low-resolution logits and back, as Meta's predictor does.
    protocol : {"sam2", "medsam2"}, optional
        The pipeline around the model (module docstring, :mod:`sam2_med.protocols`). None
        (default): the model's declared one (``LoadedModel.protocol``, else its registry
        entry's ``protocol``), else ``"sam2"``.
    slice_layout : {"radiological", "sitk"}, optional
        How slices become frames. None (default): ``"sitk"`` under ``"medsam2"``, else the
        model's declared ``slice_layout``, else ``"radiological"``.
    batch_objects : bool
        True (default): the objects tracked on a slice go through memory attention, the mask
        decoder and the memory encoder as one batch (each with its own memory bank; objects
        whose banks hold different numbers of tokens form separate batches). False: one
        object after the other. The results are the same either way.

    Attributes
    ----------
    stream : SliceStream
    axis : str
    axis_index : int
        Voxel axis of the slices.
    n_slices : int
    stats : SessionStats
        Encoder/decoder counters for tests and benchmarks.
    protocol, slice_layout : str
        As resolved (see the parameters).
    largest_component : bool
        True under ``"medsam2"``: :meth:`object_volume` and :meth:`label_map` keep each
        object's largest 3D connected component (26-neighbourhood); :meth:`mask` and the
        propagated :class:`SliceResult` stay the model's per-slice output.

    Notes
    -----
    Deliberate departures from Meta's ``SAM2VideoPredictor`` (each is also in the README; the
    parity tests emulate the departure on Meta's side to show it is the only difference):

    1. **Nearest-anchor stretches.** Each slice is tracked from its nearest anchor, forward
       above it and backward below it; Meta runs one pass over the whole video from the first
       prompted frame. Every slice stays within half a gap of a prompt, and a correction
       re-runs only the slices now nearer to it.
    2. **A fresh memory bank per run.** Each run starts from the object's anchors alone; Meta
       keeps every tracked frame of earlier passes in one state. A run's result then depends
       only on the anchors and the image, re-propagation is deterministic and the memory held
       is bounded. (A correction click does read the tracked neighbours, as Meta does.)
    3. **Exact mask prompts.** A mask prompt is resized to the model input by nearest neighbour
       (Meta: bilinear, then >= 0.5), its memory is encoded from the mask itself (Meta: from the
       mask brought down to 1/4 and back up, in which thin vessels and 2-3 px lesions vanish),
       and it is the slice's result voxel for voxel. ``exact_mask_memory=False`` restores
       Meta's memory encoding.
    4. **An anchor is refined the way it was made.** Further clicks on a prompted slice are
       decoded memory-free if its first prompt was, or as a correction from the same direction,
       never with the slice's own earlier memory; Meta decodes any click on a frame it has
       propagated through with memory, that frame's own earlier memory included. The result of
       refining a prompted slice then does not depend on whether a propagation ran in between.
    5. **Frames stay in float** (``"sam2"`` protocol). Slices are resized with Meta's and
       MedSAM2's filter (PIL's bicubic, antialiased, clipped to [0, 1] after each pass)
       computed in float; Meta and MedSAM2 store frames as 8-bit images first, which rounds
       each pixel by up to 1/255. CT intensities are never quantised here (``"medsam2"`` does
       quantise, as MedSAM2's script does).

    The interaction log replays in order rather than making the result order-independent: a
    correction on a tracked slice reads memory that exists only after a propagation, so the same
    clicks given before and after propagating are different interactions, in SAM 2 as here.
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
        fill_hole_area: int | None = None,
        sprinkle_area: int = 0,
        reset_between_directions: bool | None = None,
        exact_mask_memory: bool = True,
        protocol: str | None = None,
        slice_layout: str | None = None,
        batch_objects: bool = True,
    ) -> None:
        self.loaded = _as_loaded(model)
        self.model: Sam2VideoModel = self.loaded.model
        self.protocol, self.slice_layout = resolve_protocol(self.loaded, protocol, slice_layout)
        self.largest_component = self.protocol == "medsam2"
        if fill_hole_area is None:
            fill_hole_area = default_fill_hole_area(
                self.protocol, torch.device(self.loaded.device).type
            )
        if int(fill_hole_area) < 0 or int(sprinkle_area) < 0:
            raise ValueError("fill_hole_area and sprinkle_area must be >= 0")
        self.fill_hole_area = int(fill_hole_area)
        self.sprinkle_area = int(sprinkle_area)
        self.exact_mask_memory = bool(exact_mask_memory)
        self.batch_objects = bool(batch_objects)
        if reset_between_directions is None:
            reset_between_directions = self.protocol == "medsam2"
        self.reset_between_directions = bool(reset_between_directions)
        self.engine = Sam2Engine(
            self.model,
            fill_hole_area=self.fill_hole_area,
            exact_mask_memory=self.exact_mask_memory,
        )
        size = int(self.loaded.image_size)
        if image_size is not None and int(image_size) != size:
            raise ValueError(
                f"image_size {image_size} differs from the model's input size {size}; the "
                "model's configuration fixes it"
            )
        self.stream = SliceStream(
            volume,
            axis=axis,
            intensity=window,
            image_size=size,
            layout=self.slice_layout,
            protocol=self.protocol,
        )
        self._window_requested = window  # for the run record ("auto", a preset, (c, w)...)
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
        self._suspended: list[_Run] = []  # runs a cancel left unfinished (with their banks)
        self._n_mem = self.engine.num_maskmem - 1  # non-conditioning memory frames read
        self._n_ptr = self.engine.max_object_pointers - 1  # non-cond pointers read
        self._events: list[dict[str, Any]] = []

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
                self._events.append({"op": "add_object", "label": label, "name": str(name)})
            return label
        self._objects[label] = _Object(label, str(name) if name else f"object {label}")
        self._events.append({"op": "add_object", "label": label, "name": self._objects[label].name})
        return label

    def remove_object(self, label: int) -> None:
        """Forget an object: prompts, results and its undo history."""
        self._obj(label)
        del self._objects[int(label)]
        self._history = [(lab, s) for lab, s in self._history if lab != int(label)]
        self._suspended = [r for r in self._suspended if r.label != int(label)]
        self._events.append({"op": "remove_object", "label": int(label)})

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
    def _voxels(self, ijk: Any, what: str) -> np.ndarray:
        """Validated (N, 3) int64 voxel indices inside the volume."""
        ijk = np.asarray(ijk)
        if ijk.ndim == 1 and ijk.size == 3:
            ijk = ijk[None]
        if ijk.ndim != 2 or ijk.shape[1] != 3 or ijk.shape[0] == 0:
            raise PromptError(f"{what} must be voxel indices of shape (N, 3), got {ijk.shape}")
        try:
            f = ijk.astype(np.float64)
        except (TypeError, ValueError):
            raise PromptError(f"{what} must be numbers, got {ijk.tolist()}") from None
        if not np.all(np.isfinite(f)):
            raise PromptError(f"{what} contain non-finite values")
        if not np.all(np.equal(np.mod(f, 1), 0)):
            raise PromptError(f"{what} must be integer voxel indices, got {ijk.tolist()}")
        ijk = f.astype(np.int64)
        shape = np.asarray(self.volume.shape)
        bad = np.any((ijk < 0) | (ijk >= shape), axis=1)
        if bad.any():
            raise PromptError(
                f"{what} {ijk[bad].tolist()} outside the volume of shape {tuple(shape)}"
            )
        return ijk

    def _slice_of(self, ijk: np.ndarray, what: str) -> int:
        ks = np.unique(ijk[:, self.axis_index])
        if ks.size != 1:
            raise PromptError(
                f"{what} lie on several {self.axis} slices {ks.tolist()} (voxel axis "
                f"{self.axis_index}); all prompts of one call must be on one slice"
            )
        return int(ks[0])

    def add_prompts(
        self,
        label: int,
        *,
        points: np.ndarray | Sequence | None = None,
        point_labels: np.ndarray | Sequence | None = None,
        box: tuple[np.ndarray | Sequence, np.ndarray | Sequence] | None = None,
        mask: np.ndarray | None = None,
        slice_index: int | None = None,
    ) -> SliceResult:
        """Give all of one slice's new prompts for one object; that slice becomes an anchor.

        This is the one way prompts enter a session (the API, the command line, batch jobs and
        the napari widget all call it; :meth:`add_points`, :meth:`add_box` and
        :meth:`add_mask` are shorthands). The allowed combinations, checked here:

        * points with their labels, optionally with one box (the box goes first, as SAM 2 was
          trained; the clicks refine it in the same decoder run);
        * a box alone;
        * a mask alone (``slice_index`` required).

        Parameters
        ----------
        label : int
            The object.
        points : (N, 3) array_like of int, optional
            Voxel indices ``(i, j, k)`` of ``volume.array``, all on one slice along the session
            axis.
        point_labels : (N,) array_like of int, optional
            1 = positive (inside), 0 = negative (outside); required with ``points``.
        box : (corner_a_ijk, corner_b_ijk), optional
            Two opposite corners on the same slice; the box spans the centres of the two corner
            voxels (any order).
        mask : (A, B) array_like of bool, optional
            The object on one slice, shaped like
            ``np.take(volume.array, slice_index, axis=session.axis_index)``.
        slice_index : int, optional
            The slice; required with ``mask``, checked against the points and box otherwise.

        Returns
        -------
        SliceResult
            The preview of that slice (the object's new anchor output).

        Raises
        ------
        PromptError
            Any other combination, coordinates outside the volume or on several slices, a
            slice outside ``slice_range``, an unknown object.

        Notes
        -----
        A box or a mask restarts the slice's prompts. Clicks alone accumulate after the
        slice's earlier clicks (and box). When the slice has a tracked result for the object,
        the prompt is a correction, decoded with memory (module docstring); when it has any
        result, its low-resolution logits are the decoder's mask prompt. A mask never reads
        memory and is the slice's result exactly.
        """
        obj = self._obj(label)
        if mask is not None and (points is not None or point_labels is not None or box is not None):
            raise PromptError(
                "a mask prompt is the whole prompt of its slice: give points (and a box), or a "
                "mask, not both"
            )
        if mask is None and points is None and box is None:
            raise PromptError("no prompt given: give points with labels, a box, or a mask")
        if (points is None) != (point_labels is None):
            raise PromptError("points and point_labels go together: give both or neither")
        event: dict[str, Any] = {"op": "prompt", "label": obj.label}
        if mask is not None:
            if slice_index is None:
                raise PromptError("a mask prompt needs slice_index: the slice it lies on")
            k = int(slice_index)
            if not 0 <= k < self.n_slices:
                raise PromptError(f"slice index {k} outside 0..{self.n_slices - 1}")
            m = np.asarray(mask)
            if m.shape != self.stream.slice_shape:
                raise PromptError(
                    f"mask shape {m.shape} differs from the {self.axis} slice shape "
                    f"{self.stream.slice_shape} (np.take(volume.array, k, axis={self.axis_index}))"
                )
            m = m.astype(bool).copy()
            m.flags.writeable = False
            self._check_in_range(k)
            reached = self._reached(obj, k)
            prompt = _Prompt(np.zeros((0, 2), np.float32), np.zeros(0, np.int32), m, reached)
            event.update(slice=k, mask=encode_mask(m))
            return self._prompt(obj, k, prompt, event)
        coords = np.zeros((0, 2), np.float32)
        plabs = np.zeros(0, np.int32)
        k = None
        pts = labs = None
        if points is not None:
            pts = self._voxels(points, "points")
            k = self._slice_of(pts, "points")
            labs = np.asarray(point_labels).reshape(-1)
            if labs.shape[0] != pts.shape[0]:
                raise PromptError(f"{pts.shape[0]} points but {labs.shape[0]} point labels")
            if not np.all(np.isin(labs, (0, 1))):
                raise PromptError(
                    f"point labels must be 1 (positive) or 0 (negative), got {labs.tolist()}"
                )
            labs = labs.astype(np.int64)
        corners = None
        if box is not None:
            if len(box) != 2:
                raise PromptError("a box is two opposite corners (corner_a_ijk, corner_b_ijk)")
            corners = self._voxels(
                np.stack([np.asarray(box[0]).reshape(-1), np.asarray(box[1]).reshape(-1)]),
                "box corners",
            )
            bk = self._slice_of(corners, "box corners")
            if k is not None and bk != k:
                raise PromptError(f"the box is on slice {bk}, the points on slice {k}")
            k = bk
            _, bxy = self.stream.voxel_to_model_xy(corners)
            coords = np.stack([bxy.min(axis=0), bxy.max(axis=0)]).astype(np.float32)
            plabs = np.array([2, 3], np.int32)
        assert k is not None
        if slice_index is not None and int(slice_index) != k:
            raise PromptError(f"the prompts lie on slice {k}, not on slice_index {slice_index}")
        self._check_in_range(k)
        if pts is not None:
            _, xy = self.stream.voxel_to_model_xy(pts)
            coords = np.concatenate([coords, xy.astype(np.float32)])
            plabs = np.concatenate([plabs, labs.astype(np.int32)])
        old = obj.prompts.get(k)
        if box is None and old is not None and old.mask is None:
            coords = np.concatenate([old.coords, coords])
            plabs = np.concatenate([old.labels, plabs])
        event.update(
            slice=k,
            points=None if pts is None else _ijk_list(pts),
            point_labels=None if labs is None else labs.tolist(),
            box=None if corners is None else _ijk_list(corners),
        )
        prompt = _Prompt(coords, plabs, None, self._reached(obj, k))
        return self._prompt(obj, k, prompt, event)

    def add_points(
        self,
        label: int,
        points_ijk: np.ndarray | Sequence,
        point_labels: np.ndarray | Sequence,
        *,
        box: tuple[np.ndarray | Sequence, np.ndarray | Sequence] | None = None,
    ) -> SliceResult:
        """Clicks (and optionally a box) on one slice: ``add_prompts(label, points=..., ...)``."""
        return self.add_prompts(label, points=points_ijk, point_labels=point_labels, box=box)

    def add_box(
        self, label: int, corner_a_ijk: np.ndarray | Sequence, corner_b_ijk: np.ndarray | Sequence
    ) -> SliceResult:
        """A box on one slice: ``add_prompts(label, box=(corner_a_ijk, corner_b_ijk))``."""
        return self.add_prompts(label, box=(corner_a_ijk, corner_b_ijk))

    def add_mask(self, label: int, slice_index: int, mask2d: np.ndarray) -> SliceResult:
        """A mask on one slice: ``add_prompts(label, mask=mask2d, slice_index=slice_index)``."""
        return self.add_prompts(label, mask=mask2d, slice_index=slice_index)

    def _check_in_range(self, k: int) -> None:
        lo, hi = self.slice_range
        if not lo <= k <= hi:
            raise PromptError(
                f"slice {k} is outside this session's slice_range {lo}..{hi}; prompt a slice "
                "inside the range (propagation never fills slices outside it)"
            )

    def _reached(self, obj: _Object, k: int) -> int:
        """How a new prompt on slice ``k`` is decoded: 0 memory-free, +-1 as a correction."""
        old = obj.prompts.get(k)
        if old is not None:
            return old.reached  # an anchor is refined the way it was made
        rec = obj.results.get(k)
        return rec.direction if rec is not None and rec.tracked else 0

    def _prompt(self, obj: _Object, k: int, prompt: _Prompt, event: dict) -> SliceResult:
        prior = None
        if prompt.mask is None:
            old = obj.results.get(k)
            if old is not None and old.logits is not None:
                prior = self._filled(old.logits).clamp(-_PRIOR_CLAMP, _PRIOR_CLAMP)
        out = self._decode_anchor(obj, k, prompt, prior)
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
        rec, logits, mask = self._accept(out, 0, prompt.mask)
        obj.results[k] = rec
        self._events.append(event)
        return SliceResult(
            k,
            {obj.label: mask},
            {obj.label: rec.score},
            {obj.label: rec.area},
            {obj.label: logits.numpy().copy()},
            0,
        )

    def undo(self) -> bool:
        """Take back the last prompt (with the propagation it caused).

        Restores the object's prompts, anchors, masks and pending work to what they were
        before that prompt. Returns False when there is nothing to undo.
        """
        self._events.append({"op": "undo"})
        while self._history:
            label, snap = self._history.pop()
            obj = self._objects.get(label)
            if obj is None:
                continue
            obj.restore(snap)
            self._suspended = [r for r in self._suspended if r.label != label]
            return True
        return False

    # -- the interaction log ------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The parameters that decide this session's results, JSON-ready (for the log).

        ``window`` is the resolved intensity transform (its fields), so a replay applies the
        same numbers even when it was chosen from the data (``"auto"`` percentiles).
        """
        return {
            "axis": self.axis,
            "window": dataclasses.asdict(self.stream.intensity),
            "slice_range": list(self.slice_range),
            "stop_after_empty": self.stop_after_empty,
            "max_slices": self.max_slices,
            "encoder_batch": self.encoder_batch,
            "converge_after": self.converge_after,
            "converge_iou": self.converge_iou,
            "undo_depth": self.undo_depth,
            "fill_hole_area": self.fill_hole_area,
            "sprinkle_area": self.sprinkle_area,
            "reset_between_directions": self.reset_between_directions,
            "exact_mask_memory": self.exact_mask_memory,
            "protocol": self.protocol,
            "slice_layout": self.slice_layout,
        }

    def interactions(self) -> dict[str, Any]:
        """Everything done in this session, in order, as a versioned JSON-ready record.

        The schema is documented in :mod:`sam2_med.interactions`;
        :func:`sam2_med.interactions.replay` runs it on a new session of the same image and
        model and gives the same label map voxel for voxel. Every mask sidecar written by the
        API, the command line and the napari widget carries it.
        """
        name, version = INTERACTIONS_SCHEMA
        return {
            "schema": name,
            "version": version,
            "space": "voxel",
            "image_shape": [int(v) for v in self.volume.shape],
            "axis_index": int(self.axis_index),
            "model": str(getattr(self.loaded, "name", "custom")),
            "dtype": str(self.loaded.dtype).replace("torch.", ""),
            "session": self.settings(),
            "events": copy.deepcopy(self._events),
        }

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

    def _correction_state(self, obj: _Object, k: int, d: int) -> TrackingState:
        """The memory bank SAM 2 decodes a correction on slice ``k`` (reached in direction ``d``)
        with: the other anchors as conditioning frames, and the object's accepted tracked
        results behind ``k`` as tracked frames (object pointers up to 15 slices back, memory
        re-encoded for the last 6), whichever run produced them, as in Meta's state."""
        st = self.engine.new_state(
            self.n_slices, self._cache, {a: out for a, out in obj.cond.items() if a != k}
        )
        behind: list[tuple[int, int, _Record]] = []
        for t in range(1, self._n_ptr + 1):
            f = k - d * t
            if not 0 <= f < self.n_slices:
                break
            rec = obj.results.get(f)
            if f in obj.prompts or rec is None or not rec.tracked:
                continue
            behind.append((t, f, rec))
        self._cache.ensure([k] + [f for t, f, _ in behind if t <= self._n_mem])
        for t, f, rec in behind:
            assert rec.logits is not None and rec.score_logits is not None
            self.engine.restore_tracked(
                st,
                f,
                logits=rec.logits,
                score_logits=rec.score_logits,
                pointer=rec.pointer,
                reverse=rec.direction < 0,
                with_memory=t <= self._n_mem,
            )
        self.stats.correction_memory.append(
            (obj.label, k, tuple(f for t, f, _ in behind if t <= self._n_mem))
        )
        return st

    def _decode_anchor(
        self, obj: _Object, k: int, prompt: _Prompt, prior: torch.Tensor | None
    ) -> FrameOutput:
        with self._compute():
            if prompt.mask is not None:
                self._cache.ensure([k])
                out = self.engine.decode_prompt(
                    self._new_state(None), k, mask=self.stream.mask_to_frame(prompt.mask)
                )
            else:
                if prompt.reached:
                    st = self._correction_state(obj, k, prompt.reached)
                else:
                    st = self._new_state(None)
                    self._cache.ensure([k])
                out = self.engine.decode_prompt(
                    st,
                    k,
                    points=torch.from_numpy(prompt.coords),
                    labels=torch.from_numpy(prompt.labels),
                    prior=prior,
                    with_memory=bool(prompt.reached),
                    reverse=prompt.reached < 0,
                )
        self.stats.decoded_slices.append(k)
        self.stats.decoded.append((obj.label, k))
        return out

    def _filled(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits as Meta's predictor stores them: holes filled (the mask prompt of a click)."""
        return fill_holes(logits, self.fill_hole_area)

    def _output_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits as output: holes filled, then (if asked) small sprinkles removed."""
        return remove_sprinkles(self._filled(logits), self.sprinkle_area)

    def _accept(
        self, out: FrameOutput, direction: int, mask: np.ndarray | None = None
    ) -> tuple[_Record, torch.Tensor, np.ndarray]:
        """The record of a model output, its output logits and its slice mask."""
        raw = logits_of(out).detach().to("cpu", torch.float32).clone()  # results live on the host
        shown = self._output_logits(raw)
        if mask is None:
            mask = self.stream.frame_logits_to_slice(shown) > 0
        mask = np.asarray(mask, bool)
        rec = _Record(
            np.packbits(mask, axis=None),
            int(mask.sum()),
            score_of(out),
            raw,
            score_logits_of(out).detach().to("cpu").clone(),
            pointer_of(out).detach().to("cpu").clone(),
            direction,
        )
        return rec, shown, mask

    def _empty(self, direction: int) -> _Record:
        mask = np.zeros(self.stream.slice_shape, bool)
        return _Record(np.packbits(mask, axis=None), 0, math.nan, direction=direction)

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
        re-run, from ``j`` outward (see the module docstring).

        Propagation is **frame-major**: one sweep up the slices steps every object's forward
        stretches together, then one sweep down steps the backward stretches, so each slice's
        image features are computed once for all objects on it (once per sweep: when objects'
        anchors differ, a slice between them is in both sweeps and is encoded again only if
        the feature cache dropped it meanwhile). On each slice the objects are stepped in the
        order they were added, each with its own memory bank; results are those of tracking
        every object alone.

        Parameters
        ----------
        cancel : callable, optional
            Polled before each slice and object, and while the model runs, before each block
            of the image encoder and each module of tracking (memory attention, mask decoder,
            memory encoder); returning True stops propagation there, within one module's
            time. A model call stopped half-way leaves no trace. The session stays consistent
            and the next call resumes the unfinished part without recomputing what was done.
        progress : callable, optional
            ``progress(done, total)`` after each slice result; ``total`` counts the slice steps
            planned in this call (a stop rule may end a run early, and ``done`` then jumps).

        Yields
        ------
        SliceResult
            One per slice and object as it is computed (``masks`` holds that object only).

        Notes
        -----
        The interaction log records the call with the number of slice results it yielded and
        whether it ran to the end, so a replay stops where a cancel stopped it.
        """
        event = {"op": "propagate", "slices": 0, "complete": False}
        self._events.append(event)
        runs: list[_Run] = []
        resumed: dict[int, set[int]] = {}
        for run in self._suspended:
            obj = self._objects.get(run.label)
            if obj is not None and obj.generation == run.generation and run.pos < len(run.steps):
                runs.append(run)
                resumed.setdefault(run.label, set()).update(s for s, _ in run.steps[run.pos :])
        self._suspended = []
        for obj in self._objects.values():
            if obj.dirty:
                runs.extend(self._plan(obj, resumed.get(obj.label, set())))
        start = [r.pos for r in runs]
        total = sum(len(r.steps) - r.pos for r in runs)
        gen = self._sweep(runs, cancel)
        try:
            for res in gen:
                event["slices"] += 1
                if progress is not None:
                    progress(sum(r.pos - p for r, p in zip(runs, start, strict=True)), total)
                yield res
        finally:
            gen.close()  # the caller stopped iterating: suspend where the last result left off
            self._suspended = [r for r in runs if r.pos < len(r.steps)]
        if self._suspended:
            return
        event["complete"] = True
        if progress is not None and total:
            progress(total, total)

    def _sweep(self, runs: list[_Run], cancel: Callable[[], bool] | None) -> Iterator[SliceResult]:
        """Step the runs frame-major: the forward steps of all runs in ascending slice order,
        then the backward steps in descending order; on a slice, objects in priority order."""
        order = {lab: i for i, lab in enumerate(self._objects)}
        runs = sorted(runs, key=lambda r: (order.get(r.label, len(order)), r.anchor))
        stop = cancel if cancel is not None else (lambda: False)
        while True:
            # cancel is polled before anything of a step happens, so a cancel and a caller that
            # stops iterating after the same result leave the session in the same state
            if stop():
                return
            pending = [r for r in runs if r.pos < len(r.steps)]
            if not pending:
                return
            up = [r for r in pending if r.steps[r.pos][1] > 0]
            d = 1 if up else -1
            pick = min if up else max
            k = pick(r.steps[r.pos][0] for r in (up or pending))
            group = [r for r in pending if r.steps[r.pos] == (k, d)]
            work = [r for r in group if self._skip(r, k, d) is None]
            if not work:
                continue
            try:
                with self.engine.interruptible(cancel):
                    self._cache.ensure(self._ahead(runs, k, d))
            except Interrupted:
                return
            if self.batch_objects and len(work) > 1:
                # every object on this slice in one batch through the model
                try:
                    with self.engine.interruptible(cancel), self._compute():
                        outs = self.engine.track_many(
                            [self._state_for(run, d) for run in work], k, reverse=d < 0
                        )
                except Interrupted:
                    return
                accepted = 0
                try:
                    for n, (run, out) in enumerate(zip(work, outs, strict=True)):
                        if n and stop():
                            return
                        res = self._accept_step(run, k, d, out)
                        accepted = n + 1
                        yield res
                finally:
                    # stopped part-way through the slice: the objects whose result was not
                    # accepted forget it, and compute it again on resume
                    self._rewind(work[accepted:], k)
                continue
            for n, run in enumerate(work):
                if n and stop():
                    return
                try:
                    with self.engine.interruptible(cancel), self._compute():
                        out = self.engine.track(self._state_for(run, d), k, reverse=d < 0)
                except Interrupted:
                    return
                yield self._accept_step(run, k, d, out)

    def _skip(self, run: _Run, k: int, d: int) -> bool | None:
        """Take a step that a stop rule decides without the model; None: the model must run."""
        obj = self._objects[run.label]
        if d in run.stopped:
            obj.results[k] = self._empty(d)
        elif d not in run.converged:  # converged: the accepted result stands
            return None
        obj.dirty.discard(k)
        run.pos += 1
        if run.pos == len(run.steps):
            run.state = None
        return True

    def _ahead(self, runs: list[_Run], k: int, d: int) -> list[int]:
        """Slice ``k`` and the next slices of this sweep some run will track, up to
        ``encoder_batch`` of them (encoded together when not cached)."""
        want = {k}
        for r in runs:
            for s, dd in r.steps[r.pos : r.pos + self.encoder_batch]:
                if dd == d and dd not in r.stopped and dd not in r.converged:
                    want.add(s)
        return sorted(want, key=lambda s: s * d)[: self.encoder_batch]

    def _state_for(self, run: _Run, d: int) -> TrackingState:
        """The run's memory bank for a step in direction ``d`` (a fresh one when needed)."""
        if run.state is None or (
            self.reset_between_directions and d < 0 and run.state_direction > 0
        ):
            # a fresh bank of the anchors (MedSAM2's reset between directions)
            run.state = self._new_state(self._objects[run.label])
        run.state_direction = d
        return run.state

    def _rewind(self, runs: list[_Run], k: int) -> None:
        """Forget slice ``k`` in the banks of runs whose result there was not accepted."""
        for run in runs:
            run.state.tracked.pop(k, None)
            run.state.directions.pop(k, None)

    def _accept_step(self, run: _Run, k: int, d: int, out: FrameOutput) -> SliceResult:
        """Accept one object's tracked output on slice ``k`` and advance its run."""
        obj = self._objects[run.label]
        self.stats.decoded_slices.append(k)
        self.stats.decoded.append((obj.label, k))
        old = obj.results.get(k)
        rec, logits, mask = self._accept(out, d)
        obj.results[k] = rec
        obj.dirty.discard(k)
        self._prune(run, k, d)
        run.pos += 1
        if self.converge_after is not None:
            agree = old is not None and math.isfinite(old.score) and self._agrees(mask, old)
            run.agree_run[d] = run.agree_run[d] + 1 if agree else 0
            if run.agree_run[d] >= self.converge_after:
                run.converged.add(d)
        if self.stop_after_empty is not None:
            absent = rec.score <= 0 or rec.area == 0
            run.empty_run[d] = run.empty_run[d] + 1 if absent else 0
            if run.empty_run[d] >= self.stop_after_empty:
                run.stopped.add(d)
        if run.pos == len(run.steps):
            run.state = None  # the run is over: free its memory bank
        return SliceResult(
            k,
            {obj.label: mask},
            {obj.label: rec.score},
            {obj.label: rec.area},
            {obj.label: logits.numpy().copy()},
            d,
        )

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
        """(I, J, K) bool mask of one object alone (no exclusion between objects).

        Under the ``"medsam2"`` protocol, the largest 3D connected component of the object's
        slices (MedSAM2's script's last step, per object).
        """
        out = np.zeros(self.volume.shape, bool)
        for k, rec in self._obj(label).results.items():
            if rec.area:
                out[self.stream.slice_to_volume_index(k)] = self._mask_of(rec)
        if self.largest_component:
            out = self._largest_component(out)
        return out

    def _largest_component(self, mask: np.ndarray) -> np.ndarray:
        """The largest component, labelled in frame order (slice, frame row, frame column) as
        the script labels its ``(k, j, i)`` array, so that a tie between equally large
        components is broken as the script breaks it."""
        o = self.stream.orientation
        p, q = o.in_plane
        order = (o.axis_index, q, p) if o.transpose else (o.axis_index, p, q)
        stack = mask.transpose(order)
        if o.flip_rows:
            stack = stack[:, ::-1]
        if o.flip_cols:
            stack = stack[:, :, ::-1]
        kept = largest_component(stack)
        if o.flip_rows:
            kept = kept[:, ::-1]
        if o.flip_cols:
            kept = kept[:, :, ::-1]
        return np.ascontiguousarray(kept.transpose(np.argsort(order)))

    def label_map(self) -> LabelVolume:
        """All objects merged into one label map on the volume's grid.

        Returns
        -------
        LabelVolume
            ``uint8`` (``uint16`` when a label exceeds 255), shape ``volume.shape``, names from
            :attr:`objects`. The first object added wins an overlap: later objects take only
            voxels no earlier object claimed. ``extra[RUN_RECORD_KEY]`` is :meth:`run_record`
            (model, axis, window and :meth:`interactions`), so a mask saved from it
            (:func:`sam2_med.io.save_mask`) carries a sidecar that replays this session.
        """
        dtype = np.uint8 if max(self._objects, default=0) <= 255 else np.uint16
        out = np.zeros(self.volume.shape, dtype)
        for label, obj in self._objects.items():
            if self.largest_component:
                out[self.object_volume(label) & (out == 0)] = label
                continue
            for k, rec in obj.results.items():
                if not rec.area:
                    continue
                idx = self.stream.slice_to_volume_index(k)
                view = out[idx]
                view[self._mask_of(rec) & (view == 0)] = label
        return LabelVolume(
            out, self.volume, dict(self.objects), {RUN_RECORD_KEY: self.run_record()}
        )

    def run_record(self) -> dict[str, Any]:
        """The run record a mask sidecar carries (``extra.sam2_med_run``), JSON-ready.

        The same fields as :func:`sam2_med.segment`'s record where a session knows them:
        ``status`` (``"complete"``, or ``"partial"`` while slices are pending), the model
        (:func:`sam2_med.api.model_record`), the protocol (:meth:`protocol_record`), ``axis``,
        ``axis_index``, ``window`` as requested and as applied
        (:func:`sam2_med.api.window_record`), ``image_notes`` and
        ``interactions`` (:meth:`interactions`, what ``sam2-med segment IMAGE --prompts
        SIDECAR.json`` replays).
        """
        from .api import model_record, window_record

        return {
            "status": "complete" if self.pending() == 0 else "partial",
            **model_record(self.loaded),
            "axis": self.axis,
            "axis_index": int(self.axis_index),
            **self.protocol_record(),
            "window": window_record(self._window_requested, self.stream.intensity, self.volume),
            "image_notes": list(self.volume.provenance.notes),
            "interactions": self.interactions(),
        }

    def protocol_record(self) -> dict[str, Any]:
        """What the run record says about the protocol: its name and slice layout, and under
        ``"medsam2"`` the 8-bit mapping (clip bounds and the clipped volume's minimum and
        maximum, in the volume's units) and the 3D post-processing."""
        rec: dict[str, Any] = {"protocol": self.protocol, "slice_layout": self.slice_layout}
        if self.stream.uint8_mapping is not None:
            rec["protocol_uint8"] = dict(self.stream.uint8_mapping)
        if self.largest_component:
            rec["protocol_postprocess"] = "largest 3D connected component per object"
        return rec

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
