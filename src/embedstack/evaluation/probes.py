"""Probe runners on encoder features (scikit-learn, the ``ml`` extra).

* :func:`evaluate_classification` — logistic regression on the features of the training texts,
  accuracy and macro-F1 on the test texts (the SentEval / MTEB classification protocol).
* :func:`evaluate_clustering` — k-means with as many clusters as gold labels, V-measure against them.

Counting encoders that need fitting are fitted on the training texts (classification) or on the
texts to cluster (clustering, which is unsupervised). Sparse encoders give sparse features, which
scikit-learn accepts directly.

Example:
    >>> from embedstack.models import resolve
    >>> res = evaluate_classification(resolve("tfidf"), ["good", "bad", "great", "awful"], [1, 0, 1, 0],
    ...                               ["good great", "bad awful"], [1, 0])  # doctest: +SKIP
    >>> res["accuracy"]  # doctest: +SKIP
    1.0
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from embedstack._extras import require
from embedstack.errors import ConfigError, InputError

__all__ = ["features", "evaluate_classification", "evaluate_clustering"]


def features(encoder: Any, texts: Sequence[str], *, batch_size: int = 64) -> Any:
    """Encoder features of ``texts``: a csr matrix for sparse encoders, float32 ``(n, dim)`` otherwise."""
    from embedstack.evaluation.runners import encode_dense, is_sparse

    if is_sparse(encoder):
        return encoder.encode_sparse(list(texts), role="document").tocsr()
    return encode_dense(encoder, list(texts), batch_size=batch_size)


def _labels(labels: Sequence[Any], n: int, what: str) -> np.ndarray:
    y = np.asarray(list(labels))
    if y.shape[0] != n:
        raise InputError(f"{what}: {n} texts but {y.shape[0]} labels.")
    return y


def evaluate_classification(encoder: Any, train_texts: Sequence[str], train_labels: Sequence[Any],
                            test_texts: Sequence[str], test_labels: Sequence[Any], *,
                            max_iter: int = 1000, C: float = 1.0, seed: int = 0,
                            batch_size: int = 64) -> dict[str, Any]:
    """Train a logistic-regression probe on encoder features; accuracy and macro-F1 on the test set.

    Returns:
        ``accuracy``, ``macro_f1`` (both in [0, 1]), ``n_train``, ``n_test``, ``n_classes``,
        ``seconds`` and ``primary_metric`` (``"accuracy"``).
    """
    require("sklearn", "ml", "classification probes")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from embedstack.evaluation.runners import fit_if_needed

    train_texts, test_texts = list(train_texts), list(test_texts)
    if not train_texts or not test_texts:
        raise InputError("classification needs non-empty train and test texts.")
    y_train = _labels(train_labels, len(train_texts), "train")
    y_test = _labels(test_labels, len(test_texts), "test")
    if len(np.unique(y_train)) < 2:
        raise InputError("the training labels hold a single class; a classifier needs at least two.")
    if max_iter <= 0 or C <= 0:
        raise ConfigError(f"max_iter and C must be positive. Got max_iter={max_iter!r}, C={C!r}.")
    t0 = time.perf_counter()
    fit_if_needed(encoder, train_texts)
    x_train = features(encoder, train_texts, batch_size=batch_size)
    x_test = features(encoder, test_texts, batch_size=batch_size)
    clf = LogisticRegression(max_iter=max_iter, C=C, random_state=seed)
    clf.fit(x_train, y_train)
    pred = clf.predict(x_test)
    return {
        "accuracy": float(accuracy_score(y_test, pred)),
        "macro_f1": float(f1_score(y_test, pred, average="macro")),
        "n_train": len(train_texts),
        "n_test": len(test_texts),
        "n_classes": int(len(np.unique(np.concatenate([y_train, y_test])))),
        "seconds": time.perf_counter() - t0,
        "primary_metric": "accuracy",
    }


def evaluate_clustering(encoder: Any, texts: Sequence[str], labels: Sequence[Any], *,
                        n_clusters: int | None = None, seed: int = 0, n_init: int = 3,
                        batch_size: int = 64) -> dict[str, Any]:
    """Cluster encoder features with k-means and score the clusters against gold labels (V-measure).

    Dense features are L2-normalised first (k-means on the unit sphere approximates cosine clustering).

    Returns:
        ``v_measure`` (in [0, 1]), ``n``, ``n_clusters``, ``seconds`` and ``primary_metric``.
    """
    require("sklearn", "ml", "clustering probes")
    from sklearn.cluster import KMeans
    from sklearn.metrics import v_measure_score

    from embedstack.evaluation.runners import fit_if_needed, l2_normalize

    texts = list(texts)
    y = _labels(labels, len(texts), "clustering")
    n_true = len(np.unique(y))
    k = n_true if n_clusters is None else n_clusters
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(f"n_clusters must be an int >= 2. Got {k!r} instead.")
    if len(texts) < k:
        raise InputError(f"cannot make {k} clusters from {len(texts)} texts.")
    t0 = time.perf_counter()
    fit_if_needed(encoder, texts)
    x = features(encoder, texts, batch_size=batch_size)
    if isinstance(x, np.ndarray):
        x = l2_normalize(x)
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
    pred = km.fit_predict(x)
    return {
        "v_measure": float(v_measure_score(y, pred)),
        "n": len(texts),
        "n_clusters": int(k),
        "seconds": time.perf_counter() - t0,
        "primary_metric": "v_measure",
    }
