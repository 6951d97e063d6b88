"""Record entries of the language-grounded tasks from a dataset dict (used by the mappers of
:mod:`.panoptic`): RefCOCO ``grounding_info`` -> ``groundings``, FIND-Bench ``entity_info`` ->
``entities`` (record format of :mod:`find_plugin.tasks.base`), at the augmented size, with the
same transforms as the panoptic masks; in evaluation also the ground truth at the original size.

* ``groundings``: training draws one sentence per ref from the mapper's generator (official);
  evaluation makes one entry per sentence (its ref's mask). Sentences are lower-cased (official).
  ``find_gt["grounding_masks"]`` [G, H0, W0] bool, one per entry, in order (the grounding task
  evaluates every entry with the union of its masks).
* ``entities``: every sentence of the image; each phrase's mask is its panoptic segment
  (``annotation_id``) in the transformed id map. ``find_gt["interleave_masks"]`` [E, H0, W0] bool:
  the phrases of the first sentence, sorted by start (what the interleave task evaluates).
  Interleave retrieval with visual references also reads, for each phrase of the first sentence
  with a ``reference``, the reference image and its segment mask (the mapper's reader).
"""

from typing import Callable, Mapping, Optional, Tuple

import numpy as np
import torch
from pycocotools import mask as mask_utils

from ...tasks.base import randint

__all__ = ["decode_segmentation", "grounding_entries", "entity_entries"]


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


def _transform_mask(mask: np.ndarray, transforms) -> torch.Tensor:
    # uint8 0/1 through the segmentation path (nearest resize); crop padding (255) is not 1
    out = transforms.apply_segmentation(mask.astype(np.uint8))
    return torch.from_numpy(np.ascontiguousarray(out == 1))


def grounding_entries(
    d: Mapping,
    transforms,
    original_size: Tuple[int, int],
    *,
    training: bool,
    generator: Optional[torch.Generator] = None,
) -> Tuple[list, torch.Tensor]:
    """``(groundings, original_masks)``: the record's ``groundings`` at the transformed size and
    [G, H0, W0] bool masks at ``original_size`` (one per grounding entry)."""
    h, w = original_size
    entries, originals = [], []
    for k, ref in enumerate(d.get("grounding_info", [])):
        where = f"image {d.get('image_id')} ({d.get('file_name')}) grounding_info[{k}]"
        mask = decode_segmentation(ref["segmentation"], h, w, where=where)
        moved = _transform_mask(mask, transforms)
        sentences = list(ref["sentences"])
        if training:
            sentences = [sentences[randint(0, len(sentences) - 1, generator)]]
        for s in sentences:
            entries.append({"text": s.lower(), "masks": moved[None]})
            originals.append(torch.from_numpy(mask))
    gt = torch.stack(originals) if originals else torch.zeros(0, h, w, dtype=torch.bool)
    return entries, gt


def entity_entries(
    d: Mapping,
    ids: np.ndarray,
    original_ids: Optional[np.ndarray] = None,
    read_reference: Optional[Callable[[Mapping], dict]] = None,
) -> Tuple[list, Optional[torch.Tensor]]:
    """``(entities, original_masks)``: the record's ``entities`` from the transformed panoptic id
    map ``ids`` [h, w], and, with ``original_ids`` [H0, W0], the first sentence's phrase masks
    [E, H0, W0] bool (else None). With ``read_reference`` (dataset ``reference`` -> record
    ``reference`` {"image", "mask", "image_id"}), the phrases of the first sentence (the one
    evaluated) that have a cross-image reference get it."""
    entities = []
    for i, e in enumerate(d.get("entity_info", [])):
        phrases = []
        for p in e["phrases"]:
            phrase = {
                "start": p["start"],
                "end": p["end"],
                "mask": torch.from_numpy(ids == p["annotation_id"]),
            }
            if read_reference is not None and i == 0 and p.get("reference") is not None:
                phrase["reference"] = read_reference(p["reference"])
            phrases.append(phrase)
        entities.append({"sentence": e["sentence"], "phrases": phrases})
    if original_ids is None:
        return entities, None
    first = d.get("entity_info", [])[:1]
    masks = [original_ids == p["annotation_id"] for e in first for p in e["phrases"]]
    gt = (
        torch.from_numpy(np.stack(masks))
        if masks
        else torch.zeros(0, *original_ids.shape, dtype=torch.bool)
    )
    return entities, gt
