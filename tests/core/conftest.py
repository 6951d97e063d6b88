"""Fixtures of the core-model tests: a tiny random interface and inputs for every task."""

import pytest
import torch

# ------------------------------------------------------------------------------------------
# tiny random interface + inputs for every built-in task (CPU, fast)
# ------------------------------------------------------------------------------------------
TINY = dict(
    hidden_dim=64,
    num_heads=4,
    dim_feedforward=128,
    num_layers=2,
    num_queries=10,
    mask_dim=64,
    dim_proj=64,
    dim_text=32,
    num_memories=4,
    max_spatial_points=40,
)
FEAT_SIZES = ((2, 3), (4, 6), (8, 12))
MASK_SIZE = (16, 24)
IMG_SIZE = (64, 96)


def make_tiny_model(seed=0):
    from find_plugin.core.interface import FINDInterface

    torch.manual_seed(seed)
    model = FINDInterface(**TINY)
    # non-trivial biases / norms so masked paths would show up in the outputs
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() <= 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def make_inputs(bsz=2, seed=1, with_prev_mask=True):
    """Features, mask features and a tasks dict exercising every built-in task; token counts and
    prompt counts differ per image (padding)."""
    g = torch.Generator().manual_seed(seed)
    c = TINY["hidden_dim"]
    feats = [torch.randn(bsz, c, h, w, generator=g) for h, w in FEAT_SIZES]
    mf = torch.randn(bsz, TINY["mask_dim"], *MASK_SIZE, generator=g)
    raw = lambda t: torch.randn(bsz, t, TINY["dim_text"], generator=g)  # noqa: E731

    def pad_mask(t, lengths):
        return torch.arange(t)[None, :] >= torch.tensor(lengths)[:, None]

    lens = [5 + 2 * b for b in range(bsz)]

    def prompts(counts, empty_last=False):
        out = []
        for b, n in enumerate(counts):
            m = torch.zeros(n, *IMG_SIZE, dtype=torch.bool)
            for k in range(n):
                if empty_last and k == n - 1 and b == 0:
                    continue  # a prompt with no pixel: its query has no key at all
                y, x = 5 + 7 * k, 10 + 11 * k + 3 * b
                m[k, y : y + 4, x : x + 5] = True
            out.append(m)
        return out

    counts = [2 + (b % 2) for b in range(bsz)]
    spatial = {
        "pos_masks": prompts(counts, empty_last=True),
        "neg_masks": [torch.zeros(n, *IMG_SIZE, dtype=torch.bool) for n in counts],
    }
    spatial["neg_masks"][0][0, 40:42, 50:52] = True
    if with_prev_mask:
        spatial["prev_mask"] = torch.randn(bsz, 1, *MASK_SIZE, generator=g)
    g_index = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]] * bsz)
    ent = torch.tensor([[-4, 0, 0, -4, 1, 1, -4, -4]] * bsz)
    tasks = {
        "class": {"raw": raw(6), "token_padding": pad_mask(6, [4 + b for b in range(bsz)])},
        "grounding": {
            "raw": raw(9),
            "token_padding": pad_mask(9, [9] + [6] * (bsz - 1)),
            "token_index": g_index,
        },
        "retrieval": {"raw": raw(7), "token_padding": pad_mask(7, lens)},
        "spatial": spatial,
        "interleave": {
            "raw": raw(8),
            "token_padding": pad_mask(8, [8] + [7] * (bsz - 1)),
            "token_entity": ent,
            "entity_is_visual": torch.tensor([[True, False]] * bsz),
            "pos_masks": [torch.cat([p[:1], torch.zeros_like(p[:1])]) for p in prompts(counts)],
            "neg_masks": [torch.zeros(2, *IMG_SIZE, dtype=torch.bool) for _ in range(bsz)],
        },
    }
    return feats, mf, tasks


def project(model, tasks):
    """Replace every 'raw' text feature by its lang_proj projection (as the real model does)."""
    out = {}
    for name, inp in tasks.items():
        inp = dict(inp)
        if "raw" in inp:
            inp["tokens"] = model.project_tokens(inp.pop("raw"))
        out[name] = inp
    return out


@pytest.fixture
def tiny_model():
    return make_tiny_model().eval()


class _Tiny:
    """Helpers handed to tests through the ``tiny`` fixture (importlib mode: no conftest import)."""

    config = TINY
    feat_sizes = FEAT_SIZES
    mask_size = MASK_SIZE
    img_size = IMG_SIZE
    model = staticmethod(make_tiny_model)
    inputs = staticmethod(make_inputs)
    project = staticmethod(project)


@pytest.fixture(scope="session")
def tiny():
    return _Tiny


# ------------------------------------------------------------------------------------------
# the parity_small interface with the official weights (through the checkpoint converter)
# ------------------------------------------------------------------------------------------
PARITY_INTERFACE = dict(
    hidden_dim=128,
    num_heads=8,
    dim_feedforward=256,
    num_layers=3,
    num_queries=20,
    mask_dim=128,
    dim_proj=128,
    dim_text=64,
    num_memories=16,
)


@pytest.fixture(scope="session")
def official_interface(parity_load):
    """FINDInterface of the parity_small size loaded strictly with the official weights; every
    one of the 72 official interface keys maps (the vision groups are dropped)."""
    from find_plugin.checkpoint.official import convert_official_state_dict
    from find_plugin.core.interface import FINDInterface

    model = FINDInterface(**PARITY_INTERFACE)
    # Target = the interface under its FINDModel name; the vision groups are not part of it.
    target = {"interface." + k: v for k, v in model.state_dict().items()}
    converted, report = convert_official_state_dict(
        parity_load("state_dict.pt"), target=target, drop=("backbone", "pixel_decoder")
    )
    assert report.ok and report.counts()["interface"]["mapped"] == 72
    model.load_state_dict({k[len("interface.") :]: v for k, v in converted.items()}, strict=True)
    return model.eval()
