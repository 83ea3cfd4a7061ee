"""Exact (brute-force) search over float32, float16, int8 or binary codes, with rescoring.

``FlatIndex`` is the reference every other index is tested against. Search is the blocked scan of
:mod:`embedstack.index._scan`: one worker thread per core, each scoring cache-sized (query block ×
document block) tiles with a single-threaded matrix product and merging them at once into its own
running top-k (numba heap merge, or ``argpartition`` without numba). Quantised variants:

* ``fp16``: half the memory, scored by converting document blocks to float32 (same ranking up to
  rounding).
* ``int8``: scalar quantisation calibrated per dimension on a sample (``minmax`` or ``percentile``
  clipping): ``x ≈ mid + step * code`` with ``code ∈ [-127, 127]``. The query stays float
  (asymmetric distance): ``q·x ≈ q·mid + (q∘step)·code``. Where torch's integer GEMM runs (VNNI /
  AMX on recent x86), the first stage ranks the codes with ``q∘step`` rounded to int8 too (exact
  int32 products, ~4× the float32 rate on VNNI) and rescores the ``oversample × k`` best with the
  float ``q∘step`` (or, with ``rescore="float"``, with the float32 vectors). CPUs without those units
  (AVX2) do the same on fbgemm's u8 × s8 product (the codes are its unsigned input, ``q∘step`` its
  signed weight at 63 levels a side), 1.3-1.6× the float32 rate there.
* ``binary``: one sign bit per dimension (32× smaller than float32), Hamming distance by popcount.
  With ``rescore="int8"`` or ``"float"`` the ``oversample × k`` nearest codes are rescored with the
  float query against int8 or float32 document vectors (the rescoring vectors can stay on disk:
  they are memory-mapped on load and only candidate rows are read).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._validation import check_choice, check_float, check_int
from embedstack.errors import ConfigError, IndexStateError
from embedstack.index import _kernels as K
from embedstack.index import _scan
from embedstack.index._base import BaseIndex, prepare_rows
from embedstack.index._scan import scan_topk
from embedstack.registry import register

__all__ = ["FlatIndex", "QUANTIZATIONS"]

QUANTIZATIONS = ("none", "fp16", "int8", "binary")


def _buffer(local: threading.local, rows: int, cols: int, dtype: type) -> np.ndarray:
    """A per-thread scratch block of at least ``rows × cols`` (reused across blocks of one search)."""
    buf = getattr(local, "buf", None)
    if buf is None or buf.size < rows * cols:
        buf = local.buf = np.empty(rows * cols, dtype=dtype)
    return buf[: rows * cols].reshape(rows, cols)


@register("FlatIndex", module="embedstack.index")
class FlatIndex(BaseIndex):
    """Exact or quantised brute-force index.

    Args:
        dim: vector dimensionality.
        metric: ``"cosine"`` (vectors normalised on the way in), ``"ip"`` or ``"l2"`` (scores are
            negative Euclidean distances, so larger is always better).
        quantization: ``"none"`` (float32), ``"fp16"``, ``"int8"`` or ``"binary"``.
        rescore: for binary codes, rescore candidates against ``"int8"`` or ``"float"`` vectors
            (None: Hamming only, score ``1 - 2·hamming/dim``); for int8 codes, ``"float"`` rescores
            the int8 candidates against float32 vectors (kept beside the codes, memory-mapped on load).
        oversample: first-stage candidates per result kept for rescoring (``k × oversample``; None:
            10 for binary codes, 3 for int8, whose integer first stage ranks nearly as the final one
            does: with 3, ``int8:rescore=float`` reaches recall@10 1.0 against float32 at 100k and 1M
            in ``benchmarks/exact_search.py``; a one-off probe on other power-law vectors gave 0.93
            at 1 and 0.9997 at 2).
        calibration: int8 range per dimension from ``"minmax"`` or ``"percentile"`` of a sample.
        percentile: upper percentile for ``"percentile"`` calibration (lower is ``100 - percentile``).
        calibration_size: rows sampled for calibration (the first batch added is the population).
        query_block: queries scored together in one matrix product.
        threads: worker threads of a search (None: one per core this process may use; a search
            too small to gain from threads runs on the calling thread).

    Example:
        >>> import numpy as np
        >>> idx = FlatIndex(4)
        >>> _ = idx.add(np.eye(4, dtype=np.float32), ["a", "b", "c", "d"])
        >>> [h.id for h in idx.search(np.array([[0.9, 0.1, 0, 0]], dtype=np.float32), k=2)[0]]
        ['a', 'b']
    """

    def __init__(self, dim: int, *, metric: str = "cosine", quantization: str = "none",
                 rescore: str | None = None, oversample: int | None = None, calibration: str = "minmax",
                 percentile: float = 99.9, calibration_size: int = 100_000, query_block: int = 256,
                 threads: int | None = None) -> None:
        self.quantization = quantization  # type: ignore[misc]
        self.rescore = rescore
        self.oversample = oversample
        self.calibration = calibration
        self.percentile = percentile
        self.calibration_size = calibration_size
        self.query_block = query_block
        self.threads = threads
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
            if self.quantization == "int8" and self.rescore == "int8":
                raise ConfigError("quantization='int8' already scores int8 codes: use rescore='float' or None.")
            if self.quantization not in ("binary", "int8"):
                raise ConfigError("The 'rescore' parameter of FlatIndex applies to quantization='binary' or 'int8'.")
        if self.quantization == "binary" and self.metric == "l2":
            raise ConfigError("Binary codes approximate angles: use metric='cosine' or 'ip' with quantization='binary'.")
        if self.oversample is not None:
            check_int(self, "oversample", self.oversample, low=1)
        check_choice(self, "calibration", self.calibration, ("minmax", "percentile"))
        check_float(self, "percentile", self.percentile, low=50.0, high=100.0)
        check_int(self, "calibration_size", self.calibration_size, low=1)
        check_int(self, "query_block", self.query_block, low=1)
        if self.threads is not None:
            check_int(self, "threads", self.threads, low=1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "quantization": self.quantization, "rescore": self.rescore,
                "oversample": self.oversample, "calibration": self.calibration, "percentile": self.percentile,
                "calibration_size": self.calibration_size, "query_block": self.query_block,
                "threads": self.threads}

    @property
    def _candidates_per_result(self) -> int:
        if self.oversample is not None:
            return int(self.oversample)
        return 10 if self.quantization == "binary" else 3

    @property
    def _uses_int8(self) -> bool:
        return self.quantization == "int8" or self.rescore == "int8"

    @property
    def _uses_float(self) -> bool:
        return self.quantization in ("none", "fp16") or self.rescore == "float"

    # ------------------------------------------------------------------ adding
    def _prepare(self, x: np.ndarray) -> np.ndarray:
        return prepare_rows(x, self.metric)

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
        dead = np.flatnonzero(self._dead) if self._n_dead else None
        if self.quantization == "int8":
            return self._search_int8(q, k, dead)
        assert self._vec is not None
        vec = self._vec
        sqn = self._sqn if self.metric == "l2" else None
        local = threading.local()

        def score(qa: int, qe: int, s: int, e: int) -> np.ndarray:
            block = vec[s:e]
            if block.dtype != np.float32:  # fp16 rows widened one cache-sized block at a time
                block = block.astype(np.float32)
            out = _buffer(local, qe - qa, e - s, np.float32)
            np.matmul(q[qa:qe], block.T, out=out)
            if sqn is not None:  # l2: 2 q·x - |x|² (the query norm comes after the top-k)
                out *= 2.0
                out -= sqn[s:e][None, :]
            return out

        bs, bi = scan_topk(score, len(q), self._rows(), k, dim=self.dim, query_block=self.query_block,
                           dead=dead, threads=self.threads)
        if self.metric == "l2":
            qn = np.einsum("ij,ij->i", q, q)[:, None]
            bs = -np.sqrt(np.maximum(qn - bs, 0.0)).astype(np.float32)
        return bs, bi, {}

    def _search_int8(self, q: np.ndarray, k: int, dead: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """int8 codes: ``q·x ≈ q·mid + (q∘step)·code``.

        With an integer product (:func:`~embedstack.index._scan.int8_backend`: ``torch._int_mm`` on VNNI / AMX,
        fbgemm elsewhere), ``q∘step`` is itself rounded to integers (one scale per query; 127 levels a side for
        ``_int_mm``; for fbgemm :data:`~embedstack.neural.quantize.FBGEMM_WEIGHT_LEVELS`, 63, as its AVX2 kernel's
        16-bit pair sums must stay below 32,768) and the codes are ranked by integer products (exact int32 sums;
        fbgemm returns them as float32 times the query's scale, exact below 2**24); the ``k × oversample`` best
        are then rescored with the float ``q∘step`` against their codes (or with the float vectors,
        ``rescore="float"``). Without one, the float ``q∘step`` scores the codes directly.
        """
        assert self._codes is not None and self.step_ is not None and self.mid_ is not None
        codes = self._codes
        qw = np.ascontiguousarray(q * self.step_, dtype=np.float32)
        offset = (q @ self.mid_).astype(np.float32)
        n, nq = self._rows(), len(q)
        sqn = self._sqn if self.metric == "l2" else None
        integer = nq >= _scan._INT_MM_MIN_ROWS and sqn is None
        int_mm = _scan._torch_int_mm() if integer else None
        fbgemm = _scan.fbgemm_product() if integer and int_mm is None else None
        local = threading.local()
        live = n - (len(dead) if dead is not None else 0)
        if int_mm is not None or fbgemm is not None:
            import torch

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a read-only memory map: torch only reads it
                ct = torch.from_numpy(np.asarray(codes))
            c = min(live, k * self._candidates_per_result)
            from embedstack.neural.quantize import (
                FBGEMM_LEVELS,
                FBGEMM_WEIGHT_LEVELS,
                fbgemm_pack,
                quantize_weight,
            )

            # q∘step to integers, one scale per query: 127 levels for _int_mm, 63 for fbgemm's weights
            qc_t, qscale_t = quantize_weight(torch.from_numpy(qw), 127 if int_mm is not None else FBGEMM_WEIGHT_LEVELS)
            if int_mm is not None:
                mm = int_mm

                def score(qa: int, qe: int, s: int, e: int) -> np.ndarray:
                    return mm(qc_t[qa:qe], ct[s:e].T).numpy()

                _, cand = scan_topk(score, nq, n, c, dim=self.dim, query_block=self.query_block, dead=dead,
                                    threads=self.threads, uses_torch=True, fill=float(np.iinfo(np.int32).min))
            else:
                assert fbgemm is not None
                product = fbgemm
                qb = max(1, min(nq, self.query_block))
                packs = [fbgemm_pack(qc_t[a:a + qb].contiguous(), qscale_t[a:a + qb].contiguous())
                         for a in range(0, nq, qb)]

                def score_fbgemm(qa: int, qe: int, s: int, e: int) -> np.ndarray:
                    buf = getattr(local, "rows", None)
                    if buf is None or buf.shape[0] < e - s:
                        buf = local.rows = torch.empty((e - s, self.dim), dtype=torch.float32)
                        local.span = None
                    rows = buf[: e - s]
                    if local.span != (s, e):  # once per block of codes: the query blocks follow each other on it
                        rows.copy_(ct[s:e])  # the codes as the product's input (zero point 128: 1..255)
                        local.span = (s, e)
                    # (rows, queries) float32: each row's integer sums times the query's scale
                    return product(rows, 1.0, FBGEMM_LEVELS + 1, packs[qa // qb]).numpy()

                _, cand = scan_topk(score_fbgemm, nq, n, c, dim=self.dim, query_block=qb, dead=dead,
                                    threads=self.threads, uses_torch=True, transposed=True)
            return self._rescore_candidates(q, qw, offset, cand, k)

        def score_float(qa: int, qe: int, s: int, e: int) -> np.ndarray:
            block = np.asarray(codes[s:e])
            if qe - qa < 16:
                out = K.int8_dot(qw[qa:qe], block, parallel=False)
            else:
                out = _buffer(local, qe - qa, e - s, np.float32)
                np.matmul(qw[qa:qe], block.astype(np.float32).T, out=out)
            if sqn is not None:
                out = 2.0 * (out + offset[qa:qe, None]) - sqn[s:e][None, :]
            return out

        if self.rescore == "float":
            c = min(live, k * self._candidates_per_result)
            _, cand = scan_topk(score_float, nq, n, c, dim=self.dim, query_block=self.query_block, dead=dead,
                                threads=self.threads)
            return self._rescore_candidates(q, qw, offset, cand, k)
        bs, bi = scan_topk(score_float, nq, n, k, dim=self.dim, query_block=self.query_block, dead=dead,
                           threads=self.threads)
        if sqn is not None:
            qn = np.einsum("ij,ij->i", q, q)[:, None]
            return -np.sqrt(np.maximum(qn - bs, 0.0)).astype(np.float32), bi, {}
        return (bs + offset[:, None]).astype(np.float32), bi, {}

    def _rescore_candidates(self, q: np.ndarray, qw: np.ndarray, offset: np.ndarray, cand: np.ndarray, k: int
                            ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Rescore int8 first-stage candidates (``-1`` pads) and keep the best ``k`` of each row."""
        if self.rescore == "float":
            assert self._vec is not None
            s, i = _scan.rescore_topk(q, self._vec, cand, k, l2=self.metric == "l2")
        else:
            assert self._codes is not None
            s, i = _scan.rescore_topk(qw, self._codes, cand, k, offset=offset)
        return s, i, {}

    def _search_binary(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        assert self._bits is not None
        qbits = K.pack_bits(q).T.copy()  # (nq, words)
        dead = np.flatnonzero(self._dead)
        c = k if self.rescore is None else min(len(self), k * self._candidates_per_result)
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
        """Bytes of the first-stage representation (for binary+rescore: the bits only; int8+float: the codes)."""
        self._materialize()
        if self.quantization == "binary":
            assert self._bits is not None
            return int(self._bits.nbytes)
        if self.quantization == "int8" and self.rescore == "float":
            assert self._codes is not None
            return int(self._codes.nbytes)
        return super().memory_bytes()

    def bytes_per_vector(self) -> float:
        """First-stage bytes per stored vector."""
        return self.memory_bytes() / max(1, self._rows())
