"""Task metrics: hand-computed official values (with each official quirk), the corrected
``_exact`` values, streamed retrieval against a full score matrix, and state merging."""

import math

import pytest
import torch

from find_plugin.tasks.metrics import (
    GroundingMetric,
    InteractiveMetric,
    RetrievalMetric,
    interactive_iou,
    retrieval_recall,
    streamed_topk,
)


def _pair(inter: int, union: int, width: int = 1000):
    """[1, width] pred / gt rows with |pred & gt| = inter and |pred | gt| = union."""
    pred = torch.zeros(1, width, dtype=torch.bool)
    gt = torch.zeros(1, width, dtype=torch.bool)
    pred[0, :union] = True
    gt[0, :inter] = True
    return pred, gt


def _grounding(pairs):
    m = GroundingMetric()
    for i, u in pairs:
        m.update(*_pair(i, u))
    return m.compute()


def test_tasks_metrics_grounding_official_quirks_and_exact_values():
    # (2, 4): exactly 0.5 but the epsilon survives float32 for U < 32 -> fails 0.5 (quirk 1);
    # (7, 10): exactly 0.7, small U -> fails 0.7; (700, 1000): exactly 0.7, large U -> passes
    # (quirk 2); (0, 0): empty GT and prediction -> IoU 0, still counted in total (quirk 3).
    r = _grounding([(2, 4), (7, 10), (700, 1000), (0, 0)])
    assert r["precision@0.5"] == 50.0 and r["precision@0.5_exact"] == 75.0
    assert r["precision@0.6"] == 50.0 and r["precision@0.6_exact"] == 50.0
    assert r["precision@0.7"] == 25.0 and r["precision@0.7_exact"] == 50.0
    assert r["precision@0.8"] == 0.0 and r["precision@0.9_exact"] == 0.0
    assert r["cIoU"] == pytest.approx(70900 / 1014, rel=1e-6)
    assert r["cIoU_exact"] == 70900 / 1014
    assert r["mIoU"] == pytest.approx(47.5, rel=1e-5) and r["mIoU"] != 47.5  # epsilon in float32
    assert r["mIoU_exact"] == 47.5


def test_tasks_metrics_grounding_weighting_and_all_empty():
    # Quirk 4: every mask weighs the same in mIoU, every pixel in cIoU.
    r = _grounding([(1, 1), (0, 99)])
    assert r["mIoU_exact"] == 50.0 and r["cIoU_exact"] == 1.0
    assert r["cIoU"] == pytest.approx(1.0, rel=1e-6) and r["precision@0.9"] == 50.0
    # All-empty input: cIoU = NaN, mIoU = 0.
    r = _grounding([(0, 0), (0, 0)])
    assert math.isnan(r["cIoU"]) and math.isnan(r["cIoU_exact"])
    assert r["mIoU"] == 0.0 and r["precision@0.5"] == 0.0 and r["precision@0.5_exact"] == 0.0


def test_tasks_metrics_grounding_strict_logit_and_nonzero_gt():
    m = GroundingMetric()
    logits = torch.tensor([[[0.0, 0.5, -1.0, 3.0]]])  # a logit of exactly 0 is background
    gt = torch.tensor([[[2, 2, 0, 0]]])  # RefCOCO GT can hold 2: any nonzero is foreground
    m.update(logits, gt)  # I = 1 (pixel 1), U = 3 (pixels 0, 1, 3)
    r = m.compute()
    assert r["mIoU_exact"] == pytest.approx(100 / 3)
    assert r["cIoU_exact"] == pytest.approx(100 / 3)


def test_tasks_metrics_grounding_merge_equals_single_and_errors():
    g = torch.Generator().manual_seed(0)
    preds = torch.randn(9, 6, 7, generator=g)
    gts = torch.rand(9, 6, 7, generator=g) > 0.6
    single = GroundingMetric()
    single.update(preds, gts)
    ranks = [GroundingMetric() for _ in range(3)]
    ranks[0].update(preds[:4], gts[:4])
    ranks[2].update(preds[4:], gts[4:])  # ranks[1] saw nothing
    merged = GroundingMetric.from_states([r.state() for r in ranks])
    assert merged.compute() == single.compute()
    with pytest.raises(ValueError, match="intersection"):
        GroundingMetric().merge([{"foo": torch.zeros(1)}])
    with pytest.raises(ValueError, match="pred and gt"):
        GroundingMetric().update(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="no masks"):
        GroundingMetric().compute()


def test_tasks_metrics_interactive_iou_ignore_and_nan():
    gt = torch.tensor([[1, 1, -1, 0]])  # -1: VOC boundary band, ignored
    pred = torch.tensor([[True, False, True, True]])
    iou = interactive_iou(pred, gt)  # I = {0}, U = {0, 1, 3}
    assert iou.dtype == torch.float32 and iou.item() == pytest.approx(1 / 3)
    extra = torch.tensor([[False, False, False, True]])
    assert interactive_iou(pred, gt, ignore=extra).item() == 0.5
    assert math.isnan(interactive_iou(torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 2)))


def test_tasks_metrics_interactive_noc_and_miou():
    m = InteractiveMetric(max_clicks=3)
    m.update([0.4, 0.85, 0.95])  # noc 2, 2, 2, 3
    m.update(torch.tensor([[0.9, 0.9, 0.9], [float("nan"), 0.3, 0.6], [0.1, 0.2, 0.3]]))
    r = m.compute()
    # float32(0.9) < 0.9 in float64 but passes the official float32 comparison (noc 1 for row 2).
    assert r["noc@0.5"] == 2.25 and r["noc@0.8"] == 2.25 and r["noc@0.85"] == 2.25
    assert r["noc@0.9"] == 2.5
    assert math.isnan(r["miou@iter1"])  # a NaN IoU makes the mean NaN (official)
    assert r["miou@iter2"] == pytest.approx(0.5625) and r["miou@iter3"] == pytest.approx(0.6875)
    one = InteractiveMetric(max_clicks=1)
    one.update(torch.tensor([[0.2], [0.95]]))
    r = one.compute()
    assert all(r[f"noc@{t}"] == 1.0 for t in (0.5, 0.8, 0.85, 0.9))
    assert r["miou@iter1"] == pytest.approx(0.575)


def test_tasks_metrics_interactive_merge_and_errors():
    ious = torch.rand(10, 4, generator=torch.Generator().manual_seed(1))
    single = InteractiveMetric(max_clicks=4)
    single.update(ious)
    a, b, empty = (InteractiveMetric(max_clicks=4) for _ in range(3))
    a.update(ious[:3])
    b.update(ious[3:])
    merged = InteractiveMetric.from_states([a.state(), empty.state(), b.state()], max_clicks=4)
    assert merged.compute() == single.compute()
    with pytest.raises(ValueError, match="ious must be"):
        single.update(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"states\[0\]"):
        InteractiveMetric(max_clicks=2).merge([a.state()])


def _hand_retrieval():
    """10 images (ids 100..109, one-hot) and 12 captions, see the ranks in the comments."""
    e = torch.eye(12)
    img = e[:10] * torch.arange(1.0, 11.0)[:, None]  # scaled: normalisation must undo it
    txt = e[:10].clone()
    txt[5] = e[8] + 0.1 * e[5]  # caption of image 5: ranks image 8 first, image 5 second
    t10 = e[3] + 0.5 * e[0] + 0.1 * e[1]  # caption of image 0: ranks images 3, 0, 1
    t11 = e[0] + 0.9 * e[1] + 0.8 * e[2] + 0.7 * e[3] + 0.6 * e[4] + 0.5 * e[5] + 0.1 * e[9]
    txt = torch.cat([txt, t10[None], t11[None]])  # t11, caption of image 9: ranks it 7th
    iids = torch.arange(100, 110)
    tids = torch.cat([iids, torch.tensor([100, 109])])
    return img, iids, txt, tids


def test_tasks_metrics_retrieval_hand_computed():
    r = retrieval_recall(*_hand_retrieval())
    # IR over 12 captions: top-1 misses t5, t10, t11; top-5 misses t11. TR over 10 images: image
    # 5's best caption is t11 (0.5 / |t11|) > its own t5 (0.1 / |t5|), its own one is second.
    assert r == {
        "irtr": 165.0,
        "ir1": 75.0,
        "ir5": 91.667,
        "ir10": 100.0,
        "tr1": 90.0,
        "tr5": 100.0,
        "tr10": 100.0,
    }


def test_tasks_metrics_retrieval_irtr_from_unrounded_values():
    e = torch.eye(12)
    txt = torch.cat([e[:4], e[5:12], e[4:5]])  # captions 0-3 hit, 4-11 point to another image
    r = retrieval_recall(e, torch.arange(12), txt, torch.arange(12))
    assert r["ir1"] == r["tr1"] == 33.333  # 4 / 12 each
    assert r["irtr"] == 66.667  # 100 * (4/12 + 4/12), not 33.333 + 33.333


def _full_matrix_recall(img, iids, txt, tids):
    """Reference: the official evaluator's full-matrix computation."""
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    scores = img @ txt.t()
    raw = {}
    for k in (1, 5, 10):
        raw[f"tr{k}"] = (
            (iids[:, None] == tids[scores.topk(k, dim=1).indices]).float().max(1)[0].mean()
        )
        raw[f"ir{k}"] = (tids[None] == iids[scores.topk(k, dim=0).indices]).float().max(0)[0].mean()
    out = {"irtr": float("{:.3f}".format((raw["ir1"] + raw["tr1"]).item() * 100))}
    out.update({k: float("{:.3f}".format(v.item() * 100)) for k, v in raw.items()})
    return out


@pytest.mark.parametrize("chunks", [(1, 1), (3, 7), (5, 1000), (1000, 2), (37, 13), (4, 10)])
def test_tasks_metrics_retrieval_streamed_equals_full_matrix(chunks):
    g = torch.Generator().manual_seed(3)
    img = torch.randn(37, 6, generator=g)
    iids = torch.randperm(1000, generator=g)[:37]
    per_image = torch.randint(1, 4, (37,), generator=g)
    tids = iids.repeat_interleave(per_image)
    txt = img.repeat_interleave(per_image, 0) + 1.2 * torch.randn(len(tids), 6, generator=g)
    r = retrieval_recall(img, iids, txt, tids, query_chunk=chunks[0], gallery_chunk=chunks[1])
    ref = _full_matrix_recall(img, iids, txt, tids)
    assert r == ref and 0 < r["ir1"] < 100 and 0 < r["tr1"] < 100
    top = streamed_topk(img, txt, 10, query_chunk=chunks[0], gallery_chunk=chunks[1])
    assert torch.equal(top, (img @ txt.t()).topk(10, dim=1).indices)


def test_tasks_metrics_retrieval_never_builds_the_full_score_matrix(monkeypatch):
    img, iids, txt, tids = _hand_retrieval()
    shapes = []
    matmul = torch.Tensor.__matmul__

    def spy(a, b):
        out = matmul(a, b)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
    metric = RetrievalMetric(query_chunk=3, gallery_chunk=4)
    metric.update(image_embeds=img, image_ids=iids, text_embeds=txt, text_ids=tids)
    assert metric.compute()["ir5"] == 91.667
    assert shapes and max(shapes) <= (3, 4) and max(s[1] for s in shapes) <= 4


def test_tasks_metrics_retrieval_ties_go_to_lower_index_for_any_chunking():
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.5, 0.5]])
    query = torch.tensor([[1.0, 0.0]])
    for gc in (1, 2, 3, 5):
        assert streamed_topk(query, gallery, 4, gallery_chunk=gc).tolist() == [[0, 2, 3, 4]]


def test_tasks_metrics_retrieval_metric_merge_and_errors():
    img, iids, txt, tids = _hand_retrieval()
    single = RetrievalMetric(query_chunk=4, gallery_chunk=3)
    single.update(image_embeds=img, image_ids=iids, text_embeds=txt, text_ids=tids)
    a, b, c = (RetrievalMetric() for _ in range(3))
    a.update(image_embeds=img[:4], image_ids=iids[:4])
    b.update(text_embeds=txt, text_ids=tids)
    c.update(image_embeds=img[4:], image_ids=iids[4:])
    merged = RetrievalMetric.from_states([a.state(), b.state(), c.state()])
    assert merged.compute() == single.compute() == retrieval_recall(img, iids, txt, tids)
    with pytest.raises(ValueError, match="at least 10 image"):
        retrieval_recall(img[:9], iids[:9], txt, tids)
    with pytest.raises(ValueError, match="at least 10 text"):
        retrieval_recall(img, iids, txt[:9], tids[:9])
    with pytest.raises(ValueError, match="nonzero rows"):
        retrieval_recall(img * 0, iids, txt, tids)
    with pytest.raises(ValueError, match="given together"):
        RetrievalMetric().update(image_embeds=img)
