"""End-to-end parity of FINDModel loaded THROUGH the converter (CLI file and on-the-fly).

The official parity_small state dict is converted with tools/convert_official_checkpoint.py into our
format, loaded by path with ``load_weights`` and the composite model is run on the stored image:
backbone maps, pixel-decoder outputs and the generic-segmentation interface pass (every output,
top level and aux) must match the official ones within 1e-4. The per-task interface parity (all
tasks) is tests/core/test_core_parity.py, which loads its weights through the same converter.
"""

import os

import pytest
import torch

from find_plugin.checkpoint import load_checkpoint, load_weights
from find_plugin.model import FINDModel, build_find_model
from tests._util import load_module

ATOL = 1e-4
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli():
    mod = load_module(
        "ckpt_convert_cli", os.path.join(ROOT, "tools", "convert_official_checkpoint.py")
    )
    return mod


@pytest.fixture(scope="module")
def converted_file(parity_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ckpt_conv") / "parity_small.pth")
    rc = _cli().main([os.path.join(parity_dir, "state_dict.pt"), out])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def loaded_model(converted_file, ckpt_parity_config):
    model = build_find_model(**ckpt_parity_config).eval()
    result = load_weights(model, converted_file)
    assert result.layout == "find_plugin" and result.tolerated == []
    return model


def test_cli_output_is_our_format_with_config(converted_file, ckpt_parity_config, capsys):
    import json

    obj = load_checkpoint(converted_file)
    cfg = json.loads(obj["meta"]["model_config"])
    assert obj["meta"]["model_config_source"] == "inferred from key shapes"
    # the inferred architecture builds a model that the file loads into strictly
    model = build_find_model(**cfg)
    assert set(obj["model"]) == set(model.state_dict())
    assert cfg["interface"]["num_layers"] == ckpt_parity_config["interface"]["num_layers"]


def test_vision_parity_through_converter(loaded_model, parity_load):
    images = parity_load("image.pt")["images_tensor"]
    with torch.no_grad():
        v = loaded_model.extract_features(images)
    for name, ref in parity_load("backbone.pt").items():
        torch.testing.assert_close(v["features"][name], ref, atol=ATOL, rtol=0)
    ref = parity_load("pixel_decoder.pt")
    torch.testing.assert_close(v["mask_features"], ref["mask_features"], atol=ATOL, rtol=0)
    torch.testing.assert_close(
        v["transformer_encoder_features"], ref["transformer_encoder_features"], atol=ATOL, rtol=0
    )
    for ours, theirs in zip(v["multi_scale_features"], ref["multi_scale_features"], strict=True):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def _compare(ref, out, where):
    for k, v in ref.items():
        if k == "aux_outputs":
            continue
        assert out[k].shape == v.shape, f"{where}.{k}"
        err = (out[k] - v).abs().max().item()
        assert err < ATOL, f"{where}.{k}: max abs err {err:.3g}"


def test_full_model_seg_parity_from_image(loaded_model, parity_load):
    """image -> backbone -> pixel decoder -> interface (task 'seg') in one FINDModel.forward."""
    data = parity_load("task_seg.pt")
    ref = data["predictor_calls"][0]["outputs"]
    images = parity_load("image.pt")["images_tensor"]
    with torch.no_grad():
        out = loaded_model(images, {}, class_bank=data["default_text_embeddings"])
    _compare(ref, out, "top")
    assert len(out["aux_outputs"]) == len(ref["aux_outputs"]) == 3
    for i, (r, o) in enumerate(zip(ref["aux_outputs"], out["aux_outputs"])):
        _compare(r, o, f"aux[{i}]")


def test_official_file_loads_on_the_fly_identically(loaded_model, parity_dir, ckpt_parity_config):
    model = build_find_model(**ckpt_parity_config)
    result = load_weights(model, os.path.join(parity_dir, "state_dict.pt"))
    assert result.layout == "official" and result.report.ok
    assert result.report.counts()["constants"]["dropped"] == 2
    ref = loaded_model.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_find_model_requires_forward_features():
    with pytest.raises(TypeError, match="forward_features"):
        FINDModel(
            backbone=torch.nn.Identity(),
            pixel_decoder=torch.nn.Identity(),
            interface=torch.nn.Identity(),
        )


def test_cli_fails_with_listing_on_unmapped_keys(parity_load, ckpt_parity_model, tmp_path, capsys):
    sd = dict(parity_load("state_dict.pt"))
    sd["sem_seg_head.predictor.lang_encoder.lang_encoder.token_embedding.weight"] = torch.zeros(
        3, 2
    )
    sd["sem_seg_head.extra_head.weight"] = torch.zeros(1)
    src = str(tmp_path / "official.pt")
    torch.save(sd, src)
    out = str(tmp_path / "out.pth")
    cli = _cli()
    assert cli.main([src, out]) == 2
    err = capsys.readouterr().err
    assert (
        "UNMAPPED key(s) of group 'text_tower'" in err and "sem_seg_head.extra_head.weight" in err
    )
    assert not os.path.exists(out)
    assert cli.main([src, out, "--drop", "text_tower", "--drop", "other"]) == 0
    report = capsys.readouterr().out
    assert "text_tower" in report and "verified, dropped" in report
    assert set(load_checkpoint(out)["model"]) == set(ckpt_parity_model.state_dict())
    assert cli.main(["/nonexistent/ckpt.pt", out]) == 1
    assert "neither an existing file" in capsys.readouterr().err


def test_find_model_is_the_vision_container_plus_interface(ckpt_parity_config):
    """One container: FINDModel freezes / unfreezes its parts as FINDVisionModel does and keeps
    the checkpoint key groups backbone.*, pixel_decoder.*, interface.*."""
    from find_plugin.encoders.vision import FINDVisionModel, is_frozen

    model = build_find_model(**ckpt_parity_config, train_pixel_decoder=True).train()
    assert isinstance(model, FINDVisionModel)
    assert {k.split(".", 1)[0] for k in model.state_dict()} == {
        "backbone",
        "pixel_decoder",
        "interface",
    }
    assert is_frozen(model.backbone) and not model.backbone.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert model.pixel_decoder.training and all(
        p.requires_grad for p in model.pixel_decoder.parameters()
    )
    assert model.interface.training
    model.set_trainable(backbone=False, pixel_decoder=False)
    assert not model.pixel_decoder.training and is_frozen(model.pixel_decoder)
