"""Split a corpus into blocks of work for a cluster and read one block back, row by row (no Ray here).

The driver plans (:func:`plan_blocks`): it reads each file once, cutting it into byte ranges of about
``block_tokens`` tokens (4 bytes per token, the usual estimate for English) or ``max_rows`` rows, and
numbers every row. A worker reads only its byte range (:func:`read_block`). Input paths must therefore
be readable by every node (a shared or network file system), as for Ray Data's own readers.

Rows get the ids of the single-process path (:func:`embedstack.retrieval.read_corpus`): ``_id``/``id`` of
a JSON-lines record (else its line number − 1), a text corpus's non-blank lines numbered from 0 (across the
files of a folder), a Parquet file's ``_id``/``id`` column (else the row's ordinal). A row that cannot be read (bytes that do not
decode, a line that is not a JSON object) is returned with an ``error`` instead of failing the block,
so the caller can skip it or name it.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from embedstack.errors import ConfigError, DatasetError, InputError

__all__ = ["Block", "plan_blocks", "read_block", "input_files", "KINDS", "BYTES_PER_TOKEN"]

KINDS = ("lines", "jsonl", "parquet")
BYTES_PER_TOKEN = 4  # English text: about four bytes per word piece


@dataclass(frozen=True)
class Block:
    """One unit of reading work: rows ``first_row`` … ``first_row + rows - 1`` of the corpus."""

    path: str
    kind: str  # lines | jsonl | parquet
    start: int  # first byte (lines, jsonl) or row group (parquet)
    end: int  # byte after the last (lines, jsonl; -1: to the end of a compressed file) or -1
    first_row: int  # corpus-wide ordinal of the block's first row
    first_line: int  # 1-based line number of its first line (parquet: 0)
    rows: int
    ordinal_ids: bool = False  # ids are corpus ordinals (a folder, a .ndjson file), as the single-process reader gives

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return "jsonl"
    return "lines"


def input_files(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The files of ``source``: a file, a folder (corpus files in sorted order), a BEIR folder or dataset name
    (its ``corpus.jsonl``), or a list of those."""
    if isinstance(source, (list, tuple)):
        return [f for s in source for f in input_files(s)]
    from embedstack.data._corpus import iter_files

    path = Path(str(source)).expanduser()
    if not path.exists():
        from embedstack.data import resolve_dataset

        path = resolve_dataset(str(source))
    if path.is_dir():
        corpus = [path / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (path / n).is_file()]
        files = corpus[:1] or list(iter_files(path))
        if not files:
            raise DatasetError(f"{path} holds no corpus files; give a JSON-lines, Parquet or text file or a folder "
                               "of them.")
        return [f.resolve() for f in files]
    return [path.resolve()]


def plan_blocks(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, block_tokens: int = 32768,
                max_rows: int = 4096, encoding: str = "utf-8") -> tuple[list[Block], int]:
    """Blocks covering every row of ``source`` once, and the number of rows.

    A block ends after about ``block_tokens`` tokens of text or ``max_rows`` rows, whichever comes first,
    so every encoder call gets a similar amount of work whatever the text lengths. A gzip file is one
    block (it cannot be entered in the middle); a Parquet file gives one block per row group.
    """
    if block_tokens < 1 or max_rows < 1:
        raise ConfigError(f"block_tokens and max_rows must be >= 1; got {block_tokens} and {max_rows}.")
    from dataclasses import replace

    from embedstack.data._io import is_gzip

    blocks: list[Block] = []
    total = 0
    files = input_files(source)
    # the single-process reader takes `_id` only from one .jsonl file (or a BEIR folder); elsewhere ids are ordinals
    ordinal = len(files) > 1 or not files[0].name.lower().endswith((".jsonl", ".jsonl.gz", ".parquet"))
    for f in files:
        kind = _kind(f)
        if kind == "parquet":
            new = _plan_parquet(f, total, max_rows)
        elif is_gzip(f):
            new = _plan_gzip(f, kind, total, encoding)
        else:
            new = _plan_lines(f, kind, total, block_tokens * BYTES_PER_TOKEN, max_rows, encoding)
        if ordinal:
            new = [replace(b, ordinal_ids=True) for b in new]
        blocks.extend(new)
        total += sum(b.rows for b in new)
    if total == 0:
        raise DatasetError(f"the corpus {source} holds no documents.")
    return blocks, total


def _blank(raw: bytes, line_no: int, encoding: str) -> bool:
    """Whether a raw line is blank the way the single-process reader sees it (``str.strip()`` on the decoded
    line; a byte-order mark on line 1 dropped)."""
    if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if raw.isascii():
        return not raw.strip()
    return not raw.decode(encoding, "replace").removeprefix("\ufeff").strip()


def _plan_lines(path: Path, kind: str, base: int, max_bytes: int, max_rows: int, encoding: str) -> list[Block]:
    blocks: list[Block] = []
    start = offset = 0
    rows = line = 0
    first_line = 1
    first_row = base
    with open(path, "rb") as fh:
        for raw in fh:  # C-speed line splitting (on b"\n" only, as the single-process reader)
            line += 1
            offset += len(raw)
            if not _blank(raw, line, encoding):
                if not rows and not blocks and kind == "lines":
                    _refuse_wikiextractor(path, raw)
                rows += 1
            if rows and (rows >= max_rows or offset - start >= max_bytes):
                blocks.append(Block(str(path), kind, start, offset, first_row, first_line, rows))
                first_row += rows
                start, rows, first_line = offset, 0, line + 1
    if rows:
        blocks.append(Block(str(path), kind, start, offset, first_row, first_line, rows))
    return blocks


def _refuse_wikiextractor(path: Path, first: bytes) -> None:
    from embedstack.data._corpus import _DOC_OPEN

    if _DOC_OPEN.match(first.decode("utf-8", "replace").strip()):
        raise ConfigError(f"{path} is a WikiExtractor dump (<doc> elements), not one text per line; the cluster "
                          "path reads JSON-lines, Parquet or plain text: convert it first (one JSON record per <doc>).")


def _plan_gzip(path: Path, kind: str, base: int, encoding: str) -> list[Block]:
    """A gzip file is one block: it cannot be entered in the middle (decompress it first for parallel reading)."""
    import gzip
    import zlib

    from embedstack.data._io import open_binary

    rows = 0
    try:
        with open_binary(path) as raw:
            for line_no, line in enumerate(raw, start=1):
                if not _blank(line, line_no, encoding):
                    rows += 1
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}: the gzip data is damaged or truncated ({exc}); recompress or fetch the file "
                         "again.") from None
    return [Block(str(path), kind, 0, -1, base, 1, rows)] if rows else []


def _plan_parquet(path: Path, base: int, max_rows: int) -> list[Block]:
    """Slices of at most ``max_rows`` rows of each row group (``start``: the group, ``end``: the first row in it)."""
    from embedstack._extras import require

    pq = require("pyarrow.parquet", "scale", "reading Parquet corpora")
    try:
        meta = pq.ParquetFile(str(path)).metadata
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for a file that is not Parquet
        raise InputError(f"{path} is not a readable Parquet file ({exc}); give JSON-lines, Parquet or text.") from None
    blocks = []
    first = base
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        for off in range(0, n, max_rows):
            rows = min(max_rows, n - off)
            blocks.append(Block(str(path), "parquet", g, off, first, 0, rows))
            first += rows
    return blocks


def _doc_from_record(rec: dict[str, Any], line_no: int) -> tuple[str, str, str]:
    """(id, text, metadata JSON) of a BEIR-style record, as :func:`embedstack.retrieval.read_corpus` reads it."""
    doc_id = rec.pop("_id", rec.pop("id", None))
    if doc_id is None:
        doc_id = str(line_no - 1)
    text = (str(rec.pop("title", "") or "") + " " + str(rec.pop("text", "") or "")).strip()
    return str(doc_id), text, json.dumps(rec, ensure_ascii=False) if rec else ""


def read_block(block: Block | dict[str, Any], *, encoding: str = "utf-8", errors: str = "strict",
               ) -> dict[str, list[Any]]:
    """The rows of one block as columns ``row`` (ordinal), ``id``, ``text``, ``meta`` (JSON or ""), ``where``
    (FILE:LINE) and ``error`` ("" when the row was read)."""
    b = Block(**block) if isinstance(block, dict) else block
    cols: dict[str, list[Any]] = {"row": [], "id": [], "text": [], "meta": [], "where": [], "error": []}
    if b.kind == "parquet":
        _read_parquet(b, cols)
        return cols
    for line_no, raw in _raw_lines(b):
        if _blank(raw, line_no, encoding):
            continue
        where = f"{b.path}:{line_no}"
        row = b.first_row + len(cols["row"])
        err = ""
        doc_id, text, meta = str(row), "", ""
        try:
            line = raw.decode(encoding, errors)
        except UnicodeDecodeError as exc:
            err = f"bytes {exc.start}-{exc.end} are not valid {encoding} ({exc.reason}); fix the file or pass --errors replace"
        else:
            line = line.rstrip("\n").rstrip("\r")
            if b.kind == "lines":
                text = line
            else:
                try:
                    rec = json.loads(line.removeprefix("\ufeff"))
                except (ValueError, RecursionError) as exc:
                    err = f"not valid JSON ({str(exc)[:80]})"
                else:
                    if isinstance(rec, dict):
                        doc_id, text, meta = _doc_from_record(rec, line_no)
                        if b.ordinal_ids:
                            doc_id = str(row)
                    else:
                        err = f"expected a JSON object per line, got {type(rec).__name__}"
        for key, value in (("row", row), ("id", doc_id), ("text", text), ("meta", meta), ("where", where),
                           ("error", err)):
            cols[key].append(value)
    if len(cols["row"]) != b.rows:
        raise InputError(f"{b.path} changed while it was being encoded (block at line {b.first_line}: planned "
                         f"{b.rows} rows, read {len(cols['row'])}); encode a file that is not being written to.")
    return cols


def _raw_lines(b: Block) -> Iterator[tuple[int, bytes]]:
    if b.end < 0:
        from embedstack.data._io import open_binary

        with open_binary(Path(b.path)) as raw:
            yield from enumerate(raw, start=1)
        return
    with open(b.path, "rb") as fh:
        fh.seek(b.start)
        data = fh.read(b.end - b.start)
    yield from enumerate(io.BytesIO(data), start=b.first_line)  # split on b"\n" only, as the planner


def _read_parquet(b: Block, cols: dict[str, list[Any]]) -> None:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(b.path).read_row_group(b.start).slice(b.end, b.rows)
    names = table.column_names
    id_col = next((c for c in ("_id", "id") if c in names), None)
    if "text" not in names:
        raise InputError(f"{b.path} has no 'text' column (columns: {', '.join(names[:10])}); the corpus text must be "
                         "in a column named 'text' (and optionally 'title', '_id' or 'id').")
    data = table.to_pydict()
    extra = [c for c in names if c not in ("_id", "id", "title", "text")]
    for j in range(table.num_rows):
        row = b.first_row + j
        text = data["text"][j]
        title = data["title"][j] if "title" in data else None
        err = "" if isinstance(text, str) or text is None else f"'text' is a {type(text).__name__}, not a string"
        full = (str(title or "") + " " + str(text or "")).strip() if not err else ""
        meta = {c: data[c][j] for c in extra}
        cols["row"].append(row)
        cols["id"].append(str(data[id_col][j]) if id_col and not b.ordinal_ids else str(row))
        cols["text"].append(full)
        cols["meta"].append(json.dumps(meta, ensure_ascii=False, default=str) if meta else "")
        cols["where"].append(f"{b.path}:row group {b.start}, row {b.end + j}")
        cols["error"].append(err)
