"""``embedstack train word2vec|fasttext|glove CORPUS --out DIR``: train static word vectors.

CORPUS is a text file (one text per line), a .gz, a WikiExtractor folder/file or a dataset name
(``enwiki``). Progress (words/s, loss) goes to stderr; ``--json`` prints one JSON object with
words/s, seconds and the vocabulary size on stdout. Other areas add their trainers to ``train_app``.
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
    TextOptions,
    err_console,
    print_json,
    progress,
    text_options,
)

__all__ = ["train_app", "register"]


train_app = typer.Typer(help="Train models (static word vectors: word2vec, fasttext, glove).", no_args_is_help=True)

_CORPUS = typer.Argument(..., help="Text file / .gz / WikiExtractor folder / dataset name (e.g. enwiki).")
_OUT = typer.Option(None, "--out", "-o", help="Folder to write the vectors to (replaced atomically); default: "
                    "<cache>/vectors/KIND-enwiki, where the word2vec/fasttext/glove model specs look.")
_DIM = typer.Option(100, "--dim", help="Vector size.")
_MIN = typer.Option(5, "--min-count", help="Ignore words seen fewer times.")
_MAXV = typer.Option(None, "--max-vocab", help="Keep at most this many words.")
_EPOCHS_HELP = "Passes over the corpus."
_ALPHA_HELP = "Initial learning rate [default: 0.025 for skip-gram, 0.05 for CBOW, as word2vec.c]."
_WORKERS = typer.Option(None, "--workers", help="Training threads, and processes reading a large corpus (default: all CPUs).")
_SEED = typer.Option(1, "--seed", help="Random seed (runs with --workers 1 are reproducible).")
_JSON = typer.Option(False, "--json", help="Print one JSON object on stdout (and nothing else there).")
_FORCE = typer.Option(False, "--force", help="Replace --out even if it is not saved word vectors (its files are deleted).")
_QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar.")
_W2V_TEXT = typer.Option(False, "--word2vec-format", help="Also write vectors.txt (word2vec text format).")




_VECTORS_TYPE = {"word2vec": "KeyedVectors", "fasttext": "FastTextKeyedVectors", "glove": "KeyedVectors"}


def _run(kind: str, trainer: Any, corpus: str, out: Path | None, *, json_out: bool, quiet: bool,
         text_copy: bool, text: TextOptions, force: bool = False) -> None:
    from embedstack.static._corpus import IdCorpus
    from embedstack.static._train import check_workers
    from embedstack.static.specs import default_vectors_path

    out = Path(out) if out is not None else default_vectors_path(kind)
    from embedstack.io import check_output

    check_output(out, kind=_VECTORS_TYPE[kind], force=force)  # before reading the corpus

    t0 = time.perf_counter()
    with progress(quiet=quiet or json_out) as prog:
        read = prog.add_task("reading corpus", total=None, info="")

        def on_corpus(n: int) -> None:
            prog.update(read, completed=n, info=f"{n / 1e6:.1f}M tokens")

        # the path itself (not a stream of its texts): worker processes can then read parts of it
        data = IdCorpus.build(corpus, analyzer=trainer.analyzer, min_count=trainer.min_count,
                              max_vocab=trainer.max_vocab, max_sentence_length=trainer.max_sentence_length,
                              progress=on_corpus, workers=check_workers(trainer, trainer.workers),
                              encoding=text["encoding"],
                              errors=text["errors"])
        prog.update(read, completed=data.raw_words, total=data.raw_words,
                    info=f"{data.raw_words:,} tokens, {len(data.vocab):,} words")
        corpus_seconds = time.perf_counter() - t0
        task = prog.add_task(f"training {kind}", total=1, info="")

        def on_train(p: dict[str, Any]) -> None:
            if p.get("total"):
                prog.update(task, completed=int(p["done"]), total=int(p["total"]),
                            info=f"epoch {p.get('epoch', 1)}  {p.get('words_per_second', 0) / 1e3:,.0f}k words/s  "
                                 f"loss {p.get('loss', 0):.4f}")

        trainer.fit(data, progress=on_train)
    trainer.save(out, force=force)
    if text_copy:
        trainer.wv_.save_word2vec_format(Path(out) / "vectors.txt")
    stats = trainer.stats_
    result = {"model": kind, "out": str(out), "vocab_size": len(data.vocab), "raw_words": data.raw_words,
              "corpus_seconds": round(corpus_seconds, 3), "seconds": round(stats.seconds, 3),
              "words_per_second": round(stats.words_per_second, 1), "epochs": trainer.epochs,
              "effective_words": stats.effective_words,
              "loss": stats.epoch_loss[-1] if stats.epoch_loss else None,
              "total_seconds": round(time.perf_counter() - t0, 3)}
    if kind == "glove":
        result["nonzeros"] = trainer.wv_.meta.get("nonzeros")
        result["count_seconds"] = trainer.wv_.meta.get("count_seconds")
    else:
        result["alpha"] = trainer.start_alpha  # the initial learning rate used (its default depends on --sg/--cbow)
    if json_out:
        print_json(result)
    elif not quiet:
        err_console.print(
            f"[green]saved[/] {kind} vectors ({result['vocab_size']:,} words x {trainer.dim}) to {out} — "
            f"{result['words_per_second']:,.0f} words/s, training {result['seconds']:.1f}s, "
            f"corpus {result['corpus_seconds']:.1f}s"
        )


@train_app.command("word2vec")
def word2vec_cmd(
    corpus: str = _CORPUS, out: Path | None = _OUT, dim: int = _DIM,
    window: int = typer.Option(5, "--window", help="Maximum context distance."),
    negative: int = typer.Option(5, "--negative", help="Negative samples (0: none)."),
    epochs: int = typer.Option(5, "--epochs", help=_EPOCHS_HELP), min_count: int = _MIN,
    max_vocab: int | None = _MAXV, workers: int | None = _WORKERS,
    sg: bool = typer.Option(True, "--sg/--cbow", help="Skip-gram or CBOW."),
    hs: bool = typer.Option(False, "--hs", help="Hierarchical softmax."),
    sample: float = typer.Option(1e-3, "--sample", help="Subsampling threshold (0: off)."),
    alpha: float | None = typer.Option(None, "--alpha", help=_ALPHA_HELP),
    min_alpha: float = typer.Option(1e-4, "--min-alpha", help="Final learning rate (linear decay from --alpha)."),
    shared_negatives: bool = typer.Option(
        True, "--shared-negatives/--no-shared-negatives",
        help="Skip-gram: draw negatives once per centre word, shared by its context words (one small matrix "
             "product per word, faster); --no-shared-negatives draws them per pair as word2vec.c and gensim do."),
    seed: int = _SEED, text_copy: bool = _W2V_TEXT, encoding: str = ENCODING_OPTION,
    errors: TextErrors = ERRORS_OPTION, json_out: bool = _JSON, quiet: bool = _QUIET, force: bool = _FORCE,
) -> None:
    """Train word2vec (skip-gram or CBOW; negative sampling and/or hierarchical softmax)."""
    from embedstack.static.word2vec import Word2Vec

    trainer = Word2Vec(dim=dim, window=window, negative=negative, epochs=epochs, min_count=min_count,
                       max_vocab=max_vocab, workers=workers, sg=sg, hs=hs, sample=sample, alpha=alpha, min_alpha=min_alpha, seed=seed,
                       shared_negatives=shared_negatives)
    trainer._check()
    _run("word2vec", trainer, corpus, out, json_out=json_out, quiet=quiet, text_copy=text_copy, force=force,
         text=text_options(encoding, errors))


@train_app.command("fasttext")
def fasttext_cmd(
    corpus: str = _CORPUS, out: Path | None = _OUT, dim: int = _DIM,
    window: int = typer.Option(5, "--window", help="Maximum context distance."),
    negative: int = typer.Option(5, "--negative", help="Negative samples."),
    epochs: int = typer.Option(5, "--epochs", help=_EPOCHS_HELP), min_count: int = _MIN,
    max_vocab: int | None = _MAXV, workers: int | None = _WORKERS,
    sg: bool = typer.Option(True, "--sg/--cbow", help="Skip-gram or CBOW."),
    sample: float = typer.Option(1e-3, "--sample", help="Subsampling threshold (0: off)."),
    minn: int = typer.Option(3, "--minn", help="Shortest character n-gram."),
    maxn: int = typer.Option(6, "--maxn", help="Longest character n-gram (0: no n-grams)."),
    bucket: int = typer.Option(2_000_000, "--bucket", help="Hashed n-gram rows."),
    alpha: float | None = typer.Option(None, "--alpha", help=_ALPHA_HELP),
    min_alpha: float = typer.Option(1e-4, "--min-alpha", help="Final learning rate (linear decay from --alpha)."),
    shared_negatives: bool = typer.Option(
        False, "--shared-negatives/--no-shared-negatives",
        help="Skip-gram: one draw of negatives per two context words, scored once (faster, but lower "
             "analogy accuracy; see BENCHMARKS.md); the default draws them per pair as fastText and gensim do."),
    seed: int = _SEED, text_copy: bool = _W2V_TEXT, encoding: str = ENCODING_OPTION,
    errors: TextErrors = ERRORS_OPTION, json_out: bool = _JSON, quiet: bool = _QUIET, force: bool = _FORCE,
) -> None:
    """Train fastText (subword n-gram) vectors; out-of-vocabulary words get vectors from n-grams."""
    from embedstack.static.fasttext import FastText

    trainer = FastText(dim=dim, window=window, negative=negative, epochs=epochs, min_count=min_count,
                       max_vocab=max_vocab, workers=workers, sg=sg, sample=sample, minn=minn, maxn=maxn,
                       bucket=bucket, alpha=alpha, min_alpha=min_alpha, seed=seed, shared_negatives=shared_negatives)
    trainer._check()
    _run("fasttext", trainer, corpus, out, json_out=json_out, quiet=quiet, text_copy=text_copy, force=force,
         text=text_options(encoding, errors))


@train_app.command("glove")
def glove_cmd(
    corpus: str = _CORPUS, out: Path | None = _OUT, dim: int = _DIM,
    window: int = typer.Option(10, "--window", help="Co-occurrence window (1/distance weighting)."),
    epochs: int = typer.Option(25, "--epochs", help=_EPOCHS_HELP), min_count: int = _MIN,
    max_vocab: int | None = _MAXV, workers: int | None = _WORKERS,
    x_max: float = typer.Option(100.0, "--x-max", help="Weighting cut-off x_max."),
    learning_rate: float = typer.Option(0.05, "--learning-rate", help="AdaGrad learning rate."),
    seed: int = _SEED, text_copy: bool = _W2V_TEXT, encoding: str = ENCODING_OPTION,
    errors: TextErrors = ERRORS_OPTION, json_out: bool = _JSON, quiet: bool = _QUIET, force: bool = _FORCE,
) -> None:
    """Train GloVe vectors (co-occurrence counts + weighted least squares, AdaGrad)."""
    from embedstack._validation import check_int
    from embedstack.static._train import check_workers
    from embedstack.static.glove import GloVe

    trainer = GloVe(dim=dim, window=window, epochs=epochs, min_count=min_count, max_vocab=max_vocab,
                    workers=workers, x_max=x_max, learning_rate=learning_rate, seed=seed)
    check_int(trainer, "dim", dim, low=1)
    check_workers(trainer, workers)
    _run("glove", trainer, corpus, out, json_out=json_out, quiet=quiet, text_copy=text_copy, force=force,
         text=text_options(encoding, errors))


def register(app: typer.Typer) -> None:
    """Add the ``train`` group to the root app."""
    app.add_typer(train_app, name="train")
