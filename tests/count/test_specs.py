"""embedstack.models.resolve for the counting specs, and the save/load conformance of every model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedstack.count import BM25, LSA, PPMI, BagOfWords, TfIdf
from embedstack.errors import ConfigError, FormatError
from embedstack.models import known_specs, needs_fit, resolve
from embedstack.registry import load_component, lookup
from embedstack.text import Analyzer

DOCS = ["the cat sat on the mat", "dogs and cats living together", "a mat for the dog",
        "running runners ran", "the quick brown fox", "jumps over the lazy dog"]


@pytest.mark.parametrize("spec,cls,check", [
    ("bow", BagOfWords, lambda m: not m.binary),
    ("binary-bow", BagOfWords, lambda m: m.binary),
    ("tfidf", TfIdf, lambda m: m.sublinear_tf and m.smooth_idf and m.norm == "l2"),
    ("bm25", BM25, lambda m: (m.k1, m.b, m.idf) == (1.2, 0.75, "lucene")
     and m.analyzer == Analyzer(stopwords="english", stem="english")),
    ("BM25", BM25, lambda m: m.analyzer.stem == "english"),
    ("bm25-nostem", BM25, lambda m: m.analyzer.stem is None and m.analyzer.stopwords is None),
    ("lsa", LSA, lambda m: m.n_components == 256),
    ("lsa:64", LSA, lambda m: m.dim == 64),
    (" lsa:8 ", LSA, lambda m: m.dim == 8),
])
def test_every_spec_resolves_unfitted(spec: str, cls: type, check) -> None:
    m = resolve(spec)
    assert type(m) is cls and check(m)
    assert needs_fit(m) and not m.is_fitted


def test_known_specs_lists_the_counting_models() -> None:
    assert {"bow", "binary-bow", "tfidf", "bm25", "bm25-nostem", "lsa"} <= set(known_specs())


@pytest.mark.parametrize("spec,match", [
    ("", "non-empty"), ("   ", "non-empty"), ("lsa:", "empty argument"), ("lsa:abc", "positive integer"),
    ("lsa:0", "positive integer"), ("lsa:-5", "positive integer"), ("bm25:3", "takes no argument"),
    ("tfidf:x", "takes no argument"), ("nope", "Cannot parse model spec"),
])
def test_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve(spec)


def test_saved_folder_round_trip(tmp_path) -> None:
    m = resolve("bm25")
    m.index(DOCS, ids=[f"d{i}" for i in range(len(DOCS))])
    path = m.save(tmp_path / "my-bm25")
    back = resolve(str(path))
    assert type(back) is BM25 and not needs_fit(back)
    assert back.search(["cats on mats"], k=3) == m.search(["cats on mats"], k=3)


def _fitted(name: str):
    an = Analyzer(stopwords="english", stem="english")
    return {
        "BagOfWords": lambda: BagOfWords(analyzer=an, binary=True).fit(DOCS),
        "TfIdf": lambda: TfIdf(analyzer=an, sublinear_tf=True, min_df=1).fit(DOCS),
        "BM25": lambda: BM25(analyzer=an).fit(DOCS),
        "LSA": lambda: LSA(n_components=3, analyzer=an).fit(DOCS),
        "PPMI": lambda: PPMI(n_components=3, min_count=1, analyzer=an).fit(DOCS * 2),
    }[name]()


@pytest.mark.parametrize("name", ["BagOfWords", "TfIdf", "BM25", "LSA", "PPMI"])
def test_every_counting_model_saves_and_loads(name: str, tmp_path) -> None:
    m = _fitted(name)
    m.save(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["arrays.safetensors", "manifest.json"]  # no pickle, nothing else
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["type"] == name and manifest["config"]["analyzer"]["stem"] == "english"
    back = load_component(tmp_path / "m")
    assert type(back) is lookup(name) and back.is_fitted and back.get_config() == m.get_config()
    if name == "PPMI":
        np.testing.assert_array_equal(back.vectors, m.vectors)
    elif name == "LSA":
        np.testing.assert_array_equal(back.encode(DOCS), m.encode(DOCS))
    else:
        np.testing.assert_array_equal(back.encode_sparse(DOCS).toarray(), m.encode_sparse(DOCS).toarray())


def test_unfitted_save_and_damaged_folder(tmp_path) -> None:
    from embedstack.errors import NotFittedError

    with pytest.raises(NotFittedError):
        BM25().save(tmp_path / "x")
    m = _fitted("TfIdf")
    m.save(tmp_path / "t")
    (tmp_path / "t" / "arrays.safetensors").write_bytes(b"\x01")
    with pytest.raises(FormatError):
        TfIdf.load(tmp_path / "t")
