"""Evaluation metrics as pure functions (numpy only).

Ranking metrics follow the trec_eval / pytrec_eval semantics that BEIR reports:

* A *run* maps each query id to ``{doc_id: score}``; a *qrels* maps each query id to
  ``{doc_id: relevance}`` (graded integers; a document is *relevant* when its grade is >= 1).
* Each query's documents are ranked by score, highest first. **Ties are broken by document id in
  descending string order**, exactly as trec_eval does, so a run always yields the same ranking.
* Only the first ``k`` ranked documents count (the ``@k`` cut-off).
* The mean is taken over the queries of ``qrels`` that have at least one relevant document; such a
  query that is missing from the run (nothing retrieved) scores 0. Queries of the run that are not in
  the qrels are ignored.

nDCG uses the graded gain ``rel`` and the discount ``1 / log2(rank + 1)`` (rank starting at 1); the
ideal DCG ranks the judged documents of that query by grade. MAP@k divides the sum of precisions at
the relevant ranks by the number of relevant documents (not by ``min(k, R)``), and Precision@k divides
by ``k`` even when fewer documents were retrieved — both as in trec_eval.

Example:
    >>> run = {"q1": {"d1": 0.9, "d2": 0.8, "d3": 0.1}}
    >>> qrels = {"q1": {"d2": 1}}
    >>> round(ndcg_at_k(run, qrels, 10), 4), mrr_at_k(run, qrels, 10), recall_at_k(run, qrels, 1)
    (0.6309, 0.5, 0.0)
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from embedstack.errors import ConfigError, InputError

__all__ = [
    "Run",
    "Qrels",
    "rank_documents",
    "ndcg_at_k",
    "mrr_at_k",
    "recall_at_k",
    "map_at_k",
    "precision_at_k",
    "per_query",
    "evaluate_run",
    "spearman",
    "pearson",
    "rankdata",
]

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise ConfigError(f"The cut-off k must be a positive int (e.g. 10). Got {k!r} instead.")
    return int(k)


def rank_documents(scores: Mapping[str, float], k: int | None = None) -> list[str]:
    """Document ids ranked by score (descending), ties by id descending (trec_eval order).

    Args:
        scores: ``{doc_id: score}`` of one query.
        k: keep only the first ``k`` (all when None).

    Raises:
        InputError: a score is NaN.
    """
    items = sorted(zip(_float_scores(scores), map(str, scores), strict=True), reverse=True)  # score, then id desc
    return [d for _, d in (items if k is None else items[:k])]


def _float_scores(scores: Mapping[str, float]) -> list[float]:
    """A query's scores as floats, in the mapping's order (``map`` runs in C: no Python loop per document)."""
    values = list(map(float, scores.values()))
    if any(map(math.isnan, values)):
        doc = next(d for d, v in zip(scores, values, strict=True) if math.isnan(v))
        raise InputError(f"run score of document {doc!r} is NaN; the encoder produced invalid vectors.")
    return values


# A query's ranking reaches the metrics as its hits: (rank, grade) of each relevant document the run retrieved
# (rank 0 = first), in rank order. A query has a few relevant documents and a run holds tens to thousands per
# query, so each hit's rank is counted (bisect on the sorted scores) instead of ranking every document.
def _hits(scores: Mapping[str, float] | None, rels: Mapping[str, int]) -> list[tuple[int, int]]:
    """(rank, grade) of each relevant document of ``rels`` found in ``scores``, by rank; ranks as
    :func:`rank_documents` orders the documents (score descending, ties by id descending)."""
    if not scores:
        return []
    if set(map(type, scores)) != {str}:  # ids compared as strings: rank them all (ids may collide, 1 and "1")
        return _ranked_hits(scores, rels)
    ordered = sorted(_float_scores(scores))
    n = len(ordered)
    hits = []
    for doc, grade in rels.items():
        if grade > 0 and doc in scores:
            s = float(scores[doc])
            above = bisect_right(ordered, s)
            if above - bisect_left(ordered, s) > 1:  # a tie: its order depends on the ids, so rank them all
                return _ranked_hits(scores, rels)
            hits.append((n - above, grade))  # n - above documents score higher
    hits.sort()
    return hits


def _ranked_hits(scores: Mapping[str, float], rels: Mapping[str, int]) -> list[tuple[int, int]]:
    """:func:`_hits` through the full ranking (ties, ids that are not strings)."""
    return [(r, g) for r, d in enumerate(rank_documents(scores)) if (g := rels.get(d, 0)) > 0]


def _ndcg(hits: list[tuple[int, int]], rels: Mapping[str, int], k: int, n_rel: int) -> float:
    dcg = 0.0
    for r, g in hits:
        if r < k:
            dcg += g / math.log2(r + 2)
    ideal = sorted((g for g in rels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg


def _mrr(hits: list[tuple[int, int]], rels: Mapping[str, int], k: int, n_rel: int) -> float:
    return 1.0 / (hits[0][0] + 1) if hits and hits[0][0] < k else 0.0


def _n_relevant(rels: Mapping[str, int]) -> int:
    return sum(1 for g in rels.values() if g > 0)


def _n_found(hits: list[tuple[int, int]], k: int) -> int:
    return sum(1 for r, _ in hits if r < k)


def _recall(hits: list[tuple[int, int]], rels: Mapping[str, int], k: int, n_rel: int) -> float:
    return _n_found(hits, k) / n_rel


def _precision(hits: list[tuple[int, int]], rels: Mapping[str, int], k: int, n_rel: int) -> float:
    return _n_found(hits, k) / k


def _average_precision(hits: list[tuple[int, int]], rels: Mapping[str, int], k: int, n_rel: int) -> float:
    total = 0.0
    for j, (r, _) in enumerate(hits):
        if r >= k:
            break
        total += (j + 1) / (r + 1)
    return total / n_rel


_METRICS: dict[str, Callable[[list[tuple[int, int]], Mapping[str, int], int, int], float]] = {
    "ndcg": _ndcg,
    "mrr": _mrr,
    "recall": _recall,
    "precision": _precision,
    "map": _average_precision,
}


def _check_inputs(run: Any, qrels: Any) -> None:
    if not isinstance(run, Mapping):
        raise InputError(f"run must be a dict {{query_id: {{doc_id: score}}}}, got {type(run).__name__}.")
    if not isinstance(qrels, Mapping):
        raise InputError(f"qrels must be a dict {{query_id: {{doc_id: grade}}}}, got {type(qrels).__name__}.")


def per_query(run: Run, qrels: Qrels, metric: str, k: int) -> dict[str, float]:
    """Score of ``metric`` ("ndcg", "mrr", "recall", "precision", "map") at ``k`` for each judged query.

    Only queries of ``qrels`` with at least one relevant document appear in the result.
    """
    k = _check_k(k)
    _check_inputs(run, qrels)
    try:
        fn = _METRICS[metric]
    except KeyError:
        raise ConfigError(f"Unknown ranking metric {metric!r}; choose one of {sorted(_METRICS)}.") from None
    out: dict[str, float] = {}
    for qid, rels in qrels.items():
        n_rel = _n_relevant(rels)
        if n_rel == 0:
            continue
        out[str(qid)] = fn(_hits(run.get(qid), rels), rels, k, n_rel)
    return out


def _mean(run: Run, qrels: Qrels, metric: str, k: int) -> float:
    scores = per_query(run, qrels, metric, k)
    if not scores:
        raise InputError(
            "qrels contain no query with a relevant document (grade >= 1); nothing to evaluate. "
            "Check the qrels file and the split."
        )
    return float(np.mean(list(scores.values())))


def ndcg_at_k(run: Run, qrels: Qrels, k: int) -> float:
    """Mean nDCG@k with graded gains (``rel / log2(rank + 1)``), as pytrec_eval's ``ndcg_cut_k``.

    Example:
        >>> # relevant d2 at rank 2: DCG = 1/log2(3) = 0.6309, ideal DCG = 1/log2(2) = 1
        >>> round(ndcg_at_k({"q": {"d1": 2.0, "d2": 1.0}}, {"q": {"d2": 1}}, 10), 4)
        0.6309
    """
    return _mean(run, qrels, "ndcg", k)


def mrr_at_k(run: Run, qrels: Qrels, k: int) -> float:
    """Mean reciprocal rank of the first relevant document within the top ``k`` (0 if none)."""
    return _mean(run, qrels, "mrr", k)


def recall_at_k(run: Run, qrels: Qrels, k: int) -> float:
    """Mean fraction of each query's relevant documents found in its top ``k``."""
    return _mean(run, qrels, "recall", k)


def precision_at_k(run: Run, qrels: Qrels, k: int) -> float:
    """Mean number of relevant documents in the top ``k`` divided by ``k``."""
    return _mean(run, qrels, "precision", k)


def map_at_k(run: Run, qrels: Qrels, k: int) -> float:
    """Mean average precision cut at ``k`` (divided by the number of relevant documents)."""
    return _mean(run, qrels, "map", k)


def evaluate_run(run: Run, qrels: Qrels, metrics: Iterable[str] = ("ndcg@10", "recall@100", "mrr@10",
                                                                     "map@10")) -> dict[str, float]:
    """Several ``name@k`` metrics at once, e.g. ``evaluate_run(run, qrels, ["ndcg@10", "recall@100"])``.

    Each query's hits (the ranks of its relevant documents) are found once and shared by all metrics.
    """
    _check_inputs(run, qrels)
    parsed: list[tuple[str, str, int]] = []
    for m in metrics:
        name, sep, kk = str(m).partition("@")
        if not sep or name not in _METRICS or not kk.lstrip("-").isdigit():
            raise ConfigError(f"Metric {m!r} is not of the form NAME@K with NAME in {sorted(_METRICS)}.")
        parsed.append((m, name, _check_k(int(kk))))
    if not parsed:
        return {}
    sums = dict.fromkeys((m for m, _, _ in parsed), 0.0)
    n = 0
    fns = [(m, _METRICS[name], k) for m, name, k in parsed]
    for qid, rels in qrels.items():
        n_rel = _n_relevant(rels)
        if n_rel == 0:
            continue
        n += 1
        hits = _hits(run.get(qid), rels)
        for m, fn, k in fns:
            sums[m] += fn(hits, rels, k, n_rel)
    if n == 0:
        raise InputError(
            "qrels contain no query with a relevant document (grade >= 1); nothing to evaluate. "
            "Check the qrels file and the split."
        )
    return {m: s / n for m, s in sums.items()}


# --------------------------------------------------------------------------- correlation


def _as_pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise InputError(f"correlation inputs differ in length: {a.size} vs {b.size}.")
    if a.size < 2:
        raise InputError(f"a correlation needs at least 2 pairs, got {a.size}.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InputError("correlation inputs contain NaN or infinite values.")
    return a, b


def rankdata(x: Any) -> np.ndarray:
    """Ranks starting at 1, tied values sharing the average of their ranks (scipy's 'average')."""
    a = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    # boundaries of runs of equal values
    starts = np.concatenate(([True], sorted_a[1:] != sorted_a[:-1]))
    run_id = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    counts = np.diff(np.append(first, a.size))
    avg = first + (counts + 1) / 2.0  # mean of 1-based ranks first+1 .. first+count
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = avg[run_id]
    return ranks


def pearson(x: Any, y: Any) -> float:
    """Pearson correlation coefficient; NaN when either input is constant (undefined)."""
    a, b = _as_pair(x, y)
    if np.ptp(a) == 0.0 or np.ptp(b) == 0.0:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    sa, sb = float(np.abs(a).max()), float(np.abs(b).max())
    if sa == 0.0 or sb == 0.0:
        return float("nan")
    a, b = a / sa, b / sb  # rescale first so tiny or huge values neither underflow nor overflow
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(np.clip((a @ b) / den, -1.0, 1.0))


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation (Pearson of average ranks); NaN when either input is constant."""
    a, b = _as_pair(x, y)
    return pearson(rankdata(a), rankdata(b))
