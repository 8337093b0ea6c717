"""sam2-med: segment CT and MRI volumes with SAM 2.

The headless core. Importing it loads neither Qt nor napari (nor torch: the model modules are
imported lazily when first used).
"""

from __future__ import annotations

from .errors import PromptError, Sam2MedError
from .volume import Provenance, SourceFrame, Volume, WindowHint

__version__ = "0.1.0"

__all__ = [
    "PromptError",
    "Provenance",
    "Sam2MedError",
    "SegmentationResult",
    "SourceFrame",
    "Volume",
    "WindowHint",
    "__version__",
    "segment",
]

# The one-call API lives in ``sam2_med.api``; it is exported here lazily so that
# ``import sam2_med`` stays light (no torch, transformers or MONAI until first use).
_LAZY = {"segment": "api", "SegmentationResult": "api"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
