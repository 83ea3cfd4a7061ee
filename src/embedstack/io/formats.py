"""Word-vector interchange formats: word2vec text and binary, GloVe text, fastText ``.vec``.

* word2vec text / fastText ``.vec``: a header line ``"<count> <dim>"`` then ``word v1 ... vdim`` lines.
* word2vec binary: the same header, then per word ``word`` + a space + ``dim`` little-endian float32
  (word2vec.c also writes a newline after each vector; gensim does not; both are read).
* GloVe text: like word2vec text without the header (words may contain spaces: the last ``dim``
  fields are the vector).

Readers raise :class:`~embedstack.errors.FormatError` naming the line (text) or byte offset (binary)
where a file is malformed or truncated. Writers are atomic. ``.gz`` files are read transparently.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "v.txt"
    >>> write_word2vec(p, ["a", "b"], np.eye(2, dtype=np.float32))
    >>> keys, vecs = read_vectors(p)
    >>> keys, vecs.tolist()
    (['a', 'b'], [[1.0, 0.0], [0.0, 1.0]])
"""

from __future__ import annotations

import gzip
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from embedstack.errors import FormatError
from embedstack.io.atomic import atomic_write_bytes

__all__ = [
    "VectorFormat",
    "write_word2vec",
    "write_glove",
    "read_word2vec",
    "read_glove",
    "read_vectors",
    "detect_format",
]

VectorFormat = Literal["word2vec-text", "word2vec-binary", "glove"]
_HEADER = re.compile(rb"^\s*(\d+)\s+(\d+)\s*$")


def _check_arrays(keys: Sequence[str], vectors: np.ndarray) -> np.ndarray:
    vecs = np.asarray(vectors, dtype=np.float32)
    if vecs.ndim != 2 or vecs.shape[0] != len(keys):
        raise FormatError(f"need one vector row per key: got {len(keys)} keys and an array of shape {vecs.shape}.")
    for k in keys:
        if not k or any(c.isspace() for c in k):
            raise FormatError(f"key {k!r} is empty or contains whitespace, which these formats cannot store.")
    return vecs


def _text_rows(keys: Sequence[str], vecs: np.ndarray) -> bytes:
    buf = io.StringIO()
    for key, row in zip(keys, vecs, strict=True):
        buf.write(key)
        buf.write(" ")
        buf.write(" ".join(f"{x:.6g}" for x in row.tolist()))
        buf.write("\n")
    return buf.getvalue().encode("utf-8")


def write_word2vec(path: str | os.PathLike[str], keys: Sequence[str], vectors: np.ndarray, *,
                   binary: bool = False) -> None:
    """Write the word2vec text (fastText ``.vec``) or binary format atomically."""
    vecs = _check_arrays(keys, vectors)
    header = f"{vecs.shape[0]} {vecs.shape[1]}\n".encode()
    if binary:
        le = vecs.astype("<f4", copy=False)
        parts = [header]
        for key, row in zip(keys, le, strict=True):
            parts.append(key.encode("utf-8") + b" " + row.tobytes() + b"\n")
        atomic_write_bytes(path, b"".join(parts))
    else:
        atomic_write_bytes(path, header + _text_rows(keys, vecs))


def write_glove(path: str | os.PathLike[str], keys: Sequence[str], vectors: np.ndarray) -> None:
    """Write the GloVe text format (no header) atomically."""
    atomic_write_bytes(path, _text_rows(keys, _check_arrays(keys, vectors)))


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise FormatError(f"{p} does not exist or is not a file; give the path of a vectors file.")
    data = p.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise FormatError(f"{p} is a damaged or truncated gzip file ({exc}).") from None
    return data


def _decode(raw: bytes, where: str, encoding: str = "utf-8", errors: str = "strict", offset: int = 0) -> str:
    try:
        return raw.decode(encoding, errors)
    except UnicodeDecodeError as exc:
        from embedstack.data._io import decode_error

        raise decode_error(where, exc, encoding, offset=offset) from None


def _text_options(encoding: str, errors: str) -> tuple[str, str]:
    from embedstack.data._io import check_encoding, check_errors

    return check_encoding(encoding), check_errors(errors)


def _trailing_numbers(parts: list[str]) -> int:
    """How many of the last fields are numbers (at most all but one: the word may contain spaces)."""
    n = 0
    for tok in reversed(parts[1:]):
        try:
            float(tok)
        except ValueError:
            break
        n += 1
    return n


def _parse_text(data: bytes, path: str, dim: int | None, count: int | None, first_line: int,
                encoding: str = "utf-8", errors: str = "strict", base: int = 0) -> tuple[list[str], np.ndarray]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    keys: list[str] = []
    rows: list[np.ndarray] = []
    offset = base
    for n, raw in enumerate(lines, start=first_line):
        line = _decode(raw.rstrip(b"\r"), f"{path}:{n}", encoding, errors, offset).rstrip()
        offset += len(raw) + 1
        if not line:
            continue
        parts = line.split(" ")
        if dim is None:
            dim = _trailing_numbers(parts)
            if dim < 1:
                raise FormatError(f"{path}: line {n} has no vector values; expected 'word v1 v2 ...'.")
        if len(parts) < dim + 1:
            raise FormatError(f"{path}: line {n} has {len(parts) - 1} values, expected {dim} (malformed or truncated).")
        try:
            with np.errstate(over="ignore"):
                vec = np.array(parts[-dim:], dtype=np.float32)
        except ValueError:
            raise FormatError(f"{path}: line {n} holds a value that is not a number.") from None
        if not np.isfinite(vec).all():
            raise FormatError(f"{path}: line {n} holds a value that is NaN, infinite or outside the float32 range.")
        keys.append(" ".join(parts[:-dim]))
        rows.append(vec)
    if dim is None:
        raise FormatError(f"{path} holds no vectors.")
    if count is not None and len(keys) != count:
        raise FormatError(
            f"{path}: the header announces {count} vectors but {len(keys)} were found "
            f"(file truncated after line {first_line + len(lines) - 1})."
        )
    vecs = np.vstack(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    return keys, vecs


def _header(data: bytes, path: str) -> tuple[int, int, int]:
    end = data.find(b"\n")
    first = data if end < 0 else data[:end]
    m = _HEADER.match(first)
    if not m:
        raise FormatError(f"{path}: line 1 is not a word2vec header '<count> <dim>'.")
    count, dim = int(m.group(1)), int(m.group(2))
    if dim < 1:
        raise FormatError(f"{path}: line 1 announces dimension {dim}; it must be >= 1.")
    return count, dim, (len(data) if end < 0 else end + 1)


def _parse_binary(data: bytes, path: str, encoding: str = "utf-8", errors: str = "strict"
                  ) -> tuple[list[str], np.ndarray]:
    count, dim, pos = _header(data, path)
    keys: list[str] = []
    nbytes = 4 * dim
    size = len(data)
    if count * (nbytes + 1) > size - pos:  # every record is at least a space and dim floats
        raise FormatError(
            f"{path}: the header announces {count} vectors of dimension {dim} (at least {count * (nbytes + 1):,} "
            f"bytes) but only {size - pos:,} bytes follow it; the file is truncated or not word2vec binary."
        )
    vecs = np.empty((count, dim), dtype=np.float32)
    for i in range(count):
        while pos < size and data[pos] in b"\n\r":
            pos += 1
        sp = data.find(b" ", pos, pos + 4096)
        if sp < 0:
            raise FormatError(f"{path}: truncated or malformed at byte {pos}: record {i + 1} of {count} has no word.")
        if sp + 1 + nbytes > size:
            raise FormatError(
                f"{path}: truncated at byte {size}: record {i + 1} of {count} ({data[pos:sp][:40]!r}) "
                f"needs {nbytes} vector bytes from byte {sp + 1}."
            )
        keys.append(_decode(data[pos:sp], f"{path}: record {i + 1}", encoding, errors, pos))
        vecs[i] = np.frombuffer(data, dtype="<f4", count=dim, offset=sp + 1)
        pos = sp + 1 + nbytes
    _check_finite(vecs, path, "record")
    return keys, vecs


def _check_finite(vecs: np.ndarray, path: str, unit: str, first: int = 1) -> None:
    bad = ~np.isfinite(vecs).all(axis=1) if vecs.size else np.zeros(0, dtype=bool)
    if bad.any():
        i = int(np.argmax(bad))
        raise FormatError(f"{path}: {unit} {first + i} holds a value that is NaN, infinite or outside the float32 "
                          "range; the file is damaged.")


def detect_format(path: str | os.PathLike[str], data: bytes | None = None) -> VectorFormat:
    """Guess the format of a vectors file from its first lines."""
    data = _read_bytes(path) if data is None else data
    end = data.find(b"\n")
    first = data if end < 0 else data[:end]
    if not _HEADER.match(first):
        return "glove"
    _count, dim, pos = _header(data, str(path))
    nxt = data.find(b"\n", pos)
    line = data[pos:] if nxt < 0 else data[pos:nxt]
    try:
        parts = line.decode("utf-8", "replace").rstrip().split(" ")  # the words may be in another encoding
        if len(parts) >= dim + 1:
            with np.errstate(over="ignore"):
                np.array(parts[-dim:], dtype=np.float32)
            return "word2vec-text"
    except (UnicodeDecodeError, ValueError):
        pass
    return "word2vec-binary" if line or len(data) > pos else "word2vec-text"


def read_word2vec(path: str | os.PathLike[str], *, binary: bool | None = None, encoding: str = "utf-8",
                  errors: str = "strict") -> tuple[list[str], np.ndarray]:
    """Read the word2vec text/binary format (``binary=None`` detects which).

    ``encoding``/``errors`` decode the words (``--encoding``/``--errors``); a word that is not valid
    in ``encoding`` raises :class:`~embedstack.errors.InputError` naming the line (text) or record (binary).
    """
    encoding, errors = _text_options(encoding, errors)
    data = _read_bytes(path)
    if binary is None:
        binary = detect_format(path, data) == "word2vec-binary"
    if binary:
        return _parse_binary(data, str(path), encoding, errors)
    count, dim, pos = _header(data, str(path))
    return _parse_text(data[pos:], str(path), dim, count, 2, encoding, errors, pos)


def read_glove(path: str | os.PathLike[str], *, encoding: str = "utf-8", errors: str = "strict"
               ) -> tuple[list[str], np.ndarray]:
    """Read the GloVe text format (no header; the dimension is taken from the first line)."""
    encoding, errors = _text_options(encoding, errors)
    return _parse_text(_read_bytes(path), str(path), None, None, 1, encoding, errors)


def read_vectors(path: str | os.PathLike[str], format: VectorFormat | None = None, *,  # noqa: A002
                 encoding: str = "utf-8", errors: str = "strict") -> tuple[list[str], np.ndarray]:
    """Read any supported vectors file; ``format=None`` detects it."""
    encoding, errors = _text_options(encoding, errors)
    data = _read_bytes(path)
    fmt = format or detect_format(path, data)
    if fmt == "glove":
        return _parse_text(data, str(path), None, None, 1, encoding, errors)
    if fmt == "word2vec-binary":
        return _parse_binary(data, str(path), encoding, errors)
    if fmt == "word2vec-text":
        count, dim, pos = _header(data, str(path))
        return _parse_text(data[pos:], str(path), dim, count, 2, encoding, errors, pos)
    raise FormatError(f"unknown vectors format {fmt!r}; use 'word2vec-text', 'word2vec-binary' or 'glove'.")
