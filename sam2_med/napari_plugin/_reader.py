"""npe2 reader: NIfTI, NRRD, MetaImage files and DICOM folders as Image layers in world mm.

``get_reader`` decides from the name and at most a few file headers (never the whole volume);
the returned reader calls :func:`sam2_med.io.load_volume` and places the image with the
volume's RAS affine (see :mod:`sam2_med.napari_plugin._layers` for the axis convention).

napari 0.9 has no reader priority: when several plugins claim a file (napari's builtin reader
also claims ``*.nii.gz`` and every folder) ``viewer.open`` without ``plugin=`` raises
``MultipleReaderError`` and the GUI asks. A saved preference decides instead;
:func:`prefer_sam2med_reader` records one for sam2-med's file patterns (not for folders, which
every folder would match), without replacing a choice the user made.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._layers import (
    METADATA_KEY,
    WORLD_AXIS_LABELS,
    LayerGeometry,
    geometry_of,
    image_layer_data,
    radiological_view,
)

#: File patterns sam2-med asks napari to prefer it for (see :func:`prefer_sam2med_reader`).
PREFERRED_PATTERNS = ("*.nii", "*.nii.gz", "*.nrrd", "*.nhdr", "*.mha", "*.mhd")

PLUGIN_NAME = "sam2-med"

_MAX_FILES_SNIFFED = 64

#: A DICOM folder with at most this many series opens as one layer per series.
MAX_SERIES_PER_FOLDER = 4


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list[tuple]] | None:
    """Return :func:`read_volume` when ``path`` looks like a volume sam2-med reads, else ``None``.

    Parameters
    ----------
    path : str or list of str
        One path (a file or a DICOM folder). Lists (napari's "open as stack") are refused.

    Returns
    -------
    callable or None
    """
    if not isinstance(path, (str, os.PathLike)):
        return None
    from ..io import sniff_format

    p = Path(path)
    fmt = sniff_format(p)
    if fmt is None:
        return None
    if p.is_dir() and not _folder_has_dicom(p):
        return None
    return read_volume


def _folder_has_dicom(folder: Path) -> bool:
    """True when a DICOM-looking file is among the first files found under ``folder``."""
    from ..io import sniff_format

    seen = 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.startswith("."):
                continue
            if sniff_format(Path(root, name)) == "dicom":
                return True
            seen += 1
            if seen >= _MAX_FILES_SNIFFED:
                return False
    return False


def read_volume(path: str | Sequence[str]) -> list[tuple]:
    """Read one volume (or every series of a DICOM folder) as napari Image LayerDataTuples.

    Parameters
    ----------
    path : str
        A file or a DICOM folder.

    Returns
    -------
    list of (data, kwargs, "image" or "labels")
        One tuple per volume; see :func:`~sam2_med.napari_plugin._layers.image_layer_data`.
        A label map (a mask sam2-med wrote, or a NIfTI with the label intent) is a Labels
        layer with its names, not an image. The first image opened into a viewer is shown
        radiologically (see :func:`show_radiologically_when_added`).
        A folder with up to :data:`MAX_SERIES_PER_FOLDER` series gives one per readable series
        (the others are named in a warning).

    Raises
    ------
    sam2_med.Sam2MedError
        Whatever :func:`sam2_med.io.load_volume` refuses, with the path in the message.
    """
    from ..errors import Sam2MedError
    from ..io import MultipleSeriesError, load_volume

    p = Path(os.fspath(path))  # type: ignore[arg-type]
    try:
        volumes = [load_volume(p)]
    except MultipleSeriesError as err:
        # A folder holding a few series (e.g. a study): each becomes its own layer. More than
        # that is refused with the error, which lists them, so the user opens the one wanted.
        if len(err.series) > MAX_SERIES_PER_FOLDER:
            raise
        volumes, failures = [], []
        for info in err.series:
            try:
                volumes.append(load_volume(p, series_uid=info.series_uid))
            except Sam2MedError as series_err:
                failures.append(str(series_err))
        if not volumes:
            raise
        if failures:
            from napari.utils.notifications import show_warning

            show_warning("skipped series sam2-med cannot read: " + "; ".join(failures))
    out = []
    for vol in volumes:
        name = _layer_name(p, vol, several=len(volumes) > 1)
        names = label_map_names(p, vol)
        if names is not None:
            out.append(labels_layer_data(vol, name=name, source=str(p), names=names))
        else:
            out.append(image_layer_data(vol, name=name, source=str(p)))
    show_radiologically_when_added([t[1]["metadata"][METADATA_KEY] for t in out])
    return out


def show_radiologically_when_added(geometries: Sequence[LayerGeometry]) -> None:
    """Lay the current viewer out radiologically (axial slices, patient's right on the left,
    anterior up) as soon as the first of these layers is added, when it is the viewer's first
    image: opening a file gives the radiological display with or without the dock widget.

    A reader only returns data; napari adds the layers right after it returns, so the layout
    is applied from the viewer's ``layers.events.inserted`` (once, then disconnected). A later
    image added to a viewer that already shows one leaves the user's layout alone.
    """
    try:
        from napari import current_viewer

        viewer = current_viewer()
    except Exception:  # no napari application (e.g. the reader called from a script)
        return
    if viewer is None or not geometries:
        return
    pending = list(geometries)
    first_image = not any(type(lay).__name__ == "Image" for lay in viewer.layers)

    def on_inserted(event: Any) -> None:
        geo = geometry_of(getattr(event.value, "metadata", None))
        if geo is None or not any(geo is g for g in pending):
            return
        viewer.layers.events.inserted.disconnect(on_inserted)
        if first_image and viewer.dims.ndim >= 3:
            radiological_view(viewer, geo, "axial")

    viewer.layers.events.inserted.connect(on_inserted)


def label_map_names(path: Path, volume: Any) -> dict[int, str] | None:
    """Label names when ``path`` is a label map (a sam2-med mask, or a NIfTI whose intent is
    NIFTI_INTENT_LABEL) with integer voxels, else None (an image)."""
    import json

    import numpy as np

    if not np.issubdtype(np.asarray(volume.array).dtype, np.integer):
        return None
    from ..io.writers import NIFTI_INTENT_LABEL, sidecar_path

    meta = None
    side = sidecar_path(path)
    try:
        if side.is_file() and side.stat().st_size < 10_000_000:
            meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        meta = None
    ours = (
        isinstance(meta, dict)
        and "sam2_med_version" in meta
        and (meta.get("mask") or {}).get("file") == path.name
    )
    intent = volume.provenance.extra.get("nifti_intent_code")
    if not ours and intent != NIFTI_INTENT_LABEL:
        return None
    names = (meta or {}).get("label_names") if ours else None
    out: dict[int, str] = {}
    for key, value in (names or {}).items():
        if str(key).isdigit():
            out[int(key)] = str(value)
    return out


def labels_layer_data(
    volume: Any, *, name: str, source: str | None = None, names: dict[int, str] | None = None
) -> tuple[Any, dict[str, Any], str]:
    """A napari Labels LayerDataTuple for a label map, placed like :func:`image_layer_data`
    places an image (so it lands on the image it was drawn on) and never listed as an image to
    segment."""
    import numpy as np

    geo = LayerGeometry.for_volume(volume, source=source)
    data = np.asarray(volume.array)
    kwargs: dict[str, Any] = {
        "name": name,
        "affine": geo.layer_affine,
        "metadata": {METADATA_KEY: geo, "sam2_med_label_names": dict(names or {})},
        "opacity": 0.5,
        "axis_labels": WORLD_AXIS_LABELS,
        "units": ("mm", "mm", "mm"),
    }
    return geo.to_data(data), kwargs, "labels"


def _layer_name(path: Path, volume: Any, *, several: bool) -> str:
    """File name without its suffix; for a DICOM folder the series description."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm.gz", ".dcm"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    desc = volume.provenance.description
    if (path.is_dir() or several) and desc:
        name = desc
    if several and volume.provenance.series_uid:
        name = f"{name} [{volume.provenance.series_uid[-8:]}]"
    return name or "volume"


def prefer_sam2med_reader(
    settings: Any = None, *, patterns: Sequence[str] = PREFERRED_PATTERNS
) -> list[str]:
    """Record sam2-med as the preferred napari reader for its file patterns.

    Only patterns with no preference yet are set, so a choice the user made in napari's reader
    dialog or preferences stays as it is.

    Parameters
    ----------
    settings : napari.settings.NapariSettings, optional
        Defaults to ``napari.settings.get_settings()``.
    patterns : sequence of str
        fnmatch patterns, e.g. ``"*.nii.gz"``.

    Returns
    -------
    list of str
        The patterns newly set.
    """
    if settings is None:
        from napari.settings import get_settings

        settings = get_settings()
    current = dict(settings.plugins.extension2reader)
    added = [pat for pat in patterns if pat not in current]
    if added:
        current.update(dict.fromkeys(added, PLUGIN_NAME))
        settings.plugins.extension2reader = current
    return added
