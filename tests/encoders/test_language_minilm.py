"""MiniLM (BERT encoder) adapter: shapes, offsets, sentence similarity, cache, frozen state."""

import warnings

import pytest
import torch

from find_plugin.encoders.language import TextTokenEncoder

TEXTS = ["a cat on a couch", "a kitten on a sofa", "an astronaut", "two dogs, next to a red table."]


def _cos(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


def test_shapes_mask_and_kind(lang_minilm_encoder):
    enc = lang_minilm_encoder
    assert enc.kind == "encoder" and enc.layer_tag == "last_hidden_state"
    out = enc(TEXTS)
    lengths = out.token_valid.sum(1)
    b, l, d = out.token_features.shape
    assert (b, d) == (4, 384) and l == int(lengths.max())  # padding="longest"
    assert out.token_valid.dtype == torch.bool and out.token_valid.shape == (4, l)
    assert out.offsets.shape == (4, l, 2) and out.offsets.dtype == torch.int64
    assert out.sentence_embedding.shape == (4, 384)
    assert len(set(lengths.tolist())) > 1
    # Right padding: valid tokens first; padded features are zero.
    for i, n in enumerate(lengths.tolist()):
        assert out.token_valid[i, :n].all() and not out.token_valid[i, n:].any()
        assert torch.all(out.token_features[i, n:] == 0)
        assert out.token_features[i, :n].abs().sum(-1).gt(0).all()


def test_offsets_map_to_substrings(lang_minilm_encoder):
    out = lang_minilm_encoder(TEXTS)
    tok = lang_minilm_encoder.tokenizer
    for i, text in enumerate(TEXTS):
        n = int(out.token_valid[i].sum())
        pieces = [text[s:e] for s, e in out.offsets[i, :n].tolist() if e > s]
        assert "".join(pieces).replace(" ", "") == text.replace(" ", "")
        for j in range(n):
            s, e = out.offsets[i, j].tolist()
            token = tok.convert_ids_to_tokens(int(out.input_ids[i, j]))
            if e > s:  # lower-cased wordpieces; '##' marks a continuation
                assert text[s:e].lower() == token.replace("##", "")
            else:
                assert token in ("[CLS]", "[SEP]")
    # "couch" is one token whose span is exactly the word.
    n0 = int(out.token_valid[0].sum())
    spans = [tuple(x) for x in out.offsets[0, :n0].tolist()]
    assert (TEXTS[0].index("couch"), len(TEXTS[0])) in spans


def test_matches_direct_transformers_and_sentence_similarity(lang_minilm_encoder, lang_minilm_path):
    from transformers import AutoModel, AutoTokenizer

    out = lang_minilm_encoder(TEXTS)
    tok = AutoTokenizer.from_pretrained(lang_minilm_path, local_files_only=True)
    model = AutoModel.from_pretrained(lang_minilm_path, local_files_only=True).eval()
    with torch.no_grad():
        for i, text in enumerate(TEXTS):
            ref = model(**tok([text], return_tensors="pt")).last_hidden_state[0]
            n = int(out.token_valid[i].sum())
            assert n == ref.shape[0]
            torch.testing.assert_close(out.token_features[i, :n], ref, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(out.sentence_embedding[i], ref.mean(0), atol=1e-4, rtol=1e-4)
    e = out.sentence_embedding
    assert _cos(e[0], e[1]) > _cos(e[0], e[2]) + 0.3
    assert _cos(e[0], e[1]) > 0.6


def test_max_length_truncates(lang_minilm_encoder):
    long_text = " ".join(["cat"] * 200)
    out = lang_minilm_encoder([long_text, "a cat"], max_length=77)
    assert out.token_features.shape[1] == 77 and int(out.token_valid[0].sum()) == 77
    out = lang_minilm_encoder.encode_class_prompts([long_text])
    assert out.token_features.shape[1] == 150


def test_frozen_and_state_dict(lang_minilm_encoder):
    enc = lang_minilm_encoder
    assert all(not p.requires_grad for p in enc.parameters())
    enc.train()
    assert enc.training and not enc.model.training
    enc.eval()
    out = enc(["a cat"])
    assert not out.token_features.requires_grad
    assert enc.state_dict() == {} or all(not k.startswith("model.") for k in enc.state_dict())
    parent = torch.nn.Module()
    parent.lang_encoder = enc
    parent.lang_proj = torch.nn.Parameter(torch.zeros(384, 8))
    assert list(parent.state_dict()) == ["lang_proj"]
    result = parent.load_state_dict({"lang_proj": torch.ones(384, 8)}, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []


def test_cache_is_transparent(lang_minilm_path, lang_minilm_encoder, tmp_path):
    cached = TextTokenEncoder(
        model_path=lang_minilm_path, padding="longest", cache_dir=str(tmp_path)
    )
    first, hits, misses = cached._encode(TEXTS, None)
    assert (hits, misses) == (0, 4)
    again, hits, misses = cached._encode(TEXTS + ["a dog"], None)
    assert (hits, misses) == (4, 1)
    plain = lang_minilm_encoder(TEXTS + ["a dog"])
    for name in ("token_features", "token_valid", "offsets", "input_ids"):
        torch.testing.assert_close(getattr(again, name)[:4], getattr(first, name), atol=0, rtol=0)
    torch.testing.assert_close(again.token_features, plain.token_features, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        again.sentence_embedding, plain.sentence_embedding, atol=1e-5, rtol=1e-5
    )
    # Corrupt one entry: it is detected, recomputed and rewritten.
    path = cached.cache.path_for(cached.cache_key(TEXTS[1]))
    with open(path, "r+b") as f:
        f.seek(-5, 2)
        f.write(b"\x00\x01\x02\x03\x04")
    with pytest.warns(RuntimeWarning, match="invalid"):
        fixed, hits, misses = cached._encode(TEXTS, None)
    assert (hits, misses) == (3, 1)
    # Recomputed alone (shorter padding): equal up to float rounding.
    torch.testing.assert_close(fixed.token_features, first.token_features, atol=1e-5, rtol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cached._encode(TEXTS, None)[1:] == (4, 0)


def test_bad_texts(lang_minilm_encoder):
    with pytest.raises(TypeError, match="single str"):
        lang_minilm_encoder("a cat")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        lang_minilm_encoder(["a cat", 3])
    with pytest.raises(ValueError, match="at least one"):
        lang_minilm_encoder([])
