"""Seeded large-scale jitter: detectron2's LSJ augmentations drawing from a ``torch.Generator``.

detectron2's ``RandomFlip``, ``ResizeScale`` and ``FixedSizeCrop`` draw their parameters from
numpy's global RNG, which FIND's mappers must not use (a mapper call is reproducible from its seed,
whatever else ran in the process). The subclasses here keep detectron2's transform math and
classes (``HFlipTransform``, ``ResizeTransform``, ``CropTransform``, ``PadTransform``) and take
their draws from the ``generator`` attribute of :class:`SeededAugInput`, so they run inside a
plain ``T.AugmentationList`` and ``transforms.apply_segmentation`` replays them on masks.
"""

from typing import List, Optional

import numpy as np
import torch
from detectron2.data import transforms as T
from PIL import Image

__all__ = [
    "SeededAugInput",
    "SeededRandomFlip",
    "SeededResizeScale",
    "SeededFixedSizeCrop",
    "FixedResizeShortestEdge",
    "build_lsj_augmentations",
    "uniform",
]


def uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    """One float64 draw in [low, high) from ``generator``."""
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    return low + (high - low) * u


class SeededAugInput(T.AugInput):
    """``T.AugInput`` that also carries the ``generator`` the seeded augmentations draw from."""

    def __init__(self, image: np.ndarray, *, generator: torch.Generator, sem_seg=None):
        super().__init__(image, sem_seg=sem_seg)
        self.generator = generator


class SeededRandomFlip(T.RandomFlip):
    """``T.RandomFlip`` with the coin drawn from the input's generator."""

    input_args = ("image", "generator")

    def get_transform(self, image, generator):
        h, w = image.shape[:2]
        if uniform(generator) >= self.prob:
            return T.NoOpTransform()
        return T.HFlipTransform(w) if self.horizontal else T.VFlipTransform(h)


class SeededResizeScale(T.ResizeScale):
    """``T.ResizeScale`` with the scale drawn from the input's generator."""

    input_args = ("image", "generator")

    def get_transform(self, image, generator):
        return self._get_resize(image, uniform(generator, self.min_scale, self.max_scale))


class SeededFixedSizeCrop(T.FixedSizeCrop):
    """``T.FixedSizeCrop`` with the crop offset drawn from the input's generator (one draw for
    both axes, as detectron2 does), then the same bottom/right padding."""

    input_args = ("image", "generator")

    def get_transform(self, image, generator):
        input_size = np.asarray(image.shape[:2])
        output_size = np.asarray(self.crop_size)
        max_offset = np.maximum(input_size - output_size, 0)
        offset = np.round(max_offset * uniform(generator)).astype(int)
        crop = T.CropTransform(
            int(offset[1]),
            int(offset[0]),
            int(output_size[1]),
            int(output_size[0]),
            int(input_size[1]),
            int(input_size[0]),
        )
        if not self.pad:
            return T.TransformList([crop])
        return T.TransformList([crop, self._get_pad(image)])


class FixedResizeShortestEdge(T.Augmentation):
    """Deterministic ``T.ResizeShortestEdge`` with one length (evaluation): the same output size,
    without the ``np.random.choice`` detectron2 makes even for a single length."""

    def __init__(self, short_edge_length: int, max_size: int, interp=Image.BILINEAR):
        super().__init__()
        self.short_edge_length = int(short_edge_length)
        self.max_size = int(max_size)
        self.interp = interp

    def get_transform(self, image):
        h, w = image.shape[:2]
        newh, neww = T.ResizeShortestEdge.get_output_shape(
            h, w, self.short_edge_length, self.max_size
        )
        return T.ResizeTransform(h, w, newh, neww, self.interp)


def build_lsj_augmentations(
    image_size: int,
    min_scale: float,
    max_scale: float,
    random_flip: Optional[str] = "horizontal",
) -> List[T.Augmentation]:
    """FIND's / Mask2Former's COCO LSJ (spec §4): flip, ``ResizeScale(min_scale, max_scale)`` to
    an ``image_size`` square, ``FixedSizeCrop(image_size)`` (padding 128 on the image, 255 on
    segmentations), all seeded. ``random_flip``: "horizontal", "vertical" or "none"/None."""
    if random_flip not in ("horizontal", "vertical", "none", None):
        raise ValueError(
            f"random_flip must be 'horizontal', 'vertical' or 'none', got {random_flip!r}"
        )
    augs: List[T.Augmentation] = []
    if random_flip not in ("none", None):
        augs.append(
            SeededRandomFlip(
                horizontal=random_flip == "horizontal", vertical=random_flip == "vertical"
            )
        )
    augs += [
        SeededResizeScale(
            min_scale=min_scale,
            max_scale=max_scale,
            target_height=image_size,
            target_width=image_size,
        ),
        SeededFixedSizeCrop(crop_size=(image_size, image_size)),
    ]
    return augs
