"""Official-layout conversion: key table, groups, prefixes, constants, strict full-size load."""

import copy

import pytest
import torch

from find_plugin.checkpoint import (
    OfficialConversionError,
    convert_official_state_dict,
    find_config_from_official,
    infer_find_config,
    load_state_dict_checked,
    official_key_table,
)
from find_plugin.checkpoint.official import official_group, unwrap_official
from find_plugin.model import build_find_model
from find_plugin.presets import SECTION_KEYS

PRESET = {"focalt_llama": "focalt_llama", "focalt_unicl": "focalt_unicl"}
GROUP_MAP = {
    "backbone": "backbone",
    "pixel_decoder": "pixel_decoder",
    "interface (predictor)": "interface",
    "lang_proj": "lang_proj",
    "logit_scale": "logit_scale",
    "lang_encoder.model (text tower)": "text_tower",
    "other": "constants",
    "criterion": "constants",
}


def _plain(v):
    return list(v) if isinstance(v, (tuple, list)) else v


@pytest.mark.parametrize("name", ["focalt_llama", "focalt_unicl"])
def test_manifest_checkpoint_converts_and_loads_strictly(name, ckpt_manifest, ckpt_full_model):
    data = ckpt_manifest(name)
    manifest, sd, code = data["manifest"], data["state_dict"], data["code"]
    model = ckpt_full_model(PRESET[name])
    out, report = convert_official_state_dict(sd, target=model, drop=["text_tower"])
    assert report.ok and not any(report.unmapped.values()) and not any(report.missing.values())

    # every manifest key is classified into the expected group, none is left over
    expected = {}
    for e in manifest["keys"]:
        g = GROUP_MAP[e["group"]]
        assert official_group(e["key"]) == g, e["key"]
        expected.setdefault(g, set()).add(e["key"])
    assert set(report.dropped["text_tower"]) == expected["text_tower"]
    assert (
        len(expected["text_tower"])
        == manifest["group_summary"]["lang_encoder.model (text tower)"]["num_keys"]
    )
    assert set(report.dropped["constants"]) == {"dilation_kernel", "criterion.empty_weight"}
    assert any("empty_weight [134]" in n and "verified" in n for n in report.constants)
    for g in ("backbone", "pixel_decoder", "interface", "lang_proj", "logit_scale"):
        assert {a for a, _ in report.mapped[g]} == expected[g], g
    counts = report.counts()
    assert counts["backbone"]["mapped"] == 300 and counts["pixel_decoder"]["mapped"] == 97
    assert counts["interface"]["mapped"] == 180

    # output keys are exactly FINDModel.state_dict() keys; strict load; values land where mapped
    assert set(out) == set(model.state_dict())
    load_state_dict_checked(model, out, source=name)
    own = model.state_dict()
    for g in ("backbone", "pixel_decoder", "interface", "lang_proj", "logit_scale"):
        for official, ours in report.mapped[g]:
            v = own[ours].reshape(-1)
            assert own[ours].shape == sd[official].shape
            probe = v[torch.tensor([0, v.numel() // 2, v.numel() - 1])]
            assert probe.tolist() == [code[official]] * 3, (official, ours)


def test_text_tower_must_be_dropped_explicitly(ckpt_manifest, ckpt_full_model):
    sd = ckpt_manifest("focalt_unicl")["state_dict"]
    with pytest.raises(OfficialConversionError) as err:
        convert_official_state_dict(sd, target=ckpt_full_model("focalt_unicl"))
    msg = str(err.value)
    assert "148 UNMAPPED key(s) of group 'text_tower'" in msg and "--drop text_tower" in msg
    assert "sem_seg_head.predictor.lang_encoder.lang_encoder.token_embedding.weight" in msg


def test_manifest_architecture_is_inferred(ckpt_manifest):
    from find_plugin.presets import resolve_find_config

    for name, width in (("focalt_llama", 4096), ("focalt_unicl", 512)):
        cfg = infer_find_config(ckpt_manifest(name)["state_dict"])
        preset = resolve_find_config(name)
        for section in ("backbone", "pixel_decoder", "interface"):
            for k, v in cfg[section].items():
                if k in preset[section]:
                    assert _plain(v) == _plain(preset[section][k]), (section, k, v)
        assert cfg["backbone"]["depths"] == [2, 2, 6, 2] and cfg["backbone"]["style"] == "focal_dw"
        assert cfg["interface"]["num_layers"] == 9 and cfg["interface"]["num_queries"] == 100
        assert cfg["interface"]["dim_text"] == width
        assert cfg["pixel_decoder"]["transformer_enc_layers"] == 6


def test_parity_architecture_is_inferred(parity_load, ckpt_parity_config):
    cfg = infer_find_config(parity_load("state_dict.pt"))
    for section in ("backbone", "pixel_decoder", "interface"):
        for k, v in cfg[section].items():
            if k in ckpt_parity_config[section]:
                assert v == ckpt_parity_config[section][k], (section, k)


@pytest.mark.parametrize("prefix", ["", "model.", "module.model."])
@pytest.mark.parametrize("container", [None, "model", "module"])
def test_official_prefixes_and_containers(prefix, container, parity_load, ckpt_parity_meta):
    sd = {prefix + k: v for k, v in parity_load("state_dict.pt").items()}
    obj = sd if container is None else {container: sd, "iteration": 5}
    out, report = convert_official_state_dict(obj, target=ckpt_parity_meta)
    assert report.prefix == prefix
    assert set(out) == set(ckpt_parity_meta.state_dict())


def test_mixed_prefixes_are_refused(parity_load):
    sd = dict(parity_load("state_dict.pt"))
    sd["model.backbone.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match="mixes key prefixes"):
        unwrap_official(sd)


def test_wrong_constants_fail(parity_load, ckpt_parity_meta):
    sd = dict(parity_load("state_dict.pt"))
    w = sd["criterion.empty_weight"].clone()
    w[-1] = 0.2
    sd["criterion.empty_weight"] = w
    sd["dilation_kernel"] = torch.ones(1, 1, 5, 5)
    with pytest.raises(OfficialConversionError) as err:
        convert_official_state_dict(sd, target=ckpt_parity_meta)
    msg = str(err.value)
    assert "BAD constant: criterion.empty_weight [134] is not ones with the last entry 0.1" in msg
    assert "BAD constant: dilation_kernel (1, 1, 5, 5)" in msg


def test_unmapped_missing_and_mismatched_are_listed(parity_load, ckpt_parity_meta):
    sd = dict(parity_load("state_dict.pt"))
    sd.pop("backbone.norm3.weight")
    sd.pop("sem_seg_head.predictor.query_feat.weight")
    sd["sem_seg_head.predictor.bogus.weight"] = torch.zeros(2)
    sd["sem_seg_head.lang_encoder.lang_proj"] = torch.zeros(2)
    lp = "sem_seg_head.predictor.lang_encoder.lang_proj"
    sd[lp] = torch.zeros(65, 128)
    with pytest.raises(OfficialConversionError) as err:
        convert_official_state_dict(sd, target=ckpt_parity_meta, source="x.pt")
    msg = str(err.value)
    assert "1 UNMAPPED key(s) of group 'interface'" in msg and "predictor.bogus.weight" in msg
    assert "1 UNMAPPED key(s) of group 'other'" in msg
    assert "group 'backbone' MISSING" in msg and "backbone.norm3.weight" in msg
    assert "interface.query_feat.weight" in msg
    assert f"{lp} -> interface.lang_proj: (65, 128) vs (64, 128)" in msg
    # the same file converts once the groups are declared droppable / absent
    sd[lp] = torch.zeros(64, 128)
    out, report = convert_official_state_dict(
        sd,
        target=ckpt_parity_meta,
        drop=["other", "interface"],
        allow_absent=["backbone", "interface"],
    )
    assert report.ok and "backbone.norm3.weight" in report.absent["backbone"]
    assert "interface.lang_proj" in out and not any(k.startswith("interface.layers") for k in out)


def test_key_table_is_explicit_and_one_to_one(ckpt_parity_meta):
    keys = list(ckpt_parity_meta.state_dict())
    table = official_key_table(keys)
    assert sorted(table.values()) == sorted(keys)  # every target key, exactly once
    assert (
        table["sem_seg_head.pixel_decoder.mask_features.weight"]
        == "pixel_decoder.mask_features.weight"
    )
    assert table["backbone.layers.2.blocks.1.gamma_2"] == "backbone.layers.2.blocks.1.gamma_2"
    assert (
        table["sem_seg_head.predictor.content_attention.layers.2.multihead_attn.in_proj_weight"]
        == "interface.layers.2.cross_attn.in_proj_weight"
    )
    assert table["sem_seg_head.predictor.spatial_featured.weight"] == "interface.memory_feat.weight"
    assert table["sem_seg_head.predictor.lang_encoder.logit_scale"] == "interface.logit_scale"


def test_half_precision_source_is_cast_and_reported(parity_load, ckpt_parity_meta):
    sd = {
        k: v.half() if v.is_floating_point() else v for k, v in parity_load("state_dict.pt").items()
    }
    out, report = convert_official_state_dict(sd, target=ckpt_parity_meta)
    assert all(v.dtype == torch.float32 for v in out.values())
    assert len(report.cast) == len(out)


# ------------------------------------------------------------------------------------------------
# official config translation and the official input projection (interface.input_proj.*)
# ------------------------------------------------------------------------------------------------
def _official_with(parity_load, **decoder):
    resolved = copy.deepcopy(parity_load("config.json")["resolved"])
    resolved["MODEL.DECODER"].update(decoder)
    return resolved


def _input_proj(sd, in_channels, hidden=128, levels=3):
    """Official state dict plus random 1x1 input projections [hidden, in_channels, 1, 1]."""
    sd = dict(sd)
    gen = torch.Generator().manual_seed(7)
    for i in range(levels):
        p = f"sem_seg_head.predictor.input_proj.{i}."
        sd[p + "weight"] = torch.randn(hidden, in_channels, 1, 1, generator=gen)
        sd[p + "bias"] = torch.randn(hidden, generator=gen)
    return sd


def test_translation_reads_input_proj_settings(parity_load):
    cfg = find_config_from_official(parity_load("config.json")["resolved"])
    assert (cfg["interface"]["in_channels"], cfg["interface"]["enforce_input_proj"]) == (128, False)
    resolved = _official_with(parity_load, ENFORCE_INPUT_PROJ=True)
    resolved["MODEL"]["ENCODER"]["CONVS_DIM"] = 256
    cfg = find_config_from_official(resolved)
    assert cfg["interface"]["enforce_input_proj"] is True
    assert cfg["interface"]["in_channels"] == cfg["pixel_decoder"]["conv_dim"] == 256
    # DEC_LAYERS / NUM_OBJECT_QUERIES count the initial prediction / the image query
    assert (cfg["interface"]["num_layers"], cfg["interface"]["num_queries"]) == (3, 20)


def test_translation_errors_name_the_keys(parity_load):
    resolved = _official_with(parity_load)
    del resolved["MODEL.DECODER"]["ENFORCE_INPUT_PROJ"], resolved["MODEL"]["DIM_PROJ"]
    with pytest.raises(KeyError) as err:
        find_config_from_official(resolved)
    msg = str(err.value)
    assert "MODEL.DECODER.ENFORCE_INPUT_PROJ (interface.enforce_input_proj)" in msg
    assert "MODEL.DIM_PROJ (interface.dim_proj)" in msg and "2 key(s)" in msg
    resolved = _official_with(parity_load)
    resolved["MODEL"]["BACKBONE"]["NAME"] = "davit"
    with pytest.raises(ValueError, match="MODEL.BACKBONE.NAME = 'davit'"):
        find_config_from_official(resolved)


def test_inference_and_translation_share_the_key_table(parity_load):
    """Inferred from shapes == translated from the official config, for every keyword the
    tensors reveal (the rest comes from the preset: same values in parity_small)."""
    inferred = infer_find_config(parity_load("state_dict.pt"))
    translated = find_config_from_official(parity_load("config.json")["resolved"])
    for section, keys in SECTION_KEYS.items():
        assert set(translated[section]) == {k.kwarg for k in keys if k.official}, section
        for kwarg, value in translated[section].items():
            assert inferred[section][kwarg] == value, (section, kwarg)


def test_inference_rejects_disagreeing_tensors(parity_load):
    sd = dict(parity_load("state_dict.pt"))
    w = sd["sem_seg_head.predictor.mask_embed.layers.2.weight"]
    sd["sem_seg_head.predictor.mask_embed.layers.2.weight"] = w[:64]
    with pytest.raises(ValueError, match="MODEL.ENCODER.MASK_DIM is 128 from .*mask_features"):
        infer_find_config(sd)
    # a 256-channel input projection next to a 128-channel pixel decoder
    with pytest.raises(ValueError, match="MODEL.ENCODER.CONVS_DIM is 128"):
        infer_find_config(_input_proj(parity_load("state_dict.pt"), in_channels=256))


# Needs FINDInterface(in_channels=..., enforce_input_proj=...) with modules input_proj.{0,1,2}.
def test_enforced_input_proj_converts_and_loads_strictly(parity_load, ckpt_parity_config):
    sd = _input_proj(parity_load("state_dict.pt"), in_channels=128)
    cfg = find_config_from_official(_official_with(parity_load, ENFORCE_INPUT_PROJ=True))
    assert (cfg["interface"]["in_channels"], cfg["interface"]["enforce_input_proj"]) == (128, True)
    inferred = infer_find_config(sd)
    for section, values in cfg.items():
        assert {k: inferred[section][k] for k in values} == values, section
    model = build_find_model(**cfg)
    out, report = convert_official_state_dict(sd, target=model)
    assert report.ok and not any(report.unmapped.values()) and not any(report.missing.values())
    assert report.counts()["interface"]["mapped"] == 72 + 6
    load_state_dict_checked(model, out, source="input_proj")
    own = model.state_dict()
    for i in range(3):
        for p in ("weight", "bias"):
            official = sd[f"sem_seg_head.predictor.input_proj.{i}.{p}"]
            assert torch.equal(own[f"interface.input_proj.{i}.{p}"], official), (i, p)
    # the same keys against a model without projections: listed, never skipped
    with pytest.raises(OfficialConversionError, match="6 UNMAPPED key.* 'interface'"):
        convert_official_state_dict(sd, target=build_find_model(**ckpt_parity_config))


# Needs FINDInterface(in_channels=..., enforce_input_proj=...) with modules input_proj.{0,1,2}.
def test_projecting_input_proj_converts_without_pixel_decoder(parity_load):
    """Interface-only file whose maps are 256 wide (!= hidden 128): the projection is inferred,
    converted and loaded strictly; the target's pixel decoder is absent by declaration."""
    sd = {
        k: v
        for k, v in _input_proj(parity_load("state_dict.pt"), in_channels=256).items()
        if k.startswith("sem_seg_head.predictor.")
    }
    cfg = infer_find_config(sd)
    assert (cfg["interface"]["in_channels"], cfg["interface"]["enforce_input_proj"]) == (256, False)
    model = build_find_model(**cfg)
    out, report = convert_official_state_dict(
        sd, target=model, allow_absent=["backbone", "pixel_decoder"]
    )
    assert report.ok and not any(report.unmapped.values())
    assert tuple(out["interface.input_proj.2.weight"].shape) == (128, 256, 1, 1)
    load_state_dict_checked(model.interface, {k[len("interface.") :]: v for k, v in out.items()})
