"""Evaluation: pure metric functions, task runners and the ladder report.

* :mod:`embedstack.evaluation.metrics` — nDCG@k, MRR@k, Recall@k, MAP@k, Precision@k (trec_eval
  semantics), Spearman and Pearson correlation.
* :mod:`embedstack.evaluation.runners` — retrieval (BEIR style), STS, word similarity, analogies,
  classification and clustering; each returns a dict with a ``primary_metric``.
* :mod:`embedstack.evaluation.ladder` — every generation on the same data in one table.

Example:
    >>> from embedstack.evaluation import ndcg_at_k
    >>> ndcg_at_k({"q": {"a": 1.0}}, {"q": {"a": 1}}, 10)
    1.0
"""

from embedstack.evaluation.metrics import (
    evaluate_run,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    pearson,
    precision_at_k,
    recall_at_k,
    spearman,
)
from embedstack.evaluation.runners import (
    evaluate_analogies,
    evaluate_classification,
    evaluate_clustering,
    evaluate_retrieval,
    evaluate_sts,
    evaluate_word_similarity,
)

__all__ = [
    "evaluate_run",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "pearson",
    "precision_at_k",
    "recall_at_k",
    "spearman",
    "evaluate_analogies",
    "evaluate_classification",
    "evaluate_clustering",
    "evaluate_retrieval",
    "evaluate_sts",
    "evaluate_word_similarity",
]
