"""detectron2 integration: registries, config keys, builder with any d2 backbone, freezing."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import BACKBONE_REGISTRY

from find_plugin.d2 import (
    FIND_PIXEL_DECODER_REGISTRY,
    add_find_vision_config,
    build_find_pixel_decoder,
    build_find_vision_model,
)
from find_plugin.encoders.vision import FINDVisionModel, is_frozen


def _small_decoder_cfg(cfg):
    p = cfg.MODEL.FIND_VISION.PIXEL_DECODER
    p.CONVS_DIM, p.MASK_DIM, p.TRANSFORMER_ENC_LAYERS, p.DIM_FEEDFORWARD = 64, 32, 1, 64
    return cfg


@pytest.fixture(scope="module")
def resnet_vision_model():
    cfg = _small_decoder_cfg(add_find_vision_config(get_cfg()))
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    return build_find_vision_model(cfg)


def test_registrations_are_prefixed():
    for name in ("FINDFocalNet", "FINDEfficientNetLite0"):
        assert name in BACKBONE_REGISTRY
    assert "FINDTransformerEncoderPixelDecoder" in FIND_PIXEL_DECODER_REGISTRY
    assert FIND_PIXEL_DECODER_REGISTRY._name == "FIND_PIXEL_DECODER"


def test_config_defaults_are_focalnet_t_and_idempotent():
    cfg = add_find_vision_config(get_cfg())
    v = cfg.MODEL.FIND_VISION
    assert (v.FOCAL.STYLE, v.FOCAL.EMBED_DIM, list(v.FOCAL.DEPTHS)) == (
        "focal_dw",
        96,
        [2, 2, 6, 2],
    )
    assert (v.PIXEL_DECODER.CONVS_DIM, v.PIXEL_DECODER.TRANSFORMER_ENC_LAYERS) == (512, 6)
    assert v.FREEZE_BACKBONE and v.FREEZE_PIXEL_DECODER
    v.FOCAL.EMBED_DIM = 32
    add_find_vision_config(cfg)
    assert cfg.MODEL.FIND_VISION.FOCAL.EMBED_DIM == 32
    cfg.merge_from_list(["MODEL.FIND_VISION.PIXEL_DECODER.NHEADS", "4"])
    assert cfg.MODEL.FIND_VISION.PIXEL_DECODER.NHEADS == 4


def test_resnet_from_d2_registry_as_vision_model(resnet_vision_model):
    model = resnet_vision_model
    assert isinstance(model, FINDVisionModel)
    shapes = model.backbone.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        "res2": (64, 4),
        "res3": (128, 8),
        "res4": (256, 16),
        "res5": (512, 32),
    }
    assert model.pixel_decoder.input_proj.in_channels == 512
    assert model.pixel_decoder.adapter_1.in_channels == 64
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert out["mask_features"].shape == (1, 32, 16, 24)
    assert [tuple(t.shape) for t in out["multi_scale_features"]] == [
        (1, 64, 2, 3),
        (1, 64, 4, 6),
        (1, 64, 8, 12),
    ]
    assert out["features"]["res3"].shape == (1, 128, 8, 12)


def test_frozen_by_default_and_eval_after_train(resnet_vision_model):
    model = resnet_vision_model
    assert all(not p.requires_grad for p in model.parameters())
    assert is_frozen(model.backbone) and is_frozen(model.pixel_decoder)
    parent = torch.nn.Sequential(model)
    parent.train()
    assert model.training  # the container follows its parent ...
    assert not any(m.training for m in model.backbone.modules())  # ... its frozen parts do not
    assert not any(m.training for m in model.pixel_decoder.modules())
    # No trainable parameter: an ordinary image builds no autograd graph ...
    assert not model(torch.randn(1, 3, 64, 64))["mask_features"].requires_grad
    # ... but frozen is not a cut graph: a gradient still reaches an input that asks for one.
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    out = model(x)
    assert out["mask_features"].requires_grad and out["mask_features"].grad_fn is not None
    out["mask_features"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_focalnet_gn_dropout_stay_eval_when_parent_trains():
    from find_plugin.encoders.vision import TransformerEncoderPixelDecoder, build_focalnet

    backbone = build_focalnet("focalt", embed_dim=16, depths=(1, 1, 1, 1), drop_path_rate=0.5)
    dec = TransformerEncoderPixelDecoder(
        input_shape={k: (c, backbone.out_strides[k]) for k, c in backbone.out_channels.items()},
        conv_dim=32,
        mask_dim=32,
        transformer_enc_layers=1,
        transformer_dim_feedforward=32,
        transformer_dropout=0.5,
    )
    backbone.train()
    dec.train()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = dec(backbone(x))["mask_features"]
        b = dec(backbone(x))["mask_features"]
    torch.testing.assert_close(a, b)  # drop-path / dropout inactive => deterministic


def test_train_pixel_decoder_switch():
    cfg = _small_decoder_cfg(add_find_vision_config(get_cfg()))
    cfg.MODEL.BACKBONE.NAME = "FINDFocalNet"
    cfg.MODEL.FIND_VISION.FOCAL.EMBED_DIM = 16
    cfg.MODEL.FIND_VISION.FOCAL.DEPTHS = [1, 1, 1, 1]
    cfg.MODEL.FIND_VISION.FREEZE_PIXEL_DECODER = False
    model = build_find_vision_model(cfg)
    model.train()
    assert all(p.requires_grad for p in model.pixel_decoder.parameters())
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert model.pixel_decoder.training and not model.backbone.training
    out = model(torch.randn(1, 3, 64, 64))
    out["mask_features"].sum().backward()
    assert model.pixel_decoder.mask_features.weight.grad is not None
    assert all(p.grad is None for p in model.backbone.parameters())
    model.set_trainable(backbone=False, pixel_decoder=False)
    model.train()
    assert not model.pixel_decoder.training
    assert not any(p.requires_grad for p in model.parameters())


def test_missing_in_features_error_names_key():
    cfg = _small_decoder_cfg(add_find_vision_config(get_cfg()))
    cfg.MODEL.FIND_VISION.PIXEL_DECODER.IN_FEATURES = ["res3", "res4", "p6"]
    from detectron2.layers import ShapeSpec

    shapes = {"res3": ShapeSpec(channels=8, stride=8), "res4": ShapeSpec(channels=8, stride=16)}
    with pytest.raises(KeyError, match="p6"):
        build_find_pixel_decoder(cfg, shapes)


def test_builder_requires_config_keys():
    with pytest.raises(KeyError, match="add_find_vision_config"):
        build_find_vision_model(get_cfg())
