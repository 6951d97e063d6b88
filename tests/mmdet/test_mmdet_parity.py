"""One checkpoint, two frameworks: a checkpoint saved by detectron2's ``FINDCheckpointer`` loads
strictly (no key table) into the mmdet ``FINDDetector``, and both give the same predictions on the
same image and samples: panoptic segments (after the id conversion), semantic arg-max, instance
masks / scores / classes and grounding logits."""

import pathlib

import pytest
import torch

from find_plugin.tasks import record_generator, sample_record
from tests._util import load_module

D2 = load_module(
    "_d2_conftest_mmdet_parity", pathlib.Path(__file__).parents[1] / "d2" / "conftest.py"
)

H, W = 70, 90  # padded to 96 x 96 by both frameworks
ATOL = 1e-5


def _mmdet_cfg(cfg):
    """The mmdet model config equivalent to detectron2's ``tiny_cfg`` (same sizes and options)."""
    v, f = cfg.MODEL.FIND_VISION, cfg.MODEL.FIND
    i, t = f.INTERFACE, f.TEST
    return dict(
        type="FINDDetector",
        data_preprocessor=dict(
            type="DetDataPreprocessor",
            mean=list(cfg.MODEL.PIXEL_MEAN),
            std=list(cfg.MODEL.PIXEL_STD),
            bgr_to_rgb=True,
            pad_size_divisor=32,
        ),
        backbone=dict(
            type="FINDFocalNet", embed_dim=v.FOCAL.EMBED_DIM, depths=list(v.FOCAL.DEPTHS)
        ),
        pixel_decoder=dict(
            conv_dim=v.PIXEL_DECODER.CONVS_DIM,
            mask_dim=v.PIXEL_DECODER.MASK_DIM,
            transformer_enc_layers=v.PIXEL_DECODER.TRANSFORMER_ENC_LAYERS,
            transformer_dim_feedforward=v.PIXEL_DECODER.DIM_FEEDFORWARD,
        ),
        interface=dict(
            hidden_dim=i.HIDDEN_DIM,
            dim_proj=i.DIM_PROJ,
            num_heads=i.NUM_HEADS,
            dim_feedforward=i.DIM_FEEDFORWARD,
            num_layers=i.NUM_LAYERS,
            num_queries=i.NUM_QUERIES,
            num_memories=i.NUM_MEMORIES,
            max_spatial_points=i.MAX_SPATIAL_POINTS,
            dim_text=i.DIM_TEXT,
        ),
        metainfo=dict(classes=D2.CLASSES, thing_classes=D2.CLASSES[:2]),
        language=dict(package=f.LANGUAGE.PACKAGE),
        tasks=dict(generic={}, grounding={}),
        train_tasks=[],
        test_cfg=dict(
            object_mask_threshold=t.OBJECT_MASK_THRESHOLD,
            overlap_threshold=t.OVERLAP_THRESHOLD,
            top_k=t.DETECTIONS_PER_IMAGE,
        ),
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from detectron2.modeling import build_model
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import find_plugin.mmdet  # noqa: F401
    from find_plugin.d2 import FINDCheckpointer
    from find_plugin.mmdet.weights import load_find_weights

    register_all_modules(init_default_scope=True)
    # threshold 0: random weights give low scores; every query may then become a segment
    cfg = D2.tiny_cfg(**{"MODEL.FIND.TEST.OBJECT_MASK_THRESHOLD": 0.0})
    torch.manual_seed(0)
    d2 = build_model(cfg).eval()
    folder = tmp_path_factory.mktemp("d2_ckpt")
    FINDCheckpointer(d2, str(folder)).save("model_tiny")  # detectron2's file: {"model": ...}
    torch.manual_seed(1)  # different init: only the checkpoint can make them agree
    mm = MODELS.build(_mmdet_cfg(cfg)).eval()
    layout = load_find_weights(mm, str(folder / "model_tiny.pth"))
    assert layout == "detectron2"
    return d2, mm


def _inputs(d2):
    g = torch.Generator().manual_seed(5)
    image = torch.randint(0, 255, (3, H, W), generator=g, dtype=torch.uint8)
    image[:, 10:50, 20:60] = torch.tensor([200, 40, 40], dtype=torch.uint8)[:, None, None]
    box = torch.zeros(H, W, dtype=torch.bool)
    box[10:50, 20:60] = True
    record = {"image_size": (H, W), "groundings": [{"text": "the red box", "masks": box[None]}]}
    tasks = [d2.tasks["generic"], d2.tasks["grounding"]]
    samples = sample_record(
        tasks,
        record,
        generator=record_generator(0, 1),
        encode_text=d2.encode_text,
        training=False,
    )
    return image, samples


def test_same_predictions_from_one_checkpoint(pair):
    from mmdet.structures import DetDataSample

    from find_plugin.mmdet.panoptic import core_to_mmdet_panoptic

    d2, mm = pair
    image, samples = _inputs(d2)
    out_h, out_w = 2 * H, 2 * W
    with torch.no_grad():
        ref = d2([{"image": image, "height": out_h, "width": out_w, "find_samples": samples}])[0]
        ds = DetDataSample(metainfo={"img_shape": (H, W), "ori_shape": (out_h, out_w), "img_id": 1})
        ds.set_field(samples, "find_samples")
        # mmdet pipelines load BGR; the data preprocessor turns it back into RGB
        data = mm.data_preprocessor({"inputs": [image.flip(0)], "data_samples": [ds]}, False)
        assert torch.equal(data["inputs"], d2.preprocess([{"image": image}]).tensor)
        got = mm(**data, mode="predict")[0]

    seg, infos = ref["panoptic_seg"]
    assert len(infos) >= 2  # a real comparison: several segments
    expected = core_to_mmdet_panoptic(seg, infos, num_classes=len(D2.CLASSES))
    assert torch.equal(got.pred_panoptic_seg.sem_seg[0], expected)
    assert torch.equal(got.pred_sem_seg.sem_seg[0], ref["sem_seg"].argmax(0))
    inst = ref["instances"]
    assert torch.equal(got.pred_instances.masks, inst.pred_masks.bool())
    assert torch.equal(got.pred_instances.labels, inst.pred_classes)
    torch.testing.assert_close(got.pred_instances.scores, inst.scores, atol=ATOL, rtol=0)
    torch.testing.assert_close(got.pred_instances.bboxes, inst.pred_boxes.tensor, atol=ATOL, rtol=0)
    torch.testing.assert_close(got.pred_grounding_masks, ref["grounding_masks"], atol=ATOL, rtol=0)
