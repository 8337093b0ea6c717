"""Load time and peak memory of the DICOM reader on every shared DICOM case.

Usage::

    python benchmarks/load_dicom.py [--data ../shared/data] [--repeat 3]

For each series folder under ``<data>/dicom`` it prints the best wall time of ``--repeat`` loads,
the tracemalloc peak of one load (Python and numpy allocations, decoder-internal C buffers
excluded), the growth of the process's resident set size over that load, the volume's own size,
and the outcome (shape and dtype, or the error class for refused series).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sam2_med.io import VolumeReadError, load_volume  # noqa: E402


def series_folders(dicom_root: Path) -> list[Path]:
    """Folders directly holding DICOM files (not reference NIfTI), sorted."""
    out = []
    for d in sorted(p for p in dicom_root.rglob("*") if p.is_dir()):
        if any(f.is_file() and not f.name.endswith((".nii.gz", ".json")) for f in d.iterdir()):
            out.append(d)
    return out


def measure(folder: Path, repeat: int) -> tuple[str, float, float, float, float]:
    """(outcome, best seconds, tracemalloc peak MiB, RSS growth MiB, volume MiB)."""
    proc = psutil.Process()
    best = float("inf")
    outcome, size = "", 0.0
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        try:
            vol = load_volume(folder)
            outcome = f"{'x'.join(map(str, vol.shape))} {vol.dtype}"
            size = vol.array.nbytes / 2**20
            del vol
        except VolumeReadError as exc:
            outcome = f"refused: {type(exc).__name__}"
        best = min(best, time.perf_counter() - t0)
    gc.collect()
    rss0 = proc.memory_info().rss
    tracemalloc.start()
    try:
        vol = load_volume(folder)
    except VolumeReadError:
        vol = None
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = proc.memory_info().rss - rss0
    del vol
    return outcome, best, peak / 2**20, rss / 2**20, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    dicom_root = args.data / "dicom"
    if not dicom_root.is_dir():
        print(f"no DICOM data under {dicom_root}", file=sys.stderr)
        return 2
    print(f"{'case':58s} {'time s':>7s} {'peak MiB':>9s} {'RSS+ MiB':>9s} {'vol MiB':>8s}  outcome")
    for folder in series_folders(dicom_root):
        outcome, secs, peak, rss, size = measure(folder, args.repeat)
        name = str(folder.relative_to(dicom_root)).replace("multivendor_dicom2nifti", "mv")
        print(f"{name:58s} {secs:7.3f} {peak:9.1f} {rss:9.1f} {size:8.1f}  {outcome}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
