"""Hard-negative mining: exact negatives on hand-made corpora (BM25 and a fake dense model), the rank window,
the margin guard, positives never returned, batch-size invariance, seeded sampling, the embedding cache, errors."""

from __future__ import annotations

import doctest
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from embedstack.count import BM25
from embedstack.errors import ConfigError, InputError
from embedstack.training import mining
from embedstack.training.mining import MiningResult, mine_hard_negatives

# BM25 topic: four-term documents (no stopwords) sharing 4, 3, 2, 1, 0 terms with the query, so their BM25
# order is fixed by the overlap whatever the idf: n1 (3 shared) > n2 (2) > n3 (1); n4 shares nothing.
Q1 = "apple banana cherry grape"
P1 = "apple banana cherry grape"
N1 = "apple banana cherry melon"
N2 = "apple banana kiwi lemon"
N3 = "apple mango peach plum"
N4 = "onion garlic pepper salt"
# a second topic, so batches hold more than one query
Q2 = "violin cello viola harp"
P2 = "violin cello viola harp"
M1 = "violin cello viola drum"
M2 = "violin cello flute oboe"
M3 = "violin trumpet tuba horn"
CORPUS = [P1, N1, N2, N3, N4, P2, M1, M2, M3]


def negs(res: MiningResult, k: int) -> list[list[str]]:
    cols = [res.data.column(f"negative_{j + 1}") for j in range(k)]
    return [list(r) for r in zip(*cols, strict=True)]


def test_bm25_top_sampling_gives_the_known_ranking():
    res = mine_hard_negatives(([Q1, Q2], [P1, P2]), CORPUS, num_negatives=3)
    assert res.data.column("anchor") == [Q1, Q2]
    assert res.data.column("positive") == [P1, P2]
    assert negs(res, 3) == [[N1, N2, N3], [M1, M2, M3]]
    assert len(res.data) == 2
    s = res.stats
    assert (s["rows_in"], s["rows_out"], s["rows_dropped"], s["score"]) == (2, 2, 0, "bm25")
    assert s["mean_rank"] == pytest.approx(1.0)  # ranks 0, 1, 2 in both rows
    assert s["unique_queries"] == 2 and s["corpus_size"] == len(CORPUS)


def test_rank_window_is_respected():
    res = mine_hard_negatives(([Q1, Q2], [P1, P2]), CORPUS, num_negatives=2, range_min=1, range_max=3)
    assert negs(res, 2) == [[N2, N3], [M2, M3]]
    assert res.stats["mean_rank"] == pytest.approx(1.5)
    res = mine_hard_negatives(([Q1], [P1]), CORPUS, num_negatives=1, range_min=2, range_max=3)
    assert negs(res, 1) == [[N3]]
    # the window [0, 2) holds two candidates: asking for two takes exactly them
    res = mine_hard_negatives(([Q1], [P1]), CORPUS, num_negatives=2, range_max=2)
    assert negs(res, 2) == [[N1, N2]]


def test_positives_and_their_duplicates_are_never_negatives():
    # Q1 has two positives (two rows); N1 is one of them now, and the corpus holds a duplicate of P1
    data = ([Q1, Q1, Q2], [P1, N1, P2])
    res = mine_hard_negatives(data, [*CORPUS, P1, N1], num_negatives=2)
    rows = negs(res, 2)
    assert rows[0] == rows[1] == [N2, N3]  # neither P1 nor N1 for either row of Q1
    assert rows[2] == [M1, M2]
    assert res.stats["unique_queries"] == 2 and res.stats["corpus_size"] == len(CORPUS)
    for anchor, row in zip(res.data.column("anchor"), rows, strict=True):
        own = {p for a, p in zip(*data, strict=True) if a == anchor}
        assert not own & set(row)


def test_default_corpus_is_the_positives():
    qs = [Q1, "apple banana cherry melon", "apple banana kiwi lemon"]
    res = mine_hard_negatives((qs, [P1, N1, N2]), num_negatives=1)
    assert res.stats["corpus_size"] == 3
    assert negs(res, 1) == [[N1], [P1], [P1]]  # P1 and N1 tie for the last: corpus order


def test_blank_corpus_texts_are_never_candidates():
    res = mine_hard_negatives(([Q1], [P1]), ["", "   ", *CORPUS], num_negatives=3)
    assert negs(res, 3) == [[N1, N2, N3]] and res.stats["corpus_size"] == len(CORPUS)


def test_margin_guard_removes_a_near_duplicate_of_the_positive():
    near = "Apple, banana; cherry grapes!"  # same stems as P1: the same BM25 score, another text
    corpus = [*CORPUS, near]
    plain = mine_hard_negatives(([Q1], [P1]), corpus, num_negatives=2)
    assert negs(plain, 2) == [[near, N1]]
    guarded = mine_hard_negatives(([Q1], [P1]), corpus, num_negatives=2, margin=0.01)
    assert negs(guarded, 2) == [[N1, N2]]
    assert guarded.stats["margin_removed"] == 1
    rel = mine_hard_negatives(([Q1], [P1]), corpus, num_negatives=2, relative_margin=0.01)
    assert negs(rel, 2) == [[N1, N2]]
    # ranks are counted before the guard: the window [0, 2) minus the near duplicate leaves one candidate
    with pytest.warns(RuntimeWarning, match="dropped 1 of 1 rows"), pytest.raises(InputError, match="range_max=4"):
        mine_hard_negatives(([Q1], [P1]), corpus, num_negatives=2, range_max=2, margin=0.01)
    with pytest.warns(RuntimeWarning, match="dropped 1 of 2 rows"):
        short = mine_hard_negatives(([Q1, Q2], [P1, P2]), corpus, num_negatives=2, range_max=2, margin=0.01)
    assert short.data.column("anchor") == [Q2] and short.stats["rows_dropped"] == 1


def test_rows_without_enough_candidates_are_dropped_with_a_warning():
    lonely = "zebra giraffe"  # shares no term with anything: BM25 returns nothing
    with pytest.warns(RuntimeWarning, match=r"dropped 1 of 3 rows \(33.3%\)"):
        res = mine_hard_negatives(([Q1, lonely, Q2], [P1, "zebra stripes", P2]), CORPUS, num_negatives=3)
    assert res.data.column("anchor") == [Q1, Q2]
    assert res.stats["rows_dropped"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1 of 11 rows (< 10%): no warning
        res = mine_hard_negatives(([Q1] * 10 + [lonely], [P1] * 10 + ["zebra stripes"]), CORPUS, num_negatives=1)
    assert res.stats["rows_out"] == 10


def test_random_sampling_is_seeded_in_the_window_and_in_rank_order():
    order = [N1, N2, N3]
    seen = set()
    for seed in range(12):
        a = mine_hard_negatives(([Q1, Q1], [P1, P1]), CORPUS, num_negatives=2, sampling="random", seed=seed)
        b = mine_hard_negatives(([Q1, Q1], [P1, P1]), CORPUS, num_negatives=2, sampling="random", seed=seed)
        assert negs(a, 2) == negs(b, 2)
        for row in negs(a, 2):
            assert set(row) <= set(order) and order.index(row[0]) < order.index(row[1])
            seen.add(tuple(row))
    assert len(seen) == 3  # every pair of the three candidates comes up


# ------------------------------------------------------------------------------- a fake dense model

DOCS = {  # 2-d directions: cosine with the query (1, 0) is the first coordinate after normalisation
    "d-pos": (1.0, 0.0),
    "d-a": (0.95, 0.05),  # closest negative
    "d-b": (0.8, 0.2),
    "d-c": (0.5, 0.5),
    "d-d": (0.1, 0.9),
    "d-e": (-1.0, 0.1),
    "d-pos2": (0.0, 1.0),
    "d-f": (0.1, 1.0),
}
QUERIES = {"dq": (1.0, 0.0), "dq2": (0.0, 1.0)}


class FakeEncoder:
    """Deterministic DenseEncoder: fixed vectors per text; records what it was asked to encode."""

    dim = 2

    def __init__(self) -> None:
        self.table = {**DOCS, **QUERIES}
        self.calls: list[tuple[str, list[str]]] = []

    def encode(self, texts, *, role="document", batch_size=64):
        texts = list(texts)
        self.calls.append((role, texts))
        return np.asarray([self.table[t] for t in texts], dtype=np.float32).reshape(len(texts), self.dim)

    def encoded(self, role: str) -> int:
        return sum(len(t) for r, t in self.calls if r == role)


class KeyedFakeEncoder(FakeEncoder):
    """The same, with what the embedding cache identifies an encoder by: weights (a torch module), a tokenizer,
    prompts."""

    name = "fake"
    pooling = "mean"

    def __init__(self) -> None:
        super().__init__()
        torch = pytest.importorskip("torch")
        self.model = torch.nn.Linear(2, 2)
        with torch.no_grad():
            self.model.weight.copy_(torch.eye(2))
            self.model.bias.zero_()
        self.tokenizer = SimpleNamespace(vocab_size=7)

    def prompt_for(self, role: str) -> str:
        return ""


def dense_corpus() -> list[str]:
    return list(DOCS)


def test_dense_top_sampling_ranks_by_cosine(tmp_path):
    enc = FakeEncoder()
    res = mine_hard_negatives((["dq", "dq2"], ["d-pos", "d-pos2"]), dense_corpus(), method="dense", model=enc,
                              num_negatives=3, cache_dir=tmp_path)
    assert negs(res, 3) == [["d-a", "d-b", "d-c"], ["d-f", "d-d", "d-c"]]
    assert res.stats["score"] == "cosine"
    expect = np.mean([0.95 / np.hypot(0.95, 0.05), 0.8 / np.hypot(0.8, 0.2), 0.5 / np.hypot(0.5, 0.5),
                      1.0 / np.hypot(0.1, 1.0), 0.9 / np.hypot(0.1, 0.9), 0.5 / np.hypot(0.5, 0.5)])
    assert res.stats["mean_score"] == pytest.approx(expect, abs=1e-6)
    assert not list(tmp_path.iterdir())  # an encoder the cache cannot identify is not cached


def test_dense_margin_uses_the_model_cosine(tmp_path):
    enc = FakeEncoder()
    # cos(dq, d-a) = 0.9986: within 0.01 of the positive's 1.0; d-b (0.970) is not
    res = mine_hard_negatives((["dq"], ["d-pos"]), dense_corpus(), method="dense", model=enc, num_negatives=2,
                              margin=0.01, cache_dir=tmp_path)
    assert negs(res, 2) == [["d-b", "d-c"]]
    assert res.stats["margin_removed"] == 1
    res = mine_hard_negatives((["dq"], ["d-pos"]), dense_corpus(), method="dense", model=enc, num_negatives=2,
                              relative_margin=0.05, cache_dir=tmp_path)
    assert negs(res, 2) == [["d-c", "d-d"]]  # threshold 0.95: d-a and d-b go


def test_both_is_the_union_of_the_windows_ranked_by_the_dense_score(tmp_path):
    # BM25 and the fake vectors disagree: BM25 finds "alpha beta" (it shares a word), the vectors put it last
    table = {"alpha query": (1.0, 0.0), "alpha positive": (1.0, 0.0), "alpha beta": (-1.0, 0.0),
             "gamma": (0.9, 0.1), "delta": (0.8, 0.3), "epsilon": (0.0, 1.0)}
    enc = FakeEncoder()
    enc.table = table
    corpus = list(table)[1:]
    data = (["alpha query"], ["alpha positive"])
    dense = mine_hard_negatives(data, corpus, method="dense", model=enc, num_negatives=2, range_max=2,
                                cache_dir=tmp_path)
    assert negs(dense, 2) == [["gamma", "delta"]]
    bm25 = mine_hard_negatives(data, corpus, method="bm25", model=enc, num_negatives=1, cache_dir=tmp_path)
    assert negs(bm25, 1) == [["alpha beta"]]  # BM25 ranking, scored with the model's cosine
    assert bm25.stats["mean_score"] == pytest.approx(-1.0)
    # windows [0, 2): dense {gamma, delta} and BM25 {alpha beta}; "top" takes the best cosines
    both = mine_hard_negatives(data, corpus, method="both", model=enc, num_negatives=2, range_max=2,
                               cache_dir=tmp_path)
    assert negs(both, 2) == [["gamma", "delta"]]
    seen = set()
    for seed in range(10):
        res = mine_hard_negatives(data, corpus, method="both", model=enc, num_negatives=2, range_max=2,
                                  sampling="random", seed=seed, cache_dir=tmp_path)
        seen.update(negs(res, 2)[0])
        assert res.stats["mean_rank"] <= 1
    assert seen == {"gamma", "delta", "alpha beta"}  # BM25's candidate is drawn too
    # a candidate that one ranking puts above the window (rank < range_min) stays out, whatever the other says
    table = {"alpha query": (1.0, 0.0), "alpha positive": (1.0, 0.0), "alpha beta": (-1.0, 0.0),
             "alpha gamma": (0.95, 0.05), "delta": (0.8, 0.3), "epsilon": (0.0, 1.0), "zeta": (-0.5, 0.5)}
    enc.table = table
    corpus = list(table)[1:]
    # BM25: alpha beta r0, alpha gamma r1 (a tie, corpus order); dense: alpha gamma r0, delta r1, epsilon r2
    res = mine_hard_negatives(data, corpus, method="both", model=enc, num_negatives=2, range_min=1, range_max=3,
                              cache_dir=tmp_path)
    assert negs(res, 2) == [["delta", "epsilon"]]
    assert res.stats["mean_rank"] == pytest.approx(1.5)


@pytest.mark.filterwarnings("ignore:hard-negative mining dropped")
@pytest.mark.parametrize("method", ["bm25", "dense", "both"])
@pytest.mark.parametrize("sampling", ["top", "random"])
def test_batch_size_does_not_change_the_output(tmp_path, method, sampling):
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(30)]
    corpus = [" ".join(rng.choice(words, size=6)) for _ in range(60)]
    queries = [" ".join(rng.choice(words, size=3)) for _ in range(25)]
    positives = [corpus[i] for i in rng.integers(0, 60, size=25)]
    queries += queries[:5]  # repeated queries with other positives
    positives += [corpus[i] for i in rng.integers(0, 60, size=5)]
    enc = FakeEncoder()
    enc.dim = 8
    enc.table = {t: rng.normal(size=8) for t in corpus}
    for q, p in zip(queries, positives, strict=True):  # a query lies near its (first) positive
        enc.table.setdefault(q, enc.table[p] + 0.3 * rng.normal(size=8))
    model = enc if method != "bm25" else None
    kw = {"method": method, "model": model, "num_negatives": 3, "range_min": 1, "range_max": 10,
          "sampling": sampling, "seed": 5, "cache_dir": tmp_path, "relative_margin": 0.1 if model else None}
    one = mine_hard_negatives((queries, positives), corpus, batch_size=1, **kw)
    big = mine_hard_negatives((queries, positives), corpus, batch_size=1000, **kw)
    mid = mine_hard_negatives((queries, positives), corpus, batch_size=7, **kw)
    for col in ("anchor", "positive", "negative_1", "negative_2", "negative_3"):
        assert one.data.column(col) == big.data.column(col) == mid.data.column(col)
    assert one.stats["rows_out"] > 0
    assert one.stats["peak_candidate_bytes"] < big.stats["peak_candidate_bytes"]


@pytest.mark.filterwarnings("ignore:hard-negative mining dropped")
@pytest.mark.parametrize("method", ["bm25", "dense"])
def test_memory_stays_far_below_the_queries_by_corpus_matrix(tmp_path, method):
    import tracemalloc

    rng = np.random.default_rng(0)
    words = np.array([f"t{i}" for i in range(400)])
    corpus = [" ".join(rng.choice(words, size=8)) for _ in range(4000)]
    queries = [" ".join(rng.choice(words, size=3)) for _ in range(3000)]
    positives = [corpus[i] for i in rng.integers(0, len(corpus), size=len(queries))]
    enc = FakeEncoder()
    enc.dim = 8
    enc.table = {t: rng.normal(size=8) for t in dict.fromkeys(corpus + queries)}
    full = len(queries) * len(corpus) * 4  # the float32 score matrix a one-shot search would build: 48 MB
    kw = {"method": method, "model": enc if method == "dense" else None, "num_negatives": 3, "range_max": 20,
          "batch_size": 64, "cache_dir": tmp_path}
    mine_hard_negatives((queries[:5], positives[:5]), corpus[:50], **kw)  # kernels loaded before measuring
    threadpoolctl = pytest.importorskip("threadpoolctl")
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        with threadpoolctl.threadpool_limits(1, user_api="blas"):  # small products: threads only spin here
            res = mine_hard_negatives((queries, positives), corpus, **kw)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert res.stats["rows_out"] > 0.9 * len(queries)
    assert res.stats["peak_candidate_bytes"] < 64 * 25 * 40
    assert peak < full / 6, f"peak {peak / 1e6:.1f} MB for a {full / 1e6:.0f} MB matrix"


def test_corpus_vectors_are_cached_on_disk_between_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path / "never"))  # the default root must not be used
    data = (["dq", "dq2"], ["d-pos", "d-pos2"])
    first = KeyedFakeEncoder()
    a = mine_hard_negatives(data, dense_corpus(), method="dense", model=first, num_negatives=2,
                            cache_dir=tmp_path / "cache")
    assert first.encoded("document") == len(DOCS)
    assert a.stats["encoded"] == len(DOCS) + 2 and a.stats["from_cache"] == 0
    assert list((tmp_path / "cache").glob("*.safetensors"))
    assert not (tmp_path / "never").exists()
    second = KeyedFakeEncoder()  # a new object (as in a new process): only the disk cache connects them
    b = mine_hard_negatives(data, dense_corpus(), method="dense", model=second, num_negatives=2,
                            cache_dir=tmp_path / "cache")
    assert second.encoded("document") == 0 and second.encoded("query") == 0
    assert b.stats["encoded"] == 0 and b.stats["from_cache"] == len(DOCS) + 2
    assert negs(a, 2) == negs(b, 2)
    # other weights: another namespace, encoded again
    third = KeyedFakeEncoder()
    import torch

    with torch.no_grad():
        third.model.weight.mul_(2.0)
    mine_hard_negatives(data, dense_corpus(), method="dense", model=third, num_negatives=2,
                        cache_dir=tmp_path / "cache")
    assert third.encoded("document") == len(DOCS)


def test_positive_outside_the_given_corpus_is_scored_for_the_margin(tmp_path):
    enc = FakeEncoder()
    corpus = [t for t in DOCS if t != "d-pos"]
    res = mine_hard_negatives((["dq"], ["d-pos"]), corpus, method="dense", model=enc, num_negatives=2,
                              margin=0.01, cache_dir=tmp_path)
    assert negs(res, 2) == [["d-b", "d-c"]]
    assert ("document", ["d-pos"]) in enc.calls


def test_training_data_in_and_out_and_progress():
    from embedstack.training.data import TrainingData

    td = TrainingData.from_columns({"anchor": [Q1, Q2], "positive": [P1, P2]})
    stages: dict[str, list[tuple[int, int]]] = {}
    res = mine_hard_negatives(td, CORPUS, num_negatives=2, batch_size=1,
                              progress=lambda st, d, t: stages.setdefault(st, []).append((d, t)))
    assert isinstance(res.data, TrainingData)
    assert list(res.data.columns)[:4] == ["anchor", "positive", "negative_1", "negative_2"]
    assert res.data.column("negative_2") == [N2, M2]
    assert stages["mine"][0] == (0, 2) and stages["mine"][-1] == (2, 2)
    assert stages["index corpus"][-1] == (len(CORPUS), len(CORPUS))


def test_bad_parameters_name_the_argument():
    data = ([Q1], [P1])
    cases = [
        ({"range_min": 5, "range_max": 5}, "range_max"),
        ({"range_min": -1}, "range_min"),
        ({"num_negatives": 0}, "num_negatives"),
        ({"num_negatives": 4, "range_max": 3}, "num_negatives"),
        ({"method": "splade"}, "method"),
        ({"method": "dense"}, "model"),
        ({"method": "both"}, "model"),
        ({"margin": 0.1, "relative_margin": 0.1}, "relative_margin"),
        ({"margin": -0.1}, "margin"),
        ({"relative_margin": 1.5}, "relative_margin"),
        ({"sampling": "hardest"}, "sampling"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"model": "all-MiniLM-L6-v2"}, "model"),
        ({"progress": 3}, "progress"),
        ({"model": BM25()}, "model"),  # a sparse model has no dense encode()
    ]
    for kw, name in cases:
        with pytest.raises(ConfigError, match=name):
            mine_hard_negatives(data, CORPUS, **kw)


def test_bad_data_is_an_input_error():
    with pytest.raises(InputError, match="no .anchor, positive. rows"):
        mine_hard_negatives(([], []), CORPUS)
    with pytest.raises(InputError, match="2 queries but 1 positives"):
        mine_hard_negatives(([Q1, Q2], [P1]), CORPUS)
    with pytest.raises(InputError, match="corpus is empty"):
        mine_hard_negatives(([Q1], [P1]), [])
    with pytest.raises(InputError, match=r"positives\[0\] is int"):
        mine_hard_negatives(([Q1], [3]), CORPUS)
    with pytest.raises(InputError, match="not one string"):
        mine_hard_negatives(([Q1], [P1]), "one text")
    with pytest.raises(InputError, match="TrainingData"):
        mine_hard_negatives({"anchor": [Q1]}, CORPUS)
    with pytest.raises(InputError, match=r"tuple\(zip\(\*rows\)\)"):  # rows, not a (queries, positives) pair
        mine_hard_negatives([(Q1, P1), (Q2, P2)], CORPUS)
    with pytest.raises(InputError, match=r"queries\[0\] is an empty text"):
        mine_hard_negatives((["  "], [P1]), CORPUS)
    from embedstack.training.data import TrainingData

    with pytest.raises(InputError, match="missing: \\['positive'\\]"):
        mine_hard_negatives(TrainingData.from_columns({"anchor": [Q1], "score": [1.0]}), CORPUS)


def test_random_keys_depend_on_row_and_candidate_only():
    rows = np.array([0, 1, 2], dtype=np.int64)
    cand = np.array([[5, 6], [5, 6], [5, 6]], dtype=np.int64)
    k = mining._random_keys(0, rows, cand)
    assert k.dtype == np.uint64 and len({int(x) for x in k.ravel()}) == 6
    assert (mining._random_keys(0, rows[1:], cand[1:]) == k[1:]).all()
    assert not (mining._random_keys(1, rows, cand) == k).any()


def test_module_doctest():
    assert doctest.testmod(mining, optionflags=doctest.ELLIPSIS).failed == 0
