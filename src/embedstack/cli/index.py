"""``embedstack index build|info|verify|swap|compact|delete`` and ``embedstack search``.

Results (search hits, index info) go to stdout, progress and notes to stderr; ``--json`` prints exactly
one JSON object on stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from embedstack.cli._common import (
    ENCODING_OPTION,
    ERRORS_OPTION,
    TextErrors,
    err_console,
    out_console,
    print_json,
    print_table,
    progress,
    text_options,
)

__all__ = ["register"]


index_app = typer.Typer(help="Build, inspect, compact and alias vector indexes.", no_args_is_help=True)

_JSON = typer.Option(False, "--json", help="Print one JSON object on stdout (and nothing else there).")
_QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")




def index_spec_for(quantization: str | None, hnsw: bool, index: str | None) -> str:
    """The ``embedstack.index.from_spec`` spec for the build options."""
    from embedstack.errors import ConfigError

    if index is not None:
        if quantization or hnsw:
            raise ConfigError("--index gives the full index spec; do not combine it with --quantization/--hnsw.")
        return index
    if quantization not in (None, "none", "fp16", "int8", "binary", "binary-raw"):
        raise ConfigError(f"--quantization must be one of none, fp16, int8, binary, binary-raw; got {quantization!r}.")
    if hnsw:
        dtype = {None: "f32", "none": "f32", "fp16": "f16", "int8": "i8"}.get(quantization)
        if dtype is None:
            raise ConfigError("--hnsw stores f32, fp16 or int8 vectors; binary codes use the flat index.")
        return f"hnsw:dtype={dtype}"
    return {None: "flat", "none": "flat", "fp16": "fp16", "int8": "int8", "binary": "binary+rescore",
            "binary-raw": "binary"}[quantization]


@index_app.command("build")
def build(
    corpus: str = typer.Argument(..., help="BEIR folder or dataset name (corpus.jsonl), a .jsonl file, or a text file (one doc per line)."),
    model: str = typer.Option(..., "--model", "-m", help="Model SPEC: bm25, tfidf, lsa:256, all-MiniLM-L6-v2, a folder ..."),
    out: Path = typer.Option(..., "--out", "-o", help="Index folder to write (replaced atomically)."),
    quantization: str = typer.Option(None, "--quantization", help="none | fp16 | int8 | binary (rescored with int8) | binary-raw."),
    hnsw: bool = typer.Option(False, "--hnsw", help="Build an HNSW graph (usearch; --index 'hnsw:backend=faiss,dtype=f16' for faiss's) instead of a flat index."),
    index: str = typer.Option(None, "--index", help="Full index spec instead, e.g. 'hnsw:M=32,ef=128' or 'binary+rescore:oversample=20'."),
    alias: Path = typer.Option(None, "--alias", help="Then point this alias (symlink) at the new folder."),
    force: bool = typer.Option(False, "--force", help="Replace --out even if it is not a saved index (its files are deleted)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Encoder batch size."),
    ray: bool = typer.Option(False, "--ray", help="Encode on a Ray cluster (a pool of encoder actors), then build "
                             "one index from the shards."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="The cluster (host:port, ray://host:port or "
                                           "auto); implies --ray. Default: a Ray started here."),
    actors: int | None = typer.Option(None, "--actors", help="--ray: encoder actors (default: one per cluster CPU)."),
    shards: Path | None = typer.Option(None, "--shards", help="--ray: keep the encoded shards in this folder "
                                       "(default: a temporary folder, removed after)."),
    on_error: str = typer.Option("fail", "--on-error", help="--ray: a document that cannot be read or encoded: "
                                 "fail (stop, naming it) or skip (listed in the shards' errors.jsonl)."),
    timeout: float = typer.Option(10.0, "--timeout", help="--ray: seconds to wait for --ray-address to answer."),
    encoding: str = ENCODING_OPTION,
    errors: TextErrors = ERRORS_OPTION,
    json_out: bool = _JSON,
    quiet: bool = _QUIET,
) -> None:
    """Encode a corpus with a model and save a searchable index folder."""
    import time

    from embedstack.index import set_alias
    from embedstack.index.store import INDEX_KIND, real_path
    from embedstack.io import check_output
    from embedstack.models import resolve
    from embedstack.retrieval import build_index, read_corpus

    spec = index_spec_for(quantization, hnsw, index)
    check_output(real_path(out), kind=INDEX_KIND, force=force)  # before reading or encoding anything
    t0 = time.perf_counter()
    if ray or ray_address:
        _build_on_ray(corpus, model, out, spec, address=ray_address, actors=actors, shards=shards,
                      on_error=on_error, timeout=timeout, batch_size=batch_size, force=force,
                      alias=alias, json_out=json_out, quiet=quiet, t0=t0, **text_options(encoding, errors))
        return
    ids, texts, metas = read_corpus(corpus, **text_options(encoding, errors))
    encoder = resolve(model)
    with progress(quiet) as prog:
        tasks: dict[str, Any] = {}

        def cb(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=max(total, 1), info="")
            prog.update(tasks[stage], completed=done, total=max(total, 1))

        idx = build_index(texts, ids, encoder, spec=model, index=spec, metadata=metas, out=out,
                          batch_size=batch_size, progress=cb, force=force)
    previous = set_alias(alias, out) if alias is not None else None
    info = {"out": str(out), "type": type(idx).__name__, "index": spec, "count": len(idx), "dims": idx.dim,
            "model": model, "seconds": round(time.perf_counter() - t0, 3),
            "bytes": idx.nbytes(), "alias": str(alias) if alias else None,
            "previous": str(previous) if previous else None}
    if json_out:
        print_json(info)
    elif not quiet:
        err_console.print(f"indexed {info['count']} documents ({info['type']}, {spec}, {info['dims']} dims) "
                          f"with {model} in {info['seconds']:.1f}s → {out}")


def _build_on_ray(corpus: str, model: str, out: Path, spec: str, *, shards: Path | None, alias: Path | None,
                  json_out: bool, quiet: bool, t0: float, force: bool, **kwargs: Any) -> None:
    """``index build --ray``: shards encoded on the cluster, then one merged index (why merged: embedstack.scale.shards)."""
    import shutil
    import tempfile
    import time

    from embedstack.cli.encode import encode_on_ray
    from embedstack.index import set_alias
    from embedstack.io.atomic import temp_prefix
    from embedstack.models import resolve
    from embedstack.scale import index_from_shards, read_shards

    tmp = None
    if shards is None:  # beside the index (same disk), named like the atomic writer's temporaries: swept if killed
        target = Path(out).expanduser().resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent))
        shards = tmp / "shards"
    try:
        enc_info = encode_on_ray(corpus, model, shards, quiet=quiet or json_out, keep_text=True, **kwargs)
        with progress(quiet or json_out) as prog:
            task = prog.add_task("index", total=enc_info["n"], info="")
            idx = index_from_shards(read_shards(shards, verify=False), index=spec, out=out, encoder=resolve(model),
                                    force=force, progress=lambda _s, d, n: prog.update(task, completed=d, total=n))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    previous = set_alias(alias, out) if alias is not None else None
    info = {"out": str(out), "type": type(idx).__name__, "index": spec, "count": len(idx), "dims": idx.dim,
            "model": model, "seconds": round(time.perf_counter() - t0, 3), "bytes": idx.nbytes(),
            "alias": str(alias) if alias else None, "previous": str(previous) if previous else None,
            "ray": {k: enc_info[k] for k in ("nodes", "actors", "rows_per_second", "skipped", "duplicates_dropped")},
            "shards": None if tmp is not None else str(shards)}
    if json_out:
        print_json(info)
    elif not quiet:
        err_console.print(f"indexed {info['count']} documents ({info['type']}, {spec}, {info['dims']} dims) with {model} "
                          f"on {enc_info['nodes']} Ray nodes ({enc_info['actors']} actors) in {info['seconds']:.1f}s → {out}")


def _info(folder: Path) -> dict[str, Any]:
    from embedstack.index import read_index_manifest, resolve_alias

    m = read_index_manifest(folder)
    real = resolve_alias(folder)
    size = sum(p.stat().st_size for p in real.rglob("*") if p.is_file())
    return {"path": str(folder), "resolved": str(real), "type": m["type"], "metric": m["metric"],
            "dims": m["dims"], "quantization": m.get("quantization"), "count": m.get("count"),
            "tombstones": m.get("tombstones", 0), "encoder": m.get("encoder"), "config": m.get("config"),
            "format_version": m["format_version"], "created_at": m.get("created_at"), "bytes_on_disk": size,
            **_int8_scoring(m)}


def _int8_scoring(manifest: dict[str, Any]) -> dict[str, str]:
    """How this machine scores an index's int8 codes (``int8_scoring``: ``vnni`` / ``amx`` integer GEMM,
    ``fbgemm``'s u8 × s8 product on AVX2, or ``float`` (widened); ``EMBEDSTACK_INT8_GEMM`` overrides), for
    ``FlatIndex`` int8 codes, as first stage or for rescoring; nothing for other indexes."""
    config = manifest.get("config") or {}
    if manifest.get("type") != "FlatIndex" or "int8" not in (config.get("quantization"), config.get("rescore")):
        return {}
    from embedstack.index._scan import int8_backend

    return {"int8_scoring": int8_backend()}


@index_app.command("info")
def info_cmd(folder: Path = typer.Argument(..., help="Index folder or alias."), json_out: bool = _JSON) -> None:
    """Show an index's manifest: type, metric, dims, quantization, counts, encoder identity."""
    info = _info(folder)
    if json_out:
        print_json(info)
        return
    rows = [[key, str(info[key])] for key in ("resolved", "type", "metric", "dims", "quantization", "int8_scoring",
                                              "count", "tombstones", "created_at", "bytes_on_disk") if key in info]
    enc = info["encoder"] or {}
    rows.append(["encoder", f"{enc.get('name')} (sha256 {str(enc.get('sha256'))[:12]}, "
                            f"embedstack {enc.get('embedstack_version')})"])
    print_table(f"index {folder}", ["field", "value"], rows, fold=("value",))


@index_app.command("verify")
def verify_cmd(folder: Path = typer.Argument(..., help="Index folder or alias."), json_out: bool = _JSON) -> None:
    """Check every file of an index against the sha256 and size recorded in its manifest.

    Exit status 2 with one line naming the damaged file when one does not match. Loading verifies too
    (unless EMBEDSTACK_VERIFY=0); this command does it without loading.
    """
    from embedstack.index.store import verify_index

    _print_verified(folder, verify_index(folder), json_out)


def verify_any(path: Path = typer.Argument(..., help="Any folder saved by embedstack: index, alias, model, vectors ..."),
               json_out: bool = _JSON) -> None:
    """Check every file of a saved folder (index, model, vectors, component) against its checksums.

    Exit status 2 with one line naming the damaged file when one does not match.
    """
    from embedstack.io import verify_artifact

    _print_verified(path, verify_artifact(path), json_out)


def _print_verified(folder: Path, report: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json({**report, "ok": True})
    elif report["checked"]:
        out_console.print(f"ok {folder}: {report['type']}, {report['files']} files, {report['bytes']:,} bytes "
                          "match their checksums", highlight=False)
    else:
        out_console.print(f"unchecked {folder}: saved by an older embedstack without checksums; save it again "
                          "to record them", highlight=False)


@index_app.command("swap")
def swap(
    alias: Path = typer.Argument(..., help="Alias path (a symlink, created if absent)."),
    target: Path = typer.Argument(..., help="Index folder the alias should point to."),
    json_out: bool = _JSON,
) -> None:
    """Point an alias at another index version atomically (blue-green)."""
    from embedstack.index import read_index_manifest, set_alias

    read_index_manifest(target)  # refuse to switch to something that is not a loadable index
    previous = set_alias(alias, target)
    if json_out:
        print_json({"alias": str(alias), "target": str(target), "previous": str(previous) if previous else None})
    else:
        err_console.print(f"{alias} → {target}" + (f" (was {previous})" if previous else ""))


@index_app.command("compact")
def compact(folder: Path = typer.Argument(..., help="Index folder (or alias: its current version)."),
            json_out: bool = _JSON) -> None:
    """Drop deleted documents for good and rewrite the folder atomically."""
    from embedstack.index import load_index

    idx = load_index(folder, mmap=False)
    reclaimed = idx.compact()
    if reclaimed:
        idx.save(folder)
    if json_out:
        print_json({"path": str(folder), "reclaimed": reclaimed, "count": len(idx)})
    else:
        err_console.print(f"{folder}: reclaimed {reclaimed} deleted documents, {len(idx)} remain.")


@index_app.command("delete")
def delete(folder: Path = typer.Argument(..., help="Index folder."),
           ids: list[str] = typer.Argument(..., help="Document ids to delete."),
           json_out: bool = _JSON) -> None:
    """Delete documents (tombstones; `index compact` reclaims the space)."""
    from embedstack.index import load_index

    idx = load_index(folder, mmap=False)
    n = idx.remove(ids)
    idx.save(folder)
    if json_out:
        print_json({"path": str(folder), "deleted": n, "count": len(idx), "tombstones": idx.n_tombstones})
    else:
        err_console.print(f"{folder}: deleted {n}; {len(idx)} remain ({idx.n_tombstones} tombstones).")


def _fusion(text: str) -> Any:
    from embedstack.retrieval import parse_fusion

    return parse_fusion(text)


def search(
    folder: Path = typer.Argument(..., help="Index folder or alias (built by `embedstack index build`)."),
    query: str = typer.Argument(..., help="The query text."),
    k: int = typer.Option(10, "-k", "--k", help="Number of hits."),
    with_: list[Path] = typer.Option(None, "--with", help="More index folders to fuse with (hybrid search)."),
    fusion: str = typer.Option("rrf", "--fusion", help="rrf[:K] | convex[:ALPHA] (min-max) | convex-z[:ALPHA] (z-score); ALPHA weighs the first index."),
    candidates: int = typer.Option(100, "--candidates", help="Hits per index before fusion."),
    rerank: str | None = typer.Option(None, "--rerank", help="Cross-encoder SPEC (folder, recipe:NAME) that rescores the "
                                      "top hits; it reads the texts, whatever model built the index."),
    rerank_k: int = typer.Option(100, "--rerank-k", help="Hits passed to --rerank."),
    rerank_fusion: str | None = typer.Option(None, "--rerank-fusion", help="convex-z:ALPHA combines the reranker's score "
                                             "(weight ALPHA) with the first stage's instead of replacing it."),
    verify: bool = typer.Option(True, "--verify/--no-verify",
                                help="Check the index files' checksums on load (--no-verify skips hashing a huge index)."),
    json_out: bool = _JSON,
) -> None:
    """Search an index folder with a text query (encoded by the model that built it), then optionally rerank."""
    from embedstack.errors import ConfigError
    from embedstack.retrieval import open_pipeline
    from embedstack.retrieval.evaluate import load_reranker, parse_rerank_fusion

    if rerank_fusion is not None and rerank is None:
        raise ConfigError("--rerank-fusion needs --rerank SPEC (the cross-encoder whose scores it combines).",
                          param=("--rerank-fusion", "--rerank-fusion"))
    combine = parse_rerank_fusion(rerank_fusion)
    reranker = None if rerank is None else load_reranker(rerank)
    pipe = open_pipeline([folder, *(with_ or [])], fusion=_fusion(fusion), candidates=max(candidates, rerank_k),
                         verify=None if verify else False, reranker=reranker,
                         rerank_top=None if reranker is None else rerank_k, rerank_fusion=combine)
    res = pipe.search(query, k=k)
    if json_out:
        print_json(res.to_dict())
        return
    from rich.markup import escape

    print_table(f"{query!r}", ["#", "id", "score", "text"],
                [[str(rank), escape(h.id), f"{h.score:.4f}", escape((h.text or "")[:160])]
                 for rank, h in enumerate(res.hits, start=1)], right=("#", "score"), fold=("id", "text"))
    err_console.print("timings (ms): " + ", ".join(f"{k2} {1000 * v:.2f}" for k2, v in res.timings.items()))


def register(app: typer.Typer) -> None:
    """Add ``index`` (group) and ``search`` (top-level) to the root app."""
    app.add_typer(index_app, name="index")
    app.command("search")(search)
    app.command("verify")(verify_any)
