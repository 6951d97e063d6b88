"""Image-text and interleave-text retrieval evaluator (official ``RetrievalEvaluator``;
``official_evaluators.md`` "Image-text retrieval and interleave text retrieval")."""

from typing import Any, Dict, List, Optional

import torch

from ...tasks.metrics import RetrievalMetric
from .base import FINDMetricEvaluator

__all__ = ["FINDRetrievalEvaluator"]


class FINDRetrievalEvaluator(FINDMetricEvaluator):
    """``ir1``, ``ir5``, ``ir10``, ``tr1``, ``tr5``, ``tr10`` (percentages, 3 decimals) and
    ``irtr`` = 100 * (IR@1 + TR@1) with the official definitions
    (:class:`~find_plugin.tasks.metrics.RetrievalMetric`: cosine scores, IR@k a mean over
    captions, TR@k a mean over images, hits decided by image ids; ranked by a streamed top-k, so
    no [images x captions] matrix is built).

    Per image it reads ``input["image_id"]``, ``output["image_embedding"]`` [D] and the image's
    text embeddings [n, D] (n may be 0: the image stays in the gallery):

    * ``task="retrieval"``: ``output["caption_embeddings"]`` (caption query), results under
      ``"retrieval"``;
    * ``task="interleave_retrieval"``: ``output["interleave_embeddings"]`` (legend query of the
      entity sentences), results under ``"interleave_retrieval"``. The official
      first-sentence-only protocol (``MODEL.FIND.TEST.INTERLEAVE_FIRST_SENTENCE_ONLY``) is
      applied on the task side: the model then outputs the first sentence's embedding once per
      sentence, and this evaluator scores whatever rows it gets.

    Image ids may be any hashable picklable value (int or str); they are coded to integers on
    rank 0 after the gather, so equal ids on different ranks name the same image (ids, not
    positions, decide a hit, as in the official evaluator). ``device``: where rank 0 ranks the
    gathered embeddings (e.g. ``cfg.MODEL.DEVICE``); ``query_chunk`` / ``gallery_chunk``: chunk
    sizes of the streamed top-k (they never change the numbers).
    """

    tasks = {"retrieval": "caption_embeddings", "interleave_retrieval": "interleave_embeddings"}

    def __init__(
        self,
        dataset_name: Optional[str] = None,
        *,
        task: str = "retrieval",
        output_dir: Optional[str] = None,
        distributed: bool = True,
        seed: Optional[int] = None,
        device: Optional[str] = None,
        query_chunk: int = 1024,
        gallery_chunk: int = 4096,
    ):
        self.device = device
        self.query_chunk, self.gallery_chunk = int(query_chunk), int(gallery_chunk)
        super().__init__(
            dataset_name, task=task, output_dir=output_dir, distributed=distributed, seed=seed
        )

    def _metric_kwargs(self) -> dict:
        return {"query_chunk": self.query_chunk, "gallery_chunk": self.gallery_chunk}

    def _new_metric(self):
        return RetrievalMetric(**self._metric_kwargs())

    def reset(self) -> None:
        super().reset()
        # The metric holds local integer codes; ``_ids[code]`` is the dataset's image id.
        self._ids: List[Any] = []
        self._codes: Dict[Any, int] = {}

    def _code(self, image_id) -> int:
        if image_id not in self._codes:
            self._codes[image_id] = len(self._ids)
            self._ids.append(image_id)
        return self._codes[image_id]

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            code = self._code(self._image_id(inp))
            img = torch.as_tensor(self._output(inp, out, "image_embedding")).detach()
            txt = torch.as_tensor(self._output(inp, out)).detach()
            if img.dim() != 1 or txt.dim() != 2 or (txt.shape[0] and txt.shape[1] != img.shape[0]):
                raise ValueError(
                    f"{type(self).__name__} (task {self.task!r}): output 'image_embedding' must "
                    f"be [D] and {self.output_key!r} [n, D] with the same D; {self._where(inp)} "
                    f"has {tuple(img.shape)} and {tuple(txt.shape)}"
                )
            self._metric.update(image_embeds=img[None], image_ids=torch.tensor([code]))
            if txt.shape[0]:
                ids = torch.full((txt.shape[0],), code, dtype=torch.long)
                self._metric.update(text_embeds=txt, text_ids=ids)

    def _payload(self) -> dict:
        return {"state": self._metric.state(), "ids": list(self._ids)}

    #: state keys holding local image-id codes (negative = no image, kept as is)
    _id_keys = ("image_ids", "text_ids")

    def _merge(self, payloads: List[dict]):
        codes: Dict[Any, int] = {}
        states = []
        for p in payloads:
            # Local code -> global code of the same image id.
            remap = torch.tensor([codes.setdefault(i, len(codes)) for i in p["ids"]] or [0])
            s = dict(p["state"])
            for k in self._id_keys:
                if s[k].numel():
                    s[k] = torch.where(s[k] >= 0, remap[s[k].clamp(min=0)], s[k])
            states.append(s)
        return type(self._metric).from_states(states, **self._metric_kwargs())

    def _count(self, metric) -> int:
        return metric.state()["image_ids"].shape[0]

    def _compute(self, metric) -> Dict[str, float]:
        return metric.compute(device=self.device)
