"""The headless core must never drag in a GUI toolkit."""

from __future__ import annotations

import subprocess
import sys

GUI_PREFIXES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy")


def test_import_core_loads_no_gui():
    code = (
        "import sys, sam2_med, sam2_med.io, sam2_med.geometry, sam2_med.volume\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {GUI_PREFIXES!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"GUI modules imported by the core: {out.stdout}"


def test_segment_is_exported_lazily():
    """``sam2_med.segment`` is the API's function, and plain ``import sam2_med`` loads no torch
    (the model stack is imported on first use)."""
    code = (
        "import sys, sam2_med\n"
        "print('torch' in sys.modules)\n"
        "from sam2_med import segment, SegmentationResult\n"
        "import sam2_med.api as api\n"
        "print(segment is api.segment and SegmentationResult is api.SegmentationResult)\n"
        "print('segment' in dir(sam2_med))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True"], out.stdout + out.stderr
