"""Batch encoding on a Ray cluster: a pool of encoder actors over a Ray Data dataset, shards with ids out.

The driver plans the corpus into blocks of about ``block_tokens`` tokens (:mod:`embedstack.scale.inputs`),
Ray Data hands each block to an actor of the pool (each loads the model once and reads its own byte
range of the input), and the driver streams the results into shards (:mod:`embedstack.scale.shards`).

Exactly once, also when a node dies: Ray Data restarts the lost actors and re-runs the lost blocks;
the driver keeps a bitmap of the corpus ordinals it has written and drops a second copy of a row
(counted as ``duplicates_dropped``), and refuses to finish if a row is missing. The vectors do not
depend on which actor encoded a row (same model, same batching of that block).

Why the driver writes: it needs no shared output file system and makes the exactly-once check
trivial; at 1.5 KB per 384-dim row it writes several hundred thousand rows a second, beyond what
dozens of encoder nodes produce (measured numbers in docs/scale.md).
"""

from __future__ import annotations

import codecs
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.errors import ConfigError, EmbedstackError, InputError

__all__ = ["encode_ray", "connect", "ON_ERROR"]

ON_ERROR = ("fail", "skip")
Progress = Callable[[int, int], None]


def _host_port(address: str) -> tuple[str, int] | None:
    rest = address.split("://", 1)[-1]
    if ":" not in rest:
        return None
    host, _, port = rest.rpartition(":")
    try:
        return host or "127.0.0.1", int(port.split("/")[0])
    except ValueError:
        return None


@contextmanager
def connect(address: str | None = None, *, timeout: float = 10.0, num_cpus: int | None = None) -> Iterator[Any]:
    """Connect to a Ray cluster for the duration of a job (``None``: a local one-node Ray started here).

    A driver that is already connected (``ray.init`` called by the user) is used as it is and left
    connected. ``address`` is ``host:port`` of the head's GCS (``ray start --head`` prints it),
    ``ray://host:port`` for Ray Client, or ``auto`` (``RAY_ADDRESS`` / the cluster started on this machine).

    Raises:
        ClusterError: the address does not answer within ``timeout`` seconds.
    """
    from embedstack._extras import require
    from embedstack.errors import ClusterError

    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")  # our progress bar replaces Ray Data's INFO lines
    ray = require("ray", "scale", "encoding on a Ray cluster")
    if ray.is_initialized():
        yield ray
        return
    if address is not None and address != "auto":
        hp = _host_port(address)
        if hp is None:
            raise ConfigError(f"Ray address {address!r} is not host:port or ray://host:port; give the address "
                              "`ray start --head` printed.")
        try:
            with socket.create_connection(hp, timeout=timeout):
                pass
        except OSError as exc:
            raise ClusterError(f"no Ray cluster answers at {address} within {timeout:g}s ({exc.strerror or exc}); "
                               "start one with `ray start --head`, check the address, or leave the address out to run on "
                               "a Ray started on this machine.",
                               ) from None
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # the driver's C++ core logs warnings meant for Ray developers to stderr; job failures still reach us as exceptions
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    kwargs: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False, "include_dashboard": False,
                              "configure_logging": True}
    if address is None:
        kwargs["num_cpus"] = num_cpus
    try:
        ray.init(address=address, **kwargs) if address is not None else ray.init(**kwargs)
    except (ConnectionError, TimeoutError, RuntimeError) as exc:
        raise ClusterError(f"could not connect to the Ray cluster at {address or 'auto'} ({str(exc)[:200]}); check "
                           "the address, or leave it out to run on a Ray started on this machine.") from None
    try:
        yield ray
    finally:
        ray.shutdown()


class EncodeActor:
    """One encoder of the pool: loads the model once, then reads and encodes one block per call."""

    def __init__(self, spec: str, options: dict[str, Any], role: str, batch_size: int, encoding: str,
                 errors: str, keep_text: bool = False) -> None:
        from embedstack.models import resolve

        enc = resolve(spec)
        if options and hasattr(enc, "with_options"):
            enc = enc.with_options(**options)
        self.encoder = enc
        self.sparse = _is_sparse(enc)
        self.multi = _is_multi(enc)
        self.dim = _width(enc)
        self.role, self.batch_size, self.encoding, self.errors = role, batch_size, encoding, errors
        self.keep_text = keep_text

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from embedstack.scale.inputs import read_block

        if "block" in batch:  # block descriptors from plan_blocks: read the rows here, on the worker
            cols: dict[str, list[Any]] = {}
            for desc in batch["block"]:
                part = read_block(_as_dict(desc), encoding=self.encoding, errors=self.errors)
                for k, v in part.items():
                    cols.setdefault(k, []).extend(v)
        else:  # rows of a user's Ray Data dataset
            n = len(batch["id"])
            cols = {"row": [-1] * n, "id": [str(i) for i in batch["id"]], "text": list(batch["text"]),
                    "meta": [""] * n, "where": [f"id {i}" for i in batch["id"]], "error": [""] * n}
        return self.encode_rows(cols)

    def encode_rows(self, cols: dict[str, list[Any]]) -> dict[str, np.ndarray]:
        n = len(cols["id"])
        rows: list[Any] = [None] * n  # dense: float32 vectors; sparse: (indices, values)
        errors = list(cols["error"])
        for j in range(n):
            if not errors[j] and not isinstance(cols["text"][j], str):
                errors[j] = f"the text is a {type(cols['text'][j]).__name__}, not a string"
        good = [j for j in range(n) if not errors[j]]
        if good:
            try:
                for j, r in zip(good, self._encode([cols["text"][j] for j in good]), strict=True):
                    rows[j] = r
            except Exception:  # one bad row must not sink its block: find it row by row
                for j in good:
                    try:
                        rows[j] = self._encode([cols["text"][j]])[0]
                    except Exception as exc:  # noqa: BLE001 - reported with the row, the job decides
                        errors[j] = f"{type(exc).__name__}: {str(exc)[:200]}"
        out = {"row": np.asarray(cols["row"], dtype=np.int64), "id": np.asarray(cols["id"], dtype=object),
               "where": np.asarray(cols["where"], dtype=object), "error": np.asarray(errors, dtype=object)}
        if self.keep_text:  # texts travel back to the driver only when the shards keep them
            out["text"] = np.asarray([t if isinstance(t, str) else "" for t in cols["text"]], dtype=object)
            out["meta"] = np.asarray(cols["meta"], dtype=object)
        if self.multi:
            empty = np.zeros((0, self.dim), dtype=np.float32)
            out["tokens"] = _objects([r if r is not None else empty for r in rows])
        elif self.sparse:
            empty_i, empty_v = np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
            out["indices"] = _objects([r[0] if r is not None else empty_i for r in rows])
            out["values"] = _objects([r[1] if r is not None else empty_v for r in rows])
        else:
            zero = np.zeros(self.dim, dtype=np.float32)
            out["vector"] = np.stack([r if r is not None else zero for r in rows]) if n else np.zeros((0, self.dim), np.float32)
        return out

    def _encode(self, texts: list[str]) -> list[Any]:
        if self.multi:
            mats = [np.asarray(m, dtype=np.float32) for m in
                    self.encoder.encode_tokens(texts, role=self.role, batch_size=self.batch_size)]
            if len(mats) != len(texts) or any(m.ndim != 2 or m.shape[1] != self.dim or not np.isfinite(m).all()
                                              for m in mats):
                raise ValueError(f"the encoder returned {len(mats)} token matrices, not {len(texts)} finite "
                                 f"(tokens, {self.dim}) ones")
            return mats
        if self.sparse:
            m = self.encoder.encode_sparse(texts, role=self.role).tocsr()
            if m.shape != (len(texts), self.dim) or not np.isfinite(m.data).all():
                raise ValueError(f"the encoder returned a {m.shape} matrix (finite: {bool(np.isfinite(m.data).all())}) "
                                 f"for {len(texts)} texts")
            return [(m.indices[m.indptr[i]:m.indptr[i + 1]].astype(np.int32),
                     m.data[m.indptr[i]:m.indptr[i + 1]].astype(np.float32)) for i in range(len(texts))]
        out = np.asarray(self.encoder.encode(texts, role=self.role, batch_size=self.batch_size), dtype=np.float32)
        if out.shape != (len(texts), self.dim) or not np.isfinite(out).all():
            raise ValueError(f"the encoder returned {out.shape} values (finite: {bool(np.isfinite(out).all())}) for "
                             f"{len(texts)} texts")
        return list(out)


def _objects(items: list[Any]) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def _is_sparse(encoder: Any) -> bool:
    return callable(getattr(encoder, "encode_sparse", None)) and not callable(getattr(encoder, "encode", None))


def _is_multi(encoder: Any) -> bool:
    return (callable(getattr(encoder, "encode_tokens", None)) and not callable(getattr(encoder, "encode", None))
            and not _is_sparse(encoder))


def _width(encoder: Any) -> int:
    return int(encoder.n_features if _is_sparse(encoder) and hasattr(encoder, "n_features") else encoder.dim)


def _as_dict(desc: Any) -> dict[str, Any]:
    return dict(desc) if not isinstance(desc, dict) else desc


def _resolve_spec(model: str, options: dict[str, Any] | None = None) -> tuple[str, Any]:
    """The SPEC as workers must see it (a folder made absolute) and the encoder, resolved here once."""
    from embedstack.models import needs_fit, resolve

    spec = model
    head, sep, tail = model.partition("@")
    if Path(head).expanduser().exists():
        spec = str(Path(head).expanduser().resolve()) + sep + tail
    encoder = resolve(spec)
    if options:  # applied here first: a bad value fails before any cluster work, as one line
        if not hasattr(encoder, "with_options"):
            raise ConfigError(f"backend/precision options apply to transformer models only; {model!r} is not one.")
        encoder = encoder.with_options(**options)
    if needs_fit(encoder):
        raise ConfigError(f"{model!r} must be fitted on a corpus first, and a cluster job cannot fit it: fit and save "
                          f"it once (in Python: `embedstack.models.resolve({model!r}).fit(texts).save('MODEL')`) and pass "
                          "the saved folder.")
    if not callable(getattr(encoder, "encode", None)) and not _is_sparse(encoder) and not _is_multi(encoder):
        raise ConfigError(f"{model!r} gives neither vectors, sparse rows nor token matrices; the cluster path encodes "
                          "dense, sparse and multi-vector (ColBERT) models.")
    return spec, encoder


def encode_ray(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Any, model: str,
               out: str | os.PathLike[str], *, address: str | None = None, actors: int | None = None,
               actor_cpus: float = 1.0, batch_size: int = 64, block_tokens: int = 32768, max_rows: int = 4096,
               fmt: str = "npy", keep_text: bool = False, on_error: str = "fail", role: str = "document",
               options: dict[str, Any] | None = None, shard_rows: int = 65536, timeout: float = 10.0,
               encoding: str = "utf-8", errors: str = "strict", force: bool = False,
               progress: Progress | None = None, on_batch: Callable[[int], None] | None = None) -> Any:
    """Encode a corpus on a Ray cluster with a pool of encoder actors; write shards with ids to ``out``.

    Args:
        source: a JSON-lines / Parquet / text file, a folder of them, a BEIR folder or dataset name, a list of
            those, or a ``ray.data.Dataset`` with ``id`` and ``text`` columns.
        model: a dense, sparse or multi-vector model SPEC (``all-MiniLM-L6-v2``, a SPLADE or ColBERT folder, a
            saved fitted LSA or BM25 ...); every actor resolves it. Sparse rows are written as ``.npz`` shards
            (scipy CSR), token matrices as one ``.npy`` of tokens plus ``.offsets.npy`` per shard.
        out: the shard folder (built aside and renamed into place when every row is written).
        address: the Ray cluster (``host:port``, ``ray://host:port``, ``auto``); None starts a local Ray.
        actors: size of the encoder pool (default: one per CPU of the cluster / ``actor_cpus``).
        actor_cpus: CPUs reserved per actor (its torch threads).
        block_tokens, max_rows: the size of one unit of work (one actor call).
        fmt: ``npy`` (vectors .npy + ids .jsonl per shard) or ``parquet``.
        keep_text: store texts and metadata in the shards (needed to build an index that shows them).
        on_error: ``fail`` (stop and name the first bad row) or ``skip`` (leave bad rows out, list them in
            ``errors.jsonl`` in the output folder).
        options: encoder options for transformers (``precision``, ``backend``).
        timeout: seconds to wait for ``address`` to answer.
        progress: called with (rows done, rows in all) after every block.
        on_batch: called with the number of batches received so far (tests use it to act mid-job).

    Returns:
        the :class:`~embedstack.scale.ShardSet` written.

    Raises:
        ClusterError: ``address`` does not answer. InputError: a row cannot be read or encoded (``fail``).
        ConfigError: a model that must be fitted first; Parquet shards for a multi-vector model.
    """
    from embedstack._validation import check_choice, check_int
    from embedstack.index.store import encoder_identity
    from embedstack.io import atomic_dir, check_output, write_manifest
    from embedstack.scale.inputs import plan_blocks
    from embedstack.scale.shards import FORMATS, SHARDS_TYPE, ShardWriter, read_shards

    check_choice("encode_ray", "on_error", on_error, ON_ERROR)
    check_choice("encode_ray", "fmt", fmt, FORMATS)
    check_int("encode_ray", "batch_size", batch_size, low=1)
    check_int("encode_ray", "actors", actors, low=1, allow_none=True)
    if actor_cpus <= 0:
        raise ConfigError(f"actor_cpus must be > 0; got {actor_cpus}.", param=("actor_cpus", "actor_cpus"))
    from embedstack.data._io import check_encoding, check_errors

    check_errors(errors)
    if codecs.lookup(check_encoding(encoding)).name.startswith(("utf-16", "utf-32")):
        raise ConfigError(f"the cluster path reads byte ranges split at newline bytes, which {encoding} does not allow; "
                          "convert the file to UTF-8 first (iconv -f UTF-16 -t UTF-8).")
    target = Path(out).expanduser()
    check_output(target, kind=SHARDS_TYPE, force=force)  # before any cluster or model work
    spec, encoder = _resolve_spec(model, options)
    identity = encoder_identity(encoder, model)
    dim = _width(encoder)
    sparse = _is_sparse(encoder)
    multi = _is_multi(encoder)
    if multi and fmt != "npy":
        raise ConfigError("token matrices (a multi-vector model) are written as .npy shards; use the npy format.",
                          param=("fmt", "shard format"))
    t0 = time.perf_counter()
    user_ds = hasattr(source, "map_batches") and hasattr(source, "iter_batches")
    if not user_ds:
        blocks, total = plan_blocks(source, block_tokens=block_tokens, max_rows=max_rows, encoding=encoding)
    stats: dict[str, Any] = {"duplicates_dropped": 0}
    with connect(address, timeout=timeout) as ray, atomic_dir(target, kind=SHARDS_TYPE, force=force) as tmp:
        import logging

        for name in ("ray.data", "ray.data.context", "ray.data._internal.execution.streaming_executor"):
            logging.getLogger(name).setLevel(logging.ERROR)  # also when ray.data was imported before (no env)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.enable_operator_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.enable_auto_log_stats = False
        id_pos: dict[str, int] = {}  # a user's dataset: rows are numbered by id, in order of arrival
        if user_ds:
            ds, total = _check_dataset(source)
        else:
            ds = ray.data.from_items([{"block": b.as_dict()} for b in blocks], override_num_blocks=len(blocks))
        pool = actors or max(1, int(ray.cluster_resources().get("CPU", 1) // actor_cpus))
        encoded = ds.map_batches(
            EncodeActor, batch_size=1 if not user_ds else max_rows, batch_format="numpy",
            fn_constructor_kwargs={"spec": spec, "options": dict(options or {}), "role": role,
                                   "batch_size": batch_size, "encoding": encoding, "errors": errors,
                                   "keep_text": keep_text},
            compute=ray.data.ActorPoolStrategy(size=pool), num_cpus=actor_cpus)
        seen = np.zeros(total, dtype=bool)
        writer = ShardWriter(tmp, dim=dim, fmt=fmt, shard_rows=shard_rows, keep_text=keep_text, sparse=sparse,
                             multi=multi)
        bad: list[dict[str, Any]] = []
        n_batches = 0
        done = 0
        for batch in _stream(encoded):
            if user_ds:
                batch["row"] = np.asarray([id_pos.setdefault(str(i), len(id_pos)) for i in batch["id"]], dtype=np.int64)
                if len(id_pos) > total:
                    raise InputError(f"the Ray dataset gave more ids than its {total} rows; it changed during the job.")
            rows = np.asarray(batch["row"], dtype=np.int64)
            fresh = ~seen[rows]
            firsts = np.unique(rows, return_index=True)[1]
            if len(firsts) != len(rows):  # a row repeated inside one batch: keep its first copy
                first = np.zeros(len(rows), dtype=bool)
                first[firsts] = True
                fresh &= first
            stats["duplicates_dropped"] += int((~fresh).sum())
            seen[rows[fresh]] = True
            done += int(fresh.sum())
            errs = batch["error"]
            failed = fresh & (errs != "")
            if failed.any():
                j = int(np.flatnonzero(failed)[0])
                if on_error == "fail":
                    raise InputError(f"row {batch['id'][j]!r} ({batch['where'][j]}) could not be encoded: {errs[j]}. "
                                     "Fix or remove it, or skip bad rows (they are listed in errors.jsonl).",
                                     fix={"on_error": "skip"})
                bad.extend({"row": int(rows[i]), "id": str(batch["id"][i]), "where": str(batch["where"][i]),
                            "error": str(errs[i])} for i in np.flatnonzero(failed))
            keep = fresh & (errs == "")
            idx = np.flatnonzero(keep)
            if multi:
                vecs: Any = [np.asarray(m, dtype=np.float32).reshape(-1, dim) for m in batch["tokens"][idx]]
            elif sparse:
                vecs = (list(batch["indices"][idx]), list(batch["values"][idx]))
            else:
                vecs = np.asarray(batch["vector"])[idx]
            writer.add(rows[idx], [str(x) for x in batch["id"][idx]], vecs,
                       [str(x) for x in batch["text"][idx]] if keep_text else None,
                       [str(x) for x in batch["meta"][idx]] if keep_text else None)
            n_batches += 1
            if progress is not None:
                progress(done, total)
            if on_batch is not None:
                on_batch(n_batches)
        missing = np.flatnonzero(~seen)
        if user_ds and len(missing) and stats["duplicates_dropped"]:
            raise InputError(f"the Ray dataset's 'id' column repeats ids ({total} rows, {len(id_pos)} distinct ids); "
                             "every row needs its own id.")
        if len(missing):
            raise InputError(f"{len(missing)} of {total} rows never came back from the cluster (first: ordinal "
                             f"{int(missing[0])}); nothing was written. Run the job again.")
        entries = writer.close()
        if bad:
            import json

            (tmp / "errors.jsonl").write_text("".join(json.dumps(b, ensure_ascii=False) + "\n" for b in bad),
                                              encoding="utf-8")
        seconds = time.perf_counter() - t0
        stats.update({"seconds": round(seconds, 3), "rows_per_second": round(writer.count / seconds, 1),
                      "actors": pool, "batches": n_batches, "nodes": sum(1 for n in ray.nodes() if n.get("Alive"))})
        write_manifest(tmp, SHARDS_TYPE, {"dim": dim, "format": fmt, "model": model, "role": role,
                                          "keep_text": keep_text, "sparse": sparse, "multi": multi},
                       count=writer.count, skipped=len(bad), shards=entries, encoder=identity, stats=stats)
    return read_shards(target, verify=False)


def _stream(encoded: Any) -> Iterator[dict[str, Any]]:
    """The encoded batches; a failure on a worker (Ray wraps it) comes out as the embedstack error it was, or one
    ClusterError line, never a remote traceback."""
    it = iter(encoded.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1))
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except EmbedstackError:
            raise
        except Exception as exc:  # noqa: BLE001 - RayTaskError, UserCodeException, ActorDiedError ...
            raise _worker_error(exc) from None
        yield batch


def _worker_error(exc: BaseException) -> Exception:
    """The embedstack error inside a Ray exception chain, else a one-line ClusterError naming the cause."""
    from embedstack.errors import ClusterError

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    last = exc
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, EmbedstackError):
            return e
        last = e
        todo.extend(x for x in (e.__cause__, e.__context__, getattr(e, "cause", None)) if isinstance(x, BaseException))
    lines = [ln for ln in str(last).strip().splitlines() if ln.strip()]
    msg = lines[-1] if lines else ""
    return ClusterError(f"the cluster job failed on a worker: {type(last).__name__}: {msg[:300]}; nothing was written.")


def _check_dataset(ds: Any) -> tuple[Any, int]:
    """A user's Ray dataset with ``id`` and ``text`` columns, and its row count."""
    names = list(ds.schema().names)
    for col in ("id", "text"):
        if col not in names:
            raise InputError(f"the Ray dataset has no {col!r} column (columns: {', '.join(names)}); name the id "
                             "and text columns 'id' and 'text'.")
    return ds.select_columns(["id", "text"]), int(ds.count())
