"""Embedding geometry (numpy only): anisotropy, whitening and drift between batches of embeddings.

* :mod:`~embedstack.geometry.anisotropy` — mean pairwise cosine with a jackknife interval, the
  variance in the top principal directions (Ethayarajh 2019).
* :mod:`~embedstack.geometry.whitening` — Su et al. (2021) whitening, and :class:`WhitenedEncoder`
  (SPEC ``whiten:[K:]BASE``) that wraps any dense encoder.
* :mod:`~embedstack.geometry.drift` — permutation-calibrated two-sample tests (mean shift, covariance,
  mean cosine, MMD, classifier AUC) behind :func:`detect_drift`; ``embedstack monitor drift``.
"""

from embedstack.geometry.anisotropy import MeanCosine, anisotropy, mean_cosine, spectrum, variance_shares
from embedstack.geometry.drift import DRIFT_TESTS, MIN_BATCH, DriftReport, DriftTest, detect_drift, roc_auc
from embedstack.geometry.whitening import WhitenedEncoder, Whitening, whiten_spec

__all__ = [
    "MeanCosine", "anisotropy", "mean_cosine", "spectrum", "variance_shares",
    "DRIFT_TESTS", "MIN_BATCH", "DriftReport", "DriftTest", "detect_drift", "roc_auc",
    "WhitenedEncoder", "Whitening", "whiten_spec",
]
