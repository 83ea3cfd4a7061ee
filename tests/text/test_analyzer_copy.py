"""An Analyzer that has stemmed (and so holds a PyStemmer object) can still be copied."""

import copy

from embedstack.text import Analyzer


def test_deepcopy_after_stemming() -> None:
    a = Analyzer(stem="english", stopwords="english")
    assert a.tokenize("The runners were running") == ["runner", "run"]
    b = copy.deepcopy(a)
    c = copy.copy(a)
    assert b == a and c == a
    assert b.tokenize("running dogs") == ["run", "dog"]
