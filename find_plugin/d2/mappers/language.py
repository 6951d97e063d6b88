"""Record entries of the language-grounded tasks from a dataset dict (used by the mappers of
:mod:`.panoptic`): the framework-free :mod:`find_plugin.data.records` fed with masks moved by
detectron2's transforms (the same transforms as the panoptic masks); in evaluation also the
ground truth at the original size.

* ``groundings`` (RefCOCO ``grounding_info``): ``find_gt["grounding_masks"]`` [G, H0, W0] bool,
  one per entry, in order (the grounding task evaluates every entry with the union of its masks).
* ``entities`` (FIND-Bench ``entity_info``): each phrase's mask is its panoptic segment
  (``annotation_id``) in the transformed id map. ``find_gt["interleave_masks"]`` [E, H0, W0]
  bool: the phrases of the first sentence, sorted by start. Interleave retrieval with visual
  references also reads, for each phrase of the first sentence with a ``reference``, the
  reference image and its segment mask (the mapper's reader).
"""

from typing import Callable, Mapping, Optional, Tuple

import numpy as np
import torch

from ...data.records import (
    decode_grounding_masks,
    decode_segmentation,
    entity_records,
    grounding_records,
    interleave_ground_truth,
)

__all__ = ["decode_segmentation", "grounding_entries", "entity_entries"]


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
    infos = d.get("grounding_info", [])
    where = f"image {d.get('image_id')} ({d.get('file_name')})"
    originals = decode_grounding_masks(infos, *original_size, where=where)
    moved = [_transform_mask(m, transforms) for m in originals]
    return grounding_records(
        infos,
        moved,
        [torch.from_numpy(m) for m in originals],
        training=training,
        generator=generator,
        original_size=original_size,
    )


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
    infos = d.get("entity_info", [])
    entities = entity_records(infos, lambda sid: torch.from_numpy(ids == sid), read_reference)
    if original_ids is None:
        return entities, None
    gt = interleave_ground_truth(
        infos, lambda sid: torch.from_numpy(original_ids == sid), original_ids.shape
    )
    return entities, gt
