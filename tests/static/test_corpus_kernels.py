"""The numba corpus pass (tokenizer + interner, remap) gives exactly what the Python path gives."""

from __future__ import annotations

import random

import numpy as np
import pytest

pytest.importorskip("numba")

from embedstack.static import _corpus_kernels as CK  # noqa: E402
from embedstack.static._corpus import IdCorpus  # noqa: E402
from embedstack.text import Analyzer  # noqa: E402

TRICKY = [
    "The cat, the CAT's café.",
    "ΟΔΟΣ.Α ΟΔΟΣ. Σ ΣΑΣ:Α",          # Final_Sigma looks through case-ignorable ASCII (. : ')
    "ﬁne ① ½ x² ＡＢＣ．ｄｅｆ",           # NFKC maps to ASCII letters, digits and separators
    "a=\u0338b <\u0338 e\u0301t\u00e9",  # combining marks after ASCII (compose to non-word symbols)
    "İstanbul KELVIN \u212a ß STRASSE ﬀ",  # lowercase that changes length
    "under_score 123abc a.b:c^d`e f'g",
    "", "   ", "\t\n",
    "naïve—dash “quotes” emoji😀word",
    "\ud800lone surrogate",
    "ÀB_ç9 x\u00a0y\u2028z",
]


def _python_ids(texts, analyzer):
    pid: dict[str, int] = {}
    out = [[pid.setdefault(w, len(pid)) for w in analyzer.tokenize(t)] for t in texts]
    return out, list(pid)


@pytest.mark.parametrize("analyzer", [Analyzer(), Analyzer(lowercase=False), Analyzer(normalization=None),
                                      Analyzer(normalization="NFD")], ids=["default", "case", "no-norm", "nfd"])
def test_interner_matches_analyzer_on_tricky_text(analyzer):
    it = CK.Interner(analyzer)
    got = [it.text(t).tolist() for t in TRICKY]
    want, words = _python_ids(TRICKY, analyzer)
    assert got == want
    assert it.words() == words


def test_interner_matches_analyzer_on_random_unicode():
    rng = random.Random(0)
    alphabet = "aZ_9 '.:^`,-\n\tΣσςéÉ\u0301\u0338=<İﬁ①½😀\u212aßﬀ\u00a0\u2028Ａ．"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(5000)]
    it = CK.Interner(Analyzer())
    got = [it.text(t).tolist() for t in texts]
    want, words = _python_ids(texts, Analyzer())
    assert got == want and it.words() == words


def test_interner_grows_its_tables():
    it = CK.Interner(Analyzer())
    texts = [" ".join(f"w{i}_{j}" for j in range(500)) for i in range(300)]  # 150k distinct tokens
    got = [it.text(t).tolist() for t in texts]
    want, words = _python_ids(texts, Analyzer())
    assert got == want and it.words() == words and len(it) == 150_000


def test_token_lists_share_the_id_space():
    it = CK.Interner(Analyzer())
    assert it.text("a b").tolist() == [0, 1]
    assert it.tokens(["b", "new\nline", "", "A"]).tolist() == [1, 2, 3, 4]
    assert it.words() == ["a", "b", "new\nline", "", "A"]


def test_unsupported_analyzers_are_refused():
    assert not CK.supports(Analyzer(stopwords="english"))
    assert not CK.supports(Analyzer(pattern=r"\S+"))
    with pytest.raises(ValueError):
        CK.Interner(Analyzer(min_token_length=2))


def _build(monkeypatch, corpus, mode, **kw):
    monkeypatch.setenv("EMBEDSTACK_CORPUS_TOKENIZER", mode)
    return IdCorpus.build(corpus, **kw)


@pytest.mark.parametrize("kw", [{}, {"mmap_threshold": 50, "max_sentence_length": 7}])
def test_idcorpus_identical_with_and_without_numba_tokenizer(monkeypatch, kw):
    rng = random.Random(1)
    words = ["alpha", "Beta", "γάμμα", "ΔΈΛΤΑ", "x1", "_u", "café", "naïve"]
    texts = [" ".join(rng.choice(words) + rng.choice(["", ",", ".", "'s", "—"]) for _ in range(rng.randint(0, 30)))
             for _ in range(400)]
    corpus = [*texts[:200], ["Beta", "tok en"], b"bytes text caf\xc3\xa9", *texts[200:]]
    a = _build(monkeypatch, corpus, "python", min_count=2, **kw)
    b = _build(monkeypatch, corpus, "", min_count=2, **kw)
    assert a.vocab.words_ == b.vocab.words_
    assert a.raw_words == b.raw_words
    np.testing.assert_array_equal(np.asarray(a.ids), np.asarray(b.ids))
    np.testing.assert_array_equal(a.offsets, b.offsets)


def test_remap_kernel_matches_numpy(monkeypatch):
    import embedstack.static._corpus_kernels as mod

    texts = [" ".join(f"w{(i * 7 + j) % 53}" for j in range(i % 17)) for i in range(300)]
    a = IdCorpus.build(texts, min_count=4, max_sentence_length=5)
    monkeypatch.delattr(mod, "remap_chunk")  # the import in _remap fails: numpy path
    b = IdCorpus.build(texts, min_count=4, max_sentence_length=5)
    np.testing.assert_array_equal(np.asarray(a.ids), np.asarray(b.ids))
    np.testing.assert_array_equal(a.offsets, b.offsets)
