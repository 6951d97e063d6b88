"""RefCOCO-style referring expressions (RefCOCO, RefCOCO+, RefCOCOg; spec §2 "Grounded", §5.4)
read from the standard ``refer`` files: Licheng Yu's ``refs(*).p`` pickle (read with
:func:`~.safe_pickle.load_plain_pickle`: no code from the file runs) and its ``instances.json``.
No framework import: the detectron2 datasets (:mod:`find_plugin.d2.datasets.refcoco`,
``register_find_dataset``) and the MMDetection ``FINDCocoPanopticDataset`` both call it.

A ref is ``{"ref_id", "ann_id", "image_id", "split", "category_id", "sentences": [{"raw", ...}]}``;
its mask is the ``instances.json`` annotation ``ann_id`` (polygons or RLE). A ``grounding_info``
entry is ``{"ref_id", "ann_id", "category_id", "sentences": [str], "segmentation"}``.
"""

import collections
import os
from typing import Iterable, Mapping

from .files import missing_files, read_json, require_file
from .safe_pickle import load_plain_pickle

__all__ = ["load_grounding_info", "load_find_refcoco", "check_images_joined"]


def load_grounding_info(name: str, refs_file: str, instances_json: str, split: str):
    """``(per_image, images)``: ``image_id -> [grounding_info entries]`` of the refs of ``split``
    (in order of first appearance) and ``image_id -> instances.json image entry``. Errors name the
    file and the entry: a ref whose ``ann_id`` or ``image_id`` is not in ``instances_json``, a
    ref without sentences, an unsafe or corrupt pickle, a split without refs."""
    require_file(refs_file, dataset_name=name, what="RefCOCO refs pickle")
    refs = load_plain_pickle(refs_file)
    if not isinstance(refs, list):
        raise ValueError(
            f"dataset {name!r}: {refs_file} holds a {type(refs).__name__}, expected the list "
            "of refs of the refer API"
        )
    inst = read_json(instances_json, dataset_name=name, what="RefCOCO instances json")
    for key in ("images", "annotations"):
        if key not in inst:
            raise ValueError(f"dataset {name!r}: {instances_json} has no {key!r} list")
    images = {int(i["id"]): i for i in inst["images"]}
    anns = {int(a["id"]): a for a in inst["annotations"]}
    per_image = collections.OrderedDict()
    for k, ref in enumerate(refs):
        if not isinstance(ref, dict) or ref.get("split") != split:
            continue
        entry = f"{refs_file} ref #{k} (ref_id {ref.get('ref_id')})"
        for key in ("ann_id", "image_id", "sentences"):
            if key not in ref:
                raise ValueError(f"dataset {name!r}: {entry} has no {key!r}")
        ann = anns.get(int(ref["ann_id"]))
        if ann is None:
            raise ValueError(
                f"dataset {name!r}: {entry}: ann_id {ref['ann_id']} is not an annotation of "
                f"{instances_json}"
            )
        image_id = int(ref["image_id"])
        if image_id not in images or int(ann["image_id"]) != image_id:
            raise ValueError(
                f"dataset {name!r}: {entry}: image_id {image_id} is not in {instances_json} or "
                f"is not the image of its annotation {ref['ann_id']} ({ann.get('image_id')})"
            )
        sentences = [s.get("raw", s.get("sent", "")) for s in ref["sentences"]]
        sentences = [s.strip() for s in sentences if isinstance(s, str) and s.strip()]
        if not sentences:
            raise ValueError(f"dataset {name!r}: {entry} has no sentence")
        per_image.setdefault(image_id, []).append(
            {
                "ref_id": int(ref.get("ref_id", -1)),
                "ann_id": int(ref["ann_id"]),
                "category_id": int(ref.get("category_id", ann.get("category_id", -1))),
                "sentences": sentences,
                "segmentation": ann["segmentation"],
            }
        )
    if not per_image:
        raise ValueError(f"dataset {name!r}: {refs_file} has no ref of split {split!r}")
    return per_image, images


def check_images_joined(
    name: str, source: str, annotated: Iterable[int], known: Mapping, target: str
) -> None:
    """Raise ValueError when an image id of ``annotated`` (images ``source`` annotates) is not
    a key of ``known`` (the images of ``target``, e.g. the panoptic json): joins by image id drop
    nothing silently."""
    outside = [i for i in annotated if i not in known]
    if outside:
        raise ValueError(
            f"dataset {name!r}: {source} annotates image {outside[0]}, which is not in "
            f"{target} ({len(outside)} such images); join only refs of the panoptic split"
        )


def _image_file(image_root: str, img: dict) -> list:
    """Candidate paths: the 2014 name under ``coco/train2014``, then the 2017 names."""
    out = []
    if img.get("file_name"):
        out.append(os.path.join(image_root, "train2014", os.path.basename(img["file_name"])))
    out += [
        os.path.join(image_root, f"{split}2017", f"{int(img['id']):012d}.jpg")
        for split in ("train", "val")
    ]
    return out


def _resolve_images(name, image_root, images, instances_json):
    candidates = {i: _image_file(image_root, images[i]) for i in images}
    # one listdir per folder (118k images), then the first existing candidate
    first = {i: c[0] for i, c in candidates.items()}
    missing = set(missing_files(first.values()))
    out = {}
    for i, cands in candidates.items():
        path = cands[0] if cands[0] not in missing else None
        if path is None:
            path = next((p for p in cands[1:] if os.path.isfile(p)), None)
        if path is None:
            raise FileNotFoundError(
                f"dataset {name!r}: image {i} of {instances_json} not found; looked for {cands}"
            )
        out[i] = path
    return out


def load_find_refcoco(
    name: str, refs_file: str, instances_json: str, image_root: str, split: str
) -> list:
    """One dict per image of the refs of ``split`` (in order of first appearance in the pickle):
    ``file_name`` (under ``image_root``: ``train2014/<2014 name>``, else ``{train,val}2017/
    {id:012d}.jpg``), ``image_id``, ``height``, ``width``, ``grounding_info``. Errors as
    :func:`load_grounding_info`, plus a missing image (naming the candidates)."""
    per_image, images = load_grounding_info(name, refs_file, instances_json, split)
    paths = _resolve_images(name, image_root, {i: images[i] for i in per_image}, instances_json)
    return [
        {
            "file_name": paths[i],
            "image_id": i,
            "height": int(images[i]["height"]),
            "width": int(images[i]["width"]),
            "grounding_info": infos,
        }
        for i, infos in per_image.items()
    ]
