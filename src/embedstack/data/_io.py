"""Line readers shared by every loader: gzip-aware, CRLF-tolerant, with file:line:byte error messages."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from embedstack.errors import DatasetError, FormatError

__all__ = ["ERRORS", "open_binary", "iter_lines", "check_errors", "is_gzip"]

# Decoding policies accepted by every loader's ``errors=`` option (Python codec error handlers).
ERRORS = ("strict", "replace", "ignore", "backslashreplace", "surrogateescape")


def check_errors(errors: str) -> str:
    """Validate a decoding ``errors=`` option."""
    if errors not in ERRORS:
        from embedstack.errors import ConfigError

        raise ConfigError(f"The 'errors' option must be one of {list(ERRORS)}. Got {errors!r} instead.")
    return errors


def is_gzip(path: Path) -> bool:
    """Whether ``path`` starts with the gzip magic bytes."""
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def open_binary(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for binary reading, transparently decompressing gzip."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p} does not exist or is not a file; check the path.")
    if is_gzip(p):
        return gzip.open(p, "rb")  # type: ignore[return-value]
    return open(p, "rb")


def iter_lines(path: str | os.PathLike[str], *, encoding: str = "utf-8",
               errors: str = "strict") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` for every line of ``path`` (1-based; ``\\n``/``\\r\\n`` removed).

    Streams the file (gzip-aware). With ``errors="strict"`` a byte sequence that is not valid in
    ``encoding`` raises :class:`FormatError` naming the file, line and byte offset.
    """
    check_errors(errors)
    p = Path(path)
    offset = 0
    with open_binary(p) as raw:
        for lineno, bline in enumerate(raw, start=1):
            try:
                line = bline.decode(encoding, errors)
            except UnicodeDecodeError as exc:
                raise FormatError(
                    f"{p}:{lineno}: byte offset {offset + exc.start} (byte {exc.object[exc.start]:#04x}) is not "
                    f"valid {encoding}; convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8) or pass "
                    f"errors='replace' to the loader."
                ) from None
            offset += len(bline)
            if line.endswith("\n"):
                line = line[:-1]
            if line.endswith("\r"):
                line = line[:-1]
            yield lineno, line
