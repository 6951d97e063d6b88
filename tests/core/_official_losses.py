"""Translation of the official criterion inputs of ``losses_small`` to our criterion's API.

The fixture (``shared/fixtures/official_find/losses_small``, see its README) stores exactly what the
official ``SetCriterion.forward(outputs, targets, extra)`` received. This module is the ONE table
that maps those names to ours, plus the replay of the recorded random draws.

Output names: ours are the official ones (spec §1.5), for the final layer and every
``aux_outputs`` entry; we only add ``item_padding``, built from the per-image target counts (the
official losses read the first n_b query rows of image b; the others are padding).

Layer names: official ``loss_<name>_0`` is the final layer (our ``loss_<name>``) and official
``_k`` (k >= 1) is ``aux_outputs[::-1][k - 1]``, i.e. our ``loss_<name>_{n_aux - k}``.
"""

from typing import Callable, Dict, List, Optional, Sequence

import torch

#: Output keys read by our criterion; our name == official name (no renaming).
OUTPUT_KEYS = (
    "pred_logits",
    "pred_masks",
    "pred_gmasks",
    "pred_smasks",
    "pred_imasks",
    "pred_captions",
    "pred_gtexts",
    "pred_grounding_query",
    "pred_retrievals",
    "pred_retrievals_lang",
    "pred_interleave_image",
    "pred_interleave_objects",
    "pred_entity_class",
    "pred_smaskembs",
    "pred_pspatials",
    "pred_imaskembs",
    "pred_entity_pixel",
)

#: our target key <- official target key (per image; see :func:`official_targets_to_ours`).
TARGET_TABLE: Dict[str, str] = {
    "labels": "labels",
    "masks": "masks",
    "spatial_masks": "gt_spatial_masks",
    "grounding_masks": "grounding_masks",  # official None (no grounding) -> [0, H, W]
    "grounding_hash": "grounding_hash",
    "grounding_task": "grounding_task",
    "interleave_masks": "interleave_masks",
    "caption_tokens": "caption_tokens",  # official [1, 77, D] -> [77, D]
    "caption_valid": "caption_mask",  # official [1, 77] 0/1 -> [77] bool
    # interleave_is_visual [E_b] bool <- extra["interleave_isvisual"][:E_b, b] (batch-level there)
}

#: our item-padding variable <- the per-image target masks counting its real rows.
ITEM_COUNTS: Dict[str, str] = {
    "queries_language_description": "grounding_masks",
    "queries_vision_spatial": "spatial_masks",
    "queries_interleave_entity": "interleave_masks",
}


def official_targets_to_ours(targets: Sequence[dict], isvisual: torch.Tensor) -> List[dict]:
    """Official ``prepare_targets`` dicts + ``extra['interleave_isvisual']`` [E_max, B] -> ours."""
    ours = []
    for b, t in enumerate(targets):
        d = {mine: t[theirs] for mine, theirs in TARGET_TABLE.items()}
        if d["grounding_masks"] is None:
            d["grounding_masks"] = torch.zeros(
                (0,) + tuple(t["masks"].shape[-2:]), dtype=torch.bool
            )
            d["grounding_hash"] = torch.zeros(0, dtype=torch.int64)
        d["caption_tokens"] = d["caption_tokens"][0]
        d["caption_valid"] = d["caption_valid"][0].bool()
        d["interleave_is_visual"] = isvisual[: len(t["interleave_masks"]), b].bool()
        ours.append(d)
    return ours


def official_outputs_to_ours(outputs: dict, targets: Sequence[dict]) -> dict:
    """Official criterion outputs (final layer + ``aux_outputs``) -> ours with ``item_padding``."""

    def layer(out):
        return {k: out[k] for k in OUTPUT_KEYS}

    ours = layer(outputs)
    ours["aux_outputs"] = [layer(a) for a in outputs["aux_outputs"]]
    padding = {}
    for var, key in ITEM_COUNTS.items():
        width = {
            "queries_language_description": outputs["pred_grounding_query"].shape[1],
            "queries_vision_spatial": outputs["pred_pspatials"].shape[1],
            "queries_interleave_entity": outputs["pred_entity_pixel"].shape[1],
        }[var]
        counts = torch.tensor([len(t[key]) for t in targets])
        padding[var] = torch.arange(width)[None, :] >= counts[:, None]
    ours["item_padding"] = padding
    return ours


def our_key(official_key: str, num_aux: int) -> str:
    """``loss_<name>_<k>`` (official layer k) -> our key for the same layer."""
    stem, k = official_key.rsplit("_", 1)
    k = int(k)
    return stem if k == 0 else f"{stem}_{num_aux - k}"


class DrawReplay:
    """A ``rand_fn`` serving the official draws in their recorded order.

    Each draw is regenerated bit-exactly from its seed. A recorded draw with zero elements that we
    do not make is skipped (it carries no random number; we do not sample an empty matched set).
    Any other mismatch of shape or count fails.
    """

    def __init__(self, draws: Sequence[dict]):
        self.draws = list(draws)
        self.pos = 0
        self.skipped = 0

    def __call__(self, shape, *, device=None, dtype=torch.float32) -> torch.Tensor:
        shape = [int(s) for s in shape]
        while True:
            assert self.pos < len(self.draws), f"extra draw of shape {shape}"
            rec = self.draws[self.pos]
            self.pos += 1
            if rec["shape"] == shape:
                break
            assert 0 in rec["shape"], (
                f"draw {rec['index']} ({rec['context']}, layer {rec['layer']}): official shape "
                f"{rec['shape']}, ours {shape}"
            )
            self.skipped += 1
        assert dtype == torch.float32
        gen = torch.Generator().manual_seed(rec["seed"])
        return torch.rand(shape, generator=gen, dtype=torch.float32).to(device)

    def finished(self) -> bool:
        rest = self.draws[self.pos :]
        return all(0 in r["shape"] for r in rest)


def recording_matcher(record: List, name: str, matcher_cls: Callable, **kw):
    """A matcher of ``matcher_cls`` that appends ``(name, indices)`` of every image it solves."""

    class _Recording(matcher_cls):
        def assign(self, class_cost, mask_cost, _name: Optional[str] = name):
            out = super().assign(class_cost, mask_cost)
            record.append((_name, out[0].tolist(), out[1].tolist()))
            return out

    return _Recording(**kw)
