"""Matryoshka funnel: a cheap first pass on the first ``d`` dimensions, then rescoring with all of them.

Matryoshka-trained encoders front-load information into the leading dimensions, so the prefix
``x[:d]`` (re-normalised for cosine) is a usable embedding on its own. The funnel keeps the
``candidates`` best documents of the prefix search and re-ranks them with the full vectors, which
costs ``d / dim`` of an exact search plus a tiny rescoring step. On encoders that were not trained this
way (all-MiniLM-L6-v2, for one) the curve of quality against ``d`` shows how much is lost.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from embedstack._validation import check_int
from embedstack.errors import ConfigError
from embedstack.index.flat import FlatIndex
from embedstack.registry import register

__all__ = ["MatryoshkaIndex"]


@register("MatryoshkaIndex", module="embedstack.index")
class MatryoshkaIndex(FlatIndex):
    """Two-stage exact index: prefix search on ``first_dims``, full-dimension rescoring of ``candidates``.

    Args:
        dim: full vector dimensionality.
        first_dims: dimensions used by the first pass (``1 <= first_dims <= dim``).
        candidates: documents kept by the first pass (at least ``k`` are always kept).
        metric: ``"cosine"`` (prefixes re-normalised), ``"ip"`` or ``"l2"``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = rng.standard_normal((100, 16)).astype(np.float32)
        >>> idx = MatryoshkaIndex(16, first_dims=8, candidates=20)
        >>> _ = idx.add(x, [str(i) for i in range(100)])
        >>> idx.search(x[:1], k=1)[0][0].id
        '0'
    """

    def __init__(self, dim: int, *, first_dims: int = 64, candidates: int = 100, metric: str = "cosine",
                 query_block: int = 256) -> None:
        self.first_dims = first_dims
        self.candidates = candidates
        super().__init__(dim, metric=metric, query_block=query_block)
        self._head: FlatIndex | None = None

    def _check_params(self) -> None:
        super()._check_params()
        check_int(self, "first_dims", self.first_dims, low=1)
        check_int(self, "candidates", self.candidates, low=1)
        if self.first_dims > self.dim:
            raise ConfigError(f"first_dims={self.first_dims} exceeds the vector dimensionality {self.dim}.")

    def get_config(self) -> dict[str, Any]:
        return {"dim": self.dim, "metric": self.metric, "first_dims": self.first_dims,
                "candidates": self.candidates, "query_block": self.query_block}

    def _head_index(self) -> FlatIndex:
        """The prefix index, rebuilt from the stored full vectors when they changed."""
        self._materialize()
        assert self._vec is not None
        n = len(self._ids)
        if self._head is None or self._head._rows() != n or self._head._n_dead != self._n_dead:
            head = FlatIndex(self.first_dims, metric=self.metric, query_block=self.query_block)
            head._append(np.asarray(self._vec[:, : self.first_dims], dtype=np.float32))
            head._ids = [""] * n  # only internal ids are used: the user ids live in self
            head._dead = self._dead.copy()
            head._n_dead = self._n_dead
            self._head = head
        return self._head

    def _search_ids(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        head = self._head_index()
        c = max(k, min(self.candidates, len(self)))
        first_s, cand, _ = head._search_ids(queries[:, : self.first_dims], c)
        q = self._prepare(queries)
        assert self._vec is not None
        rows = np.asarray(self._vec)[cand]  # (nq, c, dim)
        full = np.einsum("qd,qcd->qc", q, rows).astype(np.float32)
        if self.metric == "l2":
            assert self._sqn is not None
            qn = np.einsum("ij,ij->i", q, q)[:, None]
            full = -np.sqrt(np.maximum(qn - 2.0 * full + self._sqn[cand], 0.0)).astype(np.float32)
        order = np.argsort(-full, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(full, order, axis=1)
        return scores, np.take_along_axis(cand, order, axis=1), {
            "first_pass": np.take_along_axis(first_s, order, axis=1), "rescore": scores}

    def _compact_rows(self, keep: np.ndarray) -> None:
        super()._compact_rows(keep)
        self._head = None
