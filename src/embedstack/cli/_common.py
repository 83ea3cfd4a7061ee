"""Helpers shared by command modules: consoles, progress, JSON output, error handling."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

__all__ = ["err_console", "out_console", "print_json", "progress"]

# Human output goes to stderr so that `--json` leaves stdout holding exactly one JSON object.
err_console = Console(stderr=True)
out_console = Console()


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


def progress(quiet: bool = False, transient: bool = True) -> Any:
    """A rich Progress on stderr (disabled when quiet)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=err_console, disable=quiet, transient=transient,
    )
