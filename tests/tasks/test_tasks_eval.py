"""Evaluation paths of the task layer: picks, predictions at the output size, metrics, text-only
passes, the click rounds of interactive segmentation."""

import pathlib

import pytest
import torch

from find_plugin.tasks import build_task, prepare_batch
from tests._util import load_module

L = load_module("_tasks_layer", pathlib.Path(__file__).with_name("test_tasks_layer.py"))
T = L.T

SIZES = dict(padded_size=T.PADDED, image_size=T.IMG, output_size=(96, 128))


def run(model, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(2, 32, 64 // s, 64 // s, generator=g) for s in (32, 16, 8)]
    mask_features = torch.randn(2, 32, 16, 16, generator=g)
    bank = torch.randn(len(T.CLASSES) + 1, 32, generator=g)
    return model(feats, mask_features, batch.inputs, class_bank=bank)


@pytest.fixture(scope="module")
def model():
    return L.tiny_interface().eval()


def eval_batch(records, model, names, seed=0, **options):
    tasks = [build_task(n, **options.get(n, {})) for n in names]
    batch = prepare_batch(
        tasks,
        records,
        generator=torch.Generator().manual_seed(seed),
        encode_text=T.word_encoder,
        project=model.project_tokens,
        padded_size=T.PADDED,
        training=False,
    )
    return tasks, batch


def test_eval_samples_use_every_sentence_and_the_first_entity_sentence(records, model):
    _, batch = eval_batch(records, model, ["grounding", "interleave"])
    for s in batch.samples["grounding"]:
        assert [p.text for p in s["phrases"]] == ["the person on the left", "the animals"]
        # eval GT of a sentence = union of its masks
        assert s["masks"].shape[0] == 2 and s["masks"][1].sum() > s["masks"][0].sum()
    assert batch.targets == [{}, {}]  # no targets in evaluation


def test_predictions_and_metrics_at_output_size(records, model):
    (grounding, interleave, interactive), batch = eval_batch(
        records, model, ["grounding", "interleave", "interactive"]
    )
    with torch.no_grad():
        out = run(model, batch)
    g_metric, i_metric = grounding.metric(), interleave.metric()
    for b in range(2):
        logits = grounding.predict(out, b, logit_scale=model.logit_scale, **SIZES)
        assert logits.shape == (2, 96, 128)
        gt = torch.nn.functional.interpolate(
            batch.samples["grounding"][b]["masks"][None].float(), size=(96, 128)
        )[0]
        g_metric.update(logits, gt)
        s = batch.samples["interleave"][b]
        ent = interleave.predict(out, b, s, **SIZES)
        official = interleave.predict(out, b, s, official=True, **SIZES)
        assert ent.shape == official.shape == (2, 96, 128)
        i_metric.update(
            ent, torch.nn.functional.interpolate(s["masks"][None].float(), (96, 128))[0]
        )
        masks = interactive.predict(out, b, **SIZES)
        assert masks.dtype == torch.bool and masks.shape == (3, 96, 128)
    for result in (g_metric.compute(), i_metric.compute()):
        assert set(result) >= {"cIoU", "mIoU", "precision@0.5"}
        assert 0 <= result["mIoU"] <= 100


def test_interactive_eval_first_click_and_correction_rounds(records, model):
    (task,), batch = eval_batch(records, model, ["interactive"])
    for s in batch.samples["interactive"]:
        for pos, gt in zip(s["pos"], s["masks"]):
            assert int(pos.sum()) == 9 and not (pos & ~gt).any()  # one 3x3 click inside
    with torch.no_grad():
        out = run(model, batch)
    nxt = task.add_corrections(batch.samples["interactive"], out)
    for before, after in zip(batch.samples["interactive"], nxt):
        added = (after["pos"] | after["neg"]).sum() - (before["pos"] | before["neg"]).sum()
        assert added > 0  # one more click per prompt that is not solved yet
        assert after["prev_mask"].shape == (1, 16, 16)
    packed = task.pack_inputs(nxt, project=model.project_tokens, padded_size=T.PADDED)
    with torch.no_grad():
        second = model(
            [torch.randn(2, 32, 64 // s, 64 // s) for s in (32, 16, 8)],
            torch.randn(2, 32, 16, 16),
            packed,
        )
    assert second["pred_smasks"].shape[1] == 6  # proposals of the second round

    gt = batch.samples["interactive"][0]["masks"]
    calls = []

    def predict_fn(pos, neg):
        calls.append(int(pos.sum() + neg.sum()))
        return gt.clone() if len(calls) > 1 else torch.zeros_like(gt)

    ious = task.click_ious(predict_fn, gt, max_clicks=3)
    assert ious.shape == (3, 3)
    assert ious[:, 0].tolist() == [0.0, 0.0, 0.0] and ious[:, 1:].eq(1).all()
    assert calls[1] > calls[0]  # the second round saw the corrective clicks
    metric = task.metric(max_clicks=3)
    metric.update(ious)
    assert metric.compute()["noc@0.9"] == pytest.approx(2.0)


def test_text_only_passes_do_not_depend_on_batching(records, model):
    retrieval = build_task("retrieval")
    caps = T.word_encoder(["a dog", "a person with a dog", "sky"], "sentence")
    emb = retrieval.encode_captions(model, caps)
    assert emb.shape == (3, 32)
    one = retrieval.encode_captions(model, caps[1:2])
    torch.testing.assert_close(emb[1:2], one, atol=1e-5, rtol=1e-5)
    il = build_task("interleave_retrieval", first_sentence_only=False)
    sent = il.encode_sentences(model, caps)
    assert sent.shape == (3, 32) and not torch.allclose(sent, emb)
    generic = build_task("generic", class_names=T.CLASSES)
    bank = generic.class_bank(model, T.word_encoder)
    assert bank.shape == (len(T.CLASSES) + 1, 32)


def test_interleave_retrieval_official_duplicates_the_first_sentence(records, model):
    rec = dict(records[0])
    rec["entities"] = rec["entities"] + [{"sentence": "another sentence", "phrases": []}]
    official = build_task("interleave_retrieval").sample(
        rec, generator=torch.Generator(), encode_text=T.word_encoder, training=False
    )
    every = build_task("interleave_retrieval", first_sentence_only=False).sample(
        rec, generator=torch.Generator(), encode_text=T.word_encoder, training=False
    )
    assert [s.text for s in official["sentences"]] == [rec["entities"][0]["sentence"]] * 2
    assert [s.text for s in every["sentences"]] == [e["sentence"] for e in rec["entities"]]


def test_generic_predict_gives_framework_outputs(records, model):
    (task,), batch = eval_batch(records, model, ["generic"], generic={"class_names": T.CLASSES})
    with torch.no_grad():
        out = run(model, batch)
    res = task.predict(out, 0, is_thing=[True, True, False], object_mask_threshold=0.0, **SIZES)
    assert res["sem_seg"].shape == (3, 96, 128)
    seg, info = res["panoptic_seg"]
    assert seg.shape == (96, 128) and all(i["category_id"] in (0, 1, 2) for i in info)
    assert res["instances"]["pred_masks"].shape[1:] == (96, 128)
    with pytest.raises(ValueError, match="is_thing"):
        task.predict(out, 0, **SIZES)
