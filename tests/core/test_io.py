"""embedstack.io: atomic writes, component folders, our safetensors reader (mmap, truncation)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from embedstack.errors import FormatError
from embedstack.io import (
    FORMAT_VERSION,
    atomic_dir,
    atomic_write_bytes,
    atomic_write_text,
    load_arrays,
    read_manifest,
    save_arrays,
    sha256_file,
    write_manifest,
)
from embedstack.io.atomic import recover_dir

ARRAYS = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
    "i64": np.array([-1, 2**40], dtype=np.int64),
    "u8": np.frombuffer("héllo".encode(), dtype=np.uint8),
    "f16": np.array([0.5, -2.0], dtype=np.float16),
    "empty": np.zeros((0, 5), dtype=np.float32),
    "flag": np.array([True, False]),
}


def test_atomic_write_bytes_replaces(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(p, b"one")
    atomic_write_text(p, "twö")
    assert p.read_bytes() == "twö".encode()
    assert [x.name for x in p.parent.iterdir()] == ["f.bin"]  # no temp files left


def test_atomic_write_bytes_failure_keeps_old(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(p, "not bytes")  # type: ignore[arg-type]
    assert p.read_bytes() == b"old" and [x.name for x in tmp_path.iterdir()] == ["f.bin"]


def test_atomic_dir_replaces_whole_tree(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v1")
        (tmp / "old-only.txt").write_text("x")
        assert not target.exists()  # invisible until complete
    with atomic_dir(target, force=True) as tmp:  # not an embedstack artifact: replacing it takes force
        (tmp / "a.txt").write_text("v2")
        assert (target / "a.txt").read_text() == "v1"  # old version intact while building
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert (target / "a.txt").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_dir_failure_keeps_old(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v1")
    with pytest.raises(RuntimeError), atomic_dir(target, force=True) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("crash while saving")
    assert (target / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_recover_dir_after_crash_between_renames(tmp_path: Path) -> None:
    target = tmp_path / "model"
    old = tmp_path / f".model.old-{os.getpid()}"
    old.mkdir()
    (old / "a.txt").write_text("v1")
    recover_dir(target)
    assert (target / "a.txt").read_text() == "v1" and not old.exists()


def test_save_load_arrays_roundtrip_and_mmap(tmp_path: Path) -> None:
    p = tmp_path / "a.safetensors"
    save_arrays(p, ARRAYS)
    for mmap in (False, True):
        got = load_arrays(p, mmap=mmap)
        assert list(got) == list(ARRAYS)
        for k, v in ARRAYS.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape
            np.testing.assert_array_equal(got[k], v)
    m = load_arrays(p, mmap=True)["f32"]
    assert isinstance(m, np.memmap) and not m.flags.writeable


def test_interop_with_safetensors_library(tmp_path: Path) -> None:
    st = pytest.importorskip("safetensors.numpy")
    ours = tmp_path / "ours.safetensors"
    save_arrays(ours, {k: v for k, v in ARRAYS.items() if k != "empty"})
    theirs = st.load_file(str(ours))
    for k in theirs:
        np.testing.assert_array_equal(theirs[k], ARRAYS[k])
    lib = tmp_path / "lib.safetensors"
    st.save_file({"x": np.arange(6, dtype=np.int32).reshape(2, 3), "y": np.ones(3, dtype=np.float64)}, str(lib))
    got = load_arrays(lib, mmap=True)
    np.testing.assert_array_equal(got["x"], np.arange(6).reshape(2, 3))
    assert got["y"].dtype == np.float64


def test_truncated_files_raise_format_error_with_offsets(tmp_path: Path) -> None:
    p = tmp_path / "a.safetensors"
    save_arrays(p, {"x": np.arange(100, dtype=np.float32)})
    data = p.read_bytes()
    (tmp_path / "t1").write_bytes(data[:5])
    with pytest.raises(FormatError, match="truncated at byte 5"):
        load_arrays(tmp_path / "t1")
    (tmp_path / "t2").write_bytes(data[:20])
    with pytest.raises(FormatError, match="truncated: header says"):
        load_arrays(tmp_path / "t2")
    (tmp_path / "t3").write_bytes(data[:-4])
    with pytest.raises(FormatError, match=rf"tensor 'x' ends at byte {len(data)} of {len(data) - 4}"):
        load_arrays(tmp_path / "t3", mmap=True)
    with pytest.raises(FormatError, match="does not exist"):
        load_arrays(tmp_path / "missing")


def test_damaged_header_raises_format_error(tmp_path: Path) -> None:
    import struct

    def write(header: dict, payload: bytes = b"\0" * 8) -> Path:
        h = json.dumps(header).encode()
        p = tmp_path / "h.safetensors"
        p.write_bytes(struct.pack("<Q", len(h)) + h + payload)
        return p

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 3) + b"{x}")
    with pytest.raises(FormatError, match=r"header \(bytes 8\.\.11\) is not valid JSON"):
        load_arrays(bad)
    with pytest.raises(FormatError, match="dtype"):
        load_arrays(write({"x": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 8]}}))
    with pytest.raises(FormatError, match="shape"):
        load_arrays(write({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}))


def test_save_arrays_rejects_object_dtype(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="cannot store"):
        save_arrays(tmp_path / "x.safetensors", {"o": np.array(["a", None], dtype=object)})


def test_manifest_roundtrip_and_errors(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    m = write_manifest(d, "Thing", {"k": np.int64(3), "p": Path("/x")}, state={"n": 1})
    assert m["format_version"] == FORMAT_VERSION
    got = read_manifest(d, expected_type="Thing")
    assert got["config"] == {"k": 3, "p": "/x"} and got["state"] == {"n": 1}
    with pytest.raises(FormatError, match="holds a 'Thing', not a 'Other'"):
        read_manifest(d, expected_type="Other")
    (d / "manifest.json").write_text(json.dumps({**got, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(FormatError, match="upgrade embedstack"):
        read_manifest(d)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        read_manifest(d)
    (d / "manifest.json").write_text("{}")
    with pytest.raises(FormatError, match="lacks 'type'"):
        read_manifest(d)
    with pytest.raises(FormatError, match="not a saved embedstack component"):
        read_manifest(tmp_path / "nothing")


def test_sha256_file(tmp_path: Path) -> None:
    import hashlib

    p = tmp_path / "x"
    p.write_bytes(b"abc" * 1000)
    assert sha256_file(p, chunk=7) == hashlib.sha256(b"abc" * 1000).hexdigest()
