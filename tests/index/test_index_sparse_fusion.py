"""SparseIndex (exact dot products) and fusion (convex, RRF) on cases with known answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from embedstack.base import Hit
from embedstack.errors import ConfigError, DimensionMismatch
from embedstack.index import RRF, ConvexFusion, SparseIndex, convex_fusion, normalize, reciprocal_rank_fusion


def test_sparse_matches_dense_dot_products() -> None:
    rng = np.random.default_rng(0)
    docs = sp.random_array((300, 500), density=0.02, format="csr", random_state=1, dtype=np.float32)
    queries = sp.random_array((7, 500), density=0.05, format="csr", random_state=2, dtype=np.float32)
    idx = SparseIndex(500, query_block=3)
    idx.add(docs[:100], [f"d{i}" for i in range(100)])
    idx.add(docs[100:], [f"d{i}" for i in range(100, 300)])
    dense = (queries @ docs.T).toarray()
    for r, hits in enumerate(idx.search(queries, k=5)):
        want = [j for j in np.lexsort((np.arange(300), -dense[r]))[:5] if dense[r, j] != 0]
        assert [h.id for h in hits] == [f"d{j}" for j in want]
        np.testing.assert_allclose([h.score for h in hits], dense[r, want], rtol=1e-5)
    assert rng is not None


def test_sparse_remove_persist_and_dimension_check(tmp_path: Any) -> None:
    docs = sp.csr_array(np.array([[1, 0, 2], [0, 3, 0], [1, 1, 1]], dtype=np.float32))
    idx = SparseIndex(3)
    idx.add(docs, ["a", "b", "c"], texts=["A", "B", "C"])
    q = sp.csr_array(np.array([[1, 0, 0]], dtype=np.float32))
    assert [(h.id, h.score, h.text) for h in idx.search(q)[0]] == [("a", 1.0, "A"), ("c", 1.0, "C")]
    idx.remove(["a"])
    idx.save(tmp_path / "s")
    loaded = SparseIndex.load(tmp_path / "s")
    assert [h.id for h in loaded.search(q)[0]] == ["c"]
    loaded.compact()
    assert [h.id for h in loaded.search(sp.csr_array(np.array([[0, 1, 0]], dtype=np.float32)))[0]] == ["b", "c"]
    with pytest.raises(DimensionMismatch):
        idx.search(sp.csr_array(np.ones((1, 4), dtype=np.float32)))


def test_sparse_index_agrees_with_bm25_peer() -> None:
    from embedstack.count import BM25

    texts = ["the cat sat on the mat", "dogs chase cats", "a bird in the hand", "cats and dogs and birds",
             "the mat was red"]
    bm25 = BM25().fit(texts)
    idx = SparseIndex(bm25.encode_sparse(texts[:1]).shape[1])
    idx.add(bm25.encode_sparse(texts, role="document"), [str(i) for i in range(5)])
    q = bm25.encode_sparse(["cat on a mat"], role="query")
    want = (q @ bm25.encode_sparse(texts, role="document").T).toarray()[0]
    hits = idx.search(q, k=5)[0]
    assert [int(h.id) for h in hits] == [j for j in np.argsort(-want, kind="stable") if want[j] > 0]
    np.testing.assert_allclose([h.score for h in hits], sorted(want[want > 0], reverse=True), rtol=1e-5)


def test_normalize_by_hand() -> None:
    np.testing.assert_allclose(normalize(np.array([1.0, 3.0, 5.0])), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(normalize(np.array([1.0, 3.0, 5.0]), "zscore"), [-1.2247449, 0.0, 1.2247449])
    np.testing.assert_allclose(normalize(np.array([2.0, 2.0])), [1.0, 1.0])


def test_rrf_known_answer() -> None:
    a = [Hit("x", 9.0), Hit("y", 8.0), Hit("z", 7.0)]
    b = [Hit("z", 0.9), Hit("y", 0.8)]
    fused = reciprocal_rank_fusion({"a": a, "b": b}, k=3)
    # y: 1/62 + 1/62 ; z: 1/63 + 1/61 ; x: 1/61
    assert [h.id for h in fused] == ["z", "y", "x"]
    assert fused[0].score == pytest.approx(1 / 63 + 1 / 61)
    assert fused[0].stages == {"a": 7.0, "b": 0.9, "fusion": pytest.approx(1 / 63 + 1 / 61)}
    assert [h.id for h in RRF(k=0).fuse({"a": a, "b": b}, k=1)] == ["z"]  # 1/3 + 1 > 1/2 + 1/2


def test_convex_known_answer() -> None:
    dense = [Hit("x", 0.9), Hit("y", 0.5), Hit("z", 0.1)]  # minmax: 1, .5, 0
    sparse = [Hit("z", 20.0), Hit("w", 10.0)]  # minmax: 1, 0 ; missing docs get 0
    fused = convex_fusion({"dense": dense, "sparse": sparse}, {"dense": 0.7, "sparse": 0.3}, k=4)
    scores = {h.id: h.score for h in fused}
    assert scores == pytest.approx({"x": 0.7, "y": 0.35, "z": 0.3, "w": 0.0})
    assert [h.id for h in ConvexFusion(alpha=0.2).fuse({"dense": dense, "sparse": sparse}, k=2)] == ["z", "x"]
    assert [h.id for h in ConvexFusion(alpha=1.0).fuse({"dense": dense, "sparse": sparse}, k=1)] == ["x"]
    with pytest.raises(ConfigError):
        ConvexFusion(alpha=1.5)
