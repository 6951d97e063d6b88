"""Prompt simulation (shapes, sizes, determinism) and the interactive click simulator."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from find_plugin.tasks.prompts import (
    PROMPT_KINDS,
    TRAIN_PROMPT_KINDS,
    next_click,
    sample_prompt_kind,
    simulate_clicks,
    simulate_prompt,
    simulate_prompts,
)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _blob(h=64, w=80):
    """A non-convex mask: a disc joined to a thin horizontal bar."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    disc = (yy - 30) ** 2 + (xx - 25) ** 2 <= 15**2
    bar = (yy >= 28) & (yy < 33) & (xx >= 25) & (xx < 75)
    return disc | bar


@pytest.mark.parametrize("kind", [k for k in PROMPT_KINDS if k != "box"])
def test_tasks_prompts_stay_inside_the_mask(kind):
    mask = _blob()
    for seed in range(12):
        p = simulate_prompt(mask, kind, generator=_gen(seed))
        assert p.dtype == torch.bool and p.shape == mask.shape
        assert p.any() and not (p & ~mask).any()


def test_tasks_prompts_box_is_the_bounding_box():
    mask = torch.zeros(10, 12, dtype=torch.bool)
    mask[2, 3] = mask[6, 9] = True
    mask[4, 5:8] = True
    box = torch.zeros_like(mask)
    box[2:7, 3:10] = True
    assert torch.equal(simulate_prompt(mask, "box", generator=_gen(0), min_area=1), box)


@pytest.mark.parametrize("kind", PROMPT_KINDS)
def test_tasks_prompts_deterministic_per_seed_and_seeds_differ(kind):
    mask = _blob()
    a = simulate_prompt(mask, kind, generator=_gen(7))
    b = simulate_prompt(mask, kind, generator=_gen(7))
    assert torch.equal(a, b)
    if kind != "box":  # the box has no randomness
        others = [simulate_prompt(mask, kind, generator=_gen(s)) for s in range(3)]
        assert any(not torch.equal(a, o) for o in others)


def test_tasks_prompts_point_counts_span_1_to_20():
    mask = _blob()
    counts = [int(simulate_prompt(mask, "point", generator=_gen(s)).sum()) for s in range(200)]
    assert min(counts) >= 1 and max(counts) <= 20
    assert min(counts) <= 2 and max(counts) >= 19  # the whole range is drawn
    tiny = torch.zeros(5, 5, dtype=torch.bool)
    tiny[1, 1:4] = True  # 3 pixels: at most 3 points
    counts = [
        int(simulate_prompt(tiny, "point", generator=_gen(s), min_area=1).sum()) for s in range(30)
    ]
    assert set(counts) == {1, 2, 3}


def test_tasks_prompts_shape_sizes_follow_the_presets():
    mask = torch.ones(160, 160, dtype=torch.bool)
    area = {
        k: np.mean([int(simulate_prompt(mask, k, generator=_gen(s)).sum()) for s in range(10)])
        for k in ("scribble", "circle")
    }
    assert area["circle"] > 3 * area["scribble"]  # object-like brushes 10..49 px vs 2..9 px
    for s in range(5):  # the polygon is a one-pixel outline, not a filled area
        poly = simulate_prompt(mask, "polygon", generator=_gen(s)).numpy()
        inner = ndimage.binary_erosion(poly, structure=np.ones((3, 3)))
        assert inner.sum() <= 0.05 * poly.sum()


def test_tasks_prompts_small_empty_and_bad_masks():
    small = torch.zeros(8, 8, dtype=torch.bool)
    small[0, :2] = True  # 2 pixels < the official minimum area of 10
    for kind in PROMPT_KINDS:
        assert not simulate_prompt(small, kind, generator=_gen(0)).any()
        assert not simulate_prompt(torch.zeros(4, 4), kind, generator=_gen(0), min_area=1).any()
    one = np.zeros((4, 4), dtype=np.uint8)
    one[2, 3] = 5  # numeric masks are read as nonzero = object
    assert simulate_prompt(one, "point", generator=_gen(0), min_area=1).nonzero().tolist() == [
        [2, 3]
    ]
    with pytest.raises(ValueError, match="mask must have 2 dims"):
        simulate_prompt(torch.zeros(2, 4, 4), "point", generator=_gen(0))
    with pytest.raises(ValueError, match="mask must be a bool or numeric"):
        simulate_prompt(np.array([["a", "b"]]), "point", generator=_gen(0))
    with pytest.raises(ValueError, match="kind must be one of"):
        simulate_prompt(small, "lasso", generator=_gen(0))
    with pytest.raises(ValueError, match="generator"):
        simulate_prompt(small, "point", generator=0)


def test_tasks_prompts_batch_and_kind_sampling():
    masks = torch.stack(
        [_blob(), torch.roll(_blob(), 20, dims=1), torch.zeros(64, 80, dtype=torch.bool)]
    )
    pos, neg = simulate_prompts(masks, generator=_gen(0))
    assert pos.shape == neg.shape == masks.shape and not neg.any()
    assert pos[0].any() and pos[1].any() and not pos[2].any() and not (pos & ~masks).any()
    pos2, _ = simulate_prompts(masks, generator=_gen(0))
    assert torch.equal(pos, pos2)
    g = _gen(1)
    draws = [sample_prompt_kind(g) for _ in range(800)]
    assert all(140 <= draws.count(k) <= 260 for k in TRAIN_PROMPT_KINDS)  # ~200 each
    assert sample_prompt_kind(g, kinds=("box",)) == "box"
    with pytest.raises(ValueError, match="masks must have 3 dims"):
        simulate_prompts(_blob(), generator=g)


def _square(r0, r1, c0, c1, h=20, w=20):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[r0:r1, c0:c1] = True
    return m


def test_tasks_prompts_click_positive_at_innermost_false_negative():
    gt = _square(2, 11, 2, 11)  # 9x9 object, centre (6, 6)
    pred = _square(15, 16, 15, 18)  # 3 false positives, 81 false negatives
    positive, click = next_click(pred, gt)
    assert positive and torch.equal(click, _square(5, 8, 5, 8))


def test_tasks_prompts_click_negative_at_innermost_false_positive():
    gt = _square(0, 2, 0, 2)  # 4 false negatives
    pred = _square(10, 17, 10, 17)  # 49 false positives, centre (13, 13)
    positive, click = next_click(pred, gt)
    assert not positive and torch.equal(click, _square(12, 15, 12, 15))
    positive, _ = next_click(_square(10, 12, 10, 12), gt)  # 4 vs 4: a tie is negative
    assert not positive


def test_tasks_prompts_click_border_counts_as_boundary():
    gt = torch.ones(10, 10, dtype=torch.bool)  # distance to the border peaks at rows/cols 4-5
    positive, click = next_click(torch.zeros_like(gt), gt)
    assert positive and torch.equal(click, _square(3, 6, 3, 6, 10, 10))  # first max: (4, 4)
    corner = _square(0, 1, 0, 1, 6, 6)  # dilation is clipped at the image border
    assert torch.equal(next_click(torch.zeros_like(corner), corner)[1], _square(0, 2, 0, 2, 6, 6))


def test_tasks_prompts_click_skips_prompted_and_ignored_pixels():
    gt = _square(0, 7, 0, 7) | _square(12, 15, 12, 15)  # big 7x7 and small 3x3 object parts
    empty = torch.zeros_like(gt)
    assert torch.equal(next_click(empty, gt)[1], _square(2, 5, 2, 5))
    for kw in ({"prompted": _square(0, 7, 0, 7)}, {"ignore": _square(0, 7, 0, 7)}):
        assert torch.equal(next_click(empty, gt, **kw)[1], _square(12, 15, 12, 15))
    positive, click = next_click(gt, gt)  # no error at all: no click
    assert not click.any()
    with pytest.raises(ValueError, match="same shape"):
        next_click(empty, gt[:5])


def test_tasks_prompts_simulate_clicks_grows_until_stop():
    gt = _square(2, 14, 2, 14)  # 144 pixels
    calls = []

    def predict(pos, neg):  # predicts the prompted pixels only
        calls.append((pos.clone(), neg.clone()))
        return pos & ~neg

    ious = simulate_clicks(predict, gt, max_clicks=4)
    assert ious.shape == (4,) and len(calls) == 4
    assert ious[0].item() == pytest.approx(9 / 144)  # first click: 3x3 at the centre
    assert (ious.diff() > 0).all() and not calls[-1][1].any()  # only positive clicks
    assert int(calls[-1][0].sum()) == 36  # four disjoint 3x3 clicks


def test_tasks_prompts_simulate_clicks_stop_rule_is_strict_and_per_instance():
    gt = torch.stack([_square(0, 10, 0, 1), _square(5, 15, 5, 15)])  # 10 px and 100 px
    calls = []

    def perfect(pos, neg):
        calls.append(1)
        return gt.clone()

    ious = simulate_clicks(perfect, gt, max_clicks=5)
    assert len(calls) == 1 and torch.equal(ious, torch.ones(2, 5))  # stop, later rounds repeat
    nine = gt.clone()
    nine[0, 9, 0] = False  # IoU exactly 0.9: not > 0.9, the loop goes on
    nine[1, 5, 5:10] = False  # IoU 0.95 >= 0.925: no more clicks for this instance
    seen = []

    def almost(pos, neg):
        seen.append(pos.clone())
        return nine.clone()

    ious = simulate_clicks(almost, gt, max_clicks=3, initial_pos=gt & False)
    assert len(seen) == 3 and ious.flatten().tolist() == pytest.approx([0.9] * 3 + [0.95] * 3)
    assert not seen[2][1].any()  # instance 1 (IoU 0.95 >= 0.925) never gets a click
    assert seen[1][0].any()  # instance 0 (IoU 0.9 < 0.925) does: a positive click


def test_tasks_prompts_simulate_clicks_negative_click_on_false_positives():
    gt = _square(0, 3, 0, 3)
    negs = []

    def overshoot(pos, neg):
        negs.append(neg.clone())
        return _square(0, 12, 0, 12) & ~neg

    simulate_clicks(overshoot, gt, max_clicks=2)
    assert not negs[0].any() and negs[1].any() and not (negs[1] & gt).any()
