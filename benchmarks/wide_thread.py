"""Which thread runs torch work on several intra-op threads: one OpenMP team per process, or one per thread.

libgomp (the OpenMP runtime torch ships) keeps a team of worker threads for every thread that has started a parallel
region, for as long as that thread lives; once the threads of all teams outnumber the CPUs, it stops spinning
between regions and every region starts with futex wake-ups. A server that ran a lone request on both cores from
whichever of its model threads was free made one team per model thread. ``embedstack._threads.wide_thread`` is the
fix: such work runs on the process's one wide thread.

Each scenario runs in a fresh process (teams live as long as their threads), on all-MiniLM-L6-v2 (``bf16-pure`` and
``fp32``): one SciFact abstract encoded alone (``encode([text])``, 240 tokens on average, cut at 256), and one
product of the model's MLP shape on 240 rows (240 x 384 x 1536), both on 2 intra-op threads:
- ``main``: from the main thread, the only thread that uses torch (a script);
- ``one thread``: from a worker thread, the main thread never used more than one intra-op thread (one team);
- ``two threads``: from a worker thread, after a second worker thread ran the same work on 2 threads too (two teams:
  what the server did before);
- ``wide``: as ``two threads``, but both send their work through ``on_wide_thread`` (one team: what it does now);
- ``1 thread``: the same work on one intra-op thread, for scale.

Usage: EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/wide_thread.py [--reps 5] [--texts 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import cpu_line, rotated, write_results  # noqa: E402

SCENARIOS = ("main", "one thread", "two threads", "wide", "1 thread")


def child(scenario: str, precision: str, n_texts: int) -> dict[str, Any]:
    """One scenario in this (fresh) process: medians in ms of one abstract alone and of one product."""
    import torch

    torch.set_num_threads(1)  # the main thread makes no team unless the scenario is "main"
    from concurrent.futures import ThreadPoolExecutor

    from embedstack._threads import on_wide_thread
    from embedstack.data import load_beir
    from embedstack.neural import packed
    from embedstack.neural.hub import resolve_model
    from embedstack.neural.sentence import SentenceEncoder

    texts = load_beir("scifact", split="train").doc_texts()[: n_texts + 10]
    enc = SentenceEncoder.from_folder(resolve_model("all-MiniLM-L6-v2")[0], precision=precision, max_seq_length=256)
    dtype = torch.bfloat16 if precision == "bf16-pure" else torch.float32
    lin = packed.PackedLinear.of(torch.nn.Linear(384, 1536).to(dtype)) if packed.available(dtype) else \
        torch.nn.Linear(384, 1536).to(dtype)
    x = torch.randn(240, 384).to(dtype)
    threads = 1 if scenario == "1 thread" else 2

    def work() -> tuple[float, float]:
        torch.set_num_threads(threads)
        enc.encode(texts[:10])
        one = []
        for t in texts[10:]:
            t0 = time.perf_counter()
            enc.encode([t])
            one.append(time.perf_counter() - t0)
        with torch.inference_mode():
            for _ in range(20):
                lin(x)
            prod = []
            for _ in range(200):
                t0 = time.perf_counter()
                lin(x)
                prod.append(time.perf_counter() - t0)
        return sorted(one)[len(one) // 2] * 1e3, sorted(prod)[len(prod) // 2] * 1e6

    if scenario == "main":
        return dict(zip(("abstract_ms", "product_us"), work(), strict=True))
    first, second = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    if scenario == "two threads":
        second.submit(work).result()  # the other model thread's turn: its own team
    if scenario == "wide":
        second.submit(on_wide_thread, work).result()
        out = first.submit(on_wide_thread, work).result()
    else:
        out = first.submit(work).result()
    return dict(zip(("abstract_ms", "product_us"), out, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--texts", type=int, default=60)
    ap.add_argument("--child", nargs=2, metavar=("SCENARIO", "PRECISION"), help=argparse.SUPPRESS)
    ap.add_argument("--section", default="wide_thread")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.texts)))
        return
    load_before = os.getloadavg()
    runs: dict[str, dict[str, list[dict[str, float]]]] = {p: {s: [] for s in SCENARIOS} for p in ("bf16-pure", "fp32")}
    for r in range(args.reps):
        for precision in runs:
            for s in rotated(SCENARIOS, r):
                out = subprocess.run([sys.executable, __file__, "--child", s, precision, "--texts", str(args.texts)],
                                     capture_output=True, text=True, check=True)
                res = json.loads(out.stdout.strip().splitlines()[-1])
                runs[precision][s].append(res)
                print(f"round {r}  {precision:9s}  {s:12s}  abstract {res['abstract_ms']:.2f} ms  product "
                      f"{res['product_us']:.0f} us", file=sys.stderr)
    res = {"cpu": cpu_line(), "reps": args.reps, "texts": args.texts, "runs": runs,
           "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    md = markdown(res, args.section)
    print(md)
    write_results(args.section, res, md)


def _med(xs: list[float]) -> tuple[float, float, float]:
    s = sorted(xs)
    return s[len(s) // 2], s[0], s[-1]


def markdown(res: dict[str, Any], section: str) -> str:
    lines = ["## One OpenMP team per process: where torch's multi-threaded work runs (`benchmarks/wide_thread.py`)", "",
             f"`EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/wide_thread.py --reps {res['reps']}` — "
             f"{res['cpu']}; each cell a fresh process, medians of {res['reps']} rounds (scenario order rotated), "
             f"min–max in brackets; one SciFact abstract alone is the median of {res['texts']} `encode([text])` calls "
             "(cut at 256 tokens), the product 240 x 384 x 1536 the median of 200 calls. Load average before "
             f"{res['loadavg_before'][0]:.2f}, after {res['loadavg_after'][0]:.2f}.", "",
             "| precision | where the 2-thread work runs | one abstract ms | vs main | product us | vs main |",
             "|---|---|---:|---:|---:|---:|"]
    names = {"main": "main thread (a script)", "one thread": "one worker thread (one team)",
             "two threads": "a worker thread, after another made a team (two teams)",
             "wide": "both workers through `on_wide_thread` (one team)", "1 thread": "one intra-op thread, for scale"}
    for precision, cells in res["runs"].items():
        base_a = _med([c["abstract_ms"] for c in cells["main"]])[0]
        base_p = _med([c["product_us"] for c in cells["main"]])[0]
        for s in SCENARIOS:
            a, alo, ahi = _med([c["abstract_ms"] for c in cells[s]])
            p, plo, phi = _med([c["product_us"] for c in cells[s]])
            lines.append(f"| {precision} | {names[s]} | {a:.2f} ({alo:.2f}–{ahi:.2f}) | {a / base_a:.2f}× | "
                         f"{p:.0f} ({plo:.0f}–{phi:.0f}) | {p / base_p:.2f}× |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
