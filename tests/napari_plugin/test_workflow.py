"""The whole widget workflow on the phantom with a random-weight model, under Xvfb.

Open through the plugin reader -> import a Meta-format checkpoint through the widget -> point
and box on one slice -> propagate, cancel half-way, resume -> correct one slice and check that
only the range between anchors changed -> export and read the export back with nibabel.

The weights are random (``object_score_bias`` keeps masks non-empty), so the assertions are
about plumbing and geometry, never about segmentation quality.
"""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest

pytestmark = pytest.mark.gui

WIDGET = "SAM 2 volume segmentation"
TIMEOUT_MS = 120_000


@pytest.fixture
def tiny_checkpoint(tmp_path):
    models = pytest.importorskip("sam2_med.models")
    path = tmp_path / "random_tiny.pt"
    models.save_meta_checkpoint(models.random_model(models.tiny_config(), seed=0), path)
    return path


def _slice(array, k, axis):
    return np.take(array, k, axis=axis)


def _slow_down(session, seconds):
    """Pace propagation so a cancel lands half-way on any machine (the session is unchanged)."""
    original = session.propagate

    def paced(*args, **kwargs):
        for result in original(*args, **kwargs):
            time.sleep(seconds)
            yield result

    session.propagate = paced


def test_prompt_propagate_cancel_resume_correct_export(
    make_napari_viewer, qtbot, phantom_file, tiny_checkpoint, tmp_path, monkeypatch
):
    pytest.importorskip("sam2_med.session")
    from sam2_med.models import TINY_ARCH
    from sam2_med.napari_plugin._layers import geometry_of
    from sam2_med.napari_plugin._state import BOX_LAYER, NEGATIVE_LAYER, POSITIVE_LAYER

    errors: list[str] = []
    monkeypatch.setattr("sam2_med.napari_plugin._widget._notify_error", errors.append)

    viewer = make_napari_viewer()
    [image] = viewer.open(phantom_file, plugin="sam2-med")
    geo = geometry_of(image.metadata)
    _, widget = viewer.window.add_plugin_dock_widget("sam2-med", WIDGET)
    assert widget.state.image_layer is image

    # the real Meta-checkpoint path, through the widget's import
    widget.import_checkpoint(tiny_checkpoint, arch=TINY_ARCH)
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert not errors, errors
    assert widget.state.model is not None and widget.state.model.image_size == 128

    label = widget.add_object("liver")
    state = widget.state
    state.ensure_session()
    vol = state.volume
    axis = state.axis_index()
    n = state.n_slices()
    k = n // 2
    state.go_to_slice(k)
    assert state.current_slice() == k

    centre = (np.array(vol.shape) - 1) / 2
    centre[axis] = k
    state.add_point_prompt(centre)  # = a click at that voxel's world position
    lo, hi = centre.copy(), centre.copy()
    for a in range(3):
        if a != axis:
            lo[a] -= 10
            hi[a] += 10
    state.add_box_prompt(lo, hi)
    assert len(viewer.layers[POSITIVE_LAYER].data) == 1 and len(viewer.layers[BOX_LAYER].data) == 1
    prompts = state.collect_prompts()
    assert {p.kind for p in prompts} == {"points", "box"}
    assert all(p.slice_index == k for p in prompts)
    assert widget.segment_slice()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert not errors, errors
    assert widget.slices_done >= 1
    assert (_slice(state.labels_array, k, axis) == label).any()
    # prompts reached the session: they stay on screen, marked sent, and are not sent twice
    assert len(viewer.layers[POSITIVE_LAYER].data) == 1
    assert viewer.layers[POSITIVE_LAYER].features["sent"].all()
    assert state.collect_prompts() == []

    # propagate, cancel part-way, resume
    _slow_down(state.session, 0.05)
    assert widget.propagate()
    qtbot.waitUntil(lambda: widget.slices_done >= 4, timeout=TIMEOUT_MS)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert "cancelled" in widget.status.text()
    covered = {s for s in range(n) if (_slice(state.labels_array, s, axis) == label).any()}
    assert 4 <= len(covered) < n
    computed = len(state.records[label])  # slices with a result so far (anchor included)
    assert widget.propagate()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert not errors, errors
    # resuming computes only what the cancelled run left
    assert 0 < widget.slices_done <= n - computed
    covered = {s for s in range(n) if (_slice(state.labels_array, s, axis) == label).any()}
    assert len(covered) > n // 2
    # the layer shows exactly the session's label map
    assert np.array_equal(state.labels_array, np.asarray(state.session.label_map().array))

    # correct one slice above the anchor: only slices beyond the anchor k may change
    before = state.labels_array.copy()
    j = min(k + 5, n - 2)
    state.go_to_slice(j)
    fix = centre.copy()
    fix[axis] = j
    state.add_point_prompt(fix, positive=False)
    fix_pos = fix.copy()
    fix_pos[(axis + 1) % 3] += 8
    state.add_point_prompt(fix_pos)
    assert len(viewer.layers[NEGATIVE_LAYER].data) == 1
    assert widget.update()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert not errors, errors
    after = state.labels_array
    changed = [
        s for s in range(n) if not np.array_equal(_slice(before, s, axis), _slice(after, s, axis))
    ]
    assert changed, "the correction changed nothing"
    assert min(changed) > k, f"slices at or below the anchor {k} changed: {changed}"

    # drift review and navigation do not need good weights to work
    widget.refresh_review()
    assert "slices segmented" in widget.review_summary.text()
    assert widget.review_list.count() > 0
    nxt = widget.next_suspicious()
    assert nxt is None or state.current_slice() == nxt

    # undo the correction
    assert widget.undo()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert not errors, errors
    assert np.array_equal(state.labels_array, np.asarray(state.session.label_map().array))

    # export on the image grid; read back with nibabel
    out = tmp_path / "export" / "liver.nii.gz"
    out.parent.mkdir()
    written = widget.export(out)
    assert written[0] == str(out)
    src = nib.load(phantom_file)
    back = nib.load(out)
    assert back.shape == src.shape
    np.testing.assert_allclose(back.affine, src.affine, atol=1e-4)
    layer_labels = geo.from_data(state.labels_layer.data)
    assert np.array_equal(np.asanyarray(back.dataobj), layer_labels)
    assert (np.asanyarray(back.dataobj) == label).any()
    # never overwrite silently
    assert widget.export(out) == []
    assert errors and "exists" in errors[-1]
