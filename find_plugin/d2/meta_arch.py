"""``FIND`` in detectron2's ``META_ARCH_REGISTRY``: frozen backbone + ``FINDHead`` + the task layer.

Input (detectron2 contract, one dict per image, from a FIND mapper): ``image`` uint8 [3, H, W] in
``cfg.INPUT.FORMAT``; ``height`` / ``width`` (output size, the original image); ``find_samples``
(task name -> that task's sample, :func:`find_plugin.tasks.sample_record`); in evaluation
``find_gt`` (ground truth at the original size, read by the click rounds of interactive
segmentation and by the FIND evaluators).

Training returns detectron2's dict of weighted losses (``loss_mask_ce``, ``loss_mask_ce_0`` ...; see
:class:`~find_plugin.core.criterion.FINDCriterion`) for the tasks of ``MODEL.FIND.TASKS.TRAIN``.
Evaluation returns, per image, what the tasks present in its ``find_samples`` produce:

* ``generic``: ``sem_seg`` [K, H, W], ``panoptic_seg`` (ids [H, W] int32, 0 = void, segments_info
  with contiguous ``category_id``), ``instances`` (``pred_masks``, ``pred_boxes``, ``scores``,
  ``pred_classes``), as Mask2Former;
* ``grounding``: ``grounding_masks`` [G, H, W] logits (foreground > 0), one per sentence;
* ``interleave``: ``interleave_masks`` [E, H, W] logits, one per entity;
* ``interactive``: ``interactive_ious`` [N, max_clicks] (official click rounds against
  ``find_gt["interactive_masks"]``);
* ``retrieval``: ``image_embedding`` [D] and ``caption_embeddings`` [n, D];
* ``interleave_retrieval``: ``image_embedding`` and ``interleave_embeddings`` [n, D].
"""

from typing import Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.structures import BitMasks, ImageList, Instances

from ..core.class_bank import ClassBank
from ..core.criterion import FINDCriterion
from ..model import FINDModel
from ..tasks import FINDTask, collate_samples, task_losses
from .config import build_find_criterion
from .task_registry import FIND_TASK_REGISTRY, build_find_task

__all__ = ["FIND"]

# Prompt masks stay on the CPU: their points are drawn with the model's CPU generator.
_CPU_KEYS = ("pos_masks", "neg_masks")


@META_ARCH_REGISTRY.register()
class FIND(FINDModel):
    """Args (keyword-only, besides :class:`~find_plugin.model.FINDModel`'s parts):
    criterion: the :class:`FINDCriterion` of the training tasks.
    tasks: every task the model can run, by name (evaluation picks them per image).
    train_tasks: names of the tasks trained on every image.
    encode_text: ``encode_text(texts, kind)`` of the frozen language model (class bank).
    is_thing: K booleans (thing classes) of the generic task's classes.
    pixel_mean / pixel_std: per-channel normalisation in ``INPUT.FORMAT`` order.
    test: inference options (``semantic_on``, ``panoptic_on``, ``instance_on``,
        ``object_mask_threshold``, ``overlap_threshold``, ``top_k``, ``max_clicks``,
        ``interleave_official``, ``class_template``).
    seed: seed of the model-side random choices (correction rounds, prompt points, swaps).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone,
        pixel_decoder,
        interface,
        train_backbone: bool = False,
        train_pixel_decoder: bool = False,
        criterion: FINDCriterion,
        tasks: Mapping[str, FINDTask],
        train_tasks: Sequence[str],
        encode_text=None,
        is_thing: Optional[Sequence[bool]] = None,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_divisibility: int = 32,
        test: Optional[Mapping] = None,
        seed: int = 0,
    ):
        super().__init__(
            backbone=backbone,
            pixel_decoder=pixel_decoder,
            interface=interface,
            train_backbone=train_backbone,
            train_pixel_decoder=train_pixel_decoder,
        )
        unknown = [t for t in train_tasks if t not in tasks]
        if unknown:
            raise KeyError(f"train_tasks {unknown} are not among the model's tasks {list(tasks)}")
        self.criterion = criterion
        self.tasks = dict(tasks)
        self.train_tasks = [self.tasks[t] for t in train_tasks]
        self.encode_text = encode_text
        self.is_thing = None if is_thing is None else list(is_thing)
        self.size_divisibility = int(size_divisibility)
        self.test = dict(test or {})
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        generic = self.tasks.get("generic")
        num_rows = generic.num_classes + 1 if generic is not None else 1
        dim = interface.heads.class_embed.shape[1]
        # Not persistent: checkpoints keep the one backbone/pixel_decoder/interface layout.
        self.class_bank = ClassBank(num_classes=num_rows, dim_proj=dim)
        for buf in self.class_bank.buffers():
            buf.requires_grad_(False)
        self.class_bank._non_persistent_buffers_set.add("embeddings")
        self._bank_ready = False
        self._eval_bank: Optional[torch.Tensor] = None
        self._generator = torch.Generator().manual_seed(int(seed))
        self._pending_rng = None

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        head = build_sem_seg_head(cfg, backbone.output_shape())
        meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]) if cfg.DATASETS.TRAIN else None
        tasks = {}
        for name, _ in FIND_TASK_REGISTRY:
            try:
                tasks[name] = build_find_task(name, cfg, meta)
            except KeyError:
                if name in cfg.MODEL.FIND.TASKS.TRAIN:
                    raise
        train = list(cfg.MODEL.FIND.TASKS.TRAIN)
        for name in train:
            if name not in FIND_TASK_REGISTRY:
                build_find_task(name, cfg, meta)  # raises the registry's clear error
        encode_text = None
        if cfg.MODEL.FIND.LANGUAGE.PATH or cfg.MODEL.FIND.LANGUAGE.PACKAGE:
            from .language import build_find_text_encoder

            encode_text = build_find_text_encoder(cfg)
        t, v = cfg.MODEL.FIND.TEST, cfg.MODEL.FIND_VISION
        return {
            "backbone": backbone,
            "pixel_decoder": head.pixel_decoder,
            "interface": head.interface,
            "train_backbone": not v.FREEZE_BACKBONE,
            "train_pixel_decoder": not v.FREEZE_PIXEL_DECODER,
            "criterion": build_find_criterion(
                cfg,
                num_classes=tasks["generic"].num_classes if "generic" in tasks else 1,
                tasks=[tasks[n] for n in train],
            ),
            "tasks": tasks,
            "train_tasks": train,
            "encode_text": encode_text,
            "is_thing": _is_thing(meta),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "size_divisibility": cfg.MODEL.FIND.SIZE_DIVISIBILITY,
            "test": {
                "semantic_on": t.SEMANTIC_ON,
                "panoptic_on": t.PANOPTIC_ON,
                "instance_on": t.INSTANCE_ON,
                "object_mask_threshold": t.OBJECT_MASK_THRESHOLD,
                "overlap_threshold": t.OVERLAP_THRESHOLD,
                "top_k": t.DETECTIONS_PER_IMAGE,
                "max_clicks": t.INTERACTIVE_MAX_CLICKS,
                "interleave_official": t.INTERLEAVE_OFFICIAL_RESIZE,
                "class_template": cfg.MODEL.FIND.TASKS.CLASS_EVAL_TEMPLATE,
            },
            "seed": cfg.SEED if cfg.SEED >= 0 else 0,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ resumable training state
    def training_state(self) -> Dict[str, torch.Tensor]:
        """What a resumed run needs besides the weights and the optimizer: the class bank (rows
        refreshed in training), the model-side generator and the global torch RNG (point sampling
        of the losses). Stored by the trainer as a checkpointable, never in the model layout."""
        state = {
            "class_bank": self.class_bank.embeddings.detach().cpu().clone(),
            "bank_ready": torch.tensor(self._bank_ready),
            "generator": self._generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state()
        return state

    def load_training_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self.class_bank.store_(state["class_bank"].to(self.device))
        self._bank_ready = bool(state["bank_ready"])
        self._generator.set_state(state["generator"])
        # Applied at the next training step, not now: between loading and that step the trainer
        # builds a new data-loader iterator, which draws from the global RNG.
        self._pending_rng = {k: state[k] for k in ("torch_rng", "cuda_rng") if k in state}

    def _restore_rng(self) -> None:
        pending, self._pending_rng = self._pending_rng, None
        if pending:
            torch.set_rng_state(pending["torch_rng"])
            if "cuda_rng" in pending and torch.cuda.is_available():
                torch.cuda.set_rng_state(pending["cuda_rng"])

    # ------------------------------------------------------------------ shared
    def train(self, mode: bool = True):
        self._eval_bank = None  # weights may change: rebuild the evaluation bank when needed
        return super().train(mode)

    def preprocess(self, batched_inputs: Sequence[Mapping]) -> ImageList:
        images = [
            (x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std
            for x in batched_inputs
        ]
        return ImageList.from_tensors(images, self.size_divisibility)

    def forward(self, batched_inputs: List[Mapping]):
        images = self.preprocess(batched_inputs)
        trainable_vision = any(p.requires_grad for p in self.pixel_decoder.parameters()) or any(
            p.requires_grad for p in self.backbone.parameters()
        )
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable_vision):
            vision = self.extract_features(images.tensor)
        feats, mask_features = vision["multi_scale_features"], vision["mask_features"]
        if self.training:
            return self.losses(batched_inputs, images, feats, mask_features)
        return self.inference(batched_inputs, images, feats, mask_features)

    def _collate(self, tasks, batched_inputs, images, training):
        per_image = []
        for i, x in enumerate(batched_inputs):
            if "find_samples" not in x:
                raise KeyError(
                    f"input {i} (image_id {x.get('image_id')}) has no 'find_samples': use a FIND "
                    "dataset mapper (cfg.INPUT.DATASET_MAPPER_NAME)"
                )
            per_image.append(x["find_samples"])
        batch = collate_samples(
            tasks,
            per_image,
            project=self.interface.project_tokens,
            padded_size=tuple(images.tensor.shape[-2:]),
            training=training,
        )
        return batch, _to_device(batch.inputs, self.device)

    # ------------------------------------------------------------------ training
    def losses(self, batched_inputs, images, feats, mask_features) -> Dict[str, torch.Tensor]:
        self._restore_rng()
        batch, inputs = self._collate(self.train_tasks, batched_inputs, images, training=True)
        bank = self._training_bank() if "class" in inputs else None
        interactive = self.tasks.get("interactive")
        if interactive in self.train_tasks and interactive.wants_correction(self._generator):
            with torch.no_grad():
                first = self.interface(
                    feats,
                    mask_features,
                    inputs,
                    class_bank=bank,
                    generator=self._generator,
                    aux_outputs=False,
                )
            corrected = interactive.add_corrections(batch.samples["interactive"], first)
            packed = interactive.pack_inputs(
                corrected,
                project=self.interface.project_tokens,
                padded_size=tuple(images.tensor.shape[-2:]),
            )
            inputs["spatial"] = _to_device(packed, self.device)["spatial"]
        out = self.interface(
            feats, mask_features, inputs, class_bank=bank, generator=self._generator
        )
        if "class_bank" in out:
            # every process's refreshed rows are in it (all-gathered inside the interface)
            self.class_bank.store_(out["class_bank"])
        targets = _to_device(batch.targets, self.device)
        losses = self.criterion(out, targets, logit_scale=self.interface.logit_scale)
        losses.update(task_losses(self.train_tasks, out, batch))
        return losses

    def _training_bank(self) -> torch.Tensor:
        """The stored bank (rows refreshed by the class query every step), first built from the
        evaluation prompts on zero features."""
        if not self._bank_ready:
            self.class_bank.store_(self._build_bank())
            self._bank_ready = True
        return self.class_bank.embeddings

    def _build_bank(self) -> torch.Tensor:
        generic = self.tasks.get("generic")
        if generic is None:
            raise KeyError("the class bank needs the 'generic' task (class names)")
        if self.encode_text is None:
            raise ValueError(
                "the class bank needs the language model: set cfg.MODEL.FIND.LANGUAGE.PATH or "
                "PACKAGE (or pass encode_text)"
            )
        return generic.class_bank(
            self.interface, self.encode_text, template=self.test.get("class_template")
        ).to(self.device)

    # ------------------------------------------------------------------ inference
    def inference(self, batched_inputs, images, feats, mask_features) -> List[Dict]:
        names = sorted({n for x in batched_inputs for n in x.get("find_samples", {})})
        missing = [n for n in names if n not in self.tasks]
        if missing:
            raise KeyError(
                f"the inputs hold samples of tasks {missing} that this model could not build "
                f"(model tasks: {sorted(self.tasks)}; e.g. 'generic' needs class names in the "
                "training dataset's metadata)"
            )
        tasks = [self.tasks[n] for n in names]
        batch, inputs = self._collate(tasks, batched_inputs, images, training=False)
        bank = None
        if "generic" in names:
            if self._eval_bank is None:
                self._eval_bank = self._build_bank()
            bank = self._eval_bank
        out = self.interface(feats, mask_features, inputs, class_bank=bank, aux_outputs=False)
        padded = tuple(images.tensor.shape[-2:])
        results = []
        for b, x in enumerate(batched_inputs):
            sizes = dict(
                padded_size=padded,
                image_size=tuple(images.image_sizes[b]),
                output_size=(
                    x.get("height", images.image_sizes[b][0]),
                    x.get("width", images.image_sizes[b][1]),
                ),
            )
            r: Dict[str, object] = {}
            for name in names:
                sample = batch.samples[name][b]
                r.update(self._predict(name, out, b, sample, sizes, x, feats, mask_features))
            results.append(r)
        return results

    def _predict(self, name, out, b, sample, sizes, x, feats, mask_features) -> Dict:
        task, t = self.tasks[name], self.test
        if name == "generic":
            res = task.predict(
                out,
                b,
                is_thing=self.is_thing,
                semantic_on=t.get("semantic_on", True),
                panoptic_on=t.get("panoptic_on", True),
                instance_on=t.get("instance_on", True),
                object_mask_threshold=t.get("object_mask_threshold", 0.8),
                overlap_threshold=t.get("overlap_threshold", 0.8),
                top_k=t.get("top_k", 100),
                **sizes,
            )
            if "instances" in res:
                res["instances"] = _instances(res["instances"], sizes["output_size"])
            return res
        if name == "grounding":
            logits = task.predict(out, b, logit_scale=self.interface.logit_scale, **sizes)
            return {"grounding_masks": logits}
        if name == "interleave":
            official = t.get("interleave_official", False)
            return {"interleave_masks": task.predict(out, b, sample, official=official, **sizes)}
        if name == "interactive":
            return {"interactive_ious": self._click_rounds(task, b, x, feats, mask_features, sizes)}
        embedding = {"image_embedding": out["pred_retrievals"][b, 0]}
        if name == "retrieval":
            caps = sample["captions"]
            embedding["caption_embeddings"] = (
                task.encode_captions(self.interface, caps)
                if caps
                else out["pred_retrievals"][b, :0]
            )
        elif name == "interleave_retrieval":
            sents = sample["sentences"]
            embedding["interleave_embeddings"] = (
                task.encode_sentences(self.interface, sents)
                if sents
                else out["pred_retrievals"][b, :0]
            )
        return embedding

    def _click_rounds(self, task, b, x, feats, mask_features, sizes) -> torch.Tensor:
        """IoU after each click of image ``b`` (official simulator at the original size)."""
        gt = x.get("find_gt", {}).get("interactive_masks")
        if gt is None:
            raise KeyError(
                f"image {x.get('image_id')}: interactive evaluation needs "
                "find_gt['interactive_masks'] (an evaluation FIND mapper provides it)"
            )
        h, w = sizes["image_size"]
        one = [f[b : b + 1] for f in feats]

        def predict_fn(pos, neg):
            def to_image(m):  # original size -> model input size (nearest), then padded
                return F.interpolate(m[None].float(), size=(h, w), mode="nearest")[0] > 0.5

            sample = {
                "image_size": (h, w),
                "pos": to_image(pos),
                "neg": to_image(neg),
                "masks": to_image(pos),
                "prev_mask": None,
            }
            packed = task.pack_inputs(
                [sample], project=self.interface.project_tokens, padded_size=sizes["padded_size"]
            )
            o = self.interface(
                one, mask_features[b : b + 1], _to_device(packed, self.device), aux_outputs=False
            )
            return task.predict(o, 0, **sizes).cpu()

        if len(gt) == 0:
            return torch.zeros(0, self.test.get("max_clicks", 1))
        return task.click_ious(
            predict_fn, gt.bool().cpu(), max_clicks=self.test.get("max_clicks", 1)
        )


def _to_device(obj, device, key: str = ""):
    if torch.is_tensor(obj):
        return obj if key in _CPU_KEYS else obj.to(device)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device, k) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device, key) for v in obj)
    return obj


def _instances(res: Mapping, output_size) -> Instances:
    inst = Instances(tuple(output_size))
    inst.pred_masks = res["pred_masks"]
    inst.pred_boxes = BitMasks(res["pred_masks"]).get_bounding_boxes()
    inst.scores = res["scores"]
    inst.pred_classes = res["pred_classes"]
    return inst


def _is_thing(meta) -> Optional[List[bool]]:
    """K booleans over the contiguous classes (thing = a value of thing_dataset_id_to_contiguous_id
    for panoptic metadata; every class for instance-only metadata)."""
    if meta is None:
        return None
    stuff = getattr(meta, "stuff_classes", None)
    thing_map = getattr(meta, "thing_dataset_id_to_contiguous_id", None)
    if stuff and thing_map:
        things = set(thing_map.values())
        return [c in things for c in range(len(stuff))]
    things = getattr(meta, "thing_classes", None)
    return [True] * len(things) if things else None
