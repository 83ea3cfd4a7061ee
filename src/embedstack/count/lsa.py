"""Latent semantic analysis: a truncated SVD of the TF-IDF matrix, used as a dense encoder.

``X ≈ U Σ Vᵀ``; a text's vector is its TF-IDF row projected on the top ``k`` right singular vectors
(``x Vₖ``), so documents and queries go through exactly the same map. The SVD is a randomized range
finder with power iterations (Halko, Martinsson & Tropp 2011) written here in numpy, or ARPACK
(``scipy.sparse.linalg.svds``); signs are fixed so that each component's largest-magnitude entry
is positive, which makes results reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from embedstack._validation import check_choice, check_int
from embedstack.base import Role, one_text_one_vector
from embedstack.count._analysis import check_texts
from embedstack.count._base import _AnalyzerConfig
from embedstack.count.tfidf import TfIdf
from embedstack.errors import ConfigError, FormatError, InputError, NotFittedError
from embedstack.registry import register
from embedstack.text import Analyzer

__all__ = ["LSA", "randomized_svd", "truncated_svd"]


def _flip_signs(U: np.ndarray, Vt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make the largest-|value| entry of every row of ``Vt`` positive (and flip ``U`` alike)."""
    biggest = np.argmax(np.abs(Vt), axis=1)
    signs = np.sign(Vt[np.arange(Vt.shape[0]), biggest])
    signs[signs == 0] = 1.0
    return U * signs, Vt * signs[:, None]


def randomized_svd(A: Any, k: int, *, n_oversamples: int = 10, n_iter: int = 5, seed: int = 0,
                   dtype: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` singular triplets of a dense or sparse matrix by a randomized range finder.

    Args:
        A: matrix of shape (m, n) (numpy or scipy.sparse).
        k: number of singular values, ``1 <= k <= min(m, n)``.
        n_oversamples: extra random directions (improves accuracy).
        n_iter: power iterations (each renormalised with an LU factorisation).
        seed: random seed; the result is deterministic for a given seed.
        dtype: precision of the power iterations (default: float32 for float32 input, else
            float64). The small final eigenproblem is always solved in float64.

    Returns:
        ``(U (m, k), s (k,) descending, Vt (k, n))`` in float64, sign-fixed.

    Example:
        >>> A = np.diag([3.0, 2.0, 1.0])
        >>> randomized_svd(A, 2)[1].round(6).tolist()
        [3.0, 2.0]
    """
    m, n = A.shape
    if not 1 <= k <= min(m, n):
        raise InputError(f"randomized_svd: k={k} must be in [1, min(m, n)={min(m, n)}]; ask for fewer components.")
    rng = np.random.default_rng(seed)
    width = min(k + n_oversamples, min(m, n))
    work = np.dtype(dtype) if dtype is not None else (
        np.dtype(np.float32) if A.dtype == np.float32 else np.dtype(np.float64))
    if sp.issparse(A):  # one cast (not one per product) and a row-major transpose
        A = sp.csr_array(A, dtype=work)
        At = A.T.tocsr()
    else:
        A = np.asarray(A, dtype=work)
        At = A.T
    Y = A @ rng.standard_normal((n, width)).astype(work)  # (m, width)
    for _ in range(n_iter):
        # LU keeps the power iterates well-conditioned at a fraction of QR's cost (as in Halko et al.
        # and scikit-learn); only the final basis needs to be orthonormal.
        Q = scipy.linalg.lu(Y, permute_l=True, overwrite_a=True, check_finite=False)[0]
        Z = scipy.linalg.lu(np.asarray(At @ Q), permute_l=True, overwrite_a=True, check_finite=False)[0]  # (n, width)
        Y = A @ Z
    Q, _ = scipy.linalg.qr(Y, mode="economic", check_finite=False)  # (m, width) orthonormal range basis
    B = np.ascontiguousarray(np.asarray(At @ Q, dtype=np.float64).T)  # (width, n) = Qᵀ A
    Q = Q.astype(np.float64, copy=False)
    # SVD of the short, wide B through its small Gram matrix: B Bᵀ = Ub Σ² Ubᵀ (one GEMM + a
    # width × width eigendecomposition, ~10x cheaper than LAPACK's SVD of B for LSA shapes).
    evals, Ub = scipy.linalg.eigh(B @ B.T, check_finite=False)
    order = np.argsort(evals)[::-1][:k]
    s = np.sqrt(np.maximum(evals[order], 0.0))
    Ub = Ub[:, order]
    Vt = (Ub.T @ B) / np.where(s > 0, s, 1.0)[:, None]
    U = Q @ Ub
    U, Vt = _flip_signs(U, Vt)
    return U, s, Vt


def truncated_svd(A: Any, k: int, *, algorithm: str = "randomized", n_iter: int = 5,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` SVD with ``algorithm`` "randomized" (:func:`randomized_svd`) or "arpack" (svds)."""
    if algorithm == "randomized":
        return randomized_svd(A, k, n_iter=n_iter, seed=seed)
    from scipy.sparse.linalg import svds

    v0 = np.random.default_rng(seed).uniform(-1, 1, min(A.shape))
    U, s, Vt = svds(A.astype(np.float64), k=k, v0=v0, solver="arpack")
    order = np.argsort(-s)
    U, Vt = _flip_signs(U[:, order], Vt[order])
    return U, s[order], Vt


@register("LSA")
class LSA(_AnalyzerConfig):
    """Dense document vectors from a truncated SVD of TF-IDF (``DenseEncoder``).

    Args:
        n_components: output dimension ``k`` (must be below the corpus' vocabulary size and its
            number of documents).
        analyzer: text → tokens pipeline (default ``Analyzer()``).
        sublinear_tf: TF-IDF with ``1 + ln(tf)`` (default True).
        min_df, max_df, max_features: TF-IDF vocabulary pruning.
        algorithm: "randomized" (default) or "arpack".
        n_iter: power iterations of the randomized SVD.
        normalize: L2-normalise output vectors (so inner product = cosine).
        seed: random seed of the SVD.

    Example:
        >>> docs = ["cats purr", "dogs bark", "cats and dogs", "a cat purrs", "the dog barks loudly"]
        >>> lsa = LSA(n_components=2).fit(docs)
        >>> lsa.encode(["cats"]).shape
        (1, 2)
    """

    requires_fit: ClassVar[bool] = True
    _params: ClassVar[tuple[str, ...]] = (
        "n_components", "analyzer", "sublinear_tf", "min_df", "max_df", "max_features",
        "algorithm", "n_iter", "normalize", "seed",
    )

    def __init__(
        self,
        n_components: int = 256,
        *,
        analyzer: Analyzer | None = None,
        sublinear_tf: bool = True,
        min_df: float | int = 1,
        max_df: float | int = 1.0,
        max_features: int | None = None,
        algorithm: str = "randomized",
        n_iter: int = 5,
        normalize: bool = True,
        seed: int = 0,
    ) -> None:
        self.n_components = n_components
        self.analyzer = analyzer
        self.sublinear_tf = sublinear_tf
        self.min_df = min_df
        self.max_df = max_df
        self.max_features = max_features
        self.algorithm = algorithm
        self.n_iter = n_iter
        self.normalize = normalize
        self.seed = seed

    def __repr__(self) -> str:
        return f"LSA(n_components={self.n_components!r}, algorithm={self.algorithm!r})"


    def _make_tfidf(self) -> TfIdf:
        return TfIdf(analyzer=self.analyzer, sublinear_tf=self.sublinear_tf, min_df=self.min_df,
                     max_df=self.max_df, max_features=self.max_features)

    # ------------------------------------------------------------------ fitted state
    @property
    def dim(self) -> int:
        """Output dimension."""
        return int(self.n_components)

    @property
    def is_fitted(self) -> bool:
        return getattr(self, "components_", None) is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(self)

    # ------------------------------------------------------------------ fitting
    def fit(self, texts: Sequence[str], y: Any = None) -> LSA:
        """Fit TF-IDF and the truncated SVD on ``texts``; return self."""
        self._fit(texts)
        return self

    def fit_transform(self, texts: Sequence[str], y: Any = None) -> np.ndarray:
        """Fit on ``texts`` and return their vectors (float32, (n, dim))."""
        return self._finish(self._fit(texts))

    def _fit(self, texts: Sequence[str]) -> np.ndarray:
        k = int(check_int(self, "n_components", self.n_components, low=1) or 0)
        check_choice(self, "algorithm", self.algorithm, ["randomized", "arpack"])
        check_int(self, "n_iter", self.n_iter, low=0)
        check_int(self, "seed", self.seed, low=0)
        if not isinstance(self.normalize, bool):
            raise ConfigError(f"The 'normalize' parameter of LSA must be a bool. Got {self.normalize!r} instead.")
        tfidf = self._make_tfidf()
        X = tfidf.fit_transform(check_texts(texts))
        limit = min(X.shape)
        if k >= limit:
            raise InputError(
                f"LSA with n_components={k} needs more than {k} documents and more than {k} distinct terms, "
                f"but the corpus has {X.shape[0]} documents and {X.shape[1]} terms; use n_components "
                f"(lsa:DIM) below {limit}."
            )
        _, s, Vt = truncated_svd(X, int(k), algorithm=self.algorithm, n_iter=int(self.n_iter), seed=int(self.seed))
        self.tfidf_ = tfidf
        self.components_ = Vt.astype(np.float32)  # (k, n_terms)
        self.singular_values_ = s.astype(np.float32)
        self._projection = np.ascontiguousarray(self.components_.T)  # (n_terms, k), reused by every encode
        return np.asarray(X @ self._projection, dtype=np.float32)

    def _finish(self, Z: np.ndarray) -> np.ndarray:
        Z = np.ascontiguousarray(Z, dtype=np.float32)
        if self.normalize and len(Z):
            norms = np.linalg.norm(Z, axis=1, keepdims=True)
            norms[norms == 0] = 1.0
            Z /= norms
        return Z

    # ------------------------------------------------------------------ encoding
    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` (float32, (n, dim))."""
        return self.encode(texts)

    @one_text_one_vector
    def encode(self, texts: Sequence[str], *, role: Role = "document", batch_size: int = 64) -> np.ndarray:
        """Project the TF-IDF rows of ``texts`` on the learned components (DenseEncoder protocol).

        Queries and documents are encoded identically; ``batch_size`` is accepted for the protocol
        (the sparse product handles any batch at once).
        """
        self._check_fitted()
        if role not in ("document", "query"):
            raise ConfigError(f"role must be 'document' or 'query'. Got {role!r} instead.")
        texts = check_texts(texts)
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        X: sp.csr_array = self.tfidf_.transform(texts)
        return self._finish(X @ self._projection)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._check_fitted()
        arrays, state = self.tfidf_._state()
        arrays["components"] = self.components_
        arrays["singular_values"] = self.singular_values_
        return arrays, state

    def _set_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        tfidf = self._make_tfidf()
        tfidf._set_state(arrays, state)
        if "components" not in arrays or arrays["components"].shape != (self.dim, len(tfidf.terms_)):
            raise FormatError("saved LSA components do not match its vocabulary/dimension; save the model again.")
        self.tfidf_ = tfidf
        self.components_ = np.asarray(arrays["components"], dtype=np.float32)
        self.singular_values_ = np.asarray(arrays["singular_values"], dtype=np.float32)
        self._projection = np.ascontiguousarray(self.components_.T)
