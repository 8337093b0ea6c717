"""The MONAI Label app class (``MONAILabelApp``) that ``monailabel start_server`` loads from the
app folder's ``main.py``. Imports MONAI Label (the server environment only)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from monailabel.interfaces.app import MONAILabelApp

from .. import __version__
from ..errors import Sam2MedError
from ._interactive import InteractiveSegmenter, app_settings
from .infer import Sam2MedInfer

logger = logging.getLogger(__name__)

__all__ = ["Sam2MedApp"]


def _fail(err: BaseException) -> None:
    """A setting or model the app cannot use: one line, then the server process ends (an
    exception here would leave uvicorn serving an app that fails every request)."""
    line = " ".join(str(err).split()) or type(err).__name__
    logger.error("sam2-med app: %s", line)
    print(f"sam2-med app: error: {line}", file=sys.stderr, flush=True)
    os._exit(2)


class Sam2MedApp(MONAILabelApp):
    """sam2-med's engine as one interactive model, ``sam2_med``, for 3D Slicer and OHIF.

    ``--conf`` keys (``monailabel start_server ... --conf device cuda``): see
    :data:`sam2_med.monailabel_app._interactive.CONF_DEFAULTS`. The model is loaded once, at
    start-up; its name, weights and licence are in the model's description (``/info/``).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, Any]) -> None:
        from .._batch_job import ModelChoice

        try:
            s = app_settings(conf or {})
            choice = ModelChoice.of(
                s["model"],
                checkpoint=s["checkpoint"],
                arch=s["arch"],
                device=s["device"],
                dtype=s["dtype"],
            )
            lm = choice.load()
        except Sam2MedError as err:
            _fail(err)
        logger.info("sam2-med: %s, weights %s, licence: %s", lm.name, lm.source, lm.licence)
        self.segmenter = InteractiveSegmenter(
            lm, axis=s["axis"], window=s["window"], max_sessions=s["sessions"]
        )
        self.description_text = (
            f"sam2-med {__version__}: SAM 2 clicks on one slice, propagated through the volume "
            f"({s['axis']}). Model {lm.name} ({lm.image_size} px) on {lm.device}, {s['dtype']}; "
            f"licence: {lm.licence}"
        )
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="sam2-med",
            description=self.description_text,
            version=__version__,
        )

    def init_infers(self) -> dict[str, Any]:
        return {"sam2_med": Sam2MedInfer(self.segmenter, self.description_text)}
