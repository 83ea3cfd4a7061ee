"""The counting era: bag of words, TF-IDF, BM25, LSA (truncated SVD) and PPMI-SVD word vectors.

Every model takes an :class:`embedstack.text.Analyzer`, follows scikit-learn's contract
(``fit`` / ``transform`` / ``fit_transform``) and saves to a component folder.

Example:
    >>> from embedstack.count import BM25
    >>> bm25 = BM25()
    >>> _ = bm25.index(["a cat sat", "a dog ran"])
    >>> bm25.search(["cat"], k=1)[0][0].id
    '0'
"""

from embedstack.count.bm25 import BM25
from embedstack.count.bow import BagOfWords
from embedstack.count.lsa import LSA, randomized_svd
from embedstack.count.ppmi import PPMI
from embedstack.count.tfidf import TfIdf

__all__ = ["BagOfWords", "TfIdf", "BM25", "LSA", "PPMI", "randomized_svd"]
