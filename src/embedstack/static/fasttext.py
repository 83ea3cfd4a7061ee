"""FastText: word2vec whose input vectors are the mean of a word row and its character n-gram rows.

N-grams of ``<word>`` (``minn``..``maxn`` characters) are hashed with fastText's FNV-1a into
``bucket`` rows (2M by default), so any word, even one never seen, gets a vector from its n-grams.
Training uses negative sampling (skip-gram or CBOW) with the same id stream, subsampling, reduced
window and learning-rate schedule as :class:`~embedstack.static.word2vec.Word2Vec`.

Example:
    >>> texts = ["the walker walked", "the talker talked"] * 30
    >>> ft = FastText(dim=8, min_count=1, epochs=1, workers=1, bucket=1000).fit(texts)
    >>> ft.wv_.get_vector("walking").shape  # out of vocabulary: built from n-grams
    (8,)
"""

from __future__ import annotations

import numpy as np

from embedstack._validation import check_int
from embedstack.errors import ConfigError
from embedstack.static._corpus import CorpusLike
from embedstack.static._train import ProgressFn, run_jobs
from embedstack.static.keyedvectors import FastTextKeyedVectors
from embedstack.static.word2vec import _StaticTrainer
from embedstack.text import Analyzer
from embedstack.text.ngrams import subword_table

__all__ = ["FastText"]


class FastText(_StaticTrainer):
    """fastText word vectors (subword n-grams) trained with numba kernels on all cores.

    Args:
        minn / maxn: n-gram lengths in characters (``maxn=0`` disables n-grams: plain word2vec).
        bucket: size of the hashed n-gram space (fastText's ``-bucket``); only the buckets some
            vocabulary word hashes to get a row.
        shared_negatives: skip-gram draws one set of negatives per two context words and scores them
            once against the centre's subword mean, each weighted by the pairs it stands for (fewer
            dot products and row updates per centre word). Faster, but it cost analogy accuracy on
            the enwiki extract (``benchmarks/word2vec_cli.py``), so the default (False) draws them per
            pair as fastText and gensim do.
        Other arguments as :class:`~embedstack.static.word2vec.Word2Vec` (``hs`` is not supported).

    Attributes:
        wv_: a :class:`FastTextKeyedVectors` (composed word vectors + the trained n-gram rows).
        vectors_ngrams_: the n-gram rows, one per bucket in ``wv_.ngram_ids`` (the buckets some
            vocabulary word hashes to, ascending); the same array as ``wv_.ngram_vectors``. Only
            those rows are allocated and trained: on the enwiki extract (105,343 words, min_count 5,
            n-grams 3-6) 429,091 of the 2M buckets, 172 MB instead of 800 MB.
        vectors_vocab_: the word rows (before composition with their n-grams).
        subwords_: ``(ptr, bucket_ids)``: word ``i``'s n-gram buckets are ``bucket_ids[ptr[i]:ptr[i + 1]]``
            (bucket numbers; ``np.searchsorted(wv_.ngram_ids, ...)`` gives their rows).

    Example:
        >>> ft = FastText(dim=8, min_count=1, epochs=1, workers=1, bucket=100).fit(["a b c"] * 10)
        >>> ft.wv_.bucket
        100
    """

    def __init__(self, *, minn: int = 3, maxn: int = 6, bucket: int = 2_000_000, dim: int = 100,
                 window: int = 5, sg: bool = True, negative: int = 5, sample: float = 1e-3,
                 min_count: int = 5, max_vocab: int | None = None, epochs: int = 5, alpha: float | None = None,
                 min_alpha: float = 1e-4, ns_exponent: float = 0.75, workers: int | None = None,
                 seed: int = 1, max_sentence_length: int = 10_000,
                 analyzer: Analyzer | None = None, compute_loss: bool = True, hs: bool = False,
                 shared_negatives: bool = False) -> None:
        super().__init__(dim=dim, window=window, sg=sg, hs=hs, negative=negative, sample=sample,
                         min_count=min_count, max_vocab=max_vocab, epochs=epochs, alpha=alpha,
                         min_alpha=min_alpha, ns_exponent=ns_exponent, workers=workers, seed=seed,
                         max_sentence_length=max_sentence_length,
                         analyzer=analyzer, compute_loss=compute_loss, shared_negatives=shared_negatives)
        self.minn = minn
        self.maxn = maxn
        self.bucket = bucket

    def fit(self, corpus: CorpusLike, *, progress: ProgressFn | None = None) -> FastText:
        """Train on ``corpus`` (path, texts, token lists or an IdCorpus); returns self."""
        from embedstack.static import _kernels as K

        if self.hs:
            raise ConfigError("FastText here trains with negative sampling only; set hs=False and negative > 0.")
        workers = self._check()
        check_int(self, "minn", self.minn, low=1)
        check_int(self, "maxn", self.maxn, low=0)
        check_int(self, "bucket", self.bucket, low=0, high=2**31 - 1)
        data = self._corpus(corpus, progress)
        vocab = data.vocab
        v, d = len(vocab), int(self.dim)
        use_ngrams = self.maxn >= self.minn and self.bucket > 0
        sub_ptr, sub_idx = (subword_table(vocab.words_, int(self.minn), int(self.maxn), int(self.bucket))
                            if use_ngrams else (np.zeros(v + 1, np.int64), np.zeros(0, np.int32)))
        # Train only the buckets some vocabulary word uses, packed in the order the (frequency-sorted)
        # vocabulary first reaches them: the rows of frequent words' n-grams sit together instead of
        # spread over the whole hashed table, and the table shrinks to the rows that can change
        # (buckets no vocabulary word hashes to are never trained, and are not saved).
        used, packed_idx = _pack_buckets(sub_idx)
        rng = np.random.default_rng(self.seed)
        lim = np.float32(1.0 / d)
        syn0_vocab = rng.uniform(-lim, lim, size=(v, d)).astype(np.float32)
        n_rows = max(len(used), 1)
        syn0_ngrams = np.empty((n_rows, d), dtype=np.float32)
        for a in range(0, n_rows, 1 << 18):  # chunked init: no float64 temporary of the whole matrix
            b = min(n_rows, a + (1 << 18))
            syn0_ngrams[a:b] = rng.uniform(-lim, lim, size=(b - a, d))
        syn1neg = np.zeros((v, d), dtype=np.float32)
        t = self._tables(data)
        params = self._params()
        cuts = data.jobs()
        ids, offsets, max_len = np.asarray(data.ids), data.offsets, data.max_sentence()

        def job(epoch: int, j: int, alpha: float, seed: np.uint64) -> tuple[int, float, int]:
            return K.ft_train_job(syn0_vocab, syn0_ngrams, syn1neg, sub_ptr, packed_idx, ids, offsets, int(cuts[j]),
                                  int(cuts[j + 1]), t["keep"], t["ns"], t["exp"], t["lsp"], t["lsn"], params,
                                  float(alpha), seed, max_len)

        K.ft_train_job(syn0_vocab, syn0_ngrams, syn1neg, sub_ptr, packed_idx, ids, offsets, 0, 0, t["keep"], t["ns"],
                       t["exp"], t["lsp"], t["lsn"], params, 0.0, np.uint64(0), max_len)  # compile before timing
        sizes = offsets[cuts[1:]] - offsets[cuts[:-1]]
        stats = run_jobs(job, job_sizes=sizes, epochs=int(self.epochs), workers=workers, alpha=self.start_alpha,
                         min_alpha=float(self.min_alpha), seed=int(self.seed),
                         raw_per_kept=data.raw_words / max(data.n_words, 1), progress=progress)
        composed = np.empty((v, d), dtype=np.float32)
        K.ft_compose(syn0_vocab, syn0_ngrams, sub_ptr, packed_idx, composed)
        by_bucket = np.argsort(used)  # saved in bucket order, as FastTextKeyedVectors keeps them
        ngram_ids, ngram_vectors = used[by_bucket], syn0_ngrams[by_bucket]
        self._check_finite(composed, ngram_vectors)
        self.vocabulary_ = vocab
        self.corpus_ = data
        self.syn1neg_ = syn1neg
        self.vectors_vocab_ = syn0_vocab
        self.vectors_ngrams_ = ngram_vectors
        self.subwords_ = (sub_ptr, sub_idx)
        self.stats_ = stats
        meta = self._meta(data, stats, workers)
        meta["options"].update(minn=self.minn, maxn=self.maxn, bucket=self.bucket)
        self.wv_ = FastTextKeyedVectors(vocab.words_, composed, counts=vocab.counts_, meta=meta,
                                        minn=int(self.minn), maxn=int(self.maxn), bucket=int(self.bucket),
                                        ngram_ids=ngram_ids, ngram_vectors=ngram_vectors)
        return self


def _pack_buckets(sub_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The buckets ``sub_idx`` uses, in first-use order, and ``sub_idx`` renumbered into that order.

    Returns ``(used, packed)`` with ``used[packed[p]] == sub_idx[p]``: row ``k`` of the packed table
    holds bucket ``used[k]``. The vocabulary is sorted by frequency, so the n-grams of frequent words
    get the first rows.

    Example:
        >>> used, packed = _pack_buckets(np.array([7, 3, 7, 9], dtype=np.int32))
        >>> used.tolist(), packed.tolist()
        ([7, 3, 9], [0, 1, 0, 2])
    """
    uniq, first, inverse = np.unique(sub_idx, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(uniq), dtype=np.int32)
    rank[order] = np.arange(len(uniq), dtype=np.int32)
    return uniq[order].astype(np.int64), rank[inverse.reshape(-1)]
