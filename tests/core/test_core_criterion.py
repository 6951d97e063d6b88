"""Losses against hand-computed values and the full criterion with deep supervision."""

import importlib.util
import math
import pathlib

import pytest
import torch
import torch.nn.functional as F

from find_plugin.core.criterion import DEFAULT_WEIGHTS, LOSS_GROUPS, FINDCriterion
from find_plugin.core.point_losses import (
    dice_loss,
    draw_point_candidates,
    grid_points,
    pick_uncertain_points,
    point_sample,
    sample_mask_points,
    sigmoid_bce_loss,
    uncertain_point_coords,
)
from find_plugin.core.retrieval import fine_grained_loss, itc_loss

# pytest runs in importlib mode: load the shared builders next to this file by path
_spec = importlib.util.spec_from_file_location(
    "_core_loss_utils", pathlib.Path(__file__).with_name("_loss_utils.py")
)
U = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(U)


# ---------------------------------------------------------------- point losses
def test_dice_and_bce_hand_values():
    logits = torch.zeros(1, 4)  # p = 0.5 everywhere
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    # 1 - (2*1 + 1) / (2 + 2 + 1) = 0.4
    assert dice_loss(logits, targets, 1.0).item() == pytest.approx(0.4)
    assert dice_loss(logits, targets, 2.0).item() == pytest.approx(0.2)
    assert sigmoid_bce_loss(logits, targets, 1.0).item() == pytest.approx(math.log(2))
    # two masks, normalised by 4: 2 * log2 / 4
    two = sigmoid_bce_loss(torch.zeros(2, 4), targets.repeat(2, 1), 4.0)
    assert two.item() == pytest.approx(math.log(2) / 2)


def test_point_sample_reads_pixel_centres_exactly():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    vals = point_sample(x, grid_points(3, 4)[None])
    assert torch.allclose(vals.flatten(), torch.arange(12.0), atol=1e-5)


def test_uncertain_points_concentrate_on_boundary():
    logits = torch.full((1, 1, 32, 32), -10.0)
    logits[..., :, 16:] = 10.0
    torch.manual_seed(0)
    coords = uncertain_point_coords(
        logits, num_points=100, oversample_ratio=3, importance_sample_ratio=0.75
    )
    assert coords.shape == (1, 100, 2)
    x = coords[0, :75, 0]  # the importance-sampled part comes first
    assert (x - 0.5).abs().mean() < (coords[0, 75:, 0] - 0.5).abs().mean()


def test_point_draws_are_the_draws_of_uncertain_point_coords():
    """Drawn ahead (the criterion draws in order, makes the rows later), the points picked are
    those of drawing while sampling: candidates first, then the fill-up points."""
    logits = torch.randn(3, 1, 16, 16)
    shapes = []

    def recording(seed):
        g = torch.Generator().manual_seed(seed)

        def draw(shape, **kw):
            shapes.append(tuple(shape))
            return torch.rand(shape, generator=g, **kw)

        return draw

    kw = dict(num_points=40, oversample_ratio=3, importance_sample_ratio=0.75)
    g = torch.Generator().manual_seed(
        0
    )  # written out: 120 candidates, the 30 most uncertain, 10 more
    cand, fill = torch.rand(3, 120, 2, generator=g), torch.rand(3, 10, 2, generator=g)
    unc = -F.grid_sample(logits, (2 * cand - 1)[:, :, None], align_corners=False)[:, 0, :, 0].abs()
    top = unc.topk(30, dim=1).indices
    expect = torch.cat([torch.stack([c[i] for c, i in zip(cand, top)]), fill], 1)
    direct = uncertain_point_coords(logits, rand_fn=recording(0), **kw)
    draws = draw_point_candidates(3, rand_fn=recording(0), **kw)
    assert shapes == [(3, 120, 2), (3, 10, 2)] * 2
    assert draws.num_uncertain == 30
    torch.testing.assert_close(direct, expect, rtol=0, atol=0)
    torch.testing.assert_close(pick_uncertain_points(logits, draws), expect, rtol=0, atol=0)
    tgt = (torch.rand(3, 32, 32) > 0.5).float()
    logits2, labels = sample_mask_points(logits[:, 0], tgt, draws=draws, **kw)
    torch.testing.assert_close(logits2, point_sample(logits, expect)[:, 0])
    torch.testing.assert_close(labels, point_sample(tgt[:, None], expect)[:, 0])


def test_sample_mask_points_full_grid():
    pred = torch.randn(2, 4, 4)
    tgt = (torch.rand(2, 8, 8) > 0.5).float()
    logits, labels = sample_mask_points(
        pred, tgt, num_points=None, oversample_ratio=3, importance_sample_ratio=0.75
    )
    assert torch.allclose(logits, pred.flatten(1), atol=1e-5)
    assert labels.shape == (2, 16)


# ---------------------------------------------------------------- generic segmentation
def _single_object_case():
    """One image, 2 proposals, K=2, one GT (class 0) = left half; q0 predicts it exactly."""
    gt = U.rect_mask(4, 4, 0, 4, 0, 2)
    masks = torch.stack([(gt * 2 - 1) * 3.0, torch.full((4, 4), -3.0)])[None]
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.0, 1.0]]])
    out = {"pred_logits": logits, "pred_masks": masks}
    targets = [{"labels": torch.tensor([0]), "masks": gt[None]}]
    return out, targets, gt


def test_mask_ce_uses_no_object_weight():
    out, targets, _ = _single_object_case()
    crit = FINDCriterion(num_classes=2, losses=("labels",), num_points=None)
    loss = crit(out, targets, logit_scale=torch.tensor(0.0))
    ce0 = -F.log_softmax(out["pred_logits"][0, 0], -1)[0]  # matched -> class 0, weight 1
    ce1 = -F.log_softmax(out["pred_logits"][0, 1], -1)[2]  # unmatched -> background, weight 0.1
    expected = (ce0 + 0.1 * ce1) / 1.1
    assert set(loss) == {"loss_mask_ce"}
    assert loss["loss_mask_ce"].item() == pytest.approx(2.0 * expected.item(), rel=1e-5)


def test_mask_bce_dice_hand_values():
    out, targets, gt = _single_object_case()
    crit = FINDCriterion(num_classes=2, losses=("masks",), num_points=None)
    loss = crit(out, targets, logit_scale=torch.tensor(0.0))
    p = out["pred_masks"][0, 0].flatten()
    t = gt.flatten()
    bce = F.binary_cross_entropy_with_logits(p, t)
    dice = 1 - (2 * (p.sigmoid() * t).sum() + 1) / (p.sigmoid().sum() + t.sum() + 1)
    assert loss["loss_mask_bce"].item() == pytest.approx(5.0 * bce.item(), rel=1e-5)
    assert loss["loss_mask_dice"].item() == pytest.approx(5.0 * dice.item(), rel=1e-5)


# ---------------------------------------------------------------- contrastive
def test_itc_hand_value_and_clamp():
    img = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    txt = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    cos = torch.tensor([[1.0, 1 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]])
    gt = torch.arange(2)
    ref = (F.cross_entropy(cos, gt) + F.cross_entropy(cos.t(), gt)) / 2
    assert itc_loss(img, txt, torch.tensor(0.0)).item() == pytest.approx(ref.item(), rel=1e-5)
    ref100 = (F.cross_entropy(100 * cos, gt) + F.cross_entropy(100 * cos.t(), gt)) / 2
    assert itc_loss(img, txt, torch.tensor(9.0)).item() == pytest.approx(ref100.item(), rel=1e-4)


def test_fine_grained_matches_explicit_loops():
    torch.manual_seed(1)
    B, Q, T, D = 2, 3, 4, 5
    props = torch.randn(B, Q, D)
    toks = torch.randn(B, T, D)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    ls = torch.tensor(0.5)
    got = fine_grained_loss(props, toks, mask, ls)

    pn = props / props.norm(dim=-1, keepdim=True)
    tn = toks / toks.norm(dim=-1, keepdim=True)
    flat = [(j, t) for j in range(B) for t in range(T) if mask[j, t]]
    logits = torch.zeros(B, len(flat))
    gt = torch.zeros(B, len(flat))
    for k, (j, t) in enumerate(flat):
        for i in range(B):
            logits[i, k] = math.exp(0.5) * sum(pn[i, q] @ tn[j, t] for q in range(Q)) / Q
        n_valid = int(mask[j].sum())
        gt[j, k] = (t + 1) / (n_valid * (n_valid + 1) / 2)  # position weights 1..n normalised
    i2t = -(gt * logits.log_softmax(1)).sum(1).mean()
    t2i = -(gt.t() * logits.t().log_softmax(1)).sum(1).mean()
    assert got.item() == pytest.approx((0.7 * i2t + 0.3 * t2i).item(), rel=1e-4)


# ---------------------------------------------------------------- task-specific CE
def test_grounding_ce_shares_targets_of_duplicate_phrases():
    # 3 proposals; 2 phrases with the same hash, matched to proposals 0 and 2 by their masks
    left, right = U.rect_mask(4, 4, 0, 4, 0, 2), U.rect_mask(4, 4, 0, 4, 2, 4)
    gmasks = torch.stack([(left * 2 - 1) * 5, torch.full((4, 4), -5.0), (right * 2 - 1) * 5])[None]
    gtexts = torch.eye(3)[None]  # cosine of proposal q with query = query's entries
    gquery = torch.tensor([[[1.0, 0.2, 0.3], [0.3, 0.2, 1.0]]])
    out = {"pred_gmasks": gmasks, "pred_gtexts": gtexts, "pred_grounding_query": gquery}
    out["item_padding"] = {"queries_language_description": torch.zeros(1, 2, dtype=torch.bool)}
    tgt = [
        {
            "grounding_masks": torch.stack([left, right]),
            "grounding_hash": [7, 7],
            "grounding_task": "class",
        }
    ]
    crit = FINDCriterion(num_classes=2, losses=("groundings",), num_points=None)
    loss = crit(out, tgt, logit_scale=torch.tensor(0.0))
    logits = (gtexts[0] @ (gquery[0] / gquery[0].norm(dim=-1, keepdim=True)).t()).t()  # [G, Q]
    logp = logits.log_softmax(-1)
    soft = torch.tensor([0.5, 0.0, 0.5])
    expected = 0.5 * (-(soft * logp).sum(-1)).mean()  # 'class' mode weight 0.5
    assert loss["loss_grounding_ce"].item() == pytest.approx(0.4 * expected.item(), rel=1e-5)


def test_spatial_ce_and_empty_prompt_skipped():
    left = U.rect_mask(4, 4, 0, 4, 0, 2)
    smasks = torch.stack([torch.full((4, 4), -5.0), (left * 2 - 1) * 5])[None]
    embs = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    queries = torch.tensor([[[0.5, 2.0], [1.0, 1.0]]])  # 2nd prompt has an empty GT -> skipped
    out = {"pred_smasks": smasks, "pred_smaskembs": embs, "pred_pspatials": queries}
    out["item_padding"] = {"queries_vision_spatial": torch.zeros(1, 2, dtype=torch.bool)}
    tgt = [{"spatial_masks": torch.stack([left, torch.zeros(4, 4)])}]
    crit = FINDCriterion(num_classes=2, losses=("spatials",), num_points=None)
    loss = crit(out, tgt, logit_scale=torch.tensor(0.0))
    expected_ce = -torch.tensor([0.5, 2.0]).log_softmax(0)[1]
    assert loss["loss_spatial_ce"].item() == pytest.approx(0.4 * expected_ce.item(), rel=1e-5)
    p = smasks[0, 1].flatten()
    bce = F.binary_cross_entropy_with_logits(p, left.flatten())  # normalised by 1 kept prompt
    assert loss["loss_spatial_bce"].item() == pytest.approx(bce.item(), rel=1e-5)


# ---------------------------------------------------------------- full criterion
def test_full_criterion_keys_finite_and_backward():
    outputs = U.make_outputs(n_aux=2)
    targets = U.make_targets()
    U.add_item_padding(outputs, targets)
    ls = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    crit = FINDCriterion(num_classes=3, num_points=200)
    losses = crit(outputs, targets, logit_scale=ls)
    # Mask2Former names: final layer unsuffixed, aux_outputs[i] suffixed _i
    expected = {f"loss_{n}{s}" for n in DEFAULT_WEIGHTS for s in ("", "_0", "_1")}
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    total = sum(losses.values())
    total.backward()
    assert ls.grad is not None and torch.isfinite(ls.grad)
    for name in [
        "pred_logits",
        "pred_masks",
        "pred_gmasks",
        "pred_smasks",
        "pred_imasks",
        "pred_captions",
        "pred_retrievals_lang",
        "pred_interleave_image",
    ]:
        assert outputs[name].grad is not None and outputs[name].grad.abs().sum() > 0, name
        assert outputs["aux_outputs"][0][name].grad.abs().sum() > 0, name


def test_weights_scale_losses_and_aux_order():
    outputs = U.make_outputs(n_aux=2)
    targets = U.make_targets()
    U.add_item_padding(outputs, targets)
    ls = torch.tensor(0.0)
    base = FINDCriterion(num_classes=3, num_points=None)(outputs, targets, logit_scale=ls)
    heavy = FINDCriterion(num_classes=3, num_points=None, weights={"mask_dice": 10.0})(
        outputs, targets, logit_scale=ls
    )
    assert heavy["loss_mask_dice"].item() == pytest.approx(2 * base["loss_mask_dice"].item())
    assert heavy["loss_mask_bce_1"].item() == pytest.approx(base["loss_mask_bce_1"].item())
    # loss_*_i is computed from aux_outputs[i]: _0 = initial queries, counting up
    single = FINDCriterion(num_classes=3, num_points=None, deep_supervision=False)
    for i, aux in enumerate(outputs["aux_outputs"]):
        only_aux = dict(aux, item_padding=outputs["item_padding"])
        got = single(only_aux, targets, logit_scale=ls)
        for name in ("spatial_dice", "mask_ce", "grounding_ce"):
            assert got[f"loss_{name}"].item() == pytest.approx(
                base[f"loss_{name}_{i}"].item(), rel=1e-6
            ), (name, i)


def test_item_rows_follow_item_padding_not_position():
    """Real query rows are read where item_padding says, not as the first n rows."""
    targets = U.make_targets()
    ls = torch.tensor(0.0)
    front = U.make_outputs(n_aux=0, G=4, P=3, E=4)
    back = {k: v.detach().clone() for k, v in front.items() if k != "aux_outputs"}
    U.add_item_padding(front, targets)
    U.add_item_padding(back, targets, padded_first=True)
    # move every image's real item rows to the end of the padded axis
    for out_name, var in (
        ("pred_grounding_query", "queries_language_description"),
        ("pred_pspatials", "queries_vision_spatial"),
        ("pred_entity_pixel", "queries_interleave_entity"),
        ("pred_entity_class", "queries_interleave_entity"),
    ):
        for b in range(len(targets)):
            real_front = ~front["item_padding"][var][b]
            real_back = ~back["item_padding"][var][b]
            back[out_name][b, real_back] = front[out_name][b, real_front].detach()
            back[out_name][b, ~real_back] = 1e3  # garbage in padded rows must not matter
    crit = FINDCriterion(num_classes=3, num_points=None, losses=("groundings", "spatials"))
    want = crit(front, targets, logit_scale=ls)
    got = crit(back, targets, logit_scale=ls)
    for k in want:
        assert got[k].item() == pytest.approx(want[k].item(), rel=1e-5), k


def test_item_rows_must_match_target_count():
    outputs = U.make_outputs(n_aux=0, P=3)
    targets = U.make_targets()
    crit = FINDCriterion(num_classes=3, num_points=None, losses=("spatials",))
    with pytest.raises(KeyError, match="item_padding"):
        crit(outputs, targets, logit_scale=torch.tensor(0.0))
    U.add_item_padding(outputs, targets)
    outputs["item_padding"]["queries_vision_spatial"][0, :] = False  # one row too many
    with pytest.raises(ValueError, match=r"spatial_masks'\] has 2 masks"):
        crit(outputs, targets, logit_scale=torch.tensor(0.0))


def test_config_errors():
    with pytest.raises(ValueError, match="unknown loss group"):
        FINDCriterion(num_classes=3, losses=("labels", "boxes"))
    with pytest.raises(ValueError, match="unknown loss weight"):
        FINDCriterion(num_classes=3, weights={"mask_focal": 1.0})
    with pytest.raises(ValueError, match="not in losses"):
        FINDCriterion(num_classes=3, losses=("labels",), weights={"grounding_ce": 1.0})
    assert set(LOSS_GROUPS["interleaves"]) <= set(DEFAULT_WEIGHTS)
    crit = FINDCriterion(num_classes=3, losses=("groundings",))
    outputs = U.make_outputs(n_aux=0)
    outputs["item_padding"] = {"queries_language_description": torch.zeros(2, 3, dtype=torch.bool)}
    with pytest.raises(KeyError, match="grounding_masks"):
        crit(outputs, [{}, {}], logit_scale=torch.tensor(0.0))


def test_images_without_items_give_zero_task_losses():
    outputs = U.make_outputs(n_aux=0)
    targets = U.make_targets(counts=((1, 0, 0, 0, 2), (1, 0, 0, 0, 2)))
    U.add_item_padding(outputs, targets)
    losses = FINDCriterion(num_classes=3, num_points=64)(
        outputs, targets, logit_scale=torch.tensor(0.0)
    )
    for task in ("grounding", "spatial"):
        for term in ("ce", "bce", "dice"):
            assert losses[f"loss_{task}_{term}"].item() == 0.0
    assert losses["loss_interleave_itc"].item() > 0
    sum(losses.values()).backward()
