"""Numba kernel for batched BM25 top-k retrieval (the ``fast`` extra).

The kernel takes plain CSR arrays — the queries' term counts and the term-major impact matrix — and
for each query accumulates scores term-at-a-time into one reusable float32 buffer, touching only
the documents that appear in the query terms' posting lists, then keeps the best ``k`` in a small
heap. Its numpy twin is :func:`embedstack.count.bm25.topk_dense` over the sparse product
``Q @ W`` (same scores, same ordering: higher score first, ties by smaller document position).
"""

from __future__ import annotations

import numpy as np

from embedstack._extras import require

require("numba", "fast", "the fast BM25 search kernel")
import numba  # noqa: E402

from embedstack._topk import sift_down as _sift_down  # noqa: E402
from embedstack._topk import worse as _worse  # noqa: E402

__all__ = ["bm25_topk"]

# Compiled with nogil + an on-disk cache; no fastmath, so float32 sums keep the query-term order.


@numba.njit(nogil=True, cache=True)
def _offer(hs: np.ndarray, hd: np.ndarray, size: int, k: int, s: float, d: int) -> int:
    """Offer (score, doc) to the heap of the best ``k``; return the new heap size."""
    if size < k:  # push and sift up
        pos = size
        hs[pos] = s
        hd[pos] = d
        while pos > 0:
            parent = (pos - 1) // 2
            if _worse(hs[pos], hd[pos], hs[parent], hd[parent]):
                hs[pos], hs[parent] = hs[parent], hs[pos]
                hd[pos], hd[parent] = hd[parent], hd[pos]
                pos = parent
            else:
                break
        return size + 1
    if _worse(hs[0], hd[0], s, d):  # better than the worst kept: replace the root
        hs[0] = s
        hd[0] = d
        _sift_down(hs, hd, size, 0)
    return size


@numba.njit(nogil=True, cache=True)
def bm25_topk(q_indptr: np.ndarray, q_indices: np.ndarray, q_data: np.ndarray,
              w_indptr: np.ndarray, w_indices: np.ndarray, w_data: np.ndarray,
              n_docs: int, k: int, out_idx: np.ndarray, out_scores: np.ndarray) -> None:
    """Fill ``out_idx``/``out_scores`` (n_queries, k) with each query's best documents.

    Scores accumulate in one dense float32 buffer. A query whose posting lists are short compared
    with the collection records the documents it touches (first touch = buffer still 0, since all
    impacts and query weights are > 0) and ranks only those; a long one scans the whole buffer,
    which is cheaper than the bookkeeping. Either way the buffer is zeroed again for the next query.

    Args:
        q_indptr, q_indices, q_data: CSR (queries × terms) of query term weights (> 0).
        w_indptr, w_indices, w_data: CSR (terms × documents) of BM25 impacts (> 0, no explicit zeros).
        n_docs: number of documents.
        k: results per query (``<= n_docs``).
        out_idx: int64 output, ``-1`` where fewer than ``k`` documents score above zero.
        out_scores: float32 output, ``0`` in unused slots.
    """
    nq = len(q_indptr) - 1
    acc = np.zeros(n_docs, dtype=np.float32)
    touched = np.empty(n_docs, dtype=np.int64)
    hs = np.empty(k, dtype=np.float32)
    hd = np.empty(k, dtype=np.int64)
    for qi in range(nq):
        work = 0
        for p in range(q_indptr[qi], q_indptr[qi + 1]):
            t = q_indices[p]
            work += w_indptr[t + 1] - w_indptr[t]
        size = 0
        if 4 * work < n_docs:
            nt = 0
            for p in range(q_indptr[qi], q_indptr[qi + 1]):
                t = q_indices[p]
                w = q_data[p]
                for j in range(w_indptr[t], w_indptr[t + 1]):
                    d = w_indices[j]
                    if acc[d] == 0.0:
                        touched[nt] = d
                        nt += 1
                    acc[d] += w * w_data[j]
            thr = np.float32(0.0)
            for i in range(nt):
                d = touched[i]
                s = acc[d]
                acc[d] = 0.0
                if s > thr or (s == thr and size == k and d < hd[0]):
                    size = _offer(hs, hd, size, k, s, d)
                    if size == k:
                        thr = hs[0]
        else:
            for p in range(q_indptr[qi], q_indptr[qi + 1]):
                t = q_indices[p]
                w = q_data[p]
                for j in range(w_indptr[t], w_indptr[t + 1]):
                    acc[w_indices[j]] += w * w_data[j]
            # Documents arrive in increasing order, so once the heap is full a newcomer must score
            # strictly above the worst kept one; this branch is rarely taken (well predicted).
            thr = np.float32(0.0)
            for d in range(n_docs):
                s = acc[d]
                acc[d] = 0.0
                if s > thr:
                    size = _offer(hs, hd, size, k, s, d)
                    if size == k:
                        thr = hs[0]
        for pos in range(size, k):
            out_idx[qi, pos] = -1
            out_scores[qi, pos] = 0.0
        while size > 0:  # pop the worst into the last free slot: best ends up first
            size -= 1
            out_idx[qi, size] = hd[0]
            out_scores[qi, size] = hs[0]
            hs[0] = hs[size]
            hd[0] = hd[size]
            _sift_down(hs, hd, size, 0)
