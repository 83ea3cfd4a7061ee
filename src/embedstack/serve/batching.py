"""Dynamic micro-batching and the query-embedding cache.

Every model call of the service goes through one :class:`Batcher` per model: request handlers (and the
search pipeline's threads) submit their inputs and wait; one worker task merges what is queued into a
batch bounded by a token budget, waits at most ``max_wait`` for more while the server is under load, and
runs the model in the model's own threads, so the event loop keeps accepting requests meanwhile. A queue
holding more than ``max_queue`` inputs refuses new work with :class:`QueueFull` (503 + ``Retry-After``).

Threads: a model gets a budget of CPU threads (the cores). A batch that leaves nothing queued behind it
runs on all that is free (one query: lowest latency); while more work waits, each batch takes one thread
and the next starts beside it. On 2 cores under load two one-thread batches beat one two-thread batch:
the event loop and the clients need CPU too, and torch's two-thread barriers stall whenever another thread
takes a core (a batch of 16 short sentences took 81 ms with two threads in the server against 40 ms alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from embedstack._threads import wide_thread
from embedstack.errors import EmbedstackError

__all__ = ["Batcher", "QueueFull", "QueryCache", "DEFAULT_MAX_BATCH_TOKENS"]

# a merged batch's token budget (``Limits.max_batch_tokens``); see its docstring for the measurement behind it
DEFAULT_MAX_BATCH_TOKENS = 4096


class QueueFull(EmbedstackError, RuntimeError):
    """The model's queue is full: retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float, model: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.model = model


@dataclass
class _Pending:
    inputs: list[Any]
    tokens: int
    group: Hashable
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Merge concurrent requests for one model into batches.

    Args:
        name: the model's served name (metrics label).
        run: ``run(inputs, group, threads) -> result`` for one merged batch, called in one of the model's
            threads, using ``threads`` CPU threads; the result must slice by rows (``result[a:b]``: arrays,
            sparse rows, lists).
        max_batch_tokens: a batch stops growing past this many tokens (one request may exceed it alone).
        max_wait_s: how long the first request of a batch waits for company, only while the previous batch
            merged several requests (a lone client never waits); up to 5% of the mean batch time (50 ms at
            most) when batches are long.
        max_queue: inputs waiting at most; more are refused with :class:`QueueFull`.
        observe: optional ``observe(n_inputs, n_tokens, n_requests, seconds)`` after each batch (metrics).
        threads: the CPU threads this model's batches share (see the module docstring); 1 runs one batch at a time.
    """

    def __init__(self, name: str, run: Callable[[list[Any], Hashable, int], Any], *, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
                 max_wait_s: float = 0.002, max_queue: int = 4096,
                 observe: Callable[[int, int, int, float], None] | None = None, threads: int = 1) -> None:
        self.name = name
        self._run = run
        self.max_batch_tokens = int(max_batch_tokens)
        self.max_wait_s = float(max_wait_s)
        self.max_queue = int(max_queue)
        self._observe = observe
        self._queue: deque[_Pending] = deque()
        self._queued_inputs = 0
        self.threads = max(1, int(threads))
        self._free = self.threads  # threads not taken by a running batch
        self._running: set[asyncio.Task[None]] = set()
        self._last_merged = 1
        self._avg_batch_s = 0.05
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix=f"model-{name}")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._worker(), name=f"batcher-{self.name}")

    async def stop(self, drain_s: float = 30.0) -> None:
        """Finish what is queued (up to ``drain_s`` seconds), then stop the worker and the model thread."""
        deadline = time.monotonic() + drain_s
        while (self._queue or self._running) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for p in self._queue:
            if not p.future.done():
                p.future.set_exception(QueueFull(f"model {self.name!r} is shutting down.", retry_after=1.0))
        self._queue.clear()
        self._executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        """Inputs waiting (not counting the batch being computed)."""
        return self._queued_inputs

    # ------------------------------------------------------------------ submitting
    async def submit(self, inputs: Sequence[Any], *, tokens: int, group: Hashable = None) -> Any:
        """Queue ``inputs`` (one request's) and wait for their rows of the merged batch's result."""
        if self._loop is None or self._wake is None:
            raise RuntimeError(f"batcher {self.name!r} is not started.")
        n = len(inputs)
        if n == 0:
            return self._run([], group, 1)
        if self._queued_inputs + n > self.max_queue and self._queued_inputs > 0:
            retry = max(1.0, round(self._avg_batch_s * (1 + self._queued_inputs / max(1, n)), 1))
            raise QueueFull(f"model {self.name!r} has {self._queued_inputs} inputs queued (limit {self.max_queue}); "
                            f"retry in {retry:g} s.", retry_after=retry, model=self.name)
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._queue.append(_Pending(list(inputs), int(tokens), group, fut))
        self._queued_inputs += n
        self._wake.set()
        return await fut

    def submit_threadsafe(self, inputs: Sequence[Any], *, tokens: int, group: Hashable = None,
                          timeout: float | None = None) -> Any:
        """:meth:`submit` from another thread (a search pipeline running in the thread pool)."""
        if self._loop is None:
            raise RuntimeError(f"batcher {self.name!r} is not started.")
        return asyncio.run_coroutine_threadsafe(self.submit(inputs, tokens=tokens, group=group),
                                                self._loop).result(timeout)

    # ------------------------------------------------------------------ the worker
    def _take(self, max_requests: int | None = None) -> list[_Pending]:
        first = self._queue.popleft()
        batch, tokens = [first], first.tokens
        rest: deque[_Pending] = deque()
        while self._queue:
            p = self._queue.popleft()
            if p.group == first.group and tokens + p.tokens <= self.max_batch_tokens and \
                    (max_requests is None or len(batch) < max_requests):
                batch.append(p)
                tokens += p.tokens
            else:
                rest.append(p)
        self._queue.extendleft(reversed(rest))
        return batch

    async def _worker(self) -> None:
        assert self._wake is not None and self._loop is not None
        while True:
            if not self._queue or self._free < 1:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._last_merged > 1 and self.max_wait_s > 0:
                await self._gather()
            # with several threads free and several requests waiting, each batch takes its share, so that
            # the batches run side by side (one batch of everything would leave the other threads idle)
            waiting = len(self._queue)
            share = -(-waiting // self._free) if self._free > 1 and waiting > 1 else None
            batch = [p for p in self._take(share) if not p.future.done()]  # a client that went away is skipped
            self._queued_inputs = sum(len(p.inputs) for p in self._queue)
            if not batch:
                continue
            # under load (work left queued, or the last batch merged several requests): one thread, and the
            # next batch beside it; a lone request on an idle server: every free thread
            threads = 1 if self._queue or self._last_merged > 1 else self._free
            self._free -= threads
            task = self._loop.create_task(self._execute(batch, threads))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _gather(self) -> None:
        """Under load, let the next batch fill before it starts: wait until as many requests are queued as the
        last batch answered (closed-loop clients send their next request as soon as they have their answer),
        or the token budget is reached, or up to a quarter of a batch's time has passed (at least
        ``max_wait_s``, at most 50 ms). Without it a freed thread started on the one or two requests already
        back: 32 clients sending short sentences gave 100 batches of one input in 3,000 requests, each costing
        nearly what a batch of 16 costs."""
        assert self._wake is not None and self._loop is not None
        deadline = self._loop.time() + max(self.max_wait_s, min(0.25 * self._avg_batch_s, 0.05))
        while len(self._queue) < self._last_merged and sum(p.tokens for p in self._queue) < self.max_batch_tokens:
            left = deadline - self._loop.time()
            if left <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)

    async def _execute(self, batch: list[_Pending], threads: int) -> None:
        assert self._loop is not None and self._wake is not None
        inputs = [x for p in batch for x in p.inputs]
        t0 = time.perf_counter()
        try:
            # a batch on several threads runs on the process's one wide thread (one OpenMP team: see _threads)
            executor = wide_thread() if threads > 1 else self._executor
            result = await self._loop.run_in_executor(executor, self._run, inputs, batch[0].group, threads)
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request, which reports it
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        finally:
            self._free += threads
            self._wake.set()
        dt = time.perf_counter() - t0
        self._avg_batch_s = 0.8 * self._avg_batch_s + 0.2 * dt
        self._last_merged = len(batch)
        at = 0
        for p in batch:
            k = len(p.inputs)
            if not p.future.done():
                p.future.set_result(result[at:at + k])
            at += k
        if self._observe is not None:
            self._observe(len(inputs), sum(p.tokens for p in batch), len(batch), dt)


class QueryCache:
    """An LRU cache with a time-to-live, keyed by (model version, role, text); thread-safe.

    Args:
        size: entries kept (0 disables the cache).
        ttl_s: seconds an entry stays valid.
    """

    def __init__(self, size: int = 10000, ttl_s: float = 3600.0,
                 on_lookup: Callable[[str, int, int], None] | None = None) -> None:
        self.size = int(size)
        self.ttl_s = float(ttl_s)
        self._data: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._on_lookup = on_lookup

    def get_many(self, model: str, keys: Sequence[Hashable]) -> list[Any]:
        """Cached values (``None`` where missing or expired) for ``keys`` of one model."""
        if self.size == 0:
            return [None] * len(keys)
        now = time.monotonic()
        out: list[Any] = []
        with self._lock:
            for key in keys:
                item = self._data.get(key)
                if item is not None and item[0] > now:
                    self._data.move_to_end(key)
                    out.append(item[1])
                else:
                    if item is not None:
                        del self._data[key]
                    out.append(None)
            hits = sum(v is not None for v in out)
            self.hits += hits
            self.misses += len(keys) - hits
        if self._on_lookup is not None:
            self._on_lookup(model, hits, len(keys) - hits)
        return out

    def put_many(self, items: Sequence[tuple[Hashable, Any]]) -> None:
        if self.size == 0:
            return
        expires = time.monotonic() + self.ttl_s
        with self._lock:
            for key, value in items:
                self._data[key] = (expires, value)
                self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
