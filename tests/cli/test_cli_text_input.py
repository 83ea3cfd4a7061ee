"""Every command that reads text takes --encoding/--errors; a bad byte is one line naming those flags."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedstack.cli.app import app

LATIN1 = "caf\xe9 au lait\nthe cat sat on the mat\n\na dog ran over the mat\n".encode("latin-1")
HINT = re.compile(r"error: InputError: .*latin1\.txt:1: byte offset 3 \(0xe9\) is not valid utf-8; pass --encoding "
                  r"latin-1 \(or the file's encoding\) or --errors replace\.")


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def _assert_one_line_hint(res, where: str = "latin1.txt") -> None:
    assert res.exit_code == 2, res.output
    lines = _error_lines(res.output)
    assert len(lines) == 1, res.output
    assert "Traceback" not in res.output and "errors=" not in res.output
    assert "--encoding" in lines[0] and "--errors replace" in lines[0] and where in lines[0]


@pytest.fixture
def latin1(tmp_path: Path) -> Path:
    p = tmp_path / "latin1.txt"
    p.write_bytes(LATIN1)
    return p


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT saved as a sentence-transformers folder (a transformer SPEC that loads fast)."""
    pytest.importorskip("torch")
    pytest.importorskip("tokenizers")
    from embedstack.neural.config import BertConfig
    from embedstack.neural.sentence import SentenceEncoder
    from embedstack.neural.tokenizer import WordPiece
    from embedstack.neural.transformer import BertModel

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran",
             "over", "au", "lait", "caf", "##e", "##\u00e9"]
    tok = WordPiece.from_vocab(words)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=32, max_position_embeddings=32)
    enc = SentenceEncoder(BertModel(cfg).init_weights(seed=0), tok, max_seq_length=16)
    return enc.save(tmp_path_factory.mktemp("tiny") / "model")


def test_encode_latin1_one_line_and_output_untouched(tmp_path: Path, latin1: Path, tiny_model: Path) -> None:
    runner = CliRunner()
    good = tmp_path / "good.npy"
    np.save(good, np.arange(12, dtype=np.float32).reshape(3, 4))
    before = good.read_bytes()
    res = runner.invoke(app, ["encode", "-m", str(tiny_model), str(latin1), "-o", str(good)])
    _assert_one_line_hint(res)
    assert HINT.search(" ".join(res.output.split())), res.output
    assert good.read_bytes() == before

    res = runner.invoke(app, ["encode", "-m", str(tiny_model), str(latin1), "-o", str(good), "-q",
                              "--encoding", "latin-1"])
    assert res.exit_code == 0, res.output
    from embedstack.neural.sentence import SentenceEncoder

    want = SentenceEncoder.from_folder(tiny_model).encode(LATIN1.decode("latin-1").splitlines())
    got = np.load(good)
    assert got.shape == (4, 16) and np.allclose(got, want, atol=1e-5)

    res = runner.invoke(app, ["encode", "-m", str(tiny_model), str(latin1), "-o", str(tmp_path / "r.npy"), "-q",
                              "--errors", "replace"])
    assert res.exit_code == 0, res.output
    replaced = LATIN1.decode("utf-8", "replace").splitlines()
    assert replaced[0] == "caf\ufffd au lait"
    assert np.allclose(np.load(tmp_path / "r.npy"), SentenceEncoder.from_folder(tiny_model).encode(replaced),
                       atol=1e-5)


def test_encode_stdin_bad_byte_mid_stream(tmp_path: Path, tiny_model: Path) -> None:
    # the bad byte comes after valid lines, while the encoder is already consuming the stream
    runner = CliRunner()
    data = b"the cat\n" * 50 + b"caf\xe9\n"
    res = runner.invoke(app, ["encode", "-m", str(tiny_model), "-", "-o", str(tmp_path / "s.npy"),
                              "--batch-size", "4"], input=data)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert re.search(r"InputError: <stdin>:51: byte offset 403 \(0xe9\) is not valid utf-8; pass --encoding",
                     " ".join(res.output.split())), res.output
    res = runner.invoke(app, ["encode", "-m", str(tiny_model), "-", "-o", str(tmp_path / "s.npy"), "-q",
                              "--encoding", "cp1252"], input=data)
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "s.npy").shape == (51, 16)


def test_encode_bad_options(latin1: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["encode", "-m", "all-MiniLM-L6-v2", str(latin1), "-o", str(tmp_path / "x.npy"),
                              "--encoding", "klingon"])
    assert res.exit_code == 2 and "--encoding 'klingon' is not a known text encoding" in res.output
    res = runner.invoke(app, ["encode", "-m", "all-MiniLM-L6-v2", str(latin1), "-o", str(tmp_path / "x.npy"),
                              "--errors", "ignore"])
    assert res.exit_code == 2 and "--errors" in res.output  # only strict and replace are offered
    assert not (tmp_path / "x.npy").exists()


def test_index_build_latin1(tmp_path: Path, latin1: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["index", "build", str(latin1), "-m", "bm25", "--out", str(tmp_path / "idx")])
    _assert_one_line_hint(res)
    assert not (tmp_path / "idx").exists()
    res = runner.invoke(app, ["index", "build", str(latin1), "-m", "bm25", "--out", str(tmp_path / "idx"), "-q",
                              "--encoding", "latin-1", "--json"])
    assert res.exit_code == 0, res.output
    assert '"count": 3' in res.stdout
    from embedstack.retrieval import open_pipeline

    hit = open_pipeline([tmp_path / "idx"]).search("caf\xe9 lait", k=1).hits[0]
    assert hit.text == "caf\xe9 au lait"


def test_index_build_jsonl_latin1(tmp_path: Path) -> None:
    runner = CliRunner()
    p = tmp_path / "docs.jsonl"
    p.write_bytes(b'{"_id": "a", "text": "caf\xe9"}\n{"_id": "b", "text": "tea"}\n')
    res = runner.invoke(app, ["index", "build", str(p), "-m", "bm25", "--out", str(tmp_path / "idx")])
    _assert_one_line_hint(res, "docs.jsonl")
    res = runner.invoke(app, ["index", "build", str(p), "-m", "bm25", "--out", str(tmp_path / "idx"), "-q",
                              "--errors", "replace"])
    assert res.exit_code == 0, res.output


def test_train_word2vec_latin1(tmp_path: Path, latin1: Path) -> None:
    runner = CliRunner()
    args = ["train", "word2vec", str(latin1), "--out", str(tmp_path / "w2v"), "--min-count", "1", "--dim", "8",
            "--epochs", "1", "--workers", "1", "-q"]
    res = runner.invoke(app, args)
    _assert_one_line_hint(res)
    res = runner.invoke(app, [*args, "--encoding", "latin-1"])
    assert res.exit_code == 0, res.output
    from embedstack.static import load_vectors

    assert "caf\xe9" in load_vectors(tmp_path / "w2v")


def test_vectors_and_eval_words_latin1(tmp_path: Path) -> None:
    runner = CliRunner()
    vec = tmp_path / "v.txt"
    vec.write_bytes(b"3 2\ncaf\xe9 1 0\nthe 0 1\ncat 1 1\n")
    res = runner.invoke(app, ["vectors", "neighbors", str(vec), "cat", "--json"])
    _assert_one_line_hint(res, "v.txt")
    res = runner.invoke(app, ["vectors", "neighbors", str(vec), "cat", "--json", "--encoding", "latin-1"])
    assert res.exit_code == 0, res.output
    assert "caf\\u00e9" in res.stdout or "caf\xe9" in res.stdout
    sim = tmp_path / "sim.tsv"
    sim.write_bytes(b"caf\xe9\tcat\t5.0\nthe\tcat\t2.0\ncat\tthe\t1.0\n")
    res = runner.invoke(app, ["eval", "words", "--vectors", str(vec), "--similarity", str(sim), "--analogies", "none",
                              "--json", "--encoding", "latin-1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval", "words", "--vectors", str(vec), "--similarity", str(sim), "--analogies", "none",
                              "--json"])
    _assert_one_line_hint(res, "v.txt")


@pytest.mark.parametrize("command", [
    ["encode"], ["index", "build"], ["train", "word2vec"], ["train", "fasttext"], ["train", "glove"],
    ["eval", "retrieval"], ["eval", "sts"], ["eval", "words"], ["eval", "classification"], ["eval", "clustering"],
    ["vectors", "neighbors"], ["vectors", "analogy"],
])
def test_every_text_command_has_the_options(command: list[str]) -> None:
    res = CliRunner().invoke(app, [*command, "--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "--encoding" in text and "--errors" in text, command


def test_train_mlm_has_the_options() -> None:
    pytest.importorskip("torch")
    res = CliRunner().invoke(app, ["train", "mlm", "--help"])
    assert res.exit_code == 0 and "--encoding" in res.output and "--errors" in res.output
