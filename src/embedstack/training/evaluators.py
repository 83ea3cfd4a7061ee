"""Evaluation during training: the project's own runners (STS, retrieval) behind one small interface.

An evaluator is a callable ``evaluator(encoder) -> {metric: value x100, ...}`` with a ``primary`` attribute
naming the metric that selects the best checkpoint (higher is better) and a ``name``. The trainer
calls it every ``eval_steps`` with the model being trained (in eval mode, no dropout).

Example:
    >>> from embedstack.data import STSDataset
    >>> import numpy as np
    >>> ev = STSEvaluator(STSDataset(["a", "b", "c"], ["a", "c", "b"], np.array([5.0, 1.0, 2.0])))
    >>> ev.primary, ev.name
    ('spearman', 'sts')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from embedstack.errors import ConfigError, InputError

__all__ = ["STSEvaluator", "RetrievalEvaluator", "RerankEvaluator", "evaluator_from_spec", "query_half"]


class STSEvaluator:
    """Spearman (x100) of cosine vs gold scores, by :func:`embedstack.evaluation.runners.evaluate_sts`; a
    cross-encoder (anything with ``predict(pairs)``) is scored by its own pair scores instead of a cosine."""

    primary = "spearman"

    def __init__(self, sts: Any, *, name: str = "sts", batch_size: int = 128, max_pairs: int | None = None) -> None:
        self.sts, self.name, self.batch_size, self.max_pairs = sts, name, batch_size, max_pairs

    def __call__(self, encoder: Any) -> dict[str, float]:
        from embedstack.evaluation.runners import evaluate_sts

        if callable(getattr(encoder, "predict", None)) and not callable(getattr(encoder, "encode", None)):
            import numpy as np

            from embedstack.evaluation.metrics import pearson, spearman

            n = len(self.sts.s1) if self.max_pairs is None else min(self.max_pairs, len(self.sts.s1))
            pairs = list(zip(self.sts.s1[:n], self.sts.s2[:n], strict=True))
            pred = np.asarray(encoder.predict(pairs, batch_size=self.batch_size), dtype=np.float64).reshape(-1)
            gold = np.asarray(self.sts.scores[:n], dtype=np.float64)
            return {"spearman": 100.0 * spearman(pred, gold), "pearson": 100.0 * pearson(pred, gold)}
        r = evaluate_sts(encoder, self.sts, batch_size=self.batch_size, max_pairs=self.max_pairs)
        return {"spearman": float(r["spearman"]), "pearson": float(r["pearson"])}


class RetrievalEvaluator:
    """nDCG@10 (and recall@100, MRR@10), x100 like the other evaluators, of exact dense retrieval, by
    :func:`embedstack.evaluation.runners.evaluate_retrieval` (the ladder's runner, which gives fractions)."""

    primary = "ndcg@10"

    def __init__(self, dataset: Any, *, name: str = "retrieval", batch_size: int = 64) -> None:
        self.dataset, self.name, self.batch_size = dataset, name, batch_size

    def __call__(self, encoder: Any) -> dict[str, float]:
        from embedstack.evaluation.runners import evaluate_retrieval

        r = evaluate_retrieval(encoder, self.dataset, batch_size=self.batch_size, latency_queries=0)
        return {k: 100 * float(r[k]) for k in ("ndcg@10", "recall@100", "mrr@10")}


class RerankEvaluator:
    """nDCG@10 (and MRR@10) after a cross-encoder reranks a first stage's top ``depth`` for every judged query.

    The first stage (BM25 by default) runs once, when the evaluator is made; each call only scores the
    ``queries x depth`` pairs. ``first_stage`` records the first stage's own nDCG@10 on the same
    queries, the figure a reranker has to beat.
    """

    primary = "ndcg@10"

    def __init__(self, dataset: Any, *, name: str = "rerank", first_stage: str = "bm25", depth: int = 50,
                 batch_size: int = 32) -> None:
        from embedstack.evaluation.metrics import ndcg_at_k
        from embedstack.models import resolve
        from embedstack.retrieval.build import build_index

        self.name, self.depth, self.batch_size = name, int(depth), batch_size
        encoder = resolve(first_stage)
        doc_ids = [str(d) for d in dataset.doc_ids()]
        index = build_index(list(dataset.doc_texts()), doc_ids, encoder, spec=first_stage)
        self.qids = [str(q) for q in dataset.query_ids()]
        self.queries = list(dataset.query_texts())
        vectors = encoder.encode_sparse(self.queries, role="query") if callable(getattr(encoder, "encode_sparse", None)) \
            else encoder.encode(self.queries, role="query")
        self.hits = [[(h.id, h.text or "") for h in hits] for hits in index.search(vectors, self.depth)]
        self.qrels = {q: dict(dataset.qrels.get(q, {})) for q in self.qids}
        first = {q: {h[0]: float(self.depth - r) for r, h in enumerate(hits)} for q, hits in zip(self.qids, self.hits, strict=True)}
        self.first_stage = {"name": first_stage, "ndcg@10": 100 * float(ndcg_at_k(first, self.qrels, 10))}

    def __call__(self, reranker: Any) -> dict[str, float]:
        import numpy as np

        from embedstack.evaluation.metrics import mrr_at_k, ndcg_at_k

        pairs = [(q, text) for q, hits in zip(self.queries, self.hits, strict=True) for _, text in hits]
        scores = np.asarray(reranker.predict(pairs, batch_size=self.batch_size), dtype=np.float64).reshape(-1)
        run: dict[str, dict[str, float]] = {}
        at = 0
        for q, hits in zip(self.qids, self.hits, strict=True):
            run[q] = {h[0]: float(scores[at + i]) for i, h in enumerate(hits)}
            at += len(hits)
        return {"ndcg@10": 100 * float(ndcg_at_k(run, self.qrels, 10)), "mrr@10": 100 * float(mrr_at_k(run, self.qrels, 10))}


#: the one tune/report split of a dataset's judged queries used by every experiment and recipe:
#: :func:`query_half` (by distinct query text; not ``RetrievalDataset.split_queries``, which splits ids)
QUERY_SPLIT_FRACTION = 0.5
QUERY_SPLIT_SEED = 0


def query_half(dataset: Any, half: str) -> Any:
    """The ``tune`` or ``report`` half of ``dataset``'s judged queries (the project's fixed split).

    Distinct query texts are shuffled with seed ``QUERY_SPLIT_SEED`` and cut 50/50, so a query text
    that appears under two ids never lands in both halves. ``tune-train`` / ``tune-dev`` cut the tune
    half again, 70/30 (seed 1), for choosing between configurations without touching the report half.
    """
    if half not in ("tune", "report", "tune-train", "tune-dev"):
        raise ConfigError(f"query half must be 'tune', 'report', 'tune-train' or 'tune-dev', got {half!r}.")
    if half.startswith("tune-"):  # model selection inside the tune half: 70% train, 30% dev (seed 1)
        return _cut(query_half(dataset, "tune"), 0.7, 1, half == "tune-train")
    return _cut(dataset, QUERY_SPLIT_FRACTION, QUERY_SPLIT_SEED, half == "tune")


def _cut(dataset: Any, fraction: float, seed: int, first: bool) -> Any:
    import numpy as np

    ids = dataset.query_ids()
    texts = sorted({dataset.queries[q] for q in ids})  # by text: a query asked twice falls in one part
    order = np.random.default_rng(seed).permutation(len(texts))
    n_first = min(max(1, round(fraction * len(texts))), len(texts) - 1)
    chosen = {texts[i] for i in (order[:n_first] if first else order[n_first:])}
    return dataset.subset_queries([q for q in ids if dataset.queries[q] in chosen])


def _split_spec(spec: str) -> tuple[str, str, str | None, str | None]:
    kind, _, rest = spec.partition(":")
    rest, _, half = rest.partition("#")
    name, _, split = rest.partition("/")
    return kind, name, split or None, half or None


def evaluator_from_spec(spec: str, *, query_ids: Sequence[str] | None = None, encoding: str = "utf-8",
                        errors: str = "strict") -> STSEvaluator | RetrievalEvaluator | RerankEvaluator:
    """An evaluator from a string: ``sts:stsb/dev`` (a registry name or folder, and split),
    ``retrieval:scifact/train`` (BEIR dataset and qrels split) or ``rerank:scifact/train`` (a
    cross-encoder reranking BM25's top 50; ``rerank:scifact/train@20`` for another depth), optionally
    ``#tune`` or ``#report`` for one half of the judged queries (:func:`query_half`: tune on one half,
    report the other); ``query_ids`` restricts the queries further.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(f"evaluation spec {spec!r} must look like 'sts:stsb/dev' or 'retrieval:scifact/test'.",
                          param=("eval", f"evaluation spec {spec!r}"))
    kind, name, split, half = _split_spec(spec)
    if kind == "sts":
        from embedstack.data import load_sts

        if half is not None:
            raise ConfigError(f"evaluation spec {spec!r}: '#{half}' applies to retrieval specs only.")
        return STSEvaluator(load_sts(name or "stsb", split or "dev", encoding=encoding, errors=errors), name=spec)
    if kind in ("retrieval", "rerank"):
        from embedstack.data import load_beir

        depth = 50
        if kind == "rerank" and "@" in spec:  # rerank:scifact/train#tune@20: BM25's top 20
            core, _, d = spec.rpartition("@")
            if not d.isdigit() or int(d) < 1:
                raise ConfigError(f"evaluation spec {spec!r}: the depth after '@' must be a positive integer.")
            depth = int(d)
            kind, name, split, half = _split_spec(core)
        data = load_beir(name or "scifact", split=split or "test", encoding=encoding, errors=errors)
        if half is not None:
            data = query_half(data, half)
        if query_ids is not None:
            data = data.subset_queries(query_ids)
        if not data.query_ids():
            raise InputError(f"evaluation spec {spec!r}: no judged queries left to evaluate.")
        if kind == "rerank":
            return RerankEvaluator(data, name=spec, depth=depth)
        return RetrievalEvaluator(data, name=spec)
    raise ConfigError(f"unknown evaluation kind {kind!r} in {spec!r}; use 'sts:...', 'retrieval:...' or 'rerank:...'.")
