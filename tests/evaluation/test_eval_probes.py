"""Classification and clustering probes with a deterministic fake encoder."""

from __future__ import annotations

import numpy as np
import pytest

from embedstack.errors import ConfigError, InputError

pytest.importorskip("sklearn")

from embedstack.evaluation.probes import evaluate_classification, evaluate_clustering  # noqa: E402


class WordDirection:
    """Dense fake: 'good'/'bad'/'meh' pick a direction, the text's length adds a small jitter."""

    dim = 3

    def encode(self, texts, *, role="document", batch_size=64):
        base = {"good": [1.0, 0.0, 0.0], "bad": [0.0, 1.0, 0.0], "meh": [0.0, 0.0, 1.0]}
        out = [np.array(base[t.split()[0]]) + 0.01 * len(t) for t in texts]
        return np.asarray(out, dtype=np.float32)


def _texts(n):
    labels = ["good", "bad", "meh"]
    texts = [f"{labels[i % 3]} {'x' * (i % 5)}" for i in range(n)]
    return texts, [i % 3 for i in range(n)]


def test_classification_separable():
    tr, ytr = _texts(30)
    te, yte = _texts(12)
    res = evaluate_classification(WordDirection(), tr, ytr, te, yte)
    assert res["accuracy"] == 1.0 and res["macro_f1"] == 1.0
    assert (res["n_train"], res["n_test"], res["n_classes"]) == (30, 12, 3)
    with pytest.raises(InputError, match="single class"):
        evaluate_classification(WordDirection(), tr, [0] * 30, te, yte)
    with pytest.raises(InputError):
        evaluate_classification(WordDirection(), tr, ytr[:5], te, yte)


def test_clustering_matches_sklearn_directly():
    from sklearn.cluster import KMeans
    from sklearn.metrics import v_measure_score

    texts, y = _texts(30)
    res = evaluate_clustering(WordDirection(), texts, y)
    assert res["v_measure"] == pytest.approx(1.0) and res["n_clusters"] == 3
    # a harder case: two clusters asked for three classes -> same as sklearn on the normalised features
    x = WordDirection().encode(texts)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    ref = v_measure_score(y, KMeans(n_clusters=2, n_init=3, random_state=0).fit_predict(x))
    res2 = evaluate_clustering(WordDirection(), texts, y, n_clusters=2)
    assert res2["v_measure"] == pytest.approx(ref)
    with pytest.raises(ConfigError):
        evaluate_clustering(WordDirection(), texts, y, n_clusters=1)
