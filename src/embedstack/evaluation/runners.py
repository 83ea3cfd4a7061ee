"""Task runners: retrieval (BEIR style) and STS, plus re-exports of the word and probe runners.

Every runner returns a plain dict of numbers with a ``primary_metric`` key naming the headline
number, so results print, serialise to JSON and compare across generations the same way.

Retrieval (:func:`evaluate_retrieval`):

* counting encoders (``requires_fit``) are fitted on the corpus first; the fit counts as index time;
* a sparse encoder (``encode_sparse``) is scored by a sparse matrix product ``Q @ D.T`` per block of
  queries, followed by a block-wise top-k; documents with score exactly 0 share no term with the
  query and are not returned. An unfitted sparse encoder that has its own inverted index
  (``index`` + ``retrieve``, as BM25 does) indexes and searches the corpus itself instead;
* a dense encoder is scored by exact inner product of L2-normalised vectors (cosine) per block of
  queries, or through ``embedstack.index.from_spec(index_spec, dim=...)`` when ``index_spec`` is given;
* top-k ties are broken by document id, descending (the trec_eval order used by the metrics).

Example:
    >>> from embedstack.data import sample_retrieval
    >>> from embedstack.models import resolve
    >>> res = evaluate_retrieval(resolve("bm25"), sample_retrieval())
    >>> res["primary_metric"], 0.0 <= res["ndcg@10"] <= 1.0, res["mode"]
    ('ndcg@10', True, 'sparse/inverted-index')
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.errors import ConfigError, InputError
from embedstack.evaluation.metrics import evaluate_run, pearson, spearman
from embedstack.evaluation.probes import evaluate_classification, evaluate_clustering
from embedstack.evaluation.words import WordVectors, evaluate_analogies, evaluate_word_similarity

__all__ = [
    "Progress",
    "RETRIEVAL_METRICS",
    "evaluate_retrieval",
    "evaluate_sts",
    "evaluate_word_similarity",
    "evaluate_analogies",
    "evaluate_classification",
    "evaluate_clustering",
    "encode_dense",
    "fit_if_needed",
    "has_inverted_index",
    "is_sparse",
    "l2_normalize",
    "top_k",
    "WordVectors",
]

#: ``progress(stage, done, total)`` — called as work advances (e.g. to drive a rich progress bar).
Progress = Callable[[str, int, int], None]

RETRIEVAL_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@10", "precision@10", "recall@10")

_ENCODE_CHUNK = 1024  # texts per encode call, so progress advances on long corpora


def _noop(stage: str, done: int, total: int) -> None:
    return None


def is_sparse(encoder: Any) -> bool:
    """True when ``encoder`` produces sparse rows (``encode_sparse``) rather than dense vectors."""
    return callable(getattr(encoder, "encode_sparse", None))


def is_multivector(encoder: Any) -> bool:
    """True when ``encoder`` gives a matrix of token vectors per text (``encode_tokens``: ColBERT)."""
    return callable(getattr(encoder, "encode_tokens", None)) and not callable(getattr(encoder, "encode", None)) \
        and not is_sparse(encoder)


def _multivector_index(encoder: Any, doc_texts: Sequence[str], doc_ids: Sequence[str], index_spec: str | None,
                       batch_size: int, progress: Progress) -> Any:
    """Encode the corpus into token matrices and add them to a multi-vector index (``multivector`` or
    ``plaid`` specs; exact MaxSim over every document when ``index_spec`` is None)."""
    from embedstack._extras import require

    index_mod = require("embedstack.index", "index", "vector indexes")
    index = index_mod.multivector_from_spec(index_spec, dim=int(encoder.dim), model=type(encoder).__name__)
    n = len(doc_texts)
    progress("encode corpus", 0, n)
    for s in range(0, n, _ENCODE_CHUNK):
        mats = encoder.encode_tokens(list(doc_texts[s:s + _ENCODE_CHUNK]), role="document", batch_size=batch_size)
        index.add(mats, list(doc_ids[s:s + _ENCODE_CHUNK]))
        progress("encode corpus", min(s + _ENCODE_CHUNK, n), n)
    if index_spec is not None and hasattr(index, "train"):
        index.train()
    return index


def has_inverted_index(encoder: Any) -> bool:
    """True when ``encoder`` can index a corpus and search it itself (``index`` + ``retrieve``, e.g. BM25)."""
    return callable(getattr(encoder, "index", None)) and callable(getattr(encoder, "retrieve", None))


def fit_if_needed(encoder: Any, texts: Sequence[str]) -> bool:
    """Fit a counting encoder that is not fitted yet on ``texts``; return whether it was fitted."""
    from embedstack.models import needs_fit

    if needs_fit(encoder):
        encoder.fit(list(texts))
        return True
    return False


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


def encode_dense(encoder: Any, texts: Sequence[str], *, role: str = "document", batch_size: int = 64,
                 progress: Progress | None = None, stage: str = "encode") -> np.ndarray:
    """Encode ``texts`` with a dense encoder in chunks (reporting progress); float32 ``(n, dim)``."""
    progress = progress or _noop
    texts = list(texts)
    parts = []
    progress(stage, 0, len(texts))
    from embedstack.base import progress_kwargs

    for i in range(0, len(texts), _ENCODE_CHUNK):
        chunk = texts[i:i + _ENCODE_CHUNK]

        def per_slice(d: int, i: int = i) -> None:
            progress(stage, i + d, len(texts))

        per_batch = progress_kwargs(encoder.encode, per_slice)
        out = np.asarray(encoder.encode(chunk, role=role, batch_size=batch_size, **per_batch), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(chunk):
            raise InputError(
                f"{type(encoder).__name__}.encode returned shape {out.shape} for {len(chunk)} texts; "
                "a DenseEncoder must return a 2-D (n, dim) array."
            )
        parts.append(out)
        progress(stage, min(i + _ENCODE_CHUNK, len(texts)), len(texts))
    if not parts:
        dim = int(getattr(encoder, "dim", 0))
        return np.zeros((0, dim), dtype=np.float32)
    x = np.concatenate(parts, axis=0)
    if not np.isfinite(x).all():
        raise InputError(f"{type(encoder).__name__} produced NaN or infinite vectors; check the model.")
    return x


def top_k(scores: np.ndarray, k: int, tiebreak: np.ndarray) -> list[np.ndarray]:
    """Indices of the ``k`` best columns of each row, best first.

    Ties are resolved by ``tiebreak`` (lower wins), so the selection is deterministic even at the
    cut-off. ``scores`` is ``(b, n)``; returns ``b`` index arrays of length ``min(k, n)``.
    """
    b, n = scores.shape
    kk = min(k, n)
    if kk == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(b)]
    kth = np.partition(scores, n - kk, axis=1)[:, n - kk] if kk < n else scores.min(axis=1)
    out = []
    for r in range(b):
        row = scores[r]
        cand = np.flatnonzero(row >= kth[r])
        order = np.lexsort((tiebreak[cand], -row[cand].astype(np.float64)))[:kk]
        out.append(cand[order])
    return out


def _id_tiebreak(doc_ids: Sequence[str]) -> np.ndarray:
    """Rank of each id in descending id order (0 = largest id): trec_eval's tie order."""
    order = sorted(range(len(doc_ids)), key=lambda i: doc_ids[i], reverse=True)
    rank = np.empty(len(doc_ids), dtype=np.int64)
    rank[np.asarray(order, dtype=np.int64)] = np.arange(len(doc_ids))
    return rank


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _index_bytes(index: Any) -> int:
    """Size of an index structure: its ``nbytes`` if it reports one, else the size of its saved folder."""
    nb = getattr(index, "nbytes", None)
    if callable(nb):
        nb = nb()
    if isinstance(nb, int | np.integer) and nb > 0:
        return int(nb)
    with tempfile.TemporaryDirectory(prefix="embedstack-index-") as tmp:
        target = Path(tmp) / "index"
        index.save(target)
        return _folder_bytes(target) if target.is_dir() else os.path.getsize(target)


def _dataset_parts(dataset: Any, max_queries: int | None) -> tuple[list[str], list[str], list[str], list[str],
                                                                  dict[str, dict[str, int]]]:
    try:
        doc_ids = [str(d) for d in dataset.doc_ids()]
        doc_texts = list(dataset.doc_texts())
        qids = [str(q) for q in dataset.query_ids()]
        qtexts = list(dataset.query_texts())
        qrels = dataset.qrels
    except AttributeError as exc:
        raise InputError(
            f"dataset must be an embedstack.data.RetrievalDataset (doc_ids, doc_texts, query_ids, "
            f"query_texts, qrels); got {type(dataset).__name__} ({exc})."
        ) from None
    if not doc_ids:
        raise InputError("the retrieval corpus is empty; check the dataset's corpus.jsonl.")
    if not qids:
        raise InputError("the dataset has no query with relevance judgements for this split; check qrels.")
    if max_queries is not None:
        if isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries <= 0:
            raise ConfigError(f"max_queries must be a positive int. Got {max_queries!r} instead.")
        qids, qtexts = qids[:max_queries], qtexts[:max_queries]
    sub = {q: dict(qrels.get(q, {})) for q in qids}
    return doc_ids, doc_texts, qids, qtexts, sub


def evaluate_retrieval(encoder: Any, dataset: Any, *, k: int = 100, index_spec: str | None = None,
                       batch_size: int = 64, progress: Progress | None = None,
                       max_queries: int | None = None, block_size: int = 256,
                       latency_queries: int = 20, use_native: bool = True, return_run: bool = False) -> dict[str, Any]:
    """Retrieve the top ``k`` documents for every judged query and score the run BEIR style.

    Args:
        encoder: a SparseEncoder or DenseEncoder (counting models are fitted on the corpus).
        dataset: an ``embedstack.data.RetrievalDataset``.
        k: retrieval depth (>= 1). Metrics are cut at 10 and 100; with ``k < 100`` recall@100 is
            the recall of the ``k`` retrieved documents.
        index_spec: for dense encoders, an ``embedstack.index`` spec (``flat``, ``int8``, ``hnsw`` ...)
            used instead of the exact in-memory scan.
        batch_size: encoder batch size.
        progress: optional ``progress(stage, done, total)`` callback.
        max_queries: evaluate only the first N judged queries.
        block_size: queries scored per block (bounds memory to ``block_size x n_docs`` floats).
        latency_queries: how many queries are also answered one at a time to measure
            ``single_query_ms`` (0 to skip).
        use_native: let an unfitted sparse encoder with its own inverted index (``index(texts, ids)``
            + ``retrieve(queries, k) -> (positions, scores)``, e.g. BM25) index and search the corpus
            itself; otherwise (or with False) the generic sparse product is used. Both give the same
            ranking up to ties at the cut-off.
        return_run: also return the run itself (``run``: ``{query_id: {doc_id: score}}``, for fusing runs).

    Returns:
        ``ndcg@10``, ``recall@100``, ``mrr@10``, ``map@10``, ``precision@10``, ``recall@10``,
        ``index_seconds`` (fit + encode corpus + build index), ``query_seconds`` (encode queries +
        search), ``latency_ms`` (query_seconds per query, batched), ``single_query_ms`` (median time
        to answer one query alone: encode + search + top-k), ``bytes_per_doc`` (size of the
        index structure / number of documents), ``n_queries``, ``n_docs``, ``mode``, ``k`` and
        ``primary_metric``.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise ConfigError(f"The retrieval depth k must be a positive int (e.g. 100). Got {k!r} instead.")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
        raise ConfigError(f"block_size must be a positive int. Got {block_size!r} instead.")
    if isinstance(latency_queries, bool) or not isinstance(latency_queries, int) or latency_queries < 0:
        raise ConfigError(f"latency_queries must be an int >= 0. Got {latency_queries!r} instead.")
    progress = progress or _noop
    doc_ids, doc_texts, qids, qtexts, qrels = _dataset_parts(dataset, max_queries)
    sparse = is_sparse(encoder)
    if index_spec is not None and sparse:
        raise ConfigError(
            f"--index {index_spec!r} applies to dense encoders; {type(encoder).__name__} is sparse and is "
            "scored with its inverted (sparse) matrix. Drop the index option or use a dense model."
        )
    multi = is_multivector(encoder)
    if not sparse and not multi and not callable(getattr(encoder, "encode", None)):
        raise ConfigError(f"{type(encoder).__name__} is neither a DenseEncoder, a SparseEncoder nor a MultiVectorEncoder.")
    tiebreak = _id_tiebreak(doc_ids)
    n_docs = len(doc_ids)
    from embedstack.models import needs_fit

    # an unfitted encoder with its own inverted index (BM25: ``index`` + batched ``retrieve``) is
    # measured through it, so the ladder shows the speed the model really has
    native = bool(use_native and sparse and has_inverted_index(encoder) and needs_fit(encoder))

    # ---- index: fit + encode the corpus (+ build the index structure)
    t0 = time.perf_counter()
    if native:
        progress("index corpus", 0, n_docs)
        encoder.index(doc_texts, doc_ids)
        encoder.retrieve(qtexts[:1], k)  # first call compiles the search kernel: count it as build time
        progress("index corpus", n_docs, n_docs)
    elif fit_if_needed(encoder, doc_texts):
        progress("fit", 1, 1)
    index = None
    if native:
        inv = getattr(encoder, "index_", None)
        parts = [np.asarray(getattr(inv, a)) for a in ("data", "indices", "indptr") if hasattr(inv, a)]
        nbytes = int(sum(p.nbytes for p in parts))
        mode = "sparse/inverted-index"
    elif multi:
        index = _multivector_index(encoder, doc_texts, doc_ids, index_spec, batch_size, progress)
        mode = f"multivector/{index_spec or 'exact'}"
        nbytes = 0
    elif sparse:
        progress("encode corpus", 0, n_docs)
        docs = encoder.encode_sparse(doc_texts, role="document").tocsr()
        progress("encode corpus", n_docs, n_docs)
        docs_t = docs.T.tocsr()
        nbytes = int(docs.data.nbytes + docs.indices.nbytes + docs.indptr.nbytes)
        mode = "sparse"
    else:
        vecs = l2_normalize(encode_dense(encoder, doc_texts, role="document", batch_size=batch_size,
                                         progress=progress, stage="encode corpus"))
        if index_spec is not None:
            from embedstack._extras import require

            index_mod = require("embedstack.index", "index", "vector indexes")
            index = index_mod.from_spec(index_spec, dim=int(vecs.shape[1]))
            index.add(vecs, doc_ids)
            mode = f"dense/{index_spec}"
        else:
            mode = "dense/exact"
        nbytes = int(vecs.nbytes)
    index_seconds = time.perf_counter() - t0
    if index is not None:
        nbytes = _index_bytes(index)

    # ---- queries: encode + score + top-k
    run: dict[str, dict[str, float]] = {}
    t1 = time.perf_counter()
    nq = len(qids)
    progress("search", 0, nq)
    if multi:
        assert index is not None
        search = index.search if index_spec is not None else index.exact_search
        for s in range(0, nq, block_size):
            qtok = encoder.encode_tokens(qtexts[s:s + block_size], role="query", batch_size=batch_size)
            for r, hits in enumerate(search(qtok, k)):
                run[qids[s + r]] = {h.id: float(h.score) for h in hits}
            progress("search", min(s + block_size, nq), nq)
    elif native:
        for s in range(0, nq, block_size):
            idx_b, sc_b = encoder.retrieve(qtexts[s:s + block_size], k)
            for r, (irow, srow) in enumerate(zip(idx_b.tolist(), sc_b.tolist(), strict=True)):
                run[qids[s + r]] = {doc_ids[i]: float(v) for i, v in zip(irow, srow, strict=True) if i >= 0 and v != 0.0}
            progress("search", min(s + block_size, nq), nq)
    elif sparse:
        q = encoder.encode_sparse(qtexts, role="query").tocsr()
        for s in range(0, nq, block_size):
            block = np.asarray((q[s:s + block_size] @ docs_t).toarray(), dtype=np.float32)
            for r, idx in enumerate(top_k(block, k, tiebreak)):
                row = block[r]
                run[qids[s + r]] = {doc_ids[i]: float(row[i]) for i in idx if row[i] != 0.0}
            progress("search", min(s + block_size, nq), nq)
    else:
        qv = l2_normalize(encode_dense(encoder, qtexts, role="query", batch_size=batch_size))
        if qv.shape[1] != vecs.shape[1]:
            raise InputError(f"query vectors have dim {qv.shape[1]} but document vectors {vecs.shape[1]}.")
        for s in range(0, nq, block_size):
            if index is not None:
                for r, hits in enumerate(index.search(qv[s:s + block_size], k)):
                    run[qids[s + r]] = {h.id: float(h.score) for h in hits}
            else:
                block = qv[s:s + block_size] @ vecs.T
                for r, idx in enumerate(top_k(block, k, tiebreak)):
                    run[qids[s + r]] = {doc_ids[i]: float(block[r, i]) for i in idx}
            progress("search", min(s + block_size, nq), nq)
    query_seconds = time.perf_counter() - t1

    # single-query latency: the first few queries answered one at a time (encode + search + top-k)
    from embedstack import _threads

    single: list[float] = []
    for text in qtexts[:latency_queries]:
        t = time.perf_counter()
        with _threads.serial():  # as Pipeline.search does for one query: no thread pools left fighting
            if multi:
                assert index is not None
                qtok = encoder.encode_tokens([text], role="query")
                (index.search if index_spec is not None else index.exact_search)(qtok, k)
            elif native:
                encoder.retrieve([text], k)
            elif sparse:
                row = np.asarray((encoder.encode_sparse([text], role="query").tocsr() @ docs_t).toarray(), np.float32)
                top_k(row, k, tiebreak)
            else:
                one = l2_normalize(np.asarray(encoder.encode([text], role="query", batch_size=1), dtype=np.float32))
                if index is not None:
                    index.search(one, k)
                else:
                    top_k(one @ vecs.T, k, tiebreak)
        single.append(1000.0 * (time.perf_counter() - t))

    metrics = evaluate_run(run, qrels, RETRIEVAL_METRICS)
    return {
        **metrics,
        "index_seconds": index_seconds,
        "query_seconds": query_seconds,
        "latency_ms": 1000.0 * query_seconds / nq,
        "single_query_ms": float(np.median(single)) if single else None,
        "bytes_per_doc": nbytes / n_docs,
        "n_queries": nq,
        "n_docs": n_docs,
        "k": int(k),
        "mode": mode,
        "primary_metric": "ndcg@10",
        **({"run": run} if return_run else {}),
    }


def _rowwise_cosine_sparse(a: Any, b: Any) -> np.ndarray:
    a = a.tocsr()
    b = b.tocsr()
    dots = np.asarray(a.multiply(b).sum(axis=1)).ravel()
    na = np.sqrt(np.asarray(a.multiply(a).sum(axis=1)).ravel())
    nb = np.sqrt(np.asarray(b.multiply(b).sum(axis=1)).ravel())
    den = na * nb
    return np.divide(dots, den, out=np.zeros_like(dots, dtype=np.float64), where=den > 0)


def evaluate_sts(encoder: Any, sts: Any, *, batch_size: int = 64, max_pairs: int | None = None,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Semantic textual similarity: cosine of the two sentences' encodings against the gold scores.

    Counting encoders that need fitting are fitted on the unique sentences of the pairs (no gold
    scores are used). Sparse encoders are compared by the cosine of their sparse rows.

    Args:
        encoder: a DenseEncoder or SparseEncoder.
        sts: an ``embedstack.data.STSDataset`` (``s1``, ``s2``, ``scores``).
        batch_size: encoder batch size.
        max_pairs: evaluate only the first N pairs.
        progress: optional ``progress(stage, done, total)`` callback.

    Returns:
        ``spearman`` and ``pearson`` (both x100, the STS convention), ``n`` (pairs), ``seconds``
        and ``primary_metric`` (``"spearman"``).
    """
    progress = progress or _noop
    try:
        s1, s2 = list(sts.s1), list(sts.s2)
        gold = np.asarray(sts.scores, dtype=np.float64)
    except AttributeError:
        raise InputError(f"sts must be an embedstack.data.STSDataset (s1, s2, scores); got {type(sts).__name__}.") from None
    if max_pairs is not None:
        if isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs <= 0:
            raise ConfigError(f"max_pairs must be a positive int. Got {max_pairs!r} instead.")
        s1, s2, gold = s1[:max_pairs], s2[:max_pairs], gold[:max_pairs]
    if not (len(s1) == len(s2) == gold.size):
        raise InputError(f"STS columns differ in length: {len(s1)}, {len(s2)}, {gold.size}.")
    if len(s1) < 2:
        raise InputError(f"STS evaluation needs at least 2 sentence pairs, got {len(s1)}.")
    t0 = time.perf_counter()
    fit_if_needed(encoder, list(dict.fromkeys(s1 + s2)))
    if is_sparse(encoder):
        progress("encode pairs", 0, 2 * len(s1))
        cos = _rowwise_cosine_sparse(encoder.encode_sparse(s1, role="document"),
                                     encoder.encode_sparse(s2, role="document"))
        progress("encode pairs", 2 * len(s1), 2 * len(s1))
    else:
        a = l2_normalize(encode_dense(encoder, s1, batch_size=batch_size, progress=progress, stage="encode s1"))
        b = l2_normalize(encode_dense(encoder, s2, batch_size=batch_size, progress=progress, stage="encode s2"))
        cos = np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))
    seconds = time.perf_counter() - t0
    return {
        "spearman": 100.0 * spearman(cos, gold),
        "pearson": 100.0 * pearson(cos, gold),
        "n": len(s1),
        "seconds": seconds,
        "primary_metric": "spearman",
    }
