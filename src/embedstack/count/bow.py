"""Bag of words: documents as sparse vectors of term counts (or presence)."""

from __future__ import annotations

from embedstack.count._base import _Vectorizer
from embedstack.registry import register
from embedstack.text import Analyzer

__all__ = ["BagOfWords"]


@register("BagOfWords")
class BagOfWords(_Vectorizer):
    """Term counts per document over a vocabulary learned by :meth:`fit`.

    Columns are the terms in alphabetical order (``terms_``; ``vocabulary_`` maps term → column).
    Rows are float32 ``scipy.sparse.csr_array``; queries and documents are encoded the same way.

    Args:
        analyzer: text → tokens pipeline (default ``Analyzer()``: NFKC, lowercase, ``\\w+`` words).
        binary: record presence (1) instead of counts.
        min_df: drop terms in fewer documents (int: count, float in [0, 1]: fraction).
        max_df: drop terms in more documents (int: count, float in [0, 1]: fraction).
        max_features: keep only the most frequent terms (total count over the corpus).

    Example:
        >>> bow = BagOfWords().fit(["the cat sat", "the cat ate the fish"])
        >>> bow.terms_
        ['ate', 'cat', 'fish', 'sat', 'the']
        >>> bow.transform(["the the cat dog"]).toarray().tolist()
        [[0.0, 1.0, 0.0, 0.0, 2.0]]
    """

    def __init__(
        self,
        *,
        analyzer: Analyzer | None = None,
        binary: bool = False,
        min_df: float | int = 1,
        max_df: float | int = 1.0,
        max_features: int | None = None,
    ) -> None:
        self.analyzer = analyzer
        self.binary = binary
        self.min_df = min_df
        self.max_df = max_df
        self.max_features = max_features
