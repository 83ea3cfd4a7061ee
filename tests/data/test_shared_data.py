"""Every loader on the real datasets under EMBEDSTACK_DATA_DIR (row counts from each SOURCE.md)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from embedstack.data import (
    iter_texts,
    load_analogies,
    load_beir,
    load_classification,
    load_nli,
    load_sts,
    load_word_similarity,
    resolve_dataset,
)
from embedstack.errors import DatasetError


def test_scifact(data_env: Path) -> None:
    ds = load_beir("scifact", split="train")
    assert len(ds.corpus) == 5183
    assert len(ds.query_ids()) == 809
    assert sum(len(v) for v in ds.qrels.values()) == 919
    assert len(ds.queries) == 1109  # 809 train + 300 test claims
    assert all(g == 1 for v in ds.qrels.values() for g in v.values())
    assert all("\r" not in d for v in ds.qrels.values() for d in v)  # CRLF stripped
    with pytest.raises(DatasetError, match="splits present: train"):
        load_beir("scifact", split="test")
    tune, held = ds.split_queries(0.75, seed=0)
    assert len(tune.query_ids()) + len(held.query_ids()) == 809


def test_beir_subsets_graded(data_env: Path) -> None:
    ms = load_beir("msmarco-subset")  # qrels without a header line
    assert len(ms.corpus) == 5000 and len(ms.query_ids()) == 43
    assert sum(len(v) for v in ms.qrels.values()) == 4102
    assert {g for v in ms.qrels.values() for g in v.values()} == {1, 2, 3}
    db = load_beir("dbpedia-subset")
    assert len(db.corpus) == 5000 and sum(len(v) for v in db.qrels.values()) == 3709
    assert {g for v in db.qrels.values() for g in v.values()} == {0, 1, 2}


@pytest.mark.parametrize(("split", "n"), [("train", 5749), ("dev", 1500), ("test", 1379)])
def test_stsb(data_env: Path, split: str, n: int) -> None:
    sts = load_sts("stsb", split)
    assert len(sts) == n
    assert sts.scores.dtype == np.float32 and sts.scores.min() >= 0.0 and sts.scores.max() <= 5.0
    if split == "test":
        assert sts.s1[0] == "A girl is styling her hair." and float(sts.scores[0]) == 2.5


def test_analogies(data_env: Path) -> None:
    secs = load_analogies()
    assert len(secs) == 14
    assert sum(len(q) for _, q in secs) == 19544
    assert sum(len(q) for name, q in secs if not name.startswith("gram")) == 8869
    assert secs[0][1][0] == ("Athens", "Greece", "Baghdad", "Iraq")
    phrases = load_analogies(data_env / "word-analogy" / "questions-phrases.txt")
    assert sum(len(q) for _, q in phrases) == 3218 and len(phrases) == 5


def test_wordsim(data_env: Path) -> None:
    pairs = load_word_similarity()
    assert len(pairs) == 353
    scores = [s for _, _, s in pairs]
    assert min(scores) == pytest.approx(0.23) and max(scores) == pytest.approx(10.0)
    assert pairs[0] == ("love", "sex", 6.77)


def test_enwiki_streams(data_env: Path) -> None:
    first = list(itertools.islice(iter_texts("enwiki"), 3))
    assert first[0].startswith("Anarchism is a political philosophy")
    assert all("<doc" not in t and "</doc>" not in t for t in first)


def test_snli_and_classification(data_env: Path) -> None:
    assert len(load_nli("snli", "dev")) == 9842 and len(load_nli("snli", "test")) == 9824
    b = load_classification("banking77", "test")
    assert len(b) == 3080 and len(b.label_names or []) == 77
    ag = load_classification("agnews", "test")
    assert len(ag) == 7600 and ag.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert "\\" not in ag.texts[1] and "#36;" not in ag.texts[1]


@pytest.mark.slow
def test_enwiki_document_counts(data_env: Path) -> None:
    folder = data_env / "enwiki-extract"
    assert sum(1 for _ in iter_texts(folder / "enwiki-2015-AA.txt.gz")) == 6514
    assert sum(1 for _ in iter_texts(folder / "enwiki-2015-AB.txt.gz")) == 6466


@pytest.mark.slow
def test_big_classification_sets(data_env: Path) -> None:
    ng = load_classification("20newsgroups", "train")
    assert len(ng) == 11314 and len(set(ng.labels)) == 20
    imdb = load_classification("imdb", "test")
    assert len(imdb) == 25000 and imdb.labels.count("pos") == 12500
    assert not any("<br />" in t for t in imdb.texts[:1000])
    assert resolve_dataset("imdb").name == "imdb"
