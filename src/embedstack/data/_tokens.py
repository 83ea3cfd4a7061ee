"""Token-level datasets: part-of-speech tags (CoNLL-U, UD English EWT) and word sense in context (WiC).

Both keep the datasets' own word segmentation (pre-tokenized sentences), so a probe's labels stay aligned
with the words an encoder is asked about.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.conllu"
    >>> _ = p.write_text("# text = Don't go\\n1-2\\tDon't\\t_\\t_\\t_\\t_\\t_\\t_\\t_\\t_\\n"
    ...                  "1\\tDo\\tdo\\tAUX\\tVBP\\t_\\t3\\taux\\t_\\t_\\n2\\tn't\\tnot\\tPART\\tRB\\t_\\t3\\tadvmod\\t_\\t_\\n"
    ...                  "3\\tgo\\tgo\\tVERB\\tVB\\t_\\t0\\troot\\t_\\t_\\n\\n")
    >>> ds = load_conllu(p)
    >>> ds.sentences, ds.tags
    ([['Do', "n't", 'go']], [['AUX', 'PART', 'VERB']])
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedstack.data._io import iter_lines
from embedstack.errors import DatasetError, FormatError, InputError

__all__ = ["TaggedDataset", "WiCDataset", "load_conllu", "load_wic", "SPLITS"]

SPLITS = ("train", "dev", "test")
_WORD_ID = re.compile(r"[0-9]+")
_RANGE_ID = re.compile(r"[0-9]+-[0-9]+")
_EMPTY_ID = re.compile(r"[0-9]+\.[0-9]+")


@dataclass
class TaggedDataset:
    """Pre-tokenized sentences with one tag per word (UPOS for UD).

    Example:
        >>> TaggedDataset([["a", "dog"]], [["DET", "NOUN"]]).n_words
        2
    """

    sentences: list[list[str]]
    tags: list[list[str]]

    def __post_init__(self) -> None:
        if len(self.sentences) != len(self.tags):
            raise InputError(f"{len(self.sentences)} sentences but {len(self.tags)} tag sequences.")
        for i, (s, t) in enumerate(zip(self.sentences, self.tags, strict=True)):
            if len(s) != len(t):
                raise InputError(f"sentence #{i} has {len(s)} words but {len(t)} tags.")

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def n_words(self) -> int:
        return sum(len(s) for s in self.sentences)

    def head(self, n: int | None) -> TaggedDataset:
        """The first ``n`` sentences (all when ``n`` is None)."""
        return self if n is None else TaggedDataset(self.sentences[:n], self.tags[:n])

    def __repr__(self) -> str:
        return f"TaggedDataset({len(self)} sentences, {self.n_words} words)"


def _conllu_file(folder: Path, split: str) -> Path:
    hits = sorted(folder.glob(f"*-ud-{split}.conllu"))
    if len(hits) == 1:
        return hits[0]
    have = sorted(p.name for p in folder.glob("*.conllu"))
    raise DatasetError(f"{folder} has {'several' if hits else 'no'} *-ud-{split}.conllu file(s) for split {split!r}; "
                       f".conllu files present: {', '.join(have) or 'none'}. Pass the file's path instead.")


def load_conllu(source: str | os.PathLike[str] = "ud-english-ewt", split: str = "test", *,
                column: str = "upos", encoding: str = "utf-8", errors: str = "strict") -> TaggedDataset:
    """Read the words and tags of a CoNLL-U treebank (the basic tree's words, in order).

    Multiword-token lines (``1-2 don't``) and empty nodes (``8.1``) are skipped: the words are the lines
    with an integer ID, as UD counts them.

    Args:
        source: registry name (``ud-english-ewt``), a folder holding ``*-ud-<split>.conllu`` or a file.
        split: ``train``, ``dev`` or ``test`` (ignored when ``source`` is a file).
        column: ``upos`` (column 4) or ``xpos`` (column 5, the Penn Treebank tag for EWT).

    Raises:
        FormatError: a word line with fewer than 10 tab-separated columns, or IDs out of order (names file:line).
        DatasetError: no such split, or a file without any sentence.
    """
    from embedstack.data._registry import resolve_dataset

    col = {"upos": 3, "xpos": 4}.get(column)
    if col is None:
        raise InputError(f"column must be 'upos' or 'xpos'. Got {column!r} instead.")
    path = resolve_dataset(source)
    if path.is_dir():
        path = _conllu_file(path, split)
    sentences: list[list[str]] = []
    tags: list[list[str]] = []
    words: list[str] = []
    labels: list[str] = []
    for lineno, line in iter_lines(path, encoding=encoding, errors=errors):
        if not line.strip():
            if words:
                sentences.append(words)
                tags.append(labels)
            words, labels = [], []
            continue
        if line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 10:
            raise FormatError(f"{path}:{lineno}: expected 10 tab-separated CoNLL-U columns, got {len(parts)}; fix or "
                              "delete that line.")
        wid = parts[0]
        if _RANGE_ID.fullmatch(wid) or _EMPTY_ID.fullmatch(wid):
            continue
        if not _WORD_ID.fullmatch(wid) or int(wid) != len(words) + 1:
            raise FormatError(f"{path}:{lineno}: word ID {wid!r} where {len(words) + 1} was expected; is a blank line "
                              "between two sentences missing?")
        words.append(parts[1])
        labels.append(parts[col])
    if words:  # a file without its final blank line
        sentences.append(words)
        tags.append(labels)
    if not sentences:
        raise DatasetError(f"{path} holds no sentences; check the file.")
    return TaggedDataset(sentences, tags)


@dataclass
class WiCDataset:
    """Word-in-Context pairs: the target's lemma and POS, both pre-tokenized sentences, the target's word index in
    each, and whether the two uses share a sense.

    Example:
        >>> ds = WiCDataset(["bank"], ["N"], [["the", "bank"]], [1], [["a", "bank", "vault"]], [1], np.array([True]))
        >>> ds.targets(0)
        ('bank', 'bank')
    """

    words: list[str]
    pos: list[str]
    sentences1: list[list[str]]
    index1: list[int]
    sentences2: list[list[str]]
    index2: list[int]
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=bool).reshape(-1)
        n = len(self.words)
        sizes = [len(self.pos), len(self.sentences1), len(self.index1), len(self.sentences2), len(self.index2),
                 len(self.labels)]
        if any(k != n for k in sizes):
            raise InputError(f"WiC columns differ in length: {[n, *sizes]}.")
        for i in range(n):
            for s, j in ((self.sentences1[i], self.index1[i]), (self.sentences2[i], self.index2[i])):
                if not 0 <= j < len(s):
                    raise InputError(f"pair #{i}: target index {j} is outside its {len(s)}-word sentence.")

    def __len__(self) -> int:
        return len(self.words)

    def targets(self, i: int) -> tuple[str, str]:
        """The target word as written in each sentence of pair ``i``."""
        return self.sentences1[i][self.index1[i]], self.sentences2[i][self.index2[i]]

    def head(self, n: int | None) -> WiCDataset:
        """The first ``n`` pairs (all when ``n`` is None)."""
        if n is None:
            return self
        return WiCDataset(self.words[:n], self.pos[:n], self.sentences1[:n], self.index1[:n], self.sentences2[:n],
                          self.index2[:n], self.labels[:n])

    def __repr__(self) -> str:
        return f"WiCDataset({len(self)} pairs, {int(self.labels.sum())} same sense)"


def _wic_files(folder: Path, split: str) -> tuple[Path, Path]:
    for base in (folder, folder / split):  # the local copy is flat; the official zip has one folder per split
        data, gold = base / f"{split}.data.txt", base / f"{split}.gold.txt"
        if data.is_file():
            if not gold.is_file():
                raise DatasetError(f"{gold} is missing: WiC labels come in {split}.gold.txt beside {data.name} "
                                   "(the SuperGLUE copy withholds test labels; use the official package).")
            return data, gold
    raise DatasetError(f"{folder} has no {split}.data.txt (nor {split}/{split}.data.txt); split must be one of "
                       f"{', '.join(SPLITS)}.")


def load_wic(source: str | os.PathLike[str] = "wic", split: str = "test", *, encoding: str = "utf-8",
             errors: str = "strict") -> WiCDataset:
    """Read a split of the official WiC package (``<split>.data.txt`` + ``<split>.gold.txt``).

    A data line is ``lemma<TAB>N|V<TAB>i-j<TAB>sentence 1<TAB>sentence 2``; ``i``/``j`` are 0-based indices of the
    target among the sentence's space-separated words. The gold file holds ``T``/``F`` per line, aligned by line.

    Raises:
        FormatError: a malformed line, an index outside its sentence, a label other than T/F, or data and gold
            files of different lengths (names file:line).
    """
    from embedstack.data._registry import resolve_dataset

    folder = resolve_dataset(source)
    if folder.is_file():  # a data or gold file names its split: it must agree with ``split``
        named = folder.name.split(".")[0]
        if named != split:
            raise InputError(f"{folder} is WiC's {named!r} split but split={split!r}; pass split={named!r} or the "
                             "folder.", fix={"split": named})
        folder = folder.parent
    data_path, gold_path = _wic_files(folder, split)
    gold: list[bool] = []
    for lineno, line in iter_lines(gold_path, encoding=encoding, errors=errors):
        g = line.strip()
        if not g:
            continue
        if g not in ("T", "F"):
            raise FormatError(f"{gold_path}:{lineno}: expected the label T or F, got {g!r}.")
        gold.append(g == "T")
    words: list[str] = []
    pos: list[str] = []
    s1: list[list[str]] = []
    s2: list[list[str]] = []
    i1: list[int] = []
    i2: list[int] = []
    for lineno, line in iter_lines(data_path, encoding=encoding, errors=errors):
        if not line.strip():
            continue
        parts = line.split("\t")
        m = re.fullmatch(r"([0-9]+)-([0-9]+)", parts[2].strip()) if len(parts) == 5 else None
        if m is None:
            raise FormatError(f"{data_path}:{lineno}: expected 5 tab-separated fields 'word pos i-j sentence1 "
                              f"sentence2', got {len(parts)} field(s) or a bad index pair; fix or delete that line.")
        a, b = parts[3].split(), parts[4].split()  # split() and split(' ') give the same targets (see SOURCE.md)
        j1, j2 = int(m.group(1)), int(m.group(2))
        if not (j1 < len(a) and j2 < len(b)):
            raise FormatError(f"{data_path}:{lineno}: target index {j1}-{j2} is outside the sentences "
                              f"({len(a)} and {len(b)} words).")
        words.append(parts[0])
        pos.append(parts[1])
        s1.append(a)
        s2.append(b)
        i1.append(j1)
        i2.append(j2)
    if len(gold) != len(words):
        raise FormatError(f"{data_path} has {len(words)} pairs but {gold_path} has {len(gold)} labels; the files are "
                          "not aligned.")
    if not words:
        raise DatasetError(f"{data_path} holds no pairs; check the file.")
    return WiCDataset(words, pos, s1, i1, s2, i2, np.asarray(gold, dtype=bool))
