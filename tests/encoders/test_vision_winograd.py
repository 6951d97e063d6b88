"""Winograd F(2x2, 3x3) convolutions equal ``F.conv2d`` (padding 1) up to float rounding, and
:func:`conv3x3` falls back to it where Winograd does not apply."""

import pytest
import torch
import torch.nn.functional as F

from find_plugin.encoders.vision import winograd
from find_plugin.encoders.vision.winograd import conv3x3, winograd_conv3x3


@pytest.mark.parametrize("shape", [(1, 8, 6, 10), (2, 5, 4, 4), (1, 3, 2, 2), (2, 16, 40, 22)])
def test_winograd_equals_direct_convolution(shape, monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    weight, bias = torch.randn(7, shape[1], 3, 3, generator=g), torch.randn(7, generator=g)
    expected = F.conv2d(x, weight, bias, padding=1)
    for band in (1, 3, winograd.BAND_TILES):  # one row of tiles per band, a few, all at once
        monkeypatch.setattr(winograd, "BAND_TILES", band * (shape[-1] // 2))
        got = winograd_conv3x3(x, weight, bias)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(
        winograd_conv3x3(x, weight), F.conv2d(x, weight, padding=1), atol=1e-4, rtol=1e-5
    )


def test_winograd_rejects_odd_sizes_and_conv3x3_falls_back(monkeypatch):
    x, weight = torch.randn(1, 4, 5, 6), torch.randn(3, 4, 3, 3)
    with pytest.raises(ValueError, match="even H, W"):
        winograd_conv3x3(x, weight)
    calls = []
    real = winograd.winograd_conv3x3
    monkeypatch.setattr(winograd, "winograd_conv3x3", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 3)
    expected = F.conv2d(x, weight, padding=1)
    torch.testing.assert_close(conv3x3(x, weight), expected)  # odd height: direct
    assert calls == []
    even = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(
        conv3x3(even, weight), F.conv2d(even, weight, padding=1), atol=1e-5, rtol=1e-5
    )
    assert calls == [1]
    w_grad = weight.clone().requires_grad_(True)  # autograd wanted: direct
    conv3x3(even, w_grad).sum().backward()
    assert calls == [1] and w_grad.grad is not None
