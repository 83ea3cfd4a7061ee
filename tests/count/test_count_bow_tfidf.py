"""BagOfWords and TfIdf: hand-computed values and agreement with scikit-learn on the same tokens."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedstack.count import BagOfWords, TfIdf
from embedstack.errors import ConfigError, InputError, NotFittedError
from embedstack.text import Analyzer

DOCS = [
    "The cat sat on the mat.",
    "The dog sat on the log; the dog barked.",
    "Cats and dogs!",
    "A bird, a cat and a dog met on a mat",
]


def test_bow_counts_and_alphabetical_vocabulary() -> None:
    bow = BagOfWords().fit(["b a b", "c a"])
    assert bow.terms_ == ["a", "b", "c"]
    assert bow.vocabulary_ == {"a": 0, "b": 1, "c": 2}
    X = bow.transform(["b b b z a", ""])
    assert X.dtype == np.float32 and X.shape == (2, 3)
    assert X.toarray().tolist() == [[1, 3, 0], [0, 0, 0]]
    assert bow.df_.tolist() == [2, 1, 1] and bow.n_docs_ == 2


def test_binary_and_fit_transform_equals_fit_then_transform() -> None:
    bow = BagOfWords(binary=True)
    A = bow.fit_transform(DOCS).toarray()
    assert A.max() == 1.0
    np.testing.assert_array_equal(A, bow.transform(DOCS).toarray())


def test_min_df_max_df_max_features() -> None:
    docs = ["a b c", "a b", "a d", "a e e e"]
    assert BagOfWords(min_df=2).fit(docs).terms_ == ["a", "b"]
    assert BagOfWords(min_df=0.5).fit(docs).terms_ == ["a", "b"]
    assert BagOfWords(max_df=3).fit(docs).terms_ == ["b", "c", "d", "e"]
    assert BagOfWords(max_df=0.5).fit(docs).terms_ == ["b", "c", "d", "e"]
    # most frequent by total count: a (4), e (3), then b (2)
    assert BagOfWords(max_features=3).fit(docs).terms_ == ["a", "b", "e"]
    X = BagOfWords(min_df=2).fit_transform(docs).toarray()
    assert X.tolist() == [[1, 1], [1, 1], [1, 0], [1, 0]]


def test_matches_sklearn_countvectorizer() -> None:
    sk = pytest.importorskip("sklearn.feature_extraction.text")
    an = Analyzer()
    ours = BagOfWords(analyzer=an, min_df=1, max_df=0.9)
    theirs = sk.CountVectorizer(analyzer=an.tokenize, min_df=1, max_df=0.9)
    A = ours.fit_transform(DOCS).toarray()
    B = theirs.fit_transform(DOCS).toarray()
    assert list(theirs.get_feature_names_out()) == ours.terms_
    np.testing.assert_array_equal(A, B)


@pytest.mark.parametrize("kw", [
    {}, {"sublinear_tf": True}, {"smooth_idf": False}, {"norm": None}, {"norm": "l1"},
    {"use_idf": False, "sublinear_tf": True}, {"binary": True, "min_df": 2},
])
def test_tfidf_matches_sklearn(kw: dict) -> None:
    sk = pytest.importorskip("sklearn.feature_extraction.text")
    an = Analyzer(stopwords="english", stem="english")
    ours = TfIdf(analyzer=an, **kw)
    theirs = sk.TfidfVectorizer(analyzer=an.tokenize, **kw)
    A = ours.fit_transform(DOCS)
    B = theirs.fit_transform(DOCS)
    assert list(theirs.get_feature_names_out()) == ours.terms_
    np.testing.assert_allclose(A.toarray(), B.toarray(), rtol=1e-6, atol=1e-7)
    if kw.get("use_idf", True):
        np.testing.assert_allclose(ours.idf_, theirs.idf_, rtol=1e-6)
    queries = ["the dogs sat", "unknown words only", "cat cat cat mat"]
    np.testing.assert_allclose(ours.transform(queries).toarray(), theirs.transform(queries).toarray(),
                               rtol=1e-6, atol=1e-7)


def test_tfidf_hand_computed() -> None:
    t = TfIdf(norm=None).fit(["a b", "a"])
    # smooth idf: ln((1+n)/(1+df)) + 1 with n=2
    assert t.idf_.tolist() == pytest.approx([math.log(3 / 3) + 1, math.log(3 / 2) + 1])
    row = t.transform(["b b a"]).toarray()[0]
    assert row.tolist() == pytest.approx([1.0, 2 * (math.log(1.5) + 1)])
    t2 = TfIdf(sublinear_tf=True).fit(["a b", "a"])
    row = t2.transform(["b b"]).toarray()[0]
    assert row.tolist() == pytest.approx([0.0, 1.0])  # l2-normalised single term


@pytest.mark.parametrize("model", [BagOfWords(), TfIdf()])
def test_bad_input(model) -> None:
    with pytest.raises(NotFittedError, match="fit"):
        model.transform(["a"])
    with pytest.raises(InputError, match="empty corpus"):
        model.fit([])
    with pytest.raises(InputError, match="empty after tokenization"):
        model.fit(["", "  ", "..."])
    with pytest.raises(InputError, match="UTF-8"):
        model.fit([b"ok", b"\xc3\x28"])
    with pytest.raises(InputError, match="single str"):
        model.fit("a whole string")
    assert not model.is_fitted


def test_bad_params_and_pruning_everything() -> None:
    with pytest.raises(ConfigError, match="'min_df'"):
        BagOfWords(min_df=-1).fit(DOCS)
    with pytest.raises(ConfigError, match="'max_df'"):
        BagOfWords(max_df=1.5).fit(DOCS)
    with pytest.raises(ConfigError, match="'max_features'"):
        BagOfWords(max_features=0).fit(DOCS)
    with pytest.raises(ConfigError, match="'norm'"):
        TfIdf(norm="l3").fit(DOCS)
    with pytest.raises(InputError, match="lower min_df"):
        BagOfWords(min_df=0.9, max_df=0.1).fit(DOCS)
    with pytest.raises(InputError, match="no term is left"):
        BagOfWords(min_df=4).fit(DOCS)
    with pytest.raises(ConfigError, match="role"):
        BagOfWords().fit(DOCS).encode_sparse(["a"], role="passage")  # type: ignore[arg-type]
