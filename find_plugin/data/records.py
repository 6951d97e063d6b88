"""Record entries of the language-grounded tasks from a dataset entry (no framework import):
RefCOCO ``grounding_info`` -> ``groundings``, FIND-Bench ``entity_info`` -> ``entities`` (record
format of :mod:`find_plugin.tasks.base`), plus the evaluation ground truth at the original size.

The adapters only move masks: the detectron2 mappers (:mod:`find_plugin.d2.mappers.language`)
apply their augmentation to each decoded mask and pass the panoptic id map; the MMDetection
pipeline (:class:`find_plugin.mmdet.transforms.FINDSampleTasks`) passes the masks its geometric
transforms moved. What is built here is the same for both:

* ``groundings``: training draws one sentence per ref from ``generator`` (official); evaluation
  makes one entry per sentence (its ref's mask). Sentences are lower-cased (official). Ground
  truth ``grounding_masks`` [G, H0, W0] bool: one per entry, in order;
* ``entities``: every sentence of the image; a phrase's mask is its panoptic segment
  (``annotation_id``). Ground truth ``interleave_masks`` [E, H0, W0] bool: the phrases of the
  first sentence, sorted by start (what the interleave task evaluates).
"""

from typing import Callable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from pycocotools import mask as mask_utils

from ..tasks.base import randint

__all__ = [
    "decode_segmentation",
    "decode_grounding_masks",
    "grounding_records",
    "entity_records",
    "interleave_ground_truth",
    "entity_segment_ids",
]


def decode_segmentation(segm, height: int, width: int, *, where: str = "") -> np.ndarray:
    """COCO ``segmentation`` (polygons, uncompressed or compressed RLE) -> [h, w] bool."""
    if isinstance(segm, list):
        if not segm:
            raise ValueError(f"{where}: empty polygon list")
        rles = mask_utils.frPyObjects(segm, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segm, dict) and "counts" in segm:
        if isinstance(segm["counts"], list):
            rle = mask_utils.frPyObjects(segm, height, width)
        else:
            counts = segm["counts"]
            rle = dict(segm, counts=counts.encode() if isinstance(counts, str) else counts)
    else:
        raise ValueError(f"{where}: segmentation is neither polygons nor RLE: {segm!r:.80}")
    m = mask_utils.decode(rle)
    if m.shape[:2] != (height, width):
        raise ValueError(f"{where}: RLE of size {m.shape[:2]}, the image is {(height, width)}")
    return m.astype(bool) if m.ndim == 2 else m.any(-1)


def decode_grounding_masks(
    grounding_info: Sequence[Mapping], height: int, width: int, *, where: str = ""
) -> np.ndarray:
    """[R, height, width] bool: the mask of each ref of ``grounding_info`` at the original size."""
    masks = [
        decode_segmentation(
            ref["segmentation"], height, width, where=f"{where} grounding_info[{k}]"
        )
        for k, ref in enumerate(grounding_info)
    ]
    return np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool)


def grounding_records(
    grounding_info: Sequence[Mapping],
    masks: Sequence[torch.Tensor],
    original_masks: Optional[Sequence[torch.Tensor]] = None,
    *,
    training: bool,
    generator: Optional[torch.Generator] = None,
    original_size: Optional[Tuple[int, int]] = None,
) -> Tuple[List[dict], Optional[torch.Tensor]]:
    """``(groundings, grounding_masks)``: the record's ``groundings`` from ``masks`` (one [h, w]
    bool per ref, at the transformed size) and, with ``original_masks`` (one [H0, W0] bool per
    ref), the ground truth [G, H0, W0] bool, one per entry (``original_size`` gives its shape
    when there is no ref); else None."""
    if len(masks) != len(grounding_info):
        raise ValueError(f"{len(grounding_info)} refs but {len(masks)} masks")
    entries, originals = [], []
    for k, ref in enumerate(grounding_info):
        sentences = list(ref["sentences"])
        if training:
            sentences = [sentences[randint(0, len(sentences) - 1, generator)]]
        for s in sentences:
            entries.append({"text": s.lower(), "masks": masks[k][None]})
            if original_masks is not None:
                originals.append(original_masks[k])
    if original_masks is None:
        return entries, None
    if originals:
        return entries, torch.stack(originals)
    if original_size is None:
        raise ValueError("grounding_records: original_size is needed when there is no ref")
    return entries, torch.zeros(0, *original_size, dtype=torch.bool)


def entity_segment_ids(entity_info: Sequence[Mapping]) -> List[int]:
    """The panoptic segment ids the phrases of ``entity_info`` name (sorted, each once)."""
    return sorted({int(p["annotation_id"]) for e in entity_info for p in e["phrases"]})


def entity_records(
    entity_info: Sequence[Mapping],
    mask_of: Callable[[int], torch.Tensor],
    read_reference: Optional[Callable[[Mapping], dict]] = None,
) -> List[dict]:
    """The record's ``entities``: ``mask_of(annotation_id)`` -> [h, w] bool (transformed size).
    With ``read_reference`` (dataset ``reference`` -> record ``reference`` {"image", "mask",
    "image_id"}), the phrases of the first sentence (the one evaluated) with a cross-image
    reference get it."""
    entities = []
    for i, e in enumerate(entity_info):
        phrases = []
        for p in e["phrases"]:
            phrase = {"start": p["start"], "end": p["end"], "mask": mask_of(p["annotation_id"])}
            if read_reference is not None and i == 0 and p.get("reference") is not None:
                phrase["reference"] = read_reference(p["reference"])
            phrases.append(phrase)
        entities.append({"sentence": e["sentence"], "phrases": phrases})
    return entities


def interleave_ground_truth(
    entity_info: Sequence[Mapping],
    original_mask_of: Callable[[int], torch.Tensor],
    original_size: Tuple[int, int],
) -> torch.Tensor:
    """[E, H0, W0] bool: ``original_mask_of(annotation_id)`` of each phrase of the first
    sentence, in order."""
    masks = [original_mask_of(p["annotation_id"]) for e in entity_info[:1] for p in e["phrases"]]
    return torch.stack(masks) if masks else torch.zeros(0, *original_size, dtype=torch.bool)
