"""The widget as a radiologist uses it: clicks, keys and dialogs (issue 11, items 1 to 8).

Each test drives the dock widget through its buttons, combo boxes, napari key bindings and the
dialogs it opens (answered by clicking their buttons), on a small synthetic MR volume with a
tiny random model. Masks mean nothing; the tests are about what the user can do and see.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QMessageBox

pytestmark = pytest.mark.gui

WIDGET = "SAM 2 volume segmentation"
TIMEOUT_MS = 120_000
LEFT = Qt.MouseButton.LeftButton


def _open(make_napari_viewer, path, *, show=True):
    viewer = make_napari_viewer(show=show)
    viewer.open(path, plugin="sam2-med")
    _, widget = viewer.window.add_plugin_dock_widget("sam2-med", WIDGET)
    return viewer, widget


def _click(qtbot, button):
    qtbot.waitUntil(button.isVisible, timeout=5000)  # a new dock shows after the event loop runs
    assert button.isEnabled(), button.text()
    qtbot.mouseClick(button, LEFT)


def _key(qtbot, viewer, key):
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, key)


def _click_on_voxel(viewer, layer, state, ijk, MouseEvent):
    """A left click through napari's own mouse bindings of ``layer`` at voxel ``ijk``."""
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    state.go_to_slice(int(ijk[state.axis_index()]))
    position = state.geometry.voxel_to_world(np.asarray(ijk, float))
    for kind, callbacks in (
        ("mouse_press", mouse_press_callbacks),
        ("mouse_release", mouse_release_callbacks),
    ):
        event = MouseEvent(
            type=kind,
            position=tuple(position),
            pos=np.array([10, 10]),
            dims_displayed=tuple(viewer.dims.displayed),
        )
        callbacks(layer, ReadOnlyWrapper(event))


def _wait(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)


@pytest.fixture
def errors(monkeypatch):
    got: list[str] = []
    monkeypatch.setattr("sam2_med.napari_plugin._widget._notify_error", got.append)
    return got


# ---------------------------------------------------------------------------------- item 1
def test_after_add_object_the_user_is_ready_to_click(
    make_napari_viewer, qtbot, small_mr, tiny_model, errors, MouseEvent
):
    from sam2_med.napari_plugin._state import BOX_LAYER, NEGATIVE_LAYER, POSITIVE_LAYER

    viewer, widget = _open(make_napari_viewer, small_mr)
    widget.set_model(tiny_model)
    qtbot.keyClicks(widget.object_name, "liver")
    _click(qtbot, widget.add_object_button)
    positive = viewer.layers[POSITIVE_LAYER]
    assert viewer.layers.selection.active is positive and positive.mode == "add"
    assert widget.positive_button.isChecked()

    # negative points and the box: one click, or one key, away
    _click(qtbot, widget.negative_button)
    assert viewer.layers.selection.active is viewer.layers[NEGATIVE_LAYER]
    assert viewer.layers[NEGATIVE_LAYER].mode == "add"
    _click(qtbot, widget.box_button)
    assert viewer.layers.selection.active is viewer.layers[BOX_LAYER]
    assert viewer.layers[BOX_LAYER].mode == "add_rectangle"
    for key, name, mode in (
        (Qt.Key.Key_W, NEGATIVE_LAYER, "add"),
        (Qt.Key.Key_R, BOX_LAYER, "add_rectangle"),
        (Qt.Key.Key_Q, POSITIVE_LAYER, "add"),
    ):
        _key(qtbot, viewer, key)
        assert viewer.layers.selection.active is viewer.layers[name], key
        assert viewer.layers[name].mode == mode
    for button, key in ((widget.positive_button, "Q"), (widget.negative_button, "W"),
                        (widget.box_button, "R")):  # fmt: skip
        assert f"[{key}]" in button.text()

    # click on the structure, segment: the point stays on screen, the slice is an anchor
    state = widget.state
    k = 8
    _click_on_voxel(viewer, positive, state, (24, 20, k), MouseEvent)
    assert len(positive.data) == 1
    _click(qtbot, widget.segment_button)
    _wait(qtbot, widget)
    assert not errors, errors
    assert len(positive.data) == 1 and positive.visible and positive.shown.all()
    assert state.session.anchors(1) == (k,)
    item = widget.object_list.item(0).text()
    assert "liver" in item and f"anchors: {state.slider_number(k)}" in item
    assert state.collect_prompts() == []  # the shown point was sent: not sent twice

    # a second object: the first one's points are kept but not shown
    _click(qtbot, widget.add_object_button)
    assert viewer.layers.selection.active is positive and positive.mode == "add"
    assert len(positive.data) == 1 and not positive.shown.any()
    widget.object_list.setCurrentRow(0)
    assert positive.shown.all()


# ---------------------------------------------------------------------------------- item 2
def test_the_reader_alone_gives_the_radiological_layout(make_napari_viewer, small_mr):
    viewer = make_napari_viewer()
    [layer] = viewer.open(small_mr, plugin="sam2-med")
    # slider on z (axial slices), rows y with anterior up, columns x with the patient's
    # right on the screen's left: no dock widget needed
    assert tuple(viewer.dims.order) == (2, 1, 0)
    camera = viewer.camera
    assert tuple(str(getattr(o, "value", o)) for o in camera.orientation2d) == ("up", "left")
    assert viewer.dims.point[2] == pytest.approx(float(np.mean(layer.extent.world[:, 2])), abs=3.0)


# ---------------------------------------------------------------------------------- item 3
def test_remove_asks_first_and_shows_the_voxel_count(
    make_napari_viewer, qtbot, small_mr, answer_dialog
):
    _, widget = _open(make_napari_viewer, small_mr)
    qtbot.keyClicks(widget.object_name, "tumour")
    _click(qtbot, widget.add_object_button)
    state = widget.state
    state.labels_array[10:15, 10:15, 4:6] = 1  # as painting would: 50 voxels
    texts = answer_dialog(QMessageBox.StandardButton.No)
    _click(qtbot, widget.remove_object_button)
    qtbot.waitUntil(lambda: bool(texts), timeout=5000)
    assert "tumour" in texts[0] and "50 voxels" in texts[0]
    assert 1 in state.objects and (state.labels_array == 1).sum() == 50
    texts = answer_dialog(QMessageBox.StandardButton.Yes)
    _click(qtbot, widget.remove_object_button)
    qtbot.waitUntil(lambda: bool(texts), timeout=5000)
    assert 1 not in state.objects and not (state.labels_array == 1).any()


# ---------------------------------------------------------------------------------- item 4
def test_viewing_another_plane_keeps_work_and_changing_the_axis_asks(
    make_napari_viewer, qtbot, small_mr, tiny_model, errors, answer_dialog
):
    viewer, widget = _open(make_napari_viewer, small_mr)
    widget.set_model(tiny_model)
    _click(qtbot, widget.add_object_button)
    state = widget.state
    state.add_point_prompt(np.array([24, 20, 8]))
    _click(qtbot, widget.segment_button)
    _wait(qtbot, widget)
    _click(qtbot, widget.propagate_button)
    _wait(qtbot, widget)
    assert not errors, errors
    session = state.session
    accepted = state.labels_array.copy()
    assert (accepted == 1).any()

    # another plane to look at: the session and its anchors stay
    widget.view_combo.setCurrentText("coronal")
    assert next(iter(viewer.dims.order)) == 1  # slider on y: coronal slices
    assert state.session is session and session.anchors(1) == (8,)

    # another propagation axis: asked first; "No" changes nothing
    texts = answer_dialog(QMessageBox.StandardButton.No)
    widget.axis_combo.setCurrentText("sagittal")
    assert texts and "discard" in texts[0].lower()
    assert widget.axis_combo.currentText() == "axial" and state.session is session

    # "Yes": a new session; the accepted label map stays, and survives the next propagation
    texts = answer_dialog(QMessageBox.StandardButton.Yes)
    widget.axis_combo.setCurrentText("sagittal")
    assert texts and state.session is not session
    np.testing.assert_array_equal(state.labels_array, accepted)
    _click(qtbot, widget.add_object_button)
    state.add_point_prompt(np.array([30, 20, 8]))
    _click(qtbot, widget.segment_button)
    _wait(qtbot, widget)
    _click(qtbot, widget.propagate_button)
    _wait(qtbot, widget)
    assert not errors, errors
    kept = accepted == 1
    assert (state.labels_array[kept] != 0).all()  # object 1 still there (or overlapped by 2)
    assert (state.labels_array == 1).any()


# ---------------------------------------------------------------------------------- item 5
def _register(monkeypatch, name, size, sha, filename):
    import dataclasses
    from types import MappingProxyType

    from sam2_med.models import TINY_ARCH, WeightSource, get_spec, registry
    from sam2_med.models.arch import complete_arch

    spec = dataclasses.replace(
        get_spec("sam2.1_hiera_tiny"),
        name=name,
        image_size=size,
        arch=MappingProxyType(complete_arch({**TINY_ARCH, "image_size": size})),
        filename=filename,
        sources=(WeightSource(url=f"https://sam2-med.invalid/{filename}"),),
        sha256=sha,
    )
    monkeypatch.setitem(registry._REGISTRY, name, spec)


def test_custom_checkpoint_dialog_offers_architectures_and_says_what_the_file_is(
    make_napari_viewer, qtbot, small_mr, tmp_path, monkeypatch, errors
):
    import hashlib

    models = pytest.importorskip("sam2_med.models")
    ckpt = models.save_meta_checkpoint(
        models.random_model(models.tiny_config(), seed=1), tmp_path / "my_finetune.pt"
    )
    _register(monkeypatch, "test_tiny", 128, "0" * 64, "test_tiny.pt")
    _register(monkeypatch, "test_tiny_256", 256, None, "t256.pt")
    from qtpy.QtWidgets import QFileDialog  # a native file dialog cannot be driven: "cancel"

    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: ("", ""))
    _, widget = _open(make_napari_viewer, small_mr)
    widget._refresh_models()
    widget.model_combo.setCurrentIndex(widget.model_combo.count() - 1)  # "custom checkpoint file…"
    _click(qtbot, widget.load_button)
    dialog = widget.checkpoint_dialog
    assert dialog is not None and dialog.isVisible()
    archs = [dialog.arch_combo.itemText(i) for i in range(dialog.arch_combo.count())]
    assert any("test_tiny_256" in a and "256 px" in a for a in archs)
    assert any("JSON" in a for a in archs) and "recognise" in archs[0]
    dialog.path_edit.setText(str(ckpt))
    dialog.arch_combo.setCurrentIndex(next(i for i, a in enumerate(archs) if "test_tiny (" in a))
    _click(qtbot, dialog.ok_button)
    _wait(qtbot, widget)
    assert not errors, errors
    assert widget.state.model.image_size == 128
    status = widget.model_status.text()
    assert "my_finetune.pt" in status and "not a published checkpoint" in status
    assert "fine-tune" in status and "sha256" in status
    assert "my_finetune.pt" in widget.model_combo.currentText()
    assert "not downloaded" not in widget.model_combo.currentText()

    # a file with a registered model's published digest: the status says so
    _register(monkeypatch, "test_tiny", 128, hashlib.sha256(ckpt.read_bytes()).hexdigest(), "t.pt")
    widget.model_combo.setCurrentIndex(widget.model_combo.count() - 1)
    _click(qtbot, widget.load_button)
    widget.checkpoint_dialog.path_edit.setText(str(ckpt))
    _click(qtbot, widget.checkpoint_dialog.ok_button)  # "recognise from the file"
    _wait(qtbot, widget)
    assert not errors, errors
    assert "published checkpoint of test_tiny" in widget.model_status.text()


# ---------------------------------------------------------------------------------- item 6
def test_errors_are_shown_in_full_with_where_to_put_the_file(
    make_napari_viewer, qtbot, small_mr, tmp_path, monkeypatch, errors
):
    monkeypatch.setenv("SAM2_MED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SAM2_MED_OFFLINE", "1")
    _, widget = _open(make_napari_viewer, small_mr)
    widget.model_combo.setCurrentIndex(0)  # sam2.1_hiera_tiny, not downloaded
    _click(qtbot, widget.load_button)
    _wait(qtbot, widget)
    target = tmp_path / "cache" / "sam2.1_hiera_tiny" / "sam2.1_hiera_tiny.pt"
    assert errors and str(target) in errors[-1]  # the notification has the whole text
    assert widget.error_label.isVisible() and "not in the cache" in widget.error_label.text()
    assert not widget.error_details.isVisible()
    _click(qtbot, widget.error_details_button)
    details = widget.error_details.text()
    assert widget.error_details.isVisible()
    assert str(target) in details and "/resolve/main/" in details
    assert "Import file" in details  # what to press, not a Python call
    assert "import_weights(" not in details and "--checkpoint" not in details


# ---------------------------------------------------------------------------------- item 7
def test_review_list_uses_the_slider_numbers_the_user_sees(
    make_napari_viewer, qtbot, flipped_mr, tiny_model, errors
):
    viewer, widget = _open(make_napari_viewer, flipped_mr)
    widget.set_model(tiny_model)
    _click(qtbot, widget.add_object_button)
    state = widget.state
    state.add_point_prompt(np.array([24, 20, 3]))  # voxel slice k = 3
    _click(qtbot, widget.segment_button)
    _wait(qtbot, widget)
    _click(qtbot, widget.propagate_button)
    _wait(qtbot, widget)
    assert not errors, errors
    wa = state.world_axis()
    assert state.slider_number(3) == 12  # k runs against the slider: 15 - k
    texts = [widget.review_list.item(i).text() for i in range(widget.review_list.count())]
    assert texts
    assert any(t.strip().lstrip("⚠ ").startswith("slice 12 ") and "k=3" in t for t in texts)
    row = next(i for i, t in enumerate(texts) if "k=5" in t)
    shown = int(re.search(r"slice (\d+)", texts[row]).group(1))
    assert shown == 10
    item = widget.review_list.item(row)
    widget.review_list.itemClicked.emit(item)
    assert viewer.dims.current_step[wa] == shown
    assert "anchors: 12" in widget.object_list.item(0).text()  # slider numbers there too


# ---------------------------------------------------------------------------------- item 8
def test_progress_bar_stops_after_a_load_and_an_undo(
    make_napari_viewer, qtbot, small_mr, tmp_path, monkeypatch, tiny_model, errors
):
    monkeypatch.setenv("SAM2_MED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SAM2_MED_OFFLINE", "1")
    _, widget = _open(make_napari_viewer, small_mr)
    widget.model_combo.setCurrentIndex(0)
    _click(qtbot, widget.load_button)  # fails: not downloaded
    _wait(qtbot, widget)
    assert widget.progress.maximum() > 0  # not the busy animation
    widget.set_model(tiny_model)
    _click(qtbot, widget.add_object_button)
    widget.state.add_point_prompt(np.array([24, 20, 8]))
    _click(qtbot, widget.segment_button)
    _wait(qtbot, widget)
    _click(qtbot, widget.undo_button)
    _wait(qtbot, widget)
    assert widget.progress.maximum() > 0 and widget.progress.value() == widget.progress.maximum()


def test_export_says_nothing_to_export_before_any_dialog(
    make_napari_viewer, qtbot, small_mr, monkeypatch, errors
):
    from qtpy.QtWidgets import QFileDialog

    asked = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: asked.append(1) or ("", ""))
    _, widget = _open(make_napari_viewer, small_mr)
    _click(qtbot, widget.export_button)
    assert not asked
    assert errors and "nothing to export" in errors[-1]


def test_replace_dialog_names_the_sidecar_and_an_exported_mask_reopens_as_labels(
    make_napari_viewer, qtbot, small_mr, tmp_path, monkeypatch, answer_dialog, errors
):
    from qtpy.QtWidgets import QFileDialog

    out = tmp_path / "liver.nii.gz"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    viewer, widget = _open(make_napari_viewer, small_mr)
    _click(qtbot, widget.add_object_button)
    widget.state.labels_array[20:30, 15:25, 6:10] = 1
    _click(qtbot, widget.export_button)
    assert out.exists() and (tmp_path / "liver.json").exists()
    texts = answer_dialog(QMessageBox.StandardButton.No)
    _click(qtbot, widget.export_button)
    qtbot.waitUntil(lambda: bool(texts), timeout=5000)
    assert str(out) in texts[0] and str(tmp_path / "liver.json") in texts[0]
    assert "sidecar" in texts[0]

    # the exported mask opens as a Labels layer, on the image, and is no image to segment
    [layer] = viewer.open(str(out), plugin="sam2-med")
    assert type(layer).__name__ == "Labels"
    assert json.loads((tmp_path / "liver.json").read_text())["label_names"] == {"1": "object 1"}
    names = [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())]
    assert layer.name not in names and len(names) == 1


def test_export_is_visible_at_1000_px(make_napari_viewer, qtbot, small_mr, tiny_model):
    import dataclasses

    from sam2_med.models import get_spec

    viewer, widget = _open(make_napari_viewer, small_mr)
    viewer.window._qt_window.resize(1400, 1000)
    long_licence = dataclasses.replace(tiny_model, licence=get_spec("medsam2").licence_text)
    widget.set_model(long_licence)
    _click(qtbot, widget.add_object_button)
    widget.refresh_review()
    qtbot.wait(200)
    region = widget.export_button.visibleRegion().boundingRect()
    assert region.height() == widget.export_button.height(), "Export is below the fold"
