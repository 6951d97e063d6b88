"""Post-processing on small hand-computed cases."""

import math

import pytest
import torch

from find_plugin.core.postprocess import (
    RESIZE_RULES,
    grounding_pick,
    instance_inference,
    interactive_pick,
    interleave_pick,
    panoptic_inference,
    resize_mask_logits,
    semantic_inference,
)


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_semantic_two_queries():
    mask_cls = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]))
    mask_pred = torch.tensor([[[2.0, -2.0]], [[0.0, 1.0]]])  # [Q=2, H=1, W=2]
    sem = semantic_inference(mask_cls, mask_pred)
    assert sem.shape == (2, 1, 2)
    expected = torch.tensor(
        [
            [[0.6 * sig(2) + 0.2 * sig(0), 0.6 * sig(-2) + 0.2 * sig(1)]],
            [[0.3 * sig(2) + 0.2 * sig(0), 0.3 * sig(-2) + 0.2 * sig(1)]],
        ]
    )
    assert torch.allclose(sem, expected, atol=1e-6)
    assert sem.argmax(0).tolist() == [[0, 0]]


def _region(rows, cols, inside=5.0, outside=-5.0):
    m = torch.full((4, 4), outside)
    m[rows[0] : rows[1], cols[0] : cols[1]] = inside
    return m


def test_panoptic_low_score_and_overlap_drops():
    mask_cls = torch.tensor(
        [
            [6.0, 0.0, 0.0],  # q0 thing class 0, p=0.995
            [0.0, 6.0, 0.0],  # q1 stuff class 1
            [1.0, 0.5, 0.0],  # q2 p=0.51 < 0.8 -> dropped although its mask covers everything
            [4.0, 0.0, 0.0],  # q3 thing, mostly hidden by q0/q1 -> overlap-dropped
        ]
    )
    mask_pred = torch.stack(
        [
            _region((0, 4), (0, 2)),
            _region((0, 2), (2, 4)),
            _region((0, 4), (0, 4), inside=8.0),
            _region((0, 4), (1, 3), inside=2.0),
        ]
    )
    seg, info = panoptic_inference(mask_cls, mask_pred, is_thing=[True, False])
    expected = torch.zeros(4, 4, dtype=torch.int32)
    expected[:, :2] = 1
    expected[:2, 2:] = 2
    assert torch.equal(seg, expected)
    assert info == [
        {"id": 1, "isthing": True, "category_id": 0},
        {"id": 2, "isthing": False, "category_id": 1},
    ]
    # q3 alone would survive: the drop above is due to the overlap rule
    seg3, info3 = panoptic_inference(mask_cls[3:], mask_pred[3:], is_thing=[True, False])
    assert info3 == [{"id": 1, "isthing": True, "category_id": 0}] and int(seg3.sum()) == 8


def test_panoptic_merges_stuff_and_handles_empty():
    mask_cls = torch.tensor([[0.0, 6.0, 0.0], [0.0, 6.0, 0.0], [6.0, 0.0, 0.0]])
    mask_pred = torch.stack(
        [_region((0, 2), (0, 4)), _region((2, 4), (0, 2)), _region((2, 4), (2, 4))]
    )
    seg, info = panoptic_inference(mask_cls, mask_pred, is_thing=[True, False])
    assert info == [
        {"id": 1, "isthing": False, "category_id": 1},
        {"id": 2, "isthing": True, "category_id": 0},
    ]
    assert (seg[:2] == 1).all() and (seg[2:, :2] == 1).all() and (seg[2:, 2:] == 2).all()
    bg = torch.tensor([[0.0, 0.0, 9.0]])
    seg0, info0 = panoptic_inference(bg, mask_pred[:1], is_thing=[True, False])
    assert info0 == [] and int(seg0.abs().sum()) == 0
    with pytest.raises(ValueError, match="is_thing"):
        panoptic_inference(mask_cls, mask_pred, is_thing=[True])


def test_instance_topk_order_scores_and_panoptic_filter():
    mask_cls = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.7, 0.2]]))
    mask_pred = torch.stack([_region((0, 2), (0, 2), inside=2.0), _region((0, 4), (0, 4), 1.0)])
    res = instance_inference(mask_cls, mask_pred, top_k=3)
    # class probs: (q1,c1)=0.7 > (q0,c0)=0.5 > (q0,c1)=0.3
    assert res["query_indices"].tolist() == [1, 0, 0]
    assert res["pred_classes"].tolist() == [1, 0, 1]
    expected = torch.tensor([0.7 * sig(1.0), 0.5 * sig(2.0), 0.3 * sig(2.0)])
    assert torch.allclose(res["scores"], expected, atol=1e-5)
    assert res["pred_masks"].dtype == torch.bool and int(res["pred_masks"][1].sum()) == 4
    things = instance_inference(
        mask_cls, mask_pred, top_k=3, is_thing=[True, False], panoptic_on=True
    )
    assert things["pred_classes"].tolist() == [0]
    assert things["query_indices"].tolist() == [0]


def test_resize_mask_logits_crop_and_resize():
    logits = torch.arange(16.0).reshape(1, 4, 4)
    same = resize_mask_logits(logits, padded_size=(4, 4), image_size=(4, 4), output_size=(4, 4))
    assert torch.allclose(same, logits)
    # stride-4 map of a 32x32 padded input whose valid part is 16x20 -> original 8x10; the
    # padding area of the map holds 100 and must not leak into the crop
    big = torch.full((1, 8, 8), 100.0)
    big[:, :5, :6] = 1.0  # valid rows 0-3 / cols 0-4 plus the one neighbour bilinear reads
    out = resize_mask_logits(big, padded_size=(32, 32), image_size=(16, 20), output_size=(8, 10))
    assert out.shape == (1, 8, 10)
    assert torch.allclose(out, torch.ones(1, 8, 10))
    cubic = resize_mask_logits(
        big, padded_size=(32, 32), image_size=(16, 20), output_size=(8, 10), mode="bicubic"
    )
    assert cubic.shape == (1, 8, 10) and cubic[0, 0, 0].item() == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="exceeds"):
        resize_mask_logits(logits, padded_size=(4, 4), image_size=(8, 4), output_size=(4, 4))


def test_resize_mask_logits_task_rules():
    """Each task's padding crop holds for every rule; the kernels differ (official parity of each
    kernel: test_core_official_postprocess.py)."""
    big = torch.full((1, 8, 8), 100.0)
    big[:, :6, :7] = 1.0  # valid part plus the two neighbours bicubic reads
    outs = {}
    for task in ("generic", "grounding", "interleave", "interactive"):
        outs[task] = resize_mask_logits(
            big, padded_size=(32, 32), image_size=(16, 20), output_size=(8, 10), task=task
        )
        assert outs[task].shape == (1, 8, 10)
        assert torch.allclose(outs[task], torch.ones(1, 8, 10), atol=1e-4), task
    ramp = torch.linspace(-3, 3, 16).reshape(1, 4, 4)
    up = {
        t: resize_mask_logits(
            ramp, padded_size=(16, 16), image_size=(16, 16), output_size=(16, 16), task=t
        )
        for t in ("generic", "interleave", "interactive")
    }
    assert not torch.allclose(up["generic"], up["interactive"])  # bilinear vs bicubic
    assert not torch.allclose(up["interleave"], up["interactive"])  # antialiased or not
    with pytest.raises(ValueError, match="task must be one of"):
        resize_mask_logits(
            ramp, padded_size=(4, 4), image_size=(4, 4), output_size=(4, 4), task="x"
        )


def test_grounding_pick_uses_cosine():
    gtexts = torch.tensor([[10.0, 0.0], [0.0, 0.1], [1.0, 1.0]])  # norms differ; cosine decides
    queries = torch.tensor([[0.0, 3.0], [1.0, 1.1]])
    idx, logits = grounding_pick(gtexts, queries, torch.tensor(math.log(2.0)))
    assert idx.tolist() == [1, 2]
    assert logits.shape == (3, 2) and logits.max().item() == pytest.approx(2.0, abs=1e-2)


def test_interactive_and_interleave_picks():
    smaskembs = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    pspatials = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    idx, _ = interactive_pick(smaskembs, pspatials)
    assert idx.tolist() == [0, 1]  # raw dot: [1, -2, 0] and [-1, 2, 0]
    im = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ic = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    ent_pix = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    ent_cls = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    idx, logits = interleave_pick(im, ent_pix, ic, ent_cls, torch.tensor([True, False]))
    # entity 0 is visual -> pixel dot prefers proposal 0; entity 1 is text -> semantic prefers 1
    assert idx.tolist() == [0, 1]
    assert torch.allclose(logits, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_interleave_official_rule_stretches_the_padded_border():
    """Official interleave evaluation: one antialiased bicubic resize of the whole stride-4 map
    (padding included) to the output size; the aligned rule crops the padding first."""
    import torch.nn.functional as F

    from find_plugin.core.postprocess import resize_mask_logits

    logits = torch.randn(2, 16, 16)
    sizes = dict(padded_size=(64, 64), image_size=(48, 64), output_size=(48, 64))
    official = resize_mask_logits(logits, task="interleave_official", **sizes)
    by_hand = F.interpolate(
        logits[None], size=(48, 64), mode="bicubic", align_corners=False, antialias=True
    )[0]
    torch.testing.assert_close(official, by_hand)
    aligned = resize_mask_logits(logits, task="interleave", **sizes)
    assert (aligned - official).abs().max() > 0.1
    # without padding the two agree
    same = dict(padded_size=(64, 64), image_size=(64, 64), output_size=(64, 64))
    torch.testing.assert_close(
        resize_mask_logits(logits, task="interleave_official", **same),
        resize_mask_logits(logits, task="interleave", **same),
        atol=1e-4,
        rtol=1e-4,
    )


@pytest.mark.parametrize("task", ["generic", "interactive", "interleave"])
def test_resizes_to_the_same_size_equal_torch_interpolate(task):
    """A resize to the size a map already has is skipped: the result must still be what
    F.interpolate gives at scale 1 (bilinear, bicubic, antialiased bicubic)."""
    x = torch.randn(3, 20, 24, generator=torch.Generator().manual_seed(0))
    mode, aa = RESIZE_RULES[task].to_output  # padded -> image size is a no-op crop here
    out = resize_mask_logits(
        x, padded_size=(20, 24), image_size=(20, 24), output_size=(20, 24), task=task
    )
    ref = torch.nn.functional.interpolate(
        x[None], size=(20, 24), mode=mode, align_corners=False, antialias=aa
    )[0]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    # one side of the same size is not the same size: that resize happens
    wider = resize_mask_logits(
        x, padded_size=(20, 24), image_size=(20, 24), output_size=(20, 30), task=task
    )
    ref = torch.nn.functional.interpolate(
        x[None], size=(20, 30), mode=mode, align_corners=False, antialias=aa
    )[0]
    torch.testing.assert_close(wider, ref, atol=1e-5, rtol=0)


def test_shared_mask_probabilities_give_the_same_results():
    g = torch.Generator().manual_seed(1)
    mask_cls, mask_pred = torch.randn(6, 4, generator=g) * 3, torch.randn(6, 5, 7, generator=g)
    prob = torch.sigmoid(mask_pred)
    torch.testing.assert_close(
        semantic_inference(mask_cls, mask_pred, mask_prob=prob),
        semantic_inference(mask_cls, mask_pred),
    )
    kw = dict(is_thing=[True, False, True], object_mask_threshold=0.0, overlap_threshold=0.0)
    seg, info = panoptic_inference(mask_cls, mask_pred, mask_prob=prob, **kw)
    ref_seg, ref_info = panoptic_inference(mask_cls, mask_pred, **kw)
    assert torch.equal(seg, ref_seg) and info == ref_info and len(info) > 0
    inst = instance_inference(mask_cls, mask_pred, top_k=5, mask_prob=prob)
    ref = instance_inference(mask_cls, mask_pred, top_k=5)
    for k in ref:
        torch.testing.assert_close(inst[k], ref[k])
    with pytest.raises(ValueError, match="must be sigmoid"):
        semantic_inference(mask_cls, mask_pred, mask_prob=prob[:, :2])


def test_instance_inference_pairs_sharing_a_query_equal_the_written_out_scores():
    """Pairs of one query share its mask, box and mask score (computed once per query): each
    pair's score is its class probability times the mean sigmoid inside the query's mask."""
    g = torch.Generator().manual_seed(3)
    mask_cls, mask_pred = torch.randn(5, 7, generator=g) * 2, torch.randn(5, 9, 11, generator=g)
    mask_pred[2] = -1.0  # an empty mask: score 0, box zeros
    res = instance_inference(mask_cls, mask_pred, top_k=20)
    probs = mask_cls.softmax(-1)[:, :-1]
    assert len(set(res["query_indices"].tolist())) < 20  # queries do repeat
    for i, (q, c) in enumerate(zip(res["query_indices"], res["pred_classes"])):
        binary = mask_pred[q] > 0
        inside = torch.sigmoid(mask_pred[q])[binary].sum() / (binary.sum() + 1e-6)
        assert torch.equal(res["pred_masks"][i], binary)
        torch.testing.assert_close(res["scores"][i], probs[q, c] * inside)
        ys, xs = torch.nonzero(binary, as_tuple=True)
        box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 0, 0]
        assert res["pred_boxes"][i].tolist() == [float(v) for v in box]


def test_mask_boxes_equal_detectron2_bitmasks():
    from detectron2.structures import BitMasks

    from find_plugin.core.postprocess import mask_boxes

    g = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 13, 17, generator=g) > 0.93
    masks[0] = False
    masks[1, 12, 16] = True
    masks[2] = False
    masks[2, 0, 0] = True
    assert torch.equal(mask_boxes(masks), BitMasks(masks).get_bounding_boxes().tensor)
    with pytest.raises(ValueError, match="bool"):
        mask_boxes(masks.float())


def test_panoptic_owner_is_argmax_with_its_tie_rule():
    """The pixel owner (largest score x probability, one map at a time) equals ``argmax`` over
    the stacked products, ties (many here: quarter steps) going to the first query."""
    from find_plugin.core.postprocess import _weighted_argmax

    g = torch.Generator().manual_seed(0)
    maps = torch.randint(0, 5, (6, 9, 11), generator=g).float() / 4
    scores = torch.tensor([1.0, 0.5, 1.0, 2.0, 0.5, 1.0])
    expected = (scores[:, None, None] * maps).argmax(0)
    assert torch.equal(_weighted_argmax(scores, maps), expected)
    assert torch.equal(_weighted_argmax(scores, list(maps)), expected)
    # bf16 maps with float32 scores: products in float32, as the stacked product promotes
    low = (torch.rand(6, 9, 11, generator=g) * 0.01 + 0.5).to(torch.bfloat16)
    wide = torch.tensor([1.0, 1.001, 1.002, 1.003, 1.004, 1.005])
    expected = (wide[:, None, None] * low).argmax(0)
    assert torch.equal(_weighted_argmax(wide, low), expected)


@pytest.mark.parametrize("pixels", [128 * 3, 130])
def test_count_true_counts_every_row(pixels):
    """Pixel counts by runs of 128 (int16 partial sums) or whole rows equal the plain count."""
    from find_plugin.core.postprocess import _count_true

    masks = torch.rand(5, pixels, generator=torch.Generator().manual_seed(0)) > 0.3
    masks[0] = True  # every run full: 128 fits the int16 partial sums
    masks[1] = False
    assert _count_true(masks).tolist() == masks.sum(1).tolist()
