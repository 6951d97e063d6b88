#!/usr/bin/env python
"""FIND demo: one checkpoint, one image (or several), one prompt -> an overlay PNG or a ranking.

detectron2's demo conventions (``demo/demo.py``): ``--config-file``, ``--input`` (files or one
glob), ``--output`` (a folder, or a file name for a single input), ``--confidence-threshold``,
``--opts KEY VALUE ...`` (``MODEL.WEIGHTS`` = the checkpoint: local path, URL or zoo name, read
strictly by :class:`~find_plugin.d2.FINDCheckpointer`). One prompt kind per run:

    python tools/demo.py --config-file cfg.yaml --input a.jpg --output out/ \\
        --classes "dog,cat,grass" --opts MODEL.WEIGHTS model_final.pth       # panoptic
    ... --text "the dog on the left"                                         # referring
    ... --clicks "120,80;140,90" [--negative-clicks "10,10"] [--scribble s.png]   # interactive
    ... --interleave "a [1] next to <the grass>" --reference-image r.jpg \\
        --reference-mask m.png | --reference-box 10,20,80,120                # interleave
    ... --retrieve "a dog on the grass" --gallery photos/                    # retrieval

Prompts become a per-image record and the task layer's samples (``find_plugin.tasks``): the class
list rebuilds the generic task and its class bank, a sentence is a grounding, clicks / scribbles
are the interactive task's given ``prompts``, an interleaved sentence
(:func:`~find_plugin.tasks.interleave.parse_interleave_prompt`: ``[k]`` = reference k,
``<words>`` = a text entity) is an ``entities`` entry whose visual phrases are prompted on the
reference image (their points are sampled in the reference image's features, ``prompt_maps``:
the official demo's cross-image reference). Every bad argument is a
:class:`~find_plugin.d2.predictor.PredictorError` naming it.
"""

import argparse
import glob
import json
import logging
import os
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from detectron2.config import get_cfg  # noqa: E402

import find_plugin.d2  # noqa: E402,F401  (registration)
from find_plugin.d2 import add_find_config  # noqa: E402
from find_plugin.d2.predictor import FINDPredictor, PredictorError, _resize_mask, check_file  # noqa
from find_plugin.d2.visualize import draw_masks, draw_panoptic, draw_prompts, save_png  # noqa
from find_plugin.tasks.interleave import parse_interleave_prompt  # noqa: E402

logger = logging.getLogger("find_plugin.demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
PROMPT_KINDS = ("classes", "text", "interactive", "interleave", "retrieve")


# ---------------------------------------------------------------------------------- arguments
class _AppendReference(argparse.Action):
    """``--reference-mask`` / ``--reference-box`` append (kind, value) to one ordered list:
    the k-th reference given is ``[k]`` of the interleaved sentence."""

    def __call__(self, parser, namespace, values, option_string=None):
        refs = list(getattr(namespace, self.dest, None) or [])
        refs.append((option_string, values))
        setattr(namespace, self.dest, refs)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="FIND demo (detectron2 conventions)")
    p.add_argument("--config-file", required=True, metavar="FILE", help="path to a config yaml")
    p.add_argument("--input", nargs="+", help="image files, or one glob such as 'dir/*.jpg'")
    p.add_argument(
        "--output",
        default="demo_output",
        help="folder for the overlays / ranking (or a .png / .json file name for one result)",
    )
    p.add_argument(
        "--confidence-threshold",
        type=float,
        default=None,
        help="panoptic: keep a segment above this class probability "
        "(MODEL.FIND.TEST.OBJECT_MASK_THRESHOLD)",
    )
    g = p.add_argument_group("prompts (exactly one kind)")
    g.add_argument("--classes", help="comma-separated class names: panoptic segmentation")
    g.add_argument(
        "--stuff-classes", default="", help="those of --classes that are stuff (one segment each)"
    )
    g.add_argument("--text", action="append", help="a referring sentence (repeatable)")
    g.add_argument("--clicks", help="positive clicks 'x,y;x,y' in pixels of the input image")
    g.add_argument("--negative-clicks", help="negative clicks 'x,y;x,y' (with --clicks/--scribble)")
    g.add_argument(
        "--scribble", metavar="PNG", help="positive scribble: mask PNG of the input size"
    )
    g.add_argument("--interleave", help="sentence with visual slots [1], [2] and <text entities>")
    g.add_argument("--reference-image", metavar="FILE", help="image the visual references are on")
    g.add_argument(
        "--reference-mask",
        dest="references",
        action=_AppendReference,
        metavar="PNG",
        help="mask PNG of the reference image (the next [k]); repeatable",
    )
    g.add_argument(
        "--reference-box",
        dest="references",
        action=_AppendReference,
        metavar="X0,Y0,X1,Y1",
        help="box on the reference image (the next [k]); repeatable",
    )
    g.add_argument("--retrieve", help="text query ranked against the images of --gallery")
    g.add_argument("--gallery", metavar="FOLDER", help="folder of images for --retrieve")
    p.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config overrides 'KEY VALUE' pairs, e.g. MODEL.WEIGHTS model_final.pth",
    )
    return p


_check_file = check_file


def _points(text: str, arg: str) -> List[Tuple[float, float]]:
    """``"x,y;x,y"`` -> [(x, y), ...]."""
    if text is None or not text.strip():
        raise PredictorError(f"{arg} is empty: expected 'x,y;x,y' pixel coordinates")
    out = []
    for part in text.split(";"):
        xy = [v.strip() for v in part.split(",")]
        try:
            if len(xy) != 2:
                raise ValueError
            out.append((float(xy[0]), float(xy[1])))
        except ValueError:
            raise PredictorError(f"{arg}: {part!r} is not a point 'x,y' (in {text!r})") from None
    return out


def _box(text: str, arg: str) -> Tuple[float, float, float, float]:
    try:
        box = tuple(float(v) for v in text.split(","))
        if len(box) != 4:
            raise ValueError
    except ValueError:
        raise PredictorError(f"{arg}: {text!r} is not a box 'x0,y0,x1,y1'") from None
    if not (box[0] < box[2] and box[1] < box[3]):
        raise PredictorError(f"{arg}: box {text!r} must have x0 < x1 and y0 < y1")
    return box


def _non_empty(value, arg: str) -> str:
    if value is None or not value.strip():
        raise PredictorError(f"{arg} is empty: give a non-empty prompt")
    return value.strip()


def prompt_kind(args) -> str:
    """The one prompt kind of ``args`` (checks the prompt arguments, not the files' contents)."""
    given = {
        "classes": args.classes is not None,
        "text": args.text is not None,
        "interactive": any(
            v is not None for v in (args.clicks, args.scribble, args.negative_clicks)
        ),
        "interleave": args.interleave is not None,
        "retrieve": args.retrieve is not None,
    }
    kinds = [k for k, v in given.items() if v]
    flags = "--classes, --text, --clicks/--scribble, --interleave or --retrieve"
    if not kinds:
        raise PredictorError(f"no prompt given: pass one of {flags}")
    if len(kinds) > 1:
        raise PredictorError(f"one prompt kind per run, got {kinds}: pass only one of {flags}")
    kind = kinds[0]
    if kind == "classes":
        names = [c.strip() for c in args.classes.split(",")]
        if not args.classes.strip() or not all(names):
            raise PredictorError(f"--classes {args.classes!r}: expected non-empty names 'a,b,c'")
        stuff = [c.strip() for c in args.stuff_classes.split(",") if c.strip()]
        unknown = [s for s in stuff if s not in names]
        if unknown:
            raise PredictorError(f"--stuff-classes {unknown} are not among --classes {names}")
    elif kind == "text":
        for t in args.text:
            _non_empty(t, "--text")
    elif kind == "interactive":
        if args.clicks is None and args.scribble is None:
            raise PredictorError(
                "--negative-clicks needs a positive prompt: --clicks or --scribble"
            )
        if args.clicks is not None:
            _points(args.clicks, "--clicks")
        if args.negative_clicks is not None:
            _points(args.negative_clicks, "--negative-clicks")
        if args.scribble is not None:
            _check_file(args.scribble, "--scribble")
    elif kind == "interleave":
        try:
            _, phrases = parse_interleave_prompt(args.interleave)
        except ValueError as e:
            raise PredictorError(f"--interleave: {e}") from None
        slots = [p["reference"] for p in phrases if p["visual"]]
        refs = args.references or []
        if slots:
            _check_file(args.reference_image, "--reference-image")
            if max(slots) >= len(refs):
                raise PredictorError(
                    f"--interleave uses [{max(slots) + 1}] but {len(refs)} reference(s) were "
                    "given (--reference-mask / --reference-box, one per [k])"
                )
        for opt, value in refs:
            if opt == "--reference-mask":
                _check_file(value, opt)
            else:
                _box(value, opt)
    elif kind == "retrieve":
        _non_empty(args.retrieve, "--retrieve")
        gallery_images(args.gallery)
    return kind


def gallery_images(folder: Optional[str]) -> List[str]:
    if not folder or not os.path.isdir(folder):
        raise PredictorError(f"--gallery: folder {folder!r} does not exist (needed by --retrieve)")
    files = sorted(
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))
    )
    if not files:
        raise PredictorError(f"--gallery: no image ({', '.join(IMAGE_EXTENSIONS)}) in {folder!r}")
    return files


def input_images(args) -> List[str]:
    """``--input`` files (one argument may be a glob, as detectron2's demo); all must exist."""
    if not args.input:
        raise PredictorError("--input: no image given")
    paths = list(args.input)
    if len(paths) == 1 and not os.path.isfile(paths[0]):
        matches = sorted(glob.glob(os.path.expanduser(paths[0])))
        paths = matches or paths
    for p in paths:
        _check_file(p, "--input")
    return paths


def setup_cfg(args):
    cfg = get_cfg()
    add_find_config(cfg)
    _check_file(args.config_file, "--config-file")
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if args.confidence_threshold is not None:
        cfg.MODEL.FIND.TEST.OBJECT_MASK_THRESHOLD = args.confidence_threshold
    cfg.freeze()
    return cfg


# ---------------------------------------------------------------------------------- prompts
def _check_inside(points, h: int, w: int, arg: str, where: str) -> None:
    for x, y in points:
        if not (0 <= x < w and 0 <= y < h):
            raise PredictorError(
                f"{arg}: point ({x:g}, {y:g}) is outside {where} ({w}x{h} pixels: "
                f"0 <= x < {w}, 0 <= y < {h})"
            )


def click_mask(points, h: int, w: int) -> np.ndarray:
    """[h, w] bool with a 3x3 square at each (x, y) (the size of the simulator's clicks)."""
    m = np.zeros((h, w), bool)
    for x, y in points:
        r, c = int(y), int(x)
        m[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2] = True
    return m


def read_mask(path: str, size: Tuple[int, int], arg: str) -> np.ndarray:
    """A mask PNG (nonzero = inside; any channel) of exactly ``size`` (h, w)."""
    from PIL import Image

    try:
        with Image.open(_check_file(path, arg)) as im:
            m = np.asarray(im)
    except PredictorError:
        raise
    except Exception as e:
        raise PredictorError(f"{arg}: cannot read mask {path!r}: {e}") from None
    m = m.any(-1) if m.ndim == 3 else m != 0
    if m.shape != tuple(size):
        raise PredictorError(
            f"{arg}: mask {path!r} is {m.shape[1]}x{m.shape[0]}, its image is "
            f"{size[1]}x{size[0]} (width x height); they must match"
        )
    if not m.any():
        raise PredictorError(f"{arg}: mask {path!r} is empty (no nonzero pixel)")
    return m


def _output_path(args, source: str, n_inputs: int, ext: str) -> str:
    out = args.output
    if out.lower().endswith(ext):
        if n_inputs > 1:
            raise PredictorError(f"--output {out!r} is one file but there are {n_inputs} inputs")
        return out
    return os.path.join(out, os.path.splitext(os.path.basename(source))[0] + ext)


# ---------------------------------------------------------------------------------- running
def run(args, demo: FINDPredictor, kind: Optional[str] = None) -> List[str]:
    """Run the prompt of ``args`` with ``demo``; returns the files written."""
    kind = kind or prompt_kind(args)
    if kind == "retrieve":
        return [_run_retrieval(args, demo)]
    paths = input_images(args)
    written = []
    if args.confidence_threshold is not None:  # also for a FINDPredictor built from another cfg
        demo.model.test["object_mask_threshold"] = float(args.confidence_threshold)
    if kind == "classes":
        names = [c.strip() for c in args.classes.split(",")]
        stuff = [c.strip() for c in args.stuff_classes.split(",") if c.strip()]
        meta = demo.set_classes(names, stuff)
    for path in paths:
        image = demo.read(path)
        h, w = image.shape[:2]
        rgb = demo.rgb(image)
        if kind == "classes":
            seg, info = demo.panoptic(image)
            overlay = draw_panoptic(rgb, seg.cpu(), info, meta)
            logger.info("%s: %d segments", path, len(info))
        elif kind == "text":
            masks = demo.referring(image, args.text)
            overlay = draw_masks(rgb, masks, labels=list(args.text))
        elif kind == "interactive":
            overlay = _run_interactive(args, demo, path, image, rgb)
        else:
            overlay, ref_overlay = _run_interleave(args, demo, image, rgb)
            if ref_overlay is not None:
                ref_path = _output_path(args, path, len(paths), ".png")[: -len(".png")]
                written.append(save_png(ref_path + "_reference.png", ref_overlay))
        assert overlay.shape[:2] == (h, w)
        out = _output_path(args, path, len(paths), ".png")
        written.append(save_png(out, overlay))
        print(f"{path} -> {out}")
    return written


def _run_interactive(args, demo, path, image, rgb) -> np.ndarray:
    h, w = image.shape[:2]
    pos_pts = _points(args.clicks, "--clicks") if args.clicks is not None else []
    neg_pts = _points(args.negative_clicks, "--negative-clicks") if args.negative_clicks else []
    _check_inside(pos_pts, h, w, "--clicks", f"image {path}")
    _check_inside(neg_pts, h, w, "--negative-clicks", f"image {path}")
    pos = click_mask(pos_pts, h, w)
    scribble = None
    if args.scribble is not None:
        scribble = read_mask(args.scribble, (h, w), "--scribble")
        pos |= scribble
    mask = demo.interactive(image, pos, click_mask(neg_pts, h, w))
    return draw_prompts(rgb, mask, clicks=pos_pts, negative_clicks=neg_pts, scribble=scribble)


def _run_interleave(args, demo, image, rgb):
    sentence, phrases = parse_interleave_prompt(args.interleave)
    reference, prompts, ref_overlay = None, [], None
    if any(p["visual"] for p in phrases):
        reference = demo.read(args.reference_image, "--reference-image")
        rh, rw = reference.shape[:2]
        for opt, value in args.references:
            if opt == "--reference-mask":
                prompts.append(read_mask(value, (rh, rw), opt))
            else:
                x0, y0, x1, y1 = _box(value, opt)
                _check_inside([(x0, y0), (x1 - 1e-6, y1 - 1e-6)], rh, rw, opt, "the reference")
                m = np.zeros((rh, rw), bool)
                m[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
                prompts.append(m)
        ref_overlay = draw_masks(
            demo.rgb(reference),
            np.stack(prompts),
            labels=[f"[{k + 1}]" for k in range(len(prompts))],
        )
    masks = demo.interleave(image, sentence, phrases, reference, prompts)
    labels = [p["text"] for p in phrases]
    return draw_masks(rgb, masks, labels=labels), ref_overlay


def _run_retrieval(args, demo) -> str:
    files = gallery_images(args.gallery)
    query = demo.text_embedding(args.retrieve)
    query = query / query.norm().clamp_min(1e-12)
    scores = []
    for f in files:
        emb = demo.image_embedding(demo.read(f, "--gallery"))
        scores.append(float(emb @ query / emb.norm().clamp_min(1e-12)))
    order = sorted(range(len(files)), key=lambda i: (-scores[i], files[i]))
    ranking = [{"rank": r + 1, "file": files[i], "score": scores[i]} for r, i in enumerate(order)]
    out = (
        args.output
        if args.output.lower().endswith(".json")
        else os.path.join(args.output, "ranking.json")
    )
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"query": args.retrieve, "ranking": ranking}, f, indent=2)
    os.replace(tmp, out)
    for r in ranking:
        print(f"{r['rank']:4d}  {r['score']:+.4f}  {r['file']}")
    print(f"ranking -> {out}")
    return out


def main(argv: Optional[Sequence[str]] = None) -> List[str]:
    args = get_parser().parse_args(argv)
    kind = prompt_kind(args)  # prompt and file errors before the (slow) model build
    if kind != "retrieve":
        input_images(args)
    cfg = setup_cfg(args)
    demo = FINDPredictor(cfg, config_file=args.config_file)
    return run(args, demo, kind)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    try:
        main()
    except PredictorError as e:
        print(f"demo.py: error: {e}", file=sys.stderr)
        sys.exit(2)
