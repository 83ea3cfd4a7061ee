"""Late interaction (ColBERT-style): documents and queries as token matrices, scored by MaxSim.

``MaxSim(Q, D) = Σ_i max_j q_i · d_j``. Scoring every document is exact but touches every stored
token, so a candidate stage prunes first, in the spirit of PLAID's centroid interaction:

1. token vectors are clustered (spherical k-means) and each document keeps the set of centroids its
   tokens fall into (an inverted list centroid → documents);
2. each query token probes its ``nprobe`` nearest centroids; documents in those lists are candidates;
3. candidates are ranked by the centroid approximation ``Σ_i max_{c ∈ doc} q_i · c`` and the best
   ``candidates`` of them are scored exactly with MaxSim.

``exact_search`` scores every live document (the reference for the candidate stage's recall).

Storage (``storage``): ``fp32``; ``fp16`` (half the bytes); or ``residual``, ColBERTv2 / PLAID's
compression: each token keeps the id of its centroid and its residual ``x - c`` quantized to ``nbits``
(1, 2 or 4) per dimension against bucket cut-offs taken from the quantiles of all residual values
(the bucket's value is its middle quantile), packed into bytes. A 128-d token then costs
``16 · nbits + 2`` bytes (2-bit: 34) instead of 512. Scoring decompresses the candidates
(``c + r̂``, renormalised) and runs exact MaxSim on them. Documents added before :meth:`train` are
held in fp32 until it runs (searching or saving trains first).

Execution: the probe and the centroid interaction are numba kernels over the inverted lists and each
document's centroid set (no per-query gather of a documents × centroids matrix). Exact MaxSim runs in
blocks of about 8k token vectors taken by worker threads, as the flat scan does: a block is decoded
(or read in place for consecutive fp32 documents), scored by one single-threaded ``tokens × query``
GEMM that stays in cache, and reduced per document. Each kernel has a numpy twin in ``_kernels.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from embedstack import _threads
from embedstack._validation import check_int
from embedstack.errors import InputError
from embedstack.index._base import BaseIndex, as_matrix
from embedstack.index._kernels import centroid_interaction, decode_residuals, probe_docs, segment_maxsum
from embedstack.index._scan import run_workers
from embedstack.registry import register

__all__ = ["MultiVectorIndex", "maxsim", "STORAGES"]

STORAGES = ("fp32", "fp16", "residual")
#: token vectors per block of exact scoring: 8,192 decoded 128-d vectors (4 MiB) and their scores stay in cache
_BLOCK_TOKENS = 8192
#: below this many token vectors to score, one thread does it all (a thread hand-off costs ~50 µs)
_MIN_SPLIT_TOKENS = 32768


def maxsim(query: np.ndarray, doc: np.ndarray) -> float:
    """Exact MaxSim of two token matrices (reference implementation)."""
    return float((query @ doc.T).max(axis=1).sum())


def _segments(offsets: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token positions of ``docs`` (concatenated) and the start of each doc's run in that list."""
    lens = offsets[docs + 1] - offsets[docs]
    starts = np.zeros(len(docs), dtype=np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    pos = np.repeat(offsets[docs] - starts, lens) + np.arange(int(lens.sum()), dtype=np.int64)
    return pos, starts


def as_token_matrices(vectors: Any, dim: int, what: str = "vectors") -> list[np.ndarray]:
    """Validate a list of token matrices (one finite ``(tokens, dim)`` float32 array per text, none empty)."""
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
        raise InputError(f"{what} must be a list of token matrices (one (tokens, dim) array per text).")
    out = []
    for j, m in enumerate(vectors):
        arr = as_matrix(m, dim, f"{what}[{j}]")
        if arr.shape[0] == 0:
            raise InputError(f"{what}[{j}] has no token vectors; every text needs at least one token.")
        out.append(arr)
    return out


@register("MultiVectorIndex", module="embedstack.index")
class MultiVectorIndex(BaseIndex):
    """MaxSim index over per-document token matrices with centroid-based candidate pruning.

    Args:
        dim: token vector dimensionality.
        metric: ``"cosine"`` (token vectors normalised) or ``"ip"``.
        n_centroids: k-means centroids over tokens (None: a power of two near ``8·sqrt(tokens)``).
        nprobe: centroids probed per query token.
        candidates: documents scored exactly per query (after the centroid approximation).
        storage: ``fp32``, ``fp16`` or ``residual`` (centroid id + ``nbits`` per dimension; see the module doc).
        nbits: bits per dimension of a residual (1, 2 or 4).
        kmeans_iters: Lloyd iterations.
        seed: random seed of the k-means sample and initialisation.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> docs = [rng.standard_normal((5, 8)).astype(np.float32) for _ in range(20)]
        >>> idx = MultiVectorIndex(8, candidates=5)
        >>> _ = idx.add(docs, [f"d{i}" for i in range(20)])
        >>> idx.search([docs[3]], k=1)[0][0].id
        'd3'
    """

    def __init__(self, dim: int, *, metric: str = "cosine", n_centroids: int | None = None, nprobe: int = 4,
                 candidates: int = 256, storage: str = "fp32", nbits: int = 2, kmeans_iters: int = 10,
                 seed: int = 0) -> None:
        self.n_centroids = n_centroids
        self.storage = storage
        self.nbits = nbits
        self.nprobe = nprobe
        self.candidates = candidates
        self.kmeans_iters = kmeans_iters
        self.seed = seed
        super().__init__(dim, metric=metric)
        self._tokens: np.ndarray = np.zeros((0, dim), dtype=np.float32)
        self._offsets: np.ndarray = np.zeros(1, dtype=np.int64)
        self._pending: list[np.ndarray] = []
        self.centroids_: np.ndarray | None = None
        self._assign: np.ndarray = np.zeros(0, dtype=np.int32)
        self._lists: sp.csr_array | None = None  # centroid -> docs
        self._doc_cents: sp.csr_array | None = None  # doc -> centroids
        # residual storage: packed bucket indices per token, the cut-offs and the value of each bucket
        self._packed: np.ndarray = np.zeros((0, self._packed_width()), dtype=np.uint8)
        self.cutoffs_: np.ndarray | None = None
        self.bucket_weights_: np.ndarray | None = None
        self._lut: np.ndarray | None = None

    def _check_params(self) -> None:
        super()._check_params()
        if self.metric == "l2":
            from embedstack.errors import ConfigError

            raise ConfigError("MultiVectorIndex scores MaxSim by dot products: use metric='cosine' or 'ip'.")
        check_int(self, "n_centroids", self.n_centroids, low=1, allow_none=True)
        check_int(self, "nprobe", self.nprobe, low=1)
        check_int(self, "candidates", self.candidates, low=1)
        check_int(self, "kmeans_iters", self.kmeans_iters, low=0)
        if self.storage not in STORAGES:
            from embedstack.errors import ConfigError

            raise ConfigError(f"storage must be one of {list(STORAGES)}; got {self.storage!r}.")
        if isinstance(self.nbits, bool) or self.nbits not in (1, 2, 4):
            from embedstack.errors import ConfigError

            raise ConfigError(f"nbits must be 1, 2 or 4 bits per dimension; got {self.nbits!r}.")
        if self.storage == "residual" and (self.dim * self.nbits) % 8:
            from embedstack.errors import ConfigError

            raise ConfigError(f"residual storage packs dim x nbits bits into bytes: {self.dim} x {self.nbits} is not a "
                              "multiple of 8.")
        check_int(self, "seed", self.seed, low=0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_centroids": self.n_centroids, "nprobe": self.nprobe,
                "candidates": self.candidates, "storage": self.storage, "nbits": self.nbits,
                "kmeans_iters": self.kmeans_iters, "seed": self.seed}

    @property
    def compressed(self) -> bool:
        """Whether the tokens are held as centroid ids + packed residuals (residual storage, trained)."""
        return self.storage == "residual" and self.cutoffs_ is not None

    def _packed_width(self) -> int:
        return self.dim * self.nbits // 8 if self.storage == "residual" else 0

    # ------------------------------------------------------------------ adding
    def _validate(self, vectors: Any, what: str) -> list[np.ndarray]:
        out = []
        for arr in as_token_matrices(vectors, self.dim, what):
            if self.metric == "cosine":
                norms = np.linalg.norm(arr, axis=1, keepdims=True)
                arr = arr / np.where(norms > 0, norms, 1.0)
            out.append(np.ascontiguousarray(arr, dtype=np.float32))
        return out

    def _append(self, vectors: list[np.ndarray]) -> None:
        self._pending.extend(vectors)

    def _materialize(self) -> None:
        if not self._pending:
            return
        with self._fold_lock:
            if self._pending:
                self._fold()
                self._pending = []  # last: a reader that sees no pending work sees the folded arrays

    def _fold(self) -> None:
        lens = np.array([len(m) for m in self._pending], dtype=np.int64)
        new = np.concatenate(self._pending)
        self._offsets = np.concatenate([self._offsets, self._offsets[-1] + np.cumsum(lens)])
        if self.compressed:  # already trained: compress the new tokens against the same centroids and buckets
            codes = self._nearest(new)
            self._assign = np.concatenate([self._assign, codes.astype(self._assign.dtype)])
            self._packed = np.concatenate([np.asarray(self._packed), self._quantize(new, codes)])
            self._lists = None
            return
        dtype = np.float16 if self.storage == "fp16" else np.float32
        self._tokens = np.concatenate([np.asarray(self._tokens, dtype=dtype), new.astype(dtype)])
        if self.centroids_ is not None:
            self._assign = np.concatenate([self._assign, self._nearest(new)])
            self._lists = None

    # ------------------------------------------------------------------ residual compression
    def _shifts(self) -> np.ndarray:
        per = 8 // self.nbits
        return (np.arange(per - 1, -1, -1) * self.nbits).astype(np.uint8)  # the first value in the high bits

    def _quantize(self, tokens: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Packed bucket indices (m, dim·nbits/8) of the residuals ``tokens - centroids[codes]``."""
        assert self.centroids_ is not None and self.cutoffs_ is not None
        out = np.empty((len(tokens), self._packed_width()), dtype=np.uint8)
        per = 8 // self.nbits
        shifts = self._shifts()
        for s in range(0, len(tokens), 65536):
            res = tokens[s:s + 65536] - self.centroids_[codes[s:s + 65536]]
            buckets = np.searchsorted(self.cutoffs_, res).astype(np.uint8)  # (m, dim) in [0, 2^nbits)
            grouped = buckets.reshape(len(res), -1, per) << shifts
            out[s:s + 65536] = np.bitwise_or.reduce(grouped, axis=2)
        return out

    def _fit_buckets(self, tokens: np.ndarray, codes: np.ndarray) -> None:
        """Cut-offs at the ``k / 2^nbits`` quantiles of the residual values, each bucket's value at its middle one."""
        assert self.centroids_ is not None
        res = (tokens - self.centroids_[codes]).ravel()
        levels = 2 ** self.nbits
        self.cutoffs_ = np.quantile(res, np.arange(1, levels) / levels).astype(np.float32)
        self.bucket_weights_ = np.quantile(res, (np.arange(levels) + 0.5) / levels).astype(np.float32)
        self._lut = None

    def _byte_table(self) -> np.ndarray:
        """byte value → the ``8 / nbits`` residual values it packs: float32 (256, 8 / nbits)."""
        if self._lut is None:
            assert self.bucket_weights_ is not None
            values = np.arange(256, dtype=np.uint8)[:, None] >> self._shifts()[None, :]
            self._lut = self.bucket_weights_[values & (2 ** self.nbits - 1)].astype(np.float32)
        return self._lut

    def _decode(self, pos: np.ndarray) -> np.ndarray:
        """float32 token vectors at positions ``pos`` (decompressed and renormalised under residual storage)."""
        if not self.compressed:
            return np.asarray(self._tokens[pos], dtype=np.float32)
        assert self.centroids_ is not None
        return decode_residuals(self._packed, self._assign, self.centroids_, self._byte_table(), pos,
                                self.metric == "cosine")

    # ------------------------------------------------------------------ candidate stage
    def _nearest(self, tokens: np.ndarray) -> np.ndarray:
        assert self.centroids_ is not None
        out = np.empty(len(tokens), dtype=np.int32)
        for s in range(0, len(tokens), 8192):
            out[s : s + 8192] = np.argmax(tokens[s : s + 8192] @ self.centroids_.T, axis=1)
        return out

    def train(self) -> MultiVectorIndex:
        """Cluster the stored tokens (spherical k-means) and build the centroid inverted lists; under
        residual storage, fit the buckets and compress every token (the fp32 copy is dropped)."""
        self._materialize()
        if self.compressed:  # a second train() would need the fp32 tokens the compression dropped
            return self
        tokens = np.asarray(self._tokens, dtype=np.float32)
        n_tok = len(tokens)
        if n_tok == 0:
            return self
        c = self.n_centroids or int(2 ** np.floor(np.log2(max(1.0, 8 * np.sqrt(n_tok)))))
        c = min(c, n_tok)
        rng = np.random.default_rng(self.seed)
        picked = rng.choice(n_tok, size=min(n_tok, max(64 * c, 20000)), replace=False)
        sample = tokens[picked]
        cents = sample[rng.choice(len(sample), size=c, replace=False)].copy()
        for _ in range(self.kmeans_iters):
            self.centroids_ = cents
            lab = self._nearest(sample)
            sums = np.zeros_like(cents)
            np.add.at(sums, lab, sample)
            counts = np.bincount(lab, minlength=c)
            empty = counts == 0
            sums[empty] = sample[rng.choice(len(sample), size=int(empty.sum()))]
            norms = np.linalg.norm(sums, axis=1, keepdims=True)
            cents = (sums / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        self.centroids_ = np.ascontiguousarray(cents, dtype=np.float32)
        self._assign = self._nearest(tokens)
        self._lists = None
        if self.storage == "residual":
            self._assign = self._assign.astype(np.uint16 if c <= 65536 else np.int32)
            self._fit_buckets(sample, self._assign[picked])  # the sample's codes: already computed for every token
            self._packed = self._quantize(tokens, self._assign)
            self._tokens = np.zeros((0, self.dim), dtype=np.float32)
        return self

    def _build_lists(self) -> None:
        assert self.centroids_ is not None
        n_docs = len(self._offsets) - 1
        tok_doc = np.repeat(np.arange(n_docs), np.diff(self._offsets))
        ones = np.ones(len(tok_doc), dtype=np.float32)
        dc = sp.csr_array((ones, (tok_doc, self._assign)), shape=(n_docs, len(self.centroids_)))
        dc.sum_duplicates()
        dc.data[:] = 1.0
        self._doc_cents = dc
        self._lists = sp.csr_array(dc.T)

    def _candidates(self, q: np.ndarray, budget: int) -> np.ndarray:
        """Documents to score exactly for one query: probed lists, ranked by centroid interaction."""
        assert self.centroids_ is not None and self._lists is not None and self._doc_cents is not None
        sims = q @ self.centroids_.T  # (q_tokens, n_centroids)
        probe = min(self.nprobe, sims.shape[1])
        top = np.argpartition(-sims, probe - 1, axis=1)[:, :probe]
        lists = self._lists
        docs = probe_docs(np.unique(top), lists.indptr, lists.indices, self._dead.view(np.uint8))
        if len(docs) <= budget:
            return docs
        dc = self._doc_cents
        approx = centroid_interaction(np.ascontiguousarray(sims.T), dc.indptr, dc.indices, docs)  # a row per centroid
        keep = np.argpartition(-approx, budget - 1)[:budget]
        return np.sort(docs[keep])

    def _maxsim(self, q: np.ndarray, docs: np.ndarray) -> np.ndarray:
        """MaxSim of ``q`` against ``docs`` (sorted ids), in blocks of about ``_BLOCK_TOKENS`` token vectors,
        the way :mod:`~embedstack.index._scan` scans a flat index: worker threads take blocks one at a time;
        each block is decoded (or, for consecutive documents stored as float, read in place), multiplied with
        the query by a single-threaded GEMM whose result stays in cache, and reduced per document."""
        offsets = self._offsets
        out = np.empty(len(docs), dtype=np.float32)
        if len(docs) == 0:
            return out
        ends = np.cumsum(offsets[docs + 1] - offsets[docs])
        bounds = [0]
        while bounds[-1] < len(docs):
            a = bounds[-1]
            bounds.append(max(a + 1, int(np.searchsorted(ends, (ends[a - 1] if a else 0) + _BLOCK_TOKENS,
                                                         side="right"))))
        blocks = list(zip(bounds[:-1], bounds[1:], strict=True))

        def score(block: tuple[int, int]) -> None:
            a, b = block
            sub = docs[a:b]
            lo, hi = int(offsets[sub[0]]), int(offsets[sub[-1] + 1])
            if not self.compressed and sub[-1] - sub[0] == len(sub) - 1:  # consecutive documents: one slice
                x = np.asarray(self._tokens[lo:hi], dtype=np.float32)
                starts = offsets[sub] - lo
            else:
                pos, starts = _segments(offsets, sub)
                x = self._decode(pos)
            out[a:b] = segment_maxsum(x @ q.T, starts)  # (tokens, q_tokens): the faster GEMM shape

        threads = 1 if ends[-1] < _MIN_SPLIT_TOKENS else min(_threads.available_cores(), len(blocks))
        with _threads.serial():
            run_workers(blocks, score, threads)
        return out

    def _rank(self, queries: list[np.ndarray], k: int, exhaustive: bool) -> tuple[np.ndarray, np.ndarray]:
        with self._fold_lock:  # lazy training and list building happen once, whoever reads first
            self._materialize()
            live = np.flatnonzero(~self._dead)
            if self.storage == "residual" and not self.compressed and len(live):
                self.train()
            if not exhaustive and len(live) > self.candidates:
                if self.centroids_ is None:
                    self.train()
                if self._lists is None:
                    self._build_lists()
        nq = len(queries)
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        ids = np.full((nq, k), -1, dtype=np.int64)
        for r, q in enumerate(queries):
            use_all = exhaustive or len(live) <= self.candidates
            docs = live if use_all else self._candidates(q, max(self.candidates, k))
            if len(docs) == 0:
                continue
            s = self._maxsim(q, docs)
            m = min(k, len(docs))
            part = np.argpartition(-s, m - 1)[:m] if len(s) > m else np.arange(len(s))
            order = part[np.lexsort((docs[part], -s[part]))]
            scores[r, :m] = s[order]
            ids[r, :m] = docs[order]
        return scores, ids

    def _search_ids(self, queries: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        scores, ids = self._rank(queries, k, exhaustive=False)
        return scores, ids, {}

    def exact_search(self, queries: Any, k: int = 10) -> list[list[Any]]:
        """MaxSim against every live document (no candidate stage): the reference ranking."""
        q = self._validate(queries, "queries")
        if len(self) == 0:
            return [[] for _ in q]
        scores, ids = self._rank(q, min(k, len(self)), exhaustive=True)
        return self._hits(scores, ids, {}, with_text=False)

    # ------------------------------------------------------------------ compaction / persistence
    def _compact_rows(self, keep: np.ndarray) -> None:
        self._materialize()
        pos, _ = _segments(self._offsets, keep)
        lens = self._offsets[keep + 1] - self._offsets[keep]
        if self.compressed:
            self._packed = np.ascontiguousarray(self._packed[pos])
        else:
            self._tokens = np.ascontiguousarray(self._tokens[pos])
        self._offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        if self.centroids_ is not None:
            self._assign = self._assign[pos]
        self._lists = None

    def _arrays(self) -> dict[str, np.ndarray]:
        self._materialize()
        if self.storage == "residual" and not self.compressed and len(self._tokens):
            self.train()  # a residual index is saved compressed
        out = {"offsets": self._offsets}
        if self.compressed:
            assert self.cutoffs_ is not None and self.bucket_weights_ is not None
            out.update(packed=np.asarray(self._packed), cutoffs=self.cutoffs_, bucket_weights=self.bucket_weights_)
        else:
            out["tokens"] = np.asarray(self._tokens)
        if self.centroids_ is not None:
            out["centroids"] = self.centroids_
            out["assign"] = self._assign
        return out

    def _restore(self, arrays: dict[str, np.ndarray], state: dict[str, Any], folder: Path, mmap: bool) -> None:
        self._offsets = np.asarray(arrays["offsets"], dtype=np.int64)
        if "packed" in arrays:
            self._packed = arrays["packed"]
            self.cutoffs_ = np.asarray(arrays["cutoffs"], dtype=np.float32)
            self.bucket_weights_ = np.asarray(arrays["bucket_weights"], dtype=np.float32)
        else:
            self._tokens = np.asarray(arrays["tokens"])
        if "centroids" in arrays:
            self.centroids_ = np.asarray(arrays["centroids"])
            self._assign = np.asarray(arrays["assign"])
