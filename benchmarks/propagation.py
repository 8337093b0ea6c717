"""Propagation speed and memory of sam2_med.Session against a plain transformers video loop and
against this machine's own limit.

Run::

    python benchmarks/propagation.py                 # 512 px, the whole 112-slice CT
    python benchmarks/propagation.py --size 1024 --slices 24
    python benchmarks/propagation.py --quick         # a short smoke run (256 px, 16 slices)
    python benchmarks/propagation.py --repeat 3      # 3 rounds of every run, keep the fastest
    python benchmarks/propagation.py --json out.json # everything measured, machine-readable
    python benchmarks/propagation.py --fidelity --checkpoint demo.pt --arch medsam2
                                                     # bfloat16 vs float32 masks, trained model

What it measures, each in a fresh subprocess so that peak RSS is clean:

* ``peak``: this machine's matrix-product peak in float32 and bfloat16 (square matmuls on the
  benchmark's torch threads, sized to the time they take), in the same run as the model.
* ``reference``: what a user would write with transformers alone: every slice preprocessed into
  one video tensor, one ``Sam2VideoInferenceSession`` over all frames, a click on the middle
  slice, ``propagate_in_video_iterator`` forward then in reverse, in float32.
* ``session``: ``Session.add_points`` on the same slice and voxel, ``propagate()``, with the
  default precision (``auto``), timing each model module (image encoder, memory attention,
  mask decoder, prompt encoder, memory encoder) and the session's own frame building; then a
  one-slice correction at 3/4 of the volume and its re-propagation. Also with 2 and 4 objects
  (clicks on the same slice), against their model work.
* ``flops``: model work per slice (``torch.utils.flop_counter``; scaled-dot-product attention on
  the CPU is counted too, which the counter misses on its own) on a clip of ``--flop-slices``
  slices, for 1, 2 and 4 objects; with the session's time per slice it gives GFLOP/s and the
  fraction of the peak.
* ``latency``: a click on a slice whose features are cached (its preview), a correction click,
  and how long a cancel takes to stop a running propagation (set at several moments inside a
  slice).
* ``session x4``: the volume tiled 4 times along the slice axis (peak memory against the
  single volume; the feature cache is bounded, not the volume length).
* ``gpu`` (when CUDA is present): slices per second of the session there, ``auto`` precision.
* with ``--variants``: float32 and bfloat16 forced, objects one by one instead of batched, a
  batched image encoder, one torch thread, and the early stop of corrections.
* with ``--fidelity``: bfloat16 against float32 masks (IoU per object volume) of a given model
  (``--checkpoint``/``--model``) on the project's phantoms (:func:`bf16_fidelity`).

The model is SAM 2.1 hiera-tiny-shaped (transformers' full tiny dimensions at the chosen input
size) with random weights, so masks mean nothing and speed and memory are what count; the object
score head is biased to "present" so that every slice is decoded. Timings on a shared machine
vary by 2-3x between runs; compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "volumes" / "ct_abdomen_pelvis"
WINDOW = "soft_tissue"
#: top-level modules of a transformers Sam2VideoModel timed separately
MODULES = ("vision_encoder", "memory_attention", "mask_decoder", "prompt_encoder", "memory_encoder")
#: label values of the shared CT whose voxels the 2nd, 3rd, 4th objects click
OTHER_LABELS = (1, 2, 3, 6, 7, 8, 9, 10)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------ machine peak
def matmul_peak(dtype_name: str, *, seconds: float = 1.0, max_n: int = 2048) -> dict:
    """GFLOP/s of square matrix products on torch's current threads.

    The size doubles from 256 while one product takes under 50 ms (a machine that emulates
    bfloat16 stays small), then products are repeated for about ``seconds``; the best is kept.
    """
    import torch

    dtype = getattr(torch, dtype_name)
    n = 256
    while True:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        t = time.perf_counter()
        a @ b
        one = time.perf_counter() - t
        if one > 0.05 or n >= max_n:
            break
        n *= 2
    best = one
    reps = max(2, min(50, int(seconds / max(one, 1e-4))))
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return {"n": n, "gflops": 2 * n**3 / best / 1e9, "repeats": reps}


# ------------------------------------------------------------------------------ FLOP counting
@contextlib.contextmanager
def counting_flops():
    """A ``FlopCounterMode`` that also counts CPU scaled-dot-product attention.

    PyTorch's counter knows the CUDA attention kernels but not
    ``aten._scaled_dot_product_flash_attention_for_cpu``, which SAM 2's attention runs on a
    CPU: without this, most of memory attention's work would go uncounted.
    """
    import torch
    from torch.utils import flop_counter as fc

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None and op not in fc.flop_registry and op.default not in fc.flop_registry:

        def _sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kw) -> int:
            return fc.sdpa_flop_count(query_shape, key_shape, value_shape)

        with contextlib.suppress(RuntimeError):  # registered meanwhile
            fc.register_flop_formula(op)(_sdpa_cpu)

    with fc.FlopCounterMode(display=False) as counter:
        yield counter


#: class name of each top-level module, as the FLOP counter names a module it meets first
_MODULE_CLASSES = {
    "Sam2VisionModel": "vision_encoder",
    "Sam2VideoMemoryAttention": "memory_attention",
    "Sam2VideoMaskDecoder": "mask_decoder",
    "Sam2VideoPromptEncoder": "prompt_encoder",
    "Sam2VideoMemoryEncoder": "memory_encoder",
}


def _module_flops(counter) -> dict[str, int]:
    """FLOP per top-level model module; ``other``: what no module of :data:`MODULES` did."""
    counts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    out = {name: counts.get(cls, 0) for cls, name in _MODULE_CLASSES.items()}
    out["other"] = counts.get("Global", 0) - sum(out.values())
    return out


# ----------------------------------------------------------------------------- the workers
def _setup(args: argparse.Namespace):
    """Volume (cropped/tiled along the axial axis), model and click voxels."""
    import torch

    from sam2_med.geometry import slice_axis
    from sam2_med.io import load_volume
    from sam2_med.models import LoadedModel
    from sam2_med.models.arch import arch_to_config
    from sam2_med.models.testing import random_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker in ("session", "latency") and args.malloc == "cli":
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
    device = getattr(args, "device", "cpu") or "cpu"
    model = model.to(device)
    lm = LoadedModel.from_module(model, name="random sam2.1-tiny", precision=args.precision)

    def click(k: int, label: int = 5) -> list[int]:
        sl = np.take(labels, k, axis=ax)
        pts = np.argwhere(sl == label)
        if len(pts) == 0:
            pts = np.argwhere(sl > 0)
        if len(pts) == 0:
            a, b = sl.shape[0] // 2 + 7 * label, sl.shape[1] // 2
        else:
            a, b = pts[len(pts) // 2]
        ijk = [0, 0, 0]
        u, v = (x for x in range(3) if x != ax)
        ijk[ax], ijk[u], ijk[v] = k, int(a) % sl.shape[0], int(b) % sl.shape[1]
        return ijk

    return vol, lm, ax, click


def worker_peak(args: argparse.Namespace) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    return {
        "threads": torch.get_num_threads(),
        "float32": matmul_peak("float32"),
        "bfloat16": matmul_peak("bfloat16"),
    }


def worker_reference(args: argparse.Namespace) -> dict:
    import torch
    from transformers import Sam2VideoInferenceSession

    from sam2_med.frames import SliceStream

    args.precision = "float32"  # the plain loop is float32
    vol, lm, _ax, click = _setup(args)
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
    k0, xy = stream.voxel_to_model_xy(np.array([click(len(stream) // 2)]))
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
    with torch.inference_mode():
        model(inference_session=sess, frame_idx=k0)
        for rev in (False, True):
            for _ in model.propagate_in_video_iterator(sess, start_frame_idx=k0, reverse=rev):
                pass
    seconds = time.perf_counter() - t0
    return {"slices": len(stream), "seconds": seconds, "peak_rss_mb": _peak_rss_mb()}


class _ModuleTimer:
    """Wall time per top-level model module (forward hooks) and of the session's frames."""

    def __init__(self, session) -> None:
        self.seconds: Counter = Counter()
        self._t0: dict[str, float] = {}
        model = session.model
        self._handles = []
        for name in MODULES:
            mod = getattr(model, name)
            self._handles.append(mod.register_forward_pre_hook(self._pre(name)))
            self._handles.append(mod.register_forward_hook(self._post(name)))
        stream = session.stream
        frames = stream.frames

        def timed_frames(*a, **kw):
            t = time.perf_counter()
            try:
                return frames(*a, **kw)
            finally:
                self.seconds["frame building"] += time.perf_counter() - t

        stream.frames = timed_frames

    def _pre(self, name):
        def hook(module, args) -> None:
            self._t0[name] = time.perf_counter()

        return hook

    def _post(self, name):
        def hook(module, args, out) -> None:
            self.seconds[name] += time.perf_counter() - self._t0.pop(name)

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _new_session(args, lm, vol, **kw):
    from sam2_med.session import Session

    return Session(
        lm,
        vol,
        axis="axial",
        window=WINDOW,
        memory_budget_mb=args.budget_mb,
        encoder_batch=args.encoder_batch,
        converge_after=args.converge_after,
        batch_objects=not args.one_by_one,
        **kw,
    )


def _add_objects(s, click, n_objects: int) -> list[int]:
    k = s.n_slices // 2
    labs = []
    for i in range(n_objects):
        lab = s.add_object(f"object {i + 1}")
        s.add_points(lab, [click(k, 5 if i == 0 else OTHER_LABELS[i - 1])], [1])
        labs.append(lab)
    return labs


def worker_session(args: argparse.Namespace) -> dict:
    vol, lm, _ax, click = _setup(args)
    t0 = time.perf_counter()
    s = _new_session(args, lm, vol)
    timer = _ModuleTimer(s)
    labs = _add_objects(s, click, args.objects)
    for _ in s.propagate():
        pass
    full = time.perf_counter() - t0
    timer.remove()
    out: dict = {
        "slices": s.n_slices,
        "objects": args.objects,
        "precision": lm.precision.record(),
        "seconds": full,
        "module_seconds": dict(timer.seconds),
        "encoder_calls": s.stats.encoder_calls,
        "cache_mb": s.stats.cache_peak_bytes / 2**20,
    }
    if not args.no_correction:
        s.stats.reset()
        t1 = time.perf_counter()
        s.add_points(labs[0], [click((3 * s.n_slices) // 4)], [1])
        for _ in s.propagate():
            pass
        out["correction_seconds"] = time.perf_counter() - t1
        out["correction_decoded"] = len(s.stats.decoded_slices)
        out["correction_encoded"] = s.stats.encoder_calls
    out["peak_rss_mb"] = _peak_rss_mb()
    if args.save_masks:
        np.save(args.save_masks, np.packbits(s.object_volume(labs[0])))
    return out


def worker_flops(args: argparse.Namespace) -> dict:
    """Model work per propagated slice on a clip, for 1, 2 and 4 objects."""
    vol, lm, ax, click = _setup(args)
    n = vol.shape[ax]
    clip = min(args.flop_slices, n)
    lo = (n - clip) // 2
    vol = vol.replace(array=np.take(np.asarray(vol.array), np.arange(lo, lo + clip), axis=ax))

    def click_clip(k: int, label: int = 5) -> list[int]:
        ijk = click(k + lo, label)
        ijk[ax] -= lo
        return ijk

    out = {}
    for n_obj in (1, 2, 4):
        s = _new_session(args, lm, vol)
        _add_objects(s, click_clip, n_obj)
        with counting_flops() as counter:
            steps = sum(1 for _ in s.propagate())
        slices = steps // n_obj
        out[str(n_obj)] = {
            "slices": slices,
            "gflop_per_slice": counter.get_total_flops() / slices / 1e9,
            "module_gflop_per_slice": {
                k: v / slices / 1e9 for k, v in _module_flops(counter).items()
            },
        }
    return out


def worker_latency(args: argparse.Namespace) -> dict:
    """Click preview on a cached slice, a correction click, and cancel latency."""
    vol, lm, _ax, click = _setup(args)
    s = _new_session(args, lm, vol)
    (lab,) = _add_objects(s, click, 1)
    k_mid = s.n_slices // 2
    s._cache.ensure(range(s.n_slices))  # every slice's features cached
    for _ in s.propagate():
        pass
    out: dict = {}
    # a new object clicked on a cached slice: decoded from the slice alone (its preview)
    times = []
    for i in range(3):
        other = s.add_object(f"latency {i}")
        t = time.perf_counter()
        s.add_points(other, [click(min(s.n_slices - 1, k_mid + 1))], [1])
        times.append(time.perf_counter() - t)
    out["click_preview_s"] = min(times)
    # a correction click on a tracked slice: decoded with the memory around it (re-encoded)
    times = []
    for k in sorted({max(0, k_mid - d) for d in (2, 3, 4)} - {k_mid}):
        t = time.perf_counter()
        s.add_points(lab, [click(k)], [1])
        times.append(time.perf_counter() - t)
    out["correction_click_s"] = min(times)
    out["correction_memory_slices"] = len(s.stats.correction_memory[-1][2])
    # cancel: a new object propagating; the flag is set at several moments inside a slice
    steps = []
    t = time.perf_counter()
    probe = s.add_object("probe")
    s.add_points(probe, [click(k_mid)], [1])
    gen = s.propagate()
    for _ in range(3):
        next(gen)
        steps.append(time.perf_counter() - t)
        t = time.perf_counter()
    gen.close()
    slice_s = float(np.median(np.diff([0.0, *steps])[1:])) if len(steps) > 1 else steps[0]
    lags = []
    for frac in (0.2, 0.5, 0.8):
        flag = threading.Event()
        set_at: list[float] = []

        def fire(frac=frac, flag=flag, set_at=set_at) -> None:
            time.sleep(frac * slice_s)
            set_at.append(time.perf_counter())
            flag.set()

        timer = threading.Thread(target=fire)
        gen = s.propagate(cancel=flag.is_set)
        next(gen)  # one slice done: the next is running when the flag is set
        timer.start()
        for _ in gen:
            pass
        lags.append(time.perf_counter() - set_at[0] if set_at else 0.0)
        timer.join()
    out["slice_s"] = slice_s
    out["cancel_lag_s"] = lags
    return out


def worker_gpu(args: argparse.Namespace) -> dict:
    """Slices per second of a whole propagation on CUDA (after a warm-up run)."""
    import torch

    args.device = "cuda"
    vol, lm, _ax, click = _setup(args)
    s = _new_session(args, lm, vol)
    _add_objects(s, click, 1)
    list(s.propagate())  # warm-up: kernels, allocator
    s = _new_session(args, lm, vol)
    _add_objects(s, click, args.objects)
    torch.cuda.synchronize()
    t = time.perf_counter()
    steps = sum(1 for _ in s.propagate())
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    return {
        "device": torch.cuda.get_device_name(0),
        "precision": lm.precision.record(),
        "slices": steps // args.objects,
        "seconds": seconds,
        "slices_per_s": steps / args.objects / seconds,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20,
    }


# ------------------------------------------------------------------------------ fidelity
def _one_click_prompts(labels: np.ndarray, axis: int, names: dict) -> dict:
    """One positive click per structure: the deepest voxel of its largest slice."""
    from scipy import ndimage

    objects = []
    for lab in sorted(int(v) for v in np.unique(labels) if v):
        m = labels == lab
        areas = m.sum(axis=tuple(a for a in range(3) if a != axis))
        k = int(np.argmax(areas))
        sl = np.take(m, k, axis=axis)
        depth = ndimage.distance_transform_edt(sl)
        a, b = np.unravel_index(int(np.argmax(depth)), sl.shape)
        ijk = [0, 0, 0]
        u, v = (x for x in range(3) if x != axis)
        ijk[axis], ijk[u], ijk[v] = k, int(a), int(b)
        objects.append(
            {"label": lab, "name": str(names.get(lab, f"label {lab}")), "points": [[*ijk, 1]]}
        )
    return {"space": "voxel", "objects": objects}


def phantoms(n: int) -> list[tuple]:
    """``n`` evaluation phantoms: seeded random abdomens when the phantom module draws them
    (``make_random_phantom``), else the fixed phantom with ``n`` noise seeds."""
    from sam2_med import phantom

    out = []
    for i in range(n):
        if hasattr(phantom, "make_random_phantom"):
            seed = phantom.phantom_seed("eval", i) if hasattr(phantom, "phantom_seed") else i
            vol, lab = phantom.make_random_phantom(seed)
            out.append((f"random phantom seed {seed}", vol, lab))
        else:
            vol, lab = phantom.make_phantom(seed=i)
            out.append((f"fixed phantom noise seed {i}", vol, lab))
    return out


def bf16_fidelity(loaded, cases, *, log=print) -> list[dict]:
    """Mask IoU of bfloat16 against float32, per object volume.

    Parameters
    ----------
    loaded : LoadedModel
        The model (any precision: both are run from its float32 parameters).
    cases : list of (name, Volume, LabelVolume)
        Volumes with reference labels; each structure gets one click (its deepest voxel on its
        largest axial slice) and is propagated through the volume.

    Returns
    -------
    list of dict
        ``{"case", "label", "name", "iou", "voxels_f32", "voxels_bf16"}`` per object.
    """
    import dataclasses

    import torch

    from sam2_med.api import resolve_prompts, segment_volume
    from sam2_med.geometry import slice_axis
    from sam2_med.models.precision import resolve_precision

    models = {
        p: dataclasses.replace(
            loaded, dtype=getattr(torch, p), precision=resolve_precision(p, loaded.device)
        )
        for p in ("float32", "bfloat16")
    }
    rows = []
    for name, vol, lab in cases:
        axis = slice_axis(vol.affine, "axial")
        prompts = resolve_prompts(
            _one_click_prompts(np.asarray(lab.array), axis, dict(lab.names)), vol
        )
        masks = {}
        for p, lm in models.items():
            t = time.perf_counter()
            res = segment_volume(vol, prompts, lm, keep_object_masks=True)
            masks[p] = res.object_masks
            log(f"  {name}: {p} {time.perf_counter() - t:.1f} s")
        for obj in prompts.objects:
            a, b = masks["float32"][obj.label], masks["bfloat16"][obj.label]
            union = int((a | b).sum())
            rows.append(
                {
                    "case": name,
                    "label": obj.label,
                    "name": obj.name,
                    "iou": 1.0 if union == 0 else float((a & b).sum() / union),
                    "voxels_f32": int(a.sum()),
                    "voxels_bf16": int(b.sum()),
                }
            )
    return rows


def run_fidelity(args: argparse.Namespace) -> dict:
    from sam2_med.api import resolve_arch
    from sam2_med.models import load_model

    arch = resolve_arch(args.arch) if args.arch else None
    lm = load_model(args.model, checkpoint=args.checkpoint, arch=arch, precision="float32")
    print(f"# bfloat16 fidelity: {lm.name} ({lm.image_size} px) from {lm.source}")
    rows = bf16_fidelity(lm, phantoms(args.phantoms), log=lambda m: print(m, file=sys.stderr))
    for r in rows:
        print(f"{r['case']}, {r['name']}: IoU {r['iou']:.4f}")
    ious = [r["iou"] for r in rows]
    print(
        f"bfloat16 vs float32 mask IoU per object: min {min(ious):.4f}, median "
        f"{float(np.median(ious)):.4f} (required >= 0.99: {'met' if min(ious) >= 0.99 else 'NOT met'})"
    )
    return {"model": lm.name, "source": lm.source, "objects": rows}


# ------------------------------------------------------------------------------ main
def _run_worker(kind: str, args: argparse.Namespace, **extra) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--size", str(args.size)]
    if args.slices is not None:
        cmd += ["--slices", str(args.slices)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += ["--malloc", args.malloc, "--flop-slices", str(args.flop_slices)]
    if args.budget_mb is not None:
        cmd += ["--budget-mb", str(args.budget_mb)]
    extra.setdefault("precision", args.precision)
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
    print(f"  {kind} {' '.join(cmd[3:])}: done", file=sys.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=512, help="model input size (512 or 1024)")
    p.add_argument("--slices", type=int, default=None, help="use only this many central slices")
    p.add_argument("--quick", action="store_true", help="short smoke run: 256 px, 16 slices")
    p.add_argument(
        "--variants",
        action="store_true",
        help="also float32/bfloat16 forced, objects one by one, encoder batch, 1 thread, "
        "early stop",
    )
    p.add_argument("--no-tile", action="store_true", help="skip the 4x-volume memory run")
    p.add_argument("--no-objects", action="store_true", help="skip the 2- and 4-object runs")
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
    p.add_argument(
        "--precision",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="the session's precision (default auto, as sam2-med runs)",
    )
    p.add_argument(
        "--flop-slices", type=int, default=12, help="clip length of the FLOP count (default 12)"
    )
    p.add_argument("--json", default=None, help="also write every measurement to this file")
    p.add_argument(
        "--fidelity",
        action="store_true",
        help="only the bfloat16 fidelity check: needs --checkpoint or --model",
    )
    p.add_argument("--checkpoint", default=None, help="with --fidelity: the model's weights")
    p.add_argument("--model", default=None, help="with --fidelity: a registered model name")
    p.add_argument("--arch", default=None, help="with --fidelity: architecture of --checkpoint")
    p.add_argument("--phantoms", type=int, default=4, help="with --fidelity: how many phantoms")
    # worker-only options
    p.add_argument(
        "--malloc",
        choices=["cli", "default"],
        default="cli",
        help="allocator of the session runs: 'cli' = the settings the sam2-med command applies "
        "(sam2_med._malloc), 'default' = glibc's defaults, as the reference always runs",
    )
    p.add_argument(
        "--worker",
        choices=["peak", "reference", "session", "flops", "latency", "gpu"],
        help=argparse.SUPPRESS,
    )
    p.add_argument("--tile", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--objects", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--one-by-one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
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
        fn = {
            "peak": worker_peak,
            "reference": worker_reference,
            "session": worker_session,
            "flops": worker_flops,
            "latency": worker_latency,
            "gpu": worker_gpu,
        }[args.worker]
        print(json.dumps(fn(args)))
        return 0
    if args.fidelity:
        if not (args.checkpoint or args.model):
            p.error("--fidelity needs --checkpoint FILE or --model NAME")
        report = run_fidelity(args)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
        return 0
    return _benchmark(args)


def _benchmark(args: argparse.Namespace) -> int:
    import torch

    from sam2_med.models.precision import cpu_bf16_flags

    report: dict = {
        "size": args.size,
        "cpu": _cpu_name(),
        "cpu_bf16_flags": list(cpu_bf16_flags()),
        "torch": torch.__version__,
        "load_average": os.getloadavg()[0],
    }
    rows: list[tuple[str, str]] = []
    threads = args.threads or "default"
    print(
        f"# propagation benchmark: {args.size} px, random SAM 2.1-tiny-shaped weights, "
        f"{report['cpu']} (bf16 flags: {', '.join(report['cpu_bf16_flags']) or 'none'}), "
        f"torch threads {threads}, load average {report['load_average']:.1f}, session "
        f"precision {args.precision}, session allocator {args.malloc}, reference allocator default"
    )
    peak = _run_worker("peak", args)
    report["peak"] = peak
    # reference and session alternate, each --repeat times; the fastest of each is compared
    # (the machine's own drift then weighs on both alike)
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    # the 2- and 4-object runs are in the same rounds, so their ratios to one object are too
    counts = () if args.no_objects else (2, 4)
    refs, sess = [], []
    multi_runs: dict[int, list[dict]] = {n_obj: [] for n_obj in counts}
    for _ in range(max(1, args.repeat)):
        refs.append(_run_worker("reference", args))
        sess.append(_run_worker("session", args, save_masks=tmp / "s2m_bench_auto.npy"))
        for n_obj in counts:
            multi_runs[n_obj].append(
                _run_worker("session", args, objects=n_obj, no_correction=True)
            )
    ref = min(refs, key=lambda r: r["seconds"])
    ses = min(sess, key=lambda r: r["seconds"])
    report["reference"], report["session"] = ref, ses
    flops = _run_worker("flops", args)
    report["flops"] = flops
    n = ref["slices"]
    applied = ses["precision"]["applied"]
    f1 = flops["1"]["gflop_per_slice"]
    s_per_slice = ses["seconds"] / n
    achieved = f1 / s_per_slice
    peak_applied = peak[applied]["gflops"]
    if args.repeat > 1:
        rows.append(("runs (fastest kept)", f"{args.repeat} of each, alternating"))
    rows += [
        (
            "matmul peak, float32 / bfloat16",
            f"{peak['float32']['gflops']:.1f} / {peak['bfloat16']['gflops']:.1f} GFLOP/s "
            f"({peak['threads']} threads, n = {peak['float32']['n']} / {peak['bfloat16']['n']})",
        ),
        ("slices", f"{n}"),
        ("session precision (auto)", f"{applied}: {ses['precision']['reason']}"),
        ("model work per slice", f"{f1:.1f} GFLOP ({flops['1']['slices']}-slice clip)"),
        ("reference (float32): s/slice", f"{ref['seconds'] / n:.3f}"),
        ("reference: peak RSS", f"{ref['peak_rss_mb']:.0f} MB"),
        ("session: s/slice", f"{s_per_slice:.3f}"),
        (
            "session: achieved",
            f"{achieved:.1f} GFLOP/s = {achieved / peak_applied:.0%} of the {applied} peak "
            f"({achieved / peak['float32']['gflops']:.0%} of float32's); at the bfloat16 peak "
            f"a slice would take {f1 / peak['bfloat16']['gflops']:.3f} s",
        ),
        (
            "session / reference time",
            f"{ses['seconds'] / ref['seconds']:.2f} (issue goal <= 0.25 at 512 px)",
        ),
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
    total_mod = sum(ses["module_seconds"].values())
    split = ", ".join(
        f"{k.replace('_', ' ')} {v / n:.3f}"
        for k, v in sorted(ses["module_seconds"].items(), key=lambda kv: -kv[1])
    )
    rows.append(
        (
            "session: s/slice per module",
            f"{split}, rest {(ses['seconds'] - total_mod) / n:.3f}",
        )
    )
    mods = flops["1"]["module_gflop_per_slice"]
    if mods:
        rows.append(
            (
                "model work per module",
                ", ".join(
                    f"{k.replace('_', ' ')} {v:.1f}"
                    for k, v in sorted(mods.items(), key=lambda x: -x[1])
                )
                + " GFLOP/slice",
            )
        )
    if counts:
        multi = {1: ses, **{k: min(v, key=lambda r: r["seconds"]) for k, v in multi_runs.items()}}
        report["objects"] = {str(k): v for k, v in multi.items()}
        for n_obj in counts:
            t_ratio = multi[n_obj]["seconds"] / ses["seconds"]
            f_ratio = flops[str(n_obj)]["gflop_per_slice"] / f1
            rows.append(
                (
                    f"{n_obj} objects / 1: time, FLOP",
                    f"{t_ratio:.2f}, {f_ratio:.2f} (time/FLOP {t_ratio / f_ratio:.2f}, goal "
                    f"<= 1.1; encoder calls {multi[n_obj]['encoder_calls']} for {n} slices)",
                )
            )
    report["latency"] = lat = _run_worker("latency", args)
    rows += [
        (
            "click on a cached slice: preview",
            f"{lat['click_preview_s']:.3f} s (goal well under 1 s at 512 px)",
        ),
        (
            "correction click (memory re-encoded)",
            f"{lat['correction_click_s']:.3f} s ({lat['correction_memory_slices']} memory slices)",
        ),
        (
            "cancel: time to stop",
            f"max {max(lat['cancel_lag_s']):.3f} s over {len(lat['cancel_lag_s'])} cancels "
            f"inside a slice of {lat['slice_s']:.2f} s (goal <= 1 s)",
        ),
    ]
    if not args.no_tile:
        x4 = _run_worker("session", args, tile=4, no_correction=True)
        report["session_x4"] = x4
        rows += [
            ("session x4: slices, s/slice", f"{x4['slices']}, {x4['seconds'] / x4['slices']:.3f}"),
            (
                "session x4: peak RSS / x1",
                f"{x4['peak_rss_mb']:.0f} MB / {ses['peak_rss_mb']:.0f} MB = "
                f"{x4['peak_rss_mb'] / ses['peak_rss_mb']:.2f} (required <= 1.3)",
            ),
        ]
    if torch.cuda.is_available():
        gpu = _run_worker("gpu", args, no_correction=True)
        report["gpu"] = gpu
        rows.append(
            (
                "GPU: slices/s",
                f"{gpu['slices_per_s']:.1f} on {gpu['device']} ({gpu['precision']['applied']}, "
                f"peak {gpu['peak_gpu_mb']:.0f} MiB; goal >= 150 at 1024 px bf16 on H100-class)",
            )
        )
    if args.variants:
        _variants(args, ses, rows, report, tmp)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def _variants(args, ses: dict, rows: list, report: dict, tmp: Path) -> None:
    variants = report.setdefault("variants", {})
    for prec in ("float32", "bfloat16"):
        if prec == ses["precision"]["applied"]:
            continue
        if (
            prec == "bfloat16"
            and report["peak"]["bfloat16"]["gflops"] < 0.2 * (report["peak"]["float32"]["gflops"])
        ):
            rows.append(
                (
                    "bfloat16 forced",
                    "skipped: this machine's bfloat16 peak is under a fifth of float32's "
                    "(emulated); the session would take hours",
                )
            )
            continue
        v = _run_worker("session", args, precision=prec, save_masks=tmp / f"s2m_bench_{prec}.npy")
        variants[prec] = v
        a = np.unpackbits(np.load(tmp / "s2m_bench_auto.npy")).astype(bool)
        b = np.unpackbits(np.load(tmp / f"s2m_bench_{prec}.npy")).astype(bool)
        iou = (a & b).sum() / max(1, (a | b).sum())
        rows += [
            (f"{prec} forced: time / auto", f"{v['seconds'] / ses['seconds']:.2f}"),
            (f"{prec} forced: mask IoU with auto", f"{iou:.4f} (random weights)"),
        ]
    if not args.no_objects:
        four = report["objects"]["4"]
        v = _run_worker("session", args, objects=4, no_correction=True, one_by_one=True)
        variants["4_objects_one_by_one"] = v
        rows.append(
            (
                "4 objects, batched / one by one",
                f"{four['seconds'] / v['seconds']:.2f}",
            )
        )
    if args.encoder_batch > 1:
        v = _run_worker("session", args, encoder_batch=args.encoder_batch, no_correction=True)
        variants["encoder_batch"] = v
        rows.append(
            (
                f"encoder batch {args.encoder_batch}: time / batch 1",
                f"{v['seconds'] / ses['seconds']:.2f}",
            )
        )
    if args.threads != 1:
        saved, args.threads = args.threads, 1
        v = _run_worker("session", args, no_correction=True)
        args.threads = saved
        variants["threads_1"] = v
        rows.append(("1 torch thread: time / default", f"{v['seconds'] / ses['seconds']:.2f}"))
    v = _run_worker("session", args, converge_after=3)
    variants["converge_after_3"] = v
    rows.append(
        (
            "early stop (converge_after=3): correction / full",
            f"{v['correction_seconds'] / v['seconds']:.3f} ({v['correction_decoded']} decoder runs)",
        )
    )


if __name__ == "__main__":
    sys.exit(main())
