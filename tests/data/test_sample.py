"""The bundled sample sets: sizes, grades, and that a plain BM25 ranks them sensibly."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
from scipy.stats import spearmanr

from embedstack.data import sample_retrieval, sample_sts
from embedstack.text import Analyzer


def _bm25_ndcg10(ds) -> float:  # type: ignore[no-untyped-def]
    """A tiny independent BM25 (k1=1.2, b=0.75) + nDCG@10, written here as an oracle."""
    tok = lambda s: re.findall(r"\w+", s.lower())  # noqa: E731
    docs = [tok(t) for t in ds.doc_texts()]
    ids = ds.doc_ids()
    avg = sum(map(len, docs)) / len(docs)
    df = Counter(w for d in docs for w in set(d))
    n = len(docs)
    tfs = [Counter(d) for d in docs]
    total = 0.0
    for qid, q in zip(ds.query_ids(), ds.query_texts(), strict=True):
        scores = []
        for d, tf in zip(docs, tfs, strict=True):
            s = 0.0
            for w in tok(q):
                if w in tf:
                    idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
                    s += idf * tf[w] * 2.2 / (tf[w] + 1.2 * (1 - 0.75 + 0.75 * len(d) / avg))
            scores.append(s)
        ranked = [ids[i] for i in np.argsort(-np.asarray(scores), kind="stable")[:10]]
        rel = ds.qrels[qid]
        dcg = sum((2 ** rel.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked))
        ideal = sorted(rel.values(), reverse=True)[:10]
        idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
        total += dcg / idcg
    return total / len(ds.query_ids())


def test_sample_retrieval_shape_and_bm25() -> None:
    ds = sample_retrieval()
    assert len(ds.corpus) == 80 and len(ds.query_ids()) == 28
    assert set(ds.qrels) == set(ds.queries)
    grades = {g for v in ds.qrels.values() for g in v.values()}
    assert grades == {0, 1, 2}
    assert all(d in ds.corpus for v in ds.qrels.values() for d in v)
    ndcg = _bm25_ndcg10(ds)
    assert 0.7 < ndcg < 0.9, ndcg  # 0.808: lexical overlap helps, but some queries are paraphrased


def test_sample_sts() -> None:
    sts = sample_sts()
    assert len(sts) == 60
    assert sts.scores.min() == 0.0 and sts.scores.max() == 5.0
    assert len(set(sts.s1)) == 60
    # Content-word overlap correlates with the gold score (the pairs are graded, not random), but far
    # from perfectly: paraphrases with different words leave room for semantic models.
    an = Analyzer(stopwords="english", stem="english")
    ov = []
    for a, b in zip(sts.s1, sts.s2, strict=True):
        x, y = set(an.tokenize(a)), set(an.tokenize(b))
        ov.append(len(x & y) / max(1, len(x | y)))
    rho = spearmanr(ov, sts.scores).statistic
    assert 0.5 < rho < 0.8, rho
