"""CLIP-style text tower on a tiny random CLIPTextModel: last hidden state, EOT pooling."""

import pytest
import torch

from find_plugin.encoders.language import TextTokenEncoder

TEXTS = ["a cat on the couch", "two dogs", "a photo of a person with a red helmet"]


@pytest.fixture(scope="module")
def lang_clip_encoder(lang_tiny_clip_dir):
    with pytest.warns(RuntimeWarning, match="class_max_length=150 exceeds the model's 77"):
        return TextTokenEncoder(model_path=lang_tiny_clip_dir)


def test_clip_matches_direct_call_and_eot_pooling(lang_clip_encoder, lang_tiny_clip_dir):
    from transformers import AutoTokenizer, CLIPTextModel

    enc = lang_clip_encoder
    assert enc.kind == "clip" and enc.layer_tag == "last_hidden_state"
    assert enc.max_length == 77 and enc.class_max_length == 77
    out = enc(TEXTS)
    assert out.token_features.shape == (3, 77, 32)
    tok = AutoTokenizer.from_pretrained(lang_tiny_clip_dir, local_files_only=True)
    model = CLIPTextModel.from_pretrained(lang_tiny_clip_dir, local_files_only=True).eval()
    eos = tok.eos_token_id
    for i, text in enumerate(TEXTS):
        ids = tok([text], return_tensors="pt")
        with torch.no_grad():
            ref = model(**ids)
        n = ids["input_ids"].shape[1]
        assert int(out.token_valid[i].sum()) == n and out.input_ids[i, n - 1] == eos
        torch.testing.assert_close(
            out.token_features[i, :n], ref.last_hidden_state[0], atol=1e-5, rtol=1e-5
        )
        eot = ref.last_hidden_state[0, n - 1]
        torch.testing.assert_close(out.sentence_embedding[i], eot, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            out.sentence_embedding[i], ref.pooler_output[0], atol=1e-5, rtol=1e-5
        )
    # Class prompts are capped at the 77 positions of the tower.
    assert enc.encode_class_prompts(["a cat"]).token_features.shape == (1, 77, 32)
