"""Hard-negative mining: for each (query, positive) pair, texts the query nearly matches but should not.

Candidates come from our own indexes, one batch of distinct queries at a time:

* ``method="bm25"``: BM25 (:class:`~embedstack.count.BM25`, the ``bm25`` spec: English stemmer and
  stopwords) over the corpus, ranked by BM25 score;
* ``method="dense"``: exact cosine search (:class:`~embedstack.index.FlatIndex`) over the model's
  corpus vectors, ranked by cosine;
* ``method="both"``: the union of the two, ranked by the dense cosine (below).

For a query ``q`` with positives ``P(q)`` (every positive paired with the same query text anywhere in
the data, and every corpus text identical to one of them) the ranked candidates ``c_0, c_1, ...`` are
numbered after removing ``P(q)``; ranks ``range_min <= r < range_max`` are kept. With "both" each
ranking keeps its own window and the union of the two windows is ranked by the dense cosine (a
candidate that either ranking puts above its window, ``r < range_min``, stays out, and its reported
rank is the better of its two); since BM25-only candidates score lower cosines than the dense ones,
"top" sampling still prefers dense neighbours, while "random" draws from lexical and semantic
neighbours alike. The union can hold up to ``2 · (range_max − range_min)`` candidates. Each data row
``(q, p)`` then drops the candidates that score too close to its positive (the false-negative guard),
with ``s`` the dense cosine when a model is given, else the BM25 score::

    margin:           drop c  if  s(q, c) > s(q, p) − margin
    relative_margin:  drop c  if  s(q, c) > s(q, p) − |s(q, p)| · relative_margin

(the second is ``s(q, p) · (1 − relative_margin)`` for a positive score, and stays a lower threshold
for a negative one). Of the survivors, ``sampling="top"`` takes the ``num_negatives`` best ranked and
``sampling="random"`` a seeded random choice (output in rank order either way). Rows left with fewer
than ``num_negatives`` survivors are dropped, so the output is rectangular.

Memory: the full queries × corpus score matrix is never built. Each batch of ``batch_size`` distinct
queries keeps its top ``range_max + max |P(q)|`` candidates (``batch_size × that`` ids and scores);
the indexes score in bounded blocks (BM25 ≤ 16 MiB, flat ≤ 32 MiB of float32 at a time). The corpus
vectors themselves (``n_docs × dim`` float32) are held in memory, by the index and for rescoring.
Corpus (and query) vectors go through :class:`~embedstack.evaluation.cache.CachedEncoder`, keyed on
the model's weights as they are in memory, so a second run over the same corpus encodes nothing.
Differences from sentence-transformers' ``mine_hard_negatives``: ranks are counted before the margin
filter (there, ``range_min`` skips survivors of the margin), the margin uses each row's own positive
(there, the lowest-scoring positive of the query), and positives are not added to a given corpus.

Example:
    >>> res = mine_hard_negatives(
    ...     (["how do cats purr", "why do dogs bark"], ["cats purr by vibrating the larynx", "dogs bark to warn"]),
    ...     ["cats purr by vibrating the larynx", "dogs bark to warn", "cats hiss when scared",
    ...      "dogs wag tails", "cats sleep all day"],
    ...     num_negatives=1)
    >>> res.data.column("negative_1")
    ['cats hiss when scared', 'dogs wag tails']
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedstack._validation import check_choice, check_float, check_int
from embedstack.errors import ConfigError, InputError

__all__ = ["MiningResult", "mine_hard_negatives", "METHODS", "SAMPLINGS"]

METHODS = ("bm25", "dense", "both")
SAMPLINGS = ("top", "random")

_OWNER = "mine_hard_negatives"
_GATHER_FLOATS = 1 << 22  # rescoring gathers at most this many floats of candidate vectors at a time
_U64 = np.uint64


@dataclass
class MiningResult:
    """What :func:`mine_hard_negatives` returns.

    Attributes:
        data: a ``TrainingData`` with columns ``anchor``, ``positive``, ``negative_1`` .. ``negative_k``.
        stats: ``rows_in``, ``rows_out``, ``rows_dropped`` (too few candidates), ``margin_removed``
            (candidates in the rank window dropped by the margin guard), ``mean_rank`` (0-based, after
            removing positives) and ``mean_score`` of the kept negatives, ``score`` ("cosine" or "bm25"),
            ``unique_queries``, ``corpus_size`` (distinct texts), ``candidates_per_query`` (depth
            searched), ``peak_candidate_bytes`` (largest per-batch candidate arrays), ``encoded`` /
            ``from_cache`` (texts sent to the model / answered by the embedding cache), ``seconds``
            and the settings.
    """

    data: Any
    stats: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- inputs


def _text_list(values: Any, what: str, *, blank_ok: bool = False) -> list[str]:
    if isinstance(values, str | bytes):
        raise InputError(f"{what} must be a sequence of strings, not one string; wrap it in a list.")
    try:
        out = list(values)
    except TypeError:
        raise InputError(f"{what} must be a sequence of strings; got {type(values).__name__}.") from None
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InputError(f"{what}[{i}] is {type(t).__name__} ({t!r:.40}), not a string; every text must be a str.")
        if blank_ok is False and not t.strip():
            raise InputError(f"{what}[{i}] is an empty text; every {what[:-1] if what.endswith('s') else what} "
                             "needs some text (drop or fix that row).")
    return out


def _pairs(data: Any) -> tuple[list[str], list[str]]:
    """(anchors, positives) from a TrainingData or a (queries, positives) pair of sequences."""
    if callable(getattr(data, "column", None)) and hasattr(data, "columns"):
        cols = data.columns() if callable(data.columns) else data.columns
        missing = [c for c in ("anchor", "positive") if c not in list(cols)]
        if missing:
            raise InputError(f"hard-negative mining needs the columns 'anchor' and 'positive'; the data has "
                             f"{list(cols)} (missing: {missing}).")
        return _text_list(data.column("anchor"), "anchor"), _text_list(data.column("positive"), "positive")
    if isinstance(data, tuple) and len(data) == 2 and not isinstance(data[0], str):  # a list could be rows
        queries, positives = _text_list(data[0], "queries"), _text_list(data[1], "positives")
        if len(queries) != len(positives):
            raise InputError(f"got {len(queries)} queries but {len(positives)} positives; pass one positive per query "
                             "(repeat a query to give it several positives).")
        return queries, positives
    raise InputError(f"data must be a TrainingData with 'anchor' and 'positive' columns or a (queries, positives) "
                     f"tuple of two sequences; got {type(data).__name__}. For a list of (query, positive) rows, "
                     "pass tuple(zip(*rows)).")


def _check_params(method: str, model: Any, num_negatives: int, range_min: int, range_max: int,
                  margin: float | None, relative_margin: float | None, sampling: str, batch_size: int,
                  encode_batch_size: int, seed: int, progress: Any) -> None:
    check_choice(_OWNER, "method", method, METHODS)
    check_choice(_OWNER, "sampling", sampling, SAMPLINGS)
    check_int(_OWNER, "num_negatives", num_negatives, low=1)
    check_int(_OWNER, "range_min", range_min, low=0)
    check_int(_OWNER, "range_max", range_max, low=1)
    check_int(_OWNER, "batch_size", batch_size, low=1)
    check_int(_OWNER, "encode_batch_size", encode_batch_size, low=1)
    check_int(_OWNER, "seed", seed, low=0)
    if range_min >= range_max:
        raise ConfigError(f"range_min ({range_min}) must be smaller than range_max ({range_max}): candidates are kept "
                          f"at ranks range_min <= r < range_max.", fix={"range_max": range_min + 50},
                          param=("range_max", "range_max"))
    if num_negatives > range_max - range_min:
        raise ConfigError(f"num_negatives={num_negatives} cannot fit in the rank window [{range_min}, {range_max}) of "
                          f"{range_max - range_min} candidates; raise range_max or lower num_negatives.",
                          fix={"range_max": range_min + max(50, 10 * num_negatives)})
    if margin is not None and relative_margin is not None:
        raise ConfigError("pass either margin (absolute) or relative_margin, not both.", fix={"relative_margin": None})
    if margin is not None:
        check_float(_OWNER, "margin", margin, low=0.0)
    if relative_margin is not None:
        check_float(_OWNER, "relative_margin", relative_margin, low=0.0, high=1.0)
    if method in ("dense", "both") and model is None:
        raise ConfigError(f"method={method!r} needs a dense model: pass model=embedstack.load('all-MiniLM-L6-v2') "
                          "(or any DenseEncoder), or use method='bm25'.", param=("model", "model"))
    if isinstance(model, str | bytes):
        raise ConfigError(f"model must be a loaded DenseEncoder, not the string {model!r}; pass "
                          f"model=embedstack.load({model!r}).", param=("model", "model"))
    if model is not None and not callable(getattr(model, "encode", None)):
        raise ConfigError(f"model must be a DenseEncoder (with .encode(texts, role=..., batch_size=...)); got "
                          f"{type(model).__name__}.", param=("model", "model"))
    if progress is not None and not callable(progress):
        raise ConfigError(f"progress must be a callable progress(stage, done, total); got {type(progress).__name__}.")


def _cached(model: Any, cache_dir: str | os.PathLike[str] | None) -> Any:
    """``model`` behind the shared embedding cache (as is when it is already a CachedEncoder)."""
    from embedstack.evaluation.cache import CachedEncoder, EmbeddingCache

    if isinstance(model, CachedEncoder):
        return model
    return CachedEncoder(model, EmbeddingCache(cache_dir))


# ----------------------------------------------------------------------------------------- kernels


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array (wrapping arithmetic): a cheap, well-spread hash."""
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _random_keys(seed: int, rows: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """A pseudo-random uint64 per (row, candidate): depends on the seed, the data row and the corpus index only.

    So random sampling gives the same negatives whatever the batch size or the order of the work.
    """
    with np.errstate(over="ignore"):
        base = _mix64(np.asarray(rows, dtype=_U64) * _U64(0x9E3779B97F4A7C15) + _U64(seed))
        return _mix64(base[:, None] ^ (cand.astype(np.int64).view(_U64) + _U64(0x632BE59BD9B4E019)))


def _gather_dot(q: np.ndarray, docs: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """``out[i, j] = q[i] · docs[cand[i, j]]`` (float32; ``-inf`` where ``cand < 0``), in bounded chunks."""
    n, w = cand.shape
    out = np.full((n, w), -np.inf, dtype=np.float32)
    if n == 0 or w == 0:
        return out
    step = max(1, _GATHER_FLOATS // max(1, w * docs.shape[1]))
    for s in range(0, n, step):
        c = cand[s:s + step]
        picked = docs[np.maximum(c, 0)]  # (b, w, dim)
        vals = np.matmul(picked, q[s:s + step, :, None])[:, :, 0]
        out[s:s + step] = np.where(c >= 0, vals, -np.inf)
    return out


def _rank_sort(cand: np.ndarray, scores: np.ndarray, *extra: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows sorted by descending score, ties by ascending corpus index, empty slots (-1) last.

    ``extra`` arrays of the same shape are reordered the same way.
    """
    key_s = np.where(cand >= 0, -scores.astype(np.float64), np.inf)
    order = np.lexsort((cand, key_s), axis=1)
    return tuple(np.take_along_axis(a, order, axis=1) for a in (cand, scores, *extra))


def _ranks(cand: np.ndarray, excl: np.ndarray, n_docs: int, range_min: int,
           range_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ranks of ranked candidates once the query's positives are removed, and the window flags.

    ``excl`` holds the positives as keys ``row · n_docs + corpus index``. Returns ``(rank, window, early)``: the 0-based rank among the non-positive candidates, whether it is in
    ``[range_min, range_max)``, and whether it is above the window (``rank < range_min``: skipped).
    """
    keys = np.arange(len(cand), dtype=np.int64)[:, None] * n_docs + cand
    valid = (cand >= 0) & ~np.isin(keys, excl)
    rank = np.cumsum(valid, axis=1) - 1
    window = valid & (rank >= range_min) & (rank < range_max)
    return rank, window, valid & (rank < range_min)


def _merge(ranked: Sequence[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """The union of the sources' windows; a candidate that a source ranks above its window stays out.

    Returns ``(candidates, best rank)`` with ``-1`` in unused slots (not sorted).
    """
    cand = np.concatenate([r[0] for r in ranked], axis=1)
    big = np.iinfo(np.int64).max
    rank = np.concatenate([np.where(r[3], r[2], big) for r in ranked], axis=1)
    window = np.concatenate([r[3] for r in ranked], axis=1)
    early = np.concatenate([r[4] for r in ranked], axis=1)
    order = np.lexsort((rank, cand), axis=1)  # by candidate, so a candidate's entries are neighbours
    cand, rank, window, early = (np.take_along_axis(a, order, axis=1) for a in (cand, rank, window, early))
    first = np.ones_like(window)
    first[:, 1:] = (cand[:, 1:] != cand[:, :-1]) | (cand[:, 1:] < 0)
    group = np.cumsum(first, axis=1) - 1  # group number of each entry within its row
    n, w = cand.shape
    flat = (np.arange(n)[:, None] * w + group).ravel()
    any_window = np.zeros(n * w, dtype=bool)
    any_early = np.zeros(n * w, dtype=bool)
    best = np.full(n * w, big, dtype=np.int64)
    np.logical_or.at(any_window, flat, window.ravel())
    np.logical_or.at(any_early, flat, early.ravel())
    np.minimum.at(best, flat, rank.ravel())
    keep = first & (cand >= 0) & any_window[flat].reshape(n, w) & ~any_early[flat].reshape(n, w)
    return np.where(keep, cand, -1), np.where(keep, best[flat].reshape(n, w), 0)


def _bm25_pair_scores(bm25: Any, queries: list[str], docs: list[str]) -> np.ndarray:
    """BM25 score of each (query, document) pair, the document weighted with the corpus statistics."""
    if not queries:
        return np.zeros(0, dtype=np.float32)
    Q = bm25.encode_sparse(queries, role="query").tocsr()
    D = bm25.encode_sparse(docs, role="document").tocsr()
    return np.asarray(Q.multiply(D).sum(axis=1), dtype=np.float32).ravel()


# ----------------------------------------------------------------------------------------- mining


def mine_hard_negatives(
    data: Any,
    corpus: Sequence[str] | None = None,
    *,
    method: str = "bm25",
    model: Any = None,
    num_negatives: int = 3,
    range_min: int = 0,
    range_max: int = 50,
    margin: float | None = None,
    relative_margin: float | None = None,
    sampling: str = "top",
    batch_size: int = 1024,
    encode_batch_size: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> MiningResult:
    """Add ``num_negatives`` mined hard negatives to every (anchor, positive) row.

    See the module docstring for the ranking, the rank window and the margin formulas.

    Args:
        data: a ``TrainingData`` with ``anchor`` and ``positive`` columns, or a ``(queries, positives)``
            pair of equally long sequences. A query text repeated with several positives is searched once,
            and none of its positives is ever a negative of any of its rows.
        corpus: the candidate pool (duplicates count once); default the distinct positives.
        method: "bm25", "dense" (needs ``model``) or "both" (the union of the BM25 and the dense rank
            windows, ranked by the dense cosine; needs ``model``).
        model: a DenseEncoder (e.g. ``embedstack.load("all-MiniLM-L6-v2")``). With a model, the margin
            guard and the reported scores use its cosine, whatever the method.
        num_negatives: negatives per row (columns ``negative_1`` .. ``negative_k``).
        range_min, range_max: keep candidates ranked ``range_min <= r < range_max`` (0-based, counted
            after removing the query's positives).
        margin: absolute false-negative guard (≥ 0): drop ``c`` if ``s(q, c) > s(q, p) − margin``.
        relative_margin: relative guard in [0, 1]: drop ``c`` if ``s(q, c) > s(q, p) − |s(q, p)|·relative_margin``.
        sampling: "top" (the best-ranked survivors) or "random" (a seeded choice among the survivors).
        batch_size: distinct queries searched together (bounds memory: ``batch_size × (range_max + #positives)``
            candidates at a time).
        encode_batch_size: texts per forward pass of the model.
        cache_dir: folder of the embedding cache (default ``<embedstack cache>/embeddings``), so corpus
            vectors are reused between runs. A model the cache cannot identify is encoded every time.
        seed: seed of ``sampling="random"`` (the output is deterministic given it).
        progress: ``progress(stage, done, total)``, stages "encode corpus", "index corpus" and "mine".

    Returns:
        :class:`MiningResult`: ``.data`` (anchor, positive, negative_1..k; rows in input order) and ``.stats``.

    Raises:
        ConfigError: a bad parameter (named), e.g. ``range_min >= range_max`` or ``method="dense"`` without a model.
        InputError: empty data or corpus, texts that are not strings, mismatched lengths.
    """
    t_start = time.perf_counter()
    _check_params(method, model, num_negatives, range_min, range_max, margin, relative_margin, sampling,
                  batch_size, encode_batch_size, seed, progress)
    report = progress or (lambda stage, done, total: None)
    anchors, positives = _pairs(data)
    if not anchors:
        raise InputError("the data has no (anchor, positive) rows; nothing to mine negatives for.")
    given = positives if corpus is None else _text_list(corpus, "corpus", blank_ok=True)
    pool = [t for t in dict.fromkeys(given) if t.strip()]  # blank texts are never candidates
    if not pool:
        raise InputError("the corpus is empty; pass candidate texts (corpus=[...]) or leave it None to use the positives.")
    n_rows, n_docs = len(anchors), len(pool)
    where = {t: i for i, t in enumerate(pool)}

    # distinct queries (first-appearance order) and, per query, the corpus indices it must never get back
    query_of: dict[str, int] = {}
    row_query = np.fromiter((query_of.setdefault(a, len(query_of)) for a in anchors), dtype=np.int64, count=n_rows)
    queries = list(query_of)
    n_q = len(queries)
    excluded: list[set[int]] = [set() for _ in range(n_q)]
    for qi, p in zip(row_query.tolist(), positives, strict=True):
        if p in where:
            excluded[qi].add(where[p])
    depth = min(range_max + max(len(e) for e in excluded), n_docs)  # candidates searched per query
    row_pos = np.fromiter((where.get(p, -1) for p in positives), dtype=np.int64, count=n_rows)
    rows_of_query: list[list[int]] = [[] for _ in range(n_q)]
    for r, qi in enumerate(row_query.tolist()):
        rows_of_query[qi].append(r)

    # ---- the searchers
    from embedstack.evaluation.runners import encode_dense, l2_normalize

    enc = _cached(model, cache_dir) if model is not None else None
    counts0 = (int(getattr(enc, "encoded", 0)), int(getattr(enc, "from_cache", 0)))  # a CachedEncoder may be reused
    bm25 = None
    if method in ("bm25", "both"):
        from embedstack.count.specs import bm25 as bm25_spec

        report("index corpus", 0, n_docs)
        bm25 = bm25_spec().index(pool)
        report("index corpus", n_docs, n_docs)
    doc_vecs = index = None
    if enc is not None:
        doc_vecs = l2_normalize(encode_dense(enc, pool, role="document", batch_size=encode_batch_size,
                                             progress=progress, stage="encode corpus"))
        enc.cache.flush()  # the corpus vectors are on disk before the (long) search starts
        if method in ("dense", "both"):
            from embedstack.index import FlatIndex

            index = FlatIndex(int(doc_vecs.shape[1]), metric="ip")
            index.add(doc_vecs, [str(i) for i in range(n_docs)])

    # ---- per batch of distinct queries: search, rank, window, margin, sample
    negatives = np.full((n_rows, num_negatives), -1, dtype=np.int64)
    neg_rank = np.zeros((n_rows, num_negatives), dtype=np.int64)
    neg_score = np.zeros((n_rows, num_negatives), dtype=np.float32)
    margin_removed = 0
    peak_bytes = 0
    report("mine", 0, n_q)
    for s in range(0, n_q, batch_size):
        qs = queries[s:s + batch_size]
        nb = len(qs)
        # each query's positives as keys (row in batch · n_docs + corpus index)
        excl = np.fromiter((i * n_docs + e for i in range(nb) for e in excluded[s + i]), dtype=np.int64)
        qv = None
        if enc is not None:
            qv = l2_normalize(encode_dense(enc, qs, role="query", batch_size=encode_batch_size))
        sources: list[tuple[np.ndarray, np.ndarray]] = []  # BM25 and/or dense: (candidates in rank order, scores)
        if bm25 is not None:
            idx_b, sc_b = bm25.retrieve(qs, depth)
            sources.append((idx_b, sc_b))
        if index is not None:
            assert qv is not None and doc_vecs is not None
            _, ids = index.search_ids(qv, depth)
            idx_d = ids.astype(np.int64)
            # rescored by one routine for every batch shape, so that batches of any size agree
            idx_d, sc_d = _rank_sort(idx_d, _gather_dot(qv, doc_vecs, idx_d))
            sources.append((idx_d, sc_d))
        ranked = [(c, sc, *_ranks(c, excl, n_docs, range_min, range_max)) for c, sc in sources]
        if len(ranked) == 1:
            cand, scores, rank, window, _ = ranked[0]
            if method == "bm25" and enc is not None:  # BM25 order, the model's cosine as the score
                assert qv is not None and doc_vecs is not None
                scores = _gather_dot(qv, doc_vecs, cand)
            elif enc is None:
                scores = np.where(cand >= 0, scores, -np.inf).astype(np.float32)
        else:  # both: the two windows merged, ranked by the dense cosine
            assert qv is not None and doc_vecs is not None
            cand, rank = _merge(ranked)
            cand, scores, rank = _rank_sort(cand, _gather_dot(qv, doc_vecs, cand), rank)
            window = cand >= 0
        peak_bytes = max(peak_bytes, sum(a.nbytes for r in ranked for a in r) + cand.nbytes + scores.nbytes
                         + rank.nbytes + window.nbytes)

        # expand to the data rows of these queries; the margin guard is per row (its own positive)
        rows = np.asarray([r for i in range(nb) for r in rows_of_query[s + i]], dtype=np.int64)
        local = row_query[rows] - s
        keep = window[local]
        r_cand, r_scores, r_rank = cand[local], scores[local], rank[local]
        if margin is not None or relative_margin is not None:
            pos_scores = _positive_scores(rows, local, row_pos, positives, qs, qv, doc_vecs, enc, bm25,
                                          encode_batch_size)
            thr = pos_scores - (margin if margin is not None else np.abs(pos_scores) * float(relative_margin or 0.0))
            close = keep & (r_scores > thr[:, None])
            margin_removed += int(close.sum())
            keep &= ~close
        n_keep = keep.sum(axis=1)
        ok = n_keep >= num_negatives
        if sampling == "random":
            prio = np.where(keep, _random_keys(seed, rows, r_cand), np.iinfo(np.uint64).max)
            chosen = np.sort(np.argsort(prio, axis=1, kind="stable")[:, :num_negatives], axis=1)
        else:
            chosen = np.argsort(~keep, axis=1, kind="stable")[:, :num_negatives]  # first kept slots, in rank order
        take = rows[ok]
        negatives[take] = np.take_along_axis(r_cand, chosen, axis=1)[ok]
        neg_rank[take] = np.take_along_axis(r_rank, chosen, axis=1)[ok]
        neg_score[take] = np.take_along_axis(r_scores, chosen, axis=1)[ok]
        report("mine", min(s + nb, n_q), n_q)
    if enc is not None:
        enc.cache.flush()

    # ---- output, in input order
    kept = np.flatnonzero(negatives[:, 0] >= 0)
    columns: dict[str, list[str]] = {"anchor": [anchors[r] for r in kept], "positive": [positives[r] for r in kept]}
    for j in range(num_negatives):
        columns[f"negative_{j + 1}"] = [pool[i] for i in negatives[kept, j].tolist()]
    from embedstack.training.data import TrainingData

    dropped = n_rows - len(kept)
    if dropped > 0.1 * n_rows:
        warnings.warn(
            f"hard-negative mining dropped {dropped} of {n_rows} rows ({100 * dropped / n_rows:.1f}%) that had fewer "
            f"than {num_negatives} candidates left after the rank window [{range_min}, {range_max}) and the margin "
            "guard; raise range_max, lower num_negatives or the margin, or give a larger corpus.",
            RuntimeWarning, stacklevel=2)
    if not len(kept):
        raise InputError(f"no row has {num_negatives} candidates left after the rank window [{range_min}, {range_max}) "
                         "and the margin guard; raise range_max, lower num_negatives or the margin, or give a larger "
                         "corpus.", fix={"range_max": 2 * range_max})
    stats: dict[str, Any] = {
        "rows_in": n_rows, "rows_out": int(len(kept)), "rows_dropped": int(dropped),
        "margin_removed": margin_removed,
        "mean_rank": float(neg_rank[kept].mean()), "mean_score": float(neg_score[kept].mean()),
        "score": "cosine" if enc is not None else "bm25",
        "unique_queries": n_q, "corpus_size": n_docs, "candidates_per_query": int(depth),
        "peak_candidate_bytes": int(peak_bytes),
        "encoded": int(getattr(enc, "encoded", 0)) - counts0[0],
        "from_cache": int(getattr(enc, "from_cache", 0)) - counts0[1],
        "method": method, "sampling": sampling, "num_negatives": num_negatives, "range_min": range_min,
        "range_max": range_max, "margin": margin, "relative_margin": relative_margin, "batch_size": batch_size,
        "seed": seed, "seconds": time.perf_counter() - t_start,
    }
    return MiningResult(TrainingData.from_columns(columns), stats)


def _positive_scores(rows: np.ndarray, local: np.ndarray, row_pos: np.ndarray, positives: list[str],
                     qs: list[str], qv: np.ndarray | None, doc_vecs: np.ndarray | None, enc: Any, bm25: Any,
                     encode_batch_size: int) -> np.ndarray:
    """``s(q, p)`` of each data row: dense cosine with a model, else the BM25 score."""
    if enc is None:
        return _bm25_pair_scores(bm25, [qs[i] for i in local.tolist()], [positives[r] for r in rows.tolist()])
    from embedstack.evaluation.runners import encode_dense, l2_normalize

    assert qv is not None and doc_vecs is not None
    pos = row_pos[rows]
    vecs = np.empty((len(rows), doc_vecs.shape[1]), dtype=np.float32)
    inside = pos >= 0
    vecs[inside] = doc_vecs[pos[inside]]
    outside = np.flatnonzero(~inside)
    if len(outside):  # positives that are not in the given corpus
        texts = [positives[r] for r in rows[outside].tolist()]
        vecs[outside] = l2_normalize(encode_dense(enc, texts, role="document", batch_size=encode_batch_size))
    return np.einsum("ij,ij->i", qv[local], vecs).astype(np.float32)
