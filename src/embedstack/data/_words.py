"""Word-level benchmarks: Google analogies (``: section`` headers) and word-similarity pair files."""

from __future__ import annotations

import math
import os
from pathlib import Path

from embedstack.data._io import iter_lines
from embedstack.errors import DatasetError, FormatError

__all__ = ["load_analogies", "load_word_similarity"]

Analogy = tuple[str, str, str, str]


def _file_in(path: Path, names: tuple[str, ...], what: str) -> Path:
    if path.is_file():
        return path
    for n in names:
        if (path / n).is_file():
            return path / n
    raise DatasetError(f"{path} holds no {what} file (looked for {', '.join(names)}); pass the file's path.")


def load_analogies(source: str | os.PathLike[str] = "analogies", *, encoding: str = "utf-8",
                   errors: str = "strict") -> list[tuple[str, list[Analogy]]]:
    """Load a word2vec-format analogy file: ``: section`` headers, then ``a b c d`` lines.

    Returns ``[(section, [(a, b, c, d), ...]), ...]`` in file order, case kept.

    Raises:
        FormatError: a question line without exactly 4 words, or questions before any section header.
    """
    from embedstack.data._registry import resolve_dataset

    path = _file_in(resolve_dataset(source), ("questions-words.txt",), "analogy")
    sections: list[tuple[str, list[Analogy]]] = []
    for lineno, line in iter_lines(path, encoding=encoding, errors=errors):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith(":"):
            sections.append((s[1:].strip(), []))
            continue
        words = s.split()
        if len(words) != 4:
            raise FormatError(f"{path}:{lineno}: expected 4 space-separated words 'a b c d', got {len(words)}; "
                              "fix or delete that line.")
        if not sections:
            raise FormatError(f"{path}:{lineno}: question before any ': section' header; add a header line.")
        sections[-1][1].append((words[0], words[1], words[2], words[3]))
    if not any(q for _, q in sections):
        raise DatasetError(f"{path} holds no analogy questions.")
    return sections


def load_word_similarity(source: str | os.PathLike[str] = "wordsim353", *, encoding: str = "utf-8",
                         errors: str = "strict") -> list[tuple[str, str, float]]:
    """Load ``word1 word2 score`` pairs (tab, comma or whitespace separated; ``#`` comments; CRLF ok).

    A first line whose score is not a number is taken as a header and skipped.

    Raises:
        FormatError: a line that is not ``word1 word2 score`` (names file:line).
    """
    from embedstack.data._registry import resolve_dataset

    path = _file_in(resolve_dataset(source), ("wordsim353.tsv", "combined.tab", "combined.csv"), "word-similarity")
    pairs: list[tuple[str, str, float]] = []
    first_data = True
    for lineno, line in iter_lines(path, encoding=encoding, errors=errors):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if "\t" in s:
            parts = [p.strip() for p in s.split("\t")]
        elif "," in s:
            parts = [p.strip() for p in s.split(",")]
        else:
            parts = s.split()
        try:
            if len(parts) < 3 or not parts[0] or not parts[1]:
                raise ValueError
            score = float(parts[2])
            if not math.isfinite(score):
                raise ValueError
        except ValueError:
            if first_data and len(parts) >= 3 and not any(c.isdigit() for c in parts[2]):
                first_data = False
                continue  # a header such as "Word 1,Word 2,Human (mean)"
            raise FormatError(f"{path}:{lineno}: expected 'word1<TAB>word2<TAB>score', got {line!r}; "
                              "fix or delete that line.") from None
        first_data = False
        pairs.append((parts[0], parts[1], score))
    if not pairs:
        raise DatasetError(f"{path} holds no word pairs.")
    return pairs
