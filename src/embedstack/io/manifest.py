"""Component folders: ``manifest.json`` (type, format_version, library version, config) + safetensors.

The manifest also lists every other file of the folder (recursively) with its sha256 and byte size
(``files``), written last; loaders check them with :func:`verify_files`, so a corrupted or
half-replaced file is a :class:`~embedstack.errors.FormatError` naming it, not silent garbage.
Hashing reads every byte; for huge memory-mapped indexes skip it with ``verify=False`` on the load
call or ``EMBEDSTACK_VERIFY=0`` in the environment (byte sizes are still checked, which is free).

Arrays are stored with safetensors and can be memory-mapped on load (our own reader of the
safetensors layout: 8-byte little-endian header size, JSON header, raw little-endian data).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.errors import FormatError
from embedstack.io.atomic import _MARKER as SENTENCE_MARKER
from embedstack.io.atomic import SENTENCE_MODEL, AtomicFile, atomic_write_text

__all__ = [
    "FORMAT_VERSION",
    "write_manifest",
    "read_manifest",
    "file_checksums",
    "verify_files",
    "verify_enabled",
    "listed_sha256",
    "verify_artifact",
    "save_arrays",
    "load_arrays",
    "sha256_file",
]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64,
    "BOOL": np.bool_,
}
_CODES = {np.dtype(v).str.lstrip("<|="): k for k, v in _DTYPES.items()}


def write_manifest(folder: str | os.PathLike[str], type_name: str, config: Mapping[str, Any],
                   **extra: Any) -> dict[str, Any]:
    """Write ``manifest.json`` into ``folder`` atomically and return its content.

    Call it last: it records the sha256 and size of every other file already in ``folder``.
    """
    from embedstack import __version__

    manifest = {
        "type": type_name,
        "format_version": FORMAT_VERSION,
        "embedstack_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": dict(config),
        **extra,
        "files": file_checksums(folder),
    }
    atomic_write_text(Path(folder) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=_jsonable))
    return manifest


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def file_checksums(folder: str | os.PathLike[str], *, exclude: tuple[str, ...] = (MANIFEST,)) -> dict[str, dict[str, Any]]:
    """``{relative/path: {"sha256", "bytes"}}`` for every file under ``folder`` except ``exclude`` (top level)."""
    root = Path(folder)
    out: dict[str, dict[str, Any]] = {}
    for dirpath, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if rel in exclude:
                continue
            out[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


def verify_enabled(verify: bool | None) -> bool:
    """``verify`` itself, or when None the environment: ``EMBEDSTACK_VERIFY=0`` turns hashing off."""
    if verify is not None:
        return bool(verify)
    return os.environ.get("EMBEDSTACK_VERIFY", "1").strip().lower() not in ("0", "false", "no", "off")


def verify_files(folder: str | os.PathLike[str], manifest: Mapping[str, Any], *,
                 verify: bool | None = None, defer: str | None = None) -> int:
    """Check the files listed in ``manifest["files"]``: sizes always, sha256 unless disabled.

    Folders saved before checksums existed (no ``files``) pass unchecked. Returns how many files were
    hashed.

    Args:
        folder: the component or index folder.
        manifest: its manifest (from :func:`read_manifest`).
        verify: hash the files (True), only compare sizes (False), or follow ``EMBEDSTACK_VERIFY``
            (None: on unless it is ``0``).
        defer: one file (relative path) whose size is checked here but whose hash the caller checks
            while reading it anyway (``load_arrays(..., sha256=listed_sha256(manifest, defer))``), so it
            is not read twice.

    Raises:
        FormatError: a listed file is missing, has another size, or another sha256.
    """
    files = manifest.get("files")
    if not files:
        return 0
    if not isinstance(files, Mapping):
        raise FormatError(f"{Path(folder) / MANIFEST}: 'files' must map file names to checksums; the manifest is damaged.")
    root = Path(folder)
    expected: list[tuple[Path, str]] = []
    for rel, info in files.items():  # missing files and sizes first: free, and they name the worst damage
        parts = Path(rel).parts
        if not parts or Path(rel).is_absolute() or ".." in parts:
            raise FormatError(f"{root / MANIFEST}: 'files' lists {rel!r}, which is not a path inside the folder; "
                              "the manifest is damaged.")
        p = root / rel
        try:
            if not p.is_file():
                raise FileNotFoundError(p)
            size = p.stat().st_size
            want_size, want_sha = int(info["bytes"]), str(info["sha256"])
        except OSError:  # missing, a folder where a file was saved, a path through a file, no permission
            raise FormatError(f"{p} is missing (or not a readable file) but the manifest lists it; the folder "
                              "is incomplete. Rebuild it or restore it from a backup.") from None
        except (KeyError, TypeError, ValueError, OverflowError):
            raise FormatError(f"{root / MANIFEST}: the checksum entry of {rel!r} is malformed; the manifest is damaged.") from None
        if size != want_size:
            raise FormatError(f"{p} has {size} bytes but was saved with {want_size}; the file is damaged. "
                              "Rebuild it or restore it from a backup.")
        if rel != defer:
            expected.append((p, want_sha))
    if not verify_enabled(verify):
        return 0
    for p, want_sha in expected:
        try:
            got = sha256_file(p)
        except OSError as exc:
            raise FormatError(f"{p} cannot be read ({exc.strerror or exc}); the folder is damaged or not readable.") from None
        if got != want_sha:
            raise _mismatch(p, got, want_sha)
    return len(expected)


def _mismatch(p: Path, got: str, want: str) -> FormatError:
    return FormatError(f"{p} does not match its checksum (sha256 {got[:12]}..., saved {want[:12]}...); "
                       "the file is corrupted. Rebuild it or restore it from a backup.")


def listed_sha256(manifest: Mapping[str, Any], rel: str) -> str | None:
    """The sha256 that ``manifest["files"]`` records for ``rel`` (None for folders saved without checksums)."""
    files = manifest.get("files")
    info = files.get(rel) if isinstance(files, Mapping) else None
    return str(info["sha256"]) if isinstance(info, Mapping) and "sha256" in info else None


def verify_artifact(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Hash every file of any saved embedstack folder against the checksums it was saved with.

    Works on component and index folders (``manifest.json``), aliases (followed), and
    sentence-transformers model folders written by embedstack (``embedstack.json``). Returns
    ``{"path", "resolved", "type", "files" (hashed), "bytes", "checked"}``; ``checked`` is False for
    folders saved before checksums were recorded.

    Raises:
        FormatError: not an embedstack folder, or a file is missing, truncated or corrupted (named).
    """
    folder = Path(os.path.realpath(path))
    if (folder / MANIFEST).is_file():
        manifest: dict[str, Any] = read_manifest(folder)
        kind = str(manifest["type"])
    elif (folder / SENTENCE_MARKER).is_file():
        marker = folder / SENTENCE_MARKER
        try:
            manifest = json.loads(marker.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise FormatError(f"{marker} is not valid JSON; the model folder is damaged.") from None
        if not isinstance(manifest, dict):
            raise FormatError(f"{marker} is not a JSON object; the model folder is damaged.")
        kind = SENTENCE_MODEL
    else:
        raise FormatError(f"{path} is not a folder saved by embedstack (no manifest.json or embedstack.json), "
                          "so it has no checksums to verify.")
    hashed = verify_files(folder, manifest, verify=True)
    files = manifest.get("files") or {}
    size = sum(int(f.get("bytes", 0)) for f in files.values() if isinstance(f, Mapping)) if isinstance(files, Mapping) else 0
    return {"path": os.fspath(path), "resolved": str(folder), "type": kind, "files": hashed, "bytes": size,
            "checked": bool(files)}


def read_manifest(folder: str | os.PathLike[str], expected_type: str | None = None) -> dict[str, Any]:
    """Read and check ``manifest.json``; raise FormatError naming what is wrong."""
    from embedstack.io.atomic import recover_dir

    recover_dir(Path(folder))  # a crash between two renames of a non-Linux swap left the old version aside
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FormatError(f"{path} does not exist: {folder} is not a saved embedstack component folder.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path} is not valid JSON ({exc}); the folder is damaged, save the component again.") from None
    if not isinstance(manifest, dict) or "type" not in manifest or "format_version" not in manifest:
        raise FormatError(f"{path} lacks 'type'/'format_version'; it was not written by embedstack.")
    version = manifest["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FormatError(f"{path}: format_version must be a positive integer, got {version!r}; the file is damaged.")
    if version > FORMAT_VERSION:
        raise FormatError(
            f"{path} has format_version {manifest['format_version']} but this embedstack reads up to "
            f"{FORMAT_VERSION}; upgrade embedstack."
        )
    if expected_type is not None and manifest["type"] != expected_type:
        raise FormatError(f"{folder} holds a {manifest['type']!r}, not a {expected_type!r}.")
    return manifest


def save_arrays(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray],
                metadata: Mapping[str, str] | None = None) -> None:
    """Write numpy arrays to a safetensors file atomically (C-contiguous, little-endian)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    blobs = []
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        code = _CODES.get(a.dtype.str.lstrip("<|="))
        if code is None:
            raise FormatError(f"array {name!r} has dtype {a.dtype}, which safetensors cannot store.")
        nbytes = a.nbytes
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [offset, offset + nbytes]}
        blobs.append(a)
        offset += nbytes
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)
    with AtomicFile(path) as f, open(f.tmp, "wb") as fh:  # streamed: no copy of the arrays in memory
        fh.write(struct.pack("<Q", len(hbytes)))
        fh.write(hbytes)
        for b in blobs:
            if b.size:
                fh.write(b.reshape(-1).data.cast("B"))


def load_arrays(path: str | os.PathLike[str], *, mmap: bool = False,
                sha256: str | None = None) -> dict[str, np.ndarray]:
    """Read a safetensors file into numpy arrays; with ``mmap=True`` they are read-only memory maps.

    ``sha256``: the file's expected hash, checked on the bytes read (``mmap=False``: no second read of the
    file) or by hashing the file first (``mmap=True``); a mismatch is a :class:`FormatError`.
    """
    p = Path(path)
    if not p.is_file():
        raise FormatError(f"{p} does not exist; the saved folder is incomplete (missing weights file).")
    size = p.stat().st_size
    with open(p, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise FormatError(f"{p} is truncated at byte {len(raw)}: no safetensors header.")
        (hlen,) = struct.unpack("<Q", raw)
        if hlen > size - 8:
            raise FormatError(f"{p} is truncated: header says {hlen} bytes but the file has {size - 8} after byte 8.")
        try:
            header = json.loads(fh.read(hlen).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise FormatError(f"{p}: the safetensors header (bytes 8..{8 + hlen}) is not valid JSON.") from None
    if not isinstance(header, dict):
        raise FormatError(f"{p}: the safetensors header is a JSON {type(header).__name__}, not an object; "
                          "the file is damaged or not a safetensors file.")
    base = 8 + hlen
    out: dict[str, np.ndarray] = {}
    buf = None if mmap else p.read_bytes()
    if sha256 is not None:
        got = hashlib.sha256(buf).hexdigest() if buf is not None else sha256_file(p)
        if got != sha256:
            raise _mismatch(p, got, sha256)
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]])
            start, end = (int(x) for x in info["data_offsets"])
            shape = tuple(int(x) for x in info["shape"])
            if start < 0 or any(d < 0 for d in shape):
                raise ValueError("negative offset or dimension")
        except (KeyError, TypeError, ValueError, OverflowError):
            raise FormatError(f"{p}: tensor {name!r} has an unsupported dtype or a malformed header entry "
                              f"{info!r}; the file is damaged or not a safetensors file.") from None
        if base + end > size:
            raise FormatError(f"{p} is truncated: tensor {name!r} ends at byte {base + end} of {size}.")
        count = (end - start) // dtype.itemsize
        if end < start or count != math.prod(shape) or (end - start) % dtype.itemsize:
            raise FormatError(f"{p}: tensor {name!r} has shape {list(shape)} but {end - start} bytes of "
                              f"{dtype.name}; the file is damaged.")
        if mmap:
            if count == 0:
                arr = np.zeros(shape, dtype=dtype)
            else:
                arr = np.memmap(p, dtype=dtype, mode="r", offset=base + start, shape=shape)
        else:
            arr = np.frombuffer(buf, dtype=dtype, count=count, offset=base + start).reshape(shape).copy()  # type: ignore[arg-type]
        out[name] = arr
    return out


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
