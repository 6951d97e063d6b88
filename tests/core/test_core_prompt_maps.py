"""``prompt_maps``: visual prompts sampled in the features of another image (cross-image
reference of the demo's interleave prompt; official ``refint``)."""

import pytest
import torch


def _g():
    return torch.Generator().manual_seed(0)


def _one(feats, mf, b):
    return [f[b : b + 1] for f in feats], mf[b : b + 1]


def _spatial_tokens(model, feats, mf, spatial):
    levels = model.feature_levels(feats, mf)
    # the same point draw every time (more prompt pixels than max_spatial_points)
    _, built, _ = model.build_variables({"spatial": spatial}, levels, _g())
    return built["tokens_vision_spatial"]


def test_prompt_maps_sample_the_other_image(tiny, tiny_model):
    feats, mf, tasks = tiny.inputs(bsz=2)
    spatial = {k: tasks["spatial"][k][1:2] for k in ("pos_masks", "neg_masks")}
    fa, ma = _one(feats, mf, 0)
    fb, mb = _one(feats, mf, 1)
    with torch.no_grad():
        own_b = _spatial_tokens(tiny_model, fb, mb, spatial)
        maps_b = tiny_model.feature_levels(fb, mb).maps
        a_with_b = _spatial_tokens(tiny_model, fa, ma, dict(spatial, prompt_maps=maps_b))
        a_own = _spatial_tokens(tiny_model, fa, ma, spatial)
    # the prompt tokens of a pass over image A with B's maps are B's own prompt tokens
    torch.testing.assert_close(a_with_b.content, own_b.content)
    assert torch.equal(a_with_b.index, own_b.index)
    for lvl_ab, lvl_b in zip(a_with_b.levels, own_b.levels):
        torch.testing.assert_close(lvl_ab, lvl_b)
    # ... and not A's (the images differ)
    assert not torch.allclose(a_own.content, own_b.content)


def test_prompt_maps_change_the_prediction_only_through_the_prompts(tiny, tiny_model):
    feats, mf, tasks = tiny.inputs(bsz=2)
    spatial = {k: tasks["spatial"][k][:1] for k in ("pos_masks", "neg_masks")}
    fa, ma = _one(feats, mf, 0)
    fb, mb = _one(feats, mf, 1)
    with torch.no_grad():
        default = tiny_model(fa, ma, {"spatial": spatial}, generator=_g())
        own = tiny_model(
            fa, ma, {"spatial": dict(spatial, prompt_maps=tiny_model.feature_levels(fa, ma).maps)}
        )
        other = tiny_model(
            fa, ma, {"spatial": dict(spatial, prompt_maps=tiny_model.feature_levels(fb, mb).maps)}
        )
    torch.testing.assert_close(own["pred_smasks"], default["pred_smasks"])
    torch.testing.assert_close(other["pred_masks"], default["pred_masks"])  # object queries: same
    assert not torch.allclose(other["pred_smasks"], default["pred_smasks"])


def test_prompt_maps_of_the_wrong_shape_are_a_clear_error(tiny, tiny_model):
    feats, mf, tasks = tiny.inputs(bsz=2)
    spatial = {k: tasks["spatial"][k][:1] for k in ("pos_masks", "neg_masks")}
    fa, ma = _one(feats, mf, 0)
    maps = tiny_model.feature_levels(feats, mf).maps  # batch of 2 for a batch of 1
    with pytest.raises(ValueError, match="prompt_maps"):
        tiny_model(fa, ma, {"spatial": dict(spatial, prompt_maps=maps)})
    with pytest.raises(ValueError, match="prompt_maps"):
        tiny_model(fa, ma, {"spatial": dict(spatial, prompt_maps=maps[:2])})
