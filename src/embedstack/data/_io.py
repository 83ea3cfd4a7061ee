"""The one text reader behind every loader and command: gzip-aware, CRLF-tolerant, any encoding.

Every text file embedstack reads (corpora, ``encode`` input, BEIR/STS/classification files, word
lists, word-vector text formats) is decoded here. A byte sequence that is not valid in the chosen
encoding raises :class:`~embedstack.errors.InputError` in one line naming the file, the line, the
byte offset and the fix (the ``--encoding`` / ``--errors`` command-line options; in Python the
``encoding=`` / ``errors=`` keywords of the loader).
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from embedstack.errors import ConfigError, DatasetError, FormatError, InputError

__all__ = [
    "ERRORS",
    "open_binary",
    "iter_lines",
    "iter_stream_lines",
    "read_text",
    "scan_lines",
    "decode_error",
    "read_json",
    "check_errors",
    "check_encoding",
    "is_gzip",
]

# Decoding policies accepted by every loader's ``errors=`` option (Python codec error handlers).
# The command line offers the two that matter: ``--errors strict`` and ``--errors replace``.
ERRORS = ("strict", "replace", "ignore", "backslashreplace", "surrogateescape")

# Codecs whose newline is not the single byte 0x0a (lines cannot be split on bytes).
_WIDE = ("utf-16", "utf-32")


def check_errors(errors: str) -> str:
    """Validate a decoding ``errors=`` option."""
    if errors not in ERRORS:
        raise ConfigError(f"--errors must be 'strict' or 'replace' (the library also takes {list(ERRORS[2:])}); "
                          f"got {errors!r}.")
    return errors


def check_encoding(encoding: str) -> str:
    """Validate an ``encoding=`` option (any codec Python knows: utf-8, latin-1, cp1252 ...)."""
    try:
        info = codecs.lookup(encoding)
    except (LookupError, TypeError, ValueError):
        raise ConfigError(f"--encoding {encoding!r} is not a known text encoding; use e.g. utf-8, latin-1, "
                          "cp1252 or utf-16.") from None
    if not getattr(info, "_is_text_encoding", True):
        raise ConfigError(f"--encoding {encoding!r} is not a text encoding; use e.g. utf-8, latin-1 or cp1252.")
    return encoding


def decode_error(where: str, exc: UnicodeDecodeError, encoding: str, *, offset: int = 0) -> InputError:
    """The one-line error for bytes that are not valid in ``encoding`` (``where`` is ``file:line``)."""
    bad = exc.object[exc.start] if exc.start < len(exc.object) else None
    byte = f" ({bad:#04x})" if bad is not None else ""
    return InputError(
        f"{where}: byte offset {offset + exc.start}{byte} is not valid {encoding}; pass --encoding latin-1 "
        f"(or the file's encoding) or --errors replace."
    )


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
    try:
        if is_gzip(p):
            return gzip.open(p, "rb")  # type: ignore[return-value]
        return open(p, "rb")
    except OSError as exc:
        raise DatasetError(f"{p} cannot be read ({exc.strerror or exc}); check its permissions.") from None


def _strip_newline(line: str) -> str:
    if line.endswith("\n"):
        line = line[:-1]
    if line.endswith("\r"):
        line = line[:-1]
    return line


def iter_stream_lines(raw: Iterable[bytes], name: str, *, encoding: str = "utf-8",
                      errors: str = "strict") -> Iterator[tuple[int, str]]:
    """Decode an open binary stream line by line (``name`` is used in error messages).

    Yields ``(line_number, line)`` (1-based, ``\\n``/``\\r\\n`` removed). Wide encodings (UTF-16/32)
    are decoded through a text wrapper; their errors name the line but not the byte.
    """
    check_errors(errors)
    check_encoding(encoding)
    if codecs.lookup(encoding).name.startswith(_WIDE):
        yield from _wide_lines(raw, name, encoding, errors)
        return
    offset = 0
    lineno = 0
    try:
        for lineno, bline in enumerate(raw, start=1):  # noqa: B007 - lineno is read after the loop
            try:
                line = bline.decode(encoding, errors)
            except UnicodeDecodeError as exc:
                raise decode_error(f"{name}:{lineno}", exc, encoding, offset=offset) from None
            offset += len(bline)
            yield lineno, _strip_newline(line)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"{name}: the gzip data is damaged or truncated after line {lineno} ({exc}); "
                         "recompress or fetch the file again.") from None


def _wide_lines(raw: Iterable[bytes], name: str, encoding: str, errors: str) -> Iterator[tuple[int, str]]:
    try:
        data = b"".join(raw)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"{name}: the gzip data is damaged or truncated ({exc}); recompress or fetch the file "
                         "again.") from None
    try:
        text = data.decode(encoding, errors)  # like bytes.decode: no byte-order mark means little-endian
    except UnicodeDecodeError as exc:
        bad = data[:exc.start].decode(encoding, "replace").count("\n") + 1
        raise InputError(f"{name}:{bad}: byte offset {exc.start} is not valid {encoding} ({exc.reason}); pass "
                         "--encoding with the file's encoding (e.g. utf-16-le) or --errors replace.") from None
    for lineno, line in enumerate(io.StringIO(text, newline=None), start=1):
        yield lineno, _strip_newline(line)


def iter_lines(path: str | os.PathLike[str], *, encoding: str = "utf-8",
               errors: str = "strict") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` for every line of ``path`` (1-based; ``\\n``/``\\r\\n`` removed).

    Streams the file (gzip-aware). With ``errors="strict"`` a byte sequence that is not valid in
    ``encoding`` raises :class:`InputError` naming the file, line and byte offset.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.txt"
        >>> _ = p.write_bytes(b"caf\\xe9\\r\\nok\\n")
        >>> list(iter_lines(p, encoding="latin-1"))
        [(1, 'café'), (2, 'ok')]
        >>> list(iter_lines(p, errors="replace"))[0]
        (1, 'caf\\ufffd')
    """
    check_errors(errors)
    check_encoding(encoding)
    p = Path(path)
    with open_binary(p) as raw:
        yield from iter_stream_lines(raw, str(p), encoding=encoding, errors=errors)


def read_text(path: str | os.PathLike[str], *, encoding: str = "utf-8", errors: str = "strict") -> str:
    """The whole text of ``path`` (gzip-aware), decoded with the same checks and messages as :func:`iter_lines`.

    Line endings are kept as they are in the file.
    """
    check_errors(errors)
    check_encoding(encoding)
    p = Path(path)
    with open_binary(p) as raw:
        try:
            data = raw.read()
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise InputError(f"{p}: the gzip data is damaged or truncated ({exc}); recompress or fetch the file "
                             "again.") from None
    try:
        return data.decode(encoding, errors)
    except UnicodeDecodeError as exc:
        if codecs.lookup(encoding).name.startswith(_WIDE):
            line = data[:exc.start].decode(encoding, "replace").count("\n") + 1
            raise InputError(f"{p}:{line}: byte offset {exc.start} is not valid {encoding} ({exc.reason}); pass "
                             "--encoding with the file's encoding (e.g. utf-16-le) or --errors replace.") from None
        line = data.count(b"\n", 0, exc.start) + 1
        start = data.rfind(b"\n", 0, exc.start) + 1
        sub = UnicodeDecodeError(exc.encoding, data[start:exc.end], exc.start - start, exc.end - start, exc.reason)
        raise decode_error(f"{p}:{line}", sub, encoding, offset=start) from None


def scan_lines(path: str | os.PathLike[str], *, encoding: str = "utf-8", errors: str = "strict") -> int:
    """Count the lines of ``path`` (a last line without a newline counts), checking that every line decodes.

    A fast pre-flight for commands that stream a file into a long computation: a bad byte is
    reported (as :func:`iter_lines` would) before any work starts.
    """
    n = 0
    for n, _ in iter_lines(path, encoding=encoding, errors=errors):  # noqa: B007
        pass
    return n


def read_json(path: str | os.PathLike[str], *, hint: str = "") -> Any:
    """Parse a JSON file written by a tool (UTF-8); a damaged one raises :class:`FormatError` naming it.

    Used for every configuration file embedstack reads (``config.json``, ``modules.json``,
    ``categories.json`` ...). ``hint`` ends the message (e.g. "re-save or re-download the model").
    """
    p = Path(path)
    tail = f"; {hint}" if hint else ""
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise FormatError(f"{p} cannot be read ({exc.strerror or exc}){tail}.") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FormatError(f"{p}: byte offset {exc.start} is not valid UTF-8, so it is not a JSON file{tail}.") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"{p} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}){tail}.") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits, nesting too deep
        raise FormatError(f"{p} is not usable JSON ({type(exc).__name__}: {str(exc)[:80]}){tail}.") from None


def iter_json_lines(path: str | os.PathLike[str], *, encoding: str = "utf-8", errors: str = "strict",
                    error: type[Exception] = FormatError, hint: str = "fix or delete that line") -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for every non-blank line of a JSON-lines file (a leading BOM is dropped).

    A line that is not JSON raises ``error`` (FormatError for dataset files, InputError for the user's
    own data) naming ``FILE:LINE`` and ``hint``.
    """
    yield from parse_json_lines(path, iter_lines(path, encoding=encoding, errors=errors), error=error, hint=hint)


def parse_json_lines(path: Any, lines: Iterator[tuple[int, str]], *, error: type[Exception] = FormatError,
                     hint: str = "fix or delete that line") -> Iterator[tuple[int, Any]]:
    """:func:`iter_json_lines` over ``(line number, text)`` pairs already read (``path`` names them in errors)."""
    for lineno, line in lines:
        if lineno == 1:
            line = line.removeprefix("\ufeff")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); {hint}.") from None
        except (ValueError, RecursionError) as exc:
            raise error(f"{path}:{lineno}: not usable JSON ({type(exc).__name__}); {hint}.") from None
        yield lineno, obj

