"""Word similarity and analogy runners: hand-computed cases and agreement with gensim."""

from __future__ import annotations

import numpy as np
import pytest

from embedstack.errors import ConfigError, InputError
from embedstack.evaluation.words import evaluate_analogies, evaluate_word_similarity


class Vectors:
    def __init__(self, words, vectors):
        self.index_to_key = list(words)
        self.key_to_index = {w: i for i, w in enumerate(self.index_to_key)}
        self.vectors = np.asarray(vectors, dtype=np.float32)


def test_word_similarity_hand_computed():
    kv = Vectors(["Cat", "dog", "car"], [[1, 0], [1, 1], [0, 1]])
    pairs = [("cat", "dog", 9.0), ("dog", "car", 5.0), ("cat", "car", 1.0), ("cat", "zebra", 3.0)]
    res = evaluate_word_similarity(kv, pairs)
    # "cat" found through the lowercase fallback ("Cat"); "zebra" is OOV.
    # cosines 0.707, 0.707, 0 -> ranks (2.5, 2.5, 1) vs gold ranks (3, 2, 1):
    # Pearson of ranks: x-mean = (.5,.5,-1), y-mean = (1,0,-1): cov 1.5, |x| = sqrt(1.5), |y| = sqrt(2)
    assert res["spearman"] == pytest.approx(1.5 / np.sqrt(1.5 * 2))
    assert res["oov"] == 1 and res["n"] == 3 and res["total"] == 4 and res["oov_ratio"] == 0.25
    strict = Vectors(["Cat", "dog", "car", "bus"], [[1, 0], [1, 1], [0, 1], [1, 2]])
    res2 = evaluate_word_similarity(strict, pairs + [("dog", "bus", 7.0)], case_insensitive=False)
    assert res2["oov"] == 3  # every pair with "cat" is OOV without the fallback
    with pytest.raises(InputError, match="at least 2"):
        evaluate_word_similarity(kv, [("cat", "zebra", 1.0)])
    with pytest.raises(InputError):
        evaluate_word_similarity(kv, [])
    with pytest.raises(InputError):
        evaluate_word_similarity(object(), pairs)


def test_analogy_hand_computed_and_exclusion_of_question_words():
    # man:king :: woman:? -> king - man + woman = (1, -1.9...) closest to queen
    kv = Vectors(["king", "queen", "man", "woman", "Woman"], [[1, 1], [1, -1], [0.1, 1], [0.1, -1], [0.1, -1]])
    sections = [("family", [("man", "king", "woman", "queen")]), ("gram-test", [("King", "man", "queen", "woman")])]
    res = evaluate_analogies(kv, sections)
    # second question ("King" found as "king"): man - king + queen = (0.1, -1) = woman; "Woman" is the same
    # word lowercased, so either spelling counts as the expected answer -> both questions correct
    assert res["accuracy"] == 1.0 and res["correct"] == 2 and res["total"] == 2
    assert res["semantic"] == {"accuracy": 1.0, "correct": 1, "total": 1}
    assert res["syntactic"] == {"accuracy": 1.0, "correct": 1, "total": 1}
    # the candidate nearest to b - a + c is c itself; it must be skipped (and so must its other spelling)
    kv2 = Vectors(["a", "b", "c", "C", "d"], [[1, 0], [1, 0.01], [0, 1], [0, 1], [0.2, 1]])
    res2 = evaluate_analogies(kv2, [("s", [("a", "b", "c", "d")])])
    assert res2["correct"] == 1
    res3 = evaluate_analogies(kv2, [("s", [("a", "b", "c", "d")])], method="3cosmul")
    assert res3["correct"] == 1 and res3["method"] == "3cosmul"


def test_analogy_restrict_vocab_counts_oov():
    kv = Vectors(["king", "queen", "man", "woman", "rare"], [[1, 1], [1, -1], [0.1, 1], [0.1, -1], [5, 5]])
    qs = [("s", [("man", "king", "woman", "queen"), ("man", "king", "woman", "rare"), ("x", "y", "z", "w")])]
    res = evaluate_analogies(kv, qs, restrict_vocab=4)
    assert res["total"] == 1 and res["oov"] == 2 and res["correct"] == 1
    assert res["sections"]["s"] == {"accuracy": 1.0, "correct": 1, "total": 1, "oov": 2}
    assert res["oov_ratio"] == pytest.approx(2 / 3)
    with pytest.raises(ConfigError):
        evaluate_analogies(kv, qs, method="3cosfoo")
    with pytest.raises(ConfigError):
        evaluate_analogies(kv, qs, restrict_vocab=0)
    with pytest.raises(InputError):
        evaluate_analogies(kv, [("s", [("a", "b", "c")])])


def _random_analogy_world(seed: int = 0, n_words: int = 400, dim: int = 16):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(n_words)]
    words[5], words[6] = "Paris", "paris"  # a case duplicate: the most frequent spelling stands for both
    vecs = rng.normal(size=(n_words, dim)).astype(np.float32)
    questions = []
    for j in range(80):
        a, b, c = rng.choice(n_words, 3, replace=False)
        d = 300 + j if j < 60 else int(rng.integers(0, 420))  # the last ones may be out of the vocabulary
        if d < n_words and j < 60:
            vecs[d] = vecs[b] - vecs[a] + vecs[c] + rng.normal(scale=0.9, size=dim)
        dw = words[d] if d < n_words else f"unknown{d}"
        questions.append((words[a], words[b], words[c], dw))
    questions.append(("PARIS", "w1", "w2", "w3"))
    return words, vecs, [("capital-world", questions[:40]), ("gram3-comparative", questions[40:])]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_analogies_agree_with_gensim(tmp_path):
    gensim_models = pytest.importorskip("gensim.models")
    words, vecs, sections = _random_analogy_world()
    kv = gensim_models.KeyedVectors(vecs.shape[1])
    kv.add_vectors(words, vecs)
    path = tmp_path / "q.txt"
    path.write_text("".join(f": {name}\n" + "".join(" ".join(q) + "\n" for q in qs) for name, qs in sections))
    for restrict in (350, 30000):
        score, gsecs = kv.evaluate_word_analogies(str(path), restrict_vocab=restrict, case_insensitive=True)
        ours = evaluate_analogies(Vectors(words, vecs), sections, restrict_vocab=restrict)
        g = {s["section"]: (len(s["correct"]), len(s["correct"]) + len(s["incorrect"])) for s in gsecs}
        assert ours["accuracy"] == pytest.approx(score)
        assert (ours["correct"], ours["total"]) == g["Total accuracy"]
        for name, _ in sections:
            assert (ours["sections"][name]["correct"], ours["sections"][name]["total"]) == g[name]
        assert 0 < ours["correct"] < ours["total"]  # a non-trivial case


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_3cosmul_agrees_with_gensim_most_similar_cosmul():
    gensim_models = pytest.importorskip("gensim.models")
    words, vecs, sections = _random_analogy_world(seed=3)
    words = [w.lower() if w != "Paris" else "paris_cap" for w in words]
    qs = [q for _, sec in sections for q in sec if all(w in words for w in q)]
    kv = gensim_models.KeyedVectors(vecs.shape[1])
    kv.add_vectors(words, vecs)
    expected = 0
    for a, b, c, d in qs:
        sims = kv.most_similar_cosmul(positive=[b, c], negative=[a], topn=1)
        expected += sims[0][0] == d
    ours = evaluate_analogies(Vectors(words, vecs), [("s", qs)], method="3cosmul")
    assert ours["total"] == len(qs) and ours["correct"] == expected
