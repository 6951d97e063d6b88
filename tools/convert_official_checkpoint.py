#!/usr/bin/env python
"""Convert an official FIND / X-Decoder / SEEM checkpoint to the find_plugin format.

Examples::

    # released FIND Focal-T (the LLaMA text tower, if stored, is loaded from its own weights)
    python tools/convert_official_checkpoint.py find_focalt_llama_x640 find_focalt.pth \\
        --drop text_tower

    # an X-Decoder checkpoint as the frozen vision side only
    python tools/convert_official_checkpoint.py xdecoder_focalt_last.pt vision.pth \\
        --drop interface --drop lang_proj --drop logit_scale --drop text_tower --drop other \\
        --allow-absent interface --allow-absent lang_proj --allow-absent logit_scale

INPUT is a local path, an http(s) URL or a model-zoo name (resolved by
``find_plugin.checkpoint.resolve_weights``). The target architecture is inferred from the key
shapes (or given with ``--preset`` / ``--config``). A per-group report of mapped / dropped / absent
keys is printed; any unmapped, missing or shape-mismatched key makes the tool exit with status 2
and list them. Groups: backbone, pixel_decoder, interface, lang_proj, logit_scale, text_tower,
constants, other.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from find_plugin.checkpoint import (  # noqa: E402
    SOURCE_GROUPS,
    CheckpointFormatError,
    OfficialConversionError,
    WeightsNotFoundError,
    convert_official_state_dict,
    find_config_from_official,
    infer_find_config,
    read_weights_file,
    resolve_weights,
    save_checkpoint,
)
from find_plugin.checkpoint.official import unwrap_official  # noqa: E402
from find_plugin.model import build_find_model  # noqa: E402
from find_plugin.presets import FIND_MODEL_PRESETS, resolve_find_config  # noqa: E402

TARGET_GROUPS = ("backbone", "pixel_decoder", "interface", "lang_proj", "logit_scale")


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("input", help="official checkpoint: local path, http(s) URL or zoo name")
    p.add_argument("output", help="output file (find_plugin format)")
    p.add_argument(
        "--drop",
        action="append",
        default=[],
        choices=SOURCE_GROUPS,
        metavar="GROUP",
        help="ignore every official key of GROUP (repeatable), e.g. text_tower",
    )
    p.add_argument(
        "--allow-absent",
        action="append",
        default=[],
        choices=TARGET_GROUPS,
        metavar="GROUP",
        help="GROUP of the target model may be missing from the input (repeatable)",
    )
    arch = p.add_mutually_exclusive_group()
    arch.add_argument("--preset", choices=sorted(FIND_MODEL_PRESETS), help="target architecture")
    arch.add_argument(
        "--config",
        help="JSON file: build_find_model sections {backbone, pixel_decoder, interface}, or an "
        "official resolved config (a file with 'resolved': {...}, e.g. parity_small/config.json)",
    )
    p.add_argument("--cache-dir", default=None, help="download cache (default: resolver default)")
    p.add_argument("--allow-pickle", action="store_true", help="unpickle non-tensor objects")
    return p.parse_args(argv)


def _target_config(args, sd):
    if args.preset:
        return resolve_find_config(args.preset), f"preset {args.preset}"
    if args.config:
        with open(args.config) as f:
            cfg = json.load(f)
        if "resolved" in cfg:
            return find_config_from_official(cfg["resolved"]), f"official config {args.config}"
        return resolve_find_config(**cfg), f"config {args.config}"
    return infer_find_config(sd), "inferred from key shapes"


def main(argv=None) -> int:
    args = _parse(argv)
    try:
        path = resolve_weights(args.input, cache_dir=args.cache_dir)
        wf = read_weights_file(path, allow_pickle=args.allow_pickle)
    except (WeightsNotFoundError, CheckpointFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if wf.layout != "official":
        print(f"error: {path} is in the {wf.layout!r} layout, not an official one", file=sys.stderr)
        return 1
    sd, _ = unwrap_official(wf.raw)
    cfg, how = _target_config(args, sd)
    with torch.device("meta"):
        target = build_find_model(**cfg)
    try:
        state, report = convert_official_state_dict(
            wf.raw, target=target, allow_absent=args.allow_absent, drop=args.drop, source=path
        )
    except OfficialConversionError as e:
        print(str(e), file=sys.stderr)
        return 2
    print(report.format())
    meta = {
        "converted_from": os.path.basename(path),
        "official_prefix": report.prefix,
        "model_config": json.dumps(cfg, sort_keys=True),
        "model_config_source": how,
        "dropped_groups": ",".join(sorted(set(args.drop) | {"constants"})),
        "absent_groups": ",".join(sorted(g for g, v in report.absent.items() if v)),
    }
    save_checkpoint(args.output, state, meta=meta)
    print(f"wrote {args.output}: {len(state)} tensors ({how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
