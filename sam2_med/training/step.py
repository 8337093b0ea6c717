"""One training step on a batch of clips: simulated prompts, corrections, SAM 2's losses.

Prompts follow Meta's SAM 2 training (``training/model/sam2.py``) in the form a sam2-med
session sends them, so that what the model learns is what the session asks of it:

* frame 0 of every clip is prompted, the whole batch with one kind drawn per step: one positive
  **click** (uniform inside the object, or at its most interior pixel), a **box** (the mask's
  bounding box, each side jittered by up to ``box_noise`` of the box size), or the **mask**
  itself (passed through as the output);
* after a click or box prompt, 0 to ``corrections`` **corrective clicks** on frame 0, each
  sampled from the error of the latest prediction (at the most interior pixel of the largest
  error region, or uniform in the error), positive in missed object and negative in false
  positive, decoded with all clicks so far and the previous logits as the mask prompt (no
  memory: a session decodes an anchor from its own slice);
* frames 1 .. T-1 are tracked from memory; with probability ``correct_later`` one of them gets a
  corrective click decoded the way a session decodes a click on a propagated slice (the slice's
  tracked logits as mask prompt, with its memory) and becomes a conditioning frame for the
  frames after it. Objects of the batch whose prediction there has no error (typically an
  object absent from the slice and predicted absent) get no click: with ``correct_every``
  they are decoded with SAM's padding point (label -1, what Meta's model sends when there is
  no click) and the tracked logits alone, so the others are still corrected; without it the
  frame's corrections are skipped for the whole batch.

Every decoder pass adds its losses (:func:`sam2_med.training.losses.frame_losses`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..models.engine import Sam2TrainingEngine, TrainStep
from .data import Clip
from .losses import LossWeights, frame_losses

__all__ = ["PromptPolicy", "batch_loss", "correction_click", "sample_box", "sample_click"]


@dataclass(frozen=True)
class PromptPolicy:
    """How prompts and corrections are simulated (probabilities per step).

    ``correct_every``: on the tracked frame drawn for a correction (``correct_later``), correct
    every object that has an error, decoding the error-free ones with a padding point (as
    Meta's training corrects every object). False is the recipe before it existed (the demo
    model's first stage and the overfit test were trained so): the frame's corrections are
    skipped unless every object of the batch has an error, which past an organ's end
    (``TrainConfig.past_end``) is rare, so the model hardly learns corrections on tracked
    slices.
    """

    click: float = 0.5
    box: float = 0.35
    mask: float = 0.15
    click_center: float = 0.5
    box_noise: float = 0.1
    corrections: int = 2
    correct_later: float = 0.3
    correction_center: float = 0.5
    multimask: bool | None = None
    correct_every: bool = True

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _interior(mask: np.ndarray) -> tuple[int, int]:
    """(row, col) of the most interior pixel (maximum of the distance transform)."""
    from scipy.ndimage import distance_transform_edt

    d = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(d)), d.shape)
    return int(r), int(c)


def sample_click(
    mask: np.ndarray, rng: np.random.Generator, center_prob: float
) -> tuple[float, float]:
    """A positive click ``(x, y)`` in model pixels inside a non-empty (S, S) mask."""
    if rng.random() < center_prob:
        r, c = _interior(mask)
    else:
        rows, cols = np.nonzero(mask)
        i = int(rng.integers(rows.size))
        r, c = int(rows[i]), int(cols[i])
    return float(c), float(r)


def sample_box(mask: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """A jittered bounding box ``[[x0, y0], [x1, y1]]`` of a non-empty (S, S) mask."""
    rows, cols = np.nonzero(mask)
    y0, y1, x0, x1 = rows.min(), rows.max(), cols.min(), cols.max()
    h, w = y1 - y0 + 1, x1 - x0 + 1
    j = rng.uniform(-noise, noise, 4) * np.array([w, h, w, h])
    box = np.array([x0 + j[0], y0 + j[1], x1 + j[2], y1 + j[3]], dtype=np.float64)
    s = mask.shape[0] - 1
    box = np.clip(box, 0, s)
    lo = np.minimum(box[:2], box[2:])
    hi = np.maximum(box[:2], box[2:])
    return np.stack([lo, hi]).astype(np.float32)


def correction_click(
    pred: np.ndarray, target: np.ndarray, rng: np.random.Generator | None, center_prob: float = 1.0
) -> tuple[float, float, int] | None:
    """A corrective click ``(x, y, label)`` on the error of ``pred`` against ``target``.

    At the most interior pixel of the largest connected error region (probability
    ``center_prob``, and always without ``rng``), else uniform in the error. Label 1 where the
    object was missed, 0 on a false positive. None when there is no error.
    """
    from scipy.ndimage import label as cc_label

    err = pred != target
    if not err.any():
        return None
    if rng is None or rng.random() < center_prob:
        comp, _ = cc_label(err)
        sizes = np.bincount(comp.ravel())[1:]
        r, c = _interior(comp == int(np.argmax(sizes)) + 1)
    else:
        rows, cols = np.nonzero(err)
        i = int(rng.integers(rows.size))
        r, c = int(rows[i]), int(cols[i])
    return float(c), float(r), int(bool(target[r, c]))


def _up(logits: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(
        logits[:, None].float(), size=(size, size), mode="bilinear", align_corners=False
    )[:, 0]


def _add(total: dict[str, float], losses: dict[str, torch.Tensor]) -> None:
    for k, v in losses.items():
        total[k] = total.get(k, 0.0) + float(v.detach())


def batch_loss(
    engine: Sam2TrainingEngine,
    clips: list[Clip],
    rng: np.random.Generator,
    policy: PromptPolicy | None = None,
    weights: LossWeights | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Run B clips through SAM 2 with simulated prompts and return the summed loss.

    Parameters
    ----------
    engine : Sam2TrainingEngine
    clips : list of Clip
        Same length ``T`` and image size; clips that share a frames tensor (several objects on
        the same slices, :meth:`ClipSampler.sample_group`) share its encoding.
    rng : numpy Generator
        Draws the prompt kind, clicks, boxes and corrections.

    Returns
    -------
    loss : scalar tensor
        Sum over frames and decoder passes of the batch-averaged weighted losses (differentiable).
    parts : dict of str -> float
        The unweighted terms summed the same way, ``"total"``, the prompt ``"kind"`` code
        (0 click, 1 box, 2 mask), and ``"dice_frame0"`` / ``"dice_last"`` (hard Dice of the
        first-frame prediction after corrections, and of the last frame).
    """
    policy = policy or PromptPolicy()
    weights = weights or LossWeights()
    b, t_len = len(clips), clips[0].frames.shape[0]
    size = clips[0].frames.shape[-1]
    dev = engine.device
    # clips of several objects on the same slices share one frames tensor: encode it once
    unique: dict[int, int] = {}
    for c in clips:
        unique.setdefault(id(c.frames), len(unique))
    frames = {id(c.frames): c.frames for c in clips}
    u = len(unique)
    ordered = [frames[key] for key in unique]
    pixels = torch.stack(ordered, 1).reshape(t_len * u, 3, size, size).to(dev)
    targets = torch.stack([c.masks for c in clips], 1).to(dev)  # (T, B, S, S)
    tnp = targets.cpu().numpy() > 0.5
    feats = engine.encode_clips(pixels, u)
    if u != b:
        index = torch.tensor([t * u + unique[id(c.frames)] for t in range(t_len) for c in clips])
        feats = feats.gather(index, b)
    st = engine.train_state(min(c.n_frames for c in clips))
    # a mask prompt passes through: on a one-frame clip it would teach nothing
    p = np.array([policy.click, policy.box, policy.mask if t_len > 1 else 0.0], dtype=np.float64)
    kind = int(rng.choice(3, p=p / p.sum()))
    parts: dict[str, float] = {"kind": float(kind)}
    total = None

    def acc(step: TrainStep, target: torch.Tensor) -> None:
        nonlocal total
        losses = frame_losses(step, target, weights)
        total = losses["total"] if total is None else total + losses["total"]
        _add(parts, losses)

    f, pos = feats.frame(0)
    if kind == 2:
        step = engine.mask_as_output(f, targets[0])
        engine.commit(st, 0, f, step, conditioning=True, from_prompt=True)
    else:
        if kind == 0:
            pts = [[sample_click(tnp[0, i], rng, policy.click_center)] for i in range(b)]
            labs = [[1] for _ in range(b)]
        else:
            pts = [list(map(tuple, sample_box(tnp[0, i], rng, policy.box_noise))) for i in range(b)]
            labs = [[2, 3] for _ in range(b)]
        pix = engine.condition(st, 0, f, pos, with_memory=False)
        points = torch.tensor(pts, dtype=torch.float32)
        labels = torch.tensor(labs, dtype=torch.int32)
        step = engine.decode_train(
            pix, f, points=points, labels=labels, initial=True, multimask=policy.multimask
        )
        acc(step, targets[0])
        for _ in range(int(rng.integers(policy.corrections + 1))):
            pred = (_up(step.logits.detach(), size) > 0).cpu().numpy()
            extra = []
            for i in range(b):
                c = correction_click(pred[i], tnp[0, i], rng, policy.correction_center)
                extra.append(c if c is not None else (*pts[i][-1], labs[i][-1]))
            for i, (x, y, lab) in enumerate(extra):
                pts[i].append((x, y))
                labs[i].append(lab)
            points = torch.tensor(pts, dtype=torch.float32)
            labels = torch.tensor(labs, dtype=torch.int32)
            prior = step.logits.detach().clamp(-32.0, 32.0)
            step = engine.decode_train(
                pix, f, points=points, labels=labels, prior=prior, initial=True
            )
            acc(step, targets[0])
        engine.commit(st, 0, f, step, conditioning=True, from_prompt=True)
    with torch.no_grad():
        parts["dice_frame0"] = _hard_dice(_up(step.logits, size), targets[0])
        parts["present_frame0"] = float((step.object_score > 0).float().mean())
    t_corr = (
        int(rng.integers(1, t_len)) if t_len > 1 and rng.random() < policy.correct_later else -1
    )
    for t in range(1, t_len):
        f, pos = feats.frame(t)
        pix = engine.condition(st, t, f, pos, with_memory=True)
        step = engine.decode_train(pix, f, initial=False)
        acc(step, targets[t])
        if t == t_corr:
            pred = (_up(step.logits.detach(), size) > 0).cpu().numpy()
            clicks = [
                correction_click(pred[i], tnp[t, i], rng, policy.correction_center)
                for i in range(b)
            ]
            if policy.correct_every and any(c is not None for c in clicks):
                # no error, no click: SAM's padding point (label -1) leaves the logits the prompt
                clicks = [c if c is not None else (0.0, 0.0, -1) for c in clicks]
            if all(c is not None for c in clicks):
                points = torch.tensor([[c[:2]] for c in clicks], dtype=torch.float32)
                labels = torch.tensor([[c[2]] for c in clicks], dtype=torch.int32)
                prior = step.logits.detach().clamp(-32.0, 32.0)
                # a correction on a tracked frame is decoded with its memory, as a session
                # decodes it (and as Meta's training samples correction points)
                step = engine.decode_train(
                    pix, f, points=points, labels=labels, prior=prior, initial=False
                )
                acc(step, targets[t])
                engine.commit(st, t, f, step, conditioning=True, from_prompt=True)
                continue
        engine.commit(st, t, f, step, conditioning=False, from_prompt=False)
    with torch.no_grad():
        parts["dice_last"] = _hard_dice(_up(step.logits, size), targets[-1])
    if total is None:  # a mask prompt on a one-frame clip: nothing to learn
        total = targets.new_zeros((), requires_grad=True)
    parts["total"] = float(total.detach())
    return total, parts


def _hard_dice(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Mean Dice over clips of ``logits > 0`` against the targets (1 where both are empty)."""
    p = (logits > 0).flatten(1).float()
    t = (target > 0.5).flatten(1).float()
    inter = (p * t).sum(-1)
    den = p.sum(-1) + t.sum(-1)
    d = torch.where(den > 0, 2 * inter / den.clamp(min=1), torch.ones_like(den))
    return float(d.mean())
