"""Task-layer pieces of the demo: typed interleave prompts and given interactive prompts."""

import pytest
import torch

from find_plugin.tasks import InteractiveTask
from find_plugin.tasks.interleave import interleave_sentence, parse_interleave_prompt


def test_parse_interleave_prompt_spans():
    sentence, phrases = parse_interleave_prompt("a [1] next to <the grass> and [2]")
    assert sentence == "a [1] next to the grass and [2]"
    assert [(p["start"], p["end"]) for p in phrases] == [(2, 5), (14, 23), (28, 31)]
    assert [sentence[p["start"] : p["end"]] for p in phrases] == ["[1]", "the grass", "[2]"]
    assert [p["visual"] for p in phrases] == [True, False, True]
    assert [p["reference"] for p in phrases] == [0, None, 1]
    text, spans = interleave_sentence(sentence, phrases, [p["visual"] for p in phrases])
    assert text == "a [INTERACTIVE] next to the grass and [INTERACTIVE]"
    assert [text[a:b] for a, b in spans] == ["[INTERACTIVE]", "the grass", "[INTERACTIVE]"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty"),
        ("a dog on grass", "marks no entity"),
        ("a <dog", "unmatched"),
        ("a dog> [1]", "unmatched"),
        ("a <> [1]", "empty text entity"),
        ("a [0]", r"count from \[1\]"),
    ],
)
def test_parse_interleave_prompt_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_interleave_prompt(text)


def _record(size=(8, 10)):
    pos = torch.zeros(size, dtype=torch.bool)
    pos[2:4, 3:5] = True
    neg = torch.zeros(size, dtype=torch.bool)
    neg[6, 8] = True
    masks = torch.zeros(1, *size, dtype=torch.bool)
    masks[0, 1:6, 1:6] = True
    return {"image_size": size, "masks": masks, "prompts": [{"pos": pos, "neg": neg}]}, pos, neg


def test_interactive_uses_given_prompts_in_evaluation():
    record, pos, neg = _record()
    g = torch.Generator().manual_seed(0)
    s = InteractiveTask().sample(record, generator=g, encode_text=None, training=False)
    assert torch.equal(s["pos"], pos[None]) and torch.equal(s["neg"], neg[None])
    assert not s["masks"].any()  # no ground truth with given prompts
    # training ignores them: prompts are simulated inside the record's masks
    s = InteractiveTask().sample(record, generator=g, encode_text=None, training=True)
    assert not torch.equal(s["pos"], pos[None]) and (s["pos"] <= record["masks"]).all()


def test_interactive_given_prompt_errors():
    record, pos, _ = _record()
    g = torch.Generator().manual_seed(0)
    bad = dict(record, prompts=[{"pos": pos[:4]}])
    with pytest.raises(ValueError, match=r"prompt 0 has masks of size \(4, 10\)"):
        InteractiveTask().sample(bad, generator=g, encode_text=None, training=False)
    empty = dict(record, prompts=[{"pos": torch.zeros_like(pos)}])
    with pytest.raises(ValueError, match="prompt 0 has no positive pixel"):
        InteractiveTask().sample(empty, generator=g, encode_text=None, training=False)
