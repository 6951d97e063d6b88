"""The FIND interface: all requested tasks in ONE forward pass over one combined sequence.

Forward API (``FINDInterface.forward``)::

    outputs = interface(features, mask_features, tasks, class_bank=None, generator=None)

* ``features``: list of 3 multi-scale maps [B, C, h_l, w_l], level 0 = stride 32, then 16, 8
  (C = hidden_dim). Layer i reads level ``i % 3``.
* ``mask_features``: [B, mask_dim, H/4, W/4] (stride 4).
* ``tasks``: dict task name -> dict of inputs ('seg' is always run, its dict may be omitted).
  Built-in tasks and their inputs (conventions of :mod:`find_plugin.core.prototypes`):

  - ``"class"``: ``tokens`` [B, T, C], ``token_mask`` [B, T] (True = padding), optional
    ``class_indexes`` [B] long (training: row of the class bank refreshed by this image).
  - ``"grounding"``: ``tokens``, ``token_mask``, ``token_index`` [B, T] (phrase id per token),
    optional ``query_index`` [B, P] (phrase id per description query, -1 = padding; default
    arange(max token_index + 1) per image).
  - ``"retrieval"``: ``tokens``, ``token_mask`` (caption tokens).
  - ``"spatial"``: ``pos_masks`` / ``neg_masks`` (list over images of [n_b, Hm, Wm] bool) or
    pre-sampled ``points`` (see :mod:`find_plugin.core.sampler`), optional ``query_index``
    [B, n] (default arange(n_b)), optional ``prev_mask`` [B, 1 or M, H/4, W/4] logits (enables
    the memories, official multi-round interaction).
  - ``"interleave"`` / ``"interleave_retrieval"``: ``tokens``, ``token_mask``, ``token_entity``
    [B, T] (entity id per token, -4 = none), ``entity_is_visual`` [B, E] bool, ``pos_masks`` /
    ``neg_masks`` or ``points`` for the visual entities (prompt index = entity id), optional
    ``query_index`` [B, E].

  Token embeddings are already projected to ``dim_proj`` (use :meth:`project_tokens`).
* ``class_bank``: [K, dim_proj] class embeddings (last row = background); needed for
  ``pred_logits``. In training with ``tasks["class"]["class_indexes"]`` each layer overwrites the
  sampled rows with that layer's class query (gradient flows); ``outputs["class_bank"]`` is the
  refreshed bank, detached, to store for the next step.

Returns a dict with the named outputs of spec §1.5 present for the requested tasks (each
(B, n, ...); masks (B, n, H/4, W/4)), ``aux_outputs`` (list: heads on the initial queries, then
after every layer but the last; the top level is the last layer), ``item_padding`` (variable name
-> [B, n] bool, True = padded per-item query) and optionally ``class_bank``.
"""

from typing import Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import attention_mask as am
from .class_bank import ClassBank
from .heads import PredictionHeads, cosine_logits
from .layers import FFN, MaskedAttention, sine_position_encoding
from .prototypes import IMAGE_QUERY, OBJECT, VariableSpec, merge_prototypes, variable_owner
from .sampler import PAD_INDEX, VisualPromptSampler, sample_prompts


class InterfaceLayer(nn.Module):
    """content attention (cross) -> condition attention (self) -> FFN, post-norm, dropout 0."""

    def __init__(self, *, dim: int, num_heads: int, dim_feedforward: int):
        super().__init__()
        self.cross_attn = MaskedAttention(dim=dim, num_heads=num_heads)
        self.cross_norm = nn.LayerNorm(dim)
        self.self_attn = MaskedAttention(dim=dim, num_heads=num_heads)
        self.self_norm = nn.LayerNorm(dim)
        self.ffn = FFN(dim=dim, hidden=dim_feedforward)


class FINDInterface(nn.Module):
    """The trainable FIND interface (+ ``lang_proj`` and ``logit_scale``)."""

    def __init__(
        self,
        *,
        hidden_dim: int = 512,
        num_heads: int = 8,
        dim_feedforward: int = 2048,
        num_layers: int = 9,
        num_queries: int = 100,
        mask_dim: int = 512,
        dim_proj: int = 512,
        dim_text: int = 4096,
        num_memories: int = 32,
        num_levels: int = 3,
        max_spatial_points: int = 512,
        pool_image_query: bool = True,
    ):
        super().__init__()
        if dim_proj != hidden_dim:
            raise ValueError("dim_proj must equal hidden_dim (tokens share the self-attention)")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.num_queries = num_queries
        self.num_levels = num_levels
        self.pool_image_query = pool_image_query
        # rows 0..num_queries-1: object proposals; last row: the image query.
        self.query_feat = nn.Embedding(num_queries + 1, hidden_dim)
        self.query_embed = nn.Embedding(num_queries + 1, hidden_dim)
        self.level_embed = nn.Embedding(num_levels, hidden_dim)
        self.memory_feat = nn.Embedding(num_memories, hidden_dim)
        self.memory_embed = nn.Embedding(num_memories, hidden_dim)
        self.sampler = VisualPromptSampler(
            hidden_dim=hidden_dim, num_levels=num_levels, max_points=max_spatial_points
        )
        self.layers = nn.ModuleList(
            InterfaceLayer(dim=hidden_dim, num_heads=num_heads, dim_feedforward=dim_feedforward)
            for _ in range(num_layers)
        )
        self.heads = PredictionHeads(hidden_dim=hidden_dim, dim_proj=dim_proj, mask_dim=mask_dim)
        self.lang_proj = nn.Parameter(torch.empty(dim_text, dim_proj))
        nn.init.trunc_normal_(self.lang_proj, std=0.02)
        self.logit_scale = nn.Parameter(torch.ones([]))

    def project_tokens(self, token_features: torch.Tensor) -> torch.Tensor:
        """Encoder token features [..., dim_text] -> [..., dim_proj] (plain matmul, no norm)."""
        return token_features.to(self.lang_proj.dtype) @ self.lang_proj

    # ----------------------------------------------------------------------------------------
    # sequence construction
    # ----------------------------------------------------------------------------------------
    def _token_inputs(self, spec, inp, bsz):
        tokens = inp.get("tokens")
        if tokens is None or tokens.dim() != 3 or tokens.shape[0] != bsz:
            raise ValueError(f"{spec.name}: task input 'tokens' must be [B={bsz}, T, C]")
        if tokens.shape[-1] != self.hidden_dim:
            raise ValueError(f"{spec.name}: 'tokens' last dim must be {self.hidden_dim}")
        t = tokens.shape[1]
        pad = inp.get("token_mask")
        pad = torch.zeros(bsz, t, dtype=torch.bool, device=tokens.device) if pad is None else pad
        if pad.shape != (bsz, t):
            raise ValueError(f"{spec.name}: 'token_mask' must be [B, T] = {(bsz, t)}")
        return tokens, pad.bool()

    def _query_index(self, spec, inp, bsz, device, default_counts):
        qi = inp.get("query_index")
        if qi is None:
            n = max([int(c) for c in default_counts] + [0])
            qi = torch.full((bsz, n), -1, dtype=torch.long, device=device)
            for b, c in enumerate(default_counts):
                qi[b, : int(c)] = torch.arange(int(c), device=device)
        qi = qi.to(device).long()
        if qi.dim() != 2:
            raise ValueError(f"{spec.name}: 'query_index' must be [B, n]")
        return qi.expand(bsz, -1) if qi.shape[0] == 1 else qi

    def _visual_points(self, spec, inp, level_feats, generator):
        if "points" in inp:
            return inp["points"]
        if "pos_masks" not in inp:
            raise ValueError(f"{spec.name}: give 'points' or 'pos_masks' (and 'neg_masks')")
        return sample_prompts(
            inp["pos_masks"],
            inp.get("neg_masks"),
            num_levels=self.num_levels,
            max_points=self.sampler.max_points,
            generator=generator,
        )

    def _build_variables(self, specs, owner, tasks, bsz, level_feats, generator):
        """Per variable: dict(content, pos, padding, index, levels) with [B, n, C] tensors."""
        c = self.hidden_dim
        dev = level_feats[0].device
        nq = self.num_queries
        built: Dict[str, dict] = {}

        def rows(weight):
            return weight[None].expand(bsz, -1, -1)

        for spec in specs:
            inp = tasks.get(owner[spec.name], {}) or {}
            var = {"index": None, "levels": None}
            if spec.init == "object_proposals":
                var["content"] = rows(self.query_feat.weight[:nq])
                var["pos"] = rows(self.query_embed.weight[:nq])
            elif spec.init == "image_query":
                var["content"] = rows(self.query_feat.weight[nq:])
                var["pos"] = rows(self.query_embed.weight[nq:])
            elif spec.init == "memories":
                var["content"] = rows(self.memory_feat.weight)
                var["pos"] = rows(self.memory_embed.weight)
            elif spec.init.startswith("copy:"):
                src = built[spec.init[5:]]
                if spec.count == "per_item":
                    qi = self._query_index(spec, inp, bsz, dev, self._default_counts(spec, inp))
                    n = qi.shape[1]
                    var["content"] = src["content"][:, :1].expand(-1, n, -1)
                    var["pos"] = src["pos"][:, :1].expand(-1, n, -1)
                    var["index"] = qi
                    var["padding"] = qi < 0
                else:
                    var["content"], var["pos"] = src["content"], src["pos"]
            elif spec.init == "tokens":
                tokens, pad = self._token_inputs(spec, inp, bsz)
                var["content"], var["pos"], var["padding"] = tokens, tokens.detach(), pad
                if "token_index" in inp:
                    var["index"] = inp["token_index"].to(dev).long()
            elif spec.init == "legend_tokens":
                tokens, pad = self._token_inputs(spec, inp, bsz)
                ent = inp.get("token_entity")
                vis = inp.get("entity_is_visual")
                if ent is None or vis is None:
                    raise ValueError(f"{spec.name}: needs 'token_entity' and 'entity_is_visual'")
                ent = ent.to(dev).long()
                vis = vis.to(dev).bool()
                if vis.shape[1] == 0:
                    is_vis = torch.zeros_like(ent, dtype=torch.bool)
                else:
                    is_vis = (ent >= 0) & vis.gather(1, ent.clamp(0, vis.shape[1] - 1))
                w = is_vis[..., None].to(tokens.dtype)
                # Official: image-query content / pos added to tokens of visual entities; the
                # pos keeps the (non-detached) text tokens.
                var["content"] = tokens + w * self.query_feat.weight[nq]
                var["pos"] = tokens + w * self.query_embed.weight[nq]
                var["padding"], var["index"] = pad, ent
            elif spec.init == "visual_prompts":
                points = self._visual_points(spec, inp, level_feats, generator)
                lv = self.sampler(level_feats, points)
                p = max(x["tokens"].shape[1] for x in lv)
                for x in lv:  # same length on every level
                    extra = p - x["tokens"].shape[1]
                    if extra:
                        x["tokens"] = F.pad(x["tokens"], (0, 0, 0, extra))
                        x["padding"] = F.pad(x["padding"], (0, extra), value=True)
                        x["index"] = F.pad(x["index"], (0, extra), value=PAD_INDEX)
                var["levels"] = [x["tokens"] for x in lv]
                var["content"] = lv[0]["tokens"]
                var["pos"] = lv[0]["tokens"].detach()
                var["padding"] = torch.stack([x["padding"] for x in lv]).all(0)
                var["index"] = lv[0]["index"]
            else:  # pragma: no cover - guarded by VariableSpec validation
                raise ValueError(spec.init)
            n = var["content"].shape[1]
            if "padding" not in var:
                var["padding"] = torch.zeros(bsz, n, dtype=torch.bool, device=dev)
            if var["content"].shape[-1] != c:
                raise ValueError(f"{spec.name}: embedding dim must be {c}")
            built[spec.name] = var
        return built

    @staticmethod
    def _default_counts(spec, inp):
        if "query_index" in inp:
            return []
        if "pos_masks" in inp:
            return [m.shape[0] for m in inp["pos_masks"]]
        if "points" in inp:
            return [int(p["index"].max()) + 1 if len(p["index"]) else 0 for p in inp["points"][0]]
        if "entity_is_visual" in inp:
            return [inp["entity_is_visual"].shape[1]] * inp["entity_is_visual"].shape[0]
        if "token_index" in inp:
            ti = inp["token_index"].long()
            if inp.get("token_mask") is not None:
                ti = ti.masked_fill(inp["token_mask"].bool(), -1)
            return [int(r.max()) + 1 if r.numel() else 0 for r in ti]
        raise ValueError(f"{spec.name}: cannot infer the number of queries; give 'query_index'")

    # ----------------------------------------------------------------------------------------
    # forward
    # ----------------------------------------------------------------------------------------
    def forward(
        self,
        features: Sequence[torch.Tensor],
        mask_features: torch.Tensor,
        tasks: Optional[Mapping[str, Mapping]] = None,
        *,
        class_bank: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Dict:
        tasks = dict(tasks or {})
        if len(features) != self.num_levels:
            raise ValueError(f"features: expected {self.num_levels} levels, got {len(features)}")
        bsz = features[0].shape[0]
        for lvl, f in enumerate(features):
            if f.dim() != 4 or f.shape[:2] != (bsz, self.hidden_dim):
                raise ValueError(f"features[{lvl}] must be [B, {self.hidden_dim}, h, w]")
        if mask_features.dim() != 4 or mask_features.shape[0] != bsz:
            raise ValueError("mask_features must be [B, mask_dim, H/4, W/4]")

        specs = merge_prototypes(tasks)
        owner = variable_owner(tasks)
        specs = [
            s
            for s in specs
            if s.init != "memories" or tasks.get(owner[s.name], {}).get("prev_mask") is not None
        ]
        # image features of every level: src [B, hw, C] (+ level embedding), pos [B, hw, C]
        level_feats, srcs, poss, sizes = [], [], [], []
        for lvl, f in enumerate(features):
            f = f + self.level_embed.weight[lvl][None, :, None, None]
            level_feats.append(f)
            srcs.append(f.flatten(2).transpose(1, 2))
            pe = sine_position_encoding(f, num_pos_feats=self.hidden_dim // 2)
            poss.append(pe.flatten(2).transpose(1, 2))
            sizes.append(tuple(f.shape[-2:]))

        built = self._build_variables(specs, owner, tasks, bsz, level_feats, generator)
        layout, seq = self._layout(specs, built)
        content, pos = seq["content"], seq["pos"]
        dev = content.device

        swaps = self._sample_swaps(specs, layout, generator)
        self_allowed = am.self_attention_allowed(layout, swaps)
        token_allowed = am.token_cross_allowed(layout)
        modes = am.image_modes(layout)
        cross_idx = torch.cat([layout.rows(s.name) for s in specs if s.cross is not None])
        key_idx = torch.nonzero(token_allowed.any(0).any(0)).flatten()
        token_allowed = token_allowed[:, cross_idx][:, :, key_idx]

        out_specs = [s for s in specs if s.outputs]
        out_rows = torch.cat([layout.rows(s.name) for s in out_specs])
        out_pos, mask_specs, off = {}, [], 0
        for s in out_specs:
            n = layout.slices[s.name][1] - layout.slices[s.name][0]
            out_pos[s.name] = (off, off + n)
            off += n
        mask_specs = [s for s in out_specs if any(sp == "mask" for _, sp in s.outputs)]
        mask_rows_out = torch.cat([torch.arange(*out_pos[s.name], device=dev) for s in mask_specs])
        mask_pos, off = {}, 0
        for s in mask_specs:
            n = out_pos[s.name][1] - out_pos[s.name][0]
            mask_pos[s.name] = (off, off + n)
            off += n
        mask_rows_seq = out_rows[mask_rows_out]
        object_slice = out_pos[OBJECT]
        image_row = out_pos[IMAGE_QUERY][0] if self.pool_image_query else None

        memory_rows, memory_blocked = None, None
        mem = next((s for s in specs if s.init == "memories"), None)
        if mem is not None:
            memory_rows = layout.rows(mem.name)
            prev = tasks[owner[mem.name]]["prev_mask"].to(content.dtype)
            n_mem = layout.slices[mem.name][1] - layout.slices[mem.name][0]
            if prev.dim() != 4 or prev.shape[0] != bsz or prev.shape[1] not in (1, n_mem):
                raise ValueError(
                    f"tasks[{owner[mem.name]!r}]['prev_mask'] must be [B={bsz}, 1 or {n_mem}, "
                    "h, w] mask logits (one per memory or one shared), "
                    f"got {tuple(prev.shape)}"
                )
            memory_blocked = [
                (F.interpolate(prev, size=sz, mode="bilinear", align_corners=False).sigmoid() < 0.5)
                .flatten(2)
                .detach()
                for sz in sizes
            ]

        reset_rows = torch.zeros(layout.length, dtype=torch.bool, device=dev)
        reset_content = [[] for _ in range(self.num_levels)]
        for s in specs:
            v = built[s.name]
            for lvl in range(self.num_levels):
                reset_content[lvl].append(v["levels"][lvl] if v["levels"] else v["content"])
            if v["levels"]:
                r0, r1 = layout.slices[s.name]
                reset_rows[r0:r1] = True
        has_reset = bool(reset_rows.any())
        if has_reset:
            reset_content = [torch.cat(x, 1) for x in reset_content]

        class_rows = None
        refresh = None
        if class_bank is not None and self.training and "class" in tasks:
            idx = tasks["class"].get("class_indexes")
            if idx is not None and "queries_language_class" in out_pos:
                class_rows = out_pos["queries_language_class"][0]
                refresh = idx.to(dev).long()

        predictions: List[Dict] = []
        bank_state = {"bank": class_bank}

        def run_heads(x, attn_size):
            h = self.heads(
                x[:, out_rows],
                mask_features,
                object_slice=object_slice,
                image_row=image_row,
                mask_rows=mask_rows_out,
                attn_size=attn_size,
            )
            bank = class_bank
            if refresh is not None:
                bank = ClassBank.refreshed(class_bank, h["semantic"][:, class_rows], refresh)
                bank_state["bank"] = bank
            predictions.append(self._organize(h, out_specs, out_pos, mask_pos, bank))
            return h["attn_blocked"]

        blocked = run_heads(content, sizes[0])
        for i, layer in enumerate(self.layers):
            lvl = i % self.num_levels
            if has_reset:
                lv = reset_content[lvl]
                content = torch.where(reset_rows[None, :, None], lv, content)
                pos = torch.where(reset_rows[None, :, None], lv.detach(), pos)
            hw = srcs[lvl].shape[1]
            img_allowed = am.image_allowed(
                modes,
                hw,
                batch=bsz,
                mask_rows=mask_rows_seq,
                mask_blocked=blocked,
                memory_rows=memory_rows,
                memory_blocked=None if memory_blocked is None else memory_blocked[lvl],
            )
            # only rows with a content-attention rule query; only token rows that some rule
            # reads are keys (next to the image keys of this level)
            allowed = torch.cat([img_allowed[:, cross_idx], token_allowed], dim=-1)
            q = content + pos
            keys = torch.cat([srcs[lvl] + poss[lvl], q[:, key_idx]], dim=1)
            values = torch.cat([srcs[lvl], content[:, key_idx]], dim=1)
            qc, vc = q[:, cross_idx], content[:, cross_idx]
            upd = layer.cross_norm(vc + layer.cross_attn(qc, keys, values, allowed))
            content = content.index_copy(1, cross_idx, upd)
            q = content + pos
            content = layer.self_norm(content + layer.self_attn(q, q, content, self_allowed))
            content = layer.ffn(content)
            nxt = sizes[(i + 1) % self.num_levels]
            blocked = run_heads(content, nxt)

        outputs = dict(predictions[-1])
        outputs["aux_outputs"] = predictions[:-1]
        outputs["item_padding"] = {
            s.name: layout.padding[:, slice(*layout.slices[s.name])]
            for s in specs
            if s.count == "per_item"
        }
        if refresh is not None:
            outputs["class_bank"] = bank_state["bank"].detach()
        return outputs

    def _layout(self, specs: List[VariableSpec], built):
        slices, start = {}, 0
        for s in specs:
            n = built[s.name]["content"].shape[1]
            slices[s.name] = (start, start + n)
            start += n
        cat = {k: torch.cat([built[s.name][k] for s in specs], 1) for k in ("content", "pos")}
        padding = torch.cat([built[s.name]["padding"] for s in specs], 1)
        index = torch.cat(
            [
                (
                    built[s.name]["index"]
                    if built[s.name]["index"] is not None
                    else torch.full_like(built[s.name]["padding"], -1, dtype=torch.long)
                )
                for s in specs
            ],
            1,
        )
        has_index = {s.name: built[s.name]["index"] is not None for s in specs}
        return am.SequenceLayout(specs, slices, padding, index, has_index), cat

    def _sample_swaps(self, specs, layout, generator):
        swaps: Dict[str, Dict[str, str]] = {}
        if not self.training:
            return swaps
        for s in specs:
            for src, dst, p in s.train_swaps:
                if torch.rand((), generator=generator).item() < p:
                    swaps.setdefault(s.name, {})[src] = dst
        return swaps

    def _organize(self, h, out_specs, out_pos, mask_pos, bank):
        res = {}
        for s in out_specs:
            o0, o1 = out_pos[s.name]
            for name, space in s.outputs:
                if space == "semantic":
                    res[name] = h["semantic"][:, o0:o1]
                elif space == "pixel":
                    res[name] = h["pixel"][:, o0:o1]
                elif space == "mask":
                    res[name] = h["masks"][:, slice(*mask_pos[s.name])]
                elif space == "class_logits" and bank is not None:
                    res[name] = cosine_logits(h["semantic"][:, o0:o1], bank, self.logit_scale)
        return res
