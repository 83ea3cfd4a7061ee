"""Qdrant as an embedstack index: the same ``add``/``search``/``remove`` surface over a real vector database.

Two engines behind one class (a small adapter each):

* ``engine="edge"`` (default): **Qdrant Edge** (``qdrant-edge-py``), the Qdrant Rust engine embedded in this
  process. The index is a folder holding one Edge shard (``edge_config.json``, ``segments/``, ``wal/``) plus
  an embedstack ``manifest.json`` (kind, metric, dims, options, encoder identity). Edge runs no background
  optimizer: the HNSW graph (and quantized codes) are built by :meth:`QdrantIndex.optimize`, which the
  first search after a change runs, as embedstack indexes build lazy structures on first read.
* ``engine="client"``: a :class:`qdrant_client.QdrantClient` collection: ``url=`` for a Qdrant server,
  or the client's local mode (``location=":memory:"`` or ``path=``). Local mode is a **pure-Python
  stand-in** (exact brute force, ignores HNSW/quantization settings), good for tests only; the
  embedstack manifest lives in the collection's ``metadata``.

Kinds: ``dense`` (``cosine``, ``ip``, ``l2`` as in :class:`~embedstack.index.FlatIndex`; ``l2`` scores are
negative Euclidean distances), ``sparse`` (Qdrant sparse vectors, dot product, as
:class:`~embedstack.index.SparseIndex`) and ``multivector`` (Qdrant multivectors compared with MAX_SIM, as
:class:`~embedstack.index.MultiVectorIndex`; ``cosine`` or ``ip``).

Ids: a user id ``u`` is point ``uuid5(NAMESPACE, u)`` (deterministic, no id table to keep, safe with several
writers); the payload holds ``{"id": u, "text": ..., "metadata": ...}``. :attr:`QdrantIndex.ids` lists
ids in point-id order, not insertion order. Every search reads the ``id`` payload field of its hits
(on SciFact it halves Qdrant Edge's raw batch throughput; an in-memory id table would avoid it).

Pipelines: a QdrantIndex of any kind works in :class:`~embedstack.retrieval.Retriever`/``Pipeline`` as it
is (fusion, reranking: hits carry their text); ``Retriever`` reads :attr:`QdrantIndex.kind` to pick the
encoder method (``encode``, ``encode_sparse``, ``encode_tokens``).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._validation import check_choice, check_float, check_int, check_k
from embedstack.base import Hit
from embedstack.errors import ConfigError, IndexStateError, InputError
from embedstack.index._base import METRICS, as_matrix, check_id_strings, check_new_ids
from embedstack.index.store import check_identity, encoder_identity
from embedstack.registry import register
from embedstack.scale._qdrant_engines import MANIFEST, Client, Edge
from embedstack.scale._qdrant_engines import META_KEY as _META_KEY
from embedstack.scale._qdrant_engines import read_manifest as _read_manifest

__all__ = ["QdrantIndex", "ENGINES", "KINDS", "QUANTIZATIONS", "point_id"]

ENGINES = ("edge", "client")
KINDS = ("dense", "sparse", "multivector")
QUANTIZATIONS = ("none", "int8", "binary")
NAMESPACE = uuid.UUID("6f1c2a4e-5b3d-4e8f-9a7c-0d2e4b6a8c10")  # fixed forever: point ids must not change
_UPSERT_BATCH = 512


def point_id(doc_id: str) -> str:
    """The Qdrant point id (a UUID string) of the user id ``doc_id``."""
    return str(uuid.uuid5(NAMESPACE, doc_id))


def _as_csr(x: Any, dim: int, what: str) -> Any:
    from embedstack.index.sparse import as_csr

    return as_csr(x, dim, what)


# --------------------------------------------------------------------------- the index

@register("QdrantIndex", module="embedstack.scale.qdrant")
class QdrantIndex:
    """An embedstack index stored in Qdrant (Qdrant Edge in-process, or a Qdrant server through qdrant-client).

    Args:
        dim: vector dimensionality (for ``sparse``: the vocabulary size, columns of the sparse rows).
        kind: ``"dense"``, ``"sparse"`` or ``"multivector"``.
        metric: ``"cosine"``, ``"ip"`` or ``"l2"`` (dense); sparse is ``"ip"``; multivector ``"cosine"``/``"ip"``.
            Default: ``"ip"`` for sparse, ``"cosine"`` otherwise.
        engine: ``"edge"`` (a Qdrant Edge shard in the folder ``path``) or ``"client"`` (a QdrantClient).
        path: edge: the shard folder (new or empty). client: the local-mode storage folder (stand-in).
        url: client: a Qdrant server URL (with ``api_key`` if it needs one; the key is never saved).
        location: client: ``":memory:"`` for the in-memory local-mode stand-in.
        client: client: a ready :class:`qdrant_client.QdrantClient` (not closed by :meth:`close`).
        collection: client: the collection name.
        m: HNSW graph degree (``0`` disables the graph: full scans only, Qdrant's advice for multivectors
            used for reranking).
        ef_construct: HNSW candidate list while building.
        ef: HNSW candidate list while searching (``hnsw_ef``); raise it for recall.
        exact: search by full scan (exact) instead of HNSW.
        quantization: ``"none"``, ``"int8"`` (scalar) or ``"binary"`` (dense and multivector only).
        quantile: int8 calibration quantile (Qdrant default when None).
        rescore: rescore quantized candidates with the original vectors.
        oversampling: quantized candidates fetched per result before rescoring (Qdrant default when None).
        on_disk: keep original vectors memory-mapped on disk instead of in RAM.
        full_scan_threshold: segments with fewer vector KB than this are searched by full scan, even
            with a graph (Qdrant default 10000 KB: about 6,600 × 384-d vectors).
        indexing_threshold: segments grow to this many KB of vectors before a graph is built for them
            (None: Qdrant's default).
        segments: target number of segments (None: Qdrant's default, from the CPU count).
        threads: threads for graph building and search (0 = Qdrant's default, all cores).

    Example:
        >>> import numpy as np, tempfile
        >>> idx = QdrantIndex(4, path=tempfile.mkdtemp() + "/shard")
        >>> _ = idx.add(np.eye(4, dtype=np.float32), ["a", "b", "c", "d"], texts=["A", "B", "C", "D"])
        >>> [(h.id, h.text) for h in idx.search(np.array([[0.9, 0.1, 0, 0]], dtype=np.float32), k=2)[0]]
        [('a', 'A'), ('b', 'B')]
        >>> idx.close()
    """

    type_name = "QdrantIndex"

    def __init__(self, dim: int, *, kind: str = "dense", metric: str | None = None, engine: str = "edge",
                 path: str | os.PathLike[str] | None = None, url: str | None = None, location: str | None = None,
                 client: Any = None, collection: str = "embedstack", api_key: str | None = None, m: int = 16,
                 ef_construct: int = 128, ef: int = 64, exact: bool = False, quantization: str = "none",
                 quantile: float | None = None, rescore: bool = True, oversampling: float | None = None,
                 on_disk: bool = False, full_scan_threshold: int = 10_000, indexing_threshold: int | None = None,
                 segments: int | None = None, threads: int = 0) -> None:
        self._configure(dim=dim, kind=kind, metric=metric, m=m, ef_construct=ef_construct, ef=ef, exact=exact,
                        quantization=quantization, quantile=quantile, rescore=rescore, oversampling=oversampling,
                        on_disk=on_disk, full_scan_threshold=full_scan_threshold,
                        indexing_threshold=indexing_threshold, segments=segments, threads=threads)
        check_choice(self, "engine", engine, ENGINES)
        self._encoder: dict[str, Any] | None = None
        if engine == "edge":
            if path is None or url is not None or location is not None or client is not None:
                raise ConfigError("engine='edge' keeps its shard in a folder: pass path= (and no url/location/client; "
                                  "those are for engine='client').")
            self._engine: Any = Edge.create(Path(path), self)
        else:
            eng = Client.connect(url=url, location=location, path=path, api_key=api_key, client=client,
                                  collection=collection)
            eng.create(self)
            self._engine = eng
        self._write_meta()

    def _configure(self, *, dim: int, kind: str, metric: str | None, m: int, ef_construct: int, ef: int,
                   exact: bool, quantization: str, quantile: float | None, rescore: bool,
                   oversampling: float | None, on_disk: bool, full_scan_threshold: int,
                   indexing_threshold: int | None, segments: int | None, threads: int) -> None:
        self.kind = check_choice(self, "kind", kind, KINDS)
        self.dim = check_int(self, "dim", dim, low=1)
        self.metric = check_choice(self, "metric", metric or ("ip" if kind == "sparse" else "cosine"), METRICS)
        if kind == "sparse" and self.metric != "ip":
            raise ConfigError("Sparse vectors are scored by dot product in Qdrant: use metric='ip' with kind='sparse'.")
        if kind == "multivector" and self.metric == "l2":
            raise ConfigError("MaxSim sums dot products: use metric='cosine' or 'ip' with kind='multivector'.")
        self.m = check_int(self, "m", m, low=0)
        self.ef_construct = check_int(self, "ef_construct", ef_construct, low=4)
        self.ef = check_int(self, "ef", ef, low=1)
        self.exact = bool(exact)
        self.quantization = check_choice(self, "quantization", quantization, QUANTIZATIONS)
        if kind == "sparse" and quantization != "none":
            raise ConfigError("Qdrant quantizes dense vectors only: use quantization='none' with kind='sparse'.")
        self.quantile = None if quantile is None else check_float(self, "quantile", quantile, low=0.5, high=1.0)
        self.rescore = bool(rescore)
        self.oversampling = None if oversampling is None else check_float(self, "oversampling", oversampling, low=1.0)
        self.on_disk = bool(on_disk)
        self.full_scan_threshold = check_int(self, "full_scan_threshold", full_scan_threshold, low=0)
        self.indexing_threshold = check_int(self, "indexing_threshold", indexing_threshold, low=0, allow_none=True)
        self.segments = check_int(self, "segments", segments, low=1, allow_none=True)
        self.threads = check_int(self, "threads", threads, low=0)
        self._count: int | None = None
        self._dirty = False
        self._lock = threading.Lock()  # concurrent first readers optimize once

    def get_config(self) -> dict[str, Any]:
        return {"dim": self.dim, "kind": self.kind, "metric": self.metric, "m": self.m,
                "ef_construct": self.ef_construct, "ef": self.ef, "exact": self.exact,
                "quantization": self.quantization, "quantile": self.quantile, "rescore": self.rescore,
                "oversampling": self.oversampling, "on_disk": self.on_disk,
                "full_scan_threshold": self.full_scan_threshold, "indexing_threshold": self.indexing_threshold,
                "segments": self.segments, "threads": self.threads}

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, encoder: Any = None, url: str | None = None,
             location: str | None = None, client: Any = None, collection: str = "embedstack",
             api_key: str | None = None, engine: str | None = None, ef: int | None = None,
             exact: bool | None = None, rescore: bool | None = None, oversampling: float | None = None) -> QdrantIndex:
        """Open an existing shard folder (edge) or collection (client) written by QdrantIndex.

        Args:
            path: the shard folder (edge), or the local-mode folder (client with ``engine="client"``).
            encoder: the encoder (or its identity dict) that will encode queries; checked against the
                recorded one.
            url, location, client, collection, api_key: the collection, as in :class:`QdrantIndex`.
            engine: ``"edge"`` or ``"client"`` (default: client when url/location/client is given).
            ef, exact, rescore, oversampling: search settings overriding the recorded ones.

        Raises:
            ModelMismatch: ``encoder`` is not the encoder recorded for this index.
            IndexStateError: nothing there, or a shard/collection not written by QdrantIndex.
        """
        engine = engine or ("client" if (url or location or client is not None) else "edge")
        check_choice(cls, "engine", engine, ENGINES)
        eng: Any
        if engine == "edge":
            if path is None:
                raise ConfigError("QdrantIndex.open needs the shard folder: pass path= (or url=/client= for a server).")
            folder = Path(path)
            meta = _read_manifest(folder) if folder.is_dir() else None
            if meta is None:
                raise IndexStateError(f"{folder} holds no QdrantIndex (no {MANIFEST}); create one with "
                                      f"QdrantIndex(dim, path={str(folder)!r}).")
            eng = Edge.load(folder)
        else:
            eng = Client.connect(url=url, location=location, path=path, api_key=api_key, client=client,
                                  collection=collection)
            if not eng.exists():
                eng.close()
                raise IndexStateError(f"collection {collection!r} does not exist; create it with QdrantIndex(dim, "
                                      "engine='client', ...) or QdrantIndex.from_index(...).")
            meta = eng.read_meta()
            if meta is None:
                eng.close()
                raise IndexStateError(f"collection {collection!r} was not written by embedstack (no {_META_KEY!r} "
                                      "metadata); write it with QdrantIndex or QdrantIndex.from_index.")
        obj = cls.__new__(cls)
        config = dict(meta["config"])
        overrides = {"ef": ef, "exact": exact, "rescore": rescore, "oversampling": oversampling}
        config.update({k: v for k, v in overrides.items() if v is not None})
        try:
            obj._configure(**config)
        except Exception:
            eng.close()
            raise
        obj._engine = eng
        obj._encoder = meta.get("encoder")
        if encoder is not None:
            try:
                obj.check_encoder(encoder)
            except Exception:
                obj.close()
                raise
        return obj

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = True, verify: bool | None = None,
             encoder: Any = None) -> QdrantIndex:
        """Open a shard folder (as :meth:`open`); lets :func:`embedstack.index.load_index` open it.

        ``mmap`` and ``verify`` are accepted for ``load_index``: Qdrant memory-maps its segments itself
        and its files change with every write, so the manifest lists no checksums to verify.
        """
        return cls.open(path, encoder=encoder)

    @classmethod
    def from_index(cls, index: Any, path_or_client: str | os.PathLike[str] | Any, *, batch_size: int = 1024,
                   collection: str = "embedstack", **options: Any) -> QdrantIndex:
        """Copy an embedstack index (vectors, ids, texts and metadata as payload, encoder identity) into Qdrant.

        Args:
            index: a FlatIndex (float32 or fp16), HNSWIndex (f32/f16/bf16), SparseIndex or MultiVectorIndex
                (fp32/fp16), e.g. from :func:`embedstack.index.load_index`. Quantized sources (int8 / binary
                FlatIndex, i8 HNSW, residual multivector) are refused: their stored codes are not the
                original vectors; add those vectors with :meth:`add` and let Qdrant quantize
                (``quantization="int8"``).
            path_or_client: a folder for a new Edge shard, or a QdrantClient for a collection.
            batch_size: documents per upsert.
            collection: the collection name (client).
            **options: QdrantIndex options (HNSW settings default to an HNSWIndex source's M / ef).
        """
        from embedstack.index import FlatIndex, HNSWIndex, MultiVectorIndex, SparseIndex

        check_int(cls, "batch_size", batch_size, low=1)
        live = np.flatnonzero(~np.asarray(index._dead, dtype=bool)) if hasattr(index, "_dead") else None
        if isinstance(index, FlatIndex):
            if index.quantization not in ("none", "fp16"):
                raise ConfigError(f"from_index: this FlatIndex stores {index.quantization} codes, not vectors; copying "
                                  "them would change every score. Add the original vectors with QdrantIndex.add and "
                                  "pass quantization='int8' or 'binary' to let Qdrant quantize.")
            index._materialize()
            vec = index._vec
            assert vec is not None
            kind = "dense"

            def rows(sel: np.ndarray) -> Any:
                return np.asarray(vec[sel], dtype=np.float32)
        elif isinstance(index, HNSWIndex):
            if index.dtype == "i8":
                raise ConfigError("from_index: this HNSWIndex stores int8 codes (dtype='i8'), not vectors; add the "
                                  "original vectors with QdrantIndex.add (quantization='int8' lets Qdrant quantize).")
            kind = "dense"
            graph = index._index
            options = {"m": index.M, "ef_construct": max(4, index.ef_construction), "ef": index.ef, **options}

            def rows(sel: np.ndarray) -> Any:
                if index.backend == "faiss":  # faiss rows are numbered like our internal ids
                    return np.asarray(graph.reconstruct_batch(sel.astype(np.int64)), dtype=np.float32)
                got = graph.get(sel.astype(np.uint64), dtype=np.float32)
                return np.asarray(got, dtype=np.float32).reshape(len(sel), index.dim)
        elif isinstance(index, SparseIndex):
            kind = "sparse"
            docs = index._materialize().T.tocsr()

            def rows(sel: np.ndarray) -> Any:
                return docs[sel]
        elif isinstance(index, MultiVectorIndex):
            if index.storage == "residual":
                raise ConfigError("from_index: this MultiVectorIndex stores compressed residuals (storage='residual'), "
                                  "not token vectors; re-encode with storage='fp32' or add the token matrices with "
                                  "QdrantIndex.add.")
            index._materialize()
            tokens, offsets = index._tokens, index._offsets
            kind = "multivector"

            def rows(sel: np.ndarray) -> Any:
                return [np.asarray(tokens[offsets[i]:offsets[i + 1]], dtype=np.float32) for i in sel]
        else:
            raise ConfigError(f"from_index copies a FlatIndex, HNSWIndex, SparseIndex or MultiVectorIndex; got "
                              f"{type(index).__name__}.")
        if isinstance(path_or_client, (str, os.PathLike)):
            where: dict[str, Any] = {"engine": "edge", "path": path_or_client}
        else:
            where = {"engine": "client", "client": path_or_client, "collection": collection}
        out = cls(index.dim, kind=kind, metric=index.metric, **where, **options)
        sel_all = live if live is not None else np.arange(len(index._ids))
        ids = index._ids
        content = bool(getattr(index, "_has_content", True))
        try:
            for s in range(0, len(sel_all), batch_size):
                sel = sel_all[s:s + batch_size]
                texts = metas = None
                if content:
                    got = index.docs.fetch(sel.tolist())
                    texts = [got.get(int(i), (None, None))[0] for i in sel]
                    metas = [got.get(int(i), (None, None))[1] for i in sel]
                out.add(rows(sel), [ids[i] for i in sel], texts=texts, metadata=metas)
            out.encoder = index.encoder
        except Exception:
            out.close()
            raise
        return out

    # ------------------------------------------------------------------ validation
    def _live(self) -> Any:
        if self._engine is None:
            raise IndexStateError("this QdrantIndex is closed; open it again with QdrantIndex.open(...).")
        return self._engine

    def _validate(self, vectors: Any, what: str) -> tuple[int, list[Any]]:
        """Rows in the engine's vector format (dense rows, (indices, values) pairs, token matrices)."""
        if self.kind == "dense":
            arr = as_matrix(vectors, self.dim, what)
            return arr.shape[0], list(arr)
        if self.kind == "sparse":
            csr = _as_csr(vectors, self.dim, what)
            ptr = csr.indptr
            return csr.shape[0], [(csr.indices[ptr[i]:ptr[i + 1]].astype(np.uint32),
                                   csr.data[ptr[i]:ptr[i + 1]].astype(np.float32)) for i in range(csr.shape[0])]
        from embedstack.index.multivector import as_token_matrices

        out = [np.ascontiguousarray(a) for a in as_token_matrices(vectors, self.dim, what)]
        return len(out), out


    # ------------------------------------------------------------------ public API
    def add(self, vectors: Any, ids: Sequence[str], *, texts: Sequence[str | None] | None = None,
            metadata: Sequence[Mapping[str, Any] | None] | None = None) -> QdrantIndex:
        """Add documents with user ``ids`` and optional ``texts``/``metadata`` (stored as payload); return self.

        Raises:
            DimensionMismatch: the vectors do not have the index's dimensionality.
            InputError: NaN/inf values, lengths that disagree, metadata that is not a JSON object.
            IndexStateError: an id is already in the index or repeated in ``ids``.
        """
        eng = self._live()
        n, rows = self._validate(vectors, "vectors")
        ids = check_new_ids(n, ids, texts, metadata)
        pids = [point_id(i) for i in ids]
        clash: list[str] = []
        for s in range(0, n, 4096):
            found = eng.retrieve(pids[s:s + 4096], False)
            clash += [ids[j] for j in range(s, min(n, s + 4096)) if pids[j] in found]
        if clash:
            raise IndexStateError(
                f"id {clash[0]!r} is already in the index ({len(clash)} duplicates); remove it first to replace it.")
        payloads: list[dict[str, Any]] = []
        for j, doc_id in enumerate(ids):
            pl: dict[str, Any] = {"id": doc_id}
            if texts is not None and texts[j] is not None:
                pl["text"] = str(texts[j])
            if metadata is not None and metadata[j] is not None:
                if not isinstance(metadata[j], Mapping):
                    raise InputError(f"metadata[{j}] must be a mapping (a JSON object) or None; got "
                                     f"{type(metadata[j]).__name__}.")
                pl["metadata"] = dict(metadata[j])  # type: ignore[arg-type]
            payloads.append(pl)
        name = self._vector_name
        for s in range(0, n, _UPSERT_BATCH):
            part = slice(s, s + _UPSERT_BATCH)
            try:
                eng.upsert(pids[part], [eng.vector(self.kind, v) for v in rows[part]], payloads[part], name)
            except (TypeError, ValueError) as exc:
                raise InputError(f"Qdrant refused the payload of documents {s}..{s + _UPSERT_BATCH}: {exc}; texts must "
                                 "be strings and metadata JSON-serialisable.") from None
            finally:
                self._count = None
                self._dirty = True
        return self

    @property
    def _vector_name(self) -> str:
        return "sparse" if self.kind == "sparse" else self.kind

    def remove(self, ids: Sequence[str]) -> int:
        """Delete documents by id (Qdrant deletes them; segments are vacuumed by :meth:`optimize`); return how many.

        Raises:
            IndexStateError: an id is not in the index (nothing is removed).
        """
        eng = self._live()
        ids = [ids] if isinstance(ids, str) else check_id_strings(ids)
        unique = list(dict.fromkeys(ids))
        pids = [point_id(i) for i in unique]
        found = eng.retrieve(pids, False) if pids else {}
        missing = [u for u, p in zip(unique, pids, strict=True) if p not in found]
        if missing:
            raise IndexStateError(f"id {missing[0]!r} is not in the index ({len(missing)} unknown ids); nothing removed.")
        if pids:
            eng.delete(pids)
            self._count = None
            self._dirty = True
        return len(unique)

    def __len__(self) -> int:
        if self._count is None:
            self._count = self._live().count()
        return self._count

    def __contains__(self, doc_id: object) -> bool:
        if not isinstance(doc_id, str):
            return False
        p = point_id(doc_id)
        return p in self._live().retrieve([p], False)

    @property
    def ids(self) -> list[str]:
        """Live user ids, in Qdrant's point-id order (not insertion order)."""
        return list(self._live().scroll_ids())

    def get(self, doc_id: str) -> Hit:
        """The stored text/metadata of one document (score 0)."""
        p = point_id(doc_id) if isinstance(doc_id, str) else ""
        payload = self._live().retrieve([p], True).get(p) if p else None
        if payload is None:
            raise IndexStateError(f"id {doc_id!r} is not in the index.")
        return Hit(doc_id, 0.0, {}, payload.get("text"), payload.get("metadata"))

    def optimize(self) -> QdrantIndex:
        """Run Qdrant's optimizers now (edge: build HNSW graphs and quantized codes, vacuum deletes); return self."""
        self._live().optimize()
        self._dirty = False
        return self

    def set_ef(self, ef: int) -> QdrantIndex:
        """Change the search-time HNSW candidate list size; return self."""
        self.ef = check_int(self, "ef", ef, low=1)
        return self

    def _query(self, queries: Any, k: int, payload: Any, ef: int | None,
               exact: bool | None, where: Mapping[str, Any] | None = None) -> tuple[int, int, list[list[Any]]]:
        eng = self._live()
        k = check_k(k)
        where = _check_where(where)
        nq, rows = self._validate(queries, "queries")
        n = len(self)
        if n == 0 or nq == 0:
            return nq, 0, [[] for _ in range(nq)]
        if self._dirty and eng.name == "edge":
            with self._lock:
                if self._dirty:
                    self.optimize()  # the first reader builds the graph (Edge has no background optimizer)
        opts = {"ef": max(check_int(self, "ef", ef, low=1) if ef is not None else self.ef, min(k, n)),
                "exact": self.exact if exact is None else bool(exact), "quantization": self.quantization,
                "rescore": self.rescore, "oversampling": self.oversampling}
        width = min(k, n)
        res = eng.query([eng.vector(self.kind, v) for v in rows], width, self._vector_name, opts, payload, where)
        if self.metric == "l2":  # Qdrant returns Euclidean distances; embedstack scores are larger-is-better
            res = [[(-s, pl) for s, pl in row] for row in res]
        return nq, width, res

    def search(self, queries: Any, k: int = 10, *, with_text: bool = True, ef: int | None = None,
               exact: bool | None = None, where: Mapping[str, Any] | None = None) -> list[list[Hit]]:
        """Top-``k`` documents for each query, best first: one list of :class:`Hit` per query.

        Args:
            queries: dense (nq, dim) rows, sparse rows (scipy or dense (nq, vocab)), or a list of token
                matrices, by kind.
            k: hits per query.
            with_text: attach the stored text and metadata to each hit.
            ef: HNSW ``hnsw_ef`` for this call (default :attr:`ef`).
            exact: full-scan exact search for this call (default :attr:`exact`).
            where: only documents whose metadata matches: ``{"field": value}`` (equal) or ``{"field": [a, b]}``
                (any of); several fields must all match. Qdrant applies it inside the search (filtered HNSW),
                so ``k`` hits come back whenever ``k`` documents match.
        """
        _, _, res = self._query(queries, k, True if with_text else ["id"], ef, exact, where)
        if with_text:
            return [[Hit(pl.get("id", ""), float(s), {}, pl.get("text"), pl.get("metadata")) for s, pl in row]
                    for row in res]
        return [[Hit(pl.get("id", ""), float(s)) for s, pl in row] for row in res]

    def search_ids(self, queries: Any, k: int = 10, *, ef: int | None = None,
                   exact: bool | None = None, where: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``(nq, k')`` float32 and user ids ``(nq, k')`` (object array; ``""``/``-inf`` pad short rows),
        with ``k' = min(k, len(self))`` as in embedstack indexes; ``where`` as in :meth:`search`."""
        nq, width, res = self._query(queries, k, ["id"], ef, exact, where)
        scores = np.full((nq, width), -np.inf, dtype=np.float32)
        ids = np.full((nq, width), "", dtype=object)
        for r, row in enumerate(res):
            for c, (s, pl) in enumerate(row[:width]):
                scores[r, c] = s
                ids[r, c] = pl.get("id", "")
        return scores, ids

    # ------------------------------------------------------------------ encoder identity
    @property
    def encoder(self) -> dict[str, Any] | None:
        """Identity of the encoder that built the index (:func:`embedstack.index.encoder_identity`); recorded
        in the manifest (edge) or the collection metadata (client) when assigned."""
        return self._encoder

    @encoder.setter
    def encoder(self, identity: Mapping[str, Any] | None) -> None:
        self._encoder = dict(identity) if identity else None
        self._write_meta()

    def check_encoder(self, identity: Any) -> None:
        """Raise ModelMismatch if ``identity`` (a dict, or an encoder) is not the encoder recorded for this index."""
        if identity is not None and not isinstance(identity, Mapping):
            identity = encoder_identity(identity, (self._encoder or {}).get("spec"))
        check_identity(self._encoder, identity)

    # ------------------------------------------------------------------ sizes and persistence
    def nbytes(self) -> int:
        """Bytes the index stores. Edge: allocated on disk by its segments (vectors, graph, codes, payload, id
        tracker). Client: raw float32 vector bytes only (a server reports no sizes)."""
        eng = self._live()
        if eng.name == "edge":
            return int(eng.sizes()["segments"])
        return self._raw_bytes()

    def memory_bytes(self) -> int:
        """Bytes of the searchable representation. Edge: vector storage, HNSW links and quantized codes on
        disk (what Qdrant memory-maps to search). Client: raw float32 vector bytes."""
        eng = self._live()
        if eng.name == "edge":
            return int(eng.sizes()["search"])
        return self._raw_bytes()

    def disk_bytes(self) -> int:
        """Edge: every byte the shard folder holds on disk, write-ahead log included (client: :meth:`nbytes`)."""
        eng = self._live()
        return int(eng.sizes()["total"]) if eng.name == "edge" else self._raw_bytes()

    def _raw_bytes(self) -> int:
        if self.kind == "dense":
            return len(self) * self.dim * 4
        eng = self._live()
        total, offset = 0, None
        while True:  # sparse / multivector sizes are only known by reading the vectors
            recs, offset = eng.client.scroll(eng.collection, limit=1024, offset=offset, with_payload=False,
                                             with_vectors=True)
            for r in recs:
                v: Any = (r.vector or {}).get(self._vector_name)
                if v is not None:
                    total += 8 * len(v.indices) if self.kind == "sparse" else 4 * self.dim * len(v)
            if offset is None:
                return total

    def _manifest(self) -> dict[str, Any]:
        from embedstack import __version__
        from embedstack.io import FORMAT_VERSION

        return {"type": self.type_name, "format_version": FORMAT_VERSION, "embedstack_version": __version__,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "config": self.get_config(),
                "kind": self.kind, "metric": self.metric, "dims": self.dim, "quantization": self.quantization,
                "engine": self._engine.name, "encoder": self._encoder, "count": len(self),
                "files": {}}  # Qdrant rewrites its files on every update: nothing to checksum

    def _write_meta(self) -> None:
        self._live().write_meta(self._manifest())

    def save(self, path: str | os.PathLike[str] | None = None, *, force: bool = False) -> Path | None:
        """Make the index durable: optimize, flush, record the manifest; return the folder (edge).

        Edge: with ``path`` None or the shard's own folder the shard is saved in place; another ``path``
        receives an atomic copy (the open shard keeps working on its folder). Client: the collection
        lives on its server; only ``path=None`` is meaningful (it records the manifest in the
        collection metadata).

        Raises:
            ConfigError: ``path`` given for a client collection.
            OutputExistsError: ``path`` holds something else than an index (without ``force``).
        """
        eng = self._live()
        if self._dirty:
            self.optimize()
        eng.flush()
        self._write_meta()
        if eng.name == "client":
            if path is not None:
                raise ConfigError("a client collection lives on its Qdrant server; call save() without a path and "
                                  "reopen it with QdrantIndex.open(url=..., collection=...).")
            return None
        if path is None or Path(path).resolve() == eng.path.resolve():
            return Path(eng.path)
        import shutil

        from embedstack.index.store import INDEX_KIND
        from embedstack.io import atomic_dir

        with atomic_dir(Path(path), kind=INDEX_KIND, force=force) as tmp:
            shutil.copytree(eng.path, tmp, dirs_exist_ok=True)
        return Path(path)

    def close(self) -> None:
        """Flush, record the manifest and release the shard / client (searching afterwards raises)."""
        if getattr(self, "_engine", None) is None:
            return
        try:
            self._engine.flush()
            self._write_meta()
        finally:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> QdrantIndex:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        eng = getattr(self, "_engine", None)
        where = "closed" if eng is None else (str(eng.path) if eng.name == "edge" else eng.collection)
        return (f"QdrantIndex(dim={self.dim}, kind={self.kind!r}, metric={self.metric!r}, "
                f"engine={eng.name if eng else None!r}, at={where!r})")


def _check_where(where: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A metadata filter: field names → a str/int/bool value or a non-empty list of them."""
    if not where:
        return None
    if not isinstance(where, Mapping):
        raise ConfigError(f"where must be a mapping of metadata fields to values, e.g. {{'lang': 'en'}}; got "
                          f"{type(where).__name__}.", param=("where", "where"))
    out: dict[str, Any] = {}
    for key, value in where.items():
        values = value if isinstance(value, list) else [value]
        if not isinstance(key, str) or not key or not values or not all(
                isinstance(v, str | int | bool) for v in values):
            raise ConfigError(f"where[{key!r}] must be a str, int or bool, or a non-empty list of them; got {value!r}.",
                              param=("where", "where"))
        if isinstance(value, list) and any(isinstance(v, bool) for v in values):
            raise ConfigError(f"where[{key!r}]: a list matches str or int values, not booleans; give one bool.",
                              param=("where", "where"))
        if isinstance(value, list) and len({type(v) for v in values}) > 1:
            raise ConfigError(f"where[{key!r}]: a list must hold values of one type (all str or all int); got {value!r}.",
                              param=("where", "where"))
        out[key] = value
    return out
