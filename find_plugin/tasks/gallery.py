"""Retrieval galleries at scale: exact streamed search and an approximate faiss index.

A gallery is N embeddings [N, D] (e.g. image embeddings ``pred_retrievals``, or caption
embeddings); a query [Q, D] asks for the k gallery rows of largest cosine similarity. Both
searches L2-normalise queries and gallery and never build a [Q, N] (let alone [N, N]) score
matrix:

* :class:`ExactGallery` (and the one-off :func:`exact_search`): exact, streamed chunk by chunk
  with a running top-k (:func:`find_plugin.tasks.metrics.streamed_topk`), plain torch on any
  device;
* :class:`FaissGallery`: an inverted-file index (``faiss.IndexIVFFlat``, inner product) built
  once; a query scans only the ``nprobe`` lists nearest to it, with exact scores inside them.
  ``faiss`` is an optional dependency (``pip install faiss-cpu``); without it,
  :class:`FaissGallery` raises an ImportError that says so. The exact side needs nothing.

:func:`recall_at_k` measures an approximate search against the exact one (the fraction of the
exact top-k that the approximate top-k found).
"""

import math
from typing import Optional, Tuple

import torch

from .metrics import streamed_topk

__all__ = ["ExactGallery", "FaissGallery", "exact_search", "recall_at_k"]


def _normalised(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [N, D] tensor, got {tuple(x.shape)}")
    x = x.float()
    norm = x.norm(dim=1, keepdim=True)
    if not bool(torch.isfinite(x).all()) or bool((norm == 0).any()):
        raise ValueError(f"{name} must be finite with nonzero rows (they are L2-normalised)")
    return x / norm


class ExactGallery:
    """Exact cosine search, streamed: the gallery is normalised once at :meth:`build`, then each
    :meth:`search` ranks it chunk by chunk (memory O(Q * (k + gallery_chunk)) besides it)."""

    def __init__(
        self, gallery: torch.Tensor, *, query_chunk: int = 1024, gallery_chunk: int = 4096
    ):
        self.gallery = gallery
        self.chunks = dict(query_chunk=int(query_chunk), gallery_chunk=int(gallery_chunk))

    @classmethod
    def build(cls, gallery, **chunks) -> "ExactGallery":
        """``gallery`` [N, D] on any device (normalised here)."""
        return cls(_normalised(gallery, "gallery"), **chunks)

    def describe(self) -> str:
        return f"exact streamed top-k (gallery chunk {self.chunks['gallery_chunk']})"

    def search(self, queries, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """queries [Q, D] -> (scores [Q, k'], indices [Q, k'] long), best first, k' = min(k, N);
        ties go to the lower gallery index."""
        q = _normalised(queries, "queries").to(self.gallery.device)
        if q.shape[1] != self.gallery.shape[1]:
            raise ValueError(f"queries dim {q.shape[1]} != gallery dim {self.gallery.shape[1]}")
        idx = streamed_topk(q, self.gallery, k, **self.chunks)
        scores = (q[:, None, :] * self.gallery[idx]).sum(-1)  # gathers k rows per query only
        return scores, idx


def exact_search(queries, gallery, k: int, **chunks) -> Tuple[torch.Tensor, torch.Tensor]:
    """One-off :class:`ExactGallery` search: queries [Q, D], gallery [N, D] -> (scores, indices)."""
    return ExactGallery.build(gallery, **chunks).search(queries, k)


def recall_at_k(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean over queries of |approx_i ∩ exact_i| / |exact_i| for index lists [Q, k] (negative
    indices, faiss's "not found", count as misses)."""
    approx, exact = torch.as_tensor(approx), torch.as_tensor(exact)
    if approx.shape != exact.shape or approx.dim() != 2:
        raise ValueError(
            f"approx {tuple(approx.shape)} and exact {tuple(exact.shape)} must both be [Q, k]"
        )
    hit = (approx[:, :, None] == exact[:, None, :]) & (approx[:, :, None] >= 0)
    return float(hit.any(1).float().mean())


def _faiss():
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            "FaissGallery needs the optional dependency faiss (pip install faiss-cpu, or "
            "faiss-gpu); exact_search works without it"
        ) from err
    return faiss


class FaissGallery:
    """An IVF-flat faiss index over L2-normalised embeddings (inner product = cosine).

    Build with :meth:`build`; :meth:`search` answers queries [Q, D] with (scores, indices) like
    :class:`ExactGallery`. ``nlist`` inverted lists (default ~ sqrt(N), at least 1, at most
    N / 39 so that k-means has enough points per centroid); ``nprobe`` lists scanned per query
    (default: ``nprobe_fraction`` of the lists, at least 8): the speed / recall knob.
    """

    def __init__(self, index, dim: int, size: int):
        self.index, self.dim, self.size = index, int(dim), int(size)

    @classmethod
    def build(
        cls,
        gallery,
        *,
        nlist: Optional[int] = None,
        nprobe: Optional[int] = None,
        nprobe_fraction: float = 1 / 16,
        train_size: Optional[int] = None,
        seed: int = 0,
        threads: Optional[int] = None,
    ) -> "FaissGallery":
        """``gallery`` [N, D] (CPU; normalised here). ``train_size``: k-means sample (default
        32 per list). ``threads``: faiss OpenMP threads (default: torch's)."""
        faiss = _faiss()
        g = _normalised(gallery, "gallery").cpu().contiguous()
        n, dim = g.shape
        if nlist is None:
            nlist = int(round(math.sqrt(n)))
        nlist = max(1, min(int(nlist), n // 39 or 1))
        faiss.omp_set_num_threads(int(threads or torch.get_num_threads()))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        m = min(n, int(train_size or 32 * nlist))
        pick = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:m]
        index.cp.seed = int(seed)
        index.cp.niter = 10  # k-means iterations: coarse lists need no more
        index.train(g[pick].numpy())
        index.add(g.numpy())
        index.nprobe = int(nprobe or max(8, round(nlist * nprobe_fraction)))
        index.nprobe = min(index.nprobe, nlist)
        return cls(index, dim, n)

    def describe(self) -> str:
        return f"IVFFlat(nlist={self.index.nlist}, nprobe={self.index.nprobe}, inner product)"

    def search(self, queries, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """queries [Q, D] -> (scores [Q, k], indices [Q, k] long; -1 where fewer than k found)."""
        q = _normalised(queries, "queries").cpu().contiguous()
        if q.shape[1] != self.dim:
            raise ValueError(f"queries dim {q.shape[1]} != gallery dim {self.dim}")
        scores, idx = self.index.search(q.numpy(), int(k))
        return torch.from_numpy(scores), torch.from_numpy(idx).long()
