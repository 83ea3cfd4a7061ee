"""SPLADE trained here (issue 12): quality on SciFact's report half, inference-free queries, pruning, hybrids, an
``explain`` example, and sentence-transformers' ``SparseEncoder`` side by side in one process.

Parts (``--parts``; each kept in results/train_splade_arms.json):

* ``mlm-head``: the MLM head recipe (``minilm-mlm-head``: all-MiniLM-L6-v2 + a head trained on enwiki, encoder
  frozen then unfrozen): MLM loss before/after, and the zero-shot SPLADE it gives on the report half.
* ``report``: the recipe ``minilm-scifact-splade`` (its judged pairs from tune-train only; its pseudo-pairs, titles and
  inverse-cloze sentences, come from every abstract of the corpus, report-half positives included, with no label:
  transductive, as BM25's idf; its data chosen on tune-dev by the ``dev-*`` arms, of which ``dev-ict-all`` is this
  recipe) on the report half, from one encoding of the corpus: full queries vs inference-free (idf-weighted tokens, no
  transformer at query time) with their latency (encode + score + top 10, one query at a time), documents pruned
  to 64 / 128 terms / all, and RRF (k=60) hybrids of the runs with BM25's and dense all-MiniLM-L6-v2's (the
  standard runner's runs), beside BM25 and dense; and the ``bf16-pure`` and ``int8-token`` modes' quality, each from
  its own encoding.
* ``peers``: training rows/s (batch 16, 1 BM25 negative, documents at 256 tokens; median step time after 2
  warm-up steps) ours vs ``SparseEncoderTrainer`` + ``SpladeLoss(SparseMultipleNegativesRankingLoss)``, and
  encoding throughput (abstracts/s, queries/s) ours vs ``SparseEncoder.encode`` on the same weights (the recipe folder
  is a SparseEncoder folder): both in fp32, ours also with 2 workers, and bf16 arms only where the CPU multiplies
  bf16 natively (int8-token arms where it has int8 dot-product units, compiled too; eager ones on fbgemm's kernel
  elsewhere, with their own quality on the report half), with a roofline for the float arms (forward
  GFLOP per abstract and per query against the GEMM peak measured at the end of the part); search queries/s of the report-half queries
  one at a time: ours (``SparseIndex``) vs ``SparseEncoder.similarity`` (sparse COO tensors) + ``torch.topk``, as
  its users search.
* ``dev-*`` (``DEV_CONFIGS``): a variant of the recipe trained on tune-train only (its data, settings and seed
  otherwise), scored on ``tune-dev`` (30% of the tune half's queries, never trained on): nDCG@10 over the whole
  corpus, bf16. This is where SPLADE's settings are chosen; the report half is scored only by ``report``.
* ``train-peers``: training rows/s alone, at this CPU's precision (ours ``auto``; the peer in fp32, and in bf16 where
  the CPU multiplies bf16 natively), ``--rounds`` interleaved runs per side; ``--start calibrated`` starts both
  from all-MiniLM-L6-v2 with a new, calibrated MLM head instead of the ``minilm-mlm-head`` recipe.

Usage:
    EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/train_splade.py [--parts mlm-head,report,peers]
    EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/train_splade.py --parts dev-recipe,dev-distill
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import (  # noqa: E402
    command_line,
    encode_roofline_lines,
    encode_rooflines,
    last_results,
    log,
    ratio,
    result_name,
    roofline_share,
    rotated,
    rrf_runs,
    shares_text,
    write_results,
    write_section,
)
from _report import load_arms as _load_arms  # noqa: E402
from _report import save_arm as _save_arm  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RECIPE = "minilm-scifact-splade"
TRAIN_BATCH = 16
TRAIN_STEPS = 6
DOC_LENGTH = 256
SEARCH_DOCS = 2000  # peers: the search comparison's corpus (the first abstracts of SciFact)
EXPLAIN = "ML deployment"  # the seed's example, then a SciFact claim
EXPLAIN_CLAIM = "0-dimensional biomaterials show inductive properties."
TEACHER = "recipe:minilm-scifact-tune-train@precision=bf16"  # minilm-scifact's settings on tune-train only
# variants of the recipe, fixed before the first run: what each changes ("model" and "data" replace the recipe's,
# "args" and "options" update its own)
DEV_CONFIGS: dict[str, dict[str, Any]] = {
    "dev-recipe": {"data": ("scifact/train#tune-train", "scifact-titles:1500"),
                   "label": "the recipe before this comparison: tune-train + 1,500 title pairs, 1 BM25 negative, lr 5e-5, "
                            "1 epoch"},
    "dev-distill": {"data": ("scifact/train#tune-train", "scifact-titles:1500"), "options": {"teacher": TEACHER},
                    "label": "as dev-recipe, plus KL to a bi-encoder teacher's 20 · cosine over each row's candidates "
                             "(recipe minilm-scifact-tune-train: minilm-scifact trained on tune-train only)"},
    "dev-ict": {"data": ("scifact/train#tune-train",) * 3 + ("scifact-ict:1500", "scifact-titles:1500"),
                "label": "as dev-recipe, tune-train pairs x3 + 1,500 inverse-cloze pseudo-pairs (more steps, more data)"},
    # after dev-ict (+8.1 over dev-recipe): all of the corpus's inverse-cloze pairs, as the reranker's dev-ict-128
    "dev-ict-all": {"data": ("scifact/train#tune-train",) * 3 + ("scifact-ict:5182", "scifact-titles:1500"),
                    "label": "as dev-ict, an inverse-cloze pseudo-pair from every abstract (5,182)"},
    # defined, not run (dev-ict's gain made more data the thing to try first; dev-ict-all-2ep, below, was run)
    "dev-ict-distill": {"data": ("scifact/train#tune-train",) * 3 + ("scifact-ict:1500", "scifact-titles:1500"),
                        "options": {"teacher": TEACHER}, "label": "dev-ict and dev-distill together"},
    "dev-3epochs": {"data": ("scifact/train#tune-train", "scifact-titles:1500"), "args": {"epochs": 3},
                    "label": "as dev-recipe, 3 epochs"},
    "dev-ict-all-2ep": {"data": ("scifact/train#tune-train",) * 3 + ("scifact-ict:5182", "scifact-titles:1500"),
                        "args": {"epochs": 2}, "label": "as dev-ict-all, 2 epochs"},
}
DEV_MODELS = Path(tempfile.gettempdir()) / "embedstack-train-splade"  # the dev arms' trained models


def _recipe(name: str) -> Path:
    from embedstack.training.recipes import build_recipe, get_recipe, recipe_dir

    folder = recipe_dir(name)
    if not (folder / "embedstack.json").is_file():
        log(f"building recipe {name}")
        build_recipe(get_recipe(name), score=False, stage=log,
                     progress=lambda i: log(f"  step {i['step']}/{i['total']} loss {i['loss']:.3f}")
                     if i["step"] % 25 == 0 else None)
    return folder


def _report_half() -> Any:
    from embedstack.data import load_beir
    from embedstack.training.evaluators import query_half

    return query_half(load_beir("scifact", split="train"), "report")


def _scores(res: dict[str, Any]) -> dict[str, Any]:
    keep = ("ndcg@10", "recall@100", "single_query_ms", "latency_ms", "bytes_per_doc", "index_seconds")
    return {k: (100 * res[k] if k in ("ndcg@10", "recall@100") else res[k]) for k in keep if k in res}


def run_mlm_head() -> dict[str, Any]:
    import json

    from embedstack.evaluation.runners import evaluate_retrieval
    from embedstack.neural.splade import SpladeEncoder

    folder = _recipe("minilm-mlm-head")
    info = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    zero_shot = evaluate_retrieval(SpladeEncoder.from_folder(folder, precision="bf16"), _report_half(), latency_queries=0)
    return {"steps": info["steps"], "seconds": info["seconds"], "frozen_steps": info["frozen_steps"],
            "loss_first": info["losses"][0][1], "loss_last": info["losses"][-1][1], "losses": info["losses"],
            "zero_shot": _scores(zero_shot)}


def dev_recipe(name: str) -> Any:
    """The recipe with a dev arm's changes, trained on tune-train (the recipe's own split already)."""
    from embedstack.training.recipes import get_recipe

    base, cfg = get_recipe(RECIPE), DEV_CONFIGS[name]
    return dataclasses.replace(base, name=f"{RECIPE}-{name}", model=cfg.get("model", base.model),
                               data=cfg.get("data", base.data),
                               args={**base.args, **cfg.get("args", {})},
                               options={**base.options, **cfg.get("options", {})}, report=None, expected=None)


def run_dev(name: str) -> dict[str, Any]:
    """Train a dev arm (as ``embedstack recipe`` builds the recipe) and score it on tune-dev."""
    from embedstack.data import load_beir
    from embedstack.evaluation.runners import evaluate_retrieval
    from embedstack.neural.splade import SpladeEncoder
    from embedstack.training.evaluators import query_half
    from embedstack.training.recipes import build_recipe

    recipe = dev_recipe(name)
    judged = [d for d in recipe.data if d.startswith("scifact/")]
    if any(d != "scifact/train#tune-train" for d in judged):  # only tune-train's judged pairs; tune-dev scores
        raise SystemExit(f"{name}: its judged data must be scifact/train#tune-train only; got {judged}")
    t0 = time.perf_counter()
    summary, folder = build_recipe(recipe, out=DEV_MODELS / name, force=True, score=False, stage=log,
                             progress=lambda i: log(f"  step {i['step']}/{i['total']} loss {i['loss']:.3f}")
                             if i["step"] % 25 == 0 else None)
    train_s = time.perf_counter() - t0
    model = SpladeEncoder.from_folder(folder, precision="bf16")
    scores = evaluate_retrieval(model, query_half(load_beir("scifact", split="train"), "tune-dev"), latency_queries=0)
    log(f"{name}: tune-dev nDCG@10 {100 * scores['ndcg@10']:.2f}")
    return {**_scores(scores), "n_queries": scores["n_queries"], "scored_on": "tune-dev", "label": DEV_CONFIGS[name]["label"],
            "data": list(recipe.data), "args": recipe.args, "teacher": recipe.options.get("teacher"),
            **summary["train"], "train_seconds": train_s,
            "seconds": time.perf_counter() - t0, "folder": str(folder)}


def _decoder(model: Any) -> str:
    """How a SpladeEncoder runs its MLM decoder: the fused kernel (its kind), int8 (its product) or torch's float
    product."""
    from embedstack.neural import _attention

    if model.precision == "int8-token":
        return f"int8 ({model.int8_product})"
    return f"fused ({_attention.splade_kind()})" if model._fused() else "torch"


def _run(q: Any, docs: Any, qids: list[str], doc_ids: list[str], k: int = 100) -> dict[str, dict[str, float]]:
    """Top-k of the sparse products ``q @ docs.T`` as a run ``{qid: {doc_id: score}}`` (zero scores left out)."""
    scores = (q @ docs.T).toarray()
    run = {}
    for i, qid in enumerate(qids):
        top = np.argsort(-scores[i], kind="stable")[:k]
        run[qid] = {doc_ids[j]: float(scores[i, j]) for j in top if scores[i, j] > 0}
    return run


def run_report() -> dict[str, Any]:
    """Every cell from one encoding of the corpus and the queries: SPLADE full / inference-free / pruned, and RRF
    hybrids with BM25 and dense all-MiniLM-L6-v2 (their runs from the standard runner), on the report half."""
    from embedstack.data import load_beir
    from embedstack.evaluation.metrics import evaluate_run
    from embedstack.evaluation.runners import evaluate_retrieval
    from embedstack.neural.splade import SpladeEncoder

    folder = _recipe(RECIPE)
    report = _report_half()
    beir = load_beir("scifact", split="train")
    doc_ids = [str(d) for d in beir.doc_ids()]
    qids = [str(q) for q in report.query_ids()]
    qtexts = list(report.query_texts())
    qrels = {q: report.qrels[q] for q in qids}
    model = SpladeEncoder.from_folder(folder, precision="bf16")
    log("encoding the corpus (bf16)")
    t = time.perf_counter()
    docs = model.encode_sparse(beir.doc_texts(), batch_size=32)
    index_s = time.perf_counter() - t
    idf_model = model.with_options(query_mode="idf").fit_idf(beir.doc_texts())
    queries = {"full": model.encode_sparse(qtexts, role="query"), "idf": idf_model.encode_sparse(qtexts, role="query")}

    def latency(m: Any) -> float:
        times = []
        for text in qtexts[:40]:
            t0 = time.perf_counter()
            q = m.encode_sparse([text], role="query")
            np.argsort(-(q @ docs.T).toarray()[0])[:10]
            times.append(1000 * (time.perf_counter() - t0))
        return float(np.median(times))

    def cell(run: dict[str, dict[str, float]], **extra: Any) -> dict[str, Any]:
        m = evaluate_run(run, qrels, ["ndcg@10", "recall@100"])
        return {"ndcg@10": 100 * m["ndcg@10"], "recall@100": 100 * m["recall@100"], **extra}

    nnz = np.diff(docs.indptr)
    out: dict[str, Any] = {"n_queries": len(qids), "index_seconds": index_s, "cells": {}}
    runs = {"splade": _run(queries["full"], docs, qids, doc_ids)}
    out["cells"]["splade"] = cell(runs["splade"], single_query_ms=latency(model),
                                  bytes_per_doc=float(8 * nnz.mean()))  # int32 index + float32 weight per term
    out["cells"]["splade, inference-free queries"] = cell(_run(queries["idf"], docs, qids, doc_ids),
                                                          single_query_ms=latency(idf_model),
                                                          bytes_per_doc=float(8 * nnz.mean()))
    for k in (64, 128):
        from embedstack.neural.splade import _topk_rows

        pruned = _topk_rows(docs.toarray(), k)
        out["cells"][f"splade, documents pruned to {k} terms"] = cell(
            _run(queries["full"], pruned, qids, doc_ids), bytes_per_doc=float(8 * np.diff(pruned.indptr).mean()))
    # the other modes' quality, each from its own encoding of the corpus and the queries
    for precision in ("bf16-pure", "int8-token"):
        other = SpladeEncoder.from_folder(folder, precision=precision)
        log(f"encoding the corpus ({precision})")
        docs_p = other.encode_sparse(beir.doc_texts(), batch_size=32)
        out["cells"][f"splade, {precision}"] = cell(_run(other.encode_sparse(qtexts, role="query"), docs_p, qids, doc_ids),
                                                    bytes_per_doc=float(8 * np.diff(docs_p.indptr).mean()))
    out["decoder"] = _decoder(model)
    for label, spec in (("BM25", "bm25"), ("dense MiniLM", "all-MiniLM-L6-v2")):
        from embedstack.models import resolve

        res = evaluate_retrieval(resolve(spec), report, latency_queries=0, return_run=True)
        out["cells"][label] = {"ndcg@10": 100 * res["ndcg@10"], "recall@100": 100 * res["recall@100"]}
        runs[label] = res["run"]
    for label, a, b in (("SPLADE + BM25 (RRF)", "splade", "BM25"), ("SPLADE + dense (RRF)", "splade", "dense MiniLM"),
                        ("BM25 + dense (RRF)", "BM25", "dense MiniLM")):
        out["cells"][label] = cell(rrf_runs(runs[a], runs[b]))
    log(f"cells: {out['cells']}")
    out["explain"] = {text: model.explain(text, role="query", top=15) for text in (EXPLAIN, EXPLAIN_CLAIM)}
    doc = beir.doc_texts()[0]
    out["explain_document"] = {"text": doc[:300], "terms": model.explain(doc, top=20)}
    import json

    head = json.loads((_recipe("minilm-mlm-head") / "training.json").read_text(encoding="utf-8"))
    out["mlm_head"] = {k: head.get(k) for k in ("steps", "seconds", "frozen_steps", "bias_shift")}
    out["mlm_head"].update(loss_first=head["losses"][0][1], loss_last=head["losses"][-1][1])
    out["terms_per_document"] = float(nnz.mean())
    out["expansion_share"] = float(np.mean([not t["in_text"] for t in model.explain(doc, top=50)]))
    return out


# ------------------------------------------------------------------------------------------- peers
def _train_rows() -> Any:
    from embedstack.data import load_beir
    from embedstack.training.mining import mine_hard_negatives
    from embedstack.training.run import training_data

    data = training_data("scifact/train#tune-train")
    corpus = load_beir("scifact", split="train").doc_texts()
    res = mine_hard_negatives((data.column("anchor"), data.column("positive")), corpus, method="bm25",
                              num_negatives=1, range_min=10, range_max=50)
    return res.data.select(list(range(TRAIN_BATCH * TRAIN_STEPS)))


def _ours_train(rows: Any, start: Path, precision: str = "bf16") -> list[float]:
    from embedstack.neural.splade import SpladeEncoder
    from embedstack.training.splade import SpladeLoss, SpladeTrainer
    from embedstack.training.trainer import TrainingArgs

    model = SpladeEncoder.from_folder(start)
    stamps: list[float] = []
    args = TrainingArgs(batch_size=TRAIN_BATCH, max_steps=TRAIN_STEPS, lr=5e-5, precision=precision, save_steps=None,
                        max_seq_length=DOC_LENGTH, seed=0)
    SpladeTrainer(model, SpladeLoss(5e-4, 1e-4), rows, args=args,
                  progress=lambda _i: stamps.append(time.perf_counter())).train()
    return list(np.diff(stamps[1:]))


def _st_train(rows: Any, start: Path, bf16: bool) -> list[float]:
    import datasets
    from sentence_transformers.sparse_encoder import (
        SparseEncoder,
        SparseEncoderTrainer,
        SparseEncoderTrainingArguments,
    )
    from sentence_transformers.sparse_encoder.losses import SparseMultipleNegativesRankingLoss, SpladeLoss
    from transformers import TrainerCallback

    model = SparseEncoder(str(start), device="cpu")
    model.max_seq_length = DOC_LENGTH
    ds = datasets.Dataset.from_dict({"anchor": rows.column("anchor"), "positive": rows.column("positive"),
                                     "negative": rows.column("negative_1")})
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            stamps.append(time.perf_counter())

    args = SparseEncoderTrainingArguments(output_dir=str(Path("/tmp") / "st-splade-train"),
                                          per_device_train_batch_size=TRAIN_BATCH, max_steps=TRAIN_STEPS,
                                          learning_rate=5e-5, bf16=bf16, use_cpu=True, save_strategy="no",
                                          logging_steps=1000, report_to="none", seed=0, dataloader_drop_last=True)
    loss = SpladeLoss(model, SparseMultipleNegativesRankingLoss(model), document_regularizer_weight=1e-4,
                      query_regularizer_weight=5e-4)
    SparseEncoderTrainer(model=model, args=args, train_dataset=ds, loss=loss, callbacks=[Stamp()]).train()
    return list(np.diff(stamps[1:]))


def _time_trainers(trainers: dict[str, Any], rounds: int) -> dict[str, dict[str, float]]:
    """``rounds`` runs of each trainer, in an order rotated each round: median rows/s (of each run's median step
    time) with the min-max."""
    times: dict[str, list[float]] = {k: [] for k in trainers}
    names = list(trainers)
    for r in range(rounds):
        for name in rotated(names, r):
            times[name].append(float(np.median(trainers[name]())))
            log(f"train round {r}: {name} {TRAIN_BATCH / times[name][-1]:.2f} rows/s")
    return {name: {"rows_per_second": statistics.median([TRAIN_BATCH / t for t in ts]),
                   "min": min(TRAIN_BATCH / t for t in ts), "max": max(TRAIN_BATCH / t for t in ts)}
            for name, ts in times.items()}


def _calibrated_start() -> Path:
    """all-MiniLM-L6-v2 with a new MLM head (seed 0) whose bias is calibrated as the ``minilm-mlm-head`` recipe's is
    (about 32 positive logits per token), saved as a SparseEncoder folder: SPLADE training's starting state without
    the recipe's 40 minutes of head training. Speed does not depend on what the head has learned, except that our
    backward pass follows the positive terms, and a calibrated but untrained head has more of them than a trained
    SPLADE model (counted in the report)."""
    import torch

    from embedstack.data import load_beir
    from embedstack.neural.cross_encoder import _transformer_dir
    from embedstack.neural.hub import resolve_model
    from embedstack.neural.splade import SpladeEncoder, _load_bert

    folder = Path("/tmp/embedstack-splade-start")
    if (folder / "embedstack.json").is_file():
        return folder
    torch.manual_seed(0)
    model, tokenizer = _load_bert(_transformer_dir(resolve_model("all-MiniLM-L6-v2", download=False)[0]))
    enc = SpladeEncoder(model, tokenizer, max_seq_length=DOC_LENGTH, name="minilm-calibrated-head")
    enc.calibrate(load_beir("scifact", split="train").doc_texts()[:200])
    enc.save(folder)  # atomic; refuses a folder that is there without being this start
    return folder


def _forward_gflop(texts: list[str], enc: Any) -> np.ndarray:
    """Forward GFLOP of each text through a SPLADE model: the encoder (``encode.model_flops``, real tokens only, cut at
    the model's length) plus the MLM head on every token (its C x C transform and the C x vocabulary decoder, whose
    log-saturated outputs are max-pooled over the tokens), counted dense."""
    from encode import model_flops

    cfg = enc.model.config
    head = 2 * cfg.hidden_size * (cfg.hidden_size + cfg.vocab_size)  # per token
    ids = enc.tokenizer.encode_batch(list(texts), max_length=enc.max_seq_length)[0]
    lengths = np.array([len(x) for x in ids], dtype=np.float64)
    return (model_flops(lengths, cfg) + head * lengths) / 1e9


def _train_gflop_per_row(rows: Any, enc: Any) -> float:
    """Training work of one row (a query and two documents, each cut at the model's length): 3 x the forward
    (``_forward_gflop``). Counted dense: our backward pass skips the decoder's dense products (it follows the
    positive terms only), so this overstates the work ours does there."""
    return 3 * sum(float(np.mean(_forward_gflop(rows.column(c), enc))) for c in ("anchor", "positive", "negative_1"))


def _trainers(rows: Any, start: Path) -> tuple[str, dict[str, Any]]:
    """The training arms at this CPU's precision: ours at ``precision="auto"`` (bf16 where the CPU multiplies it
    natively, fp32 otherwise), SparseEncoderTrainer in fp32, and in bf16 where the CPU has it (emulated, bf16 is
    several times slower than fp32). Returns our arm's name and the arms."""
    from embedstack.neural.runtime import cpu_has_bf16

    bf16 = cpu_has_bf16()
    ours_name = f"ours {'bf16' if bf16 else 'fp32'}"
    trainers = {ours_name: lambda: _ours_train(rows, start, "auto"), "ST fp32": lambda: _st_train(rows, start, False)}
    if bf16:
        trainers["ST bf16"] = lambda: _st_train(rows, start, True)
    return ours_name, trainers


def run_train_peers(rounds: int, start_kind: str) -> dict[str, Any]:
    """Training rows/s only, at this CPU's precision: ours at ``precision="auto"`` (bf16 where the CPU multiplies
    it natively, fp32 otherwise) against SparseEncoderTrainer in fp32, and in bf16 where the CPU has it."""
    from embedstack.neural.runtime import cpu_has_bf16
    from embedstack.neural.splade import SpladeEncoder

    start = _recipe("minilm-mlm-head") if start_kind == "recipe" else _calibrated_start()
    rows = _train_rows()
    bf16 = cpu_has_bf16()
    ours_name, trainers = _trainers(rows, start)
    timed = _time_trainers(trainers, rounds)
    enc = SpladeEncoder.from_folder(start, max_seq_length=DOC_LENGTH)
    docs = rows.column("positive")[:64]
    terms = float(np.mean(np.diff(enc.encode_sparse(docs, batch_size=32).indptr)))
    out = {"rounds": rounds, "start": start_kind, "terms_per_doc_at_start": terms, "cpu_bf16": bf16,
           "loadavg": os.getloadavg(), "train": timed}
    out["train_ratio"] = ratio(out["train"][ours_name]["rows_per_second"],
                               max(v["rows_per_second"] for k, v in out["train"].items() if k.startswith("ST")))
    from exact_search import roofline  # after the timed runs: its threads cannot disturb them

    out["train_gflop_per_row"] = _train_gflop_per_row(rows, enc)
    out["peaks"] = peaks = roofline(3)
    out["roofline"] = {name: roofline_share(t["rows_per_second"] * out["train_gflop_per_row"], "bf16" in name, peaks)
                       for name, t in out["train"].items()}
    return out


def run_peers(rounds: int, train: bool = True, results_name: str = "train_splade") -> dict[str, Any]:
    import torch
    from sentence_transformers.sparse_encoder import SparseEncoder

    from embedstack.data import load_beir
    from embedstack.index import SparseIndex
    from embedstack.index._scan import int8_backend
    from embedstack.neural.quantize import int8_product
    from embedstack.neural.runtime import cpu_has_bf16
    from embedstack.neural.splade import SpladeEncoder

    start = _recipe("minilm-mlm-head")
    folder = _recipe(RECIPE)
    bf16 = cpu_has_bf16()
    out: dict[str, Any] = {"rounds": rounds, "train": {}, "train_ratio": None, "cpu_bf16": bf16}
    if train:
        ours_name, trainers = _trainers(_train_rows(), start)
        out["train"] = _time_trainers(trainers, rounds)
        out["train_ratio"] = ratio(out["train"][ours_name]["rows_per_second"],
                                   max(v["rows_per_second"] for k, v in out["train"].items() if k.startswith("ST")))
    beir = load_beir("scifact", split="train")
    docs = beir.doc_texts()[:300]
    report = _report_half()
    queries = list(report.query_texts())
    # bf16 arms only where the CPU multiplies bf16 natively (emulated, it is several times slower than fp32 on both
    # sides), int8 arms on _int_mm where it has int8 dot-product units, on fbgemm elsewhere; 2 workers as a user
    # passes MODEL@workers=2
    variants: dict[str, dict[str, Any]] = {"fp32": {"precision": "fp32"},
                                           "fp32-w2": {"precision": "fp32", "workers": 2}}
    if bf16:
        variants |= {"bf16": {"precision": "bf16"}, "bf16-pure": {"precision": "bf16-pure"}}
    if int8_backend() in ("vnni", "amx"):
        # compiled: inductor fuses each quantization with the LayerNorm / GELU / rescaling before it
        variants |= {"int8-token": {"precision": "int8-token"},
                     "int8-token-compiled-w2": {"precision": "int8-token", "compile": True, "workers": 2}}
    elif int8_product() == "fbgemm":  # no int8 units: transformer and decoder on fbgemm's kernel, eager (compiled
        # ran slower than eager there: encode_avx2_token)
        variants |= {"int8-token": {"precision": "int8-token"},
                     "int8-token-w2": {"precision": "int8-token", "workers": 2}}
    ours = {v: SpladeEncoder.from_folder(folder, max_seq_length=DOC_LENGTH, **o) for v, o in variants.items()}
    st = {p: SparseEncoder(str(folder), device="cpu",
                           model_kwargs={"torch_dtype": torch.bfloat16} if p == "bf16" else None)
          for p in (("fp32", "bf16") if bf16 else ("fp32",))}
    for m in st.values():
        m.max_seq_length = DOC_LENGTH
    enc: dict[str, Any] = {}
    for v, model in ours.items():
        enc[f"ours {v}"] = lambda t, q, m=model: m.encode_sparse(t, role="query" if q else "document", batch_size=32)
    for p, model in st.items():
        enc[f"ST {p}"] = lambda t, q, m=model: (m.encode_query if q else m.encode_document)(
            t, batch_size=32, convert_to_tensor=True)
    for fn in enc.values():  # warm-up: one batch and several (workers), documents and queries (compiled graphs)
        fn(docs[:32], False)
        fn(docs[:96], False)
        fn(queries[:80], True)
    rates: dict[str, dict[str, list[float]]] = {k: {"docs": [], "queries": []} for k in enc}
    names = list(enc)
    for r in range(rounds):
        for name in rotated(names, r):
            t = time.perf_counter()
            enc[name](docs, False)
            rates[name]["docs"].append(len(docs) / (time.perf_counter() - t))
            t = time.perf_counter()
            enc[name](queries, True)
            rates[name]["queries"].append(len(queries) / (time.perf_counter() - t))
            log(f"encode round {r}: {name} {rates[name]['docs'][-1]:.1f} docs/s {rates[name]['queries'][-1]:.0f} q/s")
    out["loadavg"] = os.getloadavg()
    out["encode"] = {name: {k: {"median": statistics.median(x), "min": min(x), "max": max(x)} for k, x in v.items()}
                     for name, v in rates.items()}
    for what in ("docs", "queries"):  # the float modes against the peer's best; int8 apart (its quality differs)
        best_st = max(v[what]["median"] for k, v in out["encode"].items() if k.startswith("ST"))
        out[f"encode_ratio_{what}"] = ratio(max(v[what]["median"] for k, v in out["encode"].items()
                                                if k.startswith("ours") and "int8" not in k), best_st)
        int8 = [v[what]["median"] for k, v in out["encode"].items() if k.startswith("ours int8")]
        if int8:
            out[f"encode_ratio_int8_{what}"] = ratio(max(int8), best_st)
    # an int8 arm's own quality where the report part's int8-token cell may not stand for it: the compiled arm, and
    # the eager arm on fbgemm (the report part's recorded cell came from a CPU with int8 units, _int_mm and 127-level
    # weights; a report part run on this CPU scores fbgemm too); corpus and report queries
    from embedstack.evaluation.metrics import evaluate_run

    def quality(model: Any, label: str) -> dict[str, float]:
        log(f"encoding the corpus ({label})")
        cdocs = model.encode_sparse(beir.doc_texts(), batch_size=32)
        qids = [str(q) for q in report.query_ids()]
        m = evaluate_run(_run(model.encode_sparse(queries, role="query"), cdocs, qids,
                              [str(d) for d in beir.doc_ids()]), {q: report.qrels[q] for q in qids},
                         ["ndcg@10", "recall@100"])
        return {"ndcg@10": 100 * m["ndcg@10"], "recall@100": 100 * m["recall@100"]}

    if "int8-token-compiled-w2" in ours:
        out["int8_compiled_quality"] = quality(ours["int8-token-compiled-w2"], "int8-token, compiled")
    if "int8-token" in ours and ours["int8-token"].int8_product == "fbgemm":
        out["int8_fbgemm_quality"] = quality(ours["int8-token"], "int8-token on fbgemm")
    _save_arm(results_name, "peers", out)  # kept even if the search part below fails
    # search: the same corpus vectors in both engines, queries one at a time (encode excluded)
    all_docs = beir.doc_texts()[:SEARCH_DOCS]  # encoding all 5,183 abstracts takes 7 minutes here
    doc_ids = [str(d) for d in beir.doc_ids()][:SEARCH_DOCS]
    out["search_vectors"] = "bf16" if bf16 else "fp32"  # bf16 as the report part encodes; fp32 where bf16 is emulated
    fast = ours[out["search_vectors"]]
    mat = fast.encode_sparse(all_docs, batch_size=32)
    qmat = fast.encode_sparse(queries, role="query")
    index = SparseIndex(mat.shape[1])
    index.add(mat, doc_ids)
    def coo(x: Any) -> Any:  # what SparseEncoder.encode(convert_to_sparse_tensor=True) gives
        c = x.tocoo()
        return torch.sparse_coo_tensor(torch.from_numpy(np.vstack([c.row, c.col]).astype(np.int64)),
                                       torch.from_numpy(c.data.astype(np.float32)), size=c.shape).coalesce()

    corpus_t = coo(mat)
    q_rows = [qmat[[i]] for i in range(qmat.shape[0])]
    q_t = [coo(r) for r in q_rows]

    def st_search(i: int) -> Any:  # as SparseEncoder users search: model.similarity, then top-k
        return torch.topk(st["fp32"].similarity(q_t[i], corpus_t).to_dense(), k=10)

    search = {"ours SparseIndex": lambda i: index.search(q_rows[i], k=10), "ST similarity+topk": st_search}
    qps: dict[str, list[float]] = {k: [] for k in search}
    for r in range(rounds):
        for name in list(search)[r % 2:] + list(search)[:r % 2]:
            t = time.perf_counter()
            for i in range(len(q_rows)):
                search[name](i)
            qps[name].append(len(q_rows) / (time.perf_counter() - t))
            log(f"search round {r}: {name} {qps[name][-1]:.0f} q/s")
    out["search"] = {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in qps.items()}
    out["search_ratio"] = ratio(out["search"]["ours SparseIndex"]["median"], out["search"]["ST similarity+topk"]["median"])
    out["terms_per_doc"] = float(np.mean(np.diff(mat.indptr)))
    out["search_docs"] = len(doc_ids)
    out["decoder"] = {k: _decoder(m) for k, m in ours.items()}
    # roofline: forward GFLOP per abstract and per query (the encoder and the MLM head on every token, counted dense)
    out["gflop_per_doc"] = float(_forward_gflop(docs, ours["fp32"]).mean())
    out["gflop_per_query"] = float(_forward_gflop(queries, ours["fp32"]).mean())
    from exact_search import roofline  # last: it sets the thread counts (2) the peaks are measured at

    out["peaks"] = peaks = roofline(3)
    out["roofline"] = encode_rooflines(out["encode"], out["gflop_per_doc"], out["gflop_per_query"], peaks)
    return out


def _where(part: dict[str, Any]) -> str:
    """The CPU and date a part was measured on (parts are re-run on their own, maybe on another machine)."""
    m = part.get("measured") or {}
    return f"{m.get('cpu', 'unknown CPU').split(' (')[0]}, {m.get('date', 'date unknown')}"


def markdown(arms: dict[str, Any]) -> str:
    lines: list[str] = ["`EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/train_splade.py` — SPLADE trained here: "
                        "an MLM head for all-MiniLM-L6-v2 (recipe `minilm-mlm-head`), then SPLADE on SciFact (recipe "
                        "`minilm-scifact-splade`), against sentence-transformers' SparseEncoder in the same process.", ""]
    if "mlm-head" in arms:
        m = arms["mlm-head"]
        z = m["zero_shot"]
        lines += [f"MLM head (`embedstack recipe minilm-mlm-head`): {m['steps']} steps ({m['frozen_steps']} with the "
                  f"encoder frozen), {m['seconds']:.0f} s; MLM loss {m['loss_first']:.2f} → {m['loss_last']:.2f}. "
                  f"As SPLADE with no retrieval training: nDCG@10 {z['ndcg@10']:.2f} on the report half.", ""]
    if "report" in arms and "mlm-head" not in arms and arms["report"].get("mlm_head"):
        m = arms["report"]["mlm_head"]
        lines += [f"MLM head (`embedstack recipe minilm-mlm-head`): {m['steps']} steps on enwiki ({m['frozen_steps']} "
                  f"with the encoder frozen), {m['seconds']:.0f} s with other jobs sharing the cores; MLM loss "
                  f"{m['loss_first']:.2f} → {m['loss_last']:.2f}; output bias then shifted by {m['bias_shift']:.2f} "
                  "(`SpladeEncoder.calibrate`: about 32 positive logits per token; before it, a text's vector kept "
                  "25,000-30,000 of the 30,522 terms).", ""]
    dev = {k: v for k, v in arms.items() if k.startswith("dev-")}
    if dev:
        first = next(iter(dev.values()))
        lines += [f"Variants of the recipe trained on tune-train and scored on tune-dev ({first['n_queries']} queries, never "
                  "trained on; the report half is not used to choose), `--parts dev-...`:", "",
                  "| arm | what changes | steps | rows/s | train s | tune-dev nDCG@10 | Recall@100 | measured |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        for name, d in dev.items():
            lines.append(f"| {name} | {DEV_CONFIGS.get(name, d)['label']} | {d['steps']} | {d['rows_per_second']:.1f} | "
                         f"{d['train_seconds']:.0f} | {d['ndcg@10']:.2f} | {d['recall@100']:.2f} | {_where(d)} |")
        lines.append("")
    if "report" in arms:
        r = arms["report"]
        lines += [f"`minilm-scifact-splade` on the report half ({r['n_queries']} queries never tuned on; bf16, decoder "
                  f"{r.get('decoder', 'torch')}; {_where(r)}):", "",
                  "| system | nDCG@10 | Recall@100 | ms/query alone | bytes/doc |", "|---|---:|---:|---:|---:|"]
        for name, c in r["cells"].items():
            ms = f"{c['single_query_ms']:.1f}" if c.get("single_query_ms") is not None else "—"
            size = f"{c['bytes_per_doc']:,.0f}" if c.get("bytes_per_doc") is not None else "—"
            lines.append(f"| {name} | {c['ndcg@10']:.2f} | {c['recall@100']:.2f} | {ms} | {size} |")
        c = r["cells"]
        pairs = [("SPLADE + dense (RRF)", "splade", "dense MiniLM"), ("BM25 + dense (RRF)", "BM25", "dense MiniLM")]
        verdicts = []
        for hybrid, a, b in pairs:
            if hybrid in c and a in c and b in c:
                best = max(c[a]["ndcg@10"], c[b]["ndcg@10"])
                verdicts.append(f"{hybrid} {c[hybrid]['ndcg@10']:.2f} vs best single {best:.2f} "
                                f"({c[hybrid]['ndcg@10'] - best:+.2f})")
        if verdicts:
            held = all(c[h]["ndcg@10"] > max(c[a]["ndcg@10"], c[b]["ndcg@10"]) for h, a, b in pairs if h in c)
            lines += ["", "Seed claim *hybrid dense + sparse consistently beats either alone*: " + "; ".join(verdicts)
                      + (". **Holds at our scale**: both dense + sparse hybrids beat their better half on SciFact's report "
                         "half (one dataset, so \"consistently\" is not tested beyond it). Sparse + sparse (SPLADE + BM25, "
                         f"{c['SPLADE + BM25 (RRF)']['ndcg@10']:.2f}) is not part of the claim; it "
                         + ("beats" if c['SPLADE + BM25 (RRF)']['ndcg@10'] > c['BM25']['ndcg@10'] else "does not beat")
                         + f" BM25 ({c['BM25']['ndcg@10']:.2f})."
                         if held else ". **Refuted** here: not every dense + sparse hybrid beats its better half.")]
        lines += ["", f"Terms per document: {r['terms_per_document']:.0f}; expansion terms among a document's top 50: "
                  f"{100 * r['expansion_share']:.0f}%.", "", "`embedstack explain` (query side; + = expansion term):", ""]
        for text, terms in r["explain"].items():
            shown = ", ".join(f"{t['term']}{'' if t['in_text'] else '+'} {t['weight']:.2f}" for t in terms)
            lines.append(f"- *{text}*: {shown}")
        lines.append("")
    if "peers" in arms:
        p = arms["peers"]
        cpu_bf16 = "" if "cpu_bf16" not in p else f"CPU bf16: {'yes' if p['cpu_bf16'] else 'no (no bf16 arms)'}; "
        load = f"; load average {p['loadavg'][0]:.2f} after the rounds" if "loadavg" in p else ""
        lines += [f"Against sentence-transformers' SparseEncoder ({p['rounds']} interleaved rounds, median (min-max); "
                  f"{cpu_bf16}{_where(p)}{load}):", "",
                  "| system | train rows/s | abstracts/s | queries/s |", "|---|---:|---:|---:|"]
        for name in p["encode"]:
            t = p["train"].get(name)
            e = p["encode"][name]
            tr = f"{t['rows_per_second']:.2f} ({t['min']:.2f}-{t['max']:.2f})" if t else "—"
            lines.append(f"| {name} | {tr} | {e['docs']['median']:.1f} ({e['docs']['min']:.1f}-{e['docs']['max']:.1f}) | "
                         f"{e['queries']['median']:.0f} ({e['queries']['min']:.0f}-{e['queries']['max']:.0f}) |")
        if p.get("decoder"):
            lines += ["", "MLM decoder: " + ", ".join(f"{k} {v}" for k, v in p["decoder"].items()) + "."]
        s = p.get("search")
        trained = f"training **{p['train_ratio']:.2f}x**, " if p.get("train_ratio") else "training not measured, "
        int8 = ""
        if "encode_ratio_int8_docs" in p:
            q8 = arms.get("report", {}).get("cells", {}).get("splade, int8-token")
            full = arms.get("report", {}).get("cells", {}).get("splade")
            qc, fb = p.get("int8_compiled_quality"), p.get("int8_fbgemm_quality")
            quality = (f" at nDCG@10 {q8['ndcg@10']:.2f}" + (f" (compiled: {qc['ndcg@10']:.2f})" if qc else "")
                       + f" against bf16's {full['ndcg@10']:.2f} (report half)" if q8 and full and not fb else "")
            if fb:  # this CPU's own: int8 on fbgemm
                quality = (f" at nDCG@10 {fb['ndcg@10']:.2f} (Recall@100 {fb['recall@100']:.2f}; report half, from "
                           "its own encoding of the corpus, transformer and decoder on fbgemm's u8 x s8 product)")
            int8 = (f" Best int8-token arm / best ST: abstracts **{p['encode_ratio_int8_docs']:.2f}x**, queries "
                    f"**{p['encode_ratio_int8_queries']:.2f}x**{quality}.")
        floats = ", ".join(k.removeprefix("ours ") for k in p["encode"] if k.startswith("ours") and "int8" not in k)
        lines += ["", f"Ours (best of {floats}) / best ST: {trained}abstracts **{p['encode_ratio_docs']:.2f}x**, "
                  f"queries **{p['encode_ratio_queries']:.2f}x**." + int8 + (
                      f" Search (report-half queries one at a time over the first {p.get('search_docs', 5183):,} "
                      f"abstracts, {p['terms_per_doc']:.0f} terms per document"
                      + (f", vectors from ours {p['search_vectors']}" if "search_vectors" in p else "") + "): ours "
                      f"{s['ours SparseIndex']['median']:.0f} q/s vs ST similarity+topk "
                      f"{s['ST similarity+topk']['median']:.0f} q/s (**{p['search_ratio']:.2f}x**)." if s else
                      " Search not measured."), ""]
        if "roofline" in p:
            lines += encode_roofline_lines(p, ", the encoder and the MLM head on every token, counted dense; float "
                                              "arms only, int8 is not held to a float peak")
    if "train-peers" in arms:
        p = arms["train-peers"]
        start = ("the `minilm-mlm-head` recipe" if p["start"] == "recipe" else
                 "all-MiniLM-L6-v2 with a new MLM head, bias calibrated as the `minilm-mlm-head` recipe does (`--start "
                 "calibrated`: the recipe's 40 minutes of head training skipped; what the head learned matters to speed "
                 "only through how many terms come out positive, counted here)")
        lines += [f"Training throughput (`--parts train-peers --rounds {p['rounds']}`; CPU bf16: "
                  f"{'yes' if p['cpu_bf16'] else 'no'}): batch {TRAIN_BATCH}, 1 BM25 negative, documents at {DOC_LENGTH} "
                  f"tokens, SpladeLoss (MNRL + FLOPS) on both sides, median step time of steps 3-{TRAIN_STEPS} per run, "
                  f"{p['rounds']} interleaved runs per side in rotating order ({_where(p)}); start: {start}; "
                  f"{p['terms_per_doc_at_start']:.0f} positive terms per document at the start. Load average "
                  f"{p['loadavg'][0]:.2f} at the end.", "", "| trainer | rows/s (median) | min-max |", "|---|---:|---:|"]
        for name, t in p["train"].items():
            lines.append(f"| {name} | {t['rows_per_second']:.2f} | {t['min']:.2f}-{t['max']:.2f} |")
        lines += ["", f"Ours / best ST: training **{p['train_ratio']:.2f}x**.", ""]
        if "roofline" in p:
            lines += [f"Roofline: a row (a query and two documents) is {p['train_gflop_per_row']:.1f} GFLOP of training "
                      "work, 3x the forward (encoder on real tokens, no padding; the MLM head on every token, counted "
                      "dense, although our backward pass skips the decoder's dense products and follows the positive "
                      "terms only); peaks measured in the same run, 2 threads: fp32 GEMM "
                      f"{p['peaks']['fp32_gflops_peak']:.0f} GFLOP/s"
                      + (f", bf16 {p['peaks']['bf16_gflops']:.0f}" if p["cpu_bf16"] else "")
                      + f": {shares_text(p['roofline'])}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="mlm-head,report,peers")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-train", action="store_true", help="peers: skip the training-throughput comparison")
    ap.add_argument("--start", choices=["recipe", "calibrated"], default="recipe",
                    help="train-peers: start from the minilm-mlm-head recipe, or from a calibrated new head")
    ap.add_argument("--render-last", action="store_true",
                    help="re-render the section from the latest results record (no measuring)")
    ap.add_argument("--name", default="train_splade", type=result_name,
                    help="results file and BENCHMARKS.md section (another CPU's run keeps its own, e.g. "
                         "train_splade_zen3)")
    opts = ap.parse_args()
    if opts.render_last:
        record = last_results(opts.name)
        write_section(opts.name, section(opts.name, record["parts"]), record["machine"])
        return
    done = _load_arms(opts.name)
    for part in filter(None, opts.parts.split(",")):
        log(f"part {part}")
        if part.startswith("dev-"):
            result = run_dev(part)
        else:
            result = {"mlm-head": run_mlm_head, "report": run_report,
                      "peers": lambda: run_peers(opts.rounds, not opts.no_train, opts.name),
                      "train-peers": lambda: run_train_peers(opts.rounds, opts.start)}[part]()
        result["command"] = command_line("train_splade.py")
        _save_arm(opts.name, part, result)
        done[part] = _load_arms(opts.name)[part]  # with the machine and date it was measured on
    write_results(opts.name, {"parts": done}, section(opts.name, done))
    print(section(opts.name, done))


def section(name: str, arms: dict[str, Any]) -> str:
    """The section's text: another CPU's run (``--name``) gets a heading and its parts' commands; the default section
    keeps the form it has always had."""
    if name == "train_splade":
        return markdown(arms)
    commands = "".join(f" `{part}`: `EMBEDSTACK_DATA_DIR=../shared/data {v['command']}`." for part, v in arms.items()
                       if "command" in v)
    return (f"## SPLADE against sentence-transformers (`benchmarks/train_splade.py`), part run `{name}`\n\n"
            + (f"Reproduce:{commands}\n\n" if commands else "") + markdown(arms))


if __name__ == "__main__":
    main()
