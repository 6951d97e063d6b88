"""Frozen text-encoder adapter: texts -> token features, mask, char offsets, sentence embedding.

This is FIND's language side up to (not including) the trainable ``lang_proj``, which the core owns.
For the LLaMA family it follows the official encoder: right padding with pad = eos, position ids
``cumsum(attention_mask) - 1`` (padding positions set to 1), features
``hidden_states[feature_layer]`` (default -12 = output of decoder layer 21 of LLaMA-7B, before the
final norm), sentence embedding = mean over valid tokens. Encoders (BERT/MiniLM) use the last hidden
state and the same mean; CLIP-style towers use the last hidden state and the end-of-text token as
sentence embedding.

Padded positions of ``token_features`` are always zero (the official code keeps the LLM output there
but never reads it); this makes cached and freshly computed outputs identical.
"""

import os
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .cache import TokenFeatureCache, make_cache_key
from .errors import LanguageEncoderError, resolve_local_model_path
from .loading import (
    compute_model_identity,
    detect_kind,
    load_text_model,
    load_tokenizer,
    resolve_dtype,
)

__all__ = ["TextFeatures", "TextTokenEncoder"]


@dataclass
class TextFeatures:
    """Output of :class:`TextTokenEncoder` for B texts padded to length L.

    Attributes:
        token_features: [B, L, D_text] float (model dtype); zero at padded positions.
        token_valid: [B, L] bool, True on real tokens (right padded: valid tokens come first).
        offsets: [B, L, 2] int64 character spans ``[start, end)`` into each text; ``(0, 0)`` for
            special tokens (BOS/CLS/SEP/EOT) and padding.
        sentence_embedding: [B, D_text]; mean over valid tokens (decoder/encoder) or the
            end-of-text token (clip).
        input_ids: [B, L] int64 token ids (padding = the tokenizer's pad id; eos for decoders).
    """

    token_features: torch.Tensor
    token_valid: torch.Tensor
    offsets: torch.Tensor
    sentence_embedding: torch.Tensor
    input_ids: torch.Tensor


class TextTokenEncoder(nn.Module):
    """Frozen Hugging Face text tower with an optional disk cache of token features.

    Args:
        model_path: local model directory (hub ids are rejected: offline by design).
        kind: "decoder" | "encoder" | "clip"; None detects it from ``config.model_type``.
        feature_layer: index into ``hidden_states`` (negative counts from the end, as in FIND);
            None means -12 for decoders and ``last_hidden_state`` for the other kinds.
        max_length: token budget of sentences (FIND ``MODEL.TEXT.CONTEXT_LENGTH`` = 77).
        class_max_length: token budget of class prompts (FIND ``MASK.CLASS_TOKEN_LENGTH`` = 150).
        padding: "max_length" pads every batch to the budget (as FIND does); "longest" to the
            longest text of the batch.
        dtype: weights/feature dtype (None = float32; use float16 for LLaMA-7B on GPU).
        device: optional device to move the model to after loading.
        cache_dir: optional directory of a :class:`TokenFeatureCache`, used transparently.
        model_identity: override of the model part of cache keys (default: hash of the folder).
        save_weights: include the frozen tower in ``state_dict`` (default False: checkpoints of a
            model holding this adapter then stay small, and loading them does not require it).
    """

    def __init__(
        self,
        *,
        model_path: Union[str, os.PathLike],
        kind: Optional[str] = None,
        feature_layer: Optional[int] = None,
        max_length: int = 77,
        class_max_length: int = 150,
        padding: str = "max_length",
        dtype: Union[None, str, torch.dtype] = None,
        device: Union[None, str, torch.device] = None,
        cache_dir: Optional[str] = None,
        model_identity: Optional[str] = None,
        save_weights: bool = False,
    ):
        super().__init__()
        path = resolve_local_model_path(model_path, argument="model_path")
        from transformers import AutoConfig  # deferred: path errors need no transformers

        if padding not in ("max_length", "longest"):
            raise ValueError(f"padding: expected 'max_length' or 'longest', got {padding!r}")
        for name, value in (("max_length", max_length), ("class_max_length", class_max_length)):
            if not isinstance(value, int) or value < 2:
                raise ValueError(f"{name}: expected an int >= 2, got {value!r}")
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        self.kind = detect_kind(getattr(config, "model_type", ""), override=kind)
        self.dtype = resolve_dtype(dtype)
        self.model_path = path
        self.tokenizer = load_tokenizer(path, self.kind)
        self.model, self.num_layers = load_text_model(path, self.kind, self.dtype)
        if device is not None:
            self.model.to(device)
        self.hidden_size = int(self.model.config.hidden_size)
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)
        self.max_length = self._check_length(max_length, "max_length")
        self.class_max_length = self._check_length(class_max_length, "class_max_length")
        self.padding = padding
        self.feature_layer, self.layer_tag = self._resolve_layer(feature_layer)
        self.model_identity = model_identity or compute_model_identity(
            path, kind=self.kind, dtype=self.dtype
        )
        self.cache = TokenFeatureCache(cache_dir=cache_dir) if cache_dir else None
        self.save_weights = bool(save_weights)
        if not self.save_weights:
            self._register_state_dict_hook(_drop_frozen_keys)
            self.register_load_state_dict_post_hook(_ignore_missing_frozen_keys)

    # ----------------------------------------------------------------------------- setup helpers
    def _check_length(self, value: int, name: str) -> int:
        if self.max_positions is not None and value > self.max_positions:
            # CLIP towers have 77 positions, fewer than FIND's 150-token class prompts.
            warnings.warn(
                f"{name}={value} exceeds the model's {self.max_positions} positions; using "
                f"{self.max_positions}",
                RuntimeWarning,
                stacklevel=3,
            )
            return int(self.max_positions)
        return int(value)

    def _resolve_layer(self, feature_layer: Optional[int]) -> Tuple[Optional[int], str]:
        if feature_layer is None and self.kind != "decoder":
            return None, "last_hidden_state"
        layer = -12 if feature_layer is None else feature_layer
        n_states = self.num_layers + 1  # embeddings + one per layer
        if not isinstance(layer, int) or not -n_states <= layer < n_states:
            raise ValueError(
                f"feature_layer: expected an int in [{-n_states}, {n_states - 1}] for a model with "
                f"{self.num_layers} layers, got {layer!r}"
                + (" (the decoder default, FIND's LLaMA-7B layer)" if feature_layer is None else "")
            )
        index = layer % n_states
        return index, f"hidden_states[{index}]"

    def train(self, mode: bool = True):
        """The text tower stays in eval mode (frozen; no dropout) whatever ``mode`` is."""
        super().train(mode)
        self.model.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ----------------------------------------------------------------------------- public API
    def forward(self, texts: Sequence[str], *, max_length: Optional[int] = None) -> TextFeatures:
        """Encode sentences (budget ``max_length``, default ``self.max_length``)."""
        return self._encode(texts, max_length)[0]

    def encode_class_prompts(self, texts: Sequence[str]) -> TextFeatures:
        """Encode class prompts with the class budget (``class_max_length``)."""
        return self._encode(texts, self.class_max_length)[0]

    def precompute(
        self, texts: Sequence[str], *, max_length: Optional[int] = None, batch_size: int = 32
    ) -> dict:
        """Fill the cache for ``texts`` (duplicates counted once).

        Returns ``{"total": unique texts, "computed": n, "cached": n}``.
        """
        if self.cache is None:
            raise LanguageEncoderError("precompute: this encoder was built without cache_dir")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        unique = list(dict.fromkeys(_check_texts(texts)))
        computed = cached = 0
        for start in range(0, len(unique), batch_size):
            _, hits, misses = self._encode(unique[start : start + batch_size], max_length)
            cached += hits
            computed += misses
        return {"total": len(unique), "computed": computed, "cached": cached}

    def cache_key(self, text: str, max_length: Optional[int] = None) -> str:
        """Cache key of ``text`` under this model, layer and budget."""
        budget = self.effective_max_length(max_length)
        return make_cache_key(
            model_identity=self.model_identity,
            layer=self.layer_tag,
            max_length=budget,
            text=text,
        )

    # ----------------------------------------------------------------------------- internals
    def effective_max_length(self, max_length: Optional[int] = None) -> int:
        """Token budget actually used for ``max_length`` (None = sentence budget), capped at the
        model's positions."""
        if max_length is None:
            return self.max_length
        if not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length: expected an int >= 2, got {max_length!r}")
        if self.max_positions is not None:
            return min(max_length, int(self.max_positions))
        return max_length

    def _tokenize(self, texts: List[str], budget: int):
        enc = self.tokenizer(
            texts,
            padding=self.padding,
            truncation=True,
            max_length=budget,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        return enc["input_ids"].long(), enc["attention_mask"].bool(), enc["offset_mapping"].long()

    @torch.no_grad()
    def _run_model(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Features [b, l, D] for right-padded ``ids``/``mask`` [b, l] (already on the device)."""
        kwargs = dict(input_ids=ids, attention_mask=mask.long(), return_dict=True)
        if self.kind == "decoder":
            # Position ids count real tokens only; padding gets 1 as in the official encoder.
            position_ids = mask.long().cumsum(-1) - 1
            position_ids.masked_fill_(~mask, 1)
            kwargs.update(position_ids=position_ids, use_cache=False)
        if self.feature_layer is None:
            return self.model(**kwargs).last_hidden_state
        return self.model(**kwargs, output_hidden_states=True).hidden_states[self.feature_layer]

    @torch.no_grad()
    def _encode(
        self, texts: Sequence[str], max_length: Optional[int]
    ) -> Tuple[TextFeatures, int, int]:
        texts = _check_texts(texts)
        budget = self.effective_max_length(max_length)
        ids, mask, offsets = self._tokenize(texts, budget)
        n_valid = mask.sum(1)
        batch, length = ids.shape
        device = self.device
        out = torch.zeros(batch, length, self.hidden_size, dtype=self.dtype, device=device)

        rows: List[Optional[torch.Tensor]] = [None] * batch
        keys: List[Optional[str]] = [None] * batch
        if self.cache is not None:
            for i, text in enumerate(texts):
                keys[i] = self.cache_key(text, budget)
                rows[i] = self._lookup(keys[i], int(n_valid[i]), offsets[i, : int(n_valid[i])])
        missing = [i for i in range(batch) if rows[i] is None]
        hits = batch - len(missing)

        if missing:
            sub = torch.tensor(missing, dtype=torch.long)
            # Compute only up to the longest text of the sub-batch: valid tokens never attend to
            # right padding, so this matches padding to the budget and saves work.
            span = max(1, int(n_valid[sub].max()))
            feats = self._run_model(ids[sub, :span].to(device), mask[sub, :span].to(device))
            for j, i in enumerate(missing):
                n = int(n_valid[i])
                rows[i] = feats[j, :n].to(self.dtype)
                if self.cache is not None:
                    self.cache.put(keys[i], rows[i], offsets[i, :n], text=texts[i])
        for i, row in enumerate(rows):
            out[i, : row.shape[0]] = row.to(device=device, dtype=self.dtype)

        mask_d = mask.to(device)
        ids_d = ids.to(device)
        offsets = offsets * mask.unsqueeze(-1)  # padding spans are (0, 0)
        features = TextFeatures(
            token_features=out,
            token_valid=mask_d,
            offsets=offsets.to(device),
            sentence_embedding=self._pool(out, mask_d, ids_d),
            input_ids=ids_d,
        )
        return features, hits, len(missing)

    def _lookup(self, key: str, n_valid: int, offsets: torch.Tensor) -> Optional[torch.Tensor]:
        entry = self.cache.get(key, expected_dim=self.hidden_size)
        if entry is None:
            return None
        if entry.features.shape[0] != n_valid or not torch.equal(entry.offsets, offsets):
            # Same key but another tokenisation: the tokenizer changed in place. Recompute.
            warnings.warn(
                f"text-feature cache entry {self.cache.path_for(key)} does not match the current "
                f"tokenisation; recomputing it",
                RuntimeWarning,
                stacklevel=3,
            )
            self.cache.delete(key)
            return None
        return entry.features

    def _pool(self, feats: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Sentence embedding [B, D] from features [B, L, D], mask [B, L] bool and ids [B, L]."""
        if self.kind == "clip":
            eos = self.tokenizer.eos_token_id
            is_eot = (ids == eos) & mask
            last_valid = (mask.long().sum(1) - 1).clamp(min=0)
            # First end-of-text token among the valid ones; the last valid token if none.
            first_eot = torch.where(is_eot.any(1), is_eot.long().argmax(1), last_valid)
            return feats[torch.arange(feats.shape[0], device=feats.device), first_eot]
        weights = mask.unsqueeze(-1).float()
        total = (feats.float() * weights).sum(1)
        return (total / weights.sum(1).clamp(min=1.0)).to(feats.dtype)


def _check_texts(texts: Sequence[str]) -> List[str]:
    if isinstance(texts, str):
        raise TypeError(
            "texts: expected a sequence of strings, got a single str (wrap it in a list)"
        )
    texts = list(texts)
    if not texts:
        raise ValueError("texts: expected at least one text, got an empty sequence")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}]: expected str, got {type(t).__name__}")
    return texts


def _drop_frozen_keys(module, state_dict, prefix, local_metadata):
    for key in [k for k in state_dict if k.startswith(prefix + "model.")]:
        del state_dict[key]
    return state_dict


def _ignore_missing_frozen_keys(module, incompatible_keys):
    # Keys arrive with the parent's prefix (e.g. "lang_encoder.model.embed_tokens.weight").
    frozen = {"model." + k for k in module.model.state_dict()}
    missing = incompatible_keys.missing_keys
    for key in list(missing):
        parts = key.split(".")
        if any(".".join(parts[i:]) in frozen for i in range(len(parts))):
            missing.remove(key)
