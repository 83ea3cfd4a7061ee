"""Retrieval pipelines: retrieve with one or more indexes → fuse → rerank, with per-stage timings.

Example:
    >>> from embedstack.retrieval import Pipeline, Retriever, open_pipeline  # doctest: +SKIP
    >>> results = open_pipeline(["idx-bm25", "idx-minilm"]).search("what do cats eat", k=5)  # doctest: +SKIP
"""

from embedstack.retrieval.build import build_index, load_encoder_for, open_pipeline, read_corpus
from embedstack.retrieval.evaluate import evaluate_pipeline, hybrid_runner, parse_fusion
from embedstack.retrieval.pipeline import Pipeline, Retriever, SearchResult

__all__ = ["Pipeline", "Retriever", "SearchResult", "build_index", "open_pipeline", "read_corpus",
           "load_encoder_for", "evaluate_pipeline", "hybrid_runner", "parse_fusion"]
