"""Visual-prompt sampler, token->entity map and class-bank helpers."""

import torch
import torch.nn.functional as F

from find_plugin.core.class_bank import TRAIN_TEMPLATES, ClassBank, build_class_bank, class_prompts
from find_plugin.core.conventions import NO_ITEM
from find_plugin.core.entity_map import entity_token_masks, token_entity_map
from find_plugin.core.sampler import VisualPromptSampler, sample_prompt_points, sample_prompts


def test_core_sampler_keeps_all_points_in_order_and_normalises_by_own_size():
    m = torch.zeros(2, 8, 10, dtype=torch.bool)
    m[0, 1, 2] = m[0, 3, 4] = m[1, 7, 9] = True
    p = sample_prompt_points(m, max_points=512)
    assert p["index"].tolist() == [0, 0, 1]
    torch.testing.assert_close(
        p["coords"], torch.tensor([[1 / 8, 2 / 10], [3 / 8, 4 / 10], [7 / 8, 9 / 10]])
    )


def test_core_sampler_balanced_per_prompt():
    m = torch.zeros(2, 64, 64, dtype=torch.bool)
    m[0, :50, :50] = True  # 2500 pixels
    m[1, 60:, 60:] = True  # 16 pixels
    p = sample_prompt_points(m, max_points=32, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(p["index"], minlength=2)
    assert counts.sum() == 32 and counts[1] >= 10  # equal mass -> the small prompt is not drowned
    assert (p["index"].diff() >= 0).all()  # sorted like nonzero()


def test_core_sampler_tokens_match_project_then_sample():
    torch.manual_seed(0)
    s = VisualPromptSampler(hidden_dim=8, num_levels=2, max_points=100)
    feats = [torch.randn(2, 8, 4, 6), torch.randn(2, 8, 8, 12)]
    pos = [torch.zeros(2, 16, 24, dtype=torch.bool) for _ in range(2)]
    pos[0][0, 3, 5] = pos[0][1, 10, 20] = True
    pos[1][0, 15, 23] = True
    neg = [torch.zeros(2, 16, 24, dtype=torch.bool) for _ in range(2)]
    neg[0][1, 0, 0] = True
    pts = sample_prompts(pos, neg, num_levels=2, max_points=100)
    out = s(feats, pts)
    for lvl in range(2):
        tok, pad, idx = out[lvl]["tokens"], out[lvl]["padding"], out[lvl]["index"]
        assert tok.shape == (2, 3, 8)
        assert pad.tolist() == [[False, False, False], [False, True, True]]
        assert idx.tolist() == [[0, 1, 1], [0, NO_ITEM, NO_ITEM]]
        # official order: project the whole map, then point_sample (align_corners=True)
        proj = torch.einsum("bchw,cd->bdhw", feats[lvl], s.mask_sptial_embed[lvl])
        c = pts[lvl][0]["coords"]
        grid = (2 * c.flip(-1) - 1)[None, :, None]
        ref = F.grid_sample(proj[:1], grid, align_corners=True)[0, :, :, 0].t()
        ref = ref + torch.stack([s.pn_indicator.weight[0]] * 2 + [s.pn_indicator.weight[1]])
        torch.testing.assert_close(tok[0], ref, atol=1e-5, rtol=1e-5)


def test_core_entity_map_offsets():
    sentence = "the [INTERACTIVE] stands next to the flag"
    spans = [(4, 17), (33, 41)]
    offsets = [
        (0, 0),
        (0, 3),
        (4, 5),
        (5, 16),
        (16, 17),
        (18, 24),
        (25, 29),
        (30, 32),
        (33, 36),
        (37, 41),
    ]
    ent = token_entity_map(offsets, spans)
    assert sentence[4:17] == "[INTERACTIVE]"
    assert ent.tolist() == [NO_ITEM, NO_ITEM, 0, 0, 0, NO_ITEM, NO_ITEM, NO_ITEM, 1, 1]
    assert entity_token_masks(ent, 2).sum(1).tolist() == [3, 2]
    official = torch.where(ent < 0, -4, ent)  # official "no entity" value: the same membership
    assert torch.equal(entity_token_masks(official, 2), entity_token_masks(ent, 2))


def test_core_class_bank(tiny, tiny_model):
    prompts = class_prompts(["person", "wall-other-merged", "sky-other"])
    assert prompts[-1] == "Describe the concept of background."
    assert prompts[1] == "Describe the concept of wall-other."
    assert len(TRAIN_TEMPLATES) == 12 and TRAIN_TEMPLATES[1] == "Describe the concept of {}."
    tokens = torch.randn(3, 5, tiny.config["dim_proj"])
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[1, 3:] = True
    bank = build_class_bank(tiny_model, tokens, mask, batch_size=2)
    assert bank.shape == (3, tiny.config["dim_proj"])
    one = build_class_bank(tiny_model, tokens[1:2, :3], mask[1:2, :3])
    torch.testing.assert_close(bank[1:2], one, atol=1e-5, rtol=1e-5)
    store = ClassBank(num_classes=3, dim_proj=tiny.config["dim_proj"])
    rows = torch.randn(1, tiny.config["dim_proj"], requires_grad=True)
    new = ClassBank.refreshed(bank, rows, torch.tensor([2]))
    new.sum().backward()
    assert rows.grad is not None
    store.store_(new)
    assert not store.embeddings.requires_grad
    torch.testing.assert_close(store.embeddings[2], rows[0].detach())
