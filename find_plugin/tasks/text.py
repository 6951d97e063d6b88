"""``encode_text`` for the task layer from a frozen text encoder.

:class:`EncoderTextFn` turns a :class:`~find_plugin.encoders.language.TextTokenEncoder` (or any
object with the same ``__call__(texts)`` / ``encode_class_prompts(texts)`` returning
``TextFeatures``) into the ``encode_text(texts, kind)`` callable the tasks use: one
:class:`~.base.TokenFeatures` per text with its real tokens only (padding dropped), on CPU, so
samples can travel through data-loader workers. The encoder's disk cache makes repeated texts
free; with the cache filled beforehand (``tools/precompute_text_features.py``) the language model
is never run in a training step.
"""

from typing import List, Sequence

import torch

from .base import TokenFeatures

__all__ = ["EncoderTextFn", "KINDS"]

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
