"""The ASGI app ``monailabel start_server --uvicorn_app sam2_med.monailabel_app.server:app``
serves: MONAI Label's own (``monailabel.app:app``), after one import fix.

MONAI Label 0.8.5 (the latest release) imports pydicom-seg 0.4.1 when its server starts, and
pydicom-seg reads the SOP class UIDs from ``pydicom._storage_sopclass_uids``, a private module
of pydicom 2 that pydicom 3 replaced by ``pydicom.uid`` (same names). sam2-med needs pydicom 3
(highdicom), so this module points the old name at ``pydicom.uid`` before MONAI Label is
imported. Nothing else is changed; MONAI Label's main branch has dropped pydicom-seg for
highdicom, so a later release will not need this. pydicom-seg is used only to convert labels
to DICOM SEG for a DICOMweb datastore, which this project does not test.
"""

from __future__ import annotations

import importlib
import sys

try:
    importlib.import_module("pydicom._storage_sopclass_uids")
except ImportError:
    import pydicom.uid

    sys.modules["pydicom._storage_sopclass_uids"] = pydicom.uid

from monailabel.app import app  # only after the fix above

__all__ = ["app"]
