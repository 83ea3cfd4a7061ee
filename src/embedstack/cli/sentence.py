"""``embedstack train sentence`` (fine-tune a sentence model) and ``embedstack recipe`` (rebuild a named model).

Progress (step, loss, ETA) goes to stderr; the result (steps, rows/s, metrics, where it was saved) to
stdout, or one JSON object with ``--json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from embedstack.cli._common import (
    ENCODING_OPTION,
    ERRORS_OPTION,
    TextErrors,
    err_console,
    print_json,
    print_table,
    progress,
    text_options,
)

__all__ = ["register"]


def _ints(value: str | None, flag: str) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        from embedstack.errors import ConfigError

        raise ConfigError(f"{flag} takes comma-separated integers (e.g. 384,256,128,64); got {value!r}.") from None


def _columns(value: str | None) -> dict[str, str] | None:
    if not value:
        return None
    from embedstack.errors import ConfigError

    out = {}
    for part in value.split(","):
        src, sep, dst = part.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise ConfigError(f"--columns takes FILE_COLUMN=CANONICAL pairs (e.g. question=anchor,answer=positive); "
                              f"got {part!r}.")
        out[src.strip()] = dst.strip()
    return out


def _report(result: Any, out: Path | None, seconds: float, json_out: bool, quiet: bool, title: str) -> None:
    info: dict[str, Any] = {
        "out": None if out is None else str(out), "steps": result.steps, "rows": result.rows,
        "epochs": result.epochs, "train_seconds": round(result.seconds, 1), "eval_seconds": round(result.eval_seconds, 1),
        "rows_per_second": round(result.pairs_per_second, 2), "final_loss": result.final_loss,
        "best_metric": result.best_metric, "best_step": result.best_step, "metrics": result.metrics,
        "precision": result.precision, "resumed_from": result.resumed_from, "seconds": round(seconds, 1),
    }
    if result.mining:
        info["mining"] = {k: v for k, v in result.mining.items() if isinstance(v, int | float | str)}
    if json_out:
        print_json(info)
        return
    rows = [[k, f"{v:.4g}" if isinstance(v, float) else str(v)] for k, v in info.items()
            if k not in ("metrics", "mining") and v is not None]
    rows += [[f"eval {k}", f"{v:.2f}"] for k, v in (result.metrics or {}).items()]
    print_table(title, ["", "value"], rows)


def _bar(prog: Any, total_hint: int | None = None) -> Any:
    task = prog.add_task("training", total=total_hint, info="")

    def on_step(info: dict[str, Any]) -> None:
        prog.update(task, completed=info["step"], total=info["total"],
                    info=f"loss {info['loss']:.4f}  lr {info['lr']:.2e}  epoch {info['epoch']}")

    return on_step


# options every `train ...` command shares (one definition each)
_DATA_OPTION = typer.Option(..., "--data", "-d", help="Training data: a JSONL/CSV/TSV file with named columns "
                            "(anchor, positive, negative..., score, label) or a named set (stsb/train, snli/dev+test, "
                            "snli-triplets/dev+test, scifact/train#tune, scifact-titles, scifact-ict, scifact-ict-last; NAME:N keeps N rows).")
_HARD_NEGATIVES_OPTION = typer.Option(None, "--hard-negatives", help="Mine negatives first: bm25, dense, both.")
_RANGE_MAX_OPTION = typer.Option(50, "--range-max", help="Mine among the first N ranked candidates.")
_EPOCHS_OPTION = typer.Option(1, "--epochs")
_MAX_STEPS_OPTION = typer.Option(None, "--max-steps", help="Optimizer steps (overrides --epochs).")
_WARMUP_OPTION = typer.Option(0.1, "--warmup-ratio")
_PRECISION_OPTION = typer.Option("auto", "--precision", help="auto, fp32, bf16 (autocast), bf16-pure.")
_EVAL_STEPS_OPTION = typer.Option(None, "--eval-steps", help="Evaluate every N steps (and at the end).")
_SAVE_STEPS_OPTION = typer.Option(200, "--save-steps", help="Checkpoint every N steps (and at the end).")
_SEED_OPTION = typer.Option(0, "--seed")
_THREADS_OPTION = typer.Option(None, "--threads", help="torch threads (default: torch's setting).")
_COLUMNS_OPTION = typer.Option(None, "--columns", help="Map file columns: question=anchor,answer=positive.")
_FORMAT_OPTION = typer.Option(None, "--format", help="jsonl, csv or tsv (default: from the suffix).")
_RESUME_OPTION = typer.Option(False, "--resume", help="Continue from OUT.ckpt.")
_FORCE_OPTION = typer.Option(False, "--force", help="Replace --out even if it is not a model saved by embedstack.")
_JSON_OPTION = typer.Option(False, "--json", help="Print one JSON object on stdout.")
_QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="No progress bar.")


def _read_rows(data: str, seed: int, columns: str | None, data_format: str | None, encoding: str,
               errors: TextErrors | str) -> Any:
    """The training rows of ``--data`` (a file with ``--columns`` / ``--format``, or a named set)."""
    from embedstack.training.run import training_data

    file_options: dict[str, Any] = {}
    if columns:
        file_options["columns"] = _columns(columns)
    if data_format:
        file_options["format"] = data_format
    return training_data(data, seed=seed, **text_options(encoding, errors), **file_options)


def _run_training(train: Any, out: Path, t0: float, json_out: bool, quiet: bool, **kwargs: Any) -> None:
    """Run ``train(..., progress=, stage=)`` with the progress bar and stage lines on stderr, then report."""
    say = (lambda line: None) if quiet or json_out else (lambda line: err_console.print(line))
    with progress(quiet=quiet or json_out) as prog:
        result = train(out=out, progress=_bar(prog), stage=say, **kwargs)
    _report(result, out, time.perf_counter() - t0, json_out, quiet, f"trained {out}")


def train_sentence_command(
    data: str = _DATA_OPTION,
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the trained model (a sentence-transformers folder; "
                             "checkpoints go to OUT.ckpt while training)."),
    model: str = typer.Option("all-MiniLM-L6-v2", "--model", "-m", help="Model to start from (SPEC or folder)."),
    loss: str = typer.Option("mnrl", "--loss", help="mnrl, mnrl-symmetric, cached-mnrl, cosent, cosine, contrastive, "
                             "online-contrastive, triplet, softmax."),
    matryoshka: str | None = typer.Option(None, "--matryoshka", help="Matryoshka dims, e.g. 384,256,128,64."),
    hard_negatives: str | None = _HARD_NEGATIVES_OPTION,
    num_negatives: int = typer.Option(1, "--num-negatives", help="Mined negatives per row."),
    range_min: int = typer.Option(0, "--range-min", help="Skip the first N ranked candidates when mining."),
    range_max: int = _RANGE_MAX_OPTION,
    mining_margin: float | None = typer.Option(None, "--mining-margin", help="Drop candidates scoring within this "
                                               "margin of the positive (false-negative guard)."),
    sampling: str = typer.Option("top", "--sampling", help="top or random among the kept candidates."),
    eval_spec: str | None = typer.Option(None, "--eval", help="Evaluate during training: sts:stsb/dev, "
                                         "retrieval:scifact/train#tune ..."),
    epochs: int = _EPOCHS_OPTION,
    max_steps: int | None = _MAX_STEPS_OPTION,
    batch_size: int = typer.Option(32, "--batch-size"),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Batches per optimizer step."),
    lr: float = typer.Option(2e-5, "--lr", help="Peak AdamW learning rate."),
    warmup_ratio: float = _WARMUP_OPTION,
    schedule: str = typer.Option("linear", "--schedule", help="linear, cosine or constant after warmup."),
    weight_decay: float = typer.Option(0.01, "--weight-decay"),
    max_grad_norm: float = typer.Option(1.0, "--max-grad-norm", help="Gradient clipping (0: off)."),
    precision: str = _PRECISION_OPTION,
    max_seq_length: int | None = typer.Option(None, "--max-seq-length", help="Truncate texts to N tokens."),
    group_by_length: bool = typer.Option(False, "--group-by-length", help="Batches of similar lengths."),
    eval_steps: int | None = _EVAL_STEPS_OPTION,
    save_steps: int | None = _SAVE_STEPS_OPTION,
    scale: float | None = typer.Option(None, "--scale", help="Loss scale (1/temperature) of mnrl/cosent."),
    margin: float | None = typer.Option(None, "--margin", help="Margin of contrastive/triplet losses."),
    mini_batch_size: int = typer.Option(32, "--mini-batch-size", help="Chunk rows of cached-mnrl."),
    seed: int = _SEED_OPTION,
    threads: int | None = _THREADS_OPTION,
    columns: str | None = _COLUMNS_OPTION,
    data_format: str | None = _FORMAT_OPTION,
    resume: bool = _RESUME_OPTION,
    encoding: str = ENCODING_OPTION,
    errors: TextErrors = ERRORS_OPTION,
    force: bool = _FORCE_OPTION,
    json_out: bool = _JSON_OPTION,
    quiet: bool = _QUIET_OPTION,
) -> None:
    """Fine-tune a sentence model (bi-encoder) on your pairs, triplets or scored pairs."""
    from embedstack.training.run import train_sentence
    from embedstack.training.trainer import TrainingArgs

    t0 = time.perf_counter()
    args = TrainingArgs(epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
                        warmup_ratio=warmup_ratio, schedule=schedule, weight_decay=weight_decay,
                        max_grad_norm=max_grad_norm, precision=precision, seed=seed, max_seq_length=max_seq_length,
                        group_by_length=group_by_length, eval_steps=eval_steps, save_steps=save_steps,
                        mini_batch_size=mini_batch_size, threads=threads)
    rows = _read_rows(data, seed, columns, data_format, encoding, errors)
    loss_options: dict[str, Any] = {}
    if scale is not None:
        loss_options["scale"] = scale
    if margin is not None:
        loss_options["margin"] = margin
    mining = {"num_negatives": num_negatives, "range_min": range_min, "range_max": range_max,
              "margin": mining_margin, "sampling": sampling}
    _run_training(train_sentence, out, t0, json_out, quiet, model=model, data=rows, loss=loss, args=args,
                  matryoshka_dims=_ints(matryoshka, "--matryoshka"), hard_negatives=hard_negatives, mining=mining,
                  eval=eval_spec, loss_options=loss_options, resume=resume, force=force)


def train_cross_encoder_command(
    data: str = typer.Option(..., "--data", "-d", help="Training data: a JSONL/CSV/TSV file or a named set: "
                             "(anchor, positive, label) pairs for bce, (anchor, positive, score) for regression, "
                             "(anchor, positive) pairs with --hard-negatives for listwise or bce."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the cross-encoder (loads in sentence-transformers' "
                             "CrossEncoder and Hugging Face AutoModelForSequenceClassification)."),
    model: str = typer.Option("all-MiniLM-L6-v2", "--model", "-m", help="A cross-encoder to continue, or a "
                              "bi-encoder / BERT to start one from (fresh classifier)."),
    loss: str = typer.Option("listwise", "--loss", help="bce, listwise (one positive against its negatives) or "
                             "regression."),
    hard_negatives: str | None = _HARD_NEGATIVES_OPTION,
    num_negatives: int = typer.Option(4, "--num-negatives", help="Mined negatives per positive."),
    range_min: int = typer.Option(0, "--range-min", help="Skip the first N ranked candidates when mining."),
    range_max: int = _RANGE_MAX_OPTION,
    sampling: str = typer.Option("random", "--sampling", help="top or random among the kept candidates."),
    eval_spec: str | None = typer.Option(None, "--eval", help="Evaluate during training, e.g. "
                                         "rerank:scifact/train#tune-dev (BM25 top 50 reranked; @N another depth)."),
    pooler: str = typer.Option("identity", "--pooler", help="A new cross-encoder's pooler: identity, keep, random."),
    teacher: str | None = typer.Option(None, "--teacher", help="listwise: a cross-encoder or bi-encoder (20 · cosine) "
                                       "whose scores of each group add a KL term (distillation)."),
    epochs: int = _EPOCHS_OPTION,
    max_steps: int | None = _MAX_STEPS_OPTION,
    batch_size: int = typer.Option(16, "--batch-size", help="Rows (groups or pairs) per step."),
    grad_accum: int = typer.Option(1, "--grad-accum"),
    lr: float = typer.Option(2e-5, "--lr", help="Peak AdamW learning rate of the transformer."),
    head_lr_scale: float = typer.Option(1.0, "--head-lr-scale", help="Learning-rate multiplier of the pooler and "
                                        "classifier (new weights)."),
    warmup_ratio: float = _WARMUP_OPTION,
    schedule: str = typer.Option("linear", "--schedule"),
    weight_decay: float = typer.Option(0.01, "--weight-decay"),
    precision: str = _PRECISION_OPTION,
    max_seq_length: int | None = typer.Option(None, "--max-seq-length", help="Longest pair in tokens (the query "
                                              "is kept whole, the document cut)."),
    group_by_length: bool = typer.Option(False, "--group-by-length"),
    eval_steps: int | None = _EVAL_STEPS_OPTION,
    save_steps: int | None = _SAVE_STEPS_OPTION,
    seed: int = _SEED_OPTION,
    threads: int | None = _THREADS_OPTION,
    columns: str | None = _COLUMNS_OPTION,
    data_format: str | None = _FORMAT_OPTION,
    resume: bool = _RESUME_OPTION,
    encoding: str = ENCODING_OPTION,
    errors: TextErrors = ERRORS_OPTION,
    force: bool = _FORCE_OPTION,
    json_out: bool = _JSON_OPTION,
    quiet: bool = _QUIET_OPTION,
) -> None:
    """Train a cross-encoder (reranker) on labelled pairs, scored pairs, or pairs with mined hard negatives."""
    from embedstack.training.run import train_cross_encoder
    from embedstack.training.trainer import TrainingArgs

    t0 = time.perf_counter()
    args = TrainingArgs(epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
                        warmup_ratio=warmup_ratio, schedule=schedule, weight_decay=weight_decay, precision=precision,
                        seed=seed, max_seq_length=max_seq_length, group_by_length=group_by_length,
                        eval_steps=eval_steps, save_steps=save_steps, threads=threads, head_lr_scale=head_lr_scale)
    rows = _read_rows(data, seed, columns, data_format, encoding, errors)
    mining = {"num_negatives": num_negatives, "range_min": range_min, "range_max": range_max, "sampling": sampling}
    _run_training(train_cross_encoder, out, t0, json_out, quiet, model=model, data=rows, loss=loss, args=args,
                  hard_negatives=hard_negatives, mining=mining, eval=eval_spec, pooler=pooler, teacher=teacher,
                  resume=resume, force=force)


def train_colbert_command(
    data: str = typer.Option(..., "--data", "-d", help="Training data: a JSONL/CSV/TSV file or a named set of "
                             "(anchor, positive[, negative_1..k]) rows; --hard-negatives mines the negatives."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the ColBERT model (a PyLate folder)."),
    model: str = typer.Option("all-MiniLM-L6-v2", "--model", "-m", help="A ColBERT to continue, or a bi-encoder / "
                              "BERT to start one from (fresh projection)."),
    loss: str = typer.Option("contrastive", "--loss", help="contrastive (in-batch + hard negatives) or distillation "
                             "(KL to --teacher only)."),
    teacher: str | None = typer.Option(None, "--teacher", help="A cross-encoder (or a bi-encoder: 20 · cosine) whose "
                                       "scores of each row's candidates the KL term follows (with contrastive: both "
                                       "terms)."),
    dim: int = typer.Option(128, "--dim", help="Token vector width of a new ColBERT."),
    query_length: int | None = typer.Option(None, "--query-length", help="Query tokens ([MASK]-padded to it; "
                                            "a new model: 32, a saved one: its own)."),
    document_length: int | None = typer.Option(None, "--document-length", help="Document tokens at most (a new "
                                               "model: 180, a saved one: its own)."),
    hard_negatives: str | None = _HARD_NEGATIVES_OPTION,
    num_negatives: int = typer.Option(1, "--num-negatives", help="Mined negatives per positive."),
    range_min: int = typer.Option(10, "--range-min", help="Skip the first N ranked candidates when mining."),
    range_max: int = _RANGE_MAX_OPTION,
    eval_spec: str | None = typer.Option(None, "--eval", help="Evaluate during training, e.g. "
                                         "retrieval:scifact/train#tune-dev (exact MaxSim)."),
    epochs: int = _EPOCHS_OPTION,
    max_steps: int | None = _MAX_STEPS_OPTION,
    batch_size: int = typer.Option(32, "--batch-size", help="Rows per step (in-batch negatives)."),
    lr: float = typer.Option(1e-4, "--lr", help="Peak AdamW learning rate of the transformer."),
    head_lr_scale: float = typer.Option(10.0, "--head-lr-scale", help="Learning-rate multiplier of the projection."),
    warmup_ratio: float = _WARMUP_OPTION,
    precision: str = _PRECISION_OPTION,
    eval_steps: int | None = _EVAL_STEPS_OPTION,
    save_steps: int | None = _SAVE_STEPS_OPTION,
    seed: int = _SEED_OPTION,
    threads: int | None = _THREADS_OPTION,
    columns: str | None = _COLUMNS_OPTION,
    data_format: str | None = _FORMAT_OPTION,
    resume: bool = _RESUME_OPTION,
    encoding: str = ENCODING_OPTION,
    errors: TextErrors = ERRORS_OPTION,
    force: bool = _FORCE_OPTION,
    json_out: bool = _JSON_OPTION,
    quiet: bool = _QUIET_OPTION,
) -> None:
    """Train a ColBERT (late-interaction) model: MaxSim over in-batch and mined negatives, or distillation."""
    from embedstack.training.run import train_colbert
    from embedstack.training.trainer import TrainingArgs

    t0 = time.perf_counter()
    args = TrainingArgs(epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, warmup_ratio=warmup_ratio,
                        precision=precision, seed=seed, eval_steps=eval_steps, save_steps=save_steps, threads=threads,
                        head_lr_scale=head_lr_scale)
    rows = _read_rows(data, seed, columns, data_format, encoding, errors)
    mining = {"num_negatives": num_negatives, "range_min": range_min, "range_max": range_max}
    lengths = {k: v for k, v in (("query_length", query_length), ("document_length", document_length)) if v is not None}
    _run_training(train_colbert, out, t0, json_out, quiet, model=model, data=rows, loss=loss, args=args,
                  hard_negatives=hard_negatives, mining=mining, eval=eval_spec, teacher=teacher, dim=dim,
                  model_options=lengths, resume=resume, force=force)


def train_splade_command(
    data: str = typer.Option(..., "--data", "-d", help="Training data: a JSONL/CSV/TSV file or a named set of "
                             "(anchor, positive[, negative_1..k]) rows; --hard-negatives mines the negatives."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the SPLADE model (a sentence-transformers "
                             "SparseEncoder folder)."),
    model: str = typer.Option("recipe:minilm-mlm-head", "--model", "-m", help="A SPLADE model to continue (an encoder "
                              "with its MLM head; all-MiniLM-L6-v2 ships none: recipe:minilm-mlm-head adds one)."),
    teacher: str | None = typer.Option(None, "--teacher", help="A cross-encoder (or a bi-encoder: 20 · cosine) whose "
                                       "scores add a KL term."),
    lambda_query: float = typer.Option(5e-4, "--lambda-query", help="FLOPS weight of the queries."),
    lambda_document: float = typer.Option(1e-4, "--lambda-document", help="FLOPS weight of the documents."),
    lambda_warmup_steps: int = typer.Option(20, "--lambda-warmup-steps", help="Steps of the quadratic λ warm-up."),
    max_seq_length: int = typer.Option(256, "--max-seq-length", help="Document tokens at most."),
    hard_negatives: str | None = _HARD_NEGATIVES_OPTION,
    num_negatives: int = typer.Option(1, "--num-negatives", help="Mined negatives per positive."),
    range_min: int = typer.Option(10, "--range-min", help="Skip the first N ranked candidates when mining."),
    range_max: int = _RANGE_MAX_OPTION,
    eval_spec: str | None = typer.Option(None, "--eval", help="Evaluate during training, e.g. "
                                         "retrieval:scifact/train#tune-dev."),
    epochs: int = _EPOCHS_OPTION,
    max_steps: int | None = _MAX_STEPS_OPTION,
    batch_size: int = typer.Option(16, "--batch-size", help="Rows per step (in-batch negatives)."),
    lr: float = typer.Option(5e-5, "--lr", help="Peak AdamW learning rate."),
    warmup_ratio: float = _WARMUP_OPTION,
    precision: str = _PRECISION_OPTION,
    eval_steps: int | None = _EVAL_STEPS_OPTION,
    save_steps: int | None = _SAVE_STEPS_OPTION,
    seed: int = _SEED_OPTION,
    threads: int | None = _THREADS_OPTION,
    columns: str | None = _COLUMNS_OPTION,
    data_format: str | None = _FORMAT_OPTION,
    resume: bool = _RESUME_OPTION,
    encoding: str = ENCODING_OPTION,
    errors: TextErrors = ERRORS_OPTION,
    force: bool = _FORCE_OPTION,
    json_out: bool = _JSON_OPTION,
    quiet: bool = _QUIET_OPTION,
) -> None:
    """Train a SPLADE (learned sparse) model: in-batch + hard-negative ranking loss with FLOPS regularisation."""
    from embedstack.training.run import train_splade
    from embedstack.training.trainer import TrainingArgs

    t0 = time.perf_counter()
    args = TrainingArgs(epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, warmup_ratio=warmup_ratio,
                        precision=precision, seed=seed, eval_steps=eval_steps, save_steps=save_steps, threads=threads,
                        max_seq_length=max_seq_length)
    rows = _read_rows(data, seed, columns, data_format, encoding, errors)
    mining = {"num_negatives": num_negatives, "range_min": range_min, "range_max": range_max}
    lambdas = {"lambda_query": lambda_query, "lambda_document": lambda_document, "lambda_warmup_steps": lambda_warmup_steps}
    _run_training(train_splade, out, t0, json_out, quiet, model=model, data=rows, loss_options=lambdas, args=args,
                  hard_negatives=hard_negatives, mining=mining, eval=eval_spec, teacher=teacher, resume=resume,
                  force=force)


def recipe_command(
    name: str | None = typer.Argument(None, help="Recipe to build (see --list)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Where to write the model (default: the recipe "
                                    "cache, where specs like recipe:NAME look)."),
    list_: bool = typer.Option(False, "--list", help="List the recipes: data, loss, time on 2 cores, expected metric."),
    seed: int | None = typer.Option(None, "--seed", help="Override the recipe's seed (not its starting recipe's)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted build from OUT.ckpt."),
    precision: str | None = typer.Option(None, "--precision", help="Override the recipe's training precision: fp32 "
                                         "on a CPU without native bf16 (the recipes train in bf16; results then "
                                         "differ slightly from the expected figure)."),
    force: bool = _FORCE_OPTION,
    json_out: bool = _JSON_OPTION,
    quiet: bool = _QUIET_OPTION,
) -> None:
    """Rebuild a model the benchmarks, the ladder or the docs use, deterministically, with one command."""
    from embedstack.training.recipes import RECIPES, build_recipe, get_recipe

    if list_ or name is None:
        if json_out:
            print_json({"recipes": [r.describe() for r in RECIPES.values()]})
            return
        print_table("recipes (embedstack recipe NAME --out DIR)",
                    ["name", "kind", "data", "train", "time (2 cores)", "expected"],
                    [[r.name, r.kind, r.data_label, r.training_label, r.time_label, r.expected_label]
                     for r in RECIPES.values()])
        return
    recipe = get_recipe(name)
    t0 = time.perf_counter()
    say = (lambda line: None) if quiet or json_out else (lambda line: err_console.print(line))
    with progress(quiet=quiet or json_out) as prog:
        result, folder = build_recipe(recipe, out=out, seed=seed, force=force, progress=_bar(prog), stage=say,
                                      resume=resume, precision=precision)
    seconds = round(time.perf_counter() - t0, 1)
    if json_out:
        print_json({"recipe": recipe.name, "out": str(folder), "seconds": seconds, **result})
        return
    rows = [["out", str(folder)], ["seconds", f"{seconds:,.0f}"]]
    rows += [[f"train {k}", f"{v:.4g}" if isinstance(v, float) else str(v)] for k, v in result.get("train", {}).items()]
    rows += [[f"{recipe.report or 'held-out'} {k} (x100)", f"{v:.2f}"] for k, v in result.get("report", {}).items()]
    if recipe.expected is not None:
        rows.append(["expected", recipe.expected_label])
    print_table(f"recipe {recipe.name}", ["", "value"], rows)


def register(app: typer.Typer) -> None:
    """Add ``train sentence``, ``train cross-encoder``, ``train colbert`` and ``train splade`` to the ``train`` group and the top-level ``recipe`` command."""
    from embedstack.cli.train import train_app

    train_app.command("sentence")(train_sentence_command)
    train_app.command("cross-encoder")(train_cross_encoder_command)
    train_app.command("colbert")(train_colbert_command)
    train_app.command("splade")(train_splade_command)
    app.command("recipe")(recipe_command)
