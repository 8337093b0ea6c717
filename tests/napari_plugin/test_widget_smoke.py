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
