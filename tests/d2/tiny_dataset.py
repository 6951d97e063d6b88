"""A tiny COCO dataset in the REAL on-disk formats, written deterministically into a folder.

Reused by the dataset, mapper, meta-architecture and trainer tests (``tests/`` is no package and
pytest runs with ``--import-mode=importlib``, so load it by path)::

    spec = importlib.util.spec_from_file_location(
        "find_tiny_dataset", pathlib.Path(__file__).parent / "tiny_dataset.py")
    tiny = importlib.util.module_from_spec(spec); spec.loader.exec_module(tiny)
    info = tiny.write_tiny_coco(tmp_path, split="train2017", num_images=4, seed=0)
    register_find_coco_panoptic("my_tiny_train", info["metadata"], **info["paths"])
    tiny.write_tiny_karpathy(tmp_path, [info])  # coco/annotations/dataset_coco.json ("test")

Layout under ``root`` (detectron2's, as :func:`find_plugin.d2.datasets.coco_panoptic_paths`)::

    coco/{split}/{id:012d}.jpg                      RGB JPEG images (sizes vary per image)
    coco/panoptic_{split}/{id:012d}.png             panoptic PNG (R + 256 G + 256^2 B; 0 = void)
    coco/panoptic_semseg_{split}/{id:012d}.png      semantic PNG (contiguous ids, 255 = ignore)
    coco/annotations/panoptic_{split}.json          images, annotations[segments_info], categories
    coco/annotations/instances_{split}.json         thing instances as RLE (pycocotools)
    coco/annotations/captions_{split}.json          2..4 captions per image

Each image: sky (stuff) above grass (stuff), one to three things (random class and box; the first
image also holds one crowd thing), and a void column at the left edge. Categories
(:data:`TINY_CATEGORIES`) carry real COCO ids and names, so COCO's 133-class metadata also reads
them. Same ``seed`` and arguments -> byte-identical files.
"""

import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from find_plugin.d2.datasets import coco_panoptic_paths, panoptic_metadata
from find_plugin.d2.datasets.writers import (
    instance_annotation,
    karpathy_entry,
    mask_bbox,
    save_jpeg,
    save_panoptic_png,
    save_semantic_png,
    write_json,
)

__all__ = ["TINY_CATEGORIES", "write_tiny_coco", "write_tiny_karpathy"]

TINY_CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1, "supercategory": "person", "color": [220, 20, 60]},
    {"id": 3, "name": "car", "isthing": 1, "supercategory": "vehicle", "color": [0, 0, 142]},
    {"id": 18, "name": "dog", "isthing": 1, "supercategory": "animal", "color": [0, 82, 0]},
    {
        "id": 187,
        "name": "sky-other-merged",
        "isthing": 0,
        "supercategory": "sky",
        "color": [70, 130, 180],
    },
    {
        "id": 193,
        "name": "grass-merged",
        "isthing": 0,
        "supercategory": "plant",
        "color": [0, 100, 0],
    },
]

_SKY, _GRASS = 187, 193
_TEMPLATES = (
    "a photo of a {a} on the grass",
    "a {a} and a {b} under a blue sky",
    "there is a {a} in a field",
    "an outdoor scene with a {b}",
)


def _box(rng, h, w) -> Tuple[int, int, int, int]:
    bh, bw = int(rng.integers(h // 4, h // 2)), int(rng.integers(w // 5, w // 2))
    y0, x0 = int(rng.integers(2, h - bh - 1)), int(rng.integers(3, w - bw - 1))
    return y0, y0 + bh, x0, x0 + bw


def write_tiny_coco(
    root: str,
    *,
    split: str = "val2017",
    num_images: int = 3,
    seed: int = 0,
    image_size: Tuple[int, int] = (48, 64),
    first_image_id: Optional[int] = None,
    categories: Sequence[dict] = TINY_CATEGORIES,
) -> Dict[str, object]:
    """Write ``num_images`` images of ``split`` under ``root`` (layout in the module docstring).

    Args:
        image_size: (h, w) of the first image; the others vary by up to +8 / -16 pixels.
        first_image_id: image ids are consecutive from it (default 1 for ``train*`` splits,
            900001 otherwise, so a train and a val split never share ids).
        categories: COCO categories; they must contain the sky (187) and grass (193) stuff ids
            and at least one thing.

    Returns a dict: ``paths`` (keyword arguments of ``register_find_coco_panoptic``: image_root,
    panoptic_root, panoptic_json, sem_seg_root, instances_json, captions_json), ``metadata``
    (``panoptic_metadata(categories)``), ``categories``, ``root``, ``split`` and ``images``: per
    image ``{"image_id", "file_name", "pan_seg_file_name", "height", "width", "captions",
    "segments": [{"id", "category_id", "iscrowd"}]}``.
    """
    rng = np.random.default_rng(seed)
    if first_image_id is None:
        first_image_id = 1 if split.startswith("train") else 900001
    meta = panoptic_metadata(categories)
    contiguous = meta["stuff_dataset_id_to_contiguous_id"]
    names = {c["id"]: c["name"].split("-")[0] for c in categories}
    colors = {c["id"]: np.array(c["color"], dtype=np.int16) for c in categories}
    things = [c["id"] for c in categories if c["isthing"]]
    paths = coco_panoptic_paths(str(root), split)
    for key in ("image_root", "panoptic_root", "sem_seg_root"):
        os.makedirs(paths[key], exist_ok=True)
    os.makedirs(os.path.dirname(paths["panoptic_json"]), exist_ok=True)

    images, pan_anns, inst_anns, cap_anns, out_images = [], [], [], [], []
    used_ids = {0, 256**3 - 1}  # void, and the colour of detectron2's crop padding
    for i in range(num_images):
        image_id = first_image_id + i
        h, w = image_size[0] + 8 * (i % 2), image_size[1] - 8 * (i % 3)
        ids = np.zeros((h, w), dtype=np.int64)
        segments = []

        def new_segment(category_id, region, iscrowd=0):
            sid = int(rng.integers(1, 256**3 - 1))
            while sid in used_ids:
                sid = int(rng.integers(1, 256**3 - 1))
            used_ids.add(sid)
            ids[region] = sid
            segments.append({"id": sid, "category_id": category_id, "iscrowd": iscrowd})

        sky = np.zeros((h, w), bool)
        sky[: h // 3] = True
        new_segment(_SKY, sky)
        new_segment(_GRASS, ~sky)
        for _ in range(int(rng.integers(1, 4))):
            y0, y1, x0, x1 = _box(rng, h, w)
            region = np.zeros((h, w), bool)
            region[y0:y1, x0:x1] = True
            new_segment(int(rng.choice(things)), region)
        if i == 0:
            region = np.zeros((h, w), bool)
            region[h - 6 :, w - 10 :] = True
            new_segment(things[0], region, iscrowd=1)
        ids[:, :2] = 0  # void column
        segments = [s for s in segments if (ids == s["id"]).any()]

        pixels = np.zeros((h, w, 3), dtype=np.int16)
        semantic = np.full((h, w), 255, dtype=np.uint8)
        for s in segments:
            m = ids == s["id"]
            pixels[m] = colors[s["category_id"]] + rng.integers(-20, 21, 3)
            semantic[m] = contiguous[s["category_id"]]
            s["area"] = int(m.sum())
            s["bbox"] = mask_bbox(m)
        pixels = np.clip(pixels + rng.integers(-8, 9, pixels.shape), 0, 255).astype(np.uint8)
        stem = f"{image_id:012d}"
        save_jpeg(os.path.join(paths["image_root"], stem + ".jpg"), pixels)
        save_panoptic_png(os.path.join(paths["panoptic_root"], stem + ".png"), ids)
        save_semantic_png(os.path.join(paths["sem_seg_root"], stem + ".png"), semantic)

        images.append({"id": image_id, "file_name": stem + ".jpg", "height": h, "width": w})
        pan_anns.append(
            {"image_id": image_id, "file_name": stem + ".png", "segments_info": segments}
        )
        for s in segments:
            if s["category_id"] in things:
                mask = ids == s["id"]
                ann_id = len(inst_anns) + 1
                inst_anns.append(
                    instance_annotation(ann_id, image_id, s["category_id"], mask, s["iscrowd"])
                )
        present = [names[s["category_id"]] for s in segments if s["category_id"] in things]
        captions = [
            t.format(a=present[0], b=present[-1]) for t in _TEMPLATES[: 2 + int(rng.integers(0, 3))]
        ]
        for c in captions:
            cap_anns.append({"id": len(cap_anns) + 1, "image_id": image_id, "caption": c})
        out_images.append(
            {
                "image_id": image_id,
                "file_name": os.path.join(paths["image_root"], stem + ".jpg"),
                "pan_seg_file_name": os.path.join(paths["panoptic_root"], stem + ".png"),
                "height": h,
                "width": w,
                "captions": captions,
                "segments": [{k: s[k] for k in ("id", "category_id", "iscrowd")} for s in segments],
            }
        )

    common = {"info": {"description": "find_plugin tiny COCO"}, "licenses": [], "images": images}
    write_json(
        paths["panoptic_json"], {**common, "annotations": pan_anns, "categories": list(categories)}
    )
    thing_cats = [
        {k: c[k] for k in ("id", "name", "supercategory")} for c in categories if c["isthing"]
    ]
    write_json(
        paths["instances_json"], {**common, "annotations": inst_anns, "categories": thing_cats}
    )
    write_json(paths["captions_json"], {**common, "annotations": cap_anns})
    return {
        "root": str(root),
        "split": split,
        "paths": paths,
        "metadata": meta,
        "categories": [dict(c) for c in categories],
        "images": out_images,
    }


def write_tiny_karpathy(root: str, coco_infos: Sequence[dict], split: str = "test") -> str:
    """Write Karpathy's ``coco/annotations/dataset_coco.json`` listing every image of
    ``coco_infos`` (results of :func:`write_tiny_coco` under the same ``root``) in ``split``, with
    their captions. Entries use COCO 2014 file names that do not exist, so the loader resolves the
    2017 names (as with a COCO 2017 download). Returns the json path."""
    entries = []
    for info in coco_infos:
        for img in info["images"]:
            cocoid = img["image_id"]
            name = f"COCO_val2014_{cocoid:012d}.jpg"
            entries.append(
                karpathy_entry(len(entries), cocoid, "val2014", name, split, img["captions"])
            )
    path = os.path.join(str(root), "coco", "annotations", "dataset_coco.json")
    write_json(path, {"images": entries, "dataset": "coco"})
    return path
