#!/usr/bin/env python
"""Build FIND's demo dataset: real photographs from installed packages, composited into small
scenes with exact masks, written in the real COCO / RefCOCO / FIND-Bench / Karpathy formats.

    python tools/build_demo_dataset.py                      # -> $DETECTRON2_DATASETS/find_demo
    python tools/build_demo_dataset.py --root /tmp/ds --num-train 400 --num-val 100 --seed 0

Importable (``build_demo_dataset(root, seed=0, num_train=400, num_val=100)``). Layout under
``<root>/find_demo/`` (the COCO part is :func:`find_plugin.d2.datasets.coco_panoptic_paths`)::

    coco/{train,val}2017/{id:012d}.jpg                    RGB JPEG images
    coco/panoptic_{train,val}2017/{id:012d}.png           panoptic PNG (R + 256 G + 256^2 B)
    coco/panoptic_semseg_{train,val}2017/{id:012d}.png    semantic PNG (contiguous ids, 255 ignore)
    coco/annotations/panoptic_{split}.json, instances_{split}.json (RLE), captions_{split}.json
    coco/annotations/dataset_coco.json                    Karpathy split: train -> "train", val -> "test"
    coco/annotations/find_entity_{split}.json             FIND-Bench-style entity sentences
    refcoco/refs(unc).p, refcoco/instances.json           RefCOCO-style (splits "train", "val")
    LICENSES.md, licenses.json                            the source photos and their licences

Scenes: a stuff background (brick wall above grass or gravel, textures from scikit-image) with
one to four things pasted on it: coins (the 24 coins of ``skimage.data.coins``, cut out by a
watershed mask and tinted), a horse (the ``skimage.data.horse`` silhouette filled with a tinted
gravel photo), a cat, a person and a cup (elliptical cut-outs of ``chelsea``, ``astronaut`` and
``coffee``). Every label is the exact region that was pasted (later things occlude earlier ones;
the panoptic PNG holds what stays visible). Each image's coarse layout (stuff, then per thing
category, colour, column, row) is unique over both splits, so no val image repeats a train
composition. Captions, referring expressions and entity sentences are generated from the layout.
Same seed and sizes -> byte-identical files (fixed encoder settings, sorted JSON keys).
"""

import argparse
import hashlib
import json
import os
import pickle
import sys
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from find_plugin.d2.datasets import coco_panoptic_paths, id2rgb, panoptic_metadata  # noqa: E402

__all__ = ["DEMO_CATEGORIES", "build_demo_dataset", "demo_paths"]

#: Thing and stuff categories (COCO ids and names where COCO has the class; the coin is new).
DEMO_CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1, "supercategory": "person", "color": [220, 20, 60]},
    {"id": 17, "name": "cat", "isthing": 1, "supercategory": "animal", "color": [255, 77, 255]},
    {"id": 19, "name": "horse", "isthing": 1, "supercategory": "animal", "color": [182, 182, 255]},
    {"id": 47, "name": "cup", "isthing": 1, "supercategory": "kitchen", "color": [109, 63, 54]},
    {"id": 201, "name": "coin", "isthing": 1, "supercategory": "money", "color": [196, 172, 0]},
    {"id": 125, "name": "gravel", "isthing": 0, "supercategory": "ground", "color": [124, 74, 181]},
    {
        "id": 171,
        "name": "wall-brick",
        "isthing": 0,
        "supercategory": "wall",
        "color": [137, 54, 74],
    },
    {
        "id": 193,
        "name": "grass-merged",
        "isthing": 0,
        "supercategory": "plant",
        "color": [152, 251, 152],
    },
]
_PERSON, _CAT, _HORSE, _CUP, _COIN, _GRAVEL, _BRICK, _GRASS = (1, 17, 19, 47, 201, 125, 171, 193)
_NAME = {_PERSON: "person", _CAT: "cat", _HORSE: "horse", _CUP: "cup", _COIN: "coin"}
_STUFF_PHRASE = {_BRICK: "a brick wall", _GRASS: "the grass", _GRAVEL: "the gravel"}
_COLOURS = {  # tints of the grey-level cut-outs (horse, coin)
    "red": (230, 60, 50),
    "green": (70, 200, 80),
    "blue": (60, 110, 235),
    "yellow": (240, 215, 60),
    "white": (245, 245, 245),
}
_TINTED = (_HORSE, _COIN)
_THING_WEIGHTS = {_COIN: 0.3, _HORSE: 0.25, _CAT: 0.15, _PERSON: 0.15, _CUP: 0.15}

#: (source key, package, file inside the package, licence as shipped / documented)
_SOURCES = [  # licence wording of the skimage.data docstrings (scikit-image sample data)
    (
        "astronaut",
        "astronaut.png",
        "No known copyright restrictions, released into the public domain.",
    ),
    ("chelsea", "chelsea.png", "CC0 by the photographer (Stefan van der Walt)."),
    ("coffee", "coffee.png", "CC0 by the photographer (Rachel Michetti)."),
    ("coins", "coins.png", "No known copyright restrictions."),
    ("horse", "horse.png", "CC0 given by owner (Andreas Preuss (marauder))."),
    ("brick", "brick.png", "CC0Textures (Bricks25), Creative Commons CC0 License."),
    ("grass", "grass.png", "CC0Textures, Creative Commons CC0 License."),
    ("gravel", "gravel.png", "CC0Textures (Gravel04), Creative Commons CC0 License."),
]
_JPEG = {"quality": 92, "subsampling": 0, "optimize": False}
_PNG = {"compress_level": 6, "optimize": False}


def demo_paths(root: str) -> Dict[str, object]:
    """Paths of the demo dataset under ``root`` (the folder that holds ``find_demo/``)."""
    base = os.path.join(str(root), "find_demo")
    ann = os.path.join(base, "coco", "annotations")
    return {
        "base": base,
        "train": coco_panoptic_paths(base, "train2017"),
        "val": coco_panoptic_paths(base, "val2017"),
        "karpathy_json": os.path.join(ann, "dataset_coco.json"),
        "karpathy_image_root": os.path.join(base, "coco"),
        "entity_train_json": os.path.join(ann, "find_entity_train2017.json"),
        "entity_val_json": os.path.join(ann, "find_entity_val2017.json"),
        "refs_pickle": os.path.join(base, "refcoco", "refs(unc).p"),
        "refcoco_instances_json": os.path.join(base, "refcoco", "instances.json"),
    }


# ---------------------------------------------------------------- sources (real photos + masks)


def _load_sources() -> Dict[str, list]:
    """Cut-outs per thing category: lists of (grey or RGB pixels float32, bool mask), plus the
    stuff textures (grey float32)."""
    import skimage.data as data
    from scipy import ndimage as ndi
    from skimage.filters import sobel
    from skimage.segmentation import watershed

    coins = data.coins()
    markers = np.zeros_like(coins)
    markers[coins < 30], markers[coins > 150] = 1, 2  # skimage's coins example
    fg = ndi.binary_fill_holes(watershed(sobel(coins), markers) == 2)
    labels, n = ndi.label(fg)
    coin_cuts = []
    for k, sl in enumerate(ndi.find_objects(labels), start=1):
        m = labels[sl] == k
        if m.sum() >= 500:  # drops specks of the watershed
            coin_cuts.append((coins[sl].astype(np.float32), m))
    horse = ~data.horse()
    ys, xs = np.nonzero(horse)
    horse = horse[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]

    def ellipse(img, y0, y1, x0, x1):
        crop = img[y0:y1, x0:x1].astype(np.float32)
        h, w = crop.shape[:2]
        yy, xx = np.mgrid[:h, :w]
        m = ((yy + 0.5 - h / 2) / (h / 2)) ** 2 + ((xx + 0.5 - w / 2) / (w / 2)) ** 2 <= 1.0
        return crop, m

    return {
        _COIN: coin_cuts,
        _HORSE: [(None, horse)],  # filled with a gravel crop at paste time
        _CAT: [ellipse(data.chelsea(), 20, 290, 90, 340)],
        _PERSON: [ellipse(data.astronaut(), 10, 330, 110, 350)],
        _CUP: [ellipse(data.coffee(), 30, 380, 130, 470)],
        "brick": data.brick().astype(np.float32),
        "grass": data.grass().astype(np.float32),
        "gravel": data.gravel().astype(np.float32),
    }


def _resize(arr: np.ndarray, h: int, w: int, nearest: bool = False) -> np.ndarray:
    if arr.dtype == bool:
        img = Image.fromarray(arr.astype(np.uint8) * 255)
        return np.asarray(img.resize((w, h), Image.NEAREST)) > 127
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    out = img.resize((w, h), Image.NEAREST if nearest else Image.BILINEAR)
    return np.asarray(out).astype(np.float32)


def _texture(rng, tex: np.ndarray, h: int, w: int, tint) -> np.ndarray:
    """An ``h x w`` crop of a grey texture, tinted: [h, w, 3] float32."""
    y, x = int(rng.integers(0, tex.shape[0] - h)), int(rng.integers(0, tex.shape[1] - w))
    grey = tex[y : y + h, x : x + w] / 255.0
    return grey[..., None] * np.asarray(tint, np.float32)[None, None] * 1.2


# ---------------------------------------------------------------- one scene


def _compose(rng, sources, used_layouts: set, image_id: int):
    """Draw a scene whose coarse layout is not in ``used_layouts``. Returns (pixels uint8
    [h, w, 3], segment ids int64 [h, w], segments: dicts with id, category_id, iscrowd, and for
    things colour/col/row/area)."""
    cats = list(_THING_WEIGHTS)
    probs = np.asarray([_THING_WEIGHTS[c] for c in cats])
    for _ in range(1000):
        h, w = int(rng.integers(128, 161)), int(rng.integers(160, 193))
        ground = _GRASS if rng.random() < 0.5 else _GRAVEL
        horizon = int(rng.integers(int(0.35 * h), int(0.6 * h)))
        pixels = np.zeros((h, w, 3), np.float32)
        pixels[:horizon] = _texture(rng, sources["brick"], horizon, w, (200, 110, 90))
        tint = (110, 190, 90) if ground == _GRASS else (170, 160, 145)
        pixels[horizon:] = _texture(rng, sources[ground_name(ground)], h - horizon, w, tint)
        ids = np.zeros((h, w), np.int64)
        stuff = [(_BRICK, np.s_[:horizon]), (ground, np.s_[horizon:])]
        seg_ids = rng.choice(np.arange(1, 2**16), size=len(stuff) + 4, replace=False)
        segments = []
        for (cat, sl), sid in zip(stuff, seg_ids):
            ids[sl] = sid
            segments.append({"id": int(sid), "category_id": cat, "iscrowd": 0})
        things = []
        for k in range(int(rng.integers(1, 5))):
            cat = int(rng.choice(cats, p=probs / probs.sum()))
            src, m = sources[cat][int(rng.integers(len(sources[cat])))]
            side = int(rng.integers(34, 66)) if cat != _COIN else int(rng.integers(24, 42))
            scale = side / max(m.shape)
            oh, ow = max(8, round(m.shape[0] * scale)), max(8, round(m.shape[1] * scale))
            m = _resize(m, oh, ow)
            colour = None
            if cat == _HORSE:
                colour = str(rng.choice(list(_COLOURS)))
                patch = _texture(rng, sources["gravel"], oh, ow, _COLOURS[colour])
            else:
                patch = _resize(src, oh, ow)
                if cat in _TINTED:
                    colour = str(rng.choice(list(_COLOURS)))
                    patch = patch[..., None] / 255.0 * np.asarray(_COLOURS[colour]) * 1.1
            y0, x0 = int(rng.integers(0, h - oh)), int(rng.integers(0, w - ow))
            region = np.zeros((h, w), bool)
            region[y0 : y0 + oh, x0 : x0 + ow] = m
            pixels[region] = patch[m]
            sid = int(seg_ids[len(stuff) + k])
            ids[region] = sid
            things.append({"id": sid, "category_id": cat, "iscrowd": 0, "colour": colour})
        # Things mostly hidden by later ones would make ambiguous references: redraw.
        areas = {s["id"]: int((ids == s["id"]).sum()) for s in segments + things}
        if any(areas[t["id"]] < 120 for t in things):
            continue
        for t in things:
            ys, xs = np.nonzero(ids == t["id"])
            cx, cy = xs.mean() / w, ys.mean() / h
            t["col"] = "left" if cx < 1 / 3 else ("right" if cx > 2 / 3 else "middle")
            t["row"] = "top" if cy < 0.5 else "bottom"
            t["area"] = areas[t["id"]]
        layout = (ground,) + tuple(
            sorted((t["category_id"], t["colour"] or "", t["col"], t["row"]) for t in things)
        )
        if layout in used_layouts:
            continue
        used_layouts.add(layout)
        noise = rng.normal(0.0, 2.0, pixels.shape)
        pixels = np.clip(pixels + noise, 0, 255).astype(np.uint8)
        return pixels, ids, segments + things
    raise RuntimeError(f"image {image_id}: no new layout found in 1000 draws")


def ground_name(cat: int) -> str:
    return "grass" if cat == _GRASS else "gravel"


# ---------------------------------------------------------------- language from the layout


def _noun(t, with_colour=True) -> str:
    colour = t.get("colour") if with_colour else None
    return f"{colour} {_NAME[t['category_id']]}" if colour else _NAME[t["category_id"]]


def _where(t) -> str:
    if t["col"] == "middle":
        return f"at the {t['row']}"
    return f"at the {t['row']} {t['col']}"


def _referring(t, things) -> List[str]:
    """Referring expressions that single out thing ``t`` among ``things`` ([] if none does)."""
    same = [o for o in things if o["category_id"] == t["category_id"]]

    def unique(pred):
        return sum(pred(o) for o in same) == 1

    name = _NAME[t["category_id"]]
    out = []
    if len(same) == 1:
        out.append(f"the {name}")
    if t.get("colour") and unique(lambda o: o.get("colour") == t["colour"]):
        out.append(f"the {_noun(t)}")
    if unique(lambda o: o["col"] == t["col"]) and t["col"] != "middle":
        out.append(f"the {_noun(t)} on the {t['col']}")
    if unique(lambda o: (o["col"], o["row"]) == (t["col"], t["row"])):
        out.append(f"the {_noun(t)} {_where(t)}")
    if len(same) > 1:
        areas = sorted(o["area"] for o in same)
        if t["area"] == areas[-1] and areas[-1] > 1.3 * areas[-2]:
            out.append(f"the biggest {name}")
        elif t["area"] == areas[0] and areas[1] > 1.3 * areas[0]:
            out.append(f"the smallest {name}")
    return out[:3]


def _captions(rng, things, ground) -> List[str]:
    by_x = sorted(things, key=lambda t: ("left", "middle", "right").index(t["col"]))
    nouns = [f"a {_noun(t)}" for t in by_x]
    listed = nouns[0] if len(nouns) == 1 else ", ".join(nouns[:-1]) + " and " + nouns[-1]
    g = ground_name(ground)
    caps = [
        f"{listed} on {g} in front of a brick wall",
        " ".join(f"a {_noun(t)} {_where(t)}," for t in by_x)[:-1] + f", {g} below a brick wall",
    ]
    counts: Dict[str, int] = {}
    for t in things:
        counts[_NAME[t["category_id"]]] = counts.get(_NAME[t["category_id"]], 0) + 1
    words = ["no", "one", "two", "three", "four"]
    parts = [f"{words[n]} {k}{'s' if n > 1 else ''}" for k, n in sorted(counts.items())]
    caps.append(f"a picture with {' and '.join(parts)} on {g}")
    return caps[: 2 + int(rng.integers(0, 2))]


def _entity_sentence(things, ground, wall) -> Tuple[str, str, List[dict]]:
    """(sentence, sentence_raw, phrases) with ``[segment_id]<phrase>`` markup in the raw text."""
    pieces: List[Tuple[str, object]] = []  # (text, segment or None)
    for k, t in enumerate(things):
        if k:
            pieces.append((", ", None))
        pieces += [(f"a {_noun(t)}", t), (f" {_where(t)}", None)]
    pieces += [(" on ", None), (_STUFF_PHRASE[ground["category_id"]], ground)]
    pieces += [(" in front of ", None), (_STUFF_PHRASE[wall["category_id"]], wall), (".", None)]
    sentence, raw, phrases = "", "", []
    for text, seg in pieces:
        if seg is not None:
            raw += f"[{seg['id']}]<"
            phrases.append(
                {
                    "annotation_id": seg["id"],
                    "phrase": text,
                    "start_idx": len(sentence),
                    "end_idx": len(sentence) + len(text),
                    "_start_idx": len(raw),
                }
            )
            raw += text + ">"
        else:
            raw += text
        sentence += text
    return sentence, raw, phrases


# ---------------------------------------------------------------- writing


def _dump_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, sort_keys=True, separators=(",", ":"))


def _bbox(mask: np.ndarray) -> List[float]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc="find_demo", unit="img")
    except ImportError:
        return None


def build_demo_dataset(
    root: str,
    *,
    seed: int = 0,
    num_train: int = 400,
    num_val: int = 100,
    progress: bool = True,
) -> dict:
    """Write the demo dataset under ``<root>/find_demo/`` (layout in the module docstring).

    Returns :func:`demo_paths` plus ``metadata`` (``panoptic_metadata(DEMO_CATEGORIES)``),
    ``categories``, ``num_images`` {split: n}, ``num_refs`` {split: n} and ``files``: every
    written file (sorted, relative to ``base``)."""
    for key, n in (("num_train", num_train), ("num_val", num_val)):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"build_demo_dataset: {key} must be a positive int, got {n!r}")
    paths = demo_paths(root)
    rng = np.random.default_rng(seed)
    sources = _load_sources()
    meta = panoptic_metadata(DEMO_CATEGORIES)
    contiguous = meta["stuff_dataset_id_to_contiguous_id"]
    licences = [{"id": 1, "name": "CC0 / public domain (scikit-image sample data)", "url": ""}]
    thing_cats = [
        {k: c[k] for k in ("id", "name", "supercategory")} for c in DEMO_CATEGORIES if c["isthing"]
    ]
    used_layouts: set = set()
    karpathy, refs, ref_images, ref_anns = [], [], [], []
    num_refs = {}
    bar = _progress(num_train + num_val, progress)
    next_ann_id = 1
    for split, n, first_id, ref_split in (
        ("train", num_train, 1, "train"),
        ("val", num_val, 900001, "val"),
    ):
        p = paths[split]
        for key in ("image_root", "panoptic_root", "sem_seg_root"):
            os.makedirs(p[key], exist_ok=True)
        images, pan_anns, inst_anns, cap_anns, entities = [], [], [], [], []
        num_refs[split] = 0
        for i in range(n):
            image_id = first_id + i
            pixels, ids, segments = _compose(rng, sources, used_layouts, image_id)
            h, w = ids.shape
            stem = f"{image_id:012d}"
            semantic = np.full((h, w), 255, np.uint8)
            for s in segments:
                m = ids == s["id"]
                semantic[m] = contiguous[s["category_id"]]
                s["area"], s["bbox"] = int(m.sum()), _bbox(m)
            Image.fromarray(pixels).save(os.path.join(p["image_root"], stem + ".jpg"), **_JPEG)
            Image.fromarray(id2rgb(ids)).save(
                os.path.join(p["panoptic_root"], stem + ".png"), **_PNG
            )
            Image.fromarray(semantic).save(os.path.join(p["sem_seg_root"], stem + ".png"), **_PNG)
            image = {"id": image_id, "file_name": stem + ".jpg", "height": h, "width": w}
            images.append({**image, "license": 1})
            keys = ("id", "category_id", "iscrowd", "area", "bbox")
            pan_anns.append(
                {
                    "image_id": image_id,
                    "file_name": stem + ".png",
                    "segments_info": [{k: s[k] for k in keys} for s in segments],
                }
            )
            stuff, things = segments[:2], segments[2:]
            for t in things:
                rle = mask_utils.encode(np.asfortranarray((ids == t["id"]).astype(np.uint8)))
                ann = {
                    "id": next_ann_id,
                    "image_id": image_id,
                    "category_id": t["category_id"],
                    "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
                    "area": t["area"],
                    "bbox": t["bbox"],
                    "iscrowd": 0,
                }
                inst_anns.append(ann)
                ref_anns.append(ann)
                for sentences in [_referring(t, things)]:
                    if not sentences:
                        continue
                    sent_ids = [len(refs) * 10 + j for j in range(len(sentences))]
                    refs.append(
                        {
                            "ref_id": len(refs),
                            "ann_id": next_ann_id,
                            "image_id": image_id,
                            "split": ref_split,
                            "category_id": t["category_id"],
                            "file_name": f"{stem}_{next_ann_id}.jpg",
                            "sent_ids": sent_ids,
                            "sentences": [
                                {"sent": s, "raw": s, "tokens": s.split(), "sent_id": j}
                                for s, j in zip(sentences, sent_ids)
                            ],
                        }
                    )
                    num_refs[split] += 1
                next_ann_id += 1
            ref_images.append(image)
            captions = _captions(rng, things, stuff[1]["category_id"])
            for c in captions:
                cap_anns.append({"id": len(cap_anns) + 1, "image_id": image_id, "caption": c})
            karpathy.append(
                {
                    "filepath": os.path.basename(p["image_root"]),
                    "filename": stem + ".jpg",
                    "imgid": len(karpathy),
                    "cocoid": image_id,
                    "split": "train" if split == "train" else "test",
                    "sentences": [
                        {"raw": c, "tokens": c.replace(",", "").split(), "imgid": len(karpathy)}
                        for c in captions
                    ],
                }
            )
            sentence, raw, phrases = _entity_sentence(things, stuff[1], stuff[0])
            entities.append(
                {
                    "id": image_id,
                    "image_id": image_id,
                    "sentence": sentence,
                    "sentence_raw": raw,
                    "phrase": phrases,
                }
            )
            if bar is not None:
                bar.update(1)
            elif progress and (i + 1) % 50 == 0:
                print(f"find_demo {split}: {i + 1}/{n}", flush=True)
        common = {
            "info": {"description": "find_plugin demo dataset", "version": "1"},
            "licenses": licences,
            "images": images,
        }
        _dump_json(
            p["panoptic_json"],
            {**common, "annotations": pan_anns, "categories": DEMO_CATEGORIES},
        )
        _dump_json(
            p["instances_json"], {**common, "annotations": inst_anns, "categories": thing_cats}
        )
        _dump_json(p["captions_json"], {**common, "annotations": cap_anns})
        _dump_json(
            paths[f"entity_{split}_json"],
            {**common, "annotations": entities, "categories": DEMO_CATEGORIES},
        )
    if bar is not None:
        bar.close()
    _dump_json(paths["karpathy_json"], {"dataset": "coco", "images": karpathy})
    _dump_json(
        paths["refcoco_instances_json"],
        {
            "info": {"description": "find_plugin demo dataset (RefCOCO-style)"},
            "licenses": licences,
            "images": ref_images,
            "annotations": ref_anns,
            "categories": thing_cats,
        },
    )
    with open(paths["refs_pickle"], "wb") as f:
        pickle.dump(refs, f, protocol=2)  # RefCOCO's files are protocol-2 pickles
    _write_licences(paths["base"])
    files = sorted(
        os.path.relpath(os.path.join(d, f), paths["base"])
        for d, _, fs in os.walk(paths["base"])
        for f in fs
    )
    return {
        **paths,
        "metadata": meta,
        "categories": [dict(c) for c in DEMO_CATEGORIES],
        "num_images": {"train": num_train, "val": num_val},
        "num_refs": num_refs,
        "files": files,
    }


def _write_licences(base: str) -> None:
    from importlib.metadata import version

    import skimage

    rows = []
    for key, file_name, licence in _SOURCES:
        package, rel = "scikit-image", f"skimage/data/{file_name}"
        path = os.path.join(os.path.dirname(skimage.__file__), "data", file_name)
        with open(path, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        rows.append(
            {
                "source": key,
                "package": f"{package} {version(package)}",
                "file": rel,
                "sha256": sha,
                "licence": licence,
            }
        )
    _dump_json(os.path.join(base, "licenses.json"), {"sources": rows})
    lines = [
        "# find_demo: image sources and licences",
        "",
        "Every image is a composite of the photographs below (pixels cut out, resized, tinted).",
        "Licences as stated in the `skimage.data` docstrings of the installed scikit-image.",
        "The annotations were generated by tools/build_demo_dataset.py.",
        "",
        "| source | package | file | licence |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['source']} | {r['package']} | {r['file']} | {r['licence']} |" for r in rows]
    with open(os.path.join(base, "LICENSES.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    from find_plugin.d2.datasets import datasets_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="default: $DETECTRON2_DATASETS")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    out = build_demo_dataset(
        args.root or datasets_root(),
        seed=args.seed,
        num_train=args.num_train,
        num_val=args.num_val,
        progress=not args.no_progress,
    )
    print(
        f"wrote {len(out['files'])} files under {out['base']}: images {out['num_images']}, "
        f"referring expressions {out['num_refs']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
