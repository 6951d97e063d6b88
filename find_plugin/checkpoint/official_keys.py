"""Explicit key table: official FIND interface state-dict keys -> ``FINDInterface`` keys.

Official keys live under ``sem_seg_head.predictor.`` (see the manifest in
shared/fixtures/official_find/manifest_focalt_llama.json); ``lang_proj`` / ``logit_scale`` are
stored as ``sem_seg_head.predictor.lang_encoder.*`` (and duplicated as ``sem_seg_head.
lang_encoder.*`` in full checkpoints). The official ``input_proj.{level}`` is a 1x1 conv when the
pixel-decoder width differs from the hidden width (or ``ENFORCE_INPUT_PROJ``), otherwise an
identity without keys; the released FIND models have none.
"""

from typing import Dict

__all__ = ["interface_key_table"]

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
    """Official key (with ``prefix``) -> FINDInterface state-dict key, for an interface of
    ``num_layers`` layers and ``num_levels`` feature levels. Entries whose target key a model
    lacks (e.g. ``input_proj`` when it is the identity) are simply not used by that model."""
    table = {prefix + k: v for k, v in _FIXED.items()}
    for i in range(3):
        for p in ("weight", "bias"):
            table[f"{prefix}mask_embed.layers.{i}.{p}"] = f"heads.mask_embed.layers.{i}.{p}"
    for lvl in range(num_levels):
        table[f"{prefix}mask_sptial_embed.{lvl}"] = f"sampler.mask_sptial_embed.{lvl}"
        for p in ("weight", "bias"):
            table[f"{prefix}input_proj.{lvl}.{p}"] = f"input_proj.{lvl}.{p}"
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
