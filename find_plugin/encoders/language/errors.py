"""Errors of the language encoders and the offline-only resolution of model paths.

Models are only ever loaded from local directories. Anything that is not an existing directory is
rejected here, before transformers is called, so that no code path can reach a model hub.
"""

import os
import re
from typing import Union

__all__ = [
    "LanguageEncoderError",
    "ModelNotFoundError",
    "HubIdNotAllowedError",
    "SlowTokenizerError",
    "CacheCorruptionError",
    "resolve_local_model_path",
]

# 'org/name' or 'org/name@rev' as used by the Hugging Face hub.
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*(@[\w.\-]+)?$")

# Where the download hint suggests to put models; only used in messages.
_DEFAULT_MODELS_DIR = os.path.join("~", ".cache", "find_plugin", "models")


class LanguageEncoderError(RuntimeError):
    """Base class of all errors raised by ``find_plugin.encoders.language``."""


class ModelNotFoundError(LanguageEncoderError, FileNotFoundError):
    """The local model directory does not exist or is not a Hugging Face model folder."""


class HubIdNotAllowedError(ModelNotFoundError):
    """A hub id ('org/name') was given where a local directory is required (offline by design)."""


class SlowTokenizerError(LanguageEncoderError):
    """The model folder only has a slow (Python) tokenizer; character offsets need a fast one."""


class CacheCorruptionError(LanguageEncoderError):
    """A cache entry failed its format, checksum or shape check (internal: it is recomputed)."""


def looks_like_hub_id(path: str) -> bool:
    """True when ``path`` has the form of a hub id ('org/name') and is not an existing path."""
    return bool(_HUB_ID_RE.match(path)) and not os.path.exists(path)


def _download_hint(repo_id: str) -> str:
    name = repo_id.split("@")[0].split("/")[-1]
    models_dir = os.environ.get("FIND_MODELS_DIR", _DEFAULT_MODELS_DIR)
    local_dir = os.path.join(models_dir, name)
    return (
        f"Download it once on a machine with network access, e.g.\n"
        f"    huggingface-cli download {repo_id.split('@')[0]} --local-dir {local_dir}\n"
        f"then pass the local directory ({local_dir}) instead of the hub id."
    )


def resolve_local_model_path(model_path: Union[str, os.PathLike], *, argument: str) -> str:
    """Return the absolute path of a local Hugging Face model folder, or raise a clear error.

    Args:
        model_path: a directory holding ``config.json`` (and tokenizer/weight files).
        argument: the name of the argument/config key the path came from (used in messages).

    Raises:
        HubIdNotAllowedError: ``model_path`` looks like a hub id and no such directory exists.
        ModelNotFoundError: the path does not exist, is not a directory or lacks ``config.json``.
    """
    if model_path is None or str(model_path).strip() == "":
        raise ModelNotFoundError(
            f"{argument}: a local model directory is required, got {model_path!r}"
        )
    raw = str(model_path)
    path = os.path.abspath(os.path.expanduser(raw))
    if not os.path.exists(path):
        if looks_like_hub_id(raw):
            raise HubIdNotAllowedError(
                f"{argument}={raw!r} looks like a Hugging Face hub id, but models are loaded "
                f"from local directories only (no network access at run time).\n"
                + _download_hint(raw)
            )
        raise ModelNotFoundError(
            f"{argument}={raw!r}: no such directory ({path}). Put a Hugging Face model folder "
            f"(config.json, tokenizer.json, *.safetensors) there, e.g. with "
            f"'huggingface-cli download <org>/<name> --local-dir {path}'."
        )
    if not os.path.isdir(path):
        raise ModelNotFoundError(
            f"{argument}={raw!r} is a file; expected a model directory containing config.json"
        )
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelNotFoundError(
            f"{argument}={raw!r}: directory has no config.json, so it is not a Hugging Face model "
            f"folder (found: {sorted(os.listdir(path))[:10]})"
        )
    return path
