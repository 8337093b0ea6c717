"""SAM 2's mask post-processing on low-resolution logits, without its CUDA extension.

Meta's video predictor (``build_sam2_video_predictor(apply_postprocessing=True)``) fills small
holes in every mask it outputs: background regions (logits <= 0) of at most ``fill_hole_area``
= 8 low-resolution pixels become foreground with the logit 0.1. Its image predictor can also
remove small "sprinkles" (foreground regions of at most ``max_sprinkle_area`` pixels, set to
-10). Meta labels the regions with a CUDA kernel (``sam2._C``, 8-connected components) and skips
the step when the kernel is missing; here :func:`scipy.ndimage.label` does the same labelling
on any device's logits, on the host.

Where each step applies (as in Meta's ``sam2_video_predictor.py``) is decided by
:class:`~sam2_med.session.Session` and :class:`~sam2_med.models.engine.Sam2Engine`: the
filled logits are what a slice outputs and what a later correction click sees as its mask
prompt, and a prompted slice's memory is encoded from them; a tracked slice's memory is
encoded from the logits before filling.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

__all__ = ["FILL_HOLE_AREA", "HOLE_LOGIT", "SPRINKLE_LOGIT", "fill_holes", "remove_sprinkles"]

#: Meta's video-predictor default (``fill_hole_area=8`` low-resolution pixels).
FILL_HOLE_AREA = 8
#: The logit Meta's video predictor gives a filled hole.
HOLE_LOGIT = 0.1
#: The logit Meta's image predictor gives a removed sprinkle (its mask threshold 0 minus 10).
SPRINKLE_LOGIT = -10.0

_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity, as Meta's connected-components kernel


def _small_regions(region: np.ndarray, max_area: int) -> np.ndarray:
    """Pixels of the 8-connected components of ``region`` with at most ``max_area`` pixels."""
    labels, n = ndimage.label(region, structure=_EIGHT)
    if n == 0:
        return np.zeros(region.shape, bool)
    areas = np.bincount(labels.ravel())
    small = areas <= max_area
    small[0] = False  # label 0 is outside the region
    return small[labels]


def _apply(logits: torch.Tensor, max_area: int, select: str, value: float) -> torch.Tensor:
    if max_area <= 0:
        return logits
    t = torch.as_tensor(logits)
    if t.ndim != 2:
        raise ValueError(f"logits must be 2D (h, w), got shape {tuple(t.shape)}")
    arr = t.detach().to("cpu", torch.float32).numpy()
    region = arr <= 0 if select == "background" else arr > 0
    hit = _small_regions(region, int(max_area))
    if not hit.any():
        return t
    out = torch.where(torch.from_numpy(hit).to(t.device), torch.tensor(value, dtype=t.dtype), t)
    return out


def fill_holes(logits: torch.Tensor, max_area: int = FILL_HOLE_AREA) -> torch.Tensor:
    """Meta's ``fill_holes_in_mask_scores`` for one mask.

    Parameters
    ----------
    logits : (h, w) float tensor
        Low-resolution mask logits (model frame orientation).
    max_area : int
        Background components (logits <= 0, 8-connected, touching the border or not) of at
        most this many pixels are filled; 0 disables the step.

    Returns
    -------
    (h, w) tensor
        ``logits`` with those pixels set to :data:`HOLE_LOGIT` (the input itself when nothing
        was filled).
    """
    return _apply(logits, max_area, "background", HOLE_LOGIT)


def remove_sprinkles(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Meta's image-predictor sprinkle removal for one mask.

    Parameters
    ----------
    logits : (h, w) float tensor
    max_area : int
        Foreground components (logits > 0, 8-connected) of at most this many pixels are set to
        :data:`SPRINKLE_LOGIT`; 0 disables the step.

    Returns
    -------
    (h, w) tensor
    """
    return _apply(logits, max_area, "foreground", SPRINKLE_LOGIT)
