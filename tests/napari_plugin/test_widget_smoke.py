"""The dock widget opens from the manifest and survives errors without a model."""

from __future__ import annotations

import pytest

from tests.conftest import shared_path


@pytest.mark.gui
def test_widget_docks_from_manifest_and_reports_missing_model(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    viewer.open(str(shared_path("volumes", "mr_abdomen_small", "image.nii.gz")), plugin="sam2-med")
    _, widget = viewer.window.add_plugin_dock_widget("sam2-med", "SAM 2 volume segmentation")
    errors = []
    monkeypatch.setattr(
        "sam2_med.napari_plugin._widget._notify_error", lambda msg: errors.append(msg)
    )
    assert widget.state.volume is not None
    assert widget.segment_slice() is False
    assert errors and "no model" in errors[0]
    assert not widget.busy


@pytest.mark.gui
def test_bad_checkpoint_and_bad_file_become_notifications(
    make_napari_viewer, qtbot, monkeypatch, tmp_path
):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("sam2-med", "SAM 2 volume segmentation")
    errors = []
    monkeypatch.setattr(
        "sam2_med.napari_plugin._widget._notify_error", lambda msg: errors.append(msg)
    )
    # a registered model whose weights are not here, offline: a notification says what to do
    monkeypatch.setenv("SAM2_MED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SAM2_MED_OFFLINE", "1")
    widget.load_model("sam2.1_hiera_tiny")
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert widget.state.model is None
    assert errors and "sam2.1_hiera_tiny" in errors[-1]
    bad = tmp_path / "not_a_model.pt"
    bad.write_bytes(b"this is not a checkpoint")
    widget.import_checkpoint(bad)
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert widget.state.model is None
    assert errors and "not_a_model.pt" in errors[-1]
    assert widget.export(tmp_path / "nothing.nii.gz") == []
    # a damaged NIfTI: the reader claims it by name, then refuses it with the path in the error
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b garbage")
    from sam2_med.errors import Sam2MedError

    with pytest.raises(Sam2MedError, match=r"broken\.nii\.gz: "):
        viewer.open(str(broken), plugin="sam2-med")
