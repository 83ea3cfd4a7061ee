"""One thread budget for small work: a single query runs its BLAS calls and numba kernels on the
calling thread.

Why: on a machine with few cores, three thread pools share them: torch's OpenMP threads (encoding),
OpenBLAS's pthreads (numpy matrix products in index search) and numba's workers (top-k kernels).
After a call each pool keeps its workers spinning for a while (OpenBLAS for up to ~0.1 s), so the
next stage of the same query finds its cores busy: encode + search of one query cost about 25% more
than the two measured apart. Work on one query is too small to gain from several threads anyway, so
:func:`serial` runs BLAS and numba single-threaded for its duration (torch keeps its own setting: a
transformer forward pass does gain from its threads) and restores the previous settings afterwards.
The switch costs a few tens of microseconds.

Example:
    >>> import numpy as np
    >>> with serial():
    ...     float((np.ones((1, 4)) @ np.ones((4, 3))).sum())
    12.0
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["serial", "for_batch", "SMALL_BATCH"]

#: at most this many queries count as small work (run on the calling thread)
SMALL_BATCH = 4

_lock = threading.Lock()
_blas: list[Any] | None = None  # threadpoolctl controllers of the BLAS libraries, found once
_depth = 0  # serial() blocks open in any thread
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


@contextlib.contextmanager
def serial() -> Iterator[None]:
    """Run BLAS calls and numba parallel kernels on the calling thread inside the block."""
    global _depth, _restore
    libs = _blas_controllers()
    if libs:
        with _lock:  # the BLAS setting is process-wide: the first block in sets it, the last one out restores
            if _depth == 0:
                _restore = []
                for lib in libs:
                    n = lib.get_num_threads()
                    if n and n > 1:
                        lib.set_num_threads(1)
                        _restore.append((lib, n))
            _depth += 1
    numba = sys.modules.get("numba")  # only when it is in use already: never import it here
    nb_before = None
    if numba is not None:
        try:
            nb_before = numba.get_num_threads()
            if nb_before > 1:
                numba.set_num_threads(1)  # per calling thread in numba
            else:
                nb_before = None
        except Exception:  # noqa: BLE001 - a numba without a threading layer: nothing to limit
            nb_before = None
    try:
        yield
    finally:
        if nb_before is not None:
            numba.set_num_threads(nb_before)
        if libs:
            with _lock:
                _depth -= 1
                if _depth == 0:
                    for lib, n in _restore:
                        lib.set_num_threads(n)
                    _restore = []


def for_batch(n: int) -> contextlib.AbstractContextManager[None]:
    """:func:`serial` for a batch of at most :data:`SMALL_BATCH` queries; a no-op for larger batches."""
    return serial() if n <= SMALL_BATCH else contextlib.nullcontext()
