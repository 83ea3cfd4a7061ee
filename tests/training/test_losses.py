"""Training losses: hand-computed values (numpy references written here), gradients, GradCache, errors."""

from __future__ import annotations

import doctest
import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from embedstack.errors import ConfigError, DimensionMismatch, InputError  # noqa: E402
from embedstack.training import (  # noqa: E402
    CachedMultipleNegativesRankingLoss,
    ContrastiveLoss,
    CoSENTLoss,
    CosineSimilarityLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
    OnlineContrastiveLoss,
    SoftmaxLoss,
    TripletLoss,
    check_columns,
)

T = torch.tensor


# ---------------------------------------------------------------- numpy references (independent of the code)


def np_cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def np_logsumexp(x):
    m = max(x)
    return m + math.log(sum(math.exp(v - m) for v in x))


def np_mnrl(a, p, negs=None, scale=20.0, symmetric=False):
    cands = list(p) + ([] if negs is None else [n for row in negs for n in row])
    total = 0.0
    for i in range(len(a)):
        s = [scale * np_cos(a[i], c) for c in cands]
        total += np_logsumexp(s) - s[i]
    loss = total / len(a)
    if symmetric:
        back = 0.0
        for i in range(len(p)):
            s = [scale * np_cos(p[i], x) for x in a]
            back += np_logsumexp(s) - s[i]
        loss = 0.5 * (loss + back / len(a))
    return loss


def unit(theta):
    return [math.cos(theta), math.sin(theta)]


def at_cos_distance(d):
    """A pair of 2-D vectors whose cosine distance is d."""
    return [1.0, 0.0], unit(math.acos(1.0 - d))


# ---------------------------------------------------------------- contrastive


def test_contrastive_hand_value():
    u = T([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    v = T([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    labels = T([1, 1, 0])
    # d = [1, 1 − 1/√2, 2]; pairs: 1², (1 − 1/√2)², max(0, 0.5 − 2)² = 0 → ½ · mean
    expected = 0.5 * (1.0 + (1 - 1 / math.sqrt(2)) ** 2 + 0.0) / 3
    assert float(ContrastiveLoss(margin=0.5)(u, v, labels)) == pytest.approx(expected, abs=1e-6)
    # a dissimilar pair closer than the margin costs ½ · (m − d)²
    loss = ContrastiveLoss(margin=1.5)(T([[1.0, 0.0]]), T([[0.0, 1.0]]), T([0]))
    assert float(loss) == pytest.approx(0.5 * 0.5**2, abs=1e-6)


def test_contrastive_euclidean_matches_numpy():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    y = np.array([1, 0, 0])
    d = np.sqrt(((u - v) ** 2).sum(1))
    expected = 0.5 * np.mean(y * d**2 + (1 - y) * np.maximum(0, 2.0 - d) ** 2)
    got = ContrastiveLoss(margin=2.0, distance="euclidean")(T(u, dtype=torch.float64), T(v, dtype=torch.float64), T(y))
    assert float(got) == pytest.approx(expected, abs=1e-5)


def test_online_contrastive_hand_value():
    dists, labels = [0.2, 0.9, 0.5, 1.5], [1, 1, 0, 0]
    u = T([at_cos_distance(d)[0] for d in dists])
    v = T([at_cos_distance(d)[1] for d in dists])
    # hard positives: d > min negative (0.5) → 0.9; hard negatives: d < max positive (0.9) → 0.5
    expected = 0.9**2 + max(0.0, 1.0 - 0.5) ** 2
    assert float(OnlineContrastiveLoss(margin=1.0)(u, v, T(labels))) == pytest.approx(expected, abs=1e-5)
    # only positives in the batch: all are hard
    assert float(OnlineContrastiveLoss(margin=1.0)(u[:2], v[:2], T([1, 1]))) == pytest.approx(0.04 + 0.81, abs=1e-5)
    # only negatives: all are hard
    assert float(OnlineContrastiveLoss(margin=1.0)(u[2:], v[2:], T([0, 0]))) == pytest.approx(0.25, abs=1e-5)
    # no hard pair → 0 and still differentiable
    easy_u, easy_v = u[[0, 3]].clone().requires_grad_(), v[[0, 3]]
    loss = OnlineContrastiveLoss(margin=1.0)(easy_u, easy_v, T([1, 0]))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert easy_u.grad is not None


# ---------------------------------------------------------------- triplet


def test_triplet_hand_value_euclidean():
    a = T([[0.0, 0.0], [0.0, 0.0]])
    p = T([[3.0, 4.0], [1.0, 0.0]])
    n = T([[1.0, 0.0], [0.0, 5.0]])
    # row 1: max(0, 5 − 1 + 1) = 5; row 2: max(0, 1 − 5 + 1) = 0 → mean 2.5
    assert float(TripletLoss(margin=1.0)(a, p, n)) == pytest.approx(2.5, abs=1e-5)


def test_triplet_cosine_matches_numpy():
    rng = np.random.default_rng(1)
    a, p, n = (rng.normal(size=(3, 3)) for _ in range(3))
    expected = np.mean([max(0.0, (1 - np_cos(a[i], p[i])) - (1 - np_cos(a[i], n[i])) + 0.3) for i in range(3)])
    got = TripletLoss(margin=0.3, distance="cosine")(*(T(x, dtype=torch.float64) for x in (a, p, n)))
    assert float(got) == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- MNRL


def test_mnrl_hand_value():
    eye = torch.eye(2)
    # cos(a_i, p_i) = 1, cos(a_i, p_j) = 0 → −log(e / (e + 1)) per row
    assert float(MultipleNegativesRankingLoss(scale=1.0)(eye, eye)) == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    a = T([[1.0, 0.0], [0.0, 1.0]])
    p = T([[1.0, 1.0], [0.0, 1.0]])
    c = 1 / math.sqrt(2)  # row 1: cos to p = [c, 0], target 0; row 2: cos to p = [c, 1], target 1
    expected = ((math.log(math.exp(2 * c) + 1) - 2 * c) + (math.log(math.exp(2 * c) + math.exp(2)) - 2)) / 2
    assert float(MultipleNegativesRankingLoss(scale=2.0)(a, p)) == pytest.approx(expected, abs=1e-6)


def test_mnrl_hard_negatives_and_symmetric_match_numpy():
    rng = np.random.default_rng(2)
    a, p, negs = rng.normal(size=(3, 3)), rng.normal(size=(3, 3)), rng.normal(size=(3, 2, 3))  # k = 2
    ta, tp, tn = (T(x, dtype=torch.float64) for x in (a, p, negs))
    assert float(MultipleNegativesRankingLoss()(ta, tp)) == pytest.approx(np_mnrl(a, p), abs=1e-6)
    got = MultipleNegativesRankingLoss(scale=5.0)(ta, tp, tn)
    assert float(got) == pytest.approx(np_mnrl(a, p, negs, scale=5.0), abs=1e-6)
    got = MultipleNegativesRankingLoss(scale=5.0, symmetric=True)(ta, tp)
    assert float(got) == pytest.approx(np_mnrl(a, p, scale=5.0, symmetric=True), abs=1e-6)
    got = MultipleNegativesRankingLoss(scale=5.0, symmetric=True)(ta, tp, tn)
    assert float(got) == pytest.approx(np_mnrl(a, p, negs, scale=5.0, symmetric=True), abs=1e-6)
    # a hard negative equal to row 0's positive competes with it: a higher loss, still the numpy value
    same = tn.clone()
    same[0, 0] = tp[0]
    harder = MultipleNegativesRankingLoss(scale=5.0)(ta, tp, same)
    assert float(harder) > float(MultipleNegativesRankingLoss(scale=5.0)(ta, tp)) - 1e-9
    assert float(harder) == pytest.approx(
        np_mnrl(a, p, same.numpy(), scale=5.0), abs=1e-6)


# ---------------------------------------------------------------- scored pairs


def test_cosent_hand_value():
    u = T([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    v = T([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # cos = [1, 0, 1/√2]
    scores = T([0.2, 0.9, 0.5])
    cos = [1.0, 0.0, 1 / math.sqrt(2)]
    s = [0.2, 0.9, 0.5]
    terms = [20.0 * (cos[j] - cos[i]) for i in range(3) for j in range(3) if s[i] > s[j]]
    expected = np_logsumexp([0.0, *terms])
    assert float(CoSENTLoss()(u, v, scores)) == pytest.approx(expected, abs=1e-4)
    # two rows, λ = 1: log(1 + e^{1 − 0})
    got = CoSENTLoss(scale=1.0)(u[:2], v[:2], T([0.0, 1.0]))
    assert float(got) == pytest.approx(math.log(1 + math.e), abs=1e-6)
    # equal scores: no pair counts → log 1 = 0
    assert float(CoSENTLoss()(u, v, T([1.0, 1.0, 1.0]))) == pytest.approx(0.0, abs=1e-7)


def test_cosine_similarity_hand_value():
    u = T([[1.0, 0.0], [1.0, 0.0]])
    v = T([[1.0, 1.0], [0.0, 1.0]])  # cos = [1/√2, 0]
    # STS 0–5 scale → targets [1.0, 0.4]
    expected = ((1 / math.sqrt(2) - 1.0) ** 2 + (0.0 - 0.4) ** 2) / 2
    got = CosineSimilarityLoss(score_range=(0, 5))(u, v, T([5.0, 2.0]))
    assert float(got) == pytest.approx(expected, abs=1e-6)
    assert float(CosineSimilarityLoss()(u, v, T([1.0, 0.4]))) == pytest.approx(expected, abs=1e-6)


def test_softmax_nli_hand_value():
    loss = SoftmaxLoss(2, n_labels=3)
    assert loss.classifier.in_features == 6 and loss.classifier.out_features == 3
    w = np.arange(18, dtype=np.float64).reshape(3, 6) / 10 - 0.8
    b = np.array([0.1, -0.2, 0.3])
    with torch.no_grad():
        loss.classifier.weight.copy_(T(w, dtype=torch.float32))
        loss.classifier.bias.copy_(T(b, dtype=torch.float32))
    u, v, y = np.array([[1.0, 2.0], [0.5, -1.0]]), np.array([[0.0, 1.0], [2.0, 0.0]]), [2, 0]
    total = 0.0
    for i in range(2):
        f = np.concatenate([u[i], v[i], np.abs(u[i] - v[i])])
        logits = w @ f + b
        total += np_logsumexp(list(logits)) - logits[y[i]]
    got = loss(T(u, dtype=torch.float32), T(v, dtype=torch.float32), T(y))
    assert float(got.detach()) == pytest.approx(total / 2, abs=1e-5)
    assert {n for n, _ in loss.named_parameters()} == {"classifier.weight", "classifier.bias"}


# ---------------------------------------------------------------- Matryoshka


def test_matryoshka_equals_sum_of_truncations():
    g = torch.Generator().manual_seed(3)
    a, p = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    negs = torch.randn(4, 2, 8, generator=g)
    inner = MultipleNegativesRankingLoss(scale=10.0)
    m = MatryoshkaLoss(inner, dims=(8, 4, 2), weights=(1.0, 0.5, 2.0))
    expected = inner(a, p, negs) + 0.5 * inner(a[:, :4], p[:, :4], negs[..., :4]) + 2.0 * inner(
        a[:, :2], p[:, :2], negs[..., :2])
    assert float(m(a, p, negs)) == pytest.approx(float(expected), abs=1e-6)
    scores = T([0.1, 0.7, 0.3, 0.9])
    m = MatryoshkaLoss(CoSENTLoss(), dims=(6, 3))
    expected = CoSENTLoss()(a[:, :6], p[:, :6], scores) + CoSENTLoss()(a[:, :3], p[:, :3], scores)
    assert float(m(a, p, scores)) == pytest.approx(float(expected), abs=1e-5)
    m = MatryoshkaLoss(TripletLoss(margin=0.5), dims=(8, 1))
    n = negs[:, 0]
    expected = TripletLoss(margin=0.5)(a, p, n) + TripletLoss(margin=0.5)(a[:, :1], p[:, :1], n[:, :1])
    assert float(m(a, p, n)) == pytest.approx(float(expected), abs=1e-6)
    assert m.columns == TripletLoss.columns
    check_columns(m, ["anchor", "positive", "negative"])


# ---------------------------------------------------------------- gradients


def _grad_cases():
    g = torch.Generator().manual_seed(4)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    labels, scores = T([1, 0, 1, 0]), T([0.1, 0.8, 0.5, 0.3])
    return [
        (ContrastiveLoss(), [r(4, 5), r(4, 5)], [labels]),
        (ContrastiveLoss(distance="euclidean", margin=5.0), [r(4, 5), r(4, 5)], [labels]),
        (OnlineContrastiveLoss(margin=2.0), [r(4, 5), r(4, 5)], [labels]),
        (TripletLoss(margin=10.0), [r(4, 5), r(4, 5), r(4, 5)], []),
        (TripletLoss(distance="cosine", margin=2.0), [r(4, 5), r(4, 5), r(4, 5)], []),
        (MultipleNegativesRankingLoss(), [r(4, 5), r(4, 5), r(4, 3, 5)], []),
        (MultipleNegativesRankingLoss(symmetric=True), [r(4, 5), r(4, 5)], []),
        (CoSENTLoss(), [r(4, 5), r(4, 5)], [scores]),
        (CosineSimilarityLoss(), [r(4, 5), r(4, 5)], [scores]),
        (SoftmaxLoss(5, n_labels=3), [r(4, 5), r(4, 5)], [T([0, 1, 2, 1])]),
        (MatryoshkaLoss(MultipleNegativesRankingLoss(), dims=(5, 2)), [r(4, 5), r(4, 5)], []),
    ]


@pytest.mark.parametrize("case", range(11))
def test_gradients_flow(case):
    loss_fn, embs, rest = _grad_cases()[case]
    embs = [e.requires_grad_() for e in embs]
    loss = loss_fn(*embs, *rest)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for e in embs:
        assert e.grad is not None and torch.isfinite(e.grad).all()
    assert any(float(e.grad.abs().sum()) > 0 for e in embs)


def test_euclidean_identical_vectors_have_finite_gradients():
    x = torch.ones(2, 3, requires_grad=True)
    loss = ContrastiveLoss(distance="euclidean")(x, x.detach().clone(), T([1, 0]))
    loss.backward()
    assert torch.isfinite(x.grad).all()


# ---------------------------------------------------------------- GradCache


def _params_grads(model):
    return [p.grad.clone() for p in model.parameters()]


def _assert_same_loss_and_grads(model, got, ref, ref_grads):
    """The cached loss's value and the model's gradients equal the plain loss's (atol 1e-5)."""
    assert float(got.detach()) == pytest.approx(float(ref.detach()), abs=1e-5)
    for g, r in zip(_params_grads(model), ref_grads, strict=True):
        assert torch.allclose(g, r, atol=1e-5)


@pytest.mark.parametrize("symmetric", [False, True])
def test_cached_mnrl_equals_plain(symmetric):
    torch.manual_seed(5)
    enc = torch.nn.Sequential(torch.nn.Linear(16, 12), torch.nn.Tanh(), torch.nn.Linear(12, 8))
    B, k = 23, 2
    xa, xp, xn = torch.randn(B, 16), torch.randn(B, 16), torch.randn(B * k, 16)
    plain = MultipleNegativesRankingLoss(symmetric=symmetric)
    enc.zero_grad()
    ref = plain(enc(xa), enc(xp), enc(xn).reshape(B, k, 8))
    ref.backward()
    ref_grads = _params_grads(enc)
    cached = CachedMultipleNegativesRankingLoss(enc, symmetric=symmetric)
    enc.zero_grad()
    got = cached(list(xa.split(5)), list(xp.split(7)), list(xn.split(9)))
    got.backward()
    _assert_same_loss_and_grads(enc, got, ref, ref_grads)
    assert list(cached.parameters()) == []  # the encoder stays the model's, not the loss's


def test_cached_mnrl_replays_dropout_and_fits_a_big_batch():
    torch.manual_seed(6)
    enc = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Dropout(0.2), torch.nn.Linear(32, 16)).train()
    B = 256
    xa, xp = torch.randn(B, 32), torch.randn(B, 32)
    chunks_a, chunks_p = list(xa.split(64)), list(xp.split(64))
    # plain MNRL embedding the same chunks in the same order from the same seed sees the same dropout masks
    torch.manual_seed(7)
    enc.zero_grad()
    a = torch.cat([enc(c) for c in chunks_a])
    p = torch.cat([enc(c) for c in chunks_p])
    ref = MultipleNegativesRankingLoss()(a, p)
    ref.backward()
    ref_grads = _params_grads(enc)
    torch.manual_seed(7)
    enc.zero_grad()
    got = CachedMultipleNegativesRankingLoss(enc)(chunks_a, chunks_p)
    got.backward()
    _assert_same_loss_and_grads(enc, got, ref, ref_grads)


def test_cached_mnrl_matryoshka_equals_wrapped_plain():
    torch.manual_seed(8)
    enc = torch.nn.Linear(10, 8)
    xa, xp, xn = torch.randn(12, 10), torch.randn(12, 10), torch.randn(12, 10)
    plain = MatryoshkaLoss(MultipleNegativesRankingLoss(symmetric=True), dims=(8, 4, 2), weights=(1.0, 0.5, 0.25))
    enc.zero_grad()
    ref = plain(enc(xa), enc(xp), enc(xn).reshape(12, 1, 8))
    ref.backward()
    ref_grads = _params_grads(enc)
    cached = CachedMultipleNegativesRankingLoss(enc, symmetric=True, matryoshka_dims=(8, 4, 2),
                                                matryoshka_weights=(1.0, 0.5, 0.25))
    enc.zero_grad()
    got = cached(list(xa.split(5)), list(xp.split(5)), list(xn.split(5)))
    got.backward()
    _assert_same_loss_and_grads(enc, got, ref, ref_grads)
    with pytest.raises(DimensionMismatch, match="exceed the embedding size 8"):
        CachedMultipleNegativesRankingLoss(enc, matryoshka_dims=(16,))([xa], [xp])
    with pytest.raises(ConfigError, match="one weight per dim"):
        CachedMultipleNegativesRankingLoss(enc, matryoshka_dims=(8, 4), matryoshka_weights=(1.0,))


def test_cached_mnrl_without_grad_returns_value():
    enc = torch.nn.Linear(4, 3)
    x = torch.randn(6, 4)
    with torch.no_grad():
        got = CachedMultipleNegativesRankingLoss(enc)(list(x.split(4)), list((x + 1).split(4)))
        ref = MultipleNegativesRankingLoss()(enc(x), enc(x + 1))
    assert float(got.detach()) == pytest.approx(float(ref.detach()), abs=1e-6)


def test_cached_mnrl_bad_input():
    enc = torch.nn.Linear(4, 3)
    x = torch.randn(6, 4)
    loss = CachedMultipleNegativesRankingLoss(enc)
    with pytest.raises(InputError, match="sequence of feature chunks"):
        loss(x, x)
    with pytest.raises(DimensionMismatch, match=r"\(6, 3\).*\(4, 3\)"):
        loss([x], [x[:4]])
    with pytest.raises(ConfigError, match="callable"):
        CachedMultipleNegativesRankingLoss("not a model")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cannot wrap"):
        MatryoshkaLoss(loss, dims=(2,))


# ---------------------------------------------------------------- errors


def test_shape_mismatch_names_both_shapes():
    a, b = torch.randn(3, 4), torch.randn(3, 5)
    for loss, args in [
        (ContrastiveLoss(), (a, b, T([1, 0, 1]))),
        (TripletLoss(), (a, a, b)),
        (MultipleNegativesRankingLoss(), (a, b)),
        (CoSENTLoss(), (a, b, T([1.0, 2.0, 3.0]))),
        (CosineSimilarityLoss(), (a, b, T([1.0, 0.0, 0.5]))),
    ]:
        with pytest.raises(DimensionMismatch, match=r"\(3, 4\).*\(3, 5\)"):
            loss(*args)
    with pytest.raises(DimensionMismatch, match=r"\(2, 4\)"):
        MultipleNegativesRankingLoss()(a, a[:2])
    with pytest.raises(DimensionMismatch, match=r"3-D tensor \(B, k, D\)"):
        MultipleNegativesRankingLoss()(a, a, a)
    with pytest.raises(DimensionMismatch, match=r"\(3, 2, 5\)"):
        MultipleNegativesRankingLoss()(a, a, torch.randn(3, 2, 5))
    with pytest.raises(DimensionMismatch, match=r"labels must have shape \(3,\)"):
        ContrastiveLoss()(a, a, T([1, 0]))
    with pytest.raises(InputError, match=r"1 \(similar\) or 0 \(dissimilar\), got \[0.0, 1.0, 2.0\]"):
        OnlineContrastiveLoss()(a, a, T([1, 0, 2]))
    with pytest.raises(DimensionMismatch, match="2-D"):
        CoSENTLoss()(torch.randn(4), torch.randn(4), T([1.0]))
    with pytest.raises(InputError, match="empty batch"):
        CoSENTLoss()(torch.randn(0, 4), torch.randn(0, 4), T([]))
    with pytest.raises(DimensionMismatch, match="dim=4"):
        SoftmaxLoss(4, n_labels=3)(b, b, T([0, 1, 2]))
    with pytest.raises(InputError, match=r"labels must be in \[0, 3\)"):
        SoftmaxLoss(4, n_labels=3)(a, a, T([0, 1, 3]))
    with pytest.raises(DimensionMismatch, match="exceed the embedding size 4"):
        MatryoshkaLoss(CoSENTLoss(), dims=(8, 4))(a, a, T([1.0, 2.0, 3.0]))
    with pytest.raises(InputError, match="score_range"):
        CosineSimilarityLoss()(a, a, T([0.0, 5.0, 1.0]))


def test_bad_options_and_columns():
    with pytest.raises(ConfigError, match="'margin' parameter of ContrastiveLoss"):
        ContrastiveLoss(margin=-1.0)
    with pytest.raises(ConfigError, match="'distance' parameter of TripletLoss"):
        TripletLoss(distance="manhattan")
    with pytest.raises(ConfigError, match="'scale' parameter"):
        MultipleNegativesRankingLoss(scale=0.0)
    with pytest.raises(ConfigError, match="score_range"):
        CosineSimilarityLoss(score_range=(5, 0))
    with pytest.raises(ConfigError, match="cannot wrap SoftmaxLoss"):
        MatryoshkaLoss(SoftmaxLoss(4, n_labels=3))
    with pytest.raises(ConfigError, match="one weight per dim"):
        MatryoshkaLoss(CoSENTLoss(), dims=(4, 2), weights=(1.0,))
    with pytest.raises(ConfigError, match=r"TripletLoss needs the columns \('anchor', 'positive', 'negative'\).*"
                                         r"\['anchor', 'positive'\]"):
        check_columns(TripletLoss(), ["anchor", "positive"])
    check_columns(MultipleNegativesRankingLoss, ["anchor", "positive", "negative"])
    assert CachedMultipleNegativesRankingLoss.columns == MultipleNegativesRankingLoss.columns
    assert SoftmaxLoss.columns == ("sentence1", "sentence2", "label")
    assert CoSENTLoss.columns == CosineSimilarityLoss.columns == ("sentence1", "sentence2", "score")


# ---------------------------------------------------------------- package


def test_docstring_examples():
    from embedstack.training import cached, losses

    for mod in (losses, cached):
        result = doctest.testmod(mod)
        assert result.failed == 0 and result.attempted > 0


def test_importing_the_package_does_not_import_torch():
    code = ("import sys, embedstack, embedstack.training as t; assert 'torch' not in sys.modules; "
            "assert 'MultipleNegativesRankingLoss' in dir(t)")
    subprocess.run([sys.executable, "-c", code], check=True)
    import embedstack.training

    with pytest.raises(AttributeError):
        embedstack.training.NoSuchLoss  # noqa: B018


def test_missing_torch_names_the_extra():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from embedstack.errors import MissingExtra\n"
            "try:\n    import embedstack.training.losses\nexcept MissingExtra as e:\n"
            "    assert \"embedstack[torch]\" in str(e), str(e)\nelse:\n    raise SystemExit('no MissingExtra')")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("make", [
    lambda: ContrastiveLoss(margin=None),
    lambda: MultipleNegativesRankingLoss(scale=None),
    lambda: CoSENTLoss(scale="x"),
    lambda: CoSENTLoss(scale=-1.0),
    lambda: CosineSimilarityLoss(score_range=(0,)),
    lambda: SoftmaxLoss("a"),
    lambda: MatryoshkaLoss(MultipleNegativesRankingLoss(), dims=("a",)),
    lambda: TripletLoss(distance="manhattan"),
])
def test_bad_arguments_are_config_errors(make):
    with pytest.raises(ConfigError):
        make()


def test_bad_targets_and_mixed_sizes_are_typed_errors():
    u, v = torch.randn(2, 4), torch.randn(2, 4)
    with pytest.raises(InputError, match="NaN"):
        CosineSimilarityLoss()(u, v, torch.tensor([0.5, float("nan")]))
    with pytest.raises(InputError, match="NaN"):
        CoSENTLoss()(u, v, torch.tensor([0.5, float("nan")]))
    with pytest.raises(InputError, match="numbers"):
        ContrastiveLoss()(u, v, ["a", "b"])
    with pytest.raises(DimensionMismatch, match="different sizes"):
        MatryoshkaLoss(MultipleNegativesRankingLoss(), dims=(2,))(torch.randn(2, 3), torch.randn(2, 4))
