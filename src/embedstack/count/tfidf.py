"""TF-IDF: counts re-weighted by inverse document frequency, with scikit-learn's conventions.

With ``smooth_idf=True`` (default) ``idf(t) = ln((1 + n) / (1 + df(t))) + 1``, otherwise
``ln(n / df(t)) + 1``; ``sublinear_tf`` replaces a count ``tf`` by ``1 + ln(tf)``; rows are then
L2-normalised (``norm="l2"``), L1-normalised or left alone. Given the same tokens these are exactly
the numbers of ``sklearn.feature_extraction.text.TfidfVectorizer`` (a test checks it).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from embedstack._validation import check_choice
from embedstack.base import Role
from embedstack.count._base import _Vectorizer, row_of_nonzeros
from embedstack.errors import ConfigError, FormatError
from embedstack.registry import register
from embedstack.text import Analyzer

__all__ = ["TfIdf", "normalize_rows"]


def normalize_rows(X: sp.csr_array, norm: str | None) -> sp.csr_array:
    """Scale each row of ``X`` in place to unit L2 / L1 norm (empty rows stay empty)."""
    if norm is None or X.nnz == 0:
        return X
    rows = row_of_nonzeros(X.indptr)
    vals = X.data * X.data if norm == "l2" else np.abs(X.data)
    norms = np.bincount(rows, weights=vals, minlength=X.shape[0])
    if norm == "l2":
        norms = np.sqrt(norms)
    norms[norms == 0] = 1.0
    X.data /= norms[rows].astype(X.data.dtype)
    return X


class _Weighted(_Vectorizer):
    """A vectorizer whose weights use an idf vector (TF-IDF and its sibling BM25)."""

    idf_: np.ndarray

    def _compute_idf(self, df: np.ndarray, n: int) -> np.ndarray:
        raise NotImplementedError

    def _fit_weights(self, X: sp.csr_array, dl: np.ndarray) -> None:
        self.idf_ = self._compute_idf(self.df_.astype(np.float64), self.n_docs_).astype(np.float32)

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, state = super()._state()
        arrays["idf"] = np.asarray(self.idf_, dtype=np.float32)
        return arrays, state

    def _set_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        super()._set_state(arrays, state)
        if "idf" not in arrays or len(arrays["idf"]) != len(self.terms_):
            raise FormatError(f"saved {type(self).__name__} has no idf matching its vocabulary; save it again.")
        self.idf_ = np.asarray(arrays["idf"], dtype=np.float32)


@register("TfIdf")
class TfIdf(_Weighted):
    """TF-IDF rows (float32 ``csr_array``), the classic vector-space model.

    Args:
        analyzer: text → tokens pipeline (default ``Analyzer()``).
        norm: "l2" (default), "l1" or None.
        use_idf: multiply by the idf (otherwise plain, possibly sublinear, tf).
        smooth_idf: add one to document counts as if an extra document held every term once.
        sublinear_tf: use ``1 + ln(tf)`` instead of ``tf``.
        binary, min_df, max_df, max_features: as in :class:`~embedstack.count.BagOfWords`.

    Example:
        >>> tfidf = TfIdf().fit(["the cat sat", "the dog sat", "a cat"])
        >>> row = tfidf.transform(["cat cat"]).toarray()[0]
        >>> float(row[tfidf.vocabulary_["cat"]])
        1.0
    """

    _params: ClassVar[tuple[str, ...]] = _Vectorizer._params + ("norm", "use_idf", "smooth_idf", "sublinear_tf")

    def __init__(
        self,
        *,
        analyzer: Analyzer | None = None,
        norm: str | None = "l2",
        use_idf: bool = True,
        smooth_idf: bool = True,
        sublinear_tf: bool = False,
        binary: bool = False,
        min_df: float | int = 1,
        max_df: float | int = 1.0,
        max_features: int | None = None,
    ) -> None:
        self.analyzer = analyzer
        self.norm = norm
        self.use_idf = use_idf
        self.smooth_idf = smooth_idf
        self.sublinear_tf = sublinear_tf
        self.binary = binary
        self.min_df = min_df
        self.max_df = max_df
        self.max_features = max_features

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.norm is not None:
            check_choice(self, "norm", self.norm, ["l2", "l1"])
        for name in ("use_idf", "smooth_idf", "sublinear_tf"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"The {name!r} parameter of TfIdf must be a bool. Got {getattr(self, name)!r} instead.")

    def _compute_idf(self, df: np.ndarray, n: int) -> np.ndarray:
        s = 1.0 if self.smooth_idf else 0.0
        return np.log((n + s) / (df + s)) + 1.0

    def _weight(self, X: sp.csr_array, dl: np.ndarray, role: Role) -> sp.csr_array:
        if self.sublinear_tf:
            np.log(X.data, out=X.data)
            X.data += 1.0
        if self.use_idf:
            X.data *= self.idf_[X.indices]
        return normalize_rows(X, self.norm)
