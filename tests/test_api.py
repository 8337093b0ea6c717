"""sam2_med.api wiring, with a recording stand-in for the Session (no model runs here).

The end-to-end runs with a real Session and a random-weight checkpoint are in tests/cli/.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import ClassVar

import nibabel as nib
import numpy as np
import pytest

from sam2_med import PromptError, Volume
from sam2_med.api import RUN_RECORD_KEY, resolve_prompts, segment
from sam2_med.labels import LabelVolume

AFFINE = np.diag([-2.0, -2.0, 3.0, 1.0])


class RecordingSession:
    """Follows the Session contract; records calls; 'propagates' by copying prompt masks."""

    instances: ClassVar[list[RecordingSession]] = []

    def __init__(self, model, volume, *, axis="axial", window="auto"):
        self.model, self.volume, self.axis, self.window = model, volume, axis, window
        self.axis_index = 2
        self.calls = []
        self.labels = np.zeros(volume.shape, dtype=np.uint8)
        self.left = volume.shape[2]
        RecordingSession.instances.append(self)

    def add_object(self, name=None, label=None):
        self.calls.append(("object", label, name))
        return label

    def add_prompts(
        self, label, *, points=None, point_labels=None, box=None, mask=None, slice_index=None
    ):
        if mask is not None:
            self.calls.append(("mask", label, slice_index, mask.shape))
            self.labels[:, :, slice_index][mask] = label
            return
        box = None if box is None else (tuple(box[0]), tuple(box[1]))
        points = None if points is None else points.tolist()
        point_labels = None if point_labels is None else point_labels.tolist()
        self.calls.append(("prompts", label, slice_index, points, point_labels, box))

    def propagate(self, *, cancel=None, progress=None):
        n = self.volume.shape[2]
        for k in range(n):
            if cancel is not None and cancel():
                self.left = n - k
                return
            if progress is not None:
                progress(k + 1, n)
            self.labels[:, :, k] = np.maximum(self.labels[:, :, k], self.labels[:, :, 3])
            yield SimpleNamespace(
                slice_index=k,
                masks={1: self.labels[:, :, k] == 1},
                scores={1: float(k) - 2.0},  # label 2 gets no score: NaN expected
            )
        self.left = 0

    def pending(self):
        return self.left

    def label_map(self):
        return LabelVolume(self.labels.copy(), self.volume, {1: "from_session"})


@pytest.fixture
def vol():
    return Volume(np.zeros((10, 8, 6), dtype=np.int16), AFFINE, modality="CT")


@pytest.fixture
def model():
    from sam2_med.models import LoadedModel, random_model, tiny_config

    return LoadedModel.from_module(random_model(tiny_config()), name="tiny-random")


def test_prompts_reach_the_session_in_voxel_indices(tmp_path, vol, model):
    mask = np.zeros(vol.shape, dtype=np.uint8)
    mask[2:5, 2:4, 3] = 1
    nib.Nifti1Image(mask, AFFINE).to_filename(tmp_path / "m.nii.gz")
    # a world point: voxel (4, 5, 2) in RAS is (-8, -10, 6)
    prompts = {
        "space": "world_ras",
        "objects": [
            {"name": "liver", "label": 1, "mask": str(tmp_path / "m.nii.gz")},
            {
                "name": "spleen",
                "label": 2,
                "points": [[-8, -10, 6, 1], [-2, -2, 6, 0], [0, 0, 9]],
                "boxes": [[0, 0, 12, -6, -6, 12]],
            },
            # a box and a point on one slice go to the decoder together
            {
                "name": "kidney",
                "label": 3,
                "boxes": [[0, 0, 6, -6, -6, 6]],
                "points": [[-4, -4, 6]],
            },
        ],
    }
    RecordingSession.instances.clear()
    progress = []
    result = segment(
        vol,
        prompts,
        model=model,
        session_factory=RecordingSession,
        progress=lambda d, t: progress.append((d, t)),
    )
    (session,) = RecordingSession.instances
    assert session.model is model and session.axis == "axial"
    assert session.calls == [
        ("object", 1, "liver"),
        ("object", 2, "spleen"),
        ("object", 3, "kidney"),
        ("mask", 1, 3, (10, 8)),
        # one call per slice with all of its prompts
        ("prompts", 2, 2, [[4, 5, 2], [1, 1, 2]], [1, 0], None),
        ("prompts", 2, 3, [[0, 0, 3]], [1], None),
        ("prompts", 2, 4, None, None, ((0, 0, 4), (3, 3, 4))),
        ("prompts", 3, 2, [[2, 2, 2]], [1], ((0, 0, 2), (3, 3, 2))),
    ]
    assert progress == [(k + 1, 6) for k in range(6)]
    assert result.scores[1].tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    assert np.isnan(result.scores[2]).all()
    assert result.labels.names == {1: "liver", 2: "spleen", 3: "kidney"}  # prompt names win
    assert result.labels.reference is vol and not result.cancelled
    assert result.record["status"] == "complete" and result.model == "tiny-random"
    # the prompt slice came back exactly
    np.testing.assert_array_equal(result.labels.array[:, :, 3] == 1, mask[:, :, 3] == 1)


def test_cancel_and_sidecar_record(tmp_path, vol, model):
    mask = np.zeros(vol.shape, dtype=np.uint8)
    mask[1:3, 1:3, 3] = 1
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 3

    objs = {"space": "voxel", "objects": [{"label": 1, "points": [[1, 1, 3]]}]}
    result = segment(vol, objs, model=model, session_factory=RecordingSession, cancel=cancel)
    assert result.cancelled and result.record["status"] == "cancelled"
    assert math.isnan(result.scores[1][-1])
    out = result.save(tmp_path / "m.nii.gz")
    side = json.loads((tmp_path / "m.json").read_text())
    rec = side["extra"][RUN_RECORD_KEY]
    assert rec["status"] == "cancelled" and rec["scores"]["1"][-1] is None
    assert rec["prompts"]["objects"][0]["points"] == [[1, 1, 3]]
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, AFFINE)


def test_resolve_prompts_forms(tmp_path, vol):
    mask = np.zeros(vol.shape, dtype=np.uint8)
    mask[2:5, 2:4, 1] = 7
    nib.Nifti1Image(mask, AFFINE).to_filename(tmp_path / "m.nii.gz")
    ps = resolve_prompts(tmp_path / "m.nii.gz", vol)
    assert ps.labels == (7,) and ps.objects[0].masks[0][0] == 1
    (tmp_path / "p.json").write_text(
        json.dumps({"space": "voxel", "objects": [{"mask": "m.nii.gz"}]})
    )
    assert resolve_prompts(str(tmp_path / "p.json"), vol).objects[0].masks[0][0] == 1
    assert resolve_prompts(ps, vol) is ps
    with pytest.raises(PromptError, match="validated for the axial axis"):
        resolve_prompts(ps, vol, axis="coronal")
    with pytest.raises(PromptError, match="must be a dict"):
        resolve_prompts(42, vol)
    with pytest.raises(PromptError, match="mask prompt file not found"):
        resolve_prompts(tmp_path / "none.nii.gz", vol)
