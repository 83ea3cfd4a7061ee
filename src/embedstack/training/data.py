"""Training data: pair, triplet and scored-pair datasets, and a batch sampler without duplicate texts.

Files are JSON Lines, CSV or TSV with named columns, read as a stream through the one text reader
(:func:`embedstack.data._io.iter_lines`). Every row becomes a dict with the canonical columns, in
this order: the texts ``anchor``, ``positive``, ``negative_1`` .. ``negative_k``, then ``score``
(a finite float) and/or ``label`` (an int >= 0). Common names are accepted for them
(:data:`ALIASES`: ``query``/``sentence1`` → anchor, ``document``/``sentence2`` → positive, ...); a
JSONL ``negatives`` column holding a list of texts becomes ``negative_1..k``. A bad row stops the
load with an :class:`~embedstack.errors.InputError` naming ``FILE:LINE`` and the problem.

Example:
    >>> data = TrainingData.from_records([
    ...     {"query": "what is a cat", "document": "a cat is a small feline", "score": 0.9},
    ...     {"query": "what is a dog", "document": "a dog is a canine", "score": 0.8}])
    >>> data
    TrainingData(2 rows, columns=('anchor', 'positive', 'score'), source='records')
    >>> data[1]
    {'anchor': 'what is a dog', 'positive': 'a dog is a canine', 'score': 0.8}
    >>> [sorted(b) for b in NoDuplicatesBatchSampler(data, batch_size=2)]
    [[0, 1]]
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import math
import operator
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._validation import check_choice, check_float, check_int
from embedstack.data._io import check_encoding, check_errors, iter_json_lines, iter_lines, open_binary
from embedstack.errors import ConfigError, EmbedstackError, InputError
from embedstack.io.atomic import AtomicFile, check_output

__all__ = [
    "ALIASES",
    "FORMATS",
    "LABEL_COLUMNS",
    "TrainingData",
    "load_training_data",
    "iter_training_rows",
    "NoDuplicatesBatchSampler",
]

FORMATS = ("jsonl", "csv", "tsv")
LABEL_COLUMNS = ("score", "label")

# Canonical column ← names accepted for it when reading (compared case-insensitively).
ALIASES: dict[str, tuple[str, ...]] = {
    "anchor": ("sentence1", "query", "question", "text1", "sentence_a"),
    "positive": ("sentence2", "document", "passage", "answer", "text2", "sentence_b", "pos"),
    "negative_1": ("negative",),
    "score": ("similarity", "relevance"),
    "label": ("labels", "gold_label"),
}
_BY_ALIAS = {alias: canon for canon, names in ALIASES.items() for alias in names}
_NEGATIVE = re.compile(r"negative_([1-9][0-9]*)")
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}
_KNOWN = ("anchor (or " + ", ".join(ALIASES["anchor"]) + "), positive (or " + ", ".join(ALIASES["positive"])
          + "), negative or negative_1..k or negatives (a list), score (or similarity, relevance), "
          "label (or labels, gold_label)")
_TARGETS = "anchor, positive, negative, negative_1 .. negative_k, negatives (a list), score, label"
_MEGA = 50  # group_by_length: rows sorted by length within mega-batches of 50 x batch_size


def _target(name: object) -> str | None:
    """The canonical column a file column name stands for (``negatives`` for a list), or None."""
    if not isinstance(name, str):
        return None
    key = name.strip().casefold()
    if key in ("anchor", "positive", "negatives", "score", "label") or _NEGATIVE.fullmatch(key):
        return key
    return _BY_ALIAS.get(key)


def _order(target: str) -> tuple[int, int]:
    """Sort key putting columns in canonical order: anchor, positive, negatives, score, label."""
    if target.startswith("negative_"):
        return 2, int(target[9:])
    return {"anchor": (0, 0), "positive": (1, 0), "negatives": (2, 0), "score": (3, 0), "label": (4, 0)}[target]


def _show(value: Any) -> str:
    text = repr(value)
    return f"{text[:60]}... ({type(value).__name__})" if len(text) > 64 else f"{text} ({type(value).__name__})"


# ---------------------------------------------------------------- values


def _text(value: Any, col: str, where: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where}: column {col} must be a text (string), got {_show(value)}.")
    if not value.strip():
        raise InputError(f"{where}: column {col} is an empty text; fill it in or delete the row.")
    return value


def _score(value: Any, col: str, where: str) -> float:
    try:
        if isinstance(value, bool | np.bool_):
            raise TypeError
        out = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: column {col} must be a number (a score), got {_show(value)}.") from None
    if not math.isfinite(out):
        raise InputError(f"{where}: column {col} must be a finite number, got {value!r}; fix or delete the row.")
    return out


def _label(value: Any, col: str, where: str, label_map: Mapping[str, int] | None) -> int:
    raw = value
    if isinstance(value, str):
        if label_map is not None and (value in label_map or value.strip() in label_map):
            return label_map[value if value in label_map else value.strip()]
        try:
            value = float(value)
        except ValueError:
            hint = (f"it is not one of label_map's names {sorted(label_map)}" if label_map is not None else
                    "map class names to ids with label_map={'entailment': 0, 'neutral': 1, 'contradiction': 2}")
            raise InputError(f"{where}: column {col} must be an integer class id, got {raw!r}; {hint}.") from None
    try:
        out = int(value) if isinstance(value, bool | np.bool_) else operator.index(value)
    except TypeError:
        if not isinstance(value, float | np.floating) or not float(value).is_integer():
            raise InputError(f"{where}: column {col} must be an integer class id, got {_show(raw)}.") from None
        out = int(value)
    if out < 0:
        raise InputError(f"{where}: column {col} must be a class id >= 0, got {raw!r}; drop rows without a gold "
                         "label (e.g. -1 or '-') or map them with label_map.")
    return out


# ---------------------------------------------------------------- column plans


class _Plan:
    """How the fields of a row (dict keys or CSV positions) become one canonical row."""

    def __init__(self, fields: Sequence[tuple[Any, str, str]], where: str, label_map: Mapping[str, int] | None,
                 error: type[EmbedstackError] = InputError, fix: str = "") -> None:
        """``fields``: (key in the row, canonical target, name shown in messages)."""
        seen: dict[str, str] = {}
        for _, target, shown in fields:
            if target in seen:
                raise error(f"{where}: columns {seen[target]} and {shown} both mean {target!r}; keep one{fix}.")
            seen[target] = shown
        fields = sorted(fields, key=lambda f: _order(f[1]))
        negatives = [int(t[9:]) for _, t, _ in fields if t.startswith("negative_")]
        if "anchor" not in seen:
            raise error(f"{where}: no anchor column (the first text; also read from "
                        f"{', '.join(ALIASES['anchor'])}){fix}.")
        if "negatives" in seen and negatives:
            raise error(f"{where}: both a 'negatives' list and negative_N columns; keep one kind{fix}.")
        if negatives and negatives != list(range(1, len(negatives) + 1)):
            raise error(f"{where}: negative columns must be numbered negative_1 .. negative_{len(negatives)}, "
                        f"got {['negative_' + str(i) for i in negatives]}{fix}.")
        if (negatives or "negatives" in seen) and "positive" not in seen:
            raise error(f"{where}: negatives need a positive column (a triplet is anchor, positive, negative){fix}.")
        self.texts = [(k, t, s) for k, t, s in fields if t not in ("negatives", "score", "label")]
        self.neg_list = next(((k, s) for k, t, s in fields if t == "negatives"), None)
        self.score = next(((k, s) for k, t, s in fields if t == "score"), None)
        self.label = next(((k, s) for k, t, s in fields if t == "label"), None)
        self.label_map = label_map
        self.k: int | None = None  # negatives per row, fixed by the first row that has a list
        self.first = self.first_negs = where

    def _get(self, rec: Any, key: Any, shown: str, where: str) -> Any:
        try:
            value = rec[key]
        except (KeyError, IndexError):
            raise InputError(f"{where}: column {shown} is missing; every row needs every column.") from None
        if value is None:
            raise InputError(f"{where}: column {shown} is null; fill it in or delete the row.")
        return value

    def negatives(self, value: Any, shown: str, where: str) -> list[str]:
        """The texts of a ``negatives`` list (a JSON list in a CSV/TSV cell); all rows need as many."""
        negs = value
        if isinstance(negs, str):
            try:
                negs = json.loads(negs)
            except ValueError:
                negs = None
        if isinstance(negs, np.ndarray):
            negs = negs.tolist()
        if not isinstance(negs, list | tuple) or not negs:
            raise InputError(f"{where}: column {shown} must hold a non-empty list of texts (e.g. [\"a\", \"b\"]), "
                             f"got {_show(value)}.")
        if self.k is None:
            self.k, self.first_negs = len(negs), where
        elif len(negs) != self.k:
            raise InputError(f"{where}: {len(negs)} negatives, but {self.first_negs} has {self.k}; every row needs "
                             "the same number (trim or pad the lists).")
        return [_text(text, f"{shown}[{j}]", where) for j, text in enumerate(negs)]

    def row(self, rec: Any, where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, target, shown in self.texts:
            out[target] = _text(self._get(rec, key, shown, where), shown, where)
        if self.neg_list is not None:
            key, shown = self.neg_list
            for j, text in enumerate(self.negatives(self._get(rec, key, shown, where), shown, where), 1):
                out[f"negative_{j}"] = text
        if self.score is not None:
            out["score"] = _score(self._get(rec, self.score[0], self.score[1], where), self.score[1], where)
        if self.label is not None:
            key, shown = self.label
            out["label"] = _label(self._get(rec, key, shown, where), shown, where, self.label_map)
        return out


def _shown(name: object, target: str) -> str:
    return repr(name) if name == target else f"{name!r} ({target})"


def _check_columns(columns: Mapping[str, str] | None) -> list[tuple[str, str]] | None:
    """Validate ``columns=`` (file column → canonical name); return (file column, target) pairs."""
    if columns is None:
        return None
    if not isinstance(columns, Mapping) or not columns:
        raise ConfigError(f"columns= must map file column names to canonical names, e.g. "
                          f"{{'q': 'anchor', 'd': 'positive'}}; got {columns!r}.")
    pairs = []
    for name, target in columns.items():
        t = target.strip().casefold() if isinstance(target, str) else None
        if t == "negative":
            t = "negative_1"
        if not isinstance(name, str) or t is None or (t not in ("anchor", "positive", "negatives", "score", "label")
                                                      and not _NEGATIVE.fullmatch(t)):
            raise ConfigError(f"columns= maps {name!r} to {target!r}; the canonical names are {_TARGETS}.")
        pairs.append((name, t))
    _Plan([(k, t, _shown(k, t)) for k, t in pairs], "columns=", None, ConfigError)  # one anchor, no clash ...
    return pairs


def _check_label_map(label_map: Mapping[str, int] | None) -> dict[str, int] | None:
    if label_map is None:
        return None
    if not isinstance(label_map, Mapping) or not label_map or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in label_map.items()):
        raise ConfigError(f"label_map= must map label names to class ids >= 0, e.g. {{'entailment': 0, "
                          f"'neutral': 1, 'contradiction': 2}}; got {label_map!r}.")
    return dict(label_map)


def _header_plan(names: Sequence[Any], keys: Sequence[Any], where: str, label_map: Mapping[str, int] | None,
                 table: bool) -> _Plan:
    """The plan for rows whose columns are named ``names`` (no ``columns=``): aliases apply, unknowns fail."""
    unknown = [n for n in names if _target(n) is None]
    if unknown:
        head = "; the first line must be a header naming the columns" if table else ""
        raise InputError(f"{where}: unknown column(s) {unknown}{head}. Known names: {_KNOWN}. Map other names "
                         "with columns= (--columns on the command line), e.g. columns={'q': 'anchor', "
                         "'d': 'positive'}, which also selects only those columns.")
    fields = [(k, _target(n) or "", _shown(n, _target(n) or "")) for k, n in zip(keys, names, strict=True)]
    return _Plan(fields, where, label_map, fix=", or choose with columns=")


# ---------------------------------------------------------------- readers


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        return check_choice("load_training_data", "format", fmt, FORMATS)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    found = _SUFFIXES.get(suffixes[-1]) if suffixes else None
    if found is None:
        raise ConfigError(f"cannot tell the format of {path} from its name (known: .jsonl, .json, .csv, .tsv, "
                          "optionally .gz); pass format='jsonl', 'csv' or 'tsv' (--format).")
    return found


def _mapping_rows(items: Iterable[tuple[int, str, Any]], columns: list[tuple[str, str]] | None,
                  label_map: dict[str, int] | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Canonical rows from (number, where, mapping) items (JSONL objects or Python records)."""
    plan: _Plan | None = None
    keys: frozenset[Any] = frozenset()
    for n, where, obj in items:
        if not isinstance(obj, Mapping):
            raise InputError(f"{where}: expected a JSON object / mapping of columns such as {{\"anchor\": ..., "
                             f"\"positive\": ...}}, got {_show(obj)}.")
        if plan is None:
            if columns is not None:
                plan = _Plan([(k, t, _shown(k, t)) for k, t in columns], where, label_map)
            else:
                keys = frozenset(obj)
                plan = _header_plan(list(obj), list(obj), where, label_map, table=False)
        elif columns is None and obj.keys() != keys:
            missing = sorted(map(str, keys - obj.keys()))
            if missing:
                raise InputError(f"{where}: column(s) {missing} missing; every row needs the columns of the first "
                                 f"({plan.first}).")
            raise InputError(f"{where}: column(s) {sorted(map(str, obj.keys() - keys))} that the first row "
                             f"({plan.first}) has not; every row needs the same columns.")
        yield n, plan.row(obj, where)


def _jsonl_objects(path: Path, encoding: str, errors: str) -> Iterator[tuple[int, str, Any]]:
    hint = "each line must be one JSON object (JSON Lines, not one JSON array)"
    for lineno, obj in iter_json_lines(path, encoding=encoding, errors=errors, error=InputError, hint=hint):
        yield lineno, f"{path}:{lineno}", obj


def _table_records(path: Path, fmt: str, encoding: str, errors: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of each non-blank CSV/TSV record (CSV quoted fields may span lines)."""
    lines = iter_lines(path, encoding=encoding, errors=errors)
    if fmt == "tsv":  # the IR convention (BEIR, MS MARCO, STS-B): no quoting, one row per line
        for lineno, line in lines:
            if line.strip():
                yield lineno, (line.removeprefix("\ufeff") if lineno == 1 else line).split("\t")
        return
    at = [0]

    def feed() -> Iterator[str]:
        for lineno, line in lines:
            at[0] = lineno
            yield (line.removeprefix("\ufeff") if lineno == 1 else line) + "\n"

    reader = csv.reader(feed(), strict=True)
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            why = str(exc).split(" - ")[0]
            hint = "; a quote opened on this line never closes" if "end of data" in why else ""
            raise InputError(f"{path}:{start}: not valid CSV ({why}{hint}); fix or delete the row.") from None
        if fields and (len(fields) > 1 or fields[0].strip()):
            yield start, fields
        start = at[0] + 1


def _table_rows(path: Path, fmt: str, columns: list[tuple[str, str]] | None, label_map: dict[str, int] | None,
                encoding: str, errors: str) -> Iterator[tuple[int, dict[str, Any]]]:
    plan: _Plan | None = None
    width = 0
    for lineno, fields in _table_records(path, fmt, encoding, errors):
        where = f"{path}:{lineno}"
        if plan is None:
            width = len(fields)
            if columns is None:
                plan = _header_plan(fields, range(width), where, label_map, table=True)
                continue
            picked = []
            for name, target in columns:
                at = [i for i, f in enumerate(fields) if f.strip() == name]
                if len(at) != 1:
                    what = "no column" if not at else f"{len(at)} columns"
                    raise InputError(f"{where}: the header has {what} named {name!r} (from columns=); it has "
                                     f"{fields}.")
                picked.append((at[0], target, _shown(name, target)))
            plan = _Plan(picked, where, label_map)
            continue
        if len(fields) != width:
            why = ("a missing value?" if len(fields) < width else
                   "a tab inside a text?" if fmt == "tsv" else "an unquoted comma in a text?")
            raise InputError(f"{where}: {len(fields)} fields, but the header ({plan.first}) has {width} ({why}); "
                             "fix or delete the row.")
        yield lineno, plan.row(fields, where)


def iter_training_rows(path: str | Path, *, format: str | None = None, columns: Mapping[str, str] | None = None,
                       label_map: Mapping[str, int] | None = None, encoding: str = "utf-8",
                       errors: str = "strict", limit: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream ``(line_number, row)`` from a JSONL/CSV/TSV training file; memory stays flat.

    ``row`` is a dict with the canonical columns in canonical order (see the module docstring). The
    options are those of :func:`load_training_data`; they are checked at once, the rows are read
    lazily.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "pairs.tsv"
        >>> _ = p.write_text("q\\td\\n hi \\tthere\\n")
        >>> list(iter_training_rows(p, columns={"q": "anchor", "d": "positive"}))
        [(2, {'anchor': ' hi ', 'positive': 'there'})]
    """
    p = Path(path)
    fmt = _format_of(p, format)
    pairs = _check_columns(columns)
    lmap = _check_label_map(label_map)
    check_errors(errors)
    check_encoding(encoding)
    limit = check_int("load_training_data", "limit", limit, low=1, allow_none=True)
    open_binary(p).close()  # a missing file fails here, not on the first next()
    if fmt == "jsonl":
        rows = _mapping_rows(_jsonl_objects(p, encoding, errors), pairs, lmap)
    else:
        rows = _table_rows(p, fmt, pairs, lmap, encoding, errors)
    return rows if limit is None else _limited(rows, limit)


def _limited(rows: Iterator[tuple[int, dict[str, Any]]], limit: int) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        yield from itertools.islice(rows, limit)
    finally:
        getattr(rows, "close", lambda: None)()  # close the file now, not when the reader is collected


def load_training_data(path: str | Path, *, format: str | None = None, columns: Mapping[str, str] | None = None,
                       label_map: Mapping[str, int] | None = None, encoding: str = "utf-8",
                       errors: str = "strict", limit: int | None = None) -> TrainingData:
    """Load a pair / triplet / scored-pair file (JSONL, CSV or TSV, optionally gzipped) into memory.

    Args:
        path: the file. JSONL: one object per line; CSV: a header line then rows (RFC 4180 quoting,
            quoted fields may span lines); TSV: a header line then rows split on tabs, no quoting.
        format: ``"jsonl"``, ``"csv"`` or ``"tsv"``; by default from the suffix (``.jsonl``/``.json``,
            ``.csv``, ``.tsv``, each optionally ``.gz``).
        columns: file column → canonical name (``{"q": "anchor", "d": "positive"}``); only these
            columns are read. Without it every column must be a canonical name or an alias.
        label_map: label name → class id (``{"entailment": 0, ...}``); without it labels must be ints.
        encoding: the file's text encoding; errors: ``"strict"`` or ``"replace"`` for undecodable bytes.
        limit: read at most this many rows.

    Raises:
        InputError: a bad row (``FILE:LINE`` and the problem), an unknown column, an empty file.
        ConfigError: a bad option. DatasetError: the file does not exist.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "sts.csv"
        >>> _ = p.write_text('sentence1,sentence2,score\\n"A man, walking",A man walks,4.5\\n')
        >>> load_training_data(p)[0]
        {'anchor': 'A man, walking', 'positive': 'A man walks', 'score': 4.5}
    """
    rows = iter_training_rows(path, format=format, columns=columns, label_map=label_map, encoding=encoding,
                              errors=errors, limit=limit)
    fmt = _format_of(Path(path), format)
    what = ("JSON Lines, one object per line such as {\"anchor\": \"...\", \"positive\": \"...\"}" if fmt == "jsonl"
            else f"a header line naming the columns (e.g. anchor{',' if fmt == 'csv' else '<TAB>'}positive) "
                 "followed by one row per line")
    return TrainingData._collect((row for _, row in rows), str(path), what)


# ---------------------------------------------------------------- the dataset


class TrainingData:
    """An in-memory columnar training set: equal-length columns in canonical order.

    Build one with :func:`load_training_data`, :meth:`from_records` or :meth:`from_columns`. Every row
    has every column; there is at least one row.

    Attributes:
        columns: all column names: text columns (``anchor``, ``positive``, ``negative_1..k``), then
            ``score`` / ``label``.
        text_columns, label_columns: the two parts of ``columns``.
        source: the file it came from, or ``"records"`` / ``"columns"``.

    Example:
        >>> d = TrainingData.from_columns({"anchor": ["a", "b"], "positive": ["x", "y"], "label": [1, 0]})
        >>> d.columns, len(d), d.row_texts(1)
        (('anchor', 'positive', 'label'), 2, ('b', 'y'))
    """

    def __init__(self, columns: Mapping[str, Sequence[Any]], *, source: str = "columns") -> None:
        if not isinstance(columns, Mapping) or not columns:
            raise InputError(f"{source}: expected a mapping of column name → values, e.g. "
                             f"{{'anchor': [...], 'positive': [...]}}; got {_show(columns)}.")
        fields = []
        for name, values in columns.items():
            if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
                raise InputError(f"{source}: column {name!r} must be a sequence of values (one per row), got "
                                 f"{_show(values)}.")
            target = _target(name)
            if target is None:
                raise InputError(f"{source}: unknown column {name!r}. Known names: {_KNOWN}.")
            fields.append((name, target, _shown(name, target)))
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise InputError(f"{source}: columns of different lengths "
                             f"{ {str(k): len(v) for k, v in columns.items()} }; every row needs every column.")
        n = lengths.pop()
        if n == 0:
            raise InputError(f"{source} holds no training rows; expected at least one value per column.")
        plan = _Plan(fields, source, None)
        data: dict[str, list[Any]] = {}
        for key, target, shown in plan.texts:
            data[target] = list(columns[key])
            if not all(isinstance(v, str) and v.strip() for v in data[target]):
                for i, v in enumerate(data[target]):
                    _text(v, shown, f"{source}[{i}]")
        if plan.neg_list is not None:
            key, shown = plan.neg_list
            rows = [plan.negatives(v, shown, f"{source}[{i}]") for i, v in enumerate(columns[key])]
            for j in range(plan.k or 0):
                data[f"negative_{j + 1}"] = [r[j] for r in rows]
        if plan.score is not None:
            key, shown = plan.score
            data["score"] = [_score(v, shown, f"{source}[{i}]") for i, v in enumerate(columns[key])]
        if plan.label is not None:
            key, shown = plan.label
            data["label"] = [_label(v, shown, f"{source}[{i}]", None) for i, v in enumerate(columns[key])]
        self._set(data, source)

    def _set(self, data: dict[str, list[Any]], source: str) -> None:
        names = sorted(data, key=_order)
        self._data = {name: data[name] for name in names}
        self.columns: tuple[str, ...] = tuple(names)
        self.text_columns: tuple[str, ...] = tuple(c for c in names if c not in LABEL_COLUMNS)
        self.label_columns: tuple[str, ...] = tuple(c for c in names if c in LABEL_COLUMNS)
        self.source = source
        self._n = len(data[names[0]])

    @classmethod
    def _trusted(cls, data: dict[str, list[Any]], source: str) -> TrainingData:
        obj = cls.__new__(cls)
        obj._set(data, source)
        return obj

    @classmethod
    def _collect(cls, rows: Iterable[dict[str, Any]], source: str, what: str) -> TrainingData:
        data: dict[str, list[Any]] | None = None
        lists: list[list[Any]] = []
        for row in rows:
            if data is None:
                data = {name: [] for name in row}
                lists = list(data.values())
            for values, value in zip(lists, row.values(), strict=True):
                values.append(value)
        if data is None:
            raise InputError(f"{source} holds no training rows; expected {what}.")
        return cls._trusted(data, source)

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], *, source: str = "records",
                     columns: Mapping[str, str] | None = None,
                     label_map: Mapping[str, int] | None = None) -> TrainingData:
        """Rows from mappings (``{"query": ..., "document": ...}``), with the file readers' rules.

        Errors name the row as ``source[i]``. ``columns`` and ``label_map`` are as in
        :func:`load_training_data`.
        """
        items = ((i, f"{source}[{i}]", rec) for i, rec in enumerate(records))
        rows = _mapping_rows(items, _check_columns(columns), _check_label_map(label_map))
        return cls._collect((row for _, row in rows), source,
                            "at least one mapping such as {'anchor': ..., 'positive': ...}")

    @classmethod
    def from_columns(cls, mapping: Mapping[str, Sequence[Any]], *, source: str = "columns") -> TrainingData:
        """Columns given as name → values (canonical names or aliases; ``negatives``: one list per row)."""
        return cls(mapping, source=source)

    def __len__(self) -> int:
        return self._n

    def _index(self, i: Any) -> int:
        j = operator.index(i)
        if j < 0:
            j += self._n
        if not 0 <= j < self._n:
            raise IndexError(f"row {i} is out of range for {self._n} rows.")
        return j

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = self._index(i)
        return {name: col[j] for name, col in self._data.items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for j in range(self._n):
            yield {name: col[j] for name, col in self._data.items()}

    @property
    def num_negatives(self) -> int:
        """How many ``negative_*`` columns each row has."""
        return sum(c.startswith("negative_") for c in self.columns)

    def column(self, name: str) -> list[Any]:
        """A copy of one column's values."""
        if name not in self._data:
            raise ConfigError(f"{self.source} has no column {name!r}; its columns are {list(self.columns)}.")
        return list(self._data[name])

    def row_texts(self, i: int) -> tuple[str, ...]:
        """All text values of row ``i`` (anchor, positive, negatives)."""
        j = self._index(i)
        return tuple(self._data[c][j] for c in self.text_columns)

    def select(self, indices: Sequence[int] | np.ndarray) -> TrainingData:
        """The rows at ``indices`` (in that order; repeats allowed) as a new dataset."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise ConfigError(f"select() takes a 1-D sequence of row numbers; got {_show(indices)}.")
        if idx.size == 0:
            raise InputError(f"select() of no rows from {self.source}: a dataset needs at least one row.")
        if idx.min() < 0 or idx.max() >= self._n:
            bad = int(idx[(idx < 0) | (idx >= self._n)][0])
            raise IndexError(f"row {bad} is out of range for {self._n} rows.")
        at = idx.tolist()
        return TrainingData._trusted({name: [col[j] for j in at] for name, col in self._data.items()}, self.source)

    def split(self, fraction: float, *, seed: int, by: str | None = None) -> tuple[TrainingData, TrainingData]:
        """Split into ``(rest, held_out)``; ``held_out`` has ``round(fraction * len)`` random rows.

        Deterministic given ``seed``; each part keeps the original row order. With ``by="anchor"``
        (any text column) rows sharing that text go to the same part (no query in both), so the
        held-out part holds whole groups and its size is only close to the fraction.

        Example:
            >>> d = TrainingData.from_columns({"anchor": list("abcdefghij"), "positive": list("ABCDEFGHIJ")})
            >>> train, dev = d.split(0.2, seed=0)
            >>> len(train), len(dev)
            (8, 2)
        """
        fraction = check_float("split", "fraction", fraction, low=0.0, high=1.0, low_open=True)
        if fraction == 1.0:
            raise ConfigError("The 'fraction' parameter of split must be a float in (0, 1): the held-out share.")
        seed = check_int("split", "seed", seed, low=0)
        want = round(fraction * self._n)
        if not 0 < want < self._n:
            raise InputError(f"{self.source}: {self._n} rows cannot be split {fraction:g} / {1 - fraction:g} with "
                             "both parts non-empty; choose another fraction or use more rows.")
        rng = np.random.default_rng(seed)
        if by is None:
            held = np.zeros(self._n, dtype=bool)
            held[rng.permutation(self._n)[:want]] = True
        else:
            check_choice("split", "by", by, self.text_columns)
            groups: dict[str, int] = {}
            gid = np.fromiter(map(groups.setdefault, self._data[by], range(self._n)), np.int64, self._n)
            _, gid = np.unique(gid, return_inverse=True)
            sizes = np.bincount(gid)
            order = rng.permutation(len(sizes))
            take = order[: int(np.searchsorted(np.cumsum(sizes[order]), want)) + 1]
            held = np.isin(gid, take)
            if held.all():
                raise InputError(f"{self.source}: every row shares one {by!r} text; it cannot be split by {by!r}.")
        return self.select(np.flatnonzero(~held)), self.select(np.flatnonzero(held))

    def to_jsonl(self, path: str | Path, *, force: bool = False) -> Path:
        """Write one JSON object per row (gzipped for a ``.gz`` name), atomically; return the path.

        :func:`load_training_data` reads it back unchanged.
        """
        check_output(path, force=force, file=True, header=(b"{", b"\x1f\x8b"))  # never over a CSV or a text
        with AtomicFile(path, force=force) as f, open(f.tmp, "wb") as raw:
            out: Any = raw
            if str(path).endswith(".gz"):
                out = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
            with io.TextIOWrapper(out, encoding="utf-8", newline="\n") as text:
                for row in self:
                    text.write(json.dumps(row, ensure_ascii=False) + "\n")
        return f.path

    def __repr__(self) -> str:
        return f"TrainingData({self._n:,} rows, columns={self.columns}, source={self.source!r})"


# ---------------------------------------------------------------- the batch sampler


def _shared_texts(data: TrainingData) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Rows holding a text that another row holds too, and those texts' ids (0..S-1), row by row.

    Returns ``(is_dup, ptr, ids, S)``: row ``r``'s shared text ids are ``ids[ptr[r]:ptr[r + 1]]``.
    Texts are grouped by Python's string hash (one argsort over all cells); neighbours within a group of
    two or more are then compared as strings, so equality is exact: on a hash collision
    the candidates are interned by a dict keyed by the string instead. A row may repeat its own text
    (ids are deduplicated per row); a text is shared when more than one row holds it.
    """
    n, cols = len(data), data.text_columns
    c = len(cols)
    texts: list[str] = [t for name in cols for t in data._data[name]]  # cell j * n + r: row r, column j
    hashes = np.fromiter(map(hash, texts), np.int64, len(texts))
    order = np.argsort(hashes)
    head = np.ones(len(order), dtype=bool)
    head[1:] = hashes[order[1:]] != hashes[order[:-1]]
    group = np.cumsum(head) - 1  # hash group of each cell, in sorted order
    many = np.bincount(group)[group] > 1
    cells, group = order[many], group[many]  # cells whose hash occurs more than once, group by group
    cell_ids = np.full(len(texts), -1, dtype=np.int64)
    if len(cells):  # two or more: itemgetter returns a tuple
        got = operator.itemgetter(*cells.tolist())(texts)
        differ = np.fromiter(map(operator.ne, got[1:], got[:-1]), bool, len(got) - 1)
        if not (differ & (group[1:] == group[:-1])).any():  # neighbours in a hash group are equal strings
            cell_ids[cells] = group
        else:  # a hash collision: intern the candidates exactly
            seen: dict[str, int] = {}
            cell_ids[cells] = np.fromiter(map(seen.setdefault, got, itertools.count()), np.int64, len(cells))
    del texts
    grid = cell_ids.reshape(c, n).T
    rows = np.flatnonzero((grid >= 0).any(axis=1))
    ids = grid[rows]
    ids = np.where(ids >= 0, ids, -1 - np.arange(ids.size, dtype=np.int64).reshape(ids.shape))  # never shared
    ids.sort(axis=1)
    first = np.ones(ids.shape, dtype=bool)
    first[:, 1:] = ids[:, 1:] != ids[:, :-1]
    first &= ids >= 0
    is_shared = np.bincount(ids[first], minlength=1) > 1  # held by more than one row
    shared = first & is_shared[np.maximum(ids, 0)]
    per_row = np.zeros(n, dtype=np.int64)
    per_row[rows] = shared.sum(axis=1)
    ptr = np.concatenate([[0], np.cumsum(per_row)])
    compact = np.cumsum(is_shared) - 1  # shared text ids renumbered 0..S-1
    return per_row > 0, ptr, compact[ids[shared]], int(is_shared.sum())  # row-major: row by row, as ptr


def _pack(order: np.ndarray, is_dup: np.ndarray, ptr: np.ndarray, ids: np.ndarray, n_shared: int,
          size: int) -> list[list[int]]:
    """Greedy packing of rows (in ``order``) into batches of ``size`` with no shared text twice in a batch.

    A row goes to the first non-full batch ``b >= max(last[t] + 1 for its shared texts t)``, where
    ``last[t]`` is the batch that last took ``t``; placements of a text therefore go to increasing
    batches, so no batch after ``last[t]`` holds ``t``. Non-full batches are found by a union-find
    over batch slots (a full batch points to the next one; path compression), and runs of rows
    without shared texts fill the first open batch in bulk. Cost: O(n + total shared texts) amortised.
    """
    order_l, ptr_l, ids_l = order.tolist(), ptr.tolist(), ids.tolist()
    n = len(order_l)
    stops = np.flatnonzero(is_dup[order]).tolist() + [n]
    batches: list[list[int]] = []
    parent = [0]  # parent[b] == b: batch b is open; parent[len(batches)] is the slot of the next new batch
    last = [-1] * n_shared

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    head = start = 0
    for stop in stops:
        while start < stop:  # rows that clash with nothing: fill the first open batch
            if head == len(batches):
                batches.append([])
                parent.append(head + 1)
            batch = batches[head]
            take = min(size - len(batch), stop - start)
            batch.extend(order_l[start:start + take])
            start += take
            if len(batch) == size:
                parent[head] = head + 1
                head = find(head + 1)
        if stop == n:
            break
        row = order_l[stop]
        texts = ids_l[ptr_l[row]:ptr_l[row + 1]]
        lo = head
        for t in texts:
            if last[t] >= lo:
                lo = last[t] + 1
        b = lo if lo == head else find(lo)
        if b == len(batches):
            batches.append([])
            parent.append(b + 1)
        batch = batches[b]
        batch.append(row)
        if len(batch) == size:
            parent[b] = b + 1
            if b == head:
                head = find(b + 1)
        for t in texts:
            last[t] = b
        start = stop + 1
    return batches


class NoDuplicatesBatchSampler:
    """Batches of row indices in which no text appears twice (in-batch negatives are true negatives).

    Each epoch ``e`` shuffles the rows with ``np.random.default_rng([seed, e])`` and packs them in
    that order into the first batch that is not full and comes after every batch already holding one
    of the row's texts::

        batch(r) = min{ b >= max_{t in texts(r)} (last[t] + 1) : |batch b| < batch_size }

    (texts compared by exact string equality across all text columns: anchors, positives and
    negatives alike). A row that would clash is thus deferred to a later batch of the same epoch,
    never dropped; a row whose own texts are equal (``anchor == positive``) is fine on its own.
    Rows without repeated texts fill the batches in shuffled order, so with no duplicates the
    batches are plain slices of the permutation. A text held by ``m`` rows spreads over at least
    ``m`` batches, so heavy repeats make the last batches of an epoch small (``drop_last=True``
    drops every batch smaller than ``batch_size``).

    Cost: once per sampler, every text is hashed and the hashes sorted (numpy; equal hashes are
    confirmed as equal strings); each epoch is one pass, O(n + repeated texts) amortised (a
    union-find over open batches), in which only rows holding a text that another row also holds are
    visited one by one in Python: about a second per million such rows.

    ``no_duplicates=False`` makes it a plain seeded shuffling sampler with the same state, grouping and
    resuming (for losses without in-batch negatives, where a repeated text is harmless).

    ``group_by_length=True`` (with ``lengths``, one int per row such as its token count) shuffles,
    cuts the order into mega-batches of ``50 * batch_size`` rows, sorts each by length descending,
    packs, then shuffles the order of the batches: batches of similar lengths pad less.

    Resuming: ``epoch`` and ``position`` (batches already yielded this epoch) are the state
    (:meth:`state_dict` / :meth:`load_state_dict`); an iteration starts at ``position`` and leaves
    it at ``len(self)`` when the epoch is exhausted. Call :meth:`set_epoch` (``e + 1``) between
    epochs; iterating an exhausted epoch again yields no batches (it never repeats an epoch) and
    warns when this sampler itself exhausted it. ``set_epoch`` with the current epoch keeps the
    position, so ``load_state_dict`` then ``set_epoch(same)`` resumes. Use one iteration at a time;
    ``position`` counts batches handed out, so a loader that prefetches runs ahead of training.

    Example:
        >>> d = TrainingData.from_columns({"anchor": ["q1", "q1", "q2", "q3"], "positive": ["a", "b", "c", "d"]})
        >>> batches = list(NoDuplicatesBatchSampler(d, batch_size=2, seed=0))
        >>> all(len({d[i]["anchor"] for i in b}) == len(b) for b in batches), sorted(sum(batches, []))
        (True, [0, 1, 2, 3])
    """

    def __init__(self, data: TrainingData, batch_size: int, *, seed: int = 0, drop_last: bool = False,
                 group_by_length: bool = False, lengths: Sequence[int] | np.ndarray | None = None,
                 no_duplicates: bool = True) -> None:
        if not isinstance(data, TrainingData):
            raise ConfigError(f"NoDuplicatesBatchSampler takes a TrainingData, got {_show(data)}.")
        self.data = data
        self.batch_size = check_int(self, "batch_size", batch_size, low=1)
        self.seed = check_int(self, "seed", seed, low=0)
        self.drop_last = bool(drop_last)
        self.group_by_length = bool(group_by_length)
        n = len(data)
        if self.drop_last and self.batch_size > n:
            raise ConfigError(f"batch_size={batch_size} is larger than the {n} rows, so drop_last=True would leave "
                              "no batch; lower batch_size or pass drop_last=False.")
        self._lengths: np.ndarray | None = None
        if self.group_by_length:
            if lengths is None:
                raise ConfigError("group_by_length=True needs lengths= (one int per row, e.g. its token count).")
            arr = np.asarray(lengths)
            if arr.shape != (n,) or (n and arr.dtype.kind not in "iu") or (arr < 0).any():
                raise ConfigError(f"lengths= must hold one int >= 0 per row ({n} rows); got shape {arr.shape} "
                                  f"of {arr.dtype}.")
            self._lengths = arr.astype(np.int64)
        elif lengths is not None:
            raise ConfigError("lengths= is used only with group_by_length=True; pass both or neither.")
        self.epoch = 0
        self.position = 0
        self.no_duplicates = bool(no_duplicates)
        if self.no_duplicates:
            self._is_dup, self._ptr, self._ids, self._n_shared = _shared_texts(data)
        self._cache: tuple[int, list[list[int]]] | None = None
        self._exhausted_here = False

    def _batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._build(self.epoch))
        return self._cache[1]

    def _build(self, epoch: int) -> list[list[int]]:
        n, size = len(self.data), self.batch_size
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n)
        if self._lengths is not None:
            mega = np.arange(n) // (_MEGA * size)
            order = order[np.lexsort((-self._lengths[order], mega))]  # by mega-batch, then longest first
        if self.no_duplicates:
            batches = _pack(order, self._is_dup, self._ptr, self._ids, self._n_shared, size)
        else:
            batches = [order[i:i + size].tolist() for i in range(0, n, size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == size]
        if self._lengths is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __len__(self) -> int:
        """The number of batches of the current epoch (exact: the epoch is packed once and cached)."""
        return len(self._batches())

    def __iter__(self) -> Iterator[list[int]]:
        batches, epoch = self._batches(), self.epoch
        if self.position >= len(batches) and self._exhausted_here:
            warnings.warn(f"NoDuplicatesBatchSampler: epoch {epoch} was already iterated to its end, so this "
                          f"iteration yields no batches; call set_epoch({epoch + 1}) before each new epoch.",
                          RuntimeWarning, stacklevel=2)
        while self.position < len(batches) and self.epoch == epoch:
            batch = batches[self.position]
            self.position += 1
            yield list(batch)
        if self.epoch == epoch:
            self._exhausted_here = True

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` (position 0); the current epoch keeps its position (a resume)."""
        epoch = check_int(self, "epoch", epoch, low=0)
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0
            self._exhausted_here = False

    def state_dict(self) -> dict[str, int]:
        """What a checkpoint needs to resume: epoch, position and what must not change."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "batch_size": self.batch_size, "n_rows": len(self.data)}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume from :meth:`state_dict`; ConfigError if the data, batch size or seed changed."""
        keys = ("epoch", "position", "seed", "batch_size", "n_rows")
        if not isinstance(state, Mapping) or any(k not in state for k in keys):
            raise ConfigError(f"a sampler state needs the keys {list(keys)}; got {_show(state)}.")
        now = self.state_dict()
        changed = [f"{k} {state[k]} then, {now[k]} now" for k in ("n_rows", "batch_size", "seed")
                   if state[k] != now[k]]
        if changed:
            raise ConfigError(f"cannot resume the sampler: the data changed since the checkpoint "
                              f"({'; '.join(changed)}); resume with the same data and options, or start afresh.")
        epoch = check_int(self, "epoch", state["epoch"], low=0)
        self.epoch, self.position, self._exhausted_here = epoch, 0, False
        self.position = check_int(self, "position", state["position"], low=0, high=len(self))

    def __repr__(self) -> str:
        return (f"NoDuplicatesBatchSampler({len(self.data):,} rows, batch_size={self.batch_size}, seed={self.seed}, "
                f"epoch={self.epoch}, position={self.position})")
