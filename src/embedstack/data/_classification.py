"""Text-classification datasets: BANKING77, AG News, 20 Newsgroups (bydate), IMDB, or any labelled CSV."""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from embedstack.data._io import check_encoding, check_errors, iter_lines, read_json, read_text
from embedstack.errors import DatasetError, FormatError

__all__ = ["ClassificationDataset", "load_classification"]


@dataclass
class ClassificationDataset:
    """Texts with string labels.

    Example:
        >>> ds = ClassificationDataset(["good", "bad"], ["pos", "neg"])
        >>> ds.label_names
        ['neg', 'pos']
    """

    texts: list[str]
    labels: list[str]
    label_names: list[str] | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DatasetError(f"texts and labels differ in length ({len(self.texts)} vs {len(self.labels)}).")
        if self.label_names is None:
            self.label_names = sorted(set(self.labels))

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        return f"ClassificationDataset({len(self)} texts, {len(self.label_names or [])} labels)"


_AG_ENTITY = re.compile(r"#([0-9]{1,7});")  # ASCII digits only (str.isdigit accepts "¹")


def _csv_rows(path: Path, encoding: str, errors: str) -> list[list[str]]:
    text = "\n".join(line for _, line in iter_lines(path, encoding=encoding, errors=errors))
    reader = csv.reader(io.StringIO(text))
    try:
        return list(reader)
    except csv.Error as exc:  # e.g. a lone carriage return inside an unquoted field, a field over 128 KiB
        raise FormatError(f"{path}:{reader.line_num}: not valid CSV ({str(exc).split(' - ')[0]}); fix or delete "
                          "that line.") from None


def _from_csv(path: Path, folder: Path, encoding: str, errors: str) -> ClassificationDataset:
    rows = _csv_rows(path, encoding, errors)
    if not rows:
        raise DatasetError(f"{path} is empty.")
    header = [h.strip().lower() for h in rows[0]]
    if "text" in header and ({"category", "label", "intent"} & set(header)):
        ti = header.index("text")
        li = next(header.index(k) for k in ("category", "label", "intent") if k in header)
        names = None
        if (folder / "categories.json").is_file():
            names = read_json(folder / "categories.json", hint="it must hold a JSON list of category names")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise FormatError(f"{folder / 'categories.json'} must hold a JSON list of category names (strings).")
        texts, labels = [], []
        for i, r in enumerate(rows[1:], start=2):
            if len(r) <= max(ti, li):
                raise FormatError(f"{path}:{i}: expected {len(header)} comma-separated fields, got {len(r)}.")
            texts.append(r[ti])
            labels.append(r[li])
        return ClassificationDataset(texts, labels, names)
    # AG News: no header, "class","title","description"; classes.txt names classes 1..n.
    names_file = folder / "classes.txt"
    names = [n.strip() for n in read_text(names_file, encoding=encoding, errors=errors).splitlines() if n.strip()] if names_file.is_file() else None
    texts, labels = [], []
    for i, r in enumerate(rows, start=1):
        if len(r) < 2 or not re.fullmatch(r"[0-9]{1,9}", r[0].strip()):
            raise FormatError(f"{path}:{i}: expected '\"class\",\"title\",\"description\"' with a numeric class.")
        k = int(r[0])
        body = " ".join(x for x in r[1:] if x).replace("\\", " ")
        body = html.unescape(_AG_ENTITY.sub(lambda m: _entity(int(m.group(1))), body))
        texts.append(" ".join(body.split()))
        labels.append(names[k - 1] if names and 0 < k <= len(names) else str(k))
    return ClassificationDataset(texts, labels, names)


def _entity(code: int) -> str:
    """AG News writes some characters as ``#NNN;``; a code outside Unicode stays as it was written."""
    return chr(code) if code <= 0x10FFFF else f"#{code};"


def _strip_headers(post: str) -> str:
    head, sep, body = post.partition("\n\n")
    return body if sep else post


def _from_20ng(archive: Path, split: str, remove_headers: bool) -> ClassificationDataset:
    prefix = f"20news-bydate-{split}/"
    items: list[tuple[str, str]] = []
    with tarfile.open(archive) as tf:
        for m in tf:
            name = m.name.removeprefix("./")
            if not m.isfile() or not name.startswith(prefix):
                continue
            fh = tf.extractfile(m)
            if fh is None:  # pragma: no cover
                continue
            post = fh.read().decode("latin-1")  # the collection is latin-1 (some posts are not UTF-8)
            items.append((name, _strip_headers(post) if remove_headers else post))
    if not items:
        raise DatasetError(f"{archive} has no members under {prefix}; split must be 'train' or 'test'.")
    items.sort()
    labels = [n[len(prefix):].split("/")[0] for n, _ in items]
    return ClassificationDataset([t for _, t in items], labels)


def _from_imdb(folder: Path, split: str, encoding: str, errors: str) -> ClassificationDataset:
    texts, labels = [], []
    packed = folder / "aclImdb_reviews.jsonl.gz"
    if packed.is_file():
        for lineno, line in iter_lines(packed, encoding=encoding, errors=errors):
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                raise FormatError(f"{packed}:{lineno}: not valid JSON.") from None
            if r.get("split") == split and r.get("label") in ("pos", "neg"):
                texts.append(r["text"].replace("<br />", " "))
                labels.append(r["label"])
    else:
        for label in ("neg", "pos"):
            d = folder / split / label
            if not d.is_dir():
                raise DatasetError(f"{folder} is neither the packed IMDB jsonl nor the aclImdb layout ({d} missing).")
            for f in sorted(d.glob("*.txt"), key=lambda p: int(p.stem.split("_")[0]) if p.stem.split("_")[0].isdigit() else 0):
                texts.append(read_text(f, encoding=encoding, errors=errors).replace("<br />", " "))
                labels.append(label)
    if not texts:
        raise DatasetError(f"{folder} holds no IMDB reviews for split {split!r} (use 'train' or 'test').")
    return ClassificationDataset(texts, labels, ["neg", "pos"])


def load_classification(source: str | os.PathLike[str], split: str = "test", *, encoding: str = "utf-8",
                        errors: str = "strict", remove_headers: bool = True) -> ClassificationDataset:
    """Load a labelled text set: ``banking77``, ``agnews``, ``20newsgroups``, ``imdb``, or a folder/CSV.

    A CSV with a header holding ``text`` and ``category``/``label`` works for any data; AG News' headerless
    ``"class","title","description"`` rows are read with ``classes.txt``.

    Args:
        source: registry name, folder (``<split>.csv``, 20news tarball, IMDB) or a CSV file.
        split: ``train`` or ``test``.
        encoding: the files' text encoding (20 Newsgroups is always read as latin-1).
        errors: decoding policy for bytes not valid in ``encoding`` (strict or replace).
        remove_headers: 20 Newsgroups only — drop the Usenet headers (From:, Subject: ...).
    """
    from embedstack.data._registry import resolve_dataset

    check_errors(errors)
    check_encoding(encoding)
    path = resolve_dataset(source)
    if path.is_file():
        if path.name.endswith((".tar.gz", ".tgz")):
            return _from_20ng(path, split, remove_headers)
        return _from_csv(path, path.parent, encoding, errors)
    if (path / "20news-bydate.tar.gz").is_file():
        return _from_20ng(path / "20news-bydate.tar.gz", split, remove_headers)
    if (path / "aclImdb_reviews.jsonl.gz").is_file() or (path / split / "pos").is_dir():
        return _from_imdb(path, split, encoding, errors)
    csv_path = path / f"{split}.csv"
    if csv_path.is_file():
        return _from_csv(csv_path, path, encoding, errors)
    have = sorted(p.stem for p in path.glob("*.csv"))
    raise DatasetError(f"{path} has no {split}.csv (CSV splits present: {', '.join(have) or 'none'}).",
                       fix={"split": have[0]} if have else None)


