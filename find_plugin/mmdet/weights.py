"""Loading weights into the mmdet detector in the entry points: always strict.

mmengine's ``load_from`` loads non-strictly (a renamed key is silently skipped), so
``tools/mmdet_test.py`` loads the weights itself: an mmengine checkpoint
(``{"meta", "state_dict", ...}``, written by ``CheckpointHook``) has its ``state_dict`` loaded
with :func:`find_plugin.checkpoint.load_state_dict_checked`; every other file (find_plugin format,
detectron2 ``model_*.pth``, official FIND checkpoints, model-zoo names) goes through
:func:`find_plugin.checkpoint.load_weights`. The detector's parts carry the detectron2 model's
names (``backbone.* / pixel_decoder.* / interface.*``), so no key table is needed.
"""

import os
from typing import Optional

import torch

from ..checkpoint import load_state_dict_checked, load_weights

__all__ = ["mmengine_state_dict", "load_find_weights"]


def mmengine_state_dict(path: str) -> Optional[dict]:
    """The model ``state_dict`` of a local mmengine checkpoint, else None. mmengine's files hold
    pickled objects (its message hub), so they are unpickled as mmengine itself does: only
    load checkpoints you trust."""
    if not os.path.isfile(path):
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and "meta" in obj:
        return obj["state_dict"]
    return None


def load_find_weights(model, spec: str) -> str:
    """Load ``spec`` (path, URL or zoo name) strictly into ``model``; returns the layout read."""
    state = mmengine_state_dict(spec)
    if state is not None:
        load_state_dict_checked(model, state, source=spec)
        return "mmengine"
    return load_weights(model, spec).layout
