"""FlatIndex: exact search is right, quantised variants keep neighbours, errors are typed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from embedstack.errors import ConfigError, DimensionMismatch, IndexStateError, InputError
from embedstack.index import FlatIndex, from_spec


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_exact_matches_brute_force(hp: Any, metric: str) -> None:
    x = hp.clustered(700, 24, seed=1)
    q = hp.clustered(13, 24, seed=2)
    idx = FlatIndex(24, metric=metric, query_block=4)  # several query blocks
    idx.add(x, hp.ids_of(700))
    hits = idx.search(q, k=7)
    truth = hp.exact_topk(q, x, 7, metric)
    assert [[h.id for h in row] for row in hits] == [[f"d{j}" for j in t] for t in truth]
    h = hits[0][0]
    j = int(h.id[1:])
    if metric == "cosine":
        want = float(q[0] @ x[j] / np.linalg.norm(q[0]) / np.linalg.norm(x[j]))
    elif metric == "ip":
        want = float(q[0] @ x[j])
    else:
        want = -float(np.linalg.norm(q[0] - x[j]))
    assert h.score == pytest.approx(want, rel=1e-4, abs=1e-4)


def test_batched_equals_one_by_one(hp: Any) -> None:
    x, q = hp.clustered(300, 16), hp.clustered(5, 16, seed=3)
    idx = FlatIndex(16)
    idx.add(x, hp.ids_of(300))
    batched = idx.search(q, k=5)
    single = [idx.search(q[i], k=5)[0] for i in range(5)]
    assert [[h.id for h in r] for r in batched] == [[h.id for h in r] for r in single]


@pytest.mark.parametrize("spec,floor", [("fp16", 0.99), ("int8", 0.95), ("int8:calibration=percentile", 0.93),
                                        ("binary+rescore", 0.9), ("binary+rescore:rescore=float", 0.9),
                                        ("binary", 0.3)])
def test_quantised_recall_floor(hp: Any, spec: str, floor: float) -> None:
    x = hp.clustered(3000, 128, n_clusters=60, noise=0.6, seed=4)
    q = hp.clustered(40, 128, n_clusters=60, noise=0.6, seed=4)[:40] + 0.1
    idx = from_spec(spec, dim=128)
    idx.add(x, hp.ids_of(3000))
    assert hp.recall(idx.search(q, k=10), hp.exact_topk(q, x, 10), hp.ids_of(3000)) >= floor


def test_int8_dequantisation_error_within_half_step(hp: Any) -> None:
    x = hp.clustered(500, 8)
    idx = FlatIndex(8, quantization="int8", metric="ip")
    idx.add(x, hp.ids_of(500))
    idx._materialize()
    err = np.abs(idx._dequantize(idx._codes) - x)
    assert (err <= idx.step_ / 2 + 1e-5).all()
    assert idx.bytes_per_vector() == pytest.approx(8, abs=0.2)  # + the per-dimension mid/step


def test_binary_rescore_stages_and_memory(hp: Any) -> None:
    x = hp.clustered(400, 64)
    idx = FlatIndex(64, quantization="binary", rescore="int8", oversample=5)
    idx.add(x, hp.ids_of(400))
    h = idx.search(x[:1], k=3)[0][0]
    assert h.id == "d0" and set(h.stages) == {"hamming", "rescore"} and h.stages["hamming"] == 1.0
    assert idx.bytes_per_vector() == 8  # 64 sign bits: 32x less than float32
    assert idx.nbytes() > idx.memory_bytes()


def test_tombstones_and_compaction(hp: Any) -> None:
    x, q = hp.clustered(200, 16), hp.clustered(10, 16, seed=9)
    for spec in ("flat", "int8", "binary+rescore"):
        idx = from_spec(spec, dim=16)
        idx.add(x, hp.ids_of(200), texts=[f"t{i}" for i in range(200)])
        first = [h.id for h in idx.search(q, k=1)[:1][0]]
        assert idx.remove(first) == 1 and len(idx) == 199 and first[0] not in idx
        assert all(h.id != first[0] for row in idx.search(q, k=20) for h in row)
        before = [[h.id for h in r] for r in idx.search(q, k=5)]
        assert idx.compact() == 1 and idx.n_tombstones == 0
        assert [[h.id for h in r] for r in idx.search(q, k=5)] == before
        assert idx.get("d5").text == "t5"


def test_incremental_add_matches_bulk(hp: Any) -> None:
    x, q = hp.clustered(300, 16), hp.clustered(4, 16, seed=5)
    a, b = FlatIndex(16, quantization="int8"), FlatIndex(16, quantization="int8")
    a.add(x, hp.ids_of(300))
    b.calibrate(x)
    for s in range(0, 300, 70):
        b.add(x[s : s + 70], hp.ids_of(300)[s : s + 70])
        b.search(q, k=1)  # materialise between adds
    assert [[h.id for h in r] for r in a.search(q, 8)] == [[h.id for h in r] for r in b.search(q, 8)]


def test_errors_are_typed(hp: Any) -> None:
    idx = FlatIndex(4)
    idx.add(np.eye(4, dtype=np.float32), ["a", "b", "c", "d"])
    with pytest.raises(DimensionMismatch):
        idx.search(np.ones((1, 5), dtype=np.float32))
    with pytest.raises(DimensionMismatch):
        idx.add(np.ones((1, 3), dtype=np.float32), ["e"])
    with pytest.raises(InputError, match="NaN"):
        idx.add(np.array([[np.nan, 0, 0, 0]], dtype=np.float32), ["e"])
    with pytest.raises(InputError, match="NaN"):
        idx.search(np.array([[np.inf, 0, 0, 0]], dtype=np.float32))
    with pytest.raises(IndexStateError, match="already"):
        idx.add(np.eye(4, dtype=np.float32)[:1], ["a"])
    with pytest.raises(IndexStateError, match="more than once"):
        idx.add(np.eye(4, dtype=np.float32)[:2], ["x", "x"])
    with pytest.raises(IndexStateError, match="not in the index"):
        idx.remove(["zzz"])
    with pytest.raises(InputError):
        idx.add(np.eye(4, dtype=np.float32)[:2], ["x"])
    with pytest.raises(ConfigError):
        idx.search(np.eye(4, dtype=np.float32), k=0)
    with pytest.raises(ConfigError):
        FlatIndex(4, quantization="int4")
    with pytest.raises(ConfigError):
        FlatIndex(4, quantization="binary", metric="l2")
    assert len(idx) == 4  # failed adds changed nothing


def test_k_larger_than_index_and_empty_index(hp: Any) -> None:
    idx = FlatIndex(3)
    assert idx.search(np.ones((2, 3), dtype=np.float32), k=5) == [[], []]
    idx.add(np.eye(3, dtype=np.float32), ["a", "b", "c"])
    assert len(idx.search(np.ones((1, 3), dtype=np.float32), k=50)[0]) == 3


def test_from_spec_options_and_errors(hp: Any) -> None:
    idx = from_spec("binary+rescore:oversample=4,rescore=float", dim=8)
    assert (idx.quantization, idx.rescore, idx.oversample) == ("binary", "float", 4)
    assert from_spec("hnsw:M=32,ef=128", dim=8).get_config()["M"] == 32
    assert from_spec("matryoshka:first_dims=4", dim=8).first_dims == 4
    for bad in ("ivf", "hnsw:bogus=1", "int8:quantization=fp16", "hnsw:M"):
        with pytest.raises(ConfigError):
            from_spec(bad, dim=8)


def test_search_ids_follow_adds_removals_and_compaction(hp: Any) -> None:
    # search_ids caches its id lookup table: it must follow every change of the rows
    x = np.eye(6, dtype=np.float32)
    idx = FlatIndex(6)
    idx.add(x[:3], ["a", "b", "c"])
    assert idx.search_ids(x[2], k=1)[1].tolist() == [["c"]]
    idx.add(x[3:], ["d", "e", "f"])
    assert idx.search_ids(x[5], k=1)[1].tolist() == [["f"]]
    idx.remove(["b", "c"])
    idx.compact()  # rows renumbered: d is now row 1
    assert idx.search_ids(x[3], k=1)[1].tolist() == [["d"]]
    assert idx.search_ids(x[1], k=4)[1][0].tolist() == ["a", "d", "e", "f"]  # ties at 0 by row
    idx.add(x[1:3], ["b2", "c2"])
    assert idx.search_ids(x[2], k=1)[1].tolist() == [["c2"]]


def test_binary_rescore_matches_numpy_pipeline(hp: Any) -> None:
    # the compiled path (Hamming kernel + gather-dot rescoring) against the same pipeline in numpy
    from embedstack.index import _kernels as K

    x, q = hp.clustered(3000, 64), hp.clustered(20, 64, seed=4)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    _, cand = K.hamming_select_ref(K.pack_bits(qn).T.copy(), K.pack_bits(xn), np.zeros(0, dtype=np.int64), 5 * 7)
    exact = np.einsum("icd,id->ic", xn[cand], qn)
    order = np.argsort(-exact, axis=1, kind="stable")[:, :5]
    results = {}
    for rescore in ("float", "int8"):
        idx = FlatIndex(64, quantization="binary", rescore=rescore, oversample=7)
        idx.add(x, hp.ids_of(3000))
        results[rescore] = idx.search_ids(q, k=5)
    scores, ids = results["float"]
    assert ids.tolist() == [[f"d{j}" for j in row] for row in np.take_along_axis(cand, order, axis=1)]
    np.testing.assert_allclose(scores, np.take_along_axis(exact, order, axis=1), rtol=1e-5, atol=1e-6)
    overlap = [len(set(a) & set(b)) / 5 for a, b in zip(ids, results["int8"][1], strict=True)]
    assert np.mean(overlap) >= 0.9  # int8 rescoring reorders the same candidates almost identically
