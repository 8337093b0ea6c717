"""Regenerate the README screenshots of the napari widget.

Run under a (virtual) X server::

    xvfb-run -a python scripts/screenshots.py [--out docs/images]

It writes the phantom to a temporary folder, opens it with the sam2-med reader, loads a
*random-weight* tiny SAM 2 model through the widget's checkpoint import (a Meta-format ``.pt``
saved here), prompts the middle slice with a point and a box, propagates, and saves:

* ``widget_propagating.png``: the dock widget while propagation streams slices in;
* ``widget_exported.png``: the dock widget after exporting the mask;
* ``viewer_exported.png``: the whole window after the export.

The weights are random, so the masks show the workflow, not segmentation quality.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WIDGET_NAME = "SAM 2 volume segmentation"


def _wait(app, condition: Callable[[], bool], timeout: float = 300.0) -> None:
    """Process Qt events until ``condition()`` holds (or fail after ``timeout`` seconds)."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the widget did not finish in time")
        app.processEvents()
        time.sleep(0.02)
    app.processEvents()


def _save(widget, path: Path, max_width: int) -> None:
    pix = widget.grab()
    if pix.width() > max_width:
        from qtpy.QtCore import Qt

        pix = pix.scaledToWidth(max_width, Qt.TransformationMode.SmoothTransformation)
    if not pix.save(str(path), "PNG"):
        raise OSError(f"{path}: could not write the screenshot")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import napari
    from qtpy.QtWidgets import QApplication

    from sam2_med.models import TINY_ARCH, random_model, save_meta_checkpoint, tiny_config
    from sam2_med.phantom import write_phantom

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        image_path = write_phantom(tmp_path / "phantom")["image"]
        checkpoint = tmp_path / "random_tiny.pt"
        save_meta_checkpoint(random_model(tiny_config(), seed=0), checkpoint)

        viewer = napari.Viewer(show=True, title="sam2-med")
        viewer.window.resize(1400, 900)
        app = QApplication.instance()
        viewer.open(str(image_path), plugin="sam2-med")
        _, widget = viewer.window.add_plugin_dock_widget("sam2-med", WIDGET_NAME)
        widget.import_checkpoint(checkpoint, arch=TINY_ARCH)
        _wait(app, lambda: not widget.busy)
        if widget.state.model is None:
            raise RuntimeError("the random checkpoint did not load; see the notifications")

        state = widget.state
        widget.add_object("phantom organ")
        state.ensure_session()
        vol = state.volume
        axis = state.axis_index()
        k = vol.shape[axis] // 2
        state.go_to_slice(k)
        centre = (np.array(vol.shape) - 1) / 2
        centre[axis] = k
        state.add_point_prompt(centre)
        lo, hi = centre.copy(), centre.copy()
        for a in range(3):
            if a != axis:
                lo[a] -= vol.shape[a] // 6
                hi[a] += vol.shape[a] // 6
        state.add_box_prompt(lo, hi)
        widget.segment_slice()
        _wait(app, lambda: not widget.busy)

        widget.propagate()
        n = state.n_slices()
        _wait(app, lambda: widget.slices_done >= max(2, n // 3) or not widget.busy)
        _save(widget, args.out / "widget_propagating.png", 480)
        _wait(app, lambda: not widget.busy)

        widget.export(tmp_path / "phantom_seg.nii.gz")
        state.go_to_slice(k)
        viewer.layers.selection.active = state.labels_layer
        _wait(app, lambda: True)
        _save(widget, args.out / "widget_exported.png", 480)
        _save(viewer.window._qt_window, args.out / "viewer_exported.png", 1000)
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
