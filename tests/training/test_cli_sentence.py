"""`embedstack train sentence` and `embedstack recipe` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from typer.testing import CliRunner  # noqa: E402

from embedstack.cli import app  # noqa: E402


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    from tests.training.test_trainer import _encoder  # type: ignore[import-not-found]

    return _encoder(dropout=0.0).save(tmp_path / "base")


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    from tests.training.test_trainer import _pairs  # type: ignore[import-not-found]

    cols = _pairs(24)
    p = tmp_path / "pairs.jsonl"
    p.write_text("".join(json.dumps({"question": a, "answer": b}) + "\n"
                         for a, b in zip(cols["anchor"], cols["positive"], strict=True)), encoding="utf-8")
    return p


def test_train_sentence_json_result_on_stdout(model_dir: Path, data_file: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["train", "sentence", "--model", str(model_dir), "--data", str(data_file),
                                   "--out", str(tmp_path / "out"), "--max-steps", "3", "--batch-size", "8",
                                   "--precision", "fp32", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["steps"] == 3 and info["rows"] == 24 and Path(info["out"]).is_dir()
    assert (tmp_path / "out" / "training" / "log.jsonl").is_file()


def test_train_sentence_with_bm25_negatives_and_matryoshka(model_dir: Path, data_file: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["train", "sentence", "--model", str(model_dir), "--data", str(data_file),
                                   "--out", str(tmp_path / "out"), "--max-steps", "2", "--batch-size", "8",
                                   "--precision", "fp32", "--hard-negatives", "bm25", "--range-max", "10",
                                   "--matryoshka", "16,8,4", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["mining"]["rows_out"] > 0


def test_a_loss_that_does_not_fit_is_one_line_naming_the_flag(model_dir: Path, data_file: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["train", "sentence", "--model", str(model_dir), "--data", str(data_file),
                                   "--out", str(tmp_path / "out"), "--loss", "cosent"])
    assert res.exit_code == 2
    assert "CoSENTLoss" in res.output and "score" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_recipe_list_json() -> None:
    res = CliRunner().invoke(app, ["recipe", "--list", "--json"])
    assert res.exit_code == 0, res.output
    names = [r["name"] for r in json.loads(res.stdout)["recipes"]]
    assert "minilm-stsb-cosent" in names and "minilm-scifact" in names
    bad = CliRunner().invoke(app, ["recipe", "minilm-stbs-cosent"])
    assert bad.exit_code == 2 and "minilm-stsb-cosent" in bad.output


def test_train_cross_encoder_from_a_bi_encoder_with_bm25_negatives(model_dir: Path, data_file: Path,
                                                                   tmp_path: Path) -> None:
    from embedstack.neural.cross_encoder import CrossEncoder

    for loss in ("listwise", "bce"):
        res = CliRunner().invoke(app, ["train", "cross-encoder", "--model", str(model_dir), "--data", str(data_file),
                                       "--columns", "question=anchor,answer=positive", "--out", str(tmp_path / loss),
                                       "--loss", loss, "--hard-negatives", "bm25", "--num-negatives", "2",
                                       "--range-max", "10", "--max-steps", "2", "--batch-size", "4",
                                       "--head-lr-scale", "10", "--precision", "fp32", "--json"])
        assert res.exit_code == 0, res.output
        info = json.loads(res.stdout)
        assert info["steps"] == 2 and info["mining"]["rows_out"] > 0
        ce = CrossEncoder.from_folder(tmp_path / loss)
        assert ce.predict([("the cat", "the cat sat")]).shape == (1,)
    res = CliRunner().invoke(app, ["train", "cross-encoder", "--model", str(model_dir), "--data", str(data_file),
                                   "--columns", "question=anchor,answer=positive", "--out", str(tmp_path / "x"),
                                   "--loss", "mnrl"])
    assert res.exit_code == 2 and "cross-encoder --loss 'mnrl'" in res.output
