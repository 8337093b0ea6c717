"""One batch job as a self-contained, picklable unit: which model, and how to segment one row.

:func:`sam2_med.batch.run` uses it in this process, and :mod:`sam2_med.dask_batch` ships it to
Dask workers, so a job computes the same output wherever it runs (the serial command line's
``sam2-med batch`` does the same steps; a test checks that both write identical masks).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import Sam2MedError

if TYPE_CHECKING:
    from .batch import Job
    from .models import LoadedModel

__all__ = ["ModelChoice", "segment_file_job"]


@dataclass(frozen=True)
class ModelChoice:
    """The model a batch uses, as plain values a worker process can load by itself.

    Attributes
    ----------
    name : str or None
        Registered model name (``sam2-med weights list``); with ``checkpoint``, the name the
        file is checked against. Neither: the default model.
    checkpoint : str or None
        Absolute checkpoint path, *as the workers see it* (a shared file system on a cluster).
    arch_json : str or None
        Architecture overrides as a JSON string (hashable, so the choice can key a cache).
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``. On a Dask worker a bare ``"cuda"``
        is bound to one GPU per worker (see :func:`sam2_med.dask_batch.worker_device`).
    dtype : {"float32", "bfloat16"}
    """

    name: str | None = None
    checkpoint: str | None = None
    arch_json: str | None = None
    device: str = "cpu"
    dtype: str = "float32"

    @classmethod
    def of(
        cls,
        model: str | None = None,
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        arch: Any = None,
        device: str = "cpu",
        dtype: str = "float32",
    ) -> ModelChoice:
        """Build from the arguments of :func:`sam2_med.api.segment` (``arch``: a mapping or a
        JSON file, read here)."""
        if arch is not None and not isinstance(arch, dict):
            from .api import read_arch

            arch = read_arch(arch)
        return cls(
            name=model,
            checkpoint=None if checkpoint is None else os.path.abspath(checkpoint),
            arch_json=None if arch is None else json.dumps(arch, sort_keys=True),
            device=str(device),
            dtype=str(dtype),
        )

    def describe(self) -> str:
        """``"checkpoint /x/tiny.pt on cpu (float32)"``: for log lines."""
        from .api import DEFAULT_MODEL

        what = (
            f"checkpoint {self.checkpoint}"
            if self.checkpoint
            else f"model {self.name or DEFAULT_MODEL}"
        )
        return f"{what} on {self.device} ({self.dtype})"

    def load(self, device: str | None = None) -> LoadedModel:
        """Load the model (on ``device`` instead of :attr:`device` when given)."""
        from .api import DEFAULT_MODEL
        from .models import load_model

        name = self.name
        if name is None and self.checkpoint is None:
            name = DEFAULT_MODEL
        arch = None if self.arch_json is None else json.loads(self.arch_json)
        return load_model(
            name,
            checkpoint=self.checkpoint,
            device=device or self.device,
            dtype=self.dtype,
            arch=arch,
        )


def segment_file_job(
    job: Job,
    overwrite: bool,
    model: LoadedModel,
    *,
    axis: str | None = None,
    window: Any = None,
) -> None:
    """Segment one jobs-file row and write its mask and sidecar (atomically, see
    :func:`sam2_med.io.save_mask`): the steps of ``sam2-med batch`` for one job.

    ``axis`` and ``window`` None mean ``"axial"`` and ``"auto"`` for a prompt file; a job whose
    prompts are a sam2-med mask sidecar replays the recorded session with its recorded axis and
    window (:mod:`sam2_med.interactions`), and a different axis or any window given is refused.

    Raises
    ------
    Sam2MedError
        Unreadable image or prompts, a window that does not fit, an output that exists without
        ``overwrite``, a cancelled run. Other exceptions are bugs.
    """
    from .api import _check_replay_options, resolve_prompts, segment_volume
    from .batch import file_digest
    from .intensity import resolve_intensity
    from .interactions import InteractionLog
    from .io import load_volume

    volume = load_volume(job.image)
    prompts = resolve_prompts(job.prompts, volume, axis=axis or "axial")
    if isinstance(prompts, InteractionLog):  # a recorded session replays as recorded
        _check_replay_options(prompts, axis=axis, window=window)
    else:
        window = "auto" if window is None else window
        try:
            resolve_intensity(volume, window)
        except ValueError as err:
            raise Sam2MedError(f"--window: {err}", job.image) from None
    result = segment_volume(volume, prompts, model, window=window)
    if result.cancelled:
        raise Sam2MedError("propagation was cancelled", job.output)
    result.record["inputs"] = {
        "image": str(job.image),
        "prompts": str(job.prompts),
        "prompts_file_sha256": file_digest(job.prompts),
    }
    job.output.parent.mkdir(parents=True, exist_ok=True)
    # the record is the sidecar's run record; the prompts file is an input, never an output
    result.save(job.output, overwrite=overwrite, inputs=[str(job.prompts)])
