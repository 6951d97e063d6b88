"""``InterfaceLayer`` attends over the blocks of its masks (``attention_mask.LayerRows``): it
equals the written-out layer over all keys with the full masks on every row it keeps, and
leaves the other rows alone; the row groups of a real layout cover every allowed pair."""

import pytest
import torch

from find_plugin.core import attention_mask as am
from find_plugin.core.layers import (
    InterfaceLayer,
    KeyValueBuffers,
    MaskedAttention,
    add_sine_position_encoding,
    sine_position_encoding,
)
from find_plugin.core.prototypes import merge_prototypes


def _reference(attn: MaskedAttention, query, key, value, allowed):
    """Plain multi-head attention written out (softmax over allowed keys, rows without a key
    output the projection's bias), independent of ``MaskedAttention.attend``."""
    b, nq, c = query.shape
    h = attn.num_heads
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)

    def heads(x, w, bias):
        return (x @ w.T + bias).view(b, x.shape[1], h, c // h).transpose(1, 2)

    q, k, v = heads(query, w_q, b_q), heads(key, w_k, b_k), heads(value, w_v, b_v)
    logits = (q @ k.transpose(-1, -2)) / (c // h) ** 0.5
    logits = logits.masked_fill(~allowed[:, None], float("-inf"))
    weights = torch.nan_to_num(logits.softmax(-1))  # a row without keys -> zeros
    out = (weights @ v).transpose(1, 2).reshape(b, nq, c)
    return attn.out_proj(out)


def _group(rows, cols, allowed_full):
    r, c = torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)
    return am.RowGroup(r, c, allowed_full[:, r][:, :, c])


def _scene(b=2, n=12, hw=30, c=16):
    """A sequence of 12 rows: rows 0-4 read the image (row 4 through an empty mask made full),
    rows 5-6 read tokens 8-10, row 7 reads tokens 11 (padded away: no key), rows 8-11 are tokens.
    Condition attention: rows 0-4 read 0-4 and 8-9, rows 5-7 read 5-7, tokens read 8-11."""
    g = torch.Generator().manual_seed(1)
    content, pos = torch.randn(b, n, c, generator=g), torch.randn(b, n, c, generator=g)
    image, image_pos = torch.randn(b, hw, c, generator=g), torch.randn(b, hw, c, generator=g)
    img_allowed = torch.rand(b, 5, hw, generator=g) < 0.6
    img_allowed[:, 4] = True
    cross = torch.zeros(b, n, n, dtype=torch.bool)
    cross[:, 5:7, 8:11] = torch.rand(b, 2, 3, generator=g) < 0.7
    self_full = torch.zeros(b, n, n, dtype=torch.bool)
    self_full[:, 0:5, 0:5] = True
    self_full[:, 0:5, 8:10] = torch.rand(b, 5, 2, generator=g) < 0.7
    self_full[:, 5:8, 5:8] = True
    self_full[:, 8:12, 8:12] = True
    self_full[1, :, 11] = False  # a padded token in image 1
    token_groups = [_group([5, 6], [8, 9, 10], cross), _group([7], [11], cross)]
    self_groups = [
        _group([0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 8, 9], self_full),
        _group([5, 6, 7], [5, 6, 7], self_full),
        _group([8, 9, 10, 11], [8, 9, 10, 11], self_full),
    ]
    return content, pos, image, image_pos, img_allowed, cross, self_full, token_groups, self_groups


def _dense_layer(layer, content, pos, image, image_pos, img_allowed, cross, self_full):
    """The layer written out over [image ; all rows] and all rows, with the full masks."""
    b, n, _ = content.shape
    q = content + pos
    rows = torch.arange(8)  # rows with a content-attention rule
    allowed = torch.cat(
        [
            torch.cat([img_allowed, torch.zeros(b, 3, img_allowed.shape[-1], dtype=torch.bool)], 1),
            cross[:, :8],
        ],
        -1,
    )
    keys, values = torch.cat([image + image_pos, q], 1), torch.cat([image, content], 1)
    attended = _reference(layer.cross_attn, q[:, rows], keys, values, allowed)
    c = content.index_copy(1, rows, layer.cross_norm(content[:, rows] + attended))
    q = c + pos
    return layer.ffn(layer.self_norm(c + _reference(layer.self_attn, q, q, c, self_full)))


def test_interface_layer_over_blocks_equals_the_dense_layer_on_the_rows_it_keeps():
    torch.manual_seed(0)
    layer = InterfaceLayer(dim=16, num_heads=4, dim_feedforward=32).eval()
    with torch.no_grad():
        for p in layer.parameters():  # non-zero biases: rows without keys output the bias
            p.add_(0.1 * torch.randn_like(p))
    content, pos, image, image_pos, img_allowed, cross, self_full, tg, sg = _scene()
    expected = _dense_layer(layer, content, pos, image, image_pos, img_allowed, cross, self_full)
    image_rows = torch.arange(5)
    every = am.layer_rows(12, image_rows=image_rows, token_groups=tg, self_groups=sg, keep=None)
    assert every.self_rows is None and every.self_keys is None
    out = layer(content, pos, image, image + image_pos, rows=every, image_allowed=img_allowed)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)

    # Keep rows 0-4 only (as after the last layer): tokens 8-9 are still read as condition keys,
    # row 7 and tokens 10-11 are not; the kept rows are unchanged, the others keep their content.
    keep = torch.zeros(12, dtype=torch.bool)
    keep[:5] = True
    some = am.layer_rows(12, image_rows=image_rows, token_groups=tg, self_groups=sg, keep=keep)
    assert some.self_keys.tolist() == [0, 1, 2, 3, 4, 8, 9]
    assert some.cross_rows.tolist() == [0, 1, 2, 3, 4]
    out = layer(content, pos, image, image + image_pos, rows=some, image_allowed=img_allowed)
    torch.testing.assert_close(out[:, :5], expected[:, :5], atol=1e-5, rtol=1e-5)
    assert torch.equal(out[:, 5:], content[:, 5:])


def test_layers_sharing_key_value_buffers_equal_layers_without_them():
    """Two layers write their image keys/values into the same storage (no autograd): the second
    layer's output is that of layers with their own keys/values; the storage is reused for the
    same or a smaller size and grows for a larger one; with autograd it is unused."""
    torch.manual_seed(0)
    layers = [InterfaceLayer(dim=16, num_heads=4, dim_feedforward=32).eval() for _ in range(2)]
    content, pos, image, image_pos, img_allowed, cross, self_full, tg, sg = _scene()
    rows = am.layer_rows(12, image_rows=torch.arange(5), token_groups=tg, self_groups=sg, keep=None)
    kw = dict(rows=rows, image_allowed=img_allowed)

    def two_layers(buffers):
        x = content
        for layer in layers:
            x = layer(x, pos, image, image + image_pos, image_kv=buffers, **kw)
        return x

    with torch.no_grad():
        expected = two_layers(None)
        buffers = KeyValueBuffers()
        torch.testing.assert_close(two_layers(buffers), expected, atol=1e-6, rtol=1e-6)
        k, v = buffers.take(image)
        assert v.data_ptr() - k.data_ptr() == image.numel() * image.element_size()
        small = buffers.take(image[:, :7])  # a smaller level: the front of the same storage
        assert small[0].shape == (2, 7, 16) and small[0].data_ptr() == k.data_ptr()
        assert buffers.take(torch.cat([image, image], 1))[0].shape == (2, 60, 16)
    grad_out = layers[0](content, pos, image, image + image_pos, image_kv=KeyValueBuffers(), **kw)
    assert grad_out.requires_grad
    # autocast picks the products' dtype: the float32 storage is not used (bf16 on CPU here; the
    # projected level offset comes out bf16)
    offset = torch.randn(16)
    ref = layers[0](content, pos, image, image + image_pos, image_offset=offset, **kw).detach()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = layers[0](
            content,
            pos,
            image,
            image + image_pos,
            image_offset=offset,
            image_kv=KeyValueBuffers(),
            **kw,
        )
    torch.testing.assert_close(low.float(), ref, atol=0.1, rtol=0.05)


def test_interface_layer_runs_the_content_attention_its_condition_keys_need():
    """A kept row reading a token row as a condition key needs that token's content attention:
    the token's group is kept although the token itself is not."""
    torch.manual_seed(0)
    layer = InterfaceLayer(dim=16, num_heads=4, dim_feedforward=32).eval()
    content, pos, image, image_pos, img_allowed, cross, self_full, tg, sg = _scene()
    self_full[:, 0:5, 5] = True  # rows 0-4 now also read row 5 (which reads tokens)
    sg = [_group([0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5, 8, 9], self_full)] + sg[1:]
    expected = _dense_layer(layer, content, pos, image, image_pos, img_allowed, cross, self_full)
    keep = torch.zeros(12, dtype=torch.bool)
    keep[:5] = True
    rows = am.layer_rows(12, image_rows=torch.arange(5), token_groups=tg, self_groups=sg, keep=keep)
    assert rows.cross_rows.tolist() == [0, 1, 2, 3, 4, 5]
    out = layer(content, pos, image, image + image_pos, rows=rows, image_allowed=img_allowed)
    torch.testing.assert_close(out[:, :5], expected[:, :5], atol=1e-5, rtol=1e-5)


def test_row_groups_cover_every_allowed_pair_of_a_real_layout(monkeypatch):
    """Every row of a rule is in exactly one group, and the groups' blocks hold every allowed
    pair of the full masks (so attending over the blocks misses no key), whether small groups
    are merged (default) or not."""
    specs = merge_prototypes(["grounding", "spatial", "retrieval", "interleave", "class"])
    slices, start = {}, 0
    for k, s in enumerate(specs):
        slices[s.name] = (start, start + 2 + k % 3)
        start = slices[s.name][1]
    g = torch.Generator().manual_seed(0)
    padding = torch.rand(2, start, generator=g) < 0.1
    index = torch.randint(-1, 2, (2, start), generator=g)
    layout = am.SequenceLayout(specs, slices, padding, index, {s.name: True for s in specs})
    cases = [
        (slack, keys, full)
        for slack in (0, am.MERGE_SLACK)
        for keys, full in (
            (am.self_attention_keys(layout), am.self_attention_allowed(layout)),
            (am.token_attention_keys(layout), am.token_cross_allowed(layout)),
        )
    ]
    for slack, keys, full in cases:
        monkeypatch.setattr(am, "MERGE_SLACK", slack)
        groups = am.row_groups(layout, keys, full)
        rows = torch.cat([gr.rows for gr in groups])
        expected = torch.cat([layout.rows(name) for name in keys]).sort().values
        assert torch.equal(rows.sort().values, expected)
        covered = torch.zeros_like(full)
        for gr in groups:
            covered[:, gr.rows[:, None], gr.cols[None, :]] = gr.allowed
        assert torch.equal(covered, full), "a group misses an allowed pair"
    monkeypatch.setattr(am, "MERGE_SLACK", 0)
    keys, full = am.self_attention_keys(layout), am.self_attention_allowed(layout)
    assert len(am.row_groups(layout, keys, full)) > 5


def test_downsample_bilinear_equals_interpolate(monkeypatch):
    """The strided 4-pixel mean used for the attention-mask features equals detectron2's /
    the official bilinear resize (align_corners=False) for every size, divisible or not."""
    from torch.nn import functional as F

    from find_plugin.core import feature_levels
    from find_plugin.core.feature_levels import downsample_bilinear

    x = torch.randn(2, 5, 48, 64, generator=torch.Generator().manual_seed(0))
    for size in ((24, 32), (12, 16), (6, 8), (12, 32), (48, 64), (17, 23), (16, 16)):
        expected = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        assert torch.allclose(downsample_bilinear(x, size), expected, atol=1e-6), size
    # by groups of channels (2 + 2 + 1 here), and with autograd (a trainable pixel decoder)
    monkeypatch.setattr(feature_levels, "DOWNSAMPLE_CHANNELS", 2)
    expected = F.interpolate(x, size=(12, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(downsample_bilinear(x, (12, 16)), expected, atol=1e-6)
    x.requires_grad_(True)
    downsample_bilinear(x, (12, 16)).sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("grad", [False, True])
def test_add_sine_position_encoding_is_the_sum_with_the_encoding(grad):
    """Half the channels get the per-row encoding, half the per-column one; the same values as
    adding the full [C, h, w] encoding, with or without autograd (then gradients reach x)."""
    x = torch.randn(2, 16, 5, 7).requires_grad_(grad)
    expect = x.detach() + sine_position_encoding(x, num_pos_feats=8)
    with torch.set_grad_enabled(grad):
        got = add_sine_position_encoding(x)
    torch.testing.assert_close(got.detach(), expect, rtol=0, atol=0)
    assert got.is_contiguous()
    if grad:
        got.sum().backward()
        torch.testing.assert_close(x.grad, torch.ones_like(x))
