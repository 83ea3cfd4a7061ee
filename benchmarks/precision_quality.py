"""What each fast precision does to retrieval: all-MiniLM-L6-v2 on BEIR SciFact, every precision against fp32.

The encoder benchmarks (``encode.py``) judge a precision by cosine, 10-NN overlap within a text set and STS-B
Spearman. A user who ships one for search wants the retrieval figure too: each precision here encodes the whole
SciFact corpus (5,183 abstracts) and the judged train queries, searches exactly (cosine, ``evaluate_retrieval``)
and is scored BEIR style on the train qrels (nothing here is tuned, so there is no tune/report split to keep
apart). Beside nDCG@10 and recall@100: how many of each query's top 10 documents are fp32's top 10 (the
agreement a user sees), and the change in nDCG@10 from fp32 per query (its spread: a mean change near zero can
hide queries that lose). Timing is not the point here (``encode.py`` times the precisions against the peer); the
corpus-encoding seconds are one run each, for orientation only.

Usage: EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/precision_quality.py
       [--precisions fp32,bf16-pure,bf16-int8-ffn,bf16-int8-all,int8-token] [--workers 2] [--section NAME]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line, cpu_line, load_average, log, write_results  # noqa: E402

DEFAULT = "fp32,bf16-pure,bf16-int8-ffn,bf16-int8-all,int8-token"


def top10(run: dict[str, dict[str, float]]) -> dict[str, set[str]]:
    """Each query's first 10 documents, ranked as the metrics rank them (ties by id descending, trec_eval's order)."""
    from embedstack.evaluation.metrics import rank_documents

    return {q: set(rank_documents(docs, 10)) for q, docs in run.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--precisions", default=DEFAULT)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--section", default="precision_quality")
    args = ap.parse_args()
    import torch

    import embedstack
    from embedstack.data import load_beir
    from embedstack.evaluation.metrics import per_query
    from embedstack.evaluation.runners import evaluate_retrieval

    torch.set_num_threads(args.threads)
    precisions = ["fp32", *[p for p in (p.strip() for p in args.precisions.split(",")) if p and p != "fp32"]]
    base = embedstack.load("all-MiniLM-L6-v2", num_threads=args.threads)
    # every precision is built (and a bad or unsupported one refused) before the first corpus is encoded
    encoders = {p: base.with_options(precision=p, workers=args.workers) for p in precisions}
    ds = load_beir("scifact", split="train")
    load_before = load_average()
    rows: list[dict[str, Any]] = []
    ref_top: dict[str, set[str]] = {}
    ref_q: dict[str, float] = {}
    for precision, enc in encoders.items():
        res = evaluate_retrieval(enc, ds, latency_queries=0, return_run=True)
        run = res.pop("run")
        per_q = per_query(run, ds.qrels, "ndcg", 10)  # the judged queries with an answer
        top = top10(run)
        if precision == "fp32":
            ref_top, ref_q = top, per_q
        overlap = [len(top[q] & ref_top[q]) / 10 for q in ref_top if q in top]
        delta = np.array([per_q[q] - ref_q[q] for q in ref_q])
        rows.append({"precision": precision, "ndcg@10": res["ndcg@10"], "recall@100": res["recall@100"],
                     "mrr@10": res["mrr@10"], "top10_overlap": float(np.mean(overlap)),
                     "top10_identical_sets": float(np.mean([o == 1.0 for o in overlap])),
                     "ndcg_delta_mean": float(delta.mean()), "ndcg_delta_p5": float(np.percentile(delta, 5)),
                     "ndcg_delta_min": float(delta.min()), "queries_lower": int((delta < -1e-12).sum()),
                     "queries_higher": int((delta > 1e-12).sum()), "index_seconds": res["index_seconds"],
                     "n_queries": res["n_queries"], "n_docs": res["n_docs"]})
        r = rows[-1]
        log(f"{precision}: nDCG@10 {r['ndcg@10']:.4f} recall@100 {r['recall@100']:.4f} top-10 overlap "
            f"{r['top10_overlap']:.3f} (corpus {r['index_seconds']:.0f} s)")
    res_all = {"rows": rows, "workers": args.workers, "threads": args.threads, "cpu": cpu_line(),
               "load_before": load_before, "load_after": load_average(), "command": command_line("precision_quality.py"),
               "torch": torch.__version__}
    ref = rows[0]
    lines = [f"## Retrieval quality per precision: all-MiniLM-L6-v2 on SciFact (`benchmarks/precision_quality.py`) — "
             f"{res_all['cpu']}", "",
             f"Reproduce: `EMBEDSTACK_DATA_DIR=../shared/data {res_all['command']}` — the whole corpus "
             f"({ref['n_docs']:,} abstracts) and the {ref['n_queries']} judged train queries encoded at each precision "
             f"(`workers={args.workers}`, {args.threads} threads), exact cosine search, scored on the train qrels (no "
             "tuning here). Top-10 overlap: the share of each query's 10 documents that fp32 also returns, averaged; "
             "identical sets: the share of queries whose top-10 set is fp32's. Δ nDCG@10: per query, against fp32 "
             "(mean, 5th percentile, worst). Corpus seconds: one run each, for orientation (speed against the peer "
             f"is `encode.py`'s). Load average {load_before[0]:.2f} before, {res_all['load_after'][0]:.2f} after.", "",
             "| precision | nDCG@10 | Δ vs fp32 | recall@100 | MRR@10 | top-10 overlap | identical top-10 sets "
             "| Δ nDCG@10 per query: mean / p5 / worst | queries lower / higher | corpus s |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['precision']} | {r['ndcg@10']:.4f} | {r['ndcg@10'] - ref['ndcg@10']:+.4f} | "
                     f"{r['recall@100']:.4f} | {r['mrr@10']:.4f} | {r['top10_overlap']:.3f} | "
                     f"{100 * r['top10_identical_sets']:.0f}% | {r['ndcg_delta_mean']:+.4f} / "
                     f"{r['ndcg_delta_p5']:+.4f} / {r['ndcg_delta_min']:+.4f} | {r['queries_lower']} / "
                     f"{r['queries_higher']} | {r['index_seconds']:.0f} |")
    md = "\n".join(lines)
    write_results(args.section, res_all, md)
    print(md)


if __name__ == "__main__":
    main()
