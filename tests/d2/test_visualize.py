"""find_plugin.d2.visualize: overlays change the pixels of what they draw and only those (away from
edges and labels), keep the image size, and PNGs are written atomically."""

import os

import numpy as np
import pytest
import torch
from detectron2.data import Metadata
from PIL import Image
from scipy import ndimage

from find_plugin.d2.visualize import draw_masks, draw_panoptic, draw_prompts, palette, save_png

H, W = 60, 80


@pytest.fixture(scope="module")
def image():
    # high-frequency noise: any resampling of the background would show
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _box(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _far(mask, d=3):
    """Pixels more than ``d`` px away from ``mask`` (edges are drawn on the boundary)."""
    return ndimage.distance_transform_edt(~mask) > d


def _changed(out, image):
    return (out != image).any(-1)


def test_draw_masks_changes_the_mask_and_nothing_far_from_it(image):
    m = _box(10, 30, 20, 50)
    before = image.copy()
    out = draw_masks(image, torch.from_numpy(m)[None])
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(image, before)  # input untouched
    changed = _changed(out, image)
    assert changed[m].all()
    assert not changed[_far(m)].any()
    # the fill blends the mask's palette colour into the image
    inside = out[m].astype(float) - 0.5 * image[m]
    assert np.allclose(inside.mean(0) / 255, 0.5 * np.array(palette(0)), atol=0.05)


def test_draw_masks_two_labels_two_colours(image):
    a, b = _box(5, 25, 5, 30), _box(35, 55, 45, 75)
    out = draw_masks(image, np.stack([a, b]), labels=["the dog", "[1]"])
    changed = _changed(out, image)
    assert changed[a].all() and changed[b].all()
    unlabelled = draw_masks(image, np.stack([a, b]))
    assert _changed(out, unlabelled).any()  # the labels are drawn
    mean_a = (out[a].astype(float) - 0.5 * image[a]).mean(0)
    mean_b = (out[b].astype(float) - 0.5 * image[b]).mean(0)
    assert np.abs(mean_a - mean_b).max() > 20  # palette colours 0 and 1 differ


def test_draw_masks_empty_mask_draws_nothing(image):
    out = draw_masks(image, np.zeros((1, H, W), bool), labels=["nothing"])
    assert np.array_equal(out, image)


def test_draw_panoptic_draws_every_segment(image):
    seg = np.zeros((H, W), np.int32)
    thing, stuff = _box(10, 30, 20, 50), _box(40, 60, 0, 80)
    seg[thing], seg[stuff] = 1, 2
    info = [
        {"id": 1, "category_id": 0, "isthing": True},
        {"id": 2, "category_id": 2, "isthing": False},
    ]
    meta = Metadata().set(stuff_classes=["dog", "cat", "grass"], thing_classes=["dog", "cat"])
    out = draw_panoptic(image, torch.from_numpy(seg), info, meta)
    changed = _changed(out, image)
    assert changed[thing].all() and changed[stuff].all()
    void_far = _far(seg > 0, 12)  # away from both segments and their labels
    assert void_far.any() and not changed[void_far].any()
    assert "area" not in info[0]  # the caller's segments_info is not modified


def test_draw_panoptic_bad_category_names_it(image):
    seg = np.ones((H, W), np.int32)
    meta = Metadata().set(stuff_classes=["dog"])
    with pytest.raises(ValueError, match="category_id 5"):
        draw_panoptic(image, seg, [{"id": 1, "category_id": 5, "isthing": True}], meta)


def test_draw_prompts_clicks_in_their_colours(image):
    m = _box(10, 40, 10, 40)
    out = draw_prompts(image, m, clicks=[(25, 20)], negative_clicks=[(70, 50)])
    r, g, b = (int(v) for v in out[20, 25])
    assert g > 180 and r < 80 and b < 80  # positive click: green
    r, g, b = (int(v) for v in out[50, 70])
    assert r > 180 and g < 80 and b < 80  # negative click: red
    changed = _changed(out, image)
    assert changed[m].all()
    far = _far(m) & _far(_box(46, 55, 66, 75))
    assert not changed[far].any()


def test_draw_prompts_scribble_and_box(image):
    scribble = _box(30, 32, 10, 60)
    out = draw_prompts(image, None, scribble=scribble, box=(5, 5, 20, 20))
    assert _changed(out, image)[scribble].all()
    assert _changed(out, image)[5, 10]  # box edge
    assert not _changed(out, image)[_far(scribble) & _far(_box(5, 20, 5, 20), 5)].any()


def test_bad_shapes_are_clear_errors(image):
    with pytest.raises(ValueError, match=r"masks must be \[N, H, W\]"):
        draw_masks(image, np.zeros((1, H + 1, W), bool))
    with pytest.raises(ValueError, match="2 labels for 1 masks"):
        draw_masks(image, np.zeros((1, H, W), bool), labels=["a", "b"])
    with pytest.raises(ValueError, match="uint8 RGB"):
        draw_masks(image.astype(float), np.zeros((1, H, W), bool))
    with pytest.raises(ValueError, match="outside the 80x60 image"):
        draw_prompts(image, clicks=[(80, 10)])


def test_save_png_round_trip_and_atomic(tmp_path, image, monkeypatch):
    path = str(tmp_path / "sub" / "overlay.png")
    assert save_png(path, image) == path
    assert np.array_equal(np.asarray(Image.open(path)), image)
    assert os.listdir(tmp_path / "sub") == ["overlay.png"]  # no temporary left
    # a failing write leaves the previous file whole and no temporary file
    import find_plugin.checkpoint.format as fmt  # save_png writes through its atomic_write

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(fmt.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_png(path, np.zeros_like(image))
    assert np.array_equal(np.asarray(Image.open(path)), image)
    assert os.listdir(tmp_path / "sub") == ["overlay.png"]
