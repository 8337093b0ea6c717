"""The loaded-model record every consumer of a SAM 2 model receives."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import Sam2VideoModel

__all__ = ["LoadedModel"]


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A SAM 2 video model ready for inference, with what it is and where it came from.

    The model holds no per-volume state; sessions own that. Build one with
    :func:`sam2_med.models.load_model` (weights) or :meth:`from_module` (tests).

    Attributes
    ----------
    model
        The transformers ``Sam2VideoModel``, in eval mode, on ``device``, float32 parameters.
    name
        Registry name (``"sam2.1_hiera_tiny"``, ``"medsam2"``...) or ``"custom"``.
    image_size
        Side of the square model input in pixels (1024 for SAM 2, 512 for MedSAM2).
    device
        Where the model runs.
    dtype
        Compute dtype: ``torch.float32``, or ``torch.bfloat16`` meaning bfloat16 autocast
        around float32 parameters.
    licence
        Short licence name and where its text is (shown to the user with the model).
    source
        Where the weights came from: a file path, a cache path with its hub origin, or a note.
    """

    model: Sam2VideoModel
    name: str
    image_size: int
    device: torch.device
    dtype: torch.dtype
    licence: str
    source: str

    @classmethod
    def from_module(
        cls,
        model: Sam2VideoModel,
        name: str = "custom",
        *,
        dtype: torch.dtype = torch.float32,
        licence: str = "unspecified (in-memory model)",
        source: str = "in-memory module",
    ) -> LoadedModel:
        """Wrap an existing ``Sam2VideoModel`` (for tests and custom builds).

        Parameters
        ----------
        model
            The model; it is switched to eval mode. Its device is read from its parameters and
            its input size from ``model.config.image_size``.
        name, dtype, licence, source
            Recorded as given.

        Returns
        -------
        LoadedModel
        """
        model.eval()
        device = next(model.parameters()).device
        size = model.config.image_size
        size = int(size[0] if isinstance(size, (list, tuple)) else size)
        return cls(
            model=model,
            name=name,
            image_size=size,
            device=device,
            dtype=dtype,
            licence=licence,
            source=source,
        )
