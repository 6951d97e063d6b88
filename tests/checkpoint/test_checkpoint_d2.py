"""FINDCheckpointer (detectron2) and load_weights: path / URL / zoo name, our format, official
layout on the fly, detectron2's own resume files, strict errors, checksum / missing-file errors."""

import hashlib
import os
import shutil

import pytest
import torch

# Module-level on purpose: a missing or broken detectron2 must fail these tests, not skip them.
from detectron2.config import get_cfg

from find_plugin.checkpoint import (
    MODEL_ZOO,
    IncompatibleCheckpointError,
    OfficialConversionError,
    WeightsNotFoundError,
    ZooEntry,
    load_weights,
    save_checkpoint,
)
from find_plugin.d2 import FINDCheckpointer, add_find_weights_config


@pytest.fixture(scope="module")
def files(ckpt_http, parity_dir, ckpt_parity_config):
    """Official parity file and its converted find_plugin file, both also served over HTTP."""
    from find_plugin.checkpoint import convert_official_state_dict
    from find_plugin.model import build_find_model

    base, folder = ckpt_http
    official = os.path.join(folder, "official_small.pt")
    shutil.copy(os.path.join(parity_dir, "state_dict.pt"), official)
    with torch.device("meta"):
        target = build_find_model(**ckpt_parity_config)
    state, _ = convert_official_state_dict(torch.load(official, weights_only=True), target=target)
    ours = save_checkpoint(os.path.join(folder, "ours_small.pth"), state, meta={"note": "test"})
    return {"base": base, "official": official, "ours": ours, "state": state}


def _same(model, state):
    own = model.state_dict()
    return set(own) == set(state) and all(torch.equal(own[k], state[k]) for k in state)


def _ckpt(model, **kw):
    return FINDCheckpointer(model, **kw)


def test_d2_loads_local_paths_of_both_layouts(files, ckpt_parity_model):
    c = _ckpt(ckpt_parity_model)
    c.load(files["ours"])
    assert _same(ckpt_parity_model, files["state"]) and c.last_report is None
    for p in ckpt_parity_model.parameters():
        p.data.zero_()
    c.load(files["official"])
    assert _same(ckpt_parity_model, files["state"])
    assert c.last_report is not None and c.last_report.ok


def test_d2_loads_url_and_zoo_name(files, ckpt_parity_model, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    url = files["base"] + "/official_small.pt"
    c = _ckpt(ckpt_parity_model, cache_dir=cache)
    c.load(url)
    assert _same(ckpt_parity_model, files["state"])
    digest = hashlib.sha256(open(files["ours"], "rb").read()).hexdigest()
    monkeypatch.setitem(
        MODEL_ZOO,
        "toy_find_small",
        ZooEntry(files["base"] + "/ours_small.pth", digest, "c.yaml", "find_plugin", "test"),
    )
    for p in ckpt_parity_model.parameters():
        p.data.zero_()
    c.load("zoo://toy_find_small")
    assert _same(ckpt_parity_model, files["state"])
    # the same names work with the framework-free loader
    assert (
        load_weights(ckpt_parity_model, "toy_find_small", cache_dir=cache).layout == "find_plugin"
    )


def test_checksum_mismatch_and_missing_file(files, ckpt_parity_model, tmp_path, monkeypatch):
    monkeypatch.setitem(
        MODEL_ZOO,
        "toy_find_bad",
        ZooEntry(files["base"] + "/ours_small.pth?v=2", "f" * 64, "c", "find_plugin", ""),
    )
    c = _ckpt(ckpt_parity_model, cache_dir=str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="sha256 is .* expected ffff"):
        c.load("toy_find_bad")
    with pytest.raises(WeightsNotFoundError, match="neither an existing file"):
        c.load(str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsNotFoundError, match="could not download"):
        c.load(files["base"] + "/no_such_file.pth")


def test_d2_strict_errors_list_keys(files, ckpt_parity_model, tmp_path):
    state = dict(files["state"])
    state.pop("interface.query_feat.weight")
    state["interface.bogus"] = torch.zeros(1)
    bad = save_checkpoint(str(tmp_path / "bad.pth"), state)
    c = _ckpt(ckpt_parity_model)
    with pytest.raises(IncompatibleCheckpointError) as err:
        c.load(bad)
    assert "interface.query_feat.weight" in str(err.value) and "interface.bogus" in str(err.value)
    # allowed-absent groups are configurable
    state.pop("interface.bogus")
    ok = save_checkpoint(str(tmp_path / "ok.pth"), state)
    _ckpt(ckpt_parity_model, allow_absent=["interface"]).load(ok)
    # official layout: the text tower must be dropped (default) - and nothing else is tolerated
    sd = torch.load(files["official"], weights_only=True)
    sd["sem_seg_head.predictor.lang_encoder.lang_encoder.ln_final.weight"] = torch.ones(64)
    sd["sem_seg_head.predictor.unknown"] = torch.ones(1)
    off = str(tmp_path / "official_extra.pt")
    torch.save({"model": {"model." + k: v for k, v in sd.items()}}, off)
    with pytest.raises(OfficialConversionError, match="predictor.unknown"):
        c.load(off)
    with pytest.raises(OfficialConversionError, match="group 'text_tower'"):
        _ckpt(ckpt_parity_model, drop=()).load(off)


def test_d2_resume_of_its_own_files(files, ckpt_parity_model, tmp_path):
    model = ckpt_parity_model
    opt = torch.optim.SGD([p for p in model.interface.parameters()], lr=0.1, momentum=0.9)
    c = _ckpt(model, save_dir=str(tmp_path), optimizer=opt)
    c.load(files["ours"])
    model.interface.logit_scale.grad = torch.ones(())
    opt.step()
    c.save("model_0000009", iteration=9)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    assert c.has_checkpoint()
    for p in model.parameters():
        p.data.zero_()
    opt2 = torch.optim.SGD([p for p in model.interface.parameters()], lr=0.1, momentum=0.9)
    c2 = _ckpt(model, save_dir=str(tmp_path), optimizer=opt2)
    extra = c2.resume_or_load("zoo://find_focalt_llama_x640", resume=True)  # resume wins
    assert extra["iteration"] == 9
    assert _same(model, saved)
    assert opt2.state_dict()["state"], "optimizer state restored"


def test_d2_config_options(ckpt_parity_model):
    cfg = add_find_weights_config(get_cfg())
    assert list(cfg.MODEL.FIND_WEIGHTS.DROP) == ["text_tower"]
    cfg.merge_from_list(["MODEL.FIND_WEIGHTS.ALLOW_ABSENT", ["interface"]])
    cfg.merge_from_list(["MODEL.FIND_WEIGHTS.DROP", ["text_tower", "other"]])
    c = FINDCheckpointer.from_config(cfg, ckpt_parity_model)
    assert c.allow_absent == ("interface",) and c.drop == ("text_tower", "other")
    assert c.cache_dir is None
    assert FINDCheckpointer.from_config(get_cfg(), ckpt_parity_model).drop == ("text_tower",)
