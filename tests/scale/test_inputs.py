"""Planning a corpus into blocks and reading them back: the same rows and ids as the single-process reader."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from embedstack.errors import ConfigError, DatasetError, InputError
from embedstack.retrieval import read_corpus
from embedstack.scale.inputs import plan_blocks, read_block


def _rows(source: object, **kw: int) -> tuple[list[str], list[str], list[str]]:
    blocks, total = plan_blocks(source, **kw)  # type: ignore[arg-type]
    ids: list[str] = []
    texts: list[str] = []
    errors: list[str] = []
    for b in blocks:
        cols = read_block(b)
        assert cols["row"] == list(range(b.first_row, b.first_row + b.rows))
        ids += cols["id"]
        texts += cols["text"]
        errors += cols["error"]
    assert len(ids) == total
    return ids, texts, errors


def test_jsonl_blocks_match_read_corpus(tmp_path: Path) -> None:
    recs = [{"_id": f"x{i}", "title": "T" * (i % 3), "text": "word " * (i % 50), "year": i} for i in range(500)]
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in recs[:250]) + "\n\n" + "\n".join(json.dumps(r) for r in recs[250:]))
    ids, texts, _ = read_corpus(p)
    for kw in ({"block_tokens": 50}, {"max_rows": 7}, {}):
        got_ids, got_texts, errors = _rows(p, **kw)
        assert (got_ids, got_texts) == (ids, texts) and not any(errors)
    assert len(plan_blocks(p, max_rows=7)[0]) == 72  # 500 rows / 7 per block


def test_text_folder_gzip_and_parquet(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("one\n\n two \nthree\n")
    with gzip.open(folder / "b.txt.gz", "wt") as fh:
        fh.write("four\nfive\n")
    ids, texts, _ = read_corpus(folder)
    assert _rows(folder, max_rows=2)[:2] == (ids, texts) == (["0", "1", "2", "3", "4"], ["one", " two ", "three", "four", "five"])
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"_id": ["p1", "p2", "p3"], "title": ["A", None, "C"], "text": ["x", "y", None], "lang": ["en"] * 3})
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=2)
    blocks, total = plan_blocks(tmp_path / "c.parquet")
    assert (len(blocks), total) == (2, 3)
    got = [read_block(b) for b in blocks]
    assert [i for c in got for i in c["id"]] == ["p1", "p2", "p3"]
    assert [t for c in got for t in c["text"]] == ["A x", "y", "C"]
    assert json.loads(got[0]["meta"][0]) == {"lang": "en"}


def test_bad_rows_are_returned_not_raised(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_bytes(b'{"_id": "a", "text": "ok"}\n[1, 2]\n{"_id": "c", "text": "caf\xe9"}\n{broken\n')
    cols = read_block(plan_blocks(p)[0][0])
    assert cols["id"][0] == "a" and cols["error"][0] == ""
    assert "expected a JSON object" in cols["error"][1] and cols["where"][1].endswith("c.jsonl:2")
    assert "not valid utf-8" in cols["error"][2] and "not valid JSON" in cols["error"][3]
    assert read_block(plan_blocks(p)[0][0], errors="replace")["text"][2] == "caf\ufffd"


def test_refusals(tmp_path: Path) -> None:
    wiki = tmp_path / "wiki.txt"
    wiki.write_text('<doc id="1" url="u" title="T">\nT\nbody\n</doc>\n')
    with pytest.raises(ConfigError, match="WikiExtractor"):
        plan_blocks(wiki)
    empty = tmp_path / "e.txt"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match="no documents"):
        plan_blocks(empty)
    with pytest.raises(ConfigError, match="block_tokens"):
        plan_blocks(empty, block_tokens=0)


def test_lines_split_like_the_single_process_reader(tmp_path: Path) -> None:
    p = tmp_path / "c.txt"
    p.write_bytes("one\rstill one\n\xa0\n\u3000 \ntwo\nthree".encode())  # lone CR, NBSP / ideographic-space lines
    ids, texts, _ = read_corpus(p)
    assert _rows(p, max_rows=1)[:2] == (ids, texts) and texts[0] == "one\rstill one" and len(texts) == 3


def test_gzip_found_by_content_and_ids_like_read_corpus(tmp_path: Path) -> None:
    p = tmp_path / "corpus.txt"  # gzip data without a .gz name
    p.write_bytes(gzip.compress(b"alpha\nbeta\n"))
    assert _rows(p)[1] == read_corpus(p)[1] == ["alpha", "beta"]
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(gzip.compress(b"alpha\nbeta\n" * 100)[:40])
    with pytest.raises(InputError, match="damaged or truncated"):
        plan_blocks(bad)
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a.jsonl", "b.jsonl"):  # no _id: the single-process reader numbers a folder's documents
        (folder / name).write_text('{"text": "x"}\n{"text": "y"}\n')
    assert _rows(folder)[0] == read_corpus(folder)[0] == ["0", "1", "2", "3"]


def test_parquet_row_groups_are_cut_into_blocks(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"_id": [f"p{i}" for i in range(25)], "text": [f"t{i}" for i in range(25)]}),
                   tmp_path / "c.parquet", row_group_size=20)
    blocks, total = plan_blocks(tmp_path / "c.parquet", max_rows=8)
    assert total == 25 and [b.rows for b in blocks] == [8, 8, 4, 5]
    assert _rows(tmp_path / "c.parquet", max_rows=8)[0] == [f"p{i}" for i in range(25)]


def test_a_worker_failure_comes_out_as_one_line() -> None:
    from embedstack.errors import ClusterError
    from embedstack.scale.ray import _worker_error

    inner = InputError("corpus.jsonl changed while it was being encoded")
    try:
        try:
            raise inner
        except InputError as exc:
            raise RuntimeError("Traceback (most recent call last):\n  File ...\nUserCodeException") from exc
    except RuntimeError as outer:
        assert _worker_error(outer) is inner
    err = _worker_error(RuntimeError("Traceback (most recent call last):\n  File x\nFileNotFoundError: /data/c.jsonl"))
    assert isinstance(err, ClusterError) and "\n" not in str(err) and "FileNotFoundError: /data/c.jsonl" in str(err)
