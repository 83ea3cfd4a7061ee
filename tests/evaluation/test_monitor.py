"""embedstack.evaluation.monitor and `embedstack monitor golden|drift`: history, alarms, exit codes, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedstack.cli.app import app
from embedstack.errors import ConfigError, FormatError, InputError
from embedstack.evaluation.monitor import append_history, check_drift, check_golden, read_history

TEXTS = ["cats purr on the warm mat", "dogs bark at the mail carrier", "the stock market fell sharply today",
         "kittens and cats sleep all day", "interest rates and the bond market", "a dog chased the cat"]
QUERIES = {"q1": "cats sleeping", "q2": "stock market", "q3": "dog barking"}
QRELS = {"q1": {"3": 1, "0": 1}, "q2": {"2": 1}, "q3": {"1": 1}}


def _run(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def index(tmp_path: Path) -> Path:
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    r = _run("index", "build", str(corpus), "--model", "bm25", "--out", str(tmp_path / "idx"), "--quiet")
    assert r.exit_code == 0, r.output
    return tmp_path / "idx"


def test_golden_scores_appends_and_alarms_on_a_drop(index: Path, tmp_path: Path) -> None:
    hist = tmp_path / "golden.jsonl"
    first = check_golden(index, QUERIES, QRELS, history=hist, label="v1")
    assert set(first["metrics"]) == {"recall@10", "mrr@10", "ndcg@10"}
    assert first["metrics"]["recall@10"] == pytest.approx(1.0) and not first["alarm"] and first["baseline"] is None
    # a better past run in the history: now the same index has dropped below it by more than the margin
    append_history(hist, {"kind": "golden", "metrics": {"ndcg@10": first["metrics"]["ndcg@10"] + 0.1}})
    second = check_golden(index, QUERIES, QRELS, history=hist, margin=0.02)
    assert second["alarm"] and second["drop"] == pytest.approx(0.1) and "dropped" in second["message"]
    # against the last run (the one just appended) nothing moved
    third = check_golden(index, QUERIES, QRELS, history=hist, against="last")
    assert not third["alarm"] and third["drop"] == pytest.approx(0.0)
    assert [r.get("label") for r in read_history(hist)] == ["v1", None, None, None]


def test_golden_bad_input(index: Path) -> None:
    with pytest.raises(InputError, match=r"not in the index.*\['99'\]"):
        check_golden(index, QUERIES, {**QRELS, "q2": {"99": 1}})
    with pytest.raises(InputError, match="no text"):
        check_golden(index, {"q1": "cats"}, QRELS)
    with pytest.raises(InputError, match="no query with a relevant"):
        check_golden(index, QUERIES, {"q1": {"0": 0}})
    with pytest.raises(ConfigError, match="--metric"):
        check_golden(index, QUERIES, QRELS, metric="map")


def test_history_damage_is_a_format_error(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    p.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(FormatError, match=":2:"):
        read_history(p)


def test_check_drift_history_and_message(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((80, 6))
    same = check_drift(ref, rng.standard_normal((80, 6)), history=tmp_path / "d.jsonl", permutations=99)
    moved = check_drift(ref, rng.standard_normal((80, 6)) + 0.8, history=tmp_path / "d.jsonl", permutations=99)
    assert not same["alarm"] and same["message"].startswith("no drift")
    assert moved["alarm"] and moved["message"].startswith("drift:")
    assert [r["alarm"] for r in read_history(tmp_path / "d.jsonl")] == [False, True]


def test_cli_monitor_exit_codes(index: Path, tmp_path: Path) -> None:
    q = tmp_path / "q.jsonl"
    q.write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUERIES.items()))
    qr = tmp_path / "qrels.tsv"
    qr.write_text("".join(f"{qid}\t{d}\t{g}\n" for qid, rels in QRELS.items() for d, g in rels.items()))
    hist = tmp_path / "g.jsonl"
    r = _run("monitor", "golden", "--index", str(index), "--queries", str(q), "--qrels", str(qr), "--history",
             str(hist), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["metrics"]["recall@10"] == pytest.approx(1.0)
    append_history(hist, {"metrics": {"ndcg@10": 2.0}})
    r = _run("monitor", "golden", "--index", str(index), "--queries", str(q), "--qrels", str(qr), "--history", str(hist))
    assert r.exit_code == 1 and "ALARM" in r.output
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.standard_normal((60, 5)).astype(np.float32))
    np.save(tmp_path / "b.npy", (rng.standard_normal((60, 5)) + 1.0).astype(np.float32))
    np.save(tmp_path / "c.npy", rng.standard_normal((60, 7)).astype(np.float32))
    r = _run("monitor", "drift", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--permutations", "99", "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["drift"] is True
    r = _run("monitor", "drift", str(tmp_path / "a.npy"), str(tmp_path / "c.npy"))
    assert r.exit_code == 2 and "DimensionMismatch" in r.output
    (tmp_path / "t.txt").write_text("one text\n")
    r = _run("monitor", "drift", str(tmp_path / "t.txt"), str(tmp_path / "b.npy"))
    assert r.exit_code == 2 and "--model" in r.output
