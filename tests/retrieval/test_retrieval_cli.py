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
