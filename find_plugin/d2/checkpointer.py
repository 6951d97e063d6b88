"""detectron2 checkpointer for FIND models: ``MODEL.WEIGHTS`` = local path, URL or model-zoo name.

:class:`FINDCheckpointer` is a ``DetectionCheckpointer`` whose ``load`` first resolves the spec with
:func:`find_plugin.checkpoint.resolve_weights` (one resolver for every entry point: our cache,
sha256 of zoo entries, clear offline errors) and then reads the file with
:func:`find_plugin.checkpoint.read_weights_file`:

* find_plugin format (and bare state dicts of our layout): loaded **strictly**, mismatches listed;
* official FIND / X-Decoder / SEEM layout: converted on the fly with the explicit key table
  (``drop`` / ``allow_absent`` groups configurable), then loaded strictly;
* files written by detectron2 itself (``{"model": ..., "optimizer": ..., "iteration": ...}``, what
  ``resume_or_load`` / ``last_checkpoint`` point to): the model loads strictly and every other
  checkpointable (optimizer, scheduler, ...) is restored as detectron2 does;
* anything else (detectron2 ``.pkl`` model-zoo files, pycls ``.pyth``) falls back to detectron2's
  own behaviour.

Group options can come from the config with :meth:`FINDCheckpointer.from_config` (keys
``MODEL.FIND_WEIGHTS.ALLOW_ABSENT`` / ``DROP`` / ``CACHE_DIR`` when present).
"""

import os
from typing import Optional, Sequence

import torch
from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import _IncompatibleKeys

from ..checkpoint.format import CheckpointFormatError, atomic_write, load_state_dict_checked
from ..checkpoint.loader import group_prefixes, read_weights_file
from ..checkpoint.official import convert_official_state_dict
from ..checkpoint.resolver import resolve_weights

__all__ = ["FINDCheckpointer", "add_find_weights_config"]

# The language model is loaded from its own weights, never from a FIND checkpoint.
DEFAULT_DROP = ("text_tower",)
_STRICT = "__find_plugin_strict__"


def add_find_weights_config(cfg):
    """Add ``cfg.MODEL.FIND_WEIGHTS`` (how ``MODEL.WEIGHTS`` is loaded); harmless to call twice."""
    from detectron2.config import CfgNode as CN

    if "FIND_WEIGHTS" in cfg.MODEL:
        return cfg
    w = cfg.MODEL.FIND_WEIGHTS = CN()
    # Target groups that may be missing from the file (e.g. ["interface"] when starting from an
    # X-Decoder/SEEM vision checkpoint); every other missing key is an error.
    w.ALLOW_ABSENT = []
    # Official source groups ignored on conversion; the language model has its own weights.
    w.DROP = list(DEFAULT_DROP)
    w.CACHE_DIR = ""  # "" = $FIND_PLUGIN_CACHE or ~/.cache/find_plugin/weights
    return cfg


class FINDCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with the find_plugin resolver, layouts and strict loading.

    Args (besides detectron2's ``model``, ``save_dir``, ``save_to_disk``, checkpointables):
        allow_absent: target groups that may be missing from a file (e.g. ``("interface",)`` to
            start from an X-Decoder vision checkpoint; a sub-module name such as ``lang_encoder``
            for parts of the model that are loaded elsewhere).
        drop: official source groups to ignore when converting (default: the text tower).
        cache_dir / allow_download: passed to ``resolve_weights``.
    """

    def __init__(
        self,
        model,
        save_dir: str = "",
        *,
        allow_absent: Sequence[str] = (),
        drop: Sequence[str] = DEFAULT_DROP,
        cache_dir: Optional[str] = None,
        allow_download: bool = True,
        save_to_disk: Optional[bool] = None,
        **checkpointables,
    ):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.allow_absent = tuple(allow_absent)
        self.drop = tuple(drop)
        self.cache_dir = cache_dir
        self.allow_download = allow_download
        self.last_report = None  # ConversionReport of the last official-layout load

    @classmethod
    def from_config(cls, cfg, model, save_dir: str = "", **kwargs) -> "FINDCheckpointer":
        """Read ``cfg.MODEL.FIND_WEIGHTS.{ALLOW_ABSENT, DROP, CACHE_DIR}`` when the node exists."""
        node = cfg.MODEL.get("FIND_WEIGHTS", None)
        if node is not None:
            kwargs.setdefault("allow_absent", tuple(node.get("ALLOW_ABSENT", ())))
            kwargs.setdefault("drop", tuple(node.get("DROP", DEFAULT_DROP)))
            kwargs.setdefault("cache_dir", node.get("CACHE_DIR", "") or None)
        return cls(model, save_dir, **kwargs)

    def save(self, name: str, **kwargs) -> None:
        """detectron2's save, written atomically (temp file + fsync + ``os.replace``): a crash or
        SIGKILL mid-save never leaves a truncated ``model_*.pth`` nor a ``last_checkpoint`` that
        names one."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename.encode()))

    def load(self, path, *args, **kwargs):
        """``path``: local file, http(s) URL or zoo name (``name`` / ``zoo://name``); '' = none."""
        if path and not os.path.isfile(path.split("?", 1)[0]):
            path = resolve_weights(
                path, cache_dir=self.cache_dir, allow_download=self.allow_download
            )
        try:
            return super().load(path, *args, **kwargs)
        finally:
            # detectron2 resets this only on success; a failed load must not poison the next one.
            self._parsed_url_during_load = None

    def _load_file(self, filename):
        if filename.endswith((".pkl", ".pyth")):
            return super()._load_file(filename)
        try:
            wf = read_weights_file(filename)
        except CheckpointFormatError:
            # Not plain tensors: a detectron2 training file with pickled extras (it wrote it).
            loaded = self._torch_load(filename)
            if not isinstance(loaded, dict) or "model" not in loaded:
                raise
            wf = None
        if wf is None:
            loaded[_STRICT] = filename
            return loaded
        if wf.layout == "official":
            state, self.last_report = convert_official_state_dict(
                wf.raw,
                target=self.model,
                allow_absent=self.allow_absent,
                drop=self.drop,
                source=filename,
            )
            self.logger.info("%s", self.last_report.format())
            return {"model": state, _STRICT: filename}
        out = dict(wf.extra)
        out.update({"model": wf.state_dict, _STRICT: filename})
        return out

    def _load_model(self, checkpoint):
        source = checkpoint.pop(_STRICT, None)
        if source is None or checkpoint.get("matching_heuristics", False):
            return super()._load_model(checkpoint)
        state = checkpoint.pop("model")
        load_state_dict_checked(
            self.model, state, source=source, allow_missing=group_prefixes(self.allow_absent)
        )
        return _IncompatibleKeys(missing_keys=[], unexpected_keys=[], incorrect_shapes=[])
