"""Evaluation protocol: metric wiring against analytic values, prompt derivation, tables."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from sam2_med import Volume
from sam2_med.evaluate import (
    StructureResult,
    choose_slice,
    derive_prompt,
    evaluate_case,
    format_table,
    overlap_metrics,
    summarize,
    write_csv,
)


def _box(shape, lo, hi):
    m = np.zeros(shape, dtype=bool)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


def test_prediction_equal_to_ground_truth_is_perfect():
    gt = _box((30, 25, 12), (5, 4, 2), (20, 18, 9))
    m = overlap_metrics(gt.copy(), gt, (0.8, 0.8, 3.0), nsd_tol=1.0)
    assert m == {"dice": 1.0, "nsd": 1.0, "hd95": 0.0}


@pytest.mark.parametrize(
    ("axis", "n", "spacing"),
    [
        (0, 1, (2.0, 1.0, 1.0)),
        (0, 3, (2.0, 1.0, 1.0)),
        (1, 2, (1.0, 0.7, 3.0)),
        (2, 1, (1.0, 1.0, 3.0)),
    ],
)
def test_shifted_box_has_the_analytic_dice(axis, n, spacing):
    lo, hi = (4, 5, 3), (14, 17, 11)  # a 10 x 12 x 8 box
    gt = _box((24, 26, 18), lo, hi)
    pred = np.roll(gt, n, axis=axis)
    length = hi[axis] - lo[axis]
    m = overlap_metrics(pred, gt, spacing, nsd_tol=n * spacing[axis])
    # overlap (L - n) * rest, sizes L * rest each: Dice = 2 (L - n) / 2 L
    assert m["dice"] == pytest.approx((length - n) / length, abs=1e-6)
    # every surface voxel of one box lies within n voxels (along the shift) of the other's
    # surface, and the end faces are exactly that far: 0 < HD95 <= n * spacing
    assert 0.0 < m["hd95"] <= n * spacing[axis] + 1e-6
    assert m["nsd"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("axis", "n", "spacing"), [(2, 2, (1.0, 1.0, 3.0)), (0, 1, (2.5, 1.0, 1.0))]
)
def test_shifted_plate_has_the_analytic_hd95_and_nsd(axis, n, spacing):
    # a one-voxel-thick plate: every voxel is surface, and each predicted voxel's nearest
    # ground-truth voxel is the one n voxels away along the shift, so all distances equal n*s
    lo = [3, 3, 3]
    hi = [12, 13, 14]
    hi[axis] = lo[axis] + 1
    gt = _box((16, 17, 18), lo, hi)
    pred = np.roll(gt, n, axis=axis)
    d = n * spacing[axis]
    m = overlap_metrics(pred, gt, spacing, nsd_tol=d)
    assert m["dice"] == 0.0
    assert m["hd95"] == pytest.approx(d)
    assert m["nsd"] == pytest.approx(1.0)
    assert overlap_metrics(pred, gt, spacing, nsd_tol=0.9 * d)["nsd"] == pytest.approx(0.0)


def test_empty_prediction_and_empty_ground_truth():
    gt = _box((10, 10, 10), (2, 2, 2), (5, 5, 5))
    m = overlap_metrics(np.zeros_like(gt), gt, (1.0, 1.0, 1.0))
    assert m["dice"] == 0.0 and m["nsd"] == 0.0 and math.isnan(m["hd95"])
    with pytest.raises(ValueError, match="ground truth is empty"):
        overlap_metrics(gt, np.zeros_like(gt), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="differ in shape"):
        overlap_metrics(gt[:-1], gt, (1.0, 1.0, 1.0))


def test_choose_slice_largest_and_middle():
    m = np.zeros((6, 6, 20), dtype=bool)
    m[1:3, 1:3, 4] = True  # 4 voxels
    m[0:5, 0:5, 9] = True  # 25 voxels: largest
    m[2, 2, 16] = True  # first..last = 4..16: middle 10 is empty -> nearest non-empty is 9
    assert choose_slice(m, 2, "largest") == 9
    assert choose_slice(m, 2, "middle") == 9
    m[2, 2, 10] = True
    assert choose_slice(m, 2, "middle") == 10
    # along another axis
    assert choose_slice(np.moveaxis(m, 2, 0), 0, "largest") == 9
    with pytest.raises(ValueError, match="empty"):
        choose_slice(np.zeros((3, 3, 3), bool), 2)


def test_derive_prompt_modes():
    m = np.zeros((20, 30, 10), dtype=bool)
    m[4:15, 6:25, 5] = True  # largest on k=5
    m[8:10, 8:10, 6] = True
    box = derive_prompt(m, 2, label=3, name="x", mode="box")
    ((a, b),) = box.boxes
    assert a.tolist() == [4, 6, 5] and b.tolist() == [14, 24, 5]
    pt = derive_prompt(m, 2, label=3, name="x", mode="point")
    assert pt.point_labels.tolist() == [1]
    i, j, k = pt.points[0]
    assert k == 5 and m[i, j, k]
    # most interior: at least 5 voxels from the border of the 11 x 19 rectangle
    assert 9 <= i <= 9 and 11 <= j <= 19
    mk = derive_prompt(m, 2, label=3, name="x", mode="mask", slice_choice="middle")
    ((k_mask, plane),) = mk.masks
    assert k_mask == 5 and np.array_equal(plane, m[:, :, 5])
    # sagittal-like: propagate along i
    pt_i = derive_prompt(m, 0, label=1, name="y", mode="box")
    ((a, b),) = pt_i.boxes
    assert a[0] == b[0] and m[a[0]].any()


def test_evaluate_case_routes_prompts_and_scores_each_label():
    vol = Volume(np.zeros((20, 20, 12), dtype=np.int16), np.diag([1.5, 1.5, 3.0, 1.0]))
    gt = np.zeros(vol.shape, dtype=np.int64)
    gt[2:8, 2:8, 3:9] = 1
    gt[10:18, 10:16, 2:10] = 5
    seen = {}

    def fake_segment(volume, prompt_set):
        seen["prompts"] = prompt_set
        pred = gt.copy()
        pred[pred == 5] = 0
        pred[11:18, 10:16, 2:10] = 5  # label 5 loses one row of 8: Dice 2*7/(7+8)
        return SimpleNamespace(labels=SimpleNamespace(array=pred))

    rows = evaluate_case(vol, gt, {1: "a", 5: "b"}, fake_segment, case="c1", mode="box")
    ps = seen["prompts"]
    assert ps.labels == (1, 5) and ps.axis_index == 2
    assert all(len(o.boxes) == 1 for o in ps.objects)
    r1, r5 = rows
    assert (r1.label, r1.dice, r1.nsd, r1.hd95) == (1, 1.0, 1.0, 0.0)
    assert r5.dice == pytest.approx(2 * 7 / 15)
    assert r5.gt_voxels == 8 * 6 * 8 and r5.pred_voxels == 7 * 6 * 8
    table = format_table(rows)
    assert "c1" in table and "mean of 2" in table and "nsd@2mm" in table
    (s,) = summarize(rows)
    assert s["dice"] == pytest.approx((1 + 14 / 15) / 2)


def test_csv_and_nan(tmp_path):
    rows = [
        StructureResult("c", 1, "a", "box", 3, 0.0, 0.0, math.nan, 2.0, 10, 0),
        StructureResult("c", 2, "b", "box", 3, 0.5, 0.5, 4.0, 2.0, 10, 10),
    ]
    assert "nan" in format_table(rows)
    assert summarize(rows)[0]["hd95"] == 4.0  # NaN skipped
    text = write_csv(rows, tmp_path / "r.csv").read_text()
    assert text.splitlines()[0].startswith("case,label,name,prompt_mode,prompt_slice,dice")
    assert ",nan," in text


def test_each_structure_is_scored_on_its_own_mask_when_given():
    """Overlapping structures: the label map gives a contested voxel to one of them, the
    structure's own mask keeps it; the protocol scores the own mask."""
    vol = Volume(np.zeros((12, 12, 6), dtype=np.int16), np.eye(4))
    gt = np.zeros(vol.shape, dtype=np.int64)
    gt[2:6, 2:6, 1:5] = 1
    gt[6:10, 2:6, 1:5] = 2
    own = {1: gt == 1, 2: (gt == 2) | (gt == 1)}  # 2 over-segments into 1
    label_map = np.where(own[1], 1, np.where(own[2], 2, 0))  # 1 was added first: keeps its voxels

    def fake(volume, prompt_set):
        return SimpleNamespace(labels=SimpleNamespace(array=label_map), object_masks=own)

    r1, r2 = evaluate_case(vol, gt, {1: "a", 2: "b"}, fake)
    assert r1.dice == 1.0
    assert r2.dice == pytest.approx(2 * 64 / (128 + 64)) and r2.pred_voxels == 128
