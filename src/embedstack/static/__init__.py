"""Static word vectors: KeyedVectors, Word2Vec, FastText, GloVe, NPLM, sentence pooling.

The trainers need numba (``pip install 'embedstack[fast]'``) and NPLM needs torch; importing this
package is light: heavy modules load on first use of a name.

Example:
    >>> from embedstack.static import Word2Vec, load_vectors  # doctest: +SKIP
    >>> kv = Word2Vec(dim=50, epochs=3).fit("enwiki").wv_  # doctest: +SKIP
    >>> kv.most_similar("king", topn=3)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from embedstack.static.keyedvectors import FastTextKeyedVectors, KeyedVectors, load_vectors

__all__ = [
    "KeyedVectors",
    "FastTextKeyedVectors",
    "load_vectors",
    "IdCorpus",
    "Word2Vec",
    "FastText",
    "GloVe",
    "NPLM",
    "PooledWordEncoder",
]

_LAZY = {
    "IdCorpus": "embedstack.static._corpus",
    "Word2Vec": "embedstack.static.word2vec",
    "FastText": "embedstack.static.fasttext",
    "GloVe": "embedstack.static.glove",
    "NPLM": "embedstack.static.nplm",
    "PooledWordEncoder": "embedstack.static.pooling",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'embedstack.static' has no attribute {name!r}")
