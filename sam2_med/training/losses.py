"""SAM 2's training losses, as Meta's ``training/loss_fns.py`` defines them.

Per frame and per decoder pass (a prompt, then each corrective click), with ``M`` mask outputs
(3 with multimask output, else 1) against the frame's target mask ``y``:

* **focal** loss on every output (sigmoid focal loss, ``alpha = 0.25``, ``gamma = 2``, averaged
  over pixels) and **dice** loss (``1 - (2 |p y| + 1) / (|p| + |y| + 1)`` on sigmoid
  probabilities);
* **best of multimask**: only the output with the lowest ``w_focal * focal + w_dice * dice`` is
  back-propagated;
* **IoU regression**: L1 between each output's predicted IoU and its actual IoU with the target
  (thresholded at 0), averaged over all ``M`` outputs;
* **object score**: binary cross-entropy of the object-score logit against "the target is not
  empty";
* mask, dice and IoU terms count only on frames where the object is present. Where the model's
  object score says "absent" (logit <= 0), SAM 2 replaces the mask logits by a constant
  (-1024): those frames give the mask terms no gradient (Meta's training too), only the object
  score term can fix them; their constant mask terms are left out of the reported sums, which
  keeps the loss readable without changing any gradient.
* ``mask_on_absent`` (not Meta's; off by default): the focal and dice terms also count on
  frames where the object is absent and the object score lets the mask through, against the
  empty target, so the decoder itself learns to return nothing past an object's end. From
  random weights a reduced model's object score on tracked frames stays at its prior (measured:
  0.3-0.5 on every slice, present or not) and, with Meta's gating, nothing else tells the
  decoder that its mask past the organ is wrong.

The weights default to Meta's SAM 2.1 training configuration: focal 20, dice 1, IoU 1, object
score 1. Losses are summed over frames and decoder passes and averaged over the clips of a batch.
Masks are compared at model-input resolution (low-resolution logits upsampled bilinearly).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..models.engine import TrainStep

__all__ = ["LossWeights", "frame_losses"]


@dataclass(frozen=True)
class LossWeights:
    """Weights of SAM 2's loss terms (Meta's SAM 2.1 training values by default)."""

    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    object_score: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    mask_on_absent: bool = False

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _focal(logits: torch.Tensor, target: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """(B, M, H, W) -> (B, M) sigmoid focal loss averaged over pixels."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(2).mean(-1)


def _dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, M, H, W) -> (B, M) dice loss on sigmoid probabilities."""
    p = logits.sigmoid().flatten(2)
    t = target.flatten(2)
    return 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)


def frame_losses(
    step: TrainStep, target: torch.Tensor, w: LossWeights | None = None
) -> dict[str, torch.Tensor]:
    """SAM 2's losses of one decoder pass on one frame, averaged over the batch.

    Parameters
    ----------
    step : TrainStep
        The decoder's outputs for B clips.
    target : (B, S, S) float tensor
        0/1 target masks in model-input pixels.
    w : LossWeights

    Returns
    -------
    dict
        ``"focal"``, ``"dice"``, ``"iou"``, ``"object_score"`` (each a scalar, unweighted) and
        ``"total"`` (weighted sum). A mask prompt passed through has no decoder loss: only its
        object score would count, and it is fixed, so every term is zero.
    """
    w = w or LossWeights()
    b = target.shape[0]
    present = (target.flatten(1) > 0).any(-1).float()  # (B,)
    gate_open = (step.object_score.detach().reshape(b) > 0).float()
    counted = present * gate_open
    shaped = gate_open if w.mask_on_absent else counted  # focal and dice
    zero = target.new_zeros(())
    if step.from_mask:
        return {"focal": zero, "dice": zero, "iou": zero, "object_score": zero, "total": zero}
    size = target.shape[-2:]
    logits = F.interpolate(
        step.multimask_logits.float(), size=size, mode="bilinear", align_corners=False
    )
    tgt = target[:, None].expand_as(logits)
    focal = _focal(logits, tgt, w.focal_alpha, w.focal_gamma)
    dice = _dice(logits, tgt)
    with torch.no_grad():
        pred = logits > 0
        gt = tgt > 0
        inter = (pred & gt).flatten(2).sum(-1).float()
        union = (pred | gt).flatten(2).sum(-1).float().clamp(min=1.0)
        actual_iou = inter / union
    iou = (step.iou.float() - actual_iou).abs()  # (B, M)
    if logits.shape[1] > 1:
        best = (w.focal * focal + w.dice * dice).argmin(-1)
        rows = torch.arange(b, device=logits.device)
        focal, dice = focal[rows, best], dice[rows, best]
    else:
        focal, dice = focal[:, 0], dice[:, 0]
    iou = iou.mean(-1)
    obj = F.binary_cross_entropy_with_logits(
        step.object_score.float().reshape(b), present, reduction="none"
    )
    out = {
        "focal": (focal * shaped).mean(),
        "dice": (dice * shaped).mean(),
        "iou": (iou * counted).mean(),
        "object_score": obj.mean(),
    }
    out["total"] = (
        w.focal * out["focal"]
        + w.dice * out["dice"]
        + w.iou * out["iou"]
        + w.object_score * out["object_score"]
    )
    return out
