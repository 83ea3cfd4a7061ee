"""What every index shares: id mapping, validation, tombstones, hits, and folder save/load.

Subclasses store vectors their own way and implement a handful of hooks:
``_append`` (new rows, already validated), ``_search_ids`` (internal ids and scores),
``_compact_rows`` (keep a subset of rows), ``_arrays``/``_restore`` (persistence) and ``get_config``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from embedstack import _threads
from embedstack._validation import check_choice, check_int, check_k
from embedstack.base import Hit
from embedstack.errors import DimensionMismatch, FormatError, IndexStateError, InputError
from embedstack.index.store import (
    ARRAYS_FILE,
    DOCS_FILE,
    ENCODER_DIR,
    INDEX_KIND,
    DocStore,
    check_identity,
    read_index_manifest,
    real_path,
    resolve_alias,
)

__all__ = ["BaseIndex", "METRICS", "as_matrix", "check_new_ids", "check_id_strings"]

METRICS = ("cosine", "ip", "l2")


def prepare_rows(x: np.ndarray, metric: str) -> np.ndarray:
    """Rows as stored and searched: C-contiguous float32, L2-normalised for ``metric="cosine"``
    (zero rows stay zero)."""
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1.0).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def as_matrix(x: Any, dim: int | None, what: str = "vectors") -> np.ndarray:
    """Validate ``x`` as a finite float32 matrix of width ``dim`` (a 1-D vector becomes one row)."""
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a numeric array of shape (n, dim); got {type(x).__name__}.") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(f"{what} must be 2-D (n, dim); got an array of shape {arr.shape}.")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatch(
            f"{what} have {arr.shape[1]} dimensions but the index holds {dim}-dimensional vectors; "
            "encode with the encoder that built the index."
        )
    if arr.size and not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise InputError(f"{what} contain NaN or infinite values (rows {bad[:5].tolist()}); clean or drop them first.")
    return arr


def check_id_strings(ids: Any) -> list[str]:
    """``ids`` as a list, every one a string (one string alone is refused: wrap it in a list)."""
    if isinstance(ids, str):
        raise InputError("ids must be a sequence of strings, not one string; wrap it in a list.")
    out = list(ids)
    for doc_id in out:
        if not isinstance(doc_id, str):
            raise InputError(f"ids must be strings; got {doc_id!r} ({type(doc_id).__name__}). Use str(id).")
    return out


def check_new_ids(n: int, ids: Any, texts: Sequence[Any] | None = None,
                  metadata: Sequence[Any] | None = None) -> list[str]:
    """The ids of ``n`` new documents as a list of strings, checked: one per vector (and per text/metadata
    given), all strings, none repeated in the batch. Every index's ``add`` (ours, QdrantIndex) uses it.

    Raises:
        InputError: not strings, or lengths that disagree. IndexStateError: an id repeated in ``ids``.
    """
    out = check_id_strings(ids)
    if len(out) != n:
        raise InputError(f"got {n} vectors but {len(out)} ids; give one id per vector.")
    for name, extra in (("texts", texts), ("metadata", metadata)):
        if extra is not None and len(extra) != n:
            raise InputError(f"got {n} vectors but {len(extra)} {name}; give one per vector (None allowed).")
    if metadata is not None:  # checked before anything is stored: a failed add leaves the index as it was
        bad = next((j for j, m in enumerate(metadata) if m is not None and not isinstance(m, Mapping)), None)
        if bad is not None:
            raise InputError(f"metadata[{bad}] is a {type(metadata[bad]).__name__}, not a mapping (dict) or None.")
    if len(set(out)) != n:
        dup = next(i for i in out if out.count(i) > 1)
        raise IndexStateError(f"id {dup!r} appears more than once in this batch; ids must be unique.")
    return out


class BaseIndex:
    """Shared machinery of embedstack indexes (see :class:`embedstack.base.VectorIndex`)."""

    type_name: ClassVar[str] = ""
    quantization: ClassVar[str] = "none"

    def __init__(self, dim: int, *, metric: str = "cosine") -> None:
        self.dim = dim
        self.metric = metric
        self._check_params()
        self._ids: list[str] = []
        self._pos: dict[str, int] = {}
        self._dead = np.zeros(0, dtype=bool)
        self._n_dead = 0
        self.docs = DocStore()
        self._has_content = False
        self.encoder: dict[str, Any] | None = None
        self._folder: Path | None = None  # where it was loaded from
        self._lookup: np.ndarray | None = None  # cached object array of ids for search_ids
        # adds are buffered and folded in (and lazy structures built) by the first reader: concurrent
        # readers (a server's search threads under one read lock) must do that once, under this lock
        self._fold_lock = threading.RLock()

    # ------------------------------------------------------------------ hooks
    def _check_params(self) -> None:
        check_int(self, "dim", self.dim, low=1)
        check_choice(self, "metric", self.metric, METRICS)

    def get_config(self) -> dict[str, Any]:
        return {"dim": self.dim, "metric": self.metric}

    def _append(self, vectors: Any) -> None:
        raise NotImplementedError

    def _search_ids(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Return (scores (nq, k'), internal ids (nq, k'), extra per-stage scores); -1 ids are padding."""
        raise NotImplementedError

    def _compact_rows(self, keep: np.ndarray) -> None:
        raise NotImplementedError

    def _arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _restore(self, arrays: dict[str, np.ndarray], state: dict[str, Any], folder: Path, mmap: bool) -> None:
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        return {}

    def _write_extra(self, folder: Path) -> None:
        """Write files other than arrays/docs (the HNSW graph)."""

    def _validate(self, vectors: Any, what: str) -> Any:
        return as_matrix(vectors, self.dim, what)

    # ------------------------------------------------------------------ public API
    def __len__(self) -> int:
        return len(self._ids) - self._n_dead

    @property
    def ids(self) -> list[str]:
        """Live user ids in insertion order."""
        if not self._n_dead:
            return list(self._ids)
        return [u for u, d in zip(self._ids, self._dead, strict=True) if not d]

    @property
    def n_tombstones(self) -> int:
        """Removed documents still occupying space until :meth:`compact`."""
        return self._n_dead

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._pos

    def add(self, vectors: Any, ids: Sequence[str], *, texts: Sequence[str | None] | None = None,
            metadata: Sequence[Mapping[str, Any] | None] | None = None) -> Any:
        """Add documents: ``vectors`` (n, dim) with user ``ids`` and optional ``texts``/``metadata``; return self.

        Raises:
            DimensionMismatch: the vectors do not have the index's dimensionality.
            InputError: NaN/inf values or lengths that disagree.
            IndexStateError: an id is already in the index or repeated in ``ids``.
        """
        data = self._validate(vectors, "vectors")
        n = data.shape[0] if hasattr(data, "shape") else len(data)
        ids = check_new_ids(n, ids, texts, metadata)
        clash = [i for i in ids if i in self._pos]
        if clash:
            raise IndexStateError(
                f"id {clash[0]!r} is already in the index ({len(clash)} duplicates); remove it first to replace it."
            )
        if n == 0:
            return self
        self._append(data)
        start = len(self._ids)
        self.docs.add(range(start, start + n), ids, texts, metadata)
        self._has_content = self._has_content or texts is not None or metadata is not None
        self._ids.extend(ids)
        self._pos.update((u, start + j) for j, u in enumerate(ids))
        self._dead = np.concatenate([self._dead, np.zeros(n, dtype=bool)])
        return self

    def remove(self, ids: Sequence[str]) -> int:
        """Delete documents by id (tombstones: space is reclaimed by :meth:`compact`); return how many.

        Raises:
            IndexStateError: an id is not in the index.
        """
        if isinstance(ids, str):
            ids = [ids]
        missing = [i for i in ids if i not in self._pos]
        if missing:
            raise IndexStateError(f"id {missing[0]!r} is not in the index ({len(missing)} unknown ids); nothing removed.")
        for doc_id in dict.fromkeys(ids):
            iid = self._pos.pop(doc_id)
            self._dead[iid] = True
            self._n_dead += 1
            self._on_remove(iid)
        return len(set(ids))

    def _on_remove(self, iid: int) -> None:
        """Hook for indexes that delete eagerly as well (HNSW)."""

    def compact(self) -> int:
        """Drop tombstoned rows and renumber; return how many rows were reclaimed."""
        if not self._n_dead:
            return 0
        keep = np.flatnonzero(~self._dead)
        self._compact_rows(keep)
        self.docs.keep(keep)
        self._ids = [self._ids[i] for i in keep]
        self._lookup = None
        self._pos = {u: j for j, u in enumerate(self._ids)}
        reclaimed = self._n_dead
        self._dead = np.zeros(len(self._ids), dtype=bool)
        self._n_dead = 0
        return reclaimed

    def search(self, queries: Any, k: int = 10, *, with_text: bool = True) -> list[list[Hit]]:
        """Top-``k`` documents for each query, best first: one list of :class:`Hit` per query.

        Args:
            queries: (nq, dim) query vectors (a single 1-D vector counts as one query).
            k: number of hits per query (fewer when the index holds fewer live documents).
            with_text: attach the stored text and metadata to each hit.
        """
        k = check_k(k)
        q = self._validate(queries, "queries")
        nq = q.shape[0] if hasattr(q, "shape") else len(q)
        if len(self) == 0 or nq == 0:
            return [[] for _ in range(nq)]
        with _threads.for_batch(nq):  # one query: BLAS and numba on this thread (no pools left spinning)
            scores, iids, stages = self._search_ids(q, min(k, len(self)))
        return self._hits(scores, iids, stages, with_text)

    def search_ids(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Arrays-first search without Hit objects: scores ``(nq, k)`` and user ids ``(nq, k)``.

        Ids come back as a numpy object array of strings (``""`` pads rows with fewer hits, whose
        scores are ``-inf``).
        """
        k = check_k(k)
        q = self._validate(queries, "queries")
        nq = q.shape[0] if hasattr(q, "shape") else len(q)
        if len(self) == 0 or nq == 0:
            return np.zeros((nq, 0), dtype=np.float32), np.zeros((nq, 0), dtype=object)
        with _threads.for_batch(nq):
            scores, iids, _ = self._search_ids(q, min(k, len(self)))
        return np.asarray(scores, dtype=np.float32), self._id_lookup()[iids]

    def _id_lookup(self) -> np.ndarray:
        """User ids as an object array with ``""`` appended (internal id -1), cached between searches."""
        lookup: np.ndarray | None = getattr(self, "_lookup", None)
        if lookup is None or len(lookup) != len(self._ids) + 1:  # rows are only appended between compactions
            lookup = np.asarray(self._ids + [""], dtype=object)
            self._lookup = lookup
        return lookup

    def _hits(self, scores: np.ndarray, iids: np.ndarray, stages: dict[str, np.ndarray],
              with_text: bool) -> list[list[Hit]]:
        content = self.docs.fetch(iids[iids >= 0].ravel()) if with_text and self._has_content else {}
        ids = self._ids
        score_rows = scores.tolist()
        stage_rows = {name: v.tolist() for name, v in stages.items()}
        out: list[list[Hit]] = []
        for r, row_ids in enumerate(iids.tolist()):
            row: list[Hit] = []
            srow = score_rows[r]
            for c, iid in enumerate(row_ids):
                if iid < 0:
                    continue
                text, meta = content.get(iid, (None, None)) if content else (None, None)
                st = {name: v[r][c] for name, v in stage_rows.items()} if stage_rows else {}
                row.append(Hit(ids[iid], srow[c], st, text, meta))
            out.append(row)
        return out

    def get(self, doc_id: str) -> Hit:
        """The stored text/metadata of one document (score 0)."""
        if doc_id not in self._pos:
            raise IndexStateError(f"id {doc_id!r} is not in the index.")
        text, meta = self.docs.fetch([self._pos[doc_id]]).get(self._pos[doc_id], (None, None))
        return Hit(doc_id, 0.0, {}, text, meta)

    def check_encoder(self, identity: Mapping[str, Any] | None) -> None:
        """Raise ModelMismatch if ``identity`` is not the encoder recorded for this index."""
        check_identity(self.encoder, identity)

    def memory_bytes(self) -> int:
        """Bytes of the first-stage searchable representation (codes / vectors / graph)."""
        return self.nbytes()

    def nbytes(self) -> int:
        """Bytes of everything the index stores for search (all stages)."""
        return int(sum(a.nbytes for a in self._arrays().values()))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str], *, encoder: Any = None, force: bool = False) -> Path:
        """Save atomically to the folder ``path`` (through an alias: replaces the version it points to).

        The manifest records the sha256 and size of every file, checked by :meth:`load` and
        ``embedstack index verify``.

        Args:
            path: destination folder (replaced whole if it is an earlier saved index or empty).
            encoder: a saveable encoder (an embedstack Component, e.g. a fitted BM25) stored in
                ``path/encoder`` so that the folder can answer text queries on its own. An index loaded
                from a folder that had one keeps it.
            force: replace ``path`` even if it is not a saved index (a foreign folder is deleted).

        Raises:
            OutputExistsError: ``path`` exists and is neither a saved index nor empty (without ``force``).
        """
        import shutil

        from embedstack.io import atomic_dir, save_arrays, write_manifest

        target = real_path(path)
        arrays = {**self._arrays(), **self._tomb_array()}
        with atomic_dir(target, kind=INDEX_KIND, force=force) as tmp:
            save_arrays(tmp / ARRAYS_FILE, arrays)
            self.docs.save(tmp / DOCS_FILE)
            self._write_extra(tmp)
            if encoder is not None:
                encoder.save(tmp / ENCODER_DIR)
            elif self._folder is not None and (self._folder / ENCODER_DIR).is_dir():
                shutil.copytree(self._folder / ENCODER_DIR, tmp / ENCODER_DIR)
            write_manifest(
                tmp, self.type_name, self.get_config(),
                metric=self.metric, dims=self.dim, quantization=self.quantization, count=len(self),
                rows=len(self._ids), tombstones=self._n_dead, encoder=self.encoder,
                saved_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                state={**self._state(), "has_content": self._has_content},
            )
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = True, verify: bool | None = None) -> BaseIndex:
        """Load a folder written by :meth:`save` (vectors memory-mapped unless ``mmap=False``).

        Args:
            path: the index folder or an alias.
            mmap: memory-map the vectors (default) instead of reading them into memory.
            verify: hash every file against the sha256 in the manifest (default: yes, unless the
                environment sets ``EMBEDSTACK_VERIFY=0``). Pass ``verify=False`` for huge indexes
                whose pages should only be read when searched; sizes are checked either way, and
                ``embedstack index verify PATH`` checks them offline.

        Raises:
            FormatError: not an index of this type, or a file is missing, truncated or corrupted.
        """
        from embedstack.io import load_arrays, verify_enabled, verify_files
        from embedstack.io.manifest import listed_sha256

        folder = resolve_alias(path)  # once: an alias swapped meanwhile cannot mix two versions
        manifest = read_index_manifest(folder)
        if cls.type_name and manifest["type"] != cls.type_name:
            raise FormatError(f"{path} holds a {manifest['type']!r}, not a {cls.type_name!r}; use load_index().")
        # read into memory: the arrays file is hashed on the bytes load_arrays reads, not read twice
        defer = ARRAYS_FILE if not mmap and verify_enabled(verify) else None
        verify_files(folder, manifest, verify=verify, defer=defer)
        obj = cls(**manifest["config"])
        arrays = load_arrays(folder / ARRAYS_FILE, mmap=mmap, sha256=listed_sha256(manifest, defer) if defer else None)
        dead = np.asarray(arrays.pop("tombstones", np.zeros(0, dtype=np.uint8))).astype(bool)
        state = manifest.get("state", {})
        obj.docs = DocStore(folder / DOCS_FILE)
        obj._ids = obj.docs.ids()
        if len(dead) != len(obj._ids):
            raise FormatError(f"{path}: {len(obj._ids)} documents but {len(dead)} tombstone flags; the folder is damaged.")
        obj._dead = dead
        obj._n_dead = int(dead.sum())
        obj._pos = {u: j for j, u in enumerate(obj._ids) if not dead[j]}
        obj._has_content = bool(state.get("has_content", True))
        obj.encoder = manifest.get("encoder")
        obj._folder = folder
        obj._restore(arrays, state, folder, mmap)
        return obj

    def _tomb_array(self) -> dict[str, np.ndarray]:
        return {"tombstones": self._dead.astype(np.uint8)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, metric={self.metric!r}, count={len(self)})"
