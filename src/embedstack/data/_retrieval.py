"""BEIR-format retrieval datasets: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedstack.data._io import iter_json_lines, iter_lines
from embedstack.errors import DatasetError, FormatError, InputError

__all__ = ["RetrievalDataset", "load_beir", "read_qrels", "read_jsonl_records", "qrels_splits", "default_split"]

log = logging.getLogger(__name__)


@dataclass
class RetrievalDataset:
    """A retrieval benchmark: documents, queries and graded relevance judgments.

    Args:
        name: dataset name (for reports).
        corpus: doc id → ``{"title": str, "text": str}``, in corpus order.
        queries: query id → text.
        qrels: query id → {doc id → grade (int; 0 = judged not relevant)}.

    Example:
        >>> ds = RetrievalDataset("toy", {"d1": {"title": "Cats", "text": "purr"}}, {"q1": "cat"}, {"q1": {"d1": 1}})
        >>> ds.doc_texts(), ds.query_texts()
        (['Cats purr'], ['cat'])
    """

    name: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)

    def doc_ids(self) -> list[str]:
        """Document ids, in corpus order."""
        return list(self.corpus)

    def doc_texts(self) -> list[str]:
        """``title + " " + text`` (stripped) for each document, in :meth:`doc_ids` order."""
        return [(d.get("title", "") + " " + d.get("text", "")).strip() for d in self.corpus.values()]

    def query_ids(self) -> list[str]:
        """Ids of the queries that have relevance judgments, in queries-file order."""
        return [q for q in self.queries if q in self.qrels]

    def query_texts(self) -> list[str]:
        """Texts of :meth:`query_ids`, same order."""
        return [self.queries[q] for q in self.query_ids()]

    def subset_queries(self, ids: Iterable[str]) -> RetrievalDataset:
        """A dataset with the same corpus and only the given queries (and their qrels)."""
        keep = list(dict.fromkeys(str(i) for i in ids))
        missing = [q for q in keep if q not in self.queries]
        if missing:
            raise InputError(f"unknown query ids {missing[:5]} (of {len(missing)}); pick ids from query_ids().")
        return RetrievalDataset(self.name, self.corpus, {q: self.queries[q] for q in keep},
                                {q: self.qrels[q] for q in keep if q in self.qrels})

    def split_queries(self, fraction: float = 0.75, seed: int = 0) -> tuple[RetrievalDataset, RetrievalDataset]:
        """Split the judged queries at random into (tune, held_out); ``fraction`` goes to tune.

        Deterministic for a given ``seed``; both parts share the corpus.
        """
        if not 0.0 < float(fraction) < 1.0:
            raise InputError(f"fraction must be in (0, 1), got {fraction!r}.")
        ids = self.query_ids()
        if len(ids) < 2:
            raise InputError(f"cannot split {len(ids)} judged queries; the dataset needs at least 2.")
        order = np.random.default_rng(seed).permutation(len(ids))
        n_tune = min(max(1, round(float(fraction) * len(ids))), len(ids) - 1)
        tune = sorted(order[:n_tune].tolist())
        held = sorted(order[n_tune:].tolist())
        return self.subset_queries([ids[i] for i in tune]), self.subset_queries([ids[i] for i in held])

    def __repr__(self) -> str:
        n_judg = sum(len(v) for v in self.qrels.values())
        return (f"RetrievalDataset({self.name!r}, {len(self.corpus)} docs, {len(self.query_ids())} judged queries, "
                f"{n_judg} judgments)")


def read_jsonl_records(path: Path, *, encoding: str = "utf-8",
                       errors: str = "strict") -> Iterable[tuple[int, dict]]:
    """Yield ``(line, object)`` for every non-blank line of a JSON-lines file."""
    for lineno, obj in iter_json_lines(path, encoding=encoding, errors=errors):
        if not isinstance(obj, dict):
            raise FormatError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}.")
        yield lineno, obj


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz", f"{stem}.json"):
        if (folder / name).is_file():
            return folder / name
    raise DatasetError(f"{folder} has no {stem}.jsonl; a BEIR folder holds corpus.jsonl, queries.jsonl and "
                       f"qrels/<split>.tsv.")


def _read_corpus(path: Path, encoding: str, errors: str) -> dict[str, dict[str, str]]:
    corpus: dict[str, dict[str, str]] = {}
    for lineno, obj in read_jsonl_records(path, encoding=encoding, errors=errors):
        did = obj.get("_id", obj.get("id"))
        if did is None:
            raise FormatError(f"{path}:{lineno}: the record has no '_id' field; every BEIR document needs one.")
        title, text = obj.get("title") or "", obj.get("text") or ""
        if not isinstance(title, str) or not isinstance(text, str):
            raise FormatError(f"{path}:{lineno}: 'title' and 'text' must be strings.")
        corpus[str(did)] = {"title": title, "text": text}
    return corpus


def _read_queries(path: Path, encoding: str, errors: str) -> dict[str, str]:
    queries: dict[str, str] = {}
    for lineno, obj in read_jsonl_records(path, encoding=encoding, errors=errors):
        qid = obj.get("_id", obj.get("id"))
        if qid is None or not isinstance(obj.get("text"), str):
            raise FormatError(f"{path}:{lineno}: a query needs '_id' and a string 'text'.")
        queries[str(qid)] = obj["text"]
    return queries


def _parse_grade(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        f = float(value)  # may raise ValueError again: handled by the caller
        if not f.is_integer():
            raise ValueError(value) from None
        return int(f)


def read_qrels(path: str | os.PathLike[str], *, encoding: str = "utf-8",
               errors: str = "strict") -> dict[str, dict[str, int]]:
    """Read BEIR qrels (``query-id<TAB>corpus-id<TAB>score``, header optional) or TREC qrels.

    CRLF line endings and blank lines are tolerated; TREC's 4-column ``qid iter docid rel`` also works.
    """
    p = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in iter_lines(p, encoding=encoding, errors=errors):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        parts = [x.strip() for x in parts]
        if len(parts) == 4:  # TREC: qid iteration docid relevance
            parts = [parts[0], parts[2], parts[3]]
        try:
            if len(parts) != 3 or not parts[0] or not parts[1]:
                raise ValueError
            grade = _parse_grade(parts[2])
        except ValueError:
            if lineno == 1 and len(parts) == 3 and not any(c.isdigit() for c in parts[2]):
                continue  # a header such as "query-id corpus-id score"
            raise FormatError(
                f"{p}:{lineno}: malformed qrels line {line!r}; expected 'query-id<TAB>corpus-id<TAB>score' with an "
                f"integer score. Fix or delete that line."
            ) from None
        qrels.setdefault(parts[0], {})[parts[1]] = grade
    return qrels


def qrels_splits(source: str | os.PathLike[str]) -> list[str]:
    """The qrels splits a BEIR dataset (name or folder) has, e.g. ``['train']`` for SciFact here."""
    from embedstack.data._registry import resolve_dataset

    qdir = resolve_dataset(source) / "qrels"
    if not qdir.is_dir():
        return []
    return sorted({p.name.split(".")[0] for p in qdir.iterdir()
                   if p.is_file() and p.name.endswith((".tsv", ".tsv.gz", ".txt"))})


def default_split(source: str | os.PathLike[str]) -> str:
    """``test`` when the dataset has it, else ``dev``, else the first split it has (``test`` if none)."""
    have = qrels_splits(source)
    return next((s for s in ("test", "dev", *have) if s in have), "test")


def load_beir(source: str | os.PathLike[str], split: str | None = "test", *, encoding: str = "utf-8",
              errors: str = "strict", name: str | None = None) -> RetrievalDataset:
    """Load a BEIR-format dataset from a registry name (``scifact``) or a folder.

    Args:
        source: registry name or folder holding ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.
        split: qrels split (``train``, ``dev``, ``test``); None picks :func:`default_split`.
        encoding: the files' text encoding.
        errors: how to treat bytes not valid in ``encoding`` ("strict" raises InputError with file and line).
        name: dataset name to record (defaults to the registry name or the folder name).

    Raises:
        DatasetError: the folder or split is missing (the message names the splits that exist).
        FormatError: a malformed line (the message names file:line).
    """
    from embedstack.data._registry import resolve_dataset

    folder = resolve_dataset(source)
    if split is None:
        split = default_split(folder)
    if folder.is_file():
        raise DatasetError(f"{folder} is a file; load_beir needs a BEIR folder (corpus.jsonl, queries.jsonl, qrels/).")
    qdir = folder / "qrels"
    qpath = next((qdir / f"{split}{ext}" for ext in (".tsv", ".tsv.gz", ".txt") if (qdir / f"{split}{ext}").is_file()), None)
    if qpath is None:
        have = qrels_splits(folder)
        hint = f"splits present: {', '.join(have)}" if have else f"{qdir} does not exist"
        raise DatasetError(f"{folder} has no qrels for split {split!r} ({hint}).", fix={"split": have[0]} if have else None)
    corpus = _read_corpus(_find(folder, "corpus"), encoding, errors)
    queries = _read_queries(_find(folder, "queries"), encoding, errors)
    qrels = read_qrels(qpath, encoding=encoding, errors=errors)
    unknown = [q for q in qrels if q not in queries]
    if unknown:
        log.warning("%s: %d judged query ids have no text in queries.jsonl and are ignored (e.g. %s)",
                    qpath, len(unknown), unknown[:3])
        for q in unknown:
            del qrels[q]
    if not qrels:
        raise DatasetError(f"{qpath} holds no judgments for the queries in {folder}; check the split.")
    label = name or (str(source) if not Path(source).exists() else folder.name)
    return RetrievalDataset(label, corpus, queries, qrels)
