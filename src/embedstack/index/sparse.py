"""An inverted index over sparse vectors (BM25 / TF-IDF weights now, SPLADE later).

Documents are stored as postings: a CSR matrix ``(vocab, n_docs)`` whose row ``t`` lists the
documents containing term ``t`` and their weights. Scoring a batch of queries is one sparse
matrix product ``Q (nq, vocab) @ P (vocab, n_docs)`` — exact dot products that only touch the
postings of the query's terms — followed by a top-k over each result row's non-zeros. Documents
sharing no term with the query are not returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from embedstack.errors import DimensionMismatch, InputError
from embedstack.index._base import BaseIndex
from embedstack.registry import register

__all__ = ["SparseIndex", "as_csr"]


def as_csr(x: Any, dim: int | None, what: str = "vectors") -> sp.csr_array:
    """Validate ``x`` as a finite float32 CSR matrix of width ``dim`` (dense input is converted)."""
    if sp.issparse(x):
        m = sp.csr_array(x, dtype=np.float32)
    else:
        try:
            arr = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError(f"{what} must be a scipy.sparse matrix or a numeric array; got {type(x).__name__}.") from None
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise InputError(f"{what} must be 2-D (n, vocab); got shape {arr.shape}.")
        m = sp.csr_array(arr)
    if dim is not None and m.shape[1] != dim:
        raise DimensionMismatch(
            f"{what} have {m.shape[1]} columns but the index was built over a vocabulary of {dim}; "
            "encode with the (fitted) encoder that built the index."
        )
    if m.nnz and not np.isfinite(m.data).all():
        raise InputError(f"{what} contain NaN or infinite weights; clean them first.")
    m.sum_duplicates()
    return m


@register("SparseIndex", module="embedstack.index")
class SparseIndex(BaseIndex):
    """Exact dot-product search over sparse term-weight rows.

    Args:
        dim: vocabulary size (number of columns of the sparse rows).
        metric: only ``"ip"`` (the weights already encode the scoring function, e.g. BM25).
        query_block: queries multiplied together.

    Example:
        >>> import scipy.sparse as sp, numpy as np
        >>> idx = SparseIndex(4)
        >>> _ = idx.add(sp.csr_array(np.array([[1, 0, 2, 0], [0, 1, 0, 0]], dtype=np.float32)), ["a", "b"])
        >>> [(h.id, h.score) for h in idx.search(sp.csr_array(np.array([[0, 0, 1, 0]], dtype=np.float32)))[0]]
        [('a', 2.0)]
    """

    def __init__(self, dim: int, *, metric: str = "ip", query_block: int = 256) -> None:
        self.query_block = query_block
        super().__init__(dim, metric=metric)
        self._postings: sp.csr_array | None = None  # (vocab, n_docs)
        self._pending: list[sp.csr_array] = []

    def _check_params(self) -> None:
        super()._check_params()
        if self.metric != "ip":
            from embedstack.errors import ConfigError

            raise ConfigError("SparseIndex scores by dot product: use metric='ip'.")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "query_block": self.query_block}

    def _validate(self, vectors: Any, what: str) -> sp.csr_array:
        return as_csr(vectors, self.dim, what)

    def _append(self, vectors: sp.csr_array) -> None:
        self._pending.append(vectors)

    def _materialize(self) -> sp.csr_array:
        if self._pending:
            with self._fold_lock:
                self._fold()
        if self._postings is None:
            self._postings = sp.csr_array((self.dim, 0), dtype=np.float32)
        return self._postings

    def _fold(self) -> None:
        if self._pending:
            parts = ([self._postings.T] if self._postings is not None else []) + self._pending
            docs = sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0]
            self._postings = sp.csr_array(docs.T)  # CSC of docs == CSR of postings
            self._pending = []  # last: a reader that sees no pending work sees the folded arrays

    def _search_ids(self, queries: sp.csr_array, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        post = self._materialize()
        nq = queries.shape[0]
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        ids = np.full((nq, k), -1, dtype=np.int64)
        dead = self._dead if self._n_dead else None
        for a in range(0, nq, self.query_block):
            res = sp.csr_array(queries[a : a + self.query_block] @ post)
            for r in range(res.shape[0]):
                lo, hi = res.indptr[r], res.indptr[r + 1]
                cols = res.indices[lo:hi]
                vals = res.data[lo:hi]
                if dead is not None:
                    live = ~dead[cols]
                    cols, vals = cols[live], vals[live]
                if len(vals) > k:
                    part = np.argpartition(-vals, k - 1)[:k]
                    cols, vals = cols[part], vals[part]
                order = np.lexsort((cols, -vals))
                m = len(order)
                scores[a + r, :m] = vals[order]
                ids[a + r, :m] = cols[order]
        return scores, ids, {}

    def _compact_rows(self, keep: np.ndarray) -> None:
        post = self._materialize()
        self._postings = sp.csr_array(post[:, keep])

    def _arrays(self) -> dict[str, np.ndarray]:
        post = self._materialize()
        return {"indptr": post.indptr.astype(np.int64), "indices": post.indices.astype(np.int32),
                "data": post.data.astype(np.float32)}

    def _restore(self, arrays: dict[str, np.ndarray], state: dict[str, Any], folder: Path, mmap: bool) -> None:
        n_docs = len(self._ids)
        self._postings = sp.csr_array(
            (np.asarray(arrays["data"]), np.asarray(arrays["indices"]), np.asarray(arrays["indptr"])),
            shape=(self.dim, n_docs),
        )
