"""Word2Vec / FastText / GloVe behaviour: determinism, bad input, learning on a synthetic corpus."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from embedstack.errors import ConfigError, InputError  # noqa: E402
from embedstack.static import FastText, GloVe, IdCorpus, Word2Vec  # noqa: E402
from embedstack.static.word2vec import alias_table, huffman_tree  # noqa: E402


def _topic_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Two topics whose words never co-occur: within-topic similarity must beat cross-topic."""
    rng = np.random.default_rng(seed)
    animals = ["cat", "dog", "horse", "cow", "sheep", "goat", "pig", "hen"]
    tools = ["hammer", "saw", "drill", "wrench", "screw", "nail", "bolt", "chisel"]
    texts = []
    for i in range(n):
        words = animals if i % 2 else tools
        texts.append(" ".join(rng.choice(words, size=12)))
    return texts


def _separation(kv) -> float:
    animals = ["cat", "dog", "horse", "cow"]
    tools = ["hammer", "saw", "drill", "wrench"]
    within = np.mean([kv.similarity(a, b) for a in animals for b in animals if a != b])
    across = np.mean([kv.similarity(a, t) for a in animals for t in tools])
    return float(within - across)


@pytest.mark.parametrize("kw", [dict(sg=True), dict(sg=True, shared_negatives=False), dict(sg=False),
                                dict(sg=True, hs=True, negative=0), dict(sg=False, hs=True, negative=2)])
def test_word2vec_learns_topics(kw):
    w2v = Word2Vec(dim=16, window=3, min_count=1, epochs=5, workers=1, seed=2, sample=0, **kw).fit(_topic_corpus())
    assert _separation(w2v.wv_) > 0.3
    assert w2v.stats_.epoch_loss[-1] < w2v.stats_.epoch_loss[0]
    assert w2v.wv_.vectors.dtype == np.float32


def test_shared_negatives_option_changes_the_updates_and_is_recorded():
    texts = _topic_corpus(100)
    shared = Word2Vec(dim=8, min_count=1, epochs=1, workers=1, seed=3).fit(texts)
    pairs = Word2Vec(dim=8, min_count=1, epochs=1, workers=1, seed=3, shared_negatives=False).fit(texts)
    assert shared.wv_.meta["options"]["shared_negatives"] is True
    assert pairs.wv_.meta["options"]["shared_negatives"] is False
    assert not np.allclose(shared.wv_.vectors, pairs.wv_.vectors)
    # CBOW and hierarchical softmax have no per-pair draws to share: the option changes nothing
    a = Word2Vec(dim=8, min_count=1, epochs=1, workers=1, seed=3, sg=False).fit(texts).wv_.vectors
    b = Word2Vec(dim=8, min_count=1, epochs=1, workers=1, seed=3, sg=False, shared_negatives=False).fit(texts).wv_.vectors
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls, extra", [(Word2Vec, {}), (FastText, {"bucket": 50})])
def test_default_learning_rate_is_word2vec_cs_for_the_architecture(cls, extra):
    texts = _topic_corpus(60)
    for sg, rate in ((True, 0.025), (False, 0.05)):  # word2vec.c's -alpha defaults for skip-gram and CBOW
        kw = dict(dim=8, min_count=1, epochs=1, workers=1, seed=3, sg=sg, **extra)
        default = cls(**kw)
        assert default.alpha is None and default.start_alpha == rate
        default.fit(texts)
        assert default.wv_.meta["options"]["alpha"] == rate  # the rate used is what the saved vectors say
        explicit = cls(alpha=rate, **kw).fit(texts)
        np.testing.assert_array_equal(default.wv_.vectors, explicit.wv_.vectors)
        assert cls(alpha=0.01, **kw).start_alpha == 0.01
    with pytest.raises(ConfigError, match=r"'min_alpha'.*\[0\.0, 0\.05\]"):  # checked against the rate used
        cls(sg=False, min_alpha=0.06, **extra)._check()
    cls(sg=False, min_alpha=0.04, **extra)._check()  # above skip-gram's rate, below CBOW's: accepted
    with pytest.raises(ConfigError, match=r"'min_alpha'.*\[0\.0, 0\.025\]"):
        cls(sg=True, min_alpha=0.04, **extra)._check()
    assert GloVe(learning_rate=0.07).start_alpha == 0.07  # GloVe's alpha is its weighting exponent, not a rate


def test_diverged_training_is_refused_not_saved(monkeypatch):
    from embedstack.errors import TrainingDiverged
    from embedstack.static import _kernels as K

    def poisoned(syn0, *args):
        syn0[0, 0] = np.nan
        return 0, 0.0, 0

    monkeypatch.setattr(K, "w2v_train_job", poisoned)
    with pytest.raises(TrainingDiverged, match=r"Pass alpha=0\.0125 and workers=1\.") as info:
        Word2Vec(dim=4, min_count=1, epochs=1, workers=1, alpha=0.025).fit(_topic_corpus(20))
    assert info.value.message_for({"alpha": "--alpha", "workers": "--workers"}).endswith(
        "Pass --alpha 0.0125 and --workers 1.")


def test_seeded_single_worker_runs_are_identical():
    texts = _topic_corpus(200)
    a = Word2Vec(dim=8, min_count=1, epochs=2, workers=1, seed=7).fit(texts).wv_.vectors
    b = Word2Vec(dim=8, min_count=1, epochs=2, workers=1, seed=7).fit(texts).wv_.vectors
    c = Word2Vec(dim=8, min_count=1, epochs=2, workers=1, seed=8).fit(texts).wv_.vectors
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    f1 = FastText(dim=8, min_count=1, epochs=1, workers=1, seed=3, bucket=500).fit(texts).wv_.vectors
    f2 = FastText(dim=8, min_count=1, epochs=1, workers=1, seed=3, bucket=500).fit(texts).wv_.vectors
    np.testing.assert_array_equal(f1, f2)


def test_multi_worker_training_runs():
    w2v = Word2Vec(dim=8, min_count=1, epochs=2, workers=2, seed=1).fit(_topic_corpus(300))
    assert w2v.stats_.raw_words == 300 * 12 * 2
    assert np.isfinite(w2v.wv_.vectors).all()


def test_one_shot_generator_for_several_epochs_raises():
    gen = (t for t in _topic_corpus(20))
    with pytest.raises(ConfigError, match="one-shot"):
        Word2Vec(min_count=1, epochs=3).fit(gen)
    # a generator is fine for one epoch, or once wrapped into an IdCorpus
    Word2Vec(dim=4, min_count=1, epochs=1, workers=1).fit(t for t in _topic_corpus(20))
    corpus = IdCorpus.build((t for t in _topic_corpus(20)), min_count=1)
    Word2Vec(dim=4, min_count=1, epochs=3, workers=1).fit(corpus)


def test_bad_input():
    with pytest.raises(InputError, match="empty"):
        Word2Vec(min_count=1).fit([])
    with pytest.raises(InputError, match="empty"):
        Word2Vec(min_count=1).fit(["", "  ", "!!"])
    with pytest.raises(InputError, match="min_count"):
        Word2Vec(min_count=5).fit(["a b c", "d e f"])
    for bad in (0, -3):
        with pytest.raises(ConfigError, match="dim"):
            Word2Vec(dim=bad).fit(["a b"])
        with pytest.raises(ConfigError, match="dim"):
            FastText(dim=bad).fit(["a b"])
        with pytest.raises(ConfigError, match="dim"):
            GloVe(dim=bad).fit(["a b"])
    with pytest.raises(InputError, match="UTF-8"):
        Word2Vec(min_count=1).fit([b"ok text", b"caf\xe9 bad"])
    with pytest.raises(ConfigError, match="negative"):
        Word2Vec(negative=0, hs=False).fit(["a b"])
    with pytest.raises(InputError):
        Word2Vec(min_count=1).fit([1, 2])


def test_huffman_tree_is_prefix_free_and_frequency_ordered():
    counts = np.array([50, 20, 10, 10, 5, 3, 1, 1])
    codes, points, lens = huffman_tree(counts)
    words = ["".join(map(str, codes[w, : lens[w]])) for w in range(len(counts))]
    assert len(set(words)) == len(words)
    for a in words:
        for b in words:
            assert a == b or not b.startswith(a)
    assert lens[0] <= lens[-1]
    assert np.all(points[:, 0][lens > 0] == len(counts) - 2)  # every path starts at the root
    # Kraft equality of a full binary tree
    assert sum(2.0 ** -lens) == pytest.approx(1.0)


@pytest.mark.parametrize("p", [[0.5, 0.3, 0.2], [1.0], [0.0, 1.0, 0.0, 3.0], list(np.arange(1, 200) ** 0.75)])
def test_alias_table_is_exact_and_draws_follow_it(p):
    from embedstack.static import _kernels as K

    p = np.asarray(p, dtype=np.float64) / np.sum(p)
    t = alias_table(p)
    assert t.dtype == np.uint64 and len(t) == len(p)
    keep = (t & np.uint64(0xFFFFFFFF)).astype(np.float64) / 2**32
    alias = (t >> np.uint64(32)).astype(np.int64)
    implied = keep.copy()
    np.add.at(implied, alias, 1.0 - keep)
    np.testing.assert_allclose(implied / len(p), p, atol=1e-9)
    draws = np.empty(200_000, dtype=np.int32)
    K._draw_negatives(draws, len(draws), t, np.uint64(12345))
    np.testing.assert_allclose(np.bincount(draws, minlength=len(p)) / len(draws), p, atol=4e-3)
    assert draws.max() < len(p) and (p[np.unique(draws)] > 0).all()


def test_fasttext_packs_the_buckets_it_trains():
    from embedstack.static.fasttext import _pack_buckets

    rng = np.random.default_rng(0)
    sub_idx = rng.integers(0, 50_000, size=3_000).astype(np.int32)
    used, packed = _pack_buckets(sub_idx)
    np.testing.assert_array_equal(used[packed], sub_idx)  # the packed table's row k is bucket used[k]
    assert len(np.unique(used)) == len(used) == len(np.unique(sub_idx))
    first = [int(np.flatnonzero(sub_idx == b)[0]) for b in used]
    assert first == sorted(first)  # rows in the order the (frequency-sorted) vocabulary first reaches them
    used0, packed0 = _pack_buckets(np.zeros(0, np.int32))
    assert used0.shape == packed0.shape == (0,)


def test_fasttext_oov_and_persistence(tmp_path):
    from embedstack.static import load_vectors
    from embedstack.text.ngrams import ngram_buckets

    ft = FastText(dim=8, min_count=1, epochs=2, workers=1, bucket=5000, seed=4).fit(_topic_corpus(200))
    kv = ft.wv_
    assert "hammers" not in kv and kv.has_vector("hammers")
    oov = kv.get_vector("hammers")
    used = set(kv.ngram_ids.tolist())  # buckets some vocabulary word trains; others stay out
    b = [x for x in ngram_buckets("hammers", 3, 6, 5000) if x in used]
    assert ft.vectors_ngrams_.shape == (len(kv.ngram_ids), 8) and len(kv.ngram_ids) < 5000
    ptr, buckets = ft.subwords_
    assert np.array_equal(kv.ngram_ids, np.unique(buckets))  # every bucket a word uses has its row, and only those
    for w in ("hammer", "goat", kv.index_to_key[0]):  # a word's vector: the mean of its own row and its n-grams' rows
        i = ft.vocabulary_.index_[w]
        rows = np.searchsorted(kv.ngram_ids, buckets[ptr[i]:ptr[i + 1]])
        expect = (ft.vectors_vocab_[i] + ft.vectors_ngrams_[rows].sum(axis=0)) / (1 + len(rows))
        np.testing.assert_allclose(kv.get_vector(w), expect, rtol=1e-5, atol=1e-7)
    rows = ft.vectors_ngrams_[np.searchsorted(kv.ngram_ids, b)]
    np.testing.assert_allclose(oov, rows.mean(axis=0), rtol=1e-5)
    assert kv.most_similar("hammers", topn=1)
    assert kv.similarity("hammers", "hammer") > kv.similarity("hammers", "goat")
    ft.save(tmp_path / "ft")
    back = load_vectors(tmp_path / "ft")
    assert type(back).__name__ == "FastTextKeyedVectors" and back.bucket == 5000
    np.testing.assert_allclose(back.get_vector("hammers"), oov, rtol=1e-6)
    np.testing.assert_array_equal(back.vectors, kv.vectors)


def test_glove_learns_and_outputs_w_plus_context():
    g = GloVe(dim=10, window=4, min_count=1, epochs=30, workers=1, seed=0).fit(_topic_corpus(300))
    np.testing.assert_allclose(g.wv_.vectors, g.W_ + g.W_context_, rtol=1e-6)
    assert _separation(g.wv_) > 0.3
    assert g.stats_.epoch_loss[-1] < g.stats_.epoch_loss[0]
    rows, cols, vals = g.cooccurrence_
    assert np.all(rows <= cols) and np.all(vals > 0)


def test_corpus_memmap_and_sentence_cut(tmp_path):
    texts = ["a b c d e f g"] * 3 + ["a b"]
    mem = IdCorpus.build(texts, min_count=1, max_sentence_length=3, mmap_threshold=5, tmpdir=tmp_path)
    ram = IdCorpus.build(texts, min_count=1, max_sentence_length=3)
    assert isinstance(mem.ids, np.memmap)
    np.testing.assert_array_equal(np.asarray(mem.ids), ram.ids)
    np.testing.assert_array_equal(mem.offsets, ram.offsets)
    assert np.diff(ram.offsets).max() == 3
    assert list(ram.sentences())[0] == ["a", "b", "c"]
    folder = mem._folder
    mem.close()
    assert not folder.exists()


def test_corpus_drops_rare_words_and_counts_raw_tokens():
    c = IdCorpus.build(["x a b", "a b y", "z"], min_count=2)
    assert c.vocab.words_ == ["a", "b"]
    assert c.raw_words == 7
    assert c.offsets.tolist() == [0, 2, 4]  # the sentence "z" vanished
    assert [list(s) for s in c.sentences()] == [["a", "b"], ["a", "b"]]
