"""Indexes fold buffered adds in lazily on the first search: concurrent readers must all see the whole index."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from embedstack.index import FlatIndex, MultiVectorIndex, SparseIndex


def _race(idx: Any, add: Callable[[int], None], query: Any, rounds: int = 15, threads: int = 8,
          exhaustive: bool = True) -> None:
    """After each add, ``threads`` readers start together; each must get what one reader alone gets
    afterwards (and, for an exhaustive search, every row added so far)."""
    n = 0
    for r in range(rounds):
        add(r)
        n = len(idx)
        barrier = threading.Barrier(threads)
        seen: list[Any] = []

        def reader(barrier: threading.Barrier = barrier, n: int = n, seen: list[Any] = seen) -> None:
            barrier.wait()
            try:
                hits = idx.search(query, k=n)[0]
                seen.append(sorted(h.id for h in hits))
            except Exception as exc:  # noqa: BLE001 - the failure is the test's subject
                seen.append(exc)

        workers = [threading.Thread(target=reader) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        errors = [s for s in seen if isinstance(s, Exception)]
        assert not errors, f"round {r}: {errors[0]!r}"
        alone = sorted(h.id for h in idx.search(query, k=n)[0])
        assert all(s == alone for s in seen), f"round {r}: concurrent readers disagree with a lone one"
        if exhaustive:
            assert len(alone) == n


@pytest.mark.parametrize("quantization", ["none", "fp16", "int8", "binary"])
def test_flat_concurrent_readers_after_add(quantization: str) -> None:
    rng = np.random.default_rng(0)
    idx = FlatIndex(64, quantization=quantization, metric="cosine")

    def add(r: int) -> None:
        idx.add(rng.standard_normal((4000, 64)).astype(np.float32), [f"r{r}-{i}" for i in range(4000)])

    _race(idx, add, rng.standard_normal((1, 64)).astype(np.float32), rounds=6)


def test_sparse_concurrent_readers_after_add() -> None:
    rng = np.random.default_rng(1)
    idx = SparseIndex(5000)

    def add(r: int) -> None:
        m = sp.random(2000, 5000, density=0.01, format="csr", random_state=rng, dtype=np.float32)
        m.data[:] = 1.0
        m = sp.csr_array(m + sp.csr_array((np.ones(2000, np.float32), (np.arange(2000), np.zeros(2000, int))),
                                          shape=(2000, 5000)))  # every doc has term 0: the query reaches all
        idx.add(m, [f"r{r}-{i}" for i in range(2000)])

    _race(idx, add, sp.csr_array((np.ones(1, np.float32), ([0], [0])), shape=(1, 5000)), rounds=8)


def test_multivector_concurrent_readers_after_add() -> None:
    rng = np.random.default_rng(2)
    idx = MultiVectorIndex(32)

    def add(r: int) -> None:
        docs = [rng.standard_normal((int(rng.integers(5, 30)), 32)).astype(np.float32) for _ in range(300)]
        idx.add(docs, [f"r{r}-{i}" for i in range(300)])

    _race(idx, add, [rng.standard_normal((4, 32)).astype(np.float32)], rounds=8,
          exhaustive=False)  # candidate generation: not every document is scored
