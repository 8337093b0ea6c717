"""Shared fixtures. The real imaging data lives in ../shared/data beside the checkout."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SAM2_MED_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Model YAML files in the tester's own config folder must not change what the tests see: the
# registry reads $SAM2_MED_CONFIG_DIR/models when sam2_med.models is first imported (here and in
# subprocesses), so point it at a folder that does not exist. Tests that register models set
# their own folder and call sam2_med.models.registry.reload_models().
os.environ["SAM2_MED_CONFIG_DIR"] = str(
    Path(tempfile.gettempdir()) / f"sam2-med-tests-no-user-config-{os.getpid()}"
)


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data; skips the calling test (with the reason) when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data absent: {p} (CI always has ../shared/data)")
    return p


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data absent: {SHARED_DATA} (CI always has ../shared/data)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op torch thread for the whole suite. The test models are tiny and gain nothing
    from more, and on a shared 2-core runner OpenMP threads spinning against other processes
    made model tests 6-20x slower. Benchmarks, not tests, measure threaded speed."""
    try:
        import torch
    except ImportError:  # the I/O tests do not need torch
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines Debian's ``dciodvfy`` (dicom3tools) prints for a DICOM file.

    Skips the calling test, saying why, where dicom3tools is not installed (``.ci/run``
    installs it, so CI always validates). Warnings about the *source* series' own attributes
    (e.g. a retired person-name form copied into the SEG) are not errors and are ignored.
    """
    import shutil
    import subprocess

    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed; .ci/run installs it")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=300)
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
