"""embedstack.geometry: anisotropy, whitening (+ the whiten SPEC) and permutation-calibrated drift tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from embedstack.errors import ConfigError, DimensionMismatch, InputError, NotFittedError
from embedstack.geometry import (
    DRIFT_TESTS,
    MIN_BATCH,
    WhitenedEncoder,
    Whitening,
    anisotropy,
    detect_drift,
    mean_cosine,
    roc_auc,
    spectrum,
    variance_shares,
)
from embedstack.models import resolve
from embedstack.registry import load_component

DOCS = ["cats purr on the mat", "dogs bark at night", "cats and dogs play", "a cat purrs softly", "the dog barks",
        "birds sing at dawn", "fish swim in the sea", "the bird flies south", "stock markets fell today",
        "bond rates rose again", "the market rallied", "interest rates and bonds"]


def _brute_mean_cos(x: np.ndarray) -> float:
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = u @ u.T
    n = len(u)
    return float((c.sum() - np.trace(c)) / (n * (n - 1)))


# ------------------------------------------------------------------------------------------- anisotropy

def test_mean_cosine_is_exact_all_pairs_mean() -> None:
    x = np.random.default_rng(1).standard_normal((150, 10)) + 0.7
    mc = mean_cosine(x, sample=None)
    assert mc.mean == pytest.approx(_brute_mean_cos(x), abs=1e-12)
    assert mc.low < mc.mean < mc.high and mc.n == 150


def test_mean_cosine_interval_covers_the_population_value() -> None:
    # population: a fixed offset plus noise; the interval from 300-vector samples should cover the
    # mean over a huge sample in most draws (95% nominal)
    rng = np.random.default_rng(0)
    offset = rng.standard_normal(16)
    truth = mean_cosine(rng.standard_normal((20000, 16)) + offset, sample=None).mean
    covered = 0
    for s in range(40):
        mc = mean_cosine(np.random.default_rng(100 + s).standard_normal((300, 16)) + offset, sample=None)
        covered += mc.low <= truth <= mc.high
    assert covered >= 33  # 95% nominal: 38/40 expected; a naive per-pair interval covers far less


def test_anisotropy_separates_isotropic_from_a_cone() -> None:
    rng = np.random.default_rng(0)
    iso = anisotropy(rng.standard_normal((1000, 32)))
    cone = anisotropy(rng.standard_normal((1000, 32)) * 0.3 + 1.0)
    assert abs(iso["mean_cosine"]) < 0.01 and iso["ci_low"] < 0 < iso["ci_high"]
    assert cone["mean_cosine"] > 0.8
    assert 0 < iso["top1_share"] < 0.1 and iso["top10_share"] < 0.5
    assert set(iso) >= {"mean_cosine", "ci_low", "ci_high", "n", "dim", "top1_share", "top10_share", "zero_rows"}


def test_sparse_rows_give_the_dense_answer_and_zero_rows_are_left_out() -> None:
    rng = np.random.default_rng(0)
    dense = np.abs(rng.standard_normal((60, 40))) * (rng.random((60, 40)) < 0.2)
    dense[5] = 0.0
    a = mean_cosine(sp.csr_array(dense), sample=None)
    b = mean_cosine(dense, sample=None)
    assert a.mean == pytest.approx(b.mean) and a.zero_rows == b.zero_rows == 1 and a.n == 59
    np.testing.assert_allclose(spectrum(sp.csr_array(dense), sample=None)[:5], spectrum(dense, sample=None)[:5],
                               rtol=1e-8, atol=1e-12)


def test_spectrum_gram_and_covariance_paths_agree() -> None:
    x = np.random.default_rng(3).standard_normal((30, 50))  # fewer rows than dims: Gram path
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = u - u.mean(0)
    ref = np.sort(np.linalg.eigvalsh(c.T @ c / 30))[::-1]
    np.testing.assert_allclose(spectrum(x, sample=None)[:29], ref[:29], atol=1e-10)
    shares = variance_shares(x, (1, 50), sample=None)
    assert 0 < shares[1] < shares[50] == pytest.approx(1.0)


def test_anisotropy_bad_input() -> None:
    with pytest.raises(InputError, match="at least 3"):
        mean_cosine(np.ones((2, 4)))
    with pytest.raises(InputError, match="NaN.*row 1"):
        mean_cosine(np.array([[1.0, 0], [np.nan, 1], [0, 1]]))
    with pytest.raises(InputError, match="2-D"):
        mean_cosine(np.ones(5))
    with pytest.raises(ConfigError, match="top"):
        variance_shares(np.ones((5, 3)), (0,))


# ------------------------------------------------------------------------------------------- whitening

def test_whitening_gives_identity_covariance_and_reduces_dimension() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6)) + 3.0
    z = Whitening().fit(x).transform(x)
    np.testing.assert_allclose(np.cov(z.T, bias=True), np.eye(6), atol=1e-3)
    w = Whitening(2).fit(x)
    z2 = w.transform(x)
    assert z2.shape == (400, 2)
    np.testing.assert_allclose(z2, z[:, :2], atol=1e-3)  # the top-2 directions of the full whitening
    assert w.eigenvalues_[0] >= w.eigenvalues_[1]


def test_whitening_errors() -> None:
    with pytest.raises(ConfigError, match="more than 5 vectors"):
        Whitening(5).fit(np.random.default_rng(0).standard_normal((5, 8)))
    with pytest.raises(ConfigError, match="only 3 dimensions"):
        Whitening(4).fit(np.ones((10, 3)))
    with pytest.raises(NotFittedError):
        Whitening().transform(np.ones((2, 2)))
    w = Whitening().fit(np.random.default_rng(0).standard_normal((20, 3)))
    with pytest.raises(DimensionMismatch):
        w.transform(np.ones((2, 4)))


def test_whiten_spec_fits_encodes_and_roundtrips(tmp_path: Path) -> None:
    enc = resolve("whiten:3:lsa:5")
    assert isinstance(enc, WhitenedEncoder) and enc.requires_fit and not enc.is_fitted
    with pytest.raises(NotFittedError):
        enc.encode(DOCS)
    v = enc.fit(DOCS).encode(DOCS)
    assert v.shape == (12, 3) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert enc.encode("cats purr").shape == (3,)
    enc.save(tmp_path / "w")
    assert (tmp_path / "w" / "base" / "manifest.json").is_file()  # the fitted LSA travels with it
    again = load_component(tmp_path / "w")
    np.testing.assert_allclose(again.encode(DOCS), v, atol=1e-6)
    np.testing.assert_allclose(resolve(str(tmp_path / "w")).encode(DOCS), v, atol=1e-6)


def test_whiten_spec_errors() -> None:
    with pytest.raises(ConfigError, match="base model"):
        resolve("whiten")
    with pytest.raises(ConfigError, match="sparse"):
        resolve("whiten:tfidf").fit(DOCS)
    with pytest.raises(ConfigError, match="only 4 dimensions"):
        resolve("whiten:20:lsa:4").fit(DOCS)


# ------------------------------------------------------------------------------------------- drift

def test_roc_auc_matches_pairs_count() -> None:
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.4])
    y = np.array([0, 0, 1, 1, 1])
    pairs = [(a, b) for a in s[y == 1] for b in s[y == 0]]
    assert roc_auc(s, y) == pytest.approx(np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs]))


def test_every_test_detects_its_kind_of_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((300, 24))
    moved = rng.standard_normal((300, 24)) + 0.4
    stretched = rng.standard_normal((300, 24)) * np.r_[np.full(4, 2.5), np.ones(20)]
    r1 = detect_drift(ref, moved, permutations=99)
    assert r1.drift and all(r1.tests[t].drift for t in ("mean_shift", "mmd", "classifier"))
    assert set(r1.alarms) >= {"mean_shift", "mmd", "classifier"}
    r2 = detect_drift(ref, stretched, permutations=99, tests=("covariance", "mean_shift"))
    assert r2.tests["covariance"].drift and r2.tests["covariance"].p_value == pytest.approx(0.01)
    assert r2.drift


def test_false_alarm_rate_is_near_alpha_under_no_drift() -> None:
    alarms = {t: 0 for t in DRIFT_TESTS}
    overall = 0
    trials = 40
    for s in range(trials):
        rng = np.random.default_rng(1000 + s)
        rep = detect_drift(rng.standard_normal((60, 8)), rng.standard_normal((60, 8)), permutations=99, seed=s)
        overall += rep.drift
        for t, res in rep.tests.items():
            alarms[t] += res.drift
            assert 0 < res.p_value <= 1 and np.isfinite(res.threshold)
    # 5% nominal: 2 expected per test in 40 trials; 8 would be a 20% rate
    assert all(v <= 8 for v in alarms.values()), alarms
    assert overall <= 6


def test_report_serialises() -> None:
    rng = np.random.default_rng(0)
    d = detect_drift(rng.standard_normal((40, 4)), rng.standard_normal((40, 4)), permutations=99).to_dict()
    assert set(d) == {"drift", "alpha", "n_reference", "n_new", "permutations", "tests"}
    assert set(d["tests"]) == set(DRIFT_TESTS)


def test_drift_bad_input() -> None:
    rng = np.random.default_rng(0)
    ok = rng.standard_normal((MIN_BATCH, 4))
    with pytest.raises(InputError, match=f"at least {MIN_BATCH}"):
        detect_drift(ok[:5], ok)
    with pytest.raises(DimensionMismatch, match="4-d.*5-d"):
        detect_drift(ok, rng.standard_normal((MIN_BATCH, 5)))
    bad = ok.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="new batch.*row 3"):
        detect_drift(ok, bad)
    with pytest.raises(ConfigError, match="--tests"):
        detect_drift(ok, ok, tests=("ks",))
    with pytest.raises(ConfigError, match="--permutations"):
        detect_drift(ok, ok, permutations=5)
    with pytest.raises(ConfigError, match="--alpha"):
        detect_drift(ok, ok, alpha=1.5)
    with pytest.raises(ConfigError, match=f">= {MIN_BATCH}.*--max-samples"):
        detect_drift(ok, ok, max_samples=5)
