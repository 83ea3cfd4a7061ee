"""Index persistence: the folder layout, the SQLite document store, encoder identity and aliases.

An index folder holds::

    manifest.json      type, format_version, embedstack_version, created_at, metric, dims,
                       quantization, count (live documents), encoder identity, config
    arrays.safetensors the vectors / codes (memory-mapped on load)
    docs.sqlite        internal id -> user id, text, metadata (JSON)
    (hnsw.usearch)     the graph of an HNSW index (hnsw.faiss with backend="faiss")
    (encoder/)         the fitted encoder when it is an embedstack component (BM25, LSA ...)

Saves go through :func:`embedstack.io.atomic_dir` (temporary sibling, fsync, atomic swap), so a process
killed mid-save leaves the previous version loadable; a folder that is not a saved index is never
replaced without ``force``. The manifest lists every file with its sha256 and size, checked on load
(``verify=False`` or ``EMBEDSTACK_VERIFY=0`` skips the hashing) and by :func:`verify_index`. Aliases (blue-green deployment) are relative
symbolic links replaced atomically with ``rename(2)``; every reader that opens the alias path follows
the link, and a reader that already resolved it keeps the version it opened.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for v in ("v1", "v2"):
    ...     (root / v).mkdir(); _ = (root / v / "manifest.json").write_text("{}")
    >>> set_alias(root / "live", root / "v1") is None
    True
    >>> set_alias(root / "live", root / "v2").name
    'v1'
    >>> resolve_alias(root / "live").name
    'v2'
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.errors import FormatError, IndexStateError, ModelMismatch

__all__ = [
    "DocStore",
    "encoder_identity",
    "check_identity",
    "set_alias",
    "resolve_alias",
    "real_path",
    "load_index",
    "read_index_manifest",
    "verify_index",
    "INDEX_KIND",
    "DOCS_FILE",
    "ARRAYS_FILE",
    "ENCODER_DIR",
]

DOCS_FILE = "docs.sqlite"
ARRAYS_FILE = "arrays.safetensors"
ENCODER_DIR = "encoder"


def _is_index(manifest: Mapping[str, Any]) -> bool:
    """Output-guard kind of index folders: any saved index (a flat index may replace an HNSW one)."""
    return "metric" in manifest and "dims" in manifest


_is_index.label = "index"  # type: ignore[attr-defined]
INDEX_KIND = _is_index


class DocStore:
    """Internal ids → user id, text and metadata, kept in SQLite (in memory until saved).

    A store opened from a saved folder reads the file (read-only) and copies itself into memory on
    the first write, so the saved version on disk never changes under a reader.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        if path is None:
            self._conn = self._memory()
            self._readonly = False
        else:
            uri = Path(path).resolve().as_uri() + "?mode=ro"
            try:
                self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
                self._conn.execute("SELECT count(*) FROM docs").fetchone()
            except sqlite3.DatabaseError as exc:
                raise FormatError(f"{path} is not a readable document store ({exc}); save the index again.") from None
            self._readonly = True

    @staticmethod
    def _memory() -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.execute("CREATE TABLE docs (iid INTEGER PRIMARY KEY, id TEXT NOT NULL, text TEXT, meta TEXT)")
        return conn

    def _writable(self) -> sqlite3.Connection:
        if self._readonly:
            mem = sqlite3.connect(":memory:", check_same_thread=False)
            self._conn.backup(mem)
            self._conn.close()
            self._conn = mem
            self._readonly = False
        return self._conn

    def add(self, iids: Sequence[int], ids: Sequence[str], texts: Sequence[str | None] | None,
            metadata: Sequence[Mapping[str, Any] | None] | None) -> None:
        """Insert rows (``texts``/``metadata`` may be None or hold None entries)."""
        n = len(ids)
        tx = texts if texts is not None else [None] * n
        mx = metadata if metadata is not None else [None] * n
        rows = [(int(i), u, t, None if m is None else json.dumps(dict(m), default=str))
                for i, u, t, m in zip(iids, ids, tx, mx, strict=True)]
        conn = self._writable()
        with conn:
            conn.executemany("INSERT INTO docs (iid, id, text, meta) VALUES (?, ?, ?, ?)", rows)

    def fetch(self, iids: Iterable[int]) -> dict[int, tuple[str | None, dict[str, Any] | None]]:
        """Text and metadata of the given internal ids."""
        wanted = sorted({int(i) for i in iids})
        out: dict[int, tuple[str | None, dict[str, Any] | None]] = {}
        for s in range(0, len(wanted), 900):  # SQLite's bound-parameter limit
            part = wanted[s : s + 900]
            q = f"SELECT iid, text, meta FROM docs WHERE iid IN ({','.join('?' * len(part))})"
            for iid, text, meta in self._conn.execute(q, part):
                out[iid] = (text, None if meta is None else json.loads(meta))
        return out

    def has_content(self) -> bool:
        """True when any row has text or metadata."""
        row = self._conn.execute("SELECT 1 FROM docs WHERE text IS NOT NULL OR meta IS NOT NULL LIMIT 1")
        return row.fetchone() is not None

    def ids(self) -> list[str]:
        """User ids in internal-id order (internal ids must be 0..n-1)."""
        rows = self._conn.execute("SELECT iid, id FROM docs ORDER BY iid").fetchall()
        for pos, (iid, _) in enumerate(rows):
            if iid != pos:
                raise FormatError(f"document store has a gap at internal id {pos}; the index folder is damaged.")
        return [r[1] for r in rows]

    def keep(self, keep_iids: np.ndarray) -> None:
        """Compaction: keep only ``keep_iids`` (ascending) and renumber them 0..len-1."""
        conn = self._writable()
        with conn:
            conn.execute("CREATE TEMP TABLE remap (old INTEGER PRIMARY KEY, new INTEGER)")
            conn.executemany("INSERT INTO remap VALUES (?, ?)", ((int(o), n) for n, o in enumerate(keep_iids)))
            conn.execute("DELETE FROM docs WHERE iid NOT IN (SELECT old FROM remap)")
            conn.execute("UPDATE docs SET iid = -1 - (SELECT new FROM remap WHERE old = docs.iid)")
            conn.execute("UPDATE docs SET iid = -1 - iid")
            conn.execute("DROP TABLE remap")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a standalone SQLite file (the caller provides atomicity via a temporary folder)."""
        dest = sqlite3.connect(os.fspath(path))
        try:
            self._conn.backup(dest)
        finally:
            dest.close()

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM docs").fetchone()[0])


# --------------------------------------------------------------------------- encoder identity

def encoder_identity(encoder: Any, spec: str | None = None) -> dict[str, Any]:
    """Identity of an encoder: ``{"name", "sha256", "embedstack_version"}``.

    Uses ``encoder.identity`` (a dict, or a method returning one) when the encoder provides it,
    otherwise hashes the encoder's saved state (``Component._state``: config + arrays) so that two
    fits on different corpora get different identities. ``sha256`` is None when nothing can be hashed.
    """
    from embedstack import __version__

    ident = getattr(encoder, "identity", None)
    if callable(ident):
        ident = ident()
    if isinstance(ident, Mapping) and ident.get("name"):
        out = {"name": str(ident["name"]), "sha256": ident.get("sha256"),
               "embedstack_version": ident.get("embedstack_version", __version__)}
        if spec:
            out["spec"] = spec
        return out
    name = spec or type(encoder).__name__
    digest: str | None = None
    state_fn = getattr(encoder, "_state", None)
    if callable(state_fn):
        try:
            arrays, state = state_fn()
        except Exception:  # unfitted or stateless encoders have no identity beyond their name
            arrays, state = None, None
        if arrays is not None:
            h = hashlib.sha256()
            cfg = encoder.get_config() if hasattr(encoder, "get_config") else {}
            h.update(json.dumps([type(encoder).__name__, cfg, state], sort_keys=True, default=str).encode())
            for key in sorted(arrays):
                a = np.ascontiguousarray(arrays[key])
                h.update(key.encode() + str(a.dtype).encode() + str(a.shape).encode())
                h.update(a.tobytes())
            digest = h.hexdigest()
    folder = getattr(encoder, "folder", None)
    if digest is None and folder is not None:  # transformer folders: hash the weights file(s)
        weights = sorted(Path(folder).rglob("*.safetensors"))
        if weights:
            h = hashlib.sha256()
            for w in weights:
                h.update(_file_digest(w).encode())
            digest = h.hexdigest()
        name = spec or str(getattr(encoder, "name", name))
    out = {"name": name, "sha256": digest, "embedstack_version": __version__}
    if spec:
        out["spec"] = spec
    return out


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime) so repeated searches do not re-hash weights."""
    from embedstack.io import sha256_file

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def check_identity(expected: Mapping[str, Any] | None, actual: Mapping[str, Any] | None) -> None:
    """Raise :class:`ModelMismatch` unless ``actual`` is the encoder that built the index."""
    if not expected or not actual:
        return
    e_sha, a_sha = expected.get("sha256"), actual.get("sha256")
    same = e_sha == a_sha if e_sha and a_sha else expected.get("name") == actual.get("name")
    if not same:
        raise ModelMismatch(
            f"This index was built with encoder {expected.get('name')!r} (sha256 {str(e_sha)[:12]}), but it is "
            f"being searched with {actual.get('name')!r} (sha256 {str(a_sha)[:12]}). Encode queries with the "
            "encoder that built the index, or rebuild the index with the new encoder."
        )


# --------------------------------------------------------------------------- aliases

def set_alias(alias: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path | None:
    """Point ``alias`` (a symlink) at the index folder ``target`` atomically; return the previous target."""
    link = Path(alias)
    dest = Path(target)
    if not (dest / "manifest.json").is_file():
        raise IndexStateError(f"{dest} is not a saved index folder (no manifest.json); save the index first.")
    if link.exists() and not link.is_symlink():
        raise IndexStateError(f"{link} exists and is not an alias (a symlink); choose another alias name.")
    previous = resolve_alias(link) if link.is_symlink() else None
    link.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(dest.resolve(), link.parent.resolve())
    from embedstack.io.atomic import fsync_dir, sweep_stale, temp_prefix

    sweep_stale(link, ".lnk")  # links left by a swap that was killed
    tmp = Path(tempfile.mktemp(prefix=temp_prefix(link), suffix=".lnk", dir=link.parent))
    os.symlink(rel, tmp)
    try:
        os.replace(tmp, link)  # rename(2) over the old link: readers see the old or the new, never nothing
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(link.parent)
    return previous


def resolve_alias(alias: str | os.PathLike[str]) -> Path:
    """The folder an alias points to (a plain folder resolves to itself)."""
    return Path(os.path.realpath(alias))


def real_path(path: str | os.PathLike[str]) -> Path:
    """``path`` with aliases followed, so saving through an alias replaces the version, not the link."""
    p = Path(path)
    return resolve_alias(p) if p.is_symlink() else p


# --------------------------------------------------------------------------- loading

def read_index_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an index folder's manifest, checking that it describes an index."""
    from embedstack.io import read_manifest

    manifest = read_manifest(resolve_alias(path))  # (read_manifest puts back a version a crashed swap left aside)
    if not _is_index(manifest):
        raise FormatError(f"{path} holds a {manifest['type']!r}, which is not an index.")
    return manifest


def load_index(path: str | os.PathLike[str], *, mmap: bool = True, verify: bool | None = None) -> Any:
    """Load any saved index folder (or alias) by the type in its manifest.

    ``verify`` as in :meth:`embedstack.index.FlatIndex.load`: checksums are checked unless
    ``verify=False`` or ``EMBEDSTACK_VERIFY=0``.
    """
    from embedstack.registry import lookup

    manifest = read_index_manifest(path)
    cls = lookup(manifest["type"])
    return cls.load(path, mmap=mmap, verify=verify)  # type: ignore[attr-defined]


def verify_index(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Hash every file of an index folder (or alias) against its manifest; return what was checked.

    Returns ``{"path", "resolved", "type", "files", "bytes", "checked"}``; ``checked`` is False for
    folders saved before checksums were recorded (save them again to add them).

    Raises:
        FormatError: a file is missing, truncated or does not match its sha256 (named in the message).
    """
    from embedstack.io import verify_artifact

    read_index_manifest(path)  # an index, not some other component
    return verify_artifact(path)
