"""Fixtures of the task-layer tests: a word-level text encoder and small real-format records."""

import re
import zlib

import pytest
import torch

DIM_TEXT = 32
IMG = (48, 64)  # image size of the records (h, w)
PADDED = (64, 64)  # batch padded size (multiple of 32)
CLASSES = ["person", "dog-other", "sky-stuff"]


def word_encoder(texts, kind):
    """Deterministic stand-in for a frozen language model: one token per word (plus a BOS with
    empty span), each word's features seeded by its text, offsets from the character positions."""
    from find_plugin.tasks import TokenFeatures

    out = []
    for text in texts:
        spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        feats = [torch.zeros(DIM_TEXT)]
        for s, e in spans:
            g = torch.Generator().manual_seed(zlib.crc32(text[s:e].lower().encode()))
            feats.append(torch.randn(DIM_TEXT, generator=g))
        offsets = torch.tensor([(0, 0)] + spans, dtype=torch.long).reshape(-1, 2)
        out.append(TokenFeatures(features=torch.stack(feats), offsets=offsets, text=text))
    return out


def box(y0, y1, x0, x1, size=IMG):
    m = torch.zeros(size, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def make_record(variant=0):
    """One image: a person, a dog and the sky (stuff), two referring sentences (one naming two
    masks), captions and an entity sentence with two phrases."""
    shift = 4 * variant
    person = box(10, 40, 4 + shift, 20 + shift)
    dog = box(30, 46, 30, 58)
    sky = box(0, 8, 0, 64)
    sentence = "a person stands next to a dog under the sky"
    p0 = sentence.index("a person")
    p1 = sentence.index("a dog")
    return {
        "image_size": IMG,
        "labels": torch.tensor([0, 1, 2]),
        "masks": torch.stack([person, dog, sky]),
        "captions": ["a person with a dog", "a dog and its owner outside"],
        "groundings": [
            {"text": "the person on the left", "masks": person[None]},
            {"text": "the animals", "masks": torch.stack([person, dog])},
        ],
        "entities": [
            {
                "sentence": sentence,
                "phrases": [
                    {"start": p1, "end": p1 + 5, "mask": dog},
                    {"start": p0, "end": p0 + 8, "mask": person},
                ],
            }
        ],
    }


@pytest.fixture
def records():
    return [make_record(0), make_record(1)]
