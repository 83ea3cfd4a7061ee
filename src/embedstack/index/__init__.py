"""Vector search: exact and quantised flat indexes, HNSW, sparse, multi-vector, fusion, persistence.

Every index maps user string ids to internal integers, searches in batches
(``search(queries, k) -> list[list[Hit]]``), deletes with tombstones (``remove`` / ``compact``) and
saves atomically to a folder that loads memory-mapped (:func:`load_index`).

Example:
    >>> import numpy as np
    >>> idx = from_spec("binary+rescore:oversample=4", dim=8)
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((50, 8)).astype(np.float32)
    >>> _ = idx.add(x, [f"d{i}" for i in range(50)])
    >>> idx.search(x[:1], k=1)[0][0].id
    'd0'
"""

from __future__ import annotations

from typing import Any

from embedstack.errors import ConfigError
from embedstack.index.flat import QUANTIZATIONS, FlatIndex
from embedstack.index.fusion import (
    RRF,
    ConvexFusion,
    Fusion,
    convex_fusion,
    normalize,
    reciprocal_rank_fusion,
)
from embedstack.index.hnsw import HNSWIndex
from embedstack.index.matryoshka import MatryoshkaIndex
from embedstack.index.multivector import MultiVectorIndex, maxsim
from embedstack.index.sparse import SparseIndex
from embedstack.index.store import (
    DocStore,
    check_identity,
    encoder_identity,
    load_index,
    read_index_manifest,
    resolve_alias,
    set_alias,
)

__all__ = [
    "FlatIndex",
    "HNSWIndex",
    "SparseIndex",
    "MultiVectorIndex",
    "MatryoshkaIndex",
    "QUANTIZATIONS",
    "Fusion",
    "ConvexFusion",
    "RRF",
    "convex_fusion",
    "reciprocal_rank_fusion",
    "normalize",
    "maxsim",
    "DocStore",
    "encoder_identity",
    "check_identity",
    "load_index",
    "read_index_manifest",
    "set_alias",
    "resolve_alias",
    "from_spec",
    "multivector_from_spec",
    "parse_index_spec",
    "SPECS",
]

# spec kind -> (class, fixed keyword arguments)
SPECS: dict[str, tuple[type, dict[str, Any]]] = {
    "flat": (FlatIndex, {}),
    "fp32": (FlatIndex, {}),
    "fp16": (FlatIndex, {"quantization": "fp16"}),
    "int8": (FlatIndex, {"quantization": "int8"}),
    "binary": (FlatIndex, {"quantization": "binary"}),
    "binary+rescore": (FlatIndex, {"quantization": "binary"}),
    "hnsw": (HNSWIndex, {}),
    "matryoshka": (MatryoshkaIndex, {}),
    "multivector": (MultiVectorIndex, {}),
    "plaid": (MultiVectorIndex, {"storage": "residual"}),
}
_DEFAULTS: dict[str, dict[str, Any]] = {"binary+rescore": {"rescore": "int8"}}
_ALIASES = {"m": "M", "efc": "ef_construction", "ef_search": "ef", "dims": "first_dims", "d": "first_dims"}


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_index_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``kind[:name=value,...]`` into the kind and its options."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"An index spec must be a non-empty string such as 'flat' or 'hnsw:M=32'; got {spec!r}.")
    kind, _, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in SPECS:
        raise ConfigError(f"Unknown index kind {kind!r} in spec {spec!r}; use one of {sorted(SPECS)}.")
    opts: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise ConfigError(f"Index option {item!r} in {spec!r} must look like name=value (e.g. 'hnsw:M=32,ef=128').")
        name = name.strip()
        opts[_ALIASES.get(name.lower(), name)] = _value(value.strip())
    return kind, opts


def multivector_from_spec(spec: str | None, *, dim: int, model: str = "this model") -> Any:
    """An empty index for token matrices (ColBERT): ``multivector`` (also for None or ``flat``) or ``plaid``;
    a single-vector kind is a ConfigError naming the ones that fit."""
    spec = "multivector" if spec in (None, "flat") else spec
    if parse_index_spec(str(spec))[0] not in ("multivector", "plaid"):
        raise ConfigError(f"--index {spec!r} holds one vector per text; {model} gives one vector per token: use "
                          "'multivector' (exact MaxSim, fp32 or storage=fp16) or 'plaid' (compressed residuals, "
                          "e.g. plaid:nbits=2).")
    return from_spec(str(spec), dim=dim)


def from_spec(spec: str, *, dim: int, metric: str = "cosine") -> Any:
    """Build an empty index from a spec string.

    Specs: ``flat`` (float32 exact), ``fp16``, ``int8``, ``binary``, ``binary+rescore``
    (``oversample=10``, ``rescore=int8|float``), ``hnsw`` (``M``, ``ef_construction``, ``ef``,
    ``dtype``, ``backend=usearch|faiss``), ``matryoshka`` (``first_dims``, ``candidates``). Options follow a colon:
    ``hnsw:M=32,ef=128``, ``int8:calibration=percentile,percentile=99.5``, ``int8:rescore=float``
    (int8 first stage, float32 rescoring). Token matrices (ColBERT):
    ``multivector`` (``storage=fp32|fp16``, ``n_centroids``, ``nprobe``, ``candidates``) and ``plaid``
    (residual compression, ``nbits=1|2|4``).
    """
    kind, opts = parse_index_spec(spec)
    cls, fixed = SPECS[kind]
    clash = set(opts) & set(fixed)
    if clash:
        raise ConfigError(f"Option(s) {sorted(clash)} are fixed by the index kind {kind!r}; remove them from {spec!r}.")
    import inspect

    allowed = set(inspect.signature(cls).parameters) - {"self", "dim"}
    unknown = set(opts) - allowed
    if unknown:
        raise ConfigError(f"Unknown option(s) {sorted(unknown)} for index kind {kind!r}; known: {sorted(allowed - set(fixed))}.")
    return cls(dim, metric=opts.pop("metric", metric), **fixed, **{**_DEFAULTS.get(kind, {}), **opts})
