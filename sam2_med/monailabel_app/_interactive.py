"""The engine behind the MONAI Label app, without MONAI Label: clicks in, 3D mask out.

3D Slicer's and OHIF's MONAI Label clients send, for the segment being edited, *all* its
foreground and background clicks so far as voxel indices ``[i, j, k]`` of the study (Slicer
converts its RAS control points with the volume's RAS-to-IJK matrix, so ``i, j, k`` index the
file exactly as nibabel and sam2-med do), optionally an ROI box ``[i0, i1, j0, j1, k0, k1]``
and ``reset_state``. :class:`InteractiveSegmenter` keeps one :class:`sam2_med.session.Session`
per study (a few, least recently used first out) with one object per segment name, and turns
each request into the Session calls the API makes:

* clicks not seen before are added on their slice with :meth:`Session.add_prompts`, the one
  prompt entry every front end uses (on a slice propagation already filled: SAM 2's correction
  click, decoded with memory, the slice's previous result as mask prompt); a slice that gets clicks
  becomes an anchor, and :meth:`Session.propagate` re-runs only the slices nearer to it than
  to the other anchors;
* a click that disappeared (the user deleted a control point), a changed ROI or
  ``reset_state`` starts the segment again from the clicks it has now;
* an ROI becomes a box on its middle slice along the propagation axis (with that slice's
  clicks, in one decoder run).

The answer is the segment's propagated 3D mask (value 1) written as NIfTI on exactly the
study's voxel grid (:func:`sam2_med.io.save_mask`), and the session's run record with its
interaction log (:meth:`Session.run_record`), which ``sam2-med segment STUDY --prompts
RECORD.json`` replays as it replays a mask sidecar.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import PromptError

if TYPE_CHECKING:
    from ..models import LoadedModel
    from ..session import Session
    from ..volume import Volume

__all__ = ["CONF_DEFAULTS", "InteractiveSegmenter", "SegmentAnswer", "app_settings", "write_answer"]

Click = tuple[int, int, int, int]  # i, j, k, 1 = foreground / 0 = background


@dataclass
class _Segment:
    label: int
    clicks: dict[int, set[Click]] = field(default_factory=dict)  # slice -> clicks sent
    roi: tuple[int, ...] | None = None


@dataclass
class _Study:
    volume: Volume
    session: Session
    segments: dict[str, _Segment] = field(default_factory=dict)


@dataclass(frozen=True)
class SegmentAnswer:
    """One request's result.

    Attributes
    ----------
    mask : (I, J, K) ndarray of bool
        The segment's propagated mask, indexed like ``volume.array``.
    volume : Volume
        The study.
    name : str
        The segment's name.
    anchors : tuple of int
        Prompted slices along the propagation axis.
    seconds : float
    label : int
        The segment's label value in the study session's label map.
    record : dict
        The study session's run record (:meth:`Session.run_record`: model, axis, window and
        the interaction log of every segment of the study so far). Saved as JSON, ``sam2-med
        segment STUDY --prompts RECORD.json`` replays it; the segment is ``label`` in that
        label map (where segments overlap, the one added first keeps the voxel).
    """

    mask: np.ndarray
    volume: Volume
    name: str
    anchors: tuple[int, ...]
    seconds: float
    label: int = 0
    record: dict[str, Any] = field(default_factory=dict)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _clicks(points: Any, positive: int, what: str) -> list[Click]:
    if points is None:
        return []
    if not isinstance(points, (list, tuple)):
        raise PromptError(f"{what} must be a list of [i, j, k] voxel indices, got {points!r}")
    out = []
    for p in points:
        if (
            not isinstance(p, (list, tuple))
            or len(p) < 3
            or not all(isinstance(v, (int, float)) and float(v).is_integer() for v in p[:3])
        ):
            raise PromptError(f"{what} must be [i, j, k] voxel indices, got {p!r}")
        out.append((int(p[0]), int(p[1]), int(p[2]), positive))
    return out


def _roi(value: Any) -> tuple[int, ...] | None:
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        return None
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 6
        or not all(isinstance(v, (int, float)) for v in value)
    ):
        raise PromptError(f"roi must be [i0, i1, j0, j1, k0, k1] voxel indices, got {value!r}")
    return tuple(round(v) for v in value)


class InteractiveSegmenter:
    """Sessions for the studies a MONAI Label server is asked about (thread-safe).

    Parameters
    ----------
    model : LoadedModel
    axis : {"axial", "coronal", "sagittal"}
        Propagation plane.
    window : str or (center, width)
        Intensity window (:func:`sam2_med.intensity.resolve_intensity`).
    max_sessions : int
        Studies kept open (each holds its image features, up to the Session's cache bound);
        the least recently used is dropped first.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        axis: str = "axial",
        window: Any = "auto",
        max_sessions: int = 2,
    ) -> None:
        self.model = model
        self.axis = axis
        self.window = window
        self.max_sessions = max(1, int(max_sessions))
        self._studies: OrderedDict[tuple[str, int, int], _Study] = OrderedDict()
        self._lock = threading.Lock()

    def _study(self, image: str | os.PathLike[str]) -> _Study:
        from ..io import load_volume
        from ..session import Session

        p = Path(image)
        try:
            st = p.stat()
        except OSError:
            from ..io.errors import VolumeReadError

            raise VolumeReadError("study not found", p) from None
        key = (os.path.realpath(p), st.st_mtime_ns, st.st_size)
        study = self._studies.get(key)
        if study is None:
            volume = load_volume(p)
            session = Session(self.model, volume, axis=self.axis, window=self.window)
            study = _Study(volume, session)
            self._studies[key] = study
            while len(self._studies) > self.max_sessions:
                self._studies.popitem(last=False)
        self._studies.move_to_end(key)
        return study

    def segment(
        self,
        image: str | os.PathLike[str],
        *,
        foreground: Sequence[Sequence[int]] | None = None,
        background: Sequence[Sequence[int]] | None = None,
        name: str = "segment",
        roi: Sequence[int] | None = None,
        reset: bool = False,
    ) -> SegmentAnswer:
        """Apply one request's clicks to the study's session and propagate.

        Parameters
        ----------
        image : path-like
            The study (any format :func:`sam2_med.io.load_volume` reads).
        foreground, background : sequence of [i, j, k]
            *All* the segment's clicks so far (voxel indices of the study).
        name : str
            The segment; each name is one object of the session.
        roi : [i0, i1, j0, j1, k0, k1], optional
            A box, used on its middle slice along the propagation axis.
        reset : bool
            Forget the segment's earlier clicks and results first.

        Returns
        -------
        SegmentAnswer

        Raises
        ------
        Sam2MedError
            An unreadable study, clicks outside it or none at all (one line, with the path).
        """
        clicks = _clicks(foreground, 1, "foreground") + _clicks(background, 0, "background")
        box = _roi(roi)
        if not clicks and box is None:
            raise PromptError("no clicks: send foreground or background points, or an roi", image)
        start = time.perf_counter()
        with self._lock:
            study = self._study(image)
            session = study.session
            ax = session.axis_index
            by_slice: dict[int, set[Click]] = {}
            for c in clicks:
                by_slice.setdefault(c[ax], set()).add(c)
            box_slice = None
            if box is not None:
                lo, hi = sorted((box[2 * ax], box[2 * ax + 1]))
                box_slice = (lo + hi) // 2
            seg = study.segments.get(name)
            stale = (
                seg is None
                or _truthy(reset)
                or seg.roi != box
                or any(not sent <= by_slice.get(k, set()) for k, sent in seg.clicks.items())
            )
            if stale:
                if seg is not None:
                    session.remove_object(seg.label)
                seg = _Segment(session.add_object(name))
                study.segments[name] = seg
            try:
                self._send(session, seg, by_slice, box, box_slice)
            except Exception:
                session.remove_object(seg.label)  # a half-applied request is not kept
                del study.segments[name]
                raise
            for _ in session.propagate():
                pass
            mask = session.object_volume(seg.label)
            anchors = session.anchors(seg.label)
            record = session.run_record()
        return SegmentAnswer(
            mask, study.volume, name, anchors, time.perf_counter() - start, seg.label, record
        )

    @staticmethod
    def _send(
        session: Session,
        seg: _Segment,
        by_slice: dict[int, set[Click]],
        box: tuple[int, ...] | None,
        box_slice: int | None,
    ) -> None:
        if box is not None and seg.roi != box:
            ax = session.axis_index
            lo = [min(box[2 * a], box[2 * a + 1]) for a in range(3)]
            hi = [max(box[2 * a], box[2 * a + 1]) for a in range(3)]
            lo[ax] = hi[ax] = box_slice
            on_slice = sorted(by_slice.get(box_slice, set()))
            # the box with its slice's clicks in one call, as every front end sends them
            session.add_prompts(
                seg.label,
                points=np.array([c[:3] for c in on_slice]) if on_slice else None,
                point_labels=np.array([c[3] for c in on_slice]) if on_slice else None,
                box=(lo, hi),
            )
            if on_slice:
                seg.clicks[box_slice] = set(on_slice)
            seg.roi = box
        for k in sorted(by_slice):
            new = sorted(by_slice[k] - seg.clicks.get(k, set()))
            if not new:
                continue
            session.add_prompts(
                seg.label,
                points=np.array([c[:3] for c in new]),
                point_labels=np.array([c[3] for c in new]),
            )
            seg.clicks.setdefault(k, set()).update(new)


def write_answer(answer: SegmentAnswer, folder: str | os.PathLike[str]) -> Path:
    """Write the mask (uint8, 1 = the segment) as NIfTI on the study's grid into ``folder``
    under a fresh name; no sidecar is left beside it. Returns the file."""
    import tempfile

    from ..io.writers import save_mask, sidecar_path

    fd, name = tempfile.mkstemp(suffix=".nii.gz", dir=folder, prefix="sam2med-")
    os.close(fd)
    os.unlink(name)
    out = save_mask(
        answer.mask.astype(np.uint8),
        name,
        reference=answer.volume,
        label_names={1: answer.name},
        measurements=False,
    )
    sidecar_path(out).unlink(missing_ok=True)
    return out


# -------------------------------------------------------------------------- app settings
#: ``monailabel start_server --conf KEY VALUE`` keys the app understands, with defaults.
CONF_DEFAULTS: dict[str, str | None] = {
    "model": None,  # registered name (sam2-med weights list); default sam2.1_hiera_tiny
    "checkpoint": None,  # a local checkpoint file instead (Meta SAM 2 / MedSAM2 .pt)
    "arch": None,  # architecture JSON for a custom or reduced checkpoint
    "device": "cpu",  # cpu, cuda, cuda:N, mps
    "dtype": "float32",  # or bfloat16
    "axis": "axial",  # propagation plane: axial, coronal, sagittal
    "window": "auto",  # intensity: auto, a CT preset, dicom, percentile, minmax, or C,W
    "sessions": "2",  # studies kept open at once
}


def app_settings(conf: dict[str, Any]) -> dict[str, Any]:
    """The app's settings from MONAI Label's ``--conf`` pairs (other keys are MONAI Label's
    own and ignored here).

    Raises
    ------
    Sam2MedError
        A value that cannot be used (one line naming the ``--conf`` key).
    """
    from ..errors import Sam2MedError

    s = {k: conf.get(k, v) for k, v in CONF_DEFAULTS.items()}
    if s["dtype"] not in ("float32", "bfloat16"):
        raise Sam2MedError(f"--conf dtype must be float32 or bfloat16, not {s['dtype']!r}")
    if s["axis"] not in ("axial", "coronal", "sagittal"):
        raise Sam2MedError(f"--conf axis must be axial, coronal or sagittal, not {s['axis']!r}")
    try:
        s["sessions"] = int(s["sessions"])
        if s["sessions"] < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise Sam2MedError(
            f"--conf sessions must be a whole number >= 1, not {s['sessions']!r}"
        ) from None
    window = str(s["window"])
    parts = window.split(",")
    if len(parts) == 2:
        try:
            window = (float(parts[0]), float(parts[1]))
        except ValueError:
            pass
    s["window"] = window
    return s
