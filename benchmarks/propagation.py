"""Propagation speed and memory of sam2_med.Session against a plain transformers video loop.

Run::

    python benchmarks/propagation.py                 # 512 px, the whole 112-slice CT
    python benchmarks/propagation.py --size 1024 --slices 24
    python benchmarks/propagation.py --quick         # a short smoke run
    python benchmarks/propagation.py --repeat 3      # alternate 3 runs each, keep the fastest

What it measures, each in a fresh subprocess so that peak RSS is clean:

* ``reference``: what a user would write with transformers alone: every slice preprocessed into
  one video tensor, one ``Sam2VideoInferenceSession`` over all frames, a click on the middle
  slice, ``propagate_in_video_iterator`` forward then in reverse.
* ``session``: ``Session.add_points`` on the same slice and voxel, ``propagate()``; then a
  one-slice correction at 3/4 of the volume (a click on a tracked slice, decoded with the memory
  of the slices around it) and its re-propagation.
* ``session x4``: the volume tiled 4 times along the slice axis (peak memory against the
  single volume; the feature cache is bounded, not the volume length).
* with ``--variants``: bfloat16 autocast (masks compared with float32), a batched image
  encoder, and the early stop of corrections (``converge_after``).

The model is SAM 2.1 hiera-tiny-shaped (transformers' full tiny dimensions at the chosen input
size) with random weights, so masks mean nothing and speed and memory are what count; the object
score head is biased to "present" so that every slice is decoded. Timings on a shared machine
vary by 2-3x between runs; compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "volumes" / "ct_abdomen_pelvis"
WINDOW = "soft_tissue"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _setup(args: argparse.Namespace):
    """Volume (cropped/tiled along the axial axis), model and the two click voxels."""
    import torch

    from sam2_med.geometry import slice_axis
    from sam2_med.io import load_volume
    from sam2_med.models import LoadedModel
    from sam2_med.models.arch import arch_to_config
    from sam2_med.models.testing import random_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker == "session" and args.malloc == "cli":
        from sam2_med._malloc import tune_malloc_for_propagation

        tune_malloc_for_propagation()  # what the sam2-med command line does at start
    vol = load_volume(DATA / "image.nii.gz").replace(modality="CT")
    labels = np.asarray(load_volume(DATA / "labels.nii.gz").array)
    ax = slice_axis(vol.affine, "axial")
    n = vol.shape[ax] if args.slices is None else min(args.slices, vol.shape[ax])
    lo = (vol.shape[ax] - n) // 2
    take = np.arange(lo, lo + n)
    arr = np.take(np.asarray(vol.array), take, axis=ax)
    labels = np.take(labels, take, axis=ax)
    if args.tile > 1:
        arr = np.concatenate([arr] * args.tile, axis=ax)
        labels = np.concatenate([labels] * args.tile, axis=ax)
    vol = vol.replace(array=arr)
    model = random_model(arch_to_config({"image_size": args.size}), seed=0)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    lm = LoadedModel.from_module(model, name="random sam2.1-tiny", dtype=dtype)

    def click(k: int) -> list[int]:
        sl = np.take(labels, k, axis=ax)
        pts = np.argwhere(sl == 5)  # liver
        if len(pts) == 0:
            pts = np.argwhere(sl > 0)
        a, b = pts[len(pts) // 2] if len(pts) else (sl.shape[0] // 2, sl.shape[1] // 2)
        ijk = [0, 0, 0]
        u, v = (x for x in range(3) if x != ax)
        ijk[ax], ijk[u], ijk[v] = k, int(a), int(b)
        return ijk

    n_all = vol.shape[ax]
    return vol, lm, ax, click(n_all // 2), click((3 * n_all) // 4)


def worker_reference(args: argparse.Namespace) -> dict:
    import torch
    from transformers import Sam2VideoInferenceSession

    from sam2_med.frames import SliceStream

    vol, lm, _ax, first, _ = _setup(args)
    model = lm.model
    t0 = time.perf_counter()
    stream = SliceStream(vol, axis="axial", intensity=WINDOW, image_size=args.size)
    video = torch.cat(
        [stream.frames(range(k, min(k + 8, len(stream)))) for k in range(0, len(stream), 8)]
    )
    size = args.size
    sess = Sam2VideoInferenceSession(
        video=video, video_height=size, video_width=size, dtype=torch.float32
    )
    k0, xy = stream.voxel_to_model_xy(np.array([first]))
    k0 = int(k0[0])
    sess.obj_id_to_idx(1)
    sess.add_point_inputs(
        0,
        k0,
        {
            "point_coords": torch.tensor(xy, dtype=torch.float32)[None, None],
            "point_labels": torch.tensor([[[1]]], dtype=torch.int32),
        },
    )
    sess.obj_with_new_inputs = [1]
    n = 0
    with torch.inference_mode():
        model(inference_session=sess, frame_idx=k0)
        for rev in (False, True):
            for _ in model.propagate_in_video_iterator(sess, start_frame_idx=k0, reverse=rev):
                n += 1
    seconds = time.perf_counter() - t0
    return {"slices": len(stream), "seconds": seconds, "peak_rss_mb": _peak_rss_mb()}


def worker_session(args: argparse.Namespace) -> dict:
    from sam2_med.session import Session

    vol, lm, _ax, first, corr = _setup(args)
    t0 = time.perf_counter()
    s = Session(
        lm,
        vol,
        axis="axial",
        window=WINDOW,
        memory_budget_mb=args.budget_mb,
        encoder_batch=args.encoder_batch,
        converge_after=args.converge_after,
    )
    lab = s.add_object("liver")
    s.add_points(lab, [first], [1])
    for _ in s.propagate():
        pass
    full = time.perf_counter() - t0
    enc_full = s.stats.encoder_calls
    out: dict = {
        "slices": s.n_slices,
        "seconds": full,
        "encoder_calls": enc_full,
        "cache_mb": s.stats.cache_peak_bytes / 2**20,
    }
    if not args.no_correction:
        s.stats.reset()
        t1 = time.perf_counter()
        s.add_points(lab, [corr], [1])
        for _ in s.propagate():
            pass
        out["correction_seconds"] = time.perf_counter() - t1
        out["correction_decoded"] = len(s.stats.decoded_slices)
        out["correction_encoded"] = s.stats.encoder_calls
    out["peak_rss_mb"] = _peak_rss_mb()
    if args.save_masks:
        np.save(args.save_masks, np.packbits(s.object_volume(lab)))
    return out


def _run_worker(kind: str, args: argparse.Namespace, **extra) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--size", str(args.size)]
    if args.slices is not None:
        cmd += ["--slices", str(args.slices)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += ["--malloc", args.malloc]
    if args.budget_mb is not None:
        cmd += ["--budget-mb", str(args.budget_mb)]
    for key, val in extra.items():
        flag = "--" + key.replace("_", "-")
        if val is True:
            cmd.append(flag)
        elif val not in (None, False):
            cmd += [flag, str(val)]
    env = {**os.environ, "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"worker {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=512, help="model input size (512 or 1024)")
    p.add_argument("--slices", type=int, default=None, help="use only this many central slices")
    p.add_argument("--quick", action="store_true", help="short smoke run: 256 px, 16 slices")
    p.add_argument(
        "--variants", action="store_true", help="also bfloat16, batched encoder, early stop"
    )
    p.add_argument("--no-tile", action="store_true", help="skip the 4x-volume memory run")
    p.add_argument(
        "--repeat", type=int, default=1, help="alternate reference and session runs N times"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--budget-mb",
        type=float,
        default=None,
        help="Session feature cache bound in MiB (default: the Session's own default)",
    )
    # worker-only options
    p.add_argument(
        "--malloc",
        choices=["cli", "default"],
        default="cli",
        help="allocator of the session runs: 'cli' = the settings the sam2-med command applies "
        "(sam2_med._malloc), 'default' = glibc's defaults, as the reference always runs",
    )
    p.add_argument("--worker", choices=["reference", "session"], help=argparse.SUPPRESS)
    p.add_argument("--tile", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--encoder-batch", type=int, default=1, help="with --variants: also time this batch size"
    )
    p.add_argument("--converge-after", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-correction", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--save-masks", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.slices = 256, 16
    if args.worker:
        fn = worker_reference if args.worker == "reference" else worker_session
        print(json.dumps(fn(args)))
        return 0

    rows: list[tuple[str, str]] = []
    threads = args.threads or "default"
    print(
        f"# propagation benchmark: {args.size} px, random SAM 2.1-tiny-shaped weights, CPU, "
        f"torch threads {threads}, load average {os.getloadavg()[0]:.1f}, session allocator "
        f"{args.malloc}, reference allocator default"
    )
    # reference and session alternate, each --repeat times; the fastest of each is compared
    # (the machine's own drift then weighs on both alike)
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    refs, sess = [], []
    for i in range(max(1, args.repeat)):
        refs.append(_run_worker("reference", args))
        print(f"reference {i + 1} done ({refs[-1]['slices']} slices)", file=sys.stderr)
        sess.append(
            _run_worker("session", args, encoder_batch=1, save_masks=tmp / "s2m_bench_f32.npy")
        )
        print(f"session {i + 1} done", file=sys.stderr)
    ref = min(refs, key=lambda r: r["seconds"])
    ses = min(sess, key=lambda r: r["seconds"])
    n = ref["slices"]
    if args.repeat > 1:
        rows.append(("runs (fastest kept)", f"{args.repeat} of each, alternating"))
    rows += [
        ("slices", f"{n}"),
        ("reference: s/slice", f"{ref['seconds'] / n:.3f}"),
        ("reference: peak RSS", f"{ref['peak_rss_mb']:.0f} MB"),
        ("session: s/slice", f"{ses['seconds'] / n:.3f}"),
        ("session / reference time", f"{ses['seconds'] / ref['seconds']:.2f} (required <= 1)"),
        (
            "session: peak RSS",
            f"{ses['peak_rss_mb']:.0f} MB (feature cache peak {ses['cache_mb']:.0f} MB)",
        ),
        (
            "correction at 3/4: time / full",
            f"{ses['correction_seconds'] / ses['seconds']:.3f} (required <= 0.25; "
            f"{ses['correction_decoded']} decoder runs, {ses['correction_encoded']} encoder)",
        ),
    ]
    if not args.no_tile:
        x4 = _run_worker("session", args, encoder_batch=1, tile=4, no_correction=True)
        print("session x4 done", file=sys.stderr)
        rows += [
            ("session x4: slices, s/slice", f"{x4['slices']}, {x4['seconds'] / x4['slices']:.3f}"),
            (
                "session x4: peak RSS / x1",
                f"{x4['peak_rss_mb']:.0f} MB / {ses['peak_rss_mb']:.0f} MB = "
                f"{x4['peak_rss_mb'] / ses['peak_rss_mb']:.2f} (required <= 1.3)",
            ),
        ]
    if args.variants:
        bf = _run_worker(
            "session", args, encoder_batch=1, bf16=True, save_masks=tmp / "s2m_bench_bf16.npy"
        )
        a = np.unpackbits(np.load(tmp / "s2m_bench_f32.npy")).astype(bool)
        b = np.unpackbits(np.load(tmp / "s2m_bench_bf16.npy")).astype(bool)
        iou = (a & b).sum() / max(1, (a | b).sum())
        rows += [
            ("bfloat16: time / float32", f"{bf['seconds'] / ses['seconds']:.2f}"),
            ("bfloat16: mask IoU with float32", f"{iou:.4f}"),
            ("bfloat16: peak RSS", f"{bf['peak_rss_mb']:.0f} MB"),
        ]
        if args.encoder_batch > 1:
            eb = _run_worker("session", args, encoder_batch=args.encoder_batch, no_correction=True)
            rows.append(
                (
                    f"encoder batch {args.encoder_batch}: time / batch 1",
                    f"{eb['seconds'] / ses['seconds']:.2f}",
                )
            )
        cv = _run_worker("session", args, encoder_batch=1, converge_after=3)
        rows.append(
            (
                "early stop (converge_after=3): correction / full",
                f"{cv['correction_seconds'] / cv['seconds']:.3f} "
                f"({cv['correction_decoded']} decoder runs)",
            )
        )
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
