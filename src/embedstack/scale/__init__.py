"""Scale-out (the ``scale`` extra): batch encoding on a Ray cluster and a real vector database as a backend.

- :func:`encode_ray` encodes a corpus (JSONL, Parquet or text files, or a Ray Data dataset) with a pool of
  encoder actors on a Ray cluster and writes ``.npy``/Parquet shards with ids; :func:`index_from_shards`
  builds one embedstack index from them. Every input row appears exactly once in the output, also when a
  worker node dies mid-job (Ray re-runs the lost work; the writer keeps the first copy of a row).
- :class:`QdrantIndex` stores an embedstack index (dense, sparse, multi-vector; ids and payload) in Qdrant
  and searches through it with the same interface, so fusion and reranking stages work on top.

Nothing here is imported by ``import embedstack``; Ray and Qdrant are imported on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["encode_ray", "index_from_shards", "read_shards", "ShardSet", "QdrantIndex"]

_LAZY = {
    "encode_ray": "embedstack.scale.ray",
    "index_from_shards": "embedstack.scale.shards",
    "read_shards": "embedstack.scale.shards",
    "ShardSet": "embedstack.scale.shards",
    "QdrantIndex": "embedstack.scale.qdrant",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'embedstack.scale' has no attribute {name!r}")
