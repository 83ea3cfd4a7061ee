"""Dataset registry and downloads, against a local http.server / file:// URLs (never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from embedstack.data import (
    DatasetSpec,
    Download,
    dataset_info,
    get_spec,
    list_datasets,
    load_beir,
    resolve_dataset,
)
from embedstack.data import _registry as reg
from embedstack.data._download import safe_extract
from embedstack.errors import DatasetError

CORPUS = b'{"_id": "d1", "title": "T", "text": "hello world"}\n{"_id": "d2", "title": "", "text": "bye"}\n'
QUERIES = b'{"_id": "q1", "text": "hello"}\n'
QRELS = b"query-id\tcorpus-id\tscore\nq1\td1\t1\n"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("tiny/corpus.jsonl", CORPUS)
        zf.writestr("tiny/queries.jsonl", QUERIES)
        zf.writestr("tiny/qrels/test.tsv", QRELS)
    return buf.getvalue()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server on 127.0.0.1 serving a folder; yields (base URL, folder)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", root
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolated cache, no data dir, downloads allowed; registry changes undone after the test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(cache))
    monkeypatch.delenv("EMBEDSTACK_DATA_DIR", raising=False)
    monkeypatch.delenv("EMBEDSTACK_OFFLINE", raising=False)
    monkeypatch.setattr(reg, "DATASETS", dict(reg.DATASETS))
    monkeypatch.setattr(reg, "_ALIASES", dict(reg._ALIASES))
    return cache


def test_download_zip_over_http_then_cached(served: tuple[str, Path], env: Path) -> None:
    base, root = served
    data = _zip_bytes()
    (root / "tiny.zip").write_bytes(data)
    reg.register_dataset(DatasetSpec(
        name="tiny", kind="retrieval", description="test", local_dirs=("tiny",), marker="corpus.jsonl",
        downloads=(Download(f"{base}/tiny.zip", "tiny.zip", sha256=_sha(data), extract=True),),
        files=(("corpus.jsonl", _sha(CORPUS)),)))
    seen: list[int] = []
    path = resolve_dataset("tiny", progress=lambda done, total: seen.append(done))
    assert path == env / "datasets" / "tiny"
    assert (path / "corpus.jsonl").read_bytes() == CORPUS  # top folder "tiny/" stripped
    assert sorted(p.name for p in path.iterdir()) == ["corpus.jsonl", "qrels", "queries.jsonl"]
    assert seen and seen[-1] == len(data)
    (root / "tiny.zip").unlink()  # the cache is used from now on
    ds = load_beir("tiny")
    assert ds.qrels == {"q1": {"d1": 1}} and ds.name == "tiny"
    assert dataset_info("tiny")["found"] == str(path)


def test_checksum_mismatch_leaves_nothing(served: tuple[str, Path], env: Path) -> None:
    base, root = served
    (root / "tiny.zip").write_bytes(_zip_bytes())
    reg.register_dataset(DatasetSpec(
        name="tiny", kind="retrieval", description="t", marker="corpus.jsonl",
        downloads=(Download(f"{base}/tiny.zip", "tiny.zip", sha256="0" * 64, extract=True),)))
    with pytest.raises(DatasetError, match=r"checksum mismatch .*expected sha256 0{64}"):
        resolve_dataset("tiny")
    datasets = env / "datasets"
    assert not (datasets / "tiny").exists()
    assert [p.name for p in datasets.iterdir()] == []  # no temp folder or .part file left behind


def test_md5_and_member_checksum_mismatch(served: tuple[str, Path], env: Path) -> None:
    base, root = served
    data = _zip_bytes()
    (root / "tiny.zip").write_bytes(data)
    reg.register_dataset(DatasetSpec(
        name="tiny", kind="retrieval", description="t", marker="corpus.jsonl",
        downloads=(Download(f"{base}/tiny.zip", "tiny.zip", md5=hashlib.md5(data).hexdigest(), extract=True),),
        files=(("corpus.jsonl", "f" * 64),)))
    with pytest.raises(DatasetError, match=r"checksum mismatch for tiny/corpus\.jsonl"):
        resolve_dataset("tiny")
    assert not (env / "datasets" / "tiny").exists()


def test_file_url_plain_file_and_http_404(tmp_path: Path, served: tuple[str, Path], env: Path) -> None:
    src = tmp_path / "ws.tsv"
    src.write_bytes(b"# c\nlove\tsex\t6.77\n")
    reg.register_dataset(DatasetSpec(
        name="ws", kind="word-similarity", description="t", marker="ws.tsv",
        downloads=(Download(src.as_uri(), "ws.tsv", sha256=_sha(src.read_bytes())),)))
    assert (resolve_dataset("ws") / "ws.tsv").read_bytes() == src.read_bytes()
    base, _ = served
    reg.register_dataset(DatasetSpec(name="gone", kind="corpus", description="t",
                                     downloads=(Download(f"{base}/missing.txt", "x.txt", sha256="0" * 64),)))
    with pytest.raises(DatasetError, match=r"could not download .*missing\.txt.*404"):
        resolve_dataset("gone")


def test_offline_and_not_downloadable(env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDSTACK_OFFLINE", "1")
    with pytest.raises(DatasetError, match=r"'scifact' was not found .*EMBEDSTACK_DATA_DIR: not set.*EMBEDSTACK_OFFLINE=1"):
        resolve_dataset("scifact")
    monkeypatch.delenv("EMBEDSTACK_OFFLINE")
    empty = tmp_path / "empty-data"
    (empty / "beir-scifact").mkdir(parents=True)
    monkeypatch.setenv("EMBEDSTACK_DATA_DIR", str(empty))
    with pytest.raises(DatasetError, match=r"beir-scifact \(exists but lacks corpus\.jsonl\).*downloading was disabled"):
        resolve_dataset("scifact", download=False)
    with pytest.raises(DatasetError, match=r"enwiki-extract.*cannot be downloaded automatically.*EMBEDSTACK_DATA_DIR"):
        resolve_dataset("enwiki")


def test_resolution_order(env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    (data / "word-similarity" / "gensim").mkdir(parents=True)
    (data / "word-similarity" / "gensim" / "wordsim353.tsv").write_text("a\tb\t1\n")
    cached = env / "datasets" / "wordsim353"
    cached.mkdir(parents=True)
    (cached / "wordsim353.tsv").write_text("c\td\t2\n")
    monkeypatch.setenv("EMBEDSTACK_OFFLINE", "1")
    assert resolve_dataset("wordsim353") == cached  # no data dir: the cache
    monkeypatch.setenv("EMBEDSTACK_DATA_DIR", str(data))
    assert resolve_dataset("WS353") == data / "word-similarity" / "gensim"  # data dir first; aliases work
    assert resolve_dataset(str(cached)) == cached  # an existing path wins
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_dataset(str(tmp_path / "nope" / "x"))


def test_unknown_name_lists_known() -> None:
    with pytest.raises(DatasetError, match=r"unknown dataset 'nope'.*scifact.*stsb"):
        resolve_dataset("nope")


def test_catalog_has_required_names_with_checksums() -> None:
    required = {"scifact", "stsb", "analogies", "wordsim353", "enwiki", "snli", "banking77", "20newsgroups",
                "agnews", "imdb"}
    assert required <= set(list_datasets())
    for name in list_datasets():
        spec = get_spec(name)
        assert spec.description and spec.local_dirs
        for d in spec.downloads:
            assert d.url.startswith(("https://", "http://"))
            for s in (d.sha256, *(sha for _, sha in spec.files)):
                assert s is None or (len(s) == 64 and int(s, 16) >= 0)
        verified = any(d.sha256 or d.md5 for d in spec.downloads) or bool(spec.files)
        assert verified or name in {"enwiki", "snli"}, name
    info = dataset_info("stsb")
    assert info["downloads"][0]["url"].endswith("Stsbenchmark.tar.gz")
    assert set(info["verified_files"]) == {"sts-train.csv", "sts-dev.csv", "sts-test.csv"}


def _tar_with(tmp_path: Path, name: str, *, symlink: bool = False) -> Path:
    p = tmp_path / "evil.tar.gz"
    with tarfile.open(p, "w:gz") as tf:
        info = tarfile.TarInfo(name)
        if symlink:
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
        else:
            payload = b"x"
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return p


@pytest.mark.parametrize(("name", "symlink"), [("../escape.txt", False), ("/abs.txt", False), ("link", True)])
def test_safe_extract_refuses_unsafe_members(tmp_path: Path, name: str, symlink: bool) -> None:
    archive = _tar_with(tmp_path, name, symlink=symlink)
    with pytest.raises(DatasetError, match="refusing to extract"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_safe_extract_zip_slip(tmp_path: Path) -> None:
    p = tmp_path / "evil.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("../../zipslip.txt", b"x")
    with pytest.raises(DatasetError, match="outside the target folder"):
        safe_extract(p, tmp_path / "out")


def test_tar_download_kept_packed(served: tuple[str, Path], env: Path) -> None:
    base, root = served
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, body in (("20news-bydate-test/sci.space/1", b"Subject: x\n\nrockets"),
                           ("20news-bydate-test/rec.autos/2", b"Subject: y\n\ncars")):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    (root / "20news-bydate.tar.gz").write_bytes(buf.getvalue())
    reg.register_dataset(DatasetSpec(
        name="20ng-tiny", kind="classification", description="t", marker="20news-bydate.tar.gz",
        downloads=(Download(f"{base}/20news-bydate.tar.gz", "20news-bydate.tar.gz", sha256=_sha(buf.getvalue())),)))
    from embedstack.data import load_classification

    ds = load_classification("20ng-tiny", "test")
    assert ds.labels == ["rec.autos", "sci.space"] and ds.texts == ["cars", "rockets"]
    assert json.dumps(dataset_info("20ng-tiny"))  # JSON-able


def test_download_never_deletes_what_is_in_the_target(served: tuple[str, Path], env: Path) -> None:
    from embedstack.errors import OutputExistsError

    base, root = served
    data = _zip_bytes()
    (root / "tiny2.zip").write_bytes(data)
    reg.register_dataset(DatasetSpec(
        name="tiny2", kind="retrieval", description="test", local_dirs=("tiny2",), marker="corpus.jsonl",
        downloads=(Download(f"{base}/tiny2.zip", "tiny2.zip", sha256=_sha(data), extract=True),),
        files=(("corpus.jsonl", _sha(CORPUS)),)))
    partial_copy = env / "datasets" / "tiny2"
    partial_copy.mkdir(parents=True)
    (partial_copy / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="Move or delete it yourself"):
        resolve_dataset("tiny2")
    assert (partial_copy / "notes.txt").read_text() == "mine"
    (partial_copy / "notes.txt").unlink()  # an empty folder is filled
    assert (resolve_dataset("tiny2") / "corpus.jsonl").read_bytes() == CORPUS
