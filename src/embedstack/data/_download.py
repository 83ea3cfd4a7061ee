"""Download a dataset into the cache: stream to a temp file, verify checksums, extract safely, rename.

Nothing is ever left half-written: the whole dataset folder is built in a temporary sibling and moved
into place by :func:`embedstack.io.atomic_dir` only when every checksum matched.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from embedstack.errors import DatasetError

if TYPE_CHECKING:
    from embedstack.data._registry import DatasetSpec, Download

__all__ = ["fetch", "download_file", "safe_extract", "file_digest"]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int | None], None]
_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file, streamed."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def download_file(url: str, dest: Path, *, sha256: str | None = None, md5: str | None = None,
                  timeout: float = 60.0, progress: ProgressFn | None = None) -> Path:
    """Stream ``url`` (http, https or file) to ``dest`` and verify its checksum(s).

    The data goes to a temporary sibling (:class:`embedstack.io.AtomicFile`) and is renamed to
    ``dest`` only after the checksum matched; a failed or interrupted download leaves nothing behind.

    Raises:
        DatasetError: the URL cannot be fetched or the checksum does not match.
    """
    from embedstack.io import AtomicFile

    pending = AtomicFile(dest)
    h256, hmd5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(pending.tmp, "wb") as out:  # noqa: S310
                total = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
                total_n = int(total) if total and str(total).isdigit() else None
                done = 0
                while block := resp.read(_CHUNK):
                    out.write(block)
                    h256.update(block)
                    hmd5.update(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total_n)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DatasetError(f"could not download {url}: {exc}. Check the network connection, or download the "
                               f"file yourself and place it as described by `embedstack datasets info`.") from None
        for algo, expected, got in (("sha256", sha256, h256.hexdigest()), ("md5", md5, hmd5.hexdigest())):
            if expected and expected.lower() != got:
                raise DatasetError(
                    f"checksum mismatch for {url}: expected {algo} {expected}, got {got}. The download is corrupt "
                    f"or the file changed upstream; retry, or place a verified copy yourself."
                )
    except BaseException:
        pending.abort()
        raise
    if not sha256 and not md5:
        log.warning("no published checksum for %s; the download was not verified (sha256 %s)", url, h256.hexdigest())
    return pending.commit()


def _check_member(name: str, root: Path) -> Path:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and p.parts[0].endswith(":")):
        raise DatasetError(f"archive member {name!r} would be written outside the target folder; refusing to extract.")
    target = (root / Path(*p.parts)).resolve() if p.parts else root.resolve()
    if not str(target).startswith(str(root.resolve())):
        raise DatasetError(f"archive member {name!r} escapes the target folder; refusing to extract.")
    return target


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into ``dest``, refusing unsafe members.

    Absolute paths, ``..`` components, links and device files are rejected (zip-slip / tar-slip).
    """
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = _check_member(info.filename, dest)
                mode = (info.external_attr >> 16) & 0o170000
                if mode == 0o120000:
                    raise DatasetError(f"archive member {info.filename!r} is a symbolic link; refusing to extract.")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
        return
    try:
        tf = tarfile.open(archive)  # noqa: SIM115 - closed below
    except tarfile.TarError as exc:
        raise DatasetError(f"{archive} is neither a zip nor a tar archive ({exc}); the download is damaged.") from None
    with tf:
        for member in tf:
            target = _check_member(member.name, dest)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                raise DatasetError(
                    f"archive member {member.name!r} is a link or special file; refusing to extract."
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            data = tf.extractfile(member)
            if data is None:  # pragma: no cover - isfile() members always have data
                continue
            with data, open(target, "wb") as out:
                shutil.copyfileobj(data, out, _CHUNK)


def _strip_single_top(folder: Path) -> None:
    """If ``folder`` holds exactly one sub-folder (and nothing else), move its content up."""
    entries = [e for e in folder.iterdir() if not e.name.startswith(".") and e.name != "__MACOSX"]
    if len(entries) != 1 or not entries[0].is_dir():
        return
    top = entries[0]
    staging = folder / (".strip-" + top.name)
    os.replace(top, staging)
    for child in staging.iterdir():
        os.replace(child, folder / child.name)
    staging.rmdir()
    shutil.rmtree(folder / "__MACOSX", ignore_errors=True)


def _fetch_one(dl: Download, folder: Path, *, progress: ProgressFn | None) -> None:
    if not dl.extract:
        download_file(dl.url, folder / dl.filename, sha256=dl.sha256, md5=dl.md5, progress=progress)
        return
    staging = folder / ".downloads"
    archive = download_file(dl.url, staging / dl.filename, sha256=dl.sha256, md5=dl.md5, progress=progress)
    unpacked = folder / ".unpacked"
    safe_extract(archive, unpacked)
    if dl.strip_top:
        _strip_single_top(unpacked)
    for child in unpacked.iterdir():
        os.replace(child, folder / child.name)
    unpacked.rmdir()
    archive.unlink()
    shutil.rmtree(staging, ignore_errors=True)


def fetch(spec: DatasetSpec, target: Path, *, progress: ProgressFn | None = None) -> Path:
    """Download every file of ``spec`` into ``target`` (atomically) and verify member checksums."""
    from embedstack.io import atomic_dir
    from embedstack.io.atomic import check_download_target

    if not spec.downloads:
        raise DatasetError(f"dataset {spec.name!r} has no download source. {spec.how_to_provide()}")
    check_download_target(target, "dataset")  # never deletes what is already there
    with atomic_dir(target) as tmp:
        for dl in spec.downloads:
            _fetch_one(dl, tmp, progress=progress)
        for rel, expected in spec.files:
            p = tmp / rel
            if not p.is_file():
                raise DatasetError(f"the download of {spec.name!r} lacks the expected file {rel!r}; "
                                   f"the upstream archive changed. {spec.how_to_provide()}")
            got = file_digest(p)
            if got != expected:
                raise DatasetError(f"checksum mismatch for {spec.name}/{rel}: expected sha256 {expected}, "
                                   f"got {got}. The upstream data changed; {spec.how_to_provide()}")
    return target
