"""Named indexes of a server: read-only folders, and indexes administered through the API.

An administered index lives in ``DATA_DIR/indexes/NAME/``::

    meta.json            served model name, index SPEC (written once, atomically)
    versions/SEQ/        saved index folders (atomic + checksummed, like every index)
    current -> versions/SEQ   the live snapshot: it holds every change up to log record SEQ
    wal.log              changes after the snapshot, one checksummed line each, fsynced before the
                         change is acknowledged

A change (add, delete) is written to the log and fsynced, then applied in memory, then acknowledged, so
a SIGKILL at any moment loses nothing acknowledged: a restart loads ``current`` and replays the log
records after its SEQ (a torn last line, never acknowledged, is dropped). Every ``checkpoint_every``
records, and on compaction and shutdown, the index is saved whole as a new version, ``current`` is
switched to it with one rename, and the log is emptied.

Aliases (``PUT /v1/aliases/NAME``) map a name to an index; a request resolves its alias once, so a
blue-green swap never mixes two versions in one response. They persist in ``DATA_DIR/aliases.json``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.errors import ConfigError, FormatError, IndexStateError, InputError, NotFoundError

__all__ = ["RWLock", "WriteAheadLog", "ServedIndex", "IndexManager"]

VERSIONS = "versions"
CURRENT = "current"
WAL = "wal.log"
META = "meta.json"
ALIASES = "aliases.json"


class RWLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


# ------------------------------------------------------------------------------------ vectors in the log
def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _unb64(s: str, dtype: Any) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=dtype)


def pack_vectors(v: Any) -> dict[str, Any]:
    """Dense rows, sparse CSR rows or token matrices → a JSON-safe dict (exact bytes)."""
    if isinstance(v, list):
        lengths = [int(m.shape[0]) for m in v]
        dim = int(v[0].shape[1]) if v else 0
        flat = np.concatenate(v).astype(np.float32) if v else np.zeros((0, 0), np.float32)
        return {"t": "multi", "lengths": lengths, "dim": dim, "data": _b64(flat)}
    if hasattr(v, "indptr"):
        c = v.tocsr()
        return {"t": "csr", "shape": list(c.shape), "data": _b64(c.data.astype(np.float32)),
                "indices": _b64(c.indices.astype(np.int64)), "indptr": _b64(c.indptr.astype(np.int64))}
    a = np.asarray(v, dtype=np.float32)
    return {"t": "dense", "shape": list(a.shape), "data": _b64(a)}


def unpack_vectors(d: dict[str, Any]) -> Any:
    if d["t"] == "multi":
        flat = _unb64(d["data"], np.float32).reshape(-1, d["dim"]) if d["lengths"] else np.zeros((0, 0), np.float32)
        out, at = [], 0
        for n in d["lengths"]:
            out.append(flat[at:at + n].copy())
            at += n
        return out
    if d["t"] == "csr":
        import scipy.sparse as sp

        return sp.csr_array((_unb64(d["data"], np.float32), _unb64(d["indices"], np.int64),
                             _unb64(d["indptr"], np.int64)), shape=tuple(d["shape"]))
    return _unb64(d["data"], np.float32).reshape(d["shape"]).copy()


class WriteAheadLog:
    """An append-only log of JSON records, one line each: ``crc32 <space> json``, fsynced per append."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.records = 0

    def replay(self) -> list[dict[str, Any]]:
        """Records in order; a torn or corrupt tail (never acknowledged) is cut off the file."""
        if not self.path.exists():
            return []
        out: list[dict[str, Any]] = []
        good = 0
        with open(self.path, "rb") as fh:
            data = fh.read()
        for line in data.split(b"\n")[:-1]:  # the piece after the last newline is a torn tail
            crc, _, body = line.partition(b" ")
            try:
                if int(crc) != zlib.crc32(body):
                    break
                rec = json.loads(body)
            except ValueError:
                break
            out.append(rec)
            good += len(line) + 1
        if good != len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
                os.fsync(fh.fileno())
        self.records = len(out)
        return out

    def append(self, record: dict[str, Any]) -> None:
        body = json.dumps(record, separators=(",", ":")).encode("utf-8")
        line = str(zlib.crc32(body)).encode() + b" " + body + b"\n"
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        view = memoryview(line)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)
        self.records += 1

    def reset(self) -> None:
        """Empty the log (after a snapshot holds everything in it)."""
        self.close()
        from embedstack.io.atomic import atomic_write_bytes

        atomic_write_bytes(self.path, b"", force=True)
        self.records = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class ServedIndex:
    """One named index: the index object, the model that encodes its queries, its lock and (if administered) log."""

    name: str
    index: Any
    model: Any  # ServedModel
    path: Path
    managed: bool
    spec: str = "flat"
    seq: int = 0
    lock: RWLock = field(default_factory=RWLock)
    wal: WriteAheadLog | None = None
    checkpoint_every: int = 1000

    @property
    def kind(self) -> str:
        from embedstack.index import MultiVectorIndex, SparseIndex

        return ("sparse" if isinstance(self.index, SparseIndex) else
                "multivector" if isinstance(self.index, MultiVectorIndex) else "dense")

    @property
    def version(self) -> str:
        return f"{self.name}@{self.seq}"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "model": self.model.name, "count": len(self.index),
                "version": self.version, "seq": self.seq, "dim": getattr(self.index, "dim", None),
                "managed": self.managed, "index": self.spec, "tombstones": self.index.n_tombstones}

    def _need_managed(self) -> None:
        if not self.managed:
            raise IndexStateError(f"index {self.name!r} was loaded read-only from {self.path}; create an index through "
                                  "the API (POST /v1/indexes, with --data-dir) to change it.")

    # ------------------------------------------------------------------ changes (caller holds no lock)
    def add(self, ids: list[str], texts: list[str], metadata: list[Any], vectors: Any) -> int:
        self._need_managed()
        assert self.wal is not None
        with self.lock.write():
            clash = [i for i in ids if i in self.index]
            if clash:
                raise IndexStateError(f"id {clash[0]!r} is already in index {self.name!r} ({len(clash)} duplicates); "
                                      "delete it first to replace it.")
            self.wal.append({"seq": self.seq + 1, "op": "add", "ids": ids, "texts": texts, "metadata": metadata,
                             "vectors": pack_vectors(vectors)})
            self.seq += 1
            self.index.add(vectors, ids, texts=texts, metadata=metadata)
            self._maybe_checkpoint()
            return self.seq

    def delete(self, ids: list[str]) -> int:
        self._need_managed()
        assert self.wal is not None
        with self.lock.write():
            missing = [i for i in ids if i not in self.index]
            if missing:
                raise NotFoundError(f"id {missing[0]!r} is not in index {self.name!r} ({len(missing)} unknown ids); "
                                      "nothing deleted.")
            self.wal.append({"seq": self.seq + 1, "op": "delete", "ids": ids})
            self.seq += 1
            n = self.index.remove(ids)
            self._maybe_checkpoint()
            return n

    def compact(self) -> int:
        self._need_managed()
        with self.lock.write():
            n = self.index.compact()
            self._checkpoint()
            return int(n)

    def checkpoint(self) -> None:
        if self.managed:
            with self.lock.write():
                if self.wal is not None and self.wal.records:
                    self._checkpoint()

    def _maybe_checkpoint(self) -> None:
        if self.wal is not None and self.wal.records >= self.checkpoint_every:
            self._checkpoint()

    def _checkpoint(self) -> None:
        """Save a new version holding everything up to ``seq``, switch ``current`` to it, empty the log."""
        from embedstack.index.store import load_index, set_alias

        target = self.path / VERSIONS / f"{self.seq:012d}"
        if not target.exists():
            self.index.save(target)
        set_alias(self.path / CURRENT, target)  # the commit point: one rename
        if self.wal is not None:
            self.wal.reset()
        self.index = load_index(target, mmap=True, verify=False)
        for old in (self.path / VERSIONS).iterdir():
            if old.name != target.name and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)

    def replay(self) -> int:
        """Apply the log records after the snapshot's SEQ; return how many."""
        assert self.wal is not None
        n = 0
        for rec in self.wal.replay():
            if rec["seq"] <= self.seq:
                continue
            if rec["op"] == "add":
                self.index.add(unpack_vectors(rec["vectors"]), rec["ids"], texts=rec["texts"], metadata=rec["metadata"])
            elif rec["op"] == "delete":
                self.index.remove(rec["ids"])
            self.seq = rec["seq"]
            n += 1
        return n

    def close(self) -> None:
        if self.wal is not None:
            self.wal.close()


class IndexManager:
    """All indexes and aliases of a server (thread-safe lookups; changes serialised per index)."""

    def __init__(self, data_dir: str | os.PathLike[str] | None, *, checkpoint_every: int = 1000) -> None:
        self.data_dir = Path(data_dir).expanduser() if data_dir else None
        self.checkpoint_every = int(checkpoint_every)
        self.indexes: dict[str, ServedIndex] = {}
        self.aliases: dict[str, str] = {}
        self._admin = threading.Lock()
        if self.data_dir is not None:
            (self.data_dir / "indexes").mkdir(parents=True, exist_ok=True)
            alias_file = self.data_dir / ALIASES
            if alias_file.is_file():
                try:
                    self.aliases = dict(json.loads(alias_file.read_text(encoding="utf-8")))
                except ValueError as exc:
                    raise FormatError(f"{alias_file} is not valid JSON ({exc}).") from None

    # ------------------------------------------------------------------ loading
    def add_readonly(self, name: str, path: str, model_for: Any) -> ServedIndex:
        """Serve a saved index folder as is; ``model_for(index, folder)`` gives its served query model."""
        from embedstack.index.store import load_index

        if name in self.indexes:
            raise ConfigError(f"index name {name!r} is given twice.")
        index = load_index(path)
        si = ServedIndex(name, index, model_for(index, path), Path(path), managed=False)
        self.indexes[name] = si
        return si

    def load_managed(self, models: dict[str, Any]) -> list[ServedIndex]:
        """Open every administered index under ``data_dir`` (snapshot + log replay)."""
        from embedstack.index.store import load_index

        out: list[ServedIndex] = []
        if self.data_dir is None:
            return out
        for folder in sorted((self.data_dir / "indexes").iterdir()):
            if folder.name.startswith(".") or not (folder / META).is_file():
                continue
            meta = json.loads((folder / META).read_text(encoding="utf-8"))
            model = models.get(meta["model"])
            if model is None:
                raise ConfigError(f"index {folder.name!r} in {self.data_dir} is encoded by model {meta['model']!r}, which "
                                  f"is not served; add --model {meta['model']}={meta.get('spec', 'SPEC')}.",
                                  param=("model", "--model"))
            current = folder / CURRENT
            if not current.exists():
                raise FormatError(f"{folder} has no '{CURRENT}' snapshot; the index folder is damaged.")
            index = load_index(current, mmap=True)
            seq = int(Path(os.readlink(current)).name)
            si = ServedIndex(folder.name, index, model, folder, managed=True, spec=meta.get("index", "flat"), seq=seq,
                             wal=WriteAheadLog(folder / WAL), checkpoint_every=self.checkpoint_every)
            si.replay()
            self.indexes[folder.name] = si
            out.append(si)
        return out

    # ------------------------------------------------------------------ lookups
    def resolve(self, name: str) -> ServedIndex:
        """The index ``name`` names (following an alias once)."""
        target = self.aliases.get(name, name)
        si = self.indexes.get(target)
        if si is None:
            known = sorted([*self.indexes, *self.aliases])
            raise NotFoundError(f"no index or alias named {name!r}; known: {known}.")
        return si

    # ------------------------------------------------------------------ administration
    def _need_dir(self) -> Path:
        if self.data_dir is None:
            raise IndexStateError("this server has no --data-dir: indexes cannot be created, changed or aliased.")
        return self.data_dir

    def create(self, name: str, model: Any, spec: str = "flat") -> ServedIndex:
        from embedstack.index import SparseIndex, from_spec, multivector_from_spec
        from embedstack.index.store import encoder_identity, set_alias
        from embedstack.io.atomic import atomic_write_text
        from embedstack.serve.config import _check_name

        data = self._need_dir()
        try:
            _check_name(name)
        except ConfigError as exc:
            raise InputError(str(exc)) from None
        with self._admin:
            if name in self.indexes or name in self.aliases:
                raise IndexStateError(f"an index or alias named {name!r} exists already; delete it first.")
            if model.kind == "reranker":
                raise InputError(f"model {model.name!r} is a reranker; an index needs an encoder model.")
            if model.kind == "sparse":
                if spec not in ("flat", "sparse"):
                    raise InputError(f"{model.name!r} is a sparse model: its index is an inverted index; drop index={spec!r}.")
                index: Any = SparseIndex(int(getattr(model.obj, "dim", 0) or 0) or _vocab_dim(model.obj))
                spec = "sparse"
            elif model.kind == "multivector":
                index = multivector_from_spec("multivector" if spec == "flat" else spec, dim=int(model.dim),
                                              model=model.spec)
            else:
                index = from_spec(spec, dim=int(model.dim))
            index.encoder = encoder_identity(model.obj, model.spec)
            folder = data / "indexes" / name
            if folder.exists():
                shutil.rmtree(folder)
            (folder / VERSIONS).mkdir(parents=True)
            first = folder / VERSIONS / f"{0:012d}"
            index.save(first)
            set_alias(folder / CURRENT, first)
            atomic_write_text(folder / META, json.dumps({"model": model.name, "spec": model.spec, "index": spec}))
            si = ServedIndex(name, index, model, folder, managed=True, spec=spec, seq=0, wal=WriteAheadLog(folder / WAL),
                             checkpoint_every=self.checkpoint_every)
            self.indexes[name] = si
            return si

    def drop(self, name: str) -> None:
        with self._admin:
            si = self.indexes.get(name)
            if si is None:
                raise NotFoundError(f"no index named {name!r}.")
            si._need_managed()
            pointing = sorted(a for a, t in self.aliases.items() if t == name)
            if pointing:
                raise IndexStateError(f"alias(es) {pointing} point to index {name!r}; move them first (PUT /v1/aliases/NAME).")
            with si.lock.write():
                del self.indexes[name]
                si.close()
                trash = si.path.with_name(f".{name}.deleted")
                os.replace(si.path, trash)  # gone at once for a restart; the files are removed after
                shutil.rmtree(trash, ignore_errors=True)

    def set_alias(self, alias: str, target: str) -> str | None:
        from embedstack.io.atomic import atomic_write_text
        from embedstack.serve.config import _check_name

        data = self._need_dir()
        try:
            _check_name(alias)
        except ConfigError as exc:
            raise InputError(str(exc)) from None
        with self._admin:
            if alias in self.indexes:
                raise IndexStateError(f"{alias!r} is an index name; an alias needs a name of its own.")
            if target not in self.indexes:
                raise NotFoundError(f"no index named {target!r} to point alias {alias!r} at; known: {sorted(self.indexes)}.")
            previous = self.aliases.get(alias)
            new = {**self.aliases, alias: target}
            atomic_write_text(data / ALIASES, json.dumps(new, indent=1), force=True)  # durable before it is visible
            self.aliases = new  # one reference swap: a request sees the old mapping or the new one
            return previous

    def close(self) -> None:
        for si in list(self.indexes.values()):
            try:
                si.checkpoint()
            finally:
                si.close()


def _vocab_dim(obj: Any) -> int:
    for attr in ("vocab_size", "n_features"):
        v = getattr(obj, attr, None)
        if v:
            return int(v)
    vocab = getattr(obj, "vocabulary_", None) or getattr(obj, "vocab", None)
    if vocab is not None:
        return len(vocab)
    raise ConfigError(f"cannot tell the vocabulary size of {type(obj).__name__} for a sparse index.")
