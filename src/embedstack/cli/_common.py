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


PLAIN_PROGRESS_SECONDS = 30.0  # stderr not a terminal (a log file, CI): one plain progress line this often


def progress(quiet: bool = False, transient: bool = True, console: Console | None = None) -> Any:
    """A rich Progress on stderr (disabled when quiet): bar, done/total, elapsed and remaining time.

    Callers update it per batch, so the bar and its ETA move from the first batch on. When stderr is not a
    terminal (``cmd 2> log``, nohup, CI) a live bar draws nothing until it ends, so there the same updates
    become one plain line (``training  120/480  elapsed 0:04:10  eta 0:12:30  loss 0.812``) every
    ``PLAIN_PROGRESS_SECONDS`` per task, and once when a task completes.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class _Progress(Progress):
        def __init__(self, *columns: Any, **kwargs: Any) -> None:
            super().__init__(*columns, **kwargs)
            self._plain = not self.disable and not self.console.is_terminal
            self._said: dict[Any, float] = {}

        def update(self, task_id: Any, **kwargs: Any) -> None:
            super().update(task_id, **kwargs)
            if self._plain:
                self._line(task_id)

        def advance(self, task_id: Any, advance: float = 1) -> None:
            super().advance(task_id, advance)
            if self._plain:
                self._line(task_id)

        def _line(self, task_id: Any) -> None:
            import datetime

            with self._lock:
                task = self._tasks.get(task_id)
                if task is None:
                    return
                now = self.get_time()
                finished = task.total is not None and task.completed >= task.total
                last = self._said.get(task_id)
                if last == float("inf") or (not finished and last is not None and now - last < PLAIN_PROGRESS_SECONDS):
                    return
                if last is None and not finished and not task.completed:
                    self._said[task_id] = now  # the clock starts with the task; the first line comes a period later
                    return
                self._said[task_id] = float("inf") if finished else now
                done = f"{task.completed:,.0f}" + (f"/{task.total:,.0f}" if task.total is not None else "")
                left = task.time_remaining
                parts = [str(task.description), done, f"elapsed {datetime.timedelta(seconds=int(task.elapsed or 0))}"]
                if left is not None and not finished:
                    parts.append(f"eta {datetime.timedelta(seconds=int(left))}")
                if task.fields.get("info"):
                    parts.append(str(task.fields["info"]))
            self.console.print("  ".join(parts), markup=False, highlight=False, soft_wrap=True)

    return _Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=console or err_console, disable=quiet, transient=transient,
    )
