"""One suite over every dense index kind: the VectorIndex contract and a recall floor vs FlatIndex."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedstack.base import Hit, VectorIndex
from embedstack.errors import DimensionMismatch, IndexStateError, InputError
from embedstack.index import FlatIndex, from_spec, load_index

KINDS = {"flat": 1.0, "fp16": 0.99, "int8": 0.95, "int8:rescore=float": 0.99, "binary+rescore:oversample=25": 0.85,
         "hnsw": 0.95, "hnsw:dtype=i8,rescore=float": 0.95, "hnsw:backend=faiss,dtype=bf16": 0.95, "matryoshka:first_dims=48,candidates=200": 0.85}


@pytest.mark.parametrize("spec", sorted(KINDS))
def test_vector_index_contract(hp: Any, tmp_path: Path, spec: str) -> None:
    if spec.startswith("hnsw"):
        pytest.importorskip("faiss" if "faiss" in spec else "usearch")
    x = hp.clustered(1000, 64, n_clusters=40, noise=0.5)
    q = hp.clustered(30, 64, n_clusters=40, noise=0.5, seed=11)
    ids = hp.ids_of(1000)
    idx = from_spec(spec, dim=64)
    assert isinstance(idx, VectorIndex) and len(idx) == 0
    idx.add(x[:600], ids[:600])
    idx.add(x[600:], ids[600:])  # incremental
    assert len(idx) == 1000
    hits = idx.search(q, k=10)
    assert len(hits) == 30 and all(len(r) == 10 and isinstance(r[0], Hit) for r in hits)
    assert all(r[i].score >= r[i + 1].score - 1e-6 for r in hits for i in range(9))  # best first
    ref = FlatIndex(64)
    ref.add(x, ids)
    truth = np.array([[int(h.id[1:]) for h in r] for r in ref.search(q, k=10)])
    assert hp.recall(hits, truth, ids) >= KINDS[spec]
    scores, found = idx.search_ids(q, k=10)
    assert scores.shape == (30, 10) and list(found[0]) == [h.id for h in hits[0]]
    assert idx.remove(["d0", "d1"]) == 2 and len(idx) == 998
    assert all(h.id not in ("d0", "d1") for r in idx.search(x[:2], k=20) for h in r)
    with pytest.raises(IndexStateError):
        idx.remove(["d0"])
    with pytest.raises(DimensionMismatch):
        idx.search(q[:, :10])
    with pytest.raises(InputError):
        idx.add(np.full((1, 64), np.nan, dtype=np.float32), ["nan"])
    with pytest.raises(InputError, match="metadata"):  # refused before anything is stored
        idx.add(x[:1], ["bad-meta"], metadata=[["not", "a", "mapping"]])
    assert len(idx) == 998 and "bad-meta" not in idx
    idx.add(x[:1] * 2, ["after"])  # rows and ids still in step (the faiss graph numbers rows itself)
    assert idx.search(x[:1] * 2, k=1)[0][0].id == "after"
    assert idx.remove(["after"]) == 1
    idx.save(tmp_path / "ix")
    loaded = load_index(tmp_path / "ix")
    assert type(loaded) is type(idx) and len(loaded) == 998
    assert [h.id for h in loaded.search(q[:3], k=5)[1]] == [h.id for h in idx.search(q[:3], k=5)[1]]
    assert loaded.compact() == 3 and len(loaded) == 998  # d0, d1 and "after"
