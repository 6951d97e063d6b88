"""Image-text retrieval (spec §2, §3.2 ``retrieval_decoder``, §5.4 standard retrieval).

The image embedding is ``pred_retrievals`` (the image query, pooled from the object proposals; the
``seg`` prototype, always run); the text embedding is ``pred_retrievals_lang`` of the caption
query, which reads only its caption's tokens (the text side never sees the image: a dual encoder).

* training: one random caption per image; targets carry the projected caption tokens for the
  fine-grained proposal-token term of the loss;
* evaluation: every caption of every image is encoded once on zero features
  (:meth:`RetrievalTask.encode_captions`), every image once; :class:`~.metrics.RetrievalMetric`
  streams IR@k / TR@k over galleries of any size.
"""

from typing import Dict, List, Sequence

import torch
from torch import nn

from .base import (
    FINDTask,
    TokenFeatures,
    encode_texts_on_zero_features,
    pad_token_batch,
    randint,
    record_size,
    register_task,
)
from .metrics import RetrievalMetric

__all__ = ["RetrievalTask"]


@register_task
class RetrievalTask(FINDTask):
    name = "retrieval"
    prototypes = ("retrieval",)
    loss_groups = ("retrievals",)
    metric = RetrievalMetric

    def sample(self, record, *, generator, encode_text, training) -> dict:
        size = record_size(record)
        captions = list(record.get("captions", []))
        if training:
            if not captions:
                raise ValueError(
                    "retrieval: a training record needs at least one caption (record['captions'])"
                )
            captions = [captions[randint(0, len(captions) - 1, generator)]]
        return {
            "image_size": size,
            "captions": encode_text(captions, "sentence") if captions else [],
            "training": training,
        }

    def pack_inputs(self, samples, *, project, padded_size) -> Dict[str, dict]:
        if not any(s["training"] for s in samples):
            return {}  # evaluation: captions are encoded text-only (encode_captions)
        if not all(len(s["captions"]) == 1 for s in samples):
            raise ValueError("retrieval.pack_inputs: training samples hold exactly one caption")
        rows = [s["captions"][0].features for s in samples]
        return {"retrieval": pad_token_batch(rows, project=project)}

    def build_targets(self, samples, *, project, padded_size) -> List[dict]:
        out = []
        for s in samples:
            feats = s["captions"][0].features
            out.append(
                {
                    "caption_tokens": project(feats),
                    "caption_valid": torch.ones(feats.shape[0], dtype=torch.bool),
                }
            )
        return out

    @staticmethod
    def encode_captions(interface: nn.Module, captions: Sequence[TokenFeatures]) -> torch.Tensor:
        """[N, dim_proj] text embeddings (caption query on zero features)."""
        return encode_texts_on_zero_features(
            interface, "retrieval", captions, "pred_retrievals_lang"
        )

    @staticmethod
    def image_embeddings(outputs) -> torch.Tensor:
        """[B, dim_proj] image embeddings of a pass (the pooled image query)."""
        return outputs["pred_retrievals"][:, 0]
