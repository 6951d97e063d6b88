"""Panoptic id maps: the core's (detectron2's) encoding <-> MMDetection's.

* core / detectron2 (:func:`find_plugin.core.postprocess.panoptic_inference`): ``seg`` [H, W] int
  with segment ids 1..S and 0 = void, plus ``segments_info`` = one ``{"id", "category_id",
  "isthing"[, "iscrowd"]}`` per segment (contiguous ``category_id`` in [0, K));
* MMDetection (``pred_panoptic_seg.sem_seg``, read by ``CocoPanopticMetric``): one int map whose
  value is ``category + instance * INSTANCE_OFFSET`` (``INSTANCE_OFFSET`` = 1000), void =
  ``num_classes``. Things get instance numbers 1, 2, ... (in segment order); stuff gets instance 0
  (one region per class, as ``MaskFormerFusionHead``). A crowd thing region has no instance in
  mmdet (``LoadPanopticAnnotations`` labels crowd pixels with their class only), so a segment
  with ``iscrowd`` is written with instance 0 and read back as crowd.

The two functions are exact inverses up to the numbering of segment ids (:func:`mmdet_to_core`
numbers segments by first appearance in the mmdet order: stuff regions, then things by instance).
"""

from typing import Dict, List, Mapping, Sequence, Tuple

import torch

__all__ = ["INSTANCE_OFFSET", "core_to_mmdet_panoptic", "mmdet_to_core_panoptic"]

#: mmdet's ``mmdet.evaluation.functional.INSTANCE_OFFSET`` (a constant of its file format).
INSTANCE_OFFSET = 1000


def core_to_mmdet_panoptic(
    seg: torch.Tensor, segments_info: Sequence[Mapping], *, num_classes: int
) -> torch.Tensor:
    """Core ``(seg [H, W], segments_info)`` -> mmdet ids [H, W] int64 (void = ``num_classes``).

    Raises when a segment id of ``segments_info`` is 0 (void) or repeated, a category is outside
    [0, num_classes), or ``num_classes`` >= ``INSTANCE_OFFSET`` (ids would collide)."""
    if not 0 < num_classes < INSTANCE_OFFSET:
        raise ValueError(f"num_classes must be in [1, {INSTANCE_OFFSET}), got {num_classes}")
    seg = torch.as_tensor(seg)
    out = torch.full(seg.shape, num_classes, dtype=torch.long, device=seg.device)
    seen, instance = set(), 0
    for s in segments_info:
        sid, cat = int(s["id"]), int(s["category_id"])
        if sid == 0 or sid in seen:
            raise ValueError(f"segments_info: segment id {sid} is void (0) or repeated")
        if not 0 <= cat < num_classes:
            raise ValueError(f"segments_info: category_id {cat} outside [0, {num_classes})")
        seen.add(sid)
        value = cat
        if s.get("isthing", False) and not s.get("iscrowd", False):
            instance += 1
            value = cat + instance * INSTANCE_OFFSET
        out[seg == sid] = value
    return out


def mmdet_to_core_panoptic(
    ids: torch.Tensor, *, num_classes: int, is_thing: Sequence[bool]
) -> Tuple[torch.Tensor, List[Dict]]:
    """mmdet ids [H, W] (or [1, H, W]) -> core ``(seg [H, W] int32, segments_info)``.

    ``is_thing`` (K booleans) marks thing classes: a thing class with instance 0 is a crowd
    region (``"iscrowd": 1``). Segment ids are 1..S in increasing mmdet id order."""
    ids = torch.as_tensor(ids)
    if ids.dim() == 3 and ids.shape[0] == 1:
        ids = ids[0]
    if len(is_thing) != num_classes:
        raise ValueError(f"is_thing has {len(is_thing)} entries, expected {num_classes}")
    seg = torch.zeros(ids.shape, dtype=torch.int32, device=ids.device)
    infos: List[Dict] = []
    for value in torch.unique(ids).tolist():
        if value == num_classes:
            continue
        cat, instance = value % INSTANCE_OFFSET, value // INSTANCE_OFFSET
        if not 0 <= cat < num_classes:
            raise ValueError(
                f"mmdet panoptic id {value}: category {cat} outside [0, {num_classes})"
            )
        thing = bool(is_thing[cat])
        if instance and not thing:
            raise ValueError(f"mmdet panoptic id {value}: stuff class {cat} with an instance")
        info = {"id": len(infos) + 1, "category_id": cat, "isthing": thing}
        if thing and instance == 0:
            info["iscrowd"] = 1
        seg[ids == value] = info["id"]
        infos.append(info)
    return seg, infos
