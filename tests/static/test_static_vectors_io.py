"""KeyedVectors queries, persistence and the interchange formats (incl. gensim interop)."""

from __future__ import annotations

import numpy as np
import pytest

from embedstack.errors import FormatError, InputError, UnknownKeyError
from embedstack.io.formats import (
    detect_format,
    read_glove,
    read_vectors,
    read_word2vec,
    write_glove,
    write_word2vec,
)
from embedstack.static import KeyedVectors, load_vectors


@pytest.fixture
def kv() -> KeyedVectors:
    keys = ["king", "queen", "man", "woman", "apple", "café"]
    vecs = np.array([[1.0, 1.0, 0.0], [1.0, -1.0, 0.0], [0.1, 1.0, 0.0], [0.1, -1.0, 0.0],
                     [0.0, 0.0, 1.0], [0.0, 0.2, 1.0]], np.float32)
    return KeyedVectors(keys, vecs, counts=np.array([60, 50, 40, 30, 20, 10]))


def test_queries_hand_computed(kv):
    assert kv.similarity("king", "queen") == pytest.approx(0.0, abs=1e-7)
    assert kv.similarity("apple", "café") == pytest.approx(1 / np.sqrt(1.04), rel=1e-6)
    assert kv.analogy("man", "king", "woman")[0][0] == "queen"
    assert kv.analogy("man", "king", "woman", method="3cosmul")[0][0] == "queen"
    top = kv.most_similar("apple", topn=2)
    assert top[0][0] == "café" and "apple" not in [w for w, _ in top]
    assert kv.most_similar(positive=["king", "woman"], negative=["man"], topn=1)[0][0] == "queen"
    assert kv.rank(["king", "woman"], ["man"], "queen") == 1
    assert kv.doesnt_match(["apple", "café", "king"]) == "king"
    assert [w for w, _ in kv.most_similar("king", topn=10, restrict_vocab=3)] == ["man", "queen"]
    assert len(kv.similar_by_vector(np.array([0, 0, 1], np.float32), topn=1)) == 1


def test_unknown_word_is_a_keyerror_naming_it(kv):
    with pytest.raises(UnknownKeyError, match="'kingdom'") as info:
        kv.most_similar("kingdom")
    assert isinstance(info.value, KeyError)
    with pytest.raises(KeyError):
        kv["nope"]
    with pytest.raises(InputError):
        kv.most_similar()


def test_save_load_roundtrip(kv, tmp_path):
    kv.save(tmp_path / "kv")
    back = load_vectors(tmp_path / "kv")
    assert back.index_to_key == kv.index_to_key
    np.testing.assert_array_equal(back.vectors, kv.vectors)
    np.testing.assert_array_equal(back.counts, kv.counts)


@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_format_roundtrip(kv, tmp_path, binary):
    p = tmp_path / ("v.bin" if binary else "v.txt")
    kv.save_word2vec_format(p, binary=binary)
    assert detect_format(p) == ("word2vec-binary" if binary else "word2vec-text")
    keys, vecs = read_word2vec(p)
    assert keys == kv.index_to_key
    np.testing.assert_allclose(vecs, kv.vectors, rtol=1e-5)
    assert load_vectors(p).index_to_key == kv.index_to_key


def test_glove_format_roundtrip(kv, tmp_path):
    p = tmp_path / "glove.txt"
    kv.save_glove_format(p)
    assert detect_format(p) == "glove"
    keys, vecs = read_glove(p)
    assert keys == kv.index_to_key
    np.testing.assert_allclose(load_vectors(p).vectors, kv.vectors, rtol=1e-5)


def test_glove_words_with_spaces(tmp_path):
    p = tmp_path / "g.txt"
    p.write_text("new york 0.5 1.0\nparis 1 2\n", encoding="utf-8")
    keys, vecs = read_vectors(p)
    assert keys == ["new york", "paris"] and vecs.shape == (2, 2)


def test_truncated_and_malformed_files(tmp_path, kv):
    p = tmp_path / "v.bin"
    kv.save_word2vec_format(p, binary=True)
    data = p.read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[: len(data) - 7])
    with pytest.raises(FormatError, match="truncated at byte"):
        read_word2vec(cut, binary=True)
    t = tmp_path / "v.txt"
    kv.save_word2vec_format(t)
    lines = t.read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join([lines[0], lines[1], "queen 0.1 oops 0.3", *lines[3:]]) + "\n", encoding="utf-8")
    with pytest.raises(FormatError, match="line 3"):
        read_vectors(bad)
    short = tmp_path / "short.txt"
    short.write_text("\n".join([lines[0], lines[1], "queen 0.1"]) + "\n", encoding="utf-8")
    with pytest.raises(FormatError, match="line 3 has 1 values, expected 3"):
        read_vectors(short)
    missing = tmp_path / "missing.txt"
    missing.write_text("\n".join(lines[:3]) + "\n", encoding="utf-8")
    with pytest.raises(FormatError, match="announces 6 vectors but 2"):
        read_vectors(missing)
    with pytest.raises(FormatError):
        load_vectors(tmp_path / "nope.txt")
    with pytest.raises(FormatError):
        write_word2vec(tmp_path / "x.txt", ["two words"], np.zeros((1, 2)))
    with pytest.raises(FormatError):
        write_glove(tmp_path / "x.txt", ["a", "b"], np.zeros((1, 2)))


@pytest.mark.parametrize("binary", [False, True])
def test_gensim_reads_ours_and_we_read_gensims(kv, tmp_path, binary):
    gensim_models = pytest.importorskip("gensim.models")
    ours = tmp_path / "ours"
    kv.save_word2vec_format(ours, binary=binary)
    g = gensim_models.KeyedVectors.load_word2vec_format(str(ours), binary=binary)
    assert list(g.index_to_key) == kv.index_to_key
    np.testing.assert_allclose(g.vectors, kv.vectors, rtol=1e-5)
    theirs = tmp_path / "theirs"
    g.save_word2vec_format(str(theirs), binary=binary)
    back = load_vectors(theirs)
    assert back.index_to_key == kv.index_to_key
    np.testing.assert_allclose(back.vectors, kv.vectors, rtol=1e-5)


def test_ngram_hashes_match_gensim():
    ft = pytest.importorskip("gensim.models.fasttext")
    from embedstack.text.ngrams import char_ngrams, ngram_buckets, subword_table

    words = ["where", "naïve", "日本語", "a", "Zürich-2"]
    for w in words:
        assert ngram_buckets(w, 3, 6, 2_000_000) == ft.ft_ngram_hashes(w, 3, 6, 2_000_000)
        assert sorted(char_ngrams(w, 3, 6)) == sorted(ft.compute_ngrams(w, 3, 6))
    ptr, ids = subword_table(words, 3, 6, 2_000_000)
    for i, w in enumerate(words):
        assert ids[ptr[i]: ptr[i + 1]].tolist() == ngram_buckets(w, 3, 6, 2_000_000)
    assert char_ngrams("where", 3, 3) == ["<wh", "whe", "her", "ere", "re>"]
