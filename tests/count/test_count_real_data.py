"""Counting models on the real datasets (skipped when EMBEDSTACK_DATA_DIR is not set)."""

from __future__ import annotations

import itertools

import pytest

from embedstack.count import PPMI
from embedstack.count.bm25 import topk_sparse_rows
from embedstack.models import resolve


def test_tfidf_on_scifact(shared_data) -> None:
    from embedstack.data import load_beir
    from embedstack.evaluation.metrics import ndcg_at_k

    ds = load_beir("scifact", split="train")
    model = resolve("tfidf")
    D = model.fit_transform(ds.doc_texts())
    Q = model.encode_sparse(ds.query_texts(), role="query")
    idx, sc = topk_sparse_rows((Q @ D.T).tocsr(), 10)
    doc_ids = ds.doc_ids()
    run = {q: {doc_ids[i]: float(s) for i, s in zip(ir, sr, strict=True) if i >= 0}
           for q, ir, sr in zip(ds.query_ids(), idx.tolist(), sc.tolist(), strict=True)}
    assert ndcg_at_k(run, ds.qrels, 10) == pytest.approx(0.651, abs=0.005)


@pytest.mark.slow
def test_ppmi_word_similarity_on_wikipedia(shared_data) -> None:
    from embedstack.data import iter_texts, load_word_similarity
    from embedstack.evaluation.words import evaluate_word_similarity

    texts = itertools.islice(iter_texts("enwiki"), 1500)
    m = PPMI(n_components=200, window=2, min_count=10).fit(texts)
    res = evaluate_word_similarity(m, load_word_similarity("wordsim353"))
    assert res["spearman"] > 0.45
