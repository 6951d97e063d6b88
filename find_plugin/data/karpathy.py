"""COCO Karpathy retrieval splits (``dataset_coco.json``) read without a framework: the
detectron2 datasets (:mod:`find_plugin.d2.datasets.karpathy`) and the MMDetection
``FINDKarpathyDataset`` both call :func:`load_karpathy_json`.

Karpathy's split file: ``{"images": [{"filepath": "val2014", "filename":
"COCO_val2014_000000391895.jpg", "cocoid": 391895, "split": "test", "sentences": [{"raw": ...},
...]}, ...]}``; the 2014 name ``{image_root}/{filepath}/{filename}`` is used when it exists, else
the 2017 name of the same picture ``{image_root}/{train,val}2017/{cocoid:012d}.jpg``.
"""

import os
from typing import Sequence

from .files import read_json, require_file

__all__ = ["load_karpathy_json"]


def _image_path(image_root: str, img: dict) -> list:
    """Candidate paths of one Karpathy entry: the 2014 name, then the 2017 names."""
    out = []
    if img.get("filename"):
        out.append(os.path.join(image_root, img.get("filepath", ""), img["filename"]))
    if "cocoid" in img:
        out += [
            os.path.join(image_root, f"{split}2017", f"{int(img['cocoid']):012d}.jpg")
            for split in ("val", "train")
        ]
    return out


def load_karpathy_json(
    name: str, json_file: str, image_root: str, splits: Sequence[str] = ("test",)
) -> list:
    """Dataset dicts of the images of ``splits`` in Karpathy's ``json_file`` (file order)."""
    require_file(json_file, dataset_name=name, what="Karpathy split file")
    data = read_json(json_file, dataset_name=name, what="Karpathy split file")
    if not isinstance(data, dict) or "images" not in data:
        raise ValueError(f"dataset {name!r}: {json_file} has no 'images' list (Karpathy format)")
    out = []
    for k, img in enumerate(data["images"]):
        if img.get("split") not in splits:
            continue
        entry = f"images[{k}] (cocoid {img.get('cocoid')}, {img.get('filename')})"
        captions = [s.get("raw", "").strip() for s in img.get("sentences", [])]
        captions = [c for c in captions if c]
        if not captions:
            raise ValueError(f"dataset {name!r}: {json_file} {entry} has no caption")
        candidates = _image_path(image_root, img)
        path = next((p for p in candidates if os.path.isfile(p)), None)
        if path is None:
            raise FileNotFoundError(
                f"dataset {name!r}: image of {json_file} {entry} not found; looked for {candidates}"
            )
        image_id = img.get("cocoid", img.get("imgid"))
        out.append({"file_name": path, "image_id": int(image_id), "captions": captions})
    if not out:
        raise ValueError(f"dataset {name!r}: {json_file} has no image of split(s) {list(splits)}")
    return out
