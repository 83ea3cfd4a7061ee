"""Every compiled kernel agrees with its numpy twin."""

from __future__ import annotations

import numpy as np
import pytest

from embedstack.index import _kernels as K


def test_pack_bits_matches_numpy_packbits() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 100)).astype(np.float32)
    codes = K.pack_bits(x)
    assert codes.shape == (2, 7) and codes.dtype == np.uint64
    np.testing.assert_array_equal(K.words_to_rows(codes, 100), np.packbits(x > 0, axis=1))


@pytest.mark.parametrize("n,dim,c", [(50, 20, 1), (50, 20, 47), (3000, 100, 10), (3000, 384, 100)])
def test_hamming_select_matches_reference(n: int, dim: int, c: int) -> None:
    rng = np.random.default_rng(n + c)
    codes = K.pack_bits(rng.standard_normal((n, dim)).astype(np.float32))
    q = K.pack_bits(rng.standard_normal((9, dim)).astype(np.float32)).T.copy()
    dead = np.array([1, 3, 7], dtype=np.int64)
    d1, i1 = K.hamming_select(q, codes, dead, c)
    d2, i2 = K.hamming_select_ref(q, codes, dead, c)
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(i1, i2)
    assert not np.isin(i1, dead).any()


def test_hamming_distance_by_hand() -> None:
    x = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [-1, -1, -1, -1]], dtype=np.float32)
    q = K.pack_bits(np.array([[1, 1, 1, 1]], dtype=np.float32)).T.copy()
    d, i = K.hamming_select(q, K.pack_bits(x), np.zeros(0, dtype=np.int64), 3)
    assert d.tolist() == [[0, 2, 4]] and i.tolist() == [[0, 1, 2]]


def test_topk_block_matches_reference_over_blocks() -> None:
    rng = np.random.default_rng(1)
    s = rng.standard_normal((6, 1000)).astype(np.float32)
    s[:, 10:20] = 5.0  # ties: lower id wins
    bs = np.full((6, 15), -np.inf, dtype=np.float32)
    bi = np.full((6, 15), -1, dtype=np.int64)
    for a in range(0, 1000, 128):
        K.topk_block(s[:, a : a + 128], a, bs, bi)
    fs, fi = K.finalize_topk(bs, bi)
    order = np.lexsort((np.broadcast_to(np.arange(1000), s.shape), -s), axis=1)[:, :15]
    np.testing.assert_array_equal(fi, order)
    np.testing.assert_allclose(fs, np.take_along_axis(s, order, axis=1))
    rs = np.full((6, 15), -np.inf, dtype=np.float32)
    ri = np.full((6, 15), -1, dtype=np.int64)
    for a in range(0, 1000, 128):
        K.topk_merge_ref(s[:, a : a + 128], a, rs, ri)
    np.testing.assert_allclose(K.finalize_topk(rs, ri)[0], fs)


def test_int8_dot_matches_reference() -> None:
    rng = np.random.default_rng(2)
    q = rng.standard_normal((3, 33)).astype(np.float32)
    c = rng.integers(-127, 128, (200, 33)).astype(np.int8)
    np.testing.assert_allclose(K.int8_dot(q, c), K.int8_dot_ref(q, c), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dim", [64, 100, 320, 384, 448, 768])
@pytest.mark.parametrize("c", [1, 7, 150])
def test_hamming_select_any_split_matches_reference_with_ties(dim: int, c: int) -> None:
    # 5000 codes cross the kernel's slice and block boundaries; only 40 distinct codes, so most
    # distances tie and the (distance, id) order decides; every word count path (6/4/2/1 words)
    rng = np.random.default_rng(dim + c)
    base = rng.standard_normal((40, dim)).astype(np.float32)
    x = base[rng.integers(0, 40, 5000)]
    codes = K.pack_bits(x)
    q = K.pack_bits(np.vstack([base[:3], rng.standard_normal((4, dim)).astype(np.float32)])).T.copy()
    dead = np.unique(rng.integers(0, 5000, 300)).astype(np.int64)
    ref_d, ref_i = K.hamming_select_ref(q, codes, dead, c)
    for group, segments in [(None, None), (1, 1), (3, 1), (7, 1), (2, 3), (7, 5)]:
        d, i = K.hamming_select(q, codes, dead, c, group=group, segments=segments)
        np.testing.assert_array_equal(d, ref_d)
        np.testing.assert_array_equal(i, ref_i)
    assert not np.isin(ref_i, dead).any()
    assert (ref_d[:3, 0] == 0).all()  # a query equal to a stored code is at distance 0


def test_hamming_select_segments_smaller_than_c() -> None:
    # 4 segments of ~25 codes each cannot fill c=60 alone: the merge must still return the true 60
    rng = np.random.default_rng(5)
    codes = K.pack_bits(rng.standard_normal((100, 384)).astype(np.float32))
    q = K.pack_bits(rng.standard_normal((2, 384)).astype(np.float32)).T.copy()
    dead = np.array([0, 50, 99], dtype=np.int64)
    d, i = K.hamming_select(q, codes, dead, 60, group=1, segments=4)
    ref_d, ref_i = K.hamming_select_ref(q, codes, dead, 60)
    np.testing.assert_array_equal(d, ref_d)
    np.testing.assert_array_equal(i, ref_i)


@pytest.mark.parametrize("dtype", [np.float32, np.int8])
def test_gather_dot_matches_reference(dtype: type) -> None:
    rng = np.random.default_rng(3)
    rows = (rng.standard_normal((300, 40)) * (40 if dtype is np.int8 else 1)).astype(dtype)
    q = rng.standard_normal((5, 40)).astype(np.float32)
    cand = rng.integers(0, 300, (5, 17))
    got = K.gather_dot(q, rows, cand)
    want = np.array([[q[i] @ rows[j].astype(np.float32) for j in cand[i]] for i in range(5)], dtype=np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(K.gather_dot_ref(q, rows, cand), want, rtol=1e-4, atol=1e-3)


def _csr(rng: np.random.Generator, rows: int, cols: int, per: int) -> tuple[np.ndarray, np.ndarray]:
    lens = rng.integers(1, per + 1, size=rows)
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    indices = np.concatenate([np.sort(rng.choice(cols, size=n, replace=False)) for n in lens]).astype(np.int32)
    return indptr, indices


@pytest.mark.skipif(not K.HAVE_NUMBA, reason="the compiled kernels need numba (the fast extra)")
def test_late_interaction_kernels_match_their_references() -> None:
    rng = np.random.default_rng(3)
    n_cents, n_docs, nq, dim = 50, 300, 7, 16
    # probe: documents of the probed lists, dead ones dropped, sorted
    indptr, indices = _csr(rng, n_cents, n_docs, 40)
    dead = (rng.random(n_docs) < 0.1).astype(np.uint8)
    cents = np.array([3, 7, 7, 49, 0])
    got = K.probe_docs(cents, indptr, indices, dead)
    np.testing.assert_array_equal(got, K.probe_docs_ref(cents, indptr, indices, dead))
    assert got.dtype == np.int64 and not dead[got].any() and np.all(np.diff(got) > 0)
    # centroid interaction: per document, the best centroid per query token, summed
    d_indptr, d_indices = _csr(rng, n_docs, n_cents, 9)
    sims_t = rng.standard_normal((n_cents, nq)).astype(np.float32)
    docs = np.array([5, 0, 299, 17, 17], dtype=np.int64)
    got = K.centroid_interaction(sims_t, d_indptr, d_indices, docs)
    np.testing.assert_allclose(got, K.centroid_interaction_ref(sims_t, d_indptr, d_indices, docs), rtol=1e-5)
    by_hand = sims_t[d_indices[d_indptr[17]:d_indptr[18]]].max(axis=0).sum()
    assert got[3] == pytest.approx(by_hand, rel=1e-5)
    # residual decoding: centroid + the bucket values a byte packs, renormalised or not
    lut = rng.standard_normal((256, 4)).astype(np.float32) * 0.1
    packed = rng.integers(0, 256, size=(80, dim // 4), dtype=np.uint8)
    assign = rng.integers(0, n_cents, size=80).astype(np.uint16)
    cents_v = rng.standard_normal((n_cents, dim)).astype(np.float32)
    pos = np.array([79, 0, 3, 3, 41])
    for normalize in (False, True):
        got = K.decode_residuals(packed, assign, cents_v, lut, pos, normalize)
        np.testing.assert_allclose(got, K.decode_residuals_ref(packed, assign, cents_v, lut, pos, normalize),
                                   rtol=1e-5, atol=1e-6)
    raw = K.decode_residuals(packed, assign, cents_v, lut, pos, False)
    np.testing.assert_allclose(raw[0, :4], lut[packed[79, 0]] + cents_v[assign[79], :4], rtol=1e-6)
    # MaxSim per run of rows
    sims = rng.standard_normal((40, nq)).astype(np.float32)
    starts = np.array([0, 1, 9, 30])
    got = K.segment_maxsum(sims, starts)
    np.testing.assert_allclose(got, K.segment_maxsum_ref(sims, starts), rtol=1e-5)
    assert got[2] == pytest.approx(sims[9:30].max(axis=0).sum(), rel=1e-5)
    with pytest.raises(ValueError, match="runs must start at row 0"):
        K.segment_maxsum(sims, np.array([0, 9, 40]))  # a run past the last row would read outside sims
