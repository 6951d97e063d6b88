"""End-to-end learning check: a tiny FIND interface overfits every task on a few synthetic images.

Frozen random feature maps stand in for the pixel decoder, random token embeddings for the
(projected) language features. The interface + criterion are trained with Adam on CPU, then
evaluated with the inference rules of :mod:`find_plugin.core.postprocess`:

* generic: IoU of the Hungarian-matched masks (and the matched class) of the object proposals;
* grounding / interactive / interleave: IoU of the mask picked by grounding_pick /
  interactive_pick / interleave_pick;
* retrieval: image -> caption top-1 over the batch.
"""

import time

import pytest
import torch

from find_plugin.core.criterion import FindCriterion
from find_plugin.core.interface import FINDInterface
from find_plugin.core.matcher import HungarianMatcher
from find_plugin.core.postprocess import grounding_pick, interactive_pick, interleave_pick
from find_plugin.core.retrieval import recall_at_k, retrieval_scores

B, C, Q, K = 4, 32, 8, 3
M = 16  # mask resolution (stride 4) -> image 64 x 64
IMG = 4 * M
STEPS = 300


def _square_prompt(mask16: torch.Tensor) -> torch.Tensor:
    """A 4x4 (image pixels) positive prompt at the centre of a 16x16 mask, at image size."""
    ys, xs = mask16.nonzero(as_tuple=True)
    cy, cx = int(ys.float().mean() * 4 + 2), int(xs.float().mean() * 4 + 2)
    p = torch.zeros(IMG, IMG, dtype=torch.bool)
    p[cy - 2 : cy + 2, cx - 2 : cx + 2] = True
    return p


def _build_batch(g: torch.Generator):
    quadrants = [(0, 0), (0, 8), (8, 0), (8, 8)]
    targets, gr_tok, gr_idx, sp_pos, il_tok, il_ent, il_pos, captions = [], [], [], [], [], [], [], []
    for b in range(B):
        order = torch.randperm(4, generator=g)[:3].tolist()
        masks = []
        for qd in order:
            y0, x0 = quadrants[qd]
            h, w = [int(v) for v in torch.randint(5, 9, (2,), generator=g)]
            oy, ox = [int(v) for v in torch.randint(0, 9 - 5, (2,), generator=g)]
            m = torch.zeros(M, M)
            m[y0 + oy : min(y0 + oy + h, y0 + 8), x0 + ox : min(x0 + ox + w, x0 + 8)] = 1.0
            masks.append(m)
        masks = torch.stack(masks)
        labels = torch.randint(0, K, (3,), generator=g)
        # grounding: phrase j (2 tokens each) refers to object j
        gr_tok.append(torch.randn(4, C, generator=g))
        gr_idx.append(torch.tensor([0, 0, 1, 1]))
        # interactive: prompt j -> object j + 1
        sp_pos.append(torch.stack([_square_prompt(masks[1]), _square_prompt(masks[2])]))
        # interleave: entity 0 is visual (object 2), entity 1 is text (object 0)
        il_tok.append(torch.randn(4, C, generator=g))
        il_ent.append(torch.tensor([0, -4, 1, 1]))
        il_pos.append(torch.stack([_square_prompt(masks[2]), torch.zeros(IMG, IMG, dtype=torch.bool)]))
        cap = torch.randn(5, C, generator=g)
        captions.append(cap)
        targets.append(
            {
                "labels": labels,
                "masks": masks,
                "grounding_masks": masks[:2],
                "grounding_hash": torch.arange(2),
                "grounding_task": "text",
                "spatial_masks": masks[1:3],
                "interleave_masks": torch.stack([masks[2], masks[0]]),
                "interleave_is_visual": torch.tensor([True, False]),
                "caption_tokens": cap,
                "caption_mask": torch.ones(5, dtype=torch.bool),
            }
        )
    no_pad4 = torch.zeros(B, 4, dtype=torch.bool)
    tasks = {
        "grounding": {
            "tokens": torch.stack(gr_tok),
            "token_mask": no_pad4,
            "token_index": torch.stack(gr_idx),
        },
        "retrieval": {"tokens": torch.stack(captions), "token_mask": torch.zeros(B, 5, dtype=bool)},
        "spatial": {"pos_masks": sp_pos, "neg_masks": [torch.zeros_like(p) for p in sp_pos]},
        "interleave": {
            "tokens": torch.stack(il_tok),
            "token_mask": no_pad4,
            "token_entity": torch.stack(il_ent),
            "entity_is_visual": torch.tensor([[True, False]] * B),
            "pos_masks": il_pos,
            "neg_masks": [torch.zeros_like(p) for p in il_pos],
        },
    }
    return targets, tasks


def _iou(logits: torch.Tensor, gt: torch.Tensor) -> float:
    pred = logits > 0
    gt = gt > 0.5
    return ((pred & gt).sum() / (pred | gt).sum().clamp(min=1)).item()


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = FINDInterface(
        hidden_dim=C,
        num_heads=4,
        dim_feedforward=64,
        num_layers=2,
        num_queries=Q,
        mask_dim=C,
        dim_proj=C,
        dim_text=C,
        num_memories=4,
        max_spatial_points=64,
    )
    features = [torch.randn(B, C, s, s, generator=g) for s in (M // 8, M // 4, M // 2)]
    mask_features = torch.randn(B, C, M, M, generator=g)
    class_bank = torch.randn(K + 1, C, generator=g)
    targets, tasks = _build_batch(g)
    criterion = FindCriterion(num_classes=K, num_points=None)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = time.time()
    model.train()
    for _ in range(STEPS):
        out = model(features, mask_features, tasks, class_bank=class_bank, generator=g)
        losses = criterion(out, targets, logit_scale=model.logit_scale)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    elapsed = time.time() - start
    model.eval()
    with torch.no_grad():
        out = model(features, mask_features, tasks, class_bank=class_bank, generator=g)
    return {"out": out, "targets": targets, "scale": model.logit_scale.detach(), "time": elapsed}


def test_training_is_fast_enough(trained):
    assert trained["time"] < 90, f"{STEPS} steps took {trained['time']:.1f}s"


def test_generic_segmentation_overfits(trained):
    out, targets = trained["out"], trained["targets"]
    indices = HungarianMatcher(num_points=None).match_default(
        out["pred_logits"], out["pred_masks"], targets
    )
    ious, correct = [], []
    for b, (src, tgt) in enumerate(indices):
        for s, t in zip(src.tolist(), tgt.tolist()):
            ious.append(_iou(out["pred_masks"][b, s], targets[b]["masks"][t]))
            correct.append(out["pred_logits"][b, s].argmax().item() == targets[b]["labels"][t])
    assert min(ious) > 0.9, ious
    assert all(correct)


def test_grounding_overfits(trained):
    out, targets = trained["out"], trained["targets"]
    for b in range(B):
        idx, _ = grounding_pick(out["pred_gtexts"][b], out["pred_grounding_query"][b], trained["scale"])
        for j, q in enumerate(idx.tolist()):
            assert _iou(out["pred_gmasks"][b, q], targets[b]["grounding_masks"][j]) > 0.9


def test_interactive_overfits(trained):
    out, targets = trained["out"], trained["targets"]
    for b in range(B):
        idx, _ = interactive_pick(out["pred_smaskembs"][b], out["pred_pspatials"][b])
        for j, q in enumerate(idx.tolist()):
            assert _iou(out["pred_smasks"][b, q], targets[b]["spatial_masks"][j]) > 0.9


def test_interleave_overfits(trained):
    out, targets = trained["out"], trained["targets"]
    for b in range(B):
        idx, _ = interleave_pick(
            out["pred_imaskembs"][b],
            out["pred_entity_pixel"][b],
            out["pred_interleave_objects"][b],
            out["pred_entity_class"][b],
            targets[b]["interleave_is_visual"],
        )
        for j, q in enumerate(idx.tolist()):
            assert _iou(out["pred_imasks"][b, q], targets[b]["interleave_masks"][j]) > 0.9


def test_retrieval_overfits(trained):
    out = trained["out"]
    img = out["pred_retrievals"][:, 0]
    for text in (out["pred_retrievals_lang"][:, 0], out["pred_interleave_image"][:, 0]):
        scores = retrieval_scores(img, text)
        assert recall_at_k(scores, torch.arange(B), ks=(1,))[1] == 1.0
        assert recall_at_k(scores.t(), torch.arange(B), ks=(1,))[1] == 1.0
