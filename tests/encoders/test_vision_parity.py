"""Numerical parity with the official FIND code (parity_small fixture: FocalNet focal_dw embed 32,
depths 1-1-2-1; pixel decoder 128-d, 2 encoder layers, FFN 256),
built through the detectron2 config. The official weights are loaded THROUGH the checkpoint
converter (``find_plugin.checkpoint.convert_official_state_dict``, explicit key table), the same
code path as every other official-checkpoint load; the interface groups are not part of the vision
model and are dropped explicitly."""

import pytest
import torch

from find_plugin.checkpoint import convert_official_state_dict
from find_plugin.d2.vision_builder import VISION_ONLY_DROP

ATOL = 1e-4


def official_to_vision_state_dict(state_dict, model):
    """Converter output for the vision model (keys backbone.* / pixel_decoder.*)."""
    out, _ = convert_official_state_dict(state_dict, target=model, drop=VISION_ONLY_DROP)
    return out


def load_official_vision_weights(model, state_dict, strict=True):
    return model.load_state_dict(official_to_vision_state_dict(state_dict, model), strict=strict)


def _parity_cfg(vision_parity_data):
    from detectron2.config import get_cfg

    from find_plugin.d2 import add_find_vision_config

    resolved = vision_parity_data["config"]["resolved"]["MODEL"]
    focal, enc = resolved["BACKBONE"]["FOCAL"], resolved["ENCODER"]
    dec = vision_parity_data["config"]["resolved"]["MODEL.DECODER"]
    cfg = add_find_vision_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "FINDFocalNet"
    f = cfg.MODEL.FIND_VISION.FOCAL
    assert resolved["BACKBONE"]["NAME"] == "focal_dw"
    f.STYLE = "focal_dw"
    f.EMBED_DIM, f.DEPTHS = focal["EMBED_DIM"], focal["DEPTHS"]
    f.FOCAL_LEVELS, f.FOCAL_WINDOWS = focal["FOCAL_LEVELS"], focal["FOCAL_WINDOWS"]
    for key in (
        "USE_CONV_EMBED",
        "USE_POSTLN",
        "USE_POSTLN_IN_MODULATION",
        "SCALING_MODULATOR",
        "USE_LAYERSCALE",
        "PATCH_NORM",
        "MLP_RATIO",
    ):
        setattr(f, key, focal[key])
    p = cfg.MODEL.FIND_VISION.PIXEL_DECODER
    p.CONVS_DIM, p.MASK_DIM, p.NORM = enc["CONVS_DIM"], enc["MASK_DIM"], enc["NORM"]
    p.TRANSFORMER_ENC_LAYERS = enc["TRANSFORMER_ENC_LAYERS"]
    p.NHEADS, p.DIM_FEEDFORWARD = dec["NHEADS"], dec["DIM_FEEDFORWARD"]
    return cfg


@pytest.fixture(scope="module")
def parity_model(vision_parity_data):
    from find_plugin.d2 import build_find_vision_model

    return build_find_vision_model(_parity_cfg(vision_parity_data))


def test_official_keys_load_strictly(parity_model, vision_parity_data):
    mapped = official_to_vision_state_dict(vision_parity_data["state_dict"], parity_model)
    ours = parity_model.state_dict()
    missing = sorted(set(ours) - set(mapped))
    unexpected = sorted(set(mapped) - set(ours))
    assert not missing and not unexpected, f"missing={missing} unexpected={unexpected}"
    bad_shapes = [k for k in ours if ours[k].shape != mapped[k].shape]
    assert not bad_shapes, f"shape mismatch: {bad_shapes}"
    # 139 backbone + 49 pixel-decoder tensors in the official reduced model (README inventory).
    assert len(mapped) == 139 + 49
    result = load_official_vision_weights(parity_model, vision_parity_data["state_dict"])
    assert not result.missing_keys and not result.unexpected_keys


@pytest.fixture(scope="module")
def parity_outputs(parity_model, vision_parity_data):
    load_official_vision_weights(parity_model, vision_parity_data["state_dict"], strict=True)
    parity_model.eval()
    with torch.no_grad():
        return parity_model(vision_parity_data["images"])


@pytest.mark.parametrize("name", ["res2", "res3", "res4", "res5"])
def test_backbone_matches_official(parity_outputs, vision_parity_data, name):
    ref = vision_parity_data["backbone"][name]
    out = parity_outputs["features"][name]
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def _assert_pixel_decoder_matches(mask, enc, multi_scale, ref):
    """Every pixel-decoder output: mask_features, encoder features and all 3 multi-scale levels."""
    for name, ours, theirs in (
        ("mask_features", mask, ref["mask_features"]),
        ("transformer_encoder_features", enc, ref["transformer_encoder_features"]),
    ):
        assert ours.shape == theirs.shape, name
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0, msg=name)
    assert len(multi_scale) == len(ref["multi_scale_features"]) == 3
    for level, (ours, theirs) in enumerate(zip(multi_scale, ref["multi_scale_features"])):
        assert ours.shape == theirs.shape, level
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0, msg=f"level {level}")


def _assert_backbone_matches(features, ref):
    assert sorted(features) == sorted(ref) == ["res2", "res3", "res4", "res5"]
    for name in ref:
        assert features[name].shape == ref[name].shape, name
        torch.testing.assert_close(features[name], ref[name], atol=ATOL, rtol=0, msg=name)


def test_pixel_decoder_matches_official(parity_outputs, vision_parity_data):
    out = parity_outputs
    _assert_pixel_decoder_matches(
        out["mask_features"],
        out["transformer_encoder_features"],
        out["multi_scale_features"],
        vision_parity_data["pixel_decoder"],
    )


def test_pixel_decoder_alone_on_official_backbone_maps(parity_model, vision_parity_data):
    """Isolates the pixel decoder: feed the stored official backbone maps."""
    load_official_vision_weights(parity_model, vision_parity_data["state_dict"], strict=True)
    with torch.no_grad():
        mask, enc, ms = parity_model.pixel_decoder.forward_features(vision_parity_data["backbone"])
    _assert_pixel_decoder_matches(mask, enc, ms, vision_parity_data["pixel_decoder"])


def test_parity_breaks_with_perturbed_weights(parity_model, vision_parity_data):
    """The comparison is sensitive: a tiny change of one LayerScale gamma breaks parity."""
    sd = dict(vision_parity_data["state_dict"])
    sd["backbone.layers.2.blocks.1.gamma_2"] = sd["backbone.layers.2.blocks.1.gamma_2"] + 0.05
    load_official_vision_weights(parity_model, sd, strict=True)
    with torch.no_grad():
        out = parity_model.backbone(vision_parity_data["images"])
    diff = (out["res4"] - vision_parity_data["backbone"]["res4"]).abs().max().item()
    assert diff > 1e-3
    load_official_vision_weights(parity_model, vision_parity_data["state_dict"], strict=True)


def test_strict_load_reports_key_mismatch(parity_model, vision_parity_data):
    sd = dict(vision_parity_data["state_dict"])
    sd.pop("backbone.norm3.weight")
    sd["sem_seg_head.pixel_decoder.bogus.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="norm3.weight"):
        load_official_vision_weights(parity_model, sd, strict=True)
    load_official_vision_weights(parity_model, vision_parity_data["state_dict"], strict=True)


def test_config_weights_load_the_official_file(vision_parity_data, official_fixtures_dir, caplog):
    """cfg.MODEL.FIND_VISION.WEIGHTS goes through the converter; the result matches the fixture."""
    import logging
    import os

    from find_plugin.d2 import build_find_vision_model

    cfg = _parity_cfg(vision_parity_data)
    cfg.MODEL.FIND_VISION.WEIGHTS = os.path.join(
        official_fixtures_dir, "parity_small", "state_dict.pt"
    )
    with caplog.at_level(logging.INFO):
        model = build_find_vision_model(cfg)
    assert "dropped" in caplog.text and "interface" in caplog.text  # reported, not silent
    with torch.no_grad():
        out = model(vision_parity_data["images"])
    _assert_backbone_matches(out["features"], vision_parity_data["backbone"])
    _assert_pixel_decoder_matches(
        out["mask_features"],
        out["transformer_encoder_features"],
        out["multi_scale_features"],
        vision_parity_data["pixel_decoder"],
    )
