"""Vocabulary: hand-computed counts and tables, streaming, persistence, and hypothesis properties."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedstack.errors import ConfigError, FormatError, InputError, NotFittedError, UnknownKeyError
from embedstack.registry import load_component
from embedstack.text import Vocabulary

CORPUS = [["the", "cat", "sat"], ["the", "dog", "sat"], ["the", "cat"], ["a", "bird"]]


def test_counts_order_and_ties() -> None:
    v = Vocabulary().fit(CORPUS)
    assert v.words_ == ["the", "cat", "sat", "a", "bird", "dog"]  # 3, 2, 2, then ties by word
    assert v.counts_.tolist() == [3, 2, 2, 1, 1, 1] and v.counts_.dtype == np.int64
    assert v.total_words_ == 10
    assert v.index_ == {w: i for i, w in enumerate(v.words_)}
    assert len(v) == 6 and "cat" in v and "cow" not in v and v["sat"] == 2 and v.count("cow") == 0


def test_min_count_and_max_size() -> None:
    v = Vocabulary(min_count=2).fit(CORPUS)
    assert v.words_ == ["the", "cat", "sat"] and v.total_words_ == 10  # pruned tokens still counted
    v = Vocabulary(max_size=2).fit(CORPUS)
    assert v.words_ == ["the", "cat"]
    with pytest.raises(InputError, match=r"at least 5 times .*Pass min_count=1\."):
        Vocabulary(min_count=5).fit(CORPUS)
    with pytest.raises(InputError, match="empty corpus"):
        Vocabulary().fit([])
    with pytest.raises(InputError, match="empty corpus"):
        Vocabulary().fit([[], []])
    with pytest.raises(ConfigError, match="'min_count' parameter of Vocabulary"):
        Vocabulary(min_count=0).fit(CORPUS)
    with pytest.raises(ConfigError, match="'max_size'"):
        Vocabulary(max_size=-1).fit(CORPUS)


def test_fit_streams_a_generator_and_rejects_raw_strings() -> None:
    def gen():  # type: ignore[no-untyped-def]
        for i in range(1000):
            yield [f"w{i % 7}", "common"]

    v = Vocabulary().fit(gen())
    assert v.words_[0] == "common" and v.counts_[0] == 1000 and v.total_words_ == 2000
    with pytest.raises(InputError, match="token lists.*item #0 is a str"):
        Vocabulary().fit(["the cat sat"])


def test_fit_counts() -> None:
    v = Vocabulary(min_count=2).fit_counts({"b": 2, "a": 2, "c": 1}, total_words=10)
    assert v.words_ == ["a", "b"] and v.total_words_ == 10
    with pytest.raises(InputError, match="negative"):
        Vocabulary().fit_counts({"a": -1})


def test_encode() -> None:
    v = Vocabulary().fit(CORPUS)
    ids = v.encode(["the", "zebra", "dog", "the"])
    assert ids.dtype == np.int32 and ids.tolist() == [0, 5, 0]
    assert v.encode([]).shape == (0,)
    flat, off = v.encode_many([["cat", "x"], [], ["bird", "a", "the"]])
    assert flat.dtype == np.int32 and off.dtype == np.int64
    assert flat.tolist() == [1, 4, 3, 0] and off.tolist() == [0, 1, 1, 4]
    with pytest.raises(UnknownKeyError, match="'zebra' is not in the vocabulary"):
        v["zebra"]


def test_keep_probabilities_hand_computed() -> None:
    v = Vocabulary().fit_counts({"a": 90, "b": 9, "c": 1})
    s = 0.01
    t = s * 100
    expected = [min(1.0, (math.sqrt(f / t) + 1) * t / f) for f in (90, 9, 1)]
    np.testing.assert_allclose(v.keep_probabilities(s), expected, rtol=1e-6)
    assert v.keep_probabilities(s).dtype == np.float32
    assert expected[0] == pytest.approx(0.1165, abs=1e-4) and expected[2] == 1.0
    assert v.keep_probabilities(0).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="'sample'"):
        v.keep_probabilities(-1)


def test_noise_distribution_hand_computed() -> None:
    v = Vocabulary().fit_counts({"a": 16, "b": 1})
    p = v.noise_distribution(0.75)
    np.testing.assert_allclose(p, [8 / 9, 1 / 9])
    np.testing.assert_allclose(v.noise_distribution(1.0), [16 / 17, 1 / 17])
    np.testing.assert_allclose(v.noise_distribution(0.0), [0.5, 0.5])


def test_unfitted() -> None:
    v = Vocabulary()
    with pytest.raises(NotFittedError):
        v.encode(["a"])
    with pytest.raises(NotFittedError):
        len(v)
    with pytest.raises(NotFittedError):
        v.save("/tmp/never-written")
    assert not v.is_fitted


def test_save_load_unicode(tmp_path: Path) -> None:
    words = [["naïve", "café", "日本語", "😀", "a\nb", ""], ["café"]]
    v = Vocabulary().fit(words)
    v.save(tmp_path / "vocab")
    assert sorted(p.name for p in (tmp_path / "vocab").iterdir()) == ["arrays.safetensors", "manifest.json"]
    w = Vocabulary.load(tmp_path / "vocab")
    assert w.words_ == v.words_ and w.counts_.tolist() == v.counts_.tolist() and w.total_words_ == v.total_words_
    assert w.min_count == 1 and w.max_size is None
    z = load_component(tmp_path / "vocab")
    assert isinstance(z, Vocabulary) and z.index_ == v.index_
    m = Vocabulary.load(tmp_path / "vocab", mmap=True)
    assert m.words_ == v.words_


def test_load_rejects_damaged(tmp_path: Path) -> None:
    from embedstack.io import load_arrays, save_arrays

    Vocabulary().fit(CORPUS).save(tmp_path / "v")
    arrays = load_arrays(tmp_path / "v" / "arrays.safetensors")
    arrays["counts"] = arrays["counts"][:-1]
    save_arrays(tmp_path / "v" / "arrays.safetensors", arrays)
    with pytest.raises(FormatError, match=r"arrays\.safetensors has \d+ bytes"):  # the manifest's checksums
        Vocabulary.load(tmp_path / "v")
    manifest = json.loads((tmp_path / "v" / "manifest.json").read_text())
    del manifest["files"]  # as saved before checksums existed: the consistency check still catches it
    (tmp_path / "v" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FormatError, match="inconsistent"):
        Vocabulary.load(tmp_path / "v")


tokens = st.lists(st.lists(st.text(alphabet="abcdeé日", min_size=0, max_size=3), max_size=8), max_size=12)


@settings(max_examples=60, deadline=None)
@given(corpus=tokens, min_count=st.integers(1, 3), max_size=st.one_of(st.none(), st.integers(1, 5)))
def test_vocabulary_properties(corpus: list[list[str]], min_count: int, max_size: int | None) -> None:
    truth = Counter(t for doc in corpus for t in doc)
    v = Vocabulary(min_count=min_count, max_size=max_size)
    if not any(c >= min_count for c in truth.values()):
        with pytest.raises(InputError):
            v.fit(corpus)
        return
    v.fit(iter(corpus))
    assert v.total_words_ == sum(truth.values())
    assert int(v.counts_.sum()) <= v.total_words_
    assert all(truth[w] == c for w, c in zip(v.words_, v.counts_.tolist(), strict=True))
    assert all(c >= min_count for c in v.counts_)
    keys = [(-c, w) for w, c in zip(v.words_, v.counts_.tolist(), strict=True)]
    assert keys == sorted(keys)  # frequency-descending, ties by word
    expected = sorted((w for w, c in truth.items() if c >= min_count), key=lambda w: (-truth[w], w))
    assert v.words_ == expected[:max_size]
    p = v.keep_probabilities(1e-3)
    assert np.all(p > 0) and np.all(p <= 1)
    assert v.noise_distribution().sum() == pytest.approx(1.0)


@settings(max_examples=25, deadline=None)
@given(corpus=tokens.filter(lambda c: any(c)))
def test_vocabulary_roundtrip_property(tmp_path_factory: pytest.TempPathFactory, corpus: list[list[str]]) -> None:
    v = Vocabulary().fit(corpus)
    path = tmp_path_factory.mktemp("v") / "vocab"
    v.save(path)
    w = Vocabulary.load(path)
    assert w.words_ == v.words_ and np.array_equal(w.counts_, v.counts_) and w.total_words_ == v.total_words_
