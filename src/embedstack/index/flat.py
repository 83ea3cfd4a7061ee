"""Exact (brute-force) search over float32, float16, int8 or binary codes, with rescoring.

``FlatIndex`` is the reference every other index is tested against. Float search is a BLAS float32
matrix product per (query block × document block) feeding a running top-k (numba heap merge, or
``argpartition`` without numba). Quantised variants:

* ``fp16``: half the memory, scored by converting document blocks to float32 (same ranking up to
  rounding).
* ``int8``: scalar quantisation calibrated per dimension on a sample (``minmax`` or ``percentile``
  clipping): ``x ≈ mid + step * code`` with ``code ∈ [-127, 127]``. The query stays float
  (asymmetric distance): ``q·x ≈ q·mid + (q∘step)·code``.
* ``binary``: one sign bit per dimension (32× smaller than float32), Hamming distance by popcount.
  With ``rescore="int8"`` or ``"float"`` the ``oversample × k`` nearest codes are rescored with the
  float query against int8 or float32 document vectors (the rescoring vectors can stay on disk:
  they are memory-mapped on load and only candidate rows are read).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._validation import check_choice, check_float, check_int
from embedstack.errors import ConfigError, IndexStateError
from embedstack.index import _kernels as K
from embedstack.index._base import BaseIndex
from embedstack.registry import register

__all__ = ["FlatIndex", "QUANTIZATIONS"]

QUANTIZATIONS = ("none", "fp16", "int8", "binary")
_BLOCK_BYTES = 32 << 20  # score block size: (query block × doc block) float32


@register("FlatIndex", module="embedstack.index")
class FlatIndex(BaseIndex):
    """Exact or quantised brute-force index.

    Args:
        dim: vector dimensionality.
        metric: ``"cosine"`` (vectors normalised on the way in), ``"ip"`` or ``"l2"`` (scores are
            negative Euclidean distances, so larger is always better).
        quantization: ``"none"`` (float32), ``"fp16"``, ``"int8"`` or ``"binary"``.
        rescore: for binary codes, rescore candidates against ``"int8"`` or ``"float"`` vectors
            (None: Hamming only, score ``1 - 2·hamming/dim``).
        oversample: binary candidates per result kept for rescoring (``k × oversample``).
        calibration: int8 range per dimension from ``"minmax"`` or ``"percentile"`` of a sample.
        percentile: upper percentile for ``"percentile"`` calibration (lower is ``100 - percentile``).
        calibration_size: rows sampled for calibration (the first batch added is the population).
        query_block: queries scored together in one matrix product.

    Example:
        >>> import numpy as np
        >>> idx = FlatIndex(4)
        >>> _ = idx.add(np.eye(4, dtype=np.float32), ["a", "b", "c", "d"])
        >>> [h.id for h in idx.search(np.array([[0.9, 0.1, 0, 0]], dtype=np.float32), k=2)[0]]
        ['a', 'b']
    """

    def __init__(self, dim: int, *, metric: str = "cosine", quantization: str = "none",
                 rescore: str | None = None, oversample: int = 10, calibration: str = "minmax",
                 percentile: float = 99.9, calibration_size: int = 100_000, query_block: int = 256) -> None:
        self.quantization = quantization  # type: ignore[misc]
        self.rescore = rescore
        self.oversample = oversample
        self.calibration = calibration
        self.percentile = percentile
        self.calibration_size = calibration_size
        self.query_block = query_block
        super().__init__(dim, metric=metric)
        self._pending: list[np.ndarray] = []
        self._vec: np.ndarray | None = None  # float32 / float16 rows (none, fp16, binary+float)
        self._codes: np.ndarray | None = None  # int8 rows (int8, binary+int8)
        self._bits: np.ndarray | None = None  # uint64 (words, n) sign bits (binary)
        self._sqn: np.ndarray | None = None  # squared norms of the stored vectors (l2)
        self.mid_: np.ndarray | None = None
        self.step_: np.ndarray | None = None

    # ------------------------------------------------------------------ configuration
    def _check_params(self) -> None:
        super()._check_params()
        check_choice(self, "quantization", self.quantization, QUANTIZATIONS)
        if self.rescore is not None:
            check_choice(self, "rescore", self.rescore, ("int8", "float"))
            if self.quantization != "binary":
                raise ConfigError("The 'rescore' parameter of FlatIndex only applies to quantization='binary'.")
        if self.quantization == "binary" and self.metric == "l2":
            raise ConfigError("Binary codes approximate angles: use metric='cosine' or 'ip' with quantization='binary'.")
        check_int(self, "oversample", self.oversample, low=1)
        check_choice(self, "calibration", self.calibration, ("minmax", "percentile"))
        check_float(self, "percentile", self.percentile, low=50.0, high=100.0)
        check_int(self, "calibration_size", self.calibration_size, low=1)
        check_int(self, "query_block", self.query_block, low=1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "quantization": self.quantization, "rescore": self.rescore,
                "oversample": self.oversample, "calibration": self.calibration, "percentile": self.percentile,
                "calibration_size": self.calibration_size, "query_block": self.query_block}

    @property
    def _uses_int8(self) -> bool:
        return self.quantization == "int8" or self.rescore == "int8"

    @property
    def _uses_float(self) -> bool:
        return self.quantization in ("none", "fp16") or self.rescore == "float"

    # ------------------------------------------------------------------ adding
    def _prepare(self, x: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.where(norms > 0, norms, 1.0).astype(np.float32)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _append(self, vectors: np.ndarray) -> None:
        self._pending.append(self._prepare(vectors))

    def calibrate(self, sample: Any) -> FlatIndex:
        """Set the int8 ranges from ``sample`` (otherwise the first vectors added are used)."""
        from embedstack.index._base import as_matrix

        x = self._prepare(as_matrix(sample, self.dim, "calibration sample"))
        if self.calibration == "percentile":
            lo, hi = np.percentile(x, [100.0 - self.percentile, self.percentile], axis=0)
        else:
            lo, hi = x.min(axis=0), x.max(axis=0)
        step = (hi - lo) / 254.0
        self.step_ = np.where(step > 0, step, 1.0).astype(np.float32)
        self.mid_ = ((hi + lo) / 2.0).astype(np.float32)
        return self

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        assert self.mid_ is not None and self.step_ is not None
        return np.clip(np.rint((x - self.mid_) / self.step_), -127, 127).astype(np.int8)

    def _dequantize(self, codes: np.ndarray) -> np.ndarray:
        assert self.mid_ is not None and self.step_ is not None
        return codes.astype(np.float32) * self.step_ + self.mid_

    def _materialize(self) -> None:
        if not self._pending:
            return
        with self._fold_lock:
            if self._pending:
                self._fold()
                self._pending = []  # last: a reader that sees no pending work sees the folded arrays

    def _fold(self) -> None:
        new = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        if self._uses_int8 and self.mid_ is None:
            rng = np.random.default_rng(0)
            take = min(len(new), self.calibration_size)
            rows = np.sort(rng.choice(len(new), size=take, replace=False)) if take < len(new) else slice(None)
            self.calibrate(new[rows])

        def cat(old: np.ndarray | None, part: np.ndarray, axis: int = 0) -> np.ndarray:
            return part if old is None or old.shape[axis] == 0 else np.concatenate([old, part], axis=axis)

        if self._uses_float:
            dtype = np.float16 if self.quantization == "fp16" else np.float32
            self._vec = cat(self._vec, new.astype(dtype))
        codes = None
        if self._uses_int8:
            codes = self._quantize(new)
            self._codes = cat(self._codes, codes)
        if self.quantization == "binary":
            self._bits = cat(self._bits, K.pack_bits(new), axis=1)
        if self.metric == "l2":
            dtype16 = np.float16 if self.quantization == "fp16" else np.float32
            stored = self._dequantize(codes) if codes is not None else new.astype(dtype16).astype(np.float32)
            self._sqn = cat(self._sqn, np.einsum("ij,ij->i", stored, stored).astype(np.float32))

    def reconstruct(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``ids`` as float32 ``(n, dim)`` (normalised for cosine; int8 codes decoded).

        Raises:
            IndexStateError: an id is not in the index.
            ConfigError: binary-only storage keeps no float or int8 vectors to give back.
        """
        self._materialize()
        missing = [i for i in ids if i not in self._pos]
        if missing:
            raise IndexStateError(f"id {missing[0]!r} is not in the index ({len(missing)} unknown ids).")
        rows = np.asarray([self._pos[i] for i in ids], dtype=np.int64)
        if self._vec is not None:
            return np.asarray(self._vec[rows], dtype=np.float32)
        if self._codes is not None:
            return self._dequantize(np.asarray(self._codes[rows]))
        raise ConfigError("this index keeps binary codes only; it cannot reconstruct vectors.")

    # ------------------------------------------------------------------ searching
    def _rows(self) -> int:
        return len(self._ids)

    def _search_ids(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        self._materialize()
        q = self._prepare(queries)
        if self.quantization == "binary":
            return self._search_binary(q, k)
        nq = q.shape[0]
        best_s = np.empty((nq, k), dtype=np.float32)
        best_i = np.empty((nq, k), dtype=np.int64)
        qb = self.query_block
        n = self._rows()
        dead = np.flatnonzero(self._dead) if self._n_dead else None
        for a in range(0, nq, qb):
            qs = q[a : a + qb]
            bs = np.full((len(qs), k), -np.inf, dtype=np.float32)
            bi = np.full((len(qs), k), -1, dtype=np.int64)
            db = max(1024, _BLOCK_BYTES // (4 * len(qs)))
            for s in range(0, n, db):
                e = min(n, s + db)
                scores = self._block_scores(qs, s, e)
                if dead is not None:
                    lo, hi = np.searchsorted(dead, [s, e])
                    if hi > lo:
                        scores[:, dead[lo:hi] - s] = -np.inf
                K.topk_merge(scores, s, bs, bi)
            bs, bi = K.finalize_topk(bs, bi)
            if self.metric == "l2":
                qn = np.einsum("ij,ij->i", qs, qs)[:, None]
                bs = -np.sqrt(np.maximum(qn - bs, 0.0))
            best_s[a : a + qb], best_i[a : a + qb] = bs, bi
        return best_s, best_i, {}

    def _block_scores(self, q: np.ndarray, s: int, e: int) -> np.ndarray:
        """Similarity of queries to rows s..e (for l2: ``2 q·x - |x|²``, the query norm comes later)."""
        if self.quantization == "int8":
            assert self._codes is not None and self.step_ is not None and self.mid_ is not None
            qw = q * self.step_
            block = np.asarray(self._codes[s:e])
            raw = K.int8_dot(qw, block) if len(q) < 16 else qw @ block.astype(np.float32).T
            scores = raw + (q @ self.mid_)[:, None]
        else:
            assert self._vec is not None
            block = np.asarray(self._vec[s:e])
            scores = q @ (block if block.dtype == np.float32 else block.astype(np.float32)).T
        if self.metric == "l2":
            assert self._sqn is not None
            scores = 2.0 * scores - self._sqn[s:e][None, :]
        return np.asarray(scores, dtype=np.float32)

    def _search_binary(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        assert self._bits is not None
        qbits = K.pack_bits(q).T.copy()  # (nq, words)
        dead = np.flatnonzero(self._dead)
        c = k if self.rescore is None else min(len(self), k * self.oversample)
        dist, cand = K.hamming_select(qbits, self._bits, dead, c)
        ham_score = (1.0 - 2.0 * dist.astype(np.float32) / self.dim).astype(np.float32)
        if self.rescore is None:
            return ham_score[:, :k], cand[:, :k], {"hamming": ham_score[:, :k]}
        exact = self._rescore(q, cand)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(exact, order, axis=1)
        ids = np.take_along_axis(cand, order, axis=1)
        stages = {"hamming": np.take_along_axis(ham_score, order, axis=1), "rescore": scores}
        return scores, ids, stages

    def _rescore(self, q: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Float query against the candidates' int8 or float vectors: (nq, c) scores."""
        if self.rescore == "int8":
            assert self._codes is not None and self.step_ is not None and self.mid_ is not None
            # q·x ≈ q·mid + (q∘step)·code
            return K.gather_dot(q * self.step_, self._codes, cand) + (q @ self.mid_)[:, None].astype(np.float32)
        assert self._vec is not None
        return K.gather_dot(q, self._vec, cand)

    # ------------------------------------------------------------------ compaction / persistence
    def _compact_rows(self, keep: np.ndarray) -> None:
        self._materialize()
        if self._vec is not None:
            self._vec = np.ascontiguousarray(self._vec[keep])
        if self._codes is not None:
            self._codes = np.ascontiguousarray(self._codes[keep])
        if self._bits is not None:
            self._bits = np.ascontiguousarray(self._bits[:, keep])
        if self._sqn is not None:
            self._sqn = np.ascontiguousarray(self._sqn[keep])

    def _arrays(self) -> dict[str, np.ndarray]:
        self._materialize()
        out: dict[str, np.ndarray] = {}
        for name, arr in (("vectors", self._vec), ("codes", self._codes), ("bits", self._bits),
                          ("sqnorms", self._sqn), ("mid", self.mid_), ("step", self.step_)):
            if arr is not None:
                out[name] = arr
        return out

    def _restore(self, arrays: dict[str, np.ndarray], state: dict[str, Any], folder: Path, mmap: bool) -> None:
        def get(name: str) -> np.ndarray | None:
            return np.asarray(arrays[name]) if name in arrays else None

        self._vec, self._codes, self._bits = get("vectors"), get("codes"), get("bits")
        self._sqn, self.mid_, self.step_ = get("sqnorms"), get("mid"), get("step")

    def memory_bytes(self) -> int:
        """Bytes of the first-stage representation (for binary+rescore: the bits only)."""
        self._materialize()
        if self.quantization == "binary":
            assert self._bits is not None
            return int(self._bits.nbytes)
        return super().memory_bytes()

    def bytes_per_vector(self) -> float:
        """First-stage bytes per stored vector."""
        return self.memory_bytes() / max(1, self._rows())
