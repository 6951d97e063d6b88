"""Frozen language encoders: token features, masks, character offsets and a disk cache.

The trainable projection to the interface width (``lang_proj``) is owned by the core, not here.
"""

from .adapter import TextFeatures, TextTokenEncoder
from .cache import CachedTokens, TokenFeatureCache, make_cache_key
from .errors import (
    CacheCorruptionError,
    HubIdNotAllowedError,
    LanguageEncoderError,
    ModelNotFoundError,
    SlowTokenizerError,
    resolve_local_model_path,
)
from .loading import KINDS, compute_model_identity, detect_kind

__all__ = [
    "KINDS",
    "CacheCorruptionError",
    "CachedTokens",
    "HubIdNotAllowedError",
    "LanguageEncoderError",
    "ModelNotFoundError",
    "SlowTokenizerError",
    "TextFeatures",
    "TextTokenEncoder",
    "TokenFeatureCache",
    "compute_model_identity",
    "detect_kind",
    "make_cache_key",
    "resolve_local_model_path",
]
