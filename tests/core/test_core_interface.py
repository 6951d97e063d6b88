"""FINDInterface on tiny random configs: shapes, batching, isolation, indexed attention, grads."""

import pytest
import torch
import torch.nn.functional as F

from find_plugin.core.interface import FINDInterface
from find_plugin.core.prototypes import get_prototype
from find_plugin.core.sampler import sample_prompts

ALL = ["class", "grounding", "retrieval", "spatial", "interleave"]


def _expected_shapes(tiny, tasks, bsz):
    nq, d, hw = tiny.config["num_queries"], tiny.config["dim_proj"], tiny.mask_size
    n_items = {
        "queries_language_description": 2,
        "queries_vision_spatial": (
            max(m.shape[0] for m in tasks["spatial"]["pos_masks"]) if "spatial" in tasks else 0
        ),
        "queries_interleave_entity": 2,
    }
    shapes = {}
    for t in ["seg"] + list(tasks):
        for var in get_prototype(t).variables:
            n = {"proposals": nq, "one": 1}.get(var.count, n_items.get(var.name))
            for name, space in var.outputs:
                tail = {"mask": hw, "semantic": (d,), "pixel": (d,), "class_logits": (5,)}[space]
                shapes[name] = (bsz, n) + tuple(tail)
    return shapes


@pytest.mark.parametrize("task", ["seg"] + ALL + ["fused"])
def test_core_interface_output_shapes(tiny, tiny_model, task):
    bsz = 3
    feats, mf, tasks = tiny.inputs(bsz=bsz)
    tasks = tiny.project(tiny_model, tasks)
    if task != "fused":
        tasks = {} if task == "seg" else {task: tasks[task]}
    bank = torch.randn(5, tiny.config["dim_proj"])
    with torch.no_grad():
        out = tiny_model(feats, mf, tasks, class_bank=bank)
    expected = _expected_shapes(tiny, tasks, bsz)
    assert set(expected) <= set(out)
    for name, shape in expected.items():
        assert tuple(out[name].shape) == shape, name
        assert torch.isfinite(out[name]).all(), name
    assert len(out["aux_outputs"]) == tiny.config["num_layers"]
    for aux in out["aux_outputs"]:
        assert set(aux) == set(expected)
        for name, shape in expected.items():
            assert tuple(aux[name].shape) == shape
    if task in ("spatial", "fused"):
        pad = out["item_padding"]["queries_vision_spatial"]
        assert pad.tolist() == [[False, False, True], [False, False, False], [False, False, True]]


def test_core_interface_batch_consistency(tiny, tiny_model):
    """Image b of a batch gives the same outputs as image b alone (padding is inert)."""
    feats, mf, tasks = tiny.inputs(bsz=2)
    tasks = tiny.project(tiny_model, tasks)
    del tasks["spatial"]["prev_mask"]
    tiny_model.sampler.max_points = 10**6  # keep every prompt pixel: no random draw
    with torch.no_grad():
        both = tiny_model(feats, mf, tasks)
        for b in range(2):
            one = {}
            for name, inp in tasks.items():
                one[name] = {
                    k: (v[b : b + 1] if torch.is_tensor(v) else v[b : b + 1])
                    for k, v in inp.items()
                }
            # image alone: trim the padded tokens of this image
            for name in ("grounding", "retrieval", "class", "interleave"):
                keep = ~one[name]["token_padding"][0]
                for k in ("tokens", "token_padding", "token_index", "token_entity"):
                    if k in one[name]:
                        one[name][k] = one[name][k][:, keep]
            single = tiny_model([f[b : b + 1] for f in feats], mf[b : b + 1], one)
            for name in (
                "pred_masks",
                "pred_gmasks",
                "pred_retrievals_lang",
                "pred_imasks",
                "pred_retrievals_class",
                "pred_entity_class",
                "pred_grounding_query",
            ):
                torch.testing.assert_close(single[name][0], both[name][b], atol=1e-4, rtol=1e-4)
            n = single["pred_pspatials"].shape[1]
            torch.testing.assert_close(
                single["pred_pspatials"][0], both["pred_pspatials"][b, :n], atol=1e-4, rtol=1e-4
            )


OWN = {
    "grounding": {"pred_gmasks", "pred_gtexts", "pred_grounding_query"},
    "spatial": {
        "pred_smasks",
        "pred_spatials",
        "pred_smaskembs",
        "pred_spatial_class",
        "pred_pspatials",
    },
    "retrieval": {"pred_retrievals_lang"},
    "interleave": {
        "pred_imasks",
        "pred_interleave_objects",
        "pred_imaskembs",
        "pred_interleave_image",
        "pred_legend_pixel",
        "pred_entity_class",
        "pred_entity_pixel",
    },
    "class": {"pred_retrievals_class"},
}


@pytest.mark.parametrize("perturbed", ["grounding", "spatial", "retrieval", "interleave", "class"])
def test_core_interface_task_isolation(tiny, tiny_model, perturbed):
    """Perturbing one task's inputs leaves every other task's outputs BIT-IDENTICAL."""
    feats, mf, tasks = tiny.inputs(bsz=2)
    tasks = tiny.project(tiny_model, tasks)
    other = {k: dict(v) for k, v in tasks.items()}
    inp = other[perturbed]
    if "tokens" in inp:
        inp["tokens"] = inp["tokens"] + torch.randn_like(inp["tokens"])
    else:
        inp["pos_masks"] = [m.roll(7, dims=-1) for m in inp["pos_masks"]]
        inp["prev_mask"] = -inp["prev_mask"]
    bank = torch.randn(5, tiny.config["dim_proj"])
    with torch.no_grad():
        # same seed for the (random) visual-prompt point draws of both passes
        gen = torch.Generator
        a = tiny_model(feats, mf, tasks, class_bank=bank, generator=gen().manual_seed(0))
        b = tiny_model(feats, mf, other, class_bank=bank, generator=gen().manual_seed(0))
    changed = False
    for layer_a, layer_b in zip([a] + a["aux_outputs"], [b] + b["aux_outputs"]):
        for name, value in layer_a.items():
            if not torch.is_tensor(value):
                continue
            if name in OWN[perturbed]:
                changed |= not torch.equal(value, layer_b[name])
            else:
                assert torch.equal(value, layer_b[name]), f"{name} changed"
    assert changed, "the perturbed task's own outputs did not change"


def test_core_interface_indexed_attention(tiny, tiny_model):
    """Content attention of description query k sees only phrase k's tokens (and spatial query k
    only prompt k's points): the layer-0 cross-attention rows are unaffected by other items."""
    feats, mf, tasks = tiny.inputs(bsz=1, with_prev_mask=False)
    tasks = tiny.project(tiny_model, {k: tasks[k] for k in ("grounding", "spatial")})
    prompts = torch.zeros(2, *tiny.img_size, dtype=torch.bool)
    prompts[0, 5:9, 10:15] = True
    prompts[1, 30:34, 40:45] = True
    tasks["spatial"] = {"pos_masks": [prompts]}
    tiny_model.sampler.max_points = 10**6  # keep every prompt pixel: no random draw
    captured = []
    hook = tiny_model.layers[0].cross_attn.out_proj.register_forward_hook(
        lambda m, i, o: captured.append(o.detach().clone())
    )
    try:
        with torch.no_grad():
            tiny_model(feats, mf, tasks)
            g = dict(tasks["grounding"])
            tok = g["tokens"].clone()
            tok[:, g["token_index"][0] == 1] += 5.0  # perturb phrase 1 only
            g["tokens"] = tok
            moved = torch.stack([prompts[0], prompts[1].roll(9, dims=-1)])
            tiny_model(feats, mf, {"grounding": g, "spatial": {"pos_masks": [moved]}})
    finally:
        hook.remove()
    a, b = captured
    # content-attention rows (LayerRows.cross_rows): the image readers first, object (nq),
    # image (1), grounding proposals (nq), segment proposals (nq); then the token readers in
    # sequence order, description queries (2), spatial queries (2)
    nq = tiny.config["num_queries"]
    desc1 = 3 * nq + 1 + 1
    spatial1 = desc1 + 2
    changed_rows = torch.nonzero((a - b).abs().amax(-1)[0] > 0).flatten().tolist()
    assert changed_rows == [desc1, spatial1]


def test_core_interface_gradients(tiny, tiny_model):
    """Gradients reach every interface parameter, lang_proj and logit_scale; features are frozen."""
    model = tiny_model.train()
    feats, mf, tasks = tiny.inputs(bsz=2)
    tasks = tiny.project(model, tasks)
    tasks["class"]["class_indexes"] = torch.tensor([1, 4])
    bank = torch.randn(5, tiny.config["dim_proj"])
    out = model(feats, mf, tasks, class_bank=bank)
    loss = 0.0
    for layer in [out] + out["aux_outputs"]:
        for name, v in layer.items():
            if torch.is_tensor(v) and v.requires_grad:
                loss = loss + (v.float() ** 2).mean()
    loss.backward()
    num_layers = tiny.config["num_layers"]
    for name, p in model.named_parameters():
        if name.startswith("sampler.mask_sptial_embed.") and int(name[-1]) >= num_layers:
            continue  # level l is only read by layer l (and l + 3, ...)
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reached {name}"
    assert all(f.grad is None for f in feats) and mf.grad is None
    assert not out["class_bank"].requires_grad


def test_core_interface_class_bank_refresh(tiny, tiny_model):
    """Training: the class query of each layer overwrites row class_indexes[b] of the bank, with
    gradient to the class tokens; eval: the bank is used as given."""
    model = tiny_model.train()
    feats, mf, tasks = tiny.inputs(bsz=2)
    tasks = tiny.project(model, {"class": tasks["class"]})
    tokens = tasks["class"]["tokens"].detach().requires_grad_(True)
    tasks["class"]["tokens"] = tokens
    tasks["class"]["class_indexes"] = torch.tensor([2, 0])
    bank = torch.randn(5, tiny.config["dim_proj"])
    out = model(feats, mf, tasks, class_bank=bank)
    refreshed = out["class_bank"]
    torch.testing.assert_close(refreshed[[2, 0]], out["pred_retrievals_class"][:, 0].detach())
    torch.testing.assert_close(refreshed[[1, 3, 4]], bank[[1, 3, 4]])
    out["pred_logits"].sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        ev = model(feats, mf, tasks, class_bank=bank)
    assert "class_bank" not in ev


def test_core_interface_no_nan_fully_masked(tiny, tiny_model):
    """Rows with every key masked (empty prompt, text legend tokens, padding) stay finite."""
    feats, mf, tasks = tiny.inputs(bsz=2)
    tasks = tiny.project(tiny_model, tasks)
    # all grounding tokens padded for image 1: its description queries have no key
    tasks["grounding"]["token_padding"] = tasks["grounding"]["token_padding"].clone()
    tasks["grounding"]["token_padding"][1] = True
    tiny_model.train()
    out = tiny_model(feats, mf, tasks, class_bank=torch.randn(5, 64))
    total = sum(v.sum() for v in out.values() if torch.is_tensor(v) and v.is_floating_point())
    assert torch.isfinite(total)
    total.backward()
    for p in tiny_model.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_core_interface_bad_inputs(tiny, tiny_model):
    feats, mf, tasks = tiny.inputs(bsz=1)
    with pytest.raises(ValueError, match="features"):
        tiny_model(feats[:2], mf, {})
    with pytest.raises(ValueError, match="tokens"):
        tiny_model(feats, mf, {"retrieval": {"tokens": torch.zeros(1, 3, 7)}})
    with pytest.raises(KeyError, match="unknown task prototype"):
        tiny_model(feats, mf, {"nope": {}})


def test_prev_mask_with_wrong_count_is_a_clear_error(tiny, tiny_model):
    """prev_mask must hold 1 mask (shared) or one per memory; anything else names the key."""
    feats, mf, tasks = tiny.inputs(bsz=2)
    tasks = tiny.project(tiny_model, tasks)
    tasks = {"spatial": tasks["spatial"]}
    tasks["spatial"]["prev_mask"] = torch.randn(2, 3, *tiny.mask_size)
    with pytest.raises(ValueError, match=r"\['prev_mask'\] must be \[B=2, 1 or"):
        tiny_model(feats, mf, tasks)


def test_core_interface_input_proj_equals_projecting_by_hand(tiny, tiny_model):
    """input_proj[l] runs first: level embedding, positional encoding, image keys and the
    visual-prompt sampler all see the projected maps (official prepare_vision_features)."""
    feats, mf, tasks = tiny.inputs(bsz=2)
    tasks = tiny.project(tiny_model, {k: tasks[k] for k in ("spatial", "interleave", "class")})
    proj = FINDInterface(**tiny.config, enforce_input_proj=True).eval()
    missing, unexpected = proj.load_state_dict(tiny_model.state_dict(), strict=False)
    assert sorted(missing) == [f"input_proj.{i}.{p}" for i in range(3) for p in ("bias", "weight")]
    assert not unexpected
    with torch.no_grad():
        for conv in proj.input_proj:
            conv.weight.normal_(0, 0.2)
            conv.bias.normal_(0, 0.5)
        gen = torch.Generator
        out = proj(feats, mf, tasks, generator=gen().manual_seed(0))
        by_hand = [F.conv2d(f, c.weight, c.bias) for f, c in zip(feats, proj.input_proj)]
        ref = tiny_model(by_hand, mf, tasks, generator=gen().manual_seed(0))
        plain = tiny_model(feats, mf, tasks, generator=gen().manual_seed(0))
    for name in ("pred_masks", "pred_smasks", "pred_pspatials", "pred_interleave_image"):
        torch.testing.assert_close(out[name], ref[name], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(out[name], plain[name], atol=1e-3)  # the projection matters


def test_core_interface_input_proj_channels_and_init(tiny):
    """in_channels != hidden_dim: 1x1 convs (c2_xavier_fill: kaiming-uniform a=1, zero bias),
    named input_proj.{l}; the default has no input_proj keys; features must have in_channels."""
    torch.manual_seed(0)
    model = FINDInterface(**tiny.config, in_channels=48).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if "input_proj" in k}
    c = tiny.config["hidden_dim"]
    assert shapes == {
        **{f"input_proj.{i}.weight": (c, 48, 1, 1) for i in range(3)},
        **{f"input_proj.{i}.bias": (c,) for i in range(3)},
    }
    w = torch.stack([m.weight for m in model.input_proj]).detach()
    bound = (3 / 48) ** 0.5  # gain 1 (a = 1): U(-sqrt(3 / fan_in), sqrt(3 / fan_in))
    assert w.abs().max() <= bound and abs(w.std().item() - bound / 3**0.5) < 0.05 * bound
    assert all(not m.bias.any() for m in model.input_proj)
    assert not any("input_proj" in k for k in FINDInterface(**tiny.config).state_dict())
    feats, mf, _ = tiny.inputs(bsz=1)
    with pytest.raises(ValueError, match=r"features\[0\] must be \[B=1, in_channels=48"):
        model(feats, mf, {})
    wide = [torch.randn(1, 48, *f.shape[-2:]) for f in feats]
    with torch.no_grad():
        assert model(wide, mf, {})["pred_masks"].shape[:2] == (1, tiny.config["num_queries"])


def _interleave_pair(tiny, model):
    feats, mf, tasks = tiny.inputs(bsz=2)
    inter = tiny.project(model, {"interleave": tasks["interleave"]})["interleave"]
    return feats, mf, inter


def test_core_interface_shared_variable_inputs_must_agree(tiny, tiny_model):
    """interleave and interleave_retrieval share their legend / visual-prompt variables: equal
    inputs are fine (same result as one task), contradicting ones are a clear error."""
    feats, mf, inter = _interleave_pair(tiny, tiny_model)
    gen = torch.Generator
    clone = {
        k: (v.clone() if torch.is_tensor(v) else [m.clone() for m in v]) for k, v in inter.items()
    }
    with torch.no_grad():
        alone = tiny_model(feats, mf, {"interleave": inter}, generator=gen().manual_seed(0))
        for second in (inter, clone, {}):
            both = tiny_model(
                feats,
                mf,
                {"interleave": inter, "interleave_retrieval": second},
                generator=gen().manual_seed(0),
            )
            assert torch.equal(both["pred_interleave_image"], alone["pred_interleave_image"])
    changed_tokens = dict(clone, tokens=clone["tokens"] + 1)
    pattern = r"'interleave' and 'interleave_retrieval'.*'tokens_interleave_legend'.*'tokens'"
    with pytest.raises(ValueError, match=pattern):
        tiny_model(feats, mf, {"interleave": inter, "interleave_retrieval": changed_tokens})
    moved = dict(clone, pos_masks=[m.roll(5, dims=-1) for m in clone["pos_masks"]])
    pattern = r"'interleave' and 'interleave_retrieval'.*'tokens_vision_spatial_'.*'pos_masks'"
    with pytest.raises(ValueError, match=pattern):
        tiny_model(feats, mf, {"interleave": inter, "interleave_retrieval": moved})
    # the same prompts, pre-sampled: a key only the second task gives is not silently dropped
    points = {"points": sample_prompts(inter["pos_masks"], None, num_levels=3, max_points=40)}
    with pytest.raises(ValueError, match="'tokens_vision_spatial_'.*'points'"):
        tiny_model(feats, mf, {"interleave": inter, "interleave_retrieval": points})


def test_core_interface_old_token_mask_name_is_a_clear_error(tiny, tiny_model):
    feats, mf, tasks = tiny.inputs(bsz=1)
    tasks = tiny.project(tiny_model, {"retrieval": tasks["retrieval"]})
    tasks["retrieval"]["token_mask"] = tasks["retrieval"].pop("token_padding")
    with pytest.raises(ValueError, match="'token_mask' is now 'token_padding'"):
        tiny_model(feats, mf, tasks)


def test_core_interface_without_aux_outputs_gives_the_same_outputs(tiny, tiny_model):
    """``aux_outputs=False`` (inference) computes the masks between layers from mask features
    resized to the level size (the mask head is linear): the same attention masks, hence the same
    final outputs; no ``aux_outputs`` are returned."""
    feats, mf, tasks = tiny.inputs(bsz=2)
    tasks = tiny.project(tiny_model, tasks)
    bank = torch.randn(5, tiny.config["dim_proj"])
    with torch.no_grad():
        full = tiny_model(feats, mf, tasks, class_bank=bank, generator=torch.Generator())
        light = tiny_model(
            feats, mf, tasks, class_bank=bank, generator=torch.Generator(), aux_outputs=False
        )
    assert "aux_outputs" not in light and set(light) == set(full) - {"aux_outputs"}
    for name, value in full.items():
        if torch.is_tensor(value):
            torch.testing.assert_close(light[name], value, atol=1e-5, rtol=1e-5, msg=name)


def test_masked_attention_offset_equals_the_offset_inputs():
    """``offset`` is added to the key/value rows after their projection."""
    from find_plugin.core.layers import MaskedAttention

    g = torch.Generator().manual_seed(0)
    attn = MaskedAttention(dim=16, num_heads=4)
    with torch.no_grad():
        attn.in_proj_bias.normal_(generator=g)
    q, k, v = (torch.randn(2, n, 16, generator=g) for n in (5, 12, 12))
    offset = torch.randn(16, generator=g)
    allowed = torch.rand(2, 5, 12, generator=g) > 0.3
    want = attn(q, k + offset, v + offset, allowed)
    got = attn(q, k, v, allowed, offset=offset)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_core_interface_level_embedding_after_projection_gives_the_same_training_pass(tiny):
    """Frozen features in training: the layers add the level embedding after their key/value
    projections (feature_levels); outputs and gradients equal those of features that need a
    gradient (which keep the embedding in the keys/values)."""
    results = []
    for features_grad in (False, True):
        model = tiny.model().train()
        feats, mf, tasks = tiny.inputs(bsz=2)
        tasks = tiny.project(model, tasks)
        feats = [f.requires_grad_(features_grad) for f in feats]
        levels = model.feature_levels(feats, mf)
        assert all((o is None) == features_grad for o in levels.offsets)
        out = model(feats, mf, tasks, generator=torch.Generator().manual_seed(0))
        layers = [out] + out["aux_outputs"]
        values = [layer[k] for layer in layers for k in layer if torch.is_tensor(layer[k])]
        sum((v.float() ** 2).mean() for v in values if v.requires_grad).backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results.append((values, grads))
    (split, split_grads), (whole, whole_grads) = results
    for a, b in zip(split, whole):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert split_grads.keys() == whole_grads.keys() and "level_embed.weight" in split_grads
    for name in whole_grads:
        torch.testing.assert_close(
            split_grads[name], whole_grads[name], atol=1e-5, rtol=1e-4, msg=name
        )
