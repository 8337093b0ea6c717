"""SAM 2 models: loading, the model registry, and small random models for tests.

Importing this package imports torch and transformers.
"""

from __future__ import annotations

from .loaded import LoadedModel
from .testing import random_model, tiny_config

__all__ = ["LoadedModel", "random_model", "tiny_config"]
