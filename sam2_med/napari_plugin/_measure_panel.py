"""The dock widget's *Measurements* section: volume and RECIST per object, lines, RTSTRUCT, report.

A self-contained part of :class:`~sam2_med.napari_plugin._widget.Sam2MedWidget` (which adds it
and calls three hooks: :meth:`MeasurePanel.refresh` when a job ends, :meth:`MeasurePanel.decorate`
when the object list is rebuilt, :meth:`MeasurePanel.update_enabled` when buttons change).

* Every object in the object list shows its volume (mL) and RECIST long x short axis (mm),
  measured with :func:`sam2_med.measure.measure` on the label array after each propagation,
  correction, slice prompt or undo, in the plane the widget slices (axial by default).
* **Draw RECIST lines** puts the current object's long axis (red) and short axis (cyan) into a
  Shapes layer ``"sam2 RECIST"`` and moves the viewer to their slice.
* **Export RT Structure Set…** (images read from DICOM) writes the objects as DICOM RT contours
  referencing the source series (:func:`sam2_med.io.save_rtstruct`).
* **Write report…** writes ``report.html`` with a picture per object
  (:func:`sam2_med.report.write_report`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
)

#: Name of the Shapes layer holding the RECIST lines.
RECIST_LAYER = "sam2 RECIST"
#: Where the plain text of an object-list item is kept while measurements are appended to it.
_BASE_TEXT_ROLE = Qt.ItemDataRole.UserRole + 1


class MeasurePanel(QGroupBox):
    """The *Measurements* group of the dock widget (see the module docstring).

    Parameters
    ----------
    widget : Sam2MedWidget
        The dock widget; its ``state`` (a SegmentationState) holds the image, labels and objects.

    Attributes
    ----------
    results : dict of int -> StructureMeasurements
        The last measurement of each non-empty object (label value -> result).
    """

    def __init__(self, widget: Any) -> None:
        super().__init__("Measurements")
        self._widget = widget
        self._volume: Any = None
        self.results: dict[int, Any] = {}
        layout = QVBoxLayout(self)
        self.summary = QLabel("no measurements yet")
        self.summary.setWordWrap(True)
        self.recist_button = QPushButton("Draw RECIST lines")
        self.recist_button.setToolTip(
            "the current object's long (red) and short (cyan) axis on the slice where the long "
            "axis is largest"
        )
        self.rtstruct_button = QPushButton("Export RTSTRUCT…")
        self.rtstruct_button.setToolTip(
            "DICOM RT Structure Set of all objects, referencing the source series (images read "
            "from DICOM)"
        )
        self.report_button = QPushButton("Write report…")
        self.report_button.setToolTip("report.html with a picture and the measurements per object")
        layout.addWidget(self.summary)
        layout.addWidget(self.recist_button)
        row = QHBoxLayout()
        row.addWidget(self.rtstruct_button)
        row.addWidget(self.report_button)
        layout.addLayout(row)
        self.recist_button.clicked.connect(lambda: self.draw_recist())
        self.rtstruct_button.clicked.connect(self._on_rtstruct_clicked)
        self.report_button.clicked.connect(self._on_report_clicked)
        self.update_enabled(False)

    @property
    def state(self) -> Any:
        return self._widget.state

    # -------------------------------------------------------------------------------- hooks
    def refresh(self) -> None:
        """Measure every object on the current label array and show the results."""
        state = self.state
        vol, arr = state.volume, state.labels_array
        self.results = {}
        self._volume = vol
        if vol is not None and arr is not None and state.objects:
            from ..measure import measure

            present = [lab for lab in sorted(state.objects) if (arr == lab).any()]
            names = {e.label: e.name for e in state.objects.values()}
            if present:
                found = measure(
                    np.asarray(arr), vol, label_values=present, names=names,
                    plane=state.axis, surface=False,
                )  # fmt: skip
                self.results = {m.label: m for m in found}
        self.decorate(self._widget.object_list)
        self.show_current()
        self.update_enabled(state.busy)

    def decorate(self, object_list: QListWidget) -> None:
        """Append each object's volume and RECIST axes to its line in the object list."""
        for row in range(object_list.count()):
            item = object_list.item(row)
            base = item.data(_BASE_TEXT_ROLE)
            if base is None:
                base = item.text()
                item.setData(_BASE_TEXT_ROLE, base)
            m = self.results.get(item.data(Qt.ItemDataRole.UserRole))
            item.setText(base if m is None else f"{base}  {_short(m)}")

    def update_enabled(self, busy: bool) -> None:
        vol = self.state.volume
        if vol is not self._volume:  # another image: old numbers do not apply
            self.results = {}
            self._volume = vol
            self.summary.setText("no measurements yet")
        has = bool(self.results)
        self.recist_button.setEnabled(has and not busy)
        self.report_button.setEnabled(has and not busy)
        dicom = vol is not None and vol.provenance.format == "dicom"
        self.rtstruct_button.setEnabled(has and dicom and not busy)

    def show_current(self) -> None:
        """The current object's measurements in one paragraph."""
        m = self.results.get(self.state.current_label)
        if m is None:
            self.summary.setText(
                "no measurements yet" if not self.results else "the current object is empty"
            )
            return
        text = f"{m.name}: {m.volume_ml:.2f} mL ({m.voxel_count} voxels)"
        r = m.recist
        if r is not None:
            text += (
                f"; RECIST {r.long_mm:.1f} × {r.short_mm:.1f} mm on {r.plane} slice {r.slice_index}"
            )
        st = m.intensity
        if st is not None and st.count:
            text += f"; {st.mean:.0f} ± {st.sd:.0f}" + (f" {st.units}" if st.units else "")
        self.summary.setText(text)

    # ------------------------------------------------------------------------------ actions
    def draw_recist(self, label: int | None = None) -> Any:
        """Draw the RECIST lines of ``label`` (default: the current object); returns the layer.

        The lines go into the Shapes layer :data:`RECIST_LAYER` (replacing what it held) at the
        world positions the image is drawn with, and the viewer moves to their slice.
        """
        from ._state import MM, _world_to_layer_data
        from ._widget import _notify_warning

        state = self.state
        label = state.current_label if label is None else label
        m = self.results.get(label)
        if m is None or m.recist is None or state.geometry is None:
            _notify_warning("no RECIST measurement for this object yet: segment it first")
            return None
        r = m.recist
        viewer = state.viewer
        if RECIST_LAYER in viewer.layers:
            layer = viewer.layers[RECIST_LAYER]
            layer.data = []
        else:
            layer = viewer.add_shapes(
                name=RECIST_LAYER, ndim=3, scale=state.prompt_scale(), units=MM, edge_width=1.5
            )
        lines = [
            _world_to_layer_data(layer, state.geometry.voxel_to_world(pts))
            for pts in (r.long_ijk, r.short_ijk)
        ]
        layer.add_lines(lines, edge_color=["red", "cyan"], edge_width=1.5)
        layer.features = {
            "axis": ["long", "short"],
            "length_mm": [r.long_mm, r.short_mm],
            "object": [m.name, m.name],
        }
        layer.text = {"string": "{length_mm:.1f} mm", "color": "white", "size": 10}
        if r.axis_index == state.axis_index():
            state.go_to_slice(r.slice_index)
        return layer

    def _labels(self) -> Any:
        from ..labels import LabelVolume

        state = self.state
        names = {e.label: e.name for e in state.objects.values()}
        arr = np.ascontiguousarray(state.labels_array)
        return LabelVolume(arr, state.volume, names={int(v): names.get(int(v), f"label_{v}")
                                                     for v in np.unique(arr) if v})  # fmt: skip

    def export_rtstruct(
        self, path: str | os.PathLike[str], *, overwrite: bool = False
    ) -> list[str]:
        """Write all objects as an RT Structure Set (DICOM images only); returns the paths."""
        from ..io import save_rtstruct
        from ._widget import _describe_error, _notify_error, _notify_info

        state = self.state
        if state.volume is None or state.labels_array is None:
            _notify_error("nothing to export yet")
            return []
        try:
            out = save_rtstruct(self._labels(), path, reference=state.volume, overwrite=overwrite)
        except Exception as err:
            _notify_error(f"RT Structure Set export failed: {_describe_error(err)}")
            return []
        _notify_info(f"exported {out}")
        return [str(out)]

    def write_report(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> list[str]:
        """Write ``report.html`` (and pictures, CSV, JSON) into ``folder``; returns the report."""
        from ..report import write_report
        from ._widget import _describe_error, _notify_error, _notify_info

        state = self.state
        if state.volume is None or state.labels_array is None or not self.results:
            _notify_error("nothing to report yet")
            return []
        try:
            out = write_report(self._labels(), folder, plane=state.axis, overwrite=overwrite)
        except Exception as err:
            _notify_error(f"report failed: {_describe_error(err)}")
            return []
        _notify_info(f"wrote {out}")
        return [str(out)]

    def _on_rtstruct_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Export RT Structure Set",
            "",
            "DICOM (*.dcm)",
            options=QFileDialog.Option.DontConfirmOverwrite,
        )
        if not path:
            return
        if not path.lower().endswith(".dcm"):
            path += ".dcm"
        overwrite = Path(path).exists() and self._confirm_replace(path)
        if Path(path).exists() and not overwrite:
            return
        self.export_rtstruct(path, overwrite=overwrite)

    def _on_report_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for report.html")
        if not folder:
            return
        target = Path(folder) / "report.html"
        overwrite = target.exists() and self._confirm_replace(str(target))
        if target.exists() and not overwrite:
            return
        self.write_report(folder, overwrite=overwrite)

    def _confirm_replace(self, path: str) -> bool:
        answer = QMessageBox.question(self, "Replace files?", f"{path} exists. Replace it?")
        return answer == QMessageBox.StandardButton.Yes


def _short(m: Any) -> str:
    """``"19.9 mL, 34.6 × 29.1 mm"`` for the object list."""
    text = f"{m.volume_ml:.1f} mL"
    if m.recist is not None:
        text += f", {m.recist.long_mm:.1f} × {m.recist.short_mm:.1f} mm"
    return text
