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
    coco/annotations/dataset_coco.json                    Karpathy split (train; val as "test")
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
Every ``PHOTO_EVERY``-th image of a split (the first included) is instead a real photo with its
real masks: a window of the ``coins`` photograph with each coin's watershed mask and a void
background; train and val windows come from disjoint rows of the photo (``licenses.json`` lists
each photo image with its window).
Same seed and sizes -> byte-identical files (fixed encoder settings, sorted JSON keys).
"""

import argparse
import hashlib
import os
import pickle
import shutil
import sys

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from find_plugin.d2.datasets import demo_paths, panoptic_metadata  # noqa: E402
from find_plugin.d2.datasets.demo_scenes import (  # noqa: E402
    DEMO_CATEGORIES,
    DEMO_SOURCES,
    compose_scene,
    entity_sentence,
    entity_things,
    load_sources,
    photo_captions,
    photo_scene,
    referring_expressions,
    scene_captions,
)
from find_plugin.d2.datasets.writers import (  # noqa: E402
    instance_annotation,
    karpathy_entry,
    mask_bbox,
    save_jpeg,
    save_panoptic_png,
    save_semantic_png,
    write_json,
)

__all__ = ["DEMO_CATEGORIES", "build_demo_dataset", "demo_paths"]  # demo_paths: re-export

_THING_IDS = {c["id"] for c in DEMO_CATEGORIES if c["isthing"]}
PHOTO_EVERY = 20  # 400 train + 100 val images -> 20 + 5 real coin photos


def _ref_entry(ref_id: int, ann: dict, split: str, file_name: str, sentences) -> dict:
    """One RefCOCO ``refs(unc).p`` entry (a plain dict, as in the original pickles)."""
    sent_ids = [ref_id * 10 + j for j in range(len(sentences))]  # at most 3 sentences per ref
    return {
        "ref_id": ref_id,
        "ann_id": ann["id"],
        "image_id": ann["image_id"],
        "split": split,
        "category_id": ann["category_id"],
        "file_name": file_name,
        "sent_ids": sent_ids,
        "sentences": [
            {"sent": s, "raw": s, "tokens": s.split(), "sent_id": j}
            for s, j in zip(sentences, sent_ids)
        ],
    }


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
    overwrite: bool = False,
) -> dict:
    """Write the demo dataset under ``<root>/find_demo/`` (layout in the module docstring).

    The files are written to ``<root>/find_demo.partial/`` and renamed at the end, so an
    interrupted build leaves no half dataset. An existing ``find_demo/`` is an error unless
    ``overwrite`` (then it is replaced).

    Returns :func:`demo_paths` plus ``metadata`` (``panoptic_metadata(DEMO_CATEGORIES)``),
    ``categories``, ``num_images`` {split: n}, ``num_refs`` {split: n} and ``files``: every
    written file (sorted, relative to ``base``)."""
    for key, n in (("num_train", num_train), ("num_val", num_val)):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"build_demo_dataset: {key} must be a positive int, got {n!r}")
    final = demo_paths(root)
    if os.path.exists(final["base"]) and not overwrite:
        raise FileExistsError(
            f"build_demo_dataset: {final['base']} exists (pass overwrite=True / --overwrite to "
            "replace it)"
        )
    paths = demo_paths(root, "find_demo.partial")
    if os.path.exists(paths["base"]):
        shutil.rmtree(paths["base"])  # left by an interrupted build
    rng = np.random.default_rng(seed)
    sources = load_sources()
    meta = panoptic_metadata(DEMO_CATEGORIES)
    contiguous = meta["stuff_dataset_id_to_contiguous_id"]
    licences = [{"id": 1, "name": "CC0 / public domain (scikit-image sample data)", "url": ""}]
    thing_cats = [
        {k: c[k] for k in ("id", "name", "supercategory")} for c in DEMO_CATEGORIES if c["isthing"]
    ]
    used_layouts: set = set()
    photos = []
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
            if i % PHOTO_EVERY == 0:
                pixels, ids, segments, window = photo_scene(
                    rng, sources, used_layouts, image_id, split
                )
                photos.append({"image_id": image_id, "split": split, **window})
            else:
                pixels, ids, segments = compose_scene(rng, sources, used_layouts, image_id)
            h, w = ids.shape
            stem = f"{image_id:012d}"
            semantic = np.full((h, w), 255, np.uint8)
            for s in segments:
                m = ids == s["id"]
                semantic[m] = contiguous[s["category_id"]]
                s["area"], s["bbox"] = int(m.sum()), mask_bbox(m)
            save_jpeg(os.path.join(p["image_root"], stem + ".jpg"), pixels)
            save_panoptic_png(os.path.join(p["panoptic_root"], stem + ".png"), ids)
            save_semantic_png(os.path.join(p["sem_seg_root"], stem + ".png"), semantic)
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
            things = [s for s in segments if s["category_id"] in _THING_IDS]
            stuff = [s for s in segments if s["category_id"] not in _THING_IDS]  # wall, ground
            for t in things:
                ann = instance_annotation(next_ann_id, image_id, t["category_id"], ids == t["id"])
                inst_anns.append(ann)
                ref_anns.append(ann)
                sentences = referring_expressions(t, things)
                if sentences:
                    refs.append(
                        _ref_entry(len(refs), ann, ref_split, f"{stem}_{ann['id']}.jpg", sentences)
                    )
                    num_refs[split] += 1
                next_ann_id += 1
            ref_images.append(image)
            if stuff:
                captions = scene_captions(rng, things, stuff[1]["category_id"])
                sentence, raw, phrases = entity_sentence(things, stuff[1], stuff[0])
            else:
                captions = photo_captions(rng, things)
                sentence, raw, phrases = entity_sentence(entity_things(things))
            for c in captions:
                cap_anns.append({"id": len(cap_anns) + 1, "image_id": image_id, "caption": c})
            karpathy_split = "train" if split == "train" else "test"
            folder = os.path.basename(p["image_root"])
            karpathy.append(
                karpathy_entry(
                    len(karpathy), image_id, folder, stem + ".jpg", karpathy_split, captions
                )
            )
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
        write_json(
            p["panoptic_json"],
            {**common, "annotations": pan_anns, "categories": DEMO_CATEGORIES},
        )
        write_json(
            p["instances_json"], {**common, "annotations": inst_anns, "categories": thing_cats}
        )
        write_json(p["captions_json"], {**common, "annotations": cap_anns})
        write_json(
            paths[f"entity_{split}_json"],
            {**common, "annotations": entities, "categories": DEMO_CATEGORIES},
        )
    if bar is not None:
        bar.close()
    write_json(paths["karpathy_json"], {"dataset": "coco", "images": karpathy})
    write_json(
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
    _write_licences(paths["base"], photos)
    files = sorted(
        os.path.relpath(os.path.join(d, f), paths["base"])
        for d, _, fs in os.walk(paths["base"])
        for f in fs
    )
    if os.path.exists(final["base"]):
        shutil.rmtree(final["base"])
    os.replace(paths["base"], final["base"])
    return {
        **final,
        "metadata": meta,
        "categories": [dict(c) for c in DEMO_CATEGORIES],
        "num_images": {"train": num_train, "val": num_val},
        "num_refs": num_refs,
        "files": files,
    }


def _write_licences(base: str, photos: list) -> None:
    from importlib.metadata import version

    import skimage

    rows = []
    for key, file_name, licence in DEMO_SOURCES:
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
    write_json(os.path.join(base, "licenses.json"), {"sources": rows, "photos": photos})
    lines = [
        "# find_demo: image sources and licences",
        "",
        "Most images are composites of the photographs below (pixels cut out, resized, tinted);",
        f"{len(photos)} are windows of the coins photograph itself (listed in licenses.json).",
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
    parser.add_argument("--overwrite", action="store_true", help="replace an existing find_demo/")
    args = parser.parse_args(argv)
    out = build_demo_dataset(
        args.root or datasets_root(),
        seed=args.seed,
        num_train=args.num_train,
        num_val=args.num_val,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {len(out['files'])} files under {out['base']}: images {out['num_images']}, "
        f"referring expressions {out['num_refs']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
