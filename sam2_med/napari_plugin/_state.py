"""Everything the segmentation widget knows about one viewer, in one object.

:class:`SegmentationState` is created by the dock widget, one per viewer (never a module
global), and holds the model, the image's geometry, the :class:`~sam2_med.session.Session`, the
objects, the label array and the prompt layers. Its methods are plain Python: they turn napari
prompt layers into voxel prompts, write :class:`SliceResult` masks into the label array, and
compute the drift review. The widget only wires buttons and thread workers to it.

Life cycle
----------
1. ``set_model`` (a :class:`~sam2_med.models.LoadedModel`, from the registry, a checkpoint or
   injected by a test) and ``set_image`` (an Image layer).
2. ``ensure_session`` creates the Session and the Labels / Points / Shapes layers on first use.
   Changing the image, the propagation axis, the window or the model drops the Session
   (``reset_session``); the next action starts a new one. Painted and accepted labels stay:
   after a reset with ``keep_labels`` they are the base the new session's results replace
   object by object. Viewing another plane (:attr:`view`) never touches the session.
3. Prompt -> ``collect_prompts`` (the current object's prompts not sent yet) -> session calls
   in a worker thread -> ``apply_result`` on the main thread, slice by slice. Sent prompts
   stay on screen (``mark_prompts_sent``); each point and box records its object in the
   layer's ``features`` (``label``, ``sent``), and only the current object's are shown.
4. ``sync_from_session`` replaces the label array with ``session.label_map()`` (over the kept
   base) after propagation and undo, so the layer always shows exactly what an export writes.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..labels import RUN_RECORD_KEY
from ..volume import Provenance, Volume
from ._layers import (
    METADATA_KEY,
    LayerGeometry,
    geometry_of,
    layer_world_coords,
    radiological_view,
    remember_run,
)

#: A slice is suspicious when its object score is below this (a logit: < 0 means "no object").
LOW_SCORE = 0.0
#: ... or when its area changes by more than this fraction from the previous segmented slice.
AREA_JUMP = 0.5

#: Edge colour of the current object's box prompts (other objects' boxes are not drawn).
BOX_COLOUR = "yellow"

POSITIVE_LAYER = "sam2 prompts (+)"
NEGATIVE_LAYER = "sam2 prompts (-)"
BOX_LAYER = "sam2 box prompts"
MM = ("mm", "mm", "mm")


@dataclass
class ObjectEntry:
    """One segmented structure: its label value in the label map and its display name."""

    label: int
    name: str


@dataclass
class Prompt:
    """A prompt in volume voxel coordinates, ready for the session.

    Attributes
    ----------
    kind : {"points", "box"}
    slice_index : int
        Index along the session axis.
    points : (N, 3) ndarray of int
        ``"points"``: voxel indices ``(i, j, k)``. ``"box"``: two opposite corners.
    point_labels : (N,) ndarray of int
        ``"points"`` only: 1 positive, 0 negative.
    """

    kind: str
    slice_index: int
    points: np.ndarray
    point_labels: np.ndarray | None = None


@dataclass
class SliceRecord:
    """Score and area of one object on one slice, as the last result reported them."""

    score: float
    area: int


@dataclass
class SegmentationState:
    """All per-viewer state of the sam2-med widget (see the module docstring)."""

    viewer: Any
    model: Any = None
    device: str = "cpu"
    image_layer: Any = None
    geometry: LayerGeometry | None = None
    axis: str = "axial"
    view: str = "axial"
    window: str = "auto"
    session: Any = None
    labels_array: np.ndarray | None = None
    labels_layer: Any = None
    objects: dict[int, ObjectEntry] = field(default_factory=dict)
    current_label: int | None = None
    removed_labels: set[int] = field(default_factory=set)
    records: dict[int, dict[int, SliceRecord]] = field(default_factory=dict)
    busy: bool = False
    cancel_event: threading.Event = field(default_factory=threading.Event)
    last_export: list[str] = field(default_factory=list)
    base_labels: np.ndarray | None = None

    # -- model and image ---------------------------------------------------------------------
    def set_model(self, model: Any) -> None:
        """Use ``model`` (a LoadedModel) from now on; the current session is dropped, its
        segmentation kept (see :meth:`reset_session`)."""
        self.model = model
        self.reset_session(keep_labels=True)

    def set_image(self, layer: Any) -> None:
        """Segment ``layer`` (a napari Image layer) from now on; drops the session."""
        if layer is self.image_layer:
            return
        self.image_layer = layer
        self.geometry = None if layer is None else geometry_for_layer(layer)
        self.reset_session()
        self.labels_array = None
        self.labels_layer = None
        self.base_labels = None

    @property
    def volume(self) -> Volume | None:
        return None if self.geometry is None else self.geometry.volume

    def axis_index(self) -> int:
        """Voxel axis of the slices the session runs along."""
        if self.session is not None and hasattr(self.session, "axis_index"):
            return int(self.session.axis_index)
        from ..geometry import slice_axis

        assert self.volume is not None
        return slice_axis(self.volume.affine, self.axis)

    def world_axis(self) -> int:
        """napari world axis (0 x, 1 y, 2 z) whose slider moves through the session's slices."""
        assert self.geometry is not None
        return self.geometry.axes.index(self.axis_index())

    def n_slices(self) -> int:
        assert self.volume is not None
        return int(self.volume.shape[self.axis_index()])

    def reset_session(self, *, keep_labels: bool = False) -> None:
        """Forget the Session (prompts, memory, anchors); the label array is kept.

        With ``keep_labels`` the current label array becomes the base of the next session:
        its results replace an object's voxels only once that object has been prompted in it.
        """
        self.session = None
        self.records = {}
        if keep_labels and self.labels_array is not None:
            self.base_labels = self.labels_array.copy()

    # -- session and layers ------------------------------------------------------------------
    def ensure_session(self) -> Any:
        """The Session for the current model, image, axis and window; created on first use."""
        if self.session is not None:
            return self.session
        if self.model is None:
            from ..errors import Sam2MedError

            raise Sam2MedError("no model loaded: pick a model with weights, or import a checkpoint")
        if self.volume is None:
            from ..errors import Sam2MedError

            raise Sam2MedError("no image: open a CT/MR volume first")
        from ..session import Session

        self.session = Session(self.model, self.volume, axis=self.axis, window=self.window)
        self.records = {}
        self.ensure_layers()
        for entry in self.objects.values():
            self._register_object(entry)
        return self.session

    def ensure_layers(self) -> None:
        """Create the Labels layer and the prompt layers if they are missing."""
        assert self.geometry is not None and self.image_layer is not None
        viewer = self.viewer
        if self.labels_array is None:
            # uint8 like the session's label map; widened in add_object past label 255
            self.labels_array = np.zeros(self.volume.shape, dtype=np.uint8)  # type: ignore[union-attr]
        if self.labels_layer is None or self.labels_layer not in viewer.layers:
            self.labels_layer = viewer.add_labels(
                self.geometry.to_data(self.labels_array),
                name=f"{self.image_layer.name} segmentation",
                affine=self.geometry.layer_affine,
                metadata={METADATA_KEY: self.geometry, "sam2_med_label_names": {}},
                opacity=0.5,
                units=MM,
            )
        self._update_label_names()
        # prompt layers step through the world like the image (one slider step per slice);
        # their data are world mm divided by that scale, and are read back through
        # data_to_world, so clicks keep mapping to the voxel drawn under them
        common = {
            "ndim": 3,
            "scale": self.prompt_scale(),
            "units": MM,
            "features": {"label": np.zeros(0, np.int64), "sent": np.zeros(0, bool)},
            "feature_defaults": {"label": int(self.current_label or 0), "sent": False},
        }
        if BOX_LAYER not in viewer.layers:
            viewer.add_shapes(
                name=BOX_LAYER,
                edge_color=BOX_COLOUR,
                face_color="transparent",
                edge_width=1,
                **common,
            )
        if NEGATIVE_LAYER not in viewer.layers:
            viewer.add_points(name=NEGATIVE_LAYER, face_color="red", size=4, **common)
        if POSITIVE_LAYER not in viewer.layers:
            viewer.add_points(name=POSITIVE_LAYER, face_color="lime", size=4, **common)

    def prompt_scale(self) -> tuple[float, float, float]:
        """World mm per data unit of the prompt layers: the image's spacing along x, y, z."""
        assert self.geometry is not None
        lay = np.abs(self.geometry.layer_affine[:3, :3])
        return tuple(float(v) for v in lay.max(axis=1))  # type: ignore[return-value]

    # -- objects -----------------------------------------------------------------------------
    def add_object(self, name: str | None = None) -> ObjectEntry:
        """A new object with the next free label value; becomes the current object."""
        used = set(self.objects) | self.removed_labels
        label = 1
        while label in used:
            label += 1
        entry = ObjectEntry(label=label, name=name or f"object {label}")
        if self.labels_array is not None and label > np.iinfo(self.labels_array.dtype).max:
            self.labels_array = self.labels_array.astype(np.uint16)
            if self.labels_layer is not None and self.geometry is not None:
                self.labels_layer.data = self.geometry.to_data(self.labels_array)
        self.objects[label] = entry
        if self.session is not None:
            self._register_object(entry)
        self.set_current(entry.label)
        self._update_label_names()
        return entry

    def set_current(self, label: int | None) -> None:
        """Make ``label`` the current object: new clicks belong to it, and only its prompts are
        shown in the prompt layers."""
        self.current_label = label
        self.update_prompt_display()

    def update_prompt_display(self) -> None:
        """Prompt layers show the current object's points and boxes (sent or not) and record
        new ones as the current object's."""
        layers = self.viewer.layers
        current = int(self.current_label or 0)
        for name in (POSITIVE_LAYER, NEGATIVE_LAYER, BOX_LAYER):
            if name not in layers:
                continue
            layer = layers[name]
            layer.feature_defaults = {"label": current, "sent": False}
            mine = _prompt_labels(layer) == current
            if name == BOX_LAYER:
                if len(mine):
                    colours = np.zeros((len(mine), 4))
                    colours[mine] = _rgba(BOX_COLOUR)
                    layer.edge_color = colours
            elif len(mine):
                layer.shown = mine

    def mark_prompts_sent(self) -> None:
        """The current object's pending prompts reached the session: they stay on screen and
        are not sent again."""
        for layer in self._prompt_layers():
            feats = layer.features
            if len(feats):
                mine = _prompt_labels(layer) == int(self.current_label or 0)
                feats.loc[mine, "sent"] = True

    def remove_prompts(self, label: int) -> None:
        """Delete an object's points and boxes from the prompt layers."""
        for layer in self._prompt_layers():
            keep = _prompt_labels(layer) != int(label)
            if keep.all():
                continue
            if layer.name == BOX_LAYER:
                layer.selected_data = set(np.flatnonzero(~keep).tolist())
                layer.remove_selected()
            else:
                layer.data = np.asarray(layer.data)[keep]
                layer.features = layer.features[keep].reset_index(drop=True)
        self.update_prompt_display()

    def _prompt_layers(self) -> list[Any]:
        layers = self.viewer.layers
        return [layers[n] for n in (POSITIVE_LAYER, NEGATIVE_LAYER, BOX_LAYER) if n in layers]

    def remove_object(self, label: int) -> None:
        """Drop an object: its voxels and prompts are cleared and later results for it are
        ignored."""
        self.objects.pop(label, None)
        self.removed_labels.add(label)
        if self.session is not None and hasattr(self.session, "remove_object"):
            self.session.remove_object(label)
        for arr in (self.labels_array, self.base_labels):
            if arr is not None:
                arr[arr == label] = 0
        self.refresh_labels()
        self.remove_prompts(label)
        if self.current_label == label:
            self.set_current(next(iter(self.objects), None))
        self._update_label_names()

    def _register_object(self, entry: ObjectEntry) -> None:
        got = self.session.add_object(name=entry.name, label=entry.label)
        if got is not None and int(got) != entry.label:
            # the session chose another value: follow it so layer and session agree
            self.objects.pop(entry.label)
            entry.label = int(got)
            self.objects[entry.label] = entry

    def _update_label_names(self) -> None:
        if self.labels_layer is not None:
            self.labels_layer.metadata["sam2_med_label_names"] = {
                e.label: e.name for e in self.objects.values()
            }

    def colour_of(self, label: int) -> tuple[float, float, float, float] | None:
        """RGBA the Labels layer draws ``label`` with (``None`` before the layer exists)."""
        if self.labels_layer is None:
            return None
        return tuple(float(c) for c in self.labels_layer.get_color(label))  # type: ignore[return-value]

    # -- prompts -----------------------------------------------------------------------------
    def collect_prompts(self) -> list[Prompt]:
        """Point and box prompts from the prompt layers, in voxel coordinates, grouped by slice.

        World positions (napari world = RAS mm) map to the voxel containing them; a box maps to
        the voxel bounding box of its corners on its slice.
        """
        vol = self.volume
        if vol is None or self.geometry is None:
            return []
        axis = self.axis_index()
        layers = self.viewer.layers
        prompts: list[Prompt] = []
        if BOX_LAYER in layers:
            shapes = layers[BOX_LAYER]
            pending = self._pending(shapes)
            for verts, kind, todo in zip(shapes.data, shapes.shape_type, pending, strict=True):
                if kind not in ("rectangle", "polygon") or not todo:
                    continue
                ijk = self.geometry.world_to_voxel(layer_world_coords(shapes, verts))
                ijk = np.clip(ijk, 0, np.array(vol.shape) - 1)
                k = int(np.round(np.median(ijk[:, axis])))
                lo, hi = ijk.min(axis=0), ijk.max(axis=0)
                lo[axis] = hi[axis] = k
                prompts.append(Prompt("box", k, np.stack([lo, hi])))
        pts, labs = [], []
        for name, value in ((POSITIVE_LAYER, 1), (NEGATIVE_LAYER, 0)):
            if name in layers and len(layers[name].data):
                layer = layers[name]
                todo = self._pending(layer)
                if not todo.any():
                    continue
                data = np.asarray(layer.data)[todo]
                ijk = self.geometry.world_to_voxel(layer_world_coords(layer, data))
                pts.append(ijk)
                labs.append(np.full(len(ijk), value, dtype=np.int64))
        if pts:
            all_pts = np.concatenate(pts)
            all_labs = np.concatenate(labs)
            inside = np.all((all_pts >= 0) & (all_pts < np.array(vol.shape)), axis=1)
            all_pts, all_labs = all_pts[inside], all_labs[inside]
            for k in np.unique(all_pts[:, axis]):
                sel = all_pts[:, axis] == k
                prompts.append(Prompt("points", int(k), all_pts[sel], all_labs[sel]))
        return prompts

    def _pending(self, layer: Any) -> np.ndarray:
        """Which of a prompt layer's points/boxes are the current object's and not yet sent."""
        n = len(layer.data)
        feats = layer.features
        if len(feats) != n or "sent" not in feats:
            return np.ones(n, bool)  # a layer without our features: everything is pending
        sent = np.asarray(feats["sent"], dtype=bool)
        return (_prompt_labels(layer) == int(self.current_label or 0)) & ~sent

    def add_point_prompt(self, ijk: np.ndarray, *, positive: bool = True) -> None:
        """Place a point prompt at the centre of voxel ``ijk`` (as a click there would)."""
        assert self.geometry is not None
        self.ensure_layers()
        name = POSITIVE_LAYER if positive else NEGATIVE_LAYER
        layer = self.viewer.layers[name]
        world = self.geometry.voxel_to_world(np.asarray(ijk, np.float64))
        layer.add(_world_to_layer_data(layer, world[None])[0])

    def add_box_prompt(self, corner_a: np.ndarray, corner_b: np.ndarray) -> None:
        """Draw a rectangle prompt between two voxels of one slice (as dragging would)."""
        assert self.geometry is not None
        self.ensure_layers()
        a = np.asarray(corner_a, np.float64)
        b = np.asarray(corner_b, np.float64)
        axis = self.axis_index()
        u, v = (x for x in range(3) if x != axis)
        corners = np.repeat(a[None], 4, axis=0)
        corners[1, v] = b[v]
        corners[2, [u, v]] = b[[u, v]]
        corners[3, u] = b[u]
        layer = self.viewer.layers[BOX_LAYER]
        layer.add_rectangles(_world_to_layer_data(layer, self.geometry.voxel_to_world(corners)))

    def clear_prompts(self) -> None:
        """Empty the prompt layers (all objects' points and boxes)."""
        layers = self.viewer.layers
        for name in (POSITIVE_LAYER, NEGATIVE_LAYER):
            if name in layers:
                layers[name].data = np.zeros((0, 3))
        if BOX_LAYER in layers and len(layers[BOX_LAYER].data):
            layers[BOX_LAYER].data = []

    def painted_mask(self, slice_index: int, label: int) -> np.ndarray:
        """The painted voxels of ``label`` on one slice, shaped like the session's masks."""
        assert self.labels_array is not None
        return np.take(self.labels_array, slice_index, axis=self.axis_index()) == label

    # -- results -----------------------------------------------------------------------------
    def apply_result(self, result: Any) -> None:
        """Write one SliceResult's masks into the label array and record score and area."""
        if self.labels_array is None:
            return
        axis = self.axis_index()
        k = int(result.slice_index)
        index: list[Any] = [slice(None)] * 3
        index[axis] = k
        plane = self.labels_array[tuple(index)]
        scores = getattr(result, "scores", {}) or {}
        areas = getattr(result, "areas", {}) or {}
        for label, mask in result.masks.items():
            label = int(label)
            if label in self.removed_labels:
                continue
            mask = np.asarray(mask, dtype=bool)
            plane[(plane == label) & ~mask] = 0
            plane[mask] = label
            area = int(areas.get(label, mask.sum()))
            score = float(scores.get(label, np.nan))
            self.records.setdefault(label, {})[k] = SliceRecord(score=score, area=area)

    def sync_from_session(self) -> None:
        """Make the label array equal to ``session.label_map()`` (minus removed objects)."""
        if self.session is None or self.labels_array is None:
            return
        lm = self.session.label_map()
        arr = np.asarray(getattr(lm, "array", lm))
        if self.labels_layer is not None and RUN_RECORD_KEY in getattr(lm, "extra", {}):
            remember_run(self.labels_layer.metadata, lm)  # for napari's own Save layers
        new = arr.astype(self.labels_array.dtype, copy=True)
        if self.base_labels is not None:
            # what an earlier session accepted stays until its object is prompted again here
            base = self.base_labels.astype(new.dtype, copy=True)
            for label in getattr(self.session, "objects", {}):
                if _anchors(self.session, label):
                    base[base == label] = 0
            new = np.where(new != 0, new, base)
        for label in self.removed_labels:
            new[new == label] = 0
        self.labels_array[...] = new
        self.refresh_labels()

    def anchors(self, label: int) -> tuple[int, ...]:
        """Prompted slices of an object in the current session (voxel slice indices)."""
        return _anchors(self.session, label) if self.session is not None else ()

    def slider_number(self, k: int) -> int:
        """The number napari's slider shows at voxel slice ``k`` of the session axis.

        It differs from ``k`` when the voxel axis runs against the world axis (e.g. slices
        stored superior to inferior): the slider counts world steps from its start.
        """
        assert self.volume is not None and self.geometry is not None
        axis, wa = self.axis_index(), self.world_axis()
        centre = (np.array(self.volume.shape, dtype=np.float64) - 1) / 2
        centre[axis] = k
        world = float(self.geometry.voxel_to_world(centre)[wa])
        dims = self.viewer.dims
        rng = dims.range[int(dims.ndim) - 3 + wa]
        step = float(rng.step) or 1.0
        return round((world - float(rng.start)) / step)

    def refresh_labels(self) -> None:
        if self.labels_layer is not None:
            self.labels_layer.refresh()

    # -- navigation --------------------------------------------------------------------------
    def current_slice(self) -> int:
        """The slice index (along the session axis) the viewer shows now."""
        assert self.volume is not None and self.geometry is not None
        point = np.asarray(self.viewer.dims.point[-3:], dtype=np.float64)
        k = int(self.geometry.world_to_voxel(point)[self.axis_index()])
        return int(np.clip(k, 0, self.n_slices() - 1))

    def go_to_slice(self, k: int) -> None:
        """Move the viewer's slider to slice ``k`` along the session axis."""
        assert self.volume is not None and self.geometry is not None
        axis = self.axis_index()
        centre = (np.array(self.volume.shape, dtype=np.float64) - 1) / 2
        centre[axis] = k
        world = self.geometry.voxel_to_world(centre)
        wa = self.world_axis()
        self.viewer.dims.set_point(wa, float(world[wa]))

    def show_axis(self, plane: str | None = None) -> None:
        """Show ``plane`` slices (default: :attr:`view`) in the radiological convention.

        The displayed plane is laid out as a radiologist reads it: axial and coronal with the
        patient's right on the screen's left, sagittal with anterior on the left, superior
        (coronal, sagittal) or anterior (axial) up (see :func:`._layers.radiological_view`).
        Viewing a plane never touches the session: only :attr:`axis` is the propagation axis.
        """
        if self.geometry is None:
            return
        radiological_view(self.viewer, self.geometry, plane or self.view)

    # -- drift review ------------------------------------------------------------------------
    def profile(self, label: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-slice object score and area of ``label``: ``(scores, areas)``, NaN/−1 if unseen.

        Uses ``session.profile(label)`` when the session provides one, else the scores and
        areas the results reported.
        """
        n = self.n_slices()
        if self.session is not None and hasattr(self.session, "profile"):
            try:
                prof = self.session.profile(label)
            except Exception:  # a label the session has not seen yet
                prof = None
            if prof is not None:
                scores, areas = _profile_arrays(prof)
                if scores is not None and len(scores) == n:
                    return scores, areas
        scores = np.full(n, np.nan)
        areas = np.full(n, -1, dtype=np.int64)
        for k, rec in self.records.get(label, {}).items():
            scores[k] = rec.score
            areas[k] = rec.area
        return scores, areas

    def suspicious_slices(self, label: int) -> list[int]:
        """Slices whose object score is low or whose area jumps (see :data:`LOW_SCORE`)."""
        if self.session is not None and hasattr(self.session, "suspicious_slices"):
            try:
                return sorted(int(k) for k in self.session.suspicious_slices(label))
            except Exception:
                pass
        scores, areas = self.profile(label)
        return suspicious_from_profile(scores, areas)


def _anchors(session: Any, label: int) -> tuple[int, ...]:
    try:
        return tuple(int(k) for k in session.anchors(label))
    except Exception:  # an object the session does not know (yet)
        return ()


def _prompt_labels(layer: Any) -> np.ndarray:
    """Object label of each point/box of a prompt layer (0 where unknown)."""
    feats = layer.features
    n = len(layer.data)
    if "label" not in feats or len(feats) != n:
        return np.zeros(n, np.int64)
    return np.asarray(feats["label"], dtype=np.int64)


def _rgba(colour: str) -> np.ndarray:
    from napari.utils.colormaps.standardize_color import transform_color

    return transform_color(colour)[0]


def _world_to_layer_data(layer: Any, world: np.ndarray) -> np.ndarray:
    """World mm ``(N, 3)`` -> a layer's data coordinates ``(N, 3)``."""
    return np.array([np.asarray(layer.world_to_data(w), dtype=np.float64) for w in world])


def suspicious_from_profile(scores: np.ndarray, areas: np.ndarray) -> list[int]:
    """Slices with a low object score or an abrupt area change.

    Parameters
    ----------
    scores : (K,) ndarray of float
        Object score per slice (NaN where not segmented).
    areas : (K,) ndarray of int
        Mask area in pixels per slice (-1 where not segmented).

    Returns
    -------
    list of int
        Sorted slice indices.

    Examples
    --------
    >>> suspicious_from_profile(np.array([5.0, 5.0, -1.0, 5.0]), np.array([100, 104, 10, 98]))
    [2, 3]
    """
    out = set()
    seen = np.flatnonzero(areas >= 0)
    for k in seen:
        if np.isfinite(scores[k]) and scores[k] < LOW_SCORE:
            out.add(int(k))
    for prev, k in itertools.pairwise(seen):
        a, b = float(areas[prev]), float(areas[k])
        if max(a, b) > 0 and abs(b - a) / max(a, b, 1.0) > AREA_JUMP:
            out.add(int(k))
    return sorted(out)


def _profile_arrays(prof: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(scores, areas) from whatever ``Session.profile`` returns (object or mapping)."""

    def pick(*names: str) -> np.ndarray | None:
        for n in names:
            v = prof.get(n) if isinstance(prof, dict) else getattr(prof, n, None)
            if v is not None:
                return np.asarray(v)
        return None

    scores = pick("scores", "score", "object_scores")
    areas = pick("areas", "area")
    if scores is not None:
        scores = scores.astype(np.float64)
    if areas is not None:
        areas = np.where(np.isfinite(areas.astype(np.float64)), areas, -1).astype(np.int64)
    elif scores is not None:
        areas = np.where(np.isfinite(scores), 0, -1)
    return scores, areas


def geometry_for_layer(layer: Any) -> LayerGeometry:
    """The :class:`LayerGeometry` of an Image layer; built from its transform if it has none.

    A 3D layer opened by another reader is taken as it is displayed: its data-to-world transform
    becomes the volume affine, with napari's world read as RAS millimetres (x, y, z).
    """
    geo = geometry_of(getattr(layer, "metadata", None))
    if geo is not None:
        return geo
    from ..errors import Sam2MedError

    data = np.asarray(layer.data)
    if data.ndim != 3 or getattr(layer, "rgb", False):
        raise Sam2MedError(
            f"layer {layer.name!r} is not a 3D grey-level volume (shape {data.shape})"
        )
    affine = np.asarray(layer.affine.affine_matrix, dtype=np.float64) @ _physical_matrix(layer)
    vol = Volume(data, affine, provenance=Provenance(format="napari", description=layer.name))
    return LayerGeometry(volume=vol, axes=(0, 1, 2))


def _physical_matrix(layer: Any) -> np.ndarray:
    """napari's scale/translate/rotate/shear part of a layer's data-to-world transform."""
    from napari.utils.transforms import Affine

    return Affine(
        scale=layer.scale,
        translate=layer.translate,
        rotate=layer.rotate,
        shear=layer.shear,
        ndim=3,
    ).affine_matrix
