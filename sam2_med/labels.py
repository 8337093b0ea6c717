"""Integer label maps that live on the voxel grid of a source :class:`~sam2_med.Volume`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .volume import Volume

#: Key of sam2-med's run record in ``LabelVolume.extra`` and so in a mask sidecar's ``"extra"``:
#: the model, the settings and the session's interaction log (:mod:`sam2_med.interactions`).
RUN_RECORD_KEY = "sam2_med_run"


@dataclass(frozen=True)
class LabelVolume:
    """An integer label map on exactly the grid of ``reference``.

    Attributes
    ----------
    array : (I, J, K) ndarray of uint8 or uint16
        0 is background; label ``n`` marks the voxels of structure ``names[n]``. Indexed like
        ``reference.array``.
    reference : Volume
        The image the labels belong to; its affine is the labels' affine.
    names : dict of int -> str
        Label value -> structure name, for every non-zero label that may appear.
    extra : dict
        Per-label metadata (for example scores or colours) carried into the JSON sidecar.
    """

    array: np.ndarray
    reference: Volume
    names: Mapping[int, str] = field(default_factory=dict)
    extra: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.shape != self.reference.shape:
            raise ValueError(
                f"label map shape {self.array.shape} differs from the reference image "
                f"shape {self.reference.shape}"
            )
        if not np.issubdtype(self.array.dtype, np.integer) and self.array.dtype != np.bool_:
            raise ValueError(f"labels must be integers, got dtype {self.array.dtype}")

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) voxel -> RAS mm affine: the reference image's."""
        return self.reference.affine

    def mask(self, label: int) -> np.ndarray:
        """(I, J, K) bool mask of one label."""
        return self.array == label
