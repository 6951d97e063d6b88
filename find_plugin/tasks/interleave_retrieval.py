"""Interleave retrieval (FIND-Bench; spec §5.4 "Interleave retrieval, as used for the README").

The README protocol of FIND-Bench: each image's entity sentence, as text only, goes through the
legend query (``pred_interleave_image``) on zero image features (the legend query never reads the
image) and is ranked against every image's ``pred_retrievals``
(:class:`~.metrics.RetrievalMetric`). Training happens inside the interleave task
(``interleave_itc``), so this task has no loss of its own.

``first_sentence_only=True`` reproduces the official evaluator: only the first sentence of an
image is encoded and its embedding stands for every sentence of that image (the copies crowd the
top-k of text retrieval); ``False`` encodes every sentence (the corrected protocol).
"""

import torch

from ..core.conventions import NO_ITEM
from .base import FINDTask, encode_texts_on_zero_features, record_size, register_task
from .metrics import RetrievalMetric

__all__ = ["InterleaveRetrievalTask"]


@register_task
class InterleaveRetrievalTask(FINDTask):
    """Text-only interleave retrieval (evaluation; trained through ``interleave_itc``)."""

    name = "interleave_retrieval"
    prototypes = ("interleave_retrieval",)
    loss_groups = ()
    metric = RetrievalMetric

    def __init__(self, *, first_sentence_only: bool = True):
        self.first_sentence_only = bool(first_sentence_only)

    def sample(self, record, *, generator, encode_text, training) -> dict:
        sentences = [e["sentence"] for e in record.get("entities", [])]
        encoded = sentences[:1] if self.first_sentence_only else sentences
        feats = encode_text(encoded, "sentence") if encoded else []
        if self.first_sentence_only:
            feats = feats * len(sentences)  # official: the first sentence stands for all
        return {"image_size": record_size(record), "sentences": feats}

    def pack_inputs(self, samples, *, project, padded_size) -> dict:
        # Nothing joins the image pass: the image side is the pass's ``pred_retrievals`` and the
        # sentences are encoded text-only (encode_sentences), so the task runs beside any other.
        return {}

    @staticmethod
    def encode_sentences(interface, sentences) -> torch.Tensor:
        """[N, dim_proj] query embeddings (legend query, text-only, on zero features)."""
        n = len(sentences)
        lengths = [s.features.shape[0] for s in sentences]
        entity = torch.full((n, max(lengths + [1])), NO_ITEM, dtype=torch.long)
        return encode_texts_on_zero_features(
            interface,
            "interleave_retrieval",
            sentences,
            "pred_interleave_image",
            token_entity=entity,
            entity_is_visual=torch.zeros(n, 0, dtype=torch.bool),
            pos_masks=[torch.zeros(0, 8, 8, dtype=torch.bool)] * n,
        )
