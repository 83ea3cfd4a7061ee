"""Metric functions against hand-computed values and against scipy / scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedstack.errors import ConfigError, InputError
from embedstack.evaluation.metrics import (
    evaluate_run,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    pearson,
    per_query,
    precision_at_k,
    rank_documents,
    rankdata,
    recall_at_k,
    spearman,
)

L2 = math.log2

# q1: ranking d1 (rel 0) , d2 (rel 2), d3 (not judged), d4 (rel 1); d5 (rel 3) never retrieved.
RUN = {
    "q1": {"d1": 0.9, "d2": 0.8, "d3": 0.7, "d4": 0.6},
    "q2": {"x": 5.0, "y": 4.0},
}
QRELS = {
    "q1": {"d1": 0, "d2": 2, "d4": 1, "d5": 3},
    "q2": {"y": 1},
}


def test_ndcg_graded_hand_computed():
    # q1 DCG@3 = 0/log2(2) + 2/log2(3) + 0/log2(4) = 1.26186; IDCG@3 = 3/1 + 2/log2(3) + 1/log2(4) = 4.76186
    dcg = 2 / L2(3)
    idcg = 3 / L2(2) + 2 / L2(3) + 1 / L2(4)
    q1 = dcg / idcg
    # q2: relevant y at rank 2 -> DCG = 1/log2(3), IDCG = 1
    q2 = 1 / L2(3)
    assert ndcg_at_k(RUN, QRELS, 3) == pytest.approx((q1 + q2) / 2, abs=1e-12)
    # @10: q1 DCG adds 1/log2(5) for d4 at rank 4; ideal has 3 relevant docs only
    q1_10 = (2 / L2(3) + 1 / L2(5)) / idcg
    assert ndcg_at_k(RUN, QRELS, 10) == pytest.approx((q1_10 + q2) / 2, abs=1e-12)
    pq = per_query(RUN, QRELS, "ndcg", 10)
    assert pq["q1"] == pytest.approx(q1_10) and pq["q2"] == pytest.approx(q2)


def test_mrr_recall_precision_map_hand_computed():
    # MRR@10: q1 first relevant d2 at rank 2 -> 1/2; q2 y at rank 2 -> 1/2
    assert mrr_at_k(RUN, QRELS, 10) == pytest.approx(0.5)
    # MRR@1: nothing relevant at rank 1
    assert mrr_at_k(RUN, QRELS, 1) == 0.0
    # Recall@2: q1 found d2 of {d2, d4, d5} -> 1/3; q2 found y -> 1
    assert recall_at_k(RUN, QRELS, 2) == pytest.approx((1 / 3 + 1) / 2)
    # Recall@10: q1 d2, d4 of 3 -> 2/3
    assert recall_at_k(RUN, QRELS, 10) == pytest.approx((2 / 3 + 1) / 2)
    # Precision@10 divides by k even though only 4 / 2 docs were retrieved: q1 2/10, q2 1/10
    assert precision_at_k(RUN, QRELS, 10) == pytest.approx((0.2 + 0.1) / 2)
    # MAP@10: q1 precisions at relevant ranks 2 and 4: 1/2, 2/4 -> (0.5 + 0.5) / 3 relevant
    #          q2: 1/2 / 1
    assert map_at_k(RUN, QRELS, 10) == pytest.approx(((0.5 + 0.5) / 3 + 0.5) / 2)
    # MAP@2: q1 only rank 2 counts -> 0.5 / 3
    assert map_at_k(RUN, QRELS, 2) == pytest.approx((0.5 / 3 + 0.5) / 2)


def test_evaluate_run_matches_single_functions():
    res = evaluate_run(RUN, QRELS, ["ndcg@10", "recall@2", "mrr@10", "map@10", "precision@10"])
    assert res["ndcg@10"] == pytest.approx(ndcg_at_k(RUN, QRELS, 10))
    assert res["recall@2"] == pytest.approx(recall_at_k(RUN, QRELS, 2))
    assert res["mrr@10"] == pytest.approx(mrr_at_k(RUN, QRELS, 10))
    assert res["map@10"] == pytest.approx(map_at_k(RUN, QRELS, 10))
    assert res["precision@10"] == pytest.approx(precision_at_k(RUN, QRELS, 10))
    with pytest.raises(ConfigError):
        evaluate_run(RUN, QRELS, ["ndcg10"])
    with pytest.raises(ConfigError):
        evaluate_run(RUN, QRELS, ["ndcg@0"])


def test_queries_without_relevant_docs_excluded_and_missing_queries_score_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 0}, "q3": {"c": 1}}  # q2: no relevant doc -> excluded
    run = {"q1": {"a": 1.0}, "q2": {"b": 1.0}, "q9": {"c": 1.0}}  # q3 not in run -> 0; q9 ignored
    assert ndcg_at_k(run, qrels, 10) == pytest.approx((1.0 + 0.0) / 2)
    assert set(per_query(run, qrels, "ndcg", 10)) == {"q1", "q3"}
    with pytest.raises(InputError, match="no query with a relevant"):
        ndcg_at_k(run, {"q2": {"b": 0}}, 10)


def test_ties_broken_by_doc_id_descending():
    # trec_eval order: equal scores -> larger id first
    assert rank_documents({"a": 1.0, "c": 1.0, "b": 1.0, "z": 0.5}) == ["c", "b", "a", "z"]
    run = {"q": {"a": 1.0, "b": 1.0}}
    assert mrr_at_k(run, {"q": {"a": 1}}, 10) == 0.5  # b ranks first
    assert mrr_at_k(run, {"q": {"b": 1}}, 10) == 1.0


@pytest.mark.parametrize("fn", [ndcg_at_k, mrr_at_k, recall_at_k, map_at_k, precision_at_k])
@pytest.mark.parametrize("k", [0, -3, 1.5, True])
def test_bad_k_raises(fn, k):
    with pytest.raises(ConfigError, match="positive int"):
        fn(RUN, QRELS, k)


def test_nan_scores_and_bad_types_raise():
    with pytest.raises(InputError, match="NaN"):
        ndcg_at_k({"q": {"a": float("nan")}}, {"q": {"a": 1}}, 10)
    with pytest.raises(InputError):
        ndcg_at_k([("q", {})], {"q": {"a": 1}}, 10)  # type: ignore[arg-type]


def test_ndcg_agrees_with_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = 12
        grades = rng.integers(0, 4, size=n)
        grades[rng.integers(0, n)] = 2  # at least one relevant
        scores = rng.permutation(n).astype(float)  # no ties
        docs = [f"d{i}" for i in range(n)]
        run = {"q": dict(zip(docs, scores, strict=True))}
        qrels = {"q": {d: int(g) for d, g in zip(docs, grades, strict=True)}}
        for k in (1, 3, 5, 12):
            ref = sklearn_metrics.ndcg_score(grades[None, :], scores[None, :], k=k)
            assert ndcg_at_k(run, qrels, k) == pytest.approx(ref, abs=1e-12)


def test_map_agrees_with_sklearn_average_precision():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = 15
        rel = (rng.random(n) < 0.3).astype(int)
        rel[0] = 1
        scores = rng.permutation(n).astype(float)
        docs = [f"d{i:02d}" for i in range(n)]
        run = {"q": dict(zip(docs, scores, strict=True))}
        qrels = {"q": {d: int(r) for d, r in zip(docs, rel, strict=True)}}
        ref = sklearn_metrics.average_precision_score(rel, scores)
        assert map_at_k(run, qrels, n) == pytest.approx(ref, abs=1e-12)


def test_correlations_hand_computed():
    # x = 1,2,3 ; y = 1,3,2 -> ranks identical to values; Spearman = 1 - 6*sum(d^2)/(n(n^2-1)) = 1 - 6*2/24 = 0.5
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    # Pearson of (1,2,3) and (2,4,7): means 2 and 13/3; cov = (-1)(-7/3)+0+(1)(8/3) = 5; var_x = 2, var_y = 38/3 * ...
    x, y = np.array([1.0, 2, 3]), np.array([2.0, 4, 7])
    dx, dy = x - 2, y - 13 / 3
    assert pearson(x, y) == pytest.approx((dx @ dy) / math.sqrt((dx @ dx) * (dy @ dy)))
    # ties get average ranks: [1, 2, 2, 3] -> ranks [1, 2.5, 2.5, 4]
    np.testing.assert_allclose(rankdata([1, 2, 2, 3]), [1, 2.5, 2.5, 4])
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(InputError):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(InputError):
        pearson([1], [1])
    with pytest.raises(InputError):
        pearson([1, float("nan")], [1, 2])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.floats(-10, 10, allow_nan=False)), min_size=3, max_size=40))
def test_correlations_agree_with_scipy(pairs):
    stats = pytest.importorskip("scipy.stats")
    x = np.array([p[0] for p in pairs], dtype=float)
    y = np.array([p[1] for p in pairs], dtype=float)
    np.testing.assert_allclose(rankdata(x), stats.rankdata(x))
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        assert math.isnan(spearman(x, y))
        return
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-9)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-9)


def test_deep_cutoffs_and_the_nan_error_names_the_document():
    run = {"q": {f"d{i:03d}": 1000.0 - i for i in range(400)}}
    qrels = {"q": {"d299": 2, "d999": 1}}  # d299 at rank 300; d999 judged but never retrieved
    # DCG = 2 / log2(301); the ideal ranks grade 2 then grade 1: 2 / log2(2) + 1 / log2(3)
    assert ndcg_at_k(run, qrels, 500) == pytest.approx((2 / math.log2(301)) / (2 + 1 / math.log2(3)))
    assert ndcg_at_k(run, qrels, 299) == 0.0
    assert recall_at_k(run, qrels, 300) == 0.5 and mrr_at_k(run, qrels, 1000) == 1 / 300
    with pytest.raises(InputError, match="'b'.*NaN"):
        rank_documents({"a": 1.0, "b": float("nan"), "c": 0.5})


def _full_ranking_metrics(run, qrels, k):
    """The five metrics from the full ranking of every query (the definitions, computed the slow way)."""
    sums = dict.fromkeys(("ndcg", "mrr", "recall", "precision", "map"), 0.0)
    n = 0
    for qid, rels in qrels.items():
        n_rel = sum(g > 0 for g in rels.values())
        if n_rel == 0:
            continue
        n += 1
        gains = [rels.get(d, 0) for d in rank_documents(run[qid])[:k]] if run.get(qid) else []
        ideal = sorted((g for g in rels.values() if g > 0), reverse=True)[:k]
        dcg = 0.0
        for i, g in enumerate(gains):
            if g > 0:
                dcg += g / math.log2(i + 2)
        sums["ndcg"] += dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        first = next((i for i, g in enumerate(gains) if g > 0), None)
        sums["mrr"] += 0.0 if first is None else 1.0 / (first + 1)
        found = sum(g > 0 for g in gains)
        sums["recall"] += found / n_rel
        sums["precision"] += found / k
        hit, total = 0, 0.0
        for i, g in enumerate(gains):
            if g > 0:
                hit += 1
                total += hit / (i + 1)
        sums["map"] += total / n_rel
    return {m: s / n for m, s in sums.items()}


@pytest.mark.parametrize("ids", ["str", "int", "colliding"])
def test_ranks_counted_per_hit_equal_the_full_ranking_bit_for_bit(ids):
    rng = np.random.default_rng(3)
    run, qrels = {}, {}
    for q in range(150):
        n = int(rng.integers(1, 60))
        docs = [int(i) for i in rng.choice(1000, size=n, replace=False)]
        distinct = q % 3 == 0  # a third of the queries without ties (the bisection path), the rest with many
        scores = [float(rng.normal()) if distinct else float(rng.integers(0, 5)) for _ in docs]
        keyed = {d if ids == "int" else str(d): s for d, s in zip(docs, scores, strict=True)}
        if ids == "colliding":
            keyed[docs[0]] = 2.5  # int 7 next to "7": both ranked, as the old full ranking did
        run[f"q{q}"] = keyed
        rels = {str(i): int(rng.integers(0, 3)) for i in rng.choice(1000, size=8, replace=False)}
        rels[str(docs[0])] = 2
        qrels[f"q{q}"] = rels
    qrels["q-missing"] = {"1": 1}  # judged, nothing retrieved
    for k in (1, 5, 10, 100):
        expected = _full_ranking_metrics(run, qrels, k)
        got = evaluate_run(run, qrels, [f"{m}@{k}" for m in expected])
        assert got == {f"{m}@{k}": v for m, v in expected.items()}, k  # same sums in the same order: equal floats
        for metric, value in expected.items():
            per = per_query(run, qrels, metric, k)
            assert np.mean(list(per.values())) == pytest.approx(value)


def test_agrees_with_pytrec_eval_including_ties():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(7)
    docs = [f"doc{i:02d}" for i in range(30)]
    qrels, run = {}, {}
    for q in range(25):
        judged = rng.choice(docs, size=8, replace=False)
        qrels[f"q{q}"] = {d: int(rng.integers(0, 4)) for d in judged}
        qrels[f"q{q}"][str(judged[0])] = max(1, qrels[f"q{q}"][str(judged[0])])
        if q % 7 == 3:
            continue  # nothing retrieved for this query
        retrieved = rng.choice(docs, size=int(rng.integers(5, 30)), replace=False)
        # few distinct scores -> many ties, broken by doc id descending in both implementations
        run[f"q{q}"] = {str(d): float(rng.integers(0, 4)) for d in retrieved}
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.3", "ndcg_cut.10", "recall.5", "map_cut.10", "P.5",
                                                "recip_rank"})
    ref = ev.evaluate(run)
    for metric, k, key in [("ndcg", 3, "ndcg_cut_3"), ("ndcg", 10, "ndcg_cut_10"), ("recall", 5, "recall_5"),
                           ("map", 10, "map_cut_10"), ("precision", 5, "P_5"), ("mrr", 1000, "recip_rank")]:
        ours = per_query(run, qrels, metric, k)
        for q, scores in ref.items():
            assert ours[q] == pytest.approx(scores[key], abs=1e-4), (metric, k, q)
        # queries without a run score 0 in ours (trec_eval -c)
        assert all(ours[q] == 0.0 for q in qrels if q not in run)
