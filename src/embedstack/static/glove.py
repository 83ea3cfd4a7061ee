"""GloVe: co-occurrence counting in bounded memory, then weighted least squares with AdaGrad.

Counting streams the id stream once (up to 4 threads, each on its own part): each pair of words at
distance ``d <= window`` adds ``1/d`` to their (symmetric) count. Pairs of two frequent words go to a
small dense block; the rest go to a fixed-size open-addressing hash table in a numba kernel. When the
table fills, its entries are sorted into a run and the table is reused; runs of similar size are merged
as they come (summing the counts of a pair seen in both, one linear pass each), so no flush sorts what
earlier flushes already sorted, and memory stays near the table plus the final sparse matrix per
counting thread. Training minimises
``sum f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2`` with ``f(x) = min(1, (x / x_max)^alpha)``
by AdaGrad over shuffled entries on several threads (hogwild). The output vectors are ``W + W~``.

The optimiser is the reference glove.c's: parameters start uniform in ``[-0.5, 0.5] / dim``, the
AdaGrad sums at 1, and a step is ``u / sqrt(G)`` with ``u = learning_rate * gradient`` and ``G +=
u^2`` — so the rate starts at ``learning_rate`` and tends to ``gradient / sqrt(sum gradient^2)``
(textbook AdaGrad with rate 1 and ``G`` started at ``1 / learning_rate^2``). Summing the unscaled
squared gradient instead (as this module did before) makes every later step ``learning_rate`` (20x)
smaller: on the 33M-word enwiki extract the earlier code reached 5.5% analogies in 5 epochs, this
one 13.7% in 5 and 26% in 10 (benchmarks/glove_quality.py). Each upper-triangle entry trains both directions,
(w_i, w~_j) then (w_j, w~_i), which is glove.c's full symmetric matrix visited in a shuffled order.

Example:
    >>> texts = ["ice is cold and solid", "steam is hot and gas"] * 40
    >>> g = GloVe(dim=8, min_count=1, epochs=5, workers=1).fit(texts)
    >>> g.wv_.vectors.shape
    (8, 8)
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from embedstack._validation import check_float, check_int
from embedstack.errors import ConfigError, InputError
from embedstack.static._corpus import CorpusLike, IdCorpus, is_one_shot
from embedstack.static._train import ProgressFn, TrainStats, check_workers, run_jobs, run_threads
from embedstack.static.keyedvectors import KeyedVectors
from embedstack.static.word2vec import _StaticTrainer
from embedstack.text import Analyzer, Vocabulary

__all__ = ["GloVe", "cooccurrence_matrix"]


def _sorted_run(keys: np.ndarray, vals: np.ndarray, slot_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The used entries of a flushed hash table as a run sorted by key (table keys are unique).

    A key and its slot packed into one int64 sort with numpy's vectorised sort of plain integers, about
    2.5x faster here than ``argsort``; keys too wide to pack next to ``slot_bits`` bits use ``argsort``.
    """
    slots = np.flatnonzero(keys >= 0)
    k = keys[slots]
    if len(k) and int(k.max()).bit_length() + slot_bits <= 63:
        packed = np.sort((k << slot_bits) | slots)
        order = packed & ((1 << slot_bits) - 1)
        return packed >> slot_bits, vals[order]
    order = np.argsort(k)
    return k[order], vals[slots[order]]


def _push_run(runs: list[tuple[np.ndarray, np.ndarray]], run: tuple[np.ndarray, np.ndarray]) -> None:
    """Add a sorted run, merging runs of similar size (a binary counter: each entry is merged about log2(runs)
    times, and memory stays near the merged matrix's size)."""
    from embedstack.static import _kernels as K

    runs.append(run)
    while len(runs) > 1 and len(runs[-2][0]) <= 2 * len(runs[-1][0]):
        (kb, vb), (ka, va) = runs.pop(), runs.pop()
        runs.append(K.merge_sum(ka, va, kb, vb))


COUNT_THREADS_MAX = 4  # each counting thread holds its own table and dense block (256 MiB at the defaults)


def _count_part(corpus: IdCorpus, s_begin: int, s_end: int, window: int, table_size: int, n_dense: int,
                done: list[int], stop: threading.Event) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Count sentences ``s_begin..s_end`` into their own table and dense block: the merged runs and the block.
    Adds the tokens counted to ``done[0]`` after each table fill; returns early once ``stop`` is set (its
    result is then discarded)."""
    from embedstack.static import _kernels as K

    v = len(corpus.vocab)
    # float64 sums: a float32 count of a frequent pair (the, of: ~1e6) rounds each 1/d increment to
    # its ulp (0.0625 at 1e6, 0.25 at 4e6), biasing the largest counts (glove.c counts in double too)
    dense = np.zeros((n_dense, n_dense), dtype=np.float64)
    keys = np.full(table_size, -1, dtype=np.int64)
    vals = np.zeros(table_size, dtype=np.float64)
    slot_bits = int(table_size).bit_length() - 1
    runs: list[tuple[np.ndarray, np.ndarray]] = []
    ids, offsets = np.asarray(corpus.ids), corpus.offsets
    s, pos = s_begin, int(offsets[s_begin])
    while s < s_end and not stop.is_set():
        pos0 = pos
        s, pos, fill = K.cooccur_job(ids, offsets, s, pos, s_end, int(window), v, dense, n_dense, keys, vals,
                                     int(table_size * 0.7))
        if fill >= int(table_size * 0.7) or s >= s_end:
            _push_run(runs, _sorted_run(keys, vals, slot_bits))
            keys.fill(-1)
            vals.fill(0.0)
        done[0] += int(pos - pos0)  # one writer per counter: no lock needed
    return runs, dense


def _table_for(table_size: int, window: int, n_vocab: int, n_dense: int) -> int:
    """``table_size``, doubled until a table 70% full still has room for the new pairs one token can add
    (``window``; never more than the distinct pairs the hash table can see): the count stops to flush after
    the token that fills it to 70%, and a full table would probe forever for a free slot. Only a window
    wider than 30% of the table grows it."""
    distinct = n_vocab * (n_vocab + 1) // 2 - n_dense * (n_dense + 1) // 2
    while table_size - int(table_size * 0.7) < min(int(window), distinct) and table_size <= distinct:
        table_size *= 2
    return table_size


def cooccurrence_matrix(corpus: IdCorpus, *, window: int = 10, table_size: int = 1 << 23,
                        dense_words: int = 4096, workers: int = 1, progress: ProgressFn | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upper-triangle 1/distance co-occurrence counts ``(rows, cols, vals)`` with ``rows <= cols``, sorted by
    (row, col).

    A word paired with itself counts twice (both directions of the symmetric matrix). Sums are
    accumulated in float64 and returned as float32. ``workers`` threads (at most ``COUNT_THREADS_MAX``)
    count contiguous parts of the corpus, each with its own table and block; the counts are the same for
    any number of threads, up to the order of float64 additions. Memory per thread: a ``dense_words``²
    float64 block + a hash table of ``table_size`` entries (16 bytes each; doubled only for a window wider
    than 30% of it) + its sorted runs (about the result's size), merged at the end. ``progress`` is called
    from the caller's thread about every 0.5 s and once at the end.
    """
    from embedstack.static import _kernels as K

    if table_size < 1 or table_size & (table_size - 1):
        raise ConfigError(f"table_size must be a power of two; got {table_size}.")
    v = len(corpus.vocab)
    n_dense = min(v, int(dense_words))
    n_s = corpus.n_sentences
    offsets = corpus.offsets
    table_size = _table_for(int(table_size), int(window), v, n_dense)
    n_parts = max(1, min(int(workers), COUNT_THREADS_MAX))
    # parts of about equal tokens, cut at sentence ends
    cuts = np.searchsorted(offsets, np.linspace(0, int(offsets[n_s]), n_parts + 1)).clip(max=n_s)
    cuts[0], cuts[-1] = 0, n_s
    parts = [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a] or [(0, 0)]
    dones = [[0] for _ in parts]
    results: list[tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray] | None] = [None] * len(parts)

    def counter(i: int) -> Callable[[threading.Event], None]:
        def count(stop: threading.Event) -> None:  # stops at its next table fill once stop is set
            results[i] = _count_part(corpus, *parts[i], window, table_size, n_dense, dones[i], stop)
        return count

    def report() -> None:
        assert progress is not None
        progress({"stage": "cooccurrence", "done": sum(d[0] for d in dones), "total": corpus.n_words})

    run_threads([counter(i) for i in range(len(parts))], poll=report if progress is not None else None,
                name="embedstack-count")
    runs: list[tuple[np.ndarray, np.ndarray]] = []
    dense = None
    for res in results:
        assert res is not None
        part_runs, block = res
        runs += part_runs
        if dense is None:
            dense = block  # this call's own array: the other blocks are added into it
        else:
            dense += block
    results.clear()
    assert dense is not None
    r, c = np.nonzero(np.triu(dense))  # row-major: keys r * v + c come out ascending
    runs.append((r.astype(np.int64) * v + c, dense[r, c]))
    del dense
    runs.sort(key=lambda run: len(run[0]))  # small runs first: the big ones are merged last, once
    acc_k, acc_v = runs.pop(0)
    while runs:
        kb, vb = runs.pop(0)
        acc_k, acc_v = K.merge_sum(acc_k, acc_v, kb, vb)
    rows = (acc_k // v).astype(np.int32)
    cols = (acc_k % v).astype(np.int32)
    diag = rows == cols
    acc_v = acc_v.astype(np.float32)
    acc_v[diag] *= 2.0
    return rows, cols, acc_v


class GloVe(_StaticTrainer):
    """GloVe word vectors (Pennington et al., 2014) with numba kernels.

    Args:
        dim: vector size.  window: co-occurrence window (1/distance weighting, symmetric).
        x_max / alpha: the weighting function f(x) = min(1, (x / x_max)^alpha). The default, 100, is
            glove.c's (and the paper's, for billions of words); on a ~30M-word corpus x_max=10 (glove.c's
            text8 demo) is better: 42.1% analogies / WS-353 0.493 at 25 epochs against 37.0% / 0.470.
        learning_rate: AdaGrad's initial rate (glove.c's ``eta``; see the module notes).
        epochs: passes over the co-occurrence entries (glove.c's default 25; the paper 50 at dim < 300).
        min_count / max_vocab / workers / seed / analyzer: as :class:`Word2Vec`.
        table_size / dense_words: memory bound of the counting step (per counting thread).

    Attributes:
        wv_: :class:`KeyedVectors` holding W + W~; cooccurrence_: (rows, cols, vals); stats_.

    Example:
        >>> g = GloVe(dim=4, min_count=1, epochs=2, workers=1).fit(["a b c d"] * 5)
        >>> len(g.wv_)
        4
    """

    alpha: float  # the weighting exponent here, not word2vec's learning rate

    def __init__(self, *, dim: int = 100, window: int = 10, min_count: int = 5, max_vocab: int | None = None,
                 x_max: float = 100.0, alpha: float = 0.75, learning_rate: float = 0.05, epochs: int = 25,
                 workers: int | None = None, seed: int = 1, max_sentence_length: int = 10_000,
                 table_size: int = 1 << 23, dense_words: int = 4096, analyzer: Analyzer | None = None) -> None:
        super().__init__(dim=dim, window=window, min_count=min_count, max_vocab=max_vocab, epochs=epochs,
                         workers=workers, seed=seed, max_sentence_length=max_sentence_length, analyzer=analyzer)
        self.x_max = x_max
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.table_size = table_size
        self.dense_words = dense_words

    @property
    def start_alpha(self) -> float:
        """The initial learning rate used: ``learning_rate`` (``alpha`` is the weighting exponent here)."""
        return float(self.learning_rate)

    def _check(self) -> int:
        check_int(self, "dim", self.dim, low=1)
        check_int(self, "window", self.window, low=1)
        check_int(self, "min_count", self.min_count, low=1)
        check_int(self, "epochs", self.epochs, low=1)
        check_int(self, "table_size", self.table_size, low=1024)
        check_int(self, "dense_words", self.dense_words, low=0)
        check_float(self, "x_max", self.x_max, low=0.0, low_open=True)
        check_float(self, "alpha", self.alpha, low=0.0)
        check_float(self, "learning_rate", self.learning_rate, low=0.0, low_open=True)
        return check_workers(self, self.workers)

    def fit(self, corpus: CorpusLike, *, progress: ProgressFn | None = None) -> GloVe:
        """Count co-occurrences of ``corpus`` and fit the vectors; returns self."""
        import time

        workers = self._check()
        if is_one_shot(corpus):
            corpus = IdCorpus.build(corpus, analyzer=self.analyzer, min_count=self.min_count,
                                    max_vocab=self.max_vocab, max_sentence_length=self.max_sentence_length)
        data = self._corpus(corpus, progress)
        t0 = time.perf_counter()
        cooc = cooccurrence_matrix(data, window=int(self.window), table_size=int(self.table_size),
                                   dense_words=int(self.dense_words), workers=workers, progress=progress)
        count_seconds = time.perf_counter() - t0
        self.corpus_ = data
        return self.fit_cooccurrence(cooc, data.vocab, raw_words=data.raw_words, progress=progress,
                                     count_seconds=count_seconds)

    def fit_cooccurrence(self, cooccurrence: tuple[np.ndarray, np.ndarray, np.ndarray], vocab: Vocabulary, *,
                         raw_words: int | None = None, progress: ProgressFn | None = None,
                         count_seconds: float | None = None,
                         on_epoch: Callable[[int, np.ndarray], None] | None = None) -> GloVe:
        """Fit the vectors on a counted matrix: ``(rows, cols, vals)`` from :func:`cooccurrence_matrix`
        (upper triangle, ids of ``vocab``); returns self. Lets several settings share one count;
        ``window`` and ``min_count`` are then those the matrix was counted with. ``on_epoch(e, W + W~)``,
        if given, is called after each epoch e (1-based) — e.g. to evaluate every few epochs."""
        from embedstack.static import _kernels as K

        workers = self._check()
        rows, cols, vals = (np.asarray(a) for a in cooccurrence)
        if len(vals) == 0:
            raise InputError("no two words co-occur in the corpus (every sentence has one kept word); "
                             "give longer texts or a lower minimum count.", fix={"min_count": 1})
        v, d = len(vocab), int(self.dim)
        if not (len(rows) == len(cols) == len(vals)) or int(max(rows.max(), cols.max())) >= v \
                or int(min(rows.min(), cols.min())) < 0:
            raise InputError("the co-occurrence arrays must have one length and ids in [0, len(vocab)).")
        if raw_words is None:
            raw_words = int(np.asarray(vocab.counts_).sum())
        rng = np.random.default_rng(self.seed)
        perm = rng.permutation(len(vals))  # shuffled once, as glove.c's shuffle step
        rows = np.ascontiguousarray(rows[perm], dtype=np.int32)
        cols = np.ascontiguousarray(cols[perm], dtype=np.int32)
        vals = np.ascontiguousarray(vals[perm], dtype=np.float32)
        del perm
        # glove.c's initialisation: uniform in [-0.5, 0.5] / dim for vectors and biases, AdaGrad sums at 1
        W = ((rng.random((v, d), dtype=np.float32) - 0.5) / d).astype(np.float32)
        Wc = ((rng.random((v, d), dtype=np.float32) - 0.5) / d).astype(np.float32)
        bw = ((rng.random(v) - 0.5) / d).astype(np.float32)
        bc = ((rng.random(v) - 0.5) / d).astype(np.float32)
        gW = np.ones((v, d), np.float32)
        gWc = np.ones((v, d), np.float32)
        gbw = np.ones(v, np.float32)
        gbc = np.ones(v, np.float32)
        params = K.GloveParams(x_max=float(self.x_max), alpha=float(self.alpha),
                               learning_rate=float(self.learning_rate))
        n = len(vals)
        step = max(10_000, n // (workers * 64))
        cuts = np.unique(np.arange(0, n + step, step).clip(max=n))

        def job(epoch: int, j: int, alpha: float, seed: np.uint64) -> tuple[int, float, int]:
            a, b = int(cuts[j]), int(cuts[j + 1])
            loss = K.glove_train_job(W, Wc, bw, bc, gW, gWc, gbw, gbc, rows, cols, vals, a, b, params)
            terms = 2 * (b - a) - int(np.count_nonzero(rows[a:b] == cols[a:b]))
            return b - a, loss, terms

        K.glove_train_job(W, Wc, bw, bc, gW, gWc, gbw, gbc, rows, cols, vals, 0, 0, params)  # compile first
        def train(epochs: int) -> TrainStats:
            return run_jobs(job, job_sizes=np.diff(cuts), epochs=epochs, workers=workers, alpha=1.0, min_alpha=1.0,
                            seed=int(self.seed), raw_per_kept=raw_words / n, progress=progress, decay=False)

        if on_epoch is None:
            stats = train(int(self.epochs))
        else:  # one epoch at a time (the same updates: the rate does not decay, jobs run in order)
            stats = TrainStats()
            for e in range(int(self.epochs)):
                st = train(1)
                stats.raw_words += st.raw_words
                stats.effective_words += st.effective_words
                stats.seconds += st.seconds
                stats.epoch_loss += st.epoch_loss
                on_epoch(e + 1, W + Wc)
        self.vocabulary_ = vocab
        self.cooccurrence_ = (rows, cols, vals)
        self.W_, self.W_context_, self.b_, self.b_context_ = W, Wc, bw, bc
        self.stats_ = stats
        meta = {"trainer": "GloVe", "options": {"dim": d, "window": self.window, "min_count": self.min_count,
                                                "x_max": self.x_max, "alpha": self.alpha, "epochs": self.epochs,
                                                "learning_rate": self.learning_rate, "seed": self.seed},
                "workers": workers, "vocab_size": v, "corpus_raw_words": raw_words, "nonzeros": n,
                **({} if count_seconds is None else {"count_seconds": round(count_seconds, 3)}), **stats.as_dict()}
        meta["raw_words"] = raw_words * int(self.epochs)
        self.wv_ = KeyedVectors(vocab.words_, W + Wc, counts=vocab.counts_, meta=meta)
        return self
