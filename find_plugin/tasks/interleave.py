"""Interleave segmentation and interleave retrieval (FIND-Bench; spec §1.3, §2.2, §5).

An interleaved sentence mixes text phrases and *visual* phrases: a visual phrase is replaced in
the sentence by the literal ``[INTERACTIVE]`` and carries a visual prompt (a shape drawn in its
mask). Each phrase is an *entity*: the legend tokens get their entity id from the tokenizer
offsets (``token_entity``, NO_ITEM outside every entity), one entity query per entity reads its
tokens, and tokens of a visual entity also read the sampled points of its prompt.

* :class:`InterleaveTask` (segmentation, prototype ``interleave``): training picks one entity
  sentence of the image, at most ``max_phrases`` phrases sorted by position, each visual with
  probability ``visual_prob``; evaluation takes the image's first sentence with all its phrases.
  The mask of an entity is the entity proposal with the largest mixed logit (pixel dot for visual
  entities, semantic dot for text ones; ``interleave_pick``). The ``interleave_itc`` loss also
  trains the sentence-image contrast used by interleave retrieval.
  Interleave retrieval is its own task (:mod:`.interleave_retrieval`).
"""

import re
from typing import Dict, List, Sequence, Tuple

import torch

from ..core.conventions import NO_ITEM
from ..core.entity_map import token_entity_map
from ..core.postprocess import interleave_pick, resize_mask_logits
from .base import (
    FINDTask,
    pad_item_index,
    pad_masks,
    pad_token_batch,
    randint,
    record_size,
    register_task,
    stack_masks,
)
from .metrics import GroundingMetric
from .prompts import TRAIN_PROMPT_KINDS, sample_prompt_kind, simulate_prompt

__all__ = ["InterleaveTask", "interleave_sentence", "parse_interleave_prompt", "ITEM_VARIABLE"]

ITEM_VARIABLE = "queries_interleave_entity"
VISUAL_SLOT = "[INTERACTIVE]"
NO_SENTENCE = "N/A"  # official dummy entity text of an image without entity sentences


def interleave_sentence(
    sentence: str, phrases: Sequence[dict], visual: Sequence[bool]
) -> Tuple[str, List[Tuple[int, int]]]:
    """Replace every visual phrase by ``[INTERACTIVE]`` and recompute the character spans.

    ``phrases`` have ``start``/``end`` offsets into ``sentence``, sorted and non-overlapping.
    Returns (new sentence, per-phrase (start, end) in it)."""
    out, spans, cursor = [], [], 0
    for k, (p, vis) in enumerate(zip(phrases, visual)):
        start, end = int(p["start"]), int(p["end"])
        if not (cursor <= start <= end <= len(sentence)):
            raise ValueError(
                f"phrase {k} span ({start}, {end}) of {sentence!r} overlaps the previous phrase "
                "or leaves the sentence (phrases must be sorted and disjoint)"
            )
        out.append(sentence[cursor:start])
        begin = sum(len(x) for x in out)
        out.append(VISUAL_SLOT if vis else sentence[start:end])
        spans.append((begin, begin + len(out[-1])))
        cursor = end
    out.append(sentence[cursor:])
    return "".join(out), spans


# "[k]": visual reference k (1-based); "<text>": a text entity
_PROMPT_MARK = re.compile(r"\[(\d+)\]|<([^<>]*)>")


def parse_interleave_prompt(text: str) -> Tuple[str, List[dict]]:
    """A typed interleaved sentence -> (sentence, phrases) for a record's ``entities``.

    ``[k]`` marks a visual phrase whose prompt is reference k (1-based; it stays in the sentence
    and becomes ``[INTERACTIVE]`` in :func:`interleave_sentence`); ``<words>`` marks a text entity
    (the brackets are removed). Other words are context, not entities. Returns the sentence and
    one ``{"start", "end", "visual", "reference" (0-based index or None), "text"}`` per marked
    phrase, in order. ``"a [1] next to <the grass>"`` -> ``"a [1] next to the grass"`` with a
    visual phrase (reference 0) and a text phrase ``"the grass"``."""
    if not text or not text.strip():
        raise ValueError("interleave prompt is empty")
    out, phrases, cursor = [], [], 0
    for m in _PROMPT_MARK.finditer(text):
        out.append(text[cursor : m.start()])
        begin = sum(len(x) for x in out)
        if m.group(1) is not None:
            k = int(m.group(1))
            if k < 1:
                raise ValueError(
                    f"interleave prompt {text!r}: references count from [1], got [{k}]"
                )
            piece, visual, ref = m.group(0), True, k - 1
        else:
            piece, visual, ref = m.group(2), False, None
            if not piece.strip():
                raise ValueError(f"interleave prompt {text!r}: empty text entity '<>'")
        out.append(piece)
        phrases.append(
            {
                "start": begin,
                "end": begin + len(piece),
                "visual": visual,
                "reference": ref,
                "text": piece,
            }
        )
        cursor = m.end()
    out.append(text[cursor:])
    sentence = "".join(out)
    if any(c in piece for piece in out for c in "<>"):  # brackets left outside every match
        raise ValueError(f"interleave prompt {text!r}: unmatched '<' or '>'")
    if not phrases:
        raise ValueError(
            f"interleave prompt {text!r} marks no entity: use [1] for a visual reference and "
            "<words> for a text entity"
        )
    return sentence, phrases


@register_task
class InterleaveTask(FINDTask):
    """Args:
    max_phrases: phrases kept per training sentence (official 6).
    visual_prob: probability that a phrase becomes visual (official VISUAL_PROB 0.5).
    kinds: shapes of the visual prompts drawn inside the phrase's mask.
    """

    name = "interleave"
    prototypes = ("interleave",)
    loss_groups = ("interleaves",)
    metric = GroundingMetric

    def __init__(
        self,
        *,
        max_phrases: int = 6,
        visual_prob: float = 0.5,
        kinds: Sequence[str] = TRAIN_PROMPT_KINDS,
    ):
        self.max_phrases = int(max_phrases)
        self.visual_prob = float(visual_prob)
        self.kinds = tuple(kinds)

    def sample(self, record, *, generator, encode_text, training) -> dict:
        size = record_size(record)
        sentences = list(record.get("entities", []))
        if not sentences:
            feats = encode_text([NO_SENTENCE], "sentence")[0]
            return self._sample(size, feats, [], [], [], [])
        pick = randint(0, len(sentences) - 1, generator) if training else 0
        entry = sentences[pick]
        phrases = list(entry.get("phrases", []))
        if training and len(phrases) > self.max_phrases:
            keep = torch.randperm(len(phrases), generator=generator)[: self.max_phrases]
            phrases = [phrases[i] for i in keep.tolist()]
        phrases.sort(key=lambda p: int(p["start"]))
        visual = []
        for p in phrases:
            draw = bool(torch.rand((), generator=generator) < self.visual_prob)
            visual.append(bool(p.get("visual", draw)) if not training else draw)
        text, spans = interleave_sentence(entry["sentence"], phrases, visual)
        feats = encode_text([text], "sentence")[0]
        if feats.offsets is None:
            raise ValueError("interleave: encode_text must return token offsets")
        masks = stack_masks([torch.as_tensor(p["mask"]).bool() for p in phrases], size)
        prompts = []
        for p, vis, m in zip(phrases, visual, masks):
            if not vis:
                prompts.append(torch.zeros_like(m))
            elif p.get("prompt") is not None and not training:
                prompts.append(torch.as_tensor(p["prompt"]).bool())
            else:
                kind = sample_prompt_kind(generator, self.kinds)
                prompts.append(simulate_prompt(m, kind, generator=generator))
        return self._sample(size, feats, spans, visual, masks, prompts)

    @staticmethod
    def _sample(size, feats, spans, visual, masks, prompts) -> dict:
        offsets = feats.offsets if feats.offsets is not None else torch.zeros(0, 2)
        entity = token_entity_map(offsets.tolist(), spans) if spans else None
        if entity is None:
            entity = torch.full((feats.features.shape[0],), NO_ITEM, dtype=torch.long)
        return {
            "image_size": size,
            "tokens": feats,
            "token_entity": entity,
            "is_visual": torch.as_tensor(visual, dtype=torch.bool).reshape(-1),
            "masks": stack_masks(list(masks), size),
            "prompts": stack_masks(list(prompts), size),
        }

    def pack_inputs(self, samples, *, project, padded_size) -> Dict[str, dict]:
        rows = [s["tokens"].features for s in samples]
        inputs = pad_token_batch(rows, project=project, index=[s["token_entity"] for s in samples])
        inputs["token_entity"] = inputs.pop("token_index")
        n = max([len(s["is_visual"]) for s in samples] + [0])
        visual = torch.zeros(len(samples), n, dtype=torch.bool)
        for b, s in enumerate(samples):
            visual[b, : len(s["is_visual"])] = s["is_visual"]
        inputs["entity_is_visual"] = visual
        inputs["query_index"] = pad_item_index([range(len(s["is_visual"])) for s in samples])
        inputs["pos_masks"] = [pad_masks(s["prompts"], padded_size) for s in samples]
        inputs["neg_masks"] = [torch.zeros_like(m) for m in inputs["pos_masks"]]
        return {"interleave": inputs}

    def build_targets(self, samples, *, project, padded_size) -> List[dict]:
        return [
            {
                "interleave_masks": pad_masks(s["masks"], padded_size),
                "interleave_is_visual": s["is_visual"],
            }
            for s in samples
        ]

    def pick(self, outputs, b: int, sample: dict) -> torch.Tensor:
        """Mask logits [E, H/4, W/4] of the best entity proposal per entity of image ``b``."""
        real = ~outputs["item_padding"][ITEM_VARIABLE][b]
        idx, _ = interleave_pick(
            outputs["pred_imaskembs"][b],
            outputs["pred_entity_pixel"][b, real],
            outputs["pred_interleave_objects"][b],
            outputs["pred_entity_class"][b, real],
            sample["is_visual"].to(outputs["pred_imaskembs"].device),
        )
        return outputs["pred_imasks"][b, idx]

    def predict(
        self, outputs, b: int, sample: dict, *, padded_size, image_size, output_size, official=False
    ):
        """Picked mask logits of image ``b`` at ``output_size`` [E, H, W]; ``official`` resizes as
        the official evaluation does (padded border stretched into the image), else aligned."""
        return resize_mask_logits(
            self.pick(outputs, b, sample),
            padded_size=padded_size,
            image_size=image_size,
            output_size=output_size,
            task="interleave_official" if official else "interleave",
        )
