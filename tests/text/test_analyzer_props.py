"""Analyzer: hand-checked examples and hypothesis properties (idempotence, no empty tokens, lowercase)."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from embedstack.errors import ConfigError, InputError
from embedstack.text import Analyzer, normalize, to_text


def test_examples() -> None:
    assert Analyzer().tokenize("Café au LAIT, 3 times!") == ["café", "au", "lait", "3", "times"]
    assert Analyzer().tokenize("ﬁne ＡＢＣ") == ["fine", "abc"]  # NFKC folds ligatures and full-width forms
    assert Analyzer(normalization=None).tokenize("ﬁne") == ["ﬁne"]
    assert Analyzer(lowercase=False).tokenize("Hello World") == ["Hello", "World"]
    assert Analyzer(stopwords="english").tokenize("the cat and the hat") == ["cat", "hat"]
    assert Analyzer(stopwords=("cat",)).tokenize("the cat") == ["the"]
    assert Analyzer(min_token_length=3).tokenize("a bb ccc dddd") == ["ccc", "dddd"]
    assert Analyzer(stem="english", stopwords="english").tokenize("The runners were running") == ["runner", "run"]
    assert Analyzer().tokenize(b"bytes ok") == ["bytes", "ok"]
    assert Analyzer().tokenize("") == []
    assert normalize("ﬁ") == "fi"


def test_errors() -> None:
    with pytest.raises(InputError, match="byte offset 1"):
        Analyzer().tokenize(b"a\xff")
    with pytest.raises(InputError, match="must be str"):
        to_text(3)
    with pytest.raises(ConfigError, match="'normalization'"):
        Analyzer(normalization="NFX")
    with pytest.raises(ConfigError, match="not a valid regex"):
        Analyzer(pattern="(")
    with pytest.raises(ConfigError, match="'stopwords'"):
        Analyzer(stopwords="klingon")
    with pytest.raises(ConfigError, match="unknown Snowball language"):
        Analyzer(stem="klingon")
    with pytest.raises(InputError, match="text #1"):
        list(Analyzer().tokenize_many(["ok", b"\xff"]))


def test_config_roundtrip() -> None:
    a = Analyzer(stopwords=("x", "y"), stem="english", min_token_length=2)
    b = Analyzer.from_config(a.get_config())
    assert a == b and b.tokenize("Running x fast") == ["run", "fast"]
    import json

    assert Analyzer.from_config(json.loads(json.dumps(a.get_config()))) == a


texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(text=texts)
@example(text="İstanbul ǅemal ﬁ ＡＢ ß ΣΑΣ")
def test_analyzer_properties(text: str) -> None:
    an = Analyzer()
    toks = an.tokenize(text)
    assert all(t for t in toks)  # never an empty token
    assert all(t == t.lower() for t in toks)  # lowercase output
    assert an.tokenize(" ".join(toks)) == toks  # idempotent on its own output


@settings(max_examples=150, deadline=None)
@given(text=texts, n=st.integers(1, 4))
def test_analyzer_filters_properties(text: str, n: int) -> None:
    an = Analyzer(stopwords="english", min_token_length=n)
    toks = an.tokenize(text)
    assert all(len(t) >= n and t not in an._stop for t in toks)
    assert an.tokenize(" ".join(toks)) == toks
    assert toks == [t for t in Analyzer().tokenize(text) if len(t) >= n and t not in an._stop]
