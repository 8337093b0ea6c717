"""The widget's Measurements section: object list numbers, RECIST lines, RTSTRUCT and report.

The phantom's exact labels are painted into the widget's segmentation, so the numbers can be
compared with :func:`sam2_med.measure.measure`; one test propagates with a random-weight model
to check the numbers follow the labels after a run.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

pytestmark = pytest.mark.gui

WIDGET = "SAM 2 volume segmentation"


@pytest.fixture
def phantom_paths(tmp_path):
    from sam2_med.phantom import write_phantom

    return write_phantom(tmp_path / "phantom")


def _open_with_labels(make_napari_viewer, path, phantom_paths, monkeypatch):
    from sam2_med.io import load_volume
    from sam2_med.prompts import mask_to_image_grid

    errors: list[str] = []
    monkeypatch.setattr("sam2_med.napari_plugin._widget._notify_error", errors.append)
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="sam2-med")
    _, widget = viewer.window.add_plugin_dock_widget("sam2-med", WIDGET)
    state = widget.state
    state.ensure_layers()
    truth = mask_to_image_grid(load_volume(phantom_paths["labels"]), state.volume, where="gt")
    widget.add_object("liver")
    widget.add_object("spleen")
    state.labels_array[...] = np.where(np.isin(truth, (1, 2)), truth, 0)
    state.current_label = 1
    widget._refresh_objects()
    return viewer, widget, errors


def test_object_list_shows_volume_and_recist_and_lines_land_on_the_slice(
    make_napari_viewer, phantom_paths, monkeypatch, tmp_path
):
    from sam2_med.measure import measure
    from sam2_med.napari_plugin._measure_panel import RECIST_LAYER

    viewer, widget, errors = _open_with_labels(
        make_napari_viewer, phantom_paths["dicom"], phantom_paths, monkeypatch
    )
    panel, state = widget.measure_panel, widget.state
    assert not panel.recist_button.isEnabled()
    panel.refresh()
    expected = {m.label: m for m in measure(state.labels_array, state.volume, plane="axial")}
    texts = [widget.object_list.item(r).text() for r in range(widget.object_list.count())]
    for text, label in zip(texts, (1, 2), strict=True):
        m = expected[label]
        assert f"{m.volume_ml:.1f} mL" in text
        assert f"{m.recist.long_mm:.1f} × {m.recist.short_mm:.1f} mm" in text
    assert "RECIST" in panel.summary.text() and "HU" in panel.summary.text()
    # rebuilding the list (add/remove) keeps the numbers on the remaining items
    widget._refresh_objects()
    assert "mL" in widget.object_list.item(0).text()
    assert widget.object_list.item(0).text().count("mL") == 1

    layer = panel.draw_recist(1)
    assert layer.name == RECIST_LAYER and RECIST_LAYER in viewer.layers
    assert [str(t) for t in layer.shape_type] == ["line", "line"]
    r = expected[1].recist
    assert state.current_slice() == r.slice_index
    for verts, ijk in zip(layer.data, (r.long_ijk, r.short_ijk), strict=True):
        world = np.array([layer.data_to_world(v) for v in verts])
        np.testing.assert_allclose(
            np.linalg.inv(state.geometry.display_affine)[:3] @ np.c_[world, np.ones(2)].T,
            ijk.T,
            atol=1e-6,
        )
    assert list(layer.features["length_mm"]) == pytest.approx([r.long_mm, r.short_mm])

    assert panel.rtstruct_button.isEnabled()  # a DICOM image
    [rt] = panel.export_rtstruct(tmp_path / "rs.dcm")
    ds = pydicom.dcmread(rt)
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["liver", "spleen"]
    [report] = panel.write_report(tmp_path / "report")
    assert (tmp_path / "report" / "001_liver.png").is_file() and report.endswith("report.html")
    assert not errors, errors


def test_nifti_image_has_no_rtstruct_export(
    make_napari_viewer, phantom_paths, monkeypatch, tmp_path
):
    _, widget, errors = _open_with_labels(
        make_napari_viewer, phantom_paths["image"], phantom_paths, monkeypatch
    )
    panel = widget.measure_panel
    panel.refresh()
    assert panel.recist_button.isEnabled() and not panel.rtstruct_button.isEnabled()
    assert panel.export_rtstruct(tmp_path / "rs.dcm") == []
    assert errors and "needs an image read from DICOM" in errors[-1]
    assert not (tmp_path / "rs.dcm").exists()


def test_numbers_follow_propagation(
    make_napari_viewer, qtbot, phantom_paths, monkeypatch, tmp_path
):
    """After a propagation the object list holds the measurement of the new label map."""
    models = pytest.importorskip("sam2_med.models")
    from sam2_med.measure import measure

    ckpt = models.save_meta_checkpoint(
        models.random_model(models.tiny_config(), seed=0), tmp_path / "tiny.pt"
    )
    _, widget, errors = _open_with_labels(
        make_napari_viewer, phantom_paths["image"], phantom_paths, monkeypatch
    )
    widget.import_checkpoint(ckpt, arch=models.TINY_ARCH)
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    state = widget.state
    state.current_label = 1
    k = state.current_slice()
    assert widget.use_painted_slice()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert widget.propagate()
    qtbot.waitUntil(lambda: not widget.busy, timeout=300_000)
    assert not errors, errors
    assert (np.take(state.labels_array, k, axis=state.axis_index()) == 1).any()
    got = widget.measure_panel.results
    expected = {m.label: m for m in measure(state.labels_array, state.volume, surface=False)}
    assert set(got) == set(expected)
    for label, m in expected.items():
        assert got[label].voxel_count == m.voxel_count
        assert got[label].recist.long_mm == pytest.approx(m.recist.long_mm)
    item = widget.object_list.item(0).text()
    assert f"{expected[1].volume_ml:.1f} mL" in item
