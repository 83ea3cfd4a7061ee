"""PPMI-SVD word vectors: counts and PMI against a plain dense reference; the word-vector protocol."""

from __future__ import annotations

import numpy as np
import pytest

from embedstack.count import PPMI
from embedstack.count.ppmi import cooccurrence_matrix
from embedstack.errors import InputError, NotFittedError, UnknownKeyError
from embedstack.text import Analyzer


def test_cooccurrence_hand_computed() -> None:
    ids = np.array([0, 1, 2, 0, 2], dtype=np.int32)
    doc = np.array([0, 0, 0, 1, 1])
    C = cooccurrence_matrix(ids, doc, 3, 2).toarray()
    # doc0: (0,1) d1, (1,2) d1, (0,2) d2; doc1: (0,2) d1 — symmetric, no pair across documents
    assert C.tolist() == [[0, 1, 2], [1, 0, 1], [2, 1, 0]]
    Cd = cooccurrence_matrix(ids, doc, 3, 2, dynamic=True).toarray()
    assert Cd[0, 2] == pytest.approx(1.5) and Cd[0, 1] == pytest.approx(1.0)


def reference_sppmi(texts: list[str], words: list[str], window: int, alpha: float, shift: float) -> np.ndarray:
    idx = {w: i for i, w in enumerate(words)}
    C = np.zeros((len(words), len(words)))
    for t in texts:
        toks = [idx[w] for w in t.split() if w in idx]
        for i, a in enumerate(toks):
            for j in range(max(0, i - window), min(len(toks), i + window + 1)):
                if j != i:
                    C[a, toks[j]] += 1
    pc = C.sum(0) ** alpha
    pc /= pc.sum()
    with np.errstate(divide="ignore"):
        pmi = np.log(C) - np.log(C.sum(1, keepdims=True)) - np.log(pc[None, :]) - np.log(shift)
    return np.where(C > 0, np.maximum(pmi, 0), 0)


TEXTS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog ran",
         "the cat ate", "a dog ate the bone"] * 3


@pytest.mark.parametrize("alpha,shift", [(0.75, 1.0), (1.0, 1.0), (0.75, 5.0)])
def test_sppmi_and_vectors_match_dense_reference(alpha: float, shift: float) -> None:
    m = PPMI(n_components=4, window=2, min_count=1, alpha=alpha, shift=shift, eig=0.5, normalize=False,
             algorithm="arpack")
    m.fit(TEXTS)
    ref = reference_sppmi(TEXTS, m.index_to_key, 2, alpha, shift)
    U, s, _ = np.linalg.svd(ref)
    W_ref = U[:, :4] * s[:4] ** 0.5
    np.testing.assert_allclose(m.singular_values_, s[:4], rtol=1e-4)
    # vectors equal up to per-component signs: compare the Gram matrices
    np.testing.assert_allclose(m.vectors @ m.vectors.T, W_ref @ W_ref.T, atol=1e-4)


def test_vocabulary_order_and_pruning() -> None:
    m = PPMI(n_components=2, min_count=4).fit(TEXTS)
    counts = dict(zip(m.index_to_key, m.counts_.tolist(), strict=True))
    assert m.index_to_key[:2] == ["the", "a"]
    assert all(c >= 4 for c in counts.values()) and "bone" not in m
    assert list(m.counts_) == sorted(m.counts_, reverse=True)
    assert len(PPMI(n_components=2, min_count=1, max_vocab=5).fit(TEXTS)) == 5


def test_similar_contexts_give_similar_vectors() -> None:
    rng = np.random.default_rng(0)
    texts = []
    for _ in range(300):
        animal = rng.choice(["cat", "dog"])
        food = rng.choice(["bread", "rice"])
        texts.append(f"my {animal} likes to play outside and my {food} tastes good with salt")
    m = PPMI(n_components=6, min_count=1, window=2).fit(iter(texts))  # a generator is fine
    assert m.most_similar("cat", topn=1)[0][0] == "dog"
    assert m.most_similar("bread", topn=1)[0][0] == "rice"
    np.testing.assert_allclose(np.linalg.norm(m.vectors, axis=1), 1.0, rtol=1e-5)
    assert m["cat"].shape == (6,) and m.vectors.dtype == np.float32
    assert m.key_to_index["cat"] == m.index_to_key.index("cat")


def test_save_load(tmp_path) -> None:
    m = PPMI(n_components=3, min_count=1, analyzer=Analyzer(stopwords="english")).fit(TEXTS)
    m.save(tmp_path / "ppmi")
    b = PPMI.load(tmp_path / "ppmi")
    assert b.index_to_key == m.index_to_key and b.analyzer == m.analyzer
    np.testing.assert_array_equal(b.vectors, m.vectors)


def test_bad_input() -> None:
    with pytest.raises(NotFittedError):
        PPMI().vectors  # noqa: B018
    with pytest.raises(InputError, match="empty corpus"):
        PPMI().fit([])
    with pytest.raises(InputError, match="lower n_components"):
        PPMI(n_components=50, min_count=1).fit(TEXTS)
    with pytest.raises(InputError, match="min_count"):
        PPMI(n_components=2, min_count=100).fit(TEXTS)
    m = PPMI(n_components=2, min_count=1).fit(TEXTS)
    with pytest.raises(UnknownKeyError, match="'zebra'"):
        m["zebra"]
