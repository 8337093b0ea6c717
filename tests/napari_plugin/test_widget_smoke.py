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
    assert widget.model_status.text() == "loading failed; no model"
    assert widget.export(tmp_path / "nothing.nii.gz") == []
    # a damaged NIfTI: the reader claims it by name, then refuses it with the path in the error
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b garbage")
    from sam2_med.errors import Sam2MedError

    with pytest.raises(Sam2MedError, match=r"broken\.nii\.gz: "):
        viewer.open(str(broken), plugin="sam2-med")


@pytest.mark.gui
def test_click_on_oblique_phantom_prompts_the_voxel_drawn_there(
    make_napari_viewer, tmp_path, MouseEvent
):
    """A click through napari's own Points 'add' mouse binding, on the (oblique) phantom."""
    import numpy as np
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    from sam2_med.napari_plugin._state import POSITIVE_LAYER
    from sam2_med.phantom import write_phantom

    viewer = make_napari_viewer()
    viewer.open(str(write_phantom(tmp_path / "p")["image"]), plugin="sam2-med")
    _, widget = viewer.window.add_plugin_dock_widget("sam2-med", "SAM 2 volume segmentation")
    state = widget.state
    assert state.geometry.oblique_degrees > 5
    state.ensure_layers()
    points = viewer.layers[POSITIVE_LAYER]
    points.mode = "add"
    axis = state.axis_index()
    rng = np.random.default_rng(3)
    targets = []
    for _ in range(5):
        target = rng.integers(0, state.volume.shape)
        state.go_to_slice(int(target[axis]))
        position = state.geometry.voxel_to_world(target + rng.uniform(-0.45, 0.45, 3))
        position[state.world_axis()] = viewer.dims.point[state.world_axis()]  # on the slice shown
        for kind in ("mouse_press", "mouse_release"):
            event = ReadOnlyWrapper(
                MouseEvent(
                    type=kind,
                    position=tuple(position),
                    pos=np.array([10, 10]),
                    dims_displayed=tuple(viewer.dims.displayed),
                )
            )
            callbacks = mouse_press_callbacks if kind == "mouse_press" else mouse_release_callbacks
            callbacks(points, event)
        targets.append(target)
    prompts = state.collect_prompts()
    got = np.concatenate([p.points for p in prompts])
    assert sorted(map(tuple, got)) == sorted(map(tuple, np.array(targets)))
    assert all((p.points[:, axis] == p.slice_index).all() for p in prompts)


@pytest.mark.gui
def test_export_of_a_dicom_image_writes_nifti_and_seg(make_napari_viewer, tmp_path):
    import nibabel as nib
    import numpy as np
    import pydicom

    from sam2_med.phantom import write_phantom

    written = write_phantom(tmp_path / "p")
    viewer = make_napari_viewer()
    viewer.open(str(written["dicom"]), plugin="sam2-med")
    _, widget = viewer.window.add_plugin_dock_widget("sam2-med", "SAM 2 volume segmentation")
    assert widget.seg_checkbox.isEnabled()
    label = widget.add_object("liver")
    widget.state.ensure_layers()
    widget.state.labels_array[30:50, 30:50, 10:20] = label  # as painting would
    out = tmp_path / "out" / "liver.nii.gz"
    out.parent.mkdir()
    paths = widget.export(out, dicom_seg=True)
    assert paths[0] == str(out) and paths[-1].endswith("liver_seg.dcm")
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, widget.state.volume.affine, atol=1e-4)
    assert np.array_equal(np.asanyarray(back.dataobj), widget.state.labels_array)
    seg = pydicom.dcmread(paths[-1])
    assert seg.Modality == "SEG" and seg.SegmentSequence[0].SegmentLabel == "liver"


@pytest.mark.gui
def test_precision_control_reaches_the_model_load(make_napari_viewer, qtbot, tmp_path):
    """The widget's precision choice is what the loaded model runs and what its status says."""
    from sam2_med.models import TINY_ARCH, random_model, save_meta_checkpoint, tiny_config

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("sam2-med", "SAM 2 volume segmentation")
    items = [widget.precision_combo.itemText(i) for i in range(widget.precision_combo.count())]
    assert items == ["auto", "float32", "bfloat16"] and widget.state.precision == "auto"
    ckpt = save_meta_checkpoint(random_model(tiny_config(), seed=2), tmp_path / "tiny.pt")
    widget.precision_combo.setCurrentText("bfloat16")
    assert widget.state.precision == "bfloat16"
    widget.load_model(checkpoint=str(ckpt), arch=dict(TINY_ARCH))
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    prec = widget.state.model.precision
    assert (prec.requested, prec.applied) == ("bfloat16", "bfloat16")
    assert "bfloat16" in widget.model_status.text()
