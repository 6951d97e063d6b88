"""End-to-end learning check: a tiny FIND interface overfits every task on a few synthetic images.

Frozen random feature maps stand in for the pixel decoder, random token embeddings for the
(projected) language features. The interface + criterion are trained with Adam on CPU, then
evaluated with the inference rules of :mod:`find_plugin.core.postprocess`:

* generic: :func:`instance_inference` keeps the top-n (query, class) pairs (n = number of objects
  of the image); every object's best-IoU instance among them gives the IoU and the class check;
* grounding / interactive / interleave: IoU of the mask picked by grounding_pick /
  interactive_pick / interleave_pick;
* class-embedding generation: the class bank is produced by the class query (refreshed rows in
  training, :func:`build_class_bank` on zero features at evaluation, as the official code does),
  and the instances above must carry the right class against that bank;
* retrieval: image -> caption top-1 over the batch.
"""

import time

import pytest
import torch
import torch.nn.functional as F

from find_plugin.core.class_bank import build_class_bank
from find_plugin.core.criterion import FINDCriterion
from find_plugin.core.interface import FINDInterface
from find_plugin.core.postprocess import (
    grounding_pick,
    instance_inference,
    interactive_pick,
    interleave_pick,
)

B, C, Q, K = 4, 32, 8, 3
M = 16  # mask resolution (stride 4) -> image 64 x 64
IMG = 4 * M
STEPS = int(__import__("os").environ.get("CORE_LEARN_STEPS", 200))


def _square_prompt(mask16: torch.Tensor) -> torch.Tensor:
    """A 4x4 (image pixels) positive prompt at the centre of a 16x16 mask, at image size."""
    ys, xs = mask16.nonzero(as_tuple=True)
    cy, cx = int(ys.float().mean() * 4 + 2), int(xs.float().mean() * 4 + 2)
    p = torch.zeros(IMG, IMG, dtype=torch.bool)
    p[cy - 2 : cy + 2, cx - 2 : cx + 2] = True
    return p


def _features(gt_masks, g: torch.Generator):
    """Frozen "pixel decoder" outputs in which every object has its own random code vector (plus
    a background code and noise), so masks are linearly decodable from ``mask_features`` as they
    are from a real pixel decoder. Levels are average-pooled copies (strides 32, 16, 8)."""
    mask_features = torch.zeros(B, C, M, M)
    for b, masks in enumerate(gt_masks):
        codes = torch.nn.functional.normalize(torch.randn(len(masks) + 1, C, generator=g), dim=-1)
        background = 1 - masks.sum(0).clamp(max=1)
        layout = torch.cat([masks, background[None]])  # [n+1, M, M]
        mask_features[b] = 3 * torch.einsum("nc,nhw->chw", codes, layout)
    mask_features += 0.1 * torch.randn(B, C, M, M, generator=g)
    levels = [torch.nn.functional.adaptive_avg_pool2d(mask_features, M // s) for s in (8, 4, 2)]
    return levels, mask_features


def _build_batch(g: torch.Generator):
    quadrants = [(0, 0), (0, 8), (8, 0), (8, 8)]
    targets, gr_tok, gr_idx, sp_pos, il_tok, il_ent, il_pos, captions = (
        [],
        [],
        [],
        [],
        [],
        [],
        [],
        [],
    )
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
        il_pos.append(
            torch.stack([_square_prompt(masks[2]), torch.zeros(IMG, IMG, dtype=torch.bool)])
        )
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
                "caption_valid": torch.ones(5, dtype=torch.bool),
            }
        )
    no_pad4 = torch.zeros(B, 4, dtype=torch.bool)
    tasks = {
        "grounding": {
            "tokens": torch.stack(gr_tok),
            "token_padding": no_pad4,
            "token_index": torch.stack(gr_idx),
        },
        "retrieval": {
            "tokens": torch.stack(captions),
            "token_padding": torch.zeros(B, 5, dtype=bool),
        },
        "spatial": {"pos_masks": sp_pos, "neg_masks": [torch.zeros_like(p) for p in sp_pos]},
        "interleave": {
            "tokens": torch.stack(il_tok),
            "token_padding": no_pad4,
            "token_entity": torch.stack(il_ent),
            "entity_is_visual": torch.tensor([[True, False]] * B),
            "pos_masks": il_pos,
            "neg_masks": [torch.zeros_like(p) for p in il_pos],
        },
    }
    return targets, tasks


def _iou(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """IoU of a predicted mask (bool, or logits thresholded at 0) with a 0/1 ground truth."""
    pred = pred if pred.dtype == torch.bool else pred > 0
    gt = gt > 0.5
    return ((pred & gt).sum() / (pred | gt).sum().clamp(min=1)).item()


def _metrics(out, targets, logit_scale):
    """Worst-case IoU per task (inference rules), class accuracy and retrieval top-1."""
    res = {"generic": [], "classes": [], "grounding": [], "interactive": [], "interleave": []}
    for b in range(B):
        labels = targets[b]["labels"]
        inst = instance_inference(out["pred_logits"][b], out["pred_masks"][b], top_k=len(labels))
        for t, gt in enumerate(targets[b]["masks"]):
            ious = [_iou(m, gt) for m in inst["pred_masks"]]
            best = max(range(len(ious)), key=ious.__getitem__)
            res["generic"].append(ious[best])
            res["classes"].append(float(inst["pred_classes"][best].item() == labels[t].item()))
        picks = {
            "grounding": grounding_pick(
                out["pred_gtexts"][b], out["pred_grounding_query"][b], logit_scale
            )[0],
            "interactive": interactive_pick(out["pred_smaskembs"][b], out["pred_pspatials"][b])[0],
            "interleave": interleave_pick(
                out["pred_imaskembs"][b],
                out["pred_entity_pixel"][b],
                out["pred_interleave_objects"][b],
                out["pred_entity_class"][b],
                targets[b]["interleave_is_visual"],
            )[0],
        }
        for task, (masks_key, gt_key) in {
            "grounding": ("pred_gmasks", "grounding_masks"),
            "interactive": ("pred_smasks", "spatial_masks"),
            "interleave": ("pred_imasks", "interleave_masks"),
        }.items():
            for j, q in enumerate(picks[task].tolist()):
                res[task].append(_iou(out[masks_key][b, q], targets[b][gt_key][j]))
    metrics = {k: min(v) for k, v in res.items()}
    img = out["pred_retrievals"][:, 0]
    for name, key in (
        ("retrieval", "pred_retrievals_lang"),
        ("interleave_itc", "pred_interleave_image"),
    ):
        # top-1 both ways over the batch (cosine); image b's own text is text b
        scores = F.normalize(img, dim=-1) @ F.normalize(out[key][:, 0], dim=-1).t()
        hits = torch.arange(B)
        metrics[name] = min(
            (scores.argmax(1) == hits).float().mean().item(),
            (scores.argmax(0) == hits).float().mean().item(),
        )
    return metrics


@pytest.fixture(scope="module")
def trained():
    # The ops are tiny: one thread is several times faster than two on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train()
    finally:
        torch.set_num_threads(threads)


def _train():
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
    # One fixed (projected) prompt per class, background last; the bank is always built from
    # these by the class query, never given.
    class_tokens = torch.randn(K + 1, 3, C, generator=g)
    class_pad = torch.zeros(K + 1, 3, dtype=torch.bool)
    targets, tasks = _build_batch(g)
    features, mask_features = _features([t["masks"] for t in targets], g)
    criterion = FINDCriterion(num_classes=K, num_points=None)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def evaluate():
        model.eval()
        with torch.no_grad():
            bank = build_class_bank(model, class_tokens, class_pad)
            out = model(features, mask_features, tasks, class_bank=bank, generator=g)
        model.train()
        return _metrics(out, targets, model.logit_scale.detach())

    before = evaluate()
    bank = build_class_bank(model, class_tokens, class_pad)
    start = time.time()
    for step in range(STEPS):
        # every image samples a class (background included) whose row its class query refreshes
        class_indexes = (step + torch.arange(B)) % (K + 1)
        tasks["class"] = {
            "tokens": class_tokens[class_indexes],
            "token_padding": class_pad[class_indexes],
            "class_indexes": class_indexes,
        }
        out = model(features, mask_features, tasks, class_bank=bank, generator=g)
        bank = out["class_bank"]  # detached; stored for the next step
        losses = criterion(out, targets, logit_scale=model.logit_scale)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    del tasks["class"]
    elapsed = time.time() - start
    return {"before": before, "after": evaluate(), "time": elapsed, "losses": losses}


def test_losses_finite_and_complete(trained):
    from find_plugin.core.criterion import DEFAULT_WEIGHTS

    # final layer unsuffixed, aux layers _0 .. _{n-1} (Mask2Former names)
    final = {k for k in trained["losses"] if not k[-1].isdigit()}
    assert final == {f"loss_{n}" for n in DEFAULT_WEIGHTS}
    assert all(torch.isfinite(v) for v in trained["losses"].values())


def test_untrained_model_fails_the_checks(trained):
    before = trained["before"]
    for task in ("generic", "grounding", "interactive", "interleave"):
        assert before[task] < 0.9, (task, before)
    for task in ("classes", "retrieval", "interleave_itc"):
        assert before[task] < 1.0, (task, before)


@pytest.mark.parametrize("task", ["generic", "grounding", "interactive", "interleave"])
def test_masks_overfit(trained, task):
    assert trained["after"][task] > 0.9, trained["after"]


def test_classes_overfit(trained):
    assert trained["after"]["classes"] == 1.0, trained["after"]


@pytest.mark.parametrize("task", ["retrieval", "interleave_itc"])
def test_retrieval_top1(trained, task):
    assert trained["after"][task] == 1.0, trained["after"]
