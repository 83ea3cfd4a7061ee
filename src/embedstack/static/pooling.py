"""Sentence vectors from word vectors: mean pooling and SIF (Arora et al., 2017) as a DenseEncoder.

* ``mean``: the average of the vectors of a text's in-vocabulary tokens (FastText vectors also
  answer out-of-vocabulary tokens from their n-grams).
* ``sif``: a weighted average with weights ``a / (a + p(w))`` (``p(w)`` = unigram probability), then
  the projection on the first principal component of the fitted texts' vectors is removed.
  ``p(w)`` comes from the counts saved with the vectors, or from the texts given to ``fit``.

Texts without any known token encode to the zero vector.

Example:
    >>> import numpy as np
    >>> from embedstack.static.keyedvectors import KeyedVectors
    >>> kv = KeyedVectors(["good", "bad"], np.array([[1, 0], [0, 1]], np.float32))
    >>> [[round(float(x), 3) for x in r] for r in PooledWordEncoder(kv).encode(["good good bad", "unknown"])]
    [[0.667, 0.333], [0.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from embedstack._validation import check_choice, check_float
from embedstack.base import Role, one_text_one_vector
from embedstack.errors import NotFittedError
from embedstack.static.keyedvectors import FastTextKeyedVectors, KeyedVectors
from embedstack.text import Analyzer

__all__ = ["PooledWordEncoder"]


class PooledWordEncoder:
    """A :class:`~embedstack.base.DenseEncoder` pooling static word vectors per text.

    Args:
        vectors: the word vectors.
        pool: ``"mean"`` or ``"sif"``.
        a: SIF's smoothing constant.
        analyzer: tokenizer (default: the one stored with the vectors, else ``Analyzer()``).
        name: label used in reports.

    Example:
        >>> import numpy as np
        >>> from embedstack.static.keyedvectors import KeyedVectors
        >>> kv = KeyedVectors(["a", "b"], np.eye(2, dtype=np.float32), counts=np.array([9, 1]))
        >>> enc = PooledWordEncoder(kv, pool="sif").fit(["a b", "a a", "b"])
        >>> enc.encode(["a b"]).shape
        (1, 2)
    """

    def __init__(self, vectors: KeyedVectors, *, pool: str = "mean", a: float = 1e-3,
                 analyzer: Analyzer | None = None, name: str = "") -> None:
        self.vectors = vectors
        self.pool = pool
        self.a = a
        self.analyzer = analyzer
        self.name = name

    # ------------------------------------------------------------------ protocol
    @property
    def dim(self) -> int:
        return self.vectors.dim

    @property
    def requires_fit(self) -> bool:
        return self.pool == "sif"

    @property
    def is_fitted(self) -> bool:
        return self.pool != "sif" or getattr(self, "component_", None) is not None

    def _analyzer(self) -> Analyzer:
        if self.analyzer is not None:
            return self.analyzer
        cfg = self.vectors.meta.get("analyzer") if hasattr(self.vectors, "meta") else None
        return Analyzer.from_config(cfg) if cfg else Analyzer()

    def fit(self, texts: Sequence[str], y: Any = None) -> PooledWordEncoder:
        """SIF: estimate p(w) (from stored counts, else from ``texts``) and the first principal component."""
        check_choice(self, "pool", self.pool, ["mean", "sif"])
        check_float(self, "a", self.a, low=0.0, low_open=True)
        if self.pool != "sif":
            return self
        counts: np.ndarray | None = self.vectors.counts
        if counts is None or len(counts) != len(self.vectors):
            counts = np.zeros(len(self.vectors), dtype=np.float64)
            an = self._analyzer()
            k2i = self.vectors.key_to_index
            for t in texts:
                for tok in an.tokenize(t):
                    i = k2i.get(tok)
                    if i is not None:
                        counts[i] += 1
            counts += 1.0  # add-one so that unseen vocabulary words keep a finite weight
        p = np.asarray(counts, dtype=np.float64) / float(np.sum(counts))
        self.weights_ = (self.a / (self.a + p)).astype(np.float32)
        self.component_ = np.zeros(self.dim, dtype=np.float32)
        emb = self._pool(texts)
        nonzero = emb[np.linalg.norm(emb, axis=1) > 0]
        if len(nonzero):
            _, _, vt = np.linalg.svd(nonzero.astype(np.float64), full_matrices=False)
            self.component_ = vt[0].astype(np.float32)
        return self

    def _pool(self, texts: Sequence[str]) -> np.ndarray:
        an = self._analyzer()
        kv = self.vectors
        k2i = kv.key_to_index
        weights = getattr(self, "weights_", None) if self.pool == "sif" else None
        is_ft = isinstance(kv, FastTextKeyedVectors)
        oov: dict[str, np.ndarray | None] = {}
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, text in enumerate(texts):
            toks = an.tokenize(text)
            idx = [k2i[t] for t in toks if t in k2i]
            rows: list[np.ndarray] = []
            wts: list[float] = []
            if idx:
                rows.append(kv.vectors[idx])
                wts.extend(weights[idx].tolist() if weights is not None else [1.0] * len(idx))
            if is_ft:
                for t in toks:
                    if t in k2i:
                        continue
                    if t not in oov:  # n-gram hashing is Python work: once per distinct unseen word per call
                        oov[t] = kv.get_vector(t)[None, :] if kv.has_vector(t) else None
                    vec = oov[t]
                    if vec is not None:
                        rows.append(vec)
                        wts.append(float(self.a / (self.a + 0.0)) if weights is not None else 1.0)
            if rows:
                m = np.vstack(rows)
                w = np.asarray(wts, dtype=np.float32)
                out[r] = (w[:, None] * m).sum(axis=0) / len(w)
        return out

    @one_text_one_vector
    def encode(self, texts: Sequence[str], *, role: Role = "document", batch_size: int = 64) -> np.ndarray:
        """float32 ``(len(texts), dim)`` sentence vectors."""
        check_choice(self, "pool", self.pool, ["mean", "sif"])
        if self.pool == "sif" and getattr(self, "component_", None) is None:
            raise NotFittedError(self)
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = self._pool(texts)
        if self.pool == "sif":
            u = self.component_
            emb = emb - np.outer(emb @ u, u).astype(np.float32)
        return emb.astype(np.float32)

    def __repr__(self) -> str:
        return f"PooledWordEncoder(pool={self.pool!r}, words={len(self.vectors)}, dim={self.dim})"
