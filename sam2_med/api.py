"""One-call scripting interface: image + prompts in, label map + per-slice scores out.

>>> from sam2_med.api import segment                                     # doctest: +SKIP
>>> result = segment("ct.nii.gz", {"space": "voxel",                     # doctest: +SKIP
...     "objects": [{"name": "liver", "label": 1, "points": [[80, 60, 14, 1]]}]})
>>> result.save("liver_mask.nii.gz")                                       # doctest: +SKIP

The prompt schema (coordinates said explicitly as voxel indices or world millimetres) is
documented in :mod:`sam2_med.prompts`.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import PromptError, Sam2MedError
from .labels import RUN_RECORD_KEY, LabelVolume
from .prompts import (
    ObjectPrompts,
    PromptSet,
    check_points_on_finite_voxels,
    load_prompts,
    mask_prompt_objects,
    parse_prompts,
)
from .volume import Volume

if TYPE_CHECKING:
    from .interactions import InteractionLog
    from .models import LoadedModel

__all__ = [
    "DEFAULT_MODEL",
    "RUN_RECORD_KEY",
    "SegmentationResult",
    "load_image",
    "resolve_prompts",
    "segment",
]

#: Registry model used when neither a model name nor a checkpoint is given: SAM 2.1 Hiera-tiny
#: (Apache-2.0, published SHA-256, the smallest). ``--model medsam2`` selects the medical
#: fine-tune (research-use licence, no published checksum).
DEFAULT_MODEL = "sam2.1_hiera_tiny"


ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class SegmentationResult:
    """What :func:`segment` returns.

    Attributes
    ----------
    labels : LabelVolume
        ``(I, J, K)`` uint8/uint16 label map on the image's voxel grid (indexed like
        ``image.array``, same affine); 0 is background, each object carries its label value.
        ``labels.names`` maps label -> name; ``labels.extra[RUN_RECORD_KEY]`` is the run record
        written into the mask's sidecar (model, axis, prompts in voxel indices, scores).
    scores : dict of int -> (n_slices,) ndarray of float64
        Per object label, SAM 2's object-score logit (> 0: object present) on every slice along
        the propagation axis (index = slice index ``k`` along ``axis_index``), prompted slices
        included; NaN where nothing was computed (propagation stopped or was cancelled).
    prompts : PromptSet or InteractionLog
        The validated prompts, in voxel indices (or the replayed interaction log).
    axis : str
        Propagation plane (``"axial"``, ``"coronal"``, ``"sagittal"``).
    axis_index : int
        Voxel axis (0, 1, 2 of ``(i, j, k)``) the slices are stacked along.
    model : str
        Name of the model used (``"custom"`` for a checkpoint file).
    cancelled : bool
        True if ``cancel`` stopped propagation early (the label map is then partial).
    seconds : float
        Wall time of the prompting and propagation.
    record : dict
        The run record (also ``labels.extra[RUN_RECORD_KEY]``).
    object_masks : dict of int -> (I, J, K) bool ndarray, or None
        Only with ``keep_object_masks=True``: each object's own mask before the label map
        resolves overlaps (the object added first keeps a contested voxel).
    """

    labels: LabelVolume
    scores: dict[int, np.ndarray]
    prompts: PromptSet | InteractionLog
    axis: str
    axis_index: int
    model: str
    cancelled: bool = False
    seconds: float = 0.0
    record: dict[str, Any] = field(default_factory=dict)
    object_masks: dict[int, np.ndarray] | None = None

    @property
    def image(self) -> Volume:
        """The image the labels belong to."""
        return self.labels.reference

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        dicom_seg: str | os.PathLike[str] | None = None,
        inputs: Sequence[str | os.PathLike[str]] = (),
        measurements: Any = True,
    ) -> Path:
        """Write the label map as NIfTI (plus ``<stem>.json`` sidecar with names and the run
        record and the measurements) on exactly the image's grid; see
        :func:`sam2_med.io.save_mask`.

        Parameters
        ----------
        path : path-like
            ``.nii.gz`` or ``.nii``.
        overwrite : bool
            Replace existing outputs (never an input, nor a file at the sidecar path that is
            not this mask's sam2-med sidecar).
        dicom_seg : path-like, optional
            Also a DICOM SEG (DICOM images only), written with the mask as one unit (see
            :func:`sam2_med.io.writers.save_outputs`).
        inputs : sequence of path-like
            Other files the run read (prompt JSON...), which no output may replace.
        measurements : bool or sequence of StructureMeasurements
            The sidecar's measurements: True (measure), False (none) or already computed.

        Returns
        -------
        Path
            The mask written.
        """
        from .io.writers import save_outputs

        save_outputs(
            self.labels,
            self.image,
            mask=path,
            dicom_seg=dicom_seg,
            overwrite=overwrite,
            inputs=inputs,
            measurements=measurements,
        )
        return Path(path)

    def save_dicom_seg(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a DICOM Segmentation referencing the source series (DICOM images only)."""
        from .io import save_dicom_seg

        return save_dicom_seg(self.labels, path, reference=self.image, overwrite=overwrite)

    # -- clinical outputs (measurements, RT Structure Set, report) ---------------------------
    def measure(self, *, plane: str = "axial", **options: Any) -> list[Any]:
        """Volume, surface, centroid, intensity statistics and RECIST axes of every object;
        see :func:`sam2_med.measure.measure` (``options`` are passed on)."""
        from .measure import measure

        return measure(self.labels, plane=plane, **options)

    def save_rtstruct(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a DICOM RT Structure Set referencing the source series (DICOM images only);
        see :func:`sam2_med.io.save_rtstruct`."""
        from .io import save_rtstruct

        return save_rtstruct(self.labels, path, reference=self.image, overwrite=overwrite)

    def write_report(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``report.html`` with a picture per object and the measurement tables; see
        :func:`sam2_med.report.write_report`."""
        from .report import write_report

        return write_report(self.labels, folder, overwrite=overwrite)


def load_image(
    image: Volume | str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    index: int | None = None,
) -> Volume:
    """``image`` itself if it is a Volume, else :func:`sam2_med.io.load_volume` of the path."""
    if isinstance(image, Volume):
        return image
    from .io import load_volume

    return load_volume(image, series_uid=series_uid, index=index)


def resolve_prompts(
    prompts: Any, volume: Volume, *, axis: str = "axial"
) -> PromptSet | InteractionLog:
    """Turn any accepted prompt form into a validated :class:`PromptSet` or interaction log.

    Parameters
    ----------
    prompts : dict, path, PromptSet, InteractionLog or sequence of ObjectPrompts
        * a dict following the schema of :mod:`sam2_med.prompts` (relative mask paths are
          resolved against the working directory);
        * a path to such a JSON file (relative mask paths: against the file's folder);
        * a mask sidecar (``<mask stem>.json``) written by sam2-med, or an interaction log
          (:mod:`sam2_med.interactions`), as a path or a dict: the recorded session, replayed
          in order (its axis and window are the recorded ones);
        * a path to a label-map image (``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``) on the image
          grid: each nonzero value becomes one object prompted by its largest slice (see
          :func:`sam2_med.prompts.mask_prompt_objects`);
        * an already validated PromptSet (its axis must match) or ObjectPrompts.
    volume : Volume
    axis : {"axial", "coronal", "sagittal"}
        Plane of the prompt-file prompts (an interaction log carries its own).

    Returns
    -------
    PromptSet or InteractionLog
    """
    from .interactions import InteractionLog, find_interactions, load_interactions
    from .prompts import axis_index_for, merge_objects

    if isinstance(prompts, InteractionLog):
        return prompts
    if isinstance(prompts, PromptSet):
        if prompts.axis != axis:
            raise PromptError(
                f"prompts were validated for the {prompts.axis} axis, not {axis}", prompts.source
            )
        return prompts
    if isinstance(prompts, (str, os.PathLike)):
        p = Path(prompts)
        lower = p.name.lower()
        if lower.endswith((".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")):
            if not p.exists():
                raise PromptError("mask prompt file not found", p)
            objs = mask_prompt_objects(p, volume, axis=axis)
            return PromptSet(tuple(objs), axis, axis_index_for(volume, axis, p), str(p))
        if _holds_interactions(p):
            return load_interactions(p, volume)
        return load_prompts(p, volume, axis=axis)
    if isinstance(prompts, Mapping):
        if find_interactions(prompts) is not None:
            return load_interactions(prompts, volume)
        return parse_prompts(dict(prompts), volume, axis=axis)
    if isinstance(prompts, (list, tuple)) and all(isinstance(o, ObjectPrompts) for o in prompts):
        if not prompts:
            raise PromptError("no prompts given: at least one object is needed")
        return PromptSet(
            tuple(merge_objects(prompts)), axis, axis_index_for(volume, axis, None), None
        )
    raise PromptError(
        f"prompts must be a dict, a JSON or mask file path, or a PromptSet; got "
        f"{type(prompts).__name__}"
    )


def _holds_interactions(path: Path) -> bool:
    """True for a JSON file holding an interaction log or a sam2-med mask sidecar."""
    import json

    from .interactions import find_interactions

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False  # load_prompts says what is wrong with it
    return find_interactions(data) is not None


def _load_model(
    model: LoadedModel | str | None,
    *,
    checkpoint: str | os.PathLike[str] | None,
    arch: Any,
    device: str,
    dtype: str,
) -> LoadedModel:
    from .models import LoadedModel

    if isinstance(model, LoadedModel):
        if checkpoint is not None:
            raise TypeError("give either a LoadedModel or checkpoint=, not both")
        return model
    from .models import load_model

    if model is None and checkpoint is None:
        model = DEFAULT_MODEL
    return load_model(model, checkpoint=checkpoint, device=device, dtype=dtype, arch=arch)


def segment(
    image: Volume | str | os.PathLike[str],
    prompts: Any,
    *,
    model: LoadedModel | str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    arch: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    axis: str | None = None,
    window: Any = None,
    device: str = "cpu",
    dtype: str = "float32",
    series_uid: str | None = None,
    index: int | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    session_factory: Callable[..., Any] | None = None,
) -> SegmentationResult:
    """Segment a volume from prompts on one or more slices, propagating through the volume.

    Parameters
    ----------
    image : Volume or path
        A Volume, or anything :func:`sam2_med.io.load_volume` reads (NIfTI, NRRD, MHA, a DICOM
        folder or file).
    prompts : dict, path, PromptSet
        Prompts per object with coordinates said explicitly, for example::

            {"space": "voxel",                      # or "world_ras" / "world_lps" (mm)
             "objects": [{"name": "liver", "label": 1,
                          "points": [[i, j, k, 1], [i, j, k, 0]],   # 1 positive, 0 negative
                          "boxes": [[i0, j0, k0, i1, j1, k1]],       # corners on one slice
                          "mask": "liver_slice.nii.gz"}]}            # on the image grid

        ``"voxel"`` means 0-based ``(i, j, k)`` as nibabel indexes the file (ITK-SNAP shows
        1-based indices); world points go to the voxel that contains them. Full schema in
        :mod:`sam2_med.prompts`; other accepted forms in :func:`resolve_prompts`. A mask
        sidecar written by sam2-med (its JSON) replays the session recorded in it, in order,
        and gives the same label map voxel for voxel (:mod:`sam2_med.interactions`).
    model : LoadedModel or str, optional
        A loaded model (reuse one across many volumes), or a registry name; ``None`` means
        :data:`DEFAULT_MODEL` (unless ``checkpoint`` is given).
    checkpoint : path, optional
        A checkpoint file (Meta's SAM 2 format or MedSAM2) instead of a registry model.
    arch : dict, str or path, optional
        Architecture of a checkpoint file that is not a published one: a registered model name
        (``"medsam2"``), a dict, or a JSON file (see :func:`sam2_med.models.load_model`).
    axis : {"axial", "coronal", "sagittal"}, optional
        Plane of the slices fed to the model; the voxel axis is chosen from the affine.
        Default: ``"axial"``, or the recorded one when replaying a session.
    window : str, (center, width) or IntensityTransform, optional
        Intensity transform (see :func:`sam2_med.intensity.resolve_intensity`); default
        ``"auto"`` (soft-tissue window for CT, 0.5-99.5 percentiles otherwise), or the recorded
        transform when replaying a session.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``. Never chosen for you.
    dtype : {"float32", "bfloat16"}
    series_uid : str, optional
        Which series to read from a DICOM folder holding several.
    index : int, optional
        Which volume of a 4D image (or 4D DICOM series) to segment.
    progress : callable(done: int, total: int), optional
        Passed to :meth:`Session.propagate`: called after each slice of each object, ``total``
        being the slice steps planned (a stop rule may end a run early; ``done`` then jumps).
    cancel : callable() -> bool, optional
        Polled between slices; returning True stops propagation (``result.cancelled``).
    session_factory : callable, optional
        ``(model, volume, axis=, window=) -> Session``; for tests. Default:
        :class:`sam2_med.session.Session`.

    Returns
    -------
    SegmentationResult

    Raises
    ------
    Sam2MedError
        Any bad input (unreadable image, invalid prompts, missing weights...), with a one-line
        message starting with the offending path.
    """
    volume = load_image(image, series_uid=series_uid, index=index)
    prompt_set = resolve_prompts(prompts, volume, axis=axis or "axial")
    _check_replay_options(prompt_set, axis=axis, window=window)
    if isinstance(arch, (str, os.PathLike)):
        arch = resolve_arch(arch)
    loaded = _load_model(model, checkpoint=checkpoint, arch=arch, device=device, dtype=dtype)
    return segment_volume(
        volume,
        prompt_set,
        loaded,
        window=window,
        progress=progress,
        cancel=cancel,
        session_factory=session_factory,
    )


def resolve_arch(value: str | os.PathLike[str]) -> str | dict[str, Any]:
    """An ``arch`` given as text: a registered model name (returned as is) or a JSON file.

    Raises
    ------
    Sam2MedError
        Neither a registered model name nor an existing file (the message lists the names).
    """
    from .models import list_models

    names = list_models()
    p = Path(value)
    if isinstance(value, str) and value in names and not p.is_file():
        return value
    if not p.exists():
        listing = ", ".join(names)
        raise Sam2MedError(
            f"arch={str(value)!r} is neither a registered model name ({listing}) nor an "
            "architecture JSON file",
            cli=f"--arch {value}: neither a registered model name ({listing}) nor an "
            "architecture JSON file",
        )
    return read_arch(p)


def _check_replay_options(prompts: Any, *, axis: str | None, window: Any) -> None:
    """A replay uses the recorded axis and window; refuse different ones given explicitly."""
    from .interactions import InteractionLog

    if not isinstance(prompts, InteractionLog):
        return
    if axis is not None and axis != prompts.axis:
        raise PromptError(
            f"the recorded session slices {prompts.axis}, not {axis}: a replay uses the "
            "recorded axis (leave axis unset)",
            prompts.source,
            cli=f"the recorded session slices {prompts.axis}, not {axis}: a replay uses the "
            "recorded axis (leave out --axis)",
        )
    if window is not None:
        raise PromptError(
            "a replay uses the recorded intensity transform (leave window unset)",
            prompts.source,
            cli="a replay uses the recorded intensity transform (leave out --window)",
        )


def read_arch(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an architecture JSON file (keys of :func:`sam2_med.models.arch.arch_to_config`)."""
    import json

    p = Path(path)
    if not p.is_file():
        raise Sam2MedError("architecture file not found", p)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise Sam2MedError(f"cannot read architecture file: {err}", p) from None
    except json.JSONDecodeError as err:
        raise Sam2MedError(
            f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}", p
        ) from None
    except RecursionError:
        raise Sam2MedError("JSON nested too deeply to read; not an architecture file", p) from None
    if not isinstance(data, dict):
        raise Sam2MedError("an architecture file must hold a JSON object", p)
    return data


def _float_or_none(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)


def _score_of(result: Any, label: int) -> float:
    scores = getattr(result, "scores", None) or {}
    if label in scores:
        return float(scores[label])
    score = getattr(result, "score", None)
    return float(score) if score is not None else math.nan


def segment_volume(
    volume: Volume,
    prompt_set: PromptSet | InteractionLog,
    model: LoadedModel,
    *,
    window: Any = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    session_factory: Callable[..., Any] | None = None,
    keep_object_masks: bool = False,
) -> SegmentationResult:
    """Run one session: add every object's prompts, propagate, collect the label map.

    Parameters
    ----------
    volume : Volume
    prompt_set : PromptSet or InteractionLog
        Validated against ``volume`` (voxel indices). A PromptSet is one step: every object
        added, every prompted slice sent through :meth:`Session.add_prompts` (slice order),
        then one propagation. An :class:`~sam2_med.interactions.InteractionLog` is replayed
        event by event with its recorded session settings.
    model : LoadedModel
    window, progress, cancel, session_factory
        As in :func:`segment` (``window`` None: ``"auto"``, or the recorded one of a log).
    keep_object_masks : bool
        Also return each object's own 3D mask (``result.object_masks``), e.g. to score
        overlapping structures independently.

    Returns
    -------
    SegmentationResult
        ``record["interactions"]`` is the session's interaction log: the mask sidecar carries
        it, and ``sam2-med segment IMAGE --prompts SIDECAR.json`` replays it.
    """
    from .interactions import InteractionLog, replay

    if session_factory is None:
        from .session import Session

        session_factory = Session
    is_log = isinstance(prompt_set, InteractionLog)
    if not is_log:  # a log replays exactly what its session accepted
        check_points_on_finite_voxels(prompt_set, volume)
    start = time.perf_counter()
    if is_log:
        _check_replay_options(prompt_set, axis=None, window=window)
        kwargs = prompt_set.session_kwargs()
        session = session_factory(model, volume, **kwargs)
        window = kwargs["window"]
    else:
        window = "auto" if window is None else window
        session = session_factory(model, volume, axis=prompt_set.axis, window=window)
    axis_index = int(getattr(session, "axis_index", prompt_set.axis_index))
    if axis_index != prompt_set.axis_index:
        raise PromptError(
            f"the session stacks {prompt_set.axis} slices along axis {axis_index}, the prompts "
            f"were checked along axis {prompt_set.axis_index}",
            prompt_set.source,
        )
    n_slices = volume.shape[axis_index]
    labels = list(prompt_set.labels)
    scores = {lab: np.full(n_slices, np.nan) for lab in labels}
    stop = cancel if cancel is not None else (lambda: False)

    def keep(res: Any) -> None:
        # one result per slice and object; kept as a fallback for sessions without profile()
        k = int(res.slice_index)
        for label in scores:
            s = _score_of(res, label)
            if math.isfinite(s):
                scores[label][k] = s

    if is_log:
        replay(session, prompt_set, cancel=stop, progress=progress)
    else:
        for obj in prompt_set.objects:
            session.add_object(name=obj.name, label=obj.label)
        for obj in prompt_set.objects:
            _send_prompts(session, obj, axis_index)
        for res in session.propagate(cancel=stop, progress=progress):
            keep(res)
    if hasattr(session, "pending"):
        cancelled = int(session.pending()) > 0
    else:
        cancelled = bool(cancel is not None and cancel())
    if hasattr(session, "profile"):
        for label in scores:
            scores[label] = np.asarray(session.profile(label).scores, dtype=np.float64)
    lm = session.label_map()
    applied_window = getattr(getattr(session, "stream", None), "intensity", None)
    seconds = time.perf_counter() - start
    names = {**dict(getattr(lm, "names", {}) or {}), **prompt_set.names}
    record = {
        "status": "cancelled" if cancelled else "complete",
        **model_record(model),
        "axis": prompt_set.axis,
        "axis_index": axis_index,
        "window": window_record(window, applied_window, volume),
        "prompts": prompt_set.describe(),
        "prompts_sha256": prompt_set.digest() if is_log else prompts_digest(prompt_set),
        "image_notes": list(volume.provenance.notes),
        "scores": {
            str(lab): [_float_or_none(v) for v in arr.tolist()] for lab, arr in scores.items()
        },
        "seconds": round(seconds, 3),
    }
    if hasattr(session, "interactions"):
        record["interactions"] = session.interactions()
    array = np.asarray(getattr(lm, "array", lm))
    labels_volume = LabelVolume(
        array=array.astype(np.uint16 if array.max(initial=0) > 255 else np.uint8, copy=False),
        reference=volume,
        names=names,
        extra={RUN_RECORD_KEY: record},
    )
    object_masks = None
    if keep_object_masks:
        if hasattr(session, "object_volume"):
            object_masks = {
                lab: np.asarray(session.object_volume(lab), dtype=bool) for lab in labels
            }
        else:
            object_masks = {lab: labels_volume.array == lab for lab in labels}
    return SegmentationResult(
        object_masks=object_masks,
        labels=labels_volume,
        scores=scores,
        prompts=prompt_set,
        axis=prompt_set.axis,
        axis_index=axis_index,
        model=record["model"],
        cancelled=cancelled,
        seconds=seconds,
        record=record,
    )


def model_record(model: Any) -> dict[str, Any]:
    """What the run record says about the model: name, source, licence, and for a checkpoint
    file its SHA-256, input size, the architecture it was built with and how that was chosen."""
    arch = getattr(model, "arch", None)
    return {
        "model": getattr(model, "name", "custom"),
        "model_source": getattr(model, "source", None),
        "model_licence": getattr(model, "licence", None),
        "model_sha256": getattr(model, "sha256", None),
        "model_published": getattr(model, "published", None),
        "model_image_size": getattr(model, "image_size", None),
        "model_arch_from": getattr(model, "arch_from", None) or None,
        "model_arch": None if arch is None else dict(arch),
    }


def window_record(window: Any, applied: Any, volume: Volume) -> dict[str, Any]:
    """The intensity window as requested and as applied (parameters resolved: centre/width,
    or the percentile range computed for this volume)."""
    from .intensity import IntensityTransform, resolve_intensity

    if not isinstance(applied, IntensityTransform):
        applied = resolve_intensity(volume, window)
    requested = window.describe() if isinstance(window, IntensityTransform) else window
    if isinstance(requested, tuple):
        requested = list(requested)
    return {
        "requested": requested if isinstance(requested, (str, list)) else str(requested),
        "applied": applied.describe(),
        "kind": applied.kind,
        "name": applied.name,
        **{k: v for k, v in applied.parameters.items() if v is not None},
    }


def _send_prompts(session: Any, obj: ObjectPrompts, axis_index: int) -> None:
    """One :meth:`Session.add_prompts` call per prompted slice, in slice order, with all of
    that slice's prompts: the mask, or the box with the slice's points, or the points."""
    masks = {int(k): m for k, m in obj.masks}
    boxes = {int(a[axis_index]): (a, b) for a, b in obj.boxes}
    points = {k: (p, lab) for k, p, lab in obj.points_by_slice(axis_index)}
    for k in sorted({*masks, *boxes, *points}):
        if k in masks:
            session.add_prompts(obj.label, mask=masks[k], slice_index=k)
            continue
        p, lab = points.get(k, (None, None))
        session.add_prompts(obj.label, points=p, point_labels=lab, box=boxes.get(k), slice_index=k)


def prompts_digest(prompt_set: PromptSet) -> str:
    """SHA-256 of the prompts in voxel indices (masks included), to tell whether they changed."""
    h = hashlib.sha256()
    h.update(prompt_set.axis.encode())
    for obj in prompt_set.objects:
        h.update(f"|{obj.label}|{obj.name}|".encode())
        h.update(np.ascontiguousarray(obj.points, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(obj.point_labels, dtype=np.int64).tobytes())
        for a, b in obj.boxes:
            h.update(np.asarray([*a, *b], dtype=np.int64).tobytes())
        for k, m in obj.masks:
            h.update(str(k).encode())
            h.update(np.packbits(np.ascontiguousarray(m, dtype=bool)).tobytes())
    return h.hexdigest()
