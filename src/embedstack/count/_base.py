"""The shared machinery of the counting models: vocabulary fitting, count matrices, persistence.

Every counting model is a :class:`_Vectorizer`: it owns an :class:`~embedstack.text.Analyzer`, learns
a vocabulary (alphabetical order, like scikit-learn, so column ``j`` is the ``j``-th term in sorted
order) with ``min_df`` / ``max_df`` / ``max_features`` pruning, and turns texts into a
``scipy.sparse.csr_array`` of term counts built from numpy arrays — no Python loop over documents
beyond tokenization. Subclasses weight the counts (:mod:`embedstack.count.tfidf`,
:mod:`embedstack.count.bm25`).
"""

from __future__ import annotations

import numbers
import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from embedstack._validation import check_float, check_int
from embedstack.base import Component, Role, check_is_fitted
from embedstack.count._analysis import CorpusAnalyzer, check_texts
from embedstack.errors import ConfigError, FormatError, InputError, NotDenseError
from embedstack.text import Analyzer

__all__ = ["encode_strings", "decode_strings", "count_matrix", "row_of_nonzeros"]

# Distinct surface tokens remembered between transform calls before the cache starts afresh.
_TRANSFORM_CACHE_SIZE = 500_000


def encode_strings(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pack strings into a UTF-8 byte blob (uint8) and int64 byte offsets (``len + 1``)."""
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    if encoded:
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


def decode_strings(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    """Inverse of :func:`encode_strings`."""
    raw = np.asarray(blob, dtype=np.uint8).tobytes()
    off = np.asarray(offsets, dtype=np.int64).tolist()
    if len(off) < 1 or off[-1] != len(raw):
        raise FormatError("the stored vocabulary is damaged (offsets do not match the blob); save the model again.")
    try:
        return [raw[a:b].decode("utf-8") for a, b in zip(off[:-1], off[1:], strict=True)]
    except UnicodeDecodeError:
        raise FormatError("the stored vocabulary is not valid UTF-8; save the model again.") from None


def row_of_nonzeros(indptr: np.ndarray) -> np.ndarray:
    """Row index of every stored entry of a CSR matrix with row pointer ``indptr``."""
    n = len(indptr) - 1
    return np.repeat(np.arange(n, dtype=np.int32), np.diff(indptr))


def count_matrix(term_ids: np.ndarray, lengths: np.ndarray, n_terms: int, *, binary: bool = False) -> sp.csr_array:
    """Documents × terms count matrix (float32, canonical CSR) from flat token ids.

    Args:
        term_ids: int32 term id of every token, documents concatenated; ``-1`` entries are skipped.
        lengths: number of tokens (including skipped ones) of each document.
        n_terms: number of columns.
        binary: store 1 for every present term instead of its count.
    """
    n = len(lengths)
    rows = np.repeat(np.arange(n, dtype=np.int32), lengths)
    keep = term_ids >= 0
    if not keep.all():
        rows, term_ids = rows[keep], term_ids[keep]
    data = np.ones(len(rows), dtype=np.float32)
    # Build term-major first: COO -> CSR is a stable counting sort, and the tokens arrive in document
    # order, so every posting list is already sorted and duplicates are adjacent (summed in one linear
    # pass); transposing back is another counting sort. ~2.5x faster than sorting each row.
    T = sp.csr_array((data, (term_ids, rows)), shape=(n_terms, n))
    T.sum_duplicates()
    X = sp.csr_array(T.T.tocsr())
    X.sum_duplicates()  # no-op safeguard: already canonical
    if binary:
        X.data[:] = 1.0
    return X


class _AnalyzerConfig(Component):
    """Config round-trip shared by every counting model: ``_params`` + an Analyzer stored as a dict."""

    _params: ClassVar[tuple[str, ...]] = ()

    def get_config(self) -> dict[str, Any]:
        cfg = {name: getattr(self, name) for name in self._params}
        if cfg.get("analyzer") is not None:
            cfg["analyzer"] = cfg["analyzer"].get_config()
        return cfg

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        cfg = dict(config)
        unknown = set(cfg) - set(cls._params)
        if unknown:
            raise FormatError(f"{cls.__name__} config has unknown keys {sorted(unknown)}; it was saved by another version.")
        if isinstance(cfg.get("analyzer"), dict):
            cfg["analyzer"] = Analyzer.from_config(cfg["analyzer"])
        return cls(**cfg)


class _Vectorizer(_AnalyzerConfig):
    """Base of the counting models: analyzer, vocabulary, count matrices, save/load."""

    requires_fit: ClassVar[bool] = True
    _uses_lengths: ClassVar[bool] = False  # document lengths needed by `_weight` (BM25)
    _params: ClassVar[tuple[str, ...]] = ("analyzer", "binary", "min_df", "max_df", "max_features")

    analyzer: Analyzer | None
    binary: bool
    min_df: float | int
    max_df: float | int
    max_features: int | None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._params if k != "analyzer")
        return f"{type(self).__name__}({args})"

    def _get_analyzer(self) -> Analyzer:
        return self.analyzer if self.analyzer is not None else Analyzer()

    def _validate_params(self) -> None:
        owner = type(self).__name__
        if self.analyzer is not None and not hasattr(self.analyzer, "tokenize"):
            raise ConfigError(
                f"The 'analyzer' parameter of {owner} must be an embedstack.text.Analyzer. "
                f"Got {type(self.analyzer).__name__} instead."
            )
        for name in ("min_df", "max_df"):
            v = getattr(self, name)
            if isinstance(v, numbers.Integral) and not isinstance(v, bool):
                check_int(owner, name, v, low=0 if name == "min_df" else 1)
            else:
                check_float(owner, name, v, low=0.0, high=1.0)
        check_int(owner, "max_features", self.max_features, low=1, allow_none=True)
        if not isinstance(self.binary, bool):
            raise ConfigError(f"The 'binary' parameter of {owner} must be a bool. Got {self.binary!r} instead.")

    # ------------------------------------------------------------------ fitted state
    @property
    def is_fitted(self) -> bool:
        """True once :meth:`fit` (or :meth:`load`) has set the vocabulary."""
        return getattr(self, "vocabulary_", None) is not None

    def _check_fitted(self) -> None:
        check_is_fitted(self, "vocabulary_")

    @property
    def n_features(self) -> int:
        """Vocabulary size (number of columns of the sparse output)."""
        self._check_fitted()
        return len(self.terms_)

    def get_feature_names_out(self) -> np.ndarray:
        """Terms in column order (as scikit-learn's vectorizers name it)."""
        self._check_fitted()
        return np.asarray(self.terms_, dtype=object)

    # ------------------------------------------------------------------ counting
    def _analyze(self, texts: Any, ca: CorpusAnalyzer | None = None) -> tuple[CorpusAnalyzer, np.ndarray, np.ndarray]:
        texts = check_texts(texts)
        ca = ca if ca is not None else CorpusAnalyzer(self._get_analyzer())
        ids_parts, len_parts = [], []
        for ids, lengths in ca.chunks(texts):
            ids_parts.append(ids)
            len_parts.append(lengths)
        raw = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype=np.int32)
        lengths = np.concatenate(len_parts) if len_parts else np.zeros(0, dtype=np.int64)
        return ca, raw, lengths

    def _fit_counts(self, texts: Any) -> tuple[sp.csr_array, np.ndarray]:
        """Learn the vocabulary; return the fitted corpus' count matrix and document lengths."""
        self._validate_params()
        name = type(self).__name__
        ca, raw, lengths = self._analyze(texts)
        n = len(lengths)
        if n == 0:
            raise InputError(f"Cannot fit {name} on an empty corpus; it needs at least one document.")
        terms_dd: defaultdict[str, int] = defaultdict()
        terms_dd.default_factory = terms_dd.__len__
        prov = np.fromiter((-1 if t is None else terms_dd[t] for t in ca.analyzed), dtype=np.int32,
                           count=len(ca.analyzed))
        if len(terms_dd) == 0:
            raise InputError(
                f"Cannot fit {name}: all {n} documents are empty after tokenization (no word survives the "
                "analyzer's stopwords/min_token_length). Pass real text or relax the analyzer."
            )
        # number the terms alphabetically up front, so columns come out sorted with no re-sort later
        term_list = list(terms_dd)
        order = np.asarray(sorted(range(len(term_list)), key=term_list.__getitem__), dtype=np.int32)
        rank = np.empty(len(order), dtype=np.int32)
        rank[order] = np.arange(len(order), dtype=np.int32)
        table = np.where(prov >= 0, rank[np.maximum(prov, 0)], -1).astype(np.int32)
        X = count_matrix(table[raw], lengths, len(order))
        csum = np.concatenate([[0.0], np.cumsum(X.data, dtype=np.float64)])
        dl = np.diff(csum[X.indptr]).astype(np.float32)  # analysed tokens per document
        if self.binary:
            X.data[:] = 1.0
        df = np.bincount(X.indices, minlength=len(order)).astype(np.int64)
        keep = self._prune(df, X, n)
        if not keep.all():
            remap = np.where(keep, np.cumsum(keep) - 1, -1).astype(np.int32)  # monotone: order kept
            X = self._remap_columns(X, remap, int(keep.sum()))
        self.terms_ = [term_list[i] for i in order[keep].tolist()]
        self.vocabulary_ = {t: i for i, t in enumerate(self.terms_)}
        self.df_ = df[keep]
        self.n_docs_ = n
        return X, dl

    def _prune(self, df: np.ndarray, X: sp.csr_array, n: int) -> np.ndarray:
        """Boolean mask of terms kept by min_df / max_df / max_features."""
        lo = self.min_df if isinstance(self.min_df, numbers.Integral) else int(np.ceil(self.min_df * n))
        hi = self.max_df if isinstance(self.max_df, numbers.Integral) else int(np.floor(self.max_df * n))
        if hi < lo:
            raise InputError(
                f"max_df={self.max_df!r} keeps terms in at most {hi} documents but min_df={self.min_df!r} needs at "
                f"least {lo} (corpus of {n} documents); lower min_df or raise max_df."
            )
        keep = (df >= lo) & (df <= hi)
        if self.max_features is not None and keep.sum() > self.max_features:
            tf = np.bincount(X.indices, weights=X.data, minlength=len(df))
            cand = np.flatnonzero(keep)
            # most frequent first; ties broken alphabetically (columns are in alphabetical order)
            best = cand[np.argsort(-tf[cand], kind="stable")[: self.max_features]]
            keep = np.zeros_like(keep)
            keep[best] = True
        if not keep.any():
            raise InputError(
                f"After pruning (min_df={self.min_df!r}, max_df={self.max_df!r}) no term is left in the "
                f"vocabulary of {type(self).__name__}; lower min_df or raise max_df."
            )
        return keep

    @staticmethod
    def _remap_columns(X: sp.csr_array, remap: np.ndarray, n_terms: int) -> sp.csr_array:
        cols = remap[X.indices]
        mask = cols >= 0
        rows = row_of_nonzeros(X.indptr)[mask]
        indptr = np.zeros(X.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=X.shape[0]), out=indptr[1:])
        # `remap` is increasing on kept columns, so every row stays sorted
        return sp.csr_array((X.data[mask], cols[mask], indptr.astype(X.indices.dtype)), shape=(X.shape[0], n_terms))

    def _counts(self, texts: Any, *, with_lengths: bool = False) -> tuple[sp.csr_array, np.ndarray]:
        """Count matrix of new texts over the fitted vocabulary (unknown terms dropped).

        With ``with_lengths`` also the analysed length of each text (unknown terms included,
        stopwords excluded), otherwise an empty array. Surface tokens seen by earlier calls are
        remembered (with their term id), so a stream of queries is analysed once per new word.
        """
        self._check_fitted()
        with self._transform_lock():
            cache = getattr(self, "_transform_cache", None)
            if cache is None or cache[0] is not self.vocabulary_ or len(cache[2]) > _TRANSFORM_CACHE_SIZE:
                cache = (self.vocabulary_, CorpusAnalyzer(self._get_analyzer()), np.zeros(0, dtype=np.int32))
            vocab, ca, table = cache
            ca, raw, lengths = self._analyze(texts, ca)
            if len(table) < len(ca.analyzed):  # term ids of the raw tokens seen for the first time
                get = vocab.get
                new = ca.analyzed[len(table):]
                table = np.concatenate([table, np.fromiter((-1 if t is None else get(t, -1) for t in new),
                                                           dtype=np.int32, count=len(new))])
            self._transform_cache = (vocab, ca, table)
            kept = ca.kept_mask()[raw] if with_lengths and len(raw) else np.zeros(0, dtype=bool)
        tok = table[raw] if len(raw) else np.zeros(0, dtype=np.int32)
        dl = np.zeros(0, dtype=np.float32)
        if with_lengths:
            rows = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
            dl = np.bincount(rows, weights=kept, minlength=len(lengths)).astype(np.float32)
        return count_matrix(tok, lengths, len(self.terms_), binary=self.binary), dl

    def __getstate__(self) -> dict[str, Any]:
        # copy.deepcopy support: drop the lock and the derived caches (they are rebuilt on demand)
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_transform_cache", "_impacts_cache")}

    def _transform_lock(self) -> threading.Lock:
        lock = getattr(self, "_lock", None)
        if lock is None:
            lock = self._lock = threading.Lock()
        return lock

    # ------------------------------------------------------------------ weighting hooks
    def _weight(self, X: sp.csr_array, dl: np.ndarray, role: Role) -> sp.csr_array:
        """Turn a count matrix into the model's term weights (identity for bag of words)."""
        return X

    def _fit_weights(self, X: sp.csr_array, dl: np.ndarray) -> None:
        """Learn weighting statistics (idf, average length) from the fitted corpus' counts."""

    # ------------------------------------------------------------------ scikit-learn API
    def fit(self, texts: Sequence[str], y: Any = None) -> Any:
        """Learn the vocabulary (and weighting statistics) from ``texts``; return self."""
        X, dl = self._fit_counts(texts)
        self._fit_weights(X, dl)
        return self

    def fit_transform(self, texts: Sequence[str], y: Any = None) -> sp.csr_array:
        """Fit on ``texts`` and return their document rows, tokenizing only once."""
        X, dl = self._fit_counts(texts)
        self._fit_weights(X, dl)
        return self._weight(X, dl, "document")

    def transform(self, texts: Sequence[str]) -> sp.csr_array:
        """Document rows of ``texts`` (``csr_array`` of shape ``(n, n_features)``, float32)."""
        return self.encode_sparse(texts, role="document")

    def __getattr__(self, name: str) -> Any:
        if name == "encode":  # a dense-encoder habit (sentence-transformers): say what to call instead
            raise NotDenseError(
                f"{type(self).__name__} is a sparse model: it has no dense .encode(). Call "
                f".encode_sparse(texts) for its scipy.sparse rows, or use a dense spec such as 'lsa:256'.")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def encode_sparse(self, texts: Sequence[str], *, role: Role = "document") -> sp.csr_array:
        """Sparse rows of ``texts`` for the given ``role`` (SparseEncoder protocol)."""
        if role not in ("document", "query"):
            raise ConfigError(f"role must be 'document' or 'query'. Got {role!r} instead.")
        X, dl = self._counts(texts, with_lengths=self._uses_lengths and role == "document")
        return self._weight(X, dl, role)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._check_fitted()
        blob, offsets = encode_strings(self.terms_)
        arrays = {"vocab_blob": blob, "vocab_offsets": offsets, "df": np.asarray(self.df_, dtype=np.int64)}
        return arrays, {"n_docs": int(self.n_docs_)}

    def _set_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        try:
            self.terms_ = decode_strings(arrays["vocab_blob"], arrays["vocab_offsets"])
            self.df_ = np.asarray(arrays["df"], dtype=np.int64)
            self.n_docs_ = int(state["n_docs"])
        except KeyError as exc:
            raise FormatError(f"saved {type(self).__name__} lacks {exc}; the folder is damaged, save it again.") from None
        self.vocabulary_ = {t: i for i, t in enumerate(self.terms_)}
