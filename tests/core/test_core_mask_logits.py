"""Factored mask logits (embeddings x mask features) read as the full-resolution masks would be.

Training leaves the interface's masks factored; the matchers read the mask features at their
points and the losses make the matched rows only. These tests compare that path with the dense
one (full-resolution masks, then the same point reads) on random inputs: the same costs,
matchings, losses and gradients, within float rounding.
"""

import importlib.util
import pathlib

import pytest
import torch

from find_plugin.core.criterion import FINDCriterion
from find_plugin.core.mask_logits import DenseMasks, FactoredMasks, LayerOutputs, RowBatch
from find_plugin.core.matcher import HungarianMatcher
from find_plugin.core.point_losses import grid_points, point_sample, point_sample_vectors

_spec = importlib.util.spec_from_file_location(
    "_core_loss_utils", pathlib.Path(__file__).with_name("_loss_utils.py")
)
U = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(U)

B, Q, C, H, W = 2, 6, 8, 8, 12
TOL = dict(rtol=1e-5, atol=1e-5)


def _factored(seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    embed = torch.randn(B, Q, C, generator=g).requires_grad_(requires_grad)
    features = torch.randn(B, C, H, W, generator=g).requires_grad_(requires_grad)
    return embed, features


def _coords(n=300, seed=1):
    """Random points plus points on the borders and corners (where the padding matters)."""
    g = torch.Generator().manual_seed(seed)
    edges = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.99], [0.999, 0.3], [0.02, 0.97]])
    return torch.cat([torch.rand(n, 2, generator=g), edges])


def _seeded(seed=3):
    g = torch.Generator().manual_seed(seed)
    return lambda shape, **kw: torch.rand(shape, generator=g, **kw)


def test_factored_reads_equal_the_full_masks():
    embed, features = _factored()
    full = torch.einsum("bqc,bchw->bqhw", embed, features)
    channels_last = features.contiguous(memory_format=torch.channels_last)
    coords = _coords()
    for b in range(B):
        # at the pixel centres a point read is the pixel itself: no sampler in the reference
        centres = FactoredMasks(embed, features).sample(b, grid_points(H, W))
        torch.testing.assert_close(centres, full[b].flatten(1), **TOL)
        want = point_sample(full[b : b + 1], coords[None])[0]  # dense: read the masks
        for masks in (
            FactoredMasks(embed, features),
            FactoredMasks(embed, features, channels_last),
        ):
            torch.testing.assert_close(masks.sample(b, coords), want, **TOL)
            rows = torch.tensor([4, 1])
            torch.testing.assert_close(masks.rows(b, rows), full[b, rows], **TOL)
    torch.testing.assert_close(FactoredMasks(embed, features).materialize(), full, **TOL)


def test_point_sample_vectors_reads_as_point_sample():
    """Channel vectors read at points (borders, corners, pixel centres) equal grid_sample's."""
    _, features = _factored(seed=4)
    coords = torch.cat([_coords(), grid_points(H, W)])
    for maps in (features[1], features.contiguous(memory_format=torch.channels_last)[1]):
        got = point_sample_vectors(maps, coords)
        torch.testing.assert_close(got.t(), point_sample(features[1:2], coords[None])[0], **TOL)
    # at the pixel centres: the pixels themselves (row-major), no sampler in the reference
    centres = point_sample_vectors(features[0], grid_points(H, W))
    torch.testing.assert_close(centres, features[0].flatten(1).t(), **TOL)
    with pytest.raises(ValueError, match="maps"):
        point_sample_vectors(features, coords)


def test_matcher_costs_and_matching_equal_on_factored_masks():
    embed, features = _factored(seed=5)
    full = torch.einsum("bqc,bchw->bqhw", embed, features)
    g = torch.Generator().manual_seed(6)
    tgt = [(torch.rand(n, 2 * H, 2 * W, generator=g) > 0.5).float() for n in (3, 2)]
    matcher = HungarianMatcher(num_points=50)
    dense = matcher.mask_costs(full, tgt, _seeded())
    factored = matcher.mask_costs(FactoredMasks(embed, features), tgt, _seeded())
    for d, f in zip(dense, factored):
        torch.testing.assert_close(f, d, **TOL)
    logits = torch.randn(B, Q, 4, generator=g)
    targets = [{"labels": torch.arange(len(t)), "masks": t} for t in tgt]
    got = matcher.match_default(logits, FactoredMasks(embed, features), targets, _seeded())
    ref = matcher.match_default(logits, DenseMasks(full), targets, _seeded())
    assert [[i.tolist() for i in m] for m in got] == [[i.tolist() for i in m] for m in ref]


def _criterion_outputs(factored: bool):
    """make_outputs layers whose four mask outputs come from shared leaves (embeddings per layer
    and output, one mask-feature map): factored, or the dense einsum of the same leaves."""
    outputs = U.make_outputs(B=B, Q=Q, h=H, w=W, n_aux=1)
    g = torch.Generator().manual_seed(11)
    features = torch.randn(B, C, H, W, generator=g).requires_grad_(True)
    leaves = [features]
    for layer in [outputs] + outputs["aux_outputs"]:
        for name in U.MASK_OUTPUTS:
            embed = torch.randn(B, Q, C, generator=g).requires_grad_(True)
            leaves.append(embed)
            masks = FactoredMasks(embed, features)
            layer[name] = masks if factored else masks.materialize()
    return outputs, leaves


def test_criterion_losses_and_gradients_equal_on_factored_masks():
    targets = U.make_targets(B=B, H=2 * H, W=2 * W)
    results = []
    for factored in (False, True):
        outputs, leaves = _criterion_outputs(factored)
        U.add_item_padding(outputs, targets)
        crit = FINDCriterion(num_classes=3, num_points=40)
        losses = crit(outputs, targets, logit_scale=torch.tensor(2.0), rand_fn=_seeded())
        grads = torch.autograd.grad(sum(losses.values()), leaves, allow_unused=True)
        results.append((losses, grads))
    (dense, dense_grads), (fact, fact_grads) = results
    assert set(fact) == set(dense)
    for key in dense:
        torch.testing.assert_close(fact[key], dense[key], **TOL, msg=key)
    for i, (d, f) in enumerate(zip(dense_grads, fact_grads)):
        assert d is not None and f is not None, i
        torch.testing.assert_close(f, d, **TOL, msg=f"leaf {i}")


def _grounding_targets(tiny, bsz, n_phrases=2):
    g = torch.Generator().manual_seed(2)
    hh, ww = tiny.img_size

    def boxes(n):
        m = torch.zeros(n, hh, ww)
        for k in range(n):
            y, x = int(torch.randint(0, hh // 2, (1,), generator=g)), 8 * k
            m[k, y : y + hh // 3, x : x + ww // 3] = 1
        return m

    return [
        {"labels": torch.tensor([0, 2]), "masks": boxes(2), "grounding_masks": boxes(n_phrases)}
        for _ in range(bsz)
    ]


def test_interface_training_outputs_feed_the_criterion_without_full_masks(tiny, monkeypatch):
    """The interface's training outputs are LayerOutputs: the criterion reads their masks
    factored (no full-resolution masks are made) and gets the losses of their dense reads."""
    model = tiny.model().train()
    feats, mf, tasks = tiny.inputs(bsz=2)
    tasks = tiny.project(model, {"grounding": tasks["grounding"]})
    bank = torch.randn(5, tiny.config["dim_proj"])
    out = model(feats, mf, tasks, class_bank=bank, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, LayerOutputs)
    targets = _grounding_targets(tiny, 2)
    crit = FINDCriterion(num_classes=4, losses=("labels", "masks", "groundings"), num_points=30)

    def no_full_masks(self):
        raise AssertionError("the criterion made full-resolution masks")

    with monkeypatch.context() as m:
        m.setattr(FactoredMasks, "materialize", no_full_masks)
        fact = crit(out, targets, logit_scale=model.logit_scale, rand_fn=_seeded())
    # the dense reads: plain dicts of the masks made by reading the LayerOutputs
    dense_out = {k: out[k] for k in out if k != "aux_outputs"}
    dense_out["aux_outputs"] = [{k: a[k] for k in a} for a in out["aux_outputs"]]
    assert torch.is_tensor(dense_out["pred_masks"]) and dense_out["pred_masks"].dim() == 4
    dense = crit(dense_out, targets, logit_scale=model.logit_scale, rand_fn=_seeded())
    assert set(fact) == set(dense) and len(dense) == 3 * 6  # 6 losses x (final + 2 aux)
    for key in dense:
        torch.testing.assert_close(fact[key], dense[key], **TOL, msg=key)


def test_layer_outputs_mapping():
    embed, features = _factored()
    out = LayerOutputs(
        {"a": torch.zeros(1), "m1": None, "b": torch.ones(1)},
        FactoredMasks(embed, features),
        {"m1": (0, 2), "m2": (2, Q)},
    )
    assert list(out) == ["a", "m1", "b", "m2"]  # a mask output keeps its place
    assert "m2" in out and "zz" not in out
    full = torch.einsum("bqc,bchw->bqhw", embed, features)
    torch.testing.assert_close(out["m2"], full[:, 2:])
    assert out["m1"].shape == (B, 2, H, W)
    assert isinstance(out.mask_logits("m1"), FactoredMasks)
    out["m1"] = torch.zeros(B, 2, H, W)  # a replaced output is read as it was given
    assert isinstance(out.mask_logits("m1"), DenseMasks)
    with pytest.raises(KeyError):
        out.mask_logits("zz")
    with pytest.raises(ValueError, match="embed"):
        FactoredMasks(embed, features[:, :3])


def test_row_batch_makes_each_request_as_written_out():
    """Requests of several layers over shared features (and one over other features) are made
    together and split back: each equals its own rows, image by image, written out."""
    g = torch.Generator().manual_seed(5)
    features = torch.randn(B, C, H, W, generator=g)
    other = torch.randn(B, C, H, W, generator=g)
    layers = [torch.randn(B, Q, C, generator=g) for _ in range(3)]
    requests = [
        (FactoredMasks(layers[0], features), [(0, torch.tensor([4, 1])), (1, torch.tensor([0]))]),
        (FactoredMasks(layers[1], features), [(0, torch.tensor([], dtype=torch.long))]),
        (
            FactoredMasks(layers[2], features),
            [(1, torch.tensor([5, 2, 2])), (0, torch.tensor([3]))],
        ),
        (FactoredMasks(layers[0], other), [(1, torch.tensor([1]))]),
    ]
    batch = RowBatch()
    handles = [batch.request(pred, picks) for pred, picks in requests]
    for handle, (pred, picks) in zip(handles, requests):
        expect = [
            (pred.embed[b, i] @ pred.features[b].reshape(C, H * W)).reshape(-1, H, W)
            for b, i in picks
        ]
        torch.testing.assert_close(batch.get(handle), torch.cat(expect), **TOL)
    with pytest.raises(RuntimeError, match="already made"):
        batch.request(*requests[0])
