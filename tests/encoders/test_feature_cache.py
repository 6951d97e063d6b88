"""FeatureCache / FINDVisionModel.enable_backbone_cache: cached rows equal a full pass, only
missing images are computed, the LRU bound holds, trainable backbones bypass it (CPU, <1 s)."""

import pytest
import torch
from torch import nn

from find_plugin.encoders.vision.feature_cache import FeatureCache
from find_plugin.encoders.vision.vision_model import FINDVisionModel


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.calls = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        y = self.conv(x)
        return {"res2": y, "res3": y[:, :, ::2, ::2] * 2}


class _Decoder(nn.Module):
    def forward_features(self, f):
        return f["res2"], f["res3"], [f["res3"]]


def test_cached_rows_equal_a_full_pass_and_only_misses_run():
    torch.manual_seed(0)
    module, cache = _Backbone().eval(), FeatureCache(8)
    a = torch.randn(3, 3, 8, 8)
    full = module(a)
    first = cache(module, a[:2])  # rows 0, 1 computed
    second = cache(module, a)  # rows 0, 1 cached, row 2 computed
    assert module.calls == [3, 2, 1]
    assert (cache.hits, cache.misses, len(cache)) == (2, 3, 3)
    for name in full:
        torch.testing.assert_close(second[name], full[name], rtol=0, atol=1e-6)
        torch.testing.assert_close(first[name], full[name][:2], rtol=0, atol=1e-6)
    b = a.clone()
    b[0, 0, 0, 0] += 1e-3  # one changed pixel is another image
    cache(module, b[:1])
    assert cache.misses == 4


def test_lru_bound_and_bad_arguments():
    module, cache = _Backbone().eval(), FeatureCache(2)
    imgs = torch.randn(3, 3, 4, 4)
    cache(module, imgs[:1])
    cache(module, imgs[1:3])  # image 0 is evicted
    assert len(cache) == 2
    cache(module, imgs[:1])
    assert cache.misses == 4
    with pytest.raises(ValueError, match="max_items"):
        FeatureCache(0)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        cache(module, imgs[0])


def test_vision_model_uses_the_cache_only_while_the_backbone_is_frozen():
    torch.manual_seed(0)
    model = FINDVisionModel(backbone=_Backbone(), pixel_decoder=_Decoder()).enable_backbone_cache(4)
    imgs = torch.randn(2, 3, 8, 8)
    ref = model.backbone(imgs)["res2"]
    model.backbone.calls.clear()
    for _ in range(3):
        out = model.extract_features(imgs)
    assert model.backbone.calls == [2]  # computed once, then looked up
    torch.testing.assert_close(out["mask_features"], ref, rtol=0, atol=1e-6)
    model.set_trainable(backbone=True, pixel_decoder=False)
    model.extract_features(imgs)
    assert model.backbone.calls == [2, 2]  # trainable: never cached
