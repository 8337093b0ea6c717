"""The loaded-model record every consumer of a SAM 2 model receives."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
    sha256
        SHA-256 of the weights file (None for a transformers folder or an in-memory module).
    arch
        The architecture the model was built with (:func:`sam2_med.models.arch.arch_to_config`
        keys), or None when it came from a transformers config.
    published
        The registered model whose published SHA-256 the file has; None when the file is not a
        published checkpoint (a fine-tune, a modified file, or a model with no published digest).
    arch_from
        How the architecture was chosen: ``"registered model NAME"``, ``"arch='NAME'"``,
        ``"the given arch"`` or ``"assumed: NAME"`` (an unrecognised file; see
        ``arch_candidates``).
    arch_candidates
        Registered models whose architecture an unrecognised file fits (the assumed one first
        is not guaranteed; see ``arch_from``).
    """

    model: Sam2VideoModel
    name: str
    image_size: int
    device: torch.device
    dtype: torch.dtype
    licence: str
    source: str
    sha256: str | None = None
    arch: Mapping[str, Any] | None = None
    published: str | None = None
    arch_from: str = ""
    arch_candidates: tuple[str, ...] = ()

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
