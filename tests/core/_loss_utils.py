"""Shared builders for the criterion / learning tests (random interface outputs and targets)."""

import torch

OUTPUT_DIMS = {
    # name: (count key, space) -> built as [B, n, D]
    "pred_captions": "Q",
    "pred_gtexts": "Q",
    "pred_spatials": "Q",
    "pred_interleave_objects": "Q",
    "pred_smaskembs": "Q",
    "pred_imaskembs": "Q",
    "pred_grounding_query": "G",
    "pred_pspatials": "P",
    "pred_entity_pixel": "E",
    "pred_entity_class": "E",
    "pred_retrievals": 1,
    "pred_retrievals_lang": 1,
    "pred_interleave_image": 1,
}
MASK_OUTPUTS = ("pred_masks", "pred_gmasks", "pred_smasks", "pred_imasks")


def make_layer(B, Q, K, D, h, w, G, P, E, generator=None):
    """One prediction layer with random leaf tensors (requires_grad) in the spec §1.5 layout."""
    counts = {"Q": Q, "G": G, "P": P, "E": E}

    def rnd(*shape):
        return torch.randn(*shape, generator=generator).requires_grad_(True)

    out = {"pred_logits": rnd(B, Q, K + 1)}
    for name in MASK_OUTPUTS:
        out[name] = rnd(B, Q, h, w)
    for name, n in OUTPUT_DIMS.items():
        out[name] = rnd(B, counts.get(n, n) if isinstance(n, str) else n, D)
    return out


def make_outputs(B=2, Q=6, K=3, D=8, h=8, w=8, G=3, P=2, E=3, n_aux=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    final = make_layer(B, Q, K, D, h, w, G, P, E, g)
    final["aux_outputs"] = [make_layer(B, Q, K, D, h, w, G, P, E, g) for _ in range(n_aux)]
    return final


def rect_mask(H, W, y0, y1, x0, x1):
    m = torch.zeros(H, W)
    m[y0:y1, x0:x1] = 1.0
    return m


def make_targets(B=2, K=3, D=8, H=16, W=16, counts=((2, 3, 2, 3, 5), (1, 1, 1, 2, 3)), seed=0):
    """Per image: (n_gt, n_grounding, n_spatial, n_entities, n_caption_tokens)."""
    g = torch.Generator().manual_seed(seed)
    targets = []
    for b in range(B):
        n_gt, n_gr, n_sp, n_ent, n_tok = counts[b]

        def masks(n):
            out = []
            for i in range(n):
                y0 = int(torch.randint(0, H // 2, (1,), generator=g))
                x0 = int(torch.randint(0, W // 2, (1,), generator=g))
                out.append(rect_mask(H, W, y0, y0 + H // 2, x0, x0 + W // 2))
            return torch.stack(out) if out else torch.zeros(0, H, W)

        targets.append(
            {
                "labels": torch.randint(0, K, (n_gt,), generator=g),
                "masks": masks(n_gt),
                "grounding_masks": masks(n_gr),
                "grounding_hash": torch.arange(n_gr),
                "grounding_task": "text",
                "spatial_masks": masks(n_sp),
                "interleave_masks": masks(n_ent),
                "interleave_is_visual": torch.arange(n_ent) % 2 == 0,
                "caption_tokens": torch.randn(n_tok, D, generator=g),
                "caption_valid": torch.ones(n_tok, dtype=torch.bool),
            }
        )
    return targets


ITEM_TARGETS = {
    "queries_language_description": "grounding_masks",
    "queries_vision_spatial": "spatial_masks",
    "queries_interleave_entity": "interleave_masks",
}


def add_item_padding(outputs, targets, *, padded_first=False):
    """Set ``outputs["item_padding"]`` as the interface does: image b has as many real query rows
    as target masks. ``padded_first`` puts the padded rows first (real rows last), a layout an
    adapter gets from its own ``query_index``."""
    pads = {}
    for var, key in ITEM_TARGETS.items():
        n_rows = {
            "queries_language_description": outputs["pred_grounding_query"].shape[1],
            "queries_vision_spatial": outputs["pred_pspatials"].shape[1],
            "queries_interleave_entity": outputs["pred_entity_pixel"].shape[1],
        }[var]
        pad = torch.ones(len(targets), n_rows, dtype=torch.bool)
        for b, t in enumerate(targets):
            n = len(t[key])
            if padded_first:
                pad[b, n_rows - n :] = False
            else:
                pad[b, :n] = False
        pads[var] = pad
    outputs["item_padding"] = pads
    return outputs
