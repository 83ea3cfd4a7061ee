"""``embedstack ladder``: every generation implemented so far, on the same data, in one table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from embedstack.cli._common import err_console
from embedstack.cli.eval import emit_json

__all__ = ["register"]

_ERA_STYLE = {"counting": "cyan", "static": "green", "transformer": "magenta", "hybrid": "yellow"}


def _print_wide(table: Any) -> None:
    """Print on stderr; a pipe or a file gets a wide table rather than rich's 80-column default."""
    old_width = err_console.width
    if not err_console.is_terminal:
        err_console.width = max(old_width, 160)
    try:
        err_console.print(table)
    finally:
        err_console.width = old_width


def _render(report: Any) -> None:
    from rich.table import Table

    table = Table(title="embedstack ladder", header_style="bold", show_lines=False)
    for name, justify in (("era", "left"), ("model", "left"), ("nDCG@10", "right"), ("Recall@100", "right"),
                          ("STS-B ρ×100", "right"), ("build s", "right"), ("ms/query", "right"),
                          ("bytes/doc", "right"), ("note", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "note", overflow="fold")  # type: ignore[arg-type]
    for res, cells in zip(report.results, report.table_rows(), strict=True):
        style = _ERA_STYLE.get(res.era, "")
        if res.status == "skipped":
            cells[-1] = f"[dim]{cells[-1]}[/]"
        elif res.status == "failed":
            cells[-1] = f"[red]{cells[-1]}[/]"
        table.add_row(f"[{style}]{cells[0]}[/]" if style else cells[0], *cells[1:])
    _print_wide(table)
    err_console.print(f"Retrieval: {report.data.retrieval_name}", highlight=False)
    err_console.print(f"STS: {report.data.sts_name}", highlight=False)
    for note in report.data.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    if report.not_selected:
        err_console.print(f"[dim]not selected (--only): {'; '.join(report.not_selected)}[/]", highlight=False)
    mode = "quick run" if report.quick else "full run"
    from embedstack.evaluation.ladder import LEGEND

    err_console.print(f"[dim]{mode} in {report.seconds:.1f} s. {LEGEND}[/]", highlight=False)


def _list_rows(json_out: bool) -> None:
    from rich.table import Table

    from embedstack.evaluation.ladder import describe_rows

    rows = describe_rows()
    if json_out:
        emit_json({"rows": rows})
        return
    table = Table(title="ladder rows", header_style="bold")
    for name in ("era", "model", "spec", "tasks", "in --quick", "status"):
        table.add_column(name, overflow="fold")
    for r in rows:
        status = "[green]ready[/]" if r["unavailable"] is None else f"[dim]{r['unavailable']}[/]"
        table.add_row(r["era"], r["label"], r["spec"], ", ".join(r["tasks"]), "yes" if r["quick"] else "no", status)
    _print_wide(table)


def ladder(
    quick: bool = typer.Option(False, "--quick", help="Bounded run: fewer queries/pairs, slow rows skipped."),
    sample: bool = typer.Option(False, "--sample", help="Use the small sample bundled with embedstack."),
    only: list[str] | None = typer.Option(None, "--only", help="Row labels or specs to run: comma-separated, "
                                          "or the option repeated (for labels that hold commas)."),
    max_queries: int | None = typer.Option(None, "--max-queries", help="Evaluate only the first N judged queries."),
    max_pairs: int | None = typer.Option(None, "--max-pairs", help="Evaluate only the first N STS pairs."),
    download: bool = typer.Option(False, "--download", help="Allow downloading datasets that are not local."),
    out: Path | None = typer.Option(None, "--out", help="Also write the report as Markdown to this file."),
    force: bool = typer.Option(False, "--force", help="Write --out even where a folder of that name exists (it is deleted)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout (and nothing else there)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    list_rows: bool = typer.Option(False, "--list", help="List the rows and whether each can run; run nothing."),
) -> None:
    """Run every generation on SciFact (retrieval) and STS-B, and print one comparison table."""
    from embedstack.errors import ConfigError
    from embedstack.evaluation.ladder import load_ladder_data, run_ladder
    from embedstack.io import atomic_write_text

    if list_rows:
        _list_rows(json_out)
        return

    for name, value in (("--max-queries", max_queries), ("--max-pairs", max_pairs)):
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be a positive int, got {value}.")
    if out is not None:
        from embedstack.io import check_output

        check_output(out, force=force, file=True)  # before the runs, not after them
    only_list = [s for s in (only or []) if s.strip()] or None
    data = load_ladder_data(quick=quick, sample=sample, download=download, max_queries=max_queries,
                            max_pairs=max_pairs)
    if not json_out:
        err_console.print(f"[bold]embedstack ladder[/] — retrieval on {data.retrieval_name}; STS on {data.sts_name}",
                          highlight=False)
        for note in data.notes:
            err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, disable=quiet or json_out, transient=True) as prog:
        task = prog.add_task("ladder", total=None)

        def cb(label: str, stage: str, done: int, total: int) -> None:
            prog.update(task, description=f"{label}: {stage}", completed=done, total=max(total, 1))

        def done(res: Any) -> None:
            if not (quiet or json_out):
                shown = {"ok": "[green]ok[/]", "skipped": "[dim]skipped[/]", "failed": "[red]failed[/]"}[res.status]
                extra = f" nDCG@10={res.ndcg10:.3f}" if res.ndcg10 is not None else ""
                extra += f" STS={res.sts_spearman:.1f}" if res.sts_spearman is not None else ""
                extra += f" ({res.reason})" if res.reason else ""
                prog.console.print(f"  {res.label}: {shown}{extra}", highlight=False)

        report = run_ladder(quick=quick, only=only_list, data=data, progress=cb, on_result=done)
    if out is not None:
        import os
        import shlex
        import time

        cmd = ["embedstack", "ladder"] + (["--quick"] if quick else []) + (["--sample"] if sample else [])
        for o in only_list or []:
            cmd += ["--only", o]
        for name, value in (("--max-queries", max_queries), ("--max-pairs", max_pairs)):
            cmd += [name, str(value)] if value is not None else []
        footer = (f"- Command: `{shlex.join(cmd)}`; measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
                  f"on {os.cpu_count()} CPUs.\n")
        atomic_write_text(out, "# embedstack ladder\n\n" + report.to_markdown() + footer, force=force)
    if json_out:
        emit_json(report.to_dict())
    else:
        _render(report)
        if out is not None:
            err_console.print(f"report written to {out}", highlight=False)
    if report.failed:
        err_console.print(f"[red]{len(report.failed)} row(s) failed:[/] "
                          + "; ".join(f"{r.label}: {r.reason}" for r in report.failed), highlight=False)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``ladder`` command to ``app``."""
    app.command("ladder")(ladder)
