"""The ladder: rows, availability, failures, quick mode and the report, on tiny in-memory data."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from embedstack.data import RetrievalDataset, STSDataset
from embedstack.errors import ConfigError, InputError, MissingExtra
from embedstack.evaluation.ladder import (
    LADDER_ROWS,
    LadderData,
    LadderRow,
    add_row,
    load_ladder_data,
    requires_modules,
    run_ladder,
)


def _data() -> LadderData:
    corpus = {f"d{i}": {"title": "", "text": t} for i, t in enumerate(
        ["cats purr softly", "dogs bark loudly", "cats and dogs play", "the stock market fell", "rain falls today"])}
    queries = {"q1": "purr cats", "q2": "market stock", "q3": "bark"}
    qrels = {"q1": {"d0": 1}, "q2": {"d3": 2}, "q3": {"d1": 1}}
    sts = STSDataset(["cats purr", "dogs bark", "market fell"], ["cats purr softly", "rain falls", "stock market"],
                     np.array([4.5, 0.5, 3.0]))
    return LadderData(RetrievalDataset("tiny", corpus, queries, qrels), "tiny", sts, "tiny-sts", sample=True)


def test_counting_rows_start_the_ladder():
    specs = [r.spec for r in LADDER_ROWS[:5]]
    assert specs == ["bow", "tfidf", "bm25", "bm25-nostem", "lsa:256"]
    assert all(r.era == "counting" for r in LADDER_ROWS[:5])


def test_run_ladder_rows_ok_skipped_failed():
    pytest.importorskip("embedstack.count")

    def boom(ds, progress):
        raise RuntimeError("kaput")

    def custom(ds, progress):
        return {"ndcg@10": 0.5, "recall@100": 1.0, "mrr@10": 0.5, "index_seconds": 0.1, "latency_ms": 2.0,
                "bytes_per_doc": 8.0}

    rows = [
        LadderRow("BM25", "bm25", era="counting"),
        LadderRow("TF-IDF", "tfidf", era="counting", sts=True),
        LadderRow("needs-x", "bm25", era="counting", available=lambda: "needs x (pip install 'embedstack[x]')"),
        LadderRow("slow", "bm25", era="counting", quick=False),
        LadderRow("broken", "bm25", era="hybrid", retrieve=boom),
        LadderRow("custom", "bm25+x", era="hybrid", retrieve=custom),
    ]
    seen = []
    data = _data()
    data.sample = False  # on the sample, slow rows run even with quick=True
    report = run_ladder(rows, quick=True, data=data, on_result=seen.append)
    by = {r.label: r for r in report.results}
    assert [r.label for r in seen] == [r.label for r in rows if r.label != "slow"]
    assert by["BM25"].status == "ok" and by["BM25"].ndcg10 == pytest.approx(1.0)  # each query's doc ranks first
    assert by["BM25"].sts_spearman is None
    assert by["TF-IDF"].status == "ok" and by["TF-IDF"].sts_spearman is not None
    assert by["needs-x"].status == "skipped" and "embedstack[x]" in by["needs-x"].reason
    assert "slow" not in by and report.full_only == ["slow"]  # listed below the table, not a row
    assert by["broken"].status == "failed" and "RuntimeError: kaput" in by["broken"].reason
    assert by["custom"].ndcg10 == 0.5 and by["custom"].latency_ms == 2.0
    assert [r.label for r in report.failed] == ["broken"]
    md = report.to_markdown()
    assert "| counting | BM25 | 1.000 |" in md and "failed: RuntimeError: kaput" in md
    assert "| 2.00 (batched) |" in md  # the custom runner reported only a batched latency
    assert by["BM25"].single_query_ms is not None and by["BM25"].single_query_ms > 0
    d = report.to_dict()
    assert d["sample_data"] is False and len(d["rows"]) == 5 and d["full_run_only"] == ["slow"]
    assert "Full run only (not in --quick): slow." in md
    on_sample = run_ladder([rows[3]], quick=True, data=_data())
    assert on_sample.results[0].status == "ok"


def test_missing_extra_is_a_skip_and_input_error_on_sample_is_a_skip():
    def missing(ds, progress):
        raise MissingExtra("torch", "torch")

    def too_small(ds, progress):
        raise InputError("needs more documents")

    rows = [LadderRow("m", "x", era="transformer", retrieve=missing),
            LadderRow("s", "y", era="counting", retrieve=too_small)]
    report = run_ladder(rows, data=_data())
    # rows come out in era order: counting before transformer
    assert [(r.label, r.status) for r in report.results] == [("s", "skipped"), ("m", "skipped")]
    real = _data()
    real.sample = False
    assert [r.status for r in run_ladder(rows, data=real).results] == ["failed", "skipped"]


def test_only_filter_and_add_row():
    rows = [LadderRow("A", "bow", era="counting"), LadderRow("B", "tfidf", era="counting")]
    report = run_ladder(rows, only=["tfidf"], data=_data())
    assert [r.label for r in report.results] == ["B"] and report.not_selected == ["A"]
    assert "not selected for this run (--only): A." in report.to_markdown()
    comma = [LadderRow("x, mean", "bow", era="counting"), LadderRow("y", "tfidf", era="counting")]
    assert [r.label for r in run_ladder(comma, only=["x, mean"], data=_data()).results] == ["x, mean"]
    assert [r.label for r in run_ladder(comma, only=["tfidf,bow"], data=_data()).results] == ["x, mean", "y"]
    with pytest.raises(ConfigError, match="matches no ladder row"):
        run_ladder(rows, only=["nope"], data=_data())
    n = len(LADDER_ROWS)
    row = LadderRow("test-only row", "bow", era="test")
    try:
        add_row(row)
        add_row(row)  # same label replaces
        assert len(LADDER_ROWS) == n + 1
    finally:
        LADDER_ROWS[:] = [r for r in LADDER_ROWS if r.label != "test-only row"]


def test_requires_modules():
    assert requires_modules(("numpy", "core"))() is None
    assert "embedstack[zzz]" in requires_modules(("no_such_module_xyz", "zzz"))()


def test_load_ladder_data_falls_back_to_sample(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBEDSTACK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path / "cache"))
    data = load_ladder_data(quick=True)
    assert data.sample and "sample" in data.retrieval_name and any("not reachable" in n for n in data.notes)
    assert len(data.retrieval.query_ids()) > 0 and len(data.sts.s1) > 0
    forced = load_ladder_data(sample=True, max_queries=3, max_pairs=4)
    assert len(forced.retrieval.query_ids()) == 3 and len(forced.sts.s1) == 4


def test_ladder_on_real_scifact_bm25(shared_data):
    pytest.importorskip("embedstack.count")
    report = run_ladder([LadderRow("BM25", "bm25", era="counting")], max_queries=100, max_pairs=50)
    r = report.results[0]
    assert not report.data.sample and r.status == "ok"
    assert 0.6 < r.ndcg10 < 0.8 and r.recall100 > 0.85  # BM25 on SciFact is ~0.69 nDCG@10


# ------------------------------------------------------------------------------------------- the demo


def test_quick_ladder_selects_every_era():
    quick = [r for r in LADDER_ROWS if r.quick]
    assert {r.era for r in quick} >= {"counting", "static", "transformer", "hybrid"}
    static = [r for r in LADDER_ROWS if r.era == "static"]
    assert len(static) == 4 and all(r.quick and r.quick_spec is not None for r in static)
    pools = {r.spec for r in quick if r.era == "transformer" and r.spec.startswith("all-MiniLM-L6-v2@pooling=")}
    assert pools == {f"all-MiniLM-L6-v2@pooling={p}" for p in ("cls", "mean", "max")}


def test_quick_ladder_runs_every_era_on_the_sample(tmp_path, monkeypatch):
    """One row per era through run_ladder(quick=True) on the bundled sample: all ok, and a rerun hits the cache."""
    pytest.importorskip("numba")
    pytest.importorskip("torch")
    from embedstack.neural.specs import available

    if available()() is not None:
        pytest.skip("all-MiniLM-L6-v2 is not available offline")
    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path))
    only = ["BM25 (stemmed)", "word2vec SG, mean", "MiniLM-L6, cls pooling", "MiniLM-L6, max pooling",
            "BM25 + MiniLM (RRF)"]
    first = run_ladder(quick=True, sample=True, only=only)
    by = {r.label: r for r in first.results}
    assert [r.era for r in first.results] == ["counting", "static", "transformer", "transformer", "hybrid"]
    assert all(r.status == "ok" for r in first.results), [(r.label, r.reason) for r in first.results]
    assert "trained here" in by["word2vec SG, mean"].note
    assert (tmp_path / "vectors" / "word2vec-docs80-slice-1000000").is_dir()
    # CLS computed the three poolings in one pass: max and the hybrid's mean read them
    assert not by["MiniLM-L6, cls pooling"].cached and by["MiniLM-L6, max pooling"].cached
    assert by["BM25 + MiniLM (RRF)"].cached
    assert by["BM25 + MiniLM (RRF)"].latency_ms is None  # its query vectors came from the cache: not a cost
    assert by["MiniLM-L6, max pooling"].single_query_ms > 0  # one query alone always reaches the model
    assert len(list((tmp_path / "embeddings").glob("*.safetensors"))) >= 3
    second = run_ladder(quick=True, sample=True, only=only)
    by2 = {r.label: r for r in second.results}
    assert by2["MiniLM-L6, cls pooling"].cached and "earlier --quick run" in by2["word2vec SG, mean"].note
    for label in only:
        assert by2[label].ndcg10 == pytest.approx(by[label].ndcg10, abs=1e-9), label
    assert any("128 tokens" in n for n in first.data.notes)


def _long_report():
    rows = [LadderRow("BM25", "bm25", era="counting", note="a note " * 30),
            LadderRow("a rather long model label, pooled", "tfidf", era="static", sts=True),
            LadderRow("needs-x", "bm25", era="transformer",
                      available=lambda: "needs x (pip install 'embedstack[x]') " + "and more words " * 20),
            LadderRow("same reason", "bm25", era="transformer",
                      available=lambda: "needs x (pip install 'embedstack[x]') " + "and more words " * 20),
            LadderRow("broken", "bm25", era="hybrid", retrieve=lambda ds, cb: 1 / 0)]
    return run_ladder(rows, data=_data(), cache=False)


def test_table_fits_100_columns_with_notes_below():
    import io

    from rich.console import Console

    from embedstack.cli.ladder import render_table

    report = _long_report()
    rows, notes = report.compact()
    assert rows[2][-1] == "needs [x] [2]" and rows[3][-1] == "needs [x] [2]"  # one note for the same reason
    assert rows[4][-1] == "failed [3]"
    buf = io.StringIO()
    render_table(report, Console(file=buf, width=200, force_terminal=False, color_system=None))
    out = buf.getvalue()
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 100
    assert "BM25" in out and "[1] " + "a note" in out and "needs [x]" in out
    assert "ZeroDivisionError" in out  # the full reason is below the table


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    from embedstack.evaluation.ladder import write_plot

    report = _long_report()
    path = write_plot(report, tmp_path / "plot.png")
    assert path == tmp_path / "plot.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000


def test_cli_quick_sample_table_on_stdout_and_plot(tmp_path, monkeypatch):
    pytest.importorskip("embedstack.count")
    from typer.testing import CliRunner

    from embedstack.cli.app import app

    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path / "cache"))
    plot = tmp_path / "p.png"
    res = CliRunner().invoke(app, ["ladder", "--quick", "--sample", "--only", "bm25,tfidf", "--plot", str(plot), "-q"])
    assert res.exit_code == 0, res.output
    assert "BM25 (stemmed)" in res.stdout and "nDCG@10" in res.stdout
    if importlib.util.find_spec("matplotlib") is not None:
        assert plot.is_file() and str(plot) in res.stdout


def test_quick_subsets_are_spread_over_the_files_not_the_first_rows() -> None:
    from embedstack.data import sample_retrieval, sample_sts
    from embedstack.evaluation.ladder import load_ladder_data, spread_indices

    assert spread_indices(10, 4) == [0, 3, 6, 9]
    assert spread_indices(5, 9) == [0, 1, 2, 3, 4]
    idx = spread_indices(1379, 500)
    assert len(set(idx)) == 500 and idx[0] == 0 and idx[-1] == 1378 and idx == sorted(idx)
    full_q, full_p = sample_retrieval().query_ids(), sample_sts()
    data = load_ladder_data(sample=True, max_queries=2, max_pairs=2)
    assert data.retrieval.query_ids() == [full_q[0], full_q[-1]]
    assert data.sts.s1 == [full_p.s1[0], full_p.s1[-1]]
    assert "evenly spaced" in data.sts_name and "evenly spaced" in data.retrieval_name
