"""Offline loading of Hugging Face text encoders: kind detection, tokenizer/model loading, identity.

Three kinds of text towers are supported:

* ``"decoder"``: causal LMs of the LLaMA family (FIND's LLaMA-7B); features = a chosen hidden state.
* ``"encoder"``: bidirectional encoders (BERT, MiniLM, RoBERTa); features are the last hidden state.
* ``"clip"``: CLIP-style text towers (causal, end-of-text pooling); features = last hidden state.

Everything is loaded with ``local_files_only=True`` from a directory checked by
:func:`~find_plugin.encoders.language.errors.resolve_local_model_path`.
"""

import hashlib
import os
from typing import Optional, Tuple, Union

import torch

from .errors import LanguageEncoderError, SlowTokenizerError

__all__ = [
    "KINDS",
    "detect_kind",
    "resolve_dtype",
    "load_tokenizer",
    "load_text_model",
    "compute_model_identity",
]

KINDS = ("decoder", "encoder", "clip")

_DECODER_TYPES = {
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "phi",
    "phi3",
    "olmo",
    "gpt2",
    "gpt_neox",
    "opt",
    "falcon",
}
_ENCODER_TYPES = {
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "mpnet",
    "electra",
    "albert",
    "deberta",
    "deberta-v2",
    "camembert",
}
_CLIP_TYPES = {"clip", "clip_text_model"}

_DTYPE_ALIASES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}

# Files hashed in full for the model identity (small); weights are sampled (see below).
_SMALL_FILE_LIMIT = 64 * 1024 * 1024
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
_SAMPLE_BYTES = 1 << 20


def detect_kind(model_type: str, *, override: Optional[str] = None) -> str:
    """Map a config ``model_type`` to one of :data:`KINDS`; ``override`` (if given) wins."""
    if override is not None:
        if override not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS} or None, got {override!r}")
        return override
    if model_type in _DECODER_TYPES:
        return "decoder"
    if model_type in _ENCODER_TYPES:
        return "encoder"
    if model_type in _CLIP_TYPES:
        return "clip"
    raise LanguageEncoderError(
        f"cannot tell the text-encoder kind of model_type={model_type!r}; pass kind= one of {KINDS}"
    )


def resolve_dtype(dtype: Union[None, str, torch.dtype]) -> torch.dtype:
    """``None`` -> float32; accepts torch dtypes and names such as 'fp16', 'bfloat16'."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype: expected float32/float16/bfloat16, got {dtype}")
        return dtype
    key = str(dtype).lower().replace("torch.", "")
    if key not in _DTYPE_ALIASES:
        raise ValueError(f"dtype: expected one of {sorted(_DTYPE_ALIASES)}, got {dtype!r}")
    return _DTYPE_ALIASES[key]


def load_tokenizer(path: str, kind: str):
    """Fast tokenizer, right padding; decoders pad with their eos token as FIND does."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True, use_fast=True)
    if not getattr(tok, "is_fast", False):
        raise SlowTokenizerError(
            f"{path}: only a slow tokenizer ({type(tok).__name__}) could be loaded; character "
            f"offsets need a fast tokenizer. Add a tokenizer.json to the folder (e.g. "
            f"AutoTokenizer.from_pretrained(path).save_pretrained(path) on a machine with "
            f"'tokenizers' and 'sentencepiece' installed converts it)."
        )
    tok.padding_side = "right"
    if kind == "decoder":
        if tok.eos_token is None:
            raise LanguageEncoderError(f"{path}: decoder tokenizer has no eos token to pad with")
        tok.pad_token = tok.eos_token
    elif tok.pad_token is None:
        if tok.eos_token is None:
            raise LanguageEncoderError(f"{path}: tokenizer has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return tok


def load_text_model(path: str, kind: str, dtype: torch.dtype) -> Tuple[torch.nn.Module, int]:
    """Load the frozen text tower in eval mode. Returns ``(model, num_hidden_layers)``.

    Decoders are loaded without their LM head (``AutoModel`` strips it), which saves memory.
    """
    from transformers import AutoConfig, AutoModel, CLIPTextModel

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    kwargs = dict(local_files_only=True, dtype=dtype)
    if kind == "clip":
        model = CLIPTextModel.from_pretrained(path, **kwargs)
    else:
        model = AutoModel.from_pretrained(path, **kwargs)
    if getattr(config, "model_type", "") == "clip":
        config = config.text_config
    model.eval()
    model.requires_grad_(False)
    n_layers = getattr(model.config, "num_hidden_layers", None)
    if n_layers is None:
        n_layers = getattr(config, "num_hidden_layers")
    return model, int(n_layers)


def _hash_file(h, full: str, name: str, size: int) -> None:
    h.update(f"{name}:{size}:".encode())
    with open(full, "rb") as f:
        if name.endswith(_WEIGHT_SUFFIXES) and size > 2 * _SAMPLE_BYTES:
            # Weights are big; the head (format header + first tensors) and tail identify them.
            h.update(f.read(_SAMPLE_BYTES))
            f.seek(size - _SAMPLE_BYTES)
            h.update(f.read(_SAMPLE_BYTES))
        else:
            h.update(f.read())


def compute_model_identity(path: str, *, kind: str, dtype: torch.dtype) -> str:
    """A stable id of a local model folder, used in cache keys.

    Hashes config/tokenizer files in full and weight files by name, size, first and last MiB, so the
    id survives copying the folder elsewhere but changes when weights or tokenizer change.
    """
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if not os.path.isfile(full) or name.startswith("."):
            continue
        size = os.path.getsize(full)
        if size > _SMALL_FILE_LIMIT and not name.endswith(_WEIGHT_SUFFIXES):
            h.update(f"{name}:{size}".encode())
            continue
        _hash_file(h, full, name, size)
    dtype_name = str(dtype).replace("torch.", "")
    return f"{os.path.basename(path.rstrip(os.sep))}|{kind}|{dtype_name}|{h.hexdigest()[:32]}"
