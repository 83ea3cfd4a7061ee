"""``embedstack datasets list|info``: the named datasets, where they are found, how to get them."""

from __future__ import annotations

from typing import Any

import typer

__all__ = ["register"]

datasets_app = typer.Typer(help="Named datasets: list them, show where they are and how to get them.",
                           no_args_is_help=True)


def _summary(name: str) -> dict[str, Any]:
    from embedstack.data import cache_dir, dataset_info

    info = dataset_info(name)
    where = None
    if info["found"] is not None:
        where = "cache" if info["found"].startswith(str(cache_dir())) else "data dir"
    return {k: info[k] for k in ("name", "kind", "description", "found")} | {
        "where": where,
        "downloadable": bool(info["downloads"]),
    }


@datasets_app.command("list")
def list_cmd(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """List every registered dataset and whether a local copy is found."""
    from embedstack.cli._common import err_console, print_json, print_table
    from embedstack.data import data_dir, list_datasets

    rows = [_summary(n) for n in list_datasets()]
    if json_out:
        root = data_dir()
        print_json({"data_dir": str(root) if root else None, "datasets": rows})
        return
    cells = []
    for r in rows:
        where = f"[green]yes[/] ({r['where']})" if r["found"] else (
            "[dim]no (downloadable)[/]" if r["downloadable"] else "[red]no[/]")
        cells.append([r["name"], r["kind"], where, r["description"]])
    print_table("embedstack datasets", ["name", "kind", "local copy", "description"], cells, fold=("description",))
    err_console.print("`embedstack datasets info NAME` shows paths and URLs", style="dim")
    if data_dir() is None:
        err_console.print("[yellow]EMBEDSTACK_DATA_DIR is not set[/]: only the cache is searched.")


@datasets_app.command("info")
def info_cmd(
    name: str = typer.Argument(..., help="A dataset name from `embedstack datasets list`."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Show where a dataset is found, its download URL(s), checksums and size."""
    from embedstack.cli._common import out_console, print_json
    from embedstack.data import dataset_info

    info = dataset_info(name)
    if json_out:
        print_json(info)
        return
    out_console.print(f"[bold]{info['name']}[/] ({info['kind']}): {info['description']}", highlight=False)
    size = f" ({info['local_bytes']:,} bytes)" if info["local_bytes"] is not None else ""
    out_console.print(f"found locally: {info['found'] or 'no'}{size}", highlight=False)
    out_console.print(f"looked in: {', '.join(info['looked_in'])}", highlight=False)
    for d in info["downloads"]:
        sums = ", ".join(f"{k} {d[k]}" for k in ("sha256", "md5") if d[k]) or "no published checksum"
        size = f", {d['size']:,} bytes" if d["size"] else ""
        out_console.print(f"download: {d['url']} ({sums}{size})", highlight=False)
    for rel, sha in info["verified_files"].items():
        out_console.print(f"verified after download: {rel} sha256 {sha}", highlight=False)
    if not info["downloads"]:
        out_console.print("download: not available automatically", highlight=False)
    if info["license"]:
        out_console.print(f"license: {info['license']}", highlight=False)
    if not info["found"]:
        out_console.print(f"how to provide: {info['how_to_provide']}", highlight=False)


@datasets_app.command("fetch")
def fetch_cmd(
    name: str = typer.Argument(..., help="A dataset name from `embedstack datasets list`."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Make a dataset available locally: find it, or download and verify it into the cache."""
    from embedstack.cli._common import out_console, print_json, progress
    from embedstack.data import get_spec, resolve_dataset

    spec = get_spec(name)
    with progress(quiet) as bar:
        task = bar.add_task(f"fetch {spec.name}", total=None, info="")

        def report(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total, info=f"{done / 1e6:.1f} MB")

        path = resolve_dataset(spec.name, progress=report)
    if json_out:
        print_json({"name": spec.name, "path": str(path)})
    else:  # the result: the local path, on stdout (`--quiet` silences progress only)
        out_console.print(str(path), highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add the ``datasets`` command group to ``app``."""
    app.add_typer(datasets_app, name="datasets")
