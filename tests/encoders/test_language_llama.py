"""LLaMA-family path on a tiny random LlamaForCausalLM: layer index, pad = eos, position ids."""

import pytest
import torch

from find_plugin.encoders.language import TextTokenEncoder

TEXTS = ["a cat on the couch", "two dogs", "a small red flag next to a man with a blue helmet"]


@pytest.fixture(scope="module")
def lang_llama_encoder(lang_tiny_llama_dir):
    return TextTokenEncoder(model_path=lang_tiny_llama_dir, feature_layer=-3, max_length=20)


@pytest.fixture(scope="module")
def lang_llama_reference(lang_tiny_llama_dir):
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(lang_tiny_llama_dir, local_files_only=True)
    model = LlamaForCausalLM.from_pretrained(lang_tiny_llama_dir, local_files_only=True).eval()
    return tok, model


def test_default_layer_is_minus_12_and_validated(lang_tiny_llama_dir):
    # 4 layers -> 5 hidden states: FIND's -12 does not exist here and must be refused clearly.
    with pytest.raises(ValueError, match=r"feature_layer.*\[-5, 4\].*4 layers.*-12"):
        TextTokenEncoder(model_path=lang_tiny_llama_dir)
    with pytest.raises(ValueError, match="feature_layer"):
        TextTokenEncoder(model_path=lang_tiny_llama_dir, feature_layer=5)


def test_kind_padding_and_layer(lang_llama_encoder):
    enc = lang_llama_encoder
    assert enc.kind == "decoder" and enc.layer_tag == "hidden_states[2]"
    out = enc(TEXTS)
    eos = enc.tokenizer.eos_token_id
    assert out.token_features.shape == (3, 20, 32)  # padding="max_length"
    assert enc.tokenizer.padding_side == "right" and enc.tokenizer.pad_token_id == eos
    for i in range(3):
        n = int(out.token_valid[i].sum())
        assert out.input_ids[i, 0] == enc.tokenizer.bos_token_id
        assert torch.all(out.input_ids[i, n:] == eos)
        assert out.token_valid[i, :n].all()
        assert n == len(TEXTS[i].split()) + 1


def _official_batch(tok, model, texts, max_length, layer):
    """The official recipe written out: pad to max_length with eos, positions cumsum-1."""
    tok.padding_side = "right"
    tok.pad_token = tok.eos_token
    enc = tok(
        texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
    )
    pos = enc["attention_mask"].long().cumsum(-1) - 1
    pos.masked_fill_(enc["attention_mask"] == 0, 1)
    with torch.no_grad():
        out = model(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            position_ids=pos,
            output_hidden_states=True,
            return_dict=True,
        )
    return enc, out.hidden_states[layer]


def test_matches_direct_transformers_call(lang_llama_encoder, lang_llama_reference):
    tok, model = lang_llama_reference
    out = lang_llama_encoder(TEXTS)
    enc, ref = _official_batch(tok, model, TEXTS, 20, -3)
    assert torch.equal(out.input_ids, enc["input_ids"])
    assert torch.equal(out.token_valid, enc["attention_mask"].bool())
    m = out.token_valid
    torch.testing.assert_close(out.token_features[m], ref[m], atol=1e-5, rtol=1e-5)
    mean = torch.stack([ref[i][m[i]].mean(0) for i in range(3)])
    torch.testing.assert_close(out.sentence_embedding, mean, atol=1e-5, rtol=1e-5)
    # Each text alone (no padding at all) gives the same valid-token features.
    for i, text in enumerate(TEXTS):
        with torch.no_grad():
            single = model(**tok([text], return_tensors="pt"), output_hidden_states=True)
        alone = single.hidden_states[-3][0]
        torch.testing.assert_close(
            out.token_features[i, : alone.shape[0]], alone, atol=1e-5, rtol=1e-5
        )
    # The layer matters: another index gives other features.
    assert not torch.allclose(ref[m], _official_batch(tok, model, TEXTS, 20, -2)[1][m], atol=1e-3)


def test_left_padded_reference_needs_position_ids(
    lang_tiny_llama_dir, lang_llama_reference, lang_llama_encoder
):
    """Position ids from the mask make features independent of the padding side."""
    tok, model = lang_llama_reference
    tok.padding_side = "left"
    tok.pad_token = tok.eos_token
    enc = tok(TEXTS, padding="longest", return_tensors="pt")
    tok.padding_side = "right"
    mask = enc["attention_mask"]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        hs = model(**enc, position_ids=pos, output_hidden_states=True).hidden_states[-3]
    out = lang_llama_encoder(TEXTS)
    for i in range(3):
        n = int(mask[i].sum())
        torch.testing.assert_close(hs[i, -n:], out.token_features[i, :n], atol=1e-5, rtol=1e-5)


def test_offsets_and_dtype(lang_tiny_llama_dir):
    enc = TextTokenEncoder(
        model_path=lang_tiny_llama_dir, feature_layer=-1, padding="longest", dtype="bfloat16"
    )
    assert enc.layer_tag == "hidden_states[4]"
    out = enc(TEXTS)
    assert (
        out.token_features.dtype == torch.bfloat16
        and out.sentence_embedding.dtype == torch.bfloat16
    )
    assert out.token_features.shape[1] == int(out.token_valid.sum(1).max())
    text = TEXTS[2]
    words = [text[s:e] for s, e in out.offsets[2].tolist()]
    assert words[0] == "" and words[1:] == text.split()


def test_cache_round_trip_and_keys(lang_tiny_llama_dir, lang_llama_encoder, tmp_path):
    cached = TextTokenEncoder(
        model_path=lang_tiny_llama_dir, feature_layer=-3, max_length=20, cache_dir=str(tmp_path)
    )
    assert cached.model_identity == lang_llama_encoder.model_identity
    first = cached(TEXTS)
    second, hits, _ = cached._encode(TEXTS, None)
    assert hits == 3
    assert torch.equal(first.token_features, second.token_features)
    torch.testing.assert_close(second.token_features, lang_llama_encoder(TEXTS).token_features)
    # Another layer or budget uses other keys.
    other = TextTokenEncoder(
        model_path=lang_tiny_llama_dir, feature_layer=-2, max_length=20, cache_dir=str(tmp_path)
    )
    assert other._encode(TEXTS, None)[1:] == (0, 3)
    assert cached._encode(TEXTS, 30)[1:] == (0, 3)
    assert cached.cache_key(TEXTS[0]) != other.cache_key(TEXTS[0])


def test_cache_entry_with_other_tokenisation_is_recomputed(lang_tiny_llama_dir, tmp_path):
    enc = TextTokenEncoder(
        model_path=lang_tiny_llama_dir, feature_layer=-3, max_length=20, cache_dir=str(tmp_path)
    )
    ref = enc(TEXTS[:1])
    n = int(ref.token_valid[0].sum())
    key = enc.cache_key(TEXTS[0])
    # A valid entry whose token count disagrees with the tokenizer (e.g. tokenizer edited in place).
    enc.cache.put(key, torch.zeros(n - 1, 32), torch.zeros(n - 1, 2, dtype=torch.long))
    with pytest.warns(RuntimeWarning, match="does not match the current tokenisation"):
        out, hits, misses = enc._encode(TEXTS[:1], None)
    assert (hits, misses) == (0, 1)
    torch.testing.assert_close(out.token_features, ref.token_features)
    assert enc.cache.get(key).features.shape == (n, 32)
