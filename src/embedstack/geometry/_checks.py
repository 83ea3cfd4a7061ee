"""Input checks shared by the geometry functions: one place that turns bad vectors into typed errors."""

from __future__ import annotations

from typing import Any

import numpy as np

from embedstack.errors import ConfigError, DimensionMismatch, InputError

__all__ = ["as_matrix", "check_same_dim", "sample_rows", "is_sparse_matrix"]


def is_sparse_matrix(x: Any) -> bool:
    """True for a scipy sparse matrix or array (checked by duck type, so numpy-only callers pay nothing)."""
    return hasattr(x, "tocsr") and hasattr(x, "nnz")


def as_matrix(x: Any, what: str, *, min_rows: int = 2, allow_sparse: bool = False) -> Any:
    """``x`` as a finite 2-D float matrix with at least ``min_rows`` rows.

    Raises:
        InputError: not 2-D, too few rows (the message names the minimum), or NaN / inf values (the
            message names the first bad row).
    """
    if allow_sparse and is_sparse_matrix(x):
        m = x.tocsr().astype(np.float64)
        data = m.data
        rows = m.shape[0]
        if m.ndim != 2:  # pragma: no cover - scipy sparse is always 2-D
            raise InputError(f"{what} must be a 2-D matrix; got shape {m.shape}.")
    else:
        try:
            m = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{what} must be a 2-D array of numbers (n_vectors, dim); got {type(x).__name__}.") from None
        if m.ndim != 2:
            raise InputError(f"{what} must be a 2-D array (n_vectors, dim); got shape {m.shape}.")
        data = m
        rows = m.shape[0]
    if rows < min_rows:
        raise InputError(f"{what} has {rows} vectors; this statistic needs at least {min_rows}.")
    if m.shape[1] < 1:
        raise InputError(f"{what} has vectors of dimension 0.")
    finite = np.isfinite(data)
    if not finite.all():
        if allow_sparse and is_sparse_matrix(m):
            bad_row = int(np.searchsorted(m.indptr, int(np.flatnonzero(~finite)[0]), side="right") - 1)
        else:
            bad_row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise InputError(f"{what} holds NaN or infinite values (first at row {bad_row}); drop or repair those vectors.")
    return m


def check_same_dim(a: Any, b: Any, what_a: str, what_b: str) -> None:
    """Raise DimensionMismatch unless ``a`` and ``b`` have the same number of columns."""
    if a.shape[1] != b.shape[1]:
        raise DimensionMismatch(f"{what_a} has {a.shape[1]}-d vectors but {what_b} has {b.shape[1]}-d vectors; "
                                "compare vectors from the same model (and the same --dimensions).")


def sample_rows(x: Any, n: int | None, rng: np.random.Generator) -> Any:
    """At most ``n`` rows of ``x`` drawn without replacement (all of them, in order, when ``n`` is None or larger)."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
        raise ConfigError(f"the sample size must be an int >= 2 or None. Got {n!r} instead.")
    if n is None or x.shape[0] <= n:
        return x
    idx = np.sort(rng.choice(x.shape[0], size=n, replace=False))
    return x[idx]
