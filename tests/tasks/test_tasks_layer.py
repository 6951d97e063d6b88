"""The task layer: records -> interface inputs and criterion targets -> losses, for every task."""

import pathlib

import pytest
import torch

from find_plugin.core.conventions import NO_ITEM
from find_plugin.core.criterion import FINDCriterion
from find_plugin.core.interface import FINDInterface
from find_plugin.tasks import build_task, criterion_loss_groups, list_tasks, prepare_batch
from find_plugin.tasks.interleave import interleave_sentence
from tests._util import load_module

T = load_module("_tasks_conftest", pathlib.Path(__file__).with_name("conftest.py"))

TRAIN_TASKS = ("generic", "grounding", "interactive", "retrieval", "interleave")


def tiny_interface():
    torch.manual_seed(0)
    return FINDInterface(
        hidden_dim=32,
        num_heads=4,
        dim_feedforward=64,
        num_layers=2,
        num_queries=6,
        mask_dim=32,
        dim_proj=32,
        dim_text=T.DIM_TEXT,
        num_memories=4,
        max_spatial_points=30,
    )


def make_tasks():
    return [
        build_task("generic", class_names=T.CLASSES),
        build_task("grounding", class_names=T.CLASSES),
        build_task("interactive"),
        build_task("retrieval"),
        build_task("interleave"),
    ]


def prepare(records, model, seed=0, training=True, tasks=None):
    return prepare_batch(
        tasks or make_tasks(),
        records,
        generator=torch.Generator().manual_seed(seed),
        encode_text=T.word_encoder,
        project=model.project_tokens,
        padded_size=T.PADDED,
        training=training,
    )


def test_builtin_tasks_are_registered():
    assert set(TRAIN_TASKS) | {"interleave_retrieval"} <= set(list_tasks())
    with pytest.raises(KeyError, match="unknown FIND task 'nope'"):
        build_task("nope")


def test_training_batch_runs_every_task_and_every_loss(records):
    model = tiny_interface().train()
    tasks = make_tasks()
    batch = prepare(records, model, tasks=tasks)
    assert set(batch.inputs) == {"class", "grounding", "spatial", "retrieval", "interleave"}
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, 32, 64 // s, 64 // s, generator=g) for s in (32, 16, 8)]
    mask_features = torch.randn(2, 32, 16, 16, generator=g)
    bank = torch.randn(len(T.CLASSES) + 1, 32)
    out = model(feats, mask_features, batch.inputs, class_bank=bank, generator=g)
    crit = FINDCriterion(
        num_classes=len(T.CLASSES), losses=criterion_loss_groups(tasks), num_points=50
    )
    losses = crit(out, batch.targets, logit_scale=model.logit_scale)
    groups = {"mask", "grounding", "spatial", "interleave", "retrieval"}
    assert {k.split("_")[1] for k in losses} == groups
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.lang_proj.grad.abs().sum() > 0


def test_grounding_packing_deduplicates_phrases_and_indexes_queries(records):
    model = tiny_interface()
    batch = prepare(records, model, seed=3, tasks=[build_task("grounding")])
    for b, s in enumerate(batch.samples["grounding"]):
        n_phr = len(s["phrases"])
        texts = [p.text for p in s["phrases"]]
        assert len(set(texts)) == n_phr  # deduplicated
        inputs = batch.inputs["grounding"]
        n_tok = sum(p.features.shape[0] for p in s["phrases"])
        expect_index = sum(([k] * p.features.shape[0] for k, p in enumerate(s["phrases"])), [])
        assert inputs["token_index"][b, :n_tok].tolist() == expect_index
        assert inputs["token_padding"][b, :n_tok].logical_not().all()
        assert inputs["token_padding"][b, n_tok:].all()
        q = inputs["query_index"][b]
        real = q[q != NO_ITEM].tolist()
        assert real == s["query_phrase"] and len(real) == len(s["masks"])
        # "the animals" names two masks: two queries share its phrase id
        if "the animals" in texts:
            assert real.count(texts.index("the animals")) == 2
        tgt = batch.targets[b]
        assert tgt["grounding_masks"].shape[-2:] == T.PADDED
        assert tgt["grounding_hash"].tolist() == s["query_phrase"]


def test_grounding_falls_back_to_class_prompts_without_sentences(records):
    for r in records:
        r["groundings"] = []
    batch = prepare(
        records, tiny_interface(), tasks=[build_task("grounding", class_names=T.CLASSES)]
    )
    for s in batch.samples["grounding"]:
        assert s["mode"] == "class"
        assert all(any(c in p.text for c in ("person", "dog", "sky")) for p in s["phrases"])
        assert not any("-other" in p.text or "-stuff" in p.text for p in s["phrases"])


def test_interleave_sentence_rewrites_visual_phrases():
    sentence = "a person stands next to a dog"
    phrases = [{"start": 0, "end": 8}, {"start": 24, "end": 29}]
    text, spans = interleave_sentence(sentence, phrases, [False, True])
    assert text == "a person stands next to [INTERACTIVE]"
    assert [text[s:e] for s, e in spans] == ["a person", "[INTERACTIVE]"]
    with pytest.raises(ValueError, match="sorted and disjoint"):
        interleave_sentence(sentence, phrases[::-1], [False, False])


def test_interleave_packing_maps_tokens_to_entities(records):
    model = tiny_interface()
    batch = prepare(records, model, seed=5, tasks=[build_task("interleave")])
    inputs = batch.inputs["interleave"]
    for b, s in enumerate(batch.samples["interleave"]):
        feats = s["tokens"]
        words = {i: feats.text[o[0] : o[1]] for i, o in enumerate(feats.offsets.tolist())}
        ent = inputs["token_entity"][b]
        # phrases are sorted by start: entity 0 = "a person" (or its slot), entity 1 = "a dog"
        for i, w in words.items():
            e = int(ent[i])
            if e == 0:
                assert w in ("a", "person", "[INTERACTIVE]")
            elif e == 1:
                assert w in ("a", "dog", "[INTERACTIVE]")
        vis = inputs["entity_is_visual"][b, :2]
        assert vis.tolist() == s["is_visual"].tolist()
        prompts = inputs["pos_masks"][b]
        for k in range(2):
            has_prompt = bool(prompts[k].any())
            assert has_prompt == bool(vis[k])
            if has_prompt:  # prompts are drawn inside the entity's mask
                assert not (prompts[k][: T.IMG[0], : T.IMG[1]] & ~s["masks"][k]).any()


def test_interactive_prompts_lie_in_their_masks(records):
    batch = prepare(records, tiny_interface(), seed=2, tasks=[build_task("interactive")])
    for b, s in enumerate(batch.samples["interactive"]):
        assert 1 <= len(s["pos"]) <= 3
        for pos, gt in zip(s["pos"], s["masks"]):
            assert pos.any() and not (pos & ~gt).any()
        assert batch.targets[b]["spatial_masks"].shape == (len(s["pos"]), *T.PADDED)


def test_same_seed_same_batch_other_seed_differs(records):
    model = tiny_interface()
    a, b, c = (prepare(records, model, seed=s) for s in (7, 7, 8))

    def fingerprint(batch):
        return [
            batch.inputs["class"]["class_indexes"].tolist(),
            [x.sum().item() for x in batch.inputs["spatial"]["pos_masks"]],
            batch.inputs["interleave"]["entity_is_visual"].tolist(),
            batch.inputs["grounding"]["query_index"].tolist(),
        ]

    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(c)


def test_two_tasks_feeding_one_prototype_raise(records):
    with pytest.raises(ValueError, match="both give inputs to prototype 'grounding'"):
        prepare(records, tiny_interface(), tasks=[build_task("grounding"), _SecondGrounding()])


class _SecondGrounding(type(build_task("grounding"))):
    name = "grounding_again"
