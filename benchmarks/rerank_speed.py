"""Cross-encoder inference on CPU: our CrossEncoder's modes against sentence-transformers' CrossEncoder.predict.

Model: a cross-encoder folder (``--model``; default: a new one on all-MiniLM-L6-v2's weights with a
seeded classifier, saved once to a temporary folder: speed does not depend on the head's values, and
both sides load the same folder). Pairs: SciFact train queries × their BM25 top ``--depth`` abstracts
(title + text), ``--pairs`` in all (default 2,000), max length 512 tokens on both sides (ST's default
for this model: the tokenizer's ``model_max_length``), the query kept whole.

Both sides run in this process with the same threads (``--threads``, default 2) and batch size (32,
ST's default). The pairs are cut into blocks of one query's candidates; on each block the peer and
every one of our modes run back to back in a rotating order, ``--rounds`` times; each system's
fastest run of each block counts and the block times are summed (the CPU is shared: the minimum is
the least disturbed run). Quality beside speed: Spearman of each mode's scores against the peer's
fp32 scores over all pairs, and the share of queries whose top 10 after reranking is identical.

The peer is timed as its users run it: fp32 (the default) and with ``model_kwargs={"torch_dtype":
torch.bfloat16}`` (its documented way to lower precision; the faster of the two is its "fastest").

Targets (issue 17): exact mode (Spearman ≥ 0.9999 against the peer) ≥ 1.5× the peer's fp32 pairs/s;
fastest mode (top-10 identical for ≥ 95% of queries) ≥ 3× the peer's fastest.

Usage: EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/rerank_speed.py [--model DIR] [--pairs 2000]
       [--rounds 2] [--modes torch-fp32,torch-bf16-pure,...] [--quick] [--quiet]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ratio, write_results  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODES: dict[str, dict[str, Any]] = {
    "torch-fp32": {"precision": "fp32"},
    "torch-fp32-w2": {"precision": "fp32", "workers": 2},
    "torch-bf16": {"precision": "bf16"},
    "torch-bf16-pure": {"precision": "bf16-pure"},
    "torch-bf16-pure-w2": {"precision": "bf16-pure", "workers": 2},
    "onnx-fp32": {"backend": "onnx", "precision": "fp32"},
    "onnx-int8": {"backend": "onnx", "precision": "int8"},
}


def log(quiet: bool, *msg: Any) -> None:
    if not quiet:
        print(f"[{time.strftime('%H:%M:%S')}]", *msg, file=sys.stderr, flush=True)


def pairs_from_scifact(n_pairs: int, depth: int) -> tuple[list[tuple[str, str]], list[int]]:
    """(query, abstract) pairs, ``depth`` BM25 candidates per query, and the block (query) boundaries."""
    from embedstack.count import BM25
    from embedstack.data import load_beir

    ds = load_beir("scifact", split="train")
    docs = ds.doc_texts()
    bm25 = BM25().index(docs)
    queries = ds.query_texts()[: max(1, n_pairs // depth)]
    hits = bm25.search(queries, k=depth)
    pairs: list[tuple[str, str]] = []
    bounds = [0]
    for q, hs in zip(queries, hits, strict=True):
        pairs += [(q, docs[int(h.id)] if not isinstance(h.id, str) or h.id.isdigit() else h.text) for h in hs]
        bounds.append(len(pairs))
    return pairs, bounds


def top10_same(a: np.ndarray, b: np.ndarray, bounds: list[int]) -> float:
    same = [list(np.argsort(-a[s:e], kind="stable")[:10]) == list(np.argsort(-b[s:e], kind="stable")[:10])
            for s, e in zip(bounds[:-1], bounds[1:], strict=True)]
    return float(np.mean(same))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--no-peer-bf16", action="store_true")
    ap.add_argument("--quick", action="store_true", help="200 pairs, 1 round, no report")
    ap.add_argument("--quiet", action="store_true")
    opts = ap.parse_args()
    if opts.quick:
        opts.pairs, opts.rounds = 200, 1
    import torch
    from scipy.stats import spearmanr
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from embedstack.neural.cross_encoder import CrossEncoder

    torch.set_num_threads(opts.threads)
    q = opts.quiet
    scratch = tempfile.mkdtemp(prefix="rerank-speed-")
    folder = opts.model
    if folder is None:
        from embedstack.neural.hub import resolve_model

        folder = Path(scratch) / "ce"
        CrossEncoder.from_pretrained_encoder(resolve_model("all-MiniLM-L6-v2")[0], seed=0).save(folder)
    pairs, bounds = pairs_from_scifact(opts.pairs, opts.depth)
    log(q, f"{len(pairs)} pairs, {len(bounds) - 1} queries")
    ours_base = CrossEncoder.from_folder(folder, max_seq_length=512)
    systems: dict[str, Any] = {}
    peer = STCrossEncoder(str(folder), device="cpu", max_length=512)
    systems["st-fp32"] = lambda p: np.asarray(peer.predict(p, batch_size=32, show_progress_bar=False))
    if not opts.no_peer_bf16:
        peer16 = STCrossEncoder(str(folder), device="cpu", max_length=512, model_kwargs={"torch_dtype": torch.bfloat16})
        systems["st-bf16"] = lambda p: np.asarray(peer16.predict(p, batch_size=32, show_progress_bar=False),
                                                  dtype=np.float32)
    for name in filter(None, opts.modes.split(",")):
        ce = ours_base.with_options(num_threads=opts.threads, **MODES[name])
        systems[name] = lambda p, ce=ce: ce.predict(p, batch_size=32)
    for fn in systems.values():  # warm-up: ONNX export, first-call allocations
        fn(pairs[: bounds[1]])
    best = {name: np.full(len(bounds) - 1, np.inf) for name in systems}
    scores = {name: np.zeros(len(pairs), dtype=np.float64) for name in systems}
    names = list(systems)
    for r in range(opts.rounds):
        for b, (s, e) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            shift = (b + r) % len(names)
            for name in names[shift:] + names[:shift]:
                t0 = time.perf_counter()
                out = systems[name](pairs[s:e])
                best[name][b] = min(best[name][b], time.perf_counter() - t0)
                scores[name][s:e] = out
        log(q, f"round {r + 1}/{opts.rounds} done")
    ref = scores["st-fp32"]
    rows = []
    for name in names:
        secs = float(best[name].sum())
        rows.append({"system": name, "seconds": secs, "pairs_per_s": len(pairs) / secs,
                     "spearman_vs_st_fp32": float(spearmanr(scores[name], ref).statistic),
                     "max_abs_diff": float(np.abs(scores[name] - ref).max()),
                     "top10_identical": top10_same(scores[name], ref, bounds)})
    peer_fp32 = next(r for r in rows if r["system"] == "st-fp32")["pairs_per_s"]
    peer_fast = max(r["pairs_per_s"] for r in rows if r["system"].startswith("st-"))
    ours = [r for r in rows if not r["system"].startswith("st-")]
    exact = [r for r in ours if r["spearman_vs_st_fp32"] >= 0.9999]
    fast = [r for r in ours if r["top10_identical"] >= 0.95]
    res = {"pairs": len(pairs), "queries": len(bounds) - 1, "depth": opts.depth, "threads": opts.threads,
           "rounds": opts.rounds, "model": str(opts.model or "all-MiniLM-L6-v2 + seeded classifier"), "rows": rows,
           "exact_best": max(exact, key=lambda r: r["pairs_per_s"])["system"] if exact else None,
           "fast_best": max(fast, key=lambda r: r["pairs_per_s"])["system"] if fast else None}
    res["exact_speedup"] = ratio(max((r["pairs_per_s"] for r in exact), default=0.0), peer_fp32)
    res["fast_speedup"] = ratio(max((r["pairs_per_s"] for r in fast), default=0.0), peer_fast)
    md = markdown(res)
    print(md)
    if not opts.quick:
        write_results("rerank_speed", res, md)


def markdown(res: dict[str, Any]) -> str:
    lines = ["## Cross-encoder inference: our CrossEncoder vs sentence-transformers' CrossEncoder.predict", "",
             f"`EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/rerank_speed.py` — {res['pairs']:,} (query, "
             f"abstract) pairs = {res['queries']} SciFact train queries × BM25 top {res['depth']}, max length 512, "
             f"batch 32, {res['threads']} threads, model: {res['model']}. Per block (one query's candidates) the "
             f"fastest of {res['rounds']} interleaved runs counts.", "",
             "| system | pairs/s | vs ST fp32 | Spearman vs ST fp32 | max abs diff | top-10 identical |",
             "|---|---:|---:|---:|---:|---:|"]
    peer = next(r for r in res["rows"] if r["system"] == "st-fp32")["pairs_per_s"]
    for r in res["rows"]:
        lines.append(f"| {r['system']} | {r['pairs_per_s']:.1f} | {r['pairs_per_s'] / peer:.2f}× | "
                     f"{r['spearman_vs_st_fp32']:.6f} | {r['max_abs_diff']:.2e} | {100 * r['top10_identical']:.0f}% |")
    lines += ["", f"Exact mode (Spearman ≥ 0.9999): **{res['exact_best']}**, {res['exact_speedup']:.2f}× the peer's "
              f"fp32 (target 1.5×: {'met' if res['exact_speedup'] >= 1.5 else 'not met'}). Fastest mode (top-10 "
              f"identical ≥ 95%): **{res['fast_best']}**, {res['fast_speedup']:.2f}× the peer's fastest (target 3×: "
              f"{'met' if res['fast_speedup'] >= 3 else 'not met'})."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
