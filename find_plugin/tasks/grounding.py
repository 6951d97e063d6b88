"""Grounded / referring segmentation (spec §2, §2.2 "Grounding", §1.6, §5.4).

One description query per target mask reads the tokens of its phrase (indexed attention); the
grounding proposals read every phrase token of the image. Phrases with the same text are encoded
once (deduplicated): ``token_index`` gives each token its phrase id and ``query_index`` each query
its phrase id, so several target masks of one phrase share its tokens (and, in the loss, their CE
targets through ``grounding_hash``).

* training ('text' mode): n ~ U{1..max_sentences} referring sentences of the image, each with its
  masks; an image without sentences falls back to 'class' mode: at most n of its classes, each
  wrapped in a random class template, every instance of the class a separate target;
* evaluation: every sentence of the image, one query each, its GT = the union of its masks; the
  prediction is the grounding proposal with the largest scaled cosine (``grounding_pick``).
"""

from typing import Dict, List, Sequence

import torch

from ..core.class_bank import TRAIN_TEMPLATES, clean_class_name
from ..core.postprocess import grounding_pick, resize_mask_logits
from .base import (
    FINDTask,
    pad_item_index,
    pad_masks,
    pad_token_batch,
    randint,
    record_size,
    register_task,
    stack_masks,
)
from .metrics import GroundingMetric

__all__ = ["GroundingTask", "ITEM_VARIABLE"]

#: Interface variable holding one query per target mask.
ITEM_VARIABLE = "queries_language_description"


@register_task
class GroundingTask(FINDTask):
    """Args:
    class_names: K class names for the 'class' fallback of images without sentences (None = no
        fallback: such images get no grounding target).
    max_sentences: at most this many sentences (or classes) per image in training (official 4).
    templates: class-mode templates.
    """

    name = "grounding"
    prototypes = ("grounding",)
    loss_groups = ("groundings",)
    metric = GroundingMetric

    def __init__(
        self,
        *,
        class_names: Sequence[str] = None,
        max_sentences: int = 4,
        templates: Sequence[str] = TRAIN_TEMPLATES,
    ):
        self.class_names = [clean_class_name(c) for c in class_names] if class_names else None
        self.max_sentences = int(max_sentences)
        self.templates = tuple(templates)

    def sample(self, record, *, generator, encode_text, training) -> dict:
        size = record_size(record)
        sentences = list(record.get("groundings", []))
        mode = "text"
        if training:
            n = randint(1, self.max_sentences, generator)
            if sentences:
                order = torch.randperm(len(sentences), generator=generator)[:n].tolist()
                items = [(sentences[i]["text"], _as_masks(sentences[i], size)) for i in order]
            else:
                mode = "class"
                items = self._class_items(record, n, size, generator)
        else:
            items = [(s["text"], _as_masks(s, size).any(0, keepdim=True)) for s in sentences]
        texts: List[str] = []
        query_phrase, masks = [], []
        for text, m in items:
            if text not in texts:
                texts.append(text)
            query_phrase += [texts.index(text)] * len(m)
            masks += list(m)
        # An image without phrases still needs the feature width for a fully padded token row.
        phrases = encode_text(texts or ["N/A"], "sentence")
        return {
            "image_size": size,
            "phrases": phrases if texts else [],
            "text_dim": phrases[0].features.shape[-1],
            "query_phrase": query_phrase,
            "masks": stack_masks(masks, size),
            "mode": mode,
        }

    def _class_items(self, record, n, size, generator):
        if self.class_names is None or "labels" not in record:
            return []
        labels = torch.as_tensor(record["labels"]).reshape(-1)
        classes = labels.unique()
        classes = classes[torch.randperm(len(classes), generator=generator)[:n]]
        items = []
        for c in classes.tolist():
            template = self.templates[randint(0, len(self.templates) - 1, generator)]
            items.append(
                (template.format(self.class_names[c]), record["masks"][labels == c].bool())
            )
        return items

    def pack_inputs(self, samples, *, project, padded_size) -> Dict[str, dict]:
        rows, index = [], []
        for s in samples:
            feats = [p.features for p in s["phrases"]]
            rows.append(torch.cat(feats) if feats else torch.zeros(0, s["text_dim"]))
            index.append(sum(([k] * len(f) for k, f in enumerate(feats)), []))
        inputs = pad_token_batch(rows, project=project, index=index)
        inputs["query_index"] = pad_item_index([s["query_phrase"] for s in samples])
        return {"grounding": inputs}

    def build_targets(self, samples, *, project, padded_size) -> List[dict]:
        return [
            {
                "grounding_masks": pad_masks(s["masks"], padded_size),
                "grounding_hash": torch.as_tensor(s["query_phrase"], dtype=torch.long),
                "grounding_task": s["mode"],
            }
            for s in samples
        ]

    def pick(self, outputs, b: int, logit_scale: torch.Tensor) -> torch.Tensor:
        """Mask logits [G, H/4, W/4] of the best grounding proposal per query of image ``b``."""
        real = ~outputs["item_padding"][ITEM_VARIABLE][b]
        idx, _ = grounding_pick(
            outputs["pred_gtexts"][b], outputs["pred_grounding_query"][b, real], logit_scale
        )
        return outputs["pred_gmasks"][b, idx]

    def predict(self, outputs, b: int, *, logit_scale, padded_size, image_size, output_size):
        """Picked mask logits of image ``b`` at ``output_size`` [G, H, W] (official referring
        resize); foreground = logit > 0 (:class:`~.metrics.GroundingMetric`)."""
        return resize_mask_logits(
            self.pick(outputs, b, logit_scale),
            padded_size=padded_size,
            image_size=image_size,
            output_size=output_size,
            task="grounding",
        )


def _as_masks(sentence, size) -> torch.Tensor:
    masks = torch.as_tensor(sentence["masks"]).bool()
    if masks.dim() == 2:
        masks = masks[None]
    if tuple(masks.shape[-2:]) != tuple(size):
        raise ValueError(
            f"grounding {sentence.get('text')!r}: masks of size {tuple(masks.shape[-2:])}, "
            f"the image is {tuple(size)}"
        )
    return masks
