"""BM25 (Robertson & Zaragoza), TF-IDF's sibling: it overrides only the idf and the term weighting.

A document row holds, for each of its terms ``t``::

    idf(t) · tf · (k1 + 1) / (tf + k1 · (1 − b + b · dl / avgdl))

and a query row holds the query's term counts, so the dot product of the two *is* the BM25 score.
The default idf is Lucene's ``ln(1 + (N − df + 0.5) / (df + 0.5))`` (always positive).

Retrieval uses a term-major impact matrix (CSR, vocabulary × documents) built once by
:meth:`BM25.index`: a batch of queries becomes one sparse matrix, one sparse product gives every
(query, document) score, and the top ``k`` of each query is selected with vectorised numpy on blocks
of queries — no Python loop over documents. For speed, the rows of very common terms (in ≥ 1/32 of
the documents) are kept as a small dense block scored by a sparse × dense product, the rest by the
sparse × sparse product; the sum is the same score. With the ``fast`` extra (numba) a compiled
kernel (:mod:`embedstack.count._kernels`) walks the same impact matrix term-at-a-time with a top-k
heap instead; the numpy path is its reference and both return the same documents in the same order.
Ties are broken by document position, so a query's results do not depend on the other queries of
the batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from embedstack._validation import check_choice, check_float, check_k
from embedstack.base import Hit, Role
from embedstack.count._analysis import check_texts
from embedstack.count._base import decode_strings, encode_strings, row_of_nonzeros
from embedstack.count.tfidf import _Weighted
from embedstack.errors import FormatError, IndexStateError, InputError, MissingExtra
from embedstack.registry import register
from embedstack.text import Analyzer

__all__ = ["BM25", "IDF_VARIANTS", "BACKENDS", "topk_sparse_rows", "topk_dense", "split_impacts"]

IDF_VARIANTS = ("lucene", "robertson", "atire")
BACKENDS = ("auto", "numpy", "numba")

# Largest dense score block (floats) used for top-k selection when matches are dense.
_DENSE_BLOCK = 1 << 22


def _topk_from_entries(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int,
                       k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` largest positive entries (ties: smaller column first), padded with -1 / 0."""
    keep = vals > 0
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=starts[1:])
    pos = np.arange(len(rows), dtype=np.int64) - starts[rows]
    sel = pos < k
    idx = np.full((n_rows, k), -1, dtype=np.int64)
    scores = np.zeros((n_rows, k), dtype=np.float32)
    idx[rows[sel], pos[sel]] = cols[sel]
    scores[rows[sel], pos[sel]] = vals[sel]
    return idx, scores


def topk_dense(dense: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` columns of every row of a dense score block (see :func:`topk_sparse_rows`)."""
    n, m = dense.shape
    if m <= k:
        r, c = np.nonzero(dense > 0)
        return _topk_from_entries(r, c, dense[r, c], n, k)
    # (n, k) the k largest, unordered. Selecting the k smallest of the negation is several times
    # faster than the k largest directly when many scores tie at zero (introselect's worst case).
    part = np.argpartition(-dense, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(dense, part, axis=1)
    thr = vals.min(axis=1)
    tied = (thr > 0) & ((dense == thr[:, None]).sum(axis=1) > (vals == thr[:, None]).sum(axis=1))
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols, flat_vals = part.ravel().astype(np.int64), vals.ravel()
    if tied.any():  # boundary ties: take every entry >= threshold for those rows, pick by column
        keep = ~tied[rows]
        tr, tc = np.nonzero(dense[tied] >= thr[tied][:, None])
        tr = np.flatnonzero(tied)[tr]
        rows = np.concatenate([rows[keep], tr])
        cols = np.concatenate([cols[keep], tc])
        flat_vals = np.concatenate([flat_vals[keep], dense[tr, tc]])
    return _topk_from_entries(rows, cols, flat_vals, n, k)


def topk_sparse_rows(S: sp.csr_array, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` columns of every row of a score matrix, highest first, positive scores only.

    Dense-ish blocks go through ``argpartition`` on a dense copy; sparse ones are sorted directly.
    Both give the same answer: ties at equal score are ordered by column (rows whose k-th score is
    tied with an unselected entry are redone exactly), so a row's result never depends on the
    other rows of the block.

    Returns:
        ``(indices int64 (n, k), scores float32 (n, k))``; missing results are ``-1`` / ``0``.
    """
    n, m = S.shape
    if S.nnz <= 0.05 * n * m or m <= k:
        return _topk_from_entries(row_of_nonzeros(S.indptr), S.indices, S.data, n, k)
    return topk_dense(S.toarray(), k)


@dataclass(frozen=True)
class _Impacts:
    """The index split for scoring: dense rows for very frequent terms, CSR for the rest."""

    dense_pos: np.ndarray  # (vocab,) row of a term in `dense`, -1 if the term is in `sparse`
    dense: np.ndarray  # (n_dense_terms, n_docs) float32
    sparse: sp.csr_array  # (vocab, n_docs), frequent terms' rows emptied

    def scores(self, Q: sp.csr_array) -> np.ndarray:
        """Dense (queries × documents) scores of a block of query rows."""
        nq = Q.shape[0]
        rows = row_of_nonzeros(Q.indptr)
        pos = self.dense_pos[Q.indices]
        f = pos >= 0
        Qf = sp.csr_array((Q.data[f], (rows[f], pos[f])), shape=(nq, len(self.dense)))
        Qr = sp.csr_array((Q.data[~f], (rows[~f], Q.indices[~f])), shape=Q.shape)
        out = np.asarray(Qf @ self.dense, dtype=np.float32)  # one axpy of a dense row per entry
        S = Qr @ self.sparse
        out[row_of_nonzeros(S.indptr), S.indices] += S.data  # (row, col) pairs are unique in CSR
        return out


def split_impacts(W: sp.csr_array, *, min_df_fraction: float = 1 / 32) -> _Impacts:
    """Store rows of terms in at least ``min_df_fraction`` of the documents densely.

    Scoring a posting list costs ~15x more per entry through the sparse product than a dense row
    costs per document, so very common terms are cheaper dense. The dense block is capped at
    ``max(4 · nnz, 4M)`` floats, keeping the most frequent terms first.
    """
    V, D = W.shape
    df = np.diff(W.indptr)
    cap = max(4 * W.nnz, 1 << 22) // max(D, 1)
    cand = np.flatnonzero(df >= max(1.0, D * min_df_fraction))
    if len(cand) > cap:
        cand = np.sort(cand[np.argsort(-df[cand], kind="stable")[:cap]])
    pos = np.full(V, -1, dtype=np.int64)
    pos[cand] = np.arange(len(cand))
    dense = W[cand].toarray().astype(np.float32) if len(cand) else np.zeros((0, D), dtype=np.float32)
    keep = np.repeat(pos < 0, df)
    sparse = sp.csr_array((W.data[keep], W.indices[keep].copy(),
                           np.concatenate([[0], np.cumsum(np.where(pos < 0, df, 0))]).astype(W.indptr.dtype)),
                          shape=W.shape)
    return _Impacts(pos, np.ascontiguousarray(dense), sparse)


@register("BM25")
class BM25(_Weighted):
    """Okapi BM25 as a sparse encoder, with a fast batched inverted-index search.

    Args:
        analyzer: text → tokens pipeline (default ``Analyzer()``; the ``bm25`` spec adds the English
            Snowball stemmer and stopwords).
        k1: term-frequency saturation (≥ 0).
        b: document-length normalisation in [0, 1].
        idf: "lucene" (default) ``ln(1 + (N−df+0.5)/(df+0.5))``; "robertson"
            ``ln((N−df+0.5)/(df+0.5))`` floored at 0; "atire" ``ln(N/df)``.
        min_df, max_df, max_features: vocabulary pruning as in :class:`~embedstack.count.BagOfWords`.
        backend: search kernel — "numpy" (sparse products + vectorised top-k), "numba" (a compiled
            term-at-a-time loop with a heap, from the ``fast`` extra), or "auto" (numba when
            installed). Both return the same documents in the same order.

    Example:
        >>> bm25 = BM25()
        >>> _ = bm25.index(["the cat sat on the mat", "dogs chase cats", "a cat and a dog"], ids=["a", "b", "c"])
        >>> [h.id for h in bm25.search(["cat mat"], k=2)[0]]
        ['a', 'c']
    """

    _params: ClassVar[tuple[str, ...]] = ("analyzer", "k1", "b", "idf", "min_df", "max_df", "max_features",
                                          "backend")
    binary = False
    _uses_lengths = True

    def __init__(
        self,
        *,
        analyzer: Analyzer | None = None,
        k1: float = 1.2,
        b: float = 0.75,
        idf: str = "lucene",
        min_df: float | int = 1,
        max_df: float | int = 1.0,
        max_features: int | None = None,
        backend: str = "auto",
    ) -> None:
        self.analyzer = analyzer
        self.k1 = k1
        self.b = b
        self.idf = idf
        self.min_df = min_df
        self.max_df = max_df
        self.max_features = max_features
        self.backend = backend

    def _validate_params(self) -> None:
        super()._validate_params()
        check_float(self, "k1", self.k1, low=0.0)
        check_float(self, "b", self.b, low=0.0, high=1.0)
        check_choice(self, "idf", self.idf, IDF_VARIANTS)
        check_choice(self, "backend", self.backend, BACKENDS)

    def _kernel(self) -> Any:
        """The numba search kernel, or None for the numpy path."""
        check_choice(self, "backend", self.backend, BACKENDS)
        if self.backend == "numpy":
            return None
        try:
            from embedstack.count._kernels import bm25_topk
        except MissingExtra:
            if self.backend == "numba":
                raise
            return None
        return bm25_topk

    # ------------------------------------------------------------------ weighting (the two overrides)
    def _compute_idf(self, df: np.ndarray, n: int) -> np.ndarray:
        if self.idf == "lucene":
            return np.log1p((n - df + 0.5) / (df + 0.5))
        if self.idf == "robertson":
            return np.maximum(np.log((n - df + 0.5) / (df + 0.5)), 0.0)
        return np.log(n / df)

    def _fit_weights(self, X: sp.csr_array, dl: np.ndarray) -> None:
        super()._fit_weights(X, dl)
        self.avgdl_ = float(dl.mean())

    def _weight(self, X: sp.csr_array, dl: np.ndarray, role: Role) -> sp.csr_array:
        if role == "query":
            return X  # term counts: query · document = BM25 score
        k1, b = np.float32(self.k1), np.float32(self.b)
        norm = (k1 * (1 - b + b * dl / np.float32(max(self.avgdl_, 1e-9)))).astype(np.float32)
        tf = X.data
        X.data = self.idf_[X.indices] * tf * (k1 + 1) / (tf + norm[row_of_nonzeros(X.indptr)])
        return X

    # ------------------------------------------------------------------ retrieval
    @property
    def is_indexed(self) -> bool:
        """True once :meth:`index` has built the search structure."""
        return getattr(self, "index_", None) is not None

    def index(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> BM25:
        """Fit on ``texts`` (the collection defines N, df, avgdl) and build the inverted index; return self.

        So ``BM25().index(docs).search(["query"])`` reads as one line.

        Args:
            texts: the documents.
            ids: one unique string id per document (default: "0", "1", ...).
        """
        texts = check_texts(texts, what="documents")
        if ids is None:
            doc_ids = [str(i) for i in range(len(texts))]
        else:
            doc_ids = [str(i) for i in check_texts(ids, what="ids")]
            if len(doc_ids) != len(texts):
                raise InputError(f"got {len(texts)} documents but {len(doc_ids)} ids; pass one id per document.")
            if len(set(doc_ids)) != len(doc_ids):
                dup = next(i for i, c in Counter(doc_ids).items() if c > 1)
                raise IndexStateError(f"document id {dup!r} appears more than once; ids must be unique.")
        W = self.fit_transform(texts)  # documents × terms, BM25 weights
        W.eliminate_zeros()  # zero impacts (idf 0 under "robertson") never score
        self.index_ = W.T.tocsr()  # terms × documents: each row is a posting list of impacts
        self.doc_ids_ = doc_ids
        if self._kernel() is None:
            self._impacts()  # precompute the numpy scoring layout with the index
        return self

    def _impacts(self) -> _Impacts:
        """The scoring layout of the index, derived once from ``index_`` (not stored on disk)."""
        cached = getattr(self, "_impacts_cache", None)
        if cached is None or cached[0] is not self.index_:
            cached = (self.index_, split_impacts(self.index_))
            self._impacts_cache = cached
        return cached[1]

    def _check_indexed(self) -> None:
        self._check_fitted()
        if not self.is_indexed:
            raise IndexStateError("This BM25 has no index yet; call bm25.index(documents) before searching.")

    def scores(self, queries: Sequence[str]) -> sp.csr_array:
        """Sparse (queries × indexed documents) BM25 score matrix."""
        self._check_indexed()
        Q = self.encode_sparse(queries, role="query")
        return sp.csr_array(Q @ self.index_)

    def retrieve(self, queries: Sequence[str], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` document positions and scores for a batch of queries.

        Returns:
            ``(indices int64 (n, min(k, n_docs)), scores float32 (same shape))``, best first;
            documents sharing no term with the query are never returned (their slots hold ``-1``
            and score ``0``).
        """
        k = check_k(k)
        self._check_indexed()
        Q = self.encode_sparse(queries, role="query")
        n_docs = self.index_.shape[1]
        kk = min(k, n_docs)
        block = max(1, min(1024, _DENSE_BLOCK // max(n_docs, 1)))
        kernel = self._kernel()
        if kernel is not None:
            W = self.index_
            idx = np.empty((Q.shape[0], kk), dtype=np.int64)
            sc = np.empty((Q.shape[0], kk), dtype=np.float32)
            if Q.shape[0]:
                kernel(Q.indptr, Q.indices, Q.data.astype(np.float32), W.indptr, W.indices,
                       W.data.astype(np.float32, copy=False), n_docs, kk, idx, sc)
            return idx, sc
        impacts = self._impacts()
        idx_parts, score_parts = [], []
        for s in range(0, Q.shape[0], block):
            Qb = Q[s : s + block]
            if len(impacts.dense):
                idx, sc = topk_dense(impacts.scores(Qb), kk)
            else:
                idx, sc = topk_sparse_rows(sp.csr_array(Qb @ self.index_), kk)
            idx_parts.append(idx)
            score_parts.append(sc)
        if not idx_parts:
            return np.zeros((0, kk), dtype=np.int64), np.zeros((0, kk), dtype=np.float32)
        return np.concatenate(idx_parts), np.concatenate(score_parts)

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        """Top-``k`` :class:`~embedstack.base.Hit` lists, one per query (unknown query terms ignored)."""
        idx, sc = self.retrieve(queries, k)
        ids = self.doc_ids_
        out: list[list[Hit]] = []
        for irow, srow in zip(idx.tolist(), sc.tolist(), strict=True):
            out.append([Hit(ids[i], s) for i, s in zip(irow, srow, strict=True) if i >= 0])
        return out

    # ------------------------------------------------------------------ persistence
    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, state = super()._state()
        state["avgdl"] = self.avgdl_
        state["indexed"] = self.is_indexed
        if self.is_indexed:
            arrays["index_indptr"] = self.index_.indptr.astype(np.int64)
            arrays["index_indices"] = self.index_.indices.astype(np.int32)
            arrays["index_data"] = self.index_.data.astype(np.float32)
            arrays["doc_ids_blob"], arrays["doc_ids_offsets"] = encode_strings(self.doc_ids_)
        return arrays, state

    def _set_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        super()._set_state(arrays, state)
        self.avgdl_ = float(state.get("avgdl", 0.0))
        if state.get("indexed"):
            try:
                self.doc_ids_ = decode_strings(arrays["doc_ids_blob"], arrays["doc_ids_offsets"])
                shape = (len(self.terms_), len(self.doc_ids_))
                indptr = np.asarray(arrays["index_indptr"])
                self.index_ = sp.csr_array(
                    (np.asarray(arrays["index_data"]), np.asarray(arrays["index_indices"]),
                     indptr.astype(np.int32) if indptr[-1] < 2**31 else indptr),
                    shape=shape,
                )
            except (KeyError, ValueError) as exc:
                raise FormatError(f"saved BM25 index is damaged ({exc}); index the documents again.") from None

