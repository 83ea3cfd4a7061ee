"""How anisotropic an embedding space is: the mean cosine of random pairs and the variance in the top directions.

Ethayarajh (2019) measured anisotropy as the expected cosine between the vectors of random inputs: near
0 for a space whose directions are used evenly (isotropic), near 1 when every vector points into one
narrow cone. Two complementary views are computed here, both on unit-normalised rows (cosine geometry):

* :func:`mean_cosine` — the mean cosine over **every** pair of a sample of ``n`` vectors, exactly, in
  O(n·d): with unit rows ``u_i`` and ``s = Σ u_i``, ``Σ_{i≠j} u_i·u_j = s·s − n``. Its 95% confidence
  interval comes from the jackknife over the sampled vectors (each leave-one-out mean is O(d) from the
  same identity), so it accounts for pairs sharing vectors, which a naive per-pair interval does not.
* :func:`variance_shares` — the share of the (centred) variance carried by the top 1, 10 ... principal
  directions, from the covariance spectrum (or the Gram matrix when there are fewer vectors than
  dimensions, which also serves sparse TF-IDF rows without densifying them).

Example:
    >>> rng = np.random.default_rng(0)
    >>> iso = rng.standard_normal((2000, 64))
    >>> abs(mean_cosine(iso).mean) < 0.005
    True
    >>> round(mean_cosine(iso + 3.0).mean, 1)  # a shared offset: every vector in one cone
    0.9
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from embedstack.errors import ConfigError
from embedstack.geometry._checks import as_matrix, is_sparse_matrix, sample_rows

__all__ = ["MeanCosine", "mean_cosine", "variance_shares", "anisotropy", "spectrum"]

_Z95 = 1.959963984540054


@dataclass(frozen=True)
class MeanCosine:
    """Mean cosine of distinct pairs with a jackknife 95% interval; ``n`` vectors (``zero_rows`` left out)."""

    mean: float
    low: float
    high: float
    n: int
    zero_rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _unit_rows(x: Any) -> tuple[Any, int]:
    """Rows scaled to unit norm; all-zero rows (an empty text under TF-IDF) are dropped and counted."""
    if is_sparse_matrix(x):
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        keep = norms > 0
        x = x[np.flatnonzero(keep)]
        inv = 1.0 / norms[keep]
        import scipy.sparse as sp

        return sp.csr_array(sp.diags(inv) @ x), int((~keep).sum())
    norms = np.linalg.norm(x, axis=1)
    keep = norms > 0
    return x[keep] / norms[keep, None], int((~keep).sum())


def mean_cosine(x: Any, *, sample: int | None = 2000, seed: int = 0) -> MeanCosine:
    """The mean cosine over all distinct pairs of (a random sample of) the rows of ``x``, with a 95% interval.

    Args:
        x: ``(n, dim)`` vectors, dense or scipy sparse.
        sample: vectors drawn at random (without replacement) before the exact all-pairs mean; None = all.
        seed: the sample's seed.

    Raises:
        InputError: fewer than 3 non-zero vectors, or NaN / inf values.
    """
    m = as_matrix(x, "the vectors", min_rows=3, allow_sparse=True)
    m = sample_rows(m, sample, np.random.default_rng(seed))
    u, zero = _unit_rows(m)
    n = u.shape[0]
    if n < 3:
        raise ConfigError(f"mean_cosine needs at least 3 non-zero vectors; got {n} ({zero} all-zero rows left out).")
    s = np.asarray(u.sum(axis=0)).ravel()  # (dim,)
    ss = float(s @ s)
    mean = (ss - n) / (n * (n - 1))
    # jackknife: leave vector i out -> ||s - u_i||^2 = ss - 2 s.u_i + 1, over (n-1)(n-2) ordered pairs
    su = np.asarray(u @ s).ravel()  # (n,)
    loo = (ss - 2.0 * su + 1.0 - (n - 1)) / ((n - 1) * (n - 2))
    se = float(np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))
    return MeanCosine(mean=float(mean), low=float(mean - _Z95 * se), high=float(mean + _Z95 * se), n=int(n),
                      zero_rows=zero)


def spectrum(x: Any, *, sample: int | None = 2000, seed: int = 0, normalize_rows: bool = True) -> np.ndarray:
    """Eigenvalues of the covariance of (a sample of) ``x``, descending (float64; the non-zero part).

    Rows are unit-normalised first unless ``normalize_rows=False``. With fewer rows than dimensions
    (or sparse rows) the spectrum comes from the centred Gram matrix, which has the same non-zero
    eigenvalues and never densifies a sparse matrix.
    """
    m = as_matrix(x, "the vectors", min_rows=2, allow_sparse=True)
    m = sample_rows(m, sample, np.random.default_rng(seed))
    if normalize_rows:
        m, _ = _unit_rows(m)
    n, d = m.shape
    if n < 2:
        raise ConfigError(f"the spectrum needs at least 2 non-zero vectors; got {n}.")
    mu = np.asarray(m.mean(axis=0)).ravel()  # (d,)
    if is_sparse_matrix(m) or n < d:
        g = m @ m.T
        g = g.toarray() if is_sparse_matrix(g) else np.asarray(g, dtype=np.float64)  # (n, n)
        xm = np.asarray(m @ mu).ravel()  # (n,)
        g = g - xm[:, None] - xm[None, :] + float(mu @ mu)
        evals = np.linalg.eigvalsh(g / n)
    else:
        c = m - mu
        evals = np.linalg.eigvalsh(c.T @ c / n)
    return np.clip(evals[::-1], 0.0, None)


def variance_shares(x: Any, top: Sequence[int] = (1, 10), *, sample: int | None = 2000, seed: int = 0) -> dict[int, float]:
    """Share of the total (centred) variance in the top ``k`` principal directions, for each ``k`` in ``top``."""
    ks = list(top)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ConfigError(f"top must be positive ints such as (1, 10). Got {top!r} instead.")
    ev = spectrum(x, sample=sample, seed=seed)
    total = float(ev.sum())
    if total <= 0:
        return {k: 1.0 for k in ks}
    csum = np.cumsum(ev)
    return {k: float(csum[min(k, ev.size) - 1] / total) for k in ks}


def anisotropy(x: Any, *, sample: int | None = 2000, seed: int = 0, top: Sequence[int] = (1, 10)) -> dict[str, Any]:
    """Mean pairwise cosine (with its 95% interval) and top-direction variance shares of ``x``.

    Returns:
        ``mean_cosine``, ``ci_low``, ``ci_high``, ``n`` (vectors used), ``zero_rows``, ``dim`` and
        ``top{k}_share`` for each ``k`` in ``top``.

    Example:
        >>> a = anisotropy(np.random.default_rng(0).standard_normal((500, 32)))
        >>> abs(a["mean_cosine"]) < 0.01, 0.0 < a["top1_share"] < 0.1
        (True, True)
    """
    m = sample_rows(as_matrix(x, "the vectors", min_rows=3, allow_sparse=True), sample, np.random.default_rng(seed))
    mc = mean_cosine(m, sample=None)  # one sample, checked once, shared by both statistics
    shares = variance_shares(m, top, sample=None)
    out: dict[str, Any] = {"mean_cosine": mc.mean, "ci_low": mc.low, "ci_high": mc.high, "n": mc.n,
                           "zero_rows": mc.zero_rows, "dim": int(x.shape[1])}
    out.update({f"top{k}_share": v for k, v in shares.items()})
    return out
