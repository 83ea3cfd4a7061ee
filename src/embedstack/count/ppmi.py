"""PPMI + SVD word vectors (Levy, Goldberg & Dagan 2015, "Improving distributional similarity").

1. Window co-occurrence counts ``#(w, c)`` over the corpus (rare words removed first, as word2vec
   does; windows never cross a text), built with numpy offsets + ``scipy.sparse`` in chunks.
2. Shifted positive PMI with context-distribution smoothing::

       SPPMI(w, c) = max(ln(#(w,c) / #(w)) − ln(P_α(c)) − ln(k), 0),   P_α(c) = #(c)^α / Σ #(c')^α

3. Truncated SVD ``M ≈ U Σ Vᵀ``; word vectors ``W = U Σ^p`` (eigenvalue weighting ``p``).

The fitted model is a word-vector table (``index_to_key``, ``key_to_index``, ``vectors``) usable
wherever the evaluation code expects word vectors (analogies, word similarity).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from embedstack._validation import check_choice, check_float, check_int
from embedstack.count._analysis import CorpusAnalyzer, check_texts
from embedstack.count._base import _AnalyzerConfig, decode_strings, encode_strings
from embedstack.count.lsa import truncated_svd
from embedstack.errors import ConfigError, FormatError, InputError, NotFittedError, UnknownKeyError
from embedstack.registry import register
from embedstack.text import Analyzer

__all__ = ["PPMI", "cooccurrence_matrix"]


def cooccurrence_matrix(ids: np.ndarray, doc: np.ndarray, n_words: int, window: int, *,
                        dynamic: bool = False) -> sp.csr_array:
    """Symmetric word × context counts of tokens at distance ``1..window`` within the same text.

    Args:
        ids: int32 word id of each token (texts concatenated, unknown words already removed).
        doc: text index of each token (non-decreasing).
        n_words: vocabulary size.
        window: maximum distance.
        dynamic: weight a pair at distance d by ``(window − d + 1) / window`` (word2vec's expected
            weight under its random window shrinking) instead of 1.
    """
    rows, cols, vals = [], [], []
    for d in range(1, window + 1):
        if d >= len(ids):
            break
        same = doc[:-d] == doc[d:]
        a, c = ids[:-d][same], ids[d:][same]
        w = np.float32((window - d + 1) / window if dynamic else 1.0)
        rows += [a, c]
        cols += [c, a]
        vals.append(np.full(2 * len(a), w, dtype=np.float32))
    if not vals:
        return sp.csr_array((n_words, n_words), dtype=np.float32)
    M = sp.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_words, n_words))
    M.sum_duplicates()
    return M


@register("PPMI")
class PPMI(_AnalyzerConfig):
    """Word vectors from an SVD of the shifted positive PMI matrix.

    Args:
        n_components: vector dimension.
        analyzer: text → tokens pipeline (default ``Analyzer()``).
        window: context window (each side).
        dynamic_window: down-weight distant contexts like word2vec does.
        min_count: ignore words seen fewer times.
        max_vocab: keep at most this many most frequent words.
        alpha: context-distribution smoothing exponent (1.0 disables it).
        shift: the ``k`` of ``ln k`` subtracted from PMI (1.0 = plain PPMI).
        eig: eigenvalue weighting ``p`` in ``U Σ^p`` (0.5 or 0 work best per Levy et al.).
        normalize: L2-normalise word vectors.
        algorithm, n_iter, seed: the truncated SVD (see :func:`~embedstack.count.lsa.truncated_svd`).

    Example:
        >>> texts = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"] * 5
        >>> ppmi = PPMI(n_components=3, min_count=1).fit(texts)
        >>> ppmi.vectors.shape, ppmi.index_to_key[0]
        ((9, 3), 'the')
    """

    requires_fit: ClassVar[bool] = True
    _params: ClassVar[tuple[str, ...]] = (
        "n_components", "analyzer", "window", "dynamic_window", "min_count", "max_vocab", "alpha",
        "shift", "eig", "normalize", "algorithm", "n_iter", "seed",
    )

    def __init__(
        self,
        n_components: int = 300,
        *,
        analyzer: Analyzer | None = None,
        window: int = 2,
        dynamic_window: bool = False,
        min_count: int = 5,
        max_vocab: int | None = None,
        alpha: float = 0.75,
        shift: float = 1.0,
        eig: float = 0.5,
        normalize: bool = True,
        algorithm: str = "randomized",
        n_iter: int = 5,
        seed: int = 0,
    ) -> None:
        self.n_components = n_components
        self.analyzer = analyzer
        self.window = window
        self.dynamic_window = dynamic_window
        self.min_count = min_count
        self.max_vocab = max_vocab
        self.alpha = alpha
        self.shift = shift
        self.eig = eig
        self.normalize = normalize
        self.algorithm = algorithm
        self.n_iter = n_iter
        self.seed = seed

    def __repr__(self) -> str:
        return f"PPMI(n_components={self.n_components!r}, window={self.window!r}, alpha={self.alpha!r})"


    def _validate_params(self) -> None:
        check_int(self, "n_components", self.n_components, low=1)
        check_int(self, "window", self.window, low=1)
        check_int(self, "min_count", self.min_count, low=1)
        check_int(self, "max_vocab", self.max_vocab, low=2, allow_none=True)
        check_float(self, "alpha", self.alpha, low=0.0, high=1.0, low_open=True)
        check_float(self, "shift", self.shift, low=1.0)
        check_float(self, "eig", self.eig, low=0.0, high=1.0)
        check_choice(self, "algorithm", self.algorithm, ["randomized", "arpack"])
        check_int(self, "n_iter", self.n_iter, low=0)
        check_int(self, "seed", self.seed, low=0)
        for name in ("dynamic_window", "normalize"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"The {name!r} parameter of PPMI must be a bool. Got {getattr(self, name)!r} instead.")

    # ------------------------------------------------------------------ fitting
    def fit(self, texts: Iterable[str], y: Any = None) -> PPMI:
        """Count, weight and factorise; ``texts`` may be any iterable (read once, streamed)."""
        self._validate_params()
        if isinstance(texts, str | bytes):
            check_texts(texts)
        ca = CorpusAnalyzer(self.analyzer if self.analyzer is not None else Analyzer())
        chunks: list[tuple[np.ndarray, np.ndarray]] = []
        n_texts = 0
        for raw, lengths in ca.chunks(texts):
            chunks.append((raw, lengths))
            n_texts += len(lengths)
        if n_texts == 0:
            raise InputError("Cannot fit PPMI on an empty corpus; pass an iterable with at least one text.")
        words, counts, table = self._vocabulary(ca, chunks)
        V = len(words)
        k = int(self.n_components)
        if k >= V:
            raise InputError(
                f"PPMI with n_components={k} needs more than {k} words in the vocabulary but only {V} remain "
                f"(min_count={self.min_count}); lower n_components or min_count, or use a larger corpus."
            )
        C = sp.csr_array((V, V), dtype=np.float32)
        first_doc = 0
        for raw, lengths in chunks:
            tok = table[raw]
            doc = np.repeat(np.arange(first_doc, first_doc + len(lengths), dtype=np.int64), lengths)
            keep = tok >= 0
            C = C + cooccurrence_matrix(tok[keep], doc[keep], V, int(self.window), dynamic=self.dynamic_window)
            first_doc += len(lengths)
        M = self._sppmi(sp.csr_array(C))
        if M.nnz == 0:
            raise InputError("No word pair has positive PMI (texts too short for the window?); use a larger corpus.")
        U, s, _ = truncated_svd(M, k, algorithm=self.algorithm, n_iter=int(self.n_iter), seed=int(self.seed))
        W = (U * s ** float(self.eig)).astype(np.float32)
        if self.normalize:
            norms = np.linalg.norm(W, axis=1, keepdims=True)
            norms[norms == 0] = 1.0
            W /= norms
        self.index_to_key_ = words
        self.key_to_index_ = {w: i for i, w in enumerate(words)}
        self.counts_ = counts
        self.singular_values_ = s.astype(np.float32)
        self.vectors_ = np.ascontiguousarray(W)
        return self

    def _vocabulary(self, ca: CorpusAnalyzer,
                    chunks: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Words (count-descending, ties by word), their counts, and the raw id → word id table."""
        terms_dd: defaultdict[str, int] = defaultdict()
        terms_dd.default_factory = terms_dd.__len__
        prov = np.fromiter((-1 if t is None else terms_dd[t] for t in ca.analyzed), dtype=np.int64,
                           count=len(ca.analyzed))
        raw_counts = np.zeros(len(ca.analyzed), dtype=np.int64)
        for raw, _ in chunks:
            raw_counts += np.bincount(raw, minlength=len(ca.analyzed))
        live = prov >= 0
        counts = np.bincount(prov[live], weights=raw_counts[live], minlength=len(terms_dd)).astype(np.int64)
        terms = list(terms_dd)
        cand = [i for i in np.flatnonzero(counts >= self.min_count).tolist()]
        cand.sort(key=lambda i: (-counts[i], terms[i]))
        if self.max_vocab is not None:
            cand = cand[: self.max_vocab]
        if len(cand) < 2:
            raise InputError(
                f"Only {len(cand)} word(s) occur at least min_count={self.min_count} times; "
                "lower min_count or pass a larger corpus."
            )
        remap = np.full(len(terms), -1, dtype=np.int32)
        remap[np.asarray(cand)] = np.arange(len(cand), dtype=np.int32)
        table = np.where(live, remap[np.maximum(prov, 0)], -1).astype(np.int32)
        return [terms[i] for i in cand], counts[np.asarray(cand)], table

    def _sppmi(self, C: sp.csr_array) -> sp.csr_array:
        C.sum_duplicates()
        w_tot = np.asarray(C.sum(axis=1)).ravel()  # #(w)
        c_tot = np.asarray(C.sum(axis=0)).ravel()  # #(c)
        p_ctx = c_tot ** float(self.alpha)
        p_ctx /= p_ctx.sum()
        rows = np.repeat(np.arange(C.shape[0]), np.diff(C.indptr))
        with np.errstate(divide="ignore"):
            pmi = (np.log(C.data.astype(np.float64)) - np.log(w_tot[rows]) - np.log(p_ctx[C.indices])
                   - np.log(float(self.shift)))
        M = sp.csr_array((np.maximum(pmi, 0.0).astype(np.float32), C.indices.copy(), C.indptr.copy()),
                         shape=C.shape)
        M.eliminate_zeros()
        return M

    # ------------------------------------------------------------------ word-vector protocol
    @property
    def is_fitted(self) -> bool:
        return getattr(self, "vectors_", None) is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(self)

    @property
    def index_to_key(self) -> list[str]:
        self._check_fitted()
        return self.index_to_key_

    @property
    def key_to_index(self) -> dict[str, int]:
        self._check_fitted()
        return self.key_to_index_

    @property
    def vectors(self) -> np.ndarray:
        self._check_fitted()
        return self.vectors_

    @property
    def dim(self) -> int:
        return int(self.n_components)

    def __len__(self) -> int:
        return len(self.index_to_key)

    def __contains__(self, word: object) -> bool:
        return word in self.key_to_index

    def __getitem__(self, word: str) -> np.ndarray:
        try:
            return self.vectors[self.key_to_index[word]]
        except KeyError:
            raise UnknownKeyError(word, "Check the spelling/case, or lower min_count when fitting.") from None

    def most_similar(self, word: str, topn: int = 10) -> list[tuple[str, float]]:
        """The ``topn`` nearest words by cosine similarity (the word itself excluded)."""
        topn = int(check_int(self, "topn", topn, low=1) or 1)
        v = self[word]
        V = self.vectors
        norms = np.linalg.norm(V, axis=1) * max(float(np.linalg.norm(v)), 1e-12)
        sims = (V @ v) / np.maximum(norms, 1e-12)
        sims[self.key_to_index[word]] = -np.inf
        n = min(topn, len(sims) - 1)
        best = np.argpartition(-sims, n - 1)[:n]
        best = best[np.lexsort((best, -sims[best]))]
        return [(self.index_to_key_[i], float(sims[i])) for i in best]

    # ------------------------------------------------------------------ persistence
    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._check_fitted()
        blob, offsets = encode_strings(self.index_to_key_)
        arrays = {"vocab_blob": blob, "vocab_offsets": offsets, "counts": self.counts_.astype(np.int64),
                  "vectors": self.vectors_, "singular_values": self.singular_values_}
        return arrays, {}

    def _set_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        try:
            words = decode_strings(arrays["vocab_blob"], arrays["vocab_offsets"])
            vectors = np.asarray(arrays["vectors"], dtype=np.float32)
            counts = np.asarray(arrays["counts"], dtype=np.int64)
            sv = np.asarray(arrays["singular_values"], dtype=np.float32)
        except KeyError as exc:
            raise FormatError(f"saved PPMI lacks {exc}; the folder is damaged, save it again.") from None
        if vectors.shape != (len(words), self.dim):
            raise FormatError(f"saved PPMI vectors have shape {vectors.shape}, expected ({len(words)}, {self.dim}).")
        self.index_to_key_ = words
        self.key_to_index_ = {w: i for i, w in enumerate(words)}
        self.vectors_ = vectors
        self.counts_ = counts
        self.singular_values_ = sv
