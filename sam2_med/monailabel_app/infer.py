"""The app's interactive infer task: MONAI Label's ``InferTask`` around sam2-med's engine.

Imports MONAI Label (the server environment only; see :mod:`sam2_med.monailabel_app`).
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from ..errors import Sam2MedError
from ._interactive import InteractiveSegmenter, write_answer

logger = logging.getLogger(__name__)

__all__ = ["Sam2MedInfer"]


class Sam2MedInfer(InferTask):
    """Clicks in, the propagated 3D label map of the clicked segment out.

    A *deepgrow*-type, 3D model for MONAI Label's clients: 3D Slicer's and OHIF's MONAI Label
    modules send the segment's foreground/background clicks (voxel ``[i, j, k]`` of the study),
    its name as ``label``, optionally an ``roi`` and ``reset_state``. The answer is a NIfTI on
    the study's grid with 1 on the segment (``params["label_names"]``); ``params["sam2_med"]``
    adds the anchors, the segment's ``label`` value and the study session's run record
    (``run``, with its interaction log: saved as JSON, ``sam2-med segment STUDY --prompts
    RUN.json`` replays it). A study or clicks it cannot use answer HTTP 422 with one line
    (``{"detail": "sam2-med: <path>: <problem>"}``).
    """

    def __init__(self, segmenter: InteractiveSegmenter, description: str) -> None:
        super().__init__(
            type=InferType.DEEPGROW,
            labels=None,
            dimension=3,
            description=description,
            config={},
        )
        self.segmenter = segmenter
        self._out = tempfile.mkdtemp(prefix="sam2med-monailabel-")

    def is_valid(self) -> bool:
        return True

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        name = str(request.get("label") or "segment")
        try:
            answer = self.segmenter.segment(
                request["image"],
                foreground=request.get("foreground"),
                background=request.get("background"),
                name=name,
                roi=request.get("roi"),
                reset=request.get("reset_state", False),
            )
            path = write_answer(answer, self._out)
        except Sam2MedError as err:
            line = " ".join(str(err).split())
            logger.error("sam2-med: %s", line)
            raise HTTPException(status_code=422, detail=f"sam2-med: {line}") from None
        params = {
            "label_names": {name: 1},
            "sam2_med": {
                "segment": name,
                "anchors": list(answer.anchors),
                "voxels": int(answer.mask.sum()),
                "seconds": round(answer.seconds, 3),
                "label": answer.label,  # the segment's value in the replayed label map
                "run": answer.record,  # model, window, interaction log: replays exactly
            },
        }
        return str(path), params
