"""``embedstack train mlm CORPUS --out DIR``: pretrain a small BERT from scratch (masked LM) on CPU.

The model trains within a time budget (``--minutes``) and is saved as a sentence-transformers folder
(mean pooling, not normalised) that ``embedstack.load`` and sentence-transformers both read.
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
    progress,
    text_options,
)

__all__ = ["register"]


def mlm_command(
    corpus: str = typer.Argument(..., help="Text file / .gz / WikiExtractor folder / dataset name (e.g. enwiki)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to save the model to (replaced atomically)."),
    minutes: float = typer.Option(10.0, "--minutes", help="Wall-clock training budget."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this many steps (deterministic)."),
    layers: int = typer.Option(4, "--layers", help="Transformer blocks."),
    hidden: int = typer.Option(256, "--hidden", help="Hidden size."),
    heads: int = typer.Option(4, "--heads", help="Attention heads (must divide --hidden)."),
    max_len: int = typer.Option(128, "--max-len", help="Tokens per training sequence."),
    batch_size: int = typer.Option(32, "--batch-size", help="Sequences per step."),
    lr: float = typer.Option(5e-4, "--lr", help="Peak AdamW learning rate."),
    vocab_from: str | None = typer.Option(None, "--vocab-from", help="Reuse this model's WordPiece tokenizer "
                                          "(e.g. all-MiniLM-L6-v2); default: learn one from the corpus."),
    vocab_size: int = typer.Option(8000, "--vocab-size", help="Vocabulary size when learning one."),
    positions: str = typer.Option("absolute", "--positions", help="absolute (learned) or sinusoidal."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    threads: int | None = typer.Option(None, "--threads", help="torch threads (default: torch's setting)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, or bf16 mixed precision (faster on CPUs "
                                  "with AMX / AVX-512 BF16)."),
    encoding: str = ENCODING_OPTION,
    errors: TextErrors = ERRORS_OPTION,
    force: bool = typer.Option(False, "--force", help="Replace --out even if it is not a model folder saved by "
                               "embedstack (its files are deleted)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Pretrain a small BERT with the masked-LM objective within a time budget."""
    import itertools

    import torch

    from embedstack.data import iter_texts
    from embedstack.neural.config import BertConfig
    from embedstack.neural.mlm import pretrain_mlm, save_pretrained
    from embedstack.neural.tokenizer import WordPiece

    if threads is not None:
        torch.set_num_threads(threads)
    from embedstack.io import SENTENCE_MODEL, check_output

    check_output(out, kind=SENTENCE_MODEL, force=force)  # before minutes of training, not after
    t0 = time.perf_counter()
    text = text_options(encoding, errors)
    next(iter(iter_texts(corpus, **text)), None)  # fail fast (DatasetError) on a missing corpus
    if vocab_from:
        from embedstack.neural.hub import resolve_model

        folder, how = resolve_model(vocab_from)
        tokenizer = WordPiece.from_file(folder)
        if not quiet and not json_out:
            err_console.print(f"tokenizer from {vocab_from} ({how}), {tokenizer.vocab_size:,} ids")
    else:
        tokenizer = WordPiece.train(itertools.islice(iter_texts(corpus, **text), 20000), vocab_size=vocab_size)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden,
                        max_position_embeddings=max(512, max_len), position_embedding_type=positions)
    with progress(quiet=quiet or json_out) as prog:
        task = prog.add_task("pretraining (MLM)", total=max_steps, info="")
        started = time.perf_counter()

        def on_step(step: int, loss: float) -> None:
            left = max(0.0, minutes * 60 - (time.perf_counter() - started))
            prog.update(task, completed=step, info=f"loss {loss:.3f}  {left:,.0f}s left")

        result = pretrain_mlm(lambda: iter_texts(corpus, **text), tokenizer, config, minutes=minutes, max_steps=max_steps,
                              batch_size=batch_size, max_len=max_len, lr=lr, seed=seed, precision=precision,
                              progress=on_step)
    folder = save_pretrained(result, out, force=force, max_seq_length=max_len,
                             extra={"corpus": corpus, "vocab_from": vocab_from, "lr": lr, "seed": seed,
                                    "precision": precision})
    first = result.losses[0][1] if result.losses else float("nan")
    last = result.losses[-1][1] if result.losses else float("nan")
    info: dict[str, Any] = {"out": str(folder), "steps": result.steps, "tokens": result.tokens,
                            "seconds": round(time.perf_counter() - t0, 1), "first_loss": first, "last_loss": last,
                            "params": sum(p.numel() for p in result.model.bert.parameters())}
    if json_out:
        print_json(info)
    elif not quiet:
        err_console.print(f"{result.steps} steps, {result.tokens:,} tokens; loss {first:.3f} → {last:.3f}; saved {folder}")


def register(app: typer.Typer) -> None:
    """Add ``train mlm`` to the ``train`` group (created by :mod:`embedstack.cli.train`)."""
    from embedstack.cli.train import train_app

    train_app.command("mlm")(mlm_command)
