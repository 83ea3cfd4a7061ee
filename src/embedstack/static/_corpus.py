"""The training corpus as an int32 id stream plus sentence offsets, built in one streaming pass.

Texts are tokenized once (``embedstack.text.Analyzer``), each new token gets a provisional id on the
fly, and the provisional id stream goes to memory (or to a temporary file when the corpus is large).
The :class:`~embedstack.text.Vocabulary` is then built from the provisional counts, and the stream is
remapped in chunks to final ids with words under ``min_count`` dropped. Nothing keeps Python lists
of strings for the whole corpus. Long texts are cut into sentences of at most ``max_sentence_length``
tokens (gensim and word2vec.c cap sentences the same way); windows never cross a sentence boundary.

A corpus given as a path is tokenized by several worker processes when it is large enough
(:mod:`embedstack.static._corpus_parallel`): each reads a part (runs of files, or ranges of lines of
one plain file) and the parent merges the parts in order, so the result is the one-process result.

Example:
    >>> c = IdCorpus.build(["the cat sat", "the dog sat"], min_count=2)
    >>> c.vocab.words_, c.ids.tolist(), c.offsets.tolist(), c.raw_words
    (['sat', 'the'], [1, 0, 1, 0], [0, 2, 4], 6)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from embedstack._validation import check_int
from embedstack.errors import ConfigError, InputError
from embedstack.text import Analyzer, Vocabulary
from embedstack.text.tokenize import to_text

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
            self.fh = open(self._ensure_dir() / "raw.i32", "wb")  # noqa: SIM115 - closed in pieces()
            for b in self.blocks:
                self.fh.write(b.data)
            self.blocks = []
        if self.fh is not None:
            self.fh.write(block.data)
        else:
            self.blocks.append(block)
        self.n += len(block)

    @property
    def file(self) -> Path | None:
        """The temporary file holding the stream (None: it is in memory)."""
        return self.folder / "raw.i32" if self.fh is not None and self.folder is not None else None

    def pieces(self) -> list[np.ndarray]:
        """The stream as stored (no copy): its blocks in memory, or a memory map of its file."""
        if self.fh is not None:
            self.fh.close()
            assert self.folder is not None
            return [np.memmap(self.folder / "raw.i32", dtype=np.int32, mode="r", shape=(self.n,))] if self.n else []
        return list(self.blocks)

    def finish(self) -> np.ndarray:
        """The stream as one array (a memory map of its file when it spilled)."""
        pieces = self.pieces()
        if self.fh is not None:
            return pieces[0] if pieces else np.zeros(0, np.int32)
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)


class Scanned(NamedTuple):
    """A corpus pass before the vocabulary: provisional words and counts, sentence lengths, id pieces.

    ``pieces`` are ``(raw ids, map)`` in corpus order: ``map[raw]`` are the piece's provisional ids
    (``map`` None: they are already). ``folder`` holds temporary id files (or is None).
    """

    words: list[Any]
    counts: np.ndarray  # int64, one per word
    lengths: np.ndarray  # int64 sentence lengths, in corpus order
    total: int
    pieces: list[tuple[np.ndarray, np.ndarray | None]]
    folder: Path | None


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
              progress: Callable[[int], None] | None = None, workers: int | None = None,
              encoding: str = "utf-8", errors: str = "strict") -> IdCorpus:
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
            workers: processes that tokenize a corpus given as a path (default 1: this process
                only). A folder is cut into runs of files, a plain text file into ranges of lines;
                the result is the same as with one process. Small inputs (under 32 MB), a single gzip
                file, iterables and custom analyzer classes are read in this process. Worker
                processes start as in ``spawn``, re-importing the calling script, so ask for them
                only from a script with an ``if __name__ == "__main__":`` guard; that is why the
                library's default is one process and ``embedstack train`` (a safe entry point) asks
                for one per core.
            encoding, errors: how files are decoded (``iter_texts``'s options; for a path only).
        """
        if isinstance(corpus, IdCorpus):
            return corpus
        if max_sentence_length < 1:
            raise ConfigError(f"max_sentence_length must be >= 1; got {max_sentence_length}.")
        n_workers = int(check_int("IdCorpus.build", "workers", workers, low=1, allow_none=True) or 1)
        analyzer = analyzer or Analyzer()
        texts = _texts(corpus, encoding, errors)
        scanned = None
        if isinstance(corpus, str | os.PathLike) and n_workers > 1 and type(analyzer) is Analyzer:
            from embedstack.static import _corpus_parallel as par

            units = par.plan(corpus, encoding=encoding, errors=errors, workers=n_workers)
            if units is not None:
                scanned = par.scan_parallel(units, analyzer=analyzer, encoding=encoding, errors=errors,
                                            workers=n_workers, max_sentence_length=max_sentence_length,
                                            mmap_threshold=mmap_threshold, tmpdir=Path(tmpdir) if tmpdir else None,
                                            progress=progress)
        # The numba remap saves ~0.15 s on 30M tokens, but loading numba costs ~1 s in a process that has
        # not used it yet (here: the parent of the worker processes, unless it trains next anyway).
        kernel = scanned is None or "embedstack.static._corpus_kernels" in sys.modules
        if scanned is None:
            scanned = _scan_serial(texts, analyzer, max_sentence_length, mmap_threshold,
                                   Path(tmpdir) if tmpdir else None, progress)
        return cls._finish(scanned, min_count=min_count, max_vocab=max_vocab, mmap_threshold=mmap_threshold,
                           kernel=kernel)

    @classmethod
    def _finish(cls, scanned: Scanned, *, min_count: int, max_vocab: int | None, mmap_threshold: int,
                kernel: bool = True) -> IdCorpus:
        """Vocabulary from the provisional counts, then the id stream remapped to final ids."""
        folder, total, words = scanned.folder, scanned.total, scanned.words
        if total == 0:
            _cleanup(folder)
            raise InputError("the corpus is empty (no tokens at all); give a non-empty corpus of texts.")
        try:
            vocab = Vocabulary(min_count=min_count, max_size=max_vocab).fit_counts(
                dict(zip(words, scanned.counts.tolist(), strict=True)), total_words=total)
        except InputError:
            _cleanup(folder)
            raise
        remap = np.fromiter(map(vocab.index_.get, words, repeat(-1)), dtype=np.int32, count=len(words))
        raw_off = np.zeros(len(scanned.lengths) + 1, dtype=np.int64)
        np.cumsum(scanned.lengths, out=raw_off[1:])
        to_file = folder / "ids.i32" if total > mmap_threshold and folder is not None else None
        try:
            ids, offsets = _remap(scanned.pieces, raw_off, remap, to_file, kernel=kernel)
        except BaseException:
            _cleanup(folder)
            raise
        if to_file is None:
            _cleanup(folder)
            folder = None
        else:
            for p in to_file.parent.iterdir():  # the provisional id files
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                elif p != to_file:
                    p.unlink(missing_ok=True)
        return cls(ids, offsets, vocab, total, folder=folder)

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


class _PyIds:
    """Provisional ids (first-seen order) with ``Analyzer.tokenize`` and a dict."""

    def __init__(self, analyzer: Analyzer) -> None:
        self.analyzer = analyzer
        self.pid: defaultdict[Any, int] = defaultdict()
        self.pid.default_factory = self.pid.__len__  # an unseen token gets the next id inside the C-level lookup
        self._id = self.pid.__getitem__

    def tokens(self, toks: list[str]) -> np.ndarray:
        return np.fromiter(map(self._id, toks), dtype=np.int32, count=len(toks))

    def text(self, text: str) -> np.ndarray:
        return self.tokens(self.analyzer.tokenize(text))

    def words(self) -> list[str]:
        return list(self.pid)


def _id_mapper(analyzer: Analyzer) -> Any:
    """The numba tokenizer/interner when it reproduces ``analyzer`` and numba is installed, else Python's."""
    if os.environ.get("EMBEDSTACK_CORPUS_TOKENIZER", "").lower() != "python":
        try:
            from embedstack.static import _corpus_kernels as _tokenize
        except ImportError:  # numba missing: the Python path gives the same ids
            return _PyIds(analyzer)
        if _tokenize.supports(analyzer):
            return _tokenize.Interner(analyzer)
    return _PyIds(analyzer)


def _cleanup(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


class _Scan(NamedTuple):
    words: list[Any]
    counts: np.ndarray  # int64, one per word
    lengths: list[int]
    n_texts: int


def _scan(texts: Iterable[Any], analyzer: Analyzer, max_sentence_length: int, sink: _IdSink,
          on_block: Callable[[int], None] | None = None) -> _Scan:
    """Tokenize ``texts`` into ``sink`` as provisional ids (first-seen order): words, counts, sentence lengths.

    ``on_block(tokens so far)`` is called after each block of ~1M tokens reaches the sink. A text the
    analyzer rejects raises InputError "text #N: ..." (with ``text_index`` and ``text_detail`` set).
    """
    ids_of = _id_mapper(analyzer)
    lengths: list[int] = []
    buf: list[np.ndarray] = []
    buffered = 0
    counts = np.zeros(0, dtype=np.int64)

    def flush() -> None:
        nonlocal counts, buf, buffered
        block = np.concatenate(buf)
        buf, buffered = [], 0
        bc = np.bincount(block)
        if len(counts) < len(bc):
            counts = np.concatenate([counts, np.zeros(len(bc) - len(counts), np.int64)])
        counts[: len(bc)] += bc
        sink.add(block)

    i = -1
    for i, item in enumerate(texts):
        if isinstance(item, str | bytes | bytearray):
            try:
                ids = ids_of.text(item if isinstance(item, str) else to_text(bytes(item)))
            except InputError as exc:
                err = InputError(f"text #{i}: {exc}")
                err.text_index, err.text_detail = i, str(exc)  # type: ignore[attr-defined]
                raise err from None
        elif isinstance(item, list | tuple):
            ids = ids_of.tokens(list(item))
        else:
            raise InputError(
                f"corpus item #{i} is a {type(item).__name__}; give texts (str) or token lists (list[str])."
            )
        n = len(ids)
        if not n:
            continue
        buf.append(np.array(ids, dtype=np.int32))
        buffered += n
        while n > max_sentence_length:
            lengths.append(max_sentence_length)
            n -= max_sentence_length
        lengths.append(n)
        if buffered >= _BLOCK:
            flush()
            if on_block is not None:
                on_block(sink.n)
    if buf:
        flush()
    words = ids_of.words()
    if len(counts) < len(words):
        counts = np.concatenate([counts, np.zeros(len(words) - len(counts), np.int64)])
    return _Scan(words, counts, lengths, i + 1)


def _scan_serial(texts: Iterable[Any], analyzer: Analyzer, max_sentence_length: int, mmap_threshold: int,
                 tmpdir: Path | None, progress: Callable[[int], None] | None) -> Scanned:
    sink = _IdSink(mmap_threshold, tmpdir)
    reported = 0

    def on_block(n: int) -> None:
        nonlocal reported
        if progress is not None and n - reported >= _BLOCK:
            reported = n
            progress(n)

    try:
        scan = _scan(texts, analyzer, max_sentence_length, sink, on_block)
    except BaseException:
        if sink.fh is not None:
            sink.fh.close()
        _cleanup(sink.folder)
        raise
    return Scanned(scan.words, scan.counts, np.asarray(scan.lengths, dtype=np.int64), int(sink.n),
                   [(block, None) for block in sink.pieces()], sink.folder)


def _remap_kernel() -> Any:
    try:
        from embedstack.static._corpus_kernels import remap_chunk
    except ImportError:  # numba missing: the numpy path of _remap gives the same arrays
        return None
    return remap_chunk


def _remap(pieces: list[tuple[np.ndarray, np.ndarray | None]], raw_off: np.ndarray, remap: np.ndarray,
           to_file: Path | None, *, kernel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Final ids and sentence offsets of the provisional stream ``pieces`` (in order; ``remap[map[raw]]``
    is a token's final id, -1 drops it), written to ``to_file`` (memory-mapped) or kept in memory.

    Sentences left empty by dropped words vanish from the offsets. The ids are written straight into
    one array (no per-chunk arrays, no final concatenation), and ``pieces`` is emptied as it is read so
    that the memory of the provisional stream is handed back while the final one grows. ``kernel``
    False: numpy only (same arrays).
    """
    remap_chunk = _remap_kernel() if kernel else None
    total = sum(len(raw) for raw, _ in pieces)
    new_off = np.empty(len(raw_off), dtype=np.int64)
    out = np.empty(total if to_file is None else min(total, _CHUNK), dtype=np.int32)
    out_fh = open(to_file, "wb") if to_file is not None else None  # noqa: SIM115 - closed below
    base = 0  # kept tokens so far
    pos = 0  # provisional tokens so far
    pieces.reverse()
    try:
        while pieces:
            raw, lmap = pieces.pop()
            table = remap if lmap is None else remap[lmap]
            n = len(raw)
            for a in range(0, n, _CHUNK):
                b = min(n, a + _CHUNK)
                lo, hi = np.searchsorted(raw_off, [pos + a, pos + b], side="left")  # sentences starting here
                starts = raw_off[lo:hi] - (pos + a)
                chunk = np.asarray(raw[a:b])
                dst = out[base: base + b - a] if out_fh is None else out[: b - a]
                if remap_chunk is not None:
                    k = int(remap_chunk(chunk, table, starts, new_off[lo:hi], base, dst))
                else:
                    mapped = table[chunk]
                    drop = mapped < 0
                    dropped = np.flatnonzero(drop)
                    k = len(mapped) - len(dropped)
                    if len(dropped):
                        new_off[lo:hi] = base + starts - np.searchsorted(dropped, starts, side="left")
                        np.compress(~drop, mapped, out=dst[:k])
                    else:
                        new_off[lo:hi] = base + starts
                        dst[:k] = mapped
                if out_fh is not None:
                    out_fh.write(dst[:k].data)
                base += k
            pos += n
            del raw, chunk
    finally:
        if out_fh is not None:
            out_fh.close()
    new_off[-1] = base
    nonempty = np.diff(new_off) > 0
    offsets = np.concatenate([new_off[:-1][nonempty], new_off[-1:]])
    if to_file is not None:
        ids = np.memmap(to_file, dtype=np.int32, mode="r", shape=(base,)) if base else np.zeros(0, np.int32)
    else:
        ids = out[:base] if 4 * base >= 3 * total else out[:base].copy()  # a copy when many words were dropped
    return ids, offsets


def _texts(corpus: CorpusLike, encoding: str = "utf-8", errors: str = "strict") -> Iterable[Any]:
    if isinstance(corpus, str | os.PathLike):
        from embedstack.data import iter_texts

        return iter_texts(corpus, encoding=encoding, errors=errors)
    if isinstance(corpus, bytes | bytearray):
        raise InputError("give the corpus as a path or an iterable of texts, not one bytes object.")
    try:
        return iter(corpus)
    except TypeError:
        raise InputError(
            f"corpus must be a path, an iterable of texts or of token lists; got {type(corpus).__name__}."
        ) from None
