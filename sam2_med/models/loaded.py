"""The loaded-model record every consumer of a SAM 2 model receives."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from transformers import Sam2VideoModel

from .precision import Precision

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
    protocol
        The protocol sessions use with this model unless told otherwise
        (:mod:`sam2_med.protocols`): the one asked for when loading, else the declared one of
        the registered model whose architecture it has. None: the registry entry of
        :attr:`name`, else ``"sam2"`` (see :func:`sam2_med.session.resolve_protocol`).
    slice_layout
        The slice layout the model was trained on (the registered model's declaration), or
        None (as for ``protocol``).
    precision
        The precision policy as requested and as applied
        (:class:`~sam2_med.models.precision.Precision`; ``precision.dtype == dtype``). None for
        a model wrapped with :meth:`from_module` without one: ``dtype`` was given directly.
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
    protocol: str | None = None
    slice_layout: str | None = None
    precision: Precision | None = None

    @classmethod
    def from_module(
        cls,
        model: Sam2VideoModel,
        name: str = "custom",
        *,
        dtype: torch.dtype = torch.float32,
        precision: str | None = None,
        licence: str = "unspecified (in-memory model)",
        source: str = "in-memory module",
    ) -> LoadedModel:
        """Wrap an existing ``Sam2VideoModel`` (for tests and custom builds).

        Parameters
        ----------
        model
            The model; it is switched to eval mode. Its device is read from its parameters and
            its input size from ``model.config.image_size``.
        name, licence, source
            Recorded as given.
        dtype
            Compute dtype, used when ``precision`` is None.
        precision : {"auto", "float32", "bfloat16"}, optional
            A precision policy resolved for the model's device
            (:func:`~sam2_med.models.precision.resolve_precision`); it sets ``dtype``.

        Returns
        -------
        LoadedModel
        """
        model.eval()
        device = next(model.parameters()).device
        resolved = None
        if precision is not None:
            from .precision import resolve_precision

            resolved = resolve_precision(precision, device)
            dtype = resolved.dtype
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
            precision=resolved,
        )
