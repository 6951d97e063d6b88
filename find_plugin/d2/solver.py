"""Optimizer of a FIND model (detectron2): AdamW/SGD over the trainable parameters only.

* frozen parts (``requires_grad`` False: backbone, pixel decoder, language model) are left out;
* no weight decay on normalisation layers (``SOLVER.WEIGHT_DECAY_NORM``), embeddings and learnt
  query rows (``SOLVER.WEIGHT_DECAY_EMBED``: ``nn.Embedding`` weights, ``query_feat``,
  ``query_embed``, ``level_embed``, ``logit_scale``) and biases (``SOLVER.WEIGHT_DECAY_BIAS``,
  None = ``WEIGHT_DECAY``);
* ``SOLVER.CLIP_GRADIENTS`` with ``CLIP_TYPE: "full_model"`` clips the L2 norm of all gradients
  together (official FIND: 0.01), as Mask2Former does; "value" / "norm" are detectron2's per-
  parameter clipping.
"""

import itertools
from typing import Any, Dict, List

import torch
from detectron2.solver.build import maybe_add_gradient_clipping
from torch import nn

__all__ = ["build_find_optimizer", "find_param_groups"]

_NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def find_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    weight_decay_embed: float,
    weight_decay_bias: float,
) -> List[Dict[str, Any]]:
    """One group per trainable parameter with its weight decay (each parameter once)."""
    groups, seen = [], set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{module_name}.{name}" if module_name else name
            if isinstance(module, _NORMS):
                decay = weight_decay_norm
            elif isinstance(module, nn.Embedding) or full.rsplit(".", 1)[-1] in (
                "logit_scale",
                "query_feat",
                "query_embed",
                "level_embed",
            ):
                decay = weight_decay_embed
            elif name == "bias":
                decay = weight_decay_bias
            else:
                decay = weight_decay
            groups.append({"params": [p], "lr": base_lr, "weight_decay": decay, "name": full})
    if not groups:
        raise ValueError("the model has no trainable parameter (is everything frozen?)")
    return groups


def build_find_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer of ``cfg.SOLVER`` over ``model``'s trainable parameters."""
    s = cfg.SOLVER
    groups = find_param_groups(
        model,
        base_lr=s.BASE_LR,
        weight_decay=s.WEIGHT_DECAY,
        weight_decay_norm=s.WEIGHT_DECAY_NORM,
        weight_decay_embed=s.WEIGHT_DECAY_EMBED,
        weight_decay_bias=s.WEIGHT_DECAY if s.WEIGHT_DECAY_BIAS is None else s.WEIGHT_DECAY_BIAS,
    )
    name = s.OPTIMIZER.upper()
    if name == "ADAMW":
        cls, kwargs = torch.optim.AdamW, {"betas": (0.9, 0.999)}
    elif name == "SGD":
        cls, kwargs = torch.optim.SGD, {"momentum": s.MOMENTUM, "nesterov": s.NESTEROV}
    else:
        raise ValueError(f"cfg.SOLVER.OPTIMIZER={s.OPTIMIZER!r}: expected 'ADAMW' or 'SGD'")
    clip = s.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        cls = _full_model_clipping(cls, clip.CLIP_VALUE, clip.NORM_TYPE)
        return cls(groups, lr=s.BASE_LR, **kwargs)
    return maybe_add_gradient_clipping(cfg, cls)(groups, lr=s.BASE_LR, **kwargs)


def _full_model_clipping(optim_cls, max_norm: float, norm_type: float):
    """``optim_cls`` whose ``step`` first clips the norm of every gradient taken together."""

    class FullModelGradientClipping(optim_cls):
        def step(self, closure=None):
            params = itertools.chain(*[g["params"] for g in self.param_groups])
            torch.nn.utils.clip_grad_norm_(list(params), max_norm, norm_type=norm_type)
            return super().step(closure=closure)

    FullModelGradientClipping.__name__ = optim_cls.__name__ + "WithFullModelGradientClipping"
    return FullModelGradientClipping
