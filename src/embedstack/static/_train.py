"""The Python side of training: job schedule, learning-rate decay, hogwild threads, progress.

Jobs are runs of whole sentences holding about ``job_words`` kept tokens (gensim uses 10k words).
Every (epoch, job) pair has a fixed global position, so its learning rate (linear decay by global
progress) and its random seed do not depend on thread timing: with one worker a seeded run is
exactly reproducible; with several, the threads update the shared matrices hogwild (lock-free).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedstack._threads import available_cores
from embedstack._validation import check_int
from embedstack.errors import ConfigError

__all__ = ["TrainStats", "ProgressFn", "run_jobs", "run_threads", "job_seed", "default_workers", "check_workers"]

ProgressFn = Callable[[dict[str, Any]], None]
_MASK64 = (1 << 64) - 1


def default_workers() -> int:
    """Worker threads by default: the CPUs this process may use."""
    return available_cores()


def check_workers(owner: object, workers: int | None) -> int:
    if workers is None:
        return default_workers()
    return int(check_int(owner, "workers", workers, low=1))  # type: ignore[arg-type]


def job_seed(seed: int, position: int) -> np.uint64:
    """A well-mixed 64-bit seed for the job at global ``position`` (splitmix64 of seed and position)."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + (position + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return np.uint64(z ^ (z >> 31))


@dataclass
class TrainStats:
    """What a training run did: words processed, time, words/s and the mean loss per epoch."""

    raw_words: int = 0
    effective_words: int = 0
    seconds: float = 0.0
    epoch_loss: list[float] = field(default_factory=list)

    @property
    def words_per_second(self) -> float:
        return self.raw_words / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"raw_words": self.raw_words, "effective_words": self.effective_words,
                "seconds": round(self.seconds, 3), "words_per_second": round(self.words_per_second, 1),
                "epoch_loss": [round(x, 6) for x in self.epoch_loss]}


def run_threads(targets: Sequence[Callable[[threading.Event], None]], *, poll: Callable[[], None] | None = None,
                name: str = "embedstack-train", interval: float = 0.5) -> None:
    """Run each ``target(stop)`` on its own daemon thread (named ``{name}-{i}``) and wait for all of them.

    ``poll`` runs on the calling thread about every ``interval`` seconds and once after the last thread
    ends (progress reports). The first exception raised in a thread sets ``stop``, which the targets check
    between units of work to return early, and is re-raised here once every thread has ended. Ctrl-C, or an
    exception from ``poll``, sets ``stop`` and propagates at once (the threads end at their next check).
    The static trainers' jobs (:func:`run_jobs`) and GloVe's counting threads run here.
    """
    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded(target: Callable[[threading.Event], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target(stop)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(exc)
                stop.set()
        return run

    threads = [threading.Thread(target=guarded(t), daemon=True, name=f"{name}-{i}") for i, t in enumerate(targets)]
    try:
        for t in threads:
            t.start()
        while True:
            alive = [t for t in threads if t.is_alive()]
            if alive:
                alive[0].join(timeout=interval)
            if poll is not None:
                poll()
            if not alive:
                break
    except BaseException:
        stop.set()
        raise
    if errors:
        raise errors[0]


def run_jobs(job: Callable[[int, int, float, np.uint64], tuple[int, float, int]], *, job_sizes: np.ndarray,
             epochs: int, workers: int, alpha: float, min_alpha: float, seed: int, raw_per_kept: float,
             progress: ProgressFn | None = None, decay: bool = True) -> TrainStats:
    """Run ``job(epoch, j, alpha, seed)`` for every job of every epoch on ``workers`` threads.

    Args:
        job: runs one job and returns (effective words, summed loss, loss terms); must release the GIL.
        job_sizes: kept tokens of each job (for the learning-rate schedule and progress).
        raw_per_kept: raw tokens per kept token (progress and words/s are reported on raw words).
        decay: linear decay from ``alpha`` to ``min_alpha`` by global progress (else constant).
    """
    n_jobs = len(job_sizes)
    if n_jobs == 0 or epochs < 1:
        raise ConfigError("nothing to train: the corpus has no sentences left after pruning.")
    sizes = np.asarray(job_sizes, dtype=np.float64)
    before = np.concatenate([[0.0], np.cumsum(sizes)[:-1]])
    total = float(sizes.sum()) * epochs
    state: dict[str, Any] = {"next": 0, "done_kept": 0.0, "effective": 0, "loss": np.zeros(epochs), "terms": np.zeros(epochs)}
    lock = threading.Lock()

    def worker(stop: threading.Event) -> None:
        while True:
            with lock:
                g = state["next"]
                if g >= n_jobs * epochs or stop.is_set():
                    return
                state["next"] = g + 1
            epoch, j = divmod(g, n_jobs)
            frac = (epoch * sizes.sum() + before[j]) / total if decay else 0.0
            a = max(min_alpha, alpha - (alpha - min_alpha) * frac)
            eff, loss, terms = job(epoch, j, a, job_seed(seed, g))
            with lock:
                state["done_kept"] += sizes[j]
                state["effective"] += int(eff)
                state["loss"][epoch] += loss
                state["terms"][epoch] += terms

    def report() -> None:
        with lock:
            done = state["done_kept"]
            ep = min(int(state["next"] // n_jobs), epochs - 1)
            loss = state["loss"][ep] / max(state["terms"][ep], 1)
        el = time.perf_counter() - start
        assert progress is not None
        progress({"done": done * raw_per_kept, "total": total * raw_per_kept, "epoch": ep + 1,
                  "words_per_second": done * raw_per_kept / el if el > 0 else 0.0, "loss": float(loss)})

    start = time.perf_counter()
    run_threads([worker] * workers, poll=report if progress is not None else None)
    seconds = time.perf_counter() - start
    stats = TrainStats(raw_words=int(round(total * raw_per_kept)), effective_words=state["effective"],
                       seconds=seconds,
                       epoch_loss=(state["loss"] / np.maximum(state["terms"], 1)).tolist())
    return stats
