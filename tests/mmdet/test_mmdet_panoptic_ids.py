"""Panoptic ids: the core's (detectron2's) encoding <-> mmdet's (category + instance x 1000,
void = K), with void, stuff, several things of one class and a crowd region."""

import pytest
import torch

from find_plugin.mmdet.panoptic import (
    INSTANCE_OFFSET,
    core_to_mmdet_panoptic,
    mmdet_to_core_panoptic,
)

K = 4  # classes 0, 1 things; 2, 3 stuff
IS_THING = [True, True, False, False]


def _core_map():
    seg = torch.zeros(6, 8, dtype=torch.int32)  # 0 = void (left column)
    seg[:, 1:4] = 7  # stuff 3
    seg[:, 4:] = 2  # stuff 2
    seg[1:3, 2:4] = 5  # thing 0 (first instance)
    seg[3:5, 5:7] = 9  # thing 0 (second instance)
    seg[0, 6:8] = 4  # thing 1
    seg[5, 1:3] = 3  # crowd region of thing 1
    infos = [
        {"id": 7, "category_id": 3, "isthing": False},
        {"id": 2, "category_id": 2, "isthing": False},
        {"id": 5, "category_id": 0, "isthing": True},
        {"id": 9, "category_id": 0, "isthing": True},
        {"id": 4, "category_id": 1, "isthing": True},
        {"id": 3, "category_id": 1, "isthing": True, "iscrowd": 1},
    ]
    return seg, infos


def test_core_to_mmdet_values():
    seg, infos = _core_map()
    ids = core_to_mmdet_panoptic(seg, infos, num_classes=K)
    assert INSTANCE_OFFSET == 1000
    assert ids[0, 0] == K  # void
    assert ids[0, 1] == 3 and ids[0, 4] == 2  # stuff: the category, instance 0
    # things: category + instance * 1000, instances numbered 1, 2, ... in segment order
    assert ids[1, 2] == 0 + 1 * 1000 and ids[3, 5] == 0 + 2 * 1000 and ids[0, 6] == 1 + 3 * 1000
    assert ids[5, 1] == 1  # crowd: the thing's category without an instance
    assert set(ids.unique().tolist()) == {4, 3, 2, 1000, 2000, 3001, 1}


def test_round_trip_keeps_every_segment():
    seg, infos = _core_map()
    ids = core_to_mmdet_panoptic(seg, infos, num_classes=K)
    back, back_infos = mmdet_to_core_panoptic(ids[None], num_classes=K, is_thing=IS_THING)
    assert torch.equal(back == 0, seg == 0)  # void stays void
    by_id = {s["id"]: s for s in infos}
    pairs = set()
    for s in back_infos:
        region = back == s["id"]
        original = seg[region].unique()
        assert len(original) == 1  # one segment maps to one segment, pixel for pixel
        o = by_id[int(original)]
        assert torch.equal(region, seg == o["id"])
        assert s["category_id"] == o["category_id"] and s["isthing"] == o["isthing"]
        assert bool(s.get("iscrowd", 0)) == bool(o.get("iscrowd", 0))
        pairs.add(o["id"])
    assert pairs == set(by_id)
    # and back again: the same mmdet map
    assert torch.equal(core_to_mmdet_panoptic(back, back_infos, num_classes=K), ids)


def test_bad_inputs_fail_clearly():
    seg, infos = _core_map()
    with pytest.raises(ValueError, match="category_id 4 outside"):
        core_to_mmdet_panoptic(seg, infos + [{"id": 8, "category_id": 4}], num_classes=K)
    with pytest.raises(ValueError, match="segment id 7 is void .0. or repeated"):
        core_to_mmdet_panoptic(seg, infos + [{"id": 7, "category_id": 2}], num_classes=K)
    with pytest.raises(ValueError, match="stuff class 2 with an instance"):
        mmdet_to_core_panoptic(torch.tensor([[1002]]), num_classes=K, is_thing=IS_THING)
