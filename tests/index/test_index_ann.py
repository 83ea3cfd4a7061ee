"""HNSW, Matryoshka and multi-vector indexes against their exact references."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from embedstack.errors import ConfigError, InputError
from embedstack.index import FlatIndex, HNSWIndex, MatryoshkaIndex, MultiVectorIndex, maxsim

pytest.importorskip("usearch")


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_hnsw_recall_floor_vs_flat(hp: Any, dtype: str) -> None:
    x, q = hp.clustered(3000, 32, n_clusters=50, noise=0.8), hp.clustered(100, 32, n_clusters=50, noise=0.8, seed=7)
    ids = hp.ids_of(3000)
    hnsw = HNSWIndex(32, M=16, ef_construction=100, ef=64, dtype=dtype)
    hnsw.add(x, ids)
    flat = FlatIndex(32)
    flat.add(x, ids)
    truth = np.array([[int(h.id[1:]) for h in row] for row in flat.search(q, k=10)])
    assert hp.recall(hnsw.search(q, k=10), truth, ids) >= 0.95
    h = hnsw.search(q[:1], k=1)[0][0]
    assert h.score == pytest.approx(flat.search(q[:1], k=1)[0][0].score, abs=1e-5 if dtype == "f32" else 2e-2)


def _backend(name: str) -> str:
    if name == "faiss":
        pytest.importorskip("faiss")
    return name


@pytest.mark.parametrize("backend", ["usearch", "faiss"])
@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_hnsw_scores_follow_metric(hp: Any, metric: str, backend: str) -> None:
    x = hp.clustered(300, 8)
    # one thread: a graph built concurrently differs run to run, and once (under load) missed a neighbour
    hnsw = HNSWIndex(8, metric=metric, ef=200, threads=1, backend=_backend(backend))
    flat = FlatIndex(8, metric=metric)
    hnsw.add(x, hp.ids_of(300))
    flat.add(x, hp.ids_of(300))
    a, b = hnsw.search(x[:3] + 0.01, k=3), flat.search(x[:3] + 0.01, k=3)
    assert [h.id for h in a[0]] == [h.id for h in b[0]]
    np.testing.assert_allclose([h.score for h in a[0]], [h.score for h in b[0]], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_hnsw_int8_graph_scores_are_in_vector_units_and_rescoring_is_exact(hp: Any, metric: str) -> None:
    x = hp.clustered(2000, 32, n_clusters=30, noise=0.6)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:20] + 0.05
    ids = hp.ids_of(2000)
    flat = FlatIndex(32, metric=metric)
    flat.add(x, ids)
    ref_s, ref_i = flat.search_ids(q, 10)
    graph = HNSWIndex(32, metric=metric, dtype="i8", ef=200)
    graph.add(x, ids)
    g_s, g_i = graph.search_ids(q, 10)
    top = np.array([int(i[1:]) for i in g_i[:, 0]])  # the graph's best hit (its search is approximate)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    exact = {"ip": np.einsum("ij,ij->i", q, x[top]), "cosine": np.einsum("ij,ij->i", qn, x[top]),
             "l2": -np.linalg.norm(q - x[top], axis=1)}[metric]
    # int8 codes: near the true score and in its units (before the fix, ip/l2 came back as code units, ~1e4)
    np.testing.assert_allclose(g_s[:, 0], exact, atol=0.3)
    resc = HNSWIndex(32, metric=metric, dtype="i8", ef=200, rescore="float", oversample=5)
    resc.add(x, ids)
    r_s, r_i = resc.search_ids(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(r_i, ref_i, strict=True)])
    assert recall >= 0.9  # the graph walk is approximate (and built by several threads)
    exact_of = {(row, d): s for row in range(len(q)) for d, s in zip(ref_i[row], ref_s[row], strict=True)}
    shared = [(row, j) for row in range(len(q)) for j in range(10) if (row, r_i[row, j]) in exact_of]
    np.testing.assert_allclose([r_s[row, j] for row, j in shared],
                               [exact_of[row, r_i[row, j]] for row, j in shared], rtol=1e-5, atol=1e-5)  # float32 scores
    assert resc.memory_bytes() < resc.nbytes()  # the float rows are not part of the first stage
    with pytest.raises(ConfigError, match="rescore"):
        HNSWIndex(8, rescore="int8")
    with pytest.raises(ConfigError, match="backend"):
        HNSWIndex(8, backend="hnswlib")
    with pytest.raises(ConfigError, match="dtype"):
        HNSWIndex(8, backend="faiss", dtype="i8")


@pytest.mark.parametrize("backend,dtype", [("usearch", "f32"), ("faiss", "f32"), ("faiss", "f16"), ("faiss", "bf16")])
def test_hnsw_remove_persist_view_add_compact(hp: Any, tmp_path: Any, backend: str, dtype: str) -> None:
    x = hp.clustered(500, 16)
    # one build thread: the same graph every run (built by several threads, ~1 run in 15 missed d5 at ef 64)
    idx = HNSWIndex(16, M=8, threads=1, backend=_backend(backend), dtype=dtype)
    idx.add(x, hp.ids_of(500))
    idx.remove(["d0", "d1"])
    assert all(h.id not in ("d0", "d1") for h in idx.search(x[:2], k=5)[0])
    # a removed row is skipped, not counted: k live hits come back even when the removed ones were the best
    top3 = [h.id for h in idx.search(x[:1], k=3)[0]]
    assert len(top3) == 3 and top3 == [h.id for h in idx.search(x[:1], k=5)[0]][:3]
    idx.save(tmp_path / "h")
    assert (tmp_path / "h" / ("hnsw.faiss" if backend == "faiss" else "hnsw.usearch")).is_file()
    loaded = HNSWIndex.load(tmp_path / "h")  # memory-mapped view
    assert loaded.backend == backend and loaded.dtype == dtype
    assert len(loaded) == 498 and loaded.search(x[5:6], k=1)[0][0].id == "d5"
    assert all(h.id not in ("d0", "d1") for h in loaded.search(x[:2], k=5)[0])  # tombstones survive the reload
    loaded.add(x[:1] * 3, ["new"])  # copies the read-only view first
    assert loaded.search(x[:1], k=1)[0][0].id == "new"
    assert loaded.compact() == 2 and len(loaded) == 499
    assert loaded.search(x[7:8], k=1)[0][0].id == "d7"
    assert loaded.search(x[:1], k=1)[0][0].id == "new"  # renumbered from row 500 to 498 with its graph node
    assert HNSWIndex.load(tmp_path / "h").search(x[5:6], k=1)[0][0].id == "d5"  # the saved version is intact
    in_memory = HNSWIndex.load(tmp_path / "h", mmap=False)
    assert in_memory.search(x[9:10], k=1)[0][0].id == "d9"


def test_hnsw_faiss_backend_rescoring_heavy_deletes_bytes_and_empty(hp: Any, tmp_path: Any) -> None:
    pytest.importorskip("faiss")
    x = hp.clustered(1000, 32, n_clusters=30, noise=0.6)
    ids = hp.ids_of(1000)
    idx = HNSWIndex(32, metric="cosine", dtype="f16", rescore="float", ef=100, threads=1, backend="faiss")
    idx.add(x, ids)
    flat = FlatIndex(32, metric="cosine").add(x, ids)
    (s, found), (rs, ref) = idx.search_ids(x[:20], 10), flat.search_ids(x[:20], 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, ref, strict=True)]) >= 0.95
    np.testing.assert_allclose(s[:, 0], rs[:, 0], atol=1e-5)  # float32 rescoring: exact scores
    assert 1000 * 32 * 2 < idx.memory_bytes() < idx.nbytes()  # f16 codes + links; float rows on top
    gone = [f"d{i}" for i in range(1000) if i % 20]  # 95% removed: the walk crosses tombstones
    idx.remove(gone)
    s, found = idx.search_ids(x[:5], 10)
    live = {f"d{i}" for i in range(0, 1000, 20)}
    assert all(f in live for f in found.ravel()) and np.isfinite(s).all() and found.shape == (5, 10)
    idx.save(tmp_path / "h")
    loaded = HNSWIndex.load(tmp_path / "h")
    assert loaded.memory_bytes() == idx.memory_bytes() and loaded.n_tombstones == 950
    assert list(loaded.search_ids(x[:5], 10)[1].ravel()) == list(found.ravel())
    empty = HNSWIndex(32, backend="faiss")
    empty.save(tmp_path / "e")
    again = HNSWIndex.load(tmp_path / "e")
    assert len(again) == 0 and again.search(x[:1], k=3) == [[]]
    again.add(x[:3], ids[:3])  # the empty memory-mapped view becomes writable
    assert again.search(x[1:2], k=1)[0][0].id == "d1"


def test_matryoshka_full_dims_is_exact_and_prefix_funnel_rescored(hp: Any) -> None:
    decay = np.exp(-np.arange(32) / 6.0).astype(np.float32)  # information front-loaded, Matryoshka style
    x, q = hp.clustered(800, 32) * decay, hp.clustered(20, 32, seed=3) * decay
    flat = FlatIndex(32)
    flat.add(x, hp.ids_of(800))
    full = MatryoshkaIndex(32, first_dims=32, candidates=10)
    full.add(x, hp.ids_of(800))
    assert [[h.id for h in r] for r in full.search(q, 10)] == [[h.id for h in r] for r in flat.search(q, 10)]
    funnel = MatryoshkaIndex(32, first_dims=8, candidates=200)
    funnel.add(x, hp.ids_of(800))
    hits = funnel.search(q, 10)
    truth = np.array([[int(h.id[1:]) for h in r] for r in flat.search(q, 10)])
    assert hp.recall(hits, truth, hp.ids_of(800)) >= 0.9
    h = hits[0][0]
    assert set(h.stages) == {"first_pass", "rescore"} and h.score == h.stages["rescore"]
    with pytest.raises(ConfigError):
        MatryoshkaIndex(8, first_dims=9)


def _docs(n: int, dim: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((30, dim)).astype(np.float32)
    out = []
    for _ in range(n):
        t = topics[rng.integers(0, 30, 3)]
        toks = t[rng.integers(0, 3, rng.integers(4, 12))] + 0.3 * rng.standard_normal((1, dim))
        out.append(toks.astype(np.float32))
    return out


def test_multivector_exact_maxsim_by_hand() -> None:
    d1 = np.array([[1, 0], [0, 1]], dtype=np.float32)
    d2 = np.array([[1, 0], [1, 0]], dtype=np.float32)
    q = np.array([[1, 0], [0, 1]], dtype=np.float32)
    idx = MultiVectorIndex(2, metric="ip")
    idx.add([d1, d2], ["a", "b"])
    hits = idx.exact_search([q], k=2)[0]
    assert [(h.id, h.score) for h in hits] == [("a", 2.0), ("b", 1.0)]
    assert maxsim(q, d1) == 2.0


def test_multivector_candidate_stage_recall_vs_exhaustive() -> None:
    docs = _docs(600, 24)
    queries = [d[:4] + 0.05 for d in _docs(30, 24, seed=5)]
    idx = MultiVectorIndex(24, candidates=60, nprobe=4, n_centroids=64)
    idx.add(docs, [f"d{i}" for i in range(600)])
    pruned = idx.search(queries, k=10)
    exact = idx.exact_search(queries, k=10)
    rec = np.mean([len({h.id for h in a} & {h.id for h in b}) / 10 for a, b in zip(pruned, exact, strict=True)])
    assert rec >= 0.9
    cand = idx._candidates(queries[0] / np.linalg.norm(queries[0], axis=1, keepdims=True), 60)
    assert len(cand) <= 60 < 600  # not every document is scored
    for a, b in zip(pruned[0], exact[0], strict=False):  # same scores where the same doc is found
        if a.id == b.id:
            assert a.score == pytest.approx(b.score, rel=1e-5)


@pytest.mark.parametrize("spec", ["multivector", "multivector:storage=fp16", "plaid:nbits=2"])
def test_multivector_blocked_threaded_scoring_equals_maxsim(monkeypatch: Any, spec: str) -> None:
    """Exact scoring runs in token blocks on worker threads (small blocks here, so that every path runs: in-place
    slices of consecutive documents, gathered rows around removed ones, decoded residuals); every score equals
    the reference MaxSim of the same stored vectors."""
    from embedstack.index import from_spec
    from embedstack.index import multivector as mv

    monkeypatch.setattr(mv, "_BLOCK_TOKENS", 64)
    monkeypatch.setattr(mv, "_MIN_SPLIT_TOKENS", 128)
    docs = _docs(200, 16)
    idx = from_spec(spec, dim=16)
    idx.add(docs, [f"d{i}" for i in range(200)])
    idx.train()
    idx.remove(["d7", "d120"])
    q = _docs(1, 16, seed=9)[0]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    hits = idx.exact_search([q], k=200)[0]
    assert len(hits) == 198 and {"d7", "d120"}.isdisjoint(h.id for h in hits)
    stored = [idx._decode(np.arange(idx._offsets[i], idx._offsets[i + 1])) for i in range(200)]
    for h in hits:
        assert h.score == pytest.approx(maxsim(q, stored[int(h.id[1:])]), rel=1e-5, abs=1e-5)


def test_multivector_persist_remove_and_errors(tmp_path: Any) -> None:
    docs = _docs(100, 8)
    idx = MultiVectorIndex(8, candidates=10)
    idx.add(docs, [f"d{i}" for i in range(100)])
    before = idx.search([docs[3]], k=3)
    idx.save(tmp_path / "mv")
    loaded = MultiVectorIndex.load(tmp_path / "mv")
    assert [h.id for h in loaded.search([docs[3]], k=3)[0]] == [h.id for h in before[0]]
    loaded.remove(["d3"])
    assert loaded.search([docs[3]], k=1)[0][0].id != "d3"
    loaded.compact()
    assert len(loaded) == 99 and loaded.exact_search([docs[4]], k=1)[0][0].id == "d4"
    with pytest.raises(InputError):
        idx.add([np.zeros((0, 8), dtype=np.float32)], ["empty"])


@pytest.mark.parametrize("spec,min_recall,max_bytes", [("multivector:storage=fp16", 0.97, 2 * 32),
                                                       ("plaid:nbits=4", 0.8, 4 * 32 // 8 + 2),
                                                       ("plaid:nbits=2", 0.65, 2 * 32 // 8 + 2),
                                                       ("plaid:nbits=1", 0.55, 32 // 8 + 2)])
def test_multivector_compressed_storage_keeps_the_ranking(tmp_path: Any, spec: str, min_recall: float,
                                                          max_bytes: int) -> None:
    from embedstack.index import from_spec, load_index

    # noisy synthetic tokens (residuals as large as the clusters): measured 1.0 / 0.88 / 0.77 / 0.68 recall@10
    docs = _docs(400, 32)
    ids = [f"d{i}" for i in range(400)]
    queries = [d[:4] + 0.05 for d in _docs(20, 32, seed=5)]
    ref = MultiVectorIndex(32)
    ref.add(docs, ids)
    exact = ref.exact_search(queries, k=10)
    idx = from_spec(spec, dim=32)
    idx.add(docs[:300], ids[:300])
    idx.train()
    idx.add(docs[300:], ids[300:])  # added after training: compressed against the same centroids and buckets
    got = idx.exact_search(queries, k=10)
    rec = np.mean([len({h.id for h in a} & {h.id for h in b}) / 10 for a, b in zip(got, exact, strict=True)])
    assert rec >= min_recall
    n_tok = sum(len(d) for d in docs)
    per_token = (idx._arrays()["packed"].nbytes + idx._assign.nbytes) / n_tok if idx.compressed \
        else idx._tokens.nbytes / n_tok
    assert per_token <= max_bytes
    idx.save(tmp_path / "i")
    loaded = load_index(tmp_path / "i")  # memory-mapped
    assert [[h.id for h in r] for r in loaded.search(queries, k=5)] == [[h.id for h in r] for r in idx.search(queries, k=5)]
    loaded.remove(["d0", "d350"])
    loaded.compact()
    assert len(loaded) == 398 and loaded.exact_search([docs[5]], k=1)[0][0].id == "d5"


def test_multivector_storage_errors() -> None:
    from embedstack.errors import ConfigError
    from embedstack.index import from_spec, multivector_from_spec

    with pytest.raises(ConfigError, match="nbits"):
        from_spec("plaid:nbits=3", dim=32)
    with pytest.raises(ConfigError, match="storage"):
        from_spec("multivector:storage=int8", dim=32)
    with pytest.raises(ConfigError, match="multiple of 8"):
        from_spec("plaid:nbits=1", dim=12)
    with pytest.raises(ConfigError, match="one vector per token"):
        multivector_from_spec("hnsw", dim=32)
    assert multivector_from_spec("flat", dim=32).storage == "fp32"


def test_faiss_threads_sets_and_restores_faiss_openmp_threads() -> None:
    faiss = pytest.importorskip("faiss")
    from embedstack._threads import faiss_threads

    before = faiss.omp_get_max_threads()
    with faiss_threads(1):
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before
    with faiss_threads(0):  # 0: faiss's own setting, untouched
        assert faiss.omp_get_max_threads() == before


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_hnsw_faiss_compaction_keeps_the_stored_rows(hp: Any, dtype: str) -> None:
    pytest.importorskip("faiss")
    x = hp.clustered(300, 16)
    idx = HNSWIndex(16, metric="cosine", M=8, threads=1, backend="faiss", dtype=dtype)
    idx.add(x, hp.ids_of(300))
    before = idx._index.reconstruct_n(0, 300)
    live = list(range(300))
    for step in range(3):  # compacting again must not drift: decoded rows are re-added as stored, not re-normalised
        gone = live[step::3]
        idx.remove([f"d{i}" for i in gone])
        live = [i for i in live if i not in set(gone)]
        assert idx.compact() == len(gone)
        np.testing.assert_array_equal(idx._index.reconstruct_n(0, idx._index.ntotal), before[live])
