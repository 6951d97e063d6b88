"""Checkpoints: find_plugin's own versioned format, the weights resolver and the model-zoo table."""

from .format import (
    FORMAT_VERSION,
    CheckpointFormatError,
    IncompatibleCheckpointError,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)
from .model_zoo import MODEL_ZOO, ZooEntry
from .resolver import WeightsNotFoundError, default_cache_dir, resolve_weights, sha256_of

__all__ = [
    "FORMAT_VERSION",
    "CheckpointFormatError",
    "IncompatibleCheckpointError",
    "load_checkpoint",
    "load_state_dict_checked",
    "save_checkpoint",
    "MODEL_ZOO",
    "ZooEntry",
    "WeightsNotFoundError",
    "default_cache_dir",
    "resolve_weights",
    "sha256_of",
]
