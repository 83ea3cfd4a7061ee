"""Helpers shared by the index tests (the ``hp`` fixture): clustered data, brute-force truth, recall."""

from __future__ import annotations

import types

import numpy as np
import pytest


def clustered(n: int, dim: int, *, n_clusters: int = 20, noise: float = 0.35, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    lab = rng.integers(0, n_clusters, n)
    return (centers[lab] + noise * rng.standard_normal((n, dim))).astype(np.float32)


def exact_topk(q: np.ndarray, x: np.ndarray, k: int, metric: str = "cosine") -> np.ndarray:
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        s = q @ x.T
    elif metric == "ip":
        s = q @ x.T
    else:
        s = -((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def recall(hits: list, truth: np.ndarray, ids: list[str]) -> float:
    got = [{h.id for h in row} for row in hits]
    return float(np.mean([len(g & {ids[j] for j in t}) / len(t) for g, t in zip(got, truth, strict=True)]))


def ids_of(n: int) -> list[str]:
    return [f"d{i}" for i in range(n)]


@pytest.fixture
def hp() -> types.SimpleNamespace:
    return types.SimpleNamespace(clustered=clustered, exact_topk=exact_topk, recall=recall, ids_of=ids_of)
