"""`embedstack datasets list|info` through typer's CliRunner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedstack.cli.app import app


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EMBEDSTACK_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def test_list_json(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    (data / "word-analogy").mkdir(parents=True)
    (data / "word-analogy" / "questions-words.txt").write_text(": s\na b c d\n")
    monkeypatch.setenv("EMBEDSTACK_DATA_DIR", str(data))
    res = runner.invoke(app, ["datasets", "list", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    rows = {r["name"]: r for r in out["datasets"]}
    assert out["data_dir"] == str(data)
    assert {"scifact", "stsb", "analogies", "wordsim353", "enwiki"} <= set(rows)
    assert rows["analogies"]["found"] == str(data / "word-analogy") and rows["analogies"]["where"] == "data dir"
    assert rows["scifact"]["found"] is None and rows["scifact"]["downloadable"] is True
    assert rows["enwiki"]["downloadable"] is False


def test_list_human(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMBEDSTACK_DATA_DIR", raising=False)
    res = runner.invoke(app, ["datasets", "list"])
    assert res.exit_code == 0
    assert "scifact" in res.output and "wordsim353" in res.output
    assert "EMBEDSTACK_DATA_DIR is not set" in res.output


def test_info_json_and_human(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMBEDSTACK_DATA_DIR", raising=False)
    res = runner.invoke(app, ["datasets", "info", "scifact", "--json"])
    assert res.exit_code == 0
    info = json.loads(res.stdout)
    assert info["name"] == "scifact" and info["found"] is None
    assert info["downloads"][0]["url"] == "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip"
    assert info["downloads"][0]["md5"] == "5f7d1de60b170fc8027bb7898e2efca1"
    assert info["verified_files"]["corpus.jsonl"].startswith("dec31c81")
    res = runner.invoke(app, ["datasets", "info", "sts-b"])
    assert res.exit_code == 0
    assert "stsb (sts)" in res.output and "Stsbenchmark.tar.gz" in res.output and "how to provide" in res.output


def test_fetch_found_locally_and_offline_error(runner: CliRunner, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    (data / "stsbenchmark").mkdir(parents=True)
    (data / "stsbenchmark" / "sts-test.csv").write_text("g\tf\ty\t1\t2.0\ta\tb\n")
    monkeypatch.setenv("EMBEDSTACK_DATA_DIR", str(data))
    res = runner.invoke(app, ["datasets", "fetch", "stsb", "--json", "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"name": "stsb", "path": str(data / "stsbenchmark")}
    res = runner.invoke(app, ["datasets", "fetch", "stsb", "--quiet"])
    assert res.stdout.strip() == str(data / "stsbenchmark")  # the path is the result: `$(embedstack datasets fetch stsb)`
    info = json.loads(runner.invoke(app, ["datasets", "info", "stsb", "--json"]).stdout)
    assert info["found"] == str(data / "stsbenchmark") and info["local_bytes"] == 16
    res = runner.invoke(app, ["datasets", "fetch", "scifact", "--quiet"])
    assert res.exit_code == 2 and "DatasetError" in res.output and "EMBEDSTACK_OFFLINE=1" in res.output


def test_info_unknown_name(runner: CliRunner) -> None:
    res = runner.invoke(app, ["datasets", "info", "nope"])
    assert res.exit_code == 2 and "DatasetError: unknown dataset 'nope'" in res.output


def test_console_script_error_is_one_line_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "EMBEDSTACK_OFFLINE": "1", "EMBEDSTACK_CACHE_DIR": str(tmp_path), "COLUMNS": "300"}
    proc = subprocess.run([sys.executable, "-c", "from embedstack.cli import main; main()", "datasets", "info", "nope"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "error: DatasetError: unknown dataset 'nope'" in proc.stderr and "Traceback" not in proc.stderr
