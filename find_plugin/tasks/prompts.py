"""Visual-prompt simulation (spec §2.2) and the interactive click simulator (spec §1.6).

Every random draw comes from the ``generator`` argument (a CPU :class:`torch.Generator`): no
global RNG and no wall clock, so one seed gives one output. The official sampler draws from
Python's ``random``, numpy and torch's global RNG and picks the number of prompted instances
from ``time.time()``; none of that is reproduced.

Prompt shapes follow the official SEEM samplers that FIND reuses (``datasets/visual_sampler``),
with the sizes of ``STROKE_SAMPLER`` in the FIND configs:

* ``point``: 1..20 distinct random pixels of the mask (``POINT.NUM_POINTS`` = 20), no dilation.
* ``scribble``: 1..5 thin random strokes (``rand_curve`` / ``rand_curve_small`` presets, brush
  2..9 px) starting at random mask pixels, kept inside the mask.
* ``circle``: the official "circle" is not a disc but 1..5 *thick* random strokes (the
  ``object_like*`` presets, brush 10..49 px), kept inside the mask: a blob-like scribble.
* ``polygon``: a closed smooth (Bezier) outline through 1..9 random mask pixels
  (``POLYGON.MAX_POINTS`` = 9; control radius 0.2, edginess 0.05), one pixel wide.
* ``box``: the mask's bounding box, filled (not in the official training mix).

Deviations from the official samplers, kept on purpose:

* strokes are rasterised as round-capped thick segments (the official code draws PIL lines plus
  vertex ellipses); the vertex jitter is drawn from [-m, m) like the official one;
* the polygon outline is clipped to the mask (the official outline can leave it, marking
  background pixels as a positive prompt), and it is not filled;
* if a stroke wanders off a non-empty mask entirely, the stroke start pixels (inside the mask)
  are returned instead of an empty prompt;
* masks smaller than ``min_area`` (official: 10 pixels) give an empty prompt, like the official
  samplers (which then also blank that instance's target; that is the caller's job).
"""

import math
from dataclasses import dataclass
from typing import Callable, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .metrics import interactive_iou

__all__ = [
    "CLICK_IOU",
    "MAX_POINTS",
    "MIN_MASK_AREA",
    "PROMPT_KINDS",
    "STOP_IOU",
    "TRAIN_PROMPT_KINDS",
    "next_click",
    "sample_prompt_kind",
    "simulate_clicks",
    "simulate_prompt",
    "simulate_prompts",
]

PROMPT_KINDS = ("point", "scribble", "polygon", "circle", "box")
#: Official training mix (``CANDIDATE_NAMES``), each with probability 0.25.
TRAIN_PROMPT_KINDS = ("point", "polygon", "scribble", "circle")
MAX_POINTS = 20
MAX_STROKES = 5
MAX_POLYGON_POINTS = 9
MIN_MASK_AREA = 10
#: The interactive loop stops once every instance has IoU > STOP_IOU (strict).
STOP_IOU = 0.9
#: An instance gets no further click once its IoU >= CLICK_IOU.
CLICK_IOU = 0.925


@dataclass(frozen=True)
class _StrokePreset:
    vertices: Tuple[int, int]  # number of moves after the start point, drawn in [lo, hi)
    max_speed: float
    accel: Tuple[float, float]  # max change of (speed, angle) per move
    width: Tuple[int, int]  # brush width in pixels, drawn in [lo, hi)
    move_ratio: float  # fraction of vertices jittered in the official "next frame"
    max_move: int  # per-vertex jitter in [-max_move, max_move)
    max_shift_speed: float  # std * 2 of the whole-stroke shift


# Official presets (SEEM visual_sampler scribble.py / circle.py); float bounds truncated as numpy.
_SCRIBBLE = (
    _StrokePreset((10, 30), 20, (15, 0.5), (3, 10), 0.5, 3, 6),  # rand_curve
    _StrokePreset((6, 22), 12, (8, 0.5), (2, 5), 0.5, 1, 3),  # rand_curve_small
)
_CIRCLE = (
    _StrokePreset((5, 30), 15, (10, 1.5), (20, 50), 0.5, 10, 10),  # object_like
    _StrokePreset((5, 15), 8, (4, 1.5), (20, 50), 0.5, 5, 10),  # object_like_middle
    _StrokePreset((5, 20), 7, (3.5, 1.5), (10, 30), 0.5, 5, 4),  # object_like_small
)


def _check_generator(generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got {generator!r}")
    return generator


def _as_bool(x, name: str, dims: Tuple[int, ...] = (2,)) -> torch.Tensor:
    """``x`` (tensor or array, bool or numeric) as a bool tensor; nonzero = True."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be a bool or numeric array, got dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.is_complex():
        raise ValueError(f"{name} must be bool or real-valued, got dtype {x.dtype}")
    if x.dim() not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dims, got {x.shape}")
    return x if x.dtype == torch.bool else x != 0


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] (inclusive)."""
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=g, dtype=torch.float64))


def _pick_pixels(mask: np.ndarray, n: int, g: torch.Generator) -> np.ndarray:
    """``n`` distinct random pixels of ``mask`` as [n, 2] (row, col)."""
    flat = np.flatnonzero(mask)
    chosen = flat[torch.randperm(flat.size, generator=g)[:n].numpy()]
    return np.stack(np.unravel_index(chosen, mask.shape), axis=1)


def _stroke_vertices(start_rc: np.ndarray, p: _StrokePreset, g: torch.Generator) -> np.ndarray:
    """Random-walk control points [V, 2] (x, y) of one stroke starting at ``start_rc``."""
    x, y = float(start_rc[1]), float(start_rc[0])
    pts = [(x, y)]
    angle, speed = _uniform(g, 0, 2 * math.pi), _uniform(g, 0, p.max_speed)
    for _ in range(_randint(g, p.vertices[0], p.vertices[1] - 1)):
        speed = min(max(speed + _uniform(g, -p.accel[0], p.accel[0]), 0.0), p.max_speed)
        angle += _uniform(g, -p.accel[1], p.accel[1])
        x, y = x + speed * math.sin(angle), y + speed * math.cos(angle)
        pts.append((x, y))
    pts = np.asarray(pts)
    # The official sampler draws the stroke "one video frame later": shifted as a whole by a
    # half-normal speed in a random direction, and half of its vertices jittered.
    shift = abs(float(torch.randn(1, generator=g))) * p.max_shift_speed / 2
    direction = _uniform(g, 0, 2 * math.pi)
    pts += (int(shift * math.cos(direction)), int(shift * math.sin(direction)))
    moved = torch.randperm(len(pts), generator=g)[: int(len(pts) * p.move_ratio)].numpy()
    jitter = torch.randint(-p.max_move, p.max_move, (len(moved), 2), generator=g).numpy()
    pts[moved] += jitter
    return pts


def _draw_polyline(canvas: np.ndarray, pts: np.ndarray, width: float) -> None:
    """OR into ``canvas`` [H, W] the pixels within width/2 of the polyline ``pts`` [V, 2] (x, y)."""
    h, w = canvas.shape
    r = width / 2.0
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        c0, c1 = max(int(math.floor(min(x0, x1) - r)), 0), min(
            int(math.ceil(max(x0, x1) + r)), w - 1
        )
        r0, r1 = max(int(math.floor(min(y0, y1) - r)), 0), min(
            int(math.ceil(max(y0, y1) + r)), h - 1
        )
        if c0 > c1 or r0 > r1:
            continue
        ys, xs = np.mgrid[r0 : r1 + 1, c0 : c1 + 1].astype(np.float64)
        dx, dy = x1 - x0, y1 - y0
        length2 = dx * dx + dy * dy
        t = 0.0 if length2 == 0 else np.clip(((xs - x0) * dx + (ys - y0) * dy) / length2, 0, 1)
        canvas[r0 : r1 + 1, c0 : c1 + 1] |= (xs - x0 - t * dx) ** 2 + (
            ys - y0 - t * dy
        ) ** 2 <= r * r


def _strokes(mask: np.ndarray, presets, g: torch.Generator) -> np.ndarray:
    preset = presets[_randint(g, 0, len(presets) - 1)]
    starts = _pick_pixels(mask, _randint(g, 1, min(MAX_STROKES, int(mask.sum()))), g)
    canvas = np.zeros_like(mask)
    for start in starts:
        width = _randint(g, preset.width[0], preset.width[1] - 1)
        _draw_polyline(canvas, _stroke_vertices(start, preset, g), width)
    out = canvas & mask
    if not out.any():  # the stroke wandered off the mask: keep its (inside) start pixels
        out[starts[:, 0], starts[:, 1]] = True
    return out


def _closed_bezier(pts: np.ndarray, rad: float = 0.2, edgy: float = 0.05, num: int = 100):
    """Smooth closed curve [M, 2] (x, y) through ``pts`` [n, 2] (x, y), sorted around their mean:
    one cubic Bezier per side, tangents blending the adjacent side directions."""
    d = pts - pts.mean(axis=0)
    p = pts[np.argsort(np.arctan2(d[:, 0], d[:, 1]), kind="stable")]
    p = np.concatenate([p, p[:1]])
    side = np.diff(p, axis=0)
    ang = np.mod(np.arctan2(side[:, 1], side[:, 0]), 2 * np.pi)
    prev = np.roll(ang, 1)
    blend = np.arctan(edgy) / np.pi + 0.5
    ang = blend * ang + (1 - blend) * prev + (np.abs(prev - ang) > np.pi) * np.pi
    ang = np.append(ang, ang[0])
    t = np.linspace(0.0, 1.0, num)[:, None]
    curves = []
    for i in range(len(p) - 1):
        a, b = p[i], p[i + 1]
        r = rad * np.linalg.norm(b - a)
        ca = a + r * np.array([math.cos(ang[i]), math.sin(ang[i])])
        cb = b - r * np.array([math.cos(ang[i + 1]), math.sin(ang[i + 1])])
        curves.append(
            (1 - t) ** 3 * a + 3 * (1 - t) ** 2 * t * ca + 3 * (1 - t) * t**2 * cb + t**3 * b
        )
    return np.concatenate(curves)


def _polygon(mask: np.ndarray, g: torch.Generator) -> np.ndarray:
    h, w = mask.shape
    rc = _pick_pixels(mask, _randint(g, 1, min(MAX_POLYGON_POINTS, int(mask.sum()))), g)
    curve = _closed_bezier(rc[:, ::-1].astype(np.float64))
    cols = np.clip(curve[:, 0], 0, w - 1).astype(np.int64)
    rows = np.clip(curve[:, 1], 0, h - 1).astype(np.int64)
    canvas = np.zeros_like(mask)
    canvas[rows, cols] = True
    return canvas & mask  # contains the vertices (the curve passes through them): never empty


def simulate_prompt(
    mask, kind: str, *, generator: torch.Generator, min_area: int = MIN_MASK_AREA
) -> torch.Tensor:
    """One ``kind`` prompt drawn from the instance ``mask`` [H, W] (bool or numeric, nonzero =
    object). Returns [H, W] bool on the mask's device; empty if the mask has < ``min_area``
    pixels (and at least 1). Every kind but ``box`` stays inside the mask."""
    if kind not in PROMPT_KINDS:
        raise ValueError(f"kind must be one of {PROMPT_KINDS}, got {kind!r}")
    g = _check_generator(generator)
    m = _as_bool(mask, "mask")
    device, m = m.device, m.cpu().numpy()
    area = int(m.sum())
    if area < max(int(min_area), 1):
        return torch.zeros(m.shape, dtype=torch.bool, device=device)
    if kind == "point":
        out = np.zeros_like(m)
        rc = _pick_pixels(m, _randint(g, 1, min(MAX_POINTS, area)), g)
        out[rc[:, 0], rc[:, 1]] = True
    elif kind == "scribble":
        out = _strokes(m, _SCRIBBLE, g)
    elif kind == "circle":
        out = _strokes(m, _CIRCLE, g)
    elif kind == "polygon":
        out = _polygon(m, g)
    else:
        rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        out = np.zeros_like(m)
        out[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
    return torch.from_numpy(out).to(device)


def sample_prompt_kind(
    generator: torch.Generator, kinds: Sequence[str] = TRAIN_PROMPT_KINDS
) -> str:
    """A prompt kind drawn uniformly from ``kinds``."""
    if len(kinds) == 0 or any(k not in PROMPT_KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {PROMPT_KINDS}, got {kinds!r}")
    return kinds[_randint(_check_generator(generator), 0, len(kinds) - 1)]


def simulate_prompts(
    masks,
    *,
    generator: torch.Generator,
    kinds: Sequence[str] = TRAIN_PROMPT_KINDS,
    min_area: int = MIN_MASK_AREA,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One prompt per instance of ``masks`` [N, H, W], its kind drawn uniformly from ``kinds``.
    Returns ``(pos_masks, neg_masks)``, both [N, H, W] bool; negatives start empty (official)."""
    m = _as_bool(masks, "masks", dims=(3,))
    pos = torch.zeros_like(m)
    for i in range(m.shape[0]):
        kind = sample_prompt_kind(generator, kinds)
        pos[i] = simulate_prompt(m[i], kind, generator=generator, min_area=min_area)
    return pos, torch.zeros_like(m)


def next_click(pred, gt, *, ignore=None, prompted=None) -> Tuple[bool, torch.Tensor]:
    """The official corrective click for one instance.

    The error regions are FN = gt & ~pred and FP = ~gt & pred, both without the ``ignore`` and
    already ``prompted`` pixels (official: without earlier clicks/prompts). The click is
    positive iff |FN| > |FP| (a tie gives a negative click); it goes to the pixel of the chosen
    region farthest from the region's boundary, the image border counting as boundary (Euclidean
    distance transform of the region padded by one background pixel), the first such pixel in
    row-major order on ties, and is dilated to a 3x3 square.

    Args: ``pred``, ``gt``, ``ignore``, ``prompted``: [H, W] bool (or numeric, nonzero = True).
    Returns: ``(is_positive, click)`` with ``click`` [H, W] bool; an empty error region gives
    an empty click (the official code would click pixel (0, 0)).
    Differences from the official code: it takes the max of kornia's approximate distance
    transform of the bilinearly resized prediction at the padded size; near-ties may differ.
    """
    t = _as_bool(gt, "gt")
    p = _as_bool(pred, "pred").to(t.device)
    if p.shape != t.shape:
        raise ValueError(f"pred {tuple(p.shape)} and gt {tuple(t.shape)} must have the same shape")
    free = torch.ones_like(t)
    for name, extra in (("ignore", ignore), ("prompted", prompted)):
        if extra is not None:
            e = _as_bool(extra, name).to(t.device)
            if e.shape != t.shape:
                raise ValueError(f"{name} must have shape {tuple(t.shape)}, got {tuple(e.shape)}")
            free &= ~e
    fn, fp = t & ~p & free, ~t & p & free
    is_positive = bool(fn.sum() > fp.sum())
    region = (fn if is_positive else fp).cpu().numpy()
    click = torch.zeros_like(t)
    if not region.any():
        return is_positive, click
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(dist)), dist.shape)
    click[row, col] = True
    click = F.max_pool2d(click[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
    return is_positive, click


def simulate_clicks(
    predict_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    gt,
    *,
    max_clicks: int,
    initial_pos=None,
    ignore=None,
    stop_iou: float = STOP_IOU,
    click_iou: float = CLICK_IOU,
) -> torch.Tensor:
    """The official multi-round interactive evaluation loop for the instances of one image.

    Args:
        predict_fn: ``(pos_masks, neg_masks)`` [N, H, W] bool (N = 1 for a 2-D ``gt``) ->
            predicted masks [N, H, W] bool at the gt's size (official: sigmoid > 0.5 of the
            bicubic-resized logits); negatives accumulate the negative clicks.
        gt: [N, H, W] (or [H, W]) instance masks; an integer gt's -1 pixels are ignored.
        max_clicks: rounds (official ``STROKE_SAMPLER.EVAL.MAX_ITER``, 1 in FIND's configs).
        initial_pos: first positive prompt [N, H, W] (official: the eval sampler's random points);
            default: a first click at each instance's innermost pixel (``next_click`` on an empty
            prediction).
        ignore: optional [N, H, W] (or [H, W]) bool pixels left out of IoUs and clicks.
    Returns:
        IoU after each round, [N, max_clicks] float32 ([max_clicks] for a 2-D ``gt``). Once every
        instance has IoU > ``stop_iou`` (strict) the loop stops and later rounds repeat the last
        IoUs; an instance whose IoU >= ``click_iou`` gets no further click (official values).
    """
    if int(max_clicks) < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    single = isinstance(gt, (torch.Tensor, np.ndarray)) and gt.ndim == 2
    gt_t = torch.as_tensor(gt)[None] if single else torch.as_tensor(gt)
    if gt_t.dim() != 3:
        raise ValueError(f"gt must be [N, H, W] or [H, W], got {tuple(gt_t.shape)}")
    ign = gt_t == -1 if gt_t.dtype != torch.bool else torch.zeros_like(gt_t)
    if ignore is not None:
        extra = _as_bool(ignore, "ignore", dims=(2, 3)).to(gt_t.device)
        ign = ign | (extra[None] if extra.dim() == 2 else extra)
    target = (gt_t != 0) & ~ign
    neg = torch.zeros_like(target)
    if initial_pos is None:
        pos = torch.stack(
            [next_click(torch.zeros_like(t), t, ignore=i)[1] for t, i in zip(target, ign)]
        )
    else:
        pos = _as_bool(initial_pos, "initial_pos", dims=(2, 3)).to(gt_t.device).clone()
        pos = pos[None] if pos.dim() == 2 else pos
        if pos.shape != target.shape:
            raise ValueError(f"initial_pos must have shape {tuple(target.shape)}, got {pos.shape}")
    rounds = []
    for _ in range(int(max_clicks)):
        pred = _as_bool(predict_fn(pos.clone(), neg.clone()), "predict_fn output", dims=(3,))
        ious = interactive_iou(pred.to(target.device), target, ignore=ign)
        rounds.append(ious)
        if bool((ious > stop_iou).all()):
            break
        for k in range(target.shape[0]):
            if not bool(ious[k] >= click_iou):  # NaN IoU still gets a click
                positive, click = next_click(
                    pred[k], target[k], ignore=ign[k], prompted=pos[k] | neg[k]
                )
                (pos if positive else neg)[k] |= click
    rounds += [rounds[-1]] * (int(max_clicks) - len(rounds))
    out = torch.stack(rounds, dim=1)
    return out[0] if single else out
