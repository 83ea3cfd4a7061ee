"""Factories behind the counting-era model SPECs (``bow``, ``tfidf``, ``bm25``, ``lsa:256`` ...).

:mod:`embedstack.models` maps each spec kind to one of these functions; each takes the text after
``kind:`` (or None) and returns an *unfitted* encoder.

Example:
    >>> bm25(None).k1, lsa("64").n_components
    (1.2, 64)
"""

from __future__ import annotations

from embedstack.count.bm25 import BM25
from embedstack.count.bow import BagOfWords
from embedstack.count.lsa import LSA
from embedstack.count.tfidf import TfIdf
from embedstack.errors import ConfigError
from embedstack.text import Analyzer

__all__ = ["bow", "binary_bow", "tfidf", "bm25", "bm25_nostem", "lsa", "ENGLISH_ANALYZER"]

#: The analyzer of the default ``bm25`` spec: NFKC, lowercase, words, English stopwords, Snowball stems.
ENGLISH_ANALYZER = Analyzer(stopwords="english", stem="english")


def _no_arg(kind: str, arg: str | None) -> None:
    if arg is not None:
        raise ConfigError(f"Model spec {kind!r} takes no argument (got {kind}:{arg}); write just '{kind}'.")


def bow(arg: str | None = None) -> BagOfWords:
    """``bow``: term counts."""
    _no_arg("bow", arg)
    return BagOfWords()


def binary_bow(arg: str | None = None) -> BagOfWords:
    """``binary-bow``: term presence."""
    _no_arg("binary-bow", arg)
    return BagOfWords(binary=True)


def tfidf(arg: str | None = None) -> TfIdf:
    """``tfidf``: smooth idf, sublinear tf, L2 rows."""
    _no_arg("tfidf", arg)
    return TfIdf(sublinear_tf=True)


def bm25(arg: str | None = None) -> BM25:
    """``bm25``: k1=1.2, b=0.75, Lucene idf, English Snowball stemmer + stopwords."""
    _no_arg("bm25", arg)
    return BM25(analyzer=ENGLISH_ANALYZER, k1=1.2, b=0.75, idf="lucene")


def bm25_nostem(arg: str | None = None) -> BM25:
    """``bm25-nostem``: BM25 on plain lowercase words."""
    _no_arg("bm25-nostem", arg)
    return BM25(analyzer=Analyzer(), k1=1.2, b=0.75, idf="lucene")


def lsa(arg: str | None = None) -> LSA:
    """``lsa`` / ``lsa:DIM``: truncated SVD of TF-IDF with DIM dimensions (default 256)."""
    if arg is None:
        return LSA(n_components=256)
    try:
        dim = int(arg.strip())
    except ValueError:
        raise ConfigError(f"lsa:{arg} — the LSA dimension must be a positive integer, e.g. 'lsa:256'.") from None
    if dim < 1:
        raise ConfigError(f"lsa:{arg} — the LSA dimension must be a positive integer, e.g. 'lsa:256'.")
    return LSA(n_components=dim)
