"""The interaction log: what a session did, in order, and how to do it again exactly.

Every :class:`~sam2_med.session.Session` records its interactions
(:meth:`~sam2_med.session.Session.interactions`), and every mask sidecar written by the Python
API, the command line, batch jobs and the napari plugin carries that record under
``extra.sam2_med_run.interactions``. :func:`replay` runs it on a new session of the same image
with the same model, and the label map comes out voxel for voxel the same; on the command line::

    sam2-med segment ct.nii.gz --prompts liver_mask.json --out again.nii.gz

where ``liver_mask.json`` is the sidecar of an earlier mask (``liver_mask.nii.gz``), or a
run record saved as JSON (the MONAI Label app answers with one). A plain
prompt file (:mod:`sam2_med.prompts`) is the log "add every object, prompt every slice, then
propagate once".

The order matters and is kept: a click on a slice propagation already filled is a SAM 2
correction, decoded with the memory of the tracked slices around it, while the same click
before propagating is a first prompt decoded from the slice alone. The two give different
masks, in SAM 2 as here, so a log replays its events in order rather than merging them.

Schema, version 1
-----------------
::

    {
      "schema": "sam2-med/interactions",
      "version": 1,
      "space": "voxel",               # every coordinate: 0-based voxel index (i, j, k) of the
                                      #   image, as nibabel indexes it (sam2_med.prompts)
      "image_shape": [I, J, K],       # the image the log belongs to (checked on replay)
      "axis_index": 2,                # voxel axis the slices are stacked along
      "model": "sam2.1_hiera_tiny",   # the model it was made with (informative)
      "dtype": "float32",             #   and its compute dtype (informative)
      "session": {                    # Session parameters that decide the results
        "axis": "axial",              # "axial" | "coronal" | "sagittal"
        "window": {...},              # the resolved IntensityTransform's fields
        "slice_range": [lo, hi], "stop_after_empty": null, "max_slices": null,
        "encoder_batch": 1, "converge_after": null, "converge_iou": 0.98,
        "undo_depth": 50, "fill_hole_area": 8, "sprinkle_area": 0,
        "reset_between_directions": false, "exact_mask_memory": true
      },
      "events": [                     # in the order they happened
        {"op": "add_object", "label": 1, "name": "liver"},   # also a rename of label 1
        {"op": "prompt", "label": 1, "slice": 40,             # one Session.add_prompts call
         "points": [[i, j, k], ...], "point_labels": [1, 0],  #   or null
         "box": [[i, j, k], [i, j, k]]},                      #   or null; or instead:
        {"op": "prompt", "label": 1, "slice": 40,
         "mask": {"encoding": "packbits-base64", "shape": [A, B], "data": "..."}},
        {"op": "propagate", "slices": 87, "complete": true},  # slice results it yielded; a
                                                              #   cancelled one stops there
        {"op": "undo"},
        {"op": "remove_object", "label": 2}
      ]
    }

A mask event's mask is the slice ``np.take(image, slice, axis=axis_index)`` (shape ``(A, B)``),
row-major, packed with ``numpy.packbits`` and base64-encoded. Readers refuse a newer version
than they know.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PromptError
from .session import INTERACTIONS_SCHEMA, decode_mask

__all__ = [
    "InteractionLog",
    "find_interactions",
    "load_interactions",
    "replay",
]

_OPS = {"add_object", "prompt", "propagate", "undo", "remove_object"}
_SESSION_KEYS = {
    "axis",
    "window",
    "slice_range",
    "stop_after_empty",
    "max_slices",
    "encoder_batch",
    "converge_after",
    "converge_iou",
    "undo_depth",
    "fill_hole_area",
    "sprinkle_area",
    "reset_between_directions",
    "exact_mask_memory",
}


def find_interactions(data: Any) -> dict[str, Any] | None:
    """The interaction log in ``data``: a log itself, a run record carrying one
    (:meth:`Session.run_record`, e.g. the MONAI Label app's ``params["sam2_med"]["run"]``),
    or a mask sidecar carrying a run record."""
    if not isinstance(data, Mapping):
        return None
    if data.get("schema") == INTERACTIONS_SCHEMA[0]:
        return dict(data)
    inner = data.get("interactions")
    if isinstance(inner, Mapping) and inner.get("schema") == INTERACTIONS_SCHEMA[0]:
        return dict(inner)
    run = (
        (data.get("extra") or {}).get("sam2_med_run")
        if isinstance(data.get("extra"), Mapping)
        else None
    )
    if isinstance(run, Mapping) and isinstance(run.get("interactions"), Mapping):
        return dict(run["interactions"])
    return None


@dataclass(frozen=True)
class InteractionLog:
    """A validated interaction log for one image (see the module docstring).

    Attributes
    ----------
    data : dict
        The log as JSON data.
    source : str or None
        Where it came from (a sidecar or log file), for messages.
    """

    data: Mapping[str, Any]
    source: str | None = None

    @property
    def axis(self) -> str:
        return str(self.data["session"]["axis"])

    @property
    def axis_index(self) -> int:
        return int(self.data["axis_index"])

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.data["events"])

    @property
    def model(self) -> str:
        return str(self.data.get("model", "custom"))

    def window(self) -> Any:
        """The recorded intensity transform (an :class:`~sam2_med.intensity.IntensityTransform`)."""
        from .intensity import IntensityTransform

        return IntensityTransform(**self.data["session"]["window"])

    def session_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~sam2_med.session.Session` that rebuild the session."""
        s = dict(self.data["session"])
        kw = {k: s[k] for k in _SESSION_KEYS if k in s and k not in ("axis", "window")}
        if kw.get("slice_range") is not None:
            kw["slice_range"] = tuple(kw["slice_range"])
        kw["axis"] = self.axis
        kw["window"] = self.window()
        return kw

    @property
    def names(self) -> dict[int, str]:
        """Label -> name of the objects present at the end of the log."""
        names: dict[int, str] = {}
        for e in self.data["events"]:
            if e["op"] == "add_object":
                names[int(e["label"])] = str(e["name"])
            elif e["op"] == "remove_object":
                names.pop(int(e["label"]), None)
        return names

    @property
    def labels(self) -> tuple[int, ...]:
        return tuple(self.names)

    def prompted_slices(self) -> dict[int, list[int]]:
        """Label -> slices that received prompts (undone ones included), for summaries."""
        out: dict[int, set[int]] = {lab: set() for lab in self.names}
        for e in self.data["events"]:
            if e["op"] == "prompt" and int(e["label"]) in out:
                out[int(e["label"])].add(int(e["slice"]))
        return {lab: sorted(ks) for lab, ks in out.items()}

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for run records."""
        counts: dict[str, int] = {}
        for e in self.data["events"]:
            counts[e["op"]] = counts.get(e["op"], 0) + 1
        return {
            "replayed_from": self.source,
            "axis": self.axis,
            "objects": [
                {"label": lab, "name": name, "prompted_slices": self.prompted_slices()[lab]}
                for lab, name in self.names.items()
            ],
            "events": counts,
        }

    def digest(self) -> str:
        """SHA-256 of the events (what decides the label map besides image, model, settings)."""
        text = json.dumps([self.data["session"], self.data["events"]], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def _fail(msg: str, where: Any) -> PromptError:
    return PromptError(f"interaction log: {msg}", where)


def load_interactions(
    source: Mapping[str, Any] | str | os.PathLike[str],
    volume: Any,
    *,
    where: Any = None,
) -> InteractionLog:
    """Read and validate an interaction log (or a mask sidecar holding one) for ``volume``.

    Parameters
    ----------
    source : dict or path
        The log, a sidecar dict, or a JSON file holding either.
    volume : Volume
        The image it is replayed on: its shape must be the recorded one.
    where : path-like, optional
        Named in error messages (default: the file).

    Returns
    -------
    InteractionLog

    Raises
    ------
    PromptError
        Not a log, a newer schema version, another image shape, or a malformed event.
    """
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        where = where or p
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PromptError("interaction log not found", p) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise PromptError(f"cannot read the interaction log: {err}", p) from None
        except RecursionError:
            raise PromptError("JSON nested too deeply to read; not an interaction log", p) from None
        src = str(p)
    else:
        data = source
        src = None if where is None else str(where)
    log = find_interactions(data)
    if log is None:
        raise _fail(
            "no sam2-med interaction record here (a mask sidecar written by sam2-med "
            "carries one under extra.sam2_med_run.interactions)",
            where,
        )
    name, version = INTERACTIONS_SCHEMA
    v = log.get("version")
    if not isinstance(v, int) or v < 1 or v > version:
        raise _fail(
            f"version {v!r} of {name}; this sam2-med reads versions 1..{version} (upgrade it)",
            where,
        )
    shape = [int(x) for x in volume.shape]
    if list(log.get("image_shape") or []) != shape:
        raise _fail(
            f"recorded for an image of shape {log.get('image_shape')}, this image is {shape}",
            where,
        )
    session = log.get("session")
    if not isinstance(session, Mapping) or not {"axis", "window"} <= set(session):
        raise _fail("'session' must give at least 'axis' and 'window'", where)
    unknown = sorted(set(session) - _SESSION_KEYS)
    if unknown:
        raise _fail(f"unknown session setting(s) {unknown}", where)
    events = log.get("events")
    if not isinstance(events, list):
        raise _fail("'events' must be a list", where)
    for n, e in enumerate(events):
        _check_event(e, n, where)
    return InteractionLog(log, src)


def _check_event(e: Any, n: int, where: Any) -> None:
    ctx = f"events[{n}]"
    if not isinstance(e, Mapping) or e.get("op") not in _OPS:
        raise _fail(f"{ctx}: 'op' must be one of {sorted(_OPS)}", where)
    op = e["op"]
    if op in ("add_object", "prompt", "remove_object") and not isinstance(e.get("label"), int):
        raise _fail(f"{ctx} ({op}): 'label' must be an integer", where)
    if op == "prompt":
        if not isinstance(e.get("slice"), int):
            raise _fail(f"{ctx} (prompt): 'slice' must be an integer", where)
        if e.get("mask") is not None:
            try:
                decode_mask(e["mask"])
            except (KeyError, ValueError, TypeError) as err:
                raise _fail(f"{ctx} (prompt): bad mask: {err}", where) from None
    if op == "propagate" and (
        not isinstance(e.get("slices"), int) or not isinstance(e.get("complete"), bool)
    ):
        raise _fail(f"{ctx} (propagate): needs integer 'slices' and boolean 'complete'", where)


def replay(
    session: Any,
    log: InteractionLog,
    *,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> bool:
    """Run a log's events on ``session`` in order.

    Parameters
    ----------
    session : Session
        A new session of the same image, built with ``log.session_kwargs()`` and the same model.
    log : InteractionLog
    cancel : callable, optional
        Polled between slices of each propagation; True stops the replay there.
    progress : callable, optional
        Passed to each :meth:`~sam2_med.session.Session.propagate`.

    Returns
    -------
    bool
        True when every event ran (False: ``cancel`` stopped it).

    Raises
    ------
    PromptError
        An event the session refuses (the log does not belong to this image or was edited).
    """
    for n, e in enumerate(log.events):
        op = e["op"]
        try:
            if op == "add_object":
                session.add_object(name=e["name"], label=int(e["label"]))
            elif op == "remove_object":
                session.remove_object(int(e["label"]))
            elif op == "undo":
                session.undo()
            elif op == "prompt":
                _replay_prompt(session, e)
            else:
                if not _replay_propagate(session, e, cancel, progress):
                    return False
        except PromptError as err:
            raise _fail(f"events[{n}] ({op}) was refused: {err.problem}", log.source) from None
    return True


def _replay_prompt(session: Any, e: Mapping[str, Any]) -> None:
    if e.get("mask") is not None:
        session.add_prompts(int(e["label"]), mask=decode_mask(e["mask"]), slice_index=e["slice"])
        return
    pts = e.get("points")
    session.add_prompts(
        int(e["label"]),
        points=None if pts is None else np.asarray(pts, dtype=np.int64),
        point_labels=None if pts is None else np.asarray(e["point_labels"], dtype=np.int64),
        box=None if e.get("box") is None else tuple(np.asarray(e["box"], dtype=np.int64)),
        slice_index=int(e["slice"]),
    )


def _replay_propagate(
    session: Any,
    e: Mapping[str, Any],
    cancel: Callable[[], bool] | None,
    progress: Callable[[int, int], None] | None,
) -> bool:
    """One propagate call; a recorded cancel stops it after the same number of slices."""
    limit = None if e["complete"] else int(e["slices"])
    done = 0
    stopped = False

    def stop() -> bool:
        nonlocal stopped
        if cancel is not None and cancel():
            stopped = True
            return True
        return limit is not None and done >= limit

    for _ in session.propagate(cancel=stop, progress=progress):
        done += 1
    return not stopped
