"""Official FIND configuration -> our model sections (the one translation of official configs).

:func:`find_config_from_official` reads an official resolved config (e.g. ``config.json
["resolved"]`` of the parity fixture, or a parsed ``configs/find/*.yaml``) through the key tables
of :mod:`find_plugin.presets` and returns the ``build_find_model`` sections.

:func:`infer_find_config` recovers the architecture of an official *checkpoint* from its key names
and shapes: it writes what the tensors reveal as an official config (the same dotted keys) and
hands it to :func:`find_config_from_official`, with a preset for the values that leave no trace in
the tensors (head counts, post-LN, modulator scaling, drop rates).
"""

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..presets import SECTION_KEYS, resolve_find_config

__all__ = ["find_config_from_official", "infer_find_config"]

_MISSING = object()
_PIX = "sem_seg_head.pixel_decoder."
_PRED = "sem_seg_head.predictor."
_SUPPORTED_BACKBONES = ("focal_dw", "focal")
_SUPPORTED_PIXEL_DECODERS = ("transformer_encoder_fpn",)


def _lookup(node: Any, parts: List[str]) -> Any:
    # Longest matching key first: "MODEL.DECODER" before "MODEL".
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if isinstance(node, Mapping) and head in node:
            found = node[head] if i == len(parts) else _lookup(node[head], parts[i:])
            if found is not _MISSING:
                return found
    return _MISSING


def official_value(official: Mapping[str, Any], path: str, default: Any = _MISSING) -> Any:
    """Value at the dotted ``path`` of an official config, nested (``{"MODEL": {"DECODER": ..}}``)
    or with flattened sub-configs (``{"MODEL.DECODER": {...}}``, as in the fixture's
    ``resolved``). Raises KeyError naming ``path`` when absent and no ``default`` is given."""
    found = _lookup(official, path.split("."))
    if found is _MISSING:
        if default is _MISSING:
            raise KeyError(f"official config has no {path!r}")
        return default
    return found


def find_config_from_official(
    official: Mapping[str, Any], *, defaults: Optional[Mapping[str, Mapping[str, Any]]] = None
) -> Dict[str, Dict[str, Any]]:
    """Official resolved config -> ``{"backbone", "pixel_decoder", "interface"}`` sections.

    Args:
        official: official config (nested or with flattened ``"MODEL.DECODER"``-style keys).
        defaults: sections whose values fill keywords the official config does not give (keys
            the official code hard-codes, or every key for a partial config). Without it, a
            missing official key is an error.

    Raises:
        KeyError: official keys missing (all listed) and not covered by ``defaults``.
        ValueError: a backbone other than FocalNet or a pixel decoder other than
            ``transformer_encoder_fpn``.
    """
    for path, allowed in (
        ("MODEL.BACKBONE.NAME", _SUPPORTED_BACKBONES),
        ("MODEL.ENCODER.NAME", _SUPPORTED_PIXEL_DECODERS),
    ):
        name = official_value(official, path, None)
        if name is not None and name not in allowed:
            raise ValueError(f"official {path} = {name!r} is not supported (expected {allowed})")
    out: Dict[str, Dict[str, Any]] = {}
    missing: List[str] = []
    for section, keys in SECTION_KEYS.items():
        base = dict((defaults or {}).get(section, {}))
        out[section] = {}
        for key in keys:
            value = _lookup(official, key.official.split(".")) if key.official else _MISSING
            if value is not _MISSING:
                out[section][key.kwarg] = key.from_official(value)
            elif key.kwarg in base:
                out[section][key.kwarg] = base[key.kwarg]
            elif key.official is not None:
                missing.append(f"{key.official} ({section}.{key.kwarg})")
    if missing:
        raise KeyError(f"official config lacks {len(missing)} key(s): {', '.join(missing)}")
    return out


# ------------------------------------------------------------------------------------------------
# architecture inference from an official state dict
# ------------------------------------------------------------------------------------------------
def _count(sd: Mapping[str, Any], pattern: str) -> int:
    ids = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    return max(ids) + 1 if ids else 0


class _OfficialWriter:
    """Builds a nested official config; a path written twice must get the same value (two tensors
    that both reveal e.g. ``MODEL.ENCODER.MASK_DIM`` must agree)."""

    def __init__(self):
        self.cfg: Dict[str, Any] = {}
        self._source: Dict[str, str] = {}

    def put(self, path: str, value: Any, source: str) -> None:
        node = self.cfg
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        if leaf in node and node[leaf] != value:
            raise ValueError(
                f"inconsistent official checkpoint: {path} is {node[leaf]} from "
                f"{self._source[path]!r} but {value} from {source!r}"
            )
        node[leaf] = value
        self._source[path] = source


def _shape(sd: Mapping[str, Any], key: str) -> Tuple[int, ...]:
    if key not in sd:
        raise KeyError(f"cannot infer the architecture: key {key!r} not in the checkpoint")
    return tuple(sd[key].shape)


def _infer_backbone(sd: Mapping[str, Any], w: _OfficialWriter) -> None:
    b, f = "backbone.", "MODEL.BACKBONE.FOCAL."
    stem = b + "patch_embed.proj.weight"
    embed = _shape(sd, stem)
    dw = b + "layers.0.blocks.0.dw1.weight"
    w.put("MODEL.BACKBONE.NAME", "focal_dw" if dw in sd else "focal", dw)
    w.put(f + "EMBED_DIM", embed[0], stem)
    blocks = [rf"backbone\.layers\.{i}\.blocks\.(\d+)\." for i in range(4)]
    w.put(f + "DEPTHS", [_count(sd, p) for p in blocks], "backbone.layers.*.blocks.*")
    levels = [
        rf"backbone\.layers\.{i}\.blocks\.0\.modulation\.focal_layers\.(\d+)\." for i in range(4)
    ]
    w.put(f + "FOCAL_LEVELS", [_count(sd, p) for p in levels], "modulation.focal_layers.*")
    windows = [b + f"layers.{i}.blocks.0.modulation.focal_layers.0.0.weight" for i in range(4)]
    w.put(f + "FOCAL_WINDOWS", [_shape(sd, k)[-1] for k in windows], windows[0])
    # Only the 7x7 conv stem differs from a patch_size x patch_size (=4) patchify conv.
    w.put(f + "USE_CONV_EMBED", embed[-1] != 4, stem)
    w.put(f + "PATCH_NORM", b + "patch_embed.norm.weight" in sd, b + "patch_embed.norm.weight")
    fc1 = b + "layers.0.blocks.0.mlp.fc1.weight"
    w.put(f + "MLP_RATIO", _shape(sd, fc1)[0] / _shape(sd, fc1)[1], fc1)
    w.put(f + "USE_LAYERSCALE", b + "layers.0.blocks.0.gamma_1" in sd, "gamma_1")
    ln = b + "layers.0.blocks.0.modulation.ln.weight"
    w.put(f + "USE_POSTLN_IN_MODULATION", ln in sd, ln)
    w.put(f + "OUT_INDICES", [i for i in range(4) if f"{b}norm{i}.weight" in sd], "backbone.norm*")


def _infer_pixel_decoder(sd: Mapping[str, Any], w: _OfficialWriter) -> None:
    e = "MODEL.ENCODER."
    w.put(e + "CONVS_DIM", _shape(sd, _PIX + "input_proj.weight")[0], _PIX + "input_proj.weight")
    mask = _PIX + "mask_features.weight"
    w.put(e + "MASK_DIM", _shape(sd, mask)[0], mask)
    w.put(e + "NORM", "GN" if _PIX + "adapter_1.norm.weight" in sd else "", "adapter_1.norm")
    enc = re.escape(_PIX) + r"transformer\.encoder\.layers\.(\d+)\."
    w.put(e + "TRANSFORMER_ENC_LAYERS", _count(sd, enc), "transformer.encoder.layers.*")
    ffn = _PIX + "transformer.encoder.layers.0.linear1.weight"
    if ffn in sd:
        w.put("MODEL.DECODER.DIM_FEEDFORWARD", _shape(sd, ffn)[0], ffn)


def _infer_interface(sd: Mapping[str, Any], w: _OfficialWriter) -> Optional[int]:
    """Writes the decoder keys; returns the number of spatial levels (not an official key)."""
    d = "MODEL.DECODER."
    query = _PRED + "query_feat.weight"
    if query not in sd:
        return None
    n_query, hidden = _shape(sd, query)
    w.put(d + "HIDDEN_DIM", hidden, query)
    w.put(d + "NUM_OBJECT_QUERIES", n_query, query)
    n_layers = _count(sd, re.escape(_PRED) + r"transformer_ffn_layers\.(\d+)\.")
    w.put(d + "DEC_LAYERS", n_layers + 1, "transformer_ffn_layers.*")
    mask_embed = _PRED + "mask_embed.layers.2.weight"
    w.put("MODEL.ENCODER.MASK_DIM", _shape(sd, mask_embed)[0], mask_embed)
    w.put("MODEL.DIM_PROJ", _shape(sd, _PRED + "class_embed")[1], _PRED + "class_embed")
    ffn = _PRED + "transformer_ffn_layers.0.linear1.weight"
    if ffn in sd:
        w.put(d + "DIM_FEEDFORWARD", _shape(sd, ffn)[0], ffn)
    memories = _PRED + "spatial_featured.weight"
    if memories in sd:
        w.put("ATTENTION_ARCH.SPATIAL_MEMORIES", _shape(sd, memories)[0], memories)
    proj = _PRED + "input_proj.0.weight"
    if proj in sd:
        # A 1x1 projection exists when the maps are not hidden_dim wide or when it is enforced.
        in_channels = _shape(sd, proj)[1]
        w.put("MODEL.ENCODER.CONVS_DIM", in_channels, proj)
        w.put(d + "ENFORCE_INPUT_PROJ", in_channels == hidden, proj)
    else:
        w.put(d + "ENFORCE_INPUT_PROJ", False, f"no {proj}")
        if _PIX + "input_proj.weight" not in sd:
            # Identity projection: the maps are hidden_dim wide.
            w.put("MODEL.ENCODER.CONVS_DIM", hidden, f"no {proj}")
    return _count(sd, re.escape(_PRED) + r"mask_sptial_embed\.(\d+)$")


def infer_find_config(sd: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """``build_find_model`` sections from the key names and shapes of an official state dict
    (wrapper prefix already stripped). Untraceable values come from the ``focalt_llama`` /
    ``focall_llama`` preset (by backbone style).

    Raises:
        KeyError: a key needed to read a present group is absent (names it).
        ValueError: two tensors disagree on one official config value (names both).
    """
    w = _OfficialWriter()
    if any(k.startswith("backbone.") for k in sd):
        _infer_backbone(sd, w)
    if any(k.startswith(_PIX) for k in sd):
        _infer_pixel_decoder(sd, w)
    num_levels = _infer_interface(sd, w)
    lang_proj = _PRED + "lang_encoder.lang_proj"
    if lang_proj in sd:
        w.put("MODEL.TEXT.WIDTH", _shape(sd, lang_proj)[0], lang_proj)
    style = official_value(w.cfg, "MODEL.BACKBONE.NAME", "focal_dw")
    preset = resolve_find_config("focall_llama" if style == "focal" else "focalt_llama")
    cfg = find_config_from_official(w.cfg, defaults=preset)
    if num_levels:
        # Not an official config value (the official interface always has 3 levels).
        cfg["interface"]["num_levels"] = num_levels
    return cfg
