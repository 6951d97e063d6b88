"""FIND-Bench entity files (COCO-Entity, COCO-Entity-Long; spec §5.1, §5.2), parsed and validated
against the panoptic segments of each image (no framework import; used by the detectron2 datasets
of :mod:`find_plugin.d2.datasets.find_bench` and the MMDetection ``FINDCocoPanopticDataset``).

Entity file: ``images[]`` ``{id, file_name}``; ``annotations[]`` one per sentence ``{image_id,
sentence, sentence_raw, phrase: [{annotation_id, phrase, start_idx, end_idx, ...}]}``, where
``annotation_id`` is a panoptic segment id of the image and ``start_idx``/``end_idx`` a character
span of ``sentence``. A phrase may carry a cross-image ``reference: {image_id, annotation_id,
prob}`` (``tools/build_interleave_references.py``): a segment of another image of the same split.
``sentence_raw`` (GPT-4 output) marks each phrase as ``[<segment id>]`` in front of its text.

Checks (errors name the entity file, the annotation index and the phrase): the span lies inside
the sentence (``0 <= start < end <= len``) and phrases do not overlap; the ``annotation_id`` is a
segment of that image's panoptic annotation; ``sentence_raw`` (when present) has only well-formed
``[<digits>]`` markers and one for every phrase id; a reference names another image and one of
its segments.
"""

import collections
import re
from typing import Mapping

__all__ = ["parse_entity_annotations"]

_MARKER = re.compile(r"\[(\d+)\]")


def _check_raw(raw: str, ids, where: str) -> None:
    stripped = _MARKER.sub("", raw)
    if "[" in stripped or "]" in stripped:
        bad = stripped.find("[") if "[" in stripped else stripped.find("]")
        raise ValueError(
            f"{where}: malformed sentence_raw {raw!r}: a bracket that is not a '[<segment id>]' "
            f"marker (near {stripped[max(0, bad - 10):bad + 10]!r})"
        )
    marked = {int(m) for m in _MARKER.findall(raw)}
    unmarked = sorted(set(ids) - marked)
    if unmarked:
        raise ValueError(
            f"{where}: malformed sentence_raw {raw!r}: no '[<id>]' marker for phrase segment "
            f"id(s) {unmarked}"
        )


def _reference(ref, image_id: int, segment_ids: Mapping[int, set], where: str) -> dict:
    """A phrase's cross-image ``reference`` {image_id, annotation_id, prob}, validated."""
    try:
        rid, rsid = int(ref["image_id"]), int(ref["annotation_id"])
        prob = float(ref.get("prob", float("nan")))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f"{where}: reference must be {{image_id, annotation_id, prob}} with integer ids, got "
            f"{ref!r:.120} ({e!r})"
        ) from None
    if rid == image_id:
        raise ValueError(f"{where}: reference image {rid} is the phrase's own image")
    if rid not in segment_ids:
        raise ValueError(f"{where}: reference image {rid} is not in the panoptic annotations")
    if rsid not in segment_ids[rid]:
        raise ValueError(
            f"{where}: reference annotation_id {rsid} is not a panoptic segment of image {rid}"
        )
    return {"image_id": rid, "annotation_id": rsid, "prob": prob}


def parse_entity_annotations(
    entity_json: str, data: Mapping, segment_ids: Mapping[int, set], *, dataset_name: str
) -> dict:
    """``image_id -> [entity_info entries]`` of the entity file content ``data``, validated
    against ``segment_ids`` (``image_id -> {panoptic segment ids}``); see the module docstring."""
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(
            f"dataset {dataset_name!r}: entity file {entity_json} has no 'annotations' list"
        )
    out = collections.defaultdict(list)
    for k, ann in enumerate(data["annotations"]):
        where = f"dataset {dataset_name!r}: {entity_json} annotations[{k}]"
        for key in ("image_id", "sentence", "phrase"):
            if key not in ann:
                raise ValueError(f"{where} has no {key!r}")
        image_id, sentence = int(ann["image_id"]), ann["sentence"]
        where += f" (image {image_id})"
        if image_id not in segment_ids:
            raise ValueError(f"{where}: the image is not in the panoptic annotations")
        phrases = []
        for j, p in enumerate(ann["phrase"]):
            pw = f"{where} phrase[{j}] ({p.get('phrase')!r})"
            try:
                start, end, sid = int(p["start_idx"]), int(p["end_idx"]), int(p["annotation_id"])
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(
                    f"{pw} needs integer start_idx, end_idx and annotation_id ({e!r})"
                ) from None
            if not 0 <= start < end <= len(sentence):
                raise ValueError(
                    f"{pw}: span ({start}, {end}) is outside the sentence {sentence!r} "
                    f"(length {len(sentence)})"
                )
            if sid not in segment_ids[image_id]:
                raise ValueError(
                    f"{pw}: annotation_id {sid} is not a panoptic segment of image {image_id} "
                    f"(its segments: {sorted(segment_ids[image_id])})"
                )
            entry = {
                "start": start,
                "end": end,
                "annotation_id": sid,
                "phrase": p.get("phrase", sentence[start:end]),
            }
            if p.get("reference") is not None:
                entry["reference"] = _reference(p["reference"], image_id, segment_ids, pw)
            phrases.append(entry)
        phrases.sort(key=lambda p: p["start"])
        for a, b in zip(phrases, phrases[1:]):
            if b["start"] < a["end"]:
                raise ValueError(
                    f"{where}: phrases {a['phrase']!r} ({a['start']}, {a['end']}) and "
                    f"{b['phrase']!r} ({b['start']}, {b['end']}) overlap in {sentence!r}"
                )
        if ann.get("sentence_raw") is not None:
            _check_raw(ann["sentence_raw"], [p["annotation_id"] for p in phrases], where)
        out[image_id].append({"sentence": sentence, "phrases": phrases})
    return dict(out)
