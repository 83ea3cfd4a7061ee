"""``embedstack encode --model SPEC INPUT --out FILE.npy``: encode texts (one per line) to a .npy file.

Every encoder kind works: dense models (transformers, ``lsa:256``, ``word2vec:PATH`` ...) write a float32
``.npy``; sparse models (``bow``, ``tfidf``, ``bm25``) write a ``scipy.sparse`` ``.npz`` (load it with
``scipy.sparse.load_npz``). A model that must be fitted first (``tfidf``, ``lsa:256`` ...) is fitted on
the input texts themselves, unless SPEC is a fitted model folder.

INPUT is a text file with one text per line, or ``-`` for stdin. Transformer models stream: the
vectors go into a memory-mapped ``.npy`` chunk by chunk, so memory stays flat on huge inputs.
SPEC is any model spec (``all-MiniLM-L6-v2``, ``all-MiniLM-L6-v2@pooling=cls``, a model folder ...).

With ``--ray`` the texts are encoded by a pool of encoder actors on a Ray cluster (``--ray-address``, else
a Ray started on this machine) and ``--out`` is a folder of shards with ids (:mod:`embedstack.scale`);
INPUT may then also be a JSON-lines or Parquet file, a folder or a BEIR dataset.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from embedstack.cli._common import (
    ENCODING_OPTION,
    ERRORS_OPTION,
    TextErrors,
    err_console,
    print_json,
    progress,
    text_options,
)

__all__ = ["register"]


def _lines(source: str, encoding: str, errors: str) -> Iterator[str]:
    """The input's lines, decoded by the one text reader (a bad byte is an InputError naming the flags)."""
    from embedstack.data._io import iter_lines, iter_stream_lines

    lines = (iter_stream_lines(sys.stdin.buffer, "<stdin>", encoding=encoding, errors=errors) if source == "-"
             else iter_lines(source, encoding=encoding, errors=errors))
    for _, line in lines:
        yield line


def _encode_in_memory(encoder: Any, texts: list[str], *, sparse: bool, role: str, batch_size: int,
                      progress: Any) -> Any:
    """Rows of every text (dense float32 array or scipy.sparse CSR), encoded in slices so progress moves."""
    import numpy as np

    step = max(1, int(batch_size)) * 16
    parts: list[Any] = []
    for s in range(0, len(texts), step):
        part = texts[s:s + step]
        if sparse:
            parts.append(encoder.encode_sparse(part, role=role))
        else:
            parts.append(np.asarray(encoder.encode(part, role=role, batch_size=batch_size), dtype=np.float32))
        progress(s + len(part))
    if sparse:
        import scipy.sparse as sp

        if not parts:
            return sp.csr_array((0, int(getattr(encoder, "n_features", 0))), dtype=np.float32)
        return sp.csr_array(sp.vstack(parts, format="csr"))
    if not parts:
        return np.zeros((0, int(getattr(encoder, "dim", 0))), dtype=np.float32)
    return np.concatenate(parts)


#: first bytes of the files encode writes: numpy's .npy header, a zip archive (.npz, empty or not);
#: an existing --out that starts otherwise (a text file named notes.npy) is not replaced
_MAGIC = {".npy": (b"\x93NUMPY",), ".npz": (b"PK\x03\x04", b"PK\x05\x06")}


def _save_matrix(out: Path, matrix: Any, *, force: bool) -> None:
    """``.npy`` (dense) or ``.npz`` (``scipy.sparse.save_npz``) through the one atomic writer."""
    import io

    import numpy as np

    from embedstack.io import atomic_write_bytes

    buf = io.BytesIO()
    if hasattr(matrix, "tocsr"):
        import scipy.sparse as sp

        sp.save_npz(buf, matrix.tocsr(), compressed=True)
    else:
        np.save(buf, matrix)
    atomic_write_bytes(out, buf.getvalue(), force=force)


def encode_command(
    input: str = typer.Argument(..., help="Text file, one text per line, or '-' for stdin."),
    model: str = typer.Option(..., "--model", "-m", help="Model SPEC: name, folder, or NAME@option=value,..."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file, one row per line: .npy (float32) for dense models, .npz (scipy.sparse) for bow/tfidf/bm25."),
    backend: str | None = typer.Option(None, "--backend", help="torch or onnx (transformers only)."),
    precision: str | None = typer.Option(None, "--precision", help="fp32, fp32-bf16x3 (float32 with AMX products), bf16, bf16-pure, bf16-int8-ffn or bf16-int8-all (torch), or an int8 recipe: int8, int8-fast, int8-smooth, int8-bf16, int8-token, int8-dynamic (transformer models only; see the guide)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Texts per forward pass."),
    role: str = typer.Option("document", "--role", help="document or query (selects the model's prompt)."),
    threads: int | None = typer.Option(None, "--threads", help="Intra-op threads (default: torch's setting)."),
    encoding: str = ENCODING_OPTION,
    errors: TextErrors = ERRORS_OPTION,
    force: bool = typer.Option(False, "--force", help="Replace --out even if it is a folder or a file that is not "
                               "a .npy/.npz (an existing .npy/.npz is replaced, atomically, only when encoding succeeds)."),
    ray: bool = typer.Option(False, "--ray", help="Encode on a Ray cluster (a pool of encoder actors); --out is then a "
                             "folder of shards with ids."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="The cluster (host:port of `ray start --head`, "
                                           "ray://host:port or auto); implies --ray. Default: a Ray started here."),
    actors: int | None = typer.Option(None, "--actors", help="--ray: encoder actors (default: one per cluster CPU)."),
    shard_format: str = typer.Option("npy", "--shard-format", help="--ray: npy (vectors + ids .jsonl) or parquet."),
    on_error: str = typer.Option("fail", "--on-error", help="--ray: a row that cannot be read or encoded: fail "
                                 "(stop, naming it) or skip (listed in OUT/errors.jsonl)."),
    timeout: float = typer.Option(10.0, "--timeout", help="--ray: seconds to wait for --ray-address to answer."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Encode texts (one per line) into a float32 .npy matrix (.npz sparse matrix for bow/tfidf/bm25)."""
    from embedstack.data._io import scan_lines
    from embedstack.errors import ConfigError, InputError
    from embedstack.models import needs_fit, resolve

    if ray or ray_address:
        if threads is not None:
            raise ConfigError("--threads does not apply with --ray: each encoder actor uses the CPUs Ray gives it "
                              "(one by default); choose the pool size with --actors.")
        if shard_format not in ("npy", "parquet"):
            raise ConfigError(f"--shard-format must be npy or parquet; got {shard_format!r}.")
        ray_options = {k: v for k, v in {"backend": backend, "precision": precision}.items() if v is not None}
        if "backend" in ray_options and "precision" not in ray_options:
            ray_options["precision"] = "fp32"  # as the single-process path
        info = encode_on_ray(input, model, out, address=ray_address, actors=actors, fmt=shard_format,
                             on_error=on_error, timeout=timeout, batch_size=batch_size, role=role, options=ray_options,
                             force=force, quiet=quiet or json_out, **text_options(encoding, errors))
        if json_out:
            print_json(info)
        elif not quiet:
            err_console.print(f"wrote {info['n']:,} × {info['dim']} vectors in {info['shards']} shards to {out} "
                              f"({info['rows_per_second']} texts/s on {info['nodes']} Ray nodes, {info['actors']} "
                              f"actors; {info['skipped']} rows skipped)")
        return
    if input != "-" and not Path(input).is_file():
        what = "is a folder, not a file" if Path(input).is_dir() else "does not exist"
        raise InputError(f"Input file {input!r} {what}; give a text file (one text per line) or '-' for stdin.")
    text = text_options(encoding, errors)
    if out.suffix not in (".npy", ".npz"):
        raise ConfigError(f"--out must name a .npy file (dense models) or a .npz file (bow/tfidf/bm25); got {str(out)!r}.")
    from embedstack.io import check_output

    check_output(out, force=force, file=True, header=_MAGIC.get(out.suffix))  # the cheap checks first
    # one pass over the file before any model work: counts the lines and stops at a bad byte
    total = scan_lines(input, **text) if input != "-" else None
    encoder: Any = resolve(model)
    sparse = not callable(getattr(encoder, "encode", None)) and callable(getattr(encoder, "encode_sparse", None))
    want = ".npz" if sparse else ".npy"
    if out.suffix != want:
        kind = "a sparse model: its rows go to a .npz file" if sparse else "a dense model: its vectors go to a .npy file"
        raise ConfigError(f"{model!r} is {kind}; use --out {out.with_suffix(want)}.")
    options = {k: v for k, v in {"backend": backend, "precision": precision, "num_threads": threads}.items() if v is not None}
    if hasattr(encoder, "with_options"):
        if options:
            if "backend" in options and "precision" not in options:
                options["precision"] = "fp32"
            encoder = encoder.with_options(**options)
        if getattr(encoder, "source", None) and not quiet and not json_out:
            err_console.print(f"model {model!r} loaded from {encoder.source}")
    elif options:
        raise ConfigError(f"--backend/--precision/--threads apply to transformer models only; {model!r} is not one.")
    texts: list[str] | None = None
    t0 = time.perf_counter()
    if needs_fit(encoder):
        texts = list(_lines(input, **text))
        if not quiet and not json_out:
            err_console.print(f"fitting {model} on the {len(texts):,} input texts (to encode with a model fitted "
                              "on another corpus, give its saved folder as --model)", highlight=False)
        encoder.fit(texts)
    with progress(quiet=quiet or json_out) as prog:
        task = prog.add_task("encoding", total=total, info="")
        if hasattr(encoder, "with_options"):
            vectors = encoder.encode(_lines(input, **text), role=role, batch_size=batch_size, out=out,
                                     progress=lambda n: prog.update(task, completed=n), force=force)
        else:
            texts = texts if texts is not None else list(_lines(input, **text))
            vectors = _encode_in_memory(encoder, texts, sparse=sparse, role=role, batch_size=batch_size,
                                        progress=lambda n: prog.update(task, completed=n))
            _save_matrix(out, vectors, force=force)
    seconds = time.perf_counter() - t0
    n, dim = int(vectors.shape[0]), int(vectors.shape[1])
    info = {"out": str(out), "n": n, "dim": dim, "seconds": round(seconds, 3),
            "texts_per_second": round(n / seconds, 1) if seconds > 0 else None}
    if json_out:
        print_json(info)
    elif not quiet:
        what = "sparse rows" if sparse else "vectors"
        err_console.print(f"wrote {n:,} × {dim} {what} to {out} ({info['texts_per_second']} texts/s)")


def encode_on_ray(source: str, model: str, out: Path, *, quiet: bool, keep_text: bool = False,
                  **kwargs: Any) -> dict[str, Any]:
    """Run :func:`embedstack.scale.encode_ray` with a progress bar (rows, ETA); return a summary for printing."""
    from embedstack.errors import InputError
    from embedstack.scale import encode_ray

    if source == "-":
        raise InputError("--ray reads files that every node can read; stdin cannot be shared: write it to a file.")
    with progress(quiet=quiet) as prog:
        task = prog.add_task("encoding on Ray", total=None, info="")
        shards = encode_ray(source, model, out, keep_text=keep_text,
                            progress=lambda done, total: prog.update(task, completed=done, total=total), **kwargs)
    st = shards.stats
    return {"out": str(out), "n": shards.count, "dim": shards.dim, "shards": len(shards.manifest["shards"]),
            "skipped": shards.skipped, "seconds": st.get("seconds"), "rows_per_second": st.get("rows_per_second"),
            "nodes": st.get("nodes"), "actors": st.get("actors"), "duplicates_dropped": st.get("duplicates_dropped")}


def explain_command(
    text: str = typer.Argument(..., help="The text to explain (a query or a document)."),
    model: str = typer.Option(..., "--model", "-m", help="A SPLADE model (folder or recipe:minilm-scifact-splade) or "
                              "any sparse model SPEC fitted on --corpus (bm25, tfidf)."),
    role: str = typer.Option("document", "--role", help="document or query (a SPLADE model may treat them apart)."),
    top: int = typer.Option(20, "--top", help="Terms to show, heaviest first."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Show the terms of a text's sparse vector with their weights: the words it has and the expansion terms a
    SPLADE model adds (marked +)."""
    from embedstack.errors import ConfigError
    from embedstack.models import resolve

    if top < 1:
        raise ConfigError(f"--top must be >= 1. Got {top}.", param=("top", "--top"))
    enc = resolve(model)
    if not callable(getattr(enc, "explain", None)):
        raise ConfigError(f"{model!r} is a {type(enc).__name__}; `explain` reads SPLADE models (term weights with "
                          "expansion), e.g. --model recipe:minilm-scifact-splade.", param=("model", "--model"))
    terms = enc.explain(text, role=role, top=top)
    if json_out:
        print_json({"text": text, "model": model, "role": role, "terms": terms,
                    "expansion_terms": sum(1 for t in terms if not t["in_text"])})
        return
    from embedstack.cli._common import print_table

    print_table(f"{model}: the {len(terms)} heaviest terms of the {role} (+ = expansion, not in the text)",
                ["term", "weight", ""], [[t["term"], f"{t['weight']:.3f}", "" if t["in_text"] else "+"] for t in terms],
                right=("weight",))


def register(app: typer.Typer) -> None:
    """Add the ``encode`` and ``explain`` commands."""

    app.command("encode")(encode_command)
    app.command("explain")(explain_command)
