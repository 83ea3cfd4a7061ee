"""One thread budget for small work: a single query runs its BLAS calls and numba kernels on the
calling thread.

Why: on a machine with few cores, three thread pools share them: torch's OpenMP threads (encoding),
OpenBLAS's pthreads (numpy matrix products in index search) and numba's workers (top-k kernels).
After a call each pool keeps its workers spinning for a while (OpenBLAS for up to ~0.1 s), so the
next stage of the same query finds its cores busy: encode + search of one query cost about 25% more
than the two measured apart. Work on one query is too small to gain from several threads anyway, so
:func:`serial` runs BLAS and numba single-threaded for its duration (torch keeps its own setting: a
transformer forward pass does gain from its threads) and restores the previous settings afterwards.
The switch costs a few tens of microseconds. :func:`torch_serial` does the same for torch's intra-op
threads where the caller's own threads are the parallelism (the exact scan's int8 products), :func:`faiss_threads`
sets faiss's OpenMP threads for one call (HNSWIndex with ``backend="faiss"``), and
:func:`available_cores` is the one answer to "how many cores may this process use" and
:func:`cpu_features` to "which instructions does this CPU have". :func:`wide_thread` is the one thread of a
process that runs torch work on several intra-op threads when other threads of it use torch too (a server). BLAS and numba thread counts are process-wide: while a
``serial()`` block runs, large matrix products started by other threads of the same process (a server
indexing while it answers a query) run single-threaded too, until the block ends.

Example:
    >>> import numpy as np
    >>> with serial():
    ...     float((np.ones((1, 4)) @ np.ones((4, 3))).sum())
    12.0
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

__all__ = ["serial", "for_batch", "torch_serial", "faiss_threads", "available_cores", "wide_thread", "on_wide_thread",
           "SMALL_BATCH", "SMALL_TOKENS"]

#: at most this many queries count as small work (run on the calling thread)
SMALL_BATCH = 4
#: ... and at most this many tokens together (four abstracts are not small: they use every thread)
SMALL_TOKENS = 128

_lock = threading.Lock()
_blas: list[Any] | None = None  # threadpoolctl controllers of the BLAS libraries, found once
_local = threading.local()  # .depth: serial() blocks open on this thread
_depth = 0  # threads inside a serial() block
_restore: list[tuple[Any, int]] = []  # (BLAS library, its thread count before the first open block)


def _blas_controllers() -> list[Any]:
    global _blas
    if _blas is None:
        with _lock:
            if _blas is None:
                try:
                    from threadpoolctl import ThreadpoolController
                except ImportError:  # without threadpoolctl the BLAS keeps its threads
                    _blas = []
                else:
                    _blas = list(ThreadpoolController().select(user_api="blas").lib_controllers)
    return _blas


class _Serial:
    """The context manager behind :func:`serial` (a class: cheaper than a generator per query)."""

    __slots__ = ("numba_before",)

    def __enter__(self) -> None:
        global _depth, _restore
        depth = getattr(_local, "depth", 0)
        _local.depth = depth + 1
        self.numba_before = None
        if depth:  # already inside a block on this thread: nothing to switch
            return
        libs = _blas_controllers()
        if libs:
            with _lock:  # the BLAS setting is process-wide: the first thread in sets it, the last one out restores
                if _depth == 0:
                    _restore = []
                    for lib in libs:
                        n = lib.get_num_threads()
                        if n and n > 1:
                            lib.set_num_threads(1)
                            _restore.append((lib, n))
                _depth += 1
        numba = sys.modules.get("numba")  # only when it is in use already: never import it here
        if numba is not None:
            try:
                n = numba.get_num_threads()
                if n > 1:
                    numba.set_num_threads(1)  # per calling thread in numba
                    self.numba_before = n
            except Exception:  # noqa: BLE001 - a numba without a threading layer: nothing to limit
                pass

    def __exit__(self, *exc: object) -> None:
        global _depth, _restore
        _local.depth -= 1
        if _local.depth:
            return
        if self.numba_before is not None:
            sys.modules["numba"].set_num_threads(self.numba_before)
        if _blas:
            with _lock:
                _depth -= 1
                if _depth == 0:
                    for lib, n in _restore:
                        lib.set_num_threads(n)
                    _restore = []


def serial() -> contextlib.AbstractContextManager[None]:
    """Run BLAS calls and numba parallel kernels on the calling thread inside the block.

    Nested blocks (a pipeline's search calling an index's search) switch nothing more; blocks in
    several threads at once share one BLAS setting, restored when the last one ends.
    """
    return _Serial()


def for_batch(n: int) -> contextlib.AbstractContextManager[None]:
    """:func:`serial` for a batch of at most :data:`SMALL_BATCH` queries; a no-op for larger batches."""
    return serial() if n <= SMALL_BATCH else contextlib.nullcontext()


def available_cores() -> int:
    """Cores this process may run on (CPU affinity, as a container or ``taskset`` sets it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


_wide_lock = threading.Lock()
_wide: ThreadPoolExecutor | None = None
_WIDE_NAME = "embedstack-wide"


def wide_thread() -> ThreadPoolExecutor:
    """The one thread of this process for torch work on several intra-op threads, made on first use.

    Why: libgomp (torch's OpenMP) keeps a team of worker threads for every thread that has started a parallel
    region, for as long as that thread lives, and once the threads of all teams outnumber the CPUs it stops
    spinning between regions: every region then starts with futex wake-ups. A server whose model threads took
    turns at running a lone request on both cores made two such teams on a 2-core machine, and every product
    after that ran slower on two threads than on one (a 240 x 384 x 1536 bf16 product: 260 us, against 125 us
    with a single team and 231 us on one thread; ``benchmarks/wide_thread.py``). Work that wants several intra-op threads runs here, so the
    process has one team; work on one intra-op thread makes none and may run anywhere.
    """
    global _wide
    if _wide is None:
        with _wide_lock:
            if _wide is None:
                _wide = ThreadPoolExecutor(1, thread_name_prefix=_WIDE_NAME)
    return _wide


def on_wide_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on :func:`wide_thread` (inline when called there), its result or its error."""
    if threading.current_thread().name.startswith(_WIDE_NAME):
        return fn(*args, **kwargs)
    return wide_thread().submit(fn, *args, **kwargs).result()


@lru_cache(maxsize=1)
def cpu_features() -> frozenset[str]:
    """The CPU's instruction-set flags that matter to the kernels (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    wanted = {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx_vnni", "avx512_bf16",
              "amx_bf16", "amx_int8", "avx512_vpopcntdq", "avx512_fp16", "avx512vbmi"}
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(set(line.split(":", 1)[1].split()) & wanted)
    except OSError:  # pragma: no cover - not Linux
        pass
    return frozenset()


_torch_lock = threading.Lock()
_torch_depth = 0  # threads inside a torch_serial() block
_torch_before = 0  # torch's intra-op threads before the first open block


@contextlib.contextmanager
def torch_serial(active: bool = True) -> Iterator[None]:
    """torch's intra-op threads at 1 inside the block (process-wide, restored when the last block ends);
    a no-op when ``active`` is false or torch is not imported."""
    global _torch_depth, _torch_before
    torch = sys.modules.get("torch") if active else None
    if torch is None:
        yield
        return
    with _torch_lock:
        if _torch_depth == 0:
            _torch_before = torch.get_num_threads()
            if _torch_before > 1:
                torch.set_num_threads(1)
        _torch_depth += 1
    try:
        yield
    finally:
        with _torch_lock:
            _torch_depth -= 1
            if _torch_depth == 0 and _torch_before > 1:
                torch.set_num_threads(_torch_before)


@contextlib.contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """faiss's OpenMP threads at ``n`` for the faiss calls this thread makes inside the block (0: faiss's
    own setting), restored after. libgomp keeps the setting per calling thread, so concurrent searches
    with different budgets do not change each other's."""
    faiss = sys.modules.get("faiss") if n else None
    if faiss is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
