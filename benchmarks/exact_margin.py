"""The margin of ``CrossEncoder(exact_top=10)``: how far each low precision moves a reranker's logits, and what each
margin costs (pairs re-scored in fp32) and keeps (queries whose top 10 is in fp32's order).

Pairs as ``benchmarks/rerank_speed.py`` makes them (SciFact train queries × BM25's top 20, 512 tokens at most):
- tune: the 20 queries after the ones rerank_speed.py times (offset 20): the default margins are chosen here, as
  one step above the smallest margin tried that keeps the top 10 of every tuning query in order;
- report: the 20 queries rerank_speed.py times (offset 0), never used to choose.
The reference is our fp32 (which matches sentence-transformers' fp32 to 2e-6). No timing: run it any time.

Usage: EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/exact_margin.py --model DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_results  # noqa: E402
from rerank_speed import pairs_from_scifact, top10_same  # noqa: E402

MARGINS = (0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5)
PRECISIONS = ("bf16", "bf16-pure", "int8-smooth")


def sweep(low: np.ndarray, ref: np.ndarray, bounds: list[int]) -> list[dict[str, float]]:
    """For each margin: the share of pairs ``exact_top=10`` re-scores and of queries whose top 10 is then in order."""
    from embedstack.neural.cross_encoder import settle

    out = []
    for m in MARGINS:
        mixed, n = low.copy(), 0
        for s, e in zip(bounds[:-1], bounds[1:], strict=True):  # both rounds, as CrossEncoder(exact_top=10) does
            idx, mixed[s:e] = settle(low[s:e], 10, m, lambda i, s=s: ref[s + i])
            n += len(idx)
        out.append({"margin": m, "rescored": n / len(low), "top10_in_order": top10_same(mixed, ref, bounds)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="a cross-encoder folder")
    ap.add_argument("--pairs", type=int, default=400)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    opts = ap.parse_args()
    import torch

    from embedstack.neural.cross_encoder import EXACT_MARGINS, CrossEncoder, exact_margin

    torch.set_num_threads(opts.threads)
    base = CrossEncoder.from_folder(opts.model, max_seq_length=512)
    sets = {"tune": pairs_from_scifact(opts.pairs, opts.depth, offset=opts.pairs // opts.depth),
            "report": pairs_from_scifact(opts.pairs, opts.depth, offset=0)}
    ref = {k: base.predict(p, activation=False) for k, (p, _) in sets.items()}
    rows: list[dict[str, Any]] = []
    for precision in PRECISIONS:
        ce = base.with_options(precision=precision)
        row: dict[str, Any] = {"precision": precision, "default": exact_margin(precision)}
        for k, (pairs, bounds) in sets.items():
            low = ce.predict(pairs, activation=False)
            d = np.abs(low - ref[k])
            row[k] = {"median": float(np.median(d)), "p99": float(np.quantile(d, 0.99)), "max": float(d.max()),
                      "alone_in_order": top10_same(low, ref[k], bounds), "sweep": sweep(low, ref[k], bounds)}
        held = [s["margin"] for s in row["tune"]["sweep"] if s["top10_in_order"] >= 1.0]
        i = MARGINS.index(held[0]) if held else len(MARGINS) - 1
        row["chosen"] = MARGINS[min(i + 1, len(MARGINS) - 1)]  # one step above the smallest that held
        rows.append(row)
        print(f"{precision}: moves tune max {row['tune']['max']:.4f}, chosen {row['chosen']} (default "
              f"{row['default']})", file=sys.stderr)
    res = {"model": str(opts.model).replace(str(Path.home()), "~"), "pairs": opts.pairs, "depth": opts.depth,
           "margins": list(MARGINS), "rows": rows, "defaults": dict(EXACT_MARGINS)}
    md = markdown(res)
    print(md)
    write_results("exact_margin", res, md)


def markdown(res: dict[str, Any]) -> str:
    lines = ["## The margin of `CrossEncoder(exact_top=10)` (`benchmarks/exact_margin.py`)", "",
             f"`EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/exact_margin.py --model {res['model']}` — "
             f"SciFact train queries × BM25's top {res['depth']}, {res['pairs']} pairs per set; tune = the 20 queries "
             "after the ones `rerank_speed.py` times (margins chosen there), report = the 20 it times (never used "
             "to choose); reference: our fp32 logits. Cells: share of pairs re-scored in fp32 / share of queries "
             "whose top 10 is then in fp32's order.", "",
             "| precision | set | logit move median / p99 / max | in order alone | "
             + " | ".join(f"margin {m}" for m in res["margins"]) + " |",
             "|---|---|---:|---:|" + "---:|" * len(res["margins"])]
    for r in res["rows"]:
        for k in ("tune", "report"):
            s = r[k]
            cells = " | ".join(f"{100 * c['rescored']:.0f}% / {100 * c['top10_in_order']:.0f}%" for c in s["sweep"])
            lines.append(f"| {r['precision']} | {k} | {s['median']:.4f} / {s['p99']:.4f} / {s['max']:.4f} | "
                         f"{100 * s['alone_in_order']:.0f}% | {cells} |")
    lines += ["", "Chosen on tune (one step above the smallest margin that kept every tuning query in order) against "
              "the default in `cross_encoder.EXACT_MARGINS`: "
              + "; ".join(f"{r['precision']} {r['chosen']} (default {r['default']})" for r in res["rows"]) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
