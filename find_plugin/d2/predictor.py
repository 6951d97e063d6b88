"""``FINDPredictor``: a FIND checkpoint in evaluation mode with one method per prompt kind
(detectron2's ``DefaultPredictor`` for FIND): generic segmentation over any class list, referring
sentences, interactive clicks / scribbles, interleaved sentences whose visual phrases are masks on
another image, and image / text embeddings for retrieval. Used by ``tools/demo.py`` and by the
overlays of the main job (``tools/run_demo.py``).

Prompts become a per-image record and the task layer's samples (:mod:`find_plugin.tasks`); the
standard kinds go through ``FIND.forward``, interactive and interleave run one interface pass of
their task. Images are [H, W, 3] uint8 in ``cfg.INPUT.FORMAT`` at their original size; masks come
back at that size. Bad input raises :class:`PredictorError` (a ``ValueError``) naming it.
"""

import os
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import Metadata
from detectron2.data import detection_utils as utils
from detectron2.modeling import build_model

from ..checkpoint.format import IncompatibleCheckpointError
from ..task_model import move_to_device
from ..tasks import build_task, collate_samples, sample_record
from ..tasks.retrieval import RetrievalTask
from .checkpointer import FINDCheckpointer
from .mappers.augmentation import FixedResizeShortestEdge

__all__ = ["FINDPredictor", "PredictorError", "check_file"]


class PredictorError(ValueError):
    """A bad argument or input file; the message names it and says what was expected."""


def check_file(path: str, arg: str) -> str:
    if not path or not os.path.isfile(path):
        raise PredictorError(f"{arg}: file {path!r} does not exist")
    return path


class FINDPredictor:
    """A FIND model in evaluation mode with one method per prompt kind. Images are [H, W, 3]
    uint8 in ``cfg.INPUT.FORMAT`` at their original size; masks come back at that size."""

    def __init__(self, cfg, *, config_file: str = "<config>"):
        weights = cfg.MODEL.WEIGHTS
        if not weights:
            raise PredictorError(
                "MODEL.WEIGHTS is empty: pass the checkpoint with --opts MODEL.WEIGHTS FILE"
            )
        looks_local = os.sep in weights or weights.endswith((".pth", ".pkl", ".pt"))
        if looks_local and "://" not in weights and not os.path.isfile(weights):
            raise PredictorError(f"MODEL.WEIGHTS: checkpoint file {weights!r} does not exist")
        self.cfg = cfg
        self.model = build_model(cfg).eval()
        try:
            FINDCheckpointer.from_config(cfg, self.model).load(weights)
        except IncompatibleCheckpointError as e:
            raise PredictorError(
                f"the config {config_file} does not match the checkpoint {weights} (the model it "
                f"builds has other parameter names or shapes; use the config the checkpoint was "
                f"trained with):\n{e}"
            ) from None
        self.image_format = cfg.INPUT.FORMAT
        self.resize = FixedResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        self.seed = int(cfg.MODEL.FIND.TEST.SEED)

    # ------------------------------------------------------------------ images
    def read(self, path: str, arg: str = "--input") -> np.ndarray:
        check_file(path, arg)
        try:
            return utils.read_image(path, format=self.image_format)
        except Exception as e:  # PIL's errors name no argument
            raise PredictorError(f"{arg}: cannot read image {path!r}: {e}") from None

    def rgb(self, image: np.ndarray) -> np.ndarray:
        return utils.convert_image_to_rgb(image, self.image_format)

    def _prepare(self, image: np.ndarray, size: Optional[Tuple[int, int]] = None):
        """(model input dict without samples, transform, resized (h, w)); ``size`` overrides
        the evaluation resize."""
        if size is None:
            transform = self.resize.get_transform(image)
        else:
            from detectron2.data.transforms import ResizeTransform

            h, w = image.shape[:2]
            transform = ResizeTransform(h, w, size[0], size[1])
        resized = transform.apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        x = {"image": tensor, "height": image.shape[0], "width": image.shape[1]}
        return x, transform, tuple(resized.shape[:2])

    def _samples(self, names: Sequence[str], record) -> dict:
        tasks = [self.model.tasks[n] for n in names]
        return sample_record(
            tasks,
            record,
            generator=torch.Generator().manual_seed(self.seed),
            encode_text=self.model.encode_text,
            training=False,
        )

    def _infer(self, image: np.ndarray, names: Sequence[str], extra_record=None) -> dict:
        """The model's own evaluation path (``FIND.forward``) on one image."""
        x, _, size = self._prepare(image)
        x["find_samples"] = self._samples(names, dict(image_size=size, **(extra_record or {})))
        with torch.no_grad():
            return self.model([x])[0]

    # ------------------------------------------------------------------ prompt kinds
    def set_classes(self, names: Sequence[str], stuff: Sequence[str] = ()) -> Metadata:
        """Rebuild the generic task (and so the class bank) for ``names``; returns metadata of
        the contiguous classes for :func:`draw_panoptic`."""
        generic = build_task("generic", class_names=list(names))
        self.model.tasks["generic"] = generic
        self.model.is_thing = [n not in set(stuff) for n in names]
        self.model._eval_bank = None  # rebuilt from the new names at the next pass
        return Metadata().set(stuff_classes=generic.class_names, thing_classes=generic.class_names)

    def panoptic(self, image: np.ndarray):
        """(panoptic_seg [H, W] int32, segments_info) over the current classes."""
        out = self._infer(image, ["generic"])
        return out["panoptic_seg"]

    def referring(self, image: np.ndarray, texts: Sequence[str]) -> torch.Tensor:
        """One mask per sentence [G, H, W] bool."""
        size = self._prepare(image)[2]
        groundings = [{"text": t, "masks": torch.zeros(1, *size, dtype=torch.bool)} for t in texts]
        out = self._infer(image, ["grounding"], {"groundings": groundings})
        return out["grounding_masks"].cpu() > 0

    def _pass(self, xs: Sequence[dict], name: str, samples: dict, prompt_maps_from=None):
        """One interface pass of task ``name`` on ``xs[0]`` with its ``samples``; with
        ``prompt_maps_from`` = 1, the prompts are sampled in the features of ``xs[1]`` (batched
        with the first image so both share one padded size). Returns (outputs, sizes)."""
        model = self.model
        with torch.no_grad():
            images = model.preprocess(xs)
            vision = model.extract_features(images.tensor)
            feats, mask_features = vision["multi_scale_features"], vision["mask_features"]
            padded = tuple(images.tensor.shape[-2:])
            batch = collate_samples(
                [model.tasks[name]],
                [samples],
                project=model.interface.project_tokens,
                padded_size=padded,
                training=False,
            )
            inputs = move_to_device(batch.inputs, model.device)
            if prompt_maps_from is not None:
                i = prompt_maps_from
                levels = model.interface.feature_levels(
                    [f[i : i + 1] for f in feats], mask_features[i : i + 1]
                )
                for proto in inputs.values():
                    proto["prompt_maps"] = levels.maps
            # seeded: more prompt pixels than MAX_SPATIAL_POINTS are subsampled (same output
            # for the same prompt on every run)
            generator = torch.Generator().manual_seed(self.seed)
            out = model.interface(
                [f[:1] for f in feats],
                mask_features[:1],
                inputs,
                generator=generator,
                aux_outputs=False,  # only the final layer's predictions are read
            )
        sizes = dict(
            padded_size=padded,
            image_size=tuple(images.image_sizes[0]),
            output_size=(xs[0]["height"], xs[0]["width"]),
        )
        return out, sizes, batch.samples[name][0]

    def interactive(self, image: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> torch.Tensor:
        """Mask [H, W] bool of the object prompted by ``pos`` / ``neg`` ([H, W] bool at the
        original size)."""
        x, transform, size = self._prepare(image)
        p, n = (_resize_mask(m, transform, size) for m in (pos, neg))
        if not p.any():
            raise PredictorError("the positive prompt vanished when the image was resized")
        record = {"image_size": size, "prompts": [{"pos": p, "neg": n}]}
        samples = self._samples(["interactive"], record)
        out, sizes, _ = self._pass([x], "interactive", samples)
        return self.model.tasks["interactive"].predict(out, 0, **sizes)[0].cpu()

    def interleave(self, image, sentence: str, phrases, reference=None, prompts=()):
        """Mask [E, H, W] bool per marked phrase of ``sentence``; visual phrase k is prompted by
        ``prompts[k]`` ([h, w] bool on ``reference``, an image at its original size)."""
        x, _, size = self._prepare(image)
        xs = [x]
        ref_prompts = []
        if reference is not None:
            # the reference shares the target's padded batch: fit it inside the target's size
            rh, rw = reference.shape[:2]
            scale = min(size[0] / rh, size[1] / rw)
            ref_size = (max(1, int(round(rh * scale))), max(1, int(round(rw * scale))))
            xr, tr, ref_size = self._prepare(reference, size=ref_size)
            xs.append(xr)
            for k, m in enumerate(prompts):
                r = _resize_mask(m, tr, ref_size)
                if not r.any():
                    raise PredictorError(f"reference [{k + 1}] vanished when the image was resized")
                canvas = torch.zeros(size, dtype=torch.bool)
                canvas[: ref_size[0], : ref_size[1]] = r
                ref_prompts.append(canvas)
        entity = {"sentence": sentence, "phrases": []}
        for p in phrases:
            entry = dict(p, mask=torch.zeros(size, dtype=torch.bool))
            if p["visual"]:
                entry["prompt"] = ref_prompts[p["reference"]]
            entity["phrases"].append(entry)
        samples = self._samples(["interleave"], {"image_size": size, "entities": [entity]})
        from_ref = 1 if reference is not None else None
        out, sizes, sample = self._pass(xs, "interleave", samples, prompt_maps_from=from_ref)
        logits = self.model.tasks["interleave"].predict(out, 0, sample, **sizes)
        return logits.cpu() > 0

    def image_embedding(self, image: np.ndarray) -> torch.Tensor:
        return self._infer(image, ["retrieval"])["image_embedding"].cpu()

    def text_embedding(self, text: str) -> torch.Tensor:
        feats = self.model.encode_text([text], "sentence")
        with torch.no_grad():
            return RetrievalTask.encode_captions(self.model.interface, feats)[0].cpu()


def _resize_mask(mask: np.ndarray, transform, size) -> torch.Tensor:
    m = transform.apply_segmentation(np.asarray(mask).astype(np.uint8))
    return torch.from_numpy(np.array(m, dtype=bool))[: size[0], : size[1]]
