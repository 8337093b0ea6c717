"""The measuring tools of the benchmarks: peak, FLOP counting, bf16 fidelity, runtimes, quality."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from sam2_med.models import LoadedModel, random_model, tiny_config
from sam2_med.phantom import make_phantom

ROOT = Path(__file__).resolve().parents[1]


def _benchmark(name: str, script: str):
    """A benchmark script imported as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _benchmark("bench", "propagation.py")


def test_matmul_peak_reports_a_size_and_a_rate(bench) -> None:
    r = bench.matmul_peak("float32", seconds=0.05, max_n=256)
    assert r["n"] == 256 and r["gflops"] > 0 and r["repeats"] >= 2


def test_flop_counter_counts_cpu_attention(bench) -> None:
    q = torch.randn(1, 2, 64, 32)
    k = torch.randn(1, 2, 48, 32)
    with bench.counting_flops() as c:
        torch.nn.functional.scaled_dot_product_attention(q, k, k)
    # two matrix products of 64 x 48 x 32 per head, 2 FLOP per multiply-add
    assert c.get_total_flops() == 2 * 2 * (2 * 64 * 48 * 32)


def test_module_flops_split_the_total(bench) -> None:
    from sam2_med import Volume
    from sam2_med.session import Session

    lm = LoadedModel.from_module(random_model(tiny_config(128)))
    vol = Volume(np.zeros((40, 40, 6), np.float32), np.eye(4), modality="CT")
    s = Session(lm, vol, window=(40, 400))
    s.add_points(s.add_object(), [[20, 20, 3]], [1])
    with bench.counting_flops() as c:
        list(s.propagate())
    split = bench._module_flops(c)
    assert set(split) == {*bench.MODULES, "other"}
    assert sum(split.values()) == c.get_total_flops()
    assert split["vision_encoder"] > 0 and split["memory_attention"] > 0 and split["other"] >= 0


def test_one_click_prompts_land_deep_inside_each_structure(bench) -> None:
    _vol, lab = make_phantom(shape=(48, 40, 12), orientation="RAS")
    arr = np.asarray(lab.array)
    prompts = bench._one_click_prompts(arr, 2, dict(lab.names))
    labels = sorted(int(v) for v in np.unique(arr) if v)
    assert [o["label"] for o in prompts["objects"]] == labels
    for o in prompts["objects"]:
        i, j, k, positive = o["points"][0]
        assert positive == 1 and arr[i, j, k] == o["label"]
        areas = (arr == o["label"]).sum(axis=(0, 1))
        assert areas[k] == areas.max()  # its largest slice


def test_bf16_fidelity_compares_every_object(bench) -> None:
    lm = LoadedModel.from_module(random_model(tiny_config(128)), precision="float32")
    vol, lab = make_phantom(shape=(48, 40, 6), orientation="RAS")
    rows = bench.bf16_fidelity(lm, [("small phantom", vol, lab)], log=lambda m: None)
    assert [r["label"] for r in rows] == sorted(int(v) for v in np.unique(lab.array) if v)
    for r in rows:
        assert 0.0 <= r["iou"] <= 1.0 and r["case"] == "small phantom"
        assert r["voxels_f32"] >= 0 and r["voxels_bf16"] >= 0
    assert any(r["voxels_f32"] > 0 for r in rows)


@pytest.fixture(scope="module")
def runtimes():
    return _benchmark("encoder_runtimes", "encoder_runtimes.py")


def test_runtime_agreement_flags_the_output_that_differs(runtimes) -> None:
    rng = np.random.default_rng(0)
    ref = [rng.normal(size=(16, 1, c)).astype(np.float32) for c in (8, 8, 8, 4, 4, 4)]
    same = runtimes.compare(ref, [r.copy() for r in ref], tol=1e-4)
    assert same["agrees"] and same["worst_rel_max"] == 0.0
    off = [r.copy() for r in ref]
    off[2][3, 0, 1] += 1e-2 * np.abs(ref[2]).max()  # 1 % of that output's range, one element
    bad = runtimes.compare(ref, off, tol=1e-4)
    assert not bad["agrees"]
    worst = max(bad["outputs"], key=lambda o: o["rel_max"])
    assert worst["name"] == runtimes.OUTPUT_NAMES[2]
    assert worst["rel_max"] == pytest.approx(1e-2, rel=1e-3)
    shape = runtimes.compare(ref, [*ref[:5], ref[5][:8]], tol=1e-4)
    assert not shape["agrees"] and "shape" in shape["outputs"][5]["error"]


@pytest.fixture(scope="module")
def quality():
    return _benchmark("quality", "quality.py")


def test_failure_breakdown_sorts_slices_into_classes(quality) -> None:
    # one structure on slices 1-5 of 8: slice 1 good, 2 partial, 3 declared absent (score <= 0,
    # nothing drawn), 4 drawn elsewhere (score > 0), 5 a gap in the structure; slices 6 and 7
    # drawn past its end, slice 0 empty
    row = {
        "gt_slices": [1, 5],
        "slice_dice": [None, 0.9, 0.4, 0.0, 0.05, None, 0.0, 0.0],
        "scores": [-3.0, 5.0, 2.0, -0.5, 1.0, -2.0, 0.5, 0.2],
        "areas": [0, 10, 6, 0, 3, 0, 4, 2],
        "gt_areas": [0, 10, 20, 30, 40, 0, 0, 0],
    }
    fb = quality.failure_breakdown([row])
    assert fb["inside"] == {"good": 1, "partial": 1, "lost_absent": 1, "lost_elsewhere": 1}
    assert fb["past_end"] == 2 and fb["past_end_pixels"] == 6
    assert fb["voxel_share"] == pytest.approx(
        {"good": 0.1, "partial": 0.2, "lost_absent": 0.3, "lost_elsewhere": 0.4}
    )
    # wrong voxels: missed 1 + 14.8 + 30 + 38.925, beside it 1 + 0.8 + 1.925, past its end 6
    wrong = 84.725 + 3.725 + 6
    assert fb["errors"] == pytest.approx(
        {"missed": 84.725 / wrong, "extra_inside": 3.725 / wrong, "past_end": 6 / wrong}
    )
    assert fb["below_target"]["n"] == 0  # the row has no 3D Dice
    below = quality.failure_breakdown([{**row, "click_dice": 0.5}, {**row, "click_dice": 0.95}])
    assert below["below_target"] == {"n": 1, "missed": 1, "extra_inside": 0, "past_end": 0}
    # results written before gt_areas existed: counts, no shares
    old = {k: v for k, v in row.items() if k != "gt_areas"}
    assert not {"voxel_share", "errors"} & set(quality.failure_breakdown([old]))


def test_threshold_sweep_counts_what_a_lower_threshold_would_draw(quality) -> None:
    # structure on slices 1-3 of 7: slice 2 lost with logit -0.15 (absent), slice 3 lost with
    # logit -0.6; outside, slice 0 empty at -0.05, slice 4 empty at -0.35, slice 5 drawn (not
    # "empty"), slice 6 not computed
    row = {
        "gt_slices": [1, 3],
        "slice_dice": [None, 0.9, 0.0, 0.0, None, 0.0, None],
        "scores": [-0.05, 3.0, -0.15, -0.6, -0.35, -0.2, None],
        "areas": [0, 10, 0, 0, 0, 4, 0],
    }
    ts = quality.threshold_sweep([row], thresholds=(-0.1, -0.2, -0.4, -1.0))
    assert ts["absent_inside"]["n"] == 2 and ts["empty_outside"]["n"] == 2
    assert ts["sweep"] == {
        "-0.1": {"rescued": 0, "new_past_end": 1},
        "-0.2": {"rescued": 1, "new_past_end": 1},
        "-0.4": {"rescued": 1, "new_past_end": 2},
        "-1": {"rescued": 2, "new_past_end": 2},
    }
    assert quality.threshold_sweep([])["absent_inside"] == {
        "n": 0,
        "percentiles_5_25_50_75_95": None,
    }
