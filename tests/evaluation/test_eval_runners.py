"""Task runners checked with deterministic fake encoders, so every number is computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from embedstack.data import RetrievalDataset, STSDataset
from embedstack.errors import ConfigError, InputError
from embedstack.evaluation.runners import evaluate_retrieval, evaluate_sts, top_k

L2 = math.log2


class KeywordCounts:
    """A sparse counting encoder: whitespace words, vocabulary learned by ``fit`` (sorted)."""

    requires_fit = True

    def __init__(self) -> None:
        self.vocab_: dict[str, int] | None = None
        self.fit_calls = 0

    @property
    def is_fitted(self) -> bool:
        return self.vocab_ is not None

    def fit(self, texts):
        words = sorted({w for t in texts for w in t.lower().split()})
        self.vocab_ = {w: i for i, w in enumerate(words)}
        self.fit_calls += 1
        return self

    def encode_sparse(self, texts, *, role="document"):
        assert self.vocab_ is not None
        rows, cols = [], []
        for r, t in enumerate(texts):
            for w in t.lower().split():
                if w in self.vocab_:
                    rows.append(r)
                    cols.append(self.vocab_[w])
        vals = np.ones(len(rows), dtype=np.float32)
        m = sp.csr_array((vals, (rows, cols)), shape=(len(texts), len(self.vocab_)))
        m.sum_duplicates()
        return m


class TableDense:
    """A dense encoder looking each text up in a fixed table."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table
        self.dim = len(next(iter(table.values())))

    def encode(self, texts, *, role="document", batch_size=64):
        return np.array([self.table[t] for t in texts], dtype=np.float32).reshape(len(texts), self.dim)


def _dataset() -> RetrievalDataset:
    corpus = {
        "d1": {"title": "", "text": "apple banana"},
        "d2": {"title": "", "text": "banana cherry"},
        "d3": {"title": "", "text": "cherry date"},
        "d4": {"title": "apple", "text": "apple"},
    }
    queries = {"q1": "apple", "q2": "cherry", "q3": "kiwi", "q4": "unjudged"}
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d1": 1}}
    return RetrievalDataset("toy", corpus, queries, qrels)


def test_sparse_retrieval_exact_numbers():
    enc = KeywordCounts()
    res = evaluate_retrieval(enc, _dataset(), k=10)
    assert enc.fit_calls == 1  # fitted once, on the corpus
    # q1 "apple": d4 scores 2 (title + text), d1 scores 1 -> relevant d1 at rank 2: nDCG = 1/log2(3), RR = 1/2
    # q2 "cherry": d2 and d3 tie at 1 -> ties by id descending: d3, d2 -> relevant d2 at rank 2
    # q3 "kiwi": shares no word with any document -> nothing retrieved -> 0
    assert res["ndcg@10"] == pytest.approx((1 / L2(3) + 1 / L2(3) + 0) / 3)
    assert res["mrr@10"] == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert res["recall@100"] == pytest.approx(2 / 3)
    assert res["precision@10"] == pytest.approx((0.1 + 0.1 + 0) / 3)
    assert res["n_queries"] == 3 and res["n_docs"] == 4 and res["mode"] == "sparse"
    # the document-term matrix: 7 stored counts (float32 data + int32 indices) + 5 indptr entries
    docs = enc.encode_sparse(_dataset().doc_texts())
    expected = docs.data.nbytes + docs.indices.nbytes + docs.indptr.nbytes
    assert res["bytes_per_doc"] == pytest.approx(expected / 4)
    assert res["index_seconds"] >= 0 and res["query_seconds"] >= 0
    assert res["latency_ms"] == pytest.approx(1000 * res["query_seconds"] / 3)
    assert res["single_query_ms"] > 0
    assert res["primary_metric"] == "ndcg@10"
    assert evaluate_retrieval(KeywordCounts(), _dataset(), latency_queries=0)["single_query_ms"] is None
    with pytest.raises(ConfigError):
        evaluate_retrieval(KeywordCounts(), _dataset(), latency_queries=-1)


def test_sparse_retrieval_depth_cuts_the_run():
    res = evaluate_retrieval(KeywordCounts(), _dataset(), k=1)
    # with one document per query, q1 and q2 miss their relevant document
    assert res["recall@100"] == 0.0 and res["ndcg@10"] == 0.0
    one = evaluate_retrieval(KeywordCounts(), _dataset(), k=10, max_queries=1)
    assert one["n_queries"] == 1 and one["ndcg@10"] == pytest.approx(1 / L2(3))


def test_dense_retrieval_cosine_exact_numbers():
    table = {
        "apple banana": [1.0, 0.0], "banana cherry": [0.0, 3.0], "cherry date": [2.0, 2.0],
        "apple apple": [-1.0, 0.0], "apple": [1.0, 0.1], "cherry": [0.0, 1.0], "kiwi": [1.0, 1.0],
    }
    res = evaluate_retrieval(TableDense(table), _dataset(), k=10)
    # q1 [1, .1]: cos d1 = .995, d3 = .774, d2 = .0995, d4 = -.995 -> d1 first: nDCG 1, RR 1
    # q2 [0, 1]: d2 = 1 first -> 1
    # q3 [1, 1]: d3 = 1, d1 = d2 = .707 (tie: d2 before d1), d4 -> relevant d1 at rank 3: 1/log2(4) = 0.5
    assert res["ndcg@10"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert res["mrr@10"] == pytest.approx((1 + 1 + 1 / 3) / 3)
    assert res["mode"] == "dense/exact"
    assert res["bytes_per_doc"] == 2 * 4  # two float32 per document


def test_dense_retrieval_through_flat_index_matches_exact():
    index_mod = pytest.importorskip("embedstack.index")
    if not hasattr(index_mod, "from_spec"):
        pytest.skip("embedstack.index.from_spec not built yet")
    rng = np.random.default_rng(0)
    ds = _dataset()
    texts = ds.doc_texts() + ds.query_texts() + ["unjudged"]
    table = {t: rng.normal(size=8).tolist() for t in texts}
    exact = evaluate_retrieval(TableDense(table), ds, k=10)
    flat = evaluate_retrieval(TableDense(table), ds, k=10, index_spec="flat")
    for key in ("ndcg@10", "recall@100", "mrr@10", "map@10"):
        assert flat[key] == pytest.approx(exact[key])
    assert flat["mode"] == "dense/flat" and flat["bytes_per_doc"] > 0


def test_retrieval_bad_input():
    with pytest.raises(ConfigError, match="positive int"):
        evaluate_retrieval(KeywordCounts(), _dataset(), k=0)
    with pytest.raises(ConfigError, match="dense encoders"):
        evaluate_retrieval(KeywordCounts(), _dataset(), index_spec="flat")
    empty = RetrievalDataset("empty", {}, {"q": "x"}, {"q": {"d": 1}})
    with pytest.raises(InputError, match="corpus is empty"):
        evaluate_retrieval(KeywordCounts(), empty)
    with pytest.raises(InputError):
        evaluate_retrieval(KeywordCounts(), object())
    with pytest.raises(ConfigError):
        evaluate_retrieval(KeywordCounts(), _dataset(), max_queries=0)
    bad = TableDense({"apple banana": [float("nan"), 0.0], "banana cherry": [0, 1], "cherry date": [0, 1],
                      "apple apple": [0, 1]})
    with pytest.raises(InputError, match="NaN"):
        evaluate_retrieval(bad, _dataset())


def test_top_k_is_deterministic_at_the_cut_off():
    scores = np.array([[1.0, 3.0, 3.0, 2.0], [3.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    tiebreak = np.array([0, 1, 2, 3])
    got = top_k(scores, 2, tiebreak)
    assert got[0].tolist() == [1, 2] and got[1].tolist() == [0, 1]
    got = top_k(scores, 2, np.array([0, 3, 2, 1]))
    assert got[0].tolist() == [2, 1] and got[1].tolist() == [0, 3]
    assert [g.tolist() for g in top_k(scores, 10, tiebreak)] == [[1, 2, 3, 0], [0, 1, 2, 3]]


def test_sts_dense_exact():
    table = {"a": [1, 0], "a2": [1, 0], "b": [1, 0], "b2": [0, 1], "c": [1, 0], "c2": [3, 4]}
    sts = STSDataset(["a", "b", "c"], ["a2", "b2", "c2"], np.array([5.0, 0.0, 4.0]))
    res = evaluate_sts(TableDense(table), sts)
    # cosines: 1, 0, 3/5 -> same order as gold: Spearman 100
    assert res["spearman"] == pytest.approx(100.0)
    assert res["pearson"] == pytest.approx(100 * np.corrcoef([1, 0, 0.6], [5, 0, 4])[0, 1])
    assert res["n"] == 3 and res["primary_metric"] == "spearman"
    with pytest.raises(InputError):
        evaluate_sts(TableDense(table), STSDataset(["a"], ["a2"], np.array([1.0])))
    with pytest.raises(ConfigError):
        evaluate_sts(TableDense(table), sts, max_pairs=0)


def test_sts_sparse_fits_on_the_sentences():
    enc = KeywordCounts()
    sts = STSDataset(["apple banana", "apple", "kiwi"], ["apple", "apple", "pear"], np.array([2.0, 5.0, 0.0]))
    res = evaluate_sts(enc, sts)
    assert enc.fit_calls == 1 and set(enc.vocab_) == {"apple", "banana", "kiwi", "pear"}
    # cosines: 1/sqrt(2), 1, 0 -> ranks agree with gold (2, 5, 0)
    assert res["spearman"] == pytest.approx(100.0)
    assert res["pearson"] == pytest.approx(100 * np.corrcoef([2 ** -0.5, 1, 0], [2, 5, 0])[0, 1])


class NativeKeyword(KeywordCounts):
    """KeywordCounts plus its own index/retrieve, returning -1 padding like BM25.retrieve."""

    def index(self, texts, ids=None):
        self.fit(texts)
        self.index_ = self.encode_sparse(texts).T.tocsr()
        self.retrieve_calls = 0

    def retrieve(self, queries, k=10):
        self.retrieve_calls += 1
        scores = (self.encode_sparse(queries) @ self.index_).toarray()
        kk = min(k, scores.shape[1])
        idx = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
        sc = np.take_along_axis(scores, idx, axis=1).astype(np.float32)
        idx[sc == 0] = -1
        return idx, sc


def test_native_inverted_index_path_matches_generic():
    enc = NativeKeyword()
    native = evaluate_retrieval(enc, _dataset(), k=10)
    assert native["mode"] == "sparse/inverted-index" and enc.retrieve_calls > 0
    generic = evaluate_retrieval(NativeKeyword(), _dataset(), k=10, use_native=False)
    assert generic["mode"] == "sparse"
    # q2's tie (d2, d3 both 1) is re-ranked by id in the metrics, so both paths score alike
    for key in ("ndcg@10", "recall@100", "mrr@10", "map@10"):
        assert native[key] == pytest.approx(generic[key])
    assert native["bytes_per_doc"] > 0


def test_real_bm25_native_and_generic_agree():
    pytest.importorskip("embedstack.count")
    from embedstack.data import sample_retrieval
    from embedstack.models import resolve

    ds = sample_retrieval()
    native = evaluate_retrieval(resolve("bm25"), ds)
    generic = evaluate_retrieval(resolve("bm25"), ds, use_native=False)
    assert native["mode"] == "sparse/inverted-index" and generic["mode"] == "sparse"
    for key in ("ndcg@10", "recall@100", "mrr@10"):
        assert native[key] == pytest.approx(generic[key], abs=1e-9)


def test_retrieval_evaluator_scores_x100_like_the_other_evaluators():
    """The training evaluator reports the runner's fractions x100, the scale of STS and rerank evaluators
    and of every recipe's expected figure."""
    from embedstack.training.evaluators import RetrievalEvaluator

    enc = KeywordCounts()
    got = RetrievalEvaluator(_dataset())(enc)
    assert got["ndcg@10"] == pytest.approx(100 * (1 / L2(3) + 1 / L2(3) + 0) / 3)
    assert got["mrr@10"] == pytest.approx(100 * (0.5 + 0.5 + 0) / 3)
    assert got["recall@100"] == pytest.approx(100 * 2 / 3)
