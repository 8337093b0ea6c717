"""Segmentation quality of a trained model, and the engine behaviour that depends on it.

Run::

    python benchmarks/quality.py                       # the demo model, 20 unseen phantoms + real
    python benchmarks/quality.py --phantoms 5 --no-real
    python benchmarks/quality.py --checkpoint runs/x/last.pt --arch runs/x/arch.json

Writes ``--out`` (default ``benchmarks/results/quality.json``), a PNG plot of Dice per slice
along the axis beside it, and prints a table. Cases: ``--phantoms`` random phantoms from the
evaluation seeds (``phantom_seed("eval", 100 + i)``, or from ``--first-phantom``; seeds 0-3
validate training and are not used here), and, reported separately, the shared real CT and MR
volumes (``../shared/data/volumes``; their label maps are strong pseudo ground truth from
TotalSegmentator), for the structures the phantom has (liver, spleen, kidneys, aorta,
vertebrae).

Per structure (label) of every case, all through :class:`sam2_med.session.Session`, axial:

* **one click / one box**: the evaluation protocol's prompt (most interior pixel, or the
  bounding box, on the slice where the structure is largest), propagated both ways; 3D Dice.
* **corrections**: after the one-click run, 1, 2 and 3 simulated corrective clicks, each at the
  most interior pixel of the largest error region on the slice with the most wrong voxels
  (positive where the object was missed, negative on a false positive;
  :func:`sam2_med.evaluate.corrective_click`), then re-propagation.
* **stop rules**: ``stop_after_empty=N`` for N in ``--stop-after``: slices computed against
  slices holding the object, and the Dice change; ``converge_after=3`` for the corrections:
  slices recomputed and the Dice change.
* **where it fails**: every slice of the one-click mask, inside the structure's extent (its
  first to last slice) or past it, in classes: good (2D Dice >= 0.7), partial (0.1-0.7), lost
  (below 0.1) with the object score <= 0 (the model declared the object absent: SAM 2 then
  draws nothing) or with a mask elsewhere, and slices drawn past the structure's end; with
  each class's share of the structure's voxels, and the wrong voxels split into missed, drawn
  beside the structure on its slices and drawn past its ends (:func:`failure_breakdown`); and
  whether a lower object-score threshold would draw the slices declared absent without drawing
  past the ends (:func:`threshold_sweep`, from the recorded logits).
* **drift review**: slices whose 2D Dice is below 0.5 ("bad"); how many of them
  ``Session.suspicious_slices`` flags (recall) and how many it flags that are not bad (false
  alarms), for its defaults and a grid of its two thresholds.
* **bfloat16**: 3D IoU of the one-click masks under bfloat16 autocast against float32.
* **directions**: Dice of the slices below the prompt when the backward pass follows the forward
  pass in one memory bank (the session's design, "both directions") against a backward pass
  from the prompt alone (memory reset, as MedSAM2's CT script does: "forward only" memory).

Dice here is ``2|P & G| / (|P| + |G|)`` on the 3D masks (the definition MONAI's
``compute_dice`` implements, computed in numpy for speed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REAL = ROOT.parent / "shared" / "data" / "volumes"
REAL_CASES = ("ct_abdomen_small", "mr_abdomen_small", "ct_abdomen_pelvis")
REAL_STRUCTURES = ("liver", "spleen", "kidney_right", "kidney_left", "aorta", "vertebrae")
BOX_OFFSET = 1000
#: Stacks of more slices than this are reported apart ("one click by stack length").
LONG_STACK = 40
REVIEW_GRID = {
    "min_score": (-4.0, -2.0, 0.0, 2.0, 4.0, 6.0),
    "max_area_change": (0.2, 0.3, 0.5, 0.7),
}


def dice(p: np.ndarray, g: np.ndarray) -> float:
    den = int(p.sum()) + int(g.sum())
    return 1.0 if den == 0 else 2.0 * int((p & g).sum()) / den


def slice_dice(p: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
    """(n_slices,) 2D Dice per slice; NaN where both are empty."""
    other = tuple(a for a in range(3) if a != axis)
    inter = (p & g).sum(axis=other)
    den = p.sum(axis=other) + g.sum(axis=other)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2.0 * inter / np.maximum(den, 1), np.nan)


def _prompt(session: Any, label: int, prompt: Any) -> None:
    if len(prompt.boxes):
        session.add_box(label, *prompt.boxes[0])
    else:
        session.add_points(label, prompt.points, prompt.point_labels)


def run_case(
    lm: Any,
    lm_bf16: Any,
    name: str,
    volume: Any,
    gt: np.ndarray,
    structures: dict[int, str],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    from sam2_med.evaluate import corrective_click, derive_prompt
    from sam2_med.session import Session

    t0 = time.perf_counter()
    sess = Session(lm, volume, axis="axial", window="auto")
    ax = sess.axis_index
    prompts = {}
    for v, nm in structures.items():
        m = gt == v
        prompts[v] = {
            "point": derive_prompt(m, ax, label=v, name=nm, mode="point"),
            "box": derive_prompt(m, ax, label=v, name=nm, mode="box"),
        }
        sess.add_object(nm, v)
        sess.add_object(nm + " (box)", v + BOX_OFFSET)
    for v in structures:
        _prompt(sess, v, prompts[v]["point"])
        _prompt(sess, v + BOX_OFFSET, prompts[v]["box"])
    for _ in sess.propagate():
        pass
    rows = []
    for v, nm in structures.items():
        g = gt == v
        p = sess.object_volume(v)
        anchor = prompts[v]["point"].slices(ax)[0]
        sd = slice_dice(p, g, ax)
        gt_areas = g.sum(axis=tuple(a for a in range(3) if a != ax))  # (n_slices,) pixels
        gt_slices = np.flatnonzero(gt_areas)
        prof = sess.profile(v)
        rows.append(
            {
                "case": name,
                "label": v,
                "name": nm,
                "n_slices": int(sess.n_slices),
                "gt_slices": [int(gt_slices.min()), int(gt_slices.max())],
                "anchor": int(anchor),
                "click_dice": dice(p, g),
                "box_dice": dice(sess.object_volume(v + BOX_OFFSET), g),
                "slice_dice": [None if math.isnan(x) else round(float(x), 4) for x in sd],
                "scores": [None if math.isnan(x) else round(float(x), 3) for x in prof.scores],
                "areas": [None if math.isnan(x) else int(x) for x in prof.areas],
                "gt_areas": [int(x) for x in gt_areas],
                "flagged_default": sess.suspicious_slices(v),
                "computed_full": int(sum(1 for lab, _k in sess.stats.decoded if lab == v)),
            }
        )
    first = {v: sess.object_volume(v) for v in structures}  # before any correction
    # drift review: bad slices and what the review flags, over a grid of its thresholds
    for row in rows:
        v = row["label"]
        sd = np.array([np.nan if x is None else x for x in row["slice_dice"]])
        bad = {int(k) for k in np.flatnonzero(sd < 0.5) if k != row["anchor"]}
        row["bad_slices"] = sorted(bad)
        grid = {}
        for ms in REVIEW_GRID["min_score"]:
            for mac in REVIEW_GRID["max_area_change"]:
                flagged = set(sess.suspicious_slices(v, min_score=ms, max_area_change=mac))
                grid[f"{ms},{mac}"] = {"hit": len(flagged & bad), "false": len(flagged - bad)}
        row["review_grid"] = grid
    # corrections (one object at a time, in the same session: its features are cached)
    for row in rows:
        v = row["label"]
        g = gt == v
        ds = []
        before = len(sess.stats.decoded)
        for _c in range(args.corrections):
            click = corrective_click(sess.object_volume(v), g, ax)
            if click is None:
                ds.append(ds[-1] if ds else row["click_dice"])
                continue
            ijk, lab = click
            sess.add_points(v, ijk[None], [lab])
            for _ in sess.propagate():
                pass
            ds.append(dice(sess.object_volume(v), g))
        row["corrections_dice"] = ds
        row["corrections_recomputed"] = len(sess.stats.decoded) - before
    # converge_after on corrections: the same clicks, stopping runs that agree again
    conv = Session(lm, volume, axis="axial", window="auto", converge_after=3)
    conv._cache = sess._cache  # share the encoder features (same volume, same model)
    for row in rows:
        v = row["label"]
        g = gt == v
        conv.add_object(row["name"], v)
        _prompt(conv, v, prompts[v]["point"])
        for _ in conv.propagate():
            pass
        before = len(conv.stats.decoded)
        ds = []
        for _c in range(args.corrections):
            click = corrective_click(conv.object_volume(v), g, ax)
            if click is None:
                break
            conv.add_points(v, click[0][None], [click[1]])
            for _ in conv.propagate():
                pass
            ds.append(dice(conv.object_volume(v), g))
        row["converge_dice"] = ds
        row["converge_recomputed"] = len(conv.stats.decoded) - before
    # stop rules on the first propagation
    for n in args.stop_after:
        st = Session(lm, volume, axis="axial", window="auto", stop_after_empty=n)
        st._cache = sess._cache
        for row in rows:
            st.add_object(row["name"], row["label"])
            _prompt(st, row["label"], prompts[row["label"]]["point"])
        for _ in st.propagate():
            pass
        for row in rows:
            v = row["label"]
            computed = sum(1 for lab, _k in st.stats.decoded if lab == v)
            row.setdefault("stop", {})[str(n)] = {
                "dice": dice(st.object_volume(v), gt == v),
                "computed": int(computed),
            }
    # bfloat16 autocast against float32
    if lm_bf16 is not None and args.case_index < args.bf16_cases:
        bf = Session(lm_bf16, volume, axis="axial", window="auto")
        for row in rows:
            bf.add_object(row["name"], row["label"])
            _prompt(bf, row["label"], prompts[row["label"]]["point"])
        for _ in bf.propagate():
            pass
        for row in rows:
            a, b = bf.object_volume(row["label"]), first[row["label"]]
            union = int((a | b).sum())
            row["bf16_iou"] = 1.0 if union == 0 else int((a & b).sum()) / union
            row["bf16_dice"] = dice(a, gt == row["label"])
    # directions: backward half with the forward half in memory, or from the prompt alone
    for row in rows:
        v, a = row["label"], row["anchor"]
        if a == 0:
            continue
        g = gt == v
        below = [slice(None)] * 3
        below[ax] = slice(0, a)
        below = tuple(below)
        rs = Session(lm, volume, axis="axial", window="auto", slice_range=(0, a))
        rs._cache = sess._cache
        rs.add_object(row["name"], v)
        _prompt(rs, v, prompts[v]["point"])
        for _ in rs.propagate():
            pass
        row["below_dice_both"] = dice(first[v][below], g[below])
        row["below_dice_reset"] = dice(rs.object_volume(v)[below], g[below])
    secs = time.perf_counter() - t0
    for row in rows:
        row["case_seconds"] = round(secs, 1)
    return rows


#: 2D Dice classes of :func:`failure_breakdown`: lost below the first, good from the second.
LOST, GOOD = 0.1, 0.7
#: The issue's target for the median one-click 3D Dice (:func:`failure_breakdown`'s
#: ``below_target``).
TARGET = 0.9


def _slice_class(r: dict[str, Any], k: int) -> str | None:
    """Slice ``k`` of a :func:`run_case` row in :func:`failure_breakdown`'s classes.

    Inside the structure's extent: ``"good"``, ``"partial"``, ``"lost_absent"``,
    ``"lost_elsewhere"``, or None for a gap in the structure with nothing drawn; outside it:
    ``"past_end"`` (drawn) or ``"empty_outside"``.
    """
    first, last = r["gt_slices"]
    if not first <= k <= last:
        return "past_end" if r["areas"][k] else "empty_outside"
    d = r["slice_dice"][k]
    if d is None:
        return None
    if d >= GOOD:
        return "good"
    if d >= LOST:
        return "partial"
    score = r["scores"][k]
    return "lost_absent" if score is not None and score <= 0 else "lost_elsewhere"


def failure_breakdown(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the one-click masks fail, slice by slice.

    Parameters
    ----------
    rows : list of dict
        :func:`run_case` rows. Per row, indexed by slice along the propagation axis:
        ``slice_dice`` (2D Dice, None where mask and ground truth are both empty),
        ``scores`` (the object-score logit, None where the slice was not computed),
        ``areas`` (predicted pixels), ``gt_areas`` (ground-truth pixels; older results lack
        it, and then no voxel shares are given), and ``gt_slices`` (first and last slice
        holding the structure).

    Returns
    -------
    dict
        ``inside``: slices from the first to the last slice holding the structure, in classes
        ``good`` (Dice >= ``GOOD``), ``partial``, ``lost_absent`` (Dice < ``LOST`` with the
        object score <= 0: SAM 2 declared the object absent and drew nothing) and
        ``lost_elsewhere`` (Dice < ``LOST``, the object score > 0); ``voxel_share``: each
        class's share of the ground-truth voxels (when ``gt_areas`` are there); ``past_end``:
        slices outside that range with a non-empty mask, and ``past_end_pixels`` their
        predicted pixels. With ``gt_areas``, also ``errors``: the shares of all wrong voxels
        that are ``missed`` (ground truth not drawn), ``extra_inside`` (drawn outside the
        structure on its slices) and ``past_end`` (drawn on slices past its ends), and
        ``below_target``: the structures with a 3D Dice below ``TARGET`` (``n``) counted by
        their largest of these three errors. A slice's overlap is recovered from its Dice and
        areas (``Dice * (predicted + true) / 2``).
    """
    classes = ("good", "partial", "lost_absent", "lost_elsewhere")
    inside = dict.fromkeys(classes, 0)
    vox = dict.fromkeys(classes, 0)
    have_vox = all("gt_areas" in r for r in rows)
    past, past_px = 0, 0
    err_kinds = ("missed", "extra_inside", "past_end")
    errors = dict.fromkeys(err_kinds, 0.0)
    below: dict[str, int] = {"n": 0, **dict.fromkeys(err_kinds, 0)}
    for r in rows:
        row_err = dict.fromkeys(err_kinds, 0.0)
        for k, d in enumerate(r["slice_dice"]):
            area = r["areas"][k] or 0
            c = _slice_class(r, k)
            if c in ("past_end", "empty_outside"):
                past += c == "past_end"
                past_px += area
                row_err["past_end"] += area
                continue
            if have_vox:
                true = r["gt_areas"][k]
                inter = 0.0 if d is None else d * (area + true) / 2
                row_err["missed"] += true - inter
                row_err["extra_inside"] += area - inter
            if c is None:  # a gap in the structure, drawn nothing: nothing to count
                continue
            inside[c] += 1
            if have_vox:
                vox[c] += r["gt_areas"][k]
        for e in err_kinds:
            errors[e] += row_err[e]
        if have_vox and r.get("click_dice") is not None and r["click_dice"] < TARGET:
            below["n"] += 1
            below[max(err_kinds, key=row_err.__getitem__)] += 1
    out: dict[str, Any] = {"inside": inside, "past_end": past, "past_end_pixels": past_px}
    total = sum(vox.values())
    if have_vox and total:
        out["voxel_share"] = {c: vox[c] / total for c in classes}
        wrong = sum(errors.values())
        out["errors"] = {e: (errors[e] / wrong if wrong else 0.0) for e in err_kinds}
        out["below_target"] = below
    return out


#: Object-score thresholds :func:`threshold_sweep` tries below SAM 2's 0.
SWEEP = (-0.1, -0.2, -0.3, -0.4, -0.5, -1.0)


def threshold_sweep(
    rows: list[dict[str, Any]], thresholds: tuple[float, ...] = SWEEP
) -> dict[str, Any]:
    """Would a lower object-score threshold draw the slices declared absent inside structures?

    SAM 2 draws a slice when its object-score logit is > 0. This counts, from the recorded
    logits of the one-click runs, which slices a threshold ``t < 0`` would turn from "absent"
    to "drawn": inside a structure, the lost slices declared absent (:func:`failure_breakdown`'s
    ``lost_absent``, the misses it would give a chance), and outside it, the empty slices with a
    logit in ``(t, 0]`` (new drawings past its end). A first-order estimate: a slice drawn
    changes the memory of the slices after it, which this does not model. It tells whether the
    score separates the two groups at all; if it does not, no threshold helps.

    Parameters
    ----------
    rows : list of dict
        :func:`run_case` rows (``gt_slices``, ``slice_dice``, ``scores``, ``areas``; see
        :func:`failure_breakdown`).
    thresholds : tuple of float
        Logit thresholds below 0.

    Returns
    -------
    dict
        ``absent_inside`` and ``empty_outside``: the number of such slices and the 5th, 25th,
        50th, 75th and 95th percentiles of their logits; ``sweep``: per threshold
        (as a string), ``rescued`` (absent inside, logit > t) and ``new_past_end`` (empty
        outside, logit > t).
    """
    inside: list[float] = []
    outside: list[float] = []
    for r in rows:
        for k, score in enumerate(r["scores"]):
            if score is None or score > 0:
                continue
            c = _slice_class(r, k)
            if c == "lost_absent":
                inside.append(score)
            elif c == "empty_outside":
                outside.append(score)
    a, b = np.asarray(inside, float), np.asarray(outside, float)

    def spread(x: np.ndarray) -> dict[str, Any]:
        q = np.percentile(x, [5, 25, 50, 75, 95]).round(3).tolist() if x.size else None
        return {"n": int(x.size), "percentiles_5_25_50_75_95": q}

    return {
        "absent_inside": spread(a),
        "empty_outside": spread(b),
        "sweep": {
            f"{t:g}": {"rescued": int((a > t).sum()), "new_past_end": int((b > t).sum())}
            for t in thresholds
        },
    }


def _q(values: list[float]) -> dict[str, float | int | None]:
    a = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if a.size == 0:
        return {"n": 0, "median": None, "q1": None, "q3": None, "mean": None}
    return {
        "n": int(a.size),
        "median": float(np.median(a)),
        "q1": float(np.percentile(a, 25)),
        "q3": float(np.percentile(a, 75)),
        "mean": float(a.mean()),
    }


def summarize(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"n_structures": len(rows), "n_cases": len({r["case"] for r in rows})}
    if not rows:
        return out
    out["click_dice"] = _q([r["click_dice"] for r in rows])
    out["box_dice"] = _q([r["box_dice"] for r in rows])
    out["per_structure"] = {
        nm: {
            "click": _q([r["click_dice"] for r in rows if r["name"] == nm]),
            "box": _q([r["box_dice"] for r in rows if r["name"] == nm]),
        }
        for nm in sorted({r["name"] for r in rows})
    }
    # thin-slice stacks are longer propagations: Dice falls with the number of slices
    short = [r["click_dice"] for r in rows if r["n_slices"] <= LONG_STACK]
    long = [r["click_dice"] for r in rows if r["n_slices"] > LONG_STACK]
    out["click_dice_by_slices"] = {
        key: _q(values)
        for key, values in ((f"<={LONG_STACK}", short), (f">{LONG_STACK}", long))
        if values
    }
    out["corrections"] = {
        str(c + 1): _q([r["corrections_dice"][c] for r in rows if len(r["corrections_dice"]) > c])
        for c in range(args.corrections)
    }
    gains = [r["corrections_dice"][-1] - r["click_dice"] for r in rows if r["corrections_dice"]]
    out["corrections"]["gain_after_last_mean"] = float(np.mean(gains)) if gains else None
    out["corrections"]["improved_fraction"] = (
        float(np.mean([g > 0 for g in gains])) if gains else None
    )
    conv = [r for r in rows if r.get("converge_dice")]
    if conv:
        out["converge_after_3"] = {
            "dice_after_corrections": _q([r["converge_dice"][-1] for r in conv]),
            "dice_change_vs_full_mean": float(
                np.mean(
                    [
                        r["converge_dice"][-1] - r["corrections_dice"][len(r["converge_dice"]) - 1]
                        for r in conv
                    ]
                )
            ),
            "slices_recomputed_mean": float(np.mean([r["converge_recomputed"] for r in conv])),
            "slices_recomputed_without_mean": float(
                np.mean([r["corrections_recomputed"] for r in conv])
            ),
        }
    held = [r["gt_slices"][1] - r["gt_slices"][0] + 1 for r in rows]
    out["slices"] = {
        "holding_object_mean": float(np.mean(held)),
        "computed_without_stop_mean": float(np.mean([r["computed_full"] for r in rows])),
    }
    for n in args.stop_after:
        key = str(n)
        out["slices"][f"stop_after_empty_{n}"] = {
            "computed_mean": float(np.mean([r["stop"][key]["computed"] for r in rows])),
            "dice": _q([r["stop"][key]["dice"] for r in rows]),
            "dice_change_mean": float(
                np.mean([r["stop"][key]["dice"] - r["click_dice"] for r in rows])
            ),
            "dice_change_worst": float(
                np.min([r["stop"][key]["dice"] - r["click_dice"] for r in rows])
            ),
        }
    out["failures"] = failure_breakdown(rows)
    out["threshold_sweep"] = threshold_sweep(rows)
    bad = sum(len(r["bad_slices"]) for r in rows)
    computed_slices = sum(sum(1 for x in r["scores"] if x is not None) for r in rows)
    review = {"bad_slices": bad, "slices_reviewed": computed_slices}
    for key in ["default", *rows[0]["review_grid"]]:
        if key == "default":
            hit = sum(len(set(r["flagged_default"]) & set(r["bad_slices"])) for r in rows)
            false = sum(len(set(r["flagged_default"]) - set(r["bad_slices"])) for r in rows)
        else:
            hit = sum(r["review_grid"][key]["hit"] for r in rows)
            false = sum(r["review_grid"][key]["false"] for r in rows)
        review[key] = {
            "recall": hit / bad if bad else None,
            "flagged_good": false,
            "precision": hit / (hit + false) if hit + false else None,
        }

    # the setting with the best F1 (recall and precision weighed equally)
    def f1(v: dict[str, Any]) -> float:
        r, p = v["recall"] or 0.0, v["precision"] or 0.0
        return 2 * r * p / (r + p) if r + p else 0.0

    grid_keys = [k for k in review if "," in k]
    if grid_keys and bad:
        best = max(grid_keys, key=lambda k: f1(review[k]))
        review["best_f1"] = {"setting": best, **review[best], "f1": f1(review[best])}
        review["default"]["f1"] = f1(review["default"])
    out["drift_review"] = review
    bf = [r["bf16_iou"] for r in rows if "bf16_iou" in r]
    if bf:
        out["bf16"] = {
            "mask_iou": _q(bf),
            "dice_change_mean": float(
                np.mean([r["bf16_dice"] - r["click_dice"] for r in rows if "bf16_dice" in r])
            ),
        }
    dirs = [r for r in rows if "below_dice_both" in r]
    if dirs:
        out["directions"] = {
            "below_prompt_both": _q([r["below_dice_both"] for r in dirs]),
            "below_prompt_reset": _q([r["below_dice_reset"] for r in dirs]),
            "difference_mean": float(
                np.mean([r["below_dice_both"] - r["below_dice_reset"] for r in dirs])
            ),
        }
    return out


def _fmt(q: dict[str, Any] | None) -> str:
    if not q or q.get("median") is None:
        return "-"
    return f"{q['median']:.3f} [{q['q1']:.3f}-{q['q3']:.3f}]"


def table(name: str, s: dict[str, Any], args: argparse.Namespace) -> str:
    if not s.get("n_structures"):
        return f"{name}: no structures"
    lines = [f"{name}: {s['n_cases']} case(s), {s['n_structures']} structures (median [IQR])"]
    lines.append(f"  {'structure':<14} {'n':>3}  {'one click':<22} {'one box':<22}")
    for nm, q in s["per_structure"].items():
        lines.append(
            f"  {nm:<14} {q['click']['n']:>3}  {_fmt(q['click']):<22} {_fmt(q['box']):<22}"
        )
    lines.append(
        f"  {'all':<14} {s['click_dice']['n']:>3}  {_fmt(s['click_dice']):<22} {_fmt(s['box_dice']):<22}"
    )
    by = s.get("click_dice_by_slices", {})
    if len(by) > 1:
        lines.append(
            "  one click by stack length: "
            + ", ".join(f"{k} slices: {_fmt(q)} (n {q['n']})" for k, q in by.items())
        )
    c = s["corrections"]
    if c["gain_after_last_mean"] is not None:  # --corrections 0: no line
        lines.append(
            "  corrective clicks: "
            + ", ".join(f"{k}: {_fmt(c[k])}" for k in map(str, range(1, args.corrections + 1)))
            + f"; mean gain {c['gain_after_last_mean']:+.3f}, "
            f"improved {c['improved_fraction']:.0%}"
        )
    sl = s["slices"]
    lines.append(
        f"  slices: holding the object {sl['holding_object_mean']:.1f}, computed without stop rule "
        f"{sl['computed_without_stop_mean']:.1f}"
    )
    for n in args.stop_after:
        st = sl[f"stop_after_empty_{n}"]
        lines.append(
            f"    stop_after_empty={n}: computed {st['computed_mean']:.1f}, Dice change mean "
            f"{st['dice_change_mean']:+.4f} (worst {st['dice_change_worst']:+.4f})"
        )
    if "converge_after_3" in s:
        cv = s["converge_after_3"]
        lines.append(
            f"    converge_after=3 on corrections: Dice change mean {cv['dice_change_vs_full_mean']:+.4f}, "
            f"slices recomputed per object {cv['slices_recomputed_mean']:.1f} "
            f"(without: {cv['slices_recomputed_without_mean']:.1f})"
        )
    fb = s.get("failures")
    if fb:
        i, share = fb["inside"], fb.get("voxel_share")

        def cls(c: str) -> str:
            return f"{i[c]}" + (f" ({share[c]:.0%} of voxels)" if share else "")

        lines.append(
            f"  slices inside the structure: good (2D Dice >= {GOOD}) {cls('good')}, partial "
            f"{cls('partial')}, lost with object score <= 0 {cls('lost_absent')}, lost to a "
            f"mask elsewhere {cls('lost_elsewhere')}; drawn past its end {fb['past_end']} "
            f"slices ({fb['past_end_pixels']} pixels)"
        )
        if "errors" in fb:
            er, bt = fb["errors"], fb["below_target"]
            lines.append(
                f"  wrong voxels: missed {er['missed']:.0%}, drawn beside it on its slices "
                f"{er['extra_inside']:.0%}, drawn past its ends {er['past_end']:.0%}; "
                f"structures below Dice {TARGET}: {bt['n']} (mostly missed {bt['missed']}, "
                f"beside {bt['extra_inside']}, past the ends {bt['past_end']})"
            )
    ts = s.get("threshold_sweep")
    if ts and ts["absent_inside"]["n"]:
        sw = ", ".join(f"{t}: {v['rescued']} / {v['new_past_end']}" for t, v in ts["sweep"].items())
        lines.append(
            f"  object-score threshold below 0 (slices declared absent inside drawn / empty "
            f"slices past the end drawn): {sw}"
        )
    r = s["drift_review"]
    d = r["default"]
    rec = "-" if d["recall"] is None else f"{d['recall']:.2f}"
    lines.append(
        f"  drift review (defaults): {r['bad_slices']} bad slices (Dice < 0.5) of "
        f"{r['slices_reviewed']}; recall {rec}, flagged good slices {d['flagged_good']}"
    )
    if "best_f1" in r:
        b = r["best_f1"]
        ms, mac = b["setting"].split(",")
        lines.append(
            f"    best F1 {b['f1']:.2f} at min_score={ms}, max_area_change={mac}: recall "
            f"{b['recall']:.2f}, flagged good slices {b['flagged_good']}"
        )
    if "bf16" in s:
        lines.append(
            f"  bfloat16 vs float32: mask IoU {_fmt(s['bf16']['mask_iou'])}, Dice change "
            f"{s['bf16']['dice_change_mean']:+.4f}"
        )
    if "directions" in s:
        dd = s["directions"]
        lines.append(
            f"  below the prompt: both directions {_fmt(dd['below_prompt_both'])}, memory reset "
            f"{_fmt(dd['below_prompt_reset'])} (mean difference {dd['difference_mean']:+.4f})"
        )
    return "\n".join(lines)


def plot(groups: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4), squeeze=False)
    for axp, (title, rows) in zip(axes[0], groups.items(), strict=True):
        by: dict[int, list[float]] = {}
        for r in rows:
            for k, d in enumerate(r["slice_dice"]):
                if d is not None:
                    by.setdefault(k - r["anchor"], []).append(d)
        if not by:
            continue
        xs = np.array(sorted(by))
        med = np.array([np.median(by[x]) for x in xs])
        q1 = np.array([np.percentile(by[x], 25) for x in xs])
        q3 = np.array([np.percentile(by[x], 75) for x in xs])
        n = np.array([len(by[x]) for x in xs])
        keep = n >= max(3, 0.1 * n.max())
        axp.fill_between(xs[keep], q1[keep], q3[keep], alpha=0.3, label="IQR")
        axp.plot(xs[keep], med[keep], label="median")
        for r in rows[:: max(1, len(rows) // 6)] if len(rows) <= 12 else []:
            ks = [k - r["anchor"] for k, d in enumerate(r["slice_dice"]) if d is not None]
            ds = [d for d in r["slice_dice"] if d is not None]
            axp.plot(ks, ds, lw=0.6, alpha=0.6, label=f"{r['case']} {r['name']}")
        axp.axvline(0, color="k", lw=0.5)
        axp.set_ylim(0, 1.02)
        axp.set_xlabel("slice - prompted slice (axial)")
        axp.set_ylabel("2D Dice (one click)")
        axp.set_title(title)
        axp.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sam2med_demo_phantom", help="registered model")
    p.add_argument("--checkpoint", help="a checkpoint file instead (with --arch)")
    p.add_argument("--arch", help="architecture JSON of --checkpoint")
    p.add_argument("--phantoms", type=int, default=20, help="unseen phantoms (default 20)")
    p.add_argument(
        "--first-phantom",
        type=int,
        default=100,
        help="first evaluation seed index (default 100; 120 onwards: a second, held-out set)",
    )
    p.add_argument("--no-real", action="store_true", help="skip the shared real volumes")
    p.add_argument("--corrections", type=int, default=3)
    p.add_argument("--stop-after", type=int, nargs="*", default=[1, 2, 3])
    p.add_argument(
        "--bf16-cases",
        type=int,
        default=5,
        help="phantoms (and every real case) also run under bfloat16 autocast (default 5; it is "
        "emulated, so slow, on CPUs without native bfloat16)",
    )
    p.add_argument(
        "--protocol",
        choices=("sam2", "medsam2"),
        help="the pipeline around the model (default: the model's own; sam2_med.protocols)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality.json")
    args = p.parse_args(argv)

    import torch

    from sam2_med.api import read_arch
    from sam2_med.evaluate import load_ground_truth, read_label_names
    from sam2_med.io import load_volume
    from sam2_med.models import load_model
    from sam2_med.phantom import make_random_phantom, phantom_seed
    from sam2_med.session import resolve_protocol

    torch.set_num_threads(args.threads)
    arch = read_arch(args.arch) if args.arch else None
    name = None if args.checkpoint else args.model
    # float32 as the reference (the default precision "auto" would pick bfloat16 on AMX CPUs)
    common = dict(checkpoint=args.checkpoint, arch=arch, protocol=args.protocol)
    lm = load_model(name, precision="float32", **common)
    lm_bf16 = load_model(name, precision="bfloat16", **common) if args.bf16_cases > 0 else None
    t0 = time.perf_counter()
    groups: dict[str, list[dict[str, Any]]] = {"phantoms": [], "real CT": [], "real MR": []}
    for i in range(args.phantoms):
        seed = phantom_seed("eval", args.first_phantom + i)
        vol, lab = make_random_phantom(seed)
        gt = np.asarray(lab.array)
        present = {int(v): lab.names[int(v)] for v in np.unique(gt) if v and (gt == v).sum() >= 20}
        args.case_index = i
        rows = run_case(lm, lm_bf16, f"phantom_{seed}", vol, gt, present, args)
        groups["phantoms"] += rows
        print(
            f"phantom {seed}: click Dice "
            + ", ".join(f"{r['name']} {r['click_dice']:.3f}" for r in rows),
            flush=True,
        )
    if not args.no_real:
        for case in REAL_CASES:
            folder = REAL / case
            if not folder.is_dir():
                print(f"skipped {case}: {folder} absent", flush=True)
                continue
            vol = load_volume(folder / "image.nii.gz")
            gt = load_ground_truth(folder / "labels.nii.gz", vol)
            names = read_label_names(folder / "labels.json")
            present = {
                v: n for v, n in names.items() if n in REAL_STRUCTURES and (gt == v).sum() >= 20
            }
            args.case_index = -1  # every real case gets the bfloat16 run
            rows = run_case(lm, lm_bf16, case, vol, gt, present, args)
            groups["real MR" if vol.modality == "MR" or case.startswith("mr") else "real CT"] += (
                rows
            )
            print(
                f"{case}: click Dice "
                + ", ".join(f"{r['name']} {r['click_dice']:.3f}" for r in rows),
                flush=True,
            )
    summary = {k: summarize(v, args) for k, v in groups.items() if v}
    result = {
        "command": "python benchmarks/quality.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": lm.name,
        "model_source": lm.source,
        "image_size": lm.image_size,
        "protocol": "/".join(resolve_protocol(lm)),
        "seconds": round(time.perf_counter() - t0, 1),
        "torch_threads": args.threads,
        "summary": summary,
        "rows": groups,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    png = args.out.with_suffix(".png")
    plot({k: v for k, v in groups.items() if v}, png)
    for k, s in summary.items():
        print(table(k, s, args))
    print(f"wrote {args.out} and {png} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
