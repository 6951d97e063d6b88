"""Framework-free FIND model with its tasks: training losses and per-task predictions.

:class:`FINDTaskModel` is :class:`~find_plugin.model.FINDModel` (``backbone`` -> ``pixel_decoder``
-> ``interface``, the one checkpoint layout) plus what both adapters do around it: the training
tasks and their criterion, the class-embedding bank, the model-side generator, and the per-task
predictions. The detectron2 meta-architecture (:class:`find_plugin.d2.FIND`) and the MMDetection
detector (:class:`find_plugin.mmdet.FINDDetector`) subclass it and only convert their input and
output formats (images, per-image samples, ground truth, result structures).

Inputs of :meth:`compute_losses` / :meth:`predict_tasks` (both adapters produce them):

* ``images`` [B, 3, H, W] float, normalised and padded (H, W multiples of 32);
* ``per_image``: one ``{task name: sample}`` per image (:func:`find_plugin.tasks.sample_record`);
* evaluation: ``image_sizes`` (h, w) before padding, ``output_sizes`` (H0, W0) of the original
  images, and ``find_gts``: per image the ground truth that the click rounds of interactive
  segmentation read (``"interactive_masks"`` [N, H0, W0] bool).

Per-task predictions (:meth:`predict_tasks`, one dict per image; sizes are ``output_sizes``):

* ``generic``: ``sem_seg`` [K, H, W] scores, ``panoptic_seg`` (ids [H, W] int32, 0 = void, and
  segments_info with contiguous ``category_id``), ``instances`` (dict ``pred_masks`` [n, H, W],
  ``scores`` [n], ``pred_classes`` [n]);
* ``grounding``: ``grounding_masks`` [G, H, W] logits; ``interleave``: ``interleave_masks``
  [E, H, W] logits (foreground > 0);
* ``interactive``: ``interactive_ious`` [N, max_clicks];
* ``retrieval``: ``image_embedding`` [D], ``caption_embeddings`` [n, D];
  ``interleave_retrieval``: ``image_embedding``, ``interleave_embeddings`` [n, D];
* ``interleave_retrieval_visual``: ``image_embedding``, ``object_embeddings`` [Q, D] (object
  proposals), ``interleave_query_embedding`` [D], ``interleave_entity_embeddings`` [E, D] and
  ``interleave_entity_references`` [E] (the reference images of the visual entities go through
  the vision model, :meth:`FINDTaskModel.extract_one` of the adapter).

Evaluation-time prompt points (visual entities, clicks) are drawn from a generator seeded by the
``seed`` test option and the batch's image ids, so an evaluation is reproducible.
"""

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .core.class_bank import ClassBank
from .core.criterion import FINDCriterion
from .model import FINDModel
from .tasks import FINDTask, collate_samples, task_losses
from .tasks.batch import record_generator

__all__ = ["FINDTaskModel", "move_to_device", "TEST_DEFAULTS"]

# Prompt masks stay on the CPU: their points are drawn with the model's CPU generator.
_CPU_KEYS = ("pos_masks", "neg_masks")

#: Inference options of :class:`FINDTaskModel` (``test``) and their defaults.
TEST_DEFAULTS = {
    "semantic_on": True,
    "panoptic_on": True,
    "instance_on": True,
    "object_mask_threshold": 0.8,
    "overlap_threshold": 0.8,
    "top_k": 100,
    "max_clicks": 1,
    "interleave_official": False,
    "class_template": None,
    "seed": 0,  # evaluation-time draws (prompt points), with the image ids
}


class FINDTaskModel(FINDModel):
    """Args (keyword-only, besides :class:`~find_plugin.model.FINDModel`'s parts):
    criterion: the :class:`FINDCriterion` of the training tasks.
    tasks: every task the model can run, by name (evaluation picks them per image).
    train_tasks: names of the tasks trained on every image.
    encode_text: ``encode_text(texts, kind)`` of the frozen language model (class bank).
    is_thing: K booleans (thing classes) of the generic task's classes.
    test: inference options (keys of :data:`TEST_DEFAULTS`).
    seed: seed of the model-side random choices (correction rounds, prompt points, swaps).
    backbone_cache_size: images whose frozen backbone features are cached by content (0 = off;
        :meth:`~find_plugin.encoders.vision.vision_model.FINDVisionModel.enable_backbone_cache`).
    """

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
        test: Optional[Mapping] = None,
        seed: int = 0,
        backbone_cache_size: int = 0,
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
        bad = sorted(set(test or {}) - set(TEST_DEFAULTS))
        if bad:
            raise KeyError(f"unknown test option(s) {bad}; expected some of {list(TEST_DEFAULTS)}")
        self.enable_backbone_cache(backbone_cache_size)
        self.criterion = criterion
        self.tasks = dict(tasks)
        self.train_tasks = [self.tasks[t] for t in train_tasks]
        self.encode_text = encode_text
        self.is_thing = None if is_thing is None else list(is_thing)
        self.test = {k: v for k, v in dict(test or {}).items() if v is not None}
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

    def _opt(self, key: str):
        value = self.test.get(key)
        return TEST_DEFAULTS[key] if value is None else value

    @property
    def device(self) -> torch.device:
        return self.class_bank.embeddings.device

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

    def vision_features(self, images: torch.Tensor) -> Tuple[list, torch.Tensor]:
        """``images`` [B, 3, H, W] -> (multi-scale features, mask features); no autograd graph
        through the vision side unless a part of it trains."""
        trainable = any(p.requires_grad for p in self.pixel_decoder.parameters()) or any(
            p.requires_grad for p in self.backbone.parameters()
        )
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            vision = self.extract_features(images)
        return vision["multi_scale_features"], vision["mask_features"]

    def _collate(self, tasks, per_image, padded_size, training):
        batch = collate_samples(
            tasks,
            per_image,
            project=self.interface.project_tokens,
            padded_size=tuple(padded_size),
            training=training,
        )
        return batch, move_to_device(batch.inputs, self.device)

    # ------------------------------------------------------------------ training
    def compute_losses(
        self, per_image: Sequence[Mapping[str, dict]], padded_size, feats, mask_features
    ) -> Dict[str, torch.Tensor]:
        """Weighted losses (``loss_*``) of the training tasks on one batch."""
        self._restore_rng()
        batch, inputs = self._collate(self.train_tasks, per_image, padded_size, training=True)
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
                corrected, project=self.interface.project_tokens, padded_size=tuple(padded_size)
            )
            inputs["spatial"] = move_to_device(packed, self.device)["spatial"]
        out = self.interface(
            feats, mask_features, inputs, class_bank=bank, generator=self._generator
        )
        if "class_bank" in out:
            # every process's refreshed rows are in it (all-gathered inside the interface)
            self.class_bank.store_(out["class_bank"])
        targets = move_to_device(batch.targets, self.device)
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
                "the class bank needs the language model: configure the model's language "
                "encoder (detectron2: cfg.MODEL.FIND.LANGUAGE.PATH or PACKAGE; mmdet: "
                "model.language) or pass encode_text"
            )
        kwargs = {}
        if self._opt("class_template") is not None:
            kwargs["template"] = self._opt("class_template")
        return generic.class_bank(self.interface, self.encode_text, **kwargs).to(self.device)

    # ------------------------------------------------------------------ inference
    def predict_tasks(
        self,
        per_image: Sequence[Mapping[str, dict]],
        *,
        padded_size,
        image_sizes: Sequence[Tuple[int, int]],
        output_sizes: Sequence[Tuple[int, int]],
        feats,
        mask_features,
        find_gts: Optional[Sequence[Mapping]] = None,
        image_ids: Optional[Sequence] = None,
    ) -> List[Dict]:
        """Per-image predictions of every task present in ``per_image`` (module docstring)."""
        names = sorted({n for s in per_image for n in s})
        missing = [n for n in names if n not in self.tasks]
        if missing:
            raise KeyError(
                f"the inputs hold samples of tasks {missing} that this model could not build "
                f"(model tasks: {sorted(self.tasks)}; e.g. 'generic' needs class names in the "
                "training dataset's metadata)"
            )
        tasks = [self.tasks[n] for n in names]
        batch, inputs = self._collate(tasks, per_image, padded_size, training=False)
        bank = None
        if "generic" in names:
            if self._eval_bank is None:
                self._eval_bank = self._build_bank()
            bank = self._eval_bank
        # prompt points (visual entities, clicks) from the evaluation seed and the images
        ids = "|".join(str(i) for i in (image_ids or range(len(per_image))))
        generator = record_generator(self._opt("seed"), ids)
        out = self.interface(
            feats, mask_features, inputs, class_bank=bank, generator=generator, aux_outputs=False
        )
        results = []
        for b in range(len(per_image)):
            sizes = dict(
                padded_size=tuple(padded_size),
                image_size=tuple(image_sizes[b]),
                output_size=tuple(output_sizes[b]),
            )
            gt = (find_gts[b] if find_gts is not None else None) or {}
            image_id = image_ids[b] if image_ids is not None else b
            r: Dict[str, object] = {}
            for name in names:
                sample = batch.samples[name][b]
                r.update(
                    self._predict(name, out, b, sample, sizes, gt, image_id, feats, mask_features)
                )
            results.append(r)
        return results

    def _predict(self, name, out, b, sample, sizes, gt, image_id, feats, mask_features) -> Dict:
        task = self.tasks[name]
        if name == "generic":
            return task.predict(
                out,
                b,
                is_thing=self.is_thing,
                semantic_on=self._opt("semantic_on"),
                panoptic_on=self._opt("panoptic_on"),
                instance_on=self._opt("instance_on"),
                object_mask_threshold=self._opt("object_mask_threshold"),
                overlap_threshold=self._opt("overlap_threshold"),
                top_k=self._opt("top_k"),
                **sizes,
            )
        if name == "grounding":
            logits = task.predict(out, b, logit_scale=self.interface.logit_scale, **sizes)
            return {"grounding_masks": logits}
        if name == "interleave":
            official = self._opt("interleave_official")
            return {"interleave_masks": task.predict(out, b, sample, official=official, **sizes)}
        if name == "interactive":
            ious = self._click_rounds(task, b, gt, image_id, feats, mask_features, sizes)
            return {"interactive_ious": ious}
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
        elif name == "interleave_retrieval_visual":
            q = task.query_embeddings(self.interface, sample, extract=self.extract_one)
            embedding.update(
                object_embeddings=out["pred_captions"][b],
                interleave_query_embedding=q["query"],
                interleave_entity_embeddings=q["entities"],
                interleave_entity_references=q["entity_references"],
            )
        return embedding

    def extract_one(self, image: torch.Tensor):
        """Vision features of one uint8 image [C, H, W] in the adapter's input format:
        ``(multi-scale features, mask_features, padded size)``, normalised and padded like a
        batch (the reference images of visual interleave retrieval). Adapters implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement extract_one()")

    def _click_rounds(self, task, b, gt, image_id, feats, mask_features, sizes) -> torch.Tensor:
        """IoU after each click of image ``b`` (official simulator at the original size)."""
        masks = gt.get("interactive_masks")
        if masks is None:
            raise KeyError(
                f"image {image_id}: interactive evaluation needs the ground truth "
                "'interactive_masks' (an evaluation FIND mapper / pipeline provides it)"
            )
        h, w = sizes["image_size"]
        one = [f[b : b + 1] for f in feats]
        # prompt points of every round from the evaluation seed and the image (reproducible)
        generator = record_generator(self._opt("seed"), f"{image_id}/clicks")

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
                one,
                mask_features[b : b + 1],
                move_to_device(packed, self.device),
                generator=generator,
                aux_outputs=False,
            )
            return task.predict(o, 0, **sizes).cpu()

        max_clicks = self._opt("max_clicks")
        if len(masks) == 0:
            return torch.zeros(0, max_clicks)
        return task.click_ious(predict_fn, masks.bool().cpu(), max_clicks=max_clicks)


def move_to_device(obj, device, key: str = ""):
    """Tensors of a nested dict / list on ``device`` (prompt masks stay on the CPU)."""
    if torch.is_tensor(obj):
        return obj if key in _CPU_KEYS else obj.to(device)
    if isinstance(obj, Mapping):
        return {k: move_to_device(v, device, k) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to_device(v, device, key) for v in obj)
    return obj
