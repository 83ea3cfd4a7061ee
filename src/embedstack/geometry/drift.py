"""Has the distribution of embeddings moved? Two-sample tests between a reference batch and a new batch.

Five statistics, each calibrated the same way: a **permutation test**. The two batches are pooled, the
"reference"/"new" labels are shuffled ``permutations`` times, and the statistic recomputed; the
p-value is the share of shuffles at least as extreme as the observed value, and the alarm threshold
the ``1 − alpha`` quantile of the shuffled values. Under no drift every statistic's alarm rate is then
``alpha`` by construction, whatever the model or dimension (measured in BENCHMARKS.md, drift).

* ``mean_shift`` — ``‖mean(new) − mean(ref)‖₂``: a moved centroid (topic mix, a new model version).
* ``covariance`` — ``‖C_new − C_ref‖_F / ‖C_ref‖_F`` in the top ``pca_dim`` principal directions of the
  pooled batches: a changed spread or orientation, even with the centroid in place.
* ``mean_cosine`` — ``|meancos(new) − meancos(ref)|`` of distinct pairs: the cone widening or narrowing
  (anisotropy, :mod:`embedstack.geometry.anisotropy`).
* ``mmd`` — the unbiased squared maximum mean discrepancy with a Gaussian kernel whose bandwidth is the
  median pooled distance (Gretton et al. 2012): any difference of distributions, given enough data.
* ``classifier`` — the cross-validated ROC AUC of a linear classifier (shrinkage LDA on the pooled top
  ``pca_dim`` directions, 5 folds) told to separate the batches; 0.5 = indistinguishable. This is the
  "domain classifier" test Evidently recommends for embeddings, with a permutation threshold instead of
  a fixed AUC cut-off.

:func:`detect_drift` runs the chosen tests; its overall verdict applies Bonferroni's correction (alarm
when some test's p-value ≤ ``alpha / n_tests``), so running five tests does not multiply false alarms.

Example:
    >>> rng = np.random.default_rng(0)
    >>> ref, same = rng.standard_normal((300, 16)), rng.standard_normal((300, 16))
    >>> detect_drift(ref, same, permutations=99).drift
    False
    >>> detect_drift(ref, same + 0.5, permutations=99).drift
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedstack.errors import ConfigError
from embedstack.geometry._checks import as_matrix, check_same_dim, sample_rows

__all__ = ["DRIFT_TESTS", "MIN_BATCH", "DriftTest", "DriftReport", "detect_drift", "roc_auc"]

DRIFT_TESTS = ("mean_shift", "covariance", "mean_cosine", "mmd", "classifier")
#: The fewest vectors per batch the tests accept (the classifier's 5 folds need a few of each batch).
MIN_BATCH = 20
_FOLDS = 5


@dataclass(frozen=True)
class DriftTest:
    """One statistic: observed value, permutation threshold and p-value, and whether it alarms at ``alpha``."""

    name: str
    statistic: float
    threshold: float
    p_value: float
    drift: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "statistic": self.statistic, "threshold": self.threshold,
                "p_value": self.p_value, "drift": self.drift}


@dataclass
class DriftReport:
    """The tests' results; ``drift`` is the Bonferroni-corrected overall alarm."""

    tests: dict[str, DriftTest]
    alpha: float
    n_reference: int
    n_new: int
    permutations: int
    drift: bool = field(init=False)

    def __post_init__(self) -> None:
        self.drift = bool(self.alarms)

    @property
    def alarms(self) -> list[str]:
        """The tests whose p-value is at most ``alpha / n_tests`` (Bonferroni): the ones that raise the alarm."""
        m = max(1, len(self.tests))
        return [name for name, t in self.tests.items() if t.p_value <= self.alpha / m]

    def to_dict(self) -> dict[str, Any]:
        return {"drift": self.drift, "alpha": self.alpha, "n_reference": self.n_reference, "n_new": self.n_new,
                "permutations": self.permutations, "tests": {k: t.to_dict() for k, t in self.tests.items()}}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (1 = positive), ties counted half (Mann-Whitney U)."""
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ConfigError("roc_auc needs both classes among the labels.")
    from embedstack.evaluation.metrics import rankdata

    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# ---------------------------------------------------------------------------------------------- statistics
# Each statistic takes the pooled matrix and a boolean matrix of group memberships, one column per
# labelling (column 0 = the observed one, then the shuffles), and returns one value per column.


def _mean_shift(z: np.ndarray, groups: np.ndarray) -> np.ndarray:
    g = groups.astype(np.float64)  # (N, P)
    n_a = g.sum(axis=0)
    total = z.sum(axis=0)  # (d,)
    sum_a = g.T @ z  # (P, d)
    diff = sum_a / n_a[:, None] - (total[None, :] - sum_a) / (z.shape[0] - n_a)[:, None]
    return np.linalg.norm(diff, axis=1)


def _mean_cosine(z: np.ndarray, groups: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    u = z / np.where(norms > 0, norms, 1.0)
    g = groups.astype(np.float64)
    n_a = g.sum(axis=0)
    n_b = u.shape[0] - n_a
    s_a = g.T @ u  # (P, d)
    s_b = u.sum(axis=0)[None, :] - s_a
    nz = (norms[:, 0] > 0).astype(np.float64)
    k_a = g.T @ nz  # unit rows in each group (zero vectors add nothing to s)
    k_b = nz.sum() - k_a
    mc_a = (np.einsum("pd,pd->p", s_a, s_a) - k_a) / (n_a * (n_a - 1))
    mc_b = (np.einsum("pd,pd->p", s_b, s_b) - k_b) / (n_b * (n_b - 1))
    return np.abs(mc_b - mc_a)


def _pca(z: np.ndarray, dim: int) -> np.ndarray:
    """The pooled vectors in their top ``dim`` principal directions (label-free, so permutation-safe)."""
    c = z - z.mean(axis=0)
    if c.shape[1] <= dim:
        return c
    evals, evecs = np.linalg.eigh(c.T @ c)
    return c @ evecs[:, np.argsort(evals)[::-1][:dim]]


def _covariance(y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    n = y.shape[0]
    g = groups.astype(np.float64)  # (N, P)
    n_a = g.sum(axis=0)
    n_b = n - n_a
    sum_a = g.T @ y  # (P, d)
    sum_b = y.sum(axis=0)[None, :] - sum_a
    s2 = y.T @ y  # (d, d): both groups' second moments add up to it
    out = np.empty(groups.shape[1])
    for lo in range(0, groups.shape[1], 64):  # batched: one BLAS call per 64 labellings, not one per labelling
        hi = min(lo + 64, groups.shape[1])
        s2a = np.matmul((g[:, lo:hi].T[:, :, None] * y[None]).transpose(0, 2, 1), y)  # (p, d, d)
        mu_a = sum_a[lo:hi] / n_a[lo:hi, None]
        mu_b = sum_b[lo:hi] / n_b[lo:hi, None]
        ca = s2a / n_a[lo:hi, None, None] - np.einsum("pi,pj->pij", mu_a, mu_a)
        cb = (s2[None] - s2a) / n_b[lo:hi, None, None] - np.einsum("pi,pj->pij", mu_b, mu_b)
        out[lo:hi] = np.linalg.norm(cb - ca, axis=(1, 2)) / np.maximum(np.linalg.norm(ca, axis=(1, 2)), 1e-12)
    return out


def _mmd(z: np.ndarray, groups: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", z, z)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)  # (N, N)
    iu = np.triu_indices(z.shape[0], k=1)
    med = float(np.median(d2[iu]))
    k = np.exp(-d2 / (med if med > 0 else 1.0))
    np.fill_diagonal(k, 0.0)  # unbiased: no i == j terms
    a = groups.astype(np.float64)
    b = 1.0 - a
    ka = k @ a  # (N, P)
    n_a, n_b = a.sum(axis=0), b.sum(axis=0)
    aa = np.einsum("np,np->p", a, ka)
    ab = np.einsum("np,np->p", b, ka)
    bb = k.sum() - aa - 2.0 * ab
    return aa / (n_a * (n_a - 1)) + bb / (n_b * (n_b - 1)) - 2.0 * ab / (n_a * n_b)


def _auc_columns(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of each column of ``scores`` (N, P) against the matching column of boolean ``labels``."""
    ranks = np.empty_like(scores)
    order = np.argsort(scores, axis=0, kind="stable")
    np.put_along_axis(ranks, order, np.arange(1, scores.shape[0] + 1, dtype=np.float64)[:, None], axis=0)
    n_pos = labels.sum(axis=0)
    n_neg = labels.shape[0] - n_pos
    return ((ranks * labels).sum(axis=0) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _classifier(y: np.ndarray, groups: np.ndarray, seed: int, shrink: float = 0.1) -> np.ndarray:
    """Out-of-fold scores of shrinkage LDA for every labelling at once.

    Within a fold the training rows' second moment ``S`` does not depend on the labels, so each labelling's
    pooled within-class covariance is ``S / n − (n₁/n) μ₁μ₁ᵀ − (n₀/n) μ₀μ₀ᵀ``: one batched solve per fold.
    """
    n, d = y.shape
    folds = np.random.default_rng(seed).permutation(n) % _FOLDS
    g = groups.astype(np.float64)  # (N, P)
    scores = np.empty(groups.shape, dtype=np.float64)
    eye = np.eye(d)
    for f in range(_FOLDS):
        test = folds == f
        yt, gt = y[~test], g[~test]
        m = yt.shape[0]
        n1 = gt.sum(axis=0)  # (P,)
        n0 = m - n1
        s1 = gt.T @ yt  # (P, d)
        mu1 = s1 / n1[:, None]
        mu0 = (yt.sum(axis=0)[None, :] - s1) / n0[:, None]
        c = (yt.T @ yt)[None] / m - (n1 / m)[:, None, None] * np.einsum("pi,pj->pij", mu1, mu1) \
            - (n0 / m)[:, None, None] * np.einsum("pi,pj->pij", mu0, mu0)  # (P, d, d)
        tr = np.trace(c, axis1=1, axis2=2) / d
        c = (1.0 - shrink) * c + shrink * tr[:, None, None] * eye[None]
        w = np.linalg.solve(c, (mu1 - mu0)[:, :, None])[:, :, 0]  # (P, d)
        scores[test] = y[test] @ w.T
    return _auc_columns(scores, groups)


# ---------------------------------------------------------------------------------------------- the test


def detect_drift(reference: Any, new: Any, *, tests: Sequence[str] = DRIFT_TESTS, alpha: float = 0.05,
                 permutations: int = 200, max_samples: int | None = 1000, pca_dim: int = 64,
                 seed: int = 0) -> DriftReport:
    """Compare two batches of embeddings with permutation-calibrated two-sample tests.

    Args:
        reference: ``(n_ref, dim)`` vectors from the period or model you trust.
        new: ``(n_new, dim)`` vectors to check.
        tests: a subset of :data:`DRIFT_TESTS`.
        alpha: false-alarm rate of each test (the overall verdict is Bonferroni-corrected).
        permutations: label shuffles per test (the smallest reachable p-value is ``1 / (permutations + 1)``).
        max_samples: vectors drawn at random from each batch (bounds the O(n²) kernel); None = all.
        pca_dim: principal directions used by ``covariance`` and ``classifier``.
        seed: seeds the subsampling, the shuffles and the folds.

    Raises:
        InputError: a batch with fewer than :data:`MIN_BATCH` vectors, NaN / inf values.
        DimensionMismatch: the batches' dimensions differ.
        ConfigError: an unknown test or a bad setting.
    """
    unknown = [t for t in tests if t not in DRIFT_TESTS]
    if unknown or not tests:
        raise ConfigError(f"unknown drift test(s) {unknown or list(tests)}; choose from {list(DRIFT_TESTS)} "
                          "(--tests).")
    if not (0.0 < alpha < 1.0):
        raise ConfigError(f"alpha must be in (0, 1), e.g. 0.05. Got {alpha!r} instead (--alpha).")
    # the smallest p-value is 1 / (permutations + 1); the overall (Bonferroni) alarm needs it <= alpha / n_tests
    need = int(np.ceil(len(tests) / alpha - 1e-9)) - 1
    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < need:
        raise ConfigError(f"permutations must be an int >= {need} for {len(tests)} test(s) at alpha={alpha} (with fewer, "
                          f"no p-value can reach alpha / n_tests and no alarm is possible). Got {permutations!r} "
                          "instead (--permutations).")
    if isinstance(pca_dim, bool) or not isinstance(pca_dim, int) or pca_dim < 1:
        raise ConfigError(f"pca_dim must be a positive int. Got {pca_dim!r} instead.")
    if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int)
                                    or max_samples < MIN_BATCH):
        raise ConfigError(f"max_samples must be None or an int >= {MIN_BATCH} (the fewest vectors per batch the tests "
                          f"accept). Got {max_samples!r} instead (--max-samples).")
    ref = as_matrix(reference, "the reference batch", min_rows=MIN_BATCH)
    cur = as_matrix(new, "the new batch", min_rows=MIN_BATCH)
    check_same_dim(ref, cur, "the reference batch", "the new batch")
    rng = np.random.default_rng(seed)
    ref = sample_rows(ref, max_samples, rng)
    cur = sample_rows(cur, max_samples, rng)
    n_r, n_c = ref.shape[0], cur.shape[0]
    z = np.vstack([ref, cur])
    n = z.shape[0]
    groups = np.zeros((n, permutations + 1), dtype=bool)  # True = "reference"
    groups[:n_r, 0] = True
    for p in range(1, permutations + 1):
        groups[rng.permutation(n)[:n_r], p] = True
    from embedstack._threads import serial

    with serial():  # many small products: BLAS threads would only spin into each other (100x slower under load)
        results = _run_tests(z, groups, tests, pca_dim, alpha, seed)
    return DriftReport(results, alpha=alpha, n_reference=n_r, n_new=n_c, permutations=permutations)


def _run_tests(z: np.ndarray, groups: np.ndarray, tests: Sequence[str], pca_dim: int, alpha: float,
               seed: int) -> dict[str, DriftTest]:
    permutations = groups.shape[1] - 1
    reduced = _pca(z, pca_dim) if ("covariance" in tests or "classifier" in tests) else z
    results: dict[str, DriftTest] = {}
    for name in tests:
        if name == "mean_shift":
            vals = _mean_shift(z, groups)
        elif name == "mean_cosine":
            vals = _mean_cosine(z, groups)
        elif name == "covariance":
            vals = _covariance(reduced, groups)
        elif name == "mmd":
            vals = _mmd(z, groups)
        else:
            vals = _classifier(reduced, groups, seed)
        obs, null = float(vals[0]), vals[1:]
        p_value = float((1 + np.sum(null >= obs - 1e-12 * max(1.0, abs(obs)))) / (permutations + 1))
        results[name] = DriftTest(name, obs, float(np.quantile(null, 1.0 - alpha)), p_value, p_value <= alpha)
    return results
