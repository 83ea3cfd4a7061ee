"""IdCorpus.build: the corpus pass on worker processes gives exactly the serial pass's corpus and errors."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedstack.errors import InputError
from embedstack.static import _corpus_parallel as par
from embedstack.static._corpus import IdCorpus
from embedstack.text import WORD_PATTERN, Analyzer

WORDS = ["the", "cat", "Sat", "on", "a", "mat", "café", "naïve", "ﬁsh", "東京", "x_y", "don't", "3.14", "Ωmega",
         "ǅemal", "ΣΑΣ"]


def _line(rng: np.random.Generator, i: int) -> str:
    n = int(rng.integers(0, 40))
    words = [WORDS[k] for k in rng.integers(0, len(WORDS), size=n)] + [f"rare{i}"]
    seps = [" ", " ", " ", ", ", "  ", "\t", "-"]
    return "".join(w + seps[int(rng.integers(0, len(seps)))] for w in words).strip()


def _lines(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append(_line(rng, i))
        if i % 17 == 0:
            out.append("   ")  # blank lines are not texts
    return out


@pytest.fixture
def force_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the tiny test corpora go to worker processes, cut into many units."""
    monkeypatch.setattr(par, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(par, "MIN_UNIT_BYTES", 1)
    monkeypatch.setattr(par, "UNITS_PER_WORKER", 3)


def _same(a: IdCorpus, b: IdCorpus) -> None:
    assert a.vocab.words_ == b.vocab.words_
    np.testing.assert_array_equal(a.vocab.counts_, b.vocab.counts_)
    np.testing.assert_array_equal(np.asarray(a.ids), np.asarray(b.ids))
    np.testing.assert_array_equal(a.offsets, b.offsets)
    assert a.raw_words == b.raw_words


def test_plain_file_cut_into_line_ranges_gives_the_serial_corpus(tmp_path: Path, force_shards: None) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(("\r\n".join(_lines(600)) + "\nlast line without newline").encode())
    units = par.plan(path, encoding="utf-8", errors="strict", workers=2)
    assert units is not None and len(units) == 6 and all(end > 0 for u in units for _, _, end in u)
    opts = {"min_count": 3, "max_sentence_length": 7}  # rare words dropped, long lines cut, some sentences emptied
    serial = IdCorpus.build(path, workers=1, **opts)
    calls: list[int] = []
    parallel = IdCorpus.build(path, workers=2, progress=calls.append, **opts)
    _same(serial, parallel)
    assert calls and calls[-1] == parallel.raw_words
    # memory-mapped output (and units spilled to files) on both sides
    mem_s = IdCorpus.build(path, workers=1, mmap_threshold=500, tmpdir=tmp_path, **opts)
    mem_p = IdCorpus.build(path, workers=2, mmap_threshold=500, tmpdir=tmp_path, **opts)
    assert isinstance(mem_p.ids, np.memmap) and isinstance(mem_s.ids, np.memmap)
    _same(serial, mem_p)
    assert [p.name for p in mem_p._folder.iterdir()] == ["ids.i32"]
    folder = mem_p._folder
    mem_p.close()
    mem_s.close()
    assert not folder.exists()
    assert list(tmp_path.iterdir()) == [path]  # no temporary folder left behind


def test_folder_of_mixed_files_gives_the_serial_corpus(tmp_path: Path, force_shards: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _lines(400, seed=1)
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("\n".join(lines[:150]) + "\n", encoding="utf-8")
    with gzip.open(folder / "b.txt.gz", "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines[150:250]))
    docs = [f'<doc id="{i}" title="T{i}">\nT{i}\n{lines[250 + i]}\n</doc>' for i in range(60)]
    (folder / "sub" / "c.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    records = [json.dumps({"title": f"j{i}", "text": t}) for i, t in enumerate(lines[310:])]
    (folder / "d.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    (folder / "README.md").write_text("not a corpus file")
    assert len(par.plan(folder, encoding="utf-8", errors="strict", workers=2) or []) > 1
    serial = IdCorpus.build(folder, workers=1, min_count=2)
    parallel = IdCorpus.build(folder, workers=3, min_count=2)
    _same(serial, parallel)
    # where there is no forkserver (Windows), the workers are spawned
    monkeypatch.setattr(par, "_context", lambda: multiprocessing.get_context("spawn"))
    _same(serial, IdCorpus.build(folder, workers=2, min_count=2))


def _error(build: object) -> str:
    with pytest.raises(InputError) as info:
        build()  # type: ignore[operator]
    return str(info.value)


def test_bad_byte_in_a_worker_raises_the_serial_error(tmp_path: Path, force_shards: None,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)  # a relative path: the workers read it from here, the messages name it as given
    path = Path("bad.txt")
    lines = [s.encode() for s in _lines(300, seed=2)]
    lines[200] = lines[200] + b" caf\xe9 ok"  # latin-1 in a UTF-8 file, in a later line range
    lines[250] = b"\xff" + lines[250]  # a second bad line: the first one is reported
    path.write_bytes(b"\n".join(lines) + b"\n")
    units = par.plan(path, encoding="utf-8", errors="strict", workers=2)
    assert units is not None and units[0][0][1:] != (0, -1)  # cut into line ranges
    serial = _error(lambda: IdCorpus.build(path, workers=1, min_count=1))
    assert serial.startswith(f"{path}:201: byte offset") and "(0xe9)" in serial
    scratch = Path("scratch")
    scratch.mkdir()
    assert _error(lambda: IdCorpus.build(path, workers=2, min_count=1, tmpdir=scratch, mmap_threshold=100)) == serial
    assert not list(scratch.iterdir())  # the units' temporary files are gone
    # errors="replace" reads it the same way in both
    _same(IdCorpus.build(path, workers=1, min_count=1, errors="replace"),
          IdCorpus.build(path, workers=2, min_count=1, errors="replace"))
    # a folder: the failing file is a whole unit
    folder = Path("folder")
    folder.mkdir()
    (folder / "a.txt").write_text("\n".join(_lines(50)), encoding="utf-8")
    (folder / "b.txt").write_bytes(path.read_bytes())
    serial = _error(lambda: IdCorpus.build(folder, workers=1, min_count=1))
    assert _error(lambda: IdCorpus.build(folder, workers=2, min_count=1)) == serial
    assert "worker processes failed" not in caplog.text  # the workers ran (no fallback to one process)


def test_what_cannot_be_cut_stays_serial(tmp_path: Path, force_shards: None, monkeypatch: pytest.MonkeyPatch) -> None:
    gz = tmp_path / "one.txt.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(_lines(200)))
    utf16 = tmp_path / "wide.txt"
    utf16.write_text("\n".join(_lines(200)), encoding="utf-16")
    assert par.plan(gz, encoding="utf-8", errors="strict", workers=4) is None
    assert par.plan(utf16, encoding="utf-16", errors="strict", workers=4) is None
    assert par.plan(gz, encoding="utf-8", errors="strict", workers=1) is None

    def no_processes(*args: object, **kwargs: object) -> None:
        raise AssertionError("scan_parallel must not run")

    with gzip.open(gz, "rt", encoding="utf-8") as fh:
        expected = IdCorpus.build([line for line in fh.read().splitlines() if line.strip()], min_count=1)
    monkeypatch.setattr(par, "scan_parallel", no_processes)
    _same(IdCorpus.build(gz, workers=4, min_count=1), expected)
    IdCorpus.build(utf16, workers=4, min_count=1, encoding="utf-16")
    IdCorpus.build(_lines(50), workers=4, min_count=1)  # texts, not a path
    custom = type("MyAnalyzer", (Analyzer,), {})()  # a subclass may not rebuild from its config
    IdCorpus.build(tmp_path / "wide.txt", analyzer=custom, workers=4, min_count=1, encoding="utf-16")


def test_small_inputs_stay_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "small.txt"
    path.write_text("\n".join(_lines(100)), encoding="utf-8")
    assert par.plan(path, encoding="utf-8", errors="strict", workers=8) is None  # under MIN_PARALLEL_BYTES


def test_a_tokenizer_error_gets_its_corpus_wide_text_number() -> None:
    err = InputError("text #4: bad text")
    err.text_index, err.text_detail = 4, "bad text"  # type: ignore[attr-defined]
    out = par._failure_error(par._Failure(par._portable(err), 4, None), 100, "utf-8", "strict")
    assert isinstance(out, InputError) and str(out) == "text #104: bad text"


def test_a_worker_error_crosses_as_plain_data_and_keeps_its_class_and_fix() -> None:
    from embedstack.errors import ConfigError

    data = par._portable(ConfigError("bad option.", fix={"workers": 1}))
    assert all(isinstance(x, str | dict | type(None)) for x in data)
    out = par._failure_error(par._Failure(data, None, None), 0, "utf-8", "strict")
    assert type(out) is ConfigError and out.fix == {"workers": 1} and out._base() == "bad option."


_CHARS = st.sampled_from(list("aZ09_ -.,'\t\n") + ["é", "ﬁ", "東", "Σ", "ς", "\u0301", "²", "\u00a0", "\u2028", "Ⅻ"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_CHARS, max_size=30).map("".join))
def test_default_tokenizer_matches_its_regex(text: str) -> None:
    # the split fast path and the \w+ regex give what the documented pattern gives
    s = unicodedata.normalize("NFKC", text).lower()
    assert Analyzer().tokenize(text) == re.findall(WORD_PATTERN, s)
    assert Analyzer().tokenize(s.replace("\t", " ")) == re.findall(WORD_PATTERN, s.replace("\t", " "))
