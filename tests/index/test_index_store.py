"""Persistence: manifest, memory-mapped load, atomic saves under SIGKILL, identity checks, aliases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedstack.errors import FormatError, IndexStateError, ModelMismatch
from embedstack.index import (
    DocStore,
    FlatIndex,
    encoder_identity,
    from_spec,
    load_index,
    resolve_alias,
    set_alias,
)


@pytest.mark.parametrize("spec", ["flat", "fp16", "int8", "binary", "binary+rescore", "matryoshka:first_dims=8",
                                  "flat:metric=l2"])
def test_roundtrip_every_flat_kind(hp: Any, tmp_path: Path, spec: str) -> None:
    x, q = hp.clustered(300, 16), hp.clustered(5, 16, seed=2)
    idx = from_spec(spec, dim=16)
    idx.add(x, hp.ids_of(300), texts=[f"text {i}" for i in range(300)], metadata=[{"n": i} for i in range(300)])
    idx.remove(["d7"])
    idx.encoder = {"name": "toy", "sha256": "ab" * 32, "embedstack_version": "0"}
    idx.save(tmp_path / "ix")
    loaded = load_index(tmp_path / "ix")
    assert type(loaded) is type(idx) and len(loaded) == 299 and "d7" not in loaded
    a, b = idx.search(q, k=5), loaded.search(q, k=5)
    assert [[(h.id, round(h.score, 5)) for h in r] for r in a] == [[(h.id, round(h.score, 5)) for h in r] for r in b]
    assert b[0][0].text == f"text {b[0][0].id[1:]}" and b[0][0].metadata == {"n": int(b[0][0].id[1:])}
    m = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    for key in ("format_version", "type", "metric", "dims", "quantization", "count", "encoder", "created_at"):
        assert key in m
    assert m["count"] == 299 and m["dims"] == 16 and m["encoder"]["name"] == "toy"


def test_load_is_memory_mapped_and_still_mutable(hp: Any, tmp_path: Path) -> None:
    x = hp.clustered(100, 8)
    idx = FlatIndex(8)
    idx.add(x, hp.ids_of(100))
    idx.save(tmp_path / "ix")
    loaded = FlatIndex.load(tmp_path / "ix")
    assert isinstance(loaded._vec.base, np.memmap) or isinstance(loaded._vec, np.memmap)
    loaded.add(x[:1] + 1, ["extra"])
    loaded.save(tmp_path / "ix")  # overwrite the folder it is mapped from
    again = FlatIndex.load(tmp_path / "ix", mmap=False)
    assert len(again) == 101 and again.search(x[:1] + 1, k=1)[0][0].id == "extra"


_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    import embedstack.io as eio
    from embedstack.index import FlatIndex
    path = sys.argv[1]
    idx = FlatIndex.load(path, mmap=False)
    idx.add(np.ones((5, 8), dtype=np.float32), [f"new{i}" for i in range(5)])
    real = eio.save_arrays
    def slow(p, arrays, metadata=None):
        real(p, arrays, metadata)
        print("WRITING", flush=True)
        time.sleep(60)
    eio.save_arrays = slow
    idx.save(path)
""")


def test_sigkill_mid_save_leaves_previous_version(hp: Any, tmp_path: Path) -> None:
    x = hp.clustered(50, 8)
    idx = FlatIndex(8)
    idx.add(x, hp.ids_of(50))
    idx.save(tmp_path / "ix")
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "ix")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "WRITING"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    loaded = load_index(tmp_path / "ix")
    assert len(loaded) == 50 and "new0" not in loaded
    assert loaded.search(x[:1], k=1)[0][0].id == "d0"


def test_crash_between_renames_is_recovered(hp: Any, tmp_path: Path) -> None:
    idx = FlatIndex(8)
    idx.add(hp.clustered(10, 8), hp.ids_of(10))
    idx.save(tmp_path / "ix")
    os.replace(tmp_path / "ix", tmp_path / ".ix.old-12345")  # what a kill after the first rename leaves
    assert len(load_index(tmp_path / "ix")) == 10


def test_encoder_identity_mismatch(hp: Any) -> None:
    from embedstack.count import LSA

    texts = ["cats purr and sleep", "dogs bark loudly", "birds sing at dawn", "cats chase birds", "dogs sleep"]
    a = LSA(n_components=2).fit(texts)
    b = LSA(n_components=2).fit(texts[::-1] + ["fish swim"])
    ida, idb = encoder_identity(a, "lsa:2"), encoder_identity(b, "lsa:2")
    assert ida["sha256"] and ida["sha256"] != idb["sha256"] and ida == encoder_identity(a, "lsa:2")
    idx = FlatIndex(2)
    idx.encoder = ida
    idx.check_encoder(ida)
    with pytest.raises(ModelMismatch, match="rebuild"):
        idx.check_encoder(idb)


def test_aliases_switch_atomically(hp: Any, tmp_path: Path) -> None:
    for name, n in (("v1", 10), ("v2", 20)):
        idx = FlatIndex(8)
        idx.add(hp.clustered(n, 8), hp.ids_of(n))
        idx.save(tmp_path / name)
    assert set_alias(tmp_path / "live", tmp_path / "v1") is None
    assert len(load_index(tmp_path / "live")) == 10
    reader = load_index(tmp_path / "live")  # opened before the switch: keeps its version
    assert set_alias(tmp_path / "live", tmp_path / "v2") == (tmp_path / "v1").resolve()
    assert len(load_index(tmp_path / "live")) == 20 and len(reader) == 10
    assert resolve_alias(tmp_path / "live") == (tmp_path / "v2").resolve()
    # saving through the alias rewrites the version it points to, the link stays a link
    live = load_index(tmp_path / "live", mmap=False)
    live.remove(["d0"])
    live.save(tmp_path / "live")
    assert (tmp_path / "live").is_symlink() and len(load_index(tmp_path / "v2")) == 19
    with pytest.raises(IndexStateError):
        set_alias(tmp_path / "live", tmp_path / "missing")
    with pytest.raises(IndexStateError):
        set_alias(tmp_path / "v1", tmp_path / "v2")  # a real folder is not an alias


def test_docstore_compaction_renumbers(tmp_path: Path) -> None:
    store = DocStore()
    store.add([0, 1, 2, 3], ["a", "b", "c", "d"], ["A", None, "C", "D"], [None, {"x": 1}, None, None])
    store.keep(np.array([1, 3]))
    assert store.ids() == ["b", "d"] and store.fetch([0, 1]) == {0: (None, {"x": 1}), 1: ("D", None)}
    store.save(tmp_path / "d.sqlite")
    ro = DocStore(tmp_path / "d.sqlite")
    assert ro.ids() == ["b", "d"]
    ro.add([2], ["e"], ["E"], None)  # copy-on-write: the file is untouched
    assert len(ro) == 3 and DocStore(tmp_path / "d.sqlite").ids() == ["b", "d"]


def test_damaged_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FormatError):
        load_index(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(FormatError):
        load_index(tmp_path / "bad")
