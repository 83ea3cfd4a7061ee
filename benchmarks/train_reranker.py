"""Cross-encoder (reranker) training on SciFact and retrieve-then-rerank quality (issue 17), scored on a
split never tuned on.

SciFact's judged train queries are split once (``query_half``, 50/50, seed 0) into a *tune* half and a
*report* half. Configurations are compared on ``tune-dev`` (30% of the tune half's queries) after
training on ``tune-train`` (the other 70%): nDCG@10 after reranking BM25's top 50. The chosen
configuration is the recipe ``minilm-scifact-ce``: the dev arm's model itself (trained on tune-train only, so
tune-dev stays unseen for choosing the fusion weight; ``embedstack recipe minilm-scifact-ce`` retrains it
with the same data, settings and seed), scored once on the report half, with BM25, dense (all-MiniLM-L6-v2) and hybrid (RRF of the two) first stages at rerank
depths 10, 50 and 100, against the same first stages without reranking.

Every cross-encoder starts from all-MiniLM-L6-v2's weights (``CrossEncoder.from_pretrained_encoder``:
BERT pooler started as the identity, a fresh one-logit classifier). Negatives are mined with BM25 over
the whole 5,183-abstract corpus (the query's judged positives are never negatives).

Arms (``--arms``; each result is kept in results/train_reranker_arms.json and reused unless ``--fresh``):
``dev-*`` (DEV_CONFIGS), ``dev-blend`` (how to blend the recipe with a hybrid first stage, on tune-dev; opt-in;
``dev-blend-cut-128`` / ``dev-blend-windows-128`` / ``dev-blend-windows-256`` the same with the reranker reading
abstracts cut at 128 tokens or as windows, ``doc_stride``: BLEND_ARMS),
``hybrid-fusion`` (RRF against z-score blends of BM25 and dense with no reranker: chosen on tune-dev, scored on
the report half; opt-in),
``report`` (the recipe on the report half, every pipeline and depth; ``report-windows-128`` etc. with the reading
of its blend arm: REPORT_ARMS).

Usage:
    EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/train_reranker.py [--arms dev-listwise] [--fresh]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import load_arms as _load_arms  # noqa: E402
from _report import log, write_results  # noqa: E402
from _report import save_arm as _save_arm  # noqa: E402

# settings shared by every dev arm unless the arm overrides them (fixed before the first run)
SETTINGS: dict[str, Any] = {"epochs": 1, "batch_size": 16, "lr": 5e-5, "head_lr_scale": 10.0, "warmup_ratio": 0.1,
                            "precision": "bf16", "max_seq_length": 256, "seed": 0, "save_steps": None}
MINING: dict[str, Any] = {"num_negatives": 4, "range_min": 0, "range_max": 50, "sampling": "random"}
DEV_CONFIGS: dict[str, dict[str, Any]] = {
    "dev-listwise": {"loss": "listwise", "args": {"epochs": 3},
                     "label": "tune-train pairs, 4 BM25 negatives (ranks 0-50), listwise, 3 epochs (scored at 512 tokens)"},
    "dev-listwise-long": {"loss": "listwise", "args": {"epochs": 10, "lr": 1e-4, "max_seq_length": 128, "eval_steps": 44},
                          "label": "as dev-listwise, documents cut at 128 tokens in training, lr 1e-4, 10 epochs"},
    "dev-ict-128": {"loss": "listwise", "args": {"epochs": 1, "lr": 5e-5, "max_seq_length": 128}, "ict": 5182,
                    "titles": 1500, "copies": 3,
                    "label": "tune-train pairs x3 + all 5,182 ICT pseudo-pairs + 1,500 title pairs, 4 BM25 negatives, "
                             "listwise, documents cut at 128 tokens in training, lr 5e-5, 1 epoch"},
    "dev-ict-128-lr1e-4": {"loss": "listwise", "args": {"epochs": 1, "lr": 1e-4, "max_seq_length": 128, "eval_steps": 160},
                           "ict": 5182, "titles": 1500, "copies": 3,
                           "label": "as dev-ict-128, lr 1e-4 (the bi-encoder recipe's learning rate)"},
    "dev-ict-last-128": {"loss": "listwise", "args": {"epochs": 1, "lr": 5e-5, "max_seq_length": 128}, "ict": 5182,
                         "ict_set": "scifact-ict-last", "titles": 1500, "copies": 3,
                         "label": "as dev-ict-128, each ICT pseudo-query the abstract's last sentence (its conclusion, "
                                  "closest in form to a SciFact claim) instead of a random one"},
    "dev-ict-128-distill": {"loss": "listwise", "args": {"epochs": 1, "lr": 5e-5, "max_seq_length": 128}, "ict": 5182,
                            "titles": 1500, "copies": 3, "teacher": "recipe:minilm-scifact-tune-train@precision=bf16",
                            "label": "as dev-ict-128, plus KL to a bi-encoder teacher's 20 · cosine over each group "
                                     "(recipe minilm-scifact-tune-train: minilm-scifact trained on tune-train only)"},
    "dev-ict-128-graded": {"loss": "listwise", "args": {"epochs": 1, "lr": 5e-5, "max_seq_length": 128}, "ict": 5182,
                           "titles": 1500, "copies": 3,
                           "graded": (("beir-subsets-agentset/msmarco", 2), ("beir-subsets-agentset/dbpedia", 1)),
                           "label": "as dev-ict-128, plus the judged pairs of two other domains: MS MARCO passages "
                                    "(TREC DL 2019, grade >= 2: 2,497 pairs of 43 queries) and DBPedia entities "
                                    "(grade >= 1: 880 pairs of 40 queries), each with 4 BM25 negatives from its own "
                                    "5,000-document corpus (never a judged-relevant one)"},
    "dev-bce": {"loss": "bce", "args": {"epochs": 3},
                "label": "as dev-listwise, binary cross-entropy (positive weighted 4)"},
    "dev-listwise-keep-pooler": {"loss": "listwise", "args": {"epochs": 3}, "pooler": "keep",
                                 "label": "as dev-listwise, all-MiniLM-L6-v2's untrained pooler kept"},
    "dev-listwise-head1": {"loss": "listwise", "args": {"epochs": 3, "head_lr_scale": 1.0},
                           "label": "as dev-listwise, head at the transformer's learning rate"},
    "dev-listwise-ict": {"loss": "listwise", "args": {"epochs": 1}, "ict": 3000,
                         "label": "tune-train pairs x3 + 3,000 ICT pseudo-pairs, 4 BM25 negatives, listwise, 1 epoch"},
}
DEPTHS = (10, 50, 100)
EVAL_MAX_LEN = 256  # tokens of a (query, abstract) pair at inference (the query kept whole)
FIRST_STAGES = {"bm25": ["bm25"], "dense": ["all-MiniLM-L6-v2"], "hybrid": ["bm25", "all-MiniLM-L6-v2"]}


def mined(data: Any, corpus: list[str], options: dict[str, Any] | None = None) -> Any:
    from embedstack.training.mining import mine_hard_negatives

    res = mine_hard_negatives((data.column("anchor"), data.column("positive")), corpus, method="bm25",
                              **{**MINING, **(options or {})})
    log(f"mined bm25: {res.stats['rows_out']}/{res.stats['rows_in']} rows, {res.stats['seconds']:.0f}s")
    return res.data


def train_data(cfg: dict[str, Any], corpus: list[str], half: str) -> Any:
    from embedstack.training.recipes import _concat
    from embedstack.training.run import training_data

    real = training_data(f"scifact/train#{half}")
    parts = [real] * cfg.get("copies", 1)
    if cfg.get("ict"):
        parts.append(training_data(f"{cfg.get('ict_set', 'scifact-ict')}:{cfg['ict']}"))
    if cfg.get("titles"):
        parts.append(training_data(f"scifact-titles:{cfg['titles']}"))
    groups = [mined(_concat(parts), corpus, cfg.get("mining"))]
    groups += [graded_groups(source, grade, cfg.get("mining")) for source, grade in cfg.get("graded", ())]
    return _concat(groups)


def graded_groups(source: str, min_grade: int, mining: dict[str, Any] | None = None) -> Any:
    """(query, document) pairs judged ``min_grade`` or better in the BEIR folder ``source`` (under the data
    directory; its qrels/test.tsv), each with BM25 negatives from that folder's own corpus: every document judged
    relevant (grade >= 1) to the query is excluded from its negatives, the pairs below ``min_grade`` then dropped."""
    from embedstack.data import load_beir
    from embedstack.data._registry import data_dir
    from embedstack.training.data import TrainingData

    if data_dir() is None:
        raise SystemExit(f"{source} is read from the data directory: set EMBEDSTACK_DATA_DIR (e.g. ../shared/data)")
    ds = load_beir(data_dir() / source, split=None)  # its one qrels split
    text = dict(zip(ds.doc_ids(), ds.doc_texts(), strict=True))
    query = dict(zip(ds.query_ids(), ds.query_texts(), strict=True))
    judged = [(query[q], text[d], g) for q, docs in ds.qrels.items() for d, g in docs.items() if g >= 1 and d in text]
    data = TrainingData.from_columns({"anchor": [a for a, _, _ in judged], "positive": [p for _, p, _ in judged]},
                                     source=f"{source} (judged >= 1)")
    groups = mined(data, list(text.values()), mining)
    keep = {(a, p) for a, p, g in judged if g >= min_grade}
    rows = [i for i, (a, p) in enumerate(zip(groups.column("anchor"), groups.column("positive"), strict=True))
            if (a, p) in keep]
    log(f"{source}: {len(rows)} pairs of grade >= {min_grade} ({len(judged)} judged >= 1)")
    return groups.select(rows)


def train(cfg: dict[str, Any], data: Any, evaluator: Any = None) -> tuple[Any, Any]:
    from embedstack.training.ce_losses import BinaryCrossEntropyLoss
    from embedstack.training.cross import CrossEncoderTrainer, groups_to_labelled_pairs
    from embedstack.training.recipes import resolve_start
    from embedstack.training.run import _load_teacher, load_cross_encoder_start
    from embedstack.training.trainer import TrainingArgs

    args = TrainingArgs(**{**SETTINGS, **cfg.get("args", {})})
    ce = load_cross_encoder_start(f"all-MiniLM-L6-v2@max_seq_length={EVAL_MAX_LEN}", pooler=cfg.get("pooler", "identity"),
                                  seed=args.seed)
    loss: Any = cfg.get("loss", "listwise")
    if loss == "bce":
        k = sum(1 for c in data.columns if c.startswith("negative_"))
        data = groups_to_labelled_pairs(data)
        loss = BinaryCrossEntropyLoss(pos_weight=float(k))
    teacher = cfg.get("teacher") and _load_teacher(resolve_start(cfg["teacher"], stage=log), log)
    t0 = time.perf_counter()
    result = CrossEncoderTrainer(ce, loss, data, args=args, evaluator=evaluator, teacher=teacher,
                                 progress=lambda i: log(f"  step {i['step']}/{i['total']} loss {i['loss']:.3f}")
                                 if i["step"] % 20 == 0 else None).train()
    log(f"trained on {len(data)} rows: {result.steps} steps, {time.perf_counter() - t0:.0f}s, "
        f"{result.pairs_per_second:.1f} rows/s")
    return ce, result


MODELS = Path(tempfile.gettempdir()) / "embedstack-train-reranker"  # the dev arms' trained cross-encoders
ALPHAS = (0.3, 0.5, 0.7, 0.9)  # reranker weight of convex-z fusion with the first stage, compared on tune-dev


class CachedReranker:
    """A cross-encoder whose scores are computed once per (query, document) pair and looked up afterwards, so
    every first stage, depth and fusion weight is reranked by exactly the same scores through the real
    Pipeline code."""

    def __init__(self, ce: Any) -> None:
        self.ce, self.cache, self.name = ce, {}, getattr(ce, "name", "cross-encoder")

    def fill(self, pairs: list[tuple[str, str]], batch_size: int = 32) -> float:
        todo = sorted({p for p in pairs if p not in self.cache})
        t0 = time.perf_counter()
        for s in range(0, len(todo), 4096):
            chunk = todo[s:s + 4096]
            self.cache.update(zip(chunk, map(float, self.ce.predict(chunk, batch_size=batch_size)), strict=True))
            log(f"  scored {min(s + 4096, len(todo)):,}/{len(todo):,} pairs")
        return time.perf_counter() - t0

    def score(self, pairs: Any) -> np.ndarray:
        return np.asarray([self.cache[(q, d)] for q, d in pairs], dtype=np.float32)

    def rank(self, query: str, documents: Any, **_: Any) -> list[dict[str, Any]]:
        s = self.score([(query, d) for d in documents])
        return [{"corpus_id": int(i), "score": float(s[i])} for i in np.argsort(-s, kind="stable")]


class Bench:
    """First stages built once on a query set (BM25, all-MiniLM-L6-v2 and their RRF hybrid, 100 candidates), and
    the metrics of any reranked pipeline on it."""

    def __init__(self, dataset: Any, stages: tuple[str, ...] = tuple(FIRST_STAGES)) -> None:
        from embedstack.models import resolve
        from embedstack.retrieval.build import build_index
        from embedstack.retrieval.pipeline import Retriever

        self.queries = dict(zip(dataset.query_ids(), dataset.query_texts(), strict=True))
        texts = dict(zip(dataset.doc_ids(), dataset.doc_texts(), strict=True))
        self.qrels = {q: dict(dataset.qrels[q]) for q in self.queries}
        self.stages = stages
        self.retrievers = {}
        for spec in sorted({s for st in stages for s in FIRST_STAGES[st]}):  # each index built once
            enc = resolve(spec)
            self.retrievers[spec] = Retriever(spec, enc, build_index(list(texts.values()), list(texts), enc, spec=spec),
                                              check=False)

    def results(self, stage: str, reranker: Any = None, depth: int | None = None, alpha: float | None = None,
                fusion: str = "rrf:60") -> Any:
        """The same Pipeline evaluate_pipeline runs (``fusion`` for two stages, 100 candidates, rerank the top depth)."""
        from embedstack.index import ConvexFusion
        from embedstack.retrieval.evaluate import parse_fusion
        from embedstack.retrieval.pipeline import Pipeline

        pipe = Pipeline([self.retrievers[s] for s in FIRST_STAGES[stage]], fusion=parse_fusion(fusion), candidates=100,
                        reranker=reranker, rerank_top=depth,
                        rerank_fusion=None if alpha is None else ConvexFusion(alpha, normalization="zscore"))
        return pipe.search_batch(list(self.queries.values()), 100)

    def pairs(self, depth: int = 100) -> list[tuple[str, str]]:
        out = []
        for stage in self.stages:
            for q, r in zip(self.queries.values(), self.results(stage), strict=True):
                out += [(q, h.text) for h in r.hits[:depth]]
        return out

    def metrics(self, stage: str, reranker: Any = None, depth: int | None = None,
                alpha: float | None = None, fusion: str = "rrf:60") -> dict[str, float]:
        from embedstack.evaluation.metrics import mrr_at_k, ndcg_at_k, recall_at_k

        res = self.results(stage, reranker, depth, alpha, fusion)
        run = {qid: {h.id: float(len(r.hits) - i) for i, h in enumerate(r.hits)}  # final rank order
               for qid, r in zip(self.queries, res, strict=True)}
        return {"ndcg@10": 100 * ndcg_at_k(run, self.qrels, 10), "mrr@10": 100 * mrr_at_k(run, self.qrels, 10),
                "recall@100": 100 * recall_at_k(run, self.qrels, 100)}


def run_dev(name: str, corpus: list[str]) -> dict[str, Any]:
    """Train on tune-train, rerank BM25's top 50 on tune-dev, alone and fused with BM25 (ALPHAS)."""
    from embedstack.data import load_beir
    from embedstack.training.evaluators import RerankEvaluator, query_half

    cfg = DEV_CONFIGS[name]
    dev = query_half(load_beir("scifact", split="train"), "tune-dev")
    bench = Bench(dev, ("bm25",))
    during = RerankEvaluator(dev, depth=20) if cfg.get("args", {}).get("eval_steps") else None
    data = train_data(cfg, corpus, "tune-train")
    t0 = time.perf_counter()
    ce, res = train(cfg, data, during)
    ce.save(MODELS / name, force=True)  # kept, so other fusion weights or depths can be scored later
    cached = CachedReranker(ce.with_options(**reranker_options({})))
    cached.fill(bench.pairs(50))
    scores = bench.metrics("bm25", cached, 50)
    fused = {f"{a:g}": bench.metrics("bm25", cached, 50, a)["ndcg@10"] for a in ALPHAS}
    return {**scores, "fused": fused, "first_stage": {"name": "bm25", **bench.metrics("bm25")}, "rows": len(data),
            "steps": res.steps, "train_seconds": res.seconds, "rows_per_second": res.pairs_per_second,
            "scored_on": "tune-dev", "seconds": time.perf_counter() - t0, "final_loss": res.final_loss,
            "during": [{"step": e["step"], **e["eval"]} for e in res.log if "eval" in e]}


BLEND_ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7)
# the recipes scored by the blend study on tune-dev, and on the report half (with the blend arm that chooses for it)
# inference options of a blend / report arm's reranker (beyond bf16 at EVAL_MAX_LEN tokens): doc_stride reads a long
# abstract as overlapping windows, a pair's score its best window's (BERT-MaxP), instead of cutting it
WINDOWS_128 = {"max_seq_length": 128, "doc_stride": 32}  # windows at the recipe's training length (pairs of 128 tokens)
WINDOWS_256 = {"max_seq_length": 256, "doc_stride": 64}
CUT_128 = {"max_seq_length": 128}  # the control: the training length, documents cut (their first window alone)
BLEND_ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "dev-blend": ("minilm-scifact-ce", {}), "dev-blend-distill": ("minilm-scifact-ce-distill", {}),
    "dev-blend-cut-128": ("minilm-scifact-ce", CUT_128),
    "dev-blend-windows-128": ("minilm-scifact-ce", WINDOWS_128),
    "dev-blend-windows-256": ("minilm-scifact-ce", WINDOWS_256)}
REPORT_ARMS = {"report": ("minilm-scifact-ce", "dev-blend"), "report-distill": ("minilm-scifact-ce-distill",
                                                                               "dev-blend-distill"),
               "report-cut-128": ("minilm-scifact-ce", "dev-blend-cut-128"),
               "report-windows-128": ("minilm-scifact-ce", "dev-blend-windows-128"),
               "report-windows-256": ("minilm-scifact-ce", "dev-blend-windows-256")}


def reranker_options(options: dict[str, Any]) -> dict[str, Any]:
    """The CrossEncoder options every scoring arm uses, overridden by an arm's own (``BLEND_ARMS``)."""
    return {"precision": "bf16", "max_seq_length": EVAL_MAX_LEN, **options}


def describe_options(options: dict[str, Any]) -> str:
    if options.get("doc_stride") is None:
        return f"documents cut at {options.get('max_seq_length', EVAL_MAX_LEN)} tokens"
    return (f"each abstract read as windows of {options.get('max_seq_length', EVAL_MAX_LEN)} tokens (query "
            f"included) sharing {options['doc_stride']}, a pair scored by its best window (`doc_stride`)")


def chosen_blend(blend: dict[str, Any]) -> tuple[float, int]:
    """(α, depth) of the best ``--rerank-fusion convex-z:α`` cell (CE against the hybrid's RRF score) on tune-dev."""
    key = max((k for k in blend["cells"] if k.startswith("ce+first")), key=blend["cells"].get)
    a, d = key.removeprefix("ce+first").split("@")
    return float(a), int(d)


def _ndcg_of_orders(bench: Any, results: Any, order_of: Any, depth: int) -> float:
    """nDCG@10 x100 when each query's top ``depth`` hits are reordered by ``order_of(qid, hits) -> indices`` and
    the rest follow in first-stage order."""
    from embedstack.evaluation.metrics import ndcg_at_k

    run: dict[str, dict[str, float]] = {}
    for qid, r in zip(bench.queries, results, strict=True):
        top = r.hits[:depth]
        run[qid] = {top[i].id: float(len(top) - j) for j, i in enumerate(order_of(qid, top))}
        run[qid].update({h.id: -float(j + 1) for j, h in enumerate(r.hits[depth:])})
    return 100 * ndcg_at_k(run, bench.qrels, 10)


def _blend(hits: Any, lists: dict[str, Any], weights: dict[str, float]) -> list[int]:
    """Positions of ``hits`` in the order of the library's z-score ``convex_fusion`` (the code behind
    ``--fusion convex-z`` and ``--rerank-fusion``) of ``lists``: a name of a retriever takes its own scores from
    ``Hit.stages`` (a hit it did not retrieve gets that list's lowest z), anything else is an array of scores."""
    from embedstack.base import Hit
    from embedstack.index.fusion import convex_fusion

    runs = {name: [Hit(h.id, float(v)) for h, v in zip(hits, src, strict=True)] if not isinstance(src, str)
            else [Hit(h.id, h.stages[src]) for h in hits if src in h.stages] for name, src in lists.items()}
    at = {h.id: i for i, h in enumerate(hits)}
    order = [at[f.id] for f in convex_fusion(runs, weights, k=len(hits), normalization="zscore")]
    # a hit in none of the lists has every list's lowest score: last, in first-stage order
    return order + sorted(set(range(len(hits))) - set(order))


def run_blend(recipe: str = "minilm-scifact-ce", options: dict[str, Any] | None = None) -> dict[str, Any]:
    """How to blend the recipe (trained on tune-train) with a hybrid first stage, chosen on tune-dev: the
    reranker against the first stage's fused (RRF) score (``--rerank-fusion convex-z:α``), against each
    retriever's own z-scored score, and -- the control -- BM25 and dense z-scored against each other with no
    reranker at all, over the same candidates."""
    from embedstack.data import load_beir
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.training.evaluators import query_half
    from embedstack.training.recipes import recipe_dir

    folder = recipe_dir(recipe)
    if not (folder / "embedstack.json").is_file():
        raise SystemExit(f"build the recipe first: embedstack recipe {recipe}")
    bench = Bench(query_half(load_beir("scifact", split="train"), "tune-dev"), ("bm25", "hybrid"))
    cached = CachedReranker(CrossEncoder.from_folder(folder, **reranker_options(options or {})))
    seconds = cached.fill(bench.pairs(100))
    # the dev arms' own cell (BM25's top 50, alone and fused), for the recipe as built on this machine
    on_bm25 = {**bench.metrics("bm25", cached, 50),
               "fused": {f"{a:g}": bench.metrics("bm25", cached, 50, a)["ndcg@10"] for a in ALPHAS}}
    res = bench.results("hybrid")
    names = FIRST_STAGES["hybrid"]
    ce = {q: {h.id: cached.cache[(bench.queries[q], h.text)] for h in r.hits} for q, r in zip(bench.queries, res,
                                                                                          strict=True)}
    def with_ce(fn: Any) -> Any:  # order_of(qid, hits) from fn(hits, the reranker's scores of hits)
        return lambda q, hits: fn(hits, np.array([ce[q][h.id] for h in hits]))

    cells: dict[str, float] = {"hybrid": _ndcg_of_orders(bench, res, lambda q, h: range(len(h)), 100)}
    for depth in DEPTHS:
        variants: dict[str, Any] = {"ce": lambda h, s: np.argsort(-s, kind="stable")}
        for a in BLEND_ALPHAS:
            variants[f"ce+first{a:g}"] = lambda h, s, a=a: _blend(
                h, {"ce": s, "first": [x.score for x in h]}, {"ce": a, "first": 1 - a})
            variants[f"ce+retrievers{a:g}"] = lambda h, s, a=a: _blend(
                h, {"ce": s, **{n: n for n in names}}, {"ce": a, **{n: (1 - a) / 2 for n in names}})
            variants[f"no-ce, bm25 weight {a:g}"] = lambda h, s, a=a: _blend(
                h, {n: n for n in names}, {names[0]: a, names[1]: 1 - a})
        for key, fn in variants.items():
            cells[f"{key}@{depth}"] = _ndcg_of_orders(bench, res, with_ce(fn), depth)
    return {"recipe": recipe, "options": options or {}, "scored_on": "tune-dev", "n_queries": len(bench.queries),
            "cells": cells,
            "bm25_top50": on_bm25,
            "pairs_scored": len(cached.cache), "score_seconds": seconds, "ndcg@10": cells["hybrid"]}


HYBRID_FUSIONS = ("rrf",) + tuple(f"convex-z:{a:g}" for a in BLEND_ALPHAS)


def run_hybrid_fusion() -> dict[str, Any]:
    """The blend study's control as a product setting: the Pipeline that ``eval retrieval --model bm25 --with
    all-MiniLM-L6-v2 --fusion F`` runs (100 candidates per retriever) for RRF and z-score blends (α = BM25's
    weight), the weight chosen on tune-dev and then scored once on the report half (indexes built once per half)."""
    from embedstack.data import load_beir
    from embedstack.training.evaluators import query_half

    beir = load_beir("scifact", split="train")

    def scores(half: str, fusions: Any) -> dict[str, float]:
        bench = Bench(query_half(beir, half), ("hybrid",))
        return {f: bench.metrics("hybrid", fusion=f)["ndcg@10"] for f in fusions}

    dev = scores("tune-dev", HYBRID_FUSIONS)
    chosen = max((f for f in dev if f != "rrf"), key=dev.get)
    rep = scores("report", ("rrf", chosen))
    log(f"hybrid fusion: tune-dev {dev}; report {rep}")
    return {"tune_dev": dev, "chosen": chosen, "report": rep, "ndcg@10": rep[chosen]}


def run_report(recipe: str = "minilm-scifact-ce", alpha: float | None = None,
               options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recipe (built into the recipe cache if needed) reranking every first stage at every depth on the
    report half, alone and fused with the first stage at ``alpha`` (chosen on tune-dev); one scoring pass over
    the union of all candidate pairs, then the real Pipeline for each cell."""
    from embedstack.data import load_beir
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.retrieval.evaluate import evaluate_pipeline
    from embedstack.training.evaluators import query_half
    from embedstack.training.recipes import build_recipe, get_recipe, recipe_dir

    folder = recipe_dir(recipe)
    built: dict[str, Any] = {}
    if not (folder / "embedstack.json").is_file():
        built, folder = build_recipe(get_recipe(recipe), score=False, stage=log,
                                     progress=lambda i: log(f"  step {i['step']}/{i['total']} loss {i['loss']:.3f}")
                                     if i["step"] % 50 == 0 else None)
    ce = CrossEncoder.from_folder(folder, **reranker_options(options or {}))
    report = query_half(load_beir("scifact", split="train"), "report")
    bench = Bench(report)
    cached = CachedReranker(ce)
    pairs = bench.pairs(100)
    log(f"scoring {len(set(pairs)):,} distinct (query, abstract) pairs of {len(pairs):,}")
    out: dict[str, Any] = {"recipe": recipe, "options": options or {}, "train": built.get("train"), "n_queries": len(bench.queries),
                           "alpha": alpha, "cells": {}, "score_seconds": cached.fill(pairs)}
    out["pairs_scored"] = len(cached.cache)
    for stage in FIRST_STAGES:
        out["cells"][stage] = bench.metrics(stage)
        log(f"{stage}: nDCG@10 {out['cells'][stage]['ndcg@10']:.2f}")
        for depth in DEPTHS:
            for a in (None, alpha) if alpha is not None else (None,):
                key = f"{stage}+ce@{depth}" + ("" if a is None else f"+fused{a:g}")
                out["cells"][key] = bench.metrics(stage, cached, depth, a)
                log(f"{key}: nDCG@10 {out['cells'][key]['ndcg@10']:.2f}")
    # the user's path gives the same figure: evaluate_pipeline (the `eval retrieval --rerank` code) on one cell
    check = evaluate_pipeline(["bm25"], report, k=100, reranker=cached, rerank_k=10)
    out["check_evaluate_pipeline_bm25_ce10"] = 100 * check["ndcg@10"]
    return out


def markdown(arms: dict[str, Any]) -> str:
    lines = ["### Cross-encoder training on SciFact, and retrieve-then-rerank", "",
             "`EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/train_reranker.py` — every cross-encoder starts from "
             "all-MiniLM-L6-v2's weights (BERT pooler started as the identity, a fresh one-logit head); negatives are "
             f"mined with BM25 over the whole corpus; inference in bf16 autocast, pairs cut at {EVAL_MAX_LEN} tokens "
             "(the query kept whole).", ""]
    dev = [(n, arms[n]) for n in DEV_CONFIGS if n in arms]
    if dev:
        first = dev[0][1]["first_stage"]["ndcg@10"]
        lines += ["Choosing the recipe on tune-dev (train on tune-train = 70% of the tune half's queries, rerank BM25's "
                  f"top 50 for tune-dev = the other 30%, where BM25 alone scores {first:.2f}; the report half is not "
                  "looked at). Shared settings: " + ", ".join(f"{k} {v}" for k, v in SETTINGS.items() if v is not None)
                  + "; mining " + ", ".join(f"{k} {v}" for k, v in MINING.items()) + ". *Fused α*: "
                  "α · z(cross-encoder) + (1 − α) · z(BM25) over the reranked hits (`--rerank-fusion convex-z:α`).", "",
                  "| configuration | CE alone nDCG@10 | MRR@10 | " + " | ".join(f"fused α={a:g}" for a in ALPHAS)
                  + " | rows | train s |", "|---|---:|---:|" + "---:|" * len(ALPHAS) + "---:|---:|"]
        for n, a in dev:
            fused = a.get("fused") or {}
            cells = " | ".join(f"{fused[f'{x:g}']:.2f}" if f"{x:g}" in fused else "–" for x in ALPHAS)
            lines.append(f"| {DEV_CONFIGS[n]['label']} | {a['ndcg@10']:.2f} | {a['mrr@10']:.2f} | {cells} | "
                         f"{a['rows']:,} | {a['train_seconds']:.0f} |")
        got = dict(dev)
        if {"dev-listwise", "dev-listwise-long", "dev-ict-128"} <= set(got):
            f = got["dev-ict-128"].get("fused") or {}
            best = max(f, key=f.get) if f else None
            lines += ["", "What mattered (the issue's list): more optimizer steps on shorter training pairs "
                      f"({got['dev-listwise']['ndcg@10']:.2f} → {got['dev-listwise-long']['ndcg@10']:.2f}; the "
                      "during-training curve peaks after 2 epochs, then overfits the 338 queries), then more pairs: "
                      f"inverse-cloze and title pseudo-pairs ({got['dev-ict-128']['ndcg@10']:.2f}). A larger head "
                      "learning rate and the listwise loss were in every arm (BCE and the kept pooler were not run: "
                      "each arm costs 15-30 minutes here). No arm reached BM25 alone; blending with BM25 did"
                      + (f" (α = {best}: {f[best]:.2f} against {first:.2f})" if best else "") + "."]
        if "dev-ict-128-lr1e-4" in got:
            g = got["dev-ict-128-lr1e-4"]
            lines += ["", f"Twice the learning rate did not help: {DEV_CONFIGS['dev-ict-128-lr1e-4']['label']} scored "
                      f"{g['ndcg@10']:.2f} alone and at best {max(g['fused'].values()):.2f} fused. Its during-training "
                      "check (BM25's top 20, documents at the training length of 128 tokens) is below."]
        if {"dev-ict-128", "dev-ict-128-distill"} <= set(got):
            g, b = got["dev-ict-128-distill"], got["dev-ict-128"]
            lines += ["", f"Distillation from a bi-encoder: {DEV_CONFIGS['dev-ict-128-distill']['label']} scored "
                      f"{g['ndcg@10']:.2f} alone and at best {max(g['fused'].values()):.2f} fused, against "
                      f"{b['ndcg@10']:.2f} and {max(b['fused'].values()):.2f} without the teacher."]
        during = [(n, a["during"]) for n, a in dev if a.get("during")]
        for n, d in during:
            lines += ["", f"{DEV_CONFIGS[n]['label']}: nDCG@10 on tune-dev (BM25 top 20 reranked) during training: "
                      + ", ".join(f"step {e['step']} {e['ndcg@10']:.2f}" for e in d) + "."]
    for blend in (arms[n] for n in BLEND_ARMS if n in arms):
        c = blend["cells"]
        lines += ["", f"Blending the reranker with a hybrid first stage, chosen on tune-dev ({blend['n_queries']} "
                  f"queries; the recipe `{blend['recipe']}` is trained on tune-train only; "
                  f"{describe_options(blend.get('options') or {})}; hybrid = RRF of BM25 and "
                  f"all-MiniLM-L6-v2, 100 candidates, alone {c['hybrid']:.2f}). *first α*: α · z(CE) + (1 − α) · z(RRF "
                  "score), what `--rerank-fusion convex-z:α` does; *retrievers α*: α · z(CE) + (1 − α)/2 · (z(BM25) + "
                  "z(dense)), each retriever's own score; *no CE*: the control, z(BM25) and z(dense) blended with no "
                  "reranker (weight α on BM25) over the same candidates. nDCG@10 x100:", "",
                  "| blend | " + " | ".join(f"top {d}" for d in DEPTHS) + " |", "|---|" + "---:|" * len(DEPTHS)]
        keys = ["ce"] + [f"{f}{a:g}" for f in ("ce+first", "ce+retrievers", "no-ce, bm25 weight ")
                         for a in BLEND_ALPHAS]
        for key in keys:
            label = {"ce": "CE alone"}.get(key, key.replace("ce+first", "CE, first α=").replace(
                "ce+retrievers", "CE, retrievers α=").replace("no-ce, bm25 weight ", "no CE, BM25 weight "))
            lines.append(f"| {label} | " + " | ".join(f"{c[f'{key}@{d}']:.2f}" for d in DEPTHS) + " |")
        best = {fam: max((k for k in c if k.startswith(fam)), key=c.get) for fam in ("ce+first", "ce+retrievers",
                                                                                     "no-ce")}
        lines += ["", "Best of each: " + "; ".join(f"`{k}` {c[k]:.2f} ({c[k] - c['hybrid']:+.2f})"
                                                   for k in best.values()) + "."]
        b = blend.get("bm25_top50")
        if b:
            lines += ["", f"The same model on the dev arms' own cell (BM25's top 50 on tune-dev): alone {b['ndcg@10']:.2f}, "
                      "fused " + ", ".join(f"α={a} {v:.2f}" for a, v in b["fused"].items()) + "."]
    reading = [(n, arms[n]) for n in BLEND_ARMS if n in arms and BLEND_ARMS[n][0] == "minilm-scifact-ce"]
    if len(reading) > 1:
        lines += ["", "How the reranker reads an abstract, on tune-dev (`minilm-scifact-ce`, trained on pairs of 128 tokens; "
                  "the same model in every row). *Best blend*: the best `--rerank-fusion convex-z:α` cell over α and "
                  "depth, the rule that picks the report half's setting (the row with the best such cell is carried "
                  "to the report half). nDCG@10 x100:", "",
                  "| reading | hybrid → CE alone @10 | @50 | @100 | best blend (α, depth) | BM25 top 50 → CE alone "
                  "| BM25 top 50, best fused |", "|---|---:|---:|---:|---|---:|---:|"]
        for _, b in reading:
            c, key = b["cells"], max((k for k in b["cells"] if k.startswith("ce+first")), key=b["cells"].get)
            a_, d_ = key.removeprefix("ce+first").split("@")
            lines.append(f"| {describe_options(b.get('options') or {})} | {c['ce@10']:.2f} | {c['ce@50']:.2f} | "
                         f"{c['ce@100']:.2f} | {c[key]:.2f} ({a_}, {d_}) | {b['bm25_top50']['ndcg@10']:.2f} | "
                         f"{max(b['bm25_top50']['fused'].values()):.2f} |")
        lines += ["", f"The hybrid alone scores {reading[0][1]['cells']['hybrid']:.2f} on these queries."]
    hf = arms.get("hybrid-fusion")
    if hf:
        ch = hf["chosen"]
        lines += ["", "The control as a product setting (`embedstack eval retrieval --model bm25 --with all-MiniLM-L6-v2 "
                  "--fusion F`, 100 candidates per retriever, no reranker), nDCG@10 x100 on tune-dev: "
                  + ", ".join(f"{f} {v:.2f}" for f, v in hf["tune_dev"].items()) + f". Chosen there: `{ch}` (BM25's "
                  f"weight). On the report half, scored once: RRF {hf['report']['rrf']:.2f}, `{ch}` "
                  f"{hf['report'][ch]:.2f} ({hf['report'][ch] - hf['report']['rrf']:+.2f})."]
    where = [f"`{n}` {a['measured']['date'][:10]} ({a['measured']['cpu'].split(' (')[0]})"
             for n, a in arms.items() if isinstance(a, dict) and a.get("measured")]
    if where:
        lines += ["", "Where each arm ran: " + "; ".join(where) + "."]
    for rname, rep in ((n, arms[n]) for n in REPORT_ARMS if n in arms):
        c = rep["cells"]
        alpha = rep.get("alpha")
        lines += ["", f"Report half ({rep['n_queries']} queries never tuned on, full 5,183-abstract corpus), recipe "
                  f"`{rep['recipe']}` (`embedstack recipe {rep['recipe']}`; {describe_options(rep.get('options') or {})}); "
                  "first stages retrieve 100 candidates "
                  "(hybrid: RRF k=60 of BM25 and all-MiniLM-L6-v2); nDCG@10 x100"
                  + (f"; fused: α = {alpha:g}, chosen on tune-dev" if alpha is not None else "") + ":", "",
                  "| first stage | alone | " + " | ".join(f"→ CE @{d}" for d in DEPTHS)
                  + ("" if alpha is None else " | " + " | ".join(f"→ CE @{d} fused" for d in DEPTHS)) + " |",
                  "|---|---:|" + "---:|" * len(DEPTHS) * (1 if alpha is None else 2)]
        for stage in FIRST_STAGES:
            row = [f"{c[stage]['ndcg@10']:.2f}"] + [f"{c[f'{stage}+ce@{d}']['ndcg@10']:.2f}" for d in DEPTHS]
            if alpha is not None:
                row += [f"{c[f'{stage}+ce@{d}+fused{alpha:g}']['ndcg@10']:.2f}" for d in DEPTHS]
            lines.append(f"| {stage} | " + " | ".join(row) + " |")
        best = max((k for k in c if k.startswith("hybrid+")), key=lambda k: c[k]["ndcg@10"])
        gain = c[best]["ndcg@10"] - c["hybrid"]["ndcg@10"]
        lines += ["", f"Target hybrid → CE ≥ hybrid + 2: best reranked hybrid `{best}` {c[best]['ndcg@10']:.2f} vs "
                  f"hybrid {c['hybrid']['ndcg@10']:.2f} ({gain:+.2f}): {'met' if gain >= 2 else 'not met'}. "
                  f"{rep['pairs_scored']:,} distinct pairs scored once (then looked up for every cell); "
                  f"`evaluate_pipeline` (the `eval retrieval --rerank` path) on BM25 → CE@10 gives "
                  f"{rep['check_evaluate_pipeline_bm25_ce10']:.2f} (table: {c['bm25+ce@10']['ndcg@10']:.2f})."]
        blend = arms.get(REPORT_ARMS[rname][1])
        if blend and alpha is not None and chosen_blend(blend)[0] == alpha:
            a, d = chosen_blend(blend)
            cell = c[f"hybrid+ce@{d}+fused{a:g}"]["ndcg@10"]
            lines += ["", f"Chosen on tune-dev by `{REPORT_ARMS[rname][1]}` (weight and depth): α = {a:g}, the top {d} "
                      f"reranked: **{cell:.2f} against hybrid {c['hybrid']['ndcg@10']:.2f} "
                      f"({cell - c['hybrid']['ndcg@10']:+.2f})** on the report half: target "
                      f"{'met' if cell - c['hybrid']['ndcg@10'] >= 2 else 'not met'}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arms", default=",".join(DEV_CONFIGS))
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--alpha", type=float, default=None, help="report arms: also the reranker fused with the first "
                    "stage at this weight (default: the weight the recipe's blend arm chose on tune-dev, when kept)")
    ap.add_argument("--render-last", action="store_true", help="rewrite the BENCHMARKS.md section from the kept arms "
                    "(results/train_reranker_arms.json) without training or scoring anything")
    opts = ap.parse_args(argv)
    if opts.render_last:
        import _report
        from _report import last_results, write_section

        arms = _load_arms("train_reranker")
        if not arms or not (_report.RESULTS / "train_reranker.jsonl").is_file():
            raise SystemExit("no kept arms in results/train_reranker_arms.json: run the arms first")
        write_section("train_reranker", markdown(arms), last_results("train_reranker")["machine"])
        print(markdown(arms))
        return
    from embedstack.data import load_beir

    corpus = load_beir("scifact", split="train").doc_texts()
    done = _load_arms("train_reranker")
    for name in filter(None, opts.arms.split(",")):
        if name in done and not opts.fresh:
            log(f"{name}: kept ({done[name]['ndcg@10']:.2f})")
            continue
        log(f"arm {name}")
        if name in REPORT_ARMS:
            recipe, blend = REPORT_ARMS[name]
            alpha = opts.alpha
            if alpha is None and blend in done:  # chosen on tune-dev by the recipe's own blend arm
                alpha = chosen_blend(done[blend])[0]
            elif alpha is None:
                log(f"{name}: no --alpha and no kept {blend} arm to choose one: the reranker alone, not fused "
                    f"(run {blend} first)")
            result = run_report(recipe, alpha=alpha, options=BLEND_ARMS[blend][1])
            result["ndcg@10"] = result["cells"]["hybrid+ce@100"]["ndcg@10"]
        elif name in BLEND_ARMS:
            result = run_blend(*BLEND_ARMS[name])
        elif name == "hybrid-fusion":
            result = run_hybrid_fusion()
        else:
            result = run_dev(name, corpus)
            log(f"{name}: nDCG@10 {result['ndcg@10']:.2f} (first stage {result['first_stage']['ndcg@10']:.2f})")
        if not opts.no_save:
            _save_arm("train_reranker", name, result)
            result = _load_arms("train_reranker")[name]  # with the machine and date it was measured on
        done[name] = result
    if not opts.no_save:
        write_results("train_reranker", {"arms": done, "settings": SETTINGS, "mining": MINING}, markdown(done))
    print(markdown(done))


if __name__ == "__main__":
    main()
