"""The precision policy: which compute dtype a model runs in on this device.

``"auto"`` (the default everywhere a model is loaded) runs bfloat16 autocast where the device
computes bfloat16 natively and float32 everywhere else:

* CUDA: when ``torch.cuda.is_bf16_supported()`` (Ampere and newer);
* x86 CPUs: when the CPU flags show AMX-BF16 (``amx_bf16``, Intel Sapphire Rapids and newer) or
  AVX512-BF16 (``avx512_bf16``, Intel Cooper Lake, AMD Zen 4 and newer), read from
  ``/proc/cpuinfo`` on Linux. Without them PyTorch emulates bfloat16 matrix products, which is
  slower than float32 (measured on an AVX2-only AMD Zen 1: a 512x512 bfloat16 matmul ran at
  about 0.1 GFLOP/s against tens of GFLOP/s in float32);
* anything else (Apple MPS, other operating systems, unknown flags): float32.

``"float32"`` and ``"bfloat16"`` force a precision. bfloat16 means autocast around float32
parameters (matrix products and convolutions in bfloat16, reductions and normalisations in
float32); SAM 2 itself stores encoded memory in bfloat16 in both modes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from .errors import DeviceUnavailableError

__all__ = ["PRECISIONS", "Precision", "cpu_bf16_flags", "resolve_precision"]

#: Accepted precision names; ``"auto"`` is the default.
PRECISIONS = ("auto", "float32", "bfloat16")

#: CPU flags (``/proc/cpuinfo``) that mean native bfloat16 matrix products.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """A precision as requested and as applied on one device.

    Attributes
    ----------
    requested : {"auto", "float32", "bfloat16"}
    applied : {"float32", "bfloat16"}
    reason : str
        Why ``applied`` was chosen (for ``"auto"``: what the device showed), for the run record.
    """

    requested: str
    applied: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype of :attr:`applied`."""
        return _DTYPES[self.applied]

    def record(self) -> dict[str, str]:
        """JSON-ready ``{"requested", "applied", "reason"}`` for a run record."""
        return {"requested": self.requested, "applied": self.applied, "reason": self.reason}


def _read_cpuinfo_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The CPU feature flags the OS reports (Linux only; empty elsewhere)."""
    if not sys.platform.startswith("linux"):
        return frozenset()
    return _read_cpuinfo_flags()


def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bfloat16 flags this CPU shows (a subset of :data:`BF16_CPU_FLAGS`)."""
    flags = _cpu_flags()
    return tuple(f for f in BF16_CPU_FLAGS if f in flags)


def _native_bf16(device: torch.device) -> tuple[bool, str]:
    if device.type == "cuda":
        try:
            ok = bool(torch.cuda.is_bf16_supported())
        except Exception:  # pragma: no cover - a broken CUDA setup
            ok = False
        name = "CUDA device"
        if ok:
            return True, f"{name} computes bfloat16 natively"
        return False, f"{name} without native bfloat16"
    if device.type == "cpu":
        found = cpu_bf16_flags()
        if found:
            return True, f"CPU flags show {', '.join(found)}"
        capability = _cpu_capability()
        return False, (
            f"CPU flags show neither {' nor '.join(BF16_CPU_FLAGS)} (PyTorch CPU capability "
            f"{capability}): bfloat16 would be emulated, slower than float32"
        )
    return False, f"{device.type} device: float32 unless bfloat16 is asked for"


def _cpu_capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # pragma: no cover - very old torch
        return "unknown"


def resolve_precision(precision: str | torch.dtype, device: str | torch.device) -> Precision:
    """The precision a model runs in on ``device``.

    Parameters
    ----------
    precision : {"auto", "float32", "bfloat16"} or torch.dtype
        ``torch.float32``/``torch.bfloat16`` are taken as the forced names.
    device : str or torch.device

    Returns
    -------
    Precision

    Raises
    ------
    DeviceUnavailableError
        Any other value.
    """
    if isinstance(precision, torch.dtype):
        names = {v: k for k, v in _DTYPES.items()}
        if precision not in names:
            raise DeviceUnavailableError(
                f"unsupported precision {precision}; use 'auto', 'float32' or 'bfloat16'"
            )
        precision = names[precision]
    if precision not in PRECISIONS:
        raise DeviceUnavailableError(
            f"unsupported precision {precision!r}; use 'auto', 'float32' or 'bfloat16' "
            "(bfloat16 means autocast; auto picks it where the device computes it natively)",
            cli=f"unsupported precision {precision!r}; use --precision auto, float32 or bfloat16",
        )
    dev = torch.device(device)
    if precision != "auto":
        return Precision(precision, precision, "forced")
    native, why = _native_bf16(dev)
    return Precision("auto", "bfloat16" if native else "float32", why)
