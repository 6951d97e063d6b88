"""FocalNet-T / FocalNet-L and the transformer_encoder_fpn pixel decoder: names, sizes, shapes."""

import pytest
import torch

from find_plugin.encoders.vision import FocalNet, TransformerEncoderPixelDecoder, build_focalnet

BACKBONE_PREFIX = "backbone."
PIXEL_DECODER_PREFIX = "sem_seg_head.pixel_decoder."


def _shapes(module, prefix=""):
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_focalt_keys_and_shapes_equal_official_manifest(vision_focalt, vision_manifest_focalt):
    official = vision_manifest_focalt["backbone"]
    ours = _shapes(vision_focalt, BACKBONE_PREFIX)
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    assert {k: v for k, v in ours.items() if official[k] != v} == {}


def test_focalt_parameter_count_matches_official(vision_focalt, vision_manifest_focalt):
    official = sum(int(torch.Size(s).numel()) for s in vision_manifest_focalt["backbone"].values())
    ours = sum(p.numel() for p in vision_focalt.parameters())
    assert abs(ours - official) <= 0.01 * official, (ours, official)
    assert 27e6 < ours < 31e6  # ~28-30 M for FocalNet-T


def test_focalt_outputs_strides_and_channels(vision_focalt):
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = vision_focalt(x)
    expected = {"res2": (96, 4), "res3": (192, 8), "res4": (384, 16), "res5": (768, 32)}
    assert list(out) == list(expected)
    for name, (ch, stride) in expected.items():
        assert out[name].shape == (1, ch, 64 // stride, 96 // stride), name
        assert torch.isfinite(out[name]).all()
    assert vision_focalt.out_channels == {k: v[0] for k, v in expected.items()}
    assert vision_focalt.out_strides == {k: v[1] for k, v in expected.items()}


def test_focal_batch_elements_are_independent():
    model = FocalNet(embed_dim=16, depths=(1, 1, 2, 1))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        both = model(x)["res5"]
        first = model(x[:1])["res5"]
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=1e-4)


def test_focall_shapes_on_meta_device():
    """FocalNet-L (style 'focal', embed 192, depths 2-2-18-2, 4 focal levels), shape-only."""
    with torch.device("meta"):
        model = build_focalnet("focall")
        out = model(torch.empty(1, 3, 64, 96))
        dec = TransformerEncoderPixelDecoder(
            input_shape={k: (c, model.out_strides[k]) for k, c in model.out_channels.items()}
        )
        dec_out = dec(out)
    assert model.style == "focal"
    assert len(model.layers[2].blocks) == 18
    assert len(model.layers[0].blocks[0].modulation.focal_layers) == 4
    assert not hasattr(model.layers[0].blocks[0], "dw1")  # focal (not focal_dw) blocks
    assert model.patch_embed.proj.padding == (2, 2)
    expected = {"res2": (192, 4), "res3": (384, 8), "res4": (768, 16), "res5": (1536, 32)}
    for name, (ch, stride) in expected.items():
        assert tuple(out[name].shape) == (1, ch, 64 // stride, 96 // stride), name
    assert tuple(dec_out["mask_features"].shape) == (1, 512, 16, 24)
    assert [tuple(t.shape) for t in dec_out["multi_scale_features"]] == [
        (1, 512, 2, 3),
        (1, 512, 4, 6),
        (1, 512, 8, 12),
    ]
    assert tuple(dec_out["transformer_encoder_features"].shape) == (1, 512, 2, 3)
    n_params = sum(p.numel() for p in model.parameters())
    assert 195e6 < n_params < 215e6, n_params  # FocalNet-L ~200 M with conv embeddings


def test_focal_block_postln_styles_differ():
    """Same weights, different block style => different outputs (the style is not cosmetic)."""
    torch.manual_seed(0)
    kw = dict(
        embed_dim=16,
        depths=(1, 1, 1, 1),
        focal_levels=(2,) * 4,
        focal_windows=(3,) * 4,
        use_layerscale=False,
    )
    a = FocalNet(style="focal_dw", **kw)
    b = FocalNet(style="focal", **kw)
    b.load_state_dict({k: v for k, v in a.state_dict().items() if "dw" not in k})
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(a(x)["res3"], b(x)["res3"], atol=1e-3)


def test_non_divisible_input_is_padded():
    model = FocalNet(embed_dim=16, depths=(1, 1, 1, 1))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 70, 90))
    assert out["res2"].shape[-2:] == (18, 23) and out["res5"].shape[-2:] == (3, 3)


@pytest.fixture(scope="module")
def focalt_pixel_decoder(vision_focalt):
    return TransformerEncoderPixelDecoder(
        input_shape={
            k: (c, vision_focalt.out_strides[k]) for k, c in vision_focalt.out_channels.items()
        }
    )


def test_focalt_pixel_decoder_keys_equal_official_manifest(
    focalt_pixel_decoder, vision_manifest_focalt
):
    dec = focalt_pixel_decoder
    official = vision_manifest_focalt["pixel_decoder"]
    ours = _shapes(dec, PIXEL_DECODER_PREFIX)
    assert sorted(set(official) ^ set(ours)) == []
    assert {k: v for k, v in ours.items() if official[k] != v} == {}
    assert sum(p.numel() for p in dec.parameters()) == sum(
        int(torch.Size(s).numel()) for s in official.values()
    )


def test_pixel_decoder_output_shapes_focalt(vision_focalt, focalt_pixel_decoder):
    with torch.no_grad():
        out = focalt_pixel_decoder(vision_focalt(torch.randn(1, 3, 64, 96)))
    assert out["mask_features"].shape == (1, 512, 16, 24)
    assert [t.shape[-2:] for t in out["multi_scale_features"]] == [(2, 3), (4, 6), (8, 12)]
    assert all(t.shape[1] == 512 for t in out["multi_scale_features"])
    assert out["transformer_encoder_features"].shape == (1, 512, 2, 3)


def test_pixel_decoder_rejects_bad_input_shape():
    with pytest.raises(ValueError, match="input_shape"):
        TransformerEncoderPixelDecoder(input_shape={"res2": (0, 4), "res3": (8, 8)})
    dec = TransformerEncoderPixelDecoder(
        input_shape={"res4": (8, 16), "res5": (16, 32)},
        conv_dim=32,
        mask_dim=16,
        transformer_enc_layers=1,
        transformer_dim_feedforward=32,
    )
    with pytest.raises(KeyError, match="res4"):
        dec({"res5": torch.zeros(1, 16, 2, 2)})


def test_unknown_preset_and_style_errors():
    with pytest.raises(KeyError, match="preset"):
        build_focalnet("focalx")
    with pytest.raises(ValueError, match="style"):
        FocalNet(style="swin")


@pytest.mark.parametrize("variant", ["focalt", "focall"])
def test_d2_config_builds_the_same_focalnet_variant(variant):
    """detectron2 reads the FocalNet variant through the one key table: same keys and shapes
    as build_focalnet, which reads the same presets."""
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import build_backbone

    from find_plugin.d2 import add_find_vision_config, set_find_vision_sections
    from find_plugin.presets import FOCALNET_VARIANTS

    cfg = add_find_vision_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "FINDFocalNet"
    set_find_vision_sections(cfg, backbone=FOCALNET_VARIANTS[variant])
    with torch.device("meta"):
        ours = build_backbone(cfg, ShapeSpec(channels=3))
        ref = build_focalnet(variant)
    assert _shapes(ours) == _shapes(ref)
    assert ours.style == FOCALNET_VARIANTS[variant]["style"]
    assert ours.output_shape()["res5"].channels == 8 * FOCALNET_VARIANTS[variant]["embed_dim"]
    with pytest.raises(KeyError, match="no detectron2 config key .*'in_chans'"):
        set_find_vision_sections(cfg, backbone={"in_chans": 4})


def test_focal_modulation_values_and_gradients_equal_the_written_out_sum():
    """The gated sum accumulated in place equals sum_l gate_l * ctx_l + gate_L * global context
    written out, in values and in gradients (a trainable backbone runs backward through it)."""
    from torch.nn import functional as F

    from find_plugin.encoders.vision.focalnet import FocalModulation

    torch.manual_seed(0)
    m = FocalModulation(dim=8, focal_level=2, focal_window=3)
    x = torch.randn(2, 6, 5, 8, requires_grad=True)

    def written_out(x):
        q, ctx, gates = torch.split(m.f(x).permute(0, 3, 1, 2), (8, 8, 3), dim=1)
        total = torch.zeros_like(q)
        for level, layer in enumerate(m.focal_layers):
            ctx = layer(ctx)
            total = total + ctx * gates[:, level : level + 1]
        total = total + F.gelu(ctx.mean((2, 3), keepdim=True)) * gates[:, 2:]
        return m.proj((q * m.h(total)).permute(0, 2, 3, 1))

    expected = written_out(x)
    (g_expected,) = torch.autograd.grad(expected.square().sum(), x)
    out = m(x)
    (g_out,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g_out, g_expected, atol=1e-6, rtol=1e-5)


def test_gated_sum_in_place_and_with_mixed_dtypes():
    """In place when the dtypes agree; a product of another dtype (autocast) promotes out of
    place instead of failing."""
    from find_plugin.encoders.vision.focalnet import _gated_sum

    g = torch.Generator().manual_seed(0)
    total, ctx, gate = (torch.randn(1, 4, 3, 3, generator=g) for _ in range(3))
    expected = total + ctx * gate
    out = _gated_sum(total.clone(), ctx, gate)
    torch.testing.assert_close(out, expected)
    half = total.to(torch.bfloat16)
    mixed = _gated_sum(half, ctx, gate)
    assert mixed.dtype == torch.float32 and half.dtype == torch.bfloat16
    torch.testing.assert_close(mixed, half.float() + ctx * gate)
    assert torch.equal(_gated_sum(None, ctx, gate), ctx * gate)
