"""Official post-processing parity (parity_small fixture, ``postprocess`` / ``processed_results`` /
``text_encoder_calls`` of the task files).

The stored official interface outputs (equal to ours, see test_core_parity.py) go through OUR
post-processing (:mod:`find_plugin.core.postprocess`) and must reproduce what the official
``evaluate*`` functions returned: semantic maps, instances, grounding / interleave picks and masks,
interactive picks and mask IoUs. The text side checks ``FINDInterface.project_tokens`` and the
LLaMA-branch sentence embedding (mean over valid tokens, then ``lang_proj``) against the official
``get_text_token_embeddings`` results. ``lang_proj`` and ``logit_scale`` come from the fixture's
``state_dict.pt`` through the checkpoint converter.
"""

from types import SimpleNamespace

import pytest
import torch

from find_plugin.core.postprocess import (
    grounding_pick,
    instance_inference,
    interactive_pick,
    interleave_pick,
    resize_mask_logits,
    semantic_inference,
)
from find_plugin.encoders.language.adapter import TextTokenEncoder

ATOL = 1e-5  # README "Numerical notes" 2: abs 1e-5 for a faithful re-implementation
TASK_FILES = [
    "task_class_embeddings.pt",
    "task_grounding.pt",
    "task_interleave.pt",
    "task_retrieval.pt",
    "task_fused.pt",
]


@pytest.fixture(scope="module")
def interface(official_interface):
    return official_interface


@pytest.fixture(scope="module")
def sizes(parity_load):
    """(padded_size, image_size, output_size) of the fixture image."""
    image = parity_load("image.pt")
    padded = tuple(image["images_tensor"].shape[-2:])
    return padded, tuple(image["image_sizes"][0]), tuple(image["output_hw"])


def _outputs(parity_load, name, idx=0):
    return parity_load(name)["predictor_calls"][idx]["outputs"]


# ------------------------------------------------------------------------------------------------
# generic segmentation: semantic + instance inference (official evaluate)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seg(parity_load, sizes):
    out = _outputs(parity_load, "task_seg.pt")
    padded, image, output = sizes
    masks = resize_mask_logits(
        out["pred_masks"][0], padded_size=padded, image_size=image, output_size=output
    )
    return out["pred_logits"][0], masks, parity_load("task_seg.pt")["processed_results"]


def test_semantic_inference_matches_official(seg):
    mask_cls, masks, ref = seg
    sem = semantic_inference(mask_cls, masks)
    assert sem.shape == ref["sem_seg"].shape
    torch.testing.assert_close(sem, ref["sem_seg"], atol=ATOL, rtol=0)
    # the per-pixel decision (what a semantic-segmentation metric reads) is identical
    assert torch.equal(sem.argmax(0), ref["sem_seg"].argmax(0))


def test_instance_inference_matches_official(seg):
    mask_cls, masks, ref = seg
    official = ref["instances"]
    top_k = len(official["scores"])  # test_topk_per_image = 10
    ours = instance_inference(mask_cls, masks, top_k=top_k)
    # official order comes from topk(sorted=False): compare after sorting by score
    o_order = official["scores"].argsort(descending=True)
    m_order = ours["scores"].argsort(descending=True)
    torch.testing.assert_close(
        ours["scores"][m_order], official["scores"][o_order], atol=ATOL, rtol=0
    )
    assert torch.equal(ours["pred_classes"][m_order], official["pred_classes"][o_order])
    assert torch.equal(ours["pred_masks"][m_order], official["pred_masks_bool"][o_order])


# ------------------------------------------------------------------------------------------------
# grounding (official evaluate_grounding, mode grounding_refcoco)
# ------------------------------------------------------------------------------------------------
def test_grounding_pick_and_masks_match_official(parity_load, interface, sizes):
    data = parity_load("task_grounding.pt")
    out = data["predictor_calls"][0]["outputs"]
    idx, logits = grounding_pick(
        out["pred_gtexts"][0], out["pred_grounding_query"][0], interface.logit_scale.detach()
    )
    torch.testing.assert_close(logits, data["postprocess"]["out_prob"], atol=ATOL, rtol=1e-5)
    assert torch.equal(idx, data["postprocess"]["matched_id"])
    padded, image, output = sizes
    masks = resize_mask_logits(
        out["pred_gmasks"][0][idx],
        padded_size=padded,
        image_size=image,
        output_size=output,
        task="grounding",
    )
    ref = data["processed_results"]["grounding_mask"]
    torch.testing.assert_close(masks, ref, atol=ATOL, rtol=0)
    assert torch.equal(masks > 0, ref > 0)


# ------------------------------------------------------------------------------------------------
# interleave grounding (official evaluate_interleave_grounding)
# ------------------------------------------------------------------------------------------------
def test_interleave_pick_and_masks_match_official(parity_load, sizes):
    data = parity_load("task_interleave.pt")
    call = data["predictor_calls"][0]
    out = call["outputs"]
    is_visual = call["extra"]["interleave_isvisual"][:, 0].bool()
    idx, logits = interleave_pick(
        out["pred_imaskembs"][0],
        out["pred_entity_pixel"][0],
        out["pred_interleave_objects"][0],
        out["pred_entity_class"][0],
        is_visual,
    )
    post = data["postprocess"]
    torch.testing.assert_close(logits, post["pred_logits"][0], atol=ATOL, rtol=1e-5)
    assert torch.equal(idx, post["pred_idx"])
    padded, image, output = sizes
    masks = resize_mask_logits(
        out["pred_imasks"][0][idx],
        padded_size=padded,
        image_size=image,
        output_size=output,
        task="interleave",
    )
    ref = data["processed_results"]["grounding_mask"]
    torch.testing.assert_close(masks, ref, atol=ATOL, rtol=0)
    assert torch.equal(masks > 0, ref > 0)


# ------------------------------------------------------------------------------------------------
# interactive (official evaluate_interactive: pick, bicubic resize, sigmoid > 0.5, IoU)
# ------------------------------------------------------------------------------------------------
def _iou(gt: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    inter = (gt & pred).flatten(1).sum(1)
    union = (gt | pred).flatten(1).sum(1)
    return inter / union


@pytest.mark.parametrize("name", ["task_spatial.pt", "task_spatial_iter2.pt"])
def test_interactive_pick_and_iou_match_official(parity_load, sizes, name):
    data = parity_load(name)
    padded, image, output = sizes
    ious = []
    for call in data["predictor_calls"]:
        before = call["trace"]["organized_outputs_before_update_spatial_results"]
        idx, _ = interactive_pick(before["pred_smaskembs"][0], before["pred_pspatials"][0])
        picked = before["pred_smasks"][0][idx]
        # the official interface returns the picked proposal's mask as prev_mask
        assert torch.equal(picked, call["outputs"]["prev_mask"][0])
        masks = resize_mask_logits(
            picked, padded_size=padded, image_size=image, output_size=output, task="interactive"
        )
        ious.append(_iou(data["gt_masks_orisize"], masks.sigmoid() > 0.5))
    ours = torch.stack(ious)  # [iterations, prompts]
    ref = torch.stack([r["mask_iou"] for r in data["processed_results"]], dim=1)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------------
# text side: lang_proj projection and the LLaMA-branch sentence embedding
# ------------------------------------------------------------------------------------------------
def _text_calls(parity_load):
    for name in TASK_FILES:
        for i, call in enumerate(parity_load(name).get("text_encoder_calls", [])):
            yield f"{name}[{i}]", call


def test_project_tokens_matches_official(parity_load, interface):
    calls = list(_text_calls(parity_load))
    assert len(calls) == 12  # 5 class prompts + grounding, interleave, retrieval + fused (4)
    with torch.no_grad():
        for where, call in calls:
            ours = interface.project_tokens(call["raw_token_hidden"])
            ref = call["token_emb_projected"]
            assert ours.shape == ref.shape, where
            torch.testing.assert_close(ours, ref, atol=ATOL, rtol=1e-5, msg=where)


def test_sentence_embedding_matches_official(parity_load, interface):
    """Official llama branch: ``class_emb = mean(raw over attended tokens) @ lang_proj``. Padded
    positions of the stored raw hidden states are not zero, so a pool over all positions fails."""
    decoder = SimpleNamespace(kind="decoder")  # the adapter's pooling rule of LLaMA-like towers
    with torch.no_grad():
        for where, call in _text_calls(parity_load):
            valid = call["attention_mask"].bool()
            pooled = TextTokenEncoder._pool(
                decoder, call["raw_token_hidden"], valid, call["input_ids"]
            )
            ours = interface.project_tokens(pooled)
            torch.testing.assert_close(
                ours, call["class_emb_projected"], atol=ATOL, rtol=1e-5, msg=where
            )
