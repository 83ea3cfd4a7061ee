"""Scoring whole pipelines (hybrids) on a retrieval dataset, in the shape the ladder expects.

:func:`evaluate_pipeline` builds one index per model SPEC on the dataset's corpus, runs every judged
query through a :class:`~embedstack.retrieval.Pipeline` and returns the keys of
:func:`embedstack.evaluation.runners.evaluate_retrieval` (``ndcg@10``, ``recall@100``, ``mrr@10``,
``map@10``, ``index_seconds``, ``query_seconds``, ``latency_ms``, ``bytes_per_doc`` ...).
:func:`hybrid_runner` wraps it as a ladder ``retrieve`` callable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from embedstack.errors import ConfigError

__all__ = ["evaluate_pipeline", "hybrid_runner", "parse_fusion", "parse_rerank_fusion", "load_reranker"]


def load_reranker(spec: str | Any, *, flag: str = "--rerank") -> Any:
    """A reranker from a SPEC (a cross-encoder folder, ``recipe:NAME``) or the object itself.

    Raises:
        ConfigError: the SPEC names a model that does not score pairs (a bi-encoder, BM25 ...).
    """
    if not isinstance(spec, str):
        reranker = spec
    else:
        from embedstack.models import resolve

        reranker = resolve(spec)
    if not callable(getattr(reranker, "score", None)) or not callable(getattr(reranker, "rank", None)):
        raise ConfigError(f"{flag} {spec!r} is a {type(reranker).__name__}, not a reranker: it needs a cross-encoder "
                          "(a folder saved by `embedstack train cross-encoder`, a sentence-transformers CrossEncoder "
                          "folder, or recipe:NAME of a cross-encoder recipe).", param=(flag, f"{flag} {spec!r}"))
    return reranker


def parse_fusion(text: str) -> Any:
    """``rrf[:K]``, ``convex[:ALPHA]`` (min-max) or ``convex-z[:ALPHA]`` (z-score) → a Fusion."""
    from embedstack.index import RRF, ConvexFusion

    kind, _, arg = text.strip().partition(":")
    try:
        if kind == "rrf":
            return RRF(int(arg) if arg else 60)
        if kind in ("convex", "convex-z"):
            return ConvexFusion(float(arg) if arg else 0.5, normalization="zscore" if kind == "convex-z" else "minmax")
    except ValueError:
        raise ConfigError(f"fusion {text!r}: the number after ':' is malformed (rrf:60, convex:0.3).") from None
    raise ConfigError(f"fusion must be rrf[:K], convex[:ALPHA] or convex-z[:ALPHA]; got {text!r}.")


def parse_rerank_fusion(text: str | None, *, flag: str = "--rerank-fusion") -> Any:
    """``convex-z:ALPHA`` / ``convex:ALPHA`` → the ConvexFusion that weighs a reranker (ALPHA) against the first
    stage; None stays None (the reranker's order alone)."""
    if text is None:
        return None
    kind, _, arg = str(text).strip().partition(":")
    try:
        alpha = float(arg) if arg else 0.5
    except ValueError:
        alpha = float("nan")
    if kind not in ("convex", "convex-z") or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"{flag} takes convex-z:ALPHA or convex:ALPHA, ALPHA = the reranker's weight in [0, 1] "
                          f"(e.g. convex-z:0.5); got {text!r}.", param=(flag, f"{flag} {text!r}"))
    return parse_fusion(f"{kind}:{alpha}")


def evaluate_pipeline(specs: Sequence[str], dataset: Any, *, fusion: str = "rrf", index: str = "flat",
                      k: int = 100, progress: Callable[[str, int, int], None] | None = None,
                      block_size: int = 256, resolve: Callable[[str], Any] | None = None,
                      reranker: str | Any = None, rerank_k: int | None = None,
                      max_queries: int | None = None, rerank_fusion: str | None = None) -> dict[str, Any]:
    """Build an index per model SPEC on ``dataset``'s corpus, fuse their results (when several), rerank
    the top ``rerank_k`` with ``reranker`` (when given), score the run.

    Args:
        specs: model SPECs (e.g. ``["bm25", "all-MiniLM-L6-v2"]``); the first is the convex ``α`` list.
        dataset: an ``embedstack.data.RetrievalDataset``.
        fusion: ``rrf[:K]``, ``convex[:ALPHA]`` or ``convex-z[:ALPHA]``.
        index: index spec for the dense models.
        k: retrieval depth (candidates per model and fused list length).
        resolve: SPEC -> encoder (default :func:`embedstack.models.resolve`; the ladder passes one that
            applies its quick options and the embedding cache).
        reranker: a cross-encoder SPEC or object (:func:`load_reranker`); ``rerank_k``: how many fused
            hits it rescores (default ``k``); ``rerank_fusion``: ``convex-z:ALPHA`` (or ``convex:ALPHA``)
            combines the reranker's score (weight ALPHA) with the first stage's instead of replacing it;
            ``max_queries``: the first N judged queries only. The result gains ``stage_ms``, mean
            milliseconds per query in each stage (encode, search, fusion, rerank).
    """
    from embedstack.evaluation.metrics import map_at_k, mrr_at_k, ndcg_at_k, precision_at_k, recall_at_k
    from embedstack.models import resolve as resolve_spec
    from embedstack.retrieval.build import build_index
    from embedstack.retrieval.pipeline import Pipeline, Retriever

    progress = progress or (lambda stage, done, total: None)
    doc_ids, texts = [str(d) for d in dataset.doc_ids()], list(dataset.doc_texts())
    qids, qtexts = [str(q) for q in dataset.query_ids()], list(dataset.query_texts())
    if max_queries is not None:
        if isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries <= 0:
            raise ConfigError(f"max_queries must be a positive int. Got {max_queries!r} instead.")
        qids, qtexts = qids[:max_queries], qtexts[:max_queries]
    if not qids:
        raise ConfigError("the dataset has no judged queries to evaluate.")
    t0 = time.perf_counter()
    retrievers = []
    nbytes = 0
    for spec in specs:
        def cb(stage: str, done: int, total: int, _s: str = spec) -> None:
            progress(f"{_s}: {stage}", done, total)

        encoder = (resolve or resolve_spec)(spec)
        idx = build_index(texts, doc_ids, encoder, spec=spec, index=index, progress=cb)  # fits encoder if needed
        nbytes += idx.nbytes()
        retrievers.append(Retriever(spec, encoder, idx, check=False))
    index_seconds = time.perf_counter() - t0
    rr = None if reranker is None else load_reranker(reranker)
    pipe = Pipeline(retrievers, fusion=parse_fusion(fusion), candidates=k, reranker=rr, rerank_top=rerank_k,
                    rerank_fusion=parse_rerank_fusion(rerank_fusion))
    run: dict[str, dict[str, float]] = {}
    stage_s: dict[str, float] = {}
    t1 = time.perf_counter()
    for s in range(0, len(qids), block_size):
        block = qids[s : s + block_size]
        for qid, res in zip(block, pipe.search_batch(qtexts[s : s + block_size], k), strict=True):
            run[qid] = {h.id: float(len(res.hits) - i) for i, h in enumerate(res.hits)}  # the pipeline's order
            for stage, sec in res.timings.items():
                stage_s[stage] = stage_s.get(stage, 0.0) + sec
        progress("search", min(len(qids), s + block_size), len(qids))
    query_seconds = time.perf_counter() - t1
    qrels = {q: dict(dataset.qrels.get(q, {})) for q in qids}
    return {
        "ndcg@10": ndcg_at_k(run, qrels, 10), "recall@100": recall_at_k(run, qrels, 100),
        "mrr@10": mrr_at_k(run, qrels, 10), "map@10": map_at_k(run, qrels, 10),
        "precision@10": precision_at_k(run, qrels, 10), "recall@10": recall_at_k(run, qrels, 10),
        "index_seconds": index_seconds, "query_seconds": query_seconds,
        "latency_ms": 1000.0 * query_seconds / len(qids), "bytes_per_doc": nbytes / len(doc_ids),
        "n_queries": len(qids), "n_docs": len(doc_ids), "k": k,
        "stage_ms": {stage: 1000.0 * sec / len(qids) for stage, sec in stage_s.items()},
        "mode": (f"hybrid/{fusion}/{'+'.join(specs)}" if len(specs) > 1 else str(specs[0]))
                + ("" if rr is None else f" → rerank@{rerank_k or k}/{getattr(rr, 'name', type(rr).__name__)}")
                + ("" if rerank_fusion is None else f" ({rerank_fusion} with the first stage)"),
        "primary_metric": "ndcg@10",
    }


def hybrid_runner(specs: Sequence[str], *, fusion: str = "rrf", index: str = "flat",
                  k: int = 100) -> Callable[[Any, Any], dict[str, Any]]:
    """A ladder ``retrieve`` callable: ``(dataset, progress) -> metrics`` of the fused pipeline."""

    def run(dataset: Any, progress: Any = None) -> dict[str, Any]:
        return evaluate_pipeline(list(specs), dataset, fusion=fusion, index=index, k=k, progress=progress)

    return run
