"""The blocked exact scan (index/_scan.py) and its top-k kernel: same answers on every path.

Paths: threads 1..3 (work split into units across threads, or all on the calling thread), float32
and int32 score blocks, the int8 integer-GEMM first stage (torch ``_int_mm``, AVX-512 VNNI where the CPU has
it) against the float fallback a machine without torch, or without those units, gets.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from embedstack.errors import ConfigError
from embedstack.index import FlatIndex, _scan
from embedstack.index import _kernels as K


def _brute(q: np.ndarray, x: np.ndarray, k: int, dead: list[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    s = q @ x.T
    s[:, list(dead)] = -np.inf
    ids = np.broadcast_to(np.arange(x.shape[0]), s.shape)
    order = np.lexsort((ids, -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, axis=1), order


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("nb", [1, 15, 16, 17, 63, 64, 65, 100, 1000])
@pytest.mark.parametrize("spread", ["narrow", "wide"])
def test_topk_block_matches_reference(dtype: type, nb: int, spread: str) -> None:
    """Every run size around the 64- and 16-score runs, many ties (narrow) and int32 extremes (wide)."""
    rng = np.random.default_rng(nb)
    k = 7
    hi = 50 if spread == "narrow" else 2**31 - 1
    blocks = [(rng.integers(-hi, hi, size=(5, nb)) if dtype is np.int32
               else rng.standard_normal((5, nb)) * (1.0 if spread == "narrow" else 1e30)).astype(dtype)
              for _ in range(3)]
    if spread == "wide" and dtype is np.int32:
        blocks[0][:, ::5] = 2**31 - 1  # ties at the top of the range
    elif spread == "wide":
        blocks[1][:, ::3] = -np.inf
    bs = np.full((8, k), -np.inf, dtype=np.float32)
    bi = np.full((8, k), -1, dtype=np.int64)
    for j, b in enumerate(blocks):
        K.topk_block(b, j * nb, bs, bi, 2)  # rows 2..6 of the heaps
    got_s, got_i = K.finalize_topk(bs, bi)
    allscores = np.concatenate(blocks, axis=1).astype(np.float32)
    ids = np.broadcast_to(np.arange(allscores.shape[1]), allscores.shape)
    order = np.lexsort((ids, -allscores), axis=1)[:, :k]
    want_s = np.take_along_axis(allscores, order, axis=1)
    m = min(k, allscores.shape[1])
    np.testing.assert_array_equal(got_s[2:7, :m], want_s[:, :m])
    want_i = np.where(want_s[:, :m] > -np.inf, order[:, :m], -1)  # -inf never enters a heap
    np.testing.assert_array_equal(got_i[2:7, :m], want_i)  # ties: the lower id, as everywhere
    rs = np.full((5, k), -np.inf, dtype=np.float32)  # the numpy twin gives the same heaps' contents
    ri = np.full((5, k), -1, dtype=np.int64)
    for j, b in enumerate(blocks):
        K.topk_merge_ref(b, j * nb, rs, ri)
    ref_s, ref_i = K.finalize_topk(rs, ri)
    np.testing.assert_array_equal(ref_s[:, :m], want_s[:, :m])
    np.testing.assert_array_equal(ref_i[:, :m], want_i)
    assert np.all(got_i[[0, 1, 7]] == -1)  # rows outside the block untouched


def test_topk_block_never_takes_the_int32_fill_of_removed_rows() -> None:
    """The scan fills removed rows with the int32 minimum: they stay out even of a heap not yet full."""
    bs = np.full((1, 4), -np.inf, dtype=np.float32)
    bi = np.full((1, 4), -1, dtype=np.int64)
    row = np.full((1, 130), np.iinfo(np.int32).min, dtype=np.int32)
    row[0, [7, 70, 129]] = [-5, 3, -(2**31) + 1]
    K.topk_block(row, 0, bs, bi)
    s, i = K.finalize_topk(bs, bi)
    assert i.tolist() == [[70, 7, 129, -1]]
    assert s[0, :3].tolist() == [3.0, -5.0, float(np.float32(-(2**31) + 1))]
    rs = np.full((1, 4), -np.inf, dtype=np.float32)  # the numpy twin agrees
    ri = np.full((1, 4), -1, dtype=np.int64)
    K.topk_merge_ref(row, 0, rs, ri)
    assert K.finalize_topk(rs, ri)[1].tolist() == [[70, 7, 129, -1]]


def test_topk_block_skips_minus_inf_and_keeps_ties_by_id() -> None:
    bs = np.full((1, 3), -np.inf, dtype=np.float32)
    bi = np.full((1, 3), -1, dtype=np.int64)
    row = np.full((1, 40), -np.inf, dtype=np.float32)
    row[0, [3, 20, 33, 39]] = 1.0  # four equal scores: ids 3, 20, 33 win
    K.topk_block(row, 100, bs, bi)
    s, i = K.finalize_topk(bs, bi)
    assert i.tolist() == [[103, 120, 133]] and s.tolist() == [[1.0, 1.0, 1.0]]


@pytest.mark.parametrize("nq", [1, 15, 16, 17, 40])
def test_topk_block_t_matches_topk_block(nq: int) -> None:
    """The documents x queries merge (fbgemm's layout) keeps what the queries x documents one keeps: ties to
    the lower id, -inf never entering, query counts around the 16-query groups."""
    rng = np.random.default_rng(nq)
    k = 6
    blocks = [np.round(rng.standard_normal((nq, 70)) * 3).astype(np.float32) for _ in range(3)]  # many ties
    blocks[1][:, ::4] = -np.inf
    blocks[0][:, 3:] = -np.inf  # 3 finite scores before a heap of 6 is full: -inf must not fill it
    heaps = []
    for transposed in (False, True):
        bs = np.full((nq + 3, k), -np.inf, dtype=np.float32)
        bi = np.full((nq + 3, k), -1, dtype=np.int64)
        for j, b in enumerate(blocks):
            if transposed:
                K.topk_block_t(np.ascontiguousarray(b.T), j * 70, bs, bi, 1)
            else:
                K.topk_block(b, j * 70, bs, bi, 1)
        heaps.append(K.finalize_topk(bs, bi))
    np.testing.assert_array_equal(heaps[0][0], heaps[1][0])
    np.testing.assert_array_equal(heaps[0][1], heaps[1][1])
    assert np.all(heaps[1][1][[0, nq + 1, nq + 2]] == -1)  # rows outside the block untouched
    # a heap given only block 0 (3 finite scores) keeps 3 and pads the rest with -inf / -1
    bs = np.full((nq, k), -np.inf, dtype=np.float32)
    bi = np.full((nq, k), -1, dtype=np.int64)
    K.topk_block_t(np.ascontiguousarray(blocks[0].T), 0, bs, bi)
    s, i = K.finalize_topk(bs, bi)
    assert np.all(np.isin(i[:, :3], [0, 1, 2])) and np.all(i[:, 3:] == -1) and np.all(s[:, 3:] == -np.inf)


@pytest.mark.parametrize("threads", [1, 2])
def test_scan_topk_transposed_equals_brute_force(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_scan, "_MIN_SPLIT", 0)
    monkeypatch.setattr(_scan, "_MAX_BLOCK_ROWS", 256)
    rng = np.random.default_rng(7 + threads)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    x[100] = x[200]
    q = rng.standard_normal((37, 16)).astype(np.float32)
    dead = np.array([5, 200, 2999])

    def score_t(qa: int, qe: int, s: int, e: int) -> np.ndarray:
        return x[s:e] @ q[qa:qe].T  # rows x queries

    s, i = _scan.scan_topk(score_t, len(q), len(x), 10, dim=16, query_block=8, dead=dead, threads=threads,
                           transposed=True)
    ws, wi = _brute(q, x, 10, dead.tolist())
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_allclose(s, ws, rtol=1e-6)
    # more results asked than live rows: pads, never a removed row
    s, i = _scan.scan_topk(lambda qa, qe, a, e: x[a:e][:, :4] @ q[qa:qe, :4].T, len(q), 5, 8, dim=4,
                           query_block=8, dead=np.array([1, 3]), threads=threads, transposed=True)
    assert np.all(i[:, 3:] == -1) and np.all(s[:, 3:] == -np.inf)
    assert set(np.unique(i[:, :3])) == {0, 2, 4}
    with pytest.raises(ValueError, match="-inf"):
        _scan.scan_topk(score_t, len(q), len(x), 10, dim=16, query_block=8, transposed=True, fill=0.0)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_scan_topk_equals_brute_force(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_scan, "_MIN_SPLIT", 0)  # split even this small scan into units
    monkeypatch.setattr(_scan, "_MAX_BLOCK_ROWS", 256)
    rng = np.random.default_rng(threads)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    x[100] = x[200]  # an exact tie across units
    q = rng.standard_normal((37, 16)).astype(np.float32)
    dead = np.array([5, 200, 2999])

    def score(qa: int, qe: int, s: int, e: int) -> np.ndarray:
        return q[qa:qe] @ x[s:e].T

    s, i = _scan.scan_topk(score, len(q), len(x), 10, dim=16, query_block=8, dead=dead, threads=threads)
    ws, wi = _brute(q, x, 10, dead.tolist())
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_allclose(s, ws, rtol=1e-6)


def test_scan_topk_pads_when_fewer_live_rows() -> None:
    x = np.eye(4, dtype=np.float32)
    s, i = _scan.scan_topk(lambda qa, qe, a, e: x[qa:qe] @ x[a:e].T, 2, 4, 6, dim=4, query_block=2,
                           dead=np.array([1]), threads=2)
    assert (i[:, 3:] == -1).all() and np.isneginf(s[:, 3:]).all()
    assert set(i[0, :3].tolist()) == {0, 2, 3}


@pytest.mark.parametrize("quant", ["none", "fp16", "int8"])
def test_flat_threads_do_not_change_results(quant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_scan, "_MIN_SPLIT", 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 32)).astype(np.float32)
    q = rng.standard_normal((70, 32)).astype(np.float32)
    ids = [str(j) for j in range(len(x))]
    res = []
    for t in (1, 2, 4):
        idx = FlatIndex(32, quantization=quant, threads=t)
        idx.add(x, ids)
        idx.remove(["7", "4000"])
        res.append(idx.search_ids(q, 10))
        res.append(idx.search_ids(q[:1], 10))  # one query: a matrix-vector scan split across threads
    for _s, i in res[2:]:
        assert i.shape in (res[0][1].shape, res[1][1].shape)
    np.testing.assert_array_equal(res[0][1], res[2][1])
    np.testing.assert_array_equal(res[0][1], res[4][1])
    np.testing.assert_array_equal(res[1][1], res[3][1])
    np.testing.assert_array_equal(res[1][1], res[0][1][:1])
    assert "7" not in set(res[0][1].ravel())


@pytest.fixture
def forced_int_gemm(monkeypatch: pytest.MonkeyPatch):
    """torch's integer GEMM on any CPU (``EMBEDSTACK_INT8_GEMM=torch``; without VNNI / AMX a slow scalar loop, but
    exact): both first stages are tested everywhere."""
    pytest.importorskip("torch")
    yield from _forced(monkeypatch, "torch")


def _forced(monkeypatch: pytest.MonkeyPatch, mode: str):
    """``EMBEDSTACK_INT8_GEMM=mode`` with the backend caches cleared before and after."""
    monkeypatch.setenv("EMBEDSTACK_INT8_GEMM", mode)
    _scan._torch_int_mm.cache_clear()
    _scan.fbgemm_product.cache_clear()
    yield
    _scan._torch_int_mm.cache_clear()
    _scan.fbgemm_product.cache_clear()


def test_int8_integer_gemm_is_exact(forced_int_gemm) -> None:
    mm = _scan._torch_int_mm()
    assert mm is not None
    import torch

    rng = np.random.default_rng(1)
    a = rng.integers(-127, 128, size=(40, 96)).astype(np.int8)
    b = rng.integers(-127, 128, size=(300, 96)).astype(np.int8)
    got = mm(torch.from_numpy(a), torch.from_numpy(b).T).numpy()
    np.testing.assert_array_equal(got, a.astype(np.int32) @ b.astype(np.int32).T)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("first", ["int_mm", "fbgemm"])
def test_int8_paths_agree(metric: str, first: str, monkeypatch: pytest.MonkeyPatch, forced_int_gemm) -> None:
    """An integer first stage (``torch._int_mm``, or fbgemm's u8 x s8 product with 63-level queries) + rescoring
    ranks as the float path over int8 codes does, and ``rescore="float"`` gives the float32 answer."""
    torch = pytest.importorskip("torch")
    if first == "fbgemm" and "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch build has no fbgemm engine")
    real_mm = _scan._torch_int_mm()
    assert real_mm is not None  # forced: the integer GEMM runs on this CPU, units or not
    op = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32
    calls = []

    def product(*args: object) -> object:
        calls.append(1)
        return op(*args)

    rng = np.random.default_rng(2)
    x = (rng.standard_normal((4000, 48)) * np.linspace(2.0, 0.2, 48)).astype(np.float32)
    q = (rng.standard_normal((64, 48)) * np.linspace(2.0, 0.2, 48)).astype(np.float32)
    ids = [str(j) for j in range(len(x))]

    def run(rescore: str | None, integer: bool) -> tuple[np.ndarray, np.ndarray]:
        with monkeypatch.context() as m:
            m.setattr(_scan, "_torch_int_mm", lambda: real_mm if integer and first == "int_mm" else None)
            m.setattr(_scan, "fbgemm_product", lambda: product if integer and first == "fbgemm" else None)
            idx = FlatIndex(48, metric=metric, quantization="int8", rescore=rescore)
            idx.add(x, ids)
            return idx.search_ids(q, 10)

    s_int, i_int = run(None, True)
    assert bool(calls) == (first == "fbgemm" and metric != "l2")  # l2 scores the codes in float32 (norms)
    s_float, i_float = run(None, False)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i_int, i_float, strict=True)])
    assert overlap >= 0.99
    np.testing.assert_allclose(s_int[:, 0], s_float[:, 0], rtol=1e-4, atol=1e-4)

    exact = FlatIndex(48, metric=metric)
    exact.add(x, ids)
    s_ref, i_ref = exact.search_ids(q, 10)
    for integer in (True, False):
        s_r, i_r = run("float", integer)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i_r, i_ref, strict=True)])
        assert recall >= 0.99
        hit = i_r == i_ref
        np.testing.assert_allclose(s_r[hit], s_ref[hit], rtol=1e-5, atol=1e-5)


@pytest.fixture
def forced_fbgemm(monkeypatch: pytest.MonkeyPatch):
    """fbgemm's first stage on any CPU (``EMBEDSTACK_INT8_GEMM=fbgemm``), where torch has the engine."""
    torch = pytest.importorskip("torch")
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch build has no fbgemm engine")
    yield from _forced(monkeypatch, "fbgemm")


def test_fbgemm_first_stage_skips_removed_rows_and_matches_the_float_path(forced_fbgemm) -> None:
    """fbgemm's first stage (documents x queries blocks, :func:`topk_block_t`) over many blocks, with removed
    rows and a query count that is not a multiple of the query block: the same ids as the float path."""
    assert _scan.int8_backend() == "fbgemm"
    rng = np.random.default_rng(5)
    x = rng.standard_normal((20000, 64)).astype(np.float32)
    q = rng.standard_normal((300, 64)).astype(np.float32)
    ids = [str(j) for j in range(len(x))]
    idx = FlatIndex(64, quantization="int8", rescore="float", query_block=128, threads=2)
    idx.add(x, ids)
    ref = FlatIndex(64, threads=2)
    ref.add(x, ids)
    _, top = ref.search_ids(q, 5)
    gone = sorted(set(top[:40, 0]))
    idx.remove(gone)
    ref.remove(gone)
    s, i = idx.search_ids(q, 5)
    s_ref, i_ref = ref.search_ids(q, 5)
    assert not set(gone) & set(i.ravel())
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(i, i_ref, strict=True)])
    assert recall >= 0.99
    np.testing.assert_allclose(s[i == i_ref], s_ref[i == i_ref], rtol=1e-5, atol=1e-5)


def test_fbgemm_product_as_the_scan_calls_it_is_the_integer_sum_times_the_query_scale() -> None:
    """int8 codes as the op's float input (scale 1, zero point 128: 1..255) against queries quantized to 63 levels:
    each output is the exact integer sum times the query's scale (no zero-point or saturation error, even at the
    extreme codes)."""
    torch = pytest.importorskip("torch")
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch build has no fbgemm engine")
    from embedstack.neural.quantize import FBGEMM_LEVELS, FBGEMM_WEIGHT_LEVELS, fbgemm_pack, quantize_weight

    rng = np.random.default_rng(11)
    codes = rng.integers(-127, 128, size=(300, 384)).astype(np.int8)
    codes[0], codes[1] = 127, -127  # the largest pair sums
    qw = torch.from_numpy(rng.standard_normal((40, 384)).astype(np.float32))
    qc, qs = quantize_weight(qw, FBGEMM_WEIGHT_LEVELS)
    out = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
        torch.from_numpy(codes).float(), 1.0, FBGEMM_LEVELS + 1, fbgemm_pack(qc, qs)).numpy()
    want = (codes.astype(np.int64) @ qc.numpy().astype(np.int64).T) * qs.numpy().astype(np.float64)[None, :]
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)


def test_fbgemm_first_stage_on_a_memory_mapped_index(tmp_path: object, forced_fbgemm) -> None:
    rng = np.random.default_rng(12)
    x = rng.standard_normal((5000, 32)).astype(np.float32)
    q = rng.standard_normal((40, 32)).astype(np.float32)
    idx = FlatIndex(32, quantization="int8", rescore="float")
    idx.add(x, [str(j) for j in range(len(x))])
    want = idx.search_ids(q, 10)
    idx.save(tmp_path / "idx")  # type: ignore[operator]
    loaded = FlatIndex.load(tmp_path / "idx", mmap=True)  # type: ignore[operator]
    assert not loaded._codes.flags.owndata  # a view of the file, not a copy
    got = loaded.search_ids(q, 10)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])


def test_int8_rescore_float_keeps_codes_as_first_stage(tmp_path: object) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 32)).astype(np.float32)
    idx = FlatIndex(32, quantization="int8", rescore="float")
    idx.add(x, [str(j) for j in range(300)])
    assert idx.memory_bytes() == 300 * 32  # the codes; the float rows only rescore
    assert idx.nbytes() > 300 * 32 * 4


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="threads"):
        FlatIndex(8, threads=0)
    with pytest.raises(ConfigError, match="rescore='float'"):
        FlatIndex(8, quantization="int8", rescore="int8")
    with pytest.raises(ConfigError, match="applies to"):
        FlatIndex(8, rescore="float")


def test_integer_gemm_only_where_the_cpu_has_int8_units(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without AVX-512 VNNI / AMX, torch's _int_mm is a scalar loop (about 100x slower than float32 products on an
    AMD EPYC with AVX2): int8 codes are then scored by fbgemm's u8 x s8 product (or as float32 without it);
    EMBEDSTACK_INT8_GEMM overrides either way."""
    torch = pytest.importorskip("torch")
    fbgemm = "fbgemm" if "fbgemm" in torch.backends.quantized.supported_engines else "float"
    cases = [({"avx2", "fma"}, "", fbgemm), ({"avx2", "avx_vnni"}, "", fbgemm),
             ({"avx512f", "avx512_vnni"}, "", "vnni"), ({"avx512_vnni", "amx_int8"}, "", "amx"),
             ({"avx512_vnni"}, "off", "float"), ({"avx2", "fma"}, "torch", "int-gemm"),
             ({"avx512_vnni"}, "fbgemm", fbgemm), ({"avx2"}, "numpy", "float"), ({"avx2"}, "0", "float"),
             ({"avx2"}, "1", "int-gemm"), ({"avx2"}, "on", "int-gemm"), ({"avx2"}, " FBGEMM ", fbgemm),
             (set(), "", fbgemm), ({"torch says vnni"}, "", "vnni")]  # flags unreadable: torch's CPUID probe decides
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    try:
        for flags, env, want in cases:
            probe = "torch says vnni" in flags
            monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda p=probe: p)
            monkeypatch.setattr(_scan, "cpu_features", lambda f=frozenset(flags - {"torch says vnni"}): f)
            monkeypatch.setenv("EMBEDSTACK_INT8_GEMM", env)
            _scan._torch_int_mm.cache_clear()
            _scan.fbgemm_product.cache_clear()
            assert _scan.int8_backend() == want, (flags, env)
            assert (_scan._torch_int_mm() is None) == (want in ("float", "fbgemm"))
            assert (_scan.fbgemm_product() is None) == (want != "fbgemm")
        monkeypatch.setenv("EMBEDSTACK_INT8_GEMM", "int_mm")  # not a value: a typed error naming the ones that are
        _scan._torch_int_mm.cache_clear()
        with pytest.raises(ConfigError, match="EMBEDSTACK_INT8_GEMM='int_mm'.*fbgemm"):
            _scan.int8_backend()
    finally:
        _scan._torch_int_mm.cache_clear()
        _scan.fbgemm_product.cache_clear()


def test_backend_is_reported() -> None:
    assert _scan.int8_backend() in ("vnni", "amx", "int-gemm", "fbgemm", "float")
    assert isinstance(_scan.cpu_features(), frozenset)
    from embedstack._threads import available_cores

    assert available_cores() >= 1


def test_concurrent_searches_share_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_scan, "_MIN_SPLIT", 0)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6000, 24)).astype(np.float32)
    q = rng.standard_normal((40, 24)).astype(np.float32)
    idx = FlatIndex(24, threads=2)
    idx.add(x, [str(j) for j in range(len(x))])
    want = idx.search_ids(q, 5)[1]
    got: list[np.ndarray] = []

    def reader() -> None:
        got.append(idx.search_ids(q, 5)[1])

    ts = [threading.Thread(target=reader) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(got) == 6
    for g in got:
        np.testing.assert_array_equal(g, want)
