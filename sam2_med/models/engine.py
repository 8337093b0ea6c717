"""The one seam between sam2-med and transformers' private SAM 2 video internals.

Everything in sam2-med that calls a private method of ``transformers.Sam2VideoModel``
(``_run_single_frame_inference``, ``_batch_encode_memories``, ...), builds a
``Sam2VideoInferenceSession`` by hand, or reads its ``output_dict_per_obj`` layout lives in this
module. The :class:`~sam2_med.session.Session` (inference) and the training loop stand on the small
typed interface below, so a transformers release that renames or reshapes those internals breaks
this file and nothing else. The range of transformers versions this module was tested with is
pinned in ``pyproject.toml``; when a newer release breaks it, the seam tests
(``tests/models/test_engine.py``) fail first and name the internal that moved.

Where transformers' port departs from Meta's predictor, this module follows Meta (the parity
fixture in ``tests/fixtures/parity`` is Meta's code): a mask prompt's object pointer is made
with a single decoder output (:meth:`Sam2Engine._mask_pointer`), a prompted frame's memory is
encoded from its hole-filled logits (``fill_hole_area``), and a correction's memory bank can be
rebuilt from kept results (:meth:`Sam2Engine.restore_tracked`).

Vocabulary
----------
frame
    One slice along the session axis, as SAM 2 sees a video frame; indexed ``0 .. n_frames - 1``.
:data:`FrameOutput`
    SAM 2's per-frame record for one object: low-resolution mask logits ``pred_masks``
    ``(1, 1, h, w)`` (``h = w = image_size / 4``), ``object_score_logits`` ``(1, 1)``,
    ``object_pointer`` ``(1, C)`` and, once its memory is encoded, ``maskmem_features``
    ``(HW, 1, C_mem)`` (bfloat16, as Meta stores it) and ``maskmem_pos_enc``. Treat it as
    opaque outside this module; use the accessors :func:`logits_of`, :func:`score_of`,
    :func:`score_logits_of` and :func:`pointer_of`.
conditioning frame
    A frame whose output came from a prompt (SAM 2's ``cond_frame_outputs``); every later frame
    attends to it.
tracked frame
    A frame whose output came from memory alone (``non_cond_frame_outputs``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F

from ..postprocess import fill_holes

if TYPE_CHECKING:
    from transformers import Sam2VideoInferenceSession, Sam2VideoModel

__all__ = [
    "ClipFeatures",
    "FeatureSource",
    "FrameOutput",
    "Interrupted",
    "Sam2Engine",
    "Sam2TrainingEngine",
    "TrackingState",
    "TrainStep",
    "logits_of",
    "pointer_of",
    "score_logits_of",
    "score_of",
]

#: SAM 2's per-frame output record of one object (see the module docstring).
FrameOutput = dict[str, Any]

_MEMORY_KEYS = ("maskmem_features", "maskmem_pos_enc")


def _of_object(t: torch.Tensor, j: int, b: int) -> torch.Tensor:
    """Object ``j``'s ``(1, 1, ...)`` entry of a decoder output for a batch of ``b`` frames.

    transformers (5.x) picks each frame's best multimask output with indices that broadcast
    to ``(b, b, ...)`` when the image batch is ``b``; entry ``[j, j]`` is frame ``j`` with its own
    choice (its own IoU, its own object score). A single-output or a fixed release gives
    ``(b, 1, ...)``.
    """
    if b > 1 and t.dim() >= 2 and t.shape[1] == b:
        return t[j : j + 1, j : j + 1]
    return t[j : j + 1]


class Interrupted(Exception):
    """Raised inside a model call when the callback of :meth:`Sam2Engine.interruptible` asks
    to stop. The engine's state-changing methods undo their partial work before it leaves
    them, so a tracking state is as it was before the interrupted call."""


class FeatureSource(Protocol):
    """Where a tracking state gets a frame's image-encoder output.

    ``features(k)`` returns ``(feats, pos)``: ``feats`` the per-level backbone features of frame
    ``k``, each ``(HW_l, 1, C_l)`` as :meth:`Sam2Engine.encode` returns them, and ``pos`` the
    per-level position encodings (the same for every frame).
    """

    def features(self, k: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]: ...


def logits_of(out: FrameOutput) -> torch.Tensor:
    """``(h, w)`` low-resolution mask logits of a frame output (model frame orientation)."""
    return out["pred_masks"][0, 0]


def score_of(out: FrameOutput) -> float:
    """The object-score **logit** of a frame output (> 0: SAM 2 says the object is present)."""
    return float(out["object_score_logits"].reshape(-1)[0])


def score_logits_of(out: FrameOutput) -> torch.Tensor:
    """The object-score logit tensor of a frame output, as SAM 2 stores it (``(1, 1)``)."""
    return out["object_score_logits"]


def pointer_of(out: FrameOutput) -> torch.Tensor:
    """The ``(1, C)`` object pointer of a frame output."""
    return out["object_pointer"]


class _Frames:
    """Stand-in for a transformers session's ``processed_frames``: a length and no pixels.

    transformers reads ``len(processed_frames)`` as the video's frame count (it bounds the object
    pointers SAM 2 attends to, as Meta's predictor does). Pixels are never read from here
    because the state's feature cache always answers first.
    """

    def __init__(self, n: int) -> None:
        self._n = int(n)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, k: int) -> torch.Tensor:  # pragma: no cover - see class docstring
        raise RuntimeError(
            "a sam2-med tracking state holds no pixels; features come from its cache"
        )


class _CacheAdapter:
    """The interface of transformers' ``Sam2VideoInferenceCache`` over a :class:`FeatureSource`."""

    def __init__(self, source: FeatureSource) -> None:
        self._source = source

    def get_vision_features(self, frame_idx: int) -> dict:
        feats, pos = self._source.features(int(frame_idx))
        return {"vision_feats": list(feats), "vision_pos_embeds": list(pos)}

    def cache_vision_features(self, frame_idx: int, features: dict) -> None:  # pragma: no cover
        raise RuntimeError("unreachable: get_vision_features always answers")

    def clear_all(self) -> None:  # pragma: no cover - transformers' reset path, unused here
        pass


class TrackingState:
    """One object's SAM 2 memory bank for one tracking run.

    Wraps a ``Sam2VideoInferenceSession`` holding exactly one object, whose image features come
    from a :class:`FeatureSource` and which holds no pixels. Build it with
    :meth:`Sam2Engine.new_state`.

    Attributes
    ----------
    n_frames : int
        Frames of the whole volume (SAM 2 normalises object-pointer distances by it).
    """

    def __init__(self, session: Sam2VideoInferenceSession, n_frames: int) -> None:
        self._s = session
        self.n_frames = int(n_frames)

    @property
    def cond(self) -> MutableMapping[int, FrameOutput]:
        """Conditioning-frame outputs by frame (mutable: the session seeds and prunes it)."""
        return self._s.output_dict_per_obj[0]["cond_frame_outputs"]

    @property
    def tracked(self) -> MutableMapping[int, FrameOutput]:
        """Tracked-frame outputs by frame (mutable)."""
        return self._s.output_dict_per_obj[0]["non_cond_frame_outputs"]

    @property
    def directions(self) -> MutableMapping[int, dict]:
        """Frames tracked so far, each with the direction it was reached in (``{"reverse": bool}``)."""
        return self._s.frames_tracked_per_obj[0]


class Sam2Engine:
    """SAM 2's single-frame operations on a transformers ``Sam2VideoModel``.

    The engine holds no per-volume state; :class:`TrackingState` objects do. It does not set
    ``torch.inference_mode`` or autocast: the caller decides (inference under
    ``inference_mode``; training under ``enable_grad``).

    Parameters
    ----------
    model : transformers.Sam2VideoModel
    fill_hole_area : int
        Meta's video-predictor hole filling (:func:`sam2_med.postprocess.fill_holes`) of a
        prompted frame's logits before its memory is encoded, as Meta encodes it from the
        filled mask; 0 (default) disables it. Tracked frames' memory is always encoded from
        the unfilled logits (Meta fills them only after encoding).
    exact_mask_memory : bool
        True (default): a mask prompt's memory is encoded from the mask itself at the model's
        input resolution. False: from the mask brought down to the low-resolution logits and
        back up, as Meta's predictor does (thin structures can vanish).

    Attributes
    ----------
    model : transformers.Sam2VideoModel
    image_size : int
        Side of the square model input in pixels.
    num_maskmem : int
        Memory frames SAM 2 attends to (conditioning frames plus ``num_maskmem - 1`` tracked).
    max_object_pointers : int
        Object pointers SAM 2 attends to.
    fill_hole_area : int
    exact_mask_memory : bool
    """

    def __init__(
        self, model: Sam2VideoModel, *, fill_hole_area: int = 0, exact_mask_memory: bool = True
    ) -> None:
        self.model = model
        cfg = model.config
        size = cfg.image_size
        self.image_size = int(size[0] if isinstance(size, (list, tuple)) else size)
        self.num_maskmem = int(cfg.num_maskmem)
        self.max_object_pointers = int(cfg.max_object_pointers_in_encoder)
        self.fill_hole_area = int(fill_hole_area)
        self.exact_mask_memory = bool(exact_mask_memory)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- interruption -------------------------------------------------------------------------
    def checkpoint_modules(self) -> list[tuple[str, torch.nn.Module]]:
        """The modules before each of which :meth:`interruptible` polls its callback.

        Every block of the image encoder and its neck, every memory-attention layer, the
        prompt encoder, the mask decoder and the memory encoder: the longest stretch without a
        poll is one image-encoder block (a few tens of milliseconds at 512 px on a 2-core CPU).
        """
        m = self.model
        out: list[tuple[str, torch.nn.Module]] = []
        backbone = getattr(m.vision_encoder, "backbone", None)
        blocks = getattr(backbone, "blocks", None)
        if blocks is not None:
            out += [(f"image encoder block {i}", b) for i, b in enumerate(blocks)]
        else:  # pragma: no cover - another encoder layout: poll before the whole encoder
            out.append(("image encoder", m.vision_encoder))
        if hasattr(m.vision_encoder, "neck"):
            out.append(("image encoder neck", m.vision_encoder.neck))
        out += [(f"memory attention layer {i}", x) for i, x in enumerate(m.memory_attention.layers)]
        out += [
            ("prompt encoder", m.prompt_encoder),
            ("mask decoder", m.mask_decoder),
            ("memory encoder", m.memory_encoder),
        ]
        return out

    @contextlib.contextmanager
    def interruptible(self, should_stop: Callable[[], bool] | None) -> Iterator[None]:
        """Poll ``should_stop()`` before every module of :meth:`checkpoint_modules`.

        Inside the block, a model call raises :class:`Interrupted` as soon as ``should_stop``
        returns True, between two modules rather than at the end of the slice. ``None``
        installs nothing. The hooks are removed on exit; the model is shared, so do not run
        another session on the same model from another thread meanwhile.
        """
        if should_stop is None:
            yield
            return

        def poll(module: torch.nn.Module, args: Any) -> None:
            if should_stop():
                raise Interrupted

        handles = [mod.register_forward_pre_hook(poll) for _, mod in self.checkpoint_modules()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    # -- image encoder ------------------------------------------------------------------------
    def encode(self, pixels: torch.Tensor) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
        """Run the image encoder on a batch of frames.

        Parameters
        ----------
        pixels : (B, 3, S, S) float tensor
            Normalised model-input frames (see :class:`sam2_med.frames.SliceStream`).

        Returns
        -------
        feats : list over the B frames of lists over levels of ``(HW_l, 1, C_l)`` tensors
            Views into the encoder's batch output; copy them to keep one frame alone.
        pos : list over levels of ``(HW_l, 1, C)`` tensors
            Position encodings, the same for every frame.
        """
        out = self.model.get_image_features(pixels, return_dict=True)
        n = pixels.shape[0]
        feats = [[f[:, i : i + 1] for f in out.fpn_hidden_states] for i in range(n)]
        pos = [p[:, :1].clone() for p in out.fpn_position_encoding]
        return feats, pos

    # -- tracking states ----------------------------------------------------------------------
    def new_state(
        self,
        n_frames: int,
        features: FeatureSource,
        cond: dict[int, FrameOutput] | None = None,
    ) -> TrackingState:
        """A fresh one-object memory bank, optionally seeded with conditioning frames.

        Parameters
        ----------
        n_frames : int
            Frames of the whole volume.
        features : FeatureSource
            Image features per frame.
        cond : dict of int -> FrameOutput, optional
            Conditioning outputs (with encoded memory) to seed the bank with.
        """
        from transformers import Sam2VideoInferenceSession

        device = self.device
        st = Sam2VideoInferenceSession(
            video=None,
            inference_device=device,
            inference_state_device=device,
            video_storage_device=device,
            dtype=torch.float32,
        )
        st.processed_frames = _Frames(n_frames)
        st.cache = _CacheAdapter(features)
        st.obj_id_to_idx(1)
        state = TrackingState(st, n_frames)
        if cond:
            state.cond.update(cond)
        return state

    # -- decoding -----------------------------------------------------------------------------
    def decode_prompt(
        self,
        state: TrackingState,
        k: int,
        *,
        points: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        prior: torch.Tensor | None = None,
        with_memory: bool = False,
        reverse: bool = False,
    ) -> FrameOutput:
        """Decode a prompt on frame ``k``, store it as a conditioning frame, encode its memory.

        Parameters
        ----------
        state : TrackingState
        k : int
        points : (N, 2) float tensor, optional
            Model-input pixels ``(x, y)``; a box is two rows labelled 2 and 3, placed first.
        labels : (N,) int tensor, optional
            1 positive, 0 negative, 2/3 box corners.
        mask : (S, S) float tensor, optional
            A 0/1 mask prompt in model-input pixels; passed through as the output (SAM 2's
            ``_use_mask_as_output``, which never reads memory). Exclusive with ``points``.
        prior : (h, w) float tensor, optional
            Earlier low-resolution logits of this frame, fed to the decoder as its dense mask
            prompt (SAM 2's ``prev_sam_mask_logits`` for correction clicks).
        with_memory : bool
            False: decoded from the frame alone (SAM 2's initial conditioning frame). True: a
            correction, decoded with the memory bank of ``state`` (its conditioning frames, the
            tracked frames behind ``k`` in the direction ``reverse`` and their object pointers).
        reverse : bool
            Direction the frame was reached in (only read when ``with_memory``).

        Returns
        -------
        FrameOutput
            ``pred_masks`` are the decoder's logits before any hole filling; the full-resolution
            mask is dropped once the memory is encoded.
        """
        if (points is None) == (mask is None):
            raise ValueError("decode_prompt takes points or a mask, exactly one of them")
        dev = self.device
        point_inputs = mask_inputs = None
        if mask is not None:
            mask_inputs = mask.to(dev, torch.float32)[None, None]
            prior = None
        else:
            point_inputs = {
                "point_coords": points.to(dev, torch.float32)[None, None],
                "point_labels": labels.to(dev, torch.int32)[None, None],
            }
        m = self.model
        out = m._run_single_frame_inference(
            inference_session=state._s,
            frame_idx=int(k),
            obj_idx=0,
            batch_size=1,
            is_init_cond_frame=not with_memory,
            point_inputs=point_inputs,
            mask_inputs=mask_inputs,
            reverse=bool(reverse) if with_memory else False,
            prev_sam_mask_logits=None if prior is None else prior.to(dev)[None, None],
            streaming=False,
        )
        if mask is not None:
            out["object_pointer"] = self._mask_pointer(state, int(k), mask_inputs)
        state._s.store_output(0, int(k), output_value=out, is_conditioning_frame=True)
        if mask is None or not self.exact_mask_memory:
            # Meta encodes a prompted frame's memory from its stored low-resolution logits
            # (hole-filled), brought up to the input size; for clicks that is what the decoder
            # made anyway, for a mask prompt it is the mask after a round trip through 1/4
            if mask is not None or self.fill_hole_area > 0:
                logits = fill_holes(out["pred_masks"][0, 0], self.fill_hole_area)
                out["high_res_masks"] = self._upsample(logits[None, None])
        self._encode_memory(state, int(k), out, from_prompt=True)
        stored = state.cond[int(k)]
        stored.pop("high_res_masks", None)
        return dict(stored)

    def _mask_pointer(
        self, state: TrackingState, k: int, mask_inputs: torch.Tensor
    ) -> torch.Tensor:
        """The object pointer of a mask prompt, as Meta's ``_use_mask_as_output`` makes it.

        Meta runs the decoder on the downsampled mask with a single output mask; transformers'
        port (5.x) lets it default to three outputs and takes the best one, which gives another
        pointer (the parity fixture's ``mask`` scenario shows it). Recomputed here the way Meta
        does, with the same no-object handling.
        """
        m = self.model
        feats, _ = m._prepare_vision_features(state._s, k, 1)
        sizes = m.backbone_feature_sizes
        high_res = [
            x.permute(1, 2, 0).view(x.size(1), x.size(2), *sz)
            for x, sz in zip(feats[:-1], sizes[:-1], strict=True)
        ]
        pix_feat = feats[-1].permute(1, 2, 0).view(-1, m.hidden_dim, *sizes[-1])
        mask = mask_inputs.to(pix_feat.dtype)
        pointer = m._single_frame_forward(
            input_masks=m.mask_downsample(mask),
            image_embeddings=[*high_res, pix_feat],
            multimask_output=False,
        ).object_pointer
        appearing = torch.any(mask_inputs.flatten(1).float() > 0.0, dim=1)[..., None]
        lam = appearing.to(pointer.dtype)
        return lam * pointer + (1 - lam) * m.no_object_pointer

    def _upsample(self, logits: torch.Tensor) -> torch.Tensor:
        """``(1, 1, h, w)`` low-resolution logits -> ``(1, 1, S, S)``, as SAM 2 upsamples them."""
        s = self.image_size
        return F.interpolate(logits.float(), size=(s, s), mode="bilinear", align_corners=False).to(
            logits.dtype
        )

    def track(self, state: TrackingState, k: int, *, reverse: bool) -> FrameOutput:
        """Track frame ``k`` from the memory bank, store it as a tracked frame with its memory.

        Returns
        -------
        FrameOutput
            Without ``high_res_masks`` (dropped once the memory is encoded).

        Raises
        ------
        Interrupted
            From :meth:`interruptible`; the state is then as it was before the call.
        """
        k = int(k)
        had_out, had_dir = state.tracked.get(k), state.directions.get(k)
        try:
            return self._track(state, k, reverse=reverse)
        except BaseException:
            for table, old in ((state.tracked, had_out), (state.directions, had_dir)):
                if old is None:
                    table.pop(k, None)
                else:
                    table[k] = old
            raise

    def track_many(
        self, states: list[TrackingState], k: int, *, reverse: bool
    ) -> list[FrameOutput]:
        """:meth:`track` for several objects on one frame, batched through the model.

        The objects' memory banks stay separate; objects whose memory holds as many tokens
        (and as many object-pointer tokens) go through memory attention, the mask decoder and
        the memory encoder as one batch, over the frame's features (computed once). Each
        object's output equals what :meth:`track` gives it alone (the same operations, batched).

        Parameters
        ----------
        states : list of TrackingState
            One per object, all sharing the feature source of frame ``k``.
        k : int
        reverse : bool

        Returns
        -------
        list of FrameOutput
            In the order of ``states``.

        Raises
        ------
        Interrupted
            From :meth:`interruptible`; every state is then as it was before the call.
        """
        k = int(k)
        if len(states) == 1:
            return [self.track(states[0], k, reverse=reverse)]
        saved = [(st.tracked.get(k), st.directions.get(k)) for st in states]
        try:
            return self._track_many(states, k, reverse=reverse)
        except BaseException:
            for st, (had_out, had_dir) in zip(states, saved, strict=True):
                for table, old in ((st.tracked, had_out), (st.directions, had_dir)):
                    if old is None:
                        table.pop(k, None)
                    else:
                        table[k] = old
            raise

    def _memory_of(
        self, state: TrackingState, k: int, reverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(memory, memory_pos, n_pointer_tokens)`` SAM 2's memory attention reads for one
        object on frame ``k``, as ``_prepare_memory_conditioned_features`` gathers them:
        ``(L, 1, C_mem)`` tokens (memory frames, then object pointers)."""
        m, s = self.model, state._s
        dev = self.device
        prev = m._gather_memory_frame_outputs(s, 0, k, reverse)
        mems, mpos = m._build_memory_attention_inputs(prev, dev)
        offsets, pointers, max_ptr = m._get_object_pointers(
            s, 0, k, s.num_frames, dev, reverse, False
        )
        n_ptr = 0
        if pointers:
            ptr, ptr_pos = m._process_object_pointers(
                offsets, pointers, max_ptr, 1, m.hidden_dim, dev
            )
            if ptr is not None:
                mems.append(ptr)
                mpos.append(ptr_pos)
                n_ptr = int(ptr.shape[0])
        return torch.cat(mems, 0).to(dtype=s.dtype), torch.cat(mpos, 0), n_ptr

    def _track_many(
        self, states: list[TrackingState], k: int, *, reverse: bool
    ) -> list[FrameOutput]:
        m = self.model
        feats, pos = m._prepare_vision_features(states[0]._s, k, 1)
        height, width = m.backbone_feature_sizes[-1]
        memories = [self._memory_of(st, k, reverse) for st in states]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (mem, _, n_ptr) in enumerate(memories):
            groups.setdefault((int(mem.shape[0]), n_ptr), []).append(i)
        outs: list[FrameOutput | None] = [None] * len(states)
        multimask = m._use_multimask(False, None)
        for (_, n_ptr), idx in groups.items():
            b = len(idx)
            conditioned = m.memory_attention(
                current_vision_features=feats[-1].expand(-1, b, -1),
                current_vision_position_embeddings=pos[-1].expand(-1, b, -1),
                memory=torch.cat([memories[i][0] for i in idx], 1),
                memory_posision_embeddings=torch.cat([memories[i][1] for i in idx], 1),
                num_object_pointer_tokens=n_ptr,
            )  # (1, b, HW, C)
            pix_feat = conditioned[0].transpose(1, 2).reshape(b, m.hidden_dim, height, width)
            high_res = [
                x.permute(1, 2, 0).view(x.size(1), x.size(2), *sz).expand(b, -1, -1, -1)
                for x, sz in zip(feats[:-1], m.backbone_feature_sizes[:-1], strict=True)
            ]
            sam = m._single_frame_forward(
                pixel_values=None,
                image_embeddings=[*high_res, pix_feat],
                multimask_output=multimask,
            )
            for j, i in enumerate(idx):
                outs[i] = {
                    "pred_masks": _of_object(sam.pred_masks, j, b),
                    "object_pointer": _of_object(sam.object_pointer, j, b),
                    "high_res_masks": _of_object(sam.high_res_masks, j, b),
                    "object_score_logits": sam.object_score_logits[j : j + 1],
                }
        done = [o for o in outs if o is not None]
        for st, out in zip(states, done, strict=True):
            st._s.store_output(0, k, output_value=out, is_conditioning_frame=False)
            st.directions[k] = {"reverse": bool(reverse)}
        # the memory of every object in one batch, as transformers' _batch_encode_memories
        features, pos_enc = m._encode_new_memory(
            current_vision_feats=feats[-1].expand(-1, len(states), -1),
            pred_masks_high_res=torch.cat([o["high_res_masks"] for o in done], 0),
            object_score_logits=torch.cat([o["object_score_logits"] for o in done], 0),
            is_mask_from_pts=False,
        )
        result = []
        for i, st in enumerate(states):
            stored = st.tracked[k]
            stored["maskmem_features"] = features[:, i : i + 1].clone()
            stored["maskmem_pos_enc"] = pos_enc[:, i : i + 1].clone()
            stored.pop("high_res_masks", None)
            result.append(stored)
        return result

    def _track(self, state: TrackingState, k: int, *, reverse: bool) -> FrameOutput:
        m = self.model
        out = m._run_single_frame_inference(
            inference_session=state._s,
            frame_idx=int(k),
            obj_idx=0,
            batch_size=1,
            is_init_cond_frame=False,
            point_inputs=None,
            mask_inputs=None,
            reverse=bool(reverse),
            streaming=False,
        )
        state._s.store_output(0, int(k), output_value=out, is_conditioning_frame=False)
        state.directions[int(k)] = {"reverse": bool(reverse)}
        self._encode_memory(state, int(k), out, from_prompt=False)
        stored = state.tracked[int(k)]
        stored.pop("high_res_masks", None)
        return stored

    def restore_tracked(
        self,
        state: TrackingState,
        k: int,
        *,
        logits: torch.Tensor,
        score_logits: torch.Tensor,
        pointer: torch.Tensor,
        reverse: bool,
        with_memory: bool,
    ) -> None:
        """Put an earlier tracked result of frame ``k`` back into a state as a tracked frame.

        A correction on a tracked slice is decoded with the memory of the slices tracked before
        it; a sam2-med session keeps only their logits, score and pointer, and this rebuilds the
        tracked-frame record SAM 2 would still hold, re-encoding its memory exactly as
        :meth:`track` encoded it (from the unfilled logits brought up to the input size).

        Parameters
        ----------
        state : TrackingState
        k : int
        logits : (h, w) float tensor
            The frame's low-resolution logits as :meth:`track` returned them (unfilled).
        score_logits : tensor
            Its object-score logits (:func:`score_logits_of`).
        pointer : (1, C) tensor
            Its object pointer (:func:`pointer_of`).
        reverse : bool
            The direction it was tracked in.
        with_memory : bool
            Also encode its memory (only the last ``num_maskmem - 1`` frames' memory is read;
            farther frames contribute their object pointer alone).
        """
        dev = self.device
        pred = logits.to(dev, torch.float32)[None, None]
        out: FrameOutput = {
            "pred_masks": pred,
            "object_pointer": pointer.to(dev),
            "object_score_logits": score_logits.to(dev),
        }
        state._s.store_output(0, int(k), output_value=out, is_conditioning_frame=False)
        state.directions[int(k)] = {"reverse": bool(reverse)}
        if with_memory:
            out = state.tracked[int(k)]
            out["high_res_masks"] = self._upsample(pred)
            self._encode_memory(state, int(k), out, from_prompt=False)
            out.pop("high_res_masks", None)

    def _encode_memory(
        self, state: TrackingState, k: int, out: FrameOutput, *, from_prompt: bool
    ) -> None:
        self.model._batch_encode_memories(
            inference_session=state._s,
            frame_idx=k,
            objects_needing_memory_encoding=[0],
            high_res_masks_for_memory=[out["high_res_masks"]],
            object_score_logits_for_memory=[out["object_score_logits"]],
            is_mask_from_pts_per_obj=[from_prompt],
        )

    # -- memory housekeeping --------------------------------------------------------------------
    @staticmethod
    def strip_memory(out: FrameOutput) -> None:
        """Drop a tracked frame's encoded memory, keeping its object pointer and logits."""
        for key in _MEMORY_KEYS:
            out.pop(key, None)

    @staticmethod
    def forget(state: TrackingState, keep: Callable[[int], str]) -> None:
        """Prune the tracked frames of a state.

        ``keep(frame)`` answers ``"all"`` (keep the record), ``"pointer"`` (keep only what the
        object pointer needs: drop the encoded memory) or ``"none"`` (drop the record).
        """
        tracked = state.tracked
        for f in list(tracked):
            what = keep(f)
            if what == "none":
                del tracked[f]
            elif what == "pointer":
                Sam2Engine.strip_memory(tracked[f])


# =================================================================================================
# Training: differentiable single-frame steps over a batch of clips
# =================================================================================================
#
# ``Sam2VideoModel.forward`` and ``propagate_in_video_iterator`` run under ``inference_mode``, and
# ``_run_single_frame_inference`` keeps only the chosen mask and drops the object score in
# training mode. SAM 2's training (Meta's ``training/model/sam2.py``) needs, per frame, every
# multimask output with its IoU prediction and the object-score logit, and memory encoded with
# gradients. The functions below rebuild the same per-frame computation from the model's modules
# (prompt encoder, mask decoder, object-pointer projection) and its memory internals, for a batch
# of B clips that share frame indices (clip b's frame t is row b of every tensor of frame t).
# With B = 1, the model in eval mode and gradients off they give exactly what
# :meth:`Sam2Engine.decode_prompt` and :meth:`Sam2Engine.track` give (``tests/models/test_engine.py``
# checks it), so a trained model runs unchanged in a :class:`sam2_med.session.Session`.


@dataclass
class ClipFeatures:
    """Image-encoder output of a batch of clips, frame-major.

    Attributes
    ----------
    levels : list of (HW_l, T * B, C_l) tensors
        Backbone features per level; column ``t * B + b`` is frame ``t`` of clip ``b``.
    pos : list of (HW_l, 1, C) tensors
        Position encodings (the same for every frame).
    batch : int
        Clips ``B``.
    """

    levels: list[torch.Tensor]
    pos: list[torch.Tensor]
    batch: int

    def gather(self, index: torch.Tensor, batch: int) -> ClipFeatures:
        """The features of other clips built from these: column ``j`` of the result is column
        ``index[j]`` of these (``len(index) = T * batch``, frame-major). Lets several objects
        share one encoded frame; gradients add up where they do."""
        idx = index.to(self.levels[0].device)
        return ClipFeatures([f.index_select(1, idx) for f in self.levels], self.pos, int(batch))

    def frame(self, t: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Features ``(HW_l, B, C_l)`` per level and position encodings ``(HW_l, B, C)`` of frame ``t``."""
        b = self.batch
        feats = [f[:, t * b : (t + 1) * b] for f in self.levels]
        pos = [p.expand(-1, b, -1) for p in self.pos]
        return feats, pos


@dataclass
class TrainStep:
    """Differentiable outputs of one frame for a batch of B clips.

    Attributes
    ----------
    multimask_logits : (B, M, h, w) tensor
        Low-resolution logits of every mask the decoder produced (``M = 3`` with multimask
        output, else 1), after SAM 2's object-score gate (a frame whose object-score logit is
        <= 0 gets a constant -1024: no mask gradient there, as in Meta's training).
    iou : (B, M) tensor
        IoU predictions of those masks.
    object_score : (B, 1) tensor
        Object-score logits (> 0: present).
    logits : (B, h, w) tensor
        The mask passed on to memory and to the user: the highest predicted IoU of the
        multimask outputs, or the only one.
    high_res : (B, 1, S, S) tensor
        ``logits`` upsampled to the model input (what the memory encoder reads).
    pointer : (B, C) tensor
        Object pointer of the frame.
    from_mask : bool
        True when the output is a mask prompt passed through (no decoder loss applies).
    """

    multimask_logits: torch.Tensor
    iou: torch.Tensor
    object_score: torch.Tensor
    logits: torch.Tensor
    high_res: torch.Tensor
    pointer: torch.Tensor
    from_mask: bool = False


class _NoFeatures:
    """Feature source of a training state: features are passed to each call instead."""

    def features(self, k: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:  # pragma: no cover
        raise RuntimeError("a training state takes its features with each call")


class Sam2TrainingEngine(Sam2Engine):
    """:class:`Sam2Engine` plus differentiable single-frame steps for training.

    The caller sets the module mode (``model.train()`` for Meta's training semantics: dropout in
    memory attention, no stability fallback in the decoder, sigmoid masks into memory) and the
    grad mode; nothing here switches either. One training clip batch goes::

        feats = eng.encode_clips(pixels, batch=B)          # (T * B) frames, frame-major
        st = eng.train_state(n_frames)
        f, pos = feats.frame(0)
        step = eng.decode_train(eng.condition(st, 0, f, pos, with_memory=False), f,
                                points=pts, labels=lab)    # losses on step.multimask_logits...
        eng.commit(st, 0, f, step, conditioning=True, from_prompt=True)
        for t in range(1, T):
            f, pos = feats.frame(t)
            step = eng.decode_train(eng.condition(st, t, f, pos, with_memory=True), f,
                                    initial=False)
            eng.commit(st, t, f, step, conditioning=False, from_prompt=False)
    """

    def encode_clips(self, pixels: torch.Tensor, batch: int) -> ClipFeatures:
        """Image features of ``T * B`` frames (frame-major), with gradients when enabled.

        Parameters
        ----------
        pixels : (T * B, 3, S, S) float tensor
            Model-input frames from :class:`sam2_med.frames.SliceStream`; row ``t * B + b`` is frame
            ``t`` of clip ``b``.
        batch : int
            Clips ``B``.
        """
        out = self.model.get_image_features(pixels, return_dict=True)
        pos = [p[:, :1] for p in out.fpn_position_encoding]
        return ClipFeatures(list(out.fpn_hidden_states), pos, int(batch))

    def train_state(self, n_frames: int) -> TrackingState:
        """An empty memory bank for a batch of clips of a volume of ``n_frames`` slices.

        ``n_frames`` is the frame count of the *volume* the clips come from: SAM 2 normalises
        object-pointer distances by ``min(n_frames, max_object_pointers)``, and a short clip must
        see the encoding inference will use.
        """
        return self.new_state(n_frames, _NoFeatures())

    def condition(
        self,
        state: TrackingState,
        k: int,
        feats: list[torch.Tensor],
        pos: list[torch.Tensor],
        *,
        with_memory: bool,
        reverse: bool = False,
    ) -> torch.Tensor:
        """The frame's top-level features, conditioned on the memory bank: ``(B, C, H, W)``.

        ``with_memory`` False: SAM 2's initial conditioning frame (the learned no-memory embedding
        is added); True: memory attention over the conditioning frames, the tracked frames behind
        ``k`` and their object pointers in ``state``.
        """
        m = self.model
        k = int(k)
        if not with_memory:
            # SAM 2's initial conditioning frame: no memory, a learned "no memory" embedding
            return m._prepare_memory_conditioned_features(
                inference_session=state._s,
                frame_idx=k,
                obj_idx=0,
                is_initial_conditioning_frame=True,
                current_vision_features=feats[-1],
                current_vision_positional_embeddings=pos[-1],
                num_total_frames=state.n_frames,
                track_in_reverse_time=bool(reverse),
                streaming=False,
            )
        # The memory path of ``_prepare_memory_conditioned_features``, whose final reshape
        # only holds for a batch of one: gather memories and object pointers, attend, reshape.
        top = feats[-1]
        b, c = top.size(1), top.size(2)
        h, w = m.backbone_feature_sizes[-1]
        frames = m._gather_memory_frame_outputs(state._s, 0, k, bool(reverse))
        memories, memory_pos = m._build_memory_attention_inputs(frames, top.device)
        offsets, pointers, max_pointers = m._get_object_pointers(
            state._s, 0, k, state.n_frames, top.device, bool(reverse), False
        )
        n_pointer_tokens = 0
        if pointers:
            ptr, ptr_pos = m._process_object_pointers(
                offsets, pointers, max_pointers, b, c, top.device
            )
            memories.append(ptr)
            memory_pos.append(ptr_pos)
            n_pointer_tokens = ptr.shape[0]
        out = m.memory_attention(
            current_vision_features=top,
            current_vision_position_embeddings=pos[-1],
            memory=torch.cat(memories, dim=0).to(top.dtype),
            memory_posision_embeddings=torch.cat(memory_pos, dim=0),
            num_object_pointer_tokens=n_pointer_tokens,
        )  # (1, B, HW, C)
        return out[0].permute(0, 2, 1).reshape(b, c, h, w)

    def _high_res(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        sizes = self.model.backbone_feature_sizes
        return [
            x.permute(1, 2, 0).reshape(x.size(1), x.size(2), *s)
            for x, s in zip(feats[:-1], sizes[:-1], strict=True)
        ]

    def decode_train(
        self,
        pix_feat: torch.Tensor,
        feats: list[torch.Tensor],
        *,
        points: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        prior: torch.Tensor | None = None,
        initial: bool = True,
        multimask: bool | None = None,
    ) -> TrainStep:
        """SAM 2's prompt encoder and mask decoder on a conditioned frame, every output kept.

        Parameters
        ----------
        pix_feat : (B, C, H, W) tensor
            From :meth:`condition`.
        feats : list of (HW_l, B, C_l) tensors
            The frame's backbone features (the two high-resolution levels are read).
        points : (B, N, 2) float tensor, optional
            Model-input pixels ``(x, y)``; boxes are two rows labelled 2 and 3, first.
        labels : (B, N) int tensor, optional
            1 positive, 0 negative, 2/3 box corners, -1 padding.
        prior : (B, h, w) tensor, optional
            Earlier low-resolution logits fed back as the dense mask prompt (correction clicks).
        initial : bool
            An initial conditioning frame (decides multimask output with the number of points).
        multimask : bool, optional
            Force multimask output on or off; default SAM 2's rule (initial or
            ``multimask_output_for_tracking``, and 0 or 1 point).
        """
        m = self.model
        b = pix_feat.shape[0]
        dev = pix_feat.device
        if points is None:
            pts = torch.zeros(b, 1, 1, 2, device=dev, dtype=pix_feat.dtype)
            lab = -torch.ones(b, 1, 1, device=dev, dtype=torch.int32)
            n_pts = 0
        else:
            pts = points.to(dev, torch.float32)[:, None]
            lab = labels.to(dev, torch.int32)[:, None]
            n_pts = int(lab.shape[-1])
        if multimask is None:
            multimask = m._use_multimask(initial, {"point_labels": torch.zeros(1, 1, n_pts)})
        mask_input = None
        if prior is not None:
            mask_input = prior.to(dev, pix_feat.dtype)[:, None]
            if tuple(mask_input.shape[-2:]) != tuple(m.prompt_encoder.mask_input_size):
                mask_input = F.interpolate(
                    mask_input.float(),
                    size=m.prompt_encoder.mask_input_size,
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                ).to(mask_input.dtype)
        sparse, dense = m.prompt_encoder(
            input_points=pts, input_labels=lab, input_boxes=None, input_masks=mask_input
        )
        image_pe = m.get_image_wide_positional_embeddings().repeat(b, 1, 1, 1)
        masks, iou, tokens, obj = m.mask_decoder(
            image_embeddings=pix_feat,
            image_positional_embeddings=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=bool(multimask),
            high_resolution_features=self._high_res(feats),
        )
        masks, iou, tokens, obj = masks[:, 0], iou[:, 0], tokens[:, 0], obj.reshape(b, 1)
        present = obj > 0
        masks = torch.where(present[:, :, None, None], masks, -1024.0)
        best = iou.argmax(dim=-1) if masks.shape[1] > 1 else torch.zeros(b, dtype=torch.long)
        rows = torch.arange(b, device=dev)
        chosen = masks[rows, best.to(dev)]
        token = tokens[rows, best.to(dev)]
        size = int(m.image_size)
        high = F.interpolate(
            chosen[:, None].float(), size=(size, size), mode="bilinear", align_corners=False
        ).to(chosen.dtype)
        lam = present.to(token.dtype)
        pointer = lam * m.object_pointer_proj(token) + (1 - lam) * m.no_object_pointer
        return TrainStep(masks, iou, obj, chosen, high, pointer)

    def mask_as_output(self, feats: list[torch.Tensor], mask: torch.Tensor) -> TrainStep:
        """A mask prompt passed through as the frame's output (SAM 2's ``_use_mask_as_output``).

        The output logits are ``20 * mask - 10``; the object pointer comes from the decoder run
        on the raw frame features with the downsampled mask as dense prompt (what transformers'
        ``_use_mask_as_output`` does, whose decoder call only holds for a batch of one).

        Parameters
        ----------
        feats : list of (HW_l, B, C_l) tensors
        mask : (B, S, S) float tensor
            0/1 masks in model-input pixels.
        """
        m = self.model
        b = mask.shape[0]
        top = feats[-1]
        pix = top.permute(1, 2, 0).reshape(b, top.size(2), *m.backbone_feature_sizes[-1])
        mask = mask[:, None].to(pix.dtype)
        high = mask * 20.0 - 10.0
        low = F.interpolate(
            high.float(),
            size=m.prompt_encoder.mask_input_size,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        ).to(pix.dtype)[:, 0]
        dec = self.decode_train(
            pix, feats, prior=m.mask_downsample(mask)[:, 0], initial=True, multimask=True
        )
        lam = (mask.flatten(1) > 0).any(-1, keepdim=True).to(pix.dtype)  # (B, 1)
        pointer = lam * dec.pointer + (1 - lam) * m.no_object_pointer
        return TrainStep(
            multimask_logits=low[:, None],
            iou=mask.new_ones(b, 1),
            object_score=20.0 * lam - 10.0,
            logits=low,
            high_res=high,
            pointer=pointer,
            from_mask=True,
        )

    def commit(
        self,
        state: TrackingState,
        k: int,
        feats: list[torch.Tensor],
        step: TrainStep,
        *,
        conditioning: bool,
        from_prompt: bool,
    ) -> None:
        """Store a frame's output in the memory bank and encode its memory (with gradients).

        ``conditioning``: store as a conditioning frame (prompted) or a tracked frame.
        ``from_prompt``: the mask came from a prompt (in eval mode SAM 2 then binarises it before
        the memory encoder; in training mode it always uses the sigmoid, as Meta's training does).
        """
        out = {
            "pred_masks": step.logits[:, None],
            "object_pointer": step.pointer,
            "object_score_logits": step.object_score,
        }
        state._s.store_output(0, int(k), output_value=out, is_conditioning_frame=conditioning)
        mem, mem_pos = self.model._encode_new_memory(
            current_vision_feats=feats[-1],
            pred_masks_high_res=step.high_res,
            object_score_logits=step.object_score[:, :, None],
            is_mask_from_pts=from_prompt,
        )
        bank = state.cond if conditioning else state.tracked
        bank[int(k)]["maskmem_features"] = mem
        bank[int(k)]["maskmem_pos_enc"] = mem_pos
        if not conditioning:
            state.directions[int(k)] = {"reverse": False}
