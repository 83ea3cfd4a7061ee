"""Encoded shards: the folder a cluster job writes (vectors with ids), and one index built from it.

A shard folder holds ``shard-00000.npy`` + ``shard-00000.jsonl`` (vectors; one ``{"row", "id"[, "text",
"meta"]}`` object per line; sparse rows: ``shard-00000.npz``, scipy CSR) or ``shard-00000.parquet`` (columns
``row``, ``id``, ``vector`` or ``indices`` + ``values`` [, ``text``, ``meta``]); token matrices (ColBERT)
go to ``shard-00000.npy`` (all tokens) + ``shard-00000.offsets.npy``; and a ``manifest.json`` written last with the sha256 of every file, the encoder's identity
and the row count. The folder is built in a temporary sibling and renamed into place when the job has
finished, so a killed job never leaves a folder that looks complete. ``row`` is the corpus ordinal of a
row: shards hold rows in the order the workers finished them, and :meth:`ShardSet.arrays` puts them back
in corpus order.

Why one merged index and not an index per shard searched by fan-out: on one search host a flat index is
one matrix product and an HNSW graph one descent whatever the row count, while S shards cost S searches
and a merge per query; shards pay off only across machines, and there a vector database (sharding,
replicas, filtering: :class:`embedstack.scale.QdrantIndex`) does it better than a home-made fan-out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.errors import ConfigError, FormatError

__all__ = ["SHARDS_TYPE", "FORMATS", "Shard", "ShardWriter", "ShardSet", "read_shards", "index_from_shards"]

SHARDS_TYPE = "EmbeddingShards"
FORMATS = ("npy", "parquet")


@dataclass
class Shard:
    """The rows of one shard file."""

    rows: np.ndarray  # int64 corpus ordinals
    ids: list[str]
    vectors: Any  # float32 (n, dim); a scipy.sparse CSR array for sparse models
    texts: list[str] | None
    metas: list[dict[str, Any] | None] | None


class ShardWriter:
    """Buffer encoded rows and write them as shards of ``shard_rows`` rows into ``folder``."""

    def __init__(self, folder: Path, *, dim: int, fmt: str = "npy", shard_rows: int = 65536,
                 keep_text: bool = False, sparse: bool = False, multi: bool = False) -> None:
        if fmt not in FORMATS:
            raise ConfigError(f"shard format must be one of {', '.join(FORMATS)}; got {fmt!r}.",
                              param=("fmt", "shard format"))
        if shard_rows < 1:
            raise ConfigError(f"shard_rows must be >= 1; got {shard_rows}.")
        self.folder, self.dim, self.fmt, self.shard_rows, self.keep_text = folder, dim, fmt, shard_rows, keep_text
        self.sparse, self.multi = sparse, multi
        self._buf: list[tuple[np.ndarray, list[str], Any, list[str], list[str]]] = []
        self._buffered = 0
        self.entries: list[dict[str, Any]] = []
        self.count = 0

    def add(self, rows: np.ndarray, ids: Sequence[str], vectors: Any, texts: Sequence[str] | None = None,
            metas: Sequence[str] | None = None) -> None:
        """Queue rows (``metas`` as JSON strings, "" for none); full shards are written at once.

        ``vectors``: a float32 ``(n, dim)`` array, or for sparse shards ``(indices, values)``: one int and
        one float array per row.
        """
        n = len(ids)
        if not n:
            return
        if self.multi:
            mat: Any = [np.asarray(m, dtype=np.float32) for m in vectors]
        elif self.sparse:
            import scipy.sparse as sp

            indices, values = vectors
            indptr = np.zeros(n + 1, dtype=np.int64)
            indptr[1:] = np.cumsum([len(i) for i in indices])
            mat = sp.csr_array((np.concatenate(values).astype(np.float32) if n else np.zeros(0, np.float32),
                                     np.concatenate(indices).astype(np.int32) if n else np.zeros(0, np.int32), indptr),
                                    shape=(n, self.dim))
        else:
            mat = np.asarray(vectors, dtype=np.float32)
        self._buf.append((np.asarray(rows, dtype=np.int64), list(ids), mat,
                          list(texts) if texts is not None else [""] * n,
                          list(metas) if metas is not None else [""] * n))
        self._buffered += n
        while self._buffered >= self.shard_rows:
            self._write(self.shard_rows)

    def close(self) -> list[dict[str, Any]]:
        """Write what is left; return the shard entries for the manifest."""
        if self._buffered:
            self._write(self._buffered)
        return self.entries

    def _take(self, n: int) -> tuple[np.ndarray, list[str], Any, list[str], list[str]]:
        parts: list[tuple[np.ndarray, list[str], Any, list[str], list[str]]] = []
        need = n
        while need:
            rows, ids, vecs, texts, metas = self._buf[0]
            if len(ids) <= need:
                parts.append(self._buf.pop(0))
                need -= len(ids)
            else:
                parts.append((rows[:need], ids[:need], vecs[:need], texts[:need], metas[:need]))
                self._buf[0] = (rows[need:], ids[need:], vecs[need:], texts[need:], metas[need:])
                need = 0
        self._buffered -= n
        if self.multi:
            merged: Any = [m for p in parts for m in p[2]]
        elif self.sparse:
            import scipy.sparse as sp

            merged = sp.csr_array(sp.vstack([p[2] for p in parts], format="csr"))
        else:
            merged = np.concatenate([p[2] for p in parts])
        return (np.concatenate([p[0] for p in parts]), [i for p in parts for i in p[1]], merged,
                [t for p in parts for t in p[3]], [m for p in parts for m in p[4]])

    def _write(self, n: int) -> None:
        rows, ids, vecs, texts, metas = self._take(n)
        name = f"shard-{len(self.entries):05d}"
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            cols: dict[str, Any] = {"row": pa.array(rows, type=pa.int64()), "id": pa.array(ids, type=pa.string())}
            if self.sparse:
                offsets = pa.array(vecs.indptr.astype(np.int32))
                cols["indices"] = pa.ListArray.from_arrays(offsets, pa.array(vecs.indices.astype(np.int32)))
                cols["values"] = pa.ListArray.from_arrays(offsets, pa.array(vecs.data.astype(np.float32)))
            else:
                cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel(), type=pa.float32()), self.dim)
            if self.keep_text:
                cols["text"] = pa.array(texts, type=pa.string())
                cols["meta"] = pa.array(metas, type=pa.string())
            pq.write_table(pa.table(cols), str(self.folder / f"{name}.parquet"))
            files = [f"{name}.parquet"]
        else:
            extra: list[str] = []
            if self.multi:
                offsets = np.zeros(len(vecs) + 1, dtype=np.int64)
                offsets[1:] = np.cumsum([len(m) for m in vecs])
                np.save(self.folder / f"{name}.npy", np.concatenate(vecs) if vecs else np.zeros((0, self.dim), np.float32))
                np.save(self.folder / f"{name}.offsets.npy", offsets)
                extra = [f"{name}.offsets.npy"]
            elif self.sparse:
                import scipy.sparse as sp

                sp.save_npz(self.folder / f"{name}.npz", vecs, compressed=False)
            else:
                np.save(self.folder / f"{name}.npy", vecs)
            with open(self.folder / f"{name}.jsonl", "w", encoding="utf-8") as fh:
                for j in range(len(ids)):
                    rec: dict[str, Any] = {"row": int(rows[j]), "id": ids[j]}
                    if self.keep_text:
                        rec["text"] = texts[j]
                        if metas[j]:
                            rec["meta"] = json.loads(metas[j])
                    fh.write(json.dumps(rec) + "\n")  # ASCII: no U+2028 or NEL inside a line
            files = [f"{name}.{'npz' if self.sparse else 'npy'}", f"{name}.jsonl", *extra]
        self.entries.append({"name": name, "files": files, "rows": len(ids)})
        self.count += len(ids)


class ShardSet:
    """A finished shard folder (read with :func:`read_shards`)."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder = folder
        self.manifest = manifest
        cfg = manifest.get("config", {})
        self.dim = int(cfg["dim"])
        self.format = str(cfg["format"])
        self.model = cfg.get("model")
        self.encoder: dict[str, Any] | None = manifest.get("encoder")
        self.count = int(manifest.get("count", 0))
        self.has_text = bool(cfg.get("keep_text"))
        self.sparse = bool(cfg.get("sparse"))
        self.multi = bool(cfg.get("multi"))
        self.skipped: int = int(manifest.get("skipped", 0))
        self.stats: dict[str, Any] = dict(manifest.get("stats", {}))

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"ShardSet({str(self.folder)!r}, count={self.count}, dim={self.dim}, format={self.format!r})"

    def __iter__(self) -> Iterator[Shard]:
        for entry in self.manifest.get("shards", []):
            yield self._read(entry)

    def _read(self, entry: dict[str, Any]) -> Shard:
        name = entry["name"]
        if self.format == "parquet":
            import pyarrow.parquet as pq

            t = pq.read_table(str(self.folder / f"{name}.parquet"))
            vectors: Any
            if self.sparse:
                import scipy.sparse as sp

                ind, val = t.column("indices").combine_chunks(), t.column("values").combine_chunks()
                vectors = sp.csr_array((val.values.to_numpy(zero_copy_only=False).astype(np.float32),
                                        ind.values.to_numpy(zero_copy_only=False).astype(np.int32),
                                        ind.offsets.to_numpy().astype(np.int64)), shape=(len(t), self.dim))
            else:
                vec = t.column("vector").combine_chunks()
                vectors = vec.values.to_numpy(zero_copy_only=False).reshape(len(t), self.dim).astype(np.float32,
                                                                                                 copy=False)
            texts = t.column("text").to_pylist() if "text" in t.column_names else None
            metas = ([json.loads(m) if m else None for m in t.column("meta").to_pylist()]
                     if "meta" in t.column_names else None)
            shard = Shard(t.column("row").to_numpy(), t.column("id").to_pylist(), vectors, texts, metas)
        else:
            if self.multi:
                tokens = np.load(self.folder / f"{name}.npy", allow_pickle=False)
                offs = np.load(self.folder / f"{name}.offsets.npy", allow_pickle=False)
                if tokens.ndim != 2 or tokens.shape[1] != self.dim or len(offs) != entry["rows"] + 1 or offs[-1] != len(tokens):
                    raise FormatError(f"{self.folder}/{name}: token matrices and offsets disagree; the folder is damaged.")
                vectors = [tokens[offs[i]:offs[i + 1]] for i in range(len(offs) - 1)]
            elif self.sparse:
                import scipy.sparse as sp

                vectors = sp.csr_array(sp.load_npz(self.folder / f"{name}.npz"))
            else:
                vectors = np.load(self.folder / f"{name}.npy", allow_pickle=False)
            text = (self.folder / f"{name}.jsonl").read_text(encoding="utf-8")
            recs = [json.loads(line) for line in text.split("\n") if line]
            shard = Shard(np.asarray([r["row"] for r in recs], dtype=np.int64), [r["id"] for r in recs], vectors,
                          [r.get("text", "") for r in recs] if self.has_text else None,
                          [r.get("meta") for r in recs] if self.has_text else None)
        shape = (len(shard.vectors), self.dim) if self.multi else tuple(shard.vectors.shape)
        if len(shard.ids) != entry["rows"] or shape != (entry["rows"], self.dim):
            raise FormatError(f"{self.folder}/{name}: {len(shard.ids)} ids and vectors of shape {shard.vectors.shape}, "
                              f"but the manifest lists {entry['rows']} × {self.dim}; the folder is damaged.")
        return shard

    def merged(self) -> tuple[np.ndarray, list[str], Any, list[str] | None, list[Any] | None]:
        """Every row of every shard in arrival order — ``ids``, vectors (one array, CSR rows, or a list of token
        matrices), texts and metadata (None unless kept) — and ``order``, the permutation to corpus order."""
        import scipy.sparse as sp

        shards = list(self)
        order = (np.argsort(np.concatenate([s.rows for s in shards]), kind="stable") if shards
                 else np.zeros(0, dtype=np.int64))
        ids = [i for s in shards for i in s.ids]
        texts = [t for s in shards for t in (s.texts or [])] if self.has_text else None
        metas = [m for s in shards for m in (s.metas or [])] if self.has_text else None
        every: Any
        if self.multi:
            every = [m for s in shards for m in s.vectors]
        elif not shards:
            every = np.zeros((0, self.dim), dtype=np.float32)
            every = sp.csr_array(every) if self.sparse else every
        elif self.sparse:
            every = sp.csr_array(sp.vstack([s.vectors for s in shards], format="csr"))
        else:
            every = np.concatenate([s.vectors for s in shards])
        return order, ids, every, texts, metas

    def arrays(self) -> tuple[list[str], Any]:
        """Every id and vector (CSR rows for sparse shards, a list of token matrices for multi-vector ones), in
        corpus order (the order of the input rows)."""
        order, ids, every, _, _ = self.merged()
        return [ids[j] for j in order], _take_rows(every, order, self.multi)


def _take_rows(every: Any, rows: np.ndarray, multi: bool) -> Any:
    return [every[j] for j in rows] if multi else every[rows]


def read_shards(path: str | os.PathLike[str], *, verify: bool | None = None) -> ShardSet:
    """Open a shard folder written by :func:`embedstack.scale.encode_ray` (every file checked against its sha256).

    Raises:
        FormatError: not a shard folder, or a file is missing or damaged.
    """
    from embedstack.io import read_manifest, verify_files

    folder = Path(path)
    if not (folder / "manifest.json").is_file():
        raise FormatError(f"{folder} is not a shard folder (no manifest.json); write one with `embedstack encode --ray`.")
    manifest = read_manifest(folder)
    if manifest.get("type") != SHARDS_TYPE:
        raise FormatError(f"{folder} holds a {manifest.get('type')!r}, not encoded shards.")
    verify_files(folder, manifest, verify=verify)
    return ShardSet(folder, manifest)


def index_from_shards(shards: ShardSet | str | os.PathLike[str], *, index: str = "flat",
                      out: str | os.PathLike[str] | None = None, encoder: Any = None, force: bool = False,
                      progress: Callable[[str, int, int], None] | None = None) -> Any:
    """One embedstack index holding every row of a shard folder (texts and metadata too when the shards kept them).

    Args:
        shards: a :class:`ShardSet` or its folder.
        index: an :func:`embedstack.index.from_spec` spec (``flat``, ``int8``, ``hnsw:M=32`` ...).
        out: save the index there (atomically; it must be absent, empty or a saved index unless ``force``).
        encoder: the encoder, saved inside the index folder when it is saveable (a fitted LSA ...), so the
            folder answers text queries on its own; else the manifest's SPEC resolves it again.
    """
    from embedstack.index import SparseIndex, from_spec, multivector_from_spec

    shard_set = shards if isinstance(shards, ShardSet) else read_shards(shards)
    if out is not None:
        from embedstack.index.store import INDEX_KIND, real_path
        from embedstack.io import check_output

        check_output(real_path(out), kind=INDEX_KIND, force=force)
    if shard_set.multi:
        idx: Any = multivector_from_spec(index, dim=shard_set.dim, model=str(shard_set.model))
    elif shard_set.sparse:
        if index not in ("flat", "sparse"):
            raise ConfigError(f"the shards hold sparse rows: they get an inverted index; drop the index option {index!r}.")
        idx = SparseIndex(shard_set.dim)
    else:
        idx = from_spec(index, dim=shard_set.dim)
    # rows go in in corpus order (shards hold them in arrival order): the same graph, ids and ties as one process
    order, ids, every, texts, metas = shard_set.merged()
    step = 65536
    for start in range(0, len(order), step):
        part = order[start:start + step]
        idx.add(_take_rows(every, part, shard_set.multi), [ids[j] for j in part],
                texts=[texts[j] for j in part] if texts is not None else None,
                metadata=[metas[j] for j in part] if metas is not None else None)
        if progress is not None:
            progress("index", start + len(part), shard_set.count)
    if shard_set.multi and hasattr(idx, "train"):
        idx.train()  # centroids for the candidate stage (and, for plaid, the compression), as build_index does
    idx.encoder = shard_set.encoder
    if out is not None:
        saveable = encoder is not None and callable(getattr(encoder, "save", None)) and bool(getattr(encoder, "type_name", ""))
        idx.save(out, encoder=encoder if saveable else None, force=force)
    return idx
