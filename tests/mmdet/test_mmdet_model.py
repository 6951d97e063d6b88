"""``FINDDetector``: built from the configs, loss over every task, predict fills data samples."""

import pathlib

import pytest
import torch

from tests._util import load_module

C = load_module("_mmdet_conftest", pathlib.Path(__file__).with_name("conftest.py"))


@pytest.fixture(scope="module")
def built(demo_root):
    from mmdet.registry import DATASETS, MODELS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    cfg = C.demo_cfg(demo_root)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    train = DATASETS.build(cfg.train_dataloader.dataset)
    val = DATASETS.build(cfg.val_dataloader.dataset.datasets[0])
    return cfg, model, train, val


def _batch(model, dataset, idx, training):
    from mmengine.dataset import pseudo_collate

    data = pseudo_collate([dataset[i] for i in idx])
    return model.data_preprocessor(data, training)


def test_loss_has_every_task(built):
    cfg, model, train, _ = built
    model.train()
    data = _batch(model, train, [0, 1], True)
    assert data["inputs"].shape[0] == 2 and data["inputs"].shape[-1] % 32 == 0
    losses = model(**data, mode="loss")
    # one group per training task: generic (labels, masks), grounding, interactive, retrieval,
    # interleave
    for key in (
        "loss_mask_ce",
        "loss_mask_bce",
        "loss_mask_dice",
        "loss_grounding_bce",
        "loss_spatial_bce",
        "loss_retrieval_decoder",
        "loss_interleave_bce",
    ):
        assert key in losses, (key, sorted(losses))
        assert torch.isfinite(losses[key]), key
    total, log_vars = model.parse_losses(losses)
    total.backward()
    assert model.interface.lang_proj.grad is not None
    assert all(p.grad is None for p in model.backbone.parameters())


def test_predict_fills_data_samples(built):
    cfg, model, _, val = built
    model.eval()
    data = _batch(model, val, [0, 1], False)
    with torch.no_grad():
        out = model(**data, mode="predict")
    assert len(out) == 2
    num_classes = len(cfg.metainfo["classes"])
    for ds in out:
        h, w = ds.ori_shape
        pan = ds.pred_panoptic_seg.sem_seg
        assert pan.shape == (1, h, w)
        cats = pan % 1000
        assert ((cats < num_classes) | (pan == num_classes)).all()
        assert ds.pred_sem_seg.sem_seg.shape == (1, h, w)
        inst = ds.pred_instances
        assert inst.masks.shape[1:] == (h, w) and inst.masks.dtype == torch.bool
        assert inst.bboxes.shape == (len(inst), 4) and inst.scores.shape == (len(inst),)
        n = len(ds.find_gt["interactive_masks"])
        assert ds.pred_interactive_ious.shape == (n, cfg.model.test_cfg.max_clicks)
        assert ds.pred_image_embedding.dim() == 1
        assert ds.pred_caption_embeddings.shape[1] == ds.pred_image_embedding.shape[0]
        # grounding / interleave: one mask per referring sentence / first-sentence phrase, at
        # the original size like their ground truth
        for key in ("grounding_masks", "interleave_masks"):
            assert ds.get("pred_" + key).shape == ds.find_gt[key].shape, key
            assert len(ds.find_gt[key]) > 0, key
        assert ds.pred_interleave_embeddings.shape[1] == ds.pred_image_embedding.shape[0]
    tensors = model(data["inputs"], data["data_samples"], mode="tensor")
    assert tensors["pred_masks"].shape[0] == 2


def test_full_config_builds():
    """The COCO Focal-T + LLaMA config: the full-size model (shapes only, on the meta device)
    and every transform of its pipelines; AMP through AmpOptimWrapper."""
    from mmdet.registry import MODELS, TRANSFORMS
    from mmengine.config import Config

    cfg = Config.fromfile(str(C.FULL_CONFIG))
    assert cfg.custom_imports.imports == ["find_plugin.mmdet"]
    assert cfg.optim_wrapper.type == "AmpOptimWrapper"
    model_cfg = cfg.model.copy()
    model_cfg.language = None  # LLaMA-7B is not loaded here (class bank not built at build)
    with torch.device("meta"):
        model = MODELS.build(model_cfg)
    n = sum(p.numel() for p in model.interface.parameters())
    assert n > 30e6, n  # official width: ~40 M interface parameters
    assert model.tasks["generic"].num_classes == 133 and sum(model.is_thing) == 80
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(p.requires_grad for p in model.pixel_decoder.parameters())
    for pipeline in (cfg.train_pipeline, cfg.test_pipeline):
        for t in pipeline:
            TRANSFORMS.build(t)
