"""``embedstack ladder``: every generation implemented so far, on the same data, in one table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from embedstack.cli._common import err_console, out_console
from embedstack.cli.eval import emit_json

__all__ = ["register"]

#: first line of a Markdown report written by --out (an existing --out file must start with it)
REPORT_HEADER = "# embedstack ladder"

_ERA_STYLE = {"counting": "cyan", "static": "green", "transformer": "magenta", "hybrid": "yellow"}


def _print_wide(table: Any) -> None:
    """Print on stdout (a listing is a result); a pipe or a file gets a wide table, not 80 columns."""
    old_width = out_console.width
    if not out_console.is_terminal:
        out_console.width = max(old_width, 160)
    try:
        out_console.print(table)
    finally:
        out_console.width = old_width


#: The results table fits this many columns (a wider terminal still gets this width).
TABLE_WIDTH = 100


def render_table(report: Any, console: Any, *, width: int | None = None) -> None:
    """The results table (stdout) in at most ``width`` columns, the notes and the legend below it.

    Eras are sections; long notes and skip reasons become ``[n]`` pointing at the numbered lines below.
    """
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from embedstack.evaluation.ladder import CACHED_NOTE, LEGEND

    width = width or TABLE_WIDTH
    if console.is_terminal:
        width = min(width, console.width)
    rows, notes = report.compact()
    table = Table(title="embedstack ladder", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
                  padding=(0, 1), title_justify="left")
    for name, justify in (("model", "left"), ("nDCG@10", "right"), ("R@100", "right"), ("STS ρ", "right"),
                          ("build s", "right"), ("ms/q", "right"), ("B/doc", "right"), ("note", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "note", overflow="fold")  # type: ignore[arg-type]
    era = None
    for res, cells in zip(report.results, rows, strict=True):
        if res.era != era:
            if era is not None:
                table.add_section()
            era = res.era
            style = _ERA_STYLE.get(era, "bold")
            table.add_row(f"[{style}]{era}[/]", *[""] * 7)
        cells = [escape(c) for c in cells]
        note = cells[-1]
        if res.status == "skipped":
            note = f"[dim]{note}[/]"
        elif res.status == "failed":
            note = f"[red]{note}[/]"
        table.add_row(cells[1], *cells[2:-1], note)
    old = console.width
    console.width = width
    try:
        console.print(table)
        lines = [f"Retrieval: {report.data.retrieval_name}.", f"STS: {report.data.sts_name}."]
        lines += [f"note: {n}" for n in report.data.notes]
        lines += [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
        if report.full_only:
            lines.append(f"Full run only (`embedstack ladder` without --quick): {'; '.join(report.full_only)}.")
        if report.not_selected:
            lines.append(f"Not selected (--only): {'; '.join(report.not_selected)}.")
        if any(r.cached for r in report.results):
            lines.append(CACHED_NOTE)
        mode = "Quick run" if report.quick else "Full run"
        lines.append(f"{mode} in {report.seconds:.1f} s. {LEGEND} ms/q 'b' = batched time per query.")
        for line in lines:
            console.print(line, highlight=False, markup=False, soft_wrap=False)
    finally:
        console.width = old


def _list_rows(json_out: bool) -> None:
    from rich.markup import escape
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
        status = "[green]ready[/]" if r["unavailable"] is None else f"[dim]{escape(r['unavailable'])}[/]"
        if r["unavailable"] is not None and r.get("quick_prepares"):
            status += " [green](--quick trains its own on a slice)[/]"
        table.add_row(r["era"], r["label"], r["spec"], ", ".join(r["tasks"]), "yes" if r["quick"] else "no", status)
    _print_wide(table)


def ladder(
    quick: bool = typer.Option(False, "--quick", help="Bounded run: fewer queries/pairs, slow rows skipped."),
    sample: bool = typer.Option(False, "--sample", help="Use the small sample bundled with embedstack."),
    only: list[str] | None = typer.Option(None, "--only", help="Row labels or specs to run: comma-separated, "
                                          "or the option repeated (for labels that hold commas)."),
    max_queries: int | None = typer.Option(None, "--max-queries", help="Evaluate N judged queries, spread evenly over the file."),
    max_pairs: int | None = typer.Option(None, "--max-pairs", help="Evaluate N STS pairs, spread evenly over the file."),
    download: bool = typer.Option(False, "--download", help="Allow downloading datasets that are not local."),
    out: Path | None = typer.Option(None, "--out", help="Also write the report as Markdown to this file."),
    force: bool = typer.Option(False, "--force", help="Write --out even where a folder of that name exists (it is deleted)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout (and nothing else there)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    list_rows: bool = typer.Option(False, "--list", help="List the rows and whether each can run; run nothing."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Encode every text again instead of reading transformer "
                                  "vectors from the embedding cache (for build timings)."),
    plot: Path | None = typer.Option(None, "--plot", help="Write the quality-vs-cost plot (PNG) here; default: "
                                     "<cache>/ladder/ladder-quick.png or ladder-full.png."),
    no_plot: bool = typer.Option(False, "--no-plot", help="Do not write the plot."),
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

        check_output(out, force=force, file=True, header=REPORT_HEADER.encode())  # before the runs, not after them
    plot_path = None if no_plot else (plot or _default_plot_path(quick))
    if plot_path is not None:
        from embedstack.io import check_output

        check_output(plot_path, force=force, file=True, header=b"\x89PNG")
    only_list = [s for s in (only or []) if s.strip()] or None
    data = load_ladder_data(quick=quick, sample=sample, download=download, max_queries=max_queries,
                            max_pairs=max_pairs)
    if not json_out:
        err_console.print(f"[bold]embedstack ladder[/] — retrieval on {data.retrieval_name}; STS on {data.sts_name}",
                          highlight=False)
        for note in data.notes:
            err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    from embedstack.cli._common import progress as progress_bar

    with progress_bar(quiet=quiet or json_out) as prog:
        task = prog.add_task("ladder", total=None, info="")
        current = [""]

        def cb(label: str, stage: str, done: int, total: int) -> None:
            desc = f"{label}: {stage}"
            if desc != current[0]:  # a new stage: its own elapsed time and ETA
                current[0] = desc
                prog.reset(task, description=desc, total=max(total, 1), completed=done)
            else:
                prog.update(task, completed=done, total=max(total, 1))

        def done(res: Any) -> None:
            if not (quiet or json_out):
                shown = {"ok": "[green]ok[/]", "skipped": "[dim]skipped[/]", "failed": "[red]failed[/]"}[res.status]
                extra = f" nDCG@10={res.ndcg10:.3f}" if res.ndcg10 is not None else ""
                extra += f" STS={res.sts_spearman:.1f}" if res.sts_spearman is not None else ""
                extra += f" ({res.reason})" if res.reason else ""
                prog.console.print(f"  {res.label}: {shown}{extra}", highlight=False)

        report = run_ladder(quick=quick, only=only_list, data=data, progress=cb, on_result=done,
                            cache=not no_cache)
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
        atomic_write_text(out, REPORT_HEADER + "\n\n" + report.to_markdown() + footer, force=force)
    written = None
    if plot_path is not None:
        from embedstack.evaluation.ladder import write_plot

        written = write_plot(report, plot_path)
    if json_out:
        d = report.to_dict()
        d["plot"] = str(written) if written is not None else None
        emit_json(d)
    else:
        render_table(report, out_console)
        if out is not None:
            err_console.print(f"report written to {out}", highlight=False)
        if written is not None:
            out_console.print(f"plot (nDCG@10 against cost per row): {written}", highlight=False, soft_wrap=True)
        elif plot_path is not None:
            err_console.print("no plot: matplotlib is not installed (pip install matplotlib, or the 'demo' extra)"
                              if not _has_matplotlib() else "no plot: no row produced numbers", highlight=False)
    if report.failed:
        err_console.print(f"[red]{len(report.failed)} row(s) failed:[/] "
                          + "; ".join(f"{r.label}: {r.reason}" for r in report.failed), highlight=False)
        raise typer.Exit(1)


def _default_plot_path(quick: bool) -> Path:
    from embedstack.data._registry import cache_dir

    return cache_dir() / "ladder" / f"ladder-{'quick' if quick else 'full'}.png"


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def register(app: typer.Typer) -> None:
    """Add the ``ladder`` command to ``app``."""
    app.command("ladder")(ladder)
