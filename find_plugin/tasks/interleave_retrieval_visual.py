"""Interleave retrieval with visual references (FIND-Bench; spec §5.4, official
``evaluate_retrieval_interleave`` + ``InterleaveEvaluator``).

The query of an image is its first entity sentence in which every phrase that has a cross-image
``reference`` becomes visual with probability ``visual_prob`` (drawn from the per-image
generator, one draw per phrase, in phrase order). A visual phrase is replaced by
``[INTERACTIVE]`` and prompted by the FULL reference mask on the reference image (another image
of the split, chosen by ``tools/build_interleave_references.py``).

Embeddings (all computed by the model; the data side only reads the reference image and mask):

* visual entity k (:func:`reference_entities`): the reference image goes through the vision
  model; one interleave pass on it whose legend holds only entity k's tokens and whose prompt is
  the reference mask; the entity embedding is the semantic output (``pred_interleave_objects``)
  of the entity proposal whose pixel embedding best matches the entity query's
  (``pred_imaskembs`` . ``pred_entity_pixel``). The prompt tokens sampled on the reference image
  are kept for the legend below;
* text entity k: the description query (``pred_grounding_query``) of its tokens, run on zero
  image features;
* query embedding: the legend query (``pred_interleave_image``) of the whole interleaved
  sentence, whose visual tokens are those sampled on the reference images (the legend never
  reads the image it runs on: a zero-feature pass gives the official value);
* gallery side, per image: ``pred_retrievals`` (image embedding) and ``pred_captions`` of the
  object proposals.

Scores and recalls: :mod:`.interleave_metrics`. Evaluation only (trained by ``interleave``).

Record (see :mod:`.base`): ``entities[0]["phrases"][k]`` may hold ``reference``: ``{"image":
uint8 [3, h, w] (model input format, resized like the query image), "mask": [h, w] bool,
"image_id": int}``.
"""

from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from ..core.conventions import NO_ITEM
from ..core.entity_map import token_entity_map
from ..core.sampler import sample_prompts
from ..core.text_pass import zero_feature_pass
from .base import (
    FINDTask,
    TokenFeatures,
    encode_texts_on_zero_features,
    pad_masks,
    pad_token_batch,
    record_size,
    register_task,
)
from .interleave import NO_SENTENCE, interleave_sentence
from .interleave_metrics import InterleaveRetrievalMetric

__all__ = ["InterleaveVisualRetrievalTask", "reference_entities"]

#: ``extract(image uint8 [3, h, w]) -> (features [3 x [1, C, h_l, w_l]], mask_features
#: [1, mask_dim, H/4, W/4], padded_size (H, W))``: the adapter's vision model on one image.
ExtractFn = Callable[[torch.Tensor], Tuple[List[torch.Tensor], torch.Tensor, Tuple[int, int]]]


@torch.no_grad()
def reference_entities(
    interface: nn.Module,
    features: Sequence[torch.Tensor],
    mask_features: torch.Tensor,
    masks: torch.Tensor,
    entity_tokens: torch.Tensor,
    *,
    generator: torch.Generator = None,
) -> Tuple[torch.Tensor, List[List[Dict[str, torch.Tensor]]]]:
    """Visual-entity embeddings of ``n`` prompts on ONE image (batched: one row per prompt, so
    the prompts do not see each other).

    Args:
        features / mask_features: the image's vision outputs (batch 1).
        masks: [n, H, W] bool prompt masks at the padded input size (``4 * mask_features``).
        entity_tokens: [T, D_text] frozen features of the visual entity's tokens.
        generator: draws the prompt points (``max_spatial_points`` cap).

    Returns ``(embeddings [n, dim_proj], prompt_tokens)``: per prompt, per level ``{"tokens"
    [P, C], "index" [P] (zeros)}``, the tokens the sampler took on this image."""
    n = masks.shape[0]
    if n == 0:
        return mask_features.new_zeros(0, interface.hidden_dim), []
    if entity_tokens.dim() != 2 or entity_tokens.shape[0] == 0:
        raise ValueError(f"entity_tokens must be [T > 0, D_text], got {tuple(entity_tokens.shape)}")
    feats = [f.expand(n, -1, -1, -1) for f in features]
    mf = mask_features.expand(n, -1, -1, -1)
    was_training = interface.training
    interface.eval()
    try:
        levels = interface.feature_levels(feats, mf)
        points = sample_prompts(
            [m[None].cpu() for m in masks.bool()],
            None,
            num_levels=interface.num_levels,
            max_points=interface.sampler.max_points,
            generator=generator,
        )
        sampled = interface.sampler(levels.maps, points)
        t = entity_tokens.shape[0]
        dev = mask_features.device
        tokens = interface.project_tokens(entity_tokens.to(dev))[None].expand(n, -1, -1)
        inputs = {
            "tokens": tokens,
            "token_padding": torch.zeros(n, t, dtype=torch.bool, device=dev),
            "token_entity": torch.zeros(n, t, dtype=torch.long, device=dev),
            "entity_is_visual": torch.ones(n, 1, dtype=torch.bool, device=dev),
            "query_index": torch.zeros(n, 1, dtype=torch.long, device=dev),
            "points": points,
        }
        out = interface(feats, mf, {"interleave": inputs})
    finally:
        interface.train(was_training)
    logits = (out["pred_imaskembs"] @ out["pred_entity_pixel"][:, 0, :, None])[..., 0]  # [n, Q]
    pick = logits.argmax(1)
    embeddings = out["pred_interleave_objects"][torch.arange(n, device=dev), pick]
    prompts = []
    for b in range(n):
        per_level = []
        for s in sampled:
            real = ~s["padding"][b]
            tok = s["tokens"][b][real]
            per_level.append({"tokens": tok, "index": torch.zeros(len(tok), dtype=torch.long)})
        prompts.append(per_level)
    return embeddings, prompts


@register_task
class InterleaveVisualRetrievalTask(FINDTask):
    """Args: ``visual_prob``: probability that a phrase with a reference becomes visual
    (official 0.5)."""

    name = "interleave_retrieval_visual"
    prototypes = ("interleave_retrieval", "interleave", "grounding")
    loss_groups = ()
    metric = InterleaveRetrievalMetric

    def __init__(self, *, visual_prob: float = 0.5):
        self.visual_prob = float(visual_prob)

    def sample(self, record, *, generator, encode_text, training) -> dict:
        if training:
            raise ValueError(
                f"{self.name} is an evaluation task (it is trained through 'interleave')"
            )
        size = record_size(record)
        sentences = list(record.get("entities", []))
        entry = sentences[0] if sentences else {"sentence": NO_SENTENCE, "phrases": []}
        phrases = sorted(entry.get("phrases", []), key=lambda p: int(p["start"]))
        visual = []
        for p in phrases:  # one draw per phrase, whether or not it has a reference
            draw = bool(torch.rand((), generator=generator) < self.visual_prob)
            visual.append(draw and p.get("reference") is not None)
        text, spans = interleave_sentence(entry["sentence"], phrases, visual)
        feats = encode_text([text], "sentence")[0]
        if feats.offsets is None:
            raise ValueError(f"{self.name}: encode_text must return token offsets")
        entity = token_entity_map(feats.offsets.tolist(), spans) if spans else None
        if entity is None:
            entity = torch.full((feats.features.shape[0],), NO_ITEM, dtype=torch.long)
        refs = []
        for k, (p, vis) in enumerate(zip(phrases, visual)):
            if not vis:
                refs.append(None)
                continue
            ref = p["reference"]
            for key in ("image", "mask", "image_id"):
                if key not in ref:
                    raise KeyError(f"{self.name}: phrase {k} reference has no {key!r}")
            refs.append(
                {
                    "image": torch.as_tensor(ref["image"]),
                    "mask": torch.as_tensor(ref["mask"]).bool(),
                    "image_id": int(ref["image_id"]),
                }
            )
        return {
            "image_size": size,
            "tokens": feats,
            "token_entity": entity,
            "is_visual": torch.as_tensor(visual, dtype=torch.bool).reshape(-1),
            "references": refs,
            # seed of the prompt points drawn on the reference images (model side)
            "point_seed": int(torch.randint(0, 2**62, (), generator=generator)),
        }

    def pack_inputs(self, samples, *, project, padded_size) -> Dict[str, dict]:
        return {}  # every pass of this task is its own (query_embeddings)

    @torch.no_grad()
    def query_embeddings(self, interface: nn.Module, sample: dict, *, extract: ExtractFn) -> dict:
        """``{"query": [D] legend embedding, "entities": [E', D], "entity_references": [E']
        long (reference image id of a visual entity, -1 for text)}``; entities without any
        token (cut by the token budget) are left out."""
        feats: TokenFeatures = sample["tokens"]
        entity = sample["token_entity"]
        generator = torch.Generator().manual_seed(sample["point_seed"])
        num_levels = interface.num_levels
        embeds, ref_ids, texts, text_slots = [], [], [], []
        prompt_levels = [[] for _ in range(num_levels)]
        for k, ref in enumerate(sample["references"]):
            tokens = feats.features[entity == k]
            if tokens.shape[0] == 0:
                continue
            if ref is None:
                text_slots.append(len(embeds))
                embeds.append(None)
                ref_ids.append(NO_ITEM)
                texts.append(TokenFeatures(features=tokens, text=f"entity {k}"))
                continue
            image_feats, mask_feats, padded = extract(ref["image"])
            mask = pad_masks(ref["mask"][None], padded)
            emb, prompts = reference_entities(
                interface, image_feats, mask_feats, mask, tokens, generator=generator
            )
            embeds.append(emb[0])
            ref_ids.append(ref["image_id"])
            for lvl, p in enumerate(prompts[0]):
                prompt_levels[lvl].append({"tokens": p["tokens"], "index": p["index"] + k})
        if texts:
            rows = _text_entities(interface, texts)
            for slot, row in zip(text_slots, rows):
                embeds[slot] = row
        dim = interface.hidden_dim
        query = self._legend(interface, sample, prompt_levels)
        return {
            "query": query,
            "entities": torch.stack(embeds) if embeds else query.new_zeros(0, dim),
            "entity_references": torch.tensor(ref_ids, dtype=torch.long),
        }

    @staticmethod
    def _legend(interface, sample, prompt_levels) -> torch.Tensor:
        feats, entity = sample["tokens"], sample["token_entity"]
        dev = interface.lang_proj.device
        prompt = [
            {
                "tokens": (
                    torch.cat([p["tokens"] for p in lv]).to(dev)
                    if lv
                    else torch.zeros(0, interface.hidden_dim, device=dev)
                ),
                "index": (
                    torch.cat([p["index"] for p in lv]).to(dev)
                    if lv
                    else torch.zeros(0, dtype=torch.long, device=dev)
                ),
            }
            for lv in prompt_levels
        ]
        inputs = pad_token_batch([feats.features.to(dev)], project=interface.project_tokens)
        inputs["token_entity"] = entity[None].to(dev)
        inputs["entity_is_visual"] = sample["is_visual"][None].to(dev)
        inputs["prompt_tokens"] = [prompt]
        return zero_feature_pass(
            interface, "interleave_retrieval", inputs, "pred_interleave_image"
        )[0]


def _text_entities(interface, texts: Sequence[TokenFeatures]) -> torch.Tensor:
    """[N, D] description-query embeddings of text entities (tokens in sentence context), on
    zero image features, one query per entity."""
    n = len(texts)
    length = max(t.features.shape[0] for t in texts)
    return encode_texts_on_zero_features(
        interface,
        "grounding",
        [TokenFeatures(features=t.features.to(interface.lang_proj.device)) for t in texts],
        "pred_grounding_query",
        token_index=torch.zeros(n, length, dtype=torch.long),
        query_index=torch.zeros(n, 1, dtype=torch.long),
    )
