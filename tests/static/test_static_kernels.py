"""Each numba kernel against its pure-numpy twin in _reference.py on tiny cases (same draws)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

pytest.importorskip("numba")

from embedstack.static import _kernels as K  # noqa: E402
from embedstack.static import _reference as R  # noqa: E402
from embedstack.static.word2vec import alias_table, huffman_tree, keep_thresholds  # noqa: E402

TABLES = K.make_tables()


def _weights(v: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.5, (v, d)).astype(np.float32), rng.normal(0, 0.5, (v, d)).astype(np.float32))


def test_sg_ns_step_matches_reference():
    syn0, syn1 = _weights(6, 8)
    negs = np.array([2, 3, 1, 5], dtype=np.int32)  # 1 == target: skipped like word2vec.c
    a0, a1 = syn0.copy(), syn1.copy()
    work = np.zeros(8, np.float32)
    loss_k = K.sg_ns_step(syn0, syn1, 4, 1, negs, 0.1, *TABLES, work)
    loss_r = R.sg_ns_step(a0, a1, 4, 1, negs, 0.1, TABLES)
    np.testing.assert_allclose(syn0, a0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(syn1, a1, rtol=1e-5, atol=1e-6)
    assert loss_k == pytest.approx(loss_r, rel=1e-5)
    assert not np.allclose(syn0[4], _weights(6, 8)[0][4])  # the input row moved


def test_ns_step_scores_every_row_on_entry_and_a_repeated_negative_twice():
    """All scores from the rows on entry; a negative drawn twice moves its row twice, and its second
    gradient reads the row as its first draw left it (kernel and twin alike)."""
    syn0, syn1 = _weights(6, 8, seed=3)
    x, rows = syn0[4].copy().astype(np.float64), syn1.copy().astype(np.float64)
    negs = np.array([2, 2, 3], dtype=np.int32)
    a0, a1 = syn0.copy(), syn1.copy()
    K.sg_ns_step(syn0, syn1, 4, 1, negs, 0.1, *TABLES, np.zeros(8, np.float32))
    R.sg_ns_step(a0, a1, 4, 1, negs, 0.1, TABLES)
    np.testing.assert_allclose(syn0, a0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(syn1, a1, rtol=1e-5, atol=1e-6)

    def g(t: int, label: float) -> float:
        f = float(x @ rows[t])
        return (label - float(TABLES[0][int((f + 6) * (1000 / 12))])) * 0.1

    g1, g2, g3 = g(1, 1.0), g(2, 0.0), g(3, 0.0)  # both draws of row 2 score it as it was on entry
    np.testing.assert_allclose(syn1[2], rows[2] + 2 * g2 * x, rtol=1e-5, atol=1e-6)
    moved2 = rows[2] + g2 * x
    expect_in = x + g1 * rows[1] + g2 * rows[2] + g2 * moved2 + g3 * rows[3]
    np.testing.assert_allclose(syn0[4], expect_in, rtol=1e-5, atol=1e-6)


@functools.cache
def _dot_wrapper():
    """One jitted caller of the intrinsic for every width (compiled once per argument types)."""
    import numba

    @numba.njit
    def rows(a, i, b, j, n):
        return K._dot(a, i, b, j, n)

    return rows


@pytest.mark.parametrize("n", [0, 1, 8, 15, 16, 17, 31, 32, 37, 100, 300])
def test_dot_intrinsic_every_width(n):
    """The 16-lane dot product: full steps, the overlapped last step, widths under 16, 1-D and 2-D."""
    rows = _dot_wrapper()
    rng = np.random.default_rng(n)
    a = rng.normal(size=(3, max(n, 1))).astype(np.float32)
    b = rng.normal(size=(4, max(n, 1))).astype(np.float32)
    want = float(a[2, :n].astype(np.float64) @ b[1, :n].astype(np.float64))
    assert rows(a, 2, b, 1, n) == pytest.approx(want, rel=1e-5, abs=1e-5)
    assert rows(a[2].copy(), 0, b, 1, n) == pytest.approx(want, rel=1e-5, abs=1e-5)  # a 1-D vector, used whole
    assert rows(a, 2, b[1].copy(), 7, n) == pytest.approx(want, rel=1e-5, abs=1e-5)  # 1-D second: its index unused


@pytest.mark.parametrize("d", [16, 37, 100])
def test_sg_ns_step_matches_reference_at_vector_widths(d):
    syn0, syn1 = _weights(6, d, seed=d)
    syn0 *= 0.3  # keep the scores inside the sigmoid table
    negs = np.array([2, 3, 3, 5], dtype=np.int32)
    a0, a1 = syn0.copy(), syn1.copy()
    K.sg_ns_step(syn0, syn1, 4, 1, negs, 0.1, *TABLES, np.zeros(d, np.float32))
    R.sg_ns_step(a0, a1, 4, 1, negs, 0.1, TABLES)
    np.testing.assert_allclose(syn0, a0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(syn1, a1, rtol=1e-5, atol=1e-6)


def test_ns_step_hand_computed():
    # one positive, no negatives: g = (1 - sigma(x.y)) * alpha; y += g x ; x += g y_old
    syn0 = np.array([[0.0, 0.0], [0.5, -0.25]], np.float32)
    syn1 = np.array([[0.2, 0.4], [0.0, 0.0]], np.float32)
    x, y = syn0[1].copy(), syn1[0].copy()
    f = float(x @ y)
    idx = int((f + 6) * (1000 / 12))
    g = (1.0 - TABLES[0][idx]) * 0.5
    K.sg_ns_step(syn0, syn1, 1, 0, np.zeros(0, np.int32), 0.5, *TABLES, np.zeros(2, np.float32))
    np.testing.assert_allclose(syn1[0], y + g * x, rtol=1e-6)
    np.testing.assert_allclose(syn0[1], x + g * y, rtol=1e-6)


@pytest.mark.parametrize("f", [6.0, -6.0, np.nextafter(np.float32(6.0), np.float32(0.0)), 7.5, -7.5])
@pytest.mark.parametrize("positive", [True, False])
def test_ns_grad_never_reads_past_the_tables(f, positive):
    # A score of exactly +-MAX_EXP once indexed slot EXP_TABLE_SIZE, one past the end: whatever lay
    # there (here NaN) became the gradient, and a long fastText run diverged. Tables are views of
    # longer arrays whose extra slots are NaN, so a read past the end shows as a non-finite result.
    views = []
    for t in TABLES:
        big = np.full(len(t) + 8, np.nan, np.float32)
        big[: len(t)] = t
        views.append(big[: len(t)])
    g, term = K._ns_grad(np.float32(f), positive, np.float32(0.025), *views)
    assert np.isfinite(g) and np.isfinite(term)
    sat = abs(f) >= K.MAX_EXP
    right_side = (f > 0) == positive
    if sat:  # saturated: no gradient on the right side, the full rate on the wrong side
        assert g == pytest.approx(0.0 if right_side else (0.025 if positive else -0.025))
    else:  # the last slot, sigma(6 - 12/1000)
        assert abs(g) == pytest.approx(0.025 * (1 - TABLES[0][-1]) if positive else 0.025 * TABLES[0][-1], rel=1e-5)


def test_table_index_is_clamped():
    assert K._table_index(float("nan")) in range(K.EXP_TABLE_SIZE)
    assert K._table_index(6.0) == K.EXP_TABLE_SIZE - 1
    assert K._table_index(-6.0) == 0


def test_sg_hs_step_matches_reference():
    syn0, syn1 = _weights(5, 6, 1)
    codes, points, lens = huffman_tree(np.array([10, 7, 5, 3, 1]))
    a0, a1 = syn0.copy(), syn1.copy()
    w = 3
    loss_k = K.sg_hs_step(syn0, syn1, 0, codes[w], points[w], lens[w], 0.2, *TABLES, np.zeros(6, np.float32))
    loss_r = R.sg_hs_step(a0, a1, 0, codes[w][: lens[w]], points[w][: lens[w]], 0.2, TABLES)
    np.testing.assert_allclose(syn0, a0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(syn1, a1, rtol=1e-5, atol=1e-6)
    assert loss_k == pytest.approx(loss_r, rel=1e-5)


@pytest.mark.parametrize("cbow_mean", [1, 0])
def test_cbow_step_matches_reference(cbow_mean):
    syn0, syn1 = _weights(7, 5, 2)
    ctx = np.array([0, 2, 5, 6], dtype=np.int32)
    negs = np.array([1, 4, 3], dtype=np.int32)
    a0, a1 = syn0.copy(), syn1.copy()
    loss_k = K.cbow_step(syn0, syn1, ctx, 4, 3, negs, 0.05, cbow_mean, *TABLES,
                         np.zeros(5, np.float32), np.zeros(5, np.float32))
    loss_r = R.cbow_step(a0, a1, ctx, 3, negs, 0.05, cbow_mean, TABLES)
    np.testing.assert_allclose(syn0, a0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(syn1, a1, rtol=1e-5, atol=1e-6)
    assert loss_k == pytest.approx(loss_r, rel=1e-5)


def _tiny_corpus():
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 9, size=60).astype(np.int32)
    offsets = np.array([0, 17, 18, 40, 60], dtype=np.int64)
    counts = np.bincount(ids, minlength=9) + 1
    keep = keep_thresholds(np.clip(np.sqrt(0.05 / (counts / counts.sum())), 0, 1))
    ns = alias_table(counts ** 0.75 / (counts ** 0.75).sum())
    return ids, offsets, counts, keep, ns


@pytest.mark.parametrize("sg,hs,negative,cbow_mean,shared", [(1, 0, 3, 1, 0), (1, 1, 0, 1, 0), (0, 1, 2, 1, 0),
                                                             (0, 0, 4, 0, 0), (1, 0, 3, 1, 1), (1, 0, 8, 1, 1)])
def test_w2v_job_matches_reference(sg, hs, negative, cbow_mean, shared):
    ids, offsets, counts, keep, ns = _tiny_corpus()
    codes, points, lens = huffman_tree(counts)
    params = K.W2VParams(sg=sg, hs=hs, negative=negative, window=3, cbow_mean=cbow_mean, sample=1, compute_loss=1,
                         shared=shared)
    syn0, syn1neg = _weights(9, 6, 3)
    syn1 = np.random.default_rng(4).normal(0, 0.3, (8, 6)).astype(np.float32)
    r0, r1, r1n = syn0.copy(), syn1.copy(), syn1neg.copy()
    out_k = K.w2v_train_job(syn0, syn1, syn1neg, ids, offsets, 0, 4, keep, ns, codes, points, lens, *TABLES,
                            params, 0.05, np.uint64(12345), 40)
    out_r = R.w2v_train_job(r0, r1, r1n, ids, offsets, 0, 4, keep, ns, codes, points, lens, TABLES, params,
                            0.05, 12345)
    assert out_k[0] == out_r[0] and out_k[2] == out_r[2]
    assert out_k[1] == pytest.approx(out_r[1], rel=1e-4)
    np.testing.assert_allclose(syn0, r0, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(syn1neg, r1n, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(syn1, r1, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sg,shared", [(1, 0), (0, 0), (1, 1)])
def test_ft_job_matches_reference(sg, shared):
    ids, offsets, _counts, keep, ns = _tiny_corpus()
    rng = np.random.default_rng(8)
    sub_ptr = np.array([0, 2, 2, 5, 6, 8, 9, 9, 11, 12], dtype=np.int64)
    sub_idx = rng.integers(0, 13, size=12).astype(np.int32)
    params = K.W2VParams(sg=sg, hs=0, negative=3, window=3, cbow_mean=1, sample=1, compute_loss=1, shared=shared)
    sv, sn = rng.normal(0, 0.3, (9, 5)).astype(np.float32), rng.normal(0, 0.3, (13, 5)).astype(np.float32)
    s1 = rng.normal(0, 0.3, (9, 5)).astype(np.float32)
    rv, rn, r1 = sv.copy(), sn.copy(), s1.copy()
    out_k = K.ft_train_job(sv, sn, s1, sub_ptr, sub_idx, ids, offsets, 0, 4, keep, ns, *TABLES, params, 0.05,
                           np.uint64(99), 40)
    out_r = R.ft_train_job(rv, rn, r1, sub_ptr, sub_idx, ids, offsets, 0, 4, keep, ns, TABLES, params, 0.05, 99)
    assert out_k[0] == out_r[0] and out_k[2] == out_r[2]
    np.testing.assert_allclose(sv, rv, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sn, rn, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s1, r1, rtol=1e-4, atol=1e-5)
    composed = np.empty_like(sv)
    K.ft_compose(sv, sn, sub_ptr, sub_idx, composed)
    w = 2
    rows = [sv[w]] + [sn[b] for b in sub_idx[sub_ptr[w]: sub_ptr[w + 1]]]
    np.testing.assert_allclose(composed[w], np.mean(rows, axis=0), rtol=1e-5)


def test_lcg_matches_reference():
    r = np.uint64(7)
    rr = 7
    for _ in range(5):
        r = K.lcg_next(r)
        rr = R.lcg_next(rr)
    assert int(r) == rr


def test_glove_job_matches_reference():
    rng = np.random.default_rng(11)
    v, d = 6, 4
    rows = np.array([0, 1, 2, 3, 3], np.int32)
    cols = np.array([1, 1, 5, 4, 0], np.int32)
    vals = np.array([3.0, 150.0, 0.5, 1.0, 2.5], np.float32)
    arrays = [rng.normal(0, 0.3, (v, d)).astype(np.float32) for _ in range(2)]
    arrays += [rng.normal(0, 0.3, v).astype(np.float32) for _ in range(2)]
    arrays += [np.ones((v, d), np.float32), np.ones((v, d), np.float32), np.ones(v, np.float32), np.ones(v, np.float32)]
    ref = [a.copy() for a in arrays]
    p = K.GloveParams(x_max=100.0, alpha=0.75, learning_rate=0.05)
    lk = K.glove_train_job(*arrays, rows, cols, vals, 0, 5, p)
    lr = R.glove_train_job(*ref, rows, cols, vals, 0, 5, p)
    assert lk == pytest.approx(lr, rel=1e-4)
    for a, b in zip(arrays, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_cooccurrence_matches_reference_with_flushes():
    from embedstack.static._corpus import IdCorpus
    from embedstack.static.glove import cooccurrence_matrix
    from embedstack.text import Vocabulary

    rng = np.random.default_rng(3)
    ids = rng.integers(0, 40, size=500).astype(np.int32)
    offsets = np.array([0, 100, 101, 250, 500])
    vocab = Vocabulary(min_count=1).fit([[str(i) for i in range(40)]])
    corpus = IdCorpus.from_arrays(ids, offsets, vocab)
    rows, cols, vals = cooccurrence_matrix(corpus, window=4, table_size=1024, dense_words=5)
    ref = R.cooccur(ids, offsets, 4)
    got = {(int(a), int(b)): float(x) for a, b, x in zip(rows, cols, vals, strict=True)}
    assert set(got) == set(ref)
    for k, x in ref.items():
        assert got[k] == pytest.approx(x * (2 if k[0] == k[1] else 1), rel=1e-5)
    assert np.all(rows <= cols)


def test_merge_sum_merges_sorted_runs_and_sums_shared_keys():
    from embedstack.static import _kernels as K

    k, v = K.merge_sum(np.array([1, 4, 9], np.int64), np.array([1.0, 2.0, 3.0]),
                       np.array([0, 4, 10, 11], np.int64), np.array([5.0, 0.5, 6.0, 7.0]))
    assert k.tolist() == [0, 1, 4, 9, 10, 11] and v.tolist() == [5.0, 1.0, 2.5, 3.0, 6.0, 7.0]
    k, v = K.merge_sum(np.zeros(0, np.int64), np.zeros(0), np.array([3], np.int64), np.array([1.0]))
    assert k.tolist() == [3] and v.tolist() == [1.0]


@pytest.mark.parametrize("slot_bits", [10, 60])  # 60: keys too wide to pack beside the slot: the argsort path
def test_sorted_run_of_a_flushed_table_on_both_paths(slot_bits):
    from embedstack.static.glove import _sorted_run

    keys = np.full(1024, -1, np.int64)
    vals = np.zeros(1024)
    rng = np.random.default_rng(1)
    slots = rng.choice(1024, 300, replace=False)
    keys[slots] = rng.choice(10**9, 300, replace=False)
    vals[slots] = rng.random(300)
    k, v = _sorted_run(keys, vals, slot_bits)
    order = np.argsort(keys[slots])
    np.testing.assert_array_equal(k, keys[slots][order])
    np.testing.assert_array_equal(v, vals[slots][order])


def _many_short_sentences(n_sentences=2000, length=5, n_vocab=400, seed=5):
    from embedstack.static._corpus import IdCorpus
    from embedstack.text import Vocabulary

    ids = np.random.default_rng(seed).integers(0, n_vocab, size=n_sentences * length).astype(np.int32)
    offsets = np.arange(0, n_sentences * length + 1, length)
    vocab = Vocabulary(min_count=1).fit([[str(i) for i in range(n_vocab)]])
    return ids, offsets, IdCorpus.from_arrays(ids, offsets, vocab)


def _assert_counts(rows, cols, vals, ref):
    got = {(int(a), int(b)): float(x) for a, b, x in zip(rows, cols, vals, strict=True)}
    assert set(got) == set(ref)
    for k, x in ref.items():
        assert got[k] == pytest.approx(x * (2 if k[0] == k[1] else 1), rel=1e-5)


def test_cooccurrence_flushes_many_runs_and_counts_the_same_on_several_threads():
    # 2,000 sentences of 5 words over 400 words: ~17,700 distinct sparse pairs through a 1,024-entry table
    # (flushed at 716), so every thread merges several runs of its own before the parts are merged
    import threading

    from embedstack.static import glove as G

    ids, offsets, corpus = _many_short_sentences()
    ref = R.cooccur(ids, offsets, 4)
    pushed: list[str] = []
    real_push = G._push_run

    def push(runs, run):
        pushed.append(threading.current_thread().name)
        real_push(runs, run)

    G._push_run = push
    try:
        one = G.cooccurrence_matrix(corpus, window=4, table_size=1024, dense_words=8)
        assert len(pushed) > 5  # flushed mid-corpus, not once at the end
        _assert_counts(*one, ref)
        seen: list[int] = []
        for workers in (2, 3, 9):
            seen.clear()
            pushed.clear()
            got = G.cooccurrence_matrix(corpus, window=4, table_size=1024, dense_words=8, workers=workers,
                                        progress=lambda p: seen.append(p["done"]))
            np.testing.assert_array_equal(got[0], one[0])
            np.testing.assert_array_equal(got[1], one[1])
            np.testing.assert_allclose(got[2], one[2], rtol=1e-6)
            threads = min(workers, G.COUNT_THREADS_MAX)  # 9 asked, 4 used: each holds its own table and block
            assert len(set(pushed)) == threads and len(pushed) > 2 * threads
            assert seen and seen[-1] == len(ids) and seen == sorted(seen)  # from the caller's thread, cumulative
    finally:
        G._push_run = real_push
    assert np.all(np.diff(one[0].astype(np.int64) * 400 + one[1]) > 0)  # sorted by (row, col), no repeats


def test_cooccurrence_counting_threads_stop_when_progress_raises(monkeypatch):
    import threading
    import time

    from embedstack.static import _kernels as K
    from embedstack.static.glove import cooccurrence_matrix

    _, _, corpus = _many_short_sentences()
    calls = []
    real_job = K.cooccur_job

    def slow_job(*args):  # ~14 table fills per thread: 1.4 s of counting, stopped after the first 0.5 s
        calls.append(1)
        time.sleep(0.1)
        return real_job(*args)

    monkeypatch.setattr(K, "cooccur_job", slow_job)

    def boom(p):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cooccurrence_matrix(corpus, window=4, table_size=1024, dense_words=8, workers=2, progress=boom)
    for t in threading.enumerate():
        if t.name.startswith("embedstack-count-"):
            t.join(timeout=5)
            assert not t.is_alive()
    assert len(calls) < 20  # a full count takes ~28 table fills on 2 threads


def test_cooccurrence_stops_mid_sentence_to_flush_so_the_table_never_grows_with_sentences():
    # one 3,000-token sentence adds up to 15,000 new pairs: the count flushes a 1,024-entry table after the
    # token that fills it to 70% and resumes at the next token of the same sentence
    from embedstack.errors import ConfigError
    from embedstack.static._corpus import IdCorpus
    from embedstack.static.glove import _table_for, cooccurrence_matrix
    from embedstack.text import Vocabulary

    ids = np.random.default_rng(2).integers(0, 400, size=3000).astype(np.int32)
    vocab = Vocabulary(min_count=1).fit([[str(i) for i in range(400)]])
    for workers in (1, 2):  # one sentence: one part, whatever the threads
        corpus = IdCorpus.from_arrays(ids, np.array([0, 3000]), vocab)
        _assert_counts(*cooccurrence_matrix(corpus, window=5, table_size=1024, dense_words=0, workers=workers),
                       R.cooccur(ids, np.array([0, 3000]), 5))
    assert _table_for(1024, 5, 400, 0) == 1024  # a token adds at most 5 pairs: room to spare
    assert _table_for(1024, 400, 400, 0) == 2048  # a window wider than 30% of the table grows it
    assert _table_for(1024, 400, 20, 0) == 1024  # 210 distinct pairs: the table never fills
    assert _table_for(1 << 23, 10, 105_343, 4096) == 1 << 23
    with pytest.raises(ConfigError, match="power of two"):
        cooccurrence_matrix(corpus, window=5, table_size=0)
