"""Dropout keep-masks from a counter-based hash, on every core (the ``fast`` extra: numba).

torch draws dropout masks from one Mersenne Twister, element after element on one thread: training
MiniLM on 128-token pairs spent 18% of each step there (the attention-probability masks alone are
B x H x T x T elements per layer). Here element ``i`` of a mask is kept when the top 24 bits of
``splitmix64(seed + i * golden)`` reach ``round(p * 2**24)``: a stateless hash, so the elements are
computed in parallel and in any order, and a mask depends only on ``seed``, which comes from torch's
generator (``torch.manual_seed`` still makes training reproducible). Each element is dropped with
probability ``round(p * 2**24) / 2**24``, within 3e-8 of ``p``. splitmix64 is the output function of
Steele, Lea & Flood's SplitMix (2014), which passes BigCrush as a generator.
"""

from __future__ import annotations

import numpy as np

from embedstack._extras import require

require("numba", "fast", "the parallel dropout-mask kernel")
import numba  # noqa: E402

__all__ = ["keep_mask", "THRESHOLD_BITS"]

THRESHOLD_BITS = 24
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@numba.njit(parallel=True, nogil=True, cache=True)
def _fill(out: np.ndarray, seed: np.uint64, threshold: np.uint64) -> None:
    n = out.size
    for i in numba.prange(n):
        z = seed + np.uint64(i) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
        out[i] = (z >> np.uint64(64 - THRESHOLD_BITS)) >= threshold


def keep_mask(n: int, p: float, seed: int) -> np.ndarray:
    """A bool array of ``n`` elements, each False (dropped) with probability ``p`` (to 3e-8)."""
    out = np.empty(int(n), dtype=np.bool_)
    _fill(out, np.uint64(seed & 0xFFFFFFFFFFFFFFFF), np.uint64(round(p * (1 << THRESHOLD_BITS))))
    return out
