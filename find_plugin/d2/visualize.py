"""Overlay pictures of FIND predictions with detectron2's :class:`Visualizer` (``ColorMode.IMAGE``).

Used by ``tools/demo.py`` and by the main job's val-image overlays. Every function takes the
image as ``image_rgb`` [H, W, 3] uint8 (RGB, the original size) and returns a new [H, W, 3] uint8
array of the same size (the input is not modified):

* :func:`draw_panoptic`: a panoptic prediction (``panoptic_seg`` [H, W] ids, 0 = void, and its
  ``segments_info`` with contiguous ``category_id`` and ``isthing``), labelled with the class
  names of ``metadata`` (``stuff_classes`` for every class, ``thing_classes`` for the things;
  contiguous ids put the things first, as detectron2's and Mask2Former's COCO metadata);
* :func:`draw_masks`: binary masks [N, H, W] with one label each (referring sentences,
  interleave phrases), colours from a fixed palette (index i -> colour i, reproducible);
* :func:`draw_prompts`: an interactive prediction with its prompts: the predicted mask,
  positive (green) / negative (red) clicks, a scribble, a box;
* :func:`save_png`: writes an array atomically (temporary file + ``os.replace``): a reader never
  sees half a PNG.
"""

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import Metadata
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, Visualizer
from PIL import Image

from ..checkpoint.format import atomic_write

__all__ = ["draw_panoptic", "draw_masks", "draw_prompts", "save_png", "palette"]

POSITIVE = (0.1, 0.9, 0.1)  # green clicks / scribbles
NEGATIVE = (0.95, 0.1, 0.1)  # red clicks
_PALETTE = colormap(rgb=True, maximum=1)


def palette(i: int) -> Tuple[float, float, float]:
    """Colour ``i`` (RGB in [0, 1]) of a fixed palette: the same label index, the same colour."""
    return tuple(float(c) for c in _PALETTE[i % len(_PALETTE)])


def _check_image(image_rgb) -> np.ndarray:
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image_rgb must be an [H, W, 3] uint8 RGB array, got shape {image.shape} "
            f"dtype {image.dtype}"
        )
    return image


def _as_masks(masks, size: Tuple[int, int], name: str) -> np.ndarray:
    m = masks.detach().cpu().numpy() if torch.is_tensor(masks) else np.asarray(masks)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or tuple(m.shape[1:]) != tuple(size):
        raise ValueError(f"{name} must be [N, H, W] with (H, W) = {tuple(size)}, got {m.shape}")
    return m.astype(bool)


def _visualizer(image: np.ndarray, metadata=None) -> Visualizer:
    return Visualizer(image, metadata, scale=1.0, instance_mode=ColorMode.IMAGE)


def _result(vis: Visualizer, image: np.ndarray) -> np.ndarray:
    """The drawing, with the input's own pixels wherever nothing was drawn: matplotlib renders
    the image onto a canvas 0.01 px larger (detectron2's guard against truncation), which
    resamples it, so a pixel left untouched by the drawing is compared with an empty rendering
    and, when equal, restored exactly."""
    out = vis.output.get_image()
    if out.shape != image.shape:  # matplotlib rounding of the canvas size: never expected
        raise RuntimeError(f"overlay of size {out.shape} for an image of size {image.shape}")
    empty = _visualizer(image).output.get_image()
    untouched = (out == empty).all(-1, keepdims=True)
    return np.ascontiguousarray(np.where(untouched, image, out))


def draw_panoptic(
    image_rgb, panoptic_seg, segments_info: Sequence[dict], metadata, *, alpha: float = 0.5
) -> np.ndarray:
    """Panoptic overlay: stuff segments first, then the things with their class names.

    ``panoptic_seg`` [H, W] int (tensor or array; 0 = void, ids of ``segments_info``);
    ``segments_info``: ``{"id", "category_id", "isthing"}`` (contiguous class ids, optional
    ``score``); ``metadata``: anything with ``stuff_classes`` (all K class names) and, when a
    thing is drawn, ``thing_classes`` (colours: ``stuff_colors`` / ``thing_colors`` if set,
    else the fixed palette by class id)."""
    image = _check_image(image_rgb)
    seg = torch.as_tensor(np.asarray(panoptic_seg)).long()
    if tuple(seg.shape) != image.shape[:2]:
        raise ValueError(f"panoptic_seg is {tuple(seg.shape)}, the image is {image.shape[:2]}")
    classes = list(getattr(metadata, "stuff_classes", None) or [])
    if not classes:
        raise ValueError("metadata needs stuff_classes (the names of every contiguous class id)")
    for s in segments_info:
        if not 0 <= int(s["category_id"]) < len(classes):
            raise ValueError(
                f"segment {s['id']}: category_id {s['category_id']} is not a class of the "
                f"metadata ({len(classes)} classes)"
            )
    things = list(getattr(metadata, "thing_classes", None) or classes)
    colors = [tuple(int(255 * c) for c in palette(i)) for i in range(len(classes))]
    meta = Metadata().set(
        stuff_classes=classes,
        thing_classes=things,
        stuff_colors=list(getattr(metadata, "stuff_colors", None) or colors),
        thing_colors=list(getattr(metadata, "thing_colors", None) or colors),
    )
    # detectron2 adds keys ("area") to the dicts it is given: draw on copies
    info = [dict(s) for s in segments_info]
    vis = _visualizer(image, meta)
    vis.draw_panoptic_seg(seg, info, alpha=alpha)
    return _result(vis, image)


def draw_masks(
    image_rgb,
    masks,
    labels: Optional[Sequence[str]] = None,
    *,
    colors: Optional[Sequence[Tuple[float, float, float]]] = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """Binary masks [N, H, W] (bool, tensor or array) with optional labels (one per mask; an
    empty mask is skipped). Mask i gets ``colors[i]`` (RGB in [0, 1]) or palette colour i."""
    image = _check_image(image_rgb)
    m = _as_masks(masks, image.shape[:2], "masks")
    if labels is not None and len(labels) != len(m):
        raise ValueError(f"{len(labels)} labels for {len(m)} masks")
    if colors is not None and len(colors) != len(m):
        raise ValueError(f"{len(colors)} colors for {len(m)} masks")
    vis = _visualizer(image)
    for i, mask in enumerate(m):
        if not mask.any():
            continue
        vis.draw_binary_mask(
            mask,
            color=colors[i] if colors is not None else palette(i),
            text=None if labels is None else labels[i],
            alpha=alpha,
        )
    return _result(vis, image)


def draw_prompts(
    image_rgb,
    mask=None,
    *,
    clicks: Sequence[Tuple[float, float]] = (),
    negative_clicks: Sequence[Tuple[float, float]] = (),
    scribble=None,
    box: Optional[Sequence[float]] = None,
    label: Optional[str] = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """Interactive overlay: the predicted ``mask`` [H, W] (optional), then the prompts on top:
    ``clicks`` / ``negative_clicks`` as (x, y) pixel points (green / red discs), ``scribble``
    [H, W] bool (green), ``box`` (x0, y0, x1, y1)."""
    image = _check_image(image_rgb)
    h, w = image.shape[:2]
    vis = _visualizer(image)
    if mask is not None:
        m = _as_masks(mask, (h, w), "mask")
        if m.shape[0] != 1:
            raise ValueError(f"mask must be one [H, W] mask, got {m.shape[0]}")
        if m[0].any():
            vis.draw_binary_mask(m[0], color=palette(0), text=label, alpha=alpha)
    if scribble is not None:
        s = _as_masks(scribble, (h, w), "scribble")[0]
        if s.any():
            vis.draw_binary_mask(s, color=POSITIVE, alpha=0.9)
    if box is not None:
        vis.draw_box(tuple(float(v) for v in box), edge_color=POSITIVE)
    radius = max(3.0, 0.012 * max(h, w))
    for points, color in ((clicks, POSITIVE), (negative_clicks, NEGATIVE)):
        for x, y in points:
            if not (0 <= x < w and 0 <= y < h):
                raise ValueError(f"click ({x}, {y}) is outside the {w}x{h} image")
            vis.draw_circle((float(x), float(y)), color=color, radius=radius)
    return _result(vis, image)


def save_png(path: str, array) -> str:
    """Write ``array`` ([H, W, 3] uint8 RGB, or [H, W] uint8/bool) as a PNG at ``path``
    atomically; creates the folder. Returns ``path``."""
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ValueError(f"save_png({path!r}): need [H, W(, 3|4)] uint8, got {a.shape} {a.dtype}")
    return atomic_write(path, lambda f: Image.fromarray(a).save(f, format="PNG"))
