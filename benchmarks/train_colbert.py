"""ColBERT training on SciFact and late-interaction retrieval quality (issue 12), scored on a split never tuned on.

SciFact's judged train queries are split once (``query_half``, 50/50, seed 0) into a *tune* half and a
*report* half. Configurations are compared on ``tune-dev`` (30% of the tune half's queries) after training
on ``tune-train`` (the other 70%) plus 1,500 title → abstract pseudo-pairs of the corpus, each row with one
BM25 hard negative (ranks 10-50 of the whole 5,183-abstract corpus; the data of the bi-encoder recipe
``minilm-scifact``): nDCG@10 of exact MaxSim over the whole corpus. The recipe ``minilm-scifact-colbert`` is
the dev arm's model itself (trained on tune-train; ``embedstack recipe minilm-scifact-colbert`` retrains it with
the same data, settings and seed), scored once on the report half (``report``, one encoding of the corpus):
exact MaxSim, the index's candidate search, and RRF hybrids with BM25 and the dense bi-encoder. The compressed index (fp16, 2-bit and
1-bit residuals: bytes per document beside nDCG@10) is measured by benchmarks/colbert_peers.py.

Every ColBERT starts from all-MiniLM-L6-v2's weights (``ColBERT.from_pretrained_encoder``: a fresh 128-d
projection), queries padded to 32 tokens, documents cut at 256 tokens in training and at inference.

Arms (``--arms``; each result is kept in results/train_colbert_arms.json and reused unless ``--fresh``):
``dev-*`` (DEV_CONFIGS), ``report``.

Usage:
    EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/train_colbert.py [--arms dev-lr1e-4] [--fresh]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import load_arms as _load_arms  # noqa: E402
from _report import log, rrf_runs, write_results  # noqa: E402
from _report import save_arm as _save_arm  # noqa: E402

# settings shared by every dev arm unless the arm overrides them (fixed before the first run)
SETTINGS: dict[str, Any] = {"epochs": 1, "batch_size": 32, "lr": 1e-4, "head_lr_scale": 10.0, "warmup_ratio": 0.1,
                            "precision": "bf16", "max_seq_length": 256, "seed": 0, "save_steps": None}
MINING: dict[str, Any] = {"num_negatives": 1, "range_min": 10, "range_max": 50}
MODEL_OPTIONS: dict[str, Any] = {"query_length": 32, "document_length": 256}
DEV_CONFIGS: dict[str, dict[str, Any]] = {
    "dev-lr1e-4": {"label": "lr 1e-4, projection 10x (the bi-encoder recipe's learning rate)"},
    # defined but not run in the session that trained dev-lr1e-4 (2 cores: about 25 minutes each)
    "dev-lr3e-5": {"args": {"lr": 3e-5}, "label": "lr 3e-5, projection 10x"},
    "dev-distill": {"teacher": "recipe:minilm-scifact-ce",
                    "label": "lr 1e-4, in-batch softmax + KL to the cross-encoder minilm-scifact-ce's scores"},
    # after SPLADE's dev-ict-all (+9.0 on tune-dev over its recipe): the same data
    "dev-ict-all": {"data": ("scifact/train#tune-train",) * 3 + ("scifact-ict:5182", "scifact-titles:1500"),
                    "label": "lr 1e-4, tune-train pairs x3 + an inverse-cloze pseudo-pair from every abstract (5,182)"},
}
MODELS = Path(tempfile.gettempdir()) / "embedstack-train-colbert"  # the dev arms' trained models
DATA = ("scifact/train#tune-train", "scifact-titles:1500")  # the recipe's (named sets, as recipes name them)


def train_data(corpus: list[str], names: tuple[str, ...] = DATA) -> Any:
    from embedstack.training.mining import mine_hard_negatives
    from embedstack.training.recipes import _concat
    from embedstack.training.run import training_data

    data = _concat([training_data(name) for name in names])
    res = mine_hard_negatives((data.column("anchor"), data.column("positive")), corpus, method="bm25", **MINING)
    log(f"mined bm25: {res.stats['rows_out']}/{res.stats['rows_in']} rows, {res.stats['seconds']:.0f}s")
    return res.data


def run_dev(name: str, corpus: list[str]) -> dict[str, Any]:
    """Train on tune-train (+ titles), score exact MaxSim on tune-dev."""
    from embedstack.data import load_beir
    from embedstack.evaluation.runners import evaluate_retrieval
    from embedstack.training.evaluators import query_half
    from embedstack.training.run import train_colbert
    from embedstack.training.trainer import TrainingArgs

    cfg = DEV_CONFIGS[name]
    dev = query_half(load_beir("scifact", split="train"), "tune-dev")
    data = train_data(corpus, cfg.get("data", DATA))
    args = TrainingArgs(**{**SETTINGS, **cfg.get("args", {})})
    teacher = None
    if cfg.get("teacher"):
        from embedstack.training.recipes import resolve_start

        teacher = resolve_start(cfg["teacher"]) + "@precision=bf16,max_seq_length=256"
    t0 = time.perf_counter()
    res = train_colbert("all-MiniLM-L6-v2", data, out=MODELS / name, force=True, args=args, teacher=teacher,
                        model_options=MODEL_OPTIONS, stage=log,
                        progress=lambda i: log(f"  step {i['step']}/{i['total']} loss {i['loss']:.3f}")
                        if i["step"] % 10 == 0 else None)
    from embedstack.neural.colbert import ColBERT

    model = ColBERT.from_folder(MODELS / name, precision="bf16")
    scores = evaluate_retrieval(model, dev, latency_queries=0)
    log(f"{name}: tune-dev nDCG@10 {100 * scores['ndcg@10']:.2f}")
    return {"ndcg@10": 100 * scores["ndcg@10"], "recall@100": 100 * scores["recall@100"], "rows": len(data),
            "steps": res.steps, "train_seconds": res.seconds, "rows_per_second": res.pairs_per_second,
            "scored_on": "tune-dev", "n_queries": scores["n_queries"], "seconds": time.perf_counter() - t0,
            "final_loss": res.final_loss, "label": cfg["label"]}


def run_report() -> dict[str, Any]:
    """The recipe on the report half, from one encoding of the corpus: exact MaxSim, the index's candidate search
    (centroids, then exact MaxSim on the candidates), and RRF (k=60) hybrids of the exact run with BM25's and dense
    all-MiniLM-L6-v2's runs (the standard runner's)."""
    from embedstack.data import load_beir
    from embedstack.evaluation.metrics import evaluate_run
    from embedstack.evaluation.runners import evaluate_retrieval
    from embedstack.index import MultiVectorIndex
    from embedstack.models import resolve
    from embedstack.neural.colbert import ColBERT
    from embedstack.training.evaluators import query_half
    from embedstack.training.recipes import recipe_dir

    beir = load_beir("scifact", split="train")
    report = query_half(beir, "report")
    doc_ids = [str(d) for d in beir.doc_ids()]
    qids = [str(q) for q in report.query_ids()]
    qrels = {q: report.qrels[q] for q in qids}
    model = ColBERT.from_folder(recipe_dir("minilm-scifact-colbert"), precision="bf16")
    log("encoding the corpus (bf16)")
    index = MultiVectorIndex(model.dim)
    index.add(model.encode_tokens(beir.doc_texts(), batch_size=32), doc_ids)
    q_vecs = model.encode_tokens(list(report.query_texts()), role="query")

    def run_of(hits: list[list[Any]]) -> dict[str, dict[str, float]]:
        return {q: {h.id: float(h.score) for h in row} for q, row in zip(qids, hits, strict=True)}

    def cell(run: dict[str, dict[str, float]]) -> dict[str, float]:
        m = evaluate_run(run, qrels, ["ndcg@10", "recall@100"])
        return {"ndcg@10": 100 * m["ndcg@10"], "recall@100": 100 * m["recall@100"]}

    runs = {"ColBERT": run_of(index.exact_search(q_vecs, k=100))}
    index.train()
    out: dict[str, Any] = {"n_queries": len(qids), "cells": {"ColBERT (exact MaxSim)": cell(runs["ColBERT"]),
                                                              "ColBERT (multivector index: centroid candidates)":
                                                                  cell(run_of(index.search(q_vecs, k=100)))}}
    for label, spec in (("BM25", "bm25"), ("dense MiniLM", "all-MiniLM-L6-v2")):
        res = evaluate_retrieval(resolve(spec), report, latency_queries=0, return_run=True)
        runs[label] = res["run"]
        out["cells"][label] = {"ndcg@10": 100 * res["ndcg@10"], "recall@100": 100 * res["recall@100"]}
    for label, a, b in (("ColBERT + BM25 (RRF)", "ColBERT", "BM25"), ("ColBERT + dense MiniLM (RRF)", "ColBERT",
                                                                      "dense MiniLM")):
        out["cells"][label] = cell(rrf_runs(runs[a], runs[b]))
    log(f"cells: {out['cells']}")
    out["ndcg@10"] = out["cells"]["ColBERT (exact MaxSim)"]["ndcg@10"]
    return out


def markdown(arms: dict[str, Any]) -> str:
    lines = ["`EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/train_colbert.py --arms dev-lr1e-4,report` — ColBERT "
             "trained here from all-MiniLM-L6-v2 (fresh 128-d projection, queries [MASK]-padded to 32 tokens, documents "
             "cut at 256), one configuration fixed before the run (lr 1e-4 as the bi-encoder recipe, projection 10x, "
             "batch 32, 1 epoch, bf16, seed 0).", "",
             "Dev arm: trained on tune-train + 1,500 title pairs (1 BM25 negative each, ranks 10-50), scored on tune-dev "
             "(exact MaxSim over the 5,183 abstracts, bf16 inference). Train seconds were measured with other jobs "
             "sharing the 2 cores (an upper bound).", "",
             "| arm | configuration | rows | steps | train s | tune-dev nDCG@10 | recall@100 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, a in arms.items():
        if not name.startswith("dev-"):
            continue
        lines.append(f"| {name} | {a['label']} | {a['rows']} | {a['steps']} | {a['train_seconds']:.0f} | "
                     f"{a['ndcg@10']:.2f} | {a['recall@100']:.2f} |")
    if "report" in arms:
        r = arms["report"]
        lines += ["", f"The recipe `minilm-scifact-colbert` (the dev arm's model) on the report half "
                  f"({r['n_queries']} queries never tuned on), bf16:", "",
                  "| system | nDCG@10 | Recall@100 |", "|---|---:|---:|"]
        for name, c in r["cells"].items():
            lines.append(f"| {name} | {c['ndcg@10']:.2f} | {c['recall@100']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arms", default=",".join(DEV_CONFIGS))
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--no-save", action="store_true")
    opts = ap.parse_args()
    from embedstack.data import load_beir

    corpus = load_beir("scifact", split="train").doc_texts()
    done = _load_arms("train_colbert")
    for name in filter(None, opts.arms.split(",")):
        if name in done and not opts.fresh:
            log(f"{name}: kept ({done[name]['ndcg@10']:.2f})")
            continue
        log(f"arm {name}")
        result = run_report() if name == "report" else run_dev(name, corpus)
        if not opts.no_save:
            _save_arm("train_colbert", name, result)
        done[name] = result
    if not opts.no_save:
        write_results("train_colbert", {"arms": done, "settings": SETTINGS, "mining": MINING,
                                        "model_options": MODEL_OPTIONS}, markdown(done))
    print(markdown(done))


if __name__ == "__main__":
    main()
