"""``embedstack train elmo``: a tiny run end to end (JSON result, saved folder), and bad input."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from embedstack.cli.app import app  # noqa: E402

TEXT = "\n".join(["the cat sat on the mat .", "the dog sat on the mat .", "a big red house .", "the fox ran ."] * 5)


def test_cli_train_elmo(tmp_path):
    import embedstack

    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "elmo"
    args = ["train", "elmo", str(corpus), "--out", str(out), "--minutes", "0", "--max-steps", "3", "--batch-size", "4",
            "--hidden", "8", "--proj", "4", "--vocab-size", "12", "--held-out-every", "4"]
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout.strip())
    assert info["steps"] == 3 and info["stopped_by"] == "max_steps" and info["tokens"] > 0
    assert info["perplexity_average"] > 1 and info["vocab_size"] == 12 and info["dim"] == 8
    assert embedstack.load(f"elmo:{out},layer=1").encode(["the cat"]).shape == (1, 8)
    res = CliRunner().invoke(app, [*args, "--quiet"])  # replaces its own earlier save; a table on stdout
    assert res.exit_code == 0, res.output
    assert "held-out perplexity" in res.stdout and "tokens seen" in res.stdout


def test_cli_train_elmo_bad_input(tmp_path):
    bad = CliRunner().invoke(app, ["train", "elmo", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine", encoding="utf-8")
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    res = CliRunner().invoke(app, ["train", "elmo", str(corpus), "--out", str(tmp_path / "taken"), "--max-steps", "1"])
    assert res.exit_code != 0 and "--force" in res.output
    assert (tmp_path / "taken" / "notes.txt").read_text(encoding="utf-8") == "mine"
