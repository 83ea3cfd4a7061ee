"""The exact scan behind :class:`~embedstack.index.FlatIndex`: cache-sized blocks, one thread per core.

A search over ``n`` stored vectors for ``nq`` queries is ``nq × n`` dot products and a top-k per
query. Done as one large matrix product, the ``nq × n`` float32 scores (400 MB for 1,000 queries ×
100,000 documents) go out to memory and come back for the top-k, and the BLAS thread pool and the
top-k thread pool take turns on the cores, each waiting for the other's workers to wake up. Here
instead:

* the documents are cut into units (ranges of rows) that worker threads take one at a time from a
  shared counter (dynamic: a core busy with other work simply takes fewer units);
* within a unit, a block of ``block_rows`` documents is scored against a block of queries by a
  *single-threaded* matrix product into a buffer that stays in the core's L2 cache
  (``query_block × block_rows`` scores, ~2 MiB), and merged at once into that worker's running
  top-k (:func:`~embedstack.index._kernels.topk_block`, which skips runs of scores that cannot
  enter);
* the workers' top-k lists are merged at the end (ties: the lower id wins, as everywhere).

Every stage releases the GIL (BLAS, numba ``nogil`` kernels, torch), so plain Python threads keep
the cores busy. BLAS (and torch, for int8 products) run one thread per caller for the duration of a
scan; like :func:`embedstack._threads.serial`, that setting is process-wide while a scan runs.

The int8 path scores with integer matrix products: ``torch._int_mm`` (AVX-512 VNNI ``vpdpbusd`` where the
CPU has it, AMX where it has that); elsewhere fbgemm's u8 × s8 product (AVX2 ``vpmaddubsw``: 1.3-1.6× a
float32 product's rate on an AVX2-only EPYC, ``exact_search_fbgemm`` in BENCHMARKS.md). The codes are widened to
float32 without torch or without its fbgemm engine (aarch64 builds), with ``EMBEDSTACK_INT8_GEMM=off``, for the
``l2`` metric and below 32 queries (:func:`int_gemm_units`, :func:`fbgemm_product`); :func:`int8_backend` says
which path a machine gets.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

import numpy as np

from embedstack import _threads
from embedstack._threads import cpu_features
from embedstack.errors import ConfigError
from embedstack.index import _kernels as K

__all__ = ["scan_topk", "cpu_features", "fbgemm_product", "int8_backend", "merge_topk", "rescore_topk", "run_workers"]

#: scores per (query block × document block) buffer: 2 MiB of float32 / int32, about a core's L2
_BLOCK_SCORES = 1 << 19
#: documents per block at most (few queries: a block is a matrix-vector product, streamed from memory)
_MAX_BLOCK_ROWS = 16384
#: below this many multiply-adds a scan runs on the calling thread (thread hand-off costs ~50 µs)
_MIN_SPLIT = 1 << 23
#: below this many queries in a block the int8 product is not worth an integer GEMM (memory-bound)
_INT_MM_MIN_ROWS = 32

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()

ScoreFn = Callable[[int, int, int, int], np.ndarray]


_INT8_GEMM_MODES = ("", "0", "numpy", "off", "1", "torch", "on", "fbgemm")


def _int8_gemm_mode() -> str:
    """``EMBEDSTACK_INT8_GEMM``, checked: ``""`` (automatic), ``"off"`` (also ``0`` / ``numpy``), ``"torch"`` (also
    ``1`` / ``on``) or ``"fbgemm"``."""
    mode = os.environ.get("EMBEDSTACK_INT8_GEMM", "").strip().lower()
    if mode not in _INT8_GEMM_MODES:
        raise ConfigError(f"EMBEDSTACK_INT8_GEMM={mode!r}: use 'torch' (torch._int_mm), 'fbgemm', 'off' (int8 codes "
                          "widened to float32), or unset it.")
    return mode


@lru_cache(maxsize=1)
def _torch_int_mm() -> Any:
    """``torch._int_mm`` if torch is installed and it runs on integer units here (:func:`int_gemm_units`, or forced
    by ``EMBEDSTACK_INT8_GEMM=torch``), else None (never imports torch unless it is installed)."""
    import importlib.util

    mode = _int8_gemm_mode()
    if mode in ("0", "numpy", "off", "fbgemm"):
        return None
    if "torch" not in sys.modules and importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch

        if mode not in ("1", "torch", "on") and not int_gemm_units():  # after the import: its probe may answer
            return None
        a = torch.ones((_INT_MM_MIN_ROWS, 64), dtype=torch.int8)
        if int(torch._int_mm(a, a.T)[0, 0]) != 64:  # pragma: no cover - a broken build
            return None
        return torch._int_mm
    except Exception:  # noqa: BLE001 - an old torch without _int_mm, or one that refuses the CPU
        return None


@lru_cache(maxsize=1)
def fbgemm_product() -> Any:
    """fbgemm's u8 × s8 product (``torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32``) where
    int8 codes are scored with it: torch has the fbgemm engine and ``torch._int_mm`` has no integer units here
    (:func:`_torch_int_mm` is None), or ``EMBEDSTACK_INT8_GEMM=fbgemm``; else None (``=off`` / ``=torch`` turn it
    off; ``=fbgemm`` where torch has no fbgemm engine is a ConfigError). On an AVX2-only AMD EPYC it ran at 199 and
    302 GOP/s on 2 threads at the scan's shapes (2,048 code rows × 256 queries × 384) in two runs, against 158 and
    181 GFLOP/s for a float32 GEMM (``exact_search_fbgemm`` in BENCHMARKS.md)."""
    import importlib.util

    mode = _int8_gemm_mode()
    if mode in ("0", "numpy", "off", "1", "torch", "on"):
        return None
    if "torch" not in sys.modules and importlib.util.find_spec("torch") is None:
        if mode == "fbgemm":
            raise ConfigError("EMBEDSTACK_INT8_GEMM=fbgemm needs torch: pip install 'embedstack[torch]', or unset it.")
        return None
    if mode != "fbgemm" and _torch_int_mm() is not None:
        return None
    try:
        import torch

        engine = "fbgemm" in torch.backends.quantized.supported_engines
        op = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32 if engine else None
    except Exception:  # noqa: BLE001 - an old torch without the op
        op = None
    if op is None and mode == "fbgemm":
        raise ConfigError("EMBEDSTACK_INT8_GEMM=fbgemm: this torch build has no fbgemm engine; unset it.")
    return op


def int_gemm_units() -> bool:
    """Whether torch's integer GEMM (``torch._int_mm``) runs on integer dot-product units here: oneDNN serves it
    on CPUs with AVX-512 VNNI or AMX; elsewhere torch runs a scalar loop, far slower than a float32 product
    (an AMD EPYC with AVX2 only: 1.8 GOP/s against 187 GFLOP/s, 2,048-wide products on 2 threads; 256-bit
    ``avx_vnni`` alone does not count, torch does not use it). Where the flags cannot be read (not Linux), torch's
    own CPUID probes answer when torch is already imported; otherwise no."""
    feats = cpu_features()
    if feats:
        return bool(feats & {"avx512_vnni", "amx_int8"})
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and (torch.cpu._is_vnni_supported() or torch.cpu._is_amx_tile_supported()))
    except (AttributeError, RuntimeError):
        return False


def int8_backend() -> str:
    """How int8 codes are scored here: ``"vnni"`` / ``"amx"`` (integer GEMM on those units), ``"fbgemm"`` (fbgemm's
    u8 × s8 product: where there are no such units, see :func:`int_gemm_units`) or ``"float"`` (codes widened to
    float32: no ``torch``, or no fbgemm engine in it); ``EMBEDSTACK_INT8_GEMM=torch`` forces the integer GEMM,
    ``=fbgemm`` fbgemm, ``=off`` the float path."""
    if _torch_int_mm() is None:
        return "fbgemm" if fbgemm_product() is not None else "float"
    feats = cpu_features()
    if "amx_int8" in feats:
        return "amx"
    if "avx512_vnni" in feats or (not feats and int_gemm_units()):  # no flags: torch's probe found the units
        return "vnni"
    return "int-gemm"  # forced by EMBEDSTACK_INT8_GEMM=torch


def _get_pool(size: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < size:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="embedstack-scan")
            _pool_size = size
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def run_workers(units: list[Any], work: Callable[[Any], None], threads: int) -> None:
    """``work(unit)`` for every unit, on ``threads`` workers that take units one at a time from a shared
    queue (dynamic: a core busy with other work simply takes fewer); ``threads == 1`` runs them on the
    calling thread. The scan's workers and :class:`~embedstack.index.MultiVectorIndex`'s blocks both run here."""
    if threads <= 1 or len(units) <= 1:
        for u in units:
            work(u)
        return
    queue = iter(units)
    take = threading.Lock()

    def worker() -> None:
        while True:
            with take:
                u = next(queue, None)
            if u is None:
                return
            work(u)

    for f in [_get_pool(threads).submit(worker) for _ in range(threads)]:
        f.result()


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of several running top-k lists per row, sorted (score descending, then id ascending)."""
    if len(parts) == 1:
        return K.finalize_topk(*parts[0])
    s = np.concatenate([p[0] for p in parts], axis=1)
    i = np.concatenate([p[1] for p in parts], axis=1)
    s, i = K.finalize_topk(s, i)
    return np.ascontiguousarray(s[:, :k]), np.ascontiguousarray(i[:, :k])


def rescore_topk(q: np.ndarray, rows: np.ndarray, cand: np.ndarray, k: int, *, l2: bool = False,
                 offset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rescore first-stage candidates ``cand (nq, c)`` (``-1`` pads) against ``rows`` and keep the best ``k``.

    Scores are ``q · rows[c]`` (+ ``offset`` per query), or with ``l2`` ``-|q - rows[c]|``. Only the
    candidate rows are read, so ``rows`` may be a memory map (float32, float16 or int8).
    """
    pad = cand < 0
    safe = np.where(pad, 0, cand)
    if l2:
        exact = np.empty(cand.shape, dtype=np.float32)
        for a in range(0, len(q), 64):  # 64 queries' candidate rows at a time
            part = safe[a : a + 64]
            picked = np.asarray(rows[part.ravel()], dtype=np.float32).reshape(*part.shape, -1)
            exact[a : a + 64] = -np.linalg.norm(picked - q[a : a + 64, None, :], axis=2)
    else:
        exact = K.gather_dot(q, rows, safe)
        if offset is not None:
            exact = exact + offset[:, None]
    exact = np.where(pad, -np.inf, exact).astype(np.float32)
    s, i = merge_topk([(exact, cand)], k)
    return s[:, :k], i[:, :k]


def scan_topk(score: ScoreFn, nq: int, n: int, k: int, *, dim: int, query_block: int,
              dead: np.ndarray | None = None, threads: int | None = None, uses_torch: bool = False,
              fill: float = -np.inf, transposed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of ``score(qa, qe, s, e)`` (queries ``qa:qe`` × rows ``s:e``) over all ``n`` rows.

    Args:
        score: returns the ``(qe - qa, e - s)`` block of scores (float32, or int32 from integer
            products: the ranking is all that matters here), on the calling thread.
        dim: vector width, to size the blocks and decide whether splitting is worth it.
        query_block: at most this many queries per product.
        dead: sorted internal ids never to return (set to ``fill`` in each block).
        threads: worker threads (None: one per available core; fewer for small scans).
        uses_torch: ``score`` calls torch (its intra-op threads are held at 1 during the scan).
        transposed: ``score`` returns its block laid out rows × queries, ``(e - s, qe - qa)``, float32 with the
            ``-inf`` fill (:func:`~embedstack.index._kernels.topk_block_t` has no integer bound).

    Returns:
        ``(scores float32 (nq, k), ids int64 (nq, k))`` sorted best first; ``-1`` ids pad rows when
        fewer than ``k`` live rows exist.
    """
    if transposed and fill != -np.inf:
        raise ValueError("scan_topk: a transposed (rows x queries) block must be float32 with the -inf fill")
    qb = max(1, min(nq, query_block))
    block_rows = max(256, min(_MAX_BLOCK_ROWS, _BLOCK_SCORES // qb))
    cores = _threads.available_cores() if threads is None else max(1, int(threads))
    work = float(nq) * n * dim
    t = 1 if work < _MIN_SPLIT else min(cores, max(1, -(-n // block_rows)))
    # units: enough for dynamic balance (≥ 4 per thread), whole blocks each
    unit = max(block_rows, -(-n // (4 * t)) // block_rows * block_rows) if t > 1 else n
    units = [(s, min(n, s + unit)) for s in range(0, n, unit)]
    mine = threading.local()  # each worker's running top-k, merged at the end
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    add = threading.Lock()

    def heaps() -> tuple[np.ndarray, np.ndarray]:
        h = getattr(mine, "heaps", None)
        if h is None:
            h = mine.heaps = (np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64))
            with add:
                parts.append(h)
        return h

    def scan_unit(lo_hi: tuple[int, int]) -> None:
        bs, bi = heaps()
        lo, hi = lo_hi
        for s in range(lo, hi, block_rows):
            e = min(hi, s + block_rows)
            cut = None
            if dead is not None and len(dead):
                a, b = np.searchsorted(dead, [s, e])
                cut = dead[a:b] - s if b > a else None
            for qa in range(0, nq, qb):
                qe = min(nq, qa + qb)
                block = score(qa, qe, s, e)
                if transposed:
                    if cut is not None:
                        block[cut, :] = fill
                    K.topk_block_t(block, s, bs, bi, qa)
                    continue
                if cut is not None:
                    block[:, cut] = fill
                K.topk_block(block, s, bs, bi, qa)

    with _threads.serial(), _threads.torch_serial(uses_torch):
        run_workers(units, scan_unit, t)
    return merge_topk(parts or [heaps()], k)
