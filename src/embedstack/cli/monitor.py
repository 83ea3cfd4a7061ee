"""``embedstack monitor golden|drift``: quality and drift checks for cron and CI (exit status 1 on alarm).

* ``embedstack monitor golden --index IDX --queries Q.jsonl --qrels QRELS.tsv --history H.jsonl``
  scores the index on a golden set and alarms when the metric fell by more than ``--margin``.
* ``embedstack monitor drift REF NEW`` compares two batches of vectors (``.npy`` from ``embedstack
  encode``; or text files, one text per line, encoded with ``--model SPEC``).

Both print the result on stdout (``--json``: one object) and append it to ``--history`` when given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from embedstack.cli._common import ENCODING_OPTION, err_console, print_json, print_table

__all__ = ["register"]

monitor_app = typer.Typer(help="Monitor retrieval quality (golden set) and embedding drift; exit 1 on alarm.",
                          no_args_is_help=True)

_JSON = typer.Option(False, "--json", help="Print one JSON object.")


def _exit(alarm: bool) -> None:
    if alarm:
        raise typer.Exit(1)


@monitor_app.command("golden")
def golden_cmd(
    index: Path = typer.Option(..., "--index", help="Index folder or alias (built by `embedstack index build`)."),
    queries: Path = typer.Option(..., "--queries", help="Golden queries: BEIR queries.jsonl ({'_id', 'text'})."),
    qrels: Path = typer.Option(..., "--qrels", help="Golden judgements: BEIR/TREC qrels (query-id, corpus-id, score)."),
    k: int = typer.Option(10, "--k", "-k", help="Cut-off of Recall@K, MRR@K and nDCG@K."),
    metric: str = typer.Option("ndcg", "--metric", help="The metric the alarm watches: recall, mrr or ndcg."),
    margin: float = typer.Option(0.02, "--margin", help="Alarm when the metric drops by more than this (absolute)."),
    against: str = typer.Option("best", "--against", help="Compare with the best run in the history, or the last."),
    history: Path | None = typer.Option(None, "--history", help="JSONL file the run is appended to and compared with."),
    label: str | None = typer.Option(None, "--label", help="A tag stored with the run (model version, commit ...)."),
    encoding: str = ENCODING_OPTION,
    json_out: bool = _JSON,
) -> None:
    """Score an index on a golden set; exit 1 when quality dropped by more than --margin."""
    from embedstack.data._retrieval import _read_queries, read_qrels
    from embedstack.errors import DatasetError
    from embedstack.evaluation.monitor import check_golden

    for flag, p in (("--queries", queries), ("--qrels", qrels)):
        if not p.is_file():
            raise DatasetError(f"{flag} {p}: no such file.")
    res = check_golden(index, _read_queries(queries, encoding, "strict"), read_qrels(qrels, encoding=encoding), k=k,
                       metric=metric, margin=margin, against=against, history=history, label=label)
    if json_out:
        print_json(res)
    else:
        print_table(f"golden set: {res['n_queries']} queries on {index}", ["metric", "value"],
                    [[m, f"{v:.4f}"] for m, v in res["metrics"].items()], right=("value",))
        (err_console.print if not res["alarm"] else lambda m: err_console.print(f"[red]ALARM[/red] {m}"))(res["message"])
    _exit(res["alarm"])


def _vectors(path: Path, model: Any, what: str, encoding: str) -> Any:
    import numpy as np

    from embedstack.errors import ConfigError, DatasetError, FormatError

    if not path.is_file():
        raise DatasetError(f"{what} {path}: no such file.")
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False, mmap_mode="r")
        except ValueError as exc:
            raise FormatError(f"{what} {path} is not a readable .npy matrix ({exc}).") from None
    if model is None:
        raise ConfigError(f"{what} {path} is not a .npy file; to compare texts give --model SPEC to encode them "
                          "(or encode them first with `embedstack encode`).", param=("--model", "--model"))
    from embedstack.data._io import iter_lines
    from embedstack.evaluation.runners import encode_dense

    texts = [line for _, line in iter_lines(path, encoding=encoding) if line.strip()]
    return encode_dense(model, texts)


@monitor_app.command("drift")
def drift_cmd(
    reference: Path = typer.Argument(..., help="Reference batch: .npy vectors, or a text file (one per line) with --model."),
    new: Path = typer.Argument(..., help="New batch, in the same form."),
    model: str | None = typer.Option(None, "--model", help="Encode text files with this SPEC."),
    tests: str = typer.Option("mean_shift,covariance,mean_cosine,mmd,classifier", "--tests",
                              help="Comma-separated tests to run."),
    alpha: float = typer.Option(0.05, "--alpha", help="False-alarm rate (overall, Bonferroni over the tests)."),
    permutations: int = typer.Option(200, "--permutations", help="Label shuffles calibrating each test."),
    max_samples: int = typer.Option(1000, "--max-samples", help="Vectors drawn from each batch."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling and the shuffles."),
    history: Path | None = typer.Option(None, "--history", help="JSONL file the result is appended to."),
    label: str | None = typer.Option(None, "--label", help="A tag stored with the result."),
    encoding: str = ENCODING_OPTION,
    json_out: bool = _JSON,
) -> None:
    """Test whether NEW's embeddings are distributed like REFERENCE's; exit 1 on drift."""
    from embedstack.evaluation.monitor import check_drift
    from embedstack.models import resolve

    encoder = resolve(model) if model else None
    if encoder is not None and getattr(encoder, "requires_fit", False):
        from embedstack.errors import ConfigError

        raise ConfigError(f"--model {model!r} must be fitted on a corpus first; give a model that needs no fitting "
                          "(a transformer, word vectors, a saved fitted folder).", param=("--model", "--model"))
    ref = _vectors(reference, encoder, "REFERENCE", encoding)
    cur = _vectors(new, encoder, "NEW", encoding)
    res = check_drift(ref, cur, history=history, label=label,
                      tests=[t.strip() for t in tests.split(",") if t.strip()], alpha=alpha,
                      permutations=permutations, max_samples=max_samples, seed=seed)
    if json_out:
        print_json(res)
    else:
        print_table(f"drift: {res['n_reference']} reference vs {res['n_new']} new vectors",
                    ["test", "statistic", "threshold", "p-value", "alarm"],
                    [[n, f"{t['statistic']:.4g}", f"{t['threshold']:.4g}", f"{t['p_value']:.3g}",
                      "yes" if t["drift"] else "no"] for n, t in res["tests"].items()],
                    right=("statistic", "threshold", "p-value"))
        err_console.print(("[red]ALARM[/red] " if res["alarm"] else "") + res["message"])
    _exit(res["alarm"])


def register(app: typer.Typer) -> None:
    app.add_typer(monitor_app, name="monitor")
