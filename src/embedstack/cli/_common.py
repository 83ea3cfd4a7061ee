"""Helpers shared by command modules: consoles, progress, JSON output, error handling."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Any, TypedDict

import typer
from rich.console import Console

__all__ = ["err_console", "out_console", "print_json", "print_table", "progress", "route_warnings", "ENCODING_OPTION",
           "ERRORS_OPTION", "TextErrors", "text_options"]

# Results (hit lists, metric tables, listings) go to stdout, so `cmd > file` keeps them; progress bars,
# logs and notes go to stderr. With `--json` stdout holds exactly one JSON object and nothing else.
err_console = Console(stderr=True)
out_console = Console(soft_wrap=True)  # a line written to a file or pipe is never broken at 80 columns


def route_warnings() -> None:
    """On the command line, Python warnings become one ``warning: ...`` line on stderr when embedstack
    raised them, and DEBUG log records (logger ``embedstack.warnings``) when a third-party library did
    (torch, onnxruntime ...): no source lines, no stray library notes on the user's terminal."""
    import logging
    import os
    import warnings

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    seen: set[str] = set()

    def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        text = " ".join(str(message).split())
        if not os.path.abspath(filename).startswith(package):
            logging.getLogger("embedstack.warnings").debug("%s: %s (%s:%d)", category.__name__, text, filename, lineno)
            return
        if text not in seen:
            seen.add(text)
            err_console.print(f"[yellow]warning:[/] {text}", highlight=False, soft_wrap=True)

    warnings.showwarning = show


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout and nothing else."""
    sys.stdout.write(json.dumps(obj, default=_default) + "\n")
    sys.stdout.flush()


def _default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


def print_table(title: str, columns: list[str], rows: list[list[str]], *, right: tuple[str, ...] = (),
                fold: tuple[str, ...] = ()) -> None:
    """A result table on stdout: a rich table in a terminal, tab-separated plain text otherwise.

    In a file or a pipe the output is ``# title``, a header line and one line per row, fields separated by
    tabs (rich markup stripped, whitespace inside a cell collapsed), so ``cut``/``grep``/``sort`` work.

    Args:
        title: table title, plain text (it often holds user input: a query, a word, a path).
        columns: column names.
        rows: cells (rich markup allowed).
        right: columns aligned right in the terminal.
        fold: columns folded (wrapped) in the terminal instead of kept on one line.
    """
    if out_console.is_terminal:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=escape(title), header_style="bold")
        for c in columns:
            table.add_column(c, justify="right" if c in right else "left",
                             overflow="fold" if c in fold else "ellipsis", no_wrap=c not in fold)
        for r in rows:
            table.add_row(*r)
        out_console.print(table)
        return
    from rich.text import Text

    def plain(cell: str) -> str:
        return " ".join(Text.from_markup(str(cell)).plain.split())

    lines = [f"# {' '.join(title.split())}", "\t".join(columns), *("\t".join(plain(c) for c in r) for r in rows)]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


class TextErrors(Enum):
    """``--errors``: what to do with bytes that are not valid in ``--encoding`` (a plain Enum: a ``str``
    subclass would have its ``replace`` member shadow ``str.replace``)."""

    strict = "strict"
    replace = "replace"


# Every command that reads text files takes these two options and passes them to the loaders
# (one reader: embedstack.data._io), whose decoding errors name these flags.
ENCODING_OPTION: Any = typer.Option("utf-8", "--encoding", help="Text encoding of the input files "
                                    "(utf-8, latin-1, cp1252, utf-16 ...).")
ERRORS_OPTION: Any = typer.Option(TextErrors.strict, "--errors", help="strict: stop with an error at the first "
                                  "byte that is not valid in --encoding; replace: read such bytes as U+FFFD.")


class TextOptions(TypedDict):
    """The ``encoding=``/``errors=`` keywords every text reader takes."""

    encoding: str
    errors: str


def text_options(encoding: str, errors: TextErrors | str) -> TextOptions:
    """The ``encoding=``/``errors=`` keywords of the loaders, checked, from the two options above."""
    from embedstack.data._io import check_encoding, check_errors

    value = errors.value if isinstance(errors, TextErrors) else str(errors)
    return {"encoding": check_encoding(encoding), "errors": check_errors(value)}


def progress(quiet: bool = False, transient: bool = True) -> Any:
    """A rich Progress on stderr (disabled when quiet): bar, done/total, elapsed and remaining time.

    Callers update it per batch, so the bar and its ETA move from the first batch on.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=err_console, disable=quiet, transient=transient,
    )
