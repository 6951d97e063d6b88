"""Interleave retrieval with visual references, framework-free: the score with the entity term
(hand-computed), the recalls, cross-image prompt tokens and the task's sample."""

import math
import pathlib

import pytest
import torch

from find_plugin.core.sampler import sample_prompts
from find_plugin.tasks import build_task
from find_plugin.tasks.interleave_metrics import (
    InterleaveRetrievalMetric,
    interleave_retrieval_scores,
)
from find_plugin.tasks.interleave_retrieval_visual import reference_entities
from tests._util import load_module

L = load_module("_tasks_layer_ivis", pathlib.Path(__file__).with_name("test_tasks_layer.py"))
T = L.T


def test_score_is_cosine_plus_half_the_mean_best_entity_match_minus_reference_penalty():
    s = 1 / math.sqrt(2)
    queries = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # normalised inside
    images = torch.tensor([[1.0, 1.0], [0.0, 5.0]])
    objects = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [1.0, 1.0]]])
    # query 0: a visual entity referencing image 11 and a text entity; query 1: no entity
    entities = torch.tensor([[1.0, 0.0], [0.0, -2.0]])
    args = (queries, entities, torch.tensor([0, 0]))
    gallery = (images, objects, torch.tensor([10, 11]))
    scores = interleave_retrieval_scores(*args, torch.tensor([11, -1]), *gallery)
    # q0 vs image 10: cos = s; entity 0 best = 1 (object [1, 0]); entity 1 best = 0
    # q0 vs image 11: cos = 0; entity 0 best = s ([1, 1]); entity 1 best = 0 ([-1, 0]);
    #   entity 0 references image 11 -> -1e-6
    # q1: cos only (no entity: entity term 0)
    expect = torch.tensor([[s + 0.5 * (1 + 0) / 2, 0 - 1e-6 + 0.5 * (s + 0) / 2], [s, 1.0]])
    assert torch.allclose(scores, expect, atol=1e-7)
    no_ref = interleave_retrieval_scores(*args, torch.tensor([-1, -1]), *gallery)
    assert (no_ref - scores)[0, 1].item() == pytest.approx(1e-6, rel=0.05)
    assert torch.equal(no_ref[0, 0], scores[0, 0]) and torch.equal(no_ref[1], scores[1])


def _gallery(n=12, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, d, generator=g)
    objects = torch.randn(n, 3, d, generator=g)
    return images, objects


def test_recalls_rank_own_image_and_own_query():
    images, objects = torch.eye(12, 16), _gallery()[1]  # orthogonal image embeddings
    m = InterleaveRetrievalMetric()
    for j in range(12):
        m.update_image(100 + j, images[j], objects[j])
    # queries 0..9 point at their own image, queries 10 and 11 at image 0
    for j in range(12):
        m.update_query(100 + j, images[j if j < 10 else 0] * 3, torch.zeros(0, 16), [])
    r = m.compute()
    # queries 10, 11: image 0 first, then the ties in gallery order (images 1..9): never their own
    assert {k: r[k] for k in ("ir1", "ir5", "ir10")} == {k: 83.333 for k in ("ir1", "ir5", "ir10")}
    # images 0..9: their own query first (image 0 ties with queries 10, 11: the lower position
    # wins); images 10, 11: every query scores 0, the ties go to queries 0..9
    assert {k: r[k] for k in ("tr1", "tr5", "tr10")} == {k: 83.333 for k in ("tr1", "tr5", "tr10")}


def test_entity_term_and_merge_of_rank_states():
    images, objects = _gallery()
    queries = torch.randn(12, 16, generator=torch.Generator().manual_seed(7))  # uninformative
    full = InterleaveRetrievalMetric()
    parts = [InterleaveRetrievalMetric(), InterleaveRetrievalMetric()]
    for j in range(12):
        ent = objects[j, :1] * 10  # one entity matching an object of the own image exactly
        for m in (full, parts[j % 2]):
            m.update_image(j, images[j], objects[j])
            m.update_query(j, queries[j], ent, torch.tensor([-1]))
    merged = InterleaveRetrievalMetric.from_states([p.state() for p in parts])
    assert merged.compute() == full.compute()
    without = InterleaveRetrievalMetric()
    for j in range(12):
        without.update_image(j, images[j], objects[j])
        without.update_query(j, queries[j], torch.zeros(0, 16), torch.zeros(0))
    assert full.compute()["ir1"] > without.compute()["ir1"]


def test_compute_needs_ten_images():
    images, objects = _gallery(n=4)
    m = InterleaveRetrievalMetric()
    for j in range(4):
        m.update_image(j, images[j], objects[j])
        m.update_query(j, images[j], torch.zeros(0, 16), torch.zeros(0))
    with pytest.raises(ValueError, match="at least 10 images"):
        m.compute()


@pytest.fixture(scope="module")
def model():
    return L.tiny_interface().eval()


def _features(seed, b=1):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(b, 32, 64 // s, 64 // s, generator=g) for s in (32, 16, 8)]
    return feats, torch.randn(b, 32, 16, 16, generator=g)


def test_cross_image_prompt_tokens_give_the_legend_of_a_pass_on_the_reference(model):
    """The legend of a sentence whose visual entity is prompted on image A is the same whether
    the pass runs on A (sampling there) or anywhere else with A's sampled tokens."""
    feats, mf = _features(1)
    sentence = T.word_encoder(["a [INTERACTIVE] under the sky"], "sentence")[0]
    entity = torch.tensor([-1, -1, 0, -1, -1, 1])
    mask = T.box(10, 40, 8, 30, size=(64, 64))
    points = sample_prompts(
        [mask[None]], None, num_levels=3, max_points=30, generator=torch.Generator().manual_seed(0)
    )
    common = {
        "tokens": model.project_tokens(sentence.features)[None],
        "token_entity": entity[None],
        "entity_is_visual": torch.tensor([[True, False]]),
    }
    on_a = model(feats, mf, {"interleave_retrieval": dict(common, points=points)})
    levels = model.feature_levels(feats, mf)
    sampled = model.sampler(levels.maps, points)
    given = [
        [
            {"tokens": s["tokens"][0][~s["padding"][0]], "index": s["index"][0][~s["padding"][0]]}
            for s in sampled
        ]
    ]
    other_feats, other_mf = _features(2)
    elsewhere = model(
        other_feats, other_mf, {"interleave_retrieval": dict(common, prompt_tokens=given)}
    )
    a, b = on_a["pred_interleave_image"], elsewhere["pred_interleave_image"]
    assert torch.allclose(a, b, atol=1e-5)
    # and the tokens matter: another prompt changes the legend
    moved = [[{"tokens": x["tokens"].flip(0) * 2, "index": x["index"]} for x in given[0]]]
    changed = model(
        other_feats, other_mf, {"interleave_retrieval": dict(common, prompt_tokens=moved)}
    )
    assert not torch.allclose(a, changed["pred_interleave_image"], atol=1e-4)
    wrong = [[{"tokens": x["tokens"][:, :8], "index": x["index"]} for x in given[0]]]
    with pytest.raises(ValueError, match=r"prompt_tokens\[0\]\[0\] must hold 'tokens' \[P, 32\]"):
        model(other_feats, other_mf, {"interleave_retrieval": dict(common, prompt_tokens=wrong)})


def test_reference_entities_rows_are_independent(model):
    feats, mf = _features(3)
    # fewer pixels than max_spatial_points (30): every pixel is a point, nothing is drawn
    masks = torch.stack([T.box(0, 5, 0, 5, (64, 64)), T.box(40, 45, 30, 35, (64, 64))])
    tokens = T.word_encoder(["[INTERACTIVE]"], "sentence")[0].features[1:]
    both, prompts = reference_entities(
        model, feats, mf, masks, tokens, generator=torch.Generator().manual_seed(0)
    )
    one, _ = reference_entities(
        model, feats, mf, masks[1:], tokens, generator=torch.Generator().manual_seed(0)
    )
    assert both.shape == (2, 32) and len(prompts) == 2 and len(prompts[0]) == 3
    assert torch.allclose(both[1], one[0], atol=1e-5)
    assert not torch.allclose(both[0], both[1], atol=1e-4)


def _record(with_reference=(True, False)):
    rec = T.make_record(0)
    for p, has in zip(rec["entities"][0]["phrases"], with_reference):
        if has:
            p["reference"] = {
                "image": torch.zeros(3, 48, 64, dtype=torch.uint8),
                "mask": T.box(5, 20, 5, 20),
                "image_id": 42,
            }
    return rec


def test_sample_makes_only_referenced_phrases_visual_from_the_generator():
    task = build_task("interleave_retrieval_visual", visual_prob=0.5)

    def split(seed, rec):
        g = torch.Generator().manual_seed(seed)
        s = task.sample(rec, generator=g, encode_text=T.word_encoder, training=False)
        return s["is_visual"].tolist(), s

    # phrases sorted by start: "a person" (no reference), "a dog" (reference)
    seen = {tuple(split(seed, _record())[0]) for seed in range(12)}
    assert seen == {(False, False), (False, True)}
    assert split(3, _record())[0] == split(3, _record())[0]
    visual, s = next(split(k, _record()) for k in range(12) if split(k, _record())[0][1])
    assert "[INTERACTIVE]" in s["tokens"].text and s["references"][0] is None
    assert s["references"][1]["image_id"] == 42
    with pytest.raises(ValueError, match="evaluation task"):
        task.sample(
            _record(), generator=torch.Generator(), encode_text=T.word_encoder, training=True
        )


def test_check_interleave_outputs_names_the_image_and_the_shapes():
    from find_plugin.tasks.interleave_metrics import check_interleave_outputs

    d = torch.zeros(8)
    check_interleave_outputs(d, d, torch.zeros(2, 8), "img 1")  # well-formed
    check_interleave_outputs(d, d, torch.zeros(0, 8), "img 1")  # no entity
    for query, ents in ((torch.zeros(4), torch.zeros(2, 8)), (d, torch.zeros(2, 4)), (d, d)):
        with pytest.raises(ValueError, match=r"img 7: .*expected \[D\], \[D\], \[E, D\]"):
            check_interleave_outputs(d, query, ents, "img 7")
