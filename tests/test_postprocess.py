"""Meta's small-hole filling and sprinkle removal, computed with scipy."""

from __future__ import annotations

import numpy as np
import torch

from sam2_med.postprocess import HOLE_LOGIT, SPRINKLE_LOGIT, fill_holes, remove_sprinkles


def _logits(fg: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.where(fg, 5.0, -5.0).astype(np.float32))


def test_holes_up_to_the_area_are_filled_8_connected_border_ones_too() -> None:
    fg = np.ones((16, 16), bool)
    fg[3:5, 3:7] = False  # 8 px hole: filled
    fg[9:12, 9:12] = False  # 9 px hole: kept
    fg[0, 15] = False  # a 1 px background region in the corner: Meta fills it too
    fg[7, 1] = fg[8, 2] = False  # two diagonal pixels: one 8-connected 2 px hole
    out = fill_holes(_logits(fg), 8).numpy()
    assert (out[3:5, 3:7] == HOLE_LOGIT).all() and out[0, 15] == HOLE_LOGIT
    assert out[7, 1] == out[8, 2] == HOLE_LOGIT
    assert (out[9:12, 9:12] == -5.0).all()
    assert (out[fg] == 5.0).all()
    assert (
        fill_holes(_logits(fg), 0) is not None
        and (fill_holes(_logits(fg), 0).numpy() == _logits(fg).numpy()).all()
    )


def test_sprinkles_up_to_the_area_are_removed() -> None:
    fg = np.zeros((16, 16), bool)
    fg[2:4, 2:4] = True  # 4 px: removed at area 4
    fg[8:14, 8:14] = True  # 36 px: kept
    out = remove_sprinkles(_logits(fg), 4).numpy()
    assert (out[2:4, 2:4] == SPRINKLE_LOGIT).all() and (out[8:14, 8:14] == 5.0).all()
    same = _logits(fg)
    assert remove_sprinkles(same, 0) is same
