"""``embedstack encode``: files, stdin, bad input."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from embedstack.cli.app import app


def test_encode_file_and_stdin(tmp_path, minilm):
    src = tmp_path / "in.txt"
    src.write_text("A man is playing a guitar.\n\nA dog runs.", encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(app, ["encode", "--model", "all-MiniLM-L6-v2", str(src), "--out", str(tmp_path / "a.npy"),
                              "--quiet", "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    a = np.load(tmp_path / "a.npy")
    assert a.shape == (3, 384)
    assert np.allclose(a, minilm.encode(["A man is playing a guitar.", "", "A dog runs."]), atol=1e-5)
    res = runner.invoke(app, ["encode", "--model", "all-MiniLM-L6-v2@pooling=cls", "-", "--out",
                              str(tmp_path / "b.npy"), "--json", "--role", "query"], input="hello\nworld\n")
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "b.npy").shape == (2, 384)
    assert '"n": 2' in res.stdout


def test_encode_bad_input(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["encode", "--model", "all-MiniLM-L6-v2", str(tmp_path / "missing.txt"),
                              "--out", str(tmp_path / "x.npy")])
    assert res.exit_code == 2 and "does not exist" in res.output
    src = tmp_path / "in.txt"
    src.write_text("x\n")
    res = runner.invoke(app, ["encode", "--model", "all-MiniLM-L6-v2@pooling=median", str(src),
                              "--out", str(tmp_path / "x.npy")])
    assert res.exit_code == 2 and "pooling" in res.output
