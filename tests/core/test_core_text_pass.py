"""Text-only passes on zero features: the official sizes by default, the interface's own
``zero_feature_size`` when set, batching gives the rows of one-text passes (CPU, <1 s)."""

import pytest
import torch

from find_plugin.core.text_pass import (
    ZERO_FEATURE_SIZES,
    ZERO_MASK_FEATURE_SIZE,
    zero_feature_pass,
    zero_feature_sizes,
)

from .conftest import TINY, make_tiny_model


def _captions(n=3, t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "tokens": torch.randn(n, t, TINY["dim_proj"], generator=g),
        "token_padding": torch.zeros(n, t, dtype=torch.bool),
    }


def test_sizes_official_default_and_bad_values():
    assert zero_feature_sizes() == (ZERO_FEATURE_SIZES, ZERO_MASK_FEATURE_SIZE)
    assert zero_feature_sizes(192) == (((6, 6), (12, 12), (24, 24)), (48, 48))
    for bad in (0, 100):
        with pytest.raises(ValueError, match="multiple of 32"):
            zero_feature_sizes(bad)


def test_the_interface_size_is_used_and_batching_keeps_rows():
    model = make_tiny_model().eval()
    caps = _captions()
    official = zero_feature_pass(model, "retrieval", caps, "pred_retrievals_lang")
    one = zero_feature_pass(
        model, "retrieval", {k: v[1:2] for k, v in caps.items()}, "pred_retrievals_lang"
    )
    torch.testing.assert_close(one[0], official[1], rtol=1e-5, atol=1e-6)
    seen = []
    hook = model.register_forward_pre_hook(
        lambda mod, args: seen.append([tuple(f.shape[-2:]) for f in args[0]] + [args[1].shape[-2:]])
    )
    model.zero_feature_size = 64
    small = zero_feature_pass(model, "retrieval", caps, "pred_retrievals_lang")
    hook.remove()
    assert seen == [[(2, 2), (4, 4), (8, 8), (16, 16)]]
    # zero maps give every position the same value (attention only reweights equal values), so
    # the size changes the cost, not the embedding: why a small model may use a small size
    torch.testing.assert_close(small, official, rtol=1e-4, atol=1e-5)
