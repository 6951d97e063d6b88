#!/usr/bin/env python
"""Pre-compute frozen text-encoder token features into a disk cache (FIND's PRECOMPUTE step).

Texts come from one or more files (format detected from the content, or forced with --format):

* ``txt``: one text per line (empty lines skipped);
* ``coco-captions``: COCO captions json, ``annotations[].caption``;
* ``find-bench``: FIND-Bench entity json, ``annotations[].sentence``;
* ``refcoco``: RefCOCO-style refs, either a list of refs or ``annotations[]``, each with
  ``sentences[].sent`` (or ``.raw``).

Example::

    python tools/precompute_text_features.py --model /models/llama-7b --layer -12 \\
        --max-length 77 --cache-dir /data/text_cache --input entity_val2017.json --dtype fp16 \\
        --device cuda:0

Prints the number of unique texts, how many were computed and how many were already cached.
"""

import argparse
import json
import os
import sys
import time
from typing import List

FORMATS = ("auto", "txt", "coco-captions", "find-bench", "refcoco")


class InputError(ValueError):
    """A text source file is missing or malformed (the message names the file and key)."""


def _read_txt(path: str) -> List[str]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not a UTF-8 text file ({err})") from None


def _field(path: str, items, index_key: str, field: str) -> List[str]:
    texts = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get(field), str):
            raise InputError(f"{path}: {index_key}[{i}].{field} is missing or not a string")
        texts.append(item[field])
    return texts


def _ref_sentences(path: str, refs, index_key: str) -> List[str]:
    texts = []
    for i, ref in enumerate(refs):
        sents = ref.get("sentences") if isinstance(ref, dict) else None
        if not isinstance(sents, list):
            raise InputError(f"{path}: {index_key}[{i}].sentences is missing or not a list")
        for j, sent in enumerate(sents):
            text = sent.get("sent", sent.get("raw")) if isinstance(sent, dict) else None
            if not isinstance(text, str):
                raise InputError(
                    f"{path}: {index_key}[{i}].sentences[{j}] has no string 'sent' or 'raw'"
                )
            texts.append(text)
    return texts


def _detect_json_format(path: str, data) -> str:
    if isinstance(data, list):
        return "refcoco"
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise InputError(
            f"{path}: expected a json object with an 'annotations' list (COCO captions / "
            f"FIND-Bench / RefCOCO) or a list of refs"
        )
    anns = data["annotations"]
    if not anns:
        raise InputError(f"{path}: 'annotations' is empty")
    first = anns[0]
    if isinstance(first, dict):
        if "sentence" in first:
            return "find-bench"
        if "caption" in first:
            return "coco-captions"
        if "sentences" in first:
            return "refcoco"
    raise InputError(
        f"{path}: cannot tell the format from annotations[0] (expected a 'caption', 'sentence' or "
        f"'sentences' key); pass --format"
    )


def load_texts(path: str, fmt: str = "auto") -> List[str]:
    """Texts of one source file, in file order (duplicates kept)."""
    if fmt not in FORMATS:
        raise InputError(f"--format: expected one of {FORMATS}, got {fmt!r}")
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    if fmt == "txt" or (fmt == "auto" and not path.lower().endswith(".json")):
        return _read_txt(path)
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid json ({err})") from None
    if fmt == "auto":
        fmt = _detect_json_format(path, data)
    if fmt == "refcoco":
        if isinstance(data, list):
            return _ref_sentences(path, data, "refs")
        if isinstance(data, dict) and isinstance(data.get("annotations"), list):
            return _ref_sentences(path, data["annotations"], "annotations")
        raise InputError(f"{path}: expected a list of refs or an 'annotations' list")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise InputError(f"{path}: key 'annotations' is missing or not a list")
    field = "caption" if fmt == "coco-captions" else "sentence"
    return _field(path, data["annotations"], "annotations", field)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="local Hugging Face model directory")
    p.add_argument("--cache-dir", required=True, help="token-feature cache directory")
    p.add_argument("--input", required=True, action="append", help="text source (repeatable)")
    p.add_argument("--format", default="auto", choices=FORMATS, help="input format (all inputs)")
    p.add_argument(
        "--layer",
        type=int,
        default=None,
        help="hidden_states index (default: -12 for decoders, last hidden state otherwise)",
    )
    p.add_argument(
        "--max-length", type=int, default=77, help="token budget (77 sentences, 150 class)"
    )
    p.add_argument("--kind", default=None, choices=("decoder", "encoder", "clip"))
    p.add_argument("--dtype", default=None, help="float32 (default), float16, bfloat16")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--batch-size", type=int, default=32)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        texts: List[str] = []
        for path in args.input:
            found = load_texts(path, args.format)
            print(f"{path}: {len(found)} texts")
            texts.extend(found)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not texts:
        print("error: no texts found in the inputs", file=sys.stderr)
        return 2

    try:
        from find_plugin.encoders.language import LanguageEncoderError, TextTokenEncoder
    except ImportError:  # run from a checkout without installing the package
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from find_plugin.encoders.language import LanguageEncoderError, TextTokenEncoder

    start = time.perf_counter()
    try:
        encoder = TextTokenEncoder(
            model_path=args.model,
            kind=args.kind,
            feature_layer=args.layer,
            max_length=args.max_length,
            dtype=args.dtype,
            device=args.device,
            cache_dir=args.cache_dir,
        )
    except (LanguageEncoderError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    loaded = time.perf_counter()
    stats = encoder.precompute(texts, max_length=args.max_length, batch_size=args.batch_size)
    done = time.perf_counter()
    print(
        f"texts: {len(texts)} ({stats['total']} unique) | computed: {stats['computed']} | "
        f"already cached: {stats['cached']} | load {loaded - start:.1f}s, "
        f"encode {done - loaded:.1f}s | model {encoder.model_identity} {encoder.layer_tag} "
        f"max_length {encoder.effective_max_length(args.max_length)} -> {encoder.cache.cache_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
