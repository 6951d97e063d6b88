"""Retrieval galleries (find_plugin.tasks.gallery): the exact streamed search equals a brute-force
ranking, the faiss index finds the exact neighbours on clustered data, and a missing faiss fails
with a message naming the dependency."""

import builtins

import pytest
import torch

from find_plugin.tasks.gallery import ExactGallery, FaissGallery, exact_search, recall_at_k


def _clustered(n, q, dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(16, dim, generator=g)
    pick = torch.randint(0, 16, (n + q,), generator=g)
    x = centers[pick] + 0.3 * torch.randn(n + q, dim, generator=g)
    return x[:n], x[n:]


def test_exact_search_matches_brute_force_cosine_ranking():
    gallery, queries = _clustered(300, 7)
    scores, idx = exact_search(queries, gallery, 5, gallery_chunk=64)
    cos = (
        torch.nn.functional.normalize(queries, dim=1)
        @ torch.nn.functional.normalize(gallery, dim=1).T
    )
    ref_scores, ref_idx = cos.sort(dim=1, descending=True)
    assert idx.tolist() == ref_idx[:, :5].tolist()
    torch.testing.assert_close(scores, ref_scores[:, :5])
    # k larger than the gallery: every row, still best first
    assert ExactGallery.build(gallery[:3]).search(queries, 10)[1].shape == (7, 3)


def test_faiss_gallery_finds_the_exact_neighbours():
    gallery, queries = _clustered(4000, 20)
    index = FaissGallery.build(gallery, nlist=16, nprobe=8, seed=1)
    scores, idx = index.search(queries, 10)
    _, exact = exact_search(queries, gallery, 10)
    assert idx.shape == (20, 10) and idx.dtype == torch.long
    assert recall_at_k(idx, exact) >= 0.95
    ref = (
        torch.nn.functional.normalize(queries, dim=1)[:, None]
        * torch.nn.functional.normalize(gallery, dim=1)[idx]
    ).sum(-1)
    torch.testing.assert_close(scores, ref, atol=1e-5, rtol=1e-5)  # exact scores within lists


def test_recall_at_k_counts_overlap_and_misses():
    exact = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    approx = torch.tensor([[3, 2, 9, -1], [4, 5, 6, 7]])
    assert recall_at_k(approx, exact) == pytest.approx((2 / 4 + 1) / 2)
    # a neighbour returned twice is found once: recall counts the exact list's members
    assert recall_at_k(torch.tensor([[3, 3, 3, 3]]), exact[:1]) == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match=r"\[Q, k\]"):
        recall_at_k(approx[:, :2], exact)


def test_bad_inputs_and_missing_faiss_fail_clearly(monkeypatch):
    with pytest.raises(ValueError, match="gallery must be finite"):
        ExactGallery.build(torch.zeros(4, 8))
    with pytest.raises(ValueError, match="queries dim 4 != gallery dim 8"):
        exact_search(torch.randn(2, 4), torch.randn(5, 8), 3)
    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        FaissGallery.build(torch.randn(100, 8))
