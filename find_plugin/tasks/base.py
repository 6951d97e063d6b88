"""The framework-free task layer: records, samples, text features and the task registry.

A FIND *task* (spec §2) turns the annotations of one image into the interface's inputs and the
criterion's targets, and the interface's outputs back into predictions and metrics. Each task is
one :class:`FINDTask` subclass in its own module, registered with :func:`register_task`; the
detectron2 and MMDetection adapters only convert their formats to and from the **record** below and
call the task methods, so packing, prompt simulation, picks and metrics exist once.

Record (one image, produced by an adapter's mapper; every key optional, tasks read what they need):

* ``image_size``: (h, w) of the image tensor before batch padding (masks are at this size);
* ``labels`` [N] int64 contiguous class ids in [0, K); ``masks`` [N, h, w] bool (segments);
* ``captions``: list of str;
* ``groundings``: list of ``{"text": str, "masks": [m, h, w] bool}`` (referring sentences);
* ``entities``: list of interleave sentences ``{"sentence": str, "phrases": [{"start", "end",
  "mask" [h, w] bool, optional "prompt" [h, w] bool, optional "visual" bool}]}`` (FIND-Bench;
  ``start``/``end`` are character offsets into ``sentence``).
* ``prompts``: list of ``{"pos": [h, w] bool, optional "neg": [h, w] bool}``, one per object:
  given visual prompts (clicks, scribbles) that replace the simulated first click of the
  interactive task in evaluation (a demo; no ground truth needed).

A **sample** is what :meth:`FINDTask.sample` draws from a record for one pass (which captions,
phrases, prompts, class ids), with the texts already encoded as :class:`TokenFeatures`. Batches of
samples go to :meth:`FINDTask.pack_inputs` (-> ``{prototype: inputs}`` of
:class:`~find_plugin.core.interface.FINDInterface`) and :meth:`FINDTask.build_targets` (-> per-image
target dicts of :class:`~find_plugin.core.criterion.FINDCriterion`). All randomness comes from the
``torch.Generator`` passed in, so a seeded run is reproducible.

Language features: tasks never run a language model; they call ``encode_text(texts, kind)`` given
by the caller (the frozen encoder, usually through its disk cache), ``kind`` = ``"sentence"``
(77-token budget) or ``"class"`` (150). The trainable ``lang_proj`` is applied in ``pack_inputs``
/ ``build_targets`` through the ``project`` callable (``FINDInterface.project_tokens``).
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..core.conventions import NO_ITEM
from ..core.registry import NameRegistry
from ..core.text_pass import zero_feature_pass

__all__ = [
    "TokenFeatures",
    "TextEncoderFn",
    "ProjectFn",
    "FINDTask",
    "register_task",
    "unregister_task",
    "get_task",
    "build_task",
    "list_tasks",
    "pad_item_index",
    "record_size",
    "merge_task_inputs",
    "pad_token_batch",
    "randint",
    "stack_masks",
    "pad_masks",
    "encode_texts_on_zero_features",
]


@dataclass
class TokenFeatures:
    """Frozen language-model features of one text (real tokens only, no padding).

    ``features`` [T, D_text] float; ``offsets`` [T, 2] int64 character spans ``[start, end)``
    into ``text`` ((0, 0) for special tokens)."""

    features: torch.Tensor
    offsets: Optional[torch.Tensor] = None
    text: str = ""

    def __post_init__(self):
        if self.features.dim() != 2:
            raise ValueError(
                f"TokenFeatures({self.text!r}).features must be [T, D], got "
                f"{tuple(self.features.shape)}"
            )
        if self.offsets is not None and self.offsets.shape != (self.features.shape[0], 2):
            raise ValueError(
                f"TokenFeatures({self.text!r}).offsets must be [T={self.features.shape[0]}, 2], "
                f"got {tuple(self.offsets.shape)}"
            )


#: ``encode_text(texts, kind) -> [TokenFeatures]``, ``kind`` in {"sentence", "class"}.
TextEncoderFn = Callable[[Sequence[str], str], List[TokenFeatures]]
#: ``project(features [..., D_text]) -> [..., dim_proj]`` (``FINDInterface.project_tokens``).
ProjectFn = Callable[[torch.Tensor], torch.Tensor]


class FINDTask:
    """One task of FIND. Subclasses set the class attributes and implement the methods they need.

    Attributes:
        name: registry key (FIND task names: ``generic``, ``grounding``, ``interactive``,
            ``retrieval``, ``interleave``, ``interleave_retrieval``).
        prototypes: core prototypes this task feeds (keys of :meth:`pack_inputs`).
        loss_groups: :data:`~find_plugin.core.criterion.LOSS_GROUPS` keys it trains.
        metric: accumulator class of its evaluation metric (:mod:`.metrics`); None where the
            frameworks' standard evaluators apply (generic segmentation: PQ, mask AP, mIoU).
    """

    name: str = ""
    prototypes: Tuple[str, ...] = ()
    loss_groups: Tuple[str, ...] = ()
    metric: Optional[type] = None

    def sample(
        self,
        record: Mapping,
        *,
        generator: torch.Generator,
        encode_text: Optional[TextEncoderFn],
        training: bool,
    ) -> dict:
        """Draw this task's sample of one record (see the module docstring)."""
        raise NotImplementedError(f"task {self.name!r} defines no sample()")

    def pack_inputs(
        self, samples: Sequence[dict], *, project: ProjectFn, padded_size: Tuple[int, int]
    ) -> Dict[str, dict]:
        """Batch of samples -> ``{prototype: interface inputs}``. ``padded_size`` (H, W) is the
        batch's padded image size: prompt masks are zero-padded to it (bottom/right)."""
        raise NotImplementedError(f"task {self.name!r} defines no pack_inputs()")

    def build_targets(
        self, samples: Sequence[dict], *, project: ProjectFn, padded_size: Tuple[int, int]
    ) -> List[dict]:
        """Batch of samples -> per-image criterion target fragments (merged across tasks); target
        masks are zero-padded to ``padded_size`` like the image batch."""
        return [{} for _ in samples]

    def losses(self, outputs: Mapping, samples: Sequence[dict], **kwargs) -> Dict:
        """Weighted losses this task computes itself, for tasks whose losses are not groups of
        :class:`~find_plugin.core.criterion.FINDCriterion` (default: none)."""
        return {}


_TASKS: NameRegistry[type] = NameRegistry("FIND task")


def register_task(cls: type, *, overwrite: bool = False) -> type:
    """Register a :class:`FINDTask` subclass under ``cls.name`` (usable as a class decorator).
    Instances are made with :func:`build_task` (a task may take options, e.g. class names)."""
    if not (isinstance(cls, type) and issubclass(cls, FINDTask)) or not cls.name:
        raise TypeError(f"register_task expects a FINDTask subclass with a name, got {cls!r}")
    return _TASKS.add(cls.name, cls, overwrite=overwrite)


def unregister_task(name: str) -> None:
    _TASKS.remove(name)


def get_task(name: str) -> type:
    """The registered task class ``name``."""
    return _TASKS.get(name)


def build_task(name: str, **options) -> "FINDTask":
    """An instance of the registered task ``name`` with its keyword ``options``."""
    return get_task(name)(**options)


def list_tasks() -> List[str]:
    return _TASKS.names()


def merge_task_inputs(parts: Sequence[Tuple[str, Mapping[str, dict]]]) -> Dict[str, dict]:
    """Merge ``(task name, {prototype: inputs})`` pairs; two tasks feeding one prototype raise."""
    merged: Dict[str, dict] = {}
    owner: Dict[str, str] = {}
    for task, packed in parts:
        for proto, inputs in packed.items():
            if proto in merged:
                raise ValueError(
                    f"tasks {owner[proto]!r} and {task!r} both give inputs to prototype {proto!r}"
                )
            merged[proto], owner[proto] = dict(inputs), task
    return merged


def pad_token_batch(
    rows: Sequence[torch.Tensor], *, project: ProjectFn, index: Optional[Sequence] = None
) -> Dict[str, torch.Tensor]:
    """Per image [T_b, D_text] features -> ``tokens`` [B, T, dim_proj] (projected, zero padded),
    ``token_padding`` [B, T] (True = padded) and, with ``index`` (per image [T_b] item ids),
    ``token_index`` [B, T] (NO_ITEM on padding)."""
    if not rows:
        raise ValueError("pad_token_batch: empty batch")
    length = max(1, max(r.shape[0] for r in rows))
    dim = rows[0].shape[-1]
    feats = rows[0].new_zeros(len(rows), length, dim)
    padding = torch.ones(len(rows), length, dtype=torch.bool)
    token_index = torch.full((len(rows), length), NO_ITEM, dtype=torch.long)
    for b, r in enumerate(rows):
        feats[b, : r.shape[0]] = r
        padding[b, : r.shape[0]] = False
        if index is not None:
            token_index[b, : r.shape[0]] = torch.as_tensor(index[b], dtype=torch.long)
    out = {"tokens": project(feats), "token_padding": padding.to(feats.device)}
    if index is not None:
        out["token_index"] = token_index.to(feats.device)
    return out


def pad_item_index(counts_or_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """Per image item ids -> ``query_index`` [B, n] (NO_ITEM on padding)."""
    n = max([len(x) for x in counts_or_ids] + [0])
    out = torch.full((len(counts_or_ids), n), NO_ITEM, dtype=torch.long)
    for b, ids in enumerate(counts_or_ids):
        out[b, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
    return out


def stack_masks(masks: Sequence[torch.Tensor], size: Tuple[int, int]) -> torch.Tensor:
    """List of [h, w] masks -> [n, h, w] bool (``[0, h, w]`` when empty)."""
    if not len(masks):
        return torch.zeros(0, *size, dtype=torch.bool)
    return torch.stack([torch.as_tensor(m).bool() for m in masks])


def pad_masks(masks: torch.Tensor, padded_size: Tuple[int, int]) -> torch.Tensor:
    """[n, h, w] masks zero-padded bottom/right to ``padded_size`` (the image batch layout)."""
    h, w = masks.shape[-2:]
    ph, pw = padded_size
    if h > ph or w > pw:
        raise ValueError(f"masks of size {(h, w)} do not fit the padded size {tuple(padded_size)}")
    out = masks.new_zeros(masks.shape[0], ph, pw)
    out[:, :h, :w] = masks
    return out


def randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high] (inclusive) from ``generator``."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def record_size(record: Mapping, key: str = "image_size") -> Tuple[int, int]:
    if key not in record:
        raise KeyError(f"record has no {key!r} (the (h, w) of the image before batch padding)")
    h, w = record[key]
    return int(h), int(w)


def encode_texts_on_zero_features(
    interface: nn.Module, task: str, texts: Sequence[TokenFeatures], output: str, **extra
) -> torch.Tensor:
    """Batched text-only pass of prototype ``task`` over ``texts`` on zero image features ->
    ``outputs[output][:, 0]`` [N, D]; ``extra`` inputs ([N, ...] tensors) join the token ones."""
    if not texts:
        raise ValueError(f"{task}: no texts to encode")
    inputs = pad_token_batch([t.features for t in texts], project=interface.project_tokens)
    inputs.update(extra)
    return zero_feature_pass(interface, task, inputs, output)
