"""Explicit key table: official FIND interface state-dict keys -> ``FINDInterface`` keys.

Official keys live under ``sem_seg_head.predictor.`` (see the manifest in
shared/fixtures/official_find/manifest_focalt_llama.json); ``lang_proj`` / ``logit_scale`` are
stored as ``sem_seg_head.predictor.lang_encoder.*`` (and duplicated as ``sem_seg_head.
lang_encoder.*`` in full checkpoints). The official ``input_proj`` is the identity (no keys).
"""

from typing import Dict, Mapping, Tuple

import torch

OFFICIAL_PREFIX = "sem_seg_head.predictor."

_FIXED = {
    "query_feat.weight": "query_feat.weight",
    "query_embed.weight": "query_embed.weight",
    "level_embed.weight": "level_embed.weight",
    "decoder_norm.weight": "heads.decoder_norm.weight",
    "decoder_norm.bias": "heads.decoder_norm.bias",
    "class_embed": "heads.class_embed",
    "pn_indicator.weight": "sampler.pn_indicator.weight",
    "spatial_featured.weight": "memory_feat.weight",
    "spatial_embed.weight": "memory_embed.weight",
    "lang_encoder.lang_proj": "lang_proj",
    "lang_encoder.logit_scale": "logit_scale",
}
_ATTN = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")


def interface_key_table(
    num_layers: int, *, num_levels: int = 3, prefix: str = OFFICIAL_PREFIX
) -> Dict[str, str]:
    """Official key (with ``prefix``) -> FINDInterface state-dict key."""
    table = {prefix + k: v for k, v in _FIXED.items()}
    for i in range(3):
        for p in ("weight", "bias"):
            table[f"{prefix}mask_embed.layers.{i}.{p}"] = f"heads.mask_embed.layers.{i}.{p}"
    for lvl in range(num_levels):
        table[f"{prefix}mask_sptial_embed.{lvl}"] = f"sampler.mask_sptial_embed.{lvl}"
    for n in range(num_layers):
        ca = f"{prefix}content_attention.layers.{n}."
        sa = f"{prefix}condition_attention.layers.{n}."
        ff = f"{prefix}transformer_ffn_layers.{n}."
        mine = f"layers.{n}."
        for a in _ATTN:
            table[ca + "multihead_attn." + a] = mine + "cross_attn." + a
            table[sa + "self_attn." + a] = mine + "self_attn." + a
        for p in ("weight", "bias"):
            table[ca + "norm." + p] = mine + "cross_norm." + p
            table[sa + "norm." + p] = mine + "self_norm." + p
            table[ff + "linear1." + p] = mine + "ffn.linear1." + p
            table[ff + "linear2." + p] = mine + "ffn.linear2." + p
            table[ff + "norm." + p] = mine + "ffn.norm." + p
    return table


def count_official_layers(state_dict: Mapping[str, torch.Tensor], prefix: str = OFFICIAL_PREFIX):
    """Number of interface layers in an official state dict."""
    key = prefix + "transformer_ffn_layers."
    ids = {int(k[len(key) :].split(".")[0]) for k in state_dict if k.startswith(key)}
    if not ids:
        raise KeyError(f"no '{key}*' keys found: not an official FIND state dict")
    return max(ids) + 1


def convert_official_interface(
    state_dict: Mapping[str, torch.Tensor], *, prefix: str = OFFICIAL_PREFIX
) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Select and rename the interface keys. Returns (new state dict, table used).

    Raises KeyError naming the missing official keys."""
    table = interface_key_table(count_official_layers(state_dict, prefix), prefix=prefix)
    missing = [k for k in table if k not in state_dict]
    if missing:
        raise KeyError(f"official state dict lacks interface keys: {missing[:5]} ...")
    return {v: state_dict[k] for k, v in table.items()}, table
