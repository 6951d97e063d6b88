"""``FINDDetector`` in MMDetection's ``MODELS``: FIND as a ``BaseDetector`` (loss, predict, tensor).

The detector *is* :class:`~find_plugin.task_model.FINDTaskModel` (the framework-free model shared
with detectron2: same parts ``backbone`` / ``pixel_decoder`` / ``interface`` and therefore the same
checkpoint keys, same tasks, criterion, class bank and per-task predictions) with mmdet's
``BaseDetector`` contract around it; it only converts mmdet's formats.

Inputs: ``batch_inputs`` [B, 3, H, W] from ``DetDataPreprocessor`` (RGB, normalised, padded to a
multiple of 32) and ``DetDataSample`` s with ``img_shape`` / ``ori_shape`` and the data fields
that :class:`~find_plugin.mmdet.transforms.FINDSampleTasks` packs: ``find_samples`` ({task:
sample}) and, in evaluation, ``find_gt`` (ground truth at the original size). In ``predict`` a
sample without ``find_samples`` gets the generic task only, so mmdet's own panoptic pipelines
(``LoadPanopticAnnotations`` + ``PackDetInputs``) evaluate generic segmentation as they are.

Predictions (``predict``; at ``ori_shape`` with ``rescale=True``, else at ``img_shape``):

* ``pred_panoptic_seg.sem_seg`` [1, H, W] int64, mmdet's encoding (category + instance x
  ``INSTANCE_OFFSET``, void = K; :func:`~find_plugin.mmdet.panoptic.core_to_mmdet_panoptic`);
* ``pred_sem_seg.sem_seg`` [1, H, W] int64 arg-max class;
* ``pred_instances``: ``masks`` [n, H, W] bool, ``scores`` [n], ``labels`` [n], ``bboxes`` [n, 4]
  (x1, y1, x2, y2 of the mask; zeros for an empty mask);
* ``pred_grounding_masks`` [G, H, W] logits (foreground > 0), one per referring sentence; on a
  sample without the generic task they are also ``pred_instances.masks`` [G, H, W] bool, what
  mmdet's ``RefSegMetric`` reads (with the ``gt_masks`` metainfo of ``PackFINDInputs``);
  ``pred_interleave_masks`` [E, H, W] logits, one per entity of the first sentence;
* ``pred_interactive_ious`` [N, max_clicks] (click rounds against ``find_gt``);
* ``pred_image_embedding`` [D]; ``pred_caption_embeddings`` [n, D] (retrieval);
  ``pred_interleave_embeddings`` [n, D] (interleave retrieval);
* ``pred_object_embeddings`` [Q, D], ``pred_interleave_query_embedding`` [D],
  ``pred_interleave_entity_embeddings`` [E, D], ``pred_interleave_entity_references`` [E]
  (interleave retrieval with visual references; the reference images go through
  :meth:`FINDDetector.extract_one`).

The names after ``pred_`` are the keys of the detectron2 outputs and of ``find_gt``; the metrics
of :mod:`find_plugin.mmdet.metrics` read them.
"""

import copy
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
from mmdet.models.detectors.base import BaseDetector
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData, PixelData

from ..presets import INTERFACE_PRESET, PIXEL_DECODER_PRESET
from ..task_model import TEST_DEFAULTS, FINDTaskModel
from ..tasks.criterion import build_task_criterion
from ..tasks.text import resolve_text_model_path, shared_text_encoder
from .components import build_find_tasks, is_thing_list, resolve_metainfo
from .panoptic import core_to_mmdet_panoptic

__all__ = ["FINDDetector", "build_language"]

#: Outputs of :meth:`FINDTaskModel.predict_tasks` stored as ``pred_<key>`` data fields.
_PLAIN_OUTPUTS = (
    "grounding_masks",
    "interleave_masks",
    "interactive_ious",
    "image_embedding",
    "caption_embeddings",
    "interleave_embeddings",
    "object_embeddings",
    "interleave_query_embedding",
    "interleave_entity_embeddings",
    "interleave_entity_references",
)


def build_language(language: Optional[Mapping]):
    """``encode_text`` of the frozen language model from a config dict (``path`` or ``package``,
    ``kind``, ``feature_layer``, ``max_length``, ``class_max_length``, ``dtype``, ``device``,
    ``cache_dir``), shared per process with the data pipelines; None without ``language``."""
    if not language:
        return None
    opts = dict(language)
    unknown = sorted(
        set(opts)
        - {
            "path",
            "package",
            "kind",
            "feature_layer",
            "max_length",
            "class_max_length",
            "dtype",
            "device",
            "cache_dir",
        }
    )
    if unknown:
        raise KeyError(f"language: unknown key(s) {unknown}")
    path = resolve_text_model_path(
        opts.pop("path", "") or "",
        opts.pop("package", "") or "",
        keys=("language.path", "language.package"),
    )
    return shared_text_encoder(path, **opts)


@MODELS.register_module()
class FINDDetector(FINDTaskModel, BaseDetector):
    """FIND for MMDetection.

    Args:
        backbone: config of the frozen backbone (``FINDFocalNet``, ``FINDEfficientNetLite0`` or
            any ``MODELS`` module with ``out_channels`` / ``out_strides`` and a dict output).
        pixel_decoder: config of the pixel decoder (default type
            ``FINDTransformerEncoderPixelDecoder``; keywords over
            :data:`~find_plugin.presets.PIXEL_DECODER_PRESET`; ``input_shape`` from the backbone).
        interface: keywords of :class:`~find_plugin.core.FINDInterface` over
            :data:`~find_plugin.presets.INTERFACE_PRESET` (``mask_dim`` / ``in_channels`` from the
            pixel decoder).
        tasks: ``{task name: options}`` every task the model can run (see
            :func:`~find_plugin.mmdet.components.build_find_tasks`).
        train_tasks: names of the tasks trained on every image.
        metainfo: class names (dict with ``classes`` / ``thing_classes`` or a dataset type name).
        language: the frozen language model (:func:`build_language`).
        criterion: keywords of :func:`~find_plugin.tasks.criterion.build_task_criterion`.
        train_backbone / train_pixel_decoder: make that part trainable (default frozen).
        test_cfg: inference options (keys of :data:`~find_plugin.task_model.TEST_DEFAULTS`).
        seed: seed of the model-side random choices.
        backbone_cache_size: images whose frozen backbone features are cached by content (0 =
            off; detectron2's ``MODEL.FIND_VISION.BACKBONE_CACHE_SIZE``).
        data_preprocessor: mmdet's ``DetDataPreprocessor`` config (normalisation, padding).
    """

    def __init__(
        self,
        *,
        backbone: dict,
        interface: Optional[dict] = None,
        pixel_decoder: Optional[dict] = None,
        tasks: Mapping[str, Optional[dict]],
        train_tasks: Sequence[str] = (),
        metainfo: Union[str, Mapping, None] = None,
        language: Optional[Mapping] = None,
        criterion: Optional[Mapping] = None,
        train_backbone: bool = False,
        train_pixel_decoder: bool = False,
        test_cfg: Optional[Mapping] = None,
        train_cfg: Optional[Mapping] = None,
        seed: int = 0,
        backbone_cache_size: int = 0,
        data_preprocessor: Optional[dict] = None,
        init_cfg: Optional[dict] = None,
    ):
        meta = resolve_metainfo(metainfo)
        task_objs = build_find_tasks(tasks, classes=meta["classes"] if meta else None)
        unknown = [t for t in train_tasks if t not in task_objs]
        if unknown:
            raise KeyError(f"train_tasks {unknown} are not among the model's tasks {list(tasks)}")
        bb_cfg = dict(backbone)
        bb_cfg.setdefault("frozen", not train_backbone)
        bb = MODELS.build(bb_cfg)
        pd_cfg = dict(PIXEL_DECODER_PRESET, type="FINDTransformerEncoderPixelDecoder")
        pd_cfg.update(pixel_decoder or {})
        pd_cfg.setdefault("frozen", not train_pixel_decoder)
        pd_cfg["input_shape"] = {
            name: (ch, bb.out_strides[name]) for name, ch in bb.out_channels.items()
        }
        pd = MODELS.build(pd_cfg)
        if_cfg = dict(INTERFACE_PRESET, pool_image_query=True, type="FINDInterface")
        if_cfg.update(interface or {})
        if_cfg.update(mask_dim=pd_cfg["mask_dim"], in_channels=pd_cfg["conv_dim"])
        iface = MODELS.build(if_cfg)
        generic = task_objs.get("generic")
        crit = build_task_criterion(
            [task_objs[t] for t in train_tasks],
            num_classes=generic.num_classes if generic is not None else 1,
            **dict(criterion or {}),
        )
        super().__init__(
            backbone=bb,
            pixel_decoder=pd,
            interface=iface,
            train_backbone=train_backbone,
            train_pixel_decoder=train_pixel_decoder,
            criterion=crit,
            tasks=task_objs,
            train_tasks=list(train_tasks),
            encode_text=build_language(language),
            is_thing=is_thing_list(meta),
            test={k: v for k, v in dict(test_cfg or {}).items() if k in TEST_DEFAULTS},
            seed=seed,
            backbone_cache_size=backbone_cache_size,
        )
        # BaseDetector.__init__ ran inside FINDVisionModel's super().__init__() with defaults.
        if data_preprocessor is not None:
            self.data_preprocessor = MODELS.build(copy.deepcopy(dict(data_preprocessor)))
        self.init_cfg = copy.deepcopy(init_cfg)
        self.metainfo = meta
        self.test_cfg = dict(test_cfg or {})
        self.train_cfg = dict(train_cfg or {})

    # ------------------------------------------------------------------ mmdet contract
    def forward(self, inputs, data_samples=None, mode: str = "tensor"):
        return BaseDetector.forward(self, inputs, data_samples, mode)

    def extract_feat(self, batch_inputs: torch.Tensor):
        """(multi-scale features, mask features) of the vision side."""
        return self.vision_features(batch_inputs)

    def loss(self, batch_inputs: torch.Tensor, batch_data_samples: List[DetDataSample]) -> Dict:
        """Weighted losses of the training tasks (``loss_mask_ce``, ``loss_mask_ce_0`` ...)."""
        per_image = []
        for i, ds in enumerate(batch_data_samples):
            if "find_samples" not in ds:
                raise KeyError(
                    f"data sample {i} (img_id {ds.metainfo.get('img_id')}) has no 'find_samples':"
                    " add dict(type='FINDSampleTasks', ...) and dict(type='PackFINDInputs') to "
                    "the training pipeline"
                )
            per_image.append(ds.find_samples)
        feats, mask_features = self.vision_features(batch_inputs)
        return self.compute_losses(per_image, tuple(batch_inputs.shape[-2:]), feats, mask_features)

    def _eval_samples(self, batch_data_samples) -> List[Mapping]:
        per_image = []
        for ds in batch_data_samples:
            if "find_samples" in ds:
                per_image.append(ds.find_samples)
                continue
            if "generic" not in self.tasks:
                raise KeyError(
                    f"img_id {ds.metainfo.get('img_id')}: no 'find_samples' in the data sample "
                    "and the model has no generic task to run by default"
                )
            size = tuple(ds.metainfo["img_shape"][:2])
            sample = self.tasks["generic"].sample(
                {"image_size": size}, generator=None, encode_text=None, training=False
            )
            per_image.append({"generic": sample})
        return per_image

    def extract_one(self, image: torch.Tensor):
        """Vision features of one uint8 image [3, h, w] in the pipeline's format (BGR, as
        ``LoadImageFromFile`` gives it): normalised and padded by the data preprocessor like a
        batch; ``(multi-scale features, mask_features, padded size)`` (the reference images of
        interleave retrieval with visual references)."""
        data = self.data_preprocessor({"inputs": [image], "data_samples": None}, False)
        x = data["inputs"]
        feats, mask_features = self.vision_features(x)
        return feats, mask_features, tuple(x.shape[-2:])

    def _forward(self, batch_inputs: torch.Tensor, batch_data_samples=None) -> Dict:
        """Tensor mode: the interface outputs (dict of tensors) of the samples' tasks."""
        feats, mask_features = self.vision_features(batch_inputs)
        samples = batch_data_samples or [
            DetDataSample(metainfo={"img_shape": tuple(batch_inputs.shape[-2:])})
            for _ in range(batch_inputs.shape[0])
        ]
        per_image = self._eval_samples(samples)
        names = sorted({n for s in per_image for n in s})
        tasks = [self.tasks[n] for n in names]
        _, inputs = self._collate(tasks, per_image, batch_inputs.shape[-2:], training=False)
        bank = None
        if "generic" in names:
            if self._eval_bank is None:
                self._eval_bank = self._build_bank()
            bank = self._eval_bank
        return self.interface(feats, mask_features, inputs, class_bank=bank)

    def predict(
        self, batch_inputs: torch.Tensor, batch_data_samples: List[DetDataSample], rescale=True
    ) -> List[DetDataSample]:
        feats, mask_features = self.vision_features(batch_inputs)
        per_image = self._eval_samples(batch_data_samples)
        key = "ori_shape" if rescale else "img_shape"
        metas = [ds.metainfo for ds in batch_data_samples]
        # A batch may mix validation sets whose samples hold different tasks (FINDConcatDataset:
        # a batch across two sets, or a rank's share of the sampler): the task layer collates
        # one task set per pass, so each group of images with the same tasks runs on its own
        # slice of the (shared) features.
        groups: Dict[tuple, List[int]] = {}
        for i, s in enumerate(per_image):
            groups.setdefault(tuple(sorted(s)), []).append(i)
        results: List[Mapping] = [{}] * len(per_image)
        for idx in groups.values():
            sel = torch.tensor(idx, device=mask_features.device)
            one = len(groups) == 1
            out = self.predict_tasks(
                [per_image[i] for i in idx],
                padded_size=tuple(batch_inputs.shape[-2:]),
                image_sizes=[tuple(metas[i]["img_shape"][:2]) for i in idx],
                output_sizes=[tuple(metas[i][key][:2]) for i in idx],
                feats=feats if one else [f.index_select(0, sel) for f in feats],
                mask_features=mask_features if one else mask_features.index_select(0, sel),
                find_gts=[batch_data_samples[i].get("find_gt", {}) for i in idx],
                image_ids=[metas[i].get("img_id") for i in idx],
            )
            for i, r in zip(idx, out):
                results[i] = r
        for ds, r in zip(batch_data_samples, results):
            self._fill(ds, r)
        return batch_data_samples

    def _fill(self, ds: DetDataSample, r: Mapping) -> None:
        if "panoptic_seg" in r:
            seg, infos = r["panoptic_seg"]
            ids = core_to_mmdet_panoptic(seg, infos, num_classes=self.tasks["generic"].num_classes)
            ds.pred_panoptic_seg = PixelData(sem_seg=ids[None])
        if "sem_seg" in r:
            ds.pred_sem_seg = PixelData(sem_seg=r["sem_seg"].argmax(0)[None])
        if "instances" in r:
            inst = r["instances"]
            ds.pred_instances = InstanceData(
                masks=inst["pred_masks"],
                scores=inst["scores"],
                labels=inst["pred_classes"],
                bboxes=inst["pred_boxes"],
            )
        elif "grounding_masks" in r:
            # mmdet's referring segmentation metric (RefSegMetric) reads pred_instances.masks
            ds.pred_instances = InstanceData(masks=r["grounding_masks"] > 0.0)
        for key in _PLAIN_OUTPUTS:
            if key in r:
                ds.set_field(r[key], "pred_" + key)
