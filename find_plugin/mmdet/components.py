"""FIND's model parts and tasks in MMDetection's registries (framework-free classes, FIND names).

``MODELS``: ``FINDFocalNet`` (:class:`~find_plugin.encoders.vision.FocalNet`, keyword arguments
as in :data:`find_plugin.presets.FOCALNET_VARIANTS`), ``FINDEfficientNetLite0``
(:class:`~find_plugin.encoders.vision.EfficientNetLite0Backbone`, packaged ImageNet weights),
``FINDTransformerEncoderPixelDecoder`` (:class:`~find_plugin.encoders.vision.
TransformerEncoderPixelDecoder`; ``input_shape`` is filled in from the backbone by the detector)
and ``FINDInterface`` (:class:`~find_plugin.core.FINDInterface`; ``mask_dim`` / ``in_channels``
from the pixel decoder).

:func:`build_find_tasks` builds the task layer's tasks from a config dict ``{name: options}``
(the registry of :mod:`find_plugin.tasks`; an unknown name fails with the registered names), with
the class names of the dataset (``metainfo``) given to the tasks that need them.
"""

from typing import Dict, List, Mapping, Optional, Sequence, Union

from mmdet.registry import DATASETS, MODELS

from ..core.interface import FINDInterface
from ..encoders.vision.efficientnet_lite import EfficientNetLite0Backbone
from ..encoders.vision.focalnet import FocalNet
from ..encoders.vision.pixel_decoder import TransformerEncoderPixelDecoder
from ..tasks import FINDTask, build_task, get_task

__all__ = ["build_find_tasks", "resolve_metainfo", "CLASS_NAME_TASKS"]

MODELS.register_module("FINDFocalNet", module=FocalNet)
MODELS.register_module("FINDEfficientNetLite0", module=EfficientNetLite0Backbone)
MODELS.register_module("FINDTransformerEncoderPixelDecoder", module=TransformerEncoderPixelDecoder)
MODELS.register_module("FINDInterface", module=FINDInterface)

#: Tasks that take the dataset's class names (``class_names``): required by ``generic``, the
#: class-prompt fallback of ``grounding``.
CLASS_NAME_TASKS = ("generic", "grounding")


def resolve_metainfo(metainfo: Union[str, Mapping, None]) -> Optional[Dict]:
    """``metainfo``: a dict with ``classes`` (K names in contiguous id order: things first, then
    stuff, as mmdet's panoptic datasets) and ``thing_classes``; or the name of a registered
    dataset whose ``METAINFO`` has them (e.g. ``'CocoPanopticDataset'``); or None."""
    if metainfo is None:
        return None
    if isinstance(metainfo, str):
        meta = getattr(DATASETS.get(metainfo), "METAINFO", None)
        if meta is None:
            raise KeyError(f"metainfo={metainfo!r}: not a registered dataset with a METAINFO")
        metainfo = meta
    meta = dict(metainfo)
    if "classes" not in meta:
        raise KeyError(f"metainfo must have 'classes' (the K class names), got keys {sorted(meta)}")
    meta["classes"] = list(meta["classes"])
    things = meta.get("thing_classes")
    meta["thing_classes"] = list(meta["classes"] if things is None else things)
    unknown = [c for c in meta["thing_classes"] if c not in meta["classes"]]
    if unknown:
        raise ValueError(f"metainfo thing_classes {unknown} are not in classes")
    return meta


def is_thing_list(meta: Optional[Mapping]) -> Optional[List[bool]]:
    """K booleans (thing classes) of :func:`resolve_metainfo`'s dict."""
    if meta is None:
        return None
    things = set(meta["thing_classes"])
    return [c in things for c in meta["classes"]]


def build_find_tasks(
    tasks: Mapping[str, Optional[Mapping]], *, classes: Optional[Sequence[str]] = None
) -> Dict[str, FINDTask]:
    """``{name: options}`` -> ``{name: FINDTask}`` (``options``: the task's keyword arguments;
    ``class_names`` defaults to ``classes`` for :data:`CLASS_NAME_TASKS`)."""
    out = {}
    for name, options in dict(tasks).items():
        try:
            get_task(name)
        except KeyError as e:
            raise KeyError(f"FIND tasks config: {e.args[0]}") from None
        opts = dict(options or {})
        if name in CLASS_NAME_TASKS and "class_names" not in opts:
            if classes is None and name == "generic":
                raise KeyError(
                    "FIND task 'generic' needs class names: set metainfo (dict(classes=..., "
                    "thing_classes=...) or a dataset type name) or tasks.generic.class_names"
                )
            opts["class_names"] = None if classes is None else list(classes)
        out[name] = build_task(name, **opts)
    return out
