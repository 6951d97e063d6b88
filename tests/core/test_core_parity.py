"""Numerical parity of FINDInterface with the official FIND interface (parity_small fixture).

The official state dict is loaded through the checkpoint converter (the one code path of
``find_plugin.checkpoint.convert_official_state_dict``, whose interface part is the key table of
``core.official_keys``) and every recorded interface call is replayed through our API (adapter
``official_extra_to_tasks`` below); every output, top level and aux, must match to 1e-4.
"""

import pytest
import torch

ATOL = 1e-4


@pytest.fixture(scope="module")
def official_model(official_interface):
    return official_interface


def _points_from_trace(calls):
    """rand_sample trace calls for one visual-prompt variable (batch 1): per level pos, neg."""
    levels = []
    for lvl in range(3):
        pos, neg = calls[2 * lvl]["points"], calls[2 * lvl + 1]["points"]
        pts = torch.cat([pos, neg], dim=1)
        levels.append(
            [
                {
                    "index": pts[0].round().long(),
                    "coords": pts[1:].t().float(),
                    "positive": torch.cat(
                        [
                            torch.ones(pos.shape[1], dtype=torch.bool),
                            torch.zeros(neg.shape[1], dtype=torch.bool),
                        ]
                    ),
                }
            ]
        )
    return levels


def official_extra_to_tasks(extra, task, trace=None):
    """Adapter: the official ``extra`` dict (+ rand_sample trace) -> our ``tasks`` dict."""
    tasks = {}
    calls = list((trace or {}).get("rand_sample", []))
    if "class_tokens_emb" in extra and task in ("class", "seg"):
        tasks["class"] = {
            "tokens": extra["class_tokens_emb"].transpose(0, 1),
            "token_padding": extra["class_tokens_mask"],
        }
    if task == "class":
        return tasks
    if "spatial_query_pos_mask" in extra:
        t = {
            "points": _points_from_trace(calls[:6]),
            "query_index": extra["spatial_query_indices"].t(),
        }
        calls = calls[6:]
        if "prev_mask" in extra:
            t["prev_mask"] = extra["prev_mask"]
        tasks["spatial"] = t
    if "grounding_tokens" in extra:
        tasks["grounding"] = {
            "tokens": extra["grounding_tokens"].transpose(0, 1),
            "token_padding": extra["grounding_nonzero_mask"],
            "token_index": extra["grounding_token_indices"].t(),
            "query_index": extra["grounding_query_indices"].t(),
        }
    if "retrieval_tokens" in extra:
        tasks["retrieval"] = {
            "tokens": extra["retrieval_tokens"].transpose(0, 1),
            "token_padding": extra["retrieval_nonzero_mask"],
        }
    if "interleave_tokens" in extra:
        tasks["interleave"] = {
            "tokens": extra["interleave_tokens"].transpose(0, 1),
            "token_padding": extra["interleave_nonzero_mask"],
            "token_entity": extra["interleave_entity_indices"].t().round().long(),
            "entity_is_visual": extra["interleave_isvisual"].t() > 0.5,
            "query_index": extra["interleave_query_indices"].t(),
            "points": _points_from_trace(calls[:6]),
        }
    return tasks


def _features(parity_load, call):
    pd = parity_load("pixel_decoder.pt")
    desc = call["features"]
    if "zero" in desc:
        shapes = [(1, 128, 20, 20), (1, 128, 40, 40), (1, 128, 80, 80)]
        return [torch.zeros(s) for s in shapes], torch.zeros(1, 128, 160, 160)
    feats, mf = pd["multi_scale_features"], pd["mask_features"]
    if "repeated" in desc:
        n = call["extra"]["retrieval_tokens"].shape[1]
        feats = [f.expand(n, -1, -1, -1) for f in feats]
        mf = mf.expand(n, -1, -1, -1)
    return feats, mf


def _run(model, parity_load, file, idx=0):
    data = parity_load(file)
    call = data["predictor_calls"][idx]
    feats, mf = _features(parity_load, call)
    tasks = official_extra_to_tasks(call["extra"], call["task"], call.get("trace"))
    with torch.no_grad():
        out = model(feats, mf, tasks, class_bank=data["default_text_embeddings"])
    return data, call, out


def _compare(ref, out, where):
    assert set(ref) - {"aux_outputs"} <= set(out), f"{where}: missing {set(ref) - set(out)}"
    worst = 0.0
    for k, v in ref.items():
        if k == "aux_outputs":
            continue
        assert out[k].shape == v.shape, f"{where}.{k}: {tuple(out[k].shape)} vs {tuple(v.shape)}"
        err = (out[k] - v).abs().max().item()
        worst = max(worst, err)
        assert err < ATOL, f"{where}.{k}: max abs err {err:.3g}"
    return worst


def _compare_all(ref, out):
    _compare(ref, out, "top")
    assert len(out["aux_outputs"]) == len(ref["aux_outputs"])
    for i, (r, o) in enumerate(zip(ref["aux_outputs"], out["aux_outputs"])):
        _compare(r, o, f"aux[{i}]")


@pytest.mark.parametrize(
    "file",
    [
        "task_seg.pt",
        "task_grounding.pt",
        "task_retrieval.pt",
        "task_interleave.pt",
        "task_fused.pt",
    ],
)
def test_core_parity_task(official_model, parity_load, file):
    _, call, out = _run(official_model, parity_load, file)
    _compare_all(call["outputs"], out)


def test_core_parity_class_embeddings(official_model, parity_load):
    data = parity_load("task_class_embeddings.pt")
    rows = []
    for i in range(len(data["predictor_calls"])):
        _, call, out = _run(official_model, parity_load, "task_class_embeddings.pt", i)
        _compare_all(call["outputs"], out)
        rows.append(out["pred_retrievals_class"][0, 0])
    bank = torch.stack(rows)
    assert (bank - data["default_text_embeddings"]).abs().max() < ATOL


@pytest.mark.parametrize(
    "file,idx", [("task_spatial.pt", 0), ("task_spatial_iter2.pt", 0), ("task_spatial_iter2.pt", 1)]
)
def test_core_parity_spatial(official_model, parity_load, file, idx):
    _, call, out = _run(official_model, parity_load, file, idx)
    ref = call["trace"]["organized_outputs_before_update_spatial_results"]
    _compare(ref, out, "top")
    # official prev_mask = mask of the segment proposal with the largest pixel-space logit
    logits = out["pred_smaskembs"] @ out["pred_pspatials"].transpose(1, 2)
    pick = logits[0].argmax(0)
    prev = out["pred_smasks"][:, pick]
    assert (prev - call["outputs"]["prev_mask"]).abs().max() < ATOL
