"""Bounded top-k min-heap helpers shared by the numba kernels (BM25 search, vector index merge).

Ranking order everywhere: a higher score is better; at equal scores the smaller id is better. The heap
keeps the worst kept item at the root. Requires numba (the ``fast`` extra); import only from kernel
modules that already require it.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["worse", "sift_down"]


@numba.njit(nogil=True, cache=True, inline="always")
def worse(s1: float, d1: int, s2: float, d2: int) -> bool:
    """True if (s1, d1) ranks below (s2, d2): lower score, or equal score and larger id."""
    return s1 < s2 or (s1 == s2 and d1 > d2)


@numba.njit(nogil=True, cache=True, inline="always")
def sift_down(hs: np.ndarray, hd: np.ndarray, size: int, i: int) -> None:
    """Restore the min-heap (worst at the root) of the first ``size`` items below position ``i``."""
    while True:
        left = 2 * i + 1
        if left >= size:
            return
        w = left
        right = left + 1
        if right < size and worse(hs[right], hd[right], hs[left], hd[left]):
            w = right
        if worse(hs[w], hd[w], hs[i], hd[i]):
            hs[i], hs[w] = hs[w], hs[i]
            hd[i], hd[w] = hd[w], hd[i]
            i = w
        else:
            return
