"""QdrantIndex: Qdrant (Edge in-process, and qdrant-client's local-mode stand-in) behind the embedstack index API.

Congruence with the exact embedstack indexes (FlatIndex, SparseIndex, MultiVectorIndex.exact_search) on
random data and on real SciFact all-MiniLM-L6-v2 vectors, persistence, encoder identity, typed errors,
and retrieval pipelines on top.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("qdrant_edge")

from embedstack.errors import ConfigError, DimensionMismatch, IndexStateError, InputError, ModelMismatch  # noqa: E402
from embedstack.index import (  # noqa: E402
    FlatIndex,
    HNSWIndex,
    MultiVectorIndex,
    SparseIndex,
    encoder_identity,
    load_index,
)
from embedstack.scale.qdrant import QdrantIndex, point_id  # noqa: E402

ENGINES = ["edge", "client"]
CACHE = Path(os.environ.get("EMBEDSTACK_TEST_CACHE", "/tmp/embedstack-test-cache"))


def make(dim: int, engine: str, tmp_path: Path, name: str = "idx", **kw: Any) -> QdrantIndex:
    if engine == "client":
        pytest.importorskip("qdrant_client")
        return QdrantIndex(dim, engine="client", location=":memory:", collection=name, **kw)
    return QdrantIndex(dim, path=tmp_path / name, **kw)


def same_ranking(s1: np.ndarray, i1: np.ndarray, s2: np.ndarray, i2: np.ndarray, tol: float = 1e-4) -> None:
    """Equal scores, and equal ids wherever a score is not tied with a neighbour or the cut-off."""
    assert s1.shape == s2.shape
    np.testing.assert_allclose(s1, s2, rtol=tol, atol=tol)
    for r in range(len(s1)):
        row = s2[r]
        for c in range(len(row)):
            if not np.isfinite(row[c]):  # padding of a short row
                assert i1[r, c] == i2[r, c] == ""
                continue
            tied = any(abs(row[c] - row[j]) <= tol for j in (c - 1, c + 1) if 0 <= j < len(row))
            last = c == len(row) - 1  # a doc just outside the top-k may tie the last one
            if not tied and not last:
                assert i1[r, c] == i2[r, c], (r, c, i1[r], i2[r])


def rand(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def docs_of(n: int) -> list[str]:
    return [f"d{i}" for i in range(n)]


# --------------------------------------------------------------------------- congruence on random data

@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_dense_exact_equals_flat(engine: str, metric: str, tmp_path: Path) -> None:
    x, q = rand(400, 24), rand(20, 24, seed=1)
    idx = make(24, engine, tmp_path, metric=metric, exact=True)
    idx.add(x, docs_of(400))
    flat = FlatIndex(24, metric=metric).add(x, docs_of(400))
    same_ranking(*idx.search_ids(q, 10), *flat.search_ids(q, 10))
    hits = idx.search(q[:2], 10)
    assert [h.id for h in hits[0]] == list(idx.search_ids(q[:1], 10)[1][0])
    idx.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_metadata_filter_inside_the_search(engine: str, tmp_path: Path) -> None:
    x, q = rand(600, 16), rand(10, 16, seed=3)
    lang = ["en", "de", "fr"]
    meta = [{"lang": lang[i % 3], "year": 2000 + i % 5} for i in range(600)]
    idx = make(16, engine, tmp_path, exact=True)
    idx.add(x, docs_of(600), metadata=meta)
    for where, keep in (({"lang": "de"}, lambda m: m["lang"] == "de"),
                        ({"lang": ["en", "fr"], "year": 2003}, lambda m: m["lang"] != "de" and m["year"] == 2003)):
        rows = [i for i in range(600) if keep(meta[i])]
        flat = FlatIndex(16).add(x[rows], [f"d{i}" for i in rows])
        same_ranking(*idx.search_ids(q, 10, where=where), *flat.search_ids(q, 10))  # k hits, all matching
        assert all(keep(h.metadata) for row in idx.search(q, 10, where=where) for h in row)
    with pytest.raises(ConfigError, match="where"):
        idx.search(q, 5, where={"lang": 1.5})
    idx.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_sparse_equals_sparse_index(engine: str, tmp_path: Path) -> None:
    docs = sp.random(300, 2000, density=0.01, format="csr", dtype=np.float32, random_state=0)
    queries = sp.random(15, 2000, density=0.02, format="csr", dtype=np.float32, random_state=1)
    idx = make(2000, engine, tmp_path, kind="sparse")
    idx.add(docs, docs_of(300))
    ref = SparseIndex(2000).add(docs, docs_of(300))
    for got, want in zip(idx.search(queries, 10), ref.search(queries, 10), strict=True):
        assert len(got) == len(want)  # only documents sharing a term are returned, by both
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=1e-5)
        assert {h.id for h in got[:-1]} <= {h.id for h in want}
    s, i = idx.search_ids(queries, 10)
    assert s.shape == (15, 10) and s.dtype == np.float32 and i.dtype == object
    assert all(i[r, c] == "" for r, c in zip(*np.nonzero(np.isinf(s)), strict=True))
    idx.close()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_multivector_equals_exact_maxsim(engine: str, metric: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((int(rng.integers(2, 7)), 8)).astype(np.float32) for _ in range(80)]
    queries = [rng.standard_normal((3, 8)).astype(np.float32) for _ in range(6)]
    idx = make(8, engine, tmp_path, kind="multivector", metric=metric, exact=True, m=0)
    idx.add(docs, docs_of(80))
    ref = MultiVectorIndex(8, metric=metric).add(docs, docs_of(80))
    want = ref.exact_search(queries, 10)
    got = idx.search(queries, 10)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose([h.score for h in g], [h.score for h in w], rtol=1e-4, atol=1e-5)
        assert [h.id for h in g[:5]] == [h.id for h in w[:5]]
    idx.close()


# --------------------------------------------------------------------------- round trips

def _payload(kind: str, n: int) -> Any:
    rng = np.random.default_rng(3)
    if kind == "dense":
        return rand(n, 8)
    if kind == "sparse":
        return sp.random(n, 50, density=0.2, format="csr", dtype=np.float32, random_state=3)
    return [rng.standard_normal((3, 8)).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["dense", "sparse", "multivector"])
def test_round_trip_every_kind(engine: str, kind: str, tmp_path: Path) -> None:
    dim = 50 if kind == "sparse" else 8
    vecs = _payload(kind, 12)
    idx = make(dim, engine, tmp_path, kind=kind, exact=True)
    texts = [f"text {i}" for i in range(12)]
    meta = [{"n": i, "tags": ["a", "b"]} if i % 2 else None for i in range(12)]
    assert idx.add(vecs, docs_of(12), texts=texts, metadata=meta) is idx
    assert len(idx) == 12 and "d3" in idx and "nope" not in idx and 3 not in idx
    assert sorted(idx.ids) == sorted(docs_of(12))
    assert idx.get("d3").text == "text 3" and idx.get("d3").metadata == {"n": 3, "tags": ["a", "b"]}
    assert idx.get("d2").metadata is None
    query = vecs[5:6]
    top = idx.search(query, 3)[0]
    assert top[0].id == "d5" and top[0].text == "text 5" and top[0].metadata == {"n": 5, "tags": ["a", "b"]}
    assert idx.search(query, 3, with_text=False)[0][0].text is None
    assert idx.remove(["d5", "d5", "d1"]) == 2
    assert len(idx) == 10 and "d5" not in idx
    assert "d5" not in [h.id for h in idx.search(query, 12)[0]]
    with pytest.raises(IndexStateError, match="'d5' is not in the index"):
        idx.remove(["d5"])
    with pytest.raises(IndexStateError):
        idx.get("d5")
    idx.add(_payload(kind, 1), ["d5"])  # a removed id can come back
    assert "d5" in idx and len(idx) == 11
    idx.close()


def test_point_ids_are_deterministic_uuids() -> None:
    assert point_id("doc-1") == point_id("doc-1") != point_id("doc-2")
    assert len(point_id("x")) == 36


# --------------------------------------------------------------------------- persistence and identity

IDENT = {"name": "enc-a", "sha256": "a" * 64, "embedstack_version": "0"}
OTHER = {"name": "enc-b", "sha256": "b" * 64, "embedstack_version": "0"}


def test_edge_persistence_and_model_mismatch(tmp_path: Path) -> None:
    x, q = rand(300, 16), rand(5, 16, seed=1)
    idx = QdrantIndex(16, path=tmp_path / "shard", metric="ip", m=8, ef=32)
    idx.add(x, docs_of(300), texts=[str(i) for i in range(300)])
    idx.encoder = IDENT
    before = idx.search_ids(q, 10)
    idx.remove(["d0"])
    after_remove = idx.search_ids(q, 10)
    with pytest.raises(IndexStateError, match="open elsewhere"):
        QdrantIndex.open(tmp_path / "shard")  # the write-ahead log is locked while idx is open
    idx.close()
    with pytest.raises(IndexStateError, match="closed"):
        idx.search(q, 3)
    manifest = json.loads((tmp_path / "shard" / "manifest.json").read_text())
    assert manifest["type"] == "QdrantIndex" and manifest["dims"] == 16 and manifest["metric"] == "ip"
    assert manifest["kind"] == "dense" and manifest["encoder"] == IDENT and manifest["count"] == 299

    again = QdrantIndex.open(tmp_path / "shard", encoder=IDENT)
    assert (again.dim, again.metric, again.m, again.ef, len(again)) == (16, "ip", 8, 32, 299)
    np.testing.assert_array_equal(again.search_ids(q, 10)[1], after_remove[1])
    assert again.get("d7").text == "7"
    with pytest.raises(ModelMismatch, match="enc-a"):
        again.check_encoder(OTHER)
    again.check_encoder(IDENT)
    copy = again.save(tmp_path / "copy")  # an atomic copy of the shard; the original stays open
    again.close()
    with pytest.raises(ModelMismatch):
        QdrantIndex.open(tmp_path / "shard", encoder=OTHER)
    loaded = load_index(copy)  # the registry finds QdrantIndex from the manifest
    assert isinstance(loaded, QdrantIndex) and len(loaded) == 299 and loaded.encoder == IDENT
    np.testing.assert_array_equal(loaded.search_ids(q, 10)[1], after_remove[1])
    loaded.close()
    assert before[1].shape == after_remove[1].shape


def test_client_local_path_persistence(tmp_path: Path) -> None:
    pytest.importorskip("qdrant_client")
    x, q = rand(100, 8), rand(3, 8, seed=1)
    idx = QdrantIndex(8, engine="client", path=tmp_path / "local", collection="c", metric="l2")
    idx.add(x, docs_of(100), metadata=[{"i": i} for i in range(100)])
    idx.encoder = IDENT
    want = idx.search_ids(q, 5)
    idx.close()
    again = QdrantIndex.open(tmp_path / "local", engine="client", collection="c", encoder=IDENT)
    assert again.metric == "l2" and again.encoder == IDENT
    np.testing.assert_array_equal(again.search_ids(q, 5)[1], want[1])
    again.close()
    with pytest.raises(ModelMismatch):
        QdrantIndex.open(tmp_path / "local", engine="client", collection="c", encoder=OTHER)
    with pytest.raises(IndexStateError, match="does not exist"):
        QdrantIndex.open(tmp_path / "local", engine="client", collection="missing")


# --------------------------------------------------------------------------- typed errors

@pytest.mark.parametrize("engine", ENGINES)
def test_typed_errors(engine: str, tmp_path: Path) -> None:
    idx = make(4, engine, tmp_path)
    idx.add(np.eye(4, dtype=np.float32), ["a", "b", "c", "d"])
    with pytest.raises(DimensionMismatch):
        idx.add(np.ones((1, 5), dtype=np.float32), ["e"])
    with pytest.raises(DimensionMismatch):
        idx.search(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(InputError, match="NaN"):
        idx.add(np.full((1, 4), np.nan, dtype=np.float32), ["e"])
    with pytest.raises(IndexStateError, match="already in the index"):
        idx.add(np.ones((1, 4), dtype=np.float32), ["a"])
    with pytest.raises(IndexStateError, match="more than once"):
        idx.add(np.ones((2, 4), dtype=np.float32), ["e", "e"])
    with pytest.raises(InputError, match="one id per vector"):
        idx.add(np.ones((2, 4), dtype=np.float32), ["e"])
    with pytest.raises(InputError, match="not one string"):
        idx.add(np.ones((1, 4), dtype=np.float32), "e")
    with pytest.raises(InputError, match="must be strings"):
        idx.add(np.ones((1, 4), dtype=np.float32), [7])
    with pytest.raises(IndexStateError, match="not in the index"):
        idx.remove(["a", "zzz"])
    assert len(idx) == 4  # nothing removed
    with pytest.raises(ConfigError, match="'k'"):
        idx.search(np.ones((1, 4), dtype=np.float32), k=0)
    with pytest.raises(ConfigError):
        idx.search_ids(np.ones((1, 4), dtype=np.float32), k=-1)
    assert len(idx.search(np.ones((1, 4), dtype=np.float32), k=100)[0]) == 4
    idx.close()


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="metric='ip'"):
        QdrantIndex(10, kind="sparse", metric="cosine", path=tmp_path / "a")
    with pytest.raises(ConfigError, match="cosine' or 'ip'"):
        QdrantIndex(10, kind="multivector", metric="l2", path=tmp_path / "a")
    with pytest.raises(ConfigError, match="'kind'"):
        QdrantIndex(10, kind="graph", path=tmp_path / "a")
    with pytest.raises(ConfigError, match="quantization"):
        QdrantIndex(10, kind="sparse", quantization="int8", path=tmp_path / "a")
    with pytest.raises(ConfigError, match="path="):
        QdrantIndex(10)
    with pytest.raises(ConfigError, match="exactly one"):
        QdrantIndex(10, engine="client")
    QdrantIndex(4, path=tmp_path / "b").close()
    with pytest.raises(IndexStateError, match="already holds"):
        QdrantIndex(4, path=tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(IndexStateError, match="not an empty folder"):
        QdrantIndex(4, path=tmp_path / "c")
    with pytest.raises(IndexStateError, match="no QdrantIndex"):
        QdrantIndex.open(tmp_path / "nothing")
    with pytest.raises(InputError, match="list of token matrices"):
        QdrantIndex(4, kind="multivector", path=tmp_path / "d").add(np.ones((2, 4), dtype=np.float32), ["a", "b"])


# --------------------------------------------------------------------------- from_index

def test_from_index_every_kind(tmp_path: Path) -> None:
    x, q = rand(200, 16), rand(8, 16, seed=1)
    ids = docs_of(200)
    texts = [f"t{i}" for i in range(200)]
    flat = FlatIndex(16, quantization="fp16").add(x, ids, texts=texts, metadata=[{"i": i} for i in range(200)])
    flat.remove(["d3"])
    flat.encoder = IDENT
    flat.save(tmp_path / "flat")
    src = load_index(tmp_path / "flat")
    dst = QdrantIndex.from_index(src, tmp_path / "q-flat", batch_size=64, exact=True)
    assert len(dst) == 199 and "d3" not in dst and dst.encoder == IDENT
    assert dst.get("d9").text == "t9" and dst.get("d9").metadata == {"i": 9}
    same_ranking(*dst.search_ids(q, 10), *src.search_ids(q, 10), tol=2e-3)  # fp16 rows, float32 in Qdrant
    dst.close()

    hnsw = HNSWIndex(16, metric="l2", M=8, ef=50).add(x, ids)
    dst = QdrantIndex.from_index(hnsw, tmp_path / "q-hnsw", exact=True)
    assert (dst.metric, dst.m, dst.ef) == ("l2", 8, 50)
    same_ranking(*dst.search_ids(q, 10), *FlatIndex(16, metric="l2").add(x, ids).search_ids(q, 10))
    dst.close()
    if importlib.util.find_spec("faiss") is not None:  # faiss's graph: rows read back by row number
        fh = HNSWIndex(16, metric="l2", M=8, ef=50, backend="faiss").add(x, ids)
        fh.remove(["d5"])
        dst = QdrantIndex.from_index(fh, tmp_path / "q-hnsw-faiss", exact=True)
        assert len(dst) == 199 and "d5" not in dst
        keep = [i for i in range(200) if i != 5]
        same_ranking(*dst.search_ids(q, 10),
                     *FlatIndex(16, metric="l2").add(x[keep], [ids[i] for i in keep]).search_ids(q, 10))
        dst.close()

    docs = sp.random(200, 300, density=0.05, format="csr", dtype=np.float32, random_state=0)
    sparse = SparseIndex(300).add(docs, ids)
    sparse.remove(["d0"])
    dst = QdrantIndex.from_index(sparse, tmp_path / "q-sparse")
    queries = sp.random(5, 300, density=0.1, format="csr", dtype=np.float32, random_state=1)
    s1, _ = dst.search_ids(queries, 5)
    s2, _ = sparse.search_ids(queries, 5)
    np.testing.assert_allclose(s1, s2, rtol=1e-5)
    dst.close()

    rng = np.random.default_rng(0)
    mats = [rng.standard_normal((4, 8)).astype(np.float32) for _ in range(30)]
    mv = MultiVectorIndex(8, storage="fp16").add(mats, ids[:30])
    dst = QdrantIndex.from_index(mv, tmp_path / "q-mv", exact=True, m=0)
    assert dst.kind == "multivector"
    assert [h.id for h in dst.search(mats[:2], 3)[0]] == [h.id for h in mv.exact_search(mats[:2], 3)[0]]
    dst.close()

    with pytest.raises(ConfigError, match="int8 codes"):
        QdrantIndex.from_index(FlatIndex(16, quantization="int8").add(x, ids), tmp_path / "q-int8")
    with pytest.raises(ConfigError, match="residual"):
        QdrantIndex.from_index(MultiVectorIndex(8, storage="residual").add(mats, ids[:30]), tmp_path / "q-res")


def test_from_index_into_client(tmp_path: Path) -> None:
    qc = pytest.importorskip("qdrant_client")
    x = rand(50, 8)
    flat = FlatIndex(8).add(x, docs_of(50), texts=[str(i) for i in range(50)])
    flat.encoder = IDENT
    client = qc.QdrantClient(":memory:")
    dst = QdrantIndex.from_index(flat, client, collection="copied")
    assert len(dst) == 50 and dst.encoder == IDENT
    dst.close()  # a client it was given is left open
    again = QdrantIndex.open(client=client, collection="copied", encoder=IDENT)
    same_ranking(*again.search_ids(x[:3], 5), *flat.search_ids(x[:3], 5))


# --------------------------------------------------------------------------- HNSW and quantization (edge)

def test_edge_hnsw_and_int8_quantization(tmp_path: Path) -> None:
    x = rand(3000, 32)
    q = x[:50] + 0.3 * rand(50, 32, seed=2)
    ids = docs_of(3000)
    _, truth = FlatIndex(32).add(x, ids).search_ids(q, 10)

    def recall(idx: QdrantIndex, **kw: Any) -> float:
        _, got = idx.search_ids(q, 10, **kw)
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)]))

    small = dict(full_scan_threshold=10, indexing_threshold=10)  # build and use a graph at this size
    idx = QdrantIndex(32, path=tmp_path / "hnsw", m=16, ef_construct=64, **small)
    idx.add(x, ids)
    assert recall(idx, ef=128) >= 0.95 and recall(idx, exact=True) == 1.0
    assert idx._engine.shard.info().indexed_vectors_count == 3000  # the first search built the graph
    assert idx.memory_bytes() >= 3000 * 32 * 4 and idx.nbytes() >= idx.memory_bytes()
    idx.close()
    quant = QdrantIndex(32, path=tmp_path / "int8", quantization="int8", oversampling=4.0, **small)
    quant.add(x, ids)
    assert recall(quant, ef=128) >= 0.9
    quant.close()


# --------------------------------------------------------------------------- pipelines on top

class ShortFirst:
    """A Reranker preferring shorter texts (needs the texts the payload carries)."""

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        return np.array([-len(d) for _, d in pairs], dtype=np.float32)


def test_hybrid_pipeline_on_top(tmp_path: Path) -> None:
    from embedstack.data import sample_retrieval
    from embedstack.models import resolve
    from embedstack.retrieval import Pipeline, Retriever, build_index

    ds = sample_retrieval()
    texts, ids = ds.doc_texts(), ds.doc_ids()
    lsa = resolve("lsa:32")
    flat = build_index(texts, ids, lsa, spec="lsa:32")  # fits LSA on the corpus, records its identity
    bm25 = resolve("bm25")
    sparse = build_index(texts, ids, bm25, spec="bm25")
    dense = QdrantIndex.from_index(flat, tmp_path / "dense", exact=True)
    sparse_q = QdrantIndex.from_index(sparse, tmp_path / "sparse", exact=True)  # a sparse backend: encode_sparse
    queries = ds.query_texts()[:8]
    for reranker in (None, ShortFirst()):
        ours = Pipeline([Retriever("dense", lsa, dense), Retriever("bm25", bm25, sparse)], candidates=20,
                        reranker=reranker).search_batch(queries, k=5)
        ref = Pipeline([Retriever("dense", lsa, flat), Retriever("bm25", bm25, sparse)], candidates=20,
                       reranker=reranker).search_batch(queries, k=5)
        for a, b in zip(ours, ref, strict=True):
            assert [h.id for h in a.hits] == [h.id for h in b.hits]
            np.testing.assert_allclose([h.score for h in a.hits], [h.score for h in b.hits], rtol=1e-5)
            assert all(h.text for h in a.hits) and "search:dense" in a.timings
            assert all(set(h.stages) & {"dense", "bm25"} for h in a.hits)
    # a sparse backend in a Retriever (encode_sparse picked from its kind): SparseIndex's hits, ties aside
    # (Qdrant may return tied BM25 scores in another order, which moves RRF ranks, so it is checked alone)
    got = Pipeline([Retriever("bm25", bm25, sparse_q)], candidates=20).search_batch(queries, k=10)
    want = Pipeline([Retriever("bm25", bm25, sparse)], candidates=20).search_batch(queries, k=10)
    for a, b in zip(got, want, strict=True):
        same_ranking(np.array([[h.score for h in a.hits]]), np.array([[h.id for h in a.hits]], dtype=object),
                     np.array([[h.score for h in b.hits]]), np.array([[h.id for h in b.hits]], dtype=object))
        assert all(h.text for h in a.hits)
    other = resolve("lsa:16").fit(texts)
    with pytest.raises(ModelMismatch):
        Retriever("dense", other, dense)
    dense.close()
    QdrantIndex.open(tmp_path / "dense", encoder=lsa).close()  # an encoder object is identified like Retriever does
    with pytest.raises(ModelMismatch, match="lsa:32"):
        QdrantIndex.open(tmp_path / "dense", encoder=other)


# --------------------------------------------------------------------------- real data: SciFact + MiniLM

def _scifact(n_docs: int | None) -> dict[str, Any]:
    """SciFact (train queries: test judgments are not shipped) with all-MiniLM-L6-v2 vectors cached in CACHE.

    The full corpus takes minutes to encode on 2 cores: a subset is cut from the full cache when one
    exists; without it, at most 400 abstracts are encoded (and cached) so the default run stays short.
    """
    if not os.environ.get("EMBEDSTACK_DATA_DIR"):
        pytest.skip("real datasets not reachable: set EMBEDSTACK_DATA_DIR (e.g. ../shared/data)")
    from embedstack.data import load_beir
    from embedstack.errors import DatasetError
    from embedstack.models import resolve

    try:
        ds = load_beir("scifact", split="train")
    except DatasetError as exc:
        pytest.skip(f"SciFact not found under EMBEDSTACK_DATA_DIR: {exc}")
    model = resolve("all-MiniLM-L6-v2")
    sha = str(encoder_identity(model, "all-MiniLM-L6-v2")["sha256"])[:12]
    doc_ids, doc_texts, qids = ds.doc_ids(), ds.doc_texts(), ds.query_ids()
    full = CACHE / f"scifact_minilm_{sha}_full.npz"
    n = len(doc_ids) if n_docs is None else n_docs if full.is_file() else min(n_docs, 400)
    part = CACHE / f"scifact_minilm_{sha}_{n}.npz"
    out = {"model": model, "ids": doc_ids[:n], "texts": doc_texts[:n], "query_texts": ds.query_texts()}
    for path in (full, part):
        if path.is_file():
            z = np.load(path, allow_pickle=False)
            if list(z["doc_ids"][:n]) == doc_ids[:n] and list(z["qids"]) == qids:
                return {**out, "docs": z["docs"][:n], "queries": z["queries"]}
    docs = np.asarray(model.encode(doc_texts[:n], batch_size=64), dtype=np.float32)
    queries = np.asarray(model.encode(ds.query_texts(), role="query", batch_size=64), dtype=np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(full if n == len(doc_ids) else part, docs=docs, queries=queries, doc_ids=np.array(doc_ids[:n]),
             qids=np.array(qids))
    return {**out, "docs": docs, "queries": queries}


def _check_scifact(tmp_path: Path, n_docs: int | None, n_queries: int) -> float:
    from embedstack.models import resolve

    data = _scifact(n_docs)
    ids, docs, q = data["ids"], data["docs"], data["queries"][:n_queries]
    truth_s, truth_i = FlatIndex(384).add(docs, ids).search_ids(q, 10)
    # exact: a full scan in Qdrant Edge gives FlatIndex's top-10 (ties aside)
    idx = QdrantIndex(384, path=tmp_path / "scifact", full_scan_threshold=10, indexing_threshold=10, ef=128)
    idx.add(docs, ids)
    idx.encoder = encoder_identity(data["model"], "all-MiniLM-L6-v2")
    same_ranking(*idx.search_ids(q, 10, exact=True), truth_s, truth_i)
    # ANN: the HNSW graph (built by the first search) against exact
    _, got = idx.search_ids(q, 10)
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth_i, strict=True)]))
    assert idx._engine.shard.info().indexed_vectors_count == len(ids)  # the graph was used, not a full scan
    assert recall >= 0.95, recall
    idx.close()
    # sparse: BM25 fitted on the corpus, Qdrant sparse vectors against SparseIndex
    bm25 = resolve("bm25").fit(data["texts"])
    d_sparse = bm25.encode_sparse(data["texts"], role="document")
    q_sparse = bm25.encode_sparse(data["query_texts"][:n_queries], role="query")
    ref = SparseIndex(d_sparse.shape[1]).add(d_sparse, ids)
    sidx = QdrantIndex(d_sparse.shape[1], kind="sparse", path=tmp_path / "scifact-bm25")
    sidx.add(d_sparse, ids)
    same_ranking(*sidx.search_ids(q_sparse, 10), *ref.search_ids(q_sparse, 10), tol=1e-3)
    sidx.close()
    return recall


def test_scifact_subset_congruence(tmp_path: Path) -> None:
    """Default run: the first 1,500 SciFact abstracts (real MiniLM vectors; 400 without the full cache), 200 queries."""
    print(f"recall@10 = {_check_scifact(tmp_path, 1500, 200):.3f}")


@pytest.mark.slow
def test_scifact_full_congruence(tmp_path: Path) -> None:
    """All 5,183 abstracts and 809 judged queries (minutes to encode once; cached)."""
    print(f"recall@10 = {_check_scifact(tmp_path, None, 809):.3f}")
