"""Combining ranked lists: convex combination of normalised scores, and reciprocal rank fusion.

* Convex: ``α · norm(dense) + (1 − α) · norm(sparse)`` where ``norm`` is min-max (scores mapped to
  [0, 1] per query) or z-score (mean 0, standard deviation 1 per query). A document missing from one
  list gets that list's lowest normalised score (it ranked below everything retrieved there).
* RRF (Cormack et al., 2009): ``Σ_lists w / (k + rank)`` with ranks starting at 1 and ``k = 60``.

Each fused :class:`~embedstack.base.Hit` keeps every input's raw score in ``stages`` (missing inputs
are absent) plus the fused score under ``"fusion"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from embedstack._validation import check_choice, check_float, check_int
from embedstack.base import Hit
from embedstack.errors import ConfigError

__all__ = ["normalize", "convex_fusion", "reciprocal_rank_fusion", "ConvexFusion", "RRF", "Fusion"]


def normalize(scores: np.ndarray, method: str = "minmax") -> np.ndarray:
    """Normalise one list of scores: ``"minmax"`` → [0, 1], ``"zscore"`` → mean 0 / std 1.

    Constant lists map to all ones (min-max) or all zeros (z-score).
    """
    check_choice("normalize", "method", method, ("minmax", "zscore"))
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    if method == "minmax":
        lo, hi = s.min(), s.max()
        return np.ones_like(s) if hi == lo else (s - lo) / (hi - lo)
    sd = s.std()
    return np.zeros_like(s) if sd == 0 else (s - s.mean()) / sd


def _merge(runs: Mapping[str, Sequence[Hit]], fused: dict[str, float], k: int) -> list[Hit]:
    first: dict[str, Hit] = {}
    stages: dict[str, dict[str, float]] = {}
    for name, hits in runs.items():
        for h in hits:
            first.setdefault(h.id, h)
            stages.setdefault(h.id, {})[name] = h.score
    order = sorted(fused, key=lambda d: (-fused[d], d))[:k]
    return [Hit(d, float(fused[d]), {**stages[d], "fusion": float(fused[d])}, first[d].text, first[d].metadata)
            for d in order]


def convex_fusion(runs: Mapping[str, Sequence[Hit]], weights: Mapping[str, float], *, k: int = 10,
                  normalization: str = "minmax") -> list[Hit]:
    """Weighted sum of per-list normalised scores (weights usually ``{dense: α, sparse: 1 − α}``)."""
    check_choice("convex_fusion", "normalization", normalization, ("minmax", "zscore"))
    unknown = set(weights) - set(runs)
    if unknown:
        raise ConfigError(f"fusion weights name lists {sorted(unknown)} that are not among the inputs {sorted(runs)}.")
    fused: dict[str, float] = {}
    norm_of: dict[str, dict[str, float]] = {}
    floor: dict[str, float] = {}
    for name, hits in runs.items():
        vals = normalize(np.array([h.score for h in hits]), normalization)
        norm_of[name] = {h.id: float(v) for h, v in zip(hits, vals, strict=True)}
        floor[name] = float(vals.min()) if len(vals) else 0.0
    docs = {h.id for hits in runs.values() for h in hits}
    for d in docs:
        fused[d] = sum(w * norm_of[name].get(d, floor[name]) for name, w in weights.items())
    return _merge(runs, fused, k)


def reciprocal_rank_fusion(runs: Mapping[str, Sequence[Hit]], *, k: int = 10, rrf_k: int = 60,
                           weights: Mapping[str, float] | None = None) -> list[Hit]:
    """Reciprocal rank fusion: ``Σ w / (rrf_k + rank)`` over the lists a document appears in."""
    fused: dict[str, float] = {}
    for name, hits in runs.items():
        w = 1.0 if weights is None else float(weights.get(name, 0.0))
        for rank, h in enumerate(hits, start=1):
            fused[h.id] = fused.get(h.id, 0.0) + w / (rrf_k + rank)
    return _merge(runs, fused, k)


class Fusion:
    """Base of fusion strategies: ``fuse(runs, k) -> list[Hit]``."""

    def fuse(self, runs: Mapping[str, Sequence[Hit]], k: int = 10) -> list[Hit]:
        raise NotImplementedError


class ConvexFusion(Fusion):
    """``α · norm(first list) + (1 − α) · norm(second list)``, or explicit per-list weights.

    Args:
        alpha: weight of the list named ``primary`` (the rest share ``1 − alpha`` equally).
        normalization: ``"minmax"`` or ``"zscore"``.
        primary: name of the list weighted by ``alpha`` (default: the first list given).

    Example:
        >>> a = [Hit("x", 3.0), Hit("y", 1.0)]
        >>> b = [Hit("y", 10.0), Hit("z", 5.0)]
        >>> [h.id for h in ConvexFusion(alpha=0.5).fuse({"dense": a, "sparse": b}, k=3)]
        ['x', 'y', 'z']
    """

    def __init__(self, alpha: float = 0.5, *, normalization: str = "minmax", primary: str | None = None) -> None:
        self.alpha = check_float(self, "alpha", alpha, low=0.0, high=1.0)
        self.normalization = check_choice(self, "normalization", normalization, ("minmax", "zscore"))
        self.primary = primary

    def fuse(self, runs: Mapping[str, Sequence[Hit]], k: int = 10) -> list[Hit]:
        names = list(runs)
        if not names:
            return []
        primary = self.primary or names[0]
        if primary not in runs:
            raise ConfigError(f"ConvexFusion primary list {primary!r} is not among the inputs {names}.")
        others = [n for n in names if n != primary]
        weights = {primary: self.alpha if others else 1.0}
        weights.update({n: (1.0 - self.alpha) / len(others) for n in others})
        return convex_fusion(runs, weights, k=k, normalization=self.normalization)

    def __repr__(self) -> str:
        return f"ConvexFusion(alpha={self.alpha}, normalization={self.normalization!r})"


class RRF(Fusion):
    """Reciprocal rank fusion with constant ``k`` (60 by default).

    Example:
        >>> a = [Hit("x", 3.0), Hit("y", 1.0)]
        >>> b = [Hit("y", 10.0), Hit("z", 5.0)]
        >>> [h.id for h in RRF().fuse({"dense": a, "sparse": b}, k=3)]
        ['y', 'x', 'z']
    """

    def __init__(self, k: int = 60, *, weights: Mapping[str, float] | None = None) -> None:
        self.k = check_int(self, "k", k, low=0)
        self.weights = dict(weights) if weights is not None else None

    def fuse(self, runs: Mapping[str, Sequence[Hit]], k: int = 10) -> list[Hit]:
        return reciprocal_rank_fusion(runs, k=k, rrf_k=int(self.k), weights=self.weights)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"RRF(k={self.k})"
