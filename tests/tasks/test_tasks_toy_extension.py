"""A new task from this file alone: a new input kind, a prototype, a task, its loss; it trains.

The toy task "box grounding" prompts the interface with boxes: a new input kind turns each box
into one token (a fixed sine code of its corners, no parameters), one query per box reads its
token (indexed attention), its own proposals read the image, and the mask of a box is the mixture
of proposal masks weighted by the softmax of proposal-query pixel dots. Nothing in the package is
edited: registering the kind, the prototype and the task is all it takes.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from find_plugin.core.conventions import NO_ITEM
from find_plugin.core.interface import FINDInterface
from find_plugin.core.prototypes import (
    CrossRule,
    TaskPrototype,
    VariableSpec,
    register_prototype,
    unregister_prototype,
)
from find_plugin.core.variables import VariableRows, register_input_kind, unregister_input_kind
from find_plugin.tasks import FINDTask, prepare_batch, register_task, task_losses, unregister_task
from find_plugin.tasks.base import pad_item_index, record_size

C, Q, S = 32, 6, 16  # width, proposals, mask-feature side (stride 4 of a 64 x 64 image)
STEPS = 200


def box_tokens(interface, spec, inputs, ctx):
    """New input kind: ``boxes`` [B, n, 4] (y0, x0, y1, x1 in [0, 1]) and ``box_padding`` [B, n]
    -> one token per box: sines/cosines of the corners at C/8 frequencies."""
    boxes, pad = inputs["boxes"].to(ctx.device), inputs["box_padding"].to(ctx.device)
    freqs = 2.0 ** torch.arange(C // 8, device=ctx.device, dtype=boxes.dtype)
    angles = boxes[..., None] * freqs * math.pi  # [B, n, 4, C/8]
    content = torch.cat([angles.sin(), angles.cos()], -1).flatten(2)  # [B, n, C]
    index = torch.arange(boxes.shape[1], device=ctx.device).expand(boxes.shape[:2])
    index = index.masked_fill(pad, NO_ITEM)
    return VariableRows(content, content, padding=pad, index=index)


def toy_prototype():
    return TaskPrototype(
        "toy_box",
        (
            VariableSpec(
                "proposals_toy_box",
                "proposal",
                "copy:proposals_vision_object",
                "proposals",
                CrossRule(("image",), "prev_mask"),
                ("proposals_toy_box", "tokens_toy_box"),
                (("pred_toy_masks", "mask"), ("pred_toy_embs", "pixel")),
            ),
            VariableSpec(
                "queries_toy_box",
                "query",
                "copy:queries_vision_image",
                "per_item",
                CrossRule(("tokens_toy_box",), "indexed"),
                ("queries_toy_box",),
                (("pred_toy_query", "pixel"),),
            ),
            VariableSpec(
                "tokens_toy_box", "token", "box_tokens", "input", None, ("tokens_toy_box",)
            ),
        ),
        "toy: one mask per box prompt",
    )


class ToyBoxTask(FINDTask):
    name = "toy_box"
    prototypes = ("toy_box",)

    def sample(self, record, *, generator, encode_text, training):
        h, w = record_size(record)
        boxes = []
        for m in record["masks"]:
            ys, xs = m.nonzero(as_tuple=True)
            boxes.append([ys.min() / h, xs.min() / w, (ys.max() + 1) / h, (xs.max() + 1) / w])
        return {"boxes": torch.tensor(boxes), "masks": record["masks"]}

    def pack_inputs(self, samples, *, project, padded_size):
        n = max(len(s["boxes"]) for s in samples)
        boxes = torch.zeros(len(samples), n, 4)
        padding = torch.ones(len(samples), n, dtype=torch.bool)
        for b, s in enumerate(samples):
            boxes[b, : len(s["boxes"])] = s["boxes"]
            padding[b, : len(s["boxes"])] = False
        ids = [range(len(s["boxes"])) for s in samples]
        return {
            "toy_box": {"boxes": boxes, "box_padding": padding, "query_index": pad_item_index(ids)}
        }

    def box_masks(self, outputs, b, n):
        """[n, S, S] mask logits: softmax(proposal . query) mixture of the proposal masks."""
        weights = (outputs["pred_toy_embs"][b] @ outputs["pred_toy_query"][b, :n].t()).softmax(0)
        return torch.einsum("qn,qhw->nhw", weights, outputs["pred_toy_masks"][b])

    def losses(self, outputs, samples, **kwargs):
        terms = []
        for b, s in enumerate(samples):
            gt = F.adaptive_avg_pool2d(s["masks"].float()[None], S)[0]
            terms.append(
                F.binary_cross_entropy_with_logits(self.box_masks(outputs, b, len(gt)), gt)
            )
        return {"loss_toy_box": torch.stack(terms).mean()}


@pytest.fixture
def toy_registered():
    register_input_kind("box_tokens", box_tokens)
    register_prototype(toy_prototype())
    register_task(ToyBoxTask)
    yield
    unregister_task("toy_box")
    unregister_prototype("toy_box")
    unregister_input_kind("box_tokens")


def _records_and_features(g):
    records = []
    mask_features = torch.zeros(2, C, S, S)
    for b in range(2):
        masks = torch.zeros(2, 64, 64, dtype=torch.bool)
        masks[0, 4 + 8 * b : 28 + 8 * b, 4:30] = True
        masks[1, 36:60, 30 - 8 * b : 62 - 8 * b] = True
        records.append({"image_size": (64, 64), "masks": masks})
        small = F.adaptive_avg_pool2d(masks.float(), S)
        layout = torch.cat([small, (1 - small.sum(0, keepdim=True)).clamp(min=0)])
        code = F.normalize(torch.randn(3, C, generator=g), dim=-1)
        mask_features[b] = 3 * torch.einsum("nc,nhw->chw", code, layout)
    levels = [F.adaptive_avg_pool2d(mask_features, S // k) for k in (8, 4, 2)]
    return records, levels, mask_features


def _mean_iou(task, model, batch, levels, mask_features):
    with torch.no_grad():
        out = model(levels, mask_features, batch.inputs)
    ious = []
    for b, s in enumerate(batch.samples["toy_box"]):
        pred = task.box_masks(out, b, len(s["masks"])) > 0
        gt = F.adaptive_avg_pool2d(s["masks"].float()[None], S)[0] > 0.5
        ious += ((pred & gt).sum((1, 2)) / (pred | gt).sum((1, 2)).clamp(min=1)).tolist()
    return sum(ious) / len(ious)


def test_toy_task_registered_from_this_file_trains(toy_registered):
    g = torch.Generator().manual_seed(0)
    records, levels, mask_features = _records_and_features(g)
    torch.manual_seed(0)
    model = FINDInterface(
        hidden_dim=C,
        num_heads=4,
        dim_feedforward=64,
        num_layers=2,
        num_queries=Q,
        mask_dim=C,
        dim_proj=C,
        dim_text=C,
        num_memories=2,
        max_spatial_points=16,
    )
    task = ToyBoxTask()
    batch = prepare_batch(
        [task],
        records,
        generator=g,
        encode_text=None,
        project=model.project_tokens,
        padded_size=(64, 64),
        training=True,
    )
    assert set(batch.inputs) == {"toy_box"}
    before = _mean_iou(task, model, batch, levels, mask_features)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(STEPS):
        out = model(levels, mask_features, batch.inputs)
        loss = task_losses([task], out, batch)["loss_toy_box"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    after = _mean_iou(task, model, batch, levels, mask_features)
    assert history[-1] < 0.2 * history[0], history
    assert after > 0.9 and before < 0.5, (before, after)


def test_unregistered_toy_pieces_fail_clearly():
    with pytest.raises(ValueError, match="unknown input kind 'box_tokens'"):
        toy_prototype()
