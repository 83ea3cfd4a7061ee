"""Data is never lost: the output guard, atomic file writes and per-file checksums (issue 10)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedstack.cli.app import app
from embedstack.errors import FormatError, OutputError, OutputExistsError
from embedstack.index import FlatIndex, load_index
from embedstack.io import AtomicFile, atomic_write_bytes, check_output
from embedstack.neural._npy import NpyStreamWriter

runner = CliRunner()
TEXTS = ["the cat sat on the mat", "dogs run in the park", "statins lower cholesterol", "a cat and a dog"]


@pytest.fixture
def texts_file(tmp_path: Path) -> Path:
    p = tmp_path / "texts.txt"
    p.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return p


def _one_line_error(res) -> str:  # type: ignore[no-untyped-def]
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    return lines[0]


def _flat(n: int = 50, dim: int = 8, seed: int = 0) -> FlatIndex:
    rng = np.random.default_rng(seed)
    idx = FlatIndex(dim)
    idx.add(rng.normal(size=(n, dim)).astype(np.float32), [f"d{i}" for i in range(n)])
    return idx


def _overwrite_middle(path: Path, n: int = 16) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(b"\x7f" * n)
    assert path.stat().st_size == size


# ------------------------------------------------------------------ the output guard, from the CLI

def test_index_build_refuses_a_foreign_folder(tmp_path: Path, texts_file: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("my notes")
    res = runner.invoke(app, ["index", "build", str(texts_file), "-m", "bm25", "--out", str(precious), "-q"])
    line = _one_line_error(res)
    assert "OutputExistsError" in line and "notes.txt" in line and "--force" in line
    assert "force=True" not in line  # a CLI hint names the flag, not the Python keyword
    assert sorted(p.name for p in precious.iterdir()) == ["notes.txt"]
    assert (precious / "notes.txt").read_text() == "my notes"


def test_index_build_force_replaces_exactly_the_named_folder(tmp_path: Path, texts_file: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("my notes")
    (tmp_path / "sibling.txt").write_text("keep")
    res = runner.invoke(app, ["index", "build", str(texts_file), "-m", "bm25", "--out", str(precious), "-q", "--force"])
    assert res.exit_code == 0, res.output
    assert not (precious / "notes.txt").exists()
    assert len(load_index(precious)) == len(TEXTS)
    assert (tmp_path / "sibling.txt").read_text() == "keep"


def test_index_build_out_dot_is_one_line(tmp_path: Path, texts_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    for out in (".", "..", str(tmp_path)):
        for extra in ([], ["--force"]):
            res = runner.invoke(app, ["index", "build", str(texts_file), "-m", "bm25", "--out", out, "-q", *extra])
            line = _one_line_error(res)
            assert "current folder" in line or "holds the current folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_unwritable_out_is_one_typed_line(tmp_path: Path, texts_file: Path) -> None:
    """--out below a file (or in a folder that cannot be made) was an OSError traceback naming a temp file."""
    for args in (["index", "build", str(texts_file), "-m", "bm25", "--out", str(texts_file / "idx")],
                 ["encode", "-m", "bm25", str(texts_file), "-o", str(texts_file / "sub" / "v.npz")]):
        line = _one_line_error(runner.invoke(app, [*args, "-q"]))
        assert line.startswith("error: OutputError: cannot write") and "is a file, not a folder" in line, line
    assert texts_file.read_text(encoding="utf-8").splitlines() == TEXTS
    with pytest.raises(OutputError, match="is a file, not a folder"):
        AtomicFile(texts_file / "a.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.txt"]


def test_encode_refuses_a_foreign_file_with_the_output_suffix(tmp_path: Path, texts_file: Path) -> None:
    """`encode -o thesis.npy` over a text file named .npy replaced it without --force."""
    for name, model in (("thesis.npy", "lsa:2"), ("notes.npz", "bm25")):
        foreign = tmp_path / name
        foreign.write_text("my own words, not numpy\n", encoding="utf-8")
        line = _one_line_error(runner.invoke(app, ["encode", "-m", model, str(texts_file), "-o", str(foreign), "-q"]))
        assert "OutputExistsError" in line and "--force" in line, line
        assert foreign.read_text(encoding="utf-8") == "my own words, not numpy\n"
        res = runner.invoke(app, ["encode", "-m", model, str(texts_file), "-o", str(foreign), "-q", "--force"])
        assert res.exit_code == 0, res.output
        res = runner.invoke(app, ["encode", "-m", model, str(texts_file), "-o", str(foreign), "-q"])  # ours now
        assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "thesis.npy").shape == (len(TEXTS), 2)


def test_encode_a_folder_as_input_says_so(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    line = _one_line_error(runner.invoke(app, ["encode", "-m", "bm25", str(tmp_path / "notes"), "-o",
                                               str(tmp_path / "v.npz"), "-q"]))
    assert "is a folder, not a file" in line and "does not exist" not in line, line


def test_rebuilding_an_index_over_an_index_needs_no_force(tmp_path: Path, texts_file: Path) -> None:
    out = tmp_path / "idx"
    for model in ("bm25", "tfidf", "bm25"):
        res = runner.invoke(app, ["index", "build", str(texts_file), "-m", model, "--out", str(out), "-q"])
        assert res.exit_code == 0, res.output
    assert len(load_index(out)) == len(TEXTS)


def test_train_refuses_a_foreign_folder(tmp_path: Path, texts_file: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("my notes")
    res = runner.invoke(app, ["train", "word2vec", str(texts_file), "--out", str(precious), "--min-count", "1",
                              "--epochs", "1", "--dim", "8", "-q"])
    line = _one_line_error(res)
    assert "--force" in line
    assert (precious / "notes.txt").read_text() == "my notes"


# ------------------------------------------------------------------ the output guard, from Python

def test_component_save_guard(tmp_path: Path) -> None:
    from embedstack.count import BM25, TfIdf

    model = BM25()
    model.fit(TEXTS)
    out = tmp_path / "m"
    model.save(out)
    model.save(out)  # over its own earlier save: fine
    other = TfIdf()
    other.fit(TEXTS)
    with pytest.raises(OutputExistsError, match="force=True"):
        other.save(out)  # a BM25 folder is not a TF-IDF's to replace
    other.save(out, force=True)
    assert json.loads((out / "manifest.json").read_text())["type"] == other.type_name
    empty = tmp_path / "empty"
    empty.mkdir()
    model.save(empty)  # an empty folder holds nothing to lose


def test_check_output_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "a.npy"
    f.write_bytes(b"x")
    assert check_output(f, file=True) == f  # an existing file may be replaced atomically
    folder = tmp_path / "dir.npy"
    folder.mkdir()
    with pytest.raises(OutputExistsError, match="folder"):
        check_output(folder, file=True)
    check_output(folder, file=True, force=True)
    for bad in (tmp_path, tmp_path.parent, Path("/"), Path.home(), Path("/tmp"), Path("/usr")):
        with pytest.raises(OutputExistsError, match="never replaces") as info:
            check_output(bad, force=True)
        assert "force=True" not in str(info.value)
    with pytest.raises(OutputExistsError):
        atomic_write_bytes(folder, b"data")
    assert folder.is_dir()


# ------------------------------------------------------------------ atomic files

def test_atomic_file_exception_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "keep.bin"
    p.write_bytes(b"old content")
    with pytest.raises(KeyboardInterrupt), AtomicFile(p) as f:
        f.tmp.write_bytes(b"new")
        raise KeyboardInterrupt
    assert p.read_bytes() == b"old content"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["keep.bin"]


def test_interrupted_streamed_npy_leaves_old_file(tmp_path: Path) -> None:
    good = tmp_path / "good.npy"
    np.save(good, np.arange(12, dtype=np.float32).reshape(4, 3))
    before = good.read_bytes()
    with pytest.raises(KeyboardInterrupt), NpyStreamWriter(good, 3) as w:
        w.write(np.ones((2, 3), np.float32))
        raise KeyboardInterrupt  # Ctrl-C mid-write
    assert good.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["good.npy"]
    w2 = NpyStreamWriter(good, 3)
    w2.write(np.zeros((5, 3), np.float32))
    assert w2.close().shape == (5, 3)
    assert np.load(good).shape == (5, 3)


# ------------------------------------------------------------------ checksums

def test_same_size_corruption_is_a_format_error(tmp_path: Path) -> None:
    out = tmp_path / "idx"
    _flat().save(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"arrays.safetensors", "docs.sqlite"}
    assert manifest["files"]["arrays.safetensors"]["bytes"] == (out / "arrays.safetensors").stat().st_size
    _overwrite_middle(out / "arrays.safetensors")
    for mmap in (True, False):
        with pytest.raises(FormatError, match=r"arrays\.safetensors.*(rebuild|Rebuild)"):
            load_index(out, mmap=mmap)
    assert len(load_index(out, verify=False)) == 50  # the documented way to skip hashing


def test_verify_env_var_and_size_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "idx"
    _flat().save(out)
    _overwrite_middle(out / "arrays.safetensors")
    monkeypatch.setenv("EMBEDSTACK_VERIFY", "0")
    assert len(load_index(out)) == 50
    with open(out / "docs.sqlite", "ab") as fh:  # a size change is caught even without hashing
        fh.write(b"\0")
    with pytest.raises(FormatError, match="docs.sqlite"):
        load_index(out)


def test_component_corruption_is_a_format_error(tmp_path: Path) -> None:
    from embedstack.count import BM25

    model = BM25()
    model.fit(TEXTS)
    model.save(tmp_path / "m")
    BM25.load(tmp_path / "m")
    _overwrite_middle(tmp_path / "m" / "arrays.safetensors", 4)
    with pytest.raises(FormatError, match=r"arrays\.safetensors"):
        BM25.load(tmp_path / "m")


def test_folders_without_checksums_still_load(tmp_path: Path) -> None:
    out = tmp_path / "idx"
    idx = _flat()
    idx.save(out)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["files"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    loaded = load_index(out)
    q = np.ones((1, 8), np.float32)
    assert [h.id for h in loaded.search(q, 5)[0]] == [h.id for h in idx.search(q, 5)[0]]
    res = runner.invoke(app, ["index", "verify", str(out), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["checked"] is False


def test_index_verify_command(tmp_path: Path) -> None:
    out = tmp_path / "idx"
    _flat().save(out)
    res = runner.invoke(app, ["index", "verify", str(out), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["ok"] and report["checked"] and report["files"] >= 2
    _overwrite_middle(out / "arrays.safetensors")
    line = _one_line_error(runner.invoke(app, ["index", "verify", str(out)]))
    assert "FormatError" in line and "arrays.safetensors" in line
    os.remove(out / "docs.sqlite")
    line = _one_line_error(runner.invoke(app, ["index", "verify", str(out), "--json"]))
    assert "docs.sqlite" in line


def test_atomic_writes_keep_ordinary_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        new = tmp_path / "new.bin"
        atomic_write_bytes(new, b"x")  # a temp file from mkstemp is 0600; the result must not be
        assert new.stat().st_mode & 0o777 == 0o644
        os.chmod(new, 0o640)
        atomic_write_bytes(new, b"y")  # replacing keeps the file's own mode
        assert new.stat().st_mode & 0o777 == 0o640
        _flat().save(tmp_path / "idx")
        assert (tmp_path / "idx").stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(umask)


def test_stale_temporaries_of_killed_writers_are_swept(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    target = tmp_path / "idx"
    stale_dir = tmp_path / f".idx.{pid}.abcd1234.tmp"
    stale_dir.mkdir()
    (stale_dir / "arrays.safetensors").write_bytes(b"half")
    other = tmp_path / f".idx.5.{pid}.abcd1234.tmp"  # a temporary of the target "idx.5": not ours to sweep
    other.mkdir()
    live = tmp_path / f".idx.{os.getpid()}.zzzz9999.tmp"  # this (live) process: never swept
    live.mkdir()
    _flat().save(target)
    assert not stale_dir.exists() and other.exists() and live.exists()
    assert len(load_index(target)) == 50


@pytest.mark.parametrize("files", [["x"], {"../../etc/passwd": {"sha256": "0", "bytes": 1}},
                                   {"/etc/passwd": {"sha256": "0", "bytes": 1}}, {"arrays.safetensors": "abc"},
                                   {"arrays.safetensors": {"sha256": "0", "bytes": float("inf")}}])
def test_malformed_checksum_lists_are_format_errors(tmp_path: Path, files: object) -> None:
    out = tmp_path / "idx"
    _flat().save(out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"] = files
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FormatError, match="manifest"):
        load_index(out)


def test_search_checks_checksums_and_no_verify_skips_hashing(tmp_path: Path, texts_file: Path) -> None:
    out = tmp_path / "idx"
    res = runner.invoke(app, ["index", "build", str(texts_file), "-m", "lsa:2", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    arrays = out / "arrays.safetensors"
    raw = arrays.read_bytes()
    hlen = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + hlen])
    start = 8 + hlen + min(v["data_offsets"][0] for k, v in header.items() if k not in ("__metadata__", "tombstones"))
    with open(arrays, "r+b") as fh:  # same size, one vector value changed
        fh.seek(start)
        fh.write(np.float32(0.5).tobytes())
    res = runner.invoke(app, ["search", str(out), "cats", "--json"])
    assert res.exit_code == 2 and "arrays.safetensors" in _one_line_error(res)
    res = runner.invoke(app, ["search", str(out), "cats", "--json", "--no-verify"])
    assert res.exit_code == 0, res.output  # the documented opt-out: sizes checked, bytes not hashed
    assert json.loads(res.stdout)["hits"]


def test_verify_command_checks_any_saved_folder(tmp_path: Path, texts_file: Path) -> None:
    from embedstack.count import BM25

    BM25().fit(TEXTS).save(tmp_path / "bm25")
    res = runner.invoke(app, ["verify", str(tmp_path / "bm25"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["type"] == "BM25" and report["checked"] and report["files"] >= 1
    res = runner.invoke(app, ["verify", str(tmp_path / "bm25")])
    assert res.exit_code == 0 and res.stdout.startswith("ok ")
    _overwrite_middle(tmp_path / "bm25" / "arrays.safetensors", n=4)
    assert "arrays.safetensors" in _one_line_error(runner.invoke(app, ["verify", str(tmp_path / "bm25")]))
    line = _one_line_error(runner.invoke(app, ["verify", str(texts_file.parent)]))
    assert "FormatError" in line and "not a folder saved by embedstack" in line
    line = _one_line_error(runner.invoke(app, ["index", "verify", str(tmp_path / "bm25")]))
    assert "not an index" in line


@pytest.mark.parametrize("entry", ["docs.sqlite/x", "sub"])
def test_checksum_entries_that_are_not_files_are_format_errors(tmp_path: Path, entry: str) -> None:
    out = tmp_path / "idx"
    _flat().save(out)
    (out / "sub").mkdir()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"][entry] = {"sha256": "0" * 64, "bytes": 4096}
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FormatError, match="not a readable file"):
        load_index(out)
