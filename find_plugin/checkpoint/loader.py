"""Load weights of any supported layout into a model: the one entry point behind detectron2's
``MODEL.WEIGHTS`` (:class:`find_plugin.d2.checkpointer.FINDCheckpointer`), mmdet's ``load_from``
and the tools.

``load_weights(model, spec)``:

1. ``spec`` (local path, http(s) URL or model-zoo name) -> local file (:func:`resolve_weights`);
2. the file's layout is detected (:func:`read_weights_file`):

   * ``"find_plugin"``: our format (:mod:`.format`, older versions migrated with a warning);
   * ``"official"``: an official FIND / X-Decoder / SEEM state dict (``sem_seg_head.*`` keys, any
     wrapper prefix) - converted on the fly with the explicit key table (:mod:`.official`);
   * ``"detectron2"``: a file written by detectron2's checkpointer (``{"model": sd, ...}`` in our
     key layout, plus optimizer / scheduler / iteration entries);

3. the state dict is loaded strictly (:func:`load_state_dict_checked`): any missing, unexpected or
   shape-mismatched key raises and lists them, except target groups named in ``allow_absent``.
"""

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .format import FORMAT_NAME, CheckpointFormatError, load_checkpoint, load_state_dict_checked
from .official import ConversionReport, convert_official_state_dict, looks_official
from .resolver import resolve_weights

__all__ = ["WeightsFile", "LoadResult", "read_weights_file", "group_prefixes", "load_weights"]

logger = logging.getLogger(__name__)


@dataclass
class WeightsFile:
    """A weights file read from disk. ``extra``: non-model entries (optimizer, iteration, ...)."""

    path: str
    layout: str  # "find_plugin" | "official" | "detectron2"
    state_dict: Dict[str, torch.Tensor]
    meta: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)
    raw: Any = None  # the loaded object (official layout: container before unwrapping)


@dataclass
class LoadResult:
    path: str
    layout: str
    tolerated: List[str]  # target keys allowed to stay at their current values
    report: Optional[ConversionReport] = None  # official layout only
    extra: Dict[str, Any] = field(default_factory=dict)


def _torch_load(path: str, allow_pickle: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickled objects other than tensors, or a broken file
        if not allow_pickle:
            raise CheckpointFormatError(
                f"{path}: cannot be read as plain tensors ({e}). If you trust this file, pass "
                "allow_pickle=True (--allow-pickle) to unpickle arbitrary objects"
            ) from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointFormatError(f"{path}: not a readable torch checkpoint ({e})") from e


def _is_tensor_map(obj) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def read_weights_file(path: str, *, allow_pickle: bool = False) -> WeightsFile:
    """Read ``path`` and classify its layout (see module docstring). Nothing is converted here
    except the migration of older find_plugin format versions."""
    obj = _torch_load(path, allow_pickle)
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{path}: expected a dict, got {type(obj).__name__}")
    if obj.get("format") == FORMAT_NAME:
        ours = load_checkpoint(path)
        return WeightsFile(path, "find_plugin", ours["model"], meta=ours["meta"])
    inner, extra = obj, {}
    for name in ("model", "module", "state_dict"):
        if _is_tensor_map(obj.get(name)):
            inner = obj[name]
            extra = {k: v for k, v in obj.items() if k != name}
            break
    if not _is_tensor_map(inner):
        raise CheckpointFormatError(
            f"{path}: no state dict found (top-level keys: {sorted(map(str, obj))[:10]})"
        )
    if looks_official(inner):
        return WeightsFile(path, "official", dict(inner), extra=extra, raw=obj)
    if inner is obj:  # a bare state dict in our layout = find_plugin format version 0
        ours = load_checkpoint(path)
        return WeightsFile(path, "find_plugin", ours["model"], meta=ours["meta"])
    return WeightsFile(path, "detectron2", dict(inner), extra=extra)


def group_prefixes(groups: Iterable[str]) -> Tuple[str, ...]:
    """Target groups (see :func:`official.target_group`) -> prefixes of our keys."""
    special = {"lang_proj": "interface.lang_proj", "logit_scale": "interface.logit_scale"}
    return tuple(special.get(g, g + ".") for g in groups)


def load_weights(
    model: nn.Module,
    spec: str,
    *,
    allow_absent: Sequence[str] = (),
    drop: Sequence[str] = (),
    cache_dir: Optional[str] = None,
    allow_download: bool = True,
    allow_pickle: bool = False,
) -> LoadResult:
    """Resolve ``spec``, read it, convert official layouts, and load strictly into ``model``.

    Args:
        allow_absent: target groups (``backbone``, ``pixel_decoder``, ``interface``, ``lang_proj``,
            ``logit_scale`` or the first name component of any other sub-module) that may be
            missing from the file.
        drop: official source groups to ignore (e.g. ``text_tower``); official layout only.

    Raises:
        WeightsNotFoundError, CheckpointFormatError, OfficialConversionError,
        IncompatibleCheckpointError (each message names the file and lists the keys).
    """
    path = resolve_weights(spec, cache_dir=cache_dir, allow_download=allow_download)
    wf = read_weights_file(path, allow_pickle=allow_pickle)
    report = None
    state = wf.state_dict
    if wf.layout == "official":
        state, report = convert_official_state_dict(
            wf.raw, target=model, allow_absent=allow_absent, drop=drop, source=path
        )
        logger.info("%s", report.format())
    tolerated = load_state_dict_checked(
        model, state, source=path, allow_missing=group_prefixes(allow_absent)
    )
    return LoadResult(path, wf.layout, tolerated, report, wf.extra)
