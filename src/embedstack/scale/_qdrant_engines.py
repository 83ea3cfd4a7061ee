"""The two engines behind :class:`embedstack.scale.QdrantIndex`: Qdrant Edge in-process, and a qdrant-client collection.

Each adapter turns the index's calls (create, upsert, delete, retrieve, query, optimize, metadata) into
its engine's API; :mod:`embedstack.scale.qdrant` holds everything they share.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedstack._extras import require
from embedstack.errors import ConfigError, IndexStateError

if TYPE_CHECKING:
    from embedstack.scale.qdrant import QdrantIndex

__all__ = ["Edge", "Client", "read_manifest", "MANIFEST", "META_KEY"]

MANIFEST = "manifest.json"
META_KEY = "embedstack"


_SCROLL_PAGE = 4096


def _scroll_ids(page: Any) -> Iterator[str]:
    """Every point's user id, a page at a time: ``page(offset) -> (records, next offset or None)``."""
    offset = None
    while True:
        recs, offset = page(offset)
        yield from ((r.payload or {}).get("id", "") for r in recs)
        if offset is None:
            return


class Edge:
    """One Qdrant Edge shard in a folder (the real engine, in-process)."""

    name = "edge"

    def __init__(self, path: Path, shard: Any) -> None:
        self.q = require("qdrant_edge", "scale", "QdrantIndex(engine='edge')")
        self.path, self.shard, self.local = path, shard, False

    @classmethod
    def create(cls, path: Path, idx: QdrantIndex) -> Edge:
        q = require("qdrant_edge", "scale", "QdrantIndex(engine='edge')")
        if (path / "edge_config.json").exists() or (path / "segments").exists():
            raise IndexStateError(f"{path} already holds a Qdrant Edge shard; open it with QdrantIndex.open({str(path)!r}) "
                                  "or choose an empty folder.")
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            raise IndexStateError(f"{path} exists and is not an empty folder; choose a new folder for the shard.")
        hnsw = q.HnswIndexConfig(m=idx.m, ef_construct=idx.ef_construct, full_scan_threshold=idx.full_scan_threshold,
                                 max_indexing_threads=idx.threads)
        quant = None
        if idx.quantization == "int8":
            quant = q.ScalarQuantizationConfig(type=q.ScalarType.Int8, quantile=idx.quantile)
        elif idx.quantization == "binary":
            quant = q.BinaryQuantizationConfig()
        dist = {"cosine": q.Distance.Cosine, "ip": q.Distance.Dot, "l2": q.Distance.Euclid}[idx.metric]
        vectors: dict[str, Any] = {}
        sparse: dict[str, Any] | None = None
        if idx.kind == "sparse":
            sparse = {"sparse": q.EdgeSparseVectorParams()}
        else:
            multi = q.MultiVectorConfig(q.MultiVectorComparator.MaxSim) if idx.kind == "multivector" else None
            vectors[idx.kind] = q.EdgeVectorParams(size=idx.dim, distance=dist, multivector_config=multi,
                                                   on_disk=idx.on_disk or None)
        opt = q.EdgeOptimizersConfig(indexing_threshold=idx.indexing_threshold, default_segment_number=idx.segments)
        config = q.EdgeConfig(vectors=vectors, sparse_vectors=sparse, hnsw_config=hnsw, quantization_config=quant,
                              optimizers=opt, max_search_threads=idx.threads or None)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path, q.EdgeShard.create(str(path), config))

    @classmethod
    def load(cls, path: Path) -> Edge:
        q = require("qdrant_edge", "scale", "QdrantIndex(engine='edge')")
        try:
            return cls(path, q.EdgeShard.load(str(path)))
        except Exception as exc:  # qdrant_edge raises plain Exception
            if "WouldBlock" in str(exc):
                raise IndexStateError(f"the Qdrant Edge shard in {path} is open elsewhere (its write-ahead log is "
                                      "locked); close the other QdrantIndex on it first.") from None
            raise IndexStateError(f"cannot open the Qdrant Edge shard in {path}: {exc}") from None

    def vector(self, kind: str, v: Any) -> Any:
        if kind == "sparse":
            return self.q.SparseVector(v[0].tolist(), v[1].tolist())
        return v  # numpy rows / token matrices go in as they are

    def upsert(self, pids: list[str], vectors: list[Any], payloads: list[dict[str, Any]], name: str) -> None:
        q = self.q
        pts = [q.Point(p, {name: v}, pl) for p, v, pl in zip(pids, vectors, payloads, strict=True)]
        self.shard.update(q.UpdateOperation.upsert_points(pts))

    def delete(self, pids: list[str]) -> None:
        self.shard.update(self.q.UpdateOperation.delete_points(pids))

    def retrieve(self, pids: list[str], payload: bool) -> dict[str, dict[str, Any]]:
        recs = self.shard.retrieve(pids, payload, False)
        return {str(r.id): (r.payload or {}) for r in recs}

    def count(self) -> int:
        return int(self.shard.count(self.q.CountRequest(exact=True)))

    def scroll_ids(self) -> Iterator[str]:
        return _scroll_ids(lambda offset: self.shard.scroll(
            self.q.ScrollRequest(offset=offset, limit=_SCROLL_PAGE, with_payload=["id"])))

    def query(self, vectors: list[Any], k: int, name: str, opts: dict[str, Any], payload: Any,
              where: Mapping[str, Any] | None = None) -> list[list[Any]]:
        q = self.q
        flt = None
        if where:
            flt = q.Filter(must=[q.FieldCondition(key=f"metadata.{key}", match=q.MatchAny(list(v)) if isinstance(v, list)
                                                  else q.MatchValue(v)) for key, v in where.items()])
        quant = None
        if opts["quantization"] != "none":
            quant = q.QuantizationSearchParams(rescore=opts["rescore"], oversampling=opts["oversampling"])
        params = q.SearchParams(hnsw_ef=opts["ef"], exact=opts["exact"], quantization=quant)
        reqs = [q.QueryRequest(limit=k, query=q.Query.Nearest(v, using=name), with_payload=payload, params=params,
                               filter=flt)
                for v in vectors]
        if len(reqs) == 1:
            return [[(p.score, p.payload or {}) for p in self.shard.query(reqs[0])]]
        return [[(p.score, p.payload or {}) for p in row] for row in self.shard.query_batch(q.QueryBatchRequest(reqs))]

    def optimize(self) -> None:
        self.shard.optimize()

    def flush(self) -> None:
        self.shard.flush()

    def close(self) -> None:
        self.shard.flush()
        self.shard.close()

    def read_meta(self) -> dict[str, Any] | None:
        return read_manifest(self.path)

    def write_meta(self, meta: dict[str, Any]) -> None:
        from embedstack.io import atomic_write_text

        atomic_write_text(self.path / MANIFEST, json.dumps(meta, indent=2, sort_keys=True))

    def sizes(self) -> dict[str, int]:
        """Bytes allocated on disk: ``segments``, ``search`` (vectors, graph, codes) and ``total`` (with the WAL)."""
        out = {"segments": 0, "search": 0, "total": 0}
        for dirpath, _, names in os.walk(self.path):
            rel = Path(dirpath).relative_to(self.path).parts
            for name in names:
                st = os.stat(os.path.join(dirpath, name))
                used = min(st.st_size, st.st_blocks * 512)
                out["total"] += used
                if rel[:1] == ("segments",):
                    out["segments"] += used
                    if any(p.startswith(("vector_storage", "vector_index", "sparse")) or "quantiz" in p for p in rel[2:3]):
                        out["search"] += used
        return out


class Client:
    """A collection behind a :class:`qdrant_client.QdrantClient` (a server, or the local-mode stand-in)."""

    name = "client"

    def __init__(self, client: Any, collection: str, owned: bool) -> None:
        self.m = require("qdrant_client.models", "scale", "QdrantIndex(engine='client')")
        self.client, self.collection, self.owned = client, collection, owned
        self.local = type(getattr(client, "_client", None)).__name__ == "QdrantLocal"

    @classmethod
    def connect(cls, *, url: str | None, location: str | None, path: str | os.PathLike[str] | None, api_key: str | None,
                client: Any, collection: str) -> Client:
        qc = require("qdrant_client", "scale", "QdrantIndex(engine='client')")
        given = [name for name, v in (("url", url), ("location", location), ("path", path), ("client", client))
                 if v is not None]
        if len(given) != 1:
            raise ConfigError("engine='client' needs exactly one of url= (a Qdrant server), location=':memory:' or "
                              f"path= (the local-mode stand-in) or client= (a QdrantClient); got {given or 'none'}.")
        if client is not None:
            return cls(client, collection, owned=False)
        if path is not None:
            return cls(qc.QdrantClient(path=os.fspath(path)), collection, owned=True)
        return cls(qc.QdrantClient(url=url, location=location, api_key=api_key), collection, owned=True)

    def exists(self) -> bool:
        return bool(self.client.collection_exists(self.collection))

    def create(self, idx: QdrantIndex) -> None:
        m = self.m
        if self.exists():
            raise IndexStateError(f"collection {self.collection!r} already exists; open it with QdrantIndex.open(..., "
                                  f"collection={self.collection!r}) or choose another collection name.")
        dist = {"cosine": m.Distance.COSINE, "ip": m.Distance.DOT, "l2": m.Distance.EUCLID}[idx.metric]
        quant: Any = None
        if idx.quantization == "int8":
            quant = m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, quantile=idx.quantile))
        elif idx.quantization == "binary":
            quant = m.BinaryQuantization(binary=m.BinaryQuantizationConfig())
        vectors: dict[str, Any] = {}
        sparse = None
        if idx.kind == "sparse":
            sparse = {"sparse": m.SparseVectorParams()}
        else:
            multi = (m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM)
                     if idx.kind == "multivector" else None)
            vectors[idx.kind] = m.VectorParams(size=idx.dim, distance=dist, multivector_config=multi,
                                               on_disk=idx.on_disk or None)
        self.client.create_collection(
            self.collection, vectors_config=vectors, sparse_vectors_config=sparse,
            hnsw_config=m.HnswConfigDiff(m=idx.m, ef_construct=idx.ef_construct,
                                         full_scan_threshold=idx.full_scan_threshold,
                                         max_indexing_threads=idx.threads),
            optimizers_config=m.OptimizersConfigDiff(indexing_threshold=idx.indexing_threshold,
                                                     default_segment_number=idx.segments),
            quantization_config=quant)

    def vector(self, kind: str, v: Any) -> Any:
        if kind == "sparse":
            return self.m.SparseVector(indices=v[0].tolist(), values=v[1].tolist())
        return v.tolist()

    def upsert(self, pids: list[str], vectors: list[Any], payloads: list[dict[str, Any]], name: str) -> None:
        pts = [self.m.PointStruct(id=p, vector={name: v}, payload=pl)
               for p, v, pl in zip(pids, vectors, payloads, strict=True)]
        self.client.upsert(self.collection, pts, wait=True)

    def delete(self, pids: list[str]) -> None:
        self.client.delete(self.collection, self.m.PointIdsList(points=pids), wait=True)

    def retrieve(self, pids: list[str], payload: bool) -> dict[str, dict[str, Any]]:
        recs = self.client.retrieve(self.collection, pids, with_payload=payload, with_vectors=False)
        return {str(r.id): (r.payload or {}) for r in recs}

    def count(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def scroll_ids(self) -> Iterator[str]:
        return _scroll_ids(lambda offset: self.client.scroll(
            self.collection, limit=_SCROLL_PAGE, offset=offset, with_payload=["id"]))

    def query(self, vectors: list[Any], k: int, name: str, opts: dict[str, Any], payload: Any,
              where: Mapping[str, Any] | None = None) -> list[list[Any]]:
        m = self.m
        flt = None
        if where:
            flt = m.Filter(must=[m.FieldCondition(key=f"metadata.{key}", match=m.MatchAny(any=list(v)) if isinstance(v, list)
                                                  else m.MatchValue(value=v)) for key, v in where.items()])
        params = None
        if not self.local:  # local mode is exact and warns about every search parameter
            quant = (m.QuantizationSearchParams(rescore=opts["rescore"], oversampling=opts["oversampling"])
                     if opts["quantization"] != "none" else None)
            params = m.SearchParams(hnsw_ef=opts["ef"], exact=opts["exact"], quantization=quant)
        reqs = [m.QueryRequest(query=v, using=name, limit=k, with_payload=payload, params=params, filter=flt)
                for v in vectors]
        res = self.client.query_batch_points(self.collection, reqs)
        return [[(p.score, p.payload or {}) for p in r.points] for r in res]

    def optimize(self) -> None:
        """A server optimizes in the background; nothing to do."""

    def flush(self) -> None:
        """Writes are acknowledged durable (``wait=True``)."""

    def close(self) -> None:
        if self.owned:
            self.client.close()

    def read_meta(self) -> dict[str, Any] | None:
        meta = self.client.get_collection(self.collection).config.metadata or {}
        found = meta.get(META_KEY)
        return dict(found) if isinstance(found, Mapping) else None

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.client.update_collection(self.collection, metadata={META_KEY: meta})


def read_manifest(folder: Path) -> dict[str, Any] | None:
    from embedstack.io import read_manifest

    if not (folder / MANIFEST).is_file():
        return None
    return read_manifest(folder, expected_type="QdrantIndex")
