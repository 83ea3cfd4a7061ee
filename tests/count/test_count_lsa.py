"""LSA and the SVD routines: accuracy against LAPACK/ARPACK/scikit-learn, determinism, round trips."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from embedstack.base import DenseEncoder
from embedstack.count import LSA, TfIdf
from embedstack.count.lsa import randomized_svd, truncated_svd
from embedstack.errors import ConfigError, InputError, NotFittedError

TOPICS = {
    "pets": "cat dog kitten puppy fur paw vet leash purr bark",
    "space": "star planet orbit rocket moon galaxy telescope comet nasa launch",
    "food": "bread cheese pasta tomato oven recipe salt butter flour bake",
}


def topic_corpus(n: int = 60, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    out = []
    for i in range(n):
        words = TOPICS[names[i % 3]].split()
        out.append(" ".join(rng.choice(words, size=rng.integers(4, 10))))
    return out


def low_rank(m: int, n: int, r: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, r)) @ np.diag(np.linspace(10, 1, r)) @ rng.standard_normal((r, n)) \
        + 0.01 * rng.standard_normal((m, n))


@pytest.mark.parametrize("sparse", [False, True])
def test_randomized_svd_matches_lapack(sparse: bool) -> None:
    A = low_rank(80, 50, 8)
    U, s, Vt = randomized_svd(sp.csr_array(A) if sparse else A, 5)
    s_ref = np.linalg.svd(A, compute_uv=False)[:5]
    np.testing.assert_allclose(s, s_ref, rtol=1e-6)
    np.testing.assert_allclose(U.T @ U, np.eye(5), atol=1e-8)
    np.testing.assert_allclose((U * s) @ Vt, np.linalg.svd(A)[0][:, :5] * s_ref @ np.linalg.svd(A)[2][:5], atol=1e-5)
    assert (Vt[np.arange(5), np.abs(Vt).argmax(axis=1)] > 0).all()  # sign convention


def test_arpack_and_randomized_agree_including_signs() -> None:
    A = sp.csr_array(low_rank(60, 40, 6, seed=1))
    _, s1, V1 = truncated_svd(A, 4, algorithm="randomized")
    _, s2, V2 = truncated_svd(A, 4, algorithm="arpack")
    np.testing.assert_allclose(s1, s2, rtol=1e-6)
    np.testing.assert_allclose(V1, V2, atol=1e-6)


def test_lsa_matches_sklearn_truncated_svd() -> None:
    decomp = pytest.importorskip("sklearn.decomposition")
    rng = np.random.default_rng(3)
    vocab = [f"w{i}" for i in range(40)]
    docs = [" ".join(rng.choice(vocab, size=rng.integers(3, 15), p=np.r_[np.full(10, 0.06), np.full(30, 0.4 / 30)]))
            for _ in range(80)]
    lsa = LSA(n_components=5, normalize=False, algorithm="arpack").fit(docs)
    X = TfIdf(sublinear_tf=True).fit_transform(docs)
    ref = decomp.TruncatedSVD(n_components=5, algorithm="arpack").fit(X)
    np.testing.assert_allclose(lsa.singular_values_, ref.singular_values_, rtol=1e-5)
    # the randomized default is close even on this flat spectrum (the hard case for it)
    fast = LSA(n_components=5, normalize=False).fit(docs)
    np.testing.assert_allclose(fast.singular_values_, ref.singular_values_, rtol=3e-3)
    # same subspace: the projections agree up to each component's sign
    Z, Zr = lsa.transform(docs), ref.transform(X)
    np.testing.assert_allclose(Z @ Z.T, Zr @ Zr.T, atol=1e-4)
    np.testing.assert_allclose(np.abs(Z), np.abs(Zr), atol=1e-3)


def test_queries_and_documents_share_one_projection_and_fit_is_deterministic() -> None:
    docs = topic_corpus()
    a = LSA(n_components=3)
    Z = a.fit_transform(docs)
    np.testing.assert_allclose(Z, a.encode(docs, role="query"), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(Z, LSA(n_components=3).fit_transform(docs))
    assert Z.dtype == np.float32 and Z.shape == (60, 3) and a.dim == 3
    assert a.encode([]).shape == (0, 3)
    assert isinstance(a, DenseEncoder)


def test_lsa_groups_topics() -> None:
    docs = topic_corpus(90)
    lsa = LSA(n_components=3).fit(docs)
    q = lsa.encode(["rocket launch to the moon", "bake bread with butter"])
    D = lsa.encode(docs)
    best = (q @ D.T).argmax(axis=1)
    assert best[0] % 3 == 1 and best[1] % 3 == 2


def test_save_load(tmp_path) -> None:
    docs = topic_corpus()
    a = LSA(n_components=4, algorithm="arpack", min_df=2).fit(docs)
    a.save(tmp_path / "lsa")
    b = LSA.load(tmp_path / "lsa")
    assert b.get_config() == a.get_config()
    np.testing.assert_array_equal(b.encode(docs[:7]), a.encode(docs[:7]))


def test_bad_input() -> None:
    with pytest.raises(NotFittedError):
        LSA(2).encode(["a"])
    with pytest.raises(InputError, match=r"lsa:DIM.*below 3"):
        LSA(n_components=5).fit(["a b c d e f", "b c", "d e f"])
    with pytest.raises(InputError, match="empty corpus"):
        LSA(2).fit([])
    with pytest.raises(ConfigError, match="'n_components'"):
        LSA(0).fit(topic_corpus())
    with pytest.raises(ConfigError, match="'algorithm'"):
        LSA(2, algorithm="lanczos").fit(topic_corpus())
    with pytest.raises(InputError, match=r"randomized_svd: k=9"):
        randomized_svd(np.eye(4), 9)
