"""SAM 2 models: the registry, weight loading and caching, and small random models for tests.

Importing this package imports torch and transformers. Typical use::

    from sam2_med.models import load_model
    lm = load_model("sam2.1_hiera_tiny")            # cached, or downloaded once
    lm = load_model(checkpoint="MedSAM2_latest.pt", name="medsam2")
    print(lm.licence)
"""

from __future__ import annotations

from .arch import DEFAULT_ARCH, arch_to_config
from .convert import hf_to_meta_state_dict, infer_arch, meta_to_hf_state_dict
from .errors import (
    CheckpointError,
    ChecksumError,
    DeviceUnavailableError,
    UnknownModelError,
    WeightsNotFoundError,
)
from .loaded import LoadedModel
from .loader import (
    CacheEntry,
    cached_weights,
    default_cache_dir,
    import_weights,
    load_model,
    save_meta_checkpoint,
    verify_cache,
)
from .registry import ModelSpec, WeightSource, get_spec, list_models
from .testing import TINY_ARCH, random_model, tiny_config

__all__ = [
    "DEFAULT_ARCH",
    "TINY_ARCH",
    "CacheEntry",
    "CheckpointError",
    "ChecksumError",
    "DeviceUnavailableError",
    "LoadedModel",
    "ModelSpec",
    "UnknownModelError",
    "WeightSource",
    "WeightsNotFoundError",
    "arch_to_config",
    "cached_weights",
    "default_cache_dir",
    "get_spec",
    "hf_to_meta_state_dict",
    "import_weights",
    "infer_arch",
    "list_models",
    "load_model",
    "meta_to_hf_state_dict",
    "random_model",
    "save_meta_checkpoint",
    "tiny_config",
    "verify_cache",
]
