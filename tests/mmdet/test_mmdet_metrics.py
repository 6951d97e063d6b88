"""FIND's mmdet metrics: the official definitions (through find_plugin.tasks.metrics) on
hand-computed cases, over mmengine's Evaluator (per-batch process, gather, compute)."""

import pytest
import torch
from mmengine.evaluator import Evaluator

import find_plugin.mmdet  # noqa: F401 (registers the metrics)


def _evaluate(metric_cfg, batches):
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    ev = Evaluator([metric_cfg])
    for samples in batches:
        ev.process(samples, None)
    return ev.evaluate(sum(len(b) for b in batches))


def _mask(h, w, x0, x1):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[:, x0:x1] = True
    return m


def test_grounding_metric_values():
    gt = _mask(2, 10, 0, 4)  # 8 pixels
    half = _mask(2, 10, 2, 6)  # overlap 4 pixels, union 12 -> IoU 1/3
    full = gt.clone()
    samples = [
        {
            "img_id": 1,
            "pred_grounding_masks": torch.where(full, 1.0, -1.0)[None],
            "find_gt": {"grounding_masks": gt[None]},
        },
        {
            "img_id": 2,
            "pred_grounding_masks": torch.where(half, 1.0, -1.0)[None],
            "find_gt": {"grounding_masks": gt[None]},
        },
    ]
    res = _evaluate(dict(type="FINDGroundingMetric", task="grounding"), [samples[:1], samples[1:]])
    # cIoU = (8 + 4) / (8 + 12); mIoU = (1 + 1/3) / 2; precision@0.5: one of two
    assert res["grounding/cIoU"] == pytest.approx(100 * 12 / 20, abs=1e-3)
    assert res["grounding/mIoU"] == pytest.approx(100 * (1 + 1 / 3) / 2, abs=1e-3)
    assert res["grounding/precision@0.5"] == pytest.approx(50.0)


def test_interactive_metric_values():
    samples = [
        {"img_id": 1, "pred_interactive_ious": torch.tensor([[0.9], [0.4]])},
        {"img_id": 2, "pred_interactive_ious": torch.tensor([[0.6]])},
    ]
    res = _evaluate(dict(type="FINDInteractiveMetric", max_clicks=1), [samples])
    assert res["interactive/miou@iter1"] == pytest.approx((0.9 + 0.4 + 0.6) / 3, abs=1e-6)


def test_retrieval_metric_values_and_bad_input():
    # 10 images with orthogonal embeddings; each caption matches its own image except image 0's
    eye = torch.eye(10)
    samples = []
    for i in range(10):
        cap = eye[(i + 1) % 10] if i == 0 else eye[i]
        samples.append(
            {
                "img_id": 100 + i,
                "pred_image_embedding": eye[i],
                "pred_caption_embeddings": cap[None],
            }
        )
    res = _evaluate(dict(type="FINDRetrievalMetric"), [samples[:4], samples[4:]])
    assert res["retrieval/ir1"] == pytest.approx(90.0)  # 9 of 10 captions find their image
    assert res["retrieval/tr1"] == pytest.approx(90.0)
    with pytest.raises(KeyError, match="pred_caption_embeddings"):
        _evaluate(
            dict(type="FINDRetrievalMetric"), [[{"img_id": 1, "pred_image_embedding": eye[0]}]]
        )
