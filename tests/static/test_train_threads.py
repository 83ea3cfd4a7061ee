"""run_threads: the one way the static trainers run their threads (progress, stop, errors)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from embedstack.static._train import run_jobs, run_threads


def test_poll_runs_after_the_last_thread_and_results_are_kept():
    out, polls = [], []

    def target(i):
        return lambda stop: out.append(i)

    run_threads([target(i) for i in range(3)], poll=lambda: polls.append(len(out)), name="t-test")
    assert sorted(out) == [0, 1, 2]
    assert polls and polls[-1] == 3  # the last report sees every thread's work


def test_an_error_in_one_thread_stops_the_others_and_is_raised_in_the_caller():
    laps = []

    def looper(stop):
        while not stop.is_set():
            laps.append(1)
            time.sleep(0.001)

    def failing(stop):
        time.sleep(0.02)
        raise ValueError("bad part")

    with pytest.raises(ValueError, match="bad part"):
        run_threads([looper, failing])
    assert laps  # the looper ran, and returned once stop was set (else run_threads would not return)


def test_a_raising_poll_stops_the_threads_at_their_next_check():
    seen = threading.Event()
    ended = threading.Event()

    def looper(stop):
        while not stop.is_set():
            seen.set()
            time.sleep(0.001)
        ended.set()

    def poll():
        seen.wait(5)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_threads([looper], poll=poll, interval=0.01)
    assert ended.wait(5)


def test_run_jobs_stops_taking_jobs_when_progress_raises():
    calls = []

    def job(epoch, j, alpha, seed):
        calls.append((epoch, j))
        time.sleep(0.005)
        return 1, 0.0, 1

    def progress(info):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_jobs(job, job_sizes=np.ones(200), epochs=5, workers=2, alpha=0.025, min_alpha=1e-4, seed=1,
                 raw_per_kept=1.0, progress=progress)
    time.sleep(0.1)
    n = len(calls)
    time.sleep(0.1)
    assert len(calls) == n < 1000  # no job starts after the stop (before, they ran on to the end)
