"""Interleave retrieval with visual references (official ``InterleaveEvaluator``;
``official_evaluators.md`` "Interleave retrieval with visual references", spec §5.4)."""

from typing import Optional

import torch

from ...tasks.interleave_metrics import InterleaveRetrievalMetric, check_interleave_outputs
from .retrieval import FINDRetrievalEvaluator

__all__ = ["FINDInterleaveRetrievalEvaluator"]


class FINDInterleaveRetrievalEvaluator(FINDRetrievalEvaluator):
    """``ir1``, ``ir5``, ``ir10`` (the official ``interleave2ir{1,5,10}``: a query sentence is a
    hit if its own image is in its top k) and ``tr1``, ``tr5``, ``tr10`` (an image is a hit if
    its own query is in its top k queries; not in the official evaluator), percentages with 3
    decimals, results under ``"interleave_retrieval_visual"``. Score = cosine(legend, image) +
    0.5 * mean over the query's entities of the best cosine with the image's object proposals
    - 1e-6 if the query borrowed a visual prompt from the image
    (:mod:`find_plugin.tasks.interleave_metrics`).

    Per image it reads ``input["image_id"]`` and the model outputs ``image_embedding`` [D],
    ``object_embeddings`` [Q, D] (gallery side), ``interleave_query_embedding`` [D],
    ``interleave_entity_embeddings`` [E, D] and ``interleave_entity_references`` [E] (reference
    image id of each visual entity, -1 for text entities) (query side). Image ids are coded like
    :class:`FINDRetrievalEvaluator`'s, reference ids with them, so a reference names the same
    gallery image on every rank. ``chunk``: queries scored per step (memory only).
    """

    tasks = {"interleave_retrieval_visual": "interleave_query_embedding"}
    _id_keys = ("image_ids", "query_ids", "entity_refs")

    def __init__(
        self,
        dataset_name: Optional[str] = None,
        *,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        seed: Optional[int] = None,
        device: Optional[str] = None,
        chunk: int = 16,
    ):
        self.chunk = int(chunk)
        super().__init__(
            dataset_name,
            task="interleave_retrieval_visual",
            output_dir=output_dir,
            distributed=distributed,
            seed=seed,
            device=device,
        )

    def _metric_kwargs(self) -> dict:
        return {"chunk": self.chunk}

    def _new_metric(self):
        return InterleaveRetrievalMetric(**self._metric_kwargs())

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            code = self._code(self._image_id(inp))
            img = torch.as_tensor(self._output(inp, out, "image_embedding"))
            objs = torch.as_tensor(self._output(inp, out, "object_embeddings"))
            query = torch.as_tensor(self._output(inp, out))
            ents = torch.as_tensor(self._output(inp, out, "interleave_entity_embeddings"))
            refs = torch.as_tensor(self._output(inp, out, "interleave_entity_references"))
            check_interleave_outputs(img, query, ents, f"{type(self).__name__}: {self._where(inp)}")
            self._metric.update_image(code, img, objs)
            ref_codes = [self._code(int(r)) if int(r) >= 0 else -1 for r in refs.tolist()]
            self._metric.update_query(code, query, ents, torch.tensor(ref_codes, dtype=torch.long))
