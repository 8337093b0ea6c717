"""The sam2-med dock widget: prompt one slice, propagate both ways, correct, review, export.

The widget is thin. Every handler reads its inputs, calls the core through the per-viewer
:class:`~sam2_med.napari_plugin._state.SegmentationState`, and runs anything slow (model
loading, a slice, propagation) in a napari thread worker:

* ``yielded`` (main thread) writes each :class:`SliceResult` into the Labels layer, so masks
  appear slice by slice while the UI stays responsive;
* ``errored`` shows the error as a napari notification (the viewer never crashes);
* ``finished`` re-syncs the labels from the session, refreshes the drift review and clears
  :attr:`Sam2MedWidget.busy`.

Only one worker runs at a time (buttons are disabled while :attr:`busy`); **Cancel** sets an
event the session checks between slices, so propagation stops promptly and resumes later.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ._layers import display_limits, geometry_of
from ._measure_panel import MeasurePanel
from ._state import SegmentationState

AXES = ("axial", "coronal", "sagittal")

#: napari key (viewer key binding, free in every layer's keymap) for each prompt tool.
TOOL_KEYS = {"positive": "q", "negative": "w", "box": "r"}

#: Prefix of the model-list data of a loaded checkpoint file (its path follows).
CHECKPOINT_PREFIX = "checkpoint:"


def _ct_window_names() -> list[str]:
    from ..intensity import CT_WINDOWS

    return list(CT_WINDOWS)


def _describe_error(err: BaseException) -> str:
    """The whole message for the GUI: what went wrong on the first line, then what to do,
    worded for the widget (buttons, not Python calls or command-line flags)."""
    if isinstance(err, MemoryError) or "out of memory" in str(err).lower():
        return (
            "out of memory: close other volumes, choose a smaller model, or crop the image "
            f"({type(err).__name__}: {err})"
        )
    from ..errors import Sam2MedError

    urls = getattr(err, "urls", None)
    if isinstance(err, Sam2MedError) and urls is not None:  # weights not in the cache
        return "\n".join(
            [
                err.problem,
                f"Download {err.weights_file} ({err.checksum}) from",  # type: ignore[attr-defined]
                *(f"  {u}" for u in urls),
                "then press 'Import file…' and choose it: it is checked and copied to",
                f"  {err.target}",  # type: ignore[attr-defined]
                "and the model list shows it as cached from then on.",
            ]
        )
    text = str(err) or type(err).__name__
    return text if isinstance(err, Sam2MedError) else f"{type(err).__name__}: {text}"


def _first_sentence(text: str) -> str:
    """The first sentence of a licence text (the full text goes in a tooltip)."""
    head = text.split(". ", 1)[0].strip()
    return head if head.endswith(".") or len(head) == len(text.strip()) else head + "."


def _checkpoint_text(path: Path, model: Any) -> str:
    """Model-list entry of a loaded checkpoint file."""
    published = getattr(model, "published", None)
    what = f"published {published}" if published else "not a published checkpoint"
    return f"{path.name} | {model.image_size} px | {what}"


def _checkpoint_status(path: Path, model: Any) -> str:
    """What a checkpoint file is, in the status line: published or not (and what that means),
    and where its architecture came from."""
    device = getattr(model, "device", "cpu")
    published = getattr(model, "published", None)
    if published:
        return (
            f"loaded {path.name}: the published checkpoint of {published} (checksum verified), "
            f"{model.image_size} px, {device}"
        )
    sha = getattr(model, "sha256", None)
    digest = f" (sha256 {sha[:12]}…)" if sha else ""
    source = getattr(model, "arch_from", "") or ""
    if source.startswith("assumed: "):
        arch = f"shape of {source[len('assumed: ') :]} (assumed: if wrong, choose in Import file…)"
    elif source.startswith("registered model "):
        arch = source[len("registered model ") :]
    elif source:
        arch = source.replace("arch=", "").strip("'") + ", as chosen"
    else:
        arch = "its config.json"
    return (
        f"loaded {path.name}, {model.image_size} px, {device}: not a published "
        f"checkpoint{digest}, i.e. a fine-tune or a modified file, unverified; "
        f"architecture: {arch}"
    )


class Sam2MedWidget(QWidget):
    """Dock widget driving a :class:`~sam2_med.session.Session` on an Image layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        Injected by napari.
    model : LoadedModel, optional
        Use this model instead of loading one (tests, scripts).

    Attributes
    ----------
    state : SegmentationState
        Everything this widget knows about its viewer.
    """

    def __init__(self, napari_viewer: Any, model: Any = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = SegmentationState(viewer=napari_viewer)
        self._worker: Any = None
        self._slices_done = 0
        # the checkpoint file in use: (path, model-list text, the architecture it was given)
        self._checkpoint_entry: tuple[str, str, Any] | None = None
        self.checkpoint_dialog: CheckpointDialog | None = None
        self._build()
        self._connect_viewer()
        self._bind_keys()
        self._refresh_models()
        self._refresh_images()
        if model is not None:
            self.set_model(model)
        # make File > Open and drag-and-drop of NIfTI/NRRD/MHA use sam2-med (only for patterns
        # the user has not chosen a reader for)
        try:
            from ._reader import prefer_sam2med_reader

            added = prefer_sam2med_reader()
        except Exception:  # settings unavailable (e.g. read-only); opening still works
            added = []
        if added:
            _notify_info(
                f"sam2-med now opens {', '.join(added)} files (change it in Preferences > "
                "Plugins > file extension readers)"
            )

    # ------------------------------------------------------------------------------------ UI
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        inner = QWidget()
        scroll.setWidget(inner)
        outer.addWidget(scroll)
        root = QVBoxLayout(inner)

        # errors in full: the first line, and every detail one click away
        self.error_box = QFrame()
        self.error_box.setFrameShape(QFrame.Shape.StyledPanel)
        eb = QVBoxLayout(self.error_box)
        eb.setContentsMargins(4, 2, 4, 2)
        self.error_label = QLabel("")
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.setStyleSheet("color: #ff6b6b;")
        self.error_details = QLabel("")
        self.error_details.setWordWrap(True)
        self.error_details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_details_button = QPushButton("Details")
        self.error_details_button.setCheckable(True)
        self.error_close_button = QPushButton("Dismiss")
        row = QHBoxLayout()
        row.addWidget(self.error_details_button)
        row.addWidget(self.error_close_button)
        eb.addWidget(self.error_label)
        eb.addWidget(self.error_details)
        eb.addLayout(row)
        self.error_box.hide()
        self.error_details.hide()
        root.addWidget(self.error_box)

        model_box = QGroupBox("Model")
        mf = QFormLayout(model_box)
        self.model_combo = QComboBox()
        self.model_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.model_combo.setMinimumContentsLength(12)
        self.device_combo = QComboBox()
        self.device_combo.addItems(_devices())
        self.device_combo.setToolTip("where the next model load runs")
        self.load_button = QPushButton("Load model")
        self.import_button = QPushButton("Import file…")
        self.import_button.setToolTip(
            "load a local SAM 2 / SAM 2.1 / MedSAM2 checkpoint (.pt) and choose its "
            "architecture; a published checkpoint is recognised by its checksum"
        )
        self.model_status = QLabel("no model loaded")
        self.model_status.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.load_button)
        row.addWidget(self.import_button)
        mf.addRow("model", self.model_combo)
        mf.addRow("device", self.device_combo)
        mf.addRow(row)
        mf.addRow(self.model_status)
        root.addWidget(model_box)

        image_box = QGroupBox("Image")
        imf = QFormLayout(image_box)
        self.image_combo = QComboBox()
        self.axis_combo = QComboBox()
        self.axis_combo.addItems(AXES)
        self.axis_combo.setToolTip(
            "the plane of the slices the model propagates through; changing it starts a new "
            "session (asked first); the segmentation stays"
        )
        self.view_combo = QComboBox()
        self.view_combo.addItems(AXES)
        self.view_combo.setToolTip("the plane shown; changes nothing in the session")
        self.window_combo = QComboBox()
        self.window_combo.addItems(["auto", *_ct_window_names(), "dicom", "percentile"])
        self.window_combo.setToolTip(
            "intensity the model sees (and the display shows): auto = CT soft tissue or MR "
            "percentiles; CT presets in HU; dicom = the window stored in the file"
        )
        row = QHBoxLayout()
        row.addWidget(self.axis_combo)
        row.addWidget(QLabel("view"))
        row.addWidget(self.view_combo)
        imf.addRow("image", self.image_combo)
        imf.addRow("propagate", row)
        imf.addRow("window", self.window_combo)
        root.addWidget(image_box)

        obj_box = QGroupBox("Objects")
        of = QVBoxLayout(obj_box)
        self.object_list = QListWidget()
        self.object_list.setMaximumHeight(70)
        self.object_name = QLineEdit()
        self.object_name.setPlaceholderText("name, e.g. liver")
        self.add_object_button = QPushButton("Add")
        self.remove_object_button = QPushButton("Remove")
        row = QHBoxLayout()
        row.addWidget(self.object_name)
        row.addWidget(self.add_object_button)
        row.addWidget(self.remove_object_button)
        of.addWidget(self.object_list)
        of.addLayout(row)
        root.addWidget(obj_box)

        seg_box = QGroupBox("Segment")
        sf = QVBoxLayout(seg_box)
        seg_box.setToolTip(
            "Prompt a slice: click points in the 'sam2 prompts (+)' / '(-)' layers, draw a "
            "rectangle in 'sam2 box prompts', or paint the slice in the segmentation layer "
            "and press 'Use painted slice'."
        )
        self.positive_button = QPushButton(f"+ point [{TOOL_KEYS['positive'].upper()}]")
        self.negative_button = QPushButton(f"− point [{TOOL_KEYS['negative'].upper()}]")
        self.box_button = QPushButton(f"box [{TOOL_KEYS['box'].upper()}]")
        self.positive_button.setToolTip("click on the structure (keyboard: Q)")
        self.negative_button.setToolTip("click outside the structure (keyboard: W)")
        self.box_button.setToolTip("drag a rectangle around the structure (keyboard: R)")
        self.tool_group = QButtonGroup(self)
        row = QHBoxLayout()
        for b in (self.positive_button, self.negative_button, self.box_button):
            b.setCheckable(True)
            self.tool_group.addButton(b)
            row.addWidget(b)
        sf.addLayout(row)
        self.segment_button = QPushButton("Segment slice")
        self.mask_button = QPushButton("Painted → mask")
        self.mask_button.setToolTip(
            "send what is painted with the current object's label on the current slice as a "
            "mask prompt"
        )
        self.propagate_button = QPushButton("Propagate")
        self.update_button = QPushButton("Update")
        self.update_button.setToolTip("send new prompts, then re-propagate between anchors only")
        self.cancel_button = QPushButton("Cancel")
        self.undo_button = QPushButton("Undo")
        for pair in (
            (self.segment_button, self.mask_button),
            (self.propagate_button, self.update_button),
            (self.cancel_button, self.undo_button),
        ):
            row = QHBoxLayout()
            for b in pair:
                row.addWidget(b)
            sf.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        sf.addWidget(self.progress)
        sf.addWidget(self.status)
        root.addWidget(seg_box)

        review_box = QGroupBox("Review")
        rf = QVBoxLayout(review_box)
        self.review_summary = QLabel("no results yet")
        self.review_summary.setWordWrap(True)
        self.review_list = QListWidget()
        self.review_list.setMaximumHeight(80)
        self.next_suspicious_button = QPushButton("Next suspicious slice")
        self.next_suspicious_button.setToolTip(
            "low object score, or an area change of more than half from the previous slice"
        )
        rf.addWidget(self.review_summary)
        rf.addWidget(self.review_list)
        rf.addWidget(self.next_suspicious_button)
        root.addWidget(review_box)

        export_box = QGroupBox("Export")
        ef = QHBoxLayout(export_box)
        self.seg_checkbox = QCheckBox("also DICOM SEG")
        self.seg_checkbox.setToolTip("for images read from DICOM: <name>_seg.dcm next to the NIfTI")
        self.export_button = QPushButton("Export mask…")
        ef.addWidget(self.export_button)
        ef.addWidget(self.seg_checkbox)
        root.addWidget(export_box)
        # volume / RECIST per object, RECIST lines, RTSTRUCT and report (_measure_panel.py)
        self.measure_panel = MeasurePanel(self)
        root.addWidget(self.measure_panel)
        root.addStretch(1)
        # vertical scrolling only: the dock is as wide as the controls need
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._scroll, self._inner = scroll, inner
        self._fit_width()

        self.model_combo.currentIndexChanged.connect(self._on_model_selected)
        self.load_button.clicked.connect(self._on_load_clicked)
        self.import_button.clicked.connect(self._on_import_clicked)
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.axis_combo.currentTextChanged.connect(self._on_axis_changed)
        self.view_combo.currentTextChanged.connect(self._on_view_changed)
        self.positive_button.clicked.connect(lambda: self.use_tool("positive"))
        self.negative_button.clicked.connect(lambda: self.use_tool("negative"))
        self.box_button.clicked.connect(lambda: self.use_tool("box"))
        self.error_details_button.toggled.connect(self.error_details.setVisible)
        self.error_close_button.clicked.connect(self.clear_error)
        self.window_combo.currentTextChanged.connect(self._on_window_changed)
        self.device_combo.currentTextChanged.connect(self._on_device_changed)
        self.add_object_button.clicked.connect(lambda: self.add_object(self.object_name.text()))
        self.remove_object_button.clicked.connect(self._on_remove_clicked)
        self.object_list.currentRowChanged.connect(self._on_object_selected)
        self.segment_button.clicked.connect(lambda: self.segment_slice())
        self.mask_button.clicked.connect(lambda: self.use_painted_slice())
        self.propagate_button.clicked.connect(lambda: self.propagate())
        self.update_button.clicked.connect(lambda: self.update())
        self.cancel_button.clicked.connect(self.cancel)
        self.undo_button.clicked.connect(lambda: self.undo())
        self.next_suspicious_button.clicked.connect(self.next_suspicious)
        self.review_list.itemActivated.connect(self._on_review_item)
        self.review_list.itemClicked.connect(self._on_review_item)
        self.export_button.clicked.connect(self._on_export_clicked)
        self._update_enabled()

    def _fit_width(self) -> None:
        """The dock is as wide as the controls need (never clipped: there is no horizontal
        scrolling). Measured again when shown, once napari's stylesheet sets the fonts."""
        bar = self._scroll.verticalScrollBar().sizeHint().width()
        self._scroll.setMinimumWidth(self._inner.minimumSizeHint().width() + bar)

    def showEvent(self, event: Any) -> None:
        """Fit the width to the styled controls when the dock appears."""
        super().showEvent(event)
        self._fit_width()

    def _connect_viewer(self) -> None:
        events = self.viewer.layers.events
        events.inserted.connect(self._refresh_images)
        events.removed.connect(self._refresh_images)
        self.viewer.layers.selection.events.active.connect(self._sync_tool_buttons)

    def _bind_keys(self) -> None:
        """Q, W, R switch to positive points, negative points, box (free keys in every napari
        layer's keymap, so they work whichever layer is active)."""
        for tool, key in TOOL_KEYS.items():

            def handler(viewer: Any, tool: str = tool) -> None:
                self.use_tool(tool)

            self.viewer.bind_key(key, handler, overwrite=True)

    def _unbind_keys(self) -> None:
        for key in TOOL_KEYS.values():
            with contextlib.suppress(Exception):
                self.viewer.bind_key(key, None)

    # --------------------------------------------------------------------------- prompt tools
    def use_tool(self, tool: str) -> bool:
        """Make the prompt layer of ``tool`` (``"positive"``, ``"negative"``, ``"box"``) the
        active layer, ready to click or drag. Returns False without an image."""
        from ._state import BOX_LAYER, NEGATIVE_LAYER, POSITIVE_LAYER

        if self.state.volume is None:
            self._show_error("no image: open a CT/MR volume first")
            return False
        if self.state.current_label is None or self.state.current_label not in self.state.objects:
            self.add_object(activate=False)
        self.state.ensure_layers()
        self.state.update_prompt_display()
        name, mode = {
            "positive": (POSITIVE_LAYER, "add"),
            "negative": (NEGATIVE_LAYER, "add"),
            "box": (BOX_LAYER, "add_rectangle"),
        }[tool]
        layer = self.viewer.layers[name]
        self.viewer.layers.selection.active = layer
        layer.mode = mode
        self._sync_tool_buttons()
        return True

    def _sync_tool_buttons(self, *_: Any) -> None:
        from ._state import BOX_LAYER, NEGATIVE_LAYER, POSITIVE_LAYER

        active = self.viewer.layers.selection.active
        name = getattr(active, "name", None)
        button = {
            POSITIVE_LAYER: self.positive_button,
            NEGATIVE_LAYER: self.negative_button,
            BOX_LAYER: self.box_button,
        }.get(name)
        self.tool_group.setExclusive(False)
        for b in (self.positive_button, self.negative_button, self.box_button):
            b.setChecked(b is button)
        self.tool_group.setExclusive(True)

    # -------------------------------------------------------------------------------- errors
    def _show_error(self, message: str) -> None:
        """Show an error in full: a notification, and in the dock its first line with the rest
        behind "Details"."""
        head, _, rest = message.strip().partition("\n")
        self.error_label.setText(head)
        self.error_details.setText(rest.strip() or head)
        self.error_details_button.setChecked(False)
        self.error_details_button.setVisible(bool(rest.strip()))
        self.error_details.hide()
        self.error_box.show()
        _notify_error(message)

    def clear_error(self) -> None:
        """Hide the error panel."""
        self.error_box.hide()
        self.error_label.setText("")
        self.error_details.setText("")

    # ------------------------------------------------------------------------- public state
    @property
    def busy(self) -> bool:
        """True while a worker (model load, slice, propagation) runs."""
        return self.state.busy

    @property
    def slices_done(self) -> int:
        """Slice results received from the current (or last) worker."""
        return self._slices_done

    def _update_enabled(self) -> None:
        busy = self.state.busy
        ready = self.state.model is not None and self.state.volume is not None
        for b in (
            self.segment_button,
            self.mask_button,
            self.propagate_button,
            self.update_button,
            self.undo_button,
        ):
            b.setEnabled(ready and not busy)
        for b in (self.load_button, self.import_button, self.export_button):
            b.setEnabled(not busy)
        for w in (self.image_combo, self.axis_combo, self.window_combo, self.device_combo):
            w.setEnabled(not busy)
        for b in (self.positive_button, self.negative_button, self.box_button):
            b.setEnabled(self.state.volume is not None)
        self.cancel_button.setEnabled(busy)
        self.seg_checkbox.setEnabled(
            self.state.volume is not None and self.state.volume.provenance.format == "dicom"
        )
        self.measure_panel.update_enabled(busy)

    # ------------------------------------------------------------------------------ models
    def _refresh_models(self) -> None:
        self.model_combo.clear()
        try:
            choices = _model_choices()
        except Exception as err:  # torch/transformers missing or broken: say so, keep the UI
            _notify_error(f"models unavailable: {_describe_error(err)}")
            choices = []
        if self._checkpoint_entry is not None:  # the checkpoint file in use, before "custom…"
            path, text, _ = self._checkpoint_entry
            tip = f"{path}\nlicence: that of whoever published the file"
            choices.insert(len(choices) - 1, (CHECKPOINT_PREFIX + path, text, tip))
        for i, (name, text, licence) in enumerate(choices):
            self.model_combo.addItem(text, name)
            self.model_combo.setItemData(i, licence, Qt.ItemDataRole.ToolTipRole)
        self._on_model_selected(self.model_combo.currentIndex())

    def _on_model_selected(self, index: int) -> None:
        text = self.model_combo.itemText(index) if index >= 0 else ""
        self.model_combo.setToolTip(text.replace(" | ", "\n"))

    def set_model(self, model: Any, *, checkpoint: str | os.PathLike[str] | None = None) -> None:
        """Use an already loaded model (a :class:`~sam2_med.models.LoadedModel`).

        Parameters
        ----------
        model : LoadedModel
        checkpoint : path-like, optional
            The file it was loaded from: the model list then shows that file, selected, and
            the status says whether it is a published checkpoint.
        """
        self.state.set_model(model)
        selected = self.model_combo.currentIndex()
        if checkpoint is not None:
            text = _checkpoint_text(Path(checkpoint), model)
            self._checkpoint_entry = (os.fspath(checkpoint), text, None)
        self._refresh_models()  # an import may have put weights in the cache
        if checkpoint is not None:
            selected = self.model_combo.findData(CHECKPOINT_PREFIX + os.fspath(checkpoint))
        self.model_combo.setCurrentIndex(max(0, min(selected, self.model_combo.count() - 1)))
        licence = str(getattr(model, "licence", "?"))
        device = getattr(model, "device", "cpu")
        if checkpoint is not None:
            status = _checkpoint_status(Path(checkpoint), model)
        else:
            status = f"loaded: {model.name}, {model.image_size} px, {device}"
        short = "its publisher's" if licence.startswith("unknown") else _first_sentence(licence)
        self.model_status.setText(f"{status}; licence: {short}")
        self.model_status.setToolTip(f"licence: {licence}")
        self.clear_error()
        self._update_enabled()

    def _on_device_changed(self, device: str) -> None:
        self.state.device = device

    def _on_load_clicked(self) -> None:
        name = self.model_combo.currentData()
        if not name:
            self._on_import_clicked()
            return
        if str(name).startswith(CHECKPOINT_PREFIX):  # reload it, with the architecture it had
            path = str(name)[len(CHECKPOINT_PREFIX) :]
            entry = self._checkpoint_entry
            self.import_checkpoint(path, arch=entry[2] if entry and entry[0] == path else None)
            return
        self.load_model(name)

    def load_model(
        self, name: str | None = None, *, checkpoint: str | None = None, arch: Any = None
    ) -> None:
        """Load a registered model or a local checkpoint in a worker, then use it.

        Parameters
        ----------
        name : str, optional
            Registry name (see :func:`sam2_med.models.list_models`).
        checkpoint : str, optional
            A local Meta SAM 2 / MedSAM2 checkpoint file.
        arch : dict, optional
            Architecture of a non-standard checkpoint (see ``sam2_med.models.load_model``).
        """
        device = self.state.device

        def job() -> Any:
            from ..models import load_model

            kwargs: dict[str, Any] = {"device": device}
            if checkpoint is not None:
                kwargs["checkpoint"] = checkpoint
            if arch is not None:
                kwargs["arch"] = arch
            return load_model(name, **kwargs)

        self.model_status.setText("loading…")
        self._run(
            job,
            generator=False,
            on_return=self.set_model,
            on_fail=self._model_load_failed,
            what="loading the model",
        )

    def _on_import_clicked(self) -> None:
        """Open the checkpoint dialog (file and architecture); loading starts on OK."""
        dialog = CheckpointDialog(self)

        def accepted() -> None:
            try:
                arch = dialog.architecture()
            except Exception as err:  # an unreadable architecture JSON
                self._show_error(_describe_error(err))
                return
            self.import_checkpoint(dialog.path(), arch=arch)

        dialog.accepted.connect(accepted)
        self.checkpoint_dialog = dialog
        dialog.open()

    def import_checkpoint(
        self, path: str | os.PathLike[str], *, name: str | None = None, arch: Any = None
    ) -> None:
        """Load a local checkpoint file (in a worker) and use it.

        Parameters
        ----------
        path : path-like
            A Meta-format SAM 2 / SAM 2.1 / MedSAM2 ``.pt`` file.
        name : str, optional
            The registered model it is. The file is imported into the weight cache
            (:func:`sam2_med.models.import_weights` checks its published checksum) and loaded
            from there, so next time it is "cached". A file that fails the checksum (a
            fine-tune) is loaded straight from the file with that model's architecture.
        arch : str or dict, optional
            The architecture of a file that is not a published checkpoint: a registered model
            name (``"medsam2"``) or architecture keys (``load_model(arch=...)``). Without
            ``name`` and ``arch`` a published file is recognised by its checksum, any other
            file gets the architecture of the registered model it fits; the status line says
            which, and whether the file is a published checkpoint.
        """
        path = os.fspath(path)
        device = self.state.device

        def job() -> Any:
            import warnings

            from ..errors import Sam2MedError, Sam2MedWarning
            from ..models import CheckpointError, ChecksumError, import_weights, load_model

            try:
                with warnings.catch_warnings():  # the status line says what was assumed
                    warnings.simplefilter("ignore", Sam2MedWarning)
                    if name and arch is None:
                        try:
                            import_weights(path, name)
                        except ChecksumError:
                            return load_model(checkpoint=path, arch=name, device=device)
                        return load_model(name, device=device)
                    return load_model(checkpoint=path, arch=arch, device=device)
            except CheckpointError as err:
                if "architecture" not in err.problem:
                    raise
                what = err.problem.split("; ")[0]
                raise Sam2MedError(
                    f"{what}; choose its architecture in 'Import file…' (a registered model, "
                    "or an architecture JSON file)",
                    err.path,
                ) from None

        def loaded(model: Any) -> None:
            self.set_model(model, checkpoint=path)
            if self._checkpoint_entry is not None:
                self._checkpoint_entry = (*self._checkpoint_entry[:2], arch)

        self.model_status.setText("loading the checkpoint…")
        self._run(
            job,
            generator=False,
            on_return=loaded,
            on_fail=self._model_load_failed,
            what="loading the checkpoint",
        )

    def _model_load_failed(self) -> None:
        model = self.state.model
        self.model_status.setText(
            f"loading failed; still using {model.name}" if model else "loading failed; no model"
        )

    # ------------------------------------------------------------------------------- image
    def _refresh_images(self, *_: Any) -> None:
        current = self.state.image_layer
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        images = [
            layer
            for layer in self.viewer.layers
            if type(layer).__name__ == "Image" and np.ndim(layer.data) == 3
        ]
        images.sort(key=lambda lay: geometry_of(lay.metadata) is None)
        for layer in images:
            self.image_combo.addItem(layer.name, layer)
        self.image_combo.blockSignals(False)
        if current is not None and current in images:
            self.image_combo.setCurrentIndex(images.index(current))
        elif images:
            self.image_combo.setCurrentIndex(0)
            self._on_image_changed(0)
        else:
            self.state.set_image(None)
            self._update_enabled()

    def _on_image_changed(self, index: int) -> None:
        layer = self.image_combo.itemData(index) if index >= 0 else None
        if layer is self.state.image_layer:
            return
        try:
            self.state.set_image(layer)
        except Exception as err:
            self._show_error(_describe_error(err))
            self.state.set_image(None)
        if self.state.volume is not None:
            self.state.show_axis()
            self._apply_window()
        self._update_enabled()

    def _on_axis_changed(self, axis: str) -> None:
        """A new propagation axis starts a new session: asked first when the current one holds
        work (anchors); "No" keeps everything as it was. The segmentation always stays."""
        old = self.state.axis
        if axis == old:
            return
        session = self.state.session
        has_work = session is not None and any(
            self.state.anchors(label) for label in self.state.objects
        )
        if has_work:
            answer = QMessageBox.question(
                self,
                "Change the propagation axis?",
                f"Propagating through {axis} slices starts a new session: the prompts, anchors "
                f"and undo history of the current {old} session are discarded. The "
                "segmentation in the layer stays, and each object keeps it until you prompt "
                "that object again.\n\nStart a new session?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                QMessageBox.StandardButton.No,
            )
            if answer != QMessageBox.StandardButton.Yes:
                self.axis_combo.blockSignals(True)
                self.axis_combo.setCurrentText(old)
                self.axis_combo.blockSignals(False)
                return
        self.state.axis = axis
        self.state.reset_session(keep_labels=True)
        if self.state.volume is not None:
            self.view_combo.setCurrentText(axis)  # show the slices now propagated through
            self.state.show_axis()
        self._refresh_objects()
        self.refresh_review()

    def _on_view_changed(self, plane: str) -> None:
        """Show another plane; the session (prompts, anchors, undo, resume) is untouched."""
        self.state.view = plane
        if self.state.volume is not None:
            self.state.show_axis()

    def _on_window_changed(self, window: str) -> None:
        self.state.window = window
        self.state.reset_session(keep_labels=True)  # a new session; the segmentation stays
        self._apply_window()

    def _apply_window(self) -> None:
        """The image's contrast limits follow the CT window preset."""
        layer, vol = self.state.image_layer, self.state.volume
        if layer is None or vol is None:
            return
        try:
            limits = display_limits(vol, self.state.window)
        except ValueError as err:  # e.g. "dicom" on an image without a stored window
            self._show_error(_describe_error(err))
            return
        layer.contrast_limits = list(limits)

    # ----------------------------------------------------------------------------- objects
    def add_object(self, name: str | None = None, *, activate: bool = True) -> int:
        """Add an object (structure) and make it current; returns its label value.

        With an image open, the prompt layers exist afterwards and (``activate``) the positive
        points layer is active in add mode: the next click on the image is a prompt.
        """
        entry = self.state.add_object((name or "").strip() or None)
        self.object_name.clear()
        if self.state.volume is not None:
            self.state.ensure_layers()
            self.state.update_prompt_display()
        self._refresh_objects()
        if activate and self.state.volume is not None:
            self.use_tool("positive")
        return entry.label

    def _on_remove_clicked(self) -> None:
        """Remove the current object after the user confirms, told how many voxels go."""
        label = self.state.current_label
        if label is None or label not in self.state.objects:
            return
        entry = self.state.objects[label]
        arr = self.state.labels_array
        voxels = int(np.count_nonzero(arr == label)) if arr is not None else 0
        anchors = self.state.anchors(label)
        answer = QMessageBox.question(
            self,
            "Remove object?",
            f"Remove {entry.name!r} (label {label})?\n\nIts {voxels:,} voxels are cleared from "
            f"the segmentation, and its prompts{' and ' + str(len(anchors)) + ' anchor slices' if anchors else ''} "
            "are dropped. This cannot be undone.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        self.state.remove_object(label)
        self._refresh_objects()
        self.refresh_review()

    def _refresh_objects(self) -> None:
        self.object_list.blockSignals(True)
        self.object_list.clear()
        for entry in self.state.objects.values():
            text = f"● {entry.name}  (label {entry.label})"
            anchors = self.state.anchors(entry.label)
            if anchors and self.state.volume is not None:
                numbers = sorted(self.state.slider_number(k) for k in anchors)
                text += f"  anchors: {', '.join(map(str, numbers))}"
            item = QListWidgetItem(text)
            item.setToolTip("anchors: the prompted slices, numbered as napari's slider shows them")
            item.setData(Qt.ItemDataRole.UserRole, entry.label)
            rgba = self.state.colour_of(entry.label)
            if rgba is not None:
                item.setForeground(QColor.fromRgbF(*rgba))
            self.object_list.addItem(item)
            if entry.label == self.state.current_label:
                self.object_list.setCurrentItem(item)
        self.object_list.blockSignals(False)
        self.measure_panel.decorate(self.object_list)
        self._select_label(self.state.current_label)

    def _on_object_selected(self, row: int) -> None:
        item = self.object_list.item(row)
        if item is not None:
            self.state.set_current(int(item.data(Qt.ItemDataRole.UserRole)))
            self._select_label(self.state.current_label)
            self.refresh_review()
            self.measure_panel.show_current()

    def _select_label(self, label: int | None) -> None:
        if label is not None and self.state.labels_layer is not None:
            self.state.labels_layer.selected_label = label

    def _current_label(self) -> int:
        if self.state.current_label is None or self.state.current_label not in self.state.objects:
            self.add_object(activate=False)
        return int(self.state.current_label)  # type: ignore[arg-type]

    # --------------------------------------------------------------------------- segmenting
    def _prepare(self) -> Any:
        """Session and layers ready, current object registered; errors become notifications."""
        session = self.state.ensure_session()
        label = self._current_label()
        self._refresh_objects()
        return session, label

    def segment_slice(self) -> bool:
        """Send the pending point/box prompts for the current object; preview their slices.

        Returns
        -------
        bool
            Whether a worker was started.
        """
        try:
            session, label = self._prepare()
        except Exception as err:
            self._show_error(_describe_error(err))
            return False
        prompts = self.state.collect_prompts()
        if not prompts:
            _notify_warning("add points or a box on a slice first")
            self.use_tool("positive")
            return False
        if not _one_box_per_slice(prompts):
            return False
        self.state.mark_prompts_sent()  # they stay on screen, and are not sent twice

        def job() -> Iterator[Any]:
            yield from _send_prompts(session, label, prompts)

        self._run(job, what="segmenting the slice", total=len(prompts))
        return True

    def use_painted_slice(self) -> bool:
        """Send the current slice of the segmentation layer, for the current object, as a mask."""
        try:
            session, label = self._prepare()
        except Exception as err:
            self._show_error(_describe_error(err))
            return False
        k = self.state.current_slice()
        mask = self.state.painted_mask(k, label)
        if not mask.any():
            _notify_warning(f"nothing painted with label {label} on slice {k}")
            return False

        def job() -> Iterator[Any]:
            res = session.add_prompts(label, mask=mask, slice_index=k)
            if res is not None:
                yield res

        self._run(job, what="using the painted mask", total=1)
        return True

    def propagate(self) -> bool:
        """Propagate all objects both ways from their anchors, streaming slices into the layer."""
        try:
            session = self.state.ensure_session()
        except Exception as err:
            self._show_error(_describe_error(err))
            return False
        return self._propagate_with(session, [])

    def update(self) -> bool:
        """Send new prompts (if any), then re-propagate; the session re-runs only between anchors."""
        try:
            session, label = self._prepare()
        except Exception as err:
            self._show_error(_describe_error(err))
            return False
        prompts = self.state.collect_prompts()
        if not _one_box_per_slice(prompts):
            return False
        self.state.mark_prompts_sent()
        return self._propagate_with(session, prompts, label)

    def _propagate_with(self, session: Any, prompts: list[Any], label: int | None = None) -> bool:
        cancel = self.state.cancel_event

        def job() -> Iterator[Any]:
            if prompts:
                yield from _send_prompts(session, label, prompts)
            # closing() makes sure the session hears about an early stop, so it can suspend
            # the unfinished run and resume it later instead of planning everything again
            with contextlib.closing(session.propagate(cancel=cancel.is_set)) as results:
                for res in results:
                    yield res
                    if cancel.is_set():
                        return

        self._run(job, what="propagating", total=self.state.n_slices(), sync=True)
        return True

    def cancel(self) -> None:
        """Stop the running propagation after the current slice (resume with Propagate).

        Only an event is set: the session polls it before each slice and suspends its run
        cleanly. (Quitting the worker would abandon the generator mid-run, and the session
        could not tell the run apart from one still going.)
        """
        self.state.cancel_event.set()
        self.status.setText("cancelling…")

    def undo(self) -> bool:
        """Undo the last prompt or correction in the session, and show the result."""
        if self.state.session is None:
            _notify_warning("nothing to undo")
            return False
        session = self.state.session

        def job() -> bool:
            return bool(session.undo())

        def done(undone: bool) -> None:
            if not undone:
                _notify_info("nothing left to undo")

        self._run(job, generator=False, what="undoing", sync=True, on_return=done)
        return True

    def closeEvent(self, event: Any) -> None:
        """Closing the dock stops a running propagation at the next slice."""
        if self.state.busy:
            self.cancel()
        self._unbind_keys()
        super().closeEvent(event)

    # ------------------------------------------------------------------------------ worker
    def _run(
        self,
        func: Callable[[], Any],
        *,
        generator: bool = True,
        what: str,
        total: int | None = None,
        sync: bool = False,
        on_return: Callable[[Any], None] | None = None,
        on_fail: Callable[[], None] | None = None,
    ) -> None:
        from napari.qt.threading import create_worker

        if self.state.busy:
            _notify_warning("busy: wait for the running job or cancel it")
            return
        self.state.busy = True
        self.state.cancel_event.clear()
        self._slices_done = 0
        self.progress.setRange(0, total or 0)
        self.progress.setValue(0)
        self.status.setText(f"{what}…")
        if sync:
            self.review_summary.setText(f"{what}… (the review updates when it ends)")
            self.review_list.clear()
        self._update_enabled()
        # errors are handled by on_error (a notification), not re-raised in the event loop
        progress = {"total": total, "desc": what} if generator and total else None
        worker = create_worker(func, _start_thread=False, _ignore_errors=True, _progress=progress)
        failed: list[BaseException] = []

        def on_yield(result: Any) -> None:
            self._slices_done += 1
            self.state.apply_result(result)
            self.state.refresh_labels()
            if total:
                self.progress.setValue(min(self._slices_done, total))
            self.status.setText(f"{what}: slice {result.slice_index} ({self._slices_done} done)")

        def on_error(err: BaseException) -> None:
            failed.append(err)
            self._show_error(f"{what} failed: {_describe_error(err)}")

        def on_returned(value: Any) -> None:
            if on_return is not None and value is not None:
                on_return(value)

        def on_finished() -> None:
            try:
                if sync and not failed:
                    self.state.sync_from_session()
                self.refresh_review()
                self._refresh_objects()  # anchors
                if generator or sync:  # the labels changed: measure them again
                    self.measure_panel.refresh()
            except Exception as err:  # never let a callback take the viewer down
                self._show_error(_describe_error(err))
            cancelled = self.state.cancel_event.is_set()
            self.status.setText(
                f"{what}: failed"
                if failed
                else f"{what}: cancelled"
                if cancelled
                else f"{what}: done"
            )
            if not failed and not cancelled and total:
                self.progress.setValue(total)
            if not total:  # leave the busy animation: a finished (or failed) one-step job
                self.progress.setRange(0, 1)
                self.progress.setValue(0 if failed else 1)
            if failed and on_fail is not None:
                on_fail()
            self._worker = None
            self.state.busy = False
            self._update_enabled()

        if generator:
            worker.yielded.connect(on_yield)
        worker.returned.connect(on_returned)
        worker.errored.connect(on_error)
        worker.finished.connect(on_finished)
        self._worker = worker
        worker.start()

    # ------------------------------------------------------------------------------ review
    def refresh_review(self) -> None:
        """Show the current object's per-slice confidence profile and suspicious slices."""
        self.review_list.clear()
        label = self.state.current_label
        if label is None or self.state.volume is None or self.state.labels_array is None:
            self.review_summary.setText("no results yet")
            return
        scores, areas = self.state.profile(label)
        done = np.flatnonzero(areas >= 0)
        if not len(done):
            self.review_summary.setText("no results yet for this object")
            return
        sus = set(self.state.suspicious_slices(label))
        finite = np.isfinite(scores[done])
        low = done[finite][np.argmin(scores[done][finite])] if finite.any() else None
        # slice numbers as napari's slider shows them (voxel index k in brackets: they differ
        # when the slices are stored against the slider's direction)
        number = {int(k): self.state.slider_number(int(k)) for k in done}
        lo, hi = min(number.values()), max(number.values())
        text = f"{len(done)} slices segmented ({lo}–{hi}); {len(sus)} suspicious"
        if low is not None:
            text += f"; lowest score {scores[low]:.2f} at slice {number[int(low)]}"
        self.review_summary.setText(text)
        for k in sorted(done, key=lambda k: number[int(k)]):
            flag = "⚠ " if k in sus else "   "
            item = QListWidgetItem(
                f"{flag}slice {number[int(k)]} (k={k}): score {scores[k]:.2f}, area {areas[k]} px"
            )
            item.setData(Qt.ItemDataRole.UserRole, int(k))
            self.review_list.addItem(item)

    def next_suspicious(self) -> int | None:
        """Go to the next suspicious slice after the current one (wrapping); returns it."""
        label = self.state.current_label
        if label is None or self.state.volume is None:
            return None
        sus = self.state.suspicious_slices(label)
        if not sus:
            _notify_info("no suspicious slices for this object")
            return None
        here = self.state.current_slice()
        later = [k for k in sus if k > here]
        k = later[0] if later else sus[0]
        self.state.go_to_slice(k)
        return k

    def _on_review_item(self, item: QListWidgetItem) -> None:
        k = item.data(Qt.ItemDataRole.UserRole)
        if k is not None:
            self.state.go_to_slice(int(k))

    # ------------------------------------------------------------------------------ export
    def _on_export_clicked(self) -> None:
        if self.state.volume is None or self.state.labels_array is None:
            self._show_error("nothing to export yet: segment or paint an object first")
            return
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Export mask on the image grid",
            "",
            "NIfTI (*.nii.gz *.nii)",
            options=QFileDialog.Option.DontConfirmOverwrite,
        )
        if not path:
            return
        if not path.lower().endswith((".nii.gz", ".nii")):
            path += ".nii.gz"
        existing = [(p, what) for p, what in self._export_targets(path) if Path(p).exists()]
        overwrite = False
        if existing:
            answer = QMessageBox.question(
                self,
                "Replace files?",
                "These files exist and would be replaced:\n"
                + "\n".join(f"{p}  ({what})" for p, what in existing)
                + "\n\nReplace them?",
            )
            if answer != QMessageBox.StandardButton.Yes:
                return
            overwrite = True
        self.export(path, overwrite=overwrite)

    def _export_targets(self, path: str) -> list[tuple[str, str]]:
        """(path, what it is) of every file an export to ``path`` writes."""
        from ..io.writers import sidecar_path

        targets = [
            (path, "the mask"),
            (str(sidecar_path(Path(path))), "its sidecar: label names and the run record"),
        ]
        if self.seg_checkbox.isChecked() and self.seg_checkbox.isEnabled():
            targets.append((_seg_path(path), "the DICOM SEG"))
        return targets

    def export(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        dicom_seg: bool | None = None,
    ) -> list[str]:
        """Write the segmentation on the image's voxel grid; returns the paths written.

        Parameters
        ----------
        path : path-like
            ``.nii.gz`` or ``.nii``.
        overwrite : bool
            Replace existing files. Default: refuse (the error is shown).
        dicom_seg : bool, optional
            Also write ``<name>_seg.dcm`` (DICOM sources only). Defaults to the checkbox.
        """
        from ..io.writers import save_outputs
        from ..labels import LabelVolume

        vol, arr = self.state.volume, self.state.labels_array
        if vol is None or arr is None:
            self._show_error("nothing to export yet: segment or paint an object first")
            return []
        if dicom_seg is None:
            dicom_seg = self.seg_checkbox.isChecked() and self.seg_checkbox.isEnabled()
        names = {e.label: e.name for e in self.state.objects.values()}
        labels = LabelVolume(
            np.ascontiguousarray(arr),
            vol,
            names={int(v): names.get(int(v), f"label_{v}") for v in np.unique(arr) if v},
            extra=_run_record(self.state, arr),
        )
        written: list[str] = []
        try:
            # mask, sidecar and SEG as one unit
            written = [
                str(p)
                for p in save_outputs(
                    labels,
                    vol,
                    mask=path,
                    dicom_seg=_seg_path(os.fspath(path)) if dicom_seg else None,
                    overwrite=overwrite,
                )
            ]
        except Exception as err:
            self._show_error(f"export failed: {_describe_error(err)}")
        if written:
            self.state.last_export = written
            self.status.setText("exported: " + ", ".join(Path(p).name for p in written))
            _notify_info("exported " + ", ".join(written))
        return written


# ------------------------------------------------------------------------- checkpoint dialog
class CheckpointDialog(QDialog):
    """Choose a checkpoint file and its architecture.

    The architecture choices: recognise it from the file (a published checkpoint by its
    SHA-256, any other file by the registered model whose shape it has), a registered model
    (each with its input size; e.g. medsam2 for a MedSAM2 fine-tune), or an architecture JSON
    file. The note says what "published" means for the weights.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Load a SAM 2 / MedSAM2 checkpoint")
        self._json: str | None = None
        form = QFormLayout(self)
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("a .pt file (Meta SAM 2 / SAM 2.1 / MedSAM2 format)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path_edit)
        row.addWidget(browse)
        form.addRow("file", row)
        self.arch_combo = QComboBox()
        self.arch_combo.addItem("recognise from the file (published checksum, else its shape)", "")
        try:
            from ..models import get_spec, list_models

            for name in list_models():
                spec = get_spec(name)
                self.arch_combo.addItem(f"{name} ({spec.image_size} px, {spec.licence})", name)
        except Exception:  # the model list is unavailable: recognition and JSON remain
            pass
        self.arch_combo.addItem("architecture JSON file…", "json")
        self.arch_combo.activated.connect(self._on_arch_chosen)
        form.addRow("architecture", self.arch_combo)
        note = QLabel(
            "A published checkpoint (Meta's SAM 2 / 2.1 files) is recognised by its SHA-256 "
            "whatever its name, and its weights are verified. Any other file (a fine-tune, "
            "MedSAM2, a modified file) cannot be verified: it is loaded with the architecture "
            "chosen here, or the registered model whose shape it has."
        )
        note.setWordWrap(True)
        form.addRow(note)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.ok_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Load")
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Checkpoint file", "", "Checkpoints (*.pt *.pth *.safetensors);;All files (*)"
        )
        if path:
            self.path_edit.setText(path)

    def _on_arch_chosen(self, index: int) -> None:
        if self.arch_combo.itemData(index) == "json":
            path, _ = QFileDialog.getOpenFileName(
                self, "Architecture JSON", "", "JSON (*.json);;All files (*)"
            )
            if path:
                self._json = path
                self.arch_combo.setItemText(index, f"architecture JSON: {Path(path).name}")
            else:
                self.arch_combo.setCurrentIndex(0)

    def _accept(self) -> None:
        if not self.path_edit.text().strip():
            self.path_edit.setFocus()
            return
        self.accept()

    def path(self) -> str:
        """The checkpoint file chosen."""
        return self.path_edit.text().strip()

    def architecture(self) -> Any:
        """``None`` (recognise), a registered model name, or the dict of the JSON file."""
        data = self.arch_combo.currentData()
        if data == "json" and self._json:
            from ..api import read_arch

            return read_arch(self._json)
        return data or None


# ---------------------------------------------------------------------------------- helpers
def _one_box_per_slice(prompts: list[Any]) -> bool:
    """False (and an error shown) when a slice has several boxes: SAM 2 takes one per slice."""
    boxes = [p.slice_index for p in prompts if p.kind == "box"]
    dup = sorted({k for k in boxes if boxes.count(k) > 1})
    if dup:
        _notify_error(
            f"slice {dup[0]} has {boxes.count(dup[0])} boxes: SAM 2 takes one box per slice "
            "and object; delete the extra ones (add points to refine a box)"
        )
        return False
    return True


def _send_prompts(session: Any, label: int | None, prompts: list[Any]) -> Iterator[Any]:
    """All of a slice's prompts in one :meth:`Session.add_prompts` call (its box and points,
    decoded together as the API and the command line send them), slice by slice, each
    yielding its SliceResult."""
    slices = sorted({p.slice_index for p in prompts})
    for k in slices:
        here = [p for p in prompts if p.slice_index == k]
        box = next(((p.points[0], p.points[1]) for p in here if p.kind == "box"), None)
        pts = [p for p in here if p.kind == "points"]
        points = np.concatenate([p.points for p in pts]) if pts else None
        labels = np.concatenate([p.point_labels for p in pts]) if pts else None
        res = session.add_prompts(label, points=points, point_labels=labels, box=box)
        if res is not None:
            yield res


def _run_record(state: Any, array: np.ndarray) -> dict[str, Any]:
    """The sidecar's run record of an export: the session's interaction log (which
    ``sam2-med segment IMAGE --prompts MASK.json`` replays) and whether the exported labels
    are exactly the session's (painting in the layer after the session is not recorded).
    Without a live session: the record the layer keeps from the last one, if any."""
    from ..labels import RUN_RECORD_KEY
    from ._layers import export_run_record, stored_run_record

    session = state.session
    if session is None or not hasattr(session, "label_map"):
        layer = state.labels_layer
        return stored_run_record(getattr(layer, "metadata", None), array)
    lm = session.label_map()
    same = lm.array.shape == array.shape and bool(np.array_equal(lm.array, array))
    return export_run_record(lm.extra[RUN_RECORD_KEY], same)


def _seg_path(path: str) -> str:
    lower = path.lower()
    for suffix in (".nii.gz", ".nii"):
        if lower.endswith(suffix):
            return path[: -len(suffix)] + "_seg.dcm"
    return path + "_seg.dcm"


def _devices() -> list[str]:
    out = ["cpu"]
    try:
        import torch

        if torch.cuda.is_available():
            out.append("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            out.append("mps")
    except ImportError:
        pass
    return out


def _model_choices() -> list[tuple[str | None, str, str]]:
    """(name, "name | size, px | licence | weights", licence text) per registered model.

    The last entry (name ``None``) stands for a checkpoint file of any architecture.
    """
    from ..models import cached_weights, get_spec, list_models

    try:
        cached = {e.name: e.status for e in cached_weights()}
    except Exception:  # an unreadable cache must not hide the model list
        cached = {}
    out: list[tuple[str | None, str, str]] = []
    for name in list_models():
        spec = get_spec(name)
        status = cached.get(name)
        weights = f"weights: {status}" if status else "weights: not downloaded"
        text = f"{name} | {spec.size}, {spec.image_size} px | {spec.licence} | {weights}"
        out.append((name, text, spec.licence_text))
    out.append((None, "custom checkpoint file…", "the licence of whoever published the file"))
    return out


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def _notify_warning(message: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(message)


def _notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)
