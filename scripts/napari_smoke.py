"""napari startup script for ``scripts/check_wheel.sh``: the plugin as a user meets it.

``check_wheel.sh`` runs napari's own command line against the installed wheel, the way the README
says to open a file, plus the dock::

    napari sample_data/generated/phantom_ct.nii.gz --plugin sam2-med -w sam2-med

with a settings file whose ``application.startup_script`` is this file. napari runs it before it
opens the file and the dock; the check below waits until napari has shown its window (the last
thing its command line does; Qt events are processed earlier, while the file loads), prints
what it found and ends the process: exit 0 when the phantom was opened by the sam2-med reader
and the *SAM 2 volume segmentation* dock is present, 1 otherwise (also after two minutes
without a window).

Environment: ``SAM2_MED_SMOKE_SHAPE`` (``"112,96,40"``), the expected array shape of the image.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

from qtpy.QtCore import QTimer

WIDGET = "SAM 2 volume segmentation"
DEADLINE = time.monotonic() + 120.0


def _when_shown() -> None:
    import napari

    viewer = napari.current_viewer()
    if viewer is None or not viewer.window._qt_window.isVisible():
        if time.monotonic() < DEADLINE:
            QTimer.singleShot(250, _when_shown)
            return
        print("napari smoke: napari showed no window within two minutes", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)
    QTimer.singleShot(500, _check)  # let the shown window settle


def _check() -> None:
    code = 1
    try:
        import napari
        from npe2 import PluginManager

        import sam2_med

        pm = PluginManager.instance()
        manifest = pm.get_manifest("sam2-med")  # discovered through the package's entry point
        print(f"napari smoke: npe2 found {manifest.display_name!r} {manifest.package_version}")
        print(f"napari smoke: sam2_med imported from {os.path.dirname(sam2_med.__file__)}")

        viewer = napari.current_viewer()
        assert viewer is not None, "no napari viewer"
        layers = list(viewer.layers)
        assert len(layers) == 1, f"expected the phantom as one layer, got {layers}"
        layer = layers[0]
        shape = tuple(
            int(s) for s in os.environ.get("SAM2_MED_SMOKE_SHAPE", "112,96,40").split(",")
        )
        assert layer._type_string == "image", f"not an image layer: {layer}"
        assert sorted(layer.data.shape) == sorted(shape), f"shape {layer.data.shape} != {shape}"
        assert layer.source.reader_plugin == "sam2-med", f"read by {layer.source.reader_plugin!r}"
        print(f"napari smoke: {layer.name!r} {layer.data.shape} read by sam2-med")

        docks = viewer.window.dock_widgets
        names = [n for n in docks if WIDGET in n]
        assert names, f"no {WIDGET!r} dock; docks: {list(docks)}"
        widget = docks[names[0]]
        assert type(widget).__module__.startswith("sam2_med."), type(widget)
        print(f"napari smoke: dock {names[0]!r} open ({type(widget).__name__})")
        code = 0
    except BaseException:
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # leave at once: napari's own shutdown is not what is tested here


QTimer.singleShot(250, _when_shown)
