"""Command-line habits: results on stdout, hints that name this command's flags, defaults that work,
"did you mean", every encoder kind in `encode`, one-line warnings, progress with an ETA."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from embedstack.cli.app import app

TEXTS = ["cats purr on the warm mat", "dogs bark at the mail carrier", "the stock market fell sharply today",
         "kittens and cats sleep all day", "interest rates and the bond market", "a dog chased the cat"]


def _run(*args: str, input: str | None = None):  # noqa: A002 - CliRunner's name
    return CliRunner().invoke(app, list(args), input=input)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    p = tmp_path / "docs.txt"
    p.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return p


def _beir(folder: Path, split: str) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                                 for i, t in enumerate(TEXTS)), encoding="utf-8")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "stock market"}) + "\n"
                                          + json.dumps({"_id": "q2", "text": "purring cats"}) + "\n", encoding="utf-8")
    (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td0\t1\n",
                                                   encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------- results on stdout
def test_search_hits_go_to_stdout_as_plain_rows(tmp_path: Path, corpus: Path) -> None:
    r = _run("index", "build", str(corpus), "--model", "bm25", "--out", str(tmp_path / "idx"), "--quiet")
    assert r.exit_code == 0, r.output
    r = _run("search", str(tmp_path / "idx"), "stock market", "-k", "2")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()  # what `embedstack search idx "stock market" > hits.txt` keeps
    assert lines[1].split("\t") == ["#", "id", "score", "text"]
    first = lines[2].split("\t")
    assert first[0] == "1" and first[1] == "2" and first[3] == TEXTS[2]
    assert len(lines) == 4 and "timings" in r.stderr and "timings" not in r.stdout
    r = _run("search", str(tmp_path / "idx"), "stock market", "--json")
    assert json.loads(r.stdout)["hits"][0]["id"] == "2" and len(r.stdout.strip().splitlines()) == 1
    r = _run("index", "info", str(tmp_path / "idx"))
    assert "SparseIndex" in r.stdout and "SparseIndex" not in r.stderr


def test_datasets_list_goes_to_stdout() -> None:
    r = _run("datasets", "list")
    assert r.exit_code == 0, r.output
    assert "scifact" in r.stdout and "scifact" not in r.stderr
    assert r.stdout.splitlines()[1].split("\t") == ["name", "kind", "local copy", "description"]


def test_plain_table_has_no_wrapped_cells(tmp_path: Path, corpus: Path) -> None:
    long_text = "word " * 60
    corpus.write_text(long_text.strip() + "\n" + "\n".join(TEXTS) + "\n", encoding="utf-8")
    _run("index", "build", str(corpus), "--model", "bm25", "--out", str(tmp_path / "idx"), "--quiet")
    r = _run("search", str(tmp_path / "idx"), "word", "-k", "1")
    row = r.stdout.splitlines()[2].split("\t")
    assert row[3] == long_text.strip()[:160].strip()  # one line however long (no rich folding at 80 columns)


# ----------------------------------------------------------------------------- defaults and hints
def test_eval_retrieval_default_split_is_one_that_exists(tmp_path: Path) -> None:
    folder = _beir(tmp_path / "onlytrain", "train")
    r = _run("eval", "retrieval", "-m", "bm25", "-d", str(folder))  # no --split: `test` does not exist here
    assert r.exit_code == 0, r.output
    assert "(train, 2 queries" in r.stdout and "nDCG@10" in r.stdout
    assert "split: train" in r.stderr


def test_hint_names_the_flag_not_the_keyword(tmp_path: Path) -> None:
    folder = _beir(tmp_path / "onlytrain", "train")
    r = _run("eval", "retrieval", "-m", "bm25", "-d", str(folder), "--split", "test")
    assert r.exit_code == 2
    assert "Pass --split train." in r.stderr and "split=" not in r.stderr


def test_command_without_the_option_never_suggests_it(tmp_path: Path) -> None:
    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\ncats purr,a\ndogs bark,b\n", encoding="utf-8")
    r = _run("eval", "classification", "-m", "bow", "-d", str(folder))  # `eval classification` has no --split
    assert r.exit_code == 2
    assert "test.csv" in r.stderr and "--split" not in r.stderr and "split=" not in r.stderr


def test_library_hints_reachable_from_the_cli_name_flags(tmp_path: Path) -> None:
    """`train word2vec` on a tiny corpus said "lower min_count"; an empty input "pass a list"; a folder without
    text files "point iter_texts at"."""
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("one two\n", encoding="utf-8")
    r = _run("train", "word2vec", str(tiny), "--out", str(tmp_path / "w"), "-q")
    assert r.exit_code == 2 and "Pass --min-count 1." in r.stderr and "min_count" not in r.stderr, r.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    r = _run("encode", "-m", "bm25", str(empty), "-o", str(tmp_path / "e.npz"), "-q")
    assert r.exit_code == 2 and "InputError" in r.stderr and "pass a list" not in r.stderr, r.stderr
    (tmp_path / "nothing").mkdir()
    r = _run("index", "build", str(tmp_path / "nothing"), "-m", "bm25", "--out", str(tmp_path / "i"), "-q")
    assert r.exit_code == 2 and "iter_texts" not in r.stderr, r.stderr


@pytest.mark.parametrize("args, expect", [
    (["eval", "retrieval", "-m", "bm25", "--splt", "test"], "No such option: --splt"),
    (["encod", "-m", "bm25", "x.txt"], "Did you mean 'encode'?"),
    (["search", "idx"], "Missing argument 'query'"),
    (["search", "idx", "q", "-k", "many"], "Invalid value for '-k'"),
])
def test_usage_errors_are_one_line(args: list[str], expect: str) -> None:
    """A typo'd option or a missing argument was a five-line boxed panel; now one `error:` line, exit 2."""
    r = _run(*args)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: UsageError: ") and expect in lines[0] and "--help`." in lines[0], lines[0]


def test_a_group_alone_still_shows_its_help() -> None:
    r = _run("index")
    assert "build" in r.output and "UsageError" not in r.output


def test_library_message_names_the_keyword(tmp_path: Path) -> None:
    from embedstack.data import load_beir
    from embedstack.errors import DatasetError

    folder = _beir(tmp_path / "onlytrain", "train")
    with pytest.raises(DatasetError, match=r"Pass split='train'\.$"):
        load_beir(folder, split="test")
    assert len(load_beir(folder, split=None).qrels) == 2  # None: the split that exists


@pytest.mark.parametrize("args, suggestion", [
    (["eval", "retrieval", "-m", "bm52", "-d", "scifact"], "Did you mean 'bm25'?"),
    (["eval", "retrieval", "-m", "bm25", "-d", "scifcat"], "Did you mean 'scifact'?"),
    (["eval", "retrieval", "-m", "all-MiniLM-L6-v3", "-d", "scifact"], "Did you mean 'all-MiniLM-L6-v2'?"),
])
def test_typos_get_did_you_mean(args: list[str], suggestion: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDSTACK_OFFLINE", "1")
    r = _run(*args)
    assert r.exit_code == 2
    assert suggestion in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- encode, every kind
@pytest.mark.parametrize("model", ["bm25", "tfidf", "bow"])
def test_encode_sparse_models_write_npz(tmp_path: Path, corpus: Path, model: str) -> None:
    out = tmp_path / f"{model}.npz"
    r = _run("encode", "-m", model, str(corpus), "-o", str(out))
    assert r.exit_code == 0, r.output
    X = sp.load_npz(out)
    assert X.shape[0] == len(TEXTS) and X.nnz > 0
    assert f"fitting {model} on the 6 input texts" in r.stderr
    from embedstack import load

    assert np.allclose(X.toarray(), load(model).fit(TEXTS).encode_sparse(TEXTS).toarray(), atol=1e-6)


def test_encode_dense_counting_model_and_fitted_folder(tmp_path: Path, corpus: Path) -> None:
    r = _run("encode", "-m", "lsa:2", str(corpus), "-o", str(tmp_path / "lsa.npy"), "--quiet")
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "lsa.npy").shape == (6, 2)
    from embedstack import load

    folder = load("bm25").fit(TEXTS[:3]).save(tmp_path / "bm25-fitted")
    r = _run("encode", "-m", str(folder), str(corpus), "-o", str(tmp_path / "b.npz"))
    assert r.exit_code == 0, r.output
    assert "fitting" not in r.stderr  # a fitted folder is used as it is
    assert sp.load_npz(tmp_path / "b.npz").shape == (6, load(str(folder)).n_features)


def test_encode_names_the_right_suffix(tmp_path: Path, corpus: Path) -> None:
    r = _run("encode", "-m", "bm25", str(corpus), "-o", str(tmp_path / "x.npy"))
    assert r.exit_code == 2 and "--out " + str(tmp_path / "x.npz") in r.stderr
    assert not (tmp_path / "x.npy").exists()
    r = _run("encode", "-m", "lsa:2", str(corpus), "-o", str(tmp_path / "x.npz"))
    assert r.exit_code == 2 and ".npy" in r.stderr


# ----------------------------------------------------------------------------- warnings, progress
def test_cli_warnings_are_one_line_and_library_ones_are_logged(monkeypatch: pytest.MonkeyPatch, capsys,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import embedstack
    from embedstack.cli._common import route_warnings

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    route_warnings()
    ours = str(Path(embedstack.__file__).parent / "cli" / "encode.py")
    with caplog.at_level(logging.DEBUG, logger="embedstack.warnings"), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn_explicit("3 texts were\ntruncated", UserWarning, ours, 10)
        warnings.warn_explicit("TypedStorage is deprecated", UserWarning, "/site-packages/torch/x.py", 5)
    err = capsys.readouterr().err
    assert "warning: 3 texts were truncated" in err and "TypedStorage" not in err and "encode.py" not in err
    assert any("TypedStorage" in rec.getMessage() for rec in caplog.records)


def test_progress_shows_remaining_time() -> None:
    from rich.progress import TimeRemainingColumn

    from embedstack.cli._common import progress

    assert any(isinstance(c, TimeRemainingColumn) for c in progress().columns)


def test_progress_writes_plain_lines_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from embedstack.cli import _common

    log = io.StringIO()
    monkeypatch.setattr(_common, "PLAIN_PROGRESS_SECONDS", 3600.0)
    with _common.progress(console=Console(file=log)) as prog:  # a file: not a terminal
        task = prog.add_task("training", total=10, info="")
        for i in range(1, 11):
            prog.update(task, completed=i, info=f"loss {1 / i:.3f}")
    lines = [ln for ln in log.getvalue().splitlines() if ln]  # (rich ends its live display with a blank line)
    # the first batch says it started, the next ones stay quiet inside the period, the last one says it ended
    assert len(lines) == 2, lines
    assert lines[0].startswith("training  1/10  elapsed 0:00:00") and "loss 1.000" in lines[0]
    assert lines[1].startswith("training  10/10") and "loss 0.100" in lines[1] and "eta" not in lines[1]
    log.truncate(0)
    log.seek(0)
    monkeypatch.setattr(_common, "PLAIN_PROGRESS_SECONDS", 0.0)
    with _common.progress(console=Console(file=log)) as prog:
        task = prog.add_task("encoding", total=4, info="")
        for _ in range(4):
            prog.advance(task)
    assert [ln.split("  ")[1] for ln in log.getvalue().splitlines() if ln] == ["1/4", "2/4", "3/4", "4/4"]
    log.truncate(0)
    log.seek(0)
    with _common.progress(quiet=True, console=Console(file=log)) as prog:  # --quiet: nothing at all
        prog.update(prog.add_task("x", total=2, info=""), completed=2)
    assert log.getvalue() == ""


class _Batched:
    """A dense encoder that reports progress per batch, as SentenceEncoder does."""

    dim = 2

    def encode(self, texts, *, role="document", batch_size=64, progress=None):
        out = np.ones((len(texts), 2), dtype=np.float32)
        for s in range(0, len(texts), batch_size):
            if progress is not None:
                progress(min(s + batch_size, len(texts)))
        return out


def test_eval_and_index_build_progress_moves_per_batch() -> None:
    from embedstack.evaluation.runners import encode_dense
    from embedstack.retrieval import build_index

    seen: list[tuple[str, int, int]] = []
    encode_dense(_Batched(), [f"t{i}" for i in range(10)], batch_size=4,
                 progress=lambda st, d, t: seen.append((st, d, t)))
    assert [d for _, d, _ in seen] == [0, 4, 8, 10, 10]
    seen.clear()
    build_index([f"t{i}" for i in range(10)], [str(i) for i in range(10)], _Batched(), spec="x", batch_size=3,
                progress=lambda st, d, t: seen.append((st, d, t)))
    assert [d for st, d, _ in seen if st == "encode"] == [0, 3, 6, 9, 10, 10]


def test_validation_messages_name_the_flag_on_the_command_line(tmp_path: Path, corpus: Path) -> None:
    from embedstack.errors import ConfigError
    from embedstack.index import FlatIndex

    r = _run("index", "build", str(corpus), "--model", "bm25", "--out", str(tmp_path / "idx"), "--quiet")
    assert r.exit_code == 0, r.output
    r = _run("search", str(tmp_path / "idx"), "stock market", "-k", "0")
    assert r.exit_code == 2 and "--k must be an int in [1, inf]. Got 0 instead." in r.stderr
    assert "'k' parameter" not in r.stderr
    with pytest.raises(ConfigError, match=r"The 'k' parameter of .* must be an int"):  # Python keeps the keyword
        FlatIndex(4).search(np.ones((1, 4), np.float32), k=0)


def test_brackets_in_a_query_are_text_not_markup(tmp_path: Path, corpus: Path) -> None:
    r = _run("index", "build", str(corpus), "--model", "bm25", "--out", str(tmp_path / "idx"), "--quiet")
    assert r.exit_code == 0, r.output
    r = _run("search", str(tmp_path / "idx"), "stock [/] market [bold]x")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == "# 'stock [/] market [bold]x'"
