"""Where two training threads lose time: the shared model's rows, or the host's placement of the two CPUs.

Our 2-thread word-vector runs vary up to 2.4x in CPU time for the same work (``word2vec_cli_zen4_cbow5``: 65-158 s
per CBOW run) while gensim's vary 1.2x; our one-thread runs vary far less. Two causes would fit:

- *the shared model*: both threads update the same hot rows (frequent words, and every negative drawn from the
  unigram^0.75 table) without locks, as word2vec.c and gensim do. Each write to a row the other core holds costs a
  cache-line transfer, whose price depends on where the host runs the two virtual CPUs (same core, same CCX, ...);
- *the host*: the two virtual CPUs share a physical core, or other tenants load it, and every thread slows
  whether or not it shares data.

Each round (scenario order rotated) trains the same model on the first ``--words`` words of the enwiki extract in
four ways, each a fresh process timing only the training loop (``stats_.seconds``; the corpus pass is done before
the clock starts, a tiny fit first loads the kernels, and processes that run at once start training together):

- ``alone``: one process, ``workers=1``: t1;
- ``two processes``: two such processes at once, each with its own model (no shared rows, the same placement on the
  host): tb, the slower of the two;
- ``two models``: one process, two Python threads each training its own model with ``workers=1`` (the kernels
  release the GIL): tm, the slower of the two; everything a process shares but the model's rows;
- ``two threads``: one process, ``workers=2``, one shared model: t2.

tb / t1 is what the host's placement and neighbours cost two busy CPUs; 2 x t2 / tm is what sharing one model's
rows adds on top (1.0: nothing), the two threads doing the same work in the same process either way; t1 / (2 x t2)
is the 2-thread efficiency. Each round also measures the round-trip time of one cache line bounced between two
threads pinned to CPU 0 and CPU 1 (a C loop built with the system compiler), a rough view of where the host
placed the two CPUs at that moment.

Usage: EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/thread_contention.py [--rounds 8] [--words 5000000] [--models cbow,skipgram]
       [--section thread_contention]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import cpu_line, data_dir, load_average, log, render_last, rotated, write_results  # noqa: E402

SCENARIOS = ("alone", "two processes", "two models", "two threads")
MODELS = ("cbow", "skipgram", "fasttext")

PINGPONG_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <time.h>

static volatile int64_t line[16] __attribute__((aligned(64)));
static int64_t iters_;

static volatile int pin_failed;

static void pin(int cpu) {
    cpu_set_t set; CPU_ZERO(&set); CPU_SET(cpu, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof set, &set)) pin_failed = 1;
}

static void *responder(void *arg) {
    pin(*(int *)arg);
    for (int64_t i = 0; i < iters_; i++) {
        while (line[0] != 2 * i + 1) { }
        line[0] = 2 * i + 2;
    }
    return 0;
}

/* nanoseconds per round trip of one cache line between threads on cpu_a and cpu_b; -1 if either could not be pinned */
double pingpong(int64_t iters, int cpu_a, int cpu_b) {
    pthread_t t; struct timespec s, e; cpu_set_t before;
    pthread_getaffinity_np(pthread_self(), sizeof before, &before);
    iters_ = iters; line[0] = 0; pin_failed = 0;
    pthread_create(&t, 0, responder, &cpu_b);
    pin(cpu_a);
    clock_gettime(CLOCK_MONOTONIC, &s);
    for (int64_t i = 0; i < iters; i++) {
        line[0] = 2 * i + 1;
        while (line[0] != 2 * i + 2) { }
    }
    clock_gettime(CLOCK_MONOTONIC, &e);
    pthread_join(t, 0);
    pthread_setaffinity_np(pthread_self(), sizeof before, &before); /* children started later must not inherit cpu_a */
    if (pin_failed) return -1.0;
    return ((e.tv_sec - s.tv_sec) * 1e9 + (e.tv_nsec - s.tv_nsec)) / (double)iters;
}
"""


def build_pingpong(folder: Path) -> Any:
    src, lib = folder / "pingpong.c", folder / "pingpong.so"
    src.write_text(PINGPONG_C)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-pthread", str(src), "-o", str(lib)], check=True)
    fn = ctypes.CDLL(str(lib)).pingpong
    fn.restype, fn.argtypes = ctypes.c_double, [ctypes.c_int64, ctypes.c_int, ctypes.c_int]
    return fn


def slice_corpus(words: int, out: Path) -> int:
    """The first lines of word2vec_cli's tokenized enwiki extract holding at least ``words`` words."""
    from word2vec_cli import corpus_file

    data = data_dir()
    n = 0
    with open(corpus_file(data / "enwiki-extract"), encoding="utf-8") as fh, open(out, "w", encoding="utf-8") as dst:
        for line in fh:
            dst.write(line)
            n += line.count(" ") + 1
            if n >= words:
                break
    return n


def child(model: str, corpus: str, spec: str) -> dict[str, float]:
    """``spec``: "1" or "2" training threads on one model, or "1x2": two models, one thread each, in this process."""
    from embedstack.static import FastText, Word2Vec
    from embedstack.static._corpus import IdCorpus

    workers = 2 if spec == "2" else 1

    def trainer() -> Word2Vec:
        opts: dict[str, Any] = {"dim": 100, "window": 5, "negative": 5, "min_count": 5, "sample": 1e-3, "epochs": 1,
                                "workers": workers, "seed": 1}
        if model == "fasttext":  # skip-gram with n-grams 3-6 in 2M buckets, as word2vec_cli's FastText
            return FastText(**opts)
        return Word2Vec(sg=model == "skipgram", **opts)

    warm = trainer()
    warm.fit([["a", "b", "c", "d", "e", "f"]] * 50)  # loads the compiled kernels before the clock starts
    models = [trainer() for _ in range(2 if spec == "1x2" else 1)]
    data = IdCorpus.build(corpus, analyzer=models[0].analyzer, min_count=models[0].min_count, workers=1)
    print("ready", flush=True)  # the parent starts every copy's training at once
    sys.stdin.readline()
    c0 = time.process_time()
    if len(models) == 1:
        models[0].fit(data)
    else:  # the kernels release the GIL: two Python threads train the two models at once
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(m.fit, data) for m in models]:
                f.result()
    return {"train_s": max(float(m.stats_.seconds) for m in models), "cpu_s": time.process_time() - c0}


def run_children(model: str, corpus: str, spec: str, copies: int) -> list[dict[str, float]]:
    procs = [subprocess.Popen([sys.executable, __file__, "--child", model, corpus, spec],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(copies)]
    for p in procs:  # every copy has loaded its kernels and read the corpus ...
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            for q in procs:  # the others would wait for "go" until this process ends, then train for nothing
                q.kill()
            raise SystemExit(f"child failed before training ({model}, {spec})")
    outs = []
    for p in procs:  # ... before any starts training
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        out, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"child failed ({model}, {spec})")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--words", type=int, default=5_000_000)
    ap.add_argument("--models", default="cbow,skipgram", help=f"comma-separated, from {', '.join(MODELS)}")
    ap.add_argument("--section", default="thread_contention")
    ap.add_argument("--render-last", action="store_true",
                    help="re-render the section from results/SECTION.jsonl's last record (no measuring)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.render_last:
        render_last(args.section, lambda res: markdown(res, args.section))
        return
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.child[2])))
        return
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 CPUs")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or set(models) - set(MODELS):
        raise SystemExit(f"--models: choose from {', '.join(MODELS)} (got {args.models!r})")
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bounce = build_pingpong(folder)
        mask = os.sched_getaffinity(0)

        def pingpong() -> float:
            ns = float(bounce(200_000, 0, 1))
            if ns < 0:
                raise SystemExit("could not pin the ping-pong threads to CPUs 0 and 1")
            if os.sched_getaffinity(0) != mask:  # children started from this thread would inherit the pin
                raise SystemExit("the ping-pong left this thread pinned")
            return ns

        corpus = folder / "slice.txt"
        words = slice_corpus(args.words, corpus)
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            rnd: dict[str, Any] = {"pingpong_ns": [pingpong() for _ in range(3)]}
            for model in rotated(models, r):
                for s in rotated(SCENARIOS, r):
                    spec, copies = {"alone": ("1", 1), "two processes": ("1", 2), "two models": ("1x2", 1),
                                    "two threads": ("2", 1)}[s]
                    outs = run_children(model, str(corpus), spec, copies)
                    rnd[f"{model}/{s}"] = outs
                    log(f"round {r} {model:8s} {s:13s} train " + ", ".join(f"{o['train_s']:.2f}" for o in outs)
                        + " s, CPU " + ", ".join(f"{o['cpu_s']:.2f}" for o in outs) + " s")
            rnd["pingpong_ns"] += [pingpong() for _ in range(3)]
            log(f"round {r} ping-pong {statistics.median(rnd['pingpong_ns']):.0f} ns")
            rounds.append(rnd)
    res = {"cpu": cpu_line(), "models": models, "rounds": rounds, "words": words, "load_before": load_before,
           "load_after": load_average()}
    md = markdown(res, args.section)
    print(md)
    write_results(args.section, res, md)


def derived(rnd: dict[str, Any], model: str) -> dict[str, float]:
    t1 = rnd[f"{model}/alone"][0]["train_s"]
    tb = max(o["train_s"] for o in rnd[f"{model}/two processes"])
    t2 = rnd[f"{model}/two threads"][0]["train_s"]
    out = {"t1": t1, "tb": tb, "t2": t2, "host": tb / t1, "rows_b": 2 * t2 / tb, "eff": t1 / (2 * t2)}
    if f"{model}/two models" in rnd:  # records from before this scenario lack it
        tm = rnd[f"{model}/two models"][0]["train_s"]
        out.update(tm=tm, rows=2 * t2 / tm)
    return out


def _cell(xs: list[float], fmt: str) -> str:
    return f"{statistics.median(xs):{fmt}} ({min(xs):{fmt}}–{max(xs):{fmt}})"


def markdown(res: dict[str, Any], section: str) -> str:
    rounds = res["rounds"]
    models = res.get("models", ["cbow", "skipgram"])  # records before --models held these two
    pp = [x for r in rounds for x in r["pingpong_ns"]]
    lines = ["## Two training threads: shared rows or the host? (`benchmarks/thread_contention.py`)", "",
             f"`EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/thread_contention.py --rounds {len(rounds)} "
             f"--words {res['words']} --models {','.join(models)} --section {section}` — {res['cpu']}; the first "
             f"{res['words']:,} words of the enwiki extract, dim 100, window 5, negative 5, sample 1e-3, 1 epoch "
             "(FastText: skip-gram, n-grams 3-6, 2M buckets); each cell a fresh process timing the training loop only "
             "(copies that run at once start training together); t1: one model, one thread, alone; tb: two processes "
             "at once, one model and one thread each (the slower); tm: one process, two Python threads each training "
             "its own model (the slower); t2: one model on 2 threads. "
             f"{len(rounds)} rounds, scenario order rotated; medians (min–max). Load average before "
             f"{res['load_before'][0]:.2f}, after {res['load_after'][0]:.2f}. Cache-line round trip between threads "
             f"pinned to CPU 0 and 1, 3 times at the start and 3 at the end of each round: {_cell(pp, '.0f')} ns.", "",
             "| model | t1 s | tb s | tm s | t2 s | host: tb / t1 | shared model vs separate processes: 2·t2 / tb "
             "| shared rows: 2·t2 / tm | 2-thread efficiency t1 / (2·t2) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model in models:
        d = [derived(r, model) for r in rounds]
        col = {k: [x[k] for x in d] for k in d[0]}
        tm, rows = ((_cell(col["tm"], ".2f"), _cell(col["rows"], ".2f")) if "tm" in col else ("—", "—"))
        lines.append(f"| {model} | {_cell(col['t1'], '.2f')} | {_cell(col['tb'], '.2f')} | {tm} "
                     f"| {_cell(col['t2'], '.2f')} | {_cell(col['host'], '.2f')} | {_cell(col['rows_b'], '.2f')} "
                     f"| {rows} | {_cell(col['eff'], '.2f')} |")

    def times(r: dict[str, Any], m: str) -> str:
        x = derived(r, m)
        return "/".join(f"{x[k]:.2f}" for k in ("t1", "tb", "tm", "t2") if k in x)

    has_tm = all("tm" in derived(r, m) for r in rounds for m in models)
    lines += ["", f"Per round ({'t1 / tb / tm / t2' if has_tm else 't1 / tb / t2'} s; round trip ns, median at the "
              "start → at the end): " + "; ".join(
                  f"{i}: " + ", ".join(f"{m} {times(r, m)}" for m in models)
                  + f", {statistics.median(r['pingpong_ns'][:3]):.0f} → {statistics.median(r['pingpong_ns'][3:]):.0f} ns"
                  for i, r in enumerate(rounds))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
