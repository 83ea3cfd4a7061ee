"""Streaming text corpora: plain text, gzip, JSON lines, WikiExtractor ``<doc>`` files, folders of them.

Texts are produced one at a time; no function here ever holds the whole corpus in memory.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from embedstack._validation import check_choice, check_int
from embedstack.data._io import check_encoding, check_errors, iter_lines, parse_json_lines
from embedstack.errors import DatasetError, FormatError

__all__ = ["iter_texts", "iter_files", "CORPUS_KINDS"]

log = logging.getLogger(__name__)

CORPUS_KINDS = ("auto", "lines", "wikiextractor", "jsonl")
_DOC_OPEN = re.compile(r'^<doc\b[^>]*>\s*$')
_TITLE = re.compile(r'\btitle="([^"]*)"')
_SKIP_NAMES = re.compile(r"(?i)^(readme|license|licence|copying|source)(\..*)?$|\.(md|json|part|tmp|py|zip|tar)$")


def iter_files(folder: Path) -> Iterator[Path]:
    """Corpus files below ``folder`` in sorted order (hidden files, READMEs, licences, *.md skipped)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or _SKIP_NAMES.search(name) or name.endswith((".tar.gz", ".tgz")):
                continue
            yield Path(dirpath) / name


def _detect(path: Path, first: str) -> str:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return "jsonl"
    if _DOC_OPEN.match(first.strip()):
        return "wikiextractor"
    return "lines"


def _wikiextractor(path: Path, lines: Iterator[tuple[int, str]]) -> Iterator[str]:
    buf: list[str] = []
    title: str | None = None
    inside = False
    first_body = True
    for lineno, line in lines:
        s = line.strip()
        if not inside:
            if _DOC_OPEN.match(s):
                inside, buf, first_body = True, [], True
                m = _TITLE.search(s)
                title = m.group(1) if m else None
            elif s:
                raise FormatError(f"{path}:{lineno}: text outside a <doc ...> block; the file is not WikiExtractor "
                                  "output (plain text, one document per line, is kind 'lines').", fix={"kind": "lines"})
            continue
        if s == "</doc>":
            inside = False
            if buf:
                yield "\n".join(buf)
            elif title:  # a page with no body (e.g. a stub): its title is its only text
                yield title
            continue
        if not s:
            continue
        if first_body and title is not None and s == title.strip():
            first_body = False  # WikiExtractor repeats the title as the first line
            continue
        first_body = False
        buf.append(s)
    if inside:
        log.warning("%s ends inside a <doc> block (truncated file?); the last document is kept", path)
        if buf:
            yield "\n".join(buf)


def _jsonl(path: Path, lines: Iterator[tuple[int, str]], field: str) -> Iterator[str]:
    for lineno, obj in parse_json_lines(path, lines):
        value = obj.get(field) if isinstance(obj, dict) else None
        if not isinstance(value, str):
            raise FormatError(f"{path}:{lineno}: the record has no string field {field!r}; name the field that holds "
                              "the text.", fix={"text_field": "FIELD"})
        title = obj.get("title")
        yield f"{title} {value}".strip() if isinstance(title, str) and title else value


def _iter_file(path: Path, kind: str, encoding: str, errors: str, text_field: str) -> Iterator[str]:
    lines = iter_lines(path, encoding=encoding, errors=errors)
    if kind == "auto":
        head: list[tuple[int, str]] = []
        for item in lines:
            head.append(item)
            if item[1].strip():
                break
        if not head:
            return
        kind = _detect(path, head[-1][1])
        lines = itertools.chain(head, lines)
    if kind == "wikiextractor":
        yield from _wikiextractor(path, lines)
    elif kind == "jsonl":
        yield from _jsonl(path, lines, text_field)
    else:
        for _, line in lines:
            if line.strip():
                yield line


def iter_texts(source: str | os.PathLike[str], *, kind: str = "auto", encoding: str = "utf-8",
               errors: str = "strict", limit: int | None = None, text_field: str = "text") -> Iterator[str]:
    """Stream texts from a corpus file, a folder of corpus files, or a registry name (``enwiki``).

    Args:
        source: file (plain, ``.gz``, ``.jsonl``), folder (files read in sorted order) or dataset name.
        kind: ``auto`` (by extension / first line), ``lines`` (one text per non-blank line),
            ``wikiextractor`` (one text per ``<doc>``; the title line that repeats the ``title``
            attribute is dropped unless it is the page's only text), ``jsonl``
            (one text per record: ``title`` + ``text_field``).
        encoding: the files' text encoding (``--encoding`` on the command line).
        errors: decoding policy for bytes that are not valid in ``encoding`` ("strict" raises
            InputError naming the file, line and byte offset; "replace" reads them as U+FFFD).
        limit: stop after this many texts.
        text_field: the JSON field holding the text for ``jsonl``.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.txt"
        >>> _ = p.write_text("first text\\n\\nsecond text\\n")
        >>> list(iter_texts(p))
        ['first text', 'second text']
    """
    from embedstack.data._registry import resolve_dataset

    check_choice("iter_texts", "kind", kind, CORPUS_KINDS)
    check_errors(errors)
    check_encoding(encoding)
    check_int("iter_texts", "limit", limit, low=0, allow_none=True)
    path = resolve_dataset(source)
    files = [path] if path.is_file() else list(iter_files(path))
    if not files:
        raise DatasetError(f"{path} holds no corpus files; give a text file (one text per line) or a folder of them.")
    stream: Iterator[str] = itertools.chain.from_iterable(_iter_file(f, kind, encoding, errors, text_field) for f in files)
    if limit is not None:
        stream = itertools.islice(stream, limit)
    return stream
