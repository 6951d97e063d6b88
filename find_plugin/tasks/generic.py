"""Generic segmentation (panoptic / instance / semantic) and the class-embedding bank.

Spec §2, §2.1, §1.6. The 100 object proposals (prototype ``seg``, always run) are classified
against a bank of class embeddings made by the interface itself from class prompts (prototype
``class``):

* training: every image samples one class id in [0, K] (K = background) and one of the 12
  templates; its class query runs in the same pass and refreshes that bank row (``class_indexes``);
* evaluation: :meth:`GenericSegmentationTask.class_bank` encodes "Describe the concept of {c}." for
  every class plus "background" on zero features (150-token budget).

Ids: ``labels`` are contiguous class ids in [0, K); the background / no-object class is K, the last
column of ``pred_logits``. Metrics: the frameworks' standard evaluators (PQ, mask AP, mIoU); this
module produces their inputs (:meth:`predict`).
"""

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..core.class_bank import EVAL_TEMPLATE, TRAIN_TEMPLATES, class_prompts
from ..core.postprocess import (
    instance_inference,
    panoptic_inference,
    resize_mask_logits,
    semantic_inference,
)
from .base import (
    FINDTask,
    encode_texts_on_zero_features,
    pad_masks,
    pad_token_batch,
    randint,
    record_size,
    register_task,
)

__all__ = ["GenericSegmentationTask"]


@register_task
class GenericSegmentationTask(FINDTask):
    """Args:
    class_names: the K class names (contiguous id order), without "background".
    templates: training prompt templates (official 12).
    train_class_bank: run the class query in training (refreshes one bank row per image).
    """

    name = "generic"
    prototypes = ("class",)
    loss_groups = ("labels", "masks")

    def __init__(
        self,
        *,
        class_names: Sequence[str],
        templates: Sequence[str] = TRAIN_TEMPLATES,
        train_class_bank: bool = True,
    ):
        if not class_names:
            raise ValueError("GenericSegmentationTask: class_names must list the K classes")
        # cleaned names ("-other"/"-merged"/"-stuff" dropped) + "background" (K = no-object)
        self.prompts_by_class = class_prompts(class_names, "{}")
        self.class_names = self.prompts_by_class[:-1]
        self.templates = tuple(templates)
        self.train_class_bank = bool(train_class_bank)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # ------------------------------------------------------------------ training
    def sample(self, record, *, generator, encode_text, training) -> dict:
        size = record_size(record)
        labels = torch.as_tensor(record.get("labels", []), dtype=torch.long).reshape(-1)
        masks = record.get("masks")
        masks = torch.zeros(0, *size, dtype=torch.bool) if masks is None else masks.bool()
        if len(labels) != len(masks):
            raise ValueError(f"record: {len(labels)} labels but {len(masks)} masks")
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"record labels must be contiguous ids in [0, {self.num_classes}), got "
                f"{labels.unique().tolist()}"
            )
        sample = {"image_size": size, "labels": labels, "masks": masks}
        if training and self.train_class_bank:
            if encode_text is None:
                raise ValueError("generic: training the class bank needs encode_text")
            cls = randint(0, self.num_classes, generator)  # background (K) included
            template = self.templates[randint(0, len(self.templates) - 1, generator)]
            text = template.format(self.prompts_by_class[cls])
            sample["class_index"] = cls
            sample["class_tokens"] = encode_text([text], "sentence")[0]
        return sample

    def pack_inputs(self, samples, *, project, padded_size) -> Dict[str, dict]:
        if not all("class_tokens" in s for s in samples):
            return {}
        inputs = pad_token_batch([s["class_tokens"].features for s in samples], project=project)
        inputs["class_indexes"] = torch.tensor([s["class_index"] for s in samples])
        return {"class": inputs}

    def build_targets(self, samples, *, project, padded_size) -> List[dict]:
        return [
            {"labels": s["labels"], "masks": pad_masks(s["masks"], padded_size)} for s in samples
        ]

    # ------------------------------------------------------------------ evaluation
    def class_bank(
        self, interface: nn.Module, encode_text, *, template: str = EVAL_TEMPLATE
    ) -> torch.Tensor:
        """[K + 1, dim_proj] bank (background last) from ``template`` prompts on zero features."""
        texts = [template.format(p) for p in self.prompts_by_class]
        feats = encode_text(texts, "class")
        return encode_texts_on_zero_features(interface, "class", feats, "pred_retrievals_class")

    def predict(
        self,
        outputs: Mapping,
        b: int,
        *,
        padded_size: Tuple[int, int],
        image_size: Tuple[int, int],
        output_size: Tuple[int, int],
        is_thing: Optional[Sequence[bool]] = None,
        semantic_on: bool = True,
        panoptic_on: bool = True,
        instance_on: bool = True,
        object_mask_threshold: float = 0.8,
        overlap_threshold: float = 0.8,
        top_k: int = 100,
    ) -> Dict[str, object]:
        """Image ``b`` -> ``sem_seg`` [K, H, W] scores, ``panoptic_seg`` (seg [H, W] int32 with
        segment ids 1..S and 0 = void, segments_info), ``instances`` (dict of
        :func:`~find_plugin.core.postprocess.instance_inference`), at ``output_size``."""
        if (panoptic_on or instance_on) and is_thing is None:
            raise ValueError("generic.predict: panoptic/instance output needs is_thing (K bools)")
        mask_cls = outputs["pred_logits"][b]
        masks = resize_mask_logits(
            outputs["pred_masks"][b],
            padded_size=padded_size,
            image_size=image_size,
            output_size=output_size,
        )
        result: Dict[str, object] = {}
        # sigmoid of the full-resolution masks, once for semantic and panoptic inference; freed
        # before instance inference, which gathers its own rows (the peak memory stays that of
        # one full-resolution copy besides the masks)
        prob = masks.sigmoid() if semantic_on and panoptic_on else None
        if semantic_on:
            result["sem_seg"] = semantic_inference(mask_cls, masks, mask_prob=prob)
        if panoptic_on:
            result["panoptic_seg"] = panoptic_inference(
                mask_cls,
                masks,
                is_thing=is_thing,
                object_mask_threshold=object_mask_threshold,
                overlap_threshold=overlap_threshold,
                mask_prob=prob,
            )
        del prob
        if instance_on:
            result["instances"] = instance_inference(
                mask_cls,
                masks,
                top_k=top_k,
                is_thing=is_thing,
                panoptic_on=panoptic_on,
            )
        return result
