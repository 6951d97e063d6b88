"""Interleave retrieval with visual references: scores and recalls (official
``datasets/evaluation/interleave_evaluation.py``, ``InterleaveEvaluator``; spec §5.4).

Every embedding is L2-normalised (no epsilon). For a query q (an image's interleaved sentence:
legend embedding ``L_q``, entity embeddings ``E_qe`` with their reference image ids ``r_qe``,
-1 for text entities) and a gallery image j (image embedding ``I_j``, object-proposal
embeddings ``O_jo``, o over the proposals)::

    score(q, j) = cos(L_q, I_j) - 1e-6 * [some r_qe == id_j]
                  + 0.5 * mean_e max_o cos(E_qe, O_jo)

in float32, summed in that order (official). The 1e-6 term is a tie-breaker against the images
the query borrowed its visual prompts from. A query without entities gets an entity term of 0
(the official mean divides by zero and gives NaN).

Recalls (percentages, ``round(100 * x, 3)``):

* ``ir{1,5,10}``: a query is a hit if its own image is among its k best-scoring gallery images;
  mean over queries (the official ``interleave2ir{1,5,10}``);
* ``tr{1,5,10}``: an image is a hit if one of its own queries is among the k best-scoring
  queries for it; mean over gallery images (not reported by the official evaluator).

Ties are broken towards the lower gallery (resp. query) position (a stable sort); the official
``torch.topk`` orders exact ties arbitrarily. Needs at least 10 images and 10 queries.
"""

from typing import Dict, Iterable, Optional

import torch

from .metrics import RETRIEVAL_KS, _Metric, _normalise

__all__ = [
    "InterleaveRetrievalMetric",
    "check_interleave_outputs",
    "interleave_retrieval_scores",
    "ENTITY_WEIGHT",
]

ENTITY_WEIGHT = 0.5
REFERENCE_PENALTY = 1e-6


def check_interleave_outputs(
    image: torch.Tensor, query: torch.Tensor, entities: torch.Tensor, where: str
) -> None:
    """One image's outputs for visual interleave retrieval: image embedding [D], legend query
    [D], entity embeddings [E, D]; else a ValueError naming ``where`` (the image)."""
    d = image.shape[-1]
    if query.shape != (d,) or entities.dim() != 2 or (entities.shape[0] and entities.shape[1] != d):
        raise ValueError(
            f"{where}: image_embedding {tuple(image.shape)}, interleave_query_embedding "
            f"{tuple(query.shape)} and interleave_entity_embeddings {tuple(entities.shape)}; "
            "expected [D], [D], [E, D]"
        )


def interleave_retrieval_scores(
    query_embeds,
    entity_embeds,
    entity_query,
    entity_refs,
    image_embeds,
    object_embeds,
    image_ids,
    *,
    chunk: int = 16,
) -> torch.Tensor:
    """[M, N] float32 scores (module docstring).

    Args:
        query_embeds: [M, D] legend embeddings. entity_embeds: [S, D] every query's entities;
        entity_query: [S] long, the query row of each entity; entity_refs: [S] long, reference
        image id per entity (-1 = text entity). image_embeds: [N, D]; object_embeds: [N, Q, D];
        image_ids: [N] long. chunk: queries per step (memory ~ chunk * entities * N * Q).
    """
    q = _normalise(query_embeds, "query_embeds")
    img = _normalise(image_embeds, "image_embeds")
    objects = torch.as_tensor(object_embeds)
    if objects.dim() != 3 or objects.shape[0] != img.shape[0]:
        raise ValueError(
            f"object_embeds must be [N={img.shape[0]}, Q, D], got {tuple(objects.shape)}"
        )
    n, nq, d = objects.shape
    objs = _normalise(objects.reshape(n * nq, d), "object_embeds")
    ent = torch.as_tensor(entity_embeds).reshape(-1, d)
    ent = _normalise(ent, "entity_embeds") if ent.shape[0] else ent.float()
    owner = torch.as_tensor(entity_query).reshape(-1).long().to(q.device)
    refs = torch.as_tensor(entity_refs).reshape(-1).long().to(q.device)
    ids = torch.as_tensor(image_ids).reshape(-1).long().to(q.device)
    if not (owner.numel() == refs.numel() == ent.shape[0]) or ids.numel() != n:
        raise ValueError(
            f"entity_query {owner.numel()}, entity_refs {refs.numel()} and entity_embeds "
            f"{ent.shape[0]} must agree; image_ids {ids.numel()} must match image_embeds {n}"
        )
    if owner.numel() and (owner.min() < 0 or owner.max() >= q.shape[0]):
        raise ValueError(f"entity_query must index the {q.shape[0]} queries")
    m = q.shape[0]
    ii = q @ img.T
    penalty = torch.zeros(m, n, device=q.device)
    visual = refs >= 0
    hit = refs[visual, None] == ids[None, :]  # [S_visual, N]
    penalty.index_put_((owner[visual],), hit.float(), accumulate=True)
    penalty = (penalty > 0).float() * -REFERENCE_PENALTY
    eo = torch.zeros(m, n, device=q.device)
    count = torch.bincount(owner, minlength=m).float()
    for s in range(0, m, int(chunk)):
        sel = (owner >= s) & (owner < s + int(chunk))
        if not sel.any():
            continue
        best = (ent[sel] @ objs.T).reshape(-1, n, nq).max(-1)[0]  # [S_chunk, N]
        eo.index_add_(0, owner[sel], best)
    eo = torch.where(count[:, None] > 0, eo / count.clamp(min=1)[:, None], torch.zeros_like(eo))
    return ii + penalty + ENTITY_WEIGHT * eo


def _recalls(scores: torch.Tensor, row_ids: torch.Tensor, col_ids: torch.Tensor, prefix: str):
    k = max(RETRIEVAL_KS)
    order = scores.sort(dim=1, descending=True, stable=True)[1][:, :k]
    out = {}
    for kk in RETRIEVAL_KS:
        hits = (col_ids[order[:, :kk]] == row_ids[:, None]).any(1)
        out[f"{prefix}{kk}"] = round((hits.float().mean()).item() * 100, 3)
    return out


class InterleaveRetrievalMetric(_Metric):
    """Streaming interleave retrieval with visual references (module docstring).

    ``update`` adds gallery images and/or one query per call; ``state`` keeps every embedding
    (CPU); ``merge`` offsets the entity -> query links of each merged state."""

    _keys = (
        "image_embeds",
        "object_embeds",
        "image_ids",
        "query_embeds",
        "query_ids",
        "entity_embeds",
        "entity_query",
        "entity_refs",
    )

    def __init__(self, *, chunk: int = 16):
        self.chunk = int(chunk)
        self.reset()

    def update_image(self, image_id: int, image_embed, object_embeds) -> None:
        """A gallery image: ``image_embed`` [D], ``object_embeds`` [Q, D]."""
        img, objs = torch.as_tensor(image_embed).detach(), torch.as_tensor(object_embeds).detach()
        if img.dim() != 1 or objs.dim() != 2 or objs.shape[1] != img.shape[0]:
            raise ValueError(
                f"image {image_id}: image_embed must be [D] and object_embeds [Q, D], got "
                f"{tuple(img.shape)} and {tuple(objs.shape)}"
            )
        self._parts["image_embeds"].append(img.float().cpu()[None])
        self._parts["object_embeds"].append(objs.float().cpu()[None])
        self._parts["image_ids"].append(torch.tensor([int(image_id)]))

    def update_query(self, image_id: int, query_embed, entity_embeds, entity_refs) -> None:
        """One query of image ``image_id``: ``query_embed`` [D], ``entity_embeds`` [E, D],
        ``entity_refs`` [E] (reference image id, -1 = text entity)."""
        qe = torch.as_tensor(query_embed).detach().float().cpu()
        ent = torch.as_tensor(entity_embeds).detach().float().cpu().reshape(-1, qe.shape[-1])
        refs = torch.as_tensor(entity_refs).reshape(-1).long().cpu()
        if qe.dim() != 1 or refs.numel() != ent.shape[0]:
            raise ValueError(
                f"image {image_id}: query_embed must be [D] and entity_refs one per entity row, "
                f"got {tuple(qe.shape)}, {refs.numel()} refs for {ent.shape[0]} entities"
            )
        row = sum(p.shape[0] for p in self._parts["query_ids"])
        self._parts["query_embeds"].append(qe[None])
        self._parts["query_ids"].append(torch.tensor([int(image_id)]))
        self._parts["entity_embeds"].append(ent)
        self._parts["entity_query"].append(torch.full((ent.shape[0],), row, dtype=torch.long))
        self._parts["entity_refs"].append(refs)

    def state(self) -> Dict[str, torch.Tensor]:
        out = {}
        for k in self._keys:
            ints = k.endswith("ids") or k in ("entity_query", "entity_refs")
            out[k] = self._cat(k, torch.int64 if ints else torch.float32)
        return out

    def merge(self, states: Iterable[Dict[str, torch.Tensor]]) -> "InterleaveRetrievalMetric":
        for s in states:
            offset = sum(p.shape[0] for p in self._parts["query_ids"])
            s = dict(s)
            if "entity_query" in s and s["entity_query"].numel():
                s["entity_query"] = s["entity_query"] + offset
            super().merge([s])
        return self

    def scores(self, device: Optional[torch.device] = None) -> torch.Tensor:
        s = {k: v.to(device) if device is not None else v for k, v in self.state().items()}
        return interleave_retrieval_scores(
            s["query_embeds"],
            s["entity_embeds"],
            s["entity_query"],
            s["entity_refs"],
            s["image_embeds"],
            s["object_embeds"],
            s["image_ids"],
            chunk=self.chunk,
        )

    def compute(self, device: Optional[torch.device] = None) -> Dict[str, float]:
        s = self.state()
        k = max(RETRIEVAL_KS)
        for name, key in (("images", "image_ids"), ("queries", "query_ids")):
            if s[key].numel() < k:
                raise ValueError(
                    f"interleave retrieval needs at least {k} {name} for top-{k}, got "
                    f"{s[key].numel()}"
                )
        scores = self.scores(device)
        qids, iids = s["query_ids"].to(scores.device), s["image_ids"].to(scores.device)
        out = _recalls(scores, qids, iids, "ir")
        out.update(_recalls(scores.T, iids, qids, "tr"))
        return out
