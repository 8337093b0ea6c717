"""The demo model shipped in the package: registered, verified, offline, and it segments
unseen phantoms (the acceptance numbers of benchmarks/quality.py, checked on a few cases)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from sam2_med.models import get_spec, list_models, load_model

NAME = "sam2med_demo_phantom"
#: The quality benchmark's 20 unseen phantoms (evaluation seeds 100-119), so that this test and
#: ``benchmarks/quality.py`` measure the same thing: three phantoms (seeds 200-202, used before)
#: read a median of 0.94 for weights whose median on these 20 is 0.64.
PHANTOMS = range(100, 120)
#: median one-click Dice the shipped model must keep on them (measured, below)
MEASURED_FLOOR = 0.7  # measured 0.753 (120 structures; 0.643 for the previous weights)


@pytest.fixture(scope="module")
def demo():
    return load_model(NAME, offline=True)


def test_registered_with_checksum_licence_and_statement(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SAM2_MED_CACHE", str(tmp_path / "empty-cache"))
    assert NAME in list_models()
    spec = get_spec(NAME)
    path = spec.local_file
    assert path is not None and path.parent.name == "weights" and path.is_file()
    assert path.stat().st_size <= 8 * 2**20
    assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.sha256
    assert spec.licence == "Apache-2.0"
    assert "synthetic phantoms" in spec.licence_text and "not for clinical" in spec.licence_text
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["sha256"] == spec.sha256 and record["training"]["seed"] == 0
    assert record["training"]["command"] == "python scripts/train_demo_model.py"
    from sam2_med.models import cached_weights

    (entry,) = [e for e in cached_weights() if e.name == NAME]
    assert entry.status == "local file"


def test_loads_offline_from_the_package(demo) -> None:
    assert demo.name == NAME and demo.image_size == 128
    assert str(get_spec(NAME).local_file) in demo.source
    assert "not for clinical" in demo.licence


def test_weights_import_refuses_a_shipped_model(tmp_path) -> None:
    from sam2_med.models import import_weights
    from sam2_med.models.errors import CheckpointError

    f = tmp_path / "x.pt"
    f.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="nothing to import"):
        import_weights(f, NAME, cache_dir=tmp_path)


def _dice(p: np.ndarray, g: np.ndarray) -> float:
    return 2 * float((p & g).sum()) / max(1, int(p.sum()) + int(g.sum()))


def _one_click_runs(demo):
    """One click per structure on the benchmark's unseen phantoms (its protocol), then one
    corrective click on the worst slice: (Dice before, Dice after) per structure."""
    from sam2_med.evaluate import corrective_click, derive_prompt
    from sam2_med.phantom import make_random_phantom, phantom_seed
    from sam2_med.session import Session

    rows = []
    for i in PHANTOMS:
        vol, lab = make_random_phantom(phantom_seed("eval", i))
        gt = np.asarray(lab.array)
        sess = Session(demo, vol)
        labels = [int(v) for v in np.unique(gt) if v and (gt == v).sum() >= 20]
        for v in labels:
            sess.add_object(lab.names[v], v)
            p = derive_prompt(gt == v, sess.axis_index, label=v, name="", mode="point")
            sess.add_points(v, p.points, p.point_labels)
        for _ in sess.propagate():
            pass
        for v in labels:
            before = _dice(sess.object_volume(v), gt == v)
            click = corrective_click(sess.object_volume(v), gt == v, sess.axis_index)
            if click is not None:
                sess.add_points(v, click[0][None], [click[1]])
                for _ in sess.propagate():
                    pass
            rows.append((before, _dice(sess.object_volume(v), gt == v)))
    return np.array(rows)


@pytest.fixture(scope="module")
def one_click(demo):
    return _one_click_runs(demo)


def test_corrective_clicks_raise_dice_on_average(one_click) -> None:
    """Issue 10's acceptance: one corrective click on the worst slice raises Dice on average
    (measured: mean +0.015, 60 % of 120 structures improved; +0.027 and 66 % for the previous
    weights, -0.002 and 51 % for a stage 2 trained without ``correct_every``, which the
    fraction's floor of 55 % tells apart)."""
    gains = one_click[:, 1] - one_click[:, 0]
    assert np.mean(gains) > 0, np.round(gains, 3)
    assert np.mean(gains > 0) >= 0.55, np.round(gains, 3)


def test_the_model_sees_the_phantom(one_click) -> None:
    """The shipped model keeps the quality it was measured at (a retrained or broken model
    that segments worse fails here)."""
    assert np.median(one_click[:, 0]) >= MEASURED_FLOOR, sorted(np.round(one_click[:, 0], 3))


@pytest.mark.xfail(
    strict=True,
    reason="issue 10's target (median one-click Dice >= 0.90 on unseen phantoms) is not reached "
    "by the shipped demo model; see the README's demo model section for the measured values",
)
def test_median_one_click_dice_reaches_0_90(one_click) -> None:
    assert np.median(one_click[:, 0]) >= 0.90, sorted(np.round(one_click[:, 0], 3))
