"""sam2-med: segment CT and MRI volumes with SAM 2.

The headless core. Importing it loads neither Qt nor napari (nor torch: the model modules are
imported lazily when first used).
"""

from __future__ import annotations

from .errors import PromptError, Sam2MedError
from .volume import Provenance, SourceFrame, Volume, WindowHint

__version__ = "0.1.0"

__all__ = ["PromptError", "Provenance", "Sam2MedError", "SourceFrame", "Volume", "WindowHint", "__version__"]
