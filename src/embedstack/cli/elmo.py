"""``embedstack train elmo CORPUS --out DIR --minutes N``: train an ELMo biLM from scratch on CPU.

The model trains within a budget (``--minutes``, ``--max-steps`` or ``--max-words``), is scored on held-out
documents (every ``--held-out-every``-th one, never trained on) and saved as an ``Elmo`` component folder
that ``elmo:DIR`` model specs read. Progress (loss, tokens/s, ETA) goes to stderr; the result
(perplexities, tokens seen, time) to stdout, or as one JSON object with ``--json``.
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
    print_json,
    print_table,
    progress,
    text_options,
)

__all__ = ["register"]


def elmo_command(
    corpus: str = typer.Argument(..., help="Text file / .gz / WikiExtractor folder / dataset name (e.g. enwiki)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to save the model to (replaced atomically)."),
    minutes: float | None = typer.Option(10.0, "--minutes", help="Wall-clock training budget (0: none; then give "
                                         "--max-steps or --max-words)."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this many steps."),
    max_words: int | None = typer.Option(None, "--max-words", help="Stop after this many training words."),
    batch_size: int = typer.Option(64, "--batch-size", help="Windows per step."),
    window: int = typer.Option(20, "--window", help="Words per training window (truncated back-propagation)."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak AdamW learning rate."),
    vocab_size: int = typer.Option(50_000, "--vocab-size", help="Output (softmax) vocabulary size."),
    hidden: int = typer.Option(512, "--hidden", help="LSTM cell size."),
    proj: int = typer.Option(256, "--proj", help="Projection size (each layer is 2 x --proj wide)."),
    held_out_every: int = typer.Option(100, "--held-out-every", help="Hold out every N-th document."),
    held_out_sentences: int = typer.Option(2000, "--held-out-sentences", help="Held-out windows scored."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, or bf16 autocast (faster on CPUs with "
                                  "AVX-512 BF16 / AMX)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    threads: int | None = typer.Option(None, "--threads", help="torch threads (default: torch's setting)."),
    encoding: str = ENCODING_OPTION,
    errors: TextErrors = ERRORS_OPTION,
    force: bool = typer.Option(False, "--force", help="Replace --out even if it is not an ELMo folder saved by "
                               "embedstack (its files are deleted)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train ELMo (char CNN + biLSTM language model) within a budget and report held-out perplexity."""
    from embedstack.data import iter_texts
    from embedstack.io import check_output
    from embedstack.training.elmo import train_elmo

    check_output(out, kind="Elmo", force=force)  # before minutes of training, not after
    text = text_options(encoding, errors)
    next(iter(iter_texts(corpus, **text)), None)  # fail fast (DatasetError) on a missing corpus
    t0 = time.perf_counter()
    budget = minutes if minutes else None
    with progress(quiet=quiet or json_out) as prog:
        task = prog.add_task("training ELMo", total=None, info="reading the corpus")

        def on_step(p: dict[str, Any]) -> None:
            prog.update(task, completed=p["step"], total=p["total"],
                        info=f"loss {p['loss']:.3f}  {p['tokens_per_second']:,.0f} tok/s  {p['tokens']:,} tokens")

        result = train_elmo(lambda: iter_texts(corpus, **text), minutes=budget, max_steps=max_steps,
                            max_words=max_words, batch_size=batch_size, window=window, lr=lr, vocab_size=vocab_size,
                            config={"hidden_dim": hidden, "proj_dim": proj}, held_out_every=held_out_every,
                            held_out_sentences=held_out_sentences, precision=precision, seed=seed, threads=threads,
                            progress=on_step)
    result.elmo.name = out.name
    result.elmo.meta = {"training": result.summary(), "corpus": corpus, "lr": lr, "seed": seed,
                        "precision": precision}
    folder = result.elmo.save(out, force=force)
    info = {"out": str(folder), **result.summary(), "total_seconds": round(time.perf_counter() - t0, 1)}
    if json_out:
        print_json(info)
        return
    print_table(f"ELMo trained on {corpus}", ["", "value"],
                [["out", str(folder)],
                 ["held-out perplexity forward / backward / average",
                  f"{info['perplexity_forward']:.1f} / {info['perplexity_backward']:.1f} / "
                  f"{info['perplexity_average']:.1f}"],
                 ["held-out windows / tokens", f"{info['held_out_sentences']:,} / {info['held_out_tokens']:,}"],
                 ["tokens seen", f"{info['tokens']:,}"], ["tokens/s", f"{info['tokens_per_second']:,.0f}"],
                 ["steps", f"{info['steps']:,} (stopped by {info['stopped_by']})"],
                 ["training seconds", f"{info['seconds']:,.0f}"],
                 ["layers x dim, params", f"{info['layers']} x {info['dim']}, {info['params']:,}"]])


def register(app: typer.Typer) -> None:
    """Add ``train elmo`` to the ``train`` group (created by :mod:`embedstack.cli.train`)."""
    from embedstack.cli.train import train_app

    train_app.command("elmo")(elmo_command)
