"""GloVe's AdaGrad step against a tiny numpy loss, its convergence, determinism and the counting precision."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from embedstack.static import GloVe, IdCorpus  # noqa: E402
from embedstack.static import _kernels as K  # noqa: E402
from embedstack.static.glove import cooccurrence_matrix  # noqa: E402
from embedstack.text import Vocabulary  # noqa: E402


def glove_loss(W, Wc, bw, bc, rows, cols, vals, x_max=100.0, alpha=0.75) -> float:
    """sum over both directions of 0.5 f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2, in float64."""
    W, Wc, bw, bc = (np.asarray(a, np.float64) for a in (W, Wc, bw, bc))
    total = 0.0
    for i, j, x in zip(rows.tolist(), cols.tolist(), vals.astype(np.float64).tolist(), strict=True):
        f = min(1.0, (x / x_max) ** alpha)
        for a, c in {(i, j), (j, i)}:
            total += 0.5 * f * (W[a] @ Wc[c] + bw[a] + bc[c] - np.log(x)) ** 2
    return total


def _state(v: int, d: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.3, (v, d)).astype(np.float32), rng.normal(0, 0.3, (v, d)).astype(np.float32),
            rng.normal(0, 0.3, v).astype(np.float32), rng.normal(0, 0.3, v).astype(np.float32),
            np.ones((v, d), np.float32), np.ones((v, d), np.float32), np.ones(v, np.float32), np.ones(v, np.float32)]


@pytest.mark.parametrize("entry", [(1, 4, 7.5), (2, 2, 250.0)])
def test_glove_first_step_is_minus_eta_times_the_numpy_gradient(entry):
    """With AdaGrad sums at 1, one entry's step moves every parameter by -eta * dJ/dtheta, J the numpy loss."""
    v, d, eta = 6, 5, 0.01
    rows, cols, vals = (np.array([entry[0]], np.int32), np.array([entry[1]], np.int32),
                        np.array([entry[2]], np.float32))
    st = _state(v, d)
    params = [p.astype(np.float64) for p in st[:4]]
    h = 1e-6
    grads = []
    for p in params:  # central finite differences of the numpy loss
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            up = glove_loss(*params, rows, cols, vals)
            p[idx] = old - h
            down = glove_loss(*params, rows, cols, vals)
            p[idx] = old
            g[idx] = (up - down) / (2 * h)
        grads.append(g)
    before = [a.copy() for a in st[:4]]
    loss = K.glove_train_job(*st, rows, cols, vals, 0, 1, K.GloveParams(100.0, 0.75, eta))
    assert loss == pytest.approx(glove_loss(*before, rows, cols, vals), rel=1e-5)
    for new, old, g in zip(st[:4], before, grads, strict=True):
        np.testing.assert_allclose(new - old, -eta * g, rtol=2e-3, atol=2e-6)
    # and the AdaGrad sums took (eta * gradient)^2, as glove.c does
    np.testing.assert_allclose(st[4] - 1.0, (eta * grads[0]) ** 2, rtol=5e-3, atol=2.5e-7)  # float32 at 1


def test_glove_epochs_decrease_the_numpy_loss():
    rng = np.random.default_rng(4)
    v, d = 30, 8
    r = rng.integers(0, v, 200)
    c = rng.integers(0, v, 200)
    keys = np.unique(np.minimum(r, c) * v + np.maximum(r, c))
    rows, cols = (keys // v).astype(np.int32), (keys % v).astype(np.int32)
    vals = rng.gamma(1.0, 20.0, len(keys)).astype(np.float32) + 0.1
    st = _state(v, d, seed=1)
    for a in st[:4]:
        a *= 0.1
    losses = [glove_loss(*st[:4], rows, cols, vals)]
    p = K.GloveParams(100.0, 0.75, 0.05)
    for _ in range(40):
        k_loss = K.glove_train_job(*st, rows, cols, vals, 0, len(vals), p)
        assert np.isfinite(k_loss)
        losses.append(glove_loss(*st[:4], rows, cols, vals))
    assert all(b < a for a, b in zip(losses[:5], losses[1:6], strict=False))
    assert losses[-1] < 0.1 * losses[0]


def test_glove_clips_huge_gradients_and_skips_non_finite():
    st = _state(4, 3)
    st[0][1] = 1e6  # |f * diff * w| far above the clip of 100
    rows, cols, vals = np.array([1], np.int32), np.array([2], np.int32), np.array([500.0], np.float32)
    K.glove_train_job(*st, rows, cols, vals, 0, 1, K.GloveParams(100.0, 0.75, 0.05, grad_clip=100.0))
    assert np.all(np.isfinite(st[1])) and np.all(np.abs(st[4][1] - 1.0) <= (0.05 * 100.0) ** 2 * 1.0001)
    st = _state(4, 3)
    st[0][1, 0] = np.nan
    before = [a.copy() for a in st]
    K.glove_train_job(*st, np.array([1], np.int32), np.array([1], np.int32), vals, 0, 1, K.GloveParams(100.0, 0.75, 0.05))
    for a, b in zip(st, before, strict=True):
        np.testing.assert_array_equal(a, b)  # a NaN term changes nothing


def _corpus(n: int = 300) -> list[str]:
    rng = np.random.default_rng(0)
    topics = [["ice", "cold", "snow", "winter", "frost"], ["fire", "hot", "flame", "summer", "heat"]]
    return [" ".join(rng.choice(topics[i % 2], 8)) for i in range(n)]


def test_glove_seeded_single_worker_is_deterministic_and_fit_cooccurrence_matches():
    kw = dict(dim=8, window=4, min_count=1, epochs=6, workers=1)
    a = GloVe(seed=3, **kw).fit(_corpus())
    b = GloVe(seed=3, **kw).fit(_corpus())
    np.testing.assert_array_equal(a.wv_.vectors, b.wv_.vectors)
    assert not np.array_equal(a.wv_.vectors, GloVe(seed=4, **kw).fit(_corpus()).wv_.vectors)
    cooc = cooccurrence_matrix(a.corpus_, window=4)
    seen = []
    c = GloVe(seed=3, **kw).fit_cooccurrence(cooc, a.vocabulary_, on_epoch=lambda e, vec: seen.append(e))
    np.testing.assert_array_equal(c.wv_.vectors, a.wv_.vectors)  # epoch by epoch = all at once
    assert seen == [1, 2, 3, 4, 5, 6] and len(c.stats_.epoch_loss) == 6


@pytest.mark.parametrize("dense_words", [4096, 0])
def test_cooccurrence_large_counts_are_exact(dense_words):
    # 2M tokens "0 1 0 1 ...": the (0, 1) count reaches ~1.8M, where float32 sums of 1/d drift
    n, window = 2_000_000, 10
    ids = np.tile(np.array([0, 1], np.int32), n // 2)
    vocab = Vocabulary(min_count=1).fit([["0", "1"]])
    corpus = IdCorpus.from_arrays(ids, np.array([0, n]), vocab)
    rows, cols, vals = cooccurrence_matrix(corpus, window=window, dense_words=dense_words)
    got = {(int(a), int(b)): float(x) for a, b, x in zip(rows, cols, vals, strict=True)}
    odd = sum(1.0 / d * (n - d) for d in range(1, window + 1, 2))  # pairs (0, 1) at odd distances
    even = sum(1.0 / d * (n - d) for d in range(2, window + 1, 2))  # (0, 0) and (1, 1) at even distances
    assert got[(0, 1)] == pytest.approx(odd, rel=1e-6)
    assert got[(0, 0)] + got[(1, 1)] == pytest.approx(2 * even, rel=1e-6)  # the diagonal counts twice
