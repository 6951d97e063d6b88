"""Embedding types and task prototypes of the FIND interface, as declarative data.

A *task prototype* (spec §1.3-1.5) names the variables a task adds to the interface's combined
sequence and, for each variable, states

* its kind (``proposal`` / ``query`` / ``memory`` / ``token``),
* how it is initialised (``init``: an input kind of :mod:`find_plugin.core.variables`),
* its content attention (cross-attention) rule (:class:`CrossRule`): which keys it reads (the
  image features of the layer's level, or token variables) and how they are masked,
* its condition attention (self-attention) rule: which variables its rows may attend,
* which named outputs (spec §1.5) it produces and in which space.

All requested tasks are merged (union of variables by name; a variable declared by two tasks must
be declared identically) and run in one forward pass; the attention-mask builder
(:mod:`find_plugin.core.attention_mask`) turns the rules into block masks. A new task is added by
:func:`register_prototype` with no edit of interface code.

Task inputs (keys of the per-task input dict ``tasks[task_name]``) are read by the builder of
the variable's input kind (``init``), a registry of :mod:`find_plugin.core.variables` (built-in
kinds and their keys are listed there; :func:`~find_plugin.core.variables.register_input_kind`
adds one). A variable declared by several requested tasks is fed by the first one's inputs; the
others may repeat them but not contradict them.

Re-implements (facts from the papers and code, no code copied):
- FIND: Zou et al., "Interfacing Foundation Models' Embeddings", arXiv 2312.07532
  (github.com/UX-Decoder/FIND).
"""

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from .registry import NameRegistry
from .variables import get_input_kind, init_kind

KINDS = ("proposal", "query", "memory", "token")

#: Cross-attention masking modes.
#: ``prev_mask``: image keys allowed where sigmoid(previous-layer mask of this row) >= 0.5;
#: ``global``: every image key; ``memory_prev_mask``: image keys allowed by the task's
#: ``prev_mask`` input; ``padding``: every non-padding token of the key variables;
#: ``indexed``: non-padding tokens whose item index equals the row's item index.
CROSS_MODES = ("prev_mask", "global", "memory_prev_mask", "padding", "indexed")

#: Output spaces: ``mask`` (B, n, H/4, W/4) logits, ``semantic`` (B, n, dim_proj), ``pixel``
#: (B, n, mask_dim), ``class_logits`` (B, n, K) against the class bank.
OUTPUT_SPACES = ("mask", "semantic", "pixel", "class_logits")

IMAGE = "image"


@dataclass(frozen=True)
class CrossRule:
    """Content-attention rule of a variable: ``keys`` is ``("image",)`` or token variable names."""

    keys: Tuple[str, ...]
    mode: str

    def __post_init__(self):
        if self.mode not in CROSS_MODES:
            raise ValueError(f"CrossRule.mode must be one of {CROSS_MODES}, got {self.mode!r}")
        image = IMAGE in self.keys
        if image and len(self.keys) != 1:
            raise ValueError("CrossRule.keys: 'image' cannot be mixed with token keys")
        if image != (self.mode in ("prev_mask", "global", "memory_prev_mask")):
            raise ValueError(f"CrossRule mode {self.mode!r} does not fit keys {self.keys}")

    @property
    def reads_image(self) -> bool:
        return IMAGE in self.keys


@dataclass(frozen=True)
class VariableSpec:
    """One named variable of the combined sequence (official names, spec §1.3).

    ``count``: ``proposals`` (num_queries rows), ``one``, ``per_item`` (one per item, with an
    item index), ``memories`` (num_memories rows) or ``input`` (as many rows as input tokens).
    ``reset_per_level``: token rows are replaced at every layer by that layer's level (visual
    prompt tokens); other tokens are carried from layer to layer.
    ``train_swaps``: ``(from, to, p)`` - in training, with probability p per forward pass the
    self-attention column ``from`` is replaced by ``to`` (official DYNAMICS).
    """

    name: str
    kind: str
    init: str
    count: str
    cross: Optional[CrossRule] = None
    self_attend: Tuple[str, ...] = ()
    outputs: Tuple[Tuple[str, str], ...] = ()
    reset_per_level: bool = False
    train_swaps: Tuple[Tuple[str, str, float], ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"VariableSpec {self.name}: kind must be one of {KINDS}")
        try:
            get_input_kind(self.init)
        except ValueError as err:
            raise ValueError(f"VariableSpec {self.name}: {err}") from None
        if init_kind(self.init) == "copy" and ":" not in self.init:
            raise ValueError(f"VariableSpec {self.name}: init 'copy' needs 'copy:<variable>'")
        if self.count not in ("proposals", "one", "per_item", "memories", "input"):
            raise ValueError(f"VariableSpec {self.name}: bad count {self.count!r}")
        for out_name, space in self.outputs:
            if space not in OUTPUT_SPACES:
                raise ValueError(f"VariableSpec {self.name}: output {out_name} space {space!r}")
        has_mask = any(space == "mask" for _, space in self.outputs)
        if self.cross is not None and self.cross.mode == "prev_mask" and not has_mask:
            raise ValueError(f"VariableSpec {self.name}: 'prev_mask' attention needs a mask output")
        if self.kind == "token" and self.outputs:
            raise ValueError(f"VariableSpec {self.name}: tokens produce no outputs")


@dataclass(frozen=True)
class TaskPrototype:
    """A task = the variables it adds (the base 'seg' variables are always present)."""

    name: str
    variables: Tuple[VariableSpec, ...]
    description: str = ""
    extra: Dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Built-in variables (official ATTENTION_ARCH of configs/find/focalt_llama_lang.yaml).
# --------------------------------------------------------------------------------------------
OBJECT = "proposals_vision_object"
IMAGE_QUERY = "queries_vision_image"

_V = VariableSpec
_OBJECT = _V(
    OBJECT,
    "proposal",
    "object_proposals",
    "proposals",
    CrossRule((IMAGE,), "prev_mask"),
    (OBJECT,),
    (
        ("pred_logits", "class_logits"),
        ("pred_masks", "mask"),
        ("pred_captions", "semantic"),
        ("pred_maskembs", "pixel"),
    ),
)
_IMAGE_QUERY = _V(
    IMAGE_QUERY,
    "query",
    "image_query",
    "one",
    CrossRule((IMAGE,), "global"),
    (IMAGE_QUERY,),
    (("pred_retrievals", "semantic"), ("pred_image_pixel", "pixel")),
)
_COPY_P = "copy:" + OBJECT
_COPY_Q = "copy:" + IMAGE_QUERY


def _proposals(name, self_extra, outputs, swaps=()):
    return _V(
        name,
        "proposal",
        _COPY_P,
        "proposals",
        CrossRule((IMAGE,), "prev_mask"),
        (name,) + tuple(self_extra),
        outputs,
        train_swaps=swaps,
    )


def _query(name, count, keys, mode, outputs):
    return _V(name, "query", _COPY_Q, count, CrossRule(tuple(keys), mode), (name,), outputs)


def _tokens(name, self_attend, init="tokens", cross=None, reset=False):
    return _V(name, "token", init, "input", cross, tuple(self_attend), (), reset_per_level=reset)


SEG = TaskPrototype("seg", (_OBJECT, _IMAGE_QUERY), "generic segmentation + image embedding")

CLASS = TaskPrototype(
    "class",
    (
        _query(
            "queries_language_class",
            "one",
            ["tokens_language_class"],
            "padding",
            (("pred_retrievals_class", "semantic"),),
        ),
        _tokens("tokens_language_class", ["tokens_language_class"]),
    ),
    "class-embedding generation (class prompt -> classifier row)",
)

GROUNDING = TaskPrototype(
    "grounding",
    (
        _proposals(
            "proposals_vision_grounding",
            ["tokens_language_description"],
            (("pred_gmasks", "mask"), ("pred_gtexts", "semantic")),
        ),
        _query(
            "queries_language_description",
            "per_item",
            ["tokens_language_description"],
            "indexed",
            (("pred_grounding_query", "semantic"),),
        ),
        # The grounding proposals <-> description tokens link is bidirectional.
        _tokens(
            "tokens_language_description",
            ["proposals_vision_grounding", "tokens_language_description"],
        ),
    ),
    "grounded / referring segmentation",
)

SPATIAL = TaskPrototype(
    "spatial",
    (
        _proposals(
            "proposals_vision_segment",
            ["tokens_vision_spatial", "memories_vision_spatial"],
            (("pred_smasks", "mask"), ("pred_spatials", "semantic"), ("pred_smaskembs", "pixel")),
            swaps=(("tokens_vision_spatial", "queries_vision_spatial", 0.3),),
        ),
        _query(
            "queries_vision_spatial",
            "per_item",
            ["tokens_vision_spatial"],
            "indexed",
            (("pred_spatial_class", "semantic"), ("pred_pspatials", "pixel")),
        ),
        _tokens(
            "tokens_vision_spatial", ["tokens_vision_spatial"], init="visual_prompts", reset=True
        ),
        _V(
            "memories_vision_spatial",
            "memory",
            "memories",
            "memories",
            CrossRule((IMAGE,), "memory_prev_mask"),
            ("memories_vision_spatial",),
        ),
    ),
    "interactive / spatial segmentation (visual prompts, optional memories via prev_mask)",
)

RETRIEVAL = TaskPrototype(
    "retrieval",
    (
        _query(
            "queries_language_caption",
            "one",
            ["tokens_language_caption"],
            "padding",
            (("pred_retrievals_lang", "semantic"),),
        ),
        _tokens("tokens_language_caption", ["tokens_language_caption"]),
    ),
    "image-text retrieval (text side)",
)

_LEGEND_QUERY = _query(
    "queries_interleave_legend",
    "one",
    ["tokens_interleave_legend"],
    "padding",
    (("pred_interleave_image", "semantic"), ("pred_legend_pixel", "pixel")),
)
_LEGEND_TOKENS = _tokens(
    "tokens_interleave_legend",
    ["tokens_interleave_legend"],
    init="legend_tokens",
    cross=CrossRule(("tokens_vision_spatial_",), "indexed"),
)
_INTERLEAVE_VISUAL = _tokens(
    "tokens_vision_spatial_", ["tokens_vision_spatial_"], init="visual_prompts", reset=True
)

INTERLEAVE = TaskPrototype(
    "interleave",
    (
        _proposals(
            "proposals_interleave_entity",
            ["tokens_interleave_legend"],
            (
                ("pred_imasks", "mask"),
                ("pred_interleave_objects", "semantic"),
                ("pred_imaskembs", "pixel"),
            ),
        ),
        _LEGEND_QUERY,
        _query(
            "queries_interleave_entity",
            "per_item",
            ["tokens_interleave_legend"],
            "indexed",
            (("pred_entity_class", "semantic"), ("pred_entity_pixel", "pixel")),
        ),
        _INTERLEAVE_VISUAL,
        _LEGEND_TOKENS,
    ),
    "interleave segmentation (entities of a sentence mixing text and visual prompts)",
)

INTERLEAVE_RETRIEVAL = TaskPrototype(
    "interleave_retrieval",
    (_LEGEND_QUERY, _INTERLEAVE_VISUAL, _LEGEND_TOKENS),
    "interleave retrieval (query side: legend query over an interleaved sentence)",
)

_REGISTRY: NameRegistry[TaskPrototype] = NameRegistry("task prototype")


def register_prototype(prototype: TaskPrototype, *, overwrite: bool = False) -> TaskPrototype:
    """Register ``prototype`` under ``prototype.name`` (error if taken unless ``overwrite``)."""
    if not isinstance(prototype, TaskPrototype):
        raise TypeError(f"register_prototype expects a TaskPrototype, got {type(prototype)}")
    return _REGISTRY.add(prototype.name, prototype, overwrite=overwrite)


def unregister_prototype(name: str) -> None:
    _REGISTRY.remove(name)


def get_prototype(name: str) -> TaskPrototype:
    return _REGISTRY.get(name)


def list_prototypes() -> List[str]:
    return _REGISTRY.names()


def merge_prototypes(task_names: Iterable[str]) -> List[VariableSpec]:
    """Variables of 'seg' plus the requested tasks, in first-declaration order (union by name)."""
    merged: Dict[str, VariableSpec] = {}
    owner: Dict[str, str] = {}
    names = ["seg"] + [t for t in task_names if t != "seg"]
    for task in names:
        for var in get_prototype(task).variables:
            if var.name in merged:
                if merged[var.name] != var:
                    raise ValueError(
                        f"variable {var.name!r} is declared differently by tasks "
                        f"{owner[var.name]!r} and {task!r}"
                    )
                continue
            merged[var.name] = var
            owner[var.name] = task
    return list(merged.values())


def variable_declarers(task_names: Iterable[str]) -> Dict[str, List[str]]:
    """Map variable name -> the requested tasks ('seg' first) declaring it, in request order; the
    first one's inputs feed the variable."""
    declarers: Dict[str, List[str]] = {}
    for task in ["seg"] + [t for t in task_names if t != "seg"]:
        for var in get_prototype(task).variables:
            declarers.setdefault(var.name, []).append(task)
    return declarers


def variable_owner(task_names: Iterable[str]) -> Dict[str, str]:
    """Map variable name -> first requested task that declares it (whose inputs feed it)."""
    return {name: tasks[0] for name, tasks in variable_declarers(task_names).items()}


for _p in (SEG, CLASS, GROUNDING, SPATIAL, RETRIEVAL, INTERLEAVE, INTERLEAVE_RETRIEVAL):
    register_prototype(_p)
