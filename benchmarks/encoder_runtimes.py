"""Speed and agreement of SAM 2.1-tiny's image encoder in torch, ONNX Runtime and OpenVINO.

Run::

    python benchmarks/encoder_runtimes.py                        # 512 px, 2 threads, 10 repeats
    python benchmarks/encoder_runtimes.py --size 1024 --repeats 5
    python benchmarks/encoder_runtimes.py --threads 1 --repeats 2 --json out.json
    python benchmarks/encoder_runtimes.py --openvino-source both # OpenVINO from ONNX and PyTorch

What it measures, side by side in one process, on the same weights and the same input:

* ``torch``: the reference, float32 eager under ``torch.inference_mode``.
* ``onnxruntime``: ONNX Runtime float32, ``CPUExecutionProvider``, on an ONNX export of the same
  module (``torch.onnx.export``; the dynamo exporter first, the TorchScript one if it fails, see
  ``--exporter``), written to a temporary directory.
* ``openvino``: OpenVINO float32 on the CPU (``INFERENCE_PRECISION_HINT f32``, so a CPU with
  bfloat16 does not silently run bfloat16), compiled from the same ONNX file; with
  ``--openvino-source pytorch`` (or when the ONNX export failed) from ``openvino.convert_model``
  on the torch module instead.

The module measured is what the engine calls per slice batch
(``Sam2VideoModel.get_image_features``, :meth:`sam2_med.models.engine.Engine.encode`): the Hiera
backbone, the FPN neck and the mask decoder's ``conv_s0``/``conv_s1`` projections of the two
high-resolution levels. Its outputs are the three FPN feature levels and their three position
encodings, each ``(HW_l, B, C)``, as the engine consumes them.

Per runtime it reports the median seconds per slice over ``--repeats`` timed runs (after
``--warmup`` untimed ones; the runtimes take turns, one run each per round, so that a change of
machine load touches all of them alike), the ratio of that time to torch's (below 1: faster than
torch), the setup cost (export, session creation or compilation), and for every output tensor the
largest absolute difference from torch, that difference relative to torch's largest magnitude
(``rel_max``) and the relative L2 error. A runtime "agrees" when every ``rel_max`` is at most
``--tol`` (1e-4 by default, float32 reordering noise is about 1e-6). A runtime whose package is
missing is reported as "not installed", an export or compilation that fails with its error.

The model is SAM 2.1 hiera-tiny-shaped (:func:`sam2_med.models.testing.random_model`, as in
``benchmarks/propagation.py``) with random weights: speed and numerical agreement are what count.
``--threads`` sets torch's threads, ONNX Runtime's ``intra_op_num_threads`` and OpenVINO's
``INFERENCE_NUM_THREADS`` alike. Timings on a shared machine vary; compare ratios from one run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
#: names given to the exported graph's input and outputs (the order :class:`EncoderOutputs` returns)
INPUT_NAME = "pixel_values"
OUTPUT_NAMES = (
    "fpn_hidden_states_0",
    "fpn_hidden_states_1",
    "fpn_hidden_states_2",
    "fpn_position_encoding_0",
    "fpn_position_encoding_1",
    "fpn_position_encoding_2",
)
#: packages whose versions the report lists
PACKAGES = ("torch", "transformers", "onnx", "onnxscript", "onnxruntime", "openvino")
#: lscpu flags that matter for reduced-precision CPU paths
FLAG_MARKERS = ("bf16", "amx", "fp16", "vnni")


# ------------------------------------------------------------------------------ the machine
def _propagation():
    """``benchmarks/propagation.py`` as a module (its helpers are reused, not copied)."""
    spec = importlib.util.spec_from_file_location("_bench_propagation", HERE / "propagation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cpu_flags() -> list[str]:
    """The CPU's bfloat16, AMX, fp16 and VNNI feature flags, as ``lscpu`` lists them.

    Returns
    -------
    list of str
        Sorted flags containing one of :data:`FLAG_MARKERS`; ``/proc/cpuinfo`` is read when
        ``lscpu`` is missing, and an empty list comes back off Linux.
    """
    text = ""
    try:
        text = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=False, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        pass
    if "Flags" not in text:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return sorted(f for f in flags if any(m in f for m in FLAG_MARKERS))


def versions() -> dict[str, str]:
    """Installed version of each of :data:`PACKAGES`, or ``"not installed"``."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return " / ".join(lines[:6])[:1500]


# ------------------------------------------------------------------------------ the model
def build_encoder(size: int, seed: int = 0):
    """SAM 2.1 hiera-tiny's image encoder with random weights, as a module of one tensor.

    Parameters
    ----------
    size
        Model input side in pixels (a multiple of 32).
    seed
        Seed of the random weights.

    Returns
    -------
    torch.nn.Module
        An :class:`EncoderOutputs` in eval mode, float32, on the CPU.
    """
    from sam2_med.models.arch import arch_to_config
    from sam2_med.models.testing import random_model

    model = random_model(arch_to_config({"image_size": size}), seed=seed)
    return _encoder_class()(model).eval()


def _encoder_class():
    import torch

    class EncoderOutputs(torch.nn.Module):
        """``get_image_features`` as a flat tuple: the three FPN levels, then their encodings.

        Exactly what :meth:`sam2_med.models.engine.Engine.encode` takes from the model, with
        no ``ModelOutput`` around it, so that exporters see plain tensors.
        """

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.model.get_image_features(pixel_values, return_dict=True)
            return (*out.fpn_hidden_states, *out.fpn_position_encoding)

    return EncoderOutputs


# ------------------------------------------------------------------------------ export
def export_onnx(module, example, path: Path, exporter: str) -> dict[str, Any]:
    """Export ``module`` at the example's (static) shape to an ONNX file.

    Parameters
    ----------
    module
        The :class:`EncoderOutputs` module.
    example
        Input tensor ``(B, 3, S, S)``; the graph is exported for exactly this shape.
    path
        Target ``.onnx`` file (the dynamo exporter may write its weights beside it, in
        ``path.name + ".data"``).
    exporter
        ``"dynamo"``, ``"torchscript"`` or ``"auto"`` (dynamo, then TorchScript if it fails).

    Returns
    -------
    dict
        ``ok``, ``exporter`` (the one that worked), ``seconds``, ``errors`` (exporter -> error
        text of those that failed), ``bytes`` (graph and external weights together) and the
        graph's ``inputs``/``outputs`` (name and shape) read back with ``onnx``.
    """
    import torch

    order = ("dynamo", "torchscript") if exporter == "auto" else (exporter,)
    errors: dict[str, str] = {}
    for name in order:
        for old in path.parent.glob(path.name + "*"):
            old.unlink()
        t = time.perf_counter()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kwargs: dict[str, Any] = {
                    "input_names": [INPUT_NAME],
                    "output_names": list(OUTPUT_NAMES),
                    "dynamo": name == "dynamo",
                }
                if name == "dynamo":
                    kwargs["verbose"] = False
                else:
                    kwargs["opset_version"] = 17
                torch.onnx.export(module, (example,), str(path), **kwargs)
        except Exception as exc:
            errors[name] = _error(exc)
            continue
        info: dict[str, Any] = {
            "ok": True,
            "exporter": name,
            "seconds": time.perf_counter() - t,
            "errors": errors,
            "bytes": sum(p.stat().st_size for p in path.parent.glob(path.name + "*")),
        }
        info.update(_graph_signature(path))
        return info
    return {"ok": False, "exporter": None, "errors": errors}


def _graph_signature(path: Path) -> dict[str, Any]:
    """Inputs and outputs (name, shape with symbolic dimensions as names) of an ONNX file."""
    try:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # onnx missing or unreadable: the runtimes still get the file
        return {"signature_error": _error(exc)}

    def sig(values) -> list[dict]:
        out = []
        for v in values:
            dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            out.append({"name": v.name, "shape": dims})
        return out

    initializers = {i.name for i in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    return {"inputs": sig(inputs), "outputs": sig(graph.output), "opset": _opset(path)}


def _opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


# ------------------------------------------------------------------------------ runtimes
def torch_runner(module, threads: int):
    """A callable running ``module`` on a numpy array under ``inference_mode``, to numpy."""
    import torch

    torch.set_num_threads(threads)

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return [t.numpy() for t in module(torch.from_numpy(x))]

    return run


def onnxruntime_runner(path: Path, threads: int):
    """A callable running the ONNX file in ONNX Runtime (CPU execution provider, float32).

    Parameters
    ----------
    path
        The exported ``.onnx`` file.
    threads
        ``intra_op_num_threads`` (``inter_op_num_threads`` is 1, execution sequential).

    Returns
    -------
    callable
        ``x -> list of outputs``, in :data:`OUTPUT_NAMES` order.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only (shape-merge warnings of TorchScript exports)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outputs = [o.name for o in sess.get_outputs()]

    def run(x: np.ndarray) -> list[np.ndarray]:
        return sess.run(outputs, {name: x})

    return run


def openvino_runner(source, threads: int, example: np.ndarray | None = None):
    """A callable running the encoder in OpenVINO on the CPU, float32.

    Parameters
    ----------
    source
        Path of the ONNX file, or the torch module (converted with ``openvino.convert_model``
        at the example's shape).
    threads
        ``INFERENCE_NUM_THREADS``.
    example
        Input used to trace a torch module (ignored for an ONNX file).

    Returns
    -------
    callable
        ``x -> list of outputs``, in the graph's output order.
    """
    import openvino as ov

    core = ov.Core()
    if isinstance(source, Path):
        model = core.read_model(str(source))
    else:
        import torch

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ov.convert_model(
                source, example_input=torch.from_numpy(example), input=[list(example.shape)]
            )
    config = {
        "INFERENCE_NUM_THREADS": int(threads),
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    outs = list(compiled.outputs)

    def run(x: np.ndarray) -> list[np.ndarray]:
        result = request.infer({0: x})
        return [np.asarray(result[o]) for o in outs]

    precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    run.precision = getattr(precision, "to_string", precision.__str__)()  # type: ignore[attr-defined]
    return run


# ------------------------------------------------------------------------------ comparing
def compare(ref: list[np.ndarray], got: list[np.ndarray], tol: float) -> dict[str, Any]:
    """Per-output differences of a runtime's outputs from torch's.

    Parameters
    ----------
    ref, got
        Outputs of torch and of the runtime, in the same order.
    tol
        Largest ``rel_max`` (max abs difference / max abs of the reference) that still agrees.

    Returns
    -------
    dict
        ``outputs``: per output ``name``, ``shape``, ``max_abs``, ``ref_max_abs``, ``rel_max``
        and ``rel_l2`` (``||got - ref|| / ||ref||``); ``agrees``: every shape equal and every
        ``rel_max`` within ``tol``; ``worst_rel_max``.
    """
    if len(ref) != len(got):
        return {"agrees": False, "error": f"{len(got)} outputs, torch has {len(ref)}"}
    rows = []
    ok = True
    for name, r, g in zip(OUTPUT_NAMES, ref, got, strict=True):
        row: dict[str, Any] = {"name": name, "shape": list(r.shape)}
        if tuple(g.shape) != tuple(r.shape):
            row["error"] = f"shape {list(g.shape)}"
            ok = False
            rows.append(row)
            continue
        r64, g64 = r.astype(np.float64), g.astype(np.float64)
        diff = np.abs(g64 - r64)
        scale = float(np.abs(r64).max())
        norm = float(np.linalg.norm(r64))
        row.update(
            max_abs=float(diff.max()),
            ref_max_abs=scale,
            rel_max=float(diff.max()) / scale if scale else float(diff.max()),
            rel_l2=float(np.linalg.norm(g64 - r64)) / norm if norm else float(diff.max()),
        )
        ok = ok and bool(np.isfinite(row["rel_max"])) and row["rel_max"] <= tol
        rows.append(row)
    worst = max((r.get("rel_max", float("inf")) for r in rows), default=0.0)
    return {"agrees": ok, "worst_rel_max": worst, "outputs": rows}


# ------------------------------------------------------------------------------ the benchmark
def benchmark(args: argparse.Namespace, log=print) -> dict[str, Any]:
    """Build, export, run and time every runtime; the JSON-able report.

    Parameters
    ----------
    args
        Parsed command line (``size``, ``batch``, ``threads``, ``repeats``, ``warmup``,
        ``exporter``, ``openvino_source``, ``tol``, ``seed``).
    log
        Where progress lines go.

    Returns
    -------
    dict
        Machine, versions and settings, ``export`` (see :func:`export_onnx`) and ``runtimes``:
        per runtime ``status`` (``ok``, ``not installed``, ``export failed``, ``failed``), and
        when ok ``median_s_per_slice``, ``times_s`` (per call), ``ratio_to_torch``,
        ``setup_s`` and the :func:`compare` figures.
    """
    import torch

    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "size": args.size,
        "batch": args.batch,
        "threads": args.threads,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "tol": args.tol,
        "cpu": _propagation()._cpu_name(),
        "cpu_flags_bf16_amx": cpu_flags(),
        "versions": versions(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    t = time.perf_counter()
    module = build_encoder(args.size, seed=args.seed)
    log(f"  model built in {time.perf_counter() - t:.1f} s")
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)

    runners: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    runners["torch"] = torch_runner(module, args.threads)
    results["torch"] = {"status": "ok", "setup_s": 0.0}

    with tempfile.TemporaryDirectory(prefix="sam2med_encoder_onnx_") as tmp:
        onnx_path = Path(tmp) / "image_encoder.onnx"
        need_onnx = _installed("onnxruntime") or (
            _installed("openvino") and args.openvino_source in ("onnx", "both")
        )
        if need_onnx:
            log(f"  exporting to ONNX ({args.exporter}) ...")
            export = export_onnx(module, torch.from_numpy(x), onnx_path, args.exporter)
            if export["ok"]:
                log(
                    f"  exported with the {export['exporter']} exporter in "
                    f"{export['seconds']:.1f} s ({export['bytes'] / 2**20:.0f} MiB)"
                )
            for name, err in export["errors"].items():
                log(f"  {name} export failed: {err}")
        else:
            export = {"ok": False, "exporter": None, "errors": {}, "skipped": "no runtime"}
        report["export"] = export

        plans: list[tuple[str, str, Any]] = []  # (runtime name, package, how to build)
        plans.append(("onnxruntime", "onnxruntime", ("ort", onnx_path)))
        sources = {"onnx": ["onnx"], "pytorch": ["pytorch"], "both": ["onnx", "pytorch"]}
        ov_sources = sources[args.openvino_source]
        if not export["ok"] and ov_sources == ["onnx"]:
            ov_sources = ["pytorch"]  # the ONNX export failed: OpenVINO converts torch itself
        for src in ov_sources:
            name = "openvino" if len(ov_sources) == 1 else f"openvino ({src})"
            plans.append((name, "openvino", ("ov", src)))

        for name, package, (kind, src) in plans:
            if not _installed(package):
                results[name] = {"status": "not installed"}
                log(f"  {name}: not installed")
                continue
            if kind == "ort" and not export["ok"]:
                failed = "; ".join(f"{k}: {v}" for k, v in export["errors"].items())
                results[name] = {"status": "export failed", "error": failed or "not exported"}
                continue
            t = time.perf_counter()
            try:
                if kind == "ort":
                    runners[name] = onnxruntime_runner(onnx_path, args.threads)
                    extra: dict[str, Any] = {"source": "onnx"}
                else:
                    use = onnx_path if src == "onnx" else module
                    runners[name] = openvino_runner(use, args.threads, x)
                    extra = {"source": src, "precision": runners[name].precision}
            except Exception as exc:
                results[name] = {"status": "failed", "stage": "setup", "error": _error(exc)}
                log(f"  {name} setup failed: {results[name]['error']}")
                continue
            setup = time.perf_counter() - t
            results[name] = {"status": "ok", "setup_s": setup, **extra}
            log(f"  {name} ready in {setup:.1f} s")

        _time_all(runners, results, x, args, log)
        runners.clear()  # release sessions before the temporary files go

    base = results["torch"]["median_s_per_slice"]
    for res in results.values():
        if res.get("status") == "ok":
            res["ratio_to_torch"] = res["median_s_per_slice"] / base
    report["runtimes"] = results
    return report


def _time_all(runners, results, x: np.ndarray, args: argparse.Namespace, log) -> None:
    """Warm up every runner (checking its outputs), then time them in turns."""
    ref = None
    for name in list(runners):
        try:
            out = runners[name](x)
            for _ in range(max(0, args.warmup - 1)):
                runners[name](x)
        except Exception as exc:
            results[name] = {"status": "failed", "stage": "run", "error": _error(exc)}
            log(f"  {name} run failed: {results[name]['error']}")
            del runners[name]
            continue
        if name == "torch":
            ref = [np.array(o, copy=True) for o in out]
        else:
            results[name].update(compare(ref, [np.asarray(o) for o in out], args.tol))
    times: dict[str, list[float]] = {name: [] for name in runners}
    for rnd in range(args.repeats):
        for name, run in runners.items():
            t = time.perf_counter()
            run(x)
            times[name].append(time.perf_counter() - t)
        log(
            f"  round {rnd + 1}/{args.repeats}: "
            + ", ".join(f"{n} {v[-1]:.3f} s" for n, v in times.items())
        )
    for name, ts in times.items():
        results[name]["times_s"] = ts
        results[name]["median_s_per_slice"] = statistics.median(ts) / x.shape[0]


def format_report(report: dict[str, Any]) -> str:
    """The report as text: one line per runtime, then the per-output differences."""
    v = report["versions"]
    lines = [
        f"# image encoder runtimes: SAM 2.1-tiny (random weights), {report['size']} px, "
        f"batch {report['batch']}, {report['threads']} thread(s), median of "
        f"{report['repeats']} after {report['warmup']} warm-up",
        f"# {report['cpu']}; flags: {', '.join(report['cpu_flags_bf16_amx']) or 'none'}; "
        f"load average {report['load_average']:.2f}"
        if report["load_average"] is not None
        else f"# {report['cpu']}",
        "# " + ", ".join(f"{k} {val}" for k, val in v.items()),
    ]
    ex = report.get("export", {})
    if ex.get("ok"):
        ins = ", ".join(f"{i['name']} {i['shape']}" for i in ex.get("inputs", []))
        lines.append(
            f"# ONNX export: {ex['exporter']} exporter, opset {ex.get('opset')}, "
            f"{ex['seconds']:.1f} s, {ex['bytes'] / 2**20:.0f} MiB; input {ins}"
        )
    for name, err in ex.get("errors", {}).items():
        lines.append(f"# ONNX export with {name} failed: {err}")
    lines.append(
        f"{'runtime':<22}{'status':<15}{'s/slice':>9}{'x torch':>9}{'setup s':>9}"
        f"{'worst rel_max':>15}  agrees"
    )
    for name, r in report["runtimes"].items():
        src = r.get("source")
        label = f"{name} ({src})" if src and "(" not in name else name
        if r.get("status") != "ok":
            lines.append(f"{label:<22}{r['status']:<15}  {r.get('error', '')}"[:300])
            continue
        worst = "reference" if name == "torch" else f"{r.get('worst_rel_max', float('nan')):.2e}"
        agrees = "-" if name == "torch" else ("yes" if r.get("agrees") else "NO")
        lines.append(
            f"{label:<22}{'ok':<15}{r['median_s_per_slice']:>9.3f}{r['ratio_to_torch']:>9.2f}"
            f"{r['setup_s']:>9.1f}{worst:>15}  {agrees}"
        )
    for name, r in report["runtimes"].items():
        if name == "torch" or "outputs" not in r:
            continue
        lines.append(f"## {name} vs torch")
        for o in r["outputs"]:
            if "error" in o:
                lines.append(f"  {o['name']:<25}{o['shape']!s:<18}{o['error']}")
                continue
            lines.append(
                f"  {o['name']:<25}{o['shape']!s:<18}max_abs {o['max_abs']:.2e}  "
                f"rel_max {o['rel_max']:.2e}  rel_l2 {o['rel_l2']:.2e}  "
                f"(|ref| max {o['ref_max_abs']:.3g})"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=512, help="model input size in px (default 512)")
    p.add_argument("--threads", type=int, default=2, help="threads of every runtime (default 2)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per runtime (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2, min 1)")
    p.add_argument("--batch", type=int, default=1, help="slices per call (default 1)")
    p.add_argument(
        "--exporter",
        choices=("auto", "dynamo", "torchscript"),
        default="auto",
        help="ONNX exporter (auto: dynamo, then TorchScript if it fails)",
    )
    p.add_argument(
        "--openvino-source",
        choices=("onnx", "pytorch", "both"),
        default="onnx",
        help="what OpenVINO compiles: the ONNX file (default), openvino.convert_model on the "
        "torch module, or both as two rows",
    )
    p.add_argument(
        "--tol", type=float, default=1e-4, help="largest rel_max that agrees (default 1e-4)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of weights and input")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.size <= 0 or args.size % 32:
        p.error("--size must be a positive multiple of 32")
    if args.threads < 1 or args.repeats < 1 or args.batch < 1:
        p.error("--threads, --repeats and --batch must be at least 1")
    args.warmup = max(1, args.warmup)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    report = benchmark(args, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
