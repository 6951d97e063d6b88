"""Official FIND / X-Decoder / SEEM checkpoints -> our layout, with an explicit key table.

The official loader keeps every key whose name and shape happen to match and silently ignores the
rest. Here every key is accounted for: :func:`convert_official_state_dict` classifies each official
key into a *source group*, maps it through :func:`official_key_table` (one entry per key of the
target model, e.g. ``FINDModel.state_dict()``) and fails, listing the keys, unless

* every key of a non-dropped group is mapped (no *unmapped* key),
* every target key has a source key or belongs to a group allowed to be *absent*,
* every mapped pair has the same shape.

Source groups (``SOURCE_GROUPS``; official key names after the wrapper prefix):

=============  ==========================================  ==================================
group          official keys (P = ``sem_seg_head.``)       our keys
=============  ==========================================  ==================================
backbone       ``backbone.X``                              ``backbone.X``
pixel_decoder  ``P pixel_decoder.X``                       ``pixel_decoder.X``
interface      ``P predictor.*`` (``official_keys``)       ``interface.*``
lang_proj      ``P predictor.lang_encoder.lang_proj``      ``interface.lang_proj``
logit_scale    ``P predictor.lang_encoder.logit_scale``    ``interface.logit_scale``
text_tower     ``P predictor.lang_encoder.lang_encoder.*`` (never mapped)
constants      ``dilation_kernel``, ``criterion.empty_weight``  (verified, dropped)
other          anything else                               (never mapped)
=============  ==========================================  ==================================

The text tower (LLaMA-7B / UniCL) is loaded from its own weights, so its keys must be dropped
explicitly (``drop=["text_tower"]``). The two persistent constant buffers of the official model are
checked (``dilation_kernel`` = ones [1, 1, 3, 3]; ``criterion.empty_weight`` = ones [K + 1] with the
last entry 0.1) and dropped. Wrapper prefixes are stripped: none (``save_pretrained`` files),
``model.`` (trainer resume files) or ``module.model.`` (DDP resume files); containers
``{"model": sd}`` / ``{"module": sd}`` / ``{"state_dict": sd}`` are unwrapped.
"""

import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .official_config import infer_find_config
from .official_keys import interface_key_table

__all__ = [
    "SOURCE_GROUPS",
    "OfficialConversionError",
    "ConversionReport",
    "unwrap_official",
    "official_group",
    "target_group",
    "official_key_table",
    "convert_official_state_dict",
    "looks_official",
]

SOURCE_GROUPS = (
    "backbone",
    "pixel_decoder",
    "interface",
    "lang_proj",
    "logit_scale",
    "text_tower",
    "constants",
    "other",
)
WRAPPER_PREFIXES = ("module.model.", "model.")
_PRED = "sem_seg_head.predictor."
_LANG = _PRED + "lang_encoder."
_PIX = "sem_seg_head.pixel_decoder."
CONSTANT_KEYS = ("dilation_kernel", "criterion.empty_weight")
# Target keys that exist once per feature level (group 1 or 2: the level).
_LEVEL_KEY = re.compile(r"interface\.(?:sampler\.mask_sptial_embed\.(\d+)$|input_proj\.(\d+)\.)")
NO_OBJECT_WEIGHT = 0.1


class OfficialConversionError(RuntimeError):
    """Unmapped / missing / shape-mismatched keys or a wrong constant; the message lists them."""

    def __init__(self, report: "ConversionReport"):
        self.report = report
        super().__init__(report.format(errors_only=True))


@dataclass
class ConversionReport:
    """What happened to every key. Lists are per group (see ``SOURCE_GROUPS``)."""

    source: str = "<state dict>"
    prefix: str = ""
    mapped: Dict[str, List[Tuple[str, str]]] = field(default_factory=dict)
    dropped: Dict[str, List[str]] = field(default_factory=dict)
    absent: Dict[str, List[str]] = field(default_factory=dict)  # allowed target keys w/o source
    unmapped: Dict[str, List[str]] = field(default_factory=dict)  # fatal
    missing: Dict[str, List[str]] = field(default_factory=dict)  # fatal (target keys)
    mismatched: List[Tuple[str, str, tuple, tuple]] = field(default_factory=list)  # fatal
    constants: List[str] = field(default_factory=list)  # verification notes
    bad_constants: List[str] = field(default_factory=list)  # fatal
    cast: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            any(self.unmapped.values())
            or any(self.missing.values())
            or self.mismatched
            or self.bad_constants
        )

    def counts(self) -> Dict[str, Dict[str, int]]:
        """group -> {mapped, dropped, absent, unmapped, missing}."""
        groups = set(self.mapped) | set(self.dropped) | set(self.absent)
        groups |= set(self.unmapped) | set(self.missing)
        return {
            g: {
                "mapped": len(self.mapped.get(g, [])),
                "dropped": len(self.dropped.get(g, [])),
                "absent": len(self.absent.get(g, [])),
                "unmapped": len(self.unmapped.get(g, [])),
                "missing": len(self.missing.get(g, [])),
            }
            for g in sorted(groups, key=_group_order)
        }

    def format(self, errors_only: bool = False) -> str:
        lines = [f"official checkpoint {self.source} (prefix {self.prefix!r}):"]
        lines.append(
            f"  {'group':<14}{'mapped':>8}{'dropped':>9}{'absent':>8}{'unmapped':>10}{'missing':>9}"
        )
        for g, c in self.counts().items():
            lines.append(
                f"  {g:<14}{c['mapped']:>8}{c['dropped']:>9}{c['absent']:>8}"
                f"{c['unmapped']:>10}{c['missing']:>9}"
            )
        lines += [f"  constant: {n}" for n in self.constants]
        if self.cast and not errors_only:
            lines.append(f"  {len(self.cast)} tensor(s) cast to the target dtype")
        for g, keys in self.unmapped.items():
            if keys:
                lines.append(
                    f"  {len(keys)} UNMAPPED key(s) of group {g!r} (no entry in the key table; "
                    f"pass drop=[{g!r}] / --drop {g} only if they are not needed):"
                )
                lines += [f"    {k}" for k in keys]
        for g, keys in self.missing.items():
            if keys:
                lines.append(
                    f"  {len(keys)} target key(s) of group {g!r} MISSING from the checkpoint "
                    f"(allow with allow_absent=[{g!r}] / --allow-absent {g}):"
                )
                lines += [f"    {k}" for k in keys]
        if self.mismatched:
            lines.append(f"  {len(self.mismatched)} SHAPE mismatch(es) (official vs ours):")
            lines += [f"    {a} -> {b}: {tuple(s)} vs {tuple(t)}" for a, b, s, t in self.mismatched]
        lines += [f"  BAD constant: {n}" for n in self.bad_constants]
        return "\n".join(lines)


def _group_order(g: str) -> Tuple[int, str]:
    return (SOURCE_GROUPS.index(g) if g in SOURCE_GROUPS else len(SOURCE_GROUPS), g)


# ------------------------------------------------------------------------------------------------
# prefixes, groups, table
# ------------------------------------------------------------------------------------------------
def unwrap_official(obj: Mapping) -> Tuple[Dict[str, torch.Tensor], str]:
    """Container / wrapper prefix handling. Returns (state dict without prefix, prefix).

    Raises ValueError if keys mix wrapper prefixes (a corrupted or hand-merged file)."""
    for name in ("model", "module", "state_dict"):
        inner = obj.get(name) if isinstance(obj, Mapping) else None
        if (
            isinstance(inner, Mapping)
            and inner
            and all(isinstance(v, torch.Tensor) for v in inner.values())
        ):
            obj = inner
            break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError("official checkpoint: expected a non-empty mapping of tensors")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"official checkpoint: non-tensor entries {bad[:5]}")
    keys = list(obj)
    for prefix in WRAPPER_PREFIXES:
        n = sum(k.startswith(prefix) for k in keys)
        if n == len(keys):
            return {k[len(prefix) :]: v for k, v in obj.items()}, prefix
        if n:
            other = [k for k in keys if not k.startswith(prefix)][:5]
            raise ValueError(
                f"official checkpoint mixes key prefixes: {n} key(s) start with {prefix!r}, "
                f"others do not (e.g. {other})"
            )
    return dict(obj), ""


def looks_official(keys: Iterable[str]) -> bool:
    """True for the official layout (after unwrapping): any ``sem_seg_head.*`` or constant key."""
    for k in keys:
        for p in ("",) + WRAPPER_PREFIXES:
            if k.startswith(p + "sem_seg_head.") or k in {p + c for c in CONSTANT_KEYS}:
                return True
    return False


def official_group(key: str) -> str:
    """Source group of an official key (no wrapper prefix)."""
    if key in CONSTANT_KEYS:
        return "constants"
    if key.startswith(_LANG + "lang_encoder."):
        return "text_tower"
    if key == _LANG + "lang_proj":
        return "lang_proj"
    if key == _LANG + "logit_scale":
        return "logit_scale"
    if key.startswith("backbone."):
        return "backbone"
    if key.startswith(_PIX):
        return "pixel_decoder"
    if key.startswith(_PRED):
        return "interface"
    return "other"


def target_group(key: str) -> str:
    """Group of one of OUR keys (same names as the source groups; other prefixes: first part)."""
    if key == "interface.lang_proj":
        return "lang_proj"
    if key == "interface.logit_scale":
        return "logit_scale"
    return key.split(".", 1)[0]


def official_key_table(target_keys: Iterable[str]) -> Dict[str, str]:
    """Explicit table ``official key -> our key`` with one entry per mappable target key.

    ``backbone.X`` and ``pixel_decoder.X`` keep their names (the vision modules use the official
    parameter names); ``interface.*`` comes from :func:`.official_keys.interface_key_table`.
    Target keys of other groups have no official counterpart and are not in the table.
    """
    target_keys = list(target_keys)
    layer_ids = {
        int(m.group(1)) for k in target_keys if (m := re.match(r"interface\.layers\.(\d+)\.", k))
    }
    level_ids = {int(m.group(1) or m.group(2)) for k in target_keys if (m := _LEVEL_KEY.match(k))}
    inverse = {}
    if any(k.startswith("interface.") for k in target_keys):
        table = interface_key_table(
            max(layer_ids) + 1 if layer_ids else 0, num_levels=max(level_ids, default=2) + 1
        )
        inverse = {ours: off for off, ours in table.items()}
    out: Dict[str, str] = {}
    for k in target_keys:
        if k.startswith("backbone."):
            out[k] = k
        elif k.startswith("pixel_decoder."):
            out[_PIX + k[len("pixel_decoder.") :]] = k
        elif k.startswith("interface."):
            off = inverse.get(k[len("interface.") :])
            if off is not None:
                out[off] = k
    return out


# ------------------------------------------------------------------------------------------------
# conversion
# ------------------------------------------------------------------------------------------------
def _check_constant(key: str, value: torch.Tensor) -> Tuple[bool, str]:
    v = value.detach().float().cpu()
    if key == "dilation_kernel":
        ok = tuple(v.shape) == (1, 1, 3, 3) and bool((v == 1).all())
        return ok, f"dilation_kernel {tuple(v.shape)} " + (
            "= ones (verified, dropped)" if ok else "is not ones [1, 1, 3, 3]"
        )
    ok = (
        v.dim() == 1
        and v.numel() >= 2
        and bool((v[:-1] == 1).all())
        and abs(float(v[-1]) - NO_OBJECT_WEIGHT) < 5e-4  # fp16 / bf16 copies allowed
    )
    return ok, f"criterion.empty_weight [{v.numel()}] " + (
        f"= ones with last {NO_OBJECT_WEIGHT} (verified, dropped)"
        if ok
        else f"is not ones with the last entry {NO_OBJECT_WEIGHT}"
    )


TargetLike = Union[nn.Module, Mapping[str, torch.Tensor]]


def convert_official_state_dict(
    obj: Mapping,
    *,
    target: Optional[TargetLike] = None,
    allow_absent: Sequence[str] = (),
    drop: Sequence[str] = (),
    source: str = "<state dict>",
    raise_on_error: bool = True,
) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """Convert an official state dict (or container) to our key layout.

    Args:
        target: the model to load into (or its ``state_dict()``; meta tensors are fine). Default:
            a ``FINDModel`` built on the meta device from :func:`infer_find_config`.
        allow_absent: groups whose target keys may have no source key (they keep their values).
        drop: source groups whose keys are ignored (``"constants"`` are always verified and
            dropped).
        raise_on_error: raise :class:`OfficialConversionError` unless the report is ``ok``.

    Returns:
        (state dict with our keys, cast to the target dtypes; the report).
    """
    unknown = sorted(set(drop) - set(SOURCE_GROUPS))
    if unknown:
        raise ValueError(f"drop: unknown group(s) {unknown}; groups are {list(SOURCE_GROUPS)}")
    sd, prefix = unwrap_official(obj)
    if target is None:
        from ..model import build_find_model

        with torch.device("meta"):
            target = build_find_model(**infer_find_config(sd))
    tgt = target.state_dict() if isinstance(target, nn.Module) else dict(target)
    table = official_key_table(tgt)
    report = ConversionReport(source=source, prefix=prefix)
    out: Dict[str, torch.Tensor] = {}
    drop = set(drop)

    for key, value in sd.items():
        g = official_group(key)
        if g == "constants":
            ok, note = _check_constant(key, value)
            (report.constants if ok else report.bad_constants).append(note)
            report.dropped.setdefault(g, []).append(key)
            continue
        if g in drop:
            report.dropped.setdefault(g, []).append(key)
            continue
        ours = table.get(key)
        if ours is None:
            report.unmapped.setdefault(g, []).append(key)
            continue
        want = tgt[ours]
        if tuple(value.shape) != tuple(want.shape):
            report.mismatched.append((key, ours, tuple(value.shape), tuple(want.shape)))
            continue
        if value.dtype != want.dtype and value.is_floating_point() and want.is_floating_point():
            report.cast.append(f"{key}: {value.dtype} -> {want.dtype}")
            value = value.to(want.dtype)
        out[ours] = value
        report.mapped.setdefault(g, []).append((key, ours))

    allow = set(allow_absent)
    bad_shape = {m[1] for m in report.mismatched}
    for ours in tgt:
        if ours in out or ours in bad_shape:
            continue
        g = target_group(ours)
        (report.absent if g in allow else report.missing).setdefault(g, []).append(ours)
    if raise_on_error and not report.ok:
        raise OfficialConversionError(report)
    return out, report
