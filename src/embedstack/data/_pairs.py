"""Sentence-pair datasets: STS (graded similarity 0-5) and NLI (entailment labels)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedstack.data._io import iter_lines
from embedstack.errors import DatasetError, FormatError, InputError

__all__ = ["STSDataset", "load_sts", "NLIDataset", "load_nli", "NLI_LABELS"]

NLI_LABELS = ("entailment", "neutral", "contradiction")


@dataclass
class STSDataset:
    """Sentence pairs with gold similarity scores (STS-B: 0-5).

    Example:
        >>> sts = STSDataset(["a cat"], ["a dog"], np.array([2.5], dtype=np.float32))
        >>> len(sts), sts.scores.dtype.name
        (1, 'float32')
    """

    s1: list[str]
    s2: list[str]
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if not (len(self.s1) == len(self.s2) == len(self.scores)):
            raise InputError(f"s1, s2 and scores must have equal lengths; got {len(self.s1)}, {len(self.s2)}, "
                             f"{len(self.scores)}.")

    def __len__(self) -> int:
        return len(self.s1)

    def __repr__(self) -> str:
        return f"STSDataset({len(self)} pairs)"


def _sts_file(folder: Path, split: str) -> Path:
    for name in (f"sts-{split}.csv", f"sts-{split}.tsv", f"{split}.tsv", f"{split}.csv", f"sts-{split}.csv.gz"):
        if (folder / name).is_file():
            return folder / name
    have = sorted(p.stem.removeprefix("sts-") for p in folder.glob("sts-*.csv"))
    raise DatasetError(f"{folder} has no STS file for split {split!r} (expected sts-{split}.csv); "
                       f"splits present: {', '.join(have) or 'none'}.")


def load_sts(source: str | os.PathLike[str] = "stsb", split: str = "test", *, encoding: str = "utf-8",
             errors: str = "strict") -> STSDataset:
    """Load STS-Benchmark-format pairs (tab-separated, no quoting, no header).

    Columns: ``genre, file, year, id, score, sentence1, sentence2[, extra...]``; extra trailing
    columns are ignored. ``source`` is a registry name, a folder holding ``sts-<split>.csv`` or a file.

    Raises:
        FormatError: a line with fewer than 7 fields or a score that is not a number (names file:line).
    """
    from embedstack.data._registry import resolve_dataset

    path = resolve_dataset(source)
    if path.is_dir():
        path = _sts_file(path, split)
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    for lineno, line in iter_lines(path, encoding=encoding, errors=errors):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            if len(parts) < 7:
                raise ValueError
            score = float(parts[4])
            if not math.isfinite(score) or abs(score) > 3.0e38:  # beyond float32: it would load as inf
                raise ValueError
        except ValueError:
            if lineno == 1 and not parts[0].startswith("main-"):  # a header row
                continue
            raise FormatError(f"{path}:{lineno}: expected 7+ tab-separated fields 'genre file year id score s1 s2' "
                              f"with a numeric score, got {len(parts)} field(s); fix or delete that line.") from None
        s1.append(parts[5])
        s2.append(parts[6])
        scores.append(score)
    if not s1:
        raise DatasetError(f"{path} holds no sentence pairs; check the file.")
    return STSDataset(s1, s2, np.asarray(scores, dtype=np.float32))


@dataclass
class NLIDataset:
    """Premise/hypothesis pairs with labels from :data:`NLI_LABELS`."""

    premises: list[str]
    hypotheses: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.premises)

    def __repr__(self) -> str:
        return f"NLIDataset({len(self)} pairs)"


def load_nli(source: str | os.PathLike[str] = "snli", split: str = "dev", *, encoding: str = "utf-8",
             errors: str = "strict") -> NLIDataset:
    """Load SNLI/MultiNLI pairs: SentEval layout (``s1.<split>``, ``s2.<split>``, ``labels.<split>``) or
    the official JSONL (``snli_1.0_<split>.jsonl``). Pairs without a gold label (``-``) are dropped."""
    import json

    from embedstack.data._registry import resolve_dataset

    folder = resolve_dataset(source)
    if (folder / f"s1.{split}").is_file():
        cols = [[line for _, line in iter_lines(folder / f"{k}.{split}", encoding=encoding, errors=errors)] for k in ("s1", "s2", "labels")]
        if not len(cols[0]) == len(cols[1]) == len(cols[2]):
            raise FormatError(f"{folder}: s1/s2/labels.{split} have different line counts "
                              f"({len(cols[0])}, {len(cols[1])}, {len(cols[2])}); the files are not aligned.")
        rows = [(a.strip(), b.strip(), lab.strip()) for a, b, lab in zip(*cols, strict=True)]
    else:
        jpath = next(iter(sorted(folder.glob(f"*_{split}.jsonl"))), None)
        if jpath is None:
            raise DatasetError(f"{folder} has neither s1.{split} (SentEval) nor *_{split}.jsonl (official SNLI/MNLI).")
        rows = []
        for lineno, line in iter_lines(jpath, encoding=encoding, errors=errors):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                rows.append((r["sentence1"], r["sentence2"], r["gold_label"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise FormatError(f"{jpath}:{lineno}: expected a JSON object with sentence1, sentence2, gold_label.") from None
    bad = next(((i, lab) for i, (_, _, lab) in enumerate(rows) if lab not in NLI_LABELS and lab != "-"), None)
    if bad is not None:
        raise FormatError(f"{folder}: pair #{bad[0]} has label {bad[1]!r}; expected one of {list(NLI_LABELS)}.")
    rows = [r for r in rows if r[2] != "-"]
    return NLIDataset([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
