"""Acceptance: the napari widget and ``sam2_med.segment`` give identical label maps for the same
clicks, box and painted mask, and the command line replays the widget's export exactly
(napari's own *Save layers* writes the same record).

Both front ends send prompts through ``Session.add_prompts`` (one call per slice with all of
its prompts), so a box drawn with clicks on the same slice is decoded the same way everywhere.
Random weights: the assertions are about equality, never about segmentation quality.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

pytestmark = [pytest.mark.gui, pytest.mark.slow]  # three runs of the phantom: about a minute

WIDGET = "SAM 2 volume segmentation"
TIMEOUT_MS = 120_000


@pytest.fixture
def tiny(tmp_path):
    """(LoadedModel, checkpoint path, arch path) of a random tiny model in Meta's format."""
    from sam2_med.models import (
        TINY_ARCH,
        load_model,
        random_model,
        save_meta_checkpoint,
        tiny_config,
    )

    ckpt = save_meta_checkpoint(random_model(tiny_config(), seed=0), tmp_path / "tiny.pt")
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(TINY_ARCH))
    return load_model(checkpoint=ckpt, arch=TINY_ARCH), ckpt, arch


def test_widget_and_segment_give_the_same_label_map(
    make_napari_viewer, qtbot, phantom_file, tiny, tmp_path, monkeypatch
):
    from sam2_med import segment
    from sam2_med.cli import main

    lm, ckpt, arch = tiny
    errors: list[str] = []
    monkeypatch.setattr("sam2_med.napari_plugin._widget._notify_error", errors.append)
    monkeypatch.setenv("SAM2_MED_OFFLINE", "1")
    viewer = make_napari_viewer()
    viewer.open(phantom_file, plugin="sam2-med")
    _, widget = viewer.window.add_plugin_dock_widget("sam2-med", WIDGET)
    widget.set_model(lm)
    state = widget.state

    # object 1: a positive and a negative click and a box, all on slice k
    liver = widget.add_object("liver")
    state.ensure_session()
    vol, axis = state.volume, state.axis_index()
    n = state.n_slices()
    k = n // 2
    centre = (np.array(vol.shape) - 1) // 2
    centre[axis] = k
    pos = centre.copy()
    neg = centre.copy()
    u, v = (a for a in range(3) if a != axis)
    neg[u] += 12
    lo, hi = centre.copy(), centre.copy()
    lo[[u, v]] -= 10
    hi[[u, v]] += 10
    state.go_to_slice(k)
    state.add_point_prompt(pos)
    state.add_point_prompt(neg, positive=False)
    state.add_box_prompt(lo, hi)
    assert widget.segment_slice()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert not errors, errors

    # object 2: a mask painted on slice j
    spleen = widget.add_object("spleen")
    j = k - 4
    painted = np.zeros(np.take(state.labels_array, j, axis=axis).shape, bool)
    painted[10:22, 14:30] = True
    index = [slice(None)] * 3
    index[axis] = j
    state.labels_array[tuple(index)][painted] = spleen
    state.refresh_labels()
    state.go_to_slice(j)
    assert widget.use_painted_slice()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert widget.propagate()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert not errors, errors
    gui = state.labels_array.copy()
    assert (gui == liver).any() and (gui == spleen).any()

    # the same prompts through the Python API
    mask3d = np.zeros(vol.shape, np.uint8)
    mask3d[tuple(index)][painted] = 1
    mask_file = tmp_path / "painted.nii.gz"
    nib.Nifti1Image(mask3d, vol.affine).to_filename(mask_file)
    prompts = {
        "space": "voxel",
        "objects": [
            {
                "name": "liver",
                "label": liver,
                "points": [[*pos.tolist(), 1], [*neg.tolist(), 0]],
                "boxes": [[*lo.tolist(), *hi.tolist()]],
            },
            {"name": "spleen", "label": spleen, "mask": {"file": str(mask_file), "slice": j}},
        ],
    }
    api = segment(phantom_file, prompts, model=lm)
    np.testing.assert_array_equal(api.labels.array, gui)

    # the widget's export replays on the command line to the same voxels
    out = tmp_path / "gui.nii.gz"
    assert widget.export(out)[0] == str(out)
    side = json.loads((tmp_path / "gui.json").read_text())["extra"]["sam2_med_run"]
    assert side["labels_match_session"] is True and side["source"] == "napari"
    # napari's own File > Save Selected Layers (the npe2 writer) writes the same record
    viewer.layers.selection = {state.labels_layer}
    saved = tmp_path / "saved.nii.gz"
    assert viewer.layers.save(str(saved), selected=True, plugin="sam2-med")[0] == str(saved)
    np.testing.assert_array_equal(np.asanyarray(nib.load(saved).dataobj), gui)
    again = json.loads((tmp_path / "saved.json").read_text())["extra"]["sam2_med_run"]
    assert again["labels_match_session"] is True
    assert again["interactions"] == side["interactions"]
    code = main(
        [
            "segment",
            phantom_file,
            "--prompts",
            str(tmp_path / "gui.json"),
            "--out",
            str(tmp_path / "cli.nii.gz"),
            "--checkpoint",
            str(ckpt),
            "--arch",
            str(arch),
        ]
    )
    assert code == 0
    np.testing.assert_array_equal(np.asanyarray(nib.load(tmp_path / "cli.nii.gz").dataobj), gui)
