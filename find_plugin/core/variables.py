"""Task-input kinds: how a variable's rows are created, as a registry of builders.

A :class:`~find_plugin.core.prototypes.VariableSpec` names its kind in ``init``: ``"<kind>"`` or
``"<kind>:<argument>"`` (e.g. ``"copy:queries_vision_image"``). The builder registered under
``<kind>`` (:func:`register_input_kind`) is called as::

    rows = builder(interface, spec, inputs, ctx)

* ``interface``: the :class:`~find_plugin.core.interface.FINDInterface` (its learnable rows);
* ``spec``: the variable's ``VariableSpec``;
* ``inputs``: the task's input dict ``tasks[task_name]`` (read-only mapping);
* ``ctx``: :class:`InputContext` (batch size, device, level features, generator, variables
  built so far);

and returns :class:`VariableRows` (content [B, n, C], pos [B, n, C], padding [B, n] bool or None,
index [B, n] long or None, per-level content or None), or None when the variable is absent for this
call (e.g. the memories without a ``prev_mask``). A new kind of task input is added by registering
a builder; the interface itself is not edited.

Built-in kinds (input keys, conventions of :mod:`find_plugin.core.conventions`):

* ``object_proposals`` / ``image_query`` / ``memories``: learnable rows of the interface; the
  memories are present only when the task input has ``prev_mask`` [B, 1 or M, H/4, W/4] logits.
* ``copy:<variable>``: duplicates the (already built) rows of ``<variable>``; with
  ``count="per_item"`` one copy of its first row per item, ``query_index`` [B, n] long (item id per
  query, NO_ITEM = padding), derived from the other inputs when absent.
* ``tokens``: ``tokens`` [B, T, C] (projected embeddings), optional ``token_padding`` [B, T] bool
  (True = padded), optional ``token_index`` [B, T] long (item id per token; NO_ITEM = none).
* ``legend_tokens``: as ``tokens`` plus ``token_entity`` [B, T] long (entity id per token, any
  negative value = no entity) and ``entity_is_visual`` [B, E] bool; tokens of visual entities get
  the image query's content (and positional embedding) added (official).
* ``visual_prompts``: ``points`` (pre-sampled, see :mod:`find_plugin.core.sampler`) or
  ``pos_masks`` / ``neg_masks`` (list over images of [n_b, H, W] bool prompt masks). Visual
  references on ANOTHER image, two ways: ``prompt_maps`` (per level [B, C, h_l, w_l], the
  ``FeatureLevels.maps`` of the images the prompts are drawn on, batch-padded like the image: the
  points are sampled there; the demo's one-reference case) or ``prompt_tokens`` (tokens already
  sampled by ``interface.sampler`` from other images' features, a list over images of lists over
  levels of ``{"tokens": [P, C], "index": [P] long}``: references from many images, interleave
  retrieval; padded here).

Re-implements (facts from the papers and code, no code copied):
- FIND: Zou et al., "Interfacing Foundation Models' Embeddings", arXiv 2312.07532
  (github.com/UX-Decoder/FIND).
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from .conventions import NO_ITEM, no_item
from .registry import NameRegistry
from .sampler import sample_prompts

if TYPE_CHECKING:
    from .feature_levels import FeatureLevels


@dataclass
class VariableRows:
    """Rows of one variable: content / pos [B, n, C]; padding [B, n] bool (True = padded, None =
    no padding); index [B, n] long item ids (None = the variable has no index); levels: per feature
    level [B, n, C] content that replaces the rows at every layer of that level (None = carried)."""

    content: torch.Tensor
    pos: torch.Tensor
    padding: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None
    levels: Optional[List[torch.Tensor]] = None


@dataclass
class InputContext:
    """What a builder may read besides the task inputs. :attr:`level_features` ``[l]`` [B, C, h, w]
    are the projected features + level embedding (made on first read: only the visual-prompt
    builders read them); ``built`` the variables built so far (by name)."""

    batch_size: int
    device: torch.device
    levels: "FeatureLevels"
    generator: Optional[torch.Generator] = None
    built: Dict[str, VariableRows] = field(default_factory=dict)

    @property
    def level_features(self) -> Sequence[torch.Tensor]:
        return self.levels.maps


Builder = Callable[..., Optional[VariableRows]]
_KINDS: NameRegistry[Builder] = NameRegistry("input kind")


def init_kind(init: str) -> str:
    """``"copy:queries_vision_image"`` -> ``"copy"``; ``"tokens"`` -> ``"tokens"``."""
    return init.split(":", 1)[0]


def register_input_kind(name: str, builder: Builder, *, overwrite: bool = False) -> Builder:
    """Register ``builder`` for ``VariableSpec.init == name`` (or ``name:<argument>``)."""
    if not name or ":" in name:
        raise ValueError(f"input kind name must be non-empty and without ':', got {name!r}")
    if not callable(builder):
        raise TypeError(f"register_input_kind({name!r}): builder must be callable")
    return _KINDS.add(name, builder, overwrite=overwrite)


def unregister_input_kind(name: str) -> None:
    _KINDS.remove(name)


def list_input_kinds() -> List[str]:
    return sorted(_KINDS.names())


def get_input_kind(init: str) -> Builder:
    kind = init_kind(init)
    if kind not in _KINDS:
        raise ValueError(
            f"unknown input kind {kind!r} (init {init!r}); known: {list_input_kinds()}"
        )
    return _KINDS.get(kind)


class _RecordingInputs(Mapping):
    """Read-only view of a task's input dict that records which keys a builder looked up."""

    def __init__(self, inputs: Mapping):
        self._inputs = inputs
        self.read: set = set()

    def __getitem__(self, key):
        self.read.add(key)
        return self._inputs[key]

    def __contains__(self, key) -> bool:
        self.read.add(key)
        return key in self._inputs

    def __iter__(self):
        self.read.update(self._inputs)
        return iter(self._inputs)

    def __len__(self) -> int:
        return len(self._inputs)


def same_input(a, b) -> bool:
    """True when two task-input values are the same object or equal (tensors: same shape, dtype
    and values; lists / tuples / dicts element-wise)."""
    if a is b:
        return True
    if torch.is_tensor(a) or torch.is_tensor(b):
        if not (torch.is_tensor(a) and torch.is_tensor(b)):
            return False
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b.to(a.device))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_input(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_input(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):
        return False


_MISSING = object()


def _check_shared_inputs(name: str, read: set, declarers: Sequence[str], tasks: Mapping) -> None:
    """A variable declared by several requested tasks is fed by the first one's inputs; another
    declaring task may repeat those inputs (same objects or equal values) but not contradict
    them (they would be silently dropped)."""
    first = declarers[0]
    first_inputs = tasks.get(first) or {}
    for other in declarers[1:]:
        other_inputs = tasks.get(other) or {}
        for key in sorted(k for k in read if k in other_inputs):
            if not same_input(first_inputs.get(key, _MISSING), other_inputs[key]):
                raise ValueError(
                    f"tasks {first!r} and {other!r} both feed variable {name!r} but give "
                    f"different task input {key!r}; give the same input to both tasks (or to "
                    f"{first!r} only)"
                )


def build_variables(
    interface, specs, declarers: Mapping[str, Sequence[str]], tasks: Mapping, ctx: InputContext
) -> Dict[str, VariableRows]:
    """Build every variable of ``specs`` (in order) from the inputs of its first declaring task;
    variables whose builder returns None are left out. ``declarers[name]``: the requested tasks
    declaring ``name``, in request order. Checks the shared inputs (:func:`same_input`)."""
    c = interface.hidden_dim
    for spec in specs:
        owner = declarers[spec.name][0]
        inputs = _RecordingInputs(tasks.get(owner) or {})
        rows = get_input_kind(spec.init)(interface, spec, inputs, ctx)
        _check_shared_inputs(spec.name, inputs.read, declarers[spec.name], tasks)
        if rows is None:
            continue
        n = rows.content.shape[1]
        if rows.content.dim() != 3 or rows.content.shape[::2] != (ctx.batch_size, c):
            raise ValueError(
                f"{spec.name}: kind {spec.init!r} built content {tuple(rows.content.shape)}, "
                f"expected [B={ctx.batch_size}, n, {c}]"
            )
        if rows.pos.shape != rows.content.shape:
            raise ValueError(f"{spec.name}: pos {tuple(rows.pos.shape)} != content shape")
        if rows.padding is None:
            rows.padding = torch.zeros(ctx.batch_size, n, dtype=torch.bool, device=ctx.device)
        if rows.padding.shape != (ctx.batch_size, n):
            raise ValueError(f"{spec.name}: padding must be [B, n] = {(ctx.batch_size, n)}")
        if rows.index is not None and rows.index.shape != (ctx.batch_size, n):
            raise ValueError(f"{spec.name}: index must be [B, n] = {(ctx.batch_size, n)}")
        ctx.built[spec.name] = rows
    return ctx.built


# --------------------------------------------------------------------------------------------
# built-in kinds
# --------------------------------------------------------------------------------------------
def _rows(weight: torch.Tensor, bsz: int) -> torch.Tensor:
    return weight[None].expand(bsz, -1, -1)


def _object_proposals(interface, spec, inputs, ctx) -> VariableRows:
    w = slice(0, interface.num_queries)
    return VariableRows(
        _rows(interface.query_feat.weight[w], ctx.batch_size),
        _rows(interface.query_embed.weight[w], ctx.batch_size),
    )


def _image_query(interface, spec, inputs, ctx) -> VariableRows:
    w = slice(interface.num_queries, None)  # the last row of query_feat / query_embed
    return VariableRows(
        _rows(interface.query_feat.weight[w], ctx.batch_size),
        _rows(interface.query_embed.weight[w], ctx.batch_size),
    )


def _memories(interface, spec, inputs, ctx) -> Optional[VariableRows]:
    if inputs.get("prev_mask") is None:
        return None  # memories take part only in a later interaction round
    return VariableRows(
        _rows(interface.memory_feat.weight, ctx.batch_size),
        _rows(interface.memory_embed.weight, ctx.batch_size),
    )


def _item_ids(index: torch.Tensor, device) -> torch.Tensor:
    index = index.to(device).long()
    return index.masked_fill(no_item(index), NO_ITEM)


def _default_counts(spec, inputs) -> List[int]:
    """Items per image when ``query_index`` is absent: prompt masks, points, entities or phrases."""
    if "pos_masks" in inputs:
        return [m.shape[0] for m in inputs["pos_masks"]]
    if "points" in inputs:
        return [int(p["index"].max()) + 1 if len(p["index"]) else 0 for p in inputs["points"][0]]
    if "entity_is_visual" in inputs:
        vis = inputs["entity_is_visual"]
        return [vis.shape[1]] * vis.shape[0]
    if "token_index" in inputs:
        ti = inputs["token_index"].long()
        if inputs.get("token_padding") is not None:
            ti = ti.masked_fill(inputs["token_padding"].bool(), NO_ITEM)
        return [int(r.max()) + 1 if r.numel() else 0 for r in ti]
    raise ValueError(f"{spec.name}: cannot infer the number of queries; give 'query_index'")


def _query_index(spec, inputs, ctx) -> torch.Tensor:
    """[B, n] item id per query (NO_ITEM = padding), given or arange(count) per image."""
    qi = inputs.get("query_index")
    if qi is None:
        counts = _default_counts(spec, inputs)
        n = max(counts + [0])
        qi = torch.full((ctx.batch_size, n), NO_ITEM, dtype=torch.long, device=ctx.device)
        for b, c in enumerate(counts):
            qi[b, :c] = torch.arange(c, device=ctx.device)
    if qi.dim() != 2 or qi.shape[0] not in (1, ctx.batch_size):
        raise ValueError(f"{spec.name}: 'query_index' must be [B={ctx.batch_size}, n]")
    return _item_ids(qi, ctx.device).expand(ctx.batch_size, -1)


def _copy(interface, spec, inputs, ctx) -> VariableRows:
    source = spec.init.split(":", 1)[1] if ":" in spec.init else ""
    if source not in ctx.built:
        raise ValueError(
            f"{spec.name}: init {spec.init!r} copies a variable that is not built before it "
            f"(built so far: {sorted(ctx.built)})"
        )
    src = ctx.built[source]
    if spec.count != "per_item":
        return VariableRows(src.content, src.pos)
    qi = _query_index(spec, inputs, ctx)
    n = qi.shape[1]
    return VariableRows(
        src.content[:, :1].expand(-1, n, -1),
        src.pos[:, :1].expand(-1, n, -1),
        padding=no_item(qi),
        index=qi,
    )


def token_inputs(interface, spec, inputs, ctx):
    """Checked ``tokens`` [B, T, C] and ``token_padding`` [B, T] bool of a task input."""
    if "token_mask" in inputs:
        raise ValueError(
            f"{spec.name}: task input 'token_mask' is now 'token_padding' [B, T] (True = padded)"
        )
    bsz, c = ctx.batch_size, interface.hidden_dim
    tokens = inputs.get("tokens")
    if tokens is None or tokens.dim() != 3 or tokens.shape[0] != bsz or tokens.shape[-1] != c:
        got = None if tokens is None else tuple(tokens.shape)
        raise ValueError(f"{spec.name}: task input 'tokens' must be [B={bsz}, T, {c}], got {got}")
    t = tokens.shape[1]
    pad = inputs.get("token_padding")
    if pad is None:
        pad = torch.zeros(bsz, t, dtype=torch.bool, device=tokens.device)
    if pad.shape != (bsz, t):
        raise ValueError(f"{spec.name}: 'token_padding' must be [B, T] = {(bsz, t)}")
    return tokens, pad.to(tokens.device).bool()


def _tokens(interface, spec, inputs, ctx) -> VariableRows:
    tokens, pad = token_inputs(interface, spec, inputs, ctx)
    index = inputs.get("token_index")
    index = None if index is None else _item_ids(index, ctx.device)
    return VariableRows(tokens, tokens.detach(), padding=pad, index=index)


def _legend_tokens(interface, spec, inputs, ctx) -> VariableRows:
    tokens, pad = token_inputs(interface, spec, inputs, ctx)
    ent, vis = inputs.get("token_entity"), inputs.get("entity_is_visual")
    if ent is None or vis is None:
        raise ValueError(f"{spec.name}: needs 'token_entity' [B, T] and 'entity_is_visual' [B, E]")
    ent = _item_ids(ent, ctx.device)
    vis = vis.to(ctx.device).bool()
    if vis.shape[1] == 0:
        is_vis = torch.zeros_like(ent, dtype=torch.bool)
    else:
        is_vis = ~no_item(ent) & vis.gather(1, ent.clamp(0, vis.shape[1] - 1))
    w = is_vis[..., None].to(tokens.dtype)
    nq = interface.num_queries
    # Official: the image query's content / pos is added to the tokens of visual entities; the
    # pos keeps the (non-detached) text tokens.
    return VariableRows(
        tokens + w * interface.query_feat.weight[nq],
        tokens + w * interface.query_embed.weight[nq],
        padding=pad,
        index=ent,
    )


def _given_prompt_tokens(interface, spec, per_image, ctx) -> List[Dict[str, torch.Tensor]]:
    """Per-image, per-level precomputed prompt tokens -> per level padded {"tokens" [B, P, C],
    "padding" [B, P], "index" [B, P]} (the sampler's output layout)."""
    c, levels = interface.hidden_dim, interface.num_levels
    if len(per_image) != ctx.batch_size or any(len(x) != levels for x in per_image):
        raise ValueError(
            f"{spec.name}: 'prompt_tokens' must list {ctx.batch_size} images, each with "
            f"{levels} levels of {{'tokens': [P, {c}], 'index': [P]}}"
        )
    # one length on every level, as the sampler's output
    p = max([lv["tokens"].shape[0] for x in per_image for lv in x] + [1])
    out = []
    for lvl in range(levels):
        rows = [x[lvl] for x in per_image]
        tokens = torch.zeros(ctx.batch_size, p, c, device=ctx.device)
        index = torch.full((ctx.batch_size, p), NO_ITEM, dtype=torch.long, device=ctx.device)
        for b, r in enumerate(rows):
            n = r["tokens"].shape[0]
            if r["tokens"].dim() != 2 or r["tokens"].shape[-1] != c or r["index"].shape != (n,):
                raise ValueError(
                    f"{spec.name}: prompt_tokens[{b}][{lvl}] must hold 'tokens' [P, {c}] and "
                    f"'index' [P], got {tuple(r['tokens'].shape)} and {tuple(r['index'].shape)}"
                )
            tokens[b, :n] = r["tokens"].to(ctx.device, tokens.dtype)
            index[b, :n] = r["index"].to(ctx.device).long()
        out.append({"tokens": tokens, "padding": no_item(index), "index": index})
    return out


def _visual_prompts(interface, spec, inputs, ctx) -> VariableRows:
    if "prompt_tokens" in inputs:
        lv = _given_prompt_tokens(interface, spec, inputs["prompt_tokens"], ctx)
        return VariableRows(
            lv[0]["tokens"],
            lv[0]["tokens"].detach(),
            padding=torch.stack([x["padding"] for x in lv]).all(0),
            index=lv[0]["index"],
            levels=[x["tokens"] for x in lv],
        )
    if "points" in inputs:
        points = inputs["points"]
    elif "pos_masks" in inputs:
        points = sample_prompts(
            inputs["pos_masks"],
            inputs.get("neg_masks"),
            num_levels=interface.num_levels,
            max_points=interface.sampler.max_points,
            generator=ctx.generator,
        )
    else:
        raise ValueError(f"{spec.name}: give 'points' or 'pos_masks' (and 'neg_masks')")
    lv = interface.sampler(_prompt_maps(spec, inputs, ctx), points)
    p = max(x["tokens"].shape[1] for x in lv)
    for x in lv:  # the same length on every level
        extra = p - x["tokens"].shape[1]
        if extra:
            x["tokens"] = F.pad(x["tokens"], (0, 0, 0, extra))
            x["padding"] = F.pad(x["padding"], (0, extra), value=True)
            x["index"] = F.pad(x["index"], (0, extra), value=NO_ITEM)
    return VariableRows(
        lv[0]["tokens"],
        lv[0]["tokens"].detach(),
        padding=torch.stack([x["padding"] for x in lv]).all(0),
        index=lv[0]["index"],
        levels=[x["tokens"] for x in lv],
    )


def _prompt_maps(spec, inputs, ctx) -> Sequence[torch.Tensor]:
    """The maps the prompt points are sampled in: ``inputs["prompt_maps"]`` when given (same
    levels, batch size and channels as the image's own maps), else the image's own."""
    maps = inputs.get("prompt_maps")
    if maps is None:
        return ctx.level_features
    own = ctx.level_features
    if len(maps) != len(own) or any(
        m.dim() != 4 or m.shape[:2] != o.shape[:2] for m, o in zip(maps, own)
    ):
        raise ValueError(
            f"{spec.name}: 'prompt_maps' must be {len(own)} levels of [B, C, h, w] = "
            f"{[tuple(o.shape[:2]) for o in own]} + (h, w), got "
            f"{[tuple(m.shape) for m in maps]}"
        )
    return [m.to(o.device, o.dtype) for m, o in zip(maps, own)]


for _name, _builder in (
    ("object_proposals", _object_proposals),
    ("image_query", _image_query),
    ("memories", _memories),
    ("copy", _copy),
    ("tokens", _tokens),
    ("legend_tokens", _legend_tokens),
    ("visual_prompts", _visual_prompts),
):
    register_input_kind(_name, _builder)
