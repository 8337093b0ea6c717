"""How a :class:`~sam2_med.Volume` becomes napari layer data, and back.

Conventions
-----------
* napari's world axes are **RAS+ millimetres in the order (x, y, z)**: world axis 0 points to
  the patient's Right, 1 to Anterior, 2 to Superior, so a Points layer with no transform holds
  RAS coordinates directly.
* napari slices a layer *in data space* along the data axis that has the slider's index, so the
  layer's data axes must line up with the world axes one to one. A volume stored as, say, PSR
  (sagittal DICOM) would otherwise give napari a singular 2D sub-transform. The layer therefore
  holds a **transposed view** of the volume array, ``array.transpose(axes)``, where data axis
  ``d`` is the volume voxel axis ``axes[d]`` that runs closest to world axis ``d``; the layer
  affine is the volume affine with its columns permuted the same way. No voxel is copied,
  flipped or resampled, and ``layer.data_to_world(ijk[axes]) == volume.affine @ ijk``.
* Everything that crosses into the core (prompts, masks, exports) is in the volume's own voxel
  order ``(i, j, k)``; :func:`voxel_to_data` and :func:`data_to_voxel` convert indices.
* **Oblique volumes** (voxel axes not parallel to RAS axes): napari cannot slice obliquely; it
  drops the out-of-slice rotation and warns on every slider move, so what it would draw under
  the cursor is not the voxel at the cursor's world position. sam2-med therefore shows an
  oblique volume on its own voxel grid: the *display* affine keeps each axis' spacing, sign
  and the volume's true centre but drops the rotation (recorded as
  :attr:`LayerGeometry.oblique_degrees`). Clicks map to voxels through that same display
  affine, so a prompt lands on the voxel drawn under it; exports always use the volume's true
  affine. For non-oblique volumes the display affine *is* the volume affine.

Nothing here imports napari; the functions are small and pure so they are tested without a GUI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from nibabel.orientations import io_orientation

from ..volume import Volume

#: Key under which sam2-med stores its :class:`LayerGeometry` in ``layer.metadata``.
METADATA_KEY = "sam2_med"

#: Labels for napari's world axes (RAS+ mm).
WORLD_AXIS_LABELS = ("x (R) mm", "y (A) mm", "z (S) mm")


def display_axes(affine: np.ndarray) -> tuple[int, int, int]:
    """Volume voxel axes in the order that lines them up with RAS world axes x, y, z.

    Parameters
    ----------
    affine : (4, 4) array_like
        Voxel -> RAS mm.

    Returns
    -------
    tuple of int
        ``axes[d]`` is the voxel axis whose direction is closest to world axis ``d``.

    Examples
    --------
    >>> display_axes(np.diag([1.0, 1.0, 1.0, 1.0]))
    (0, 1, 2)
    >>> display_axes(np.array([[0, 0, -1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]]))
    (2, 0, 1)
    """
    ornt = io_orientation(np.asarray(affine, dtype=np.float64))
    world_of_voxel = ornt[:, 0].astype(int)
    return tuple(int(a) for a in np.argsort(world_of_voxel))  # type: ignore[return-value]


def display_affine(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, float]:
    """The affine napari displays a volume with, and the rotation it drops (degrees).

    Parameters
    ----------
    affine : (4, 4) array_like
        Voxel -> RAS mm.
    shape : tuple of int
        ``(I, J, K)``: the display keeps the centre of this grid where ``affine`` puts it.

    Returns
    -------
    display : (4, 4) float64 ndarray
        ``affine`` itself when the volume is not oblique; otherwise each voxel axis along the
        RAS axis closest to it (same sign, same spacing), with the grid centre unmoved.
    degrees : float
        Largest angle between a voxel axis and its display axis (0 if not oblique).

    Examples
    --------
    >>> d, deg = display_affine(np.diag([2.0, -1.0, 3.0, 1.0]), (4, 4, 4))
    >>> deg, bool(np.allclose(d, np.diag([2.0, -1.0, 3.0, 1.0])))
    (0.0, True)
    """
    from ..geometry import is_oblique

    a = np.asarray(affine, dtype=np.float64)
    if not is_oblique(a):
        return a.copy(), 0.0
    ornt = io_orientation(a)
    cols = a[:3, :3]
    spacing = np.linalg.norm(cols, axis=0)
    m = np.zeros((3, 3))
    degrees = 0.0
    for v, (w, sign) in enumerate(ornt.astype(int)):
        m[w, v] = sign * spacing[v]
        cos = abs(cols[w, v]) / spacing[v]
        degrees = max(degrees, float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))))
    out = np.eye(4)
    out[:3, :3] = m
    centre = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    out[:3, 3] = (cols @ centre + a[:3, 3]) - m @ centre
    return out, degrees


def layer_affine(affine: np.ndarray, axes: tuple[int, int, int]) -> np.ndarray:
    """The napari layer affine for data ``array.transpose(axes)``: columns permuted.

    Parameters
    ----------
    affine : (4, 4) array_like
        Volume voxel -> RAS mm.
    axes : tuple of int
        From :func:`display_axes`.

    Returns
    -------
    (4, 4) float64 ndarray
        Layer data index -> RAS mm (world axes x, y, z).
    """
    a = np.asarray(affine, dtype=np.float64)
    return a[:, [*axes, 3]].copy()


def voxel_to_data(ijk: np.ndarray, axes: tuple[int, int, int]) -> np.ndarray:
    """Volume voxel indices ``(..., 3)`` -> layer data indices ``(..., 3)``."""
    return np.asarray(ijk)[..., list(axes)]


def data_to_voxel(idx: np.ndarray, axes: tuple[int, int, int]) -> np.ndarray:
    """Layer data indices ``(..., 3)`` -> volume voxel indices ``(..., 3)``."""
    return np.asarray(idx)[..., list(np.argsort(axes))]


@dataclass(frozen=True)
class LayerGeometry:
    """What sam2-med stores in ``layer.metadata["sam2_med"]``.

    Attributes
    ----------
    volume : Volume
        The volume as read (voxels in file order, RAS affine, provenance).
    axes : tuple of int
        The layer data is ``volume.array.transpose(axes)``.
    source : str or None
        The path opened, if any.
    display : (4, 4) ndarray or None
        Voxel ``(i, j, k)`` -> napari world mm as displayed; ``None`` means ``volume.affine``
        (see :func:`display_affine`: they differ only for oblique volumes).
    oblique_degrees : float
        The rotation the display drops (0 for non-oblique volumes).
    """

    volume: Volume
    axes: tuple[int, int, int]
    source: str | None = None
    display: np.ndarray | None = None
    oblique_degrees: float = 0.0

    @classmethod
    def for_volume(cls, volume: Volume, source: str | None = None) -> LayerGeometry:
        """Geometry of a layer showing ``volume`` (display affine, axes that line up)."""
        disp, degrees = display_affine(volume.affine, volume.shape)
        return cls(
            volume=volume,
            axes=display_axes(disp),
            source=source,
            display=None if degrees == 0.0 else disp,
            oblique_degrees=degrees,
        )

    @property
    def display_affine(self) -> np.ndarray:
        """(4, 4) voxel ``(i, j, k)`` -> napari world mm, as the layer is drawn."""
        return self.volume.affine if self.display is None else self.display

    @property
    def layer_affine(self) -> np.ndarray:
        """(4, 4) napari layer affine: layer data index -> world mm."""
        return layer_affine(self.display_affine, self.axes)

    def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """napari world mm ``(..., 3)`` -> index ``(i, j, k)`` of the voxel drawn there.

        The voxel containing the point (voxel ``n`` spans ``[n - 0.5, n + 0.5)``); for
        non-oblique volumes that is the voxel containing the RAS position.
        """
        from ..geometry import world_to_voxel

        return world_to_voxel(self.display_affine, np.asarray(xyz, np.float64), containing=True)

    def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """Voxel indices ``(..., 3)`` -> napari world mm ``(..., 3)`` as displayed."""
        from ..geometry import voxel_to_world

        return voxel_to_world(self.display_affine, ijk)

    def to_data(self, array: np.ndarray) -> np.ndarray:
        """A volume-ordered ``(I, J, K)`` array as layer data (a view)."""
        return np.transpose(array, self.axes)

    def from_data(self, data: np.ndarray) -> np.ndarray:
        """Layer data -> a volume-ordered ``(I, J, K)`` array (a view)."""
        return np.transpose(np.asarray(data), np.argsort(self.axes))


def geometry_of(metadata: dict[str, Any] | None) -> LayerGeometry | None:
    """The :class:`LayerGeometry` stored in a layer's metadata, or ``None``."""
    if not metadata:
        return None
    geo = metadata.get(METADATA_KEY)
    return geo if isinstance(geo, LayerGeometry) else None


def labels_digest(array: np.ndarray) -> str:
    """SHA-256 of a label map's values and shape (dtype-independent: uint8 == uint16)."""
    import hashlib

    a = np.ascontiguousarray(np.asarray(array), dtype=np.uint32)
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()


def remember_run(metadata: dict[str, Any], session_labels: Any) -> None:
    """Keep a session's run record in a Labels layer's ``metadata`` (under
    :data:`~sam2_med.labels.RUN_RECORD_KEY`) with the digest of the session's label map, so
    napari's own *Save layers* (:func:`~sam2_med.napari_plugin._writer.write_labels`) writes the
    sidecar the widget's export writes.

    Parameters
    ----------
    metadata : dict
        The layer's metadata (changed in place).
    session_labels : LabelVolume
        ``session.label_map()``: its ``extra`` holds the run record.
    """
    from ..labels import RUN_RECORD_KEY

    metadata[RUN_RECORD_KEY] = {
        "record": session_labels.extra[RUN_RECORD_KEY],
        "labels_sha256": labels_digest(session_labels.array),
    }


def export_run_record(record: dict[str, Any] | None, same: bool) -> dict[str, Any]:
    """The ``extra`` of a mask exported from napari: the session's run record (model, axis,
    window, interaction log), ``source: "napari"`` and whether the exported labels are exactly
    the session's label map (``labels_match_session``; painting after the session is not
    recorded). ``{}`` without a record.
    """
    from ..labels import RUN_RECORD_KEY

    if not record:
        return {}
    out = {"source": "napari", **record, "labels_match_session": bool(same)}
    if not same:
        out["note"] = (
            "the exported labels differ from the session's label map (painted or earlier "
            "labels); replaying the interactions gives the session's label map"
        )
    return {RUN_RECORD_KEY: out}


def stored_run_record(metadata: dict[str, Any] | None, array: np.ndarray) -> dict[str, Any]:
    """:func:`export_run_record` for ``array`` (volume order) from what :func:`remember_run`
    kept in a layer's metadata; ``{}`` when the layer has none (a layer sam2-med did not
    segment)."""
    from ..labels import RUN_RECORD_KEY

    kept = (metadata or {}).get(RUN_RECORD_KEY)
    if not isinstance(kept, dict) or "record" not in kept:
        return {}
    return export_run_record(kept["record"], kept.get("labels_sha256") == labels_digest(array))


def image_layer_data(
    volume: Volume,
    *,
    name: str,
    source: str | None = None,
    contrast_limits: tuple[float, float] | None = None,
) -> tuple[np.ndarray, dict[str, Any], str]:
    """A napari Image LayerDataTuple for ``volume`` placed in RAS world millimetres.

    Parameters
    ----------
    volume : Volume
    name : str
        Layer name.
    source : str, optional
        The path the volume came from, kept in the metadata.
    contrast_limits : (float, float), optional
        Display range; defaults to :func:`display_limits` with ``"auto"`` (for CT the
        soft-tissue window preset).

    Returns
    -------
    (data, kwargs, "image")
        ``data`` is a read-only transposed view of ``volume.array``; ``kwargs`` carries the
        layer affine and ``metadata["sam2_med"]`` (a :class:`LayerGeometry`).
    """
    geo = LayerGeometry.for_volume(volume, source=source)
    limits = contrast_limits if contrast_limits is not None else display_limits(volume)
    kwargs: dict[str, Any] = {
        "name": name,
        "affine": geo.layer_affine,
        "metadata": {METADATA_KEY: geo},
        "colormap": "gray",
        "contrast_limits": [float(limits[0]), float(limits[1])],
        "axis_labels": WORLD_AXIS_LABELS,
        "units": ("mm", "mm", "mm"),
    }
    return geo.to_data(volume.array), kwargs, "image"


def radiological_view(viewer: Any, geometry: LayerGeometry, plane: str = "axial") -> None:
    """Show ``plane`` slices of ``geometry``'s volume laid out as a radiologist reads them.

    The slider runs through the ``plane`` slices; axial and coronal slices have the patient's
    right on the screen's left, sagittal slices anterior on the left; superior (coronal,
    sagittal) or anterior (axial) is up. Only the viewer's dims order and 2D camera orientation
    change: no data, transform or layer is touched.

    Parameters
    ----------
    viewer : napari.Viewer
    geometry : LayerGeometry
        Of a layer in ``viewer`` (world axes x, y, z = R, A, S mm).
    plane : {"axial", "coronal", "sagittal"}
    """
    from ..geometry import slice_axis

    wa = geometry.axes.index(slice_axis(geometry.volume.affine, plane))
    # world axes: 0 x (R), 1 y (A), 2 z (S); rows first, then columns
    rows_cols = {2: (1, 0), 1: (2, 0), 0: (2, 1)}[wa]
    extra = max(int(viewer.dims.ndim) - 3, 0)  # leading non-spatial axes stay in front
    viewer.dims.order = (*range(extra), *(extra + a for a in (wa, *rows_cols)))
    scene = getattr(viewer, "scene", None)  # napari >= 0.9 (viewer.camera deprecated)
    camera = scene.camera if scene is not None else viewer.camera
    if hasattr(camera, "orientation2d"):
        # rows increase upwards (anterior/superior up), columns increase leftwards
        camera.orientation2d = ("up", "left")


def display_limits(volume: Volume, window: str | None = "auto") -> tuple[float, float]:
    """Contrast limits that show the image as the model sees it under ``window``.

    Parameters
    ----------
    volume : Volume
    window : str, optional
        ``"auto"`` (CT: the soft-tissue preset; other modalities: the 0.5-99.5 volume
        percentiles), a preset name of :data:`sam2_med.intensity.CT_WINDOWS`, ``"dicom"``...:
        anything :func:`sam2_med.intensity.resolve_intensity` accepts.

    Returns
    -------
    (float, float)
        The values the intensity transform maps to black and white
        (:attr:`sam2_med.intensity.IntensityTransform.limits`), in the units of
        ``volume.array`` (HU for CT).
    """
    from ..intensity import resolve_intensity

    lo, hi = resolve_intensity(volume, window).limits
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        lo, hi = float(np.nanmin(volume.array)), float(np.nanmax(volume.array))
        hi = hi if hi > lo else lo + 1.0
    return float(lo), float(hi)


def layer_world_coords(layer: Any, data: np.ndarray | None = None) -> np.ndarray:
    """World coordinates ``(N, 3)`` of a Points/Shapes layer's vertices (any layer transform).

    Parameters
    ----------
    layer : napari layer
        Anything with ``data`` and ``data_to_world``.
    data : (N, 3) ndarray, optional
        Vertices in the layer's data coordinates; defaults to ``layer.data``.
    """
    pts = np.asarray(layer.data if data is None else data, dtype=np.float64).reshape(-1, 3)
    if not len(pts):
        return np.zeros((0, 3))
    return np.array([np.asarray(layer.data_to_world(p), dtype=np.float64) for p in pts])
