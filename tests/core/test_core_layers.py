"""``MaskedAttention`` with ``more_keys`` and ``InterfaceLayer``'s content attention: image keys
and token keys kept apart give what one softmax over the concatenated keys gives."""

import torch

from find_plugin.core.layers import InterfaceLayer, MaskedAttention


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


def _groups(b=2, nq=7, n_img=30, n_tok=5, c=16):
    g = torch.Generator().manual_seed(0)
    query = torch.randn(b, nq, c, generator=g)
    img, tok = torch.randn(b, n_img, c, generator=g), torch.randn(b, n_tok, c, generator=g)
    reads_tokens = torch.tensor([False, True, False, True, True, False, False])
    img_allowed = torch.rand(b, nq, n_img, generator=g) < 0.6
    tok_allowed = torch.rand(b, nq, n_tok, generator=g) < 0.6
    img_allowed &= ~reads_tokens[None, :, None]
    tok_allowed &= reads_tokens[None, :, None]
    img_allowed[:, 6] = False  # a row with no key at all
    return query, img, tok, img_allowed, tok_allowed


def test_attention_over_key_groups_equals_one_softmax_over_all_keys():
    torch.manual_seed(0)
    attn = MaskedAttention(dim=16, num_heads=4)
    query, img, tok, img_allowed, tok_allowed = _groups()
    keys, allowed = torch.cat([img, tok], 1), torch.cat([img_allowed, tok_allowed], -1)
    grouped = attn(query, img, img + 1, allowed, more_keys=tok, more_values=tok + 1)
    expected = _reference(attn, query, keys, keys + 1, allowed)
    assert torch.allclose(grouped, expected, atol=1e-5)
    assert torch.allclose(attn(query, keys, keys + 1, allowed), expected, atol=1e-5)


def test_interface_layer_reads_tokens_without_concatenating_and_agrees_with_one_softmax():
    """The layer's grouped path (rows read one kind) and its concatenated path (a row reading
    both kinds) both equal the written-out attention over [image ; token] keys."""
    torch.manual_seed(0)
    layer = InterfaceLayer(dim=16, num_heads=4, dim_feedforward=32).eval()
    g = torch.Generator().manual_seed(1)
    content, pos = torch.randn(2, 9, 16, generator=g), torch.randn(2, 9, 16, generator=g)
    image, image_pos = torch.randn(2, 30, 16, generator=g), torch.randn(2, 30, 16, generator=g)
    cross_rows, key_rows = torch.tensor([0, 1, 2, 3, 4, 5, 6]), torch.tensor([7, 8])
    self_allowed = torch.ones(2, 9, 9, dtype=torch.bool)
    _, _, _, img_allowed, tok_allowed = _groups(n_tok=2)
    for allowed_img in (img_allowed, img_allowed | tok_allowed.any(-1, keepdim=True)):
        cross_allowed = torch.cat([allowed_img, tok_allowed], -1)
        out = layer(
            content,
            pos,
            image,
            image + image_pos,
            cross_rows=cross_rows,
            key_rows=key_rows,
            cross_allowed=cross_allowed,
            self_allowed=self_allowed,
        )
        q = content + pos
        keys = torch.cat([image + image_pos, q[:, key_rows]], 1)
        values = torch.cat([image, content[:, key_rows]], 1)
        attended = _reference(layer.cross_attn, q[:, cross_rows], keys, values, cross_allowed)
        c = content.index_copy(1, cross_rows, layer.cross_norm(content[:, cross_rows] + attended))
        q = c + pos
        expected = layer.ffn(
            layer.self_norm(c + _reference(layer.self_attn, q, q, c, self_allowed))
        )
        assert torch.allclose(out, expected, atol=1e-5)


def test_downsample_bilinear_equals_interpolate():
    """The strided 4-pixel mean used for the attention-mask features equals detectron2's /
    the official bilinear resize (align_corners=False) for every size, divisible or not."""
    from torch.nn import functional as F

    from find_plugin.core.feature_levels import downsample_bilinear

    x = torch.randn(2, 5, 48, 64, generator=torch.Generator().manual_seed(0))
    for size in ((24, 32), (12, 16), (6, 8), (12, 32), (48, 64), (17, 23), (16, 16)):
        expected = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        assert torch.allclose(downsample_bilinear(x, size), expected, atol=1e-6), size
