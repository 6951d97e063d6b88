"""Task prototypes as data: registry, extendability, and the §1.4 attention tables."""

import pytest
import torch

from find_plugin.core import attention_mask as am
from find_plugin.core.prototypes import (
    CrossRule,
    TaskPrototype,
    VariableSpec,
    get_prototype,
    list_prototypes,
    merge_prototypes,
    register_prototype,
    unregister_prototype,
)
from find_plugin.core.variables import (
    VariableRows,
    list_input_kinds,
    register_input_kind,
    unregister_input_kind,
)


def test_core_prototypes_builtins_registered():
    for name in (
        "seg",
        "class",
        "grounding",
        "spatial",
        "retrieval",
        "interleave",
        "interleave_retrieval",
    ):
        assert name in list_prototypes()
    with pytest.raises(KeyError, match="already registered"):
        register_prototype(get_prototype("seg"))
    with pytest.raises(ValueError, match="mode"):
        CrossRule(("image",), "indexed")


def test_core_prototypes_toy_task_runs_without_interface_edit(tiny, tiny_model):
    toy = TaskPrototype(
        "toy_counting",
        (
            VariableSpec(
                "queries_toy",
                "query",
                "copy:queries_vision_image",
                "one",
                CrossRule(("tokens_toy",), "padding"),
                ("queries_toy",),
                (("pred_toy", "semantic"), ("pred_toy_pixel", "pixel")),
            ),
            VariableSpec("tokens_toy", "token", "tokens", "input", None, ("tokens_toy",)),
        ),
    )
    register_prototype(toy)
    try:
        feats, mf, _ = tiny.inputs(bsz=2)
        tokens = torch.randn(2, 4, tiny.config["hidden_dim"])
        with torch.no_grad():
            out = tiny_model(feats, mf, {"toy_counting": {"tokens": tokens}})
            out2 = tiny_model(feats, mf, {"toy_counting": {"tokens": tokens + 1}})
        assert out["pred_toy"].shape == (2, 1, tiny.config["dim_proj"])
        assert len(out["aux_outputs"]) == tiny.config["num_layers"]
        assert not torch.equal(out["pred_toy"], out2["pred_toy"])  # it reads its tokens
        assert torch.equal(out["pred_masks"], out2["pred_masks"])  # and nothing else changes
    finally:
        unregister_prototype("toy_counting")


def test_core_prototypes_conflicting_declaration():
    bad = TaskPrototype(
        "bad",
        (
            VariableSpec(
                "proposals_vision_object",
                "proposal",
                "object_proposals",
                "proposals",
                CrossRule(("image",), "global"),
                (),
            ),
        ),
    )
    register_prototype(bad)
    try:
        with pytest.raises(ValueError, match="declared differently"):
            merge_prototypes(["bad"])
    finally:
        unregister_prototype("bad")


def _layout(specs, counts, index=None, padding=None):
    slices, start = {}, 0
    for s in specs:
        slices[s.name] = (start, start + counts.get(s.name, 1))
        start += counts.get(s.name, 1)
    pad = torch.zeros(1, start, dtype=torch.bool) if padding is None else padding
    idx = torch.full((1, start), -1, dtype=torch.long) if index is None else index
    has = {s.name: True for s in specs}
    return am.SequenceLayout(specs, slices, pad, idx, has)


def test_core_prototypes_attention_tables():
    specs = merge_prototypes(["grounding", "spatial", "retrieval"])
    counts = {
        "proposals_vision_object": 2,
        "proposals_vision_grounding": 2,
        "queries_language_description": 2,
        "tokens_language_description": 3,
        "proposals_vision_segment": 2,
        "queries_vision_spatial": 2,
        "tokens_vision_spatial": 4,
        "memories_vision_spatial": 2,
        "tokens_language_caption": 2,
    }
    lay = _layout(specs, counts)
    n = lay.length
    index = torch.full((1, n), -1, dtype=torch.long)
    for name, ids in (
        ("queries_language_description", [0, 1]),
        ("tokens_language_description", [0, 0, 1]),
        ("queries_vision_spatial", [0, 1]),
        ("tokens_vision_spatial", [1, 0, 1, 1]),
    ):
        index[0, slice(*lay.slices[name])] = torch.tensor(ids)
    padding = torch.zeros(1, n, dtype=torch.bool)
    padding[0, lay.slices["tokens_language_caption"][1] - 1] = True
    lay = _layout(specs, counts, index, padding)
    sa = am.self_attention_allowed(lay)[0]
    ca = am.token_cross_allowed(lay)[0]

    def blk(m, r, c):
        return m[slice(*lay.slices[r]), slice(*lay.slices[c])]

    # condition attention (§1.4 table)
    assert blk(sa, "proposals_vision_object", "proposals_vision_object").all()
    assert not blk(sa, "proposals_vision_object", "proposals_vision_grounding").any()
    assert blk(sa, "proposals_vision_grounding", "tokens_language_description").all()
    assert blk(sa, "tokens_language_description", "proposals_vision_grounding").all()  # bidir.
    assert blk(sa, "proposals_vision_segment", "tokens_vision_spatial").all()
    assert blk(sa, "proposals_vision_segment", "memories_vision_spatial").all()
    assert not blk(sa, "memories_vision_spatial", "proposals_vision_segment").any()
    assert not blk(sa, "queries_vision_image", "queries_language_caption").any()
    cap = blk(sa, "tokens_language_caption", "tokens_language_caption")
    assert cap.tolist() == [[True, False], [False, False]]  # padding blocked both ways
    # content attention: indexed description / spatial queries, padding for caption
    assert blk(ca, "queries_language_description", "tokens_language_description").tolist() == [
        [True, True, False],
        [False, False, True],
    ]
    assert blk(ca, "queries_vision_spatial", "tokens_vision_spatial").tolist() == [
        [False, True, False, False],
        [True, False, True, True],
    ]
    assert blk(ca, "queries_language_caption", "tokens_language_caption").tolist() == [
        [True, False]
    ]
    assert not blk(ca, "queries_language_caption", "tokens_language_description").any()
    # training swap (DYNAMICS): segment proposals attend spatial queries instead of tokens
    swapped = am.self_attention_allowed(
        lay, {"proposals_vision_segment": {"tokens_vision_spatial": "queries_vision_spatial"}}
    )[0]
    assert blk(swapped, "proposals_vision_segment", "queries_vision_spatial").all()
    assert not blk(swapped, "proposals_vision_segment", "tokens_vision_spatial").any()
    # image part: prev-mask rows keep their mask, fully blocked rows become fully open
    modes = am.image_modes(lay)
    rows = torch.arange(*lay.slices["proposals_vision_object"])
    blocked = torch.tensor([[[True, False, True], [True, True, True]]])
    img = am.image_allowed(modes, 3, batch=1, mask_rows=rows, mask_blocked=blocked)[0]
    assert img[rows].tolist() == [[False, True, False], [True, True, True]]
    assert img[lay.slices["queries_vision_image"][0]].all()
    assert not img[lay.slices["queries_language_caption"][0]].any()


def _scaled_rows(interface, spec, inputs, ctx):
    """Toy input kind: rows = values * scale, padded after ``lengths[b]`` rows."""
    values = inputs["values"]  # [B, n, C]
    n = values.shape[1]
    padding = torch.arange(n)[None, :] >= inputs["lengths"][:, None]
    assert ctx.batch_size == values.shape[0] and len(ctx.level_features) == interface.num_levels
    content = values * inputs.get("scale", 1.0)
    return VariableRows(content, torch.zeros_like(content), padding=padding)


def test_core_prototypes_new_input_kind_from_outside(tiny, tiny_model):
    """A test file registers a NEW input kind and a task using it; forward runs it unedited."""
    register_input_kind("toy_scaled_rows", _scaled_rows)
    toy = TaskPrototype(
        "toy_scaled",
        (
            VariableSpec(
                "queries_toy_scaled",
                "query",
                "copy:queries_vision_image",
                "one",
                CrossRule(("tokens_toy_scaled",), "padding"),
                ("queries_toy_scaled",),
                (("pred_toy_scaled", "semantic"),),
            ),
            VariableSpec(
                "tokens_toy_scaled",
                "token",
                "toy_scaled_rows",
                "input",
                None,
                ("tokens_toy_scaled",),
            ),
        ),
    )
    register_prototype(toy)
    try:
        feats, mf, _ = tiny.inputs(bsz=2)
        values = torch.randn(2, 5, tiny.config["hidden_dim"])
        inp = {"values": values, "lengths": torch.tensor([5, 3]), "scale": 2.0}
        padded_changed = values.clone()
        padded_changed[1, 3:] += 1.0  # rows after lengths[1] are padding
        with torch.no_grad():
            out = tiny_model(feats, mf, {"toy_scaled": inp})
            same = tiny_model(feats, mf, {"toy_scaled": dict(inp, values=padded_changed)})
            scaled = tiny_model(feats, mf, {"toy_scaled": dict(inp, scale=3.0)})
        assert out["pred_toy_scaled"].shape == (2, 1, tiny.config["dim_proj"])
        assert len(out["aux_outputs"]) == tiny.config["num_layers"]
        assert "pred_toy_scaled" in out["aux_outputs"][0]
        torch.testing.assert_close(same["pred_toy_scaled"], out["pred_toy_scaled"])  # padding
        assert not torch.allclose(scaled["pred_toy_scaled"], out["pred_toy_scaled"])  # reads it
        assert torch.equal(scaled["pred_masks"], out["pred_masks"])  # isolated from 'seg'
    finally:
        unregister_prototype("toy_scaled")
        unregister_input_kind("toy_scaled_rows")
    assert "toy_scaled_rows" not in list_input_kinds()


def test_core_prototypes_unknown_input_kind_is_a_clear_error():
    with pytest.raises(ValueError, match=r"queries_x: unknown input kind 'no_such_kind'.*tokens"):
        VariableSpec("queries_x", "query", "no_such_kind", "one")
    with pytest.raises(ValueError, match="copy:<variable>"):
        VariableSpec("queries_x", "query", "copy", "one")
    with pytest.raises(KeyError, match="already registered"):
        register_input_kind("tokens", _scaled_rows)


def test_core_prototypes_indexed_attention_no_item_matches_nothing():
    """Indexed attention: a real row or key of no item (NO_ITEM, or the official -4 of a text
    token of the legend) is never matched, not even by another NO_ITEM."""
    specs = merge_prototypes(["spatial"])
    counts = {"proposals_vision_object": 1, "queries_vision_spatial": 2, "tokens_vision_spatial": 3}
    lay = _layout(specs, counts)
    index = torch.full((1, lay.length), -1, dtype=torch.long)
    index[0, slice(*lay.slices["queries_vision_spatial"])] = torch.tensor([-4, 0])
    index[0, slice(*lay.slices["tokens_vision_spatial"])] = torch.tensor([-4, 0, -1])
    ca = am.token_cross_allowed(_layout(specs, counts, index))[0]
    block = ca[
        slice(*lay.slices["queries_vision_spatial"]), slice(*lay.slices["tokens_vision_spatial"])
    ]
    assert block.tolist() == [[False, False, False], [False, True, False]]
