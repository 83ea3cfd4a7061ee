"""`embedstack eval ...` and `embedstack ladder` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedstack.cli.app import app

pytest.importorskip("embedstack.count")

runner = CliRunner()


def _beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    docs = [("d1", "Cats", "cats purr softly on the sofa"), ("d2", "Dogs", "dogs bark at the mailman"),
            ("d3", "Markets", "the stock market fell sharply"), ("d4", "Weather", "rain falls all day")]
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in docs), encoding="utf-8")
    queries = [("q1", "why do cats purr"), ("q2", "stock market crash"), ("q3", "barking dogs")]
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries), encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq2\td3\t1\r\nq3\td2\t1\r\n",
                                               encoding="utf-8")
    return folder


def _one_json(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, stdout
    obj = json.loads(lines[0], parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert isinstance(obj, dict)
    return obj


def test_eval_retrieval_json(tmp_path):
    folder = _beir(tmp_path / "tiny")
    res = runner.invoke(app, ["eval", "retrieval", "--model", "bm25", "--dataset", str(folder), "--split", "test",
                              "--json"])
    assert res.exit_code == 0, res.output
    out = _one_json(res.stdout)
    assert out["model"] == "bm25" and out["n_queries"] == 3 and out["n_docs"] == 4
    assert out["ndcg@10"] == pytest.approx(1.0)  # every query's single relevant document ranks first
    for key in ("recall@100", "mrr@10", "index_seconds", "query_seconds", "latency_ms", "bytes_per_doc"):
        assert key in out


def test_eval_retrieval_results_go_to_stdout(tmp_path):
    folder = _beir(tmp_path / "tiny")
    res = runner.invoke(app, ["eval", "retrieval", "-m", "tfidf", "-d", str(folder), "-s", "test", "--quiet",
                              "--max-queries", "2"])
    assert res.exit_code == 0, res.output
    # the metric table is the result: on stdout (so `> file` keeps it), plain tab-separated when not a tty
    assert "nDCG@10\t" in res.stdout and "MRR@10\t" in res.stdout and "tiny" in res.stdout
    assert "nDCG@10" not in res.stderr


@pytest.mark.parametrize("args, kind", [
    (["--model", "bm25", "--dataset", "no-such-dataset"], "DatasetError"),
    (["--model", "lsa:", "--dataset", "{tiny}"], "ConfigError"),
    (["--model", "", "--dataset", "{tiny}"], "ConfigError"),
    (["--model", "bm25", "--dataset", "{tiny}", "--k", "0"], "ConfigError"),
    (["--model", "bm25", "--dataset", "{tiny}", "--split", "dev"], "DatasetError"),
])
def test_eval_retrieval_errors_exit_2_with_one_line(tmp_path, args, kind):
    folder = _beir(tmp_path / "tiny")
    args = [a.replace("{tiny}", str(folder)) for a in args]
    if "--split" not in args:
        args += ["--split", "test"]
    res = runner.invoke(app, ["eval", "retrieval", *args, "--json"])
    assert res.exit_code == 2, res.output
    assert res.stdout == ""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {kind}:")


def test_eval_sts_json(tmp_path):
    folder = tmp_path / "sts"
    folder.mkdir()
    rows = [("5.0", "a cat sits on the mat", "a cat sits on the mat"), ("0.0", "a cat sits", "stocks fell"),
            ("2.5", "a dog runs", "a dog sleeps"), ("4.0", "the market fell", "the stock market fell")]
    (folder / "sts-test.csv").write_text(
        "".join(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{s}\t{a}\t{b}\n" for i, (s, a, b) in enumerate(rows)),
        encoding="utf-8")
    res = runner.invoke(app, ["eval", "sts", "--model", "tfidf", "--dataset", str(folder), "--json"])
    assert res.exit_code == 0, res.output
    out = _one_json(res.stdout)
    assert out["n"] == 4 and -100 <= out["spearman"] <= 100 and out["primary_metric"] == "spearman"


def test_eval_words_json(tmp_path):
    static = pytest.importorskip("embedstack.static")
    if not hasattr(static, "load_vectors"):
        pytest.skip("embedstack.static.load_vectors not built yet")
    vec = tmp_path / "v.txt"
    vec.write_text("4 2\nking 1 1\nqueen 1 -1\nman 0.1 1\nwoman 0.1 -1\n", encoding="utf-8")
    ana = tmp_path / "q.txt"
    ana.write_text(": family\nman king woman queen\nman king woman prince\n", encoding="utf-8")
    sim = tmp_path / "s.tsv"
    sim.write_text("# comment\nking\tqueen\t8\nman\twoman\t8.5\nking\tman\t5\nking\tprince\t9\n", encoding="utf-8")
    res = runner.invoke(app, ["eval", "words", "--vectors", str(vec), "--analogies", str(ana),
                              "--similarity", str(sim), "--json"])
    assert res.exit_code == 0, res.output
    out = _one_json(res.stdout)
    assert out["analogies"]["correct"] == 1 and out["analogies"]["oov"] == 1
    assert out["similarity"]["oov"] == 1 and out["similarity"]["n"] == 3
    bad = runner.invoke(app, ["eval", "words", "--vectors", str(vec), "--method", "3cosfoo"])
    assert bad.exit_code == 2


def test_ladder_quick_json_on_sample(tmp_path):
    out_md = tmp_path / "ladder.md"
    res = runner.invoke(app, ["ladder", "--no-plot", "--sample", "--quick", "--json", "--only", "bm25,tfidf,lsa:256",
                              "--out", str(out_md)])
    assert res.exit_code == 0, res.output
    obj = _one_json(res.stdout)
    assert obj["sample_data"] is True and obj["quick"] is True
    rows = {r["label"]: r for r in obj["rows"]}
    assert set(rows) == {"TF-IDF", "BM25 (stemmed)", "LSA-256"}
    assert rows["BM25 (stemmed)"]["status"] == "ok" and 0 < rows["BM25 (stemmed)"]["ndcg10"] <= 1
    assert rows["TF-IDF"]["sts_spearman"] is not None
    text = out_md.read_text(encoding="utf-8")
    assert "| counting | BM25 (stemmed) |" in text and "sample" in text
    again = runner.invoke(app, ["ladder", "--no-plot", "--sample", "--quick", "--json", "--only", "bm25", "--out", str(out_md)])
    assert again.exit_code == 0, again.output  # an earlier report is replaced
    notes = tmp_path / "README.md"
    notes.write_text("# my notes\n", encoding="utf-8")
    bad = runner.invoke(app, ["ladder", "--no-plot", "--sample", "--quick", "--only", "bm25", "--out", str(notes)])
    assert bad.exit_code == 2 and "OutputExistsError" in bad.stderr and "--force" in bad.stderr
    assert notes.read_text(encoding="utf-8") == "# my notes\n"


def test_ladder_human_table_and_bad_options():
    res = runner.invoke(app, ["ladder", "--no-plot", "--sample", "--quick", "--quiet", "--only", "bow"])
    assert res.exit_code == 0, res.output
    assert "Bag of words" in res.stdout and "nDCG@10" in res.stdout  # the table is the result: stdout
    bad = runner.invoke(app, ["ladder", "--no-plot", "--sample", "--max-queries", "0"])
    assert bad.exit_code == 2 and "error: ConfigError" in bad.stderr
    none = runner.invoke(app, ["ladder", "--no-plot", "--sample", "--only", "nothing-like-this"])
    assert none.exit_code == 2


def _labelled(folder: Path, with_train: bool = True) -> Path:
    folder.mkdir()
    rows = [("the card was charged twice", "billing"), ("refund my card payment", "billing"),
            ("card payment failed twice", "billing"), ("where is my parcel", "delivery"),
            ("parcel delivery is late", "delivery"), ("track my parcel delivery", "delivery")] * 3
    body = "text,category\n" + "".join(f"{t},{c}\n" for t, c in rows)
    (folder / "test.csv").write_text(body, encoding="utf-8")
    if with_train:
        (folder / "train.csv").write_text(body, encoding="utf-8")
    return folder


def test_eval_classification_and_clustering_json(tmp_path):
    pytest.importorskip("sklearn")
    folder = _labelled(tmp_path / "bank")
    res = runner.invoke(app, ["eval", "classification", "--model", "tfidf", "--dataset", str(folder), "--json"])
    assert res.exit_code == 0, res.output
    out = _one_json(res.stdout)
    assert out["accuracy"] == 1.0 and out["n_classes"] == 2 and out["note"] == ""
    only_test = _labelled(tmp_path / "agn", with_train=False)
    res = runner.invoke(app, ["eval", "classification", "-m", "tfidf", "-d", str(only_test), "--json"])
    assert res.exit_code == 0, res.output
    out = _one_json(res.stdout)
    assert out["n_train"] == 9 and out["n_test"] == 9 and "halved" in out["note"]
    res = runner.invoke(app, ["eval", "clustering", "-m", "tfidf", "-d", str(folder), "--json"])
    assert res.exit_code == 0, res.output
    out = _one_json(res.stdout)
    assert out["n_clusters"] == 2 and 0.0 <= out["v_measure"] <= 1.0


def test_ladder_list_rows_json():
    res = runner.invoke(app, ["ladder", "--list", "--json"])
    assert res.exit_code == 0, res.output
    rows = _one_json(res.stdout)["rows"]
    assert [r["spec"] for r in rows[:5]] == ["bow", "tfidf", "bm25", "bm25-nostem", "lsa:256"]
    assert all(set(r) >= {"label", "era", "tasks", "quick", "unavailable"} for r in rows)


def test_eval_retrieval_dense_through_an_index(tmp_path):
    pytest.importorskip("embedstack.index")
    folder = _beir(tmp_path / "tiny")
    base = ["eval", "retrieval", "--model", "lsa:3", "--dataset", str(folder), "--split", "test", "--json"]
    exact = _one_json(runner.invoke(app, base).stdout)
    flat = runner.invoke(app, [*base, "--index", "flat"])
    assert flat.exit_code == 0, flat.output
    flat_out = _one_json(flat.stdout)
    assert exact["mode"] == "dense/exact" and flat_out["mode"] == "dense/flat"
    assert flat_out["ndcg@10"] == pytest.approx(exact["ndcg@10"])
    sparse_index = runner.invoke(app, ["eval", "retrieval", "-m", "bm25", "-d", str(folder), "-s", "test",
                                       "--index", "flat"])
    assert sparse_index.exit_code == 2 and "dense encoders" in sparse_index.stderr
