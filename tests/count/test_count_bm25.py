"""BM25: the formula against a plain-Python reference, retrieval against brute force, and bm25s."""

from __future__ import annotations

import importlib.util
import math
import random

import numpy as np
import pytest
import scipy.sparse as sp

from embedstack.base import Hit, SparseEncoder
from embedstack.count import BM25
from embedstack.count.bm25 import split_impacts, topk_dense, topk_sparse_rows
from embedstack.errors import ConfigError, IndexStateError, InputError, NotFittedError
from embedstack.text import Analyzer

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS[: rng.randint(3, len(WORDS))]) for _ in range(rng.randint(1, 12)))
            for _ in range(n)]


def reference_scores(docs: list[list[str]], query: list[str], k1: float, b: float, idf: str) -> list[float]:
    n = len(docs)
    avgdl = sum(map(len, docs)) / n
    out = []
    for d in docs:
        s = 0.0
        for t in query:
            df = sum(t in x for x in docs)
            if df == 0:
                continue
            if idf == "lucene":
                w = math.log(1 + (n - df + 0.5) / (df + 0.5))
            elif idf == "robertson":
                w = max(math.log((n - df + 0.5) / (df + 0.5)), 0.0)
            else:
                w = math.log(n / df)
            tf = d.count(t)
            if tf == 0:
                continue
            s += w * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avgdl))
        out.append(s)
    return out


def test_hand_computed_score() -> None:
    m = BM25(k1=1.2, b=0.75)
    m.index(["a b", "a a c", "c"])
    idf_a = math.log(1 + 1.5 / 2.5)
    expected = idf_a * 2 * 2.2 / (2 + 1.2 * (0.25 + 0.75 * 3 / 2))
    hits = m.search(["a"], k=3)[0]
    assert hits[0].id == "1" and hits[0].score == pytest.approx(expected, rel=1e-6)
    assert [h.id for h in hits] == ["1", "0"]  # document "2" has no "a": not returned


@pytest.mark.parametrize("idf", ["lucene", "robertson", "atire"])
@pytest.mark.parametrize("k1,b", [(1.2, 0.75), (0.0, 0.5), (2.0, 0.0), (0.9, 1.0)])
def test_dot_product_equals_reference_bm25(idf: str, k1: float, b: float) -> None:
    docs = corpus(40, seed=1)
    queries = ["alpha beta", "kappa kappa mu unknownword", "zeta", "nothing here"]
    m = BM25(k1=k1, b=b, idf=idf).fit(docs)
    D = m.encode_sparse(docs, role="document")
    Q = m.encode_sparse(queries, role="query")
    got = (Q @ D.T).toarray()
    toks = [d.split() for d in docs]
    for i, q in enumerate(queries):
        np.testing.assert_allclose(got[i], reference_scores(toks, q.split(), k1, b, idf), rtol=2e-5, atol=1e-6)
    assert isinstance(m, SparseEncoder)


BACKENDS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(
    importlib.util.find_spec("numba") is None, reason="numba not installed"))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_search_matches_brute_force_and_batching(backend: str) -> None:
    docs = [d + (f" rare{i} rare{i // 2}" if i % 3 == 0 else "") for i, d in enumerate(corpus(300, seed=2))]
    ids = [f"doc{i}" for i in range(len(docs))]
    m = BM25(backend=backend)
    m.index(docs, ids=ids)
    # common words (scan every document) and rare ones (rank only the touched documents)
    queries = corpus(50, seed=3) + ["", "unknownword", "alpha", "rare3", "rare12 rare13 rare30", "rare9 rare9"]
    S = m.scores(queries).toarray()
    hits = m.search(queries, k=7)
    for i, hs in enumerate(hits):
        order = sorted((j for j in range(len(docs)) if S[i, j] > 0), key=lambda j: (-S[i, j], j))[:7]
        assert [h.id for h in hs] == [ids[j] for j in order]
        assert [h.score for h in hs] == pytest.approx([S[i, j] for j in order], rel=1e-6)
    # one query alone gets exactly the same answer as inside a batch
    for i in (0, 17, 49):
        assert m.search([queries[i]], k=7)[0] == hits[i]
    assert hits[50] == [] and hits[51] == []
    assert all(isinstance(h, Hit) for h in hits[52])
    assert [h.id for h in hits[53]] == ["doc3", "doc6"]  # "rare3" is in doc 3 and, as rare{6 // 2}, doc 6


def test_retrieve_pads_and_k_larger_than_corpus() -> None:
    m = BM25()
    m.index(["x y", "y z", "w"])
    idx, sc = m.retrieve(["y", "w", "nothing"], k=5)
    assert idx.shape == (3, 3) and sc.dtype == np.float32  # never wider than the corpus
    assert idx[0].tolist() == [0, 1, -1]
    assert idx[1].tolist() == [2, -1, -1]
    assert (idx[2] == -1).all() and (sc[2] == 0).all()
    assert [h.id for h in m.search(["y"], k=10**9)[0]] == ["0", "1"]
    assert m.search([], k=3) == [] and m.retrieve([], k=3)[0].shape == (0, 3)


@pytest.mark.parametrize("seed", range(5))
def test_topk_helpers_agree_with_a_full_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    dense = rng.integers(0, 4, size=(20, 60)).astype(np.float32)  # many ties on purpose
    dense[rng.random(dense.shape) < 0.7] = 0
    for k in (1, 3, 10, 60, 80):
        expect_i = np.full((20, k), -1)
        expect_s = np.zeros((20, k), dtype=np.float32)
        for r in range(20):
            order = sorted((j for j in range(60) if dense[r, j] > 0), key=lambda j: (-dense[r, j], j))[:k]
            expect_i[r, :len(order)] = order
            expect_s[r, :len(order)] = dense[r, order]
        for i, s in (topk_dense(dense, k), topk_sparse_rows(sp.csr_array(dense), k)):
            np.testing.assert_array_equal(i[:, : min(k, 60)], expect_i[:, : min(k, 60)])
            np.testing.assert_array_equal(s[:, : min(k, 60)], expect_s[:, : min(k, 60)])


@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed")
def test_numba_and_numpy_backends_agree_with_many_ties() -> None:
    docs = [f"w{i % 7} w{i % 5} x" for i in range(400)]  # heavy score ties
    a, b = BM25(backend="numba"), BM25(backend="numpy")
    a.index(docs)
    b.index(docs)
    queries = ["w1", "w2 w3", "x", "w0 w0 x", "nothing"]
    for k in (1, 5, 37, 400):
        ia, sa = a.retrieve(queries, k=k)
        ib, sb = b.retrieve(queries, k=k)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_allclose(sa, sb, rtol=1e-6)


def test_query_analysis_cache_is_transparent() -> None:
    docs = corpus(50, seed=9)
    def fresh() -> BM25:
        return BM25(analyzer=Analyzer(stem="english", stopwords="english")).fit(docs)

    m = fresh()
    qs1, qs2 = ["alpha running", "the beta"], ["gamma runs", "alpha running", "new words here"]
    m.encode_sparse(qs1, role="query")
    m.encode_sparse(qs2, role="document")
    for texts, role in ((qs2, "query"), (qs1, "document"), (docs[:5], "document")):
        got = m.encode_sparse(texts, role=role).toarray()
        np.testing.assert_array_equal(got, fresh().encode_sparse(texts, role=role).toarray())
    m.fit(["zeta omega", "omega"])  # refitting starts a fresh cache for the new vocabulary
    assert m.encode_sparse(["omega alpha"], role="query").toarray().tolist() == [[1.0, 0.0]]


def test_split_impacts_scores_equal_the_sparse_product() -> None:
    docs = [d + f" rare{i % 50}" for i, d in enumerate(corpus(200, seed=4))]
    m = BM25()
    m.index(docs)
    imp = split_impacts(m.index_)
    assert 0 < len(imp.dense) < m.index_.shape[0]  # frequent words dense, rare ones sparse
    Q = m.encode_sparse([q + " rare3 rare7" for q in corpus(30, seed=5)], role="query")
    np.testing.assert_allclose(imp.scores(Q), (Q @ m.index_).toarray(), rtol=1e-5, atol=1e-6)


def test_agrees_with_bm25s_on_identical_tokens() -> None:
    bm25s = pytest.importorskip("bm25s")
    docs = corpus(120, seed=6)
    toks = [d.split() for d in docs]
    theirs = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    theirs.index(toks, show_progress=False)
    ours = BM25(k1=1.2, b=0.75)
    ours.index(docs)
    for q in ("alpha gamma", "mu mu lambda", "theta"):
        expected = theirs.get_scores(q.split())
        got = ours.scores([q]).toarray()[0] / (1.2 + 1)  # bm25s leaves out the constant (k1 + 1)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_stemmed_analyzer_matches_inflections() -> None:
    m = BM25(analyzer=Analyzer(stem="english", stopwords="english"))
    m.index(["The runner is running fast", "Cats sleep"], ids=["r", "c"])
    assert [h.id for h in m.search(["run"], k=2)[0]] == ["r"]
    assert [h.id for h in m.search(["the cat"], k=2)[0]] == ["c"]


def test_save_load_round_trip(tmp_path) -> None:
    docs = corpus(60, seed=7)
    m = BM25(analyzer=Analyzer(stem="english"), k1=1.1, b=0.6, idf="atire")
    m.index(docs, ids=[f"d{i}" for i in range(60)])
    m.save(tmp_path / "bm25")
    back = BM25.load(tmp_path / "bm25")
    assert back.get_config() == m.get_config() and back.analyzer == m.analyzer
    queries = corpus(10, seed=8)
    assert back.search(queries, k=5) == m.search(queries, k=5)
    np.testing.assert_array_equal(back.encode_sparse(docs).toarray(), m.encode_sparse(docs).toarray())
    unindexed = BM25().fit(docs)
    unindexed.save(tmp_path / "plain")
    assert not BM25.load(tmp_path / "plain").is_indexed


def test_bad_input() -> None:
    m = BM25()
    with pytest.raises(NotFittedError):
        m.search(["a"])
    with pytest.raises(NotFittedError):
        m.encode_sparse(["a"])
    m.fit(["a b"])
    with pytest.raises(IndexStateError, match=r"bm25.index"):
        m.search(["a"])
    m.index(["a b", "b c"])
    for k in (0, -3, 1.5, True):
        with pytest.raises(ConfigError, match="'k'"):
            m.search(["a"], k=k)
    with pytest.raises(InputError, match="one id per document"):
        m.index(["a", "b"], ids=["x"])
    with pytest.raises(IndexStateError, match="'x' appears more than once"):
        m.index(["a", "b"], ids=["x", "x"])
    with pytest.raises(InputError, match="empty corpus"):
        BM25().index([])
    with pytest.raises(InputError, match="UTF-8"):
        BM25().index([b"\xff"])
    with pytest.raises(ConfigError, match="'k1'"):
        BM25(k1=-1).fit(["a"])
    with pytest.raises(ConfigError, match="'b'"):
        BM25(b=2).fit(["a"])
    with pytest.raises(ConfigError, match="'idf'"):
        BM25(idf="bm42").fit(["a"])
    with pytest.raises(ConfigError, match="'backend'"):
        BM25(backend="gpu").fit(["a"])


def test_real_scifact(shared_data) -> None:
    from embedstack.count.specs import bm25
    from embedstack.data import load_beir
    from embedstack.evaluation.metrics import ndcg_at_k

    ds = load_beir("scifact", split="train")
    m = bm25()
    m.index(ds.doc_texts(), ids=ds.doc_ids())
    run = {q: {h.id: h.score for h in hs} for q, hs in zip(ds.query_ids(), m.search(ds.query_texts(), k=10),
                                                             strict=True)}
    assert ndcg_at_k(run, ds.qrels, 10) == pytest.approx(0.696, abs=0.005)


def test_without_numba_auto_falls_back_and_numba_names_the_extra(monkeypatch) -> None:
    import sys

    from embedstack.errors import MissingExtra

    monkeypatch.setitem(sys.modules, "numba", None)  # as if numba were not installed
    monkeypatch.delitem(sys.modules, "embedstack.count._kernels", raising=False)
    m = BM25(backend="auto")
    m.index(["a b", "b c"])
    assert [h.id for h in m.search(["c"], k=2)[0]] == ["1"]
    m.backend = "numba"
    with pytest.raises(MissingExtra, match=r"embedstack\[fast\]"):
        m.search(["c"])
