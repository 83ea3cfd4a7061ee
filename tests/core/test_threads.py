"""One query runs BLAS and numba on the calling thread (no thread pools left spinning between stages)."""

from __future__ import annotations

import numpy as np
import pytest

threadpoolctl = pytest.importorskip("threadpoolctl")

from embedstack import _threads  # noqa: E402


def _blas_threads() -> list[int]:
    return [d["num_threads"] for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"]


@pytest.fixture
def two_blas_threads():
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        if not _blas_threads() or max(_blas_threads()) < 2:
            pytest.skip("this BLAS cannot run 2 threads here")
        yield


def test_serial_limits_and_restores(two_blas_threads) -> None:
    before = _blas_threads()
    with _threads.serial():
        assert set(_blas_threads()) == {1}
        with _threads.serial():  # nested (or concurrent) blocks: the last one out restores
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == before


def test_serial_limits_numba_when_in_use(two_blas_threads) -> None:
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here")
    numba.set_num_threads(2)
    with _threads.serial():
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == 2


class _Recorder:
    """A DenseEncoder that records how many BLAS threads it sees."""

    dim = 3

    def __init__(self) -> None:
        self.seen: list[list[int]] = []

    def encode(self, texts, *, role="document", batch_size=64):
        self.seen.append(_blas_threads())
        return np.stack([np.eye(3, dtype=np.float32)["abc".index(t[0])] for t in texts])


def test_one_query_search_runs_serial_and_batches_keep_their_threads(two_blas_threads) -> None:
    from embedstack.index import FlatIndex
    from embedstack.retrieval.pipeline import Pipeline, Retriever

    enc = _Recorder()
    idx = FlatIndex(3).add(enc.encode(["apple", "banana", "cherry"]), ["a", "b", "c"])
    enc.seen.clear()
    pipe = Pipeline([Retriever("dense", enc, idx)])
    assert pipe.search("bagel", k=1).hits[0].id == "b"
    assert set(enc.seen[-1]) == {1}  # inside the one-query block
    assert max(_blas_threads()) == 2  # restored afterwards
    pipe.search_batch(["apple"] * (_threads.SMALL_BATCH + 1), k=1)
    assert max(enc.seen[-1]) == 2  # a real batch keeps the BLAS threads


def test_on_wide_thread_runs_everything_on_one_thread() -> None:
    """Work on several intra-op threads goes to one thread per process (one OpenMP team: see wide_thread)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    def name() -> str:
        return threading.current_thread().name

    with ThreadPoolExecutor(3) as pool:  # from several threads at once: still one wide thread
        names = set(pool.map(lambda _: _threads.on_wide_thread(name), range(12)))
    assert len(names) == 1 and names.pop().startswith("embedstack-wide")
    assert _threads.wide_thread() is _threads.wide_thread()
    # nested: runs inline (a wide-thread job waiting on the wide thread would wait forever)
    assert _threads.on_wide_thread(lambda: _threads.on_wide_thread(name)).startswith("embedstack-wide")

    def boom(x: int) -> int:
        raise ValueError(f"bad {x}")

    with pytest.raises(ValueError, match="bad 3"):  # the caller gets the error itself
        _threads.on_wide_thread(boom, 3)
