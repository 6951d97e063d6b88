"""Hungarian matchers on hand-built cases whose right assignment is obvious."""

import pytest
import torch

from find_plugin.core.matcher import HungarianMatcher, default_class_cost, proposal_class_cost
from find_plugin.core.point_losses import dice_loss, pairwise_bce_cost, pairwise_dice_cost

H = W = 16


def rect(y0, y1, x0, x1):
    m = torch.zeros(H, W)
    m[y0:y1, x0:x1] = 1.0
    return m


def as_logits(mask, scale=8.0):
    return (mask * 2 - 1) * scale


GT_LEFT = rect(0, 16, 0, 8)
GT_TOPRIGHT = rect(0, 8, 8, 16)
GT_BOTTOMRIGHT = rect(8, 16, 8, 16)


@pytest.mark.parametrize("num_points", [None, 12544])
def test_default_matcher_follows_masks(num_points):
    # q2 looks like GT0, q0 like GT1; q1, q3 predict nothing; classes are uninformative
    pred_masks = torch.stack(
        [as_logits(GT_TOPRIGHT), -8 * torch.ones(H, W), as_logits(GT_LEFT), -8 * torch.ones(H, W)]
    )[None]
    pred_logits = torch.zeros(1, 4, 4)
    targets = [{"labels": torch.tensor([1, 2]), "masks": torch.stack([GT_LEFT, GT_TOPRIGHT])}]
    ((src, tgt),) = HungarianMatcher(num_points=num_points).match_default(
        pred_logits, pred_masks, targets
    )
    assert dict(zip(src.tolist(), tgt.tolist())) == {0: 1, 2: 0}


def test_default_matcher_class_cost_breaks_mask_tie():
    # two identical masks; q0 is confident about class 2, q1 about class 0
    pred_masks = torch.stack([as_logits(GT_LEFT), as_logits(GT_LEFT)])[None]
    pred_logits = torch.tensor([[[0.0, 0.0, 6.0, 0.0], [6.0, 0.0, 0.0, 0.0]]])
    targets = [{"labels": torch.tensor([0, 2]), "masks": torch.stack([GT_LEFT, GT_LEFT])}]
    ((src, tgt),) = HungarianMatcher(num_points=None).match_default(
        pred_logits, pred_masks, targets
    )
    assert dict(zip(src.tolist(), tgt.tolist())) == {0: 1, 1: 0}


def test_cost_weights_are_honoured():
    # masks say q0<->gt0, class (proposal softmax) says q1<->gt0
    pred_masks = torch.stack([as_logits(GT_LEFT), as_logits(GT_BOTTOMRIGHT)])[None]
    logits = [torch.tensor([[-5.0], [5.0]])]
    tgt = [GT_LEFT[None]]
    by_class = HungarianMatcher(cost_class=1.0, cost_mask=0.0, cost_dice=0.0, num_points=None)
    by_mask = HungarianMatcher(cost_class=0.0, cost_mask=1.0, cost_dice=1.0, num_points=None)
    assert by_class.match_by_logits(logits, pred_masks, tgt)[0][0].tolist() == [1]
    assert by_mask.match_by_logits(logits, pred_masks, tgt)[0][0].tolist() == [0]


def test_grounding_style_matching_uses_softmax_over_proposals():
    # three proposals with identical masks; column j of the logits points at proposal 2 - j
    pred_masks = as_logits(GT_LEFT).expand(3, H, W)[None]
    logits = torch.tensor([[0.0, 0.0, 9.0], [0.0, 9.0, 0.0], [9.0, 0.0, 0.0]])
    cost = proposal_class_cost(logits)
    assert torch.allclose(cost.sum(0), -torch.ones(3))
    ((src, tgt),) = HungarianMatcher(num_points=None).match_by_logits(
        [logits], pred_masks, [GT_LEFT.expand(3, H, W)]
    )
    assert dict(zip(tgt.tolist(), src.tolist())) == {0: 2, 1: 1, 2: 0}


def test_default_class_cost_values():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    cost = default_class_cost(logits, torch.tensor([1, 0]))
    assert torch.allclose(cost, -torch.tensor([[0.2, 0.7], [0.1, 0.1]]), atol=1e-6)


def test_empty_targets_and_bad_inputs():
    m = HungarianMatcher(num_points=64)
    pred_masks = torch.randn(1, 3, H, W)
    ((src, tgt),) = m.match_default(
        torch.randn(1, 3, 4),
        pred_masks,
        [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, H, W)}],
    )
    assert src.numel() == 0 and tgt.numel() == 0
    with pytest.raises(ValueError, match="cannot match 4 targets"):
        m.match_by_logits([torch.randn(3, 4)], pred_masks, [torch.zeros(4, H, W)])
    with pytest.raises(ValueError, match="cannot all be 0"):
        HungarianMatcher(cost_class=0, cost_mask=0, cost_dice=0)
    with pytest.raises(KeyError, match="labels"):
        m.match_default(torch.randn(1, 3, 4), pred_masks, [{"masks": torch.zeros(1, H, W)}])


def test_pairwise_costs_match_single_pair_losses():
    logits = torch.randn(3, 50)
    targets = (torch.rand(2, 50) > 0.5).float()
    dice = pairwise_dice_cost(logits, targets)
    bce = pairwise_bce_cost(logits, targets)
    for i in range(3):
        for j in range(2):
            assert torch.allclose(dice[i, j], dice_loss(logits[i : i + 1], targets[j : j + 1], 1))
            ref = torch.nn.functional.binary_cross_entropy_with_logits(logits[i], targets[j])
            assert torch.allclose(bce[i, j], ref, atol=1e-6)
