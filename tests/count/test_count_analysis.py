"""The batch analyzer must give exactly Analyzer.tokenize's tokens, just faster."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedstack.count._analysis import CorpusAnalyzer, check_texts
from embedstack.errors import InputError
from embedstack.text import Analyzer

ANALYZERS = [
    Analyzer(),
    Analyzer(stopwords="english", stem="english"),
    Analyzer(lowercase=False, normalization=None),
    Analyzer(stopwords=("cat", "The"), min_token_length=3),
    Analyzer(pattern=r"[a-z]+", normalization="NFC"),
]


def batch_tokens(analyzer: Analyzer, texts: list, chunk_tokens: int = 1 << 21) -> list[list[str]]:
    ca = CorpusAnalyzer(analyzer)
    out: list[list[str]] = []
    for ids, lengths in ca.chunks(texts, chunk_tokens=chunk_tokens):
        start = 0
        for n in lengths.tolist():
            out.append([t for t in (ca.analyzed[i] for i in ids[start:start + n]) if t is not None])
            start += n
    return out


@pytest.mark.parametrize("analyzer", ANALYZERS, ids=lambda a: repr(a)[:60])
def test_same_tokens_as_analyzer(analyzer: Analyzer) -> None:
    texts = [
        "The runners were RUNNING; the cat's café — ﬁne!",
        "",
        "  \t ",
        "Résumé naïve coöperate 3.14 x_y",
        "The The the cat CAT Cat",
    ]
    assert batch_tokens(analyzer, texts) == [analyzer.tokenize(t) for t in texts]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(list("abcAB é.,-'_ ﬁ1\n") + ["the", "The ", "cats", "running"]),
                         max_size=20).map("".join), max_size=8))
def test_property_equivalence(texts: list[str]) -> None:
    for analyzer in (ANALYZERS[0], ANALYZERS[1], ANALYZERS[3]):
        assert batch_tokens(analyzer, texts, chunk_tokens=3) == [analyzer.tokenize(t) for t in texts]


def test_chunks_cover_all_documents_and_ids_are_stable() -> None:
    ca = CorpusAnalyzer(Analyzer())
    chunks = list(ca.chunks(["a b", "b c", "c d e"], chunk_tokens=2))
    assert len(chunks) == 3
    assert [c[1].tolist() for c in chunks] == [[2], [2], [3]]
    ids = np.concatenate([c[0] for c in chunks])
    assert [ca.analyzed[i] for i in ids] == ["a", "b", "b", "c", "c", "d", "e"]
    assert ids[1] == ids[2]  # "b" keeps its id across chunks


def test_bytes_and_bad_bytes() -> None:
    assert batch_tokens(Analyzer(), [b"caf\xc3\xa9 ok"]) == [["café", "ok"]]
    with pytest.raises(InputError, match="text #1.*UTF-8"):
        batch_tokens(Analyzer(), ["fine", b"\xff\xfe bad"])
    with pytest.raises(InputError, match="must be str"):
        batch_tokens(Analyzer(), [3])


def test_custom_tokenizer_objects_are_used_as_is() -> None:
    class Upper(Analyzer):
        def tokenize(self, text):  # type: ignore[override]
            return text.upper().split()

    assert batch_tokens(Upper(), ["a b", "c"]) == [["A", "B"], ["C"]]


def test_check_texts_rejects_a_bare_string() -> None:
    with pytest.raises(InputError, match=r"wrap it: \[text\]"):
        check_texts("just one text")
    assert check_texts(iter(["a"])) == ["a"]
