"""The training corpus as an int32 id stream plus sentence offsets, built in one streaming pass.

Texts are tokenized once (``embedstack.text.Analyzer``), each new token gets a provisional id on the
fly, and the provisional id stream goes to memory (or to a temporary file when the corpus is large).
The :class:`~embedstack.text.Vocabulary` is then built from the provisional counts, and the stream is
remapped in chunks to final ids with words under ``min_count`` dropped. Nothing keeps Python lists
of strings for the whole corpus. Long texts are cut into sentences of at most ``max_sentence_length``
tokens (gensim and word2vec.c cap sentences the same way); windows never cross a sentence boundary.

Example:
    >>> c = IdCorpus.build(["the cat sat", "the dog sat"], min_count=2)
    >>> c.vocab.words_, c.ids.tolist(), c.offsets.tolist(), c.raw_words
    (['sat', 'the'], [1, 0, 1, 0], [0, 2, 4], 6)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.errors import ConfigError, InputError
from embedstack.text import Analyzer, Vocabulary

__all__ = ["IdCorpus", "is_one_shot", "CorpusLike"]

CorpusLike = Any  # str | PathLike (streamed file/folder/dataset name) | Iterable[str | list[str]] | IdCorpus
_BLOCK = 1 << 20
_CHUNK = 1 << 24


def is_one_shot(corpus: object) -> bool:
    """True for iterators/generators, which can be read only once."""
    return isinstance(corpus, Iterator)


class _IdSink:
    """Appends int32 blocks to memory, switching to a temporary file past ``mmap_threshold`` ids."""

    def __init__(self, mmap_threshold: int, tmpdir: Path | None) -> None:
        self.blocks: list[np.ndarray] = []
        self.n = 0
        self.threshold = mmap_threshold
        self.tmpdir = tmpdir
        self.folder: Path | None = None
        self.fh: Any = None

    def _ensure_dir(self) -> Path:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="embedstack-ids-", dir=self.tmpdir))
        return self.folder

    def add(self, block: np.ndarray) -> None:
        if self.fh is None and self.n + len(block) > self.threshold:
            self.fh = open(self._ensure_dir() / "raw.i32", "wb")  # noqa: SIM115 - closed in finish()
            for b in self.blocks:
                self.fh.write(b.tobytes())
            self.blocks = []
        if self.fh is not None:
            self.fh.write(block.tobytes())
        else:
            self.blocks.append(block)
        self.n += len(block)

    def finish(self) -> np.ndarray:
        if self.fh is not None:
            self.fh.close()
            assert self.folder is not None
            return np.memmap(self.folder / "raw.i32", dtype=np.int32, mode="r", shape=(self.n,)) if self.n \
                else np.zeros(0, np.int32)
        return np.concatenate(self.blocks) if self.blocks else np.zeros(0, dtype=np.int32)


class IdCorpus:
    """A tokenized corpus stored as ids: ``ids`` (int32, maybe memory-mapped) and ``offsets``.

    Attributes:
        ids: word ids of the kept tokens, sentence after sentence.
        offsets: int64 sentence starts into ``ids`` (length ``n_sentences + 1``).
        vocab: the fitted :class:`~embedstack.text.Vocabulary`.
        raw_words: tokens read, including those of words under ``min_count``.
    """

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, vocab: Vocabulary, raw_words: int,
                 folder: Path | None = None) -> None:
        self.ids = ids
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.vocab = vocab
        self.raw_words = int(raw_words)
        self._folder = folder
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(folder), True) if folder else None

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, corpus: CorpusLike, *, analyzer: Analyzer | None = None, min_count: int = 5,
              max_vocab: int | None = None, max_sentence_length: int = 10_000,
              mmap_threshold: int = 64_000_000, tmpdir: str | os.PathLike[str] | None = None,
              progress: Callable[[int], None] | None = None) -> IdCorpus:
        """Stream ``corpus`` once into an id stream.

        Args:
            corpus: a file/folder/dataset name (read with ``embedstack.data.iter_texts``), an iterable
                of texts, or an iterable of token lists (used as they are).
            analyzer: tokenizer for texts (default ``Analyzer()``: NFKC, lowercase, word regex).
            min_count: drop words seen fewer times.
            max_vocab: keep at most this many words.
            max_sentence_length: cut longer texts into pieces of this many tokens.
            mmap_threshold: above this many tokens the stream lives in a temporary file (memmap).
            tmpdir: where that file goes (default: the system temporary folder).
            progress: called with the number of tokens read so far, every ~1M tokens.
        """
        if isinstance(corpus, IdCorpus):
            return corpus
        if max_sentence_length < 1:
            raise ConfigError(f"max_sentence_length must be >= 1; got {max_sentence_length}.")
        analyzer = analyzer or Analyzer()
        texts = _texts(corpus)
        pid: dict[str, int] = {}
        setdefault = pid.setdefault
        sink = _IdSink(mmap_threshold, Path(tmpdir) if tmpdir else None)
        lengths: list[int] = []
        buf: list[int] = []
        counts = np.zeros(0, dtype=np.int64)
        reported = 0

        def flush() -> None:
            nonlocal counts, buf
            block = np.array(buf, dtype=np.int32)
            buf = []
            bc = np.bincount(block, minlength=len(pid))
            if len(counts) < len(bc):
                counts = np.concatenate([counts, np.zeros(len(bc) - len(counts), np.int64)])
            counts[: len(bc)] += bc
            sink.add(block)

        for i, item in enumerate(texts):
            if isinstance(item, str | bytes | bytearray):
                try:
                    toks = analyzer.tokenize(bytes(item) if isinstance(item, bytearray) else item)
                except InputError as exc:
                    raise InputError(f"text #{i}: {exc}") from None
            elif isinstance(item, list | tuple):
                toks = list(item)
            else:
                raise InputError(
                    f"corpus item #{i} is a {type(item).__name__}; give texts (str) or token lists (list[str])."
                )
            if not toks:
                continue
            buf.extend([setdefault(t, len(pid)) for t in toks])
            n = len(toks)
            while n > max_sentence_length:
                lengths.append(max_sentence_length)
                n -= max_sentence_length
            lengths.append(n)
            if len(buf) >= _BLOCK:
                flush()
                if progress is not None and sink.n - reported >= _BLOCK:
                    reported = sink.n
                    progress(sink.n)
        if buf:
            flush()
        raw = sink.finish()
        total = int(sink.n)
        if total == 0:
            _cleanup(sink.folder)
            raise InputError("the corpus is empty (no tokens at all); give a non-empty corpus of texts.")
        words = list(pid)
        try:
            vocab = Vocabulary(min_count=min_count, max_size=max_vocab).fit_counts(
                dict(zip(words, counts.tolist(), strict=True)), total_words=total)
        except InputError:
            _cleanup(sink.folder)
            raise
        remap = np.full(len(words), -1, dtype=np.int32)
        index = vocab.index_
        for p, w in enumerate(words):
            j = index.get(w)
            if j is not None:
                remap[p] = j
        raw_off = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(np.asarray(lengths, dtype=np.int64), out=raw_off[1:])
        ids, offsets = _remap(raw, raw_off, remap, sink, total)
        return cls(ids, offsets, vocab, total, folder=sink.folder)

    @classmethod
    def from_arrays(cls, ids: np.ndarray, offsets: np.ndarray, vocab: Vocabulary,
                    raw_words: int | None = None) -> IdCorpus:
        """Wrap existing arrays (ids must be < len(vocab))."""
        ids = np.ascontiguousarray(ids, dtype=np.int32)
        off = np.asarray(offsets, dtype=np.int64)
        if off.ndim != 1 or len(off) < 1 or off[0] != 0 or off[-1] != len(ids) or np.any(np.diff(off) < 0):
            raise InputError("offsets must start at 0, be non-decreasing and end at len(ids).")
        if len(ids) and (ids.min() < 0 or ids.max() >= len(vocab)):
            raise InputError("ids must lie in [0, len(vocab)).")
        return cls(ids, off, vocab, len(ids) if raw_words is None else raw_words)

    # ------------------------------------------------------------------ use
    @property
    def n_sentences(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_words(self) -> int:
        """Kept tokens (in-vocabulary)."""
        return int(self.offsets[-1])

    def jobs(self, job_words: int = 10_000) -> np.ndarray:
        """Sentence indices cutting the corpus into jobs of about ``job_words`` kept tokens each."""
        if self.n_sentences == 0:
            return np.zeros(1, dtype=np.int64)
        targets = np.arange(job_words, self.n_words, job_words, dtype=np.int64)
        cuts = np.searchsorted(self.offsets, targets, side="left")
        cuts = np.unique(np.concatenate([[0], cuts, [self.n_sentences]]))
        return cuts.astype(np.int64)

    def max_sentence(self) -> int:
        return int(np.diff(self.offsets).max()) if self.n_sentences else 1

    def sentences(self) -> Iterator[list[str]]:
        """Decode the stored sentences back into token lists (e.g. to feed another library)."""
        words = self.vocab.words_
        for s in range(self.n_sentences):
            a, b = self.offsets[s], self.offsets[s + 1]
            yield [words[i] for i in self.ids[a:b].tolist()]

    def write_lines(self, path: str | os.PathLike[str]) -> Path:
        """Write one sentence per line, tokens separated by spaces (gensim's ``LineSentence`` input).

        The file is written atomically (:class:`embedstack.io.AtomicFile`): an existing ``path`` is
        replaced only once every line is written.
        """
        from embedstack.io import AtomicFile

        with AtomicFile(path) as f, open(f.tmp, "w", encoding="utf-8") as fh:
            for sent in self.sentences():
                fh.write(" ".join(sent))
                fh.write("\n")
        return f.path

    def close(self) -> None:
        """Delete the temporary id file, if any (also done when the corpus is garbage-collected)."""
        if self._finalizer is not None:
            self.ids = np.zeros(0, dtype=np.int32)
            self._finalizer()


def _cleanup(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _remap(raw: np.ndarray, raw_off: np.ndarray, remap: np.ndarray, sink: _IdSink,
           total: int) -> tuple[np.ndarray, np.ndarray]:
    new_off = np.empty(len(raw_off), dtype=np.int64)
    out_blocks: list[np.ndarray] = []
    out_fh = None
    if sink.fh is not None:
        assert sink.folder is not None
        out_fh = open(sink.folder / "ids.i32", "wb")  # noqa: SIM115
    base = 0
    kept_total = 0
    for a in range(0, total, _CHUNK):
        b = min(total, a + _CHUNK)
        mapped = remap[np.asarray(raw[a:b])]
        keep = mapped >= 0
        ck = np.empty(b - a + 1, dtype=np.int64)
        ck[0] = base
        np.cumsum(keep, out=ck[1:])
        ck[1:] += base
        lo, hi = np.searchsorted(raw_off, [a, b], side="left")
        hi = np.searchsorted(raw_off, b, side="right")
        new_off[lo:hi] = ck[raw_off[lo:hi] - a]
        kept = mapped[keep]
        if out_fh is not None:
            out_fh.write(kept.tobytes())
        else:
            out_blocks.append(kept)
        base = int(ck[-1])
        kept_total += len(kept)
    nonempty = np.diff(new_off) > 0
    offsets = np.concatenate([new_off[:-1][nonempty], new_off[-1:]])
    if out_fh is not None:
        out_fh.close()
        del raw
        assert sink.folder is not None
        os.unlink(sink.folder / "raw.i32")
        ids = (np.memmap(sink.folder / "ids.i32", dtype=np.int32, mode="r", shape=(kept_total,))
               if kept_total else np.zeros(0, np.int32))
    else:
        ids = np.concatenate(out_blocks) if out_blocks else np.zeros(0, dtype=np.int32)
    return ids, offsets


def _texts(corpus: CorpusLike) -> Iterable[Any]:
    if isinstance(corpus, str | os.PathLike):
        from embedstack.data import iter_texts

        return iter_texts(corpus)
    if isinstance(corpus, bytes | bytearray):
        raise InputError("give the corpus as a path or an iterable of texts, not one bytes object.")
    try:
        return iter(corpus)
    except TypeError:
        raise InputError(
            f"corpus must be a path, an iterable of texts or of token lists; got {type(corpus).__name__}."
        ) from None
