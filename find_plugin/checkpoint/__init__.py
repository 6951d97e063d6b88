"""Checkpoints: find_plugin's own versioned format, the weights resolver, the model-zoo table,
the official-checkpoint converter (explicit key table), the translation of official configs and
the one loader of every entry point."""

from .format import (
    FORMAT_VERSION,
    CheckpointFormatError,
    IncompatibleCheckpointError,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)
from .loader import LoadResult, WeightsFile, group_prefixes, load_weights, read_weights_file
from .model_zoo import MODEL_ZOO, ZooEntry
from .official import (
    SOURCE_GROUPS,
    ConversionReport,
    OfficialConversionError,
    convert_official_state_dict,
    official_key_table,
)
from .official_config import find_config_from_official, infer_find_config
from .resolver import WeightsNotFoundError, default_cache_dir, resolve_weights, sha256_of

__all__ = [
    "FORMAT_VERSION",
    "CheckpointFormatError",
    "IncompatibleCheckpointError",
    "load_checkpoint",
    "load_state_dict_checked",
    "save_checkpoint",
    "SOURCE_GROUPS",
    "ConversionReport",
    "OfficialConversionError",
    "convert_official_state_dict",
    "find_config_from_official",
    "infer_find_config",
    "official_key_table",
    "LoadResult",
    "WeightsFile",
    "group_prefixes",
    "load_weights",
    "read_weights_file",
    "MODEL_ZOO",
    "ZooEntry",
    "WeightsNotFoundError",
    "default_cache_dir",
    "resolve_weights",
    "sha256_of",
]
