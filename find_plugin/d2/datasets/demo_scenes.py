"""Scenes of FIND's demo dataset (``tools/build_demo_dataset.py``): real photographs from
scikit-image cut out with exact masks, pasted on real textures, and the language (captions,
referring expressions, entity sentences) generated from each scene's known layout.

Sources (:data:`DEMO_SOURCES`, with their licences): coins (the 24 coins of
``skimage.data.coins``, cut out by a watershed mask and tinted), a horse (the
``skimage.data.horse`` silhouette filled with a tinted gravel photo), a cat, a person and a cup
(elliptical cut-outs of ``chelsea``, ``astronaut`` and ``coffee``), on a brick wall above grass
or gravel (scikit-image textures). Every label is the exact region that was pasted: later things
occlude earlier ones and the segment ids hold what stays visible.

Besides the composites, real photos with their real masks (:func:`photo_scene`): windows of the
``coins`` photograph itself, untouched but for an optional mirror, with each coin's watershed
mask; the dark background is void (panoptic id 0, semantic 255), as unlabelled COCO pixels.
Train windows lie in the photo's top two rows of coins, val windows in the bottom two
(:data:`PHOTO_ROWS`), so no val photo shares a pixel with a train photo.
"""

from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

__all__ = [
    "DEMO_CATEGORIES",
    "DEMO_SOURCES",
    "compose_scene",
    "entity_sentence",
    "entity_things",
    "ground_name",
    "load_sources",
    "photo_captions",
    "photo_scene",
    "referring_expressions",
    "scene_captions",
]

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
STUFF_PHRASES = {_BRICK: "a brick wall", _GRASS: "the grass", _GRAVEL: "the gravel"}
_COLOURS = {  # tints of the grey-level cut-outs (horse, coin)
    "red": (230, 60, 50),
    "green": (70, 200, 80),
    "blue": (60, 110, 235),
    "yellow": (240, 215, 60),
    "white": (245, 245, 245),
}
_TINTED = (_HORSE, _COIN)
_THING_WEIGHTS = {_COIN: 0.3, _HORSE: 0.25, _CAT: 0.15, _PERSON: 0.15, _CUP: 0.15}
#: Rows [y0, y1) of ``skimage.data.coins`` (303 x 384) that photo windows of each split come
#: from: the photo has four rows of coins; y = 150 runs between the second and the third.
PHOTO_ROWS = {"train": (0, 150), "val": (150, 303)}
_MIN_VISIBLE = 0.5  # a coin cut by the window border keeps its label if half of it is inside

#: (source key, package, file inside the package, licence as shipped / documented)
DEMO_SOURCES = [  # licence wording of the skimage.data docstrings (scikit-image sample data)
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


# ---------------------------------------------------------------- sources (real photos + masks)


def load_sources() -> Dict[str, list]:
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
        else:
            labels[labels == k] = 0
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
        "coins_photo": (coins, labels),  # the photo and its coin labels (0 = background)
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


def compose_scene(rng, sources, used_layouts: set, image_id: int):
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
        _place(things, ids)
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


def _place(things: List[dict], ids: np.ndarray) -> None:
    """Add each thing's visible ``area`` and coarse place (``col``, ``row``) in the image."""
    h, w = ids.shape
    for t in things:
        ys, xs = np.nonzero(ids == t["id"])
        cx, cy = xs.mean() / w, ys.mean() / h
        t["col"] = "left" if cx < 1 / 3 else ("right" if cx > 2 / 3 else "middle")
        t["row"] = "top" if cy < 0.5 else "bottom"
        t["area"] = int(len(ys))


def photo_scene(rng, sources, used_windows: set, image_id: int, split: str):
    """A window of the real ``coins`` photo with its real coin masks.

    Returns (pixels uint8 [h, w, 3] (the grey photo in three channels), segment ids int64
    [h, w] (0 = void background), segments: coin dicts as :func:`compose_scene`'s things with
    ``colour`` None, window: {"source", "box" [x, y, w, h] in the photo, "mirrored"}). Coins cut
    by the border keep their label when at least half of them is inside, else they are void."""
    photo, labels = sources["coins_photo"]
    y_lo, y_hi = PHOTO_ROWS[split]
    for _ in range(1000):
        h = int(rng.integers(min(120, y_hi - y_lo), y_hi - y_lo + 1))
        w = int(rng.integers(150, 193))
        y0, x0 = int(rng.integers(y_lo, y_hi - h + 1)), int(rng.integers(0, photo.shape[1] - w))
        mirrored = bool(rng.random() < 0.5)
        if (split, y0, x0, h, w, mirrored) in used_windows:
            continue
        pixels, lab = photo[y0 : y0 + h, x0 : x0 + w], labels[y0 : y0 + h, x0 : x0 + w]
        if mirrored:
            pixels, lab = pixels[:, ::-1], lab[:, ::-1]
        ids = np.zeros((h, w), np.int64)
        coins = [
            k
            for k in np.unique(lab)
            if k and (lab == k).sum() >= _MIN_VISIBLE * (labels == k).sum()
        ]
        if len(coins) < 2:
            continue
        seg_ids = rng.choice(np.arange(1, 2**16), size=len(coins), replace=False)
        things = []
        for k, sid in zip(coins, seg_ids):
            ids[lab == k] = sid
            things.append({"id": int(sid), "category_id": _COIN, "iscrowd": 0, "colour": None})
        _place(things, ids)
        used_windows.add((split, y0, x0, h, w, mirrored))
        window = {"source": "coins", "box": [x0, y0, w, h], "mirrored": mirrored}
        return np.repeat(pixels[..., None], 3, axis=2).copy(), ids, things, window
    raise RuntimeError(f"image {image_id}: no new window of the coins photo in 1000 draws")


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


def referring_expressions(t, things) -> List[str]:
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


def scene_captions(rng, things, ground) -> List[str]:
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


def photo_captions(rng, things) -> List[str]:
    """Captions of a window of the coins photo (the layout is only the coins' places)."""
    n = len(things)
    count = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight"][min(n, 8)]
    rows = sorted({t["row"] for t in things})
    caps = [
        f"a black and white photo of {count} coins on a dark background",
        f"{count} coins lying in {'two rows' if len(rows) > 1 else 'a row'}",
        "a close-up photograph of old coins",
    ]
    return caps[: 2 + int(rng.integers(0, 2))]


def entity_things(things, max_things: int = 4) -> List[dict]:
    """The things an entity sentence names: at most ``max_things``, one per coarse place where
    several share it (the place words are what tells them apart)."""
    seen, out = set(), []
    for t in sorted(things, key=lambda t: -t["area"]):
        if (t["col"], t["row"]) not in seen and len(out) < max_things:
            seen.add((t["col"], t["row"]))
            out.append(t)
    return sorted(out, key=lambda t: ("left", "middle", "right").index(t["col"]))


def entity_sentence(things, ground=None, wall=None) -> Tuple[str, str, List[dict]]:
    """(sentence, sentence_raw, phrases) with ``[segment_id]<phrase>`` markup in the raw text.
    ``ground`` / ``wall``: the stuff segments, None for a photo without stuff labels."""
    pieces: List[Tuple[str, object]] = []  # (text, segment or None)
    for k, t in enumerate(things):
        if k:
            pieces.append((", ", None))
        pieces += [(f"a {_noun(t)}", t), (f" {_where(t)}", None)]
    if ground is not None:
        pieces += [(" on ", None), (STUFF_PHRASES[ground["category_id"]], ground)]
    if wall is not None:
        pieces += [(" in front of ", None), (STUFF_PHRASES[wall["category_id"]], wall)]
    pieces.append((".", None))
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
