"""The FIND interface: all requested tasks in ONE forward pass over one combined sequence.

Forward API (``FINDInterface.forward``)::

    outputs = interface(features, mask_features, tasks, class_bank=None, generator=None)

* ``features``: list of 3 multi-scale maps [B, in_channels, h_l, w_l] from the pixel decoder,
  level 0 = stride 32, then 16, 8. Layer i reads level ``i % 3``. Each level goes through
  ``input_proj[l]`` (1x1 conv, or identity when in_channels = hidden_dim), then gets its level
  embedding; the sine encoding is added to the keys (:mod:`find_plugin.core.feature_levels`).
  The visual-prompt sampler samples the projected maps with level embedding (official).
* ``mask_features``: [B, mask_dim, H/4, W/4] (stride 4).
* ``tasks``: dict task name -> dict of inputs ('seg' is always run, its dict may be omitted).
  The keys a task reads are those of its variables' input kinds
  (:mod:`find_plugin.core.variables`). Built-in tasks:

  - ``"class"``: ``tokens`` [B, T, C], ``token_padding`` [B, T] (True = padded), optional
    ``class_indexes`` [B] long (training: row of the class bank refreshed by this image).
  - ``"grounding"``: ``tokens``, ``token_padding``, ``token_index`` [B, T] (phrase id per
    token), optional ``query_index`` [B, P] (phrase id per description query, NO_ITEM =
    padding; default arange(max token_index + 1) per image).
  - ``"retrieval"``: ``tokens``, ``token_padding`` (caption tokens).
  - ``"spatial"``: ``pos_masks`` / ``neg_masks`` (list over images of [n_b, Hm, Wm] bool) or
    pre-sampled ``points`` (see :mod:`find_plugin.core.sampler`), optional ``query_index``
    [B, n] (default arange(n_b)), optional ``prev_mask`` [B, 1 or M, H/4, W/4] logits (enables
    the memories, official multi-round interaction).
  - ``"interleave"`` / ``"interleave_retrieval"``: ``tokens``, ``token_padding``,
    ``token_entity`` [B, T] (entity id per token, any negative = none), ``entity_is_visual``
    [B, E] bool, ``pos_masks`` / ``neg_masks`` or ``points`` for the visual entities (prompt
    index = entity id) or ``prompt_tokens`` (tokens sampled on other images: cross-image visual
    references, :mod:`find_plugin.core.variables`), optional ``query_index`` [B, E]. Both tasks
    share their legend and visual-prompt variables: when both are requested, the first one's
    inputs feed them, and the other may only repeat them (ValueError otherwise).

  Token embeddings are already projected to ``dim_proj`` (use :meth:`project_tokens`).
* ``class_bank``: [K, dim_proj] class embeddings (last row = background); needed for
  ``pred_logits``. In training with ``tasks["class"]["class_indexes"]`` each layer overwrites the
  sampled rows with that layer's class query (gradient flows); ``outputs["class_bank"]`` is the
  refreshed bank, detached, to store for the next step.

Returns a dict with the named outputs of spec §1.5 present for the requested tasks (each
(B, n, ...); masks (B, n, H/4, W/4)), ``aux_outputs`` (list: heads on the initial queries, then
after every layer but the last; the top level is the last layer; absent with
``aux_outputs=False``), ``item_padding`` (variable name
-> [B, n] bool, True = padded per-item query) and optionally ``class_bank``. With per-layer
outputs (``aux_outputs``, training) the top level and every ``aux_outputs`` entry are
:class:`~find_plugin.core.mask_logits.LayerOutputs` mappings: their masks are made on first read,
and :class:`~find_plugin.core.criterion.FINDCriterion` reads them factored, at its points only.

Stages of :meth:`FINDInterface.forward`: feature levels -> variables -> sequence plan (layout and
attention masks) -> prediction heads on the initial rows, then after each
:class:`~find_plugin.core.layers.InterfaceLayer` -> outputs.

Re-implements (facts from the papers and code, no code copied):
- FIND: Zou et al., "Interfacing Foundation Models' Embeddings", arXiv 2312.07532
  (github.com/UX-Decoder/FIND).
- Mask2Former: Cheng et al., "Masked-attention Mask Transformer for Universal Image Segmentation",
  CVPR 2022 (github.com/facebookresearch/Mask2Former).
"""

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .class_bank import ClassBank
from .distributed import all_gather_no_grad, all_gather_with_grad
from .feature_levels import (
    FeatureLevels,
    build_input_proj,
    check_features,
    downsample_bilinear,
    prepare_levels,
)
from .heads import OutputPlan, PredictionHeads
from .layers import InterfaceLayer, KeyValueBuffers
from .prototypes import VariableSpec, merge_prototypes, variable_declarers
from .sampler import VisualPromptSampler
from .sequence import SequencePlan, build_sequence, sample_swaps
from .variables import InputContext, VariableRows, build_variables

__all__ = ["FINDInterface", "InterfaceLayer"]


class FINDInterface(nn.Module):
    """The trainable FIND interface (+ ``input_proj``, ``lang_proj`` and ``logit_scale``).

    ``in_channels``: channels of the pixel decoder's multi-scale features (None = hidden_dim);
    ``enforce_input_proj``: use the 1x1 ``input_proj`` convolutions even when in_channels equals
    hidden_dim (official ``ENFORCE_INPUT_PROJ``); otherwise they are identities without
    parameters.
    """

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
        in_channels: Optional[int] = None,
        enforce_input_proj: bool = False,
        zero_feature_size: int = 640,
    ):
        super().__init__()
        if dim_proj != hidden_dim:
            raise ValueError("dim_proj must equal hidden_dim (tokens share the self-attention)")
        self.hidden_dim = hidden_dim
        self.in_channels = hidden_dim if in_channels is None else int(in_channels)
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.num_queries = num_queries
        self.num_levels = num_levels
        self.pool_image_query = pool_image_query
        # text-only passes (class bank, caption / legend queries) run on zero features of the
        # maps of a zero_feature_size image (official 640; core.text_pass)
        self.zero_feature_size = int(zero_feature_size)
        # rows 0..num_queries-1: object proposals; last row: the image query.
        self.query_feat = nn.Embedding(num_queries + 1, hidden_dim)
        self.query_embed = nn.Embedding(num_queries + 1, hidden_dim)
        self.level_embed = nn.Embedding(num_levels, hidden_dim)
        self.input_proj = build_input_proj(
            in_channels=self.in_channels,
            hidden_dim=hidden_dim,
            num_levels=num_levels,
            enforce=enforce_input_proj,
        )
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
    # stages
    # ----------------------------------------------------------------------------------------
    def feature_levels(
        self, features: Sequence[torch.Tensor], mask_features: torch.Tensor
    ) -> FeatureLevels:
        """Stage 1: validate the pixel-decoder outputs; per level input projection, level
        embedding and positional encoding."""
        check_features(
            features, mask_features, num_levels=self.num_levels, in_channels=self.in_channels
        )
        return prepare_levels(
            features,
            input_proj=self.input_proj,
            level_embed=self.level_embed,
        )

    def build_variables(
        self,
        tasks: Mapping[str, Mapping],
        levels: FeatureLevels,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[List[VariableSpec], Dict[str, VariableRows], Dict[str, List[str]]]:
        """Stage 2: the variables of 'seg' + the requested tasks, built by their input kinds.

        Returns (present specs in sequence order, rows by name, declaring tasks by name)."""
        specs = merge_prototypes(tasks)
        declarers = variable_declarers(tasks)
        ctx = InputContext(
            batch_size=levels.batch_size,
            device=levels.device,
            levels=levels,
            generator=generator,
        )
        built = build_variables(self, specs, declarers, tasks, ctx)
        return [s for s in specs if s.name in built], built, declarers

    def plan_sequence(
        self,
        specs: List[VariableSpec],
        built: Mapping[str, VariableRows],
        declarers: Mapping[str, List[str]],
        tasks: Mapping[str, Mapping],
        levels: FeatureLevels,
        generator: Optional[torch.Generator] = None,
    ) -> SequencePlan:
        """Stage 3: sequence layout and attention masks (training swaps drawn here)."""
        memory_prev = None
        for s in specs:
            if s.cross is not None and s.cross.mode == "memory_prev_mask":
                owner = declarers[s.name][0]
                memory_prev = (tasks[owner]["prev_mask"], f"tasks[{owner!r}]")
        return build_sequence(
            specs,
            built,
            num_levels=self.num_levels,
            swaps=sample_swaps(specs, self.training, generator),
            memory_prev_mask=memory_prev,
            sizes=levels.sizes,
        )

    def run_layers(
        self,
        plan: SequencePlan,
        levels: FeatureLevels,
        predict,
        mask_rows: torch.Tensor,
        output_rows: torch.Tensor,
        attention_mask=None,
    ) -> List[Dict[str, torch.Tensor]]:
        """Stage 4: heads on the initial rows, then each layer followed by the heads.

        ``predict(content, level) -> (outputs, attn_blocked)`` runs the heads, ``attn_blocked``
        [B, M, h*w] being the masks of the sequence rows ``mask_rows`` [M] at the size of
        ``level`` (None: the last layer needs none); the heads read the sequence rows
        ``output_rows`` only. ``attention_mask(content, level) -> attn_blocked``, when given,
        replaces ``predict`` before every layer but the last (no per-layer outputs). Returns the
        outputs of every stage run through ``predict`` (initial rows first)."""
        content, pos = plan.content, plan.pos
        predictions = []
        # Rows whose new content is read: after a layer, all but the visual-prompt tokens (reset
        # at the next layer); after the last layer, the output rows only.
        rows = plan.layer_rows()
        keep_last = torch.zeros(plan.layout.length, dtype=torch.bool, device=content.device)
        keep_last[output_rows] = True
        if plan.reset_rows is not None and bool((keep_last & plan.reset_rows).any()):
            raise ValueError("a variable with outputs cannot be reset at every layer")
        last_rows = plan.layer_rows(keep_last)

        def heads(content, i):  # the heads after i layers; their mask feeds layer i
            last = i == self.num_layers
            if attention_mask is not None and not last:
                return attention_mask(content, i % self.num_levels)
            outputs, blocked = predict(content, None if last else i % self.num_levels)
            predictions.append(outputs)
            return blocked

        # every layer writes its image keys/values over the previous layer's (layers.py)
        image_kv = KeyValueBuffers()
        blocked = heads(content, 0)
        for i, layer in enumerate(self.layers):
            lvl = i % self.num_levels
            content, pos = plan.reset(content, pos, lvl)
            these = last_rows if i == self.num_layers - 1 else rows
            hw = levels.src[lvl].shape[1]
            content = layer(
                content,
                pos,
                levels.src[lvl],
                levels.keys[lvl],
                rows=these,
                image_allowed=plan.image_allowed(lvl, hw, mask_rows, blocked, these),
                image_offset=levels.offsets[lvl],
                image_kv=image_kv,
            )
            if i == self.num_layers - 1:
                image_kv = None  # freed before the last heads make the full-size masks
            blocked = heads(content, i + 1)
        return predictions

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
        aux_outputs: bool = True,
    ) -> Dict:
        """See the module docstring for the inputs and outputs. ``aux_outputs=False`` (inference:
        only the last layer's outputs are read) leaves out ``outputs["aux_outputs"]`` and computes
        the attention masks between layers at the level resolution only (:meth:`PredictionHeads.
        attention_mask`); it is ignored when training refreshes the class bank."""
        tasks = {name: (inp or {}) for name, inp in (tasks or {}).items()}
        levels = self.feature_levels(features, mask_features)
        specs, built, declarers = self.build_variables(tasks, levels, generator)
        plan = self.plan_sequence(specs, built, declarers, tasks, levels, generator)
        out_plan = OutputPlan.from_layout(plan.layout, pool_image_query=self.pool_image_query)
        refresh = self._class_refresh(tasks, class_bank, out_plan)
        bank = {"current": class_bank}

        # the mask features at each level size, resized once per pass (attention masks)
        attn_features = [downsample_bilinear(mask_features, sz) for sz in levels.sizes]
        # per-layer outputs (training, parity): the masks stay factored until read (heads.py),
        # the criterion reads them at its points from channels-last features (point reads of
        # many-channel maps work in that layout)
        per_layer = aux_outputs or refresh is not None
        sample_features = None
        if per_layer:
            sample_features = mask_features.contiguous(memory_format=torch.channels_last)

        def predict(content: torch.Tensor, level: Optional[int]):
            h = self.heads(
                content[:, out_plan.rows],
                mask_features,
                object_slice=out_plan.object_slice,
                image_row=out_plan.image_row,
                mask_rows=out_plan.mask_rows,
                attn_features=None if level is None else attn_features[level],
                dense_masks=not per_layer,
                sample_features=sample_features,
            )
            if refresh is not None:
                class_rows, indexes = refresh
                # Rows refreshed by every process (official all-gather; the gradient reaches the
                # local rows only), so all processes classify against the same bank.
                rows = all_gather_with_grad(h["semantic"][:, class_rows])
                bank["current"] = ClassBank.refreshed(class_bank, rows, all_gather_no_grad(indexes))
            return out_plan.organize(h, bank["current"], self.logit_scale), h["attn_blocked"]

        light = None if per_layer else self._attention_masks(attn_features, out_plan)
        predictions = self.run_layers(
            plan, levels, predict, out_plan.mask_seq_rows, out_plan.rows, light
        )
        outputs = predictions[-1]
        if per_layer:
            outputs["aux_outputs"] = predictions[:-1]
        outputs["item_padding"] = {
            s.name: plan.layout.padding[:, slice(*plan.layout.slices[s.name])]
            for s in specs
            if s.count == "per_item"
        }
        if refresh is not None:
            outputs["class_bank"] = bank["current"].detach()
        return outputs

    def _attention_masks(self, attn_features: List[torch.Tensor], out: OutputPlan):
        """``attention_mask(content, level) -> attn_blocked`` for :meth:`run_layers` when no
        per-layer outputs are wanted; ``attn_features``: the mask features resized to each level
        size (once per pass, shared by the layers of that level)."""

        def attention_mask(content: torch.Tensor, level: int) -> torch.Tensor:
            return self.heads.attention_mask(
                content[:, out.rows], attn_features[level], mask_rows=out.mask_rows
            )

        return attention_mask

    def _class_refresh(
        self, tasks: Mapping[str, Mapping], class_bank: Optional[torch.Tensor], out: OutputPlan
    ) -> Optional[Tuple[int, torch.Tensor]]:
        """(output row of the class query, class_indexes [B]) when training refreshes the bank."""
        if class_bank is None or not self.training or "class" not in tasks:
            return None
        idx = tasks["class"].get("class_indexes")
        if idx is None or "queries_language_class" not in out.slices:
            return None
        return out.slices["queries_language_class"][0], idx.to(class_bank.device).long()
