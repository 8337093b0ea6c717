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

from ._layers import image_layer_data

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
    list of (data, kwargs, "image")
        One tuple per volume; see :func:`~sam2_med.napari_plugin._layers.image_layer_data`.
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
        out.append(image_layer_data(vol, name=name, source=str(p)))
    return out


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
