"""Fine-tuning SAM 2's video model on labelled volumes, and training small models from scratch.

* :mod:`sam2_med.training.data`: labelled cases (files, MONAI datalists, random phantoms) and
  the clips SAM 2 trains on;
* :mod:`sam2_med.training.step`: simulated prompts and corrections, one batch's loss;
* :mod:`sam2_med.training.losses`: SAM 2's losses and their weights;
* :mod:`sam2_med.training.trainer`: the loop, checkpoints in Meta's format, training records.

Every model call goes through :class:`sam2_med.models.engine.Sam2TrainingEngine`, and frames
through :class:`sam2_med.frames.SliceStream`, exactly as inference does.
"""

from __future__ import annotations

from .data import (
    Case,
    CaseSource,
    Clip,
    ClipSampler,
    DataError,
    PhantomSource,
    load_case,
    load_datalist,
)
from .losses import LossWeights, frame_losses
from .step import PromptPolicy, batch_loss
from .trainer import (
    FREEZABLE,
    TrainConfig,
    Trainer,
    TrainingError,
    TrainResult,
    bf16_native,
    finetune,
    validation_dice,
)

__all__ = [
    "FREEZABLE",
    "Case",
    "CaseSource",
    "Clip",
    "ClipSampler",
    "DataError",
    "LossWeights",
    "PhantomSource",
    "PromptPolicy",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "batch_loss",
    "bf16_native",
    "finetune",
    "frame_losses",
    "load_case",
    "load_datalist",
    "validation_dice",
]
