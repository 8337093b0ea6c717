"""Allocator settings for processes that sam2-med owns (the command line, benchmark workers).

Propagation allocates and frees tensors of a few MiB for every slice (features, masks,
attention buffers). glibc's malloc serves blocks above its mmap threshold with fresh ``mmap``
calls and gives freed heap tops back to the OS, so each slice pays page faults and page zeroing
again. Keeping such blocks on the heap and not trimming it made propagation about 5 % faster on
the benchmark CT (and removed the difference between a :class:`sam2_med.session.Session` and the
plain transformers loop), for about 2 % more peak memory.

The settings are process-wide, so the library never applies them on import; only entry points
that own their process call :func:`tune_malloc_for_propagation`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["tune_malloc_for_propagation"]

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

#: Largest mmap threshold glibc accepts on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
_MMAP_THRESHOLD = 32 * 2**20
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: never trim in practice
_TOP_PAD = 256 * 2**20


def tune_malloc_for_propagation() -> bool:
    """Keep freed memory on the heap for re-use (glibc only; elsewhere nothing happens).

    Returns
    -------
    bool
        True when every setting was accepted.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    ok &= mallopt(_M_TOP_PAD, _TOP_PAD) == 1
    return bool(ok)
