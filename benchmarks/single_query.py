"""Single-query latency: encode alone, search alone, and encode + search of the same query.

On a machine with few cores the thread pools of torch (encoding), OpenBLAS (index search) and numba
(top-k) can fight: a query answered end to end then costs more than its two halves measured apart.
This script measures, per query and interleaved (encode alone, search alone, together, in rotating
order), the median milliseconds of each, and prints ``ratio = together / (encode + search)``
(1.00 means no interference; the target is <= 1.10). Setups:

* ``minilm-flat``: all-MiniLM-L6-v2 over a flat (exact) index of the SciFact corpus;
* ``bm25``: BM25 over a sparse index of the same corpus.

Both go through the library's own path (``open_pipeline(folder).search(query)``), as ``embedstack
search`` does; "encode alone" is the retriever's query encoding and "search alone" the index search
of that query's vector. The index folders are built once into ``--cache`` (MiniLM encoding of 5,183
abstracts takes a few minutes on 2 cores).

Data: ``EMBEDSTACK_DATA_DIR`` (e.g. ``/work/shared/data``); without it the packaged sample corpus.
Results are appended to ``benchmarks/results/single_query.jsonl``.

Usage::

    EMBEDSTACK_DATA_DIR=/work/shared/data python benchmarks/single_query.py [--queries 300] [--setups minilm-flat,bm25]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import RESULTS, command_line, machine  # noqa: E402

SETUPS = {"minilm-flat": ("all-MiniLM-L6-v2", "flat"), "bm25": ("bm25", "flat")}


def _corpus() -> tuple[str, list[str], list[str], list[str]]:
    """(dataset label, doc ids, doc texts, query texts): SciFact when the data dir has it, else the sample."""
    from embedstack.data import load_beir, sample_retrieval

    if os.environ.get("EMBEDSTACK_DATA_DIR"):
        try:
            ds = load_beir("scifact", split=None)
            label = "scifact"
        except Exception as exc:  # noqa: BLE001 - any failure falls back to the sample, said on stderr
            print(f"scifact not available ({exc}); using the packaged sample", file=sys.stderr)
            ds, label = sample_retrieval(), "sample"
    else:
        ds, label = sample_retrieval(), "sample"
    ids = list(ds.corpus)
    return label, ids, ds.doc_texts(), list(ds.queries.values())


def _index(setup: str, cache: Path, label: str, ids: list[str], texts: list[str]) -> Path:
    from embedstack.models import resolve
    from embedstack.retrieval import build_index

    model, index = SETUPS[setup]
    folder = cache / f"{label}-{setup}-{len(texts)}"
    if not (folder / "manifest.json").is_file():
        t0 = time.perf_counter()
        print(f"building {folder} ({len(texts)} docs with {model}) ...", file=sys.stderr, flush=True)
        build_index(texts, ids, resolve(model), spec=model, index=index, out=folder)
        print(f"  built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return folder


def _median_ms(xs: list[float]) -> float:
    return 1000.0 * statistics.median(xs)


def measure(folder: Path, queries: list[str], *, warmup: int = 10, gap_ms: float = 20.0) -> dict[str, Any]:
    """Median ms of encode alone, search alone and encode + search (pipeline.search) over ``queries``.

    The measurements of a query run in rotating order with ``gap_ms`` of idle time before each, so that
    none of them inherits the threads another one left spinning. Measured alone, encode and search each
    pay their own wake-up from idle while "together" pays one, which favours "together"; so the script
    also times the two parts back to back with one gap before the pair (``pair``: the retriever's encode
    then the index search, no pipeline) and reports ``together / pair`` and the median of the per-query
    ratios ``together_i / (encode_i + search_i)`` beside the ratio of medians.
    """
    from embedstack.retrieval import open_pipeline

    pipe = open_pipeline([folder])
    r = pipe.retrievers[0]
    vecs = [r.encode([q]) for q in queries]  # query vectors for "search alone"
    for q, v in zip(queries[:warmup], vecs, strict=False):  # compile kernels, warm caches
        r.index.search(v, 10)
        pipe.search(q, k=10)
    times: dict[str, list[float]] = {"encode": [], "search": [], "together": [], "pair": []}
    clock = time.perf_counter
    steps = ("encode", "search", "together", "pair")
    orders = [steps[i:] + steps[:i] for i in range(len(steps))]
    for i, (q, v) in enumerate(zip(queries, vecs, strict=True)):
        for step in orders[i % len(orders)]:
            time.sleep(gap_ms / 1000.0)
            t0 = clock()
            if step == "encode":
                r.encode([q])
            elif step == "search":
                r.index.search(v, 10)
            elif step == "pair":
                r.index.search(r.encode([q]), 10)
            else:
                pipe.search(q, k=10)
            times[step].append(clock() - t0)
    e, s, t, p = (_median_ms(times[x]) for x in ("encode", "search", "together", "pair"))
    per_query = statistics.median(ti / (ei + si) for ti, ei, si in zip(times["together"], times["encode"],
                                                                       times["search"], strict=True))
    return {"encode_ms": round(e, 3), "search_ms": round(s, 3), "together_ms": round(t, 3), "pair_ms": round(p, 3),
            "ratio": round(t / (e + s), 3), "ratio_per_query": round(per_query, 3), "ratio_vs_pair": round(t / p, 3),
            "queries": len(queries), "docs": len(r.index), "gap_ms": gap_ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=300, help="queries measured per setup (default 300)")
    ap.add_argument("--setups", default="minilm-flat,bm25", help=f"comma-separated: {', '.join(SETUPS)}")
    ap.add_argument("--cache", type=Path, default=None, help="where index folders are built (default: the "
                    "embedstack cache, bench/single_query)")
    ap.add_argument("--gap-ms", type=float, default=20.0, help="idle time before each measurement (default 20)")
    ap.add_argument("--no-save", action="store_true", help="print only; do not append to the results file")
    args = ap.parse_args()
    from embedstack.data import cache_dir

    cache = args.cache or cache_dir() / "bench" / "single_query"
    label, ids, texts, queries = _corpus()
    queries = (queries * (1 + args.queries // max(1, len(queries))))[: args.queries]
    rows = {}
    for setup in [s.strip() for s in args.setups.split(",") if s.strip()]:
        if setup not in SETUPS:
            raise SystemExit(f"unknown setup {setup!r}; known: {', '.join(SETUPS)}")
        folder = _index(setup, cache, label, ids, texts)
        rows[setup] = measure(folder, queries, gap_ms=args.gap_ms)
    threads = {}
    try:
        from threadpoolctl import threadpool_info

        threads = {d.get("internal_api", "?"): d.get("num_threads") for d in threadpool_info()}
    except ImportError:
        pass
    print(f"single-query latency on {label} ({len(texts)} docs), medians over {len(queries)} queries "
          f"(1-min load average at the end: {os.getloadavg()[0]:.1f})")
    print("| setup | encode alone ms | search alone ms | encode + search ms | ratio | per-query ratio "
          "| parts back to back ms | together / back to back |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for setup, m in rows.items():
        print(f"| {setup} | {m['encode_ms']:.2f} | {m['search_ms']:.2f} | {m['together_ms']:.2f} | {m['ratio']:.2f} "
              f"| {m['ratio_per_query']:.2f} | {m['pair_ms']:.2f} | {m['ratio_vs_pair']:.2f} |")
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        record = {"benchmark": "single_query", "machine": machine(), "loadavg_1min_at_end": os.getloadavg()[0],
                  "dataset": label, "threads": threads,
                  "results": rows, "command": command_line("single_query.py")}
        with open(RESULTS / "single_query.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        print(f"appended to {RESULTS / 'single_query.jsonl'}", file=sys.stderr)


if __name__ == "__main__":
    main()
