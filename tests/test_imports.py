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
