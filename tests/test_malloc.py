"""The allocator settings the sam2-med command applies to its own process."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)
def test_tuning_is_accepted_by_glibc_in_a_fresh_process() -> None:
    code = (
        "import sys\n"
        "from sam2_med._malloc import tune_malloc_for_propagation as tune\n"
        "print(tune(), 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_python_m_runs_the_console_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sam2_med", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("sam2-med ")
