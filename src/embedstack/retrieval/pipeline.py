"""Retrieval pipelines: encode → search each index → fuse → rerank, with per-stage scores and timings.

A :class:`Pipeline` holds one or more :class:`Retriever` (an encoder and the index it built), an
optional :class:`~embedstack.index.fusion.Fusion` (RRF by default when there are several retrievers)
and an optional :class:`~embedstack.base.Reranker`. Each returned hit carries, in ``stages``, the
score it got from every retriever that found it, the fused score (``"fusion"``) and the reranker's
(``"rerank"``); :class:`SearchResult` adds the seconds spent in every stage.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedstack import _threads
from embedstack._validation import check_int, check_k
from embedstack.base import Hit
from embedstack.errors import ConfigError, InputError, ScoreError
from embedstack.index.fusion import RRF, Fusion
from embedstack.index.store import encoder_identity

__all__ = ["Retriever", "SearchResult", "Pipeline"]


@dataclass
class Retriever:
    """An encoder and the index its vectors live in.

    Args:
        name: stage name used in ``Hit.stages`` and timings ("dense", "bm25" ...).
        encoder: a DenseEncoder, SparseEncoder or MultiVectorEncoder (fitted).
        index: the index built from that encoder's document vectors.
        check: verify that the encoder's identity matches the one recorded in the index.
    """

    name: str
    encoder: Any
    index: Any
    check: bool = True
    kind: str = field(init=False)

    def __post_init__(self) -> None:
        from embedstack.index import MultiVectorIndex, SparseIndex

        backend_kind = getattr(self.index, "kind", None)  # an external backend (QdrantIndex) says what it holds
        if isinstance(self.index, SparseIndex) or backend_kind == "sparse":
            self.kind = "sparse"
            method = "encode_sparse"
        elif isinstance(self.index, MultiVectorIndex) or backend_kind == "multivector":
            self.kind = "multivector"
            method = "encode_tokens"
        else:
            self.kind = "dense"
            method = "encode"
        if not callable(getattr(self.encoder, method, None)):
            raise ConfigError(
                f"retriever {self.name!r}: a {type(self.index).__name__} needs an encoder with .{method}(), "
                f"but {type(self.encoder).__name__} has none."
            )
        if self.check and getattr(self.index, "encoder", None):
            self.index.check_encoder(encoder_identity(self.encoder, self.index.encoder.get("spec")))

    def encode(self, texts: Sequence[str]) -> Any:
        if self.kind == "sparse":
            return self.encoder.encode_sparse(list(texts), role="query")
        if self.kind == "multivector":
            return self.encoder.encode_tokens(list(texts), role="query")
        return self.encoder.encode(list(texts), role="query")


@dataclass
class SearchResult:
    """Hits of one query (best first) and seconds spent per stage."""

    query: str
    hits: list[Hit]
    timings: dict[str, float]

    def __iter__(self) -> Any:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, i: int) -> Hit:
        return self.hits[i]

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "timings": self.timings,
                "hits": [{"id": h.id, "score": h.score, "stages": h.stages, "text": h.text,
                          "metadata": h.metadata} for h in self.hits]}


class Pipeline:
    """Retrieve with one or more indexes, fuse, optionally rerank.

    Args:
        retrievers: :class:`Retriever` objects, or a mapping name → (encoder, index).
        fusion: how several result lists combine (default :class:`RRF` with k=60).
        reranker: optional cross-encoder style ``Reranker`` (scores (query, text) pairs).
        candidates: hits fetched from each retriever before fusion (>= k).
        rerank_top: fused hits passed to the reranker (default ``candidates``); the hits below it follow
            the reranked ones in first-stage order, with scores below the lowest reranked score (their
            first-stage scores stay in ``Hit.stages``).
        rerank_fusion: combine the reranker's score with the first stage's instead of replacing it: a
            :class:`~embedstack.index.ConvexFusion` whose ``alpha`` weighs the reranker (``convex-z:0.7``
            from :func:`~embedstack.retrieval.evaluate.parse_fusion`: 0.7 · z(reranker) + 0.3 · z(first
            stage) over the reranked hits of each query). A reranker trained on little data often
            ranks worse alone than the retriever it reranks but still adds to it.

    Example:
        >>> import numpy as np
        >>> from embedstack.index import FlatIndex
        >>> class Toy:  # a DenseEncoder: one-hot on the first letter
        ...     dim = 3
        ...     def encode(self, texts, *, role="document", batch_size=64):
        ...         return np.stack([np.eye(3, dtype=np.float32)["abc".index(t[0])] for t in texts])
        >>> idx = FlatIndex(3)
        >>> _ = idx.add(Toy().encode(["apple", "banana", "cherry"]), ["a", "b", "c"], texts=["apple", "banana", "cherry"])
        >>> res = Pipeline([Retriever("dense", Toy(), idx)]).search("bagel", k=1)
        >>> res.hits[0].id, res.hits[0].text, sorted(res.timings)
        ('b', 'banana', ['encode:dense', 'search:dense', 'total'])
    """

    def __init__(self, retrievers: Sequence[Retriever] | Mapping[str, tuple[Any, Any]], *,
                 fusion: Fusion | None = None, reranker: Any = None, candidates: int = 100,
                 rerank_top: int | None = None, rerank_fusion: Fusion | None = None) -> None:
        if isinstance(retrievers, Mapping):
            retrievers = [Retriever(name, enc, idx) for name, (enc, idx) in retrievers.items()]
        self.retrievers = list(retrievers)
        if not self.retrievers:
            raise ConfigError("A Pipeline needs at least one retriever (an encoder and its index).")
        names = [r.name for r in self.retrievers]
        if len(set(names)) != len(names):
            raise ConfigError(f"retriever names must be unique; got {names}.")
        self.fusion = fusion if fusion is not None else RRF()
        if reranker is not None and not callable(getattr(reranker, "score", None)):
            raise ConfigError(f"reranker {type(reranker).__name__} has no score(pairs) method (the Reranker protocol).")
        self.reranker = reranker
        self.candidates = int(check_int(self, "candidates", candidates, low=1))  # type: ignore[arg-type]
        self.rerank_top = check_int(self, "rerank_top", rerank_top, low=1, allow_none=True)
        if rerank_fusion is not None and reranker is None:
            raise ConfigError("rerank_fusion combines a reranker's scores with the first stage's; give a reranker too.")
        self.rerank_fusion = rerank_fusion

    def search(self, query: str, k: int = 10) -> SearchResult:
        """Top-``k`` hits for one query string, with per-stage scores and timings."""
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[SearchResult]:
        """Search several queries; encoders and indexes run batched, timings are per batch/len."""
        k = check_k(k)
        if isinstance(queries, str):
            raise InputError("search_batch takes a list of query strings; use search() for one.")
        queries = [str(q) for q in queries]
        n = len(queries)
        if n == 0:
            return []
        with _threads.for_batch(n):  # one query: no BLAS/numba pools left spinning between the stages
            return self._search_batch(queries, k)

    def _search_batch(self, queries: list[str], k: int) -> list[SearchResult]:
        n = len(queries)
        depth = max(k, self.candidates) if (len(self.retrievers) > 1 or self.reranker) else k
        timings: dict[str, float] = {}
        runs: list[dict[str, list[Hit]]] = [{} for _ in range(n)]
        t_all = time.perf_counter()
        for r in self.retrievers:
            t0 = time.perf_counter()
            qv = r.encode(queries)
            t1 = time.perf_counter()
            results = r.index.search(qv, depth)
            t2 = time.perf_counter()
            timings[f"encode:{r.name}"] = (t1 - t0) / n
            timings[f"search:{r.name}"] = (t2 - t1) / n
            for i, hits in enumerate(results):
                for h in hits:
                    h.stages = {**h.stages, r.name: h.score} if h.stages else {r.name: h.score}
                runs[i][r.name] = hits
        out_hits: list[list[Hit]] = []
        if len(self.retrievers) > 1:
            t0 = time.perf_counter()
            width = max(k, self.rerank_top or self.candidates) if self.reranker else k
            fused = [self.fusion.fuse(run, width) for run in runs]
            timings["fusion"] = (time.perf_counter() - t0) / n
            out_hits = [_merge_stages(f, run) for f, run in zip(fused, runs, strict=True)]
        else:
            out_hits = [run[self.retrievers[0].name] for run in runs]
        if self.reranker is not None:
            t0 = time.perf_counter()
            out_hits = [self._rerank(q, hits, k) for q, hits in zip(queries, out_hits, strict=True)]
            timings["rerank"] = (time.perf_counter() - t0) / n
        timings["total"] = (time.perf_counter() - t_all) / n
        return [SearchResult(q, hits[:k], dict(timings)) for q, hits in zip(queries, out_hits, strict=True)]

    def _rerank(self, query: str, hits: list[Hit], k: int) -> list[Hit]:
        top = hits[: self.rerank_top or self.candidates]
        if not top:
            return []
        missing = [h.id for h in top if h.text is None]
        if missing:
            raise InputError(
                f"reranking needs document text, but hit {missing[0]!r} has none; add texts= when building the index."
            )
        scores = np.asarray(self.reranker.score([(query, h.text) for h in top]), dtype=np.float32).reshape(-1)
        if len(scores) != len(top):
            raise InputError(f"the reranker returned {len(scores)} scores for {len(top)} pairs.")
        if not np.isfinite(scores).all():
            raise ScoreError(f"the reranker returned {int((~np.isfinite(scores)).sum())} NaN or infinite score(s) for "
                             f"query {query[:60]!r}; a ranking from them would be arbitrary.")
        order = np.argsort(-scores, kind="stable")
        reranked = [Hit(top[i].id, float(scores[i]), {**top[i].stages, "rerank": float(scores[i])},
                        top[i].text, top[i].metadata) for i in order]
        if self.rerank_fusion is not None:  # reranker and first stage combined, over the reranked hits
            by_id = {h.id: h for h in reranked}
            at = {h.id: i for i, h in enumerate(reranked)}
            fused = sorted(self.rerank_fusion.fuse({"rerank": reranked, "first": list(top)}, len(top)),
                           key=lambda f: (-f.score, at[f.id]))  # ties keep the reranker's order
            reranked = [Hit(f.id, f.score, {**by_id[f.id].stages, "rerank+first": f.score}, by_id[f.id].text,
                            by_id[f.id].metadata) for f in fused]
        # hits below the rerank depth follow in first-stage order, scored below every reranked hit (their own
        # first-stage score stays in .stages): one descending score scale for the whole list
        floor = min((h.score for h in reranked), default=0.0)
        tail = [Hit(h.id, floor - (i + 1), dict(h.stages), h.text, h.metadata)
                for i, h in enumerate(hits[len(top):k])]
        return (reranked + tail)[:k]

    def __repr__(self) -> str:
        names = ", ".join(f"{r.name}:{type(r.index).__name__}" for r in self.retrievers)
        return f"Pipeline([{names}], fusion={self.fusion!r}, reranker={type(self.reranker).__name__ if self.reranker else None})"


def _merge_stages(fused: list[Hit], run: Mapping[str, list[Hit]]) -> list[Hit]:
    """Carry each input hit's own per-stage scores (e.g. hamming/rescore) into the fused hits."""
    inner: dict[str, dict[str, float]] = {}
    for name, hits in run.items():
        for h in hits:
            inner.setdefault(h.id, {}).update({(s if s == name else f"{name}.{s}"): v for s, v in h.stages.items()})
    return [Hit(h.id, h.score, {**inner.get(h.id, {}), **h.stages}, h.text, h.metadata) for h in fused]
