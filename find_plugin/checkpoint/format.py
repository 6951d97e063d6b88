"""find_plugin's own checkpoint format: plain tensors, a format version, atomic writes.

A file is a ``torch.save`` of a dict::

    {"format": "find_plugin", "format_version": 1, "model": {name: Tensor},
     "meta": {str: str|int|...}}

Only tensors and plain Python values are stored, so files load with
``torch.load(weights_only=True)`` under any torch version. Writes go to a temporary file in the same
folder followed by ``os.replace``, so a crash never leaves a half-written file where a good one was.

Older versions are migrated on load with a warning (see ``_MIGRATIONS``). Loading into a model never
skips silently: :func:`load_state_dict_checked` lists every missing, unexpected and shape-mismatched
key.
"""

import logging
import os
import tempfile
import warnings
from typing import IO, Any, Callable, Dict, Iterable, List, Mapping, Optional

import torch

logger = logging.getLogger(__name__)

FORMAT_NAME = "find_plugin"
FORMAT_VERSION = 1

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointFormatError",
    "IncompatibleCheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "load_state_dict_checked",
]


class CheckpointFormatError(ValueError):
    """The file is not a find_plugin checkpoint, or its content is malformed."""


class IncompatibleCheckpointError(RuntimeError):
    """The checkpoint's keys or shapes do not match the model; the message lists every mismatch."""

    def __init__(self, source: str, missing, unexpected, mismatched):
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
        lines = [f"checkpoint {source} does not match the model:"]
        if self.missing:
            lines.append(f"  {len(self.missing)} key(s) missing from the checkpoint:")
            lines += [f"    {k}" for k in self.missing]
        if self.unexpected:
            lines.append(f"  {len(self.unexpected)} key(s) in the checkpoint but not in the model:")
            lines += [f"    {k}" for k in self.unexpected]
        if self.mismatched:
            lines.append(
                f"  {len(self.mismatched)} key(s) with a different shape (checkpoint vs model):"
            )
            lines += [f"    {k}: {tuple(a)} vs {tuple(b)}" for k, a, b in self.mismatched]
        super().__init__("\n".join(lines))


def _migrate_v0(obj: Dict[str, Any]) -> Dict[str, Any]:
    # Version 0 = a bare state dict (what early development builds wrote).
    return {"format": FORMAT_NAME, "format_version": 1, "model": obj, "meta": {}}


# version -> function returning the next version's dict.
_MIGRATIONS: Dict[int, Callable[[Dict[str, Any]], Dict[str, Any]]] = {0: _migrate_v0}


def _check_state(model: Mapping[str, Any], where: str) -> Dict[str, torch.Tensor]:
    bad = [k for k, v in model.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointFormatError(
            f"{where}: 'model' must map names to tensors; non-tensor values at {bad[:5]}"
        )
    return dict(model)


def save_checkpoint(
    path: str, state_dict: Mapping[str, torch.Tensor], *, meta: Optional[Mapping[str, Any]] = None
) -> str:
    """Write ``state_dict`` (plain tensors, moved to CPU) and ``meta`` atomically to ``path``.

    Returns the path. An existing file at ``path`` is replaced only once the new one is complete.
    """
    model = {k: v.detach().cpu().contiguous() for k, v in _check_state(state_dict, path).items()}
    obj = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": model,
        "meta": dict(meta or {}),
    }
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> str:
    """Call ``write(f)`` on a temporary file next to ``path``, fsync it, then ``os.replace`` it
    onto ``path``: readers see the old file or the complete new one, never a truncated file (a
    crash or SIGKILL mid-write leaves at most a ``.tmp-*`` file, removed on exceptions)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 -> what open() would have given
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Read a find_plugin checkpoint (any known version) and return it at ``FORMAT_VERSION``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointFormatError: unreadable file, foreign format, or a version newer than this code.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupted file, pickle with objects, truncated download
        raise CheckpointFormatError(f"{path}: not a readable tensor checkpoint ({e})") from e
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{path}: expected a dict, got {type(obj).__name__}")
    if "format" not in obj:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            version = 0
        else:
            raise CheckpointFormatError(
                f"{path}: no 'format' key and not a bare state dict; is this an official FIND "
                "checkpoint? Convert it with tools/convert_official_checkpoint.py"
            )
    elif obj["format"] != FORMAT_NAME:
        raise CheckpointFormatError(f"{path}: format {obj['format']!r}, expected {FORMAT_NAME!r}")
    else:
        version = obj.get("format_version")
        if not isinstance(version, int):
            raise CheckpointFormatError(f"{path}: 'format_version' must be an int, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointFormatError(
            f"{path}: format_version {version} is newer than this find_plugin "
            f"(reads up to {FORMAT_VERSION}); upgrade find_plugin"
        )
    if version < FORMAT_VERSION:
        warnings.warn(
            f"{path}: migrating checkpoint from format_version {version} to {FORMAT_VERSION}; "
            "re-save it to skip this step",
            stacklevel=2,
        )
        while version < FORMAT_VERSION:
            obj = _MIGRATIONS[version](obj)
            version = obj["format_version"]
    obj["model"] = _check_state(obj.get("model", {}), path)
    return obj


def load_state_dict_checked(
    module: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "<state dict>",
    allow_missing: Iterable[str] = (),
) -> List[str]:
    """Load ``state_dict`` into ``module``; raise listing every mismatch instead of skipping.

    Args:
        allow_missing: key prefixes that may be absent from the checkpoint (e.g. a frozen encoder
            loaded from its own weights). They are returned, and logged, not raised.

    Returns:
        The model keys that were allowed to stay missing.
    """
    allow = tuple(allow_missing)
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        (k, state_dict[k].shape, own[k].shape)
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    tolerated = [k for k in missing if allow and k.startswith(allow)]
    missing = [k for k in missing if k not in tolerated]
    if missing or unexpected or mismatched:
        raise IncompatibleCheckpointError(source, missing, unexpected, mismatched)
    module.load_state_dict(dict(state_dict), strict=False)
    if tolerated:
        logger.info("%s: %d key(s) left at their current values (allowed)", source, len(tolerated))
    return tolerated
