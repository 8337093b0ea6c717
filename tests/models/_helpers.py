"""Helpers shared by the model tests: a plain transformers propagation loop."""

from __future__ import annotations

import torch
from transformers import Sam2VideoInferenceSession, Sam2VideoModel


def propagate_points(
    model: Sam2VideoModel,
    video: torch.Tensor,
    frame: int,
    points: list[tuple[float, float]],
    labels: list[int],
    *,
    reverse_too: bool = True,
) -> dict[str, dict[int, torch.Tensor]]:
    """Prompt one object on ``frame`` and propagate forward, then in reverse.

    Parameters
    ----------
    model
        The model, eval mode.
    video
        (T, 3, S, S) float32 normalised pixels.
    frame
        Prompted frame index.
    points, labels
        (x, y) in model-input pixels and SAM labels (1 positive, 0 negative, 2/3 box corners).

    Returns
    -------
    dict
        ``{"forward": {t: logits}, "reverse": {t: logits}}`` with (1, 1, S/4, S/4) low-res
        logits in the order the frames were produced, and ``"object_score_logits"``:
        ``{"forward": {t: float}, "reverse": {t: float}}``.
    """
    size = video.shape[-1]
    sess = Sam2VideoInferenceSession(
        video=video, video_height=size, video_width=size, dtype=torch.float32
    )
    obj_idx = sess.obj_id_to_idx(1)
    sess.add_point_inputs(
        obj_idx,
        frame,
        {
            "point_coords": torch.tensor([[list(map(list, points))]], dtype=torch.float32),
            "point_labels": torch.tensor([[labels]], dtype=torch.int32),
        },
    )
    sess.obj_with_new_inputs = [1]
    out: dict[str, dict[int, torch.Tensor]] = {"forward": {}, "reverse": {}}
    scores: dict[str, dict[int, float]] = {"forward": {}, "reverse": {}}
    directions = [("forward", False), ("reverse", True)] if reverse_too else [("forward", False)]
    with torch.inference_mode():
        model(sess, frame_idx=frame)
        for name, reverse in directions:
            for o in model.propagate_in_video_iterator(
                sess, start_frame_idx=frame, reverse=reverse
            ):
                out[name][o.frame_idx] = o.pred_masks.clone()
                scores[name][o.frame_idx] = float(o.object_score_logits.reshape(-1)[0])
    out["object_score_logits"] = scores  # type: ignore[assignment]
    return out
