"""Word2Vec: skip-gram and CBOW with negative sampling and/or hierarchical softmax.

The corpus is read once into an int32 id stream (:class:`~embedstack.static._corpus.IdCorpus`);
training runs numba kernels (GIL released) from several Python threads, hogwild, on jobs of ~10k
words, with frequent-word subsampling and the reduced window drawn inside the kernel from a per-job
LCG, a unigram^0.75 negative-sampling table, a Huffman tree for hierarchical softmax, and a learning
rate decaying linearly with global progress (word2vec.c / gensim semantics).

Example:
    >>> texts = ["the king rules the land", "the queen rules the land"] * 50
    >>> w2v = Word2Vec(dim=16, min_count=1, epochs=2, workers=1, seed=3).fit(texts)
    >>> w2v.wv_.vectors.shape
    (5, 16)
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._validation import check_float, check_int
from embedstack.errors import ConfigError
from embedstack.static._corpus import CorpusLike, IdCorpus, is_one_shot
from embedstack.static._train import ProgressFn, TrainStats, check_workers, run_jobs
from embedstack.static.keyedvectors import KeyedVectors
from embedstack.text import Analyzer

SG_ALPHA, CBOW_ALPHA = 0.025, 0.05  # word2vec.c's initial learning rates (``-alpha``) for skip-gram and CBOW

__all__ = ["Word2Vec", "huffman_tree", "alias_table", "keep_thresholds", "init_vectors"]


def alias_table(probabilities: np.ndarray) -> np.ndarray:
    """Walker's alias table (Vose's construction) for drawing word ids with ``probabilities``.

    One uint64 per word: ``alias << 32 | threshold``. A draw picks a bucket uniformly and keeps it
    when a 32-bit coin is under its threshold, else takes its alias: exact probabilities (to 2**-16
    of a bucket) in 8 bytes per word. word2vec.c and fastText use a 1e8 / 1e7-slot unigram table
    instead; at 105k words this table is 0.8 MB and stays in the L2 cache, where a 64 MB slot table
    costs a cache miss per negative (CBOW trained ~30% faster with the small table,
    ``benchmarks/word2vec_cli.py``).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    n = len(p)
    if n == 0 or not np.isfinite(p).all() or p.sum() <= 0:
        raise ConfigError("the negative-sampling distribution is empty or not finite.")
    scaled = p / p.sum() * n
    keep = np.ones(n, dtype=np.float64)
    alias = np.arange(n, dtype=np.uint64)
    small = np.flatnonzero(scaled < 1.0).tolist()
    large = np.flatnonzero(scaled >= 1.0).tolist()
    sc = scaled.tolist()
    while small and large:
        s, big = small.pop(), large.pop()
        keep[s] = sc[s]
        alias[s] = big
        sc[big] -= 1.0 - sc[s]
        (small if sc[big] < 1.0 else large).append(big)
    thr = np.minimum(np.round(keep * 2.0**32), 2.0**32 - 1).astype(np.uint64)
    thr[keep >= 1.0] = np.uint64(2**32 - 1)
    return (alias << np.uint64(32)) | thr


def init_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Initial input vectors: uniform in [-1/dim, 1/dim) as gensim 4 and fastText do.

    (word2vec.c uses half that range; on a 33M-word corpus the wider range gave +0.5 analogy points
    after one CBOW epoch, since the zero-initialised output vectors learn faster from larger inputs.)
    """
    out = rng.random((n, dim), dtype=np.float32)
    out *= 2.0
    out -= 1.0
    out /= dim
    return out


def keep_thresholds(keep_prob: np.ndarray) -> np.ndarray:
    """Keep probabilities as uint32 thresholds compared with a 32-bit random draw."""
    t = np.round(np.asarray(keep_prob, dtype=np.float64) * 2.0**32)
    return np.minimum(t, 2.0**32 - 1).astype(np.uint32)


def huffman_tree(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Huffman codes of a vocabulary: ``codes`` (uint8, V x L), ``points`` (int32, V x L), ``lengths``.

    ``points[w, :lengths[w]]`` are the inner nodes (rows of ``syn1``, root first) on the path to
    ``w`` and ``codes`` the branch taken at each (word2vec.c layout: inner node ids 0..V-2).
    """
    v = len(counts)
    if v < 2:
        return np.zeros((v, 1), np.uint8), np.zeros((v, 1), np.int32), np.zeros(v, np.int32)
    heap = [(int(c), i) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    parent = np.zeros(2 * v - 1, dtype=np.int64)
    branch = np.zeros(2 * v - 1, dtype=np.uint8)
    nxt = v
    while len(heap) > 1:
        c1, a = heapq.heappop(heap)
        c2, b = heapq.heappop(heap)
        parent[a], parent[b] = nxt, nxt
        branch[b] = 1
        heapq.heappush(heap, (c1 + c2, nxt))
        nxt += 1
    root = 2 * v - 2
    paths_codes: list[list[int]] = []
    paths_points: list[list[int]] = []
    for w in range(v):
        cs, ps = [], []
        node = w
        while node != root:
            cs.append(int(branch[node]))
            node = int(parent[node])
            ps.append(node - v)
        paths_codes.append(cs[::-1])
        paths_points.append(ps[::-1])
    lengths = np.array([len(c) for c in paths_codes], dtype=np.int32)
    width = int(lengths.max())
    codes = np.zeros((v, width), dtype=np.uint8)
    points = np.zeros((v, width), dtype=np.int32)
    for w in range(v):
        codes[w, : lengths[w]] = paths_codes[w]
        points[w, : lengths[w]] = paths_points[w]
    return codes, points, lengths


class _StaticTrainer:
    """Shared options, validation and corpus handling of Word2Vec and FastText."""

    def __init__(self, *, dim: int = 100, window: int = 5, sg: bool = True, hs: bool = False,
                 negative: int = 5, cbow_mean: bool = True, sample: float = 1e-3, min_count: int = 5,
                 max_vocab: int | None = None, epochs: int = 5, alpha: float | None = None,
                 min_alpha: float = 1e-4, ns_exponent: float = 0.75, workers: int | None = None,
                 seed: int = 1, max_sentence_length: int = 10_000,
                 analyzer: Analyzer | None = None, compute_loss: bool = True,
                 shared_negatives: bool = True) -> None:
        self.dim = dim
        self.window = window
        self.sg = sg
        self.hs = hs
        self.negative = negative
        self.cbow_mean = cbow_mean
        self.sample = sample
        self.min_count = min_count
        self.max_vocab = max_vocab
        self.epochs = epochs
        self.alpha = alpha
        self.min_alpha = min_alpha
        self.ns_exponent = ns_exponent
        self.workers = workers
        self.seed = seed
        self.max_sentence_length = max_sentence_length
        self.analyzer = analyzer
        self.compute_loss = compute_loss
        self.shared_negatives = shared_negatives

    @property
    def start_alpha(self) -> float:
        """The initial learning rate used: ``alpha``, or when it is None word2vec.c's default for the
        architecture, 0.025 for skip-gram and 0.05 for CBOW (gensim uses 0.025 for both)."""
        if self.alpha is not None:
            return float(self.alpha)
        return SG_ALPHA if self.sg else CBOW_ALPHA

    def _check(self) -> int:
        check_int(self, "dim", self.dim, low=1)
        check_int(self, "window", self.window, low=1)
        check_int(self, "negative", self.negative, low=0)
        check_int(self, "min_count", self.min_count, low=1)
        check_int(self, "max_vocab", self.max_vocab, low=1, allow_none=True)
        check_int(self, "epochs", self.epochs, low=1)
        check_int(self, "seed", self.seed, low=0)
        check_int(self, "max_sentence_length", self.max_sentence_length, low=1)
        check_float(self, "sample", self.sample, low=0.0)
        if self.alpha is not None:
            check_float(self, "alpha", self.alpha, low=0.0, low_open=True)
        check_float(self, "min_alpha", self.min_alpha, low=0.0, high=self.start_alpha)
        check_float(self, "ns_exponent", self.ns_exponent)
        if not self.hs and self.negative == 0:
            raise ConfigError(f"{type(self).__name__} needs negative > 0 or hs=True; both are off.")
        return check_workers(self, self.workers)

    def _corpus(self, corpus: CorpusLike, progress: ProgressFn | None) -> IdCorpus:
        if is_one_shot(corpus) and self.epochs > 1:
            raise ConfigError(
                f"{type(self).__name__}.fit got a one-shot iterator (e.g. a generator) for epochs={self.epochs}; "
                "pass a list, a file path, or IdCorpus.build(generator) so every epoch sees the corpus."
            )
        if isinstance(corpus, IdCorpus):
            return corpus
        cb: Callable[[int], None] | None = None
        if progress is not None:
            def cb(n: int) -> None:
                progress({"stage": "corpus", "done": n, "total": None})
        return IdCorpus.build(corpus, analyzer=self.analyzer, min_count=self.min_count,
                              max_vocab=self.max_vocab, max_sentence_length=self.max_sentence_length,
                              progress=cb)

    def _tables(self, corpus: IdCorpus) -> dict[str, np.ndarray]:
        from embedstack.static import _kernels as K

        vocab = corpus.vocab
        exp_table, lsp, lsn = K.make_tables()
        out = {"exp": exp_table, "lsp": lsp, "lsn": lsn}
        out["keep"] = (keep_thresholds(vocab.keep_probabilities(self.sample)) if self.sample > 0
                       else np.full(len(vocab), 2**32 - 1, np.uint32))
        out["ns"] = (alias_table(vocab.noise_distribution(self.ns_exponent))
                     if self.negative > 0 else np.zeros(1, np.uint64))
        return out

    def _params(self) -> Any:
        from embedstack.static._kernels import W2VParams

        shared = bool(self.shared_negatives) and bool(self.sg) and self.negative > 0 and not self.hs
        return W2VParams(sg=int(bool(self.sg)), hs=int(bool(self.hs)), negative=int(self.negative),
                         window=int(self.window), cbow_mean=int(bool(self.cbow_mean)),
                         sample=int(self.sample > 0), compute_loss=int(bool(self.compute_loss)), shared=int(shared))

    def _check_finite(self, *weights: np.ndarray) -> None:
        """Refuse weights with NaN or inf: a diverged run must not become saved vectors."""
        from embedstack.errors import TrainingDiverged

        for w in weights:
            for a in range(0, len(w), 1 << 16):
                if not np.isfinite(w[a: a + (1 << 16)]).all():
                    raise TrainingDiverged(
                        f"{type(self).__name__} training diverged: the weights hold NaN or inf values (alpha "
                        f"{self.start_alpha}, {self.workers or 'all'} worker threads). Train again with a smaller "
                        "learning rate, on one worker thread.", fix={"alpha": self.start_alpha / 2, "workers": 1})

    def _meta(self, corpus: IdCorpus, stats: TrainStats, workers: int) -> dict[str, Any]:
        opts = {k: getattr(self, k) for k in ("dim", "window", "sg", "hs", "negative", "cbow_mean", "sample",
                                              "min_count", "epochs", "min_alpha", "seed",
                                              "shared_negatives")}
        opts["alpha"] = self.start_alpha  # the rate used, also when it was left to the default
        return {"trainer": type(self).__name__, "options": opts, "workers": workers,
                "vocab_size": len(corpus.vocab), "corpus_raw_words": corpus.raw_words,
                "analyzer": (self.analyzer or Analyzer()).get_config(), **stats.as_dict()}

    def save(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Save the trained vectors (a KeyedVectors folder, loadable with ``load_vectors``).

        An existing ``path`` must be earlier saved word vectors unless ``force=True``.
        """
        from embedstack.base import check_is_fitted

        check_is_fitted(self, "wv_")
        return self.wv_.save(path, force=force)  # type: ignore[attr-defined,no-any-return]


class Word2Vec(_StaticTrainer):
    """Skip-gram / CBOW word2vec trained with numba kernels on all cores.

    Args:
        dim: vector size.
        window: maximum context distance (the effective window is drawn in 1..window per word).
        sg: skip-gram if True, else CBOW.
        hs: use hierarchical softmax (can be combined with negative sampling).
        negative: negative samples per positive (0 disables negative sampling).
        cbow_mean: CBOW averages context vectors (else sums them).
        sample: subsampling threshold for frequent words (0 disables).
        min_count: ignore rarer words.  max_vocab: keep at most this many words.
        epochs: passes over the corpus.  alpha / min_alpha: linearly decayed learning rate; ``alpha=None``
            (the default) starts at word2vec.c's rate for the architecture, 0.025 for skip-gram and 0.05
            for CBOW (gensim starts both at 0.025; BENCHMARKS.md, ``word2vec_cli``, compares the two).
        workers: threads (default: all CPUs).  seed: seeds init and every job's random draws.
        analyzer: tokenizer for raw texts (default ``Analyzer()``).
        shared_negatives: skip-gram with negative sampling draws one set of negatives per centre
            word, shared by its context words, and updates the block at once (Ji et al. 2016,
            "Parallelizing word2vec in shared and distributed memory"): the same pair terms, rows read
            once per centre word. On the enwiki extract (1 epoch, 2 threads) it trained about 2x
            faster than per-pair draws (measured before the per-pair update itself got faster),
            with analogy accuracy 26.6% against 24.5%. False draws them
            per (centre, context) pair, as word2vec.c and gensim do. CBOW and hierarchical softmax
            are not affected.

    Attributes:
        wv_: the :class:`KeyedVectors`; syn1neg_ / syn1_: output weights; vocabulary_;
        corpus_: the id stream; stats_: a :class:`TrainStats` (seconds, words/s, loss per epoch).

    Example:
        >>> w2v = Word2Vec(dim=8, min_count=1, epochs=1, workers=1).fit(["a b c a b c"] * 20)
        >>> sorted(w2v.wv_.key_to_index)
        ['a', 'b', 'c']
    """

    def fit(self, corpus: CorpusLike, *, progress: ProgressFn | None = None) -> Word2Vec:
        """Train on ``corpus`` (path, texts, token lists or an :class:`IdCorpus`); returns self."""
        from embedstack.static import _kernels as K

        workers = self._check()
        data = self._corpus(corpus, progress)
        vocab = data.vocab
        v, d = len(vocab), int(self.dim)
        rng = np.random.default_rng(self.seed)
        syn0 = init_vectors(rng, v, d)
        syn1neg = np.zeros((v if self.negative > 0 else 1, d), dtype=np.float32)
        if self.hs:
            codes, points, lengths = huffman_tree(vocab.counts_)
            syn1 = np.zeros((max(v - 1, 1), d), dtype=np.float32)
        else:
            codes, points, lengths = np.zeros((1, 1), np.uint8), np.zeros((1, 1), np.int32), np.zeros(1, np.int32)
            syn1 = np.zeros((1, d), dtype=np.float32)
        t = self._tables(data)
        params = self._params()
        cuts = data.jobs()
        ids, offsets, max_len = np.asarray(data.ids), data.offsets, data.max_sentence()

        def job(epoch: int, j: int, alpha: float, seed: np.uint64) -> tuple[int, float, int]:
            return K.w2v_train_job(syn0, syn1, syn1neg, ids, offsets, int(cuts[j]), int(cuts[j + 1]), t["keep"],
                                   t["ns"], codes, points, lengths, t["exp"], t["lsp"], t["lsn"], params,
                                   float(alpha), seed, max_len)

        K.w2v_train_job(  # compile (or load from cache) before the clock starts
            syn0, syn1, syn1neg, ids, offsets, 0, 0, t["keep"], t["ns"], codes, points, lengths, t["exp"],
            t["lsp"], t["lsn"], params, 0.0, np.uint64(0), max_len)
        sizes = offsets[cuts[1:]] - offsets[cuts[:-1]]
        stats = run_jobs(job, job_sizes=sizes, epochs=int(self.epochs), workers=workers, alpha=self.start_alpha,
                         min_alpha=float(self.min_alpha), seed=int(self.seed),
                         raw_per_kept=data.raw_words / max(data.n_words, 1), progress=progress)
        self._check_finite(syn0)
        self.vocabulary_ = vocab
        self.corpus_ = data
        self.syn1neg_ = syn1neg if self.negative > 0 else None
        self.syn1_ = syn1 if self.hs else None
        self.stats_ = stats
        self.wv_ = KeyedVectors(vocab.words_, syn0, counts=vocab.counts_, meta=self._meta(data, stats, workers))
        return self
