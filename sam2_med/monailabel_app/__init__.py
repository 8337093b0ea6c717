"""A MONAI Label app that serves sam2-med to 3D Slicer and OHIF.

MONAI Label's server (``monailabel start_server``) speaks the REST protocol that 3D Slicer's
and OHIF's MONAI Label modules use; this app gives it one interactive model, ``sam2_med``:
clicks on a slice in, the engine's propagated 3D label map on the study's grid out, with the
:class:`~sam2_med.session.Session` semantics of the API (every clicked slice is an anchor; a
correction click re-propagates only the slices nearer to it than to other anchors).

Set-up (the server environment; see the README for why it is separate from napari's)::

    python -m sam2_med.monailabel_app apps/sam2-med      # writes the app folder (main.py)
    monailabel start_server --app apps/sam2-med --studies /data/studies \\
        --conf model sam2.1_hiera_tiny --conf device cuda --conf dtype bfloat16

``--conf`` keys: ``model``, ``checkpoint``, ``arch``, ``device``, ``dtype``, ``axis``,
``window``, ``sessions`` (:data:`~sam2_med.monailabel_app._interactive.CONF_DEFAULTS`).
Importing this package does not import MONAI Label; ``.app`` and ``.infer`` do.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["MAIN_PY", "write_app"]

#: The app folder's ``main.py``: MONAI Label looks there for a ``MONAILabelApp`` subclass.
MAIN_PY = '''\
"""MONAI Label app folder of sam2-med (written by `python -m sam2_med.monailabel_app`)."""

from sam2_med.monailabel_app.app import Sam2MedApp  # noqa: F401  MONAI Label finds it here
'''


def write_app(folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Create the app folder ``monailabel start_server --app`` takes; returns its ``main.py``.

    MONAI Label adds ``model/``, ``logs/`` (``app.log``) and ``lib/`` beside it when it starts.

    Raises
    ------
    Sam2MedError
        ``main.py`` exists with other content and ``overwrite`` is false.
    """
    from ..errors import Sam2MedError

    main = Path(folder) / "main.py"
    if main.exists() and not overwrite and main.read_text(encoding="utf-8") != MAIN_PY:
        raise Sam2MedError("exists and is not sam2-med's app; pass --overwrite to replace it", main)
    main.parent.mkdir(parents=True, exist_ok=True)
    main.write_text(MAIN_PY, encoding="utf-8")
    return main
