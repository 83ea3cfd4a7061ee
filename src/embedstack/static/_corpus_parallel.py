"""The corpus pass of :class:`~embedstack.static._corpus.IdCorpus` on several worker processes.

Tokenizing is Python work (a regex, a dict lookup per token), so threads do not help: this module
cuts a corpus given as a path into *units* and scans each in a worker process (never forked from
the caller, where numba's or torch's threads may be running; see below). A unit is a run of
whole corpus files (read exactly as :func:`embedstack.data.iter_texts` reads them: gzip, JSON lines,
WikiExtractor ``<doc>`` files, any encoding) or a byte range of a plain-text file (one text per line)
that starts and ends at line boundaries. Each worker tokenizes its unit with the same analyzer
(rebuilt from :meth:`Analyzer.get_config`), gives its words local ids in first-seen order and sends
back the local id stream, the words, their counts and the sentence lengths. The parent merges the
units in corpus order: a unit's words get global ids in first-seen order of the concatenated corpus,
the counts are summed, and the local streams are remapped straight to final ids. The vocabulary, ids
and offsets are therefore the ones the serial pass gives.

Errors keep the serial pass's type and message: a unit that fails reports its exception; the parent
raises the first one in corpus order (after the units before it succeeded, as the serial pass
would). A decoding error inside a byte range is re-read from the start of its file, so the message
names the file's line and byte offset; a tokenizer error gets its corpus-wide text number.

Used only where it pays: inputs under :data:`MIN_PARALLEL_BYTES`, single gzip or UTF-16/32 files
(they cannot be cut), iterables of texts, analyzers that are not exactly
:class:`~embedstack.text.Analyzer` (their config may not rebuild them) stay serial. Workers are
forked from a ``forkserver`` that imported and warmed the worker code once (:mod:`._corpus_warm`;
``spawn`` where there is no forkserver); if they cannot run (e.g. a script without an
``if __name__ == "__main__":`` guard, whose workers re-run it and fail), the corpus is read serially.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

import numpy as np

from embedstack.errors import EmbedstackError, InputError
from embedstack.text import Analyzer

if TYPE_CHECKING:
    from embedstack.static._corpus import Scanned

__all__ = ["MIN_PARALLEL_BYTES", "plan", "scan_parallel"]

log = logging.getLogger(__name__)

#: inputs smaller than this (bytes on disk, gzip counted x3) are read in the calling process: the
#: workers' start (~0.3 s, ~1 s with numba's tokenizer) and the merge cost more than they save there
MIN_PARALLEL_BYTES = 32 << 20
#: the smallest unit of work handed to a worker (bytes on disk)
MIN_UNIT_BYTES = 4 << 20
#: units per worker: more balance the load and the progress reports, fewer merge faster
UNITS_PER_WORKER = 3
_GZIP_RATIO = 3  # a gzip file counts as this many times its size
_POLL = 0.2  # seconds between progress reports while waiting for a unit

Segment = tuple[str, int, int]  # (file, first byte, end byte); end < 0: the whole file, as iter_texts reads it


# ---------------------------------------------------------------------------------------------- plan
def plan(corpus: Any, *, encoding: str, errors: str, workers: int) -> list[list[Segment]] | None:
    """Units of work for ``corpus`` (a path or dataset name already checked by ``iter_texts``), or None
    when it should be read serially (small, a single file that cannot be cut, one unit only)."""
    from embedstack.data._corpus import iter_files
    from embedstack.data._io import _WIDE, is_gzip
    from embedstack.data._registry import resolve_dataset

    if workers < 2:
        return None
    path = resolve_dataset(corpus)
    files = [path] if path.is_file() else list(iter_files(path))
    sized: list[tuple[Path, int, bool]] = []
    for f in files:
        try:
            size = f.stat().st_size
        except OSError:
            return None  # the serial pass reports it
        sized.append((f, size, is_gzip(f)))
    weights = [size * (_GZIP_RATIO if gz else 1) for _, size, gz in sized]
    total = sum(weights)
    if total < MIN_PARALLEL_BYTES:
        return None
    target = max(MIN_UNIT_BYTES, math.ceil(total / (workers * UNITS_PER_WORKER)))
    cuttable = not codecs.lookup(encoding).name.startswith(_WIDE)
    units: list[list[Segment]] = []
    unit: list[Segment] = []  # whole files, gathered up to about ``target``
    acc = 0
    for (f, size, gz), weight in zip(sized, weights, strict=True):
        parts = math.ceil(size / target)
        if parts > 1 and cuttable and not gz and _first_kind(f, encoding, errors) == "lines":
            if unit:
                units.append(unit)
                unit, acc = [], 0
            bounds = _line_bounds(f, size, parts)
            units.extend([(str(f), a, b)] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
            continue
        unit.append((str(f), 0, -1))
        acc += weight
        if acc >= target:
            units.append(unit)
            unit, acc = [], 0
    if unit:
        units.append(unit)
    return units if len(units) > 1 else None


def _first_kind(path: Path, encoding: str, errors: str) -> str | None:
    """The kind ``iter_texts(kind="auto")`` gives ``path`` (from its first non-blank line), or None
    when that line cannot be read (the unit then reads the whole file, and fails as the serial pass does)."""
    from embedstack.data._corpus import _detect
    from embedstack.data._io import iter_lines

    try:
        for _, line in iter_lines(path, encoding=encoding, errors=errors):
            if line.strip():
                return _detect(path, line)
    except EmbedstackError:
        return None
    return None


def _line_bounds(path: Path, size: int, parts: int) -> list[int]:
    """``parts + 1`` (or fewer) increasing byte offsets from 0 to ``size``, each the start of a line."""
    bounds = [0]
    with open(path, "rb") as fh:
        for j in range(1, parts):
            pos = size * j // parts
            if pos <= bounds[-1]:
                continue
            fh.seek(pos - 1)
            fh.readline()  # to the end of the line holding byte pos - 1: the next line starts at or after pos
            start = fh.tell()
            if start >= size:
                break
            bounds.append(start)
    bounds.append(size)
    return bounds


# ---------------------------------------------------------------------------------------------- workers
class _Task(NamedTuple):
    segments: tuple[Segment, ...]
    cwd: str  # the caller's working directory: relative paths (as they appear in messages) resolve there
    encoding: str
    errors: str
    analyzer: dict[str, Any]
    max_sentence_length: int
    spill_threshold: int
    spill_dir: str


class _Failure(NamedTuple):
    error: tuple[str, str, dict[str, Any], str | None]  # plain data (see _portable), rebuilt by _rebuild
    text: int | None  # the unit's text number of a tokenizer error ("text #N: ...")
    reread: str | None  # the file whose byte range failed to read: re-read it for the file-wide message


class _Result(NamedTuple):
    words: list[Any]
    counts: np.ndarray
    lengths: np.ndarray
    n_texts: int
    n_tokens: int
    ids: list[np.ndarray]  # blocks in memory, or
    ids_file: str | None  # the stream spilled to this file (int32)
    logs: list[tuple[str, int, str]]
    failure: _Failure | None


_counter: Any = None  # tokens scanned by all workers (a shared multiprocessing.Value)
_analyzers: dict[str, Analyzer] = {}


def _init_worker(counter: Any) -> None:
    global _counter
    _counter = counter


def _add_tokens(n: int) -> None:
    if _counter is not None and n:
        with _counter.get_lock():
            _counter.value += n


class _Collect(logging.Handler):
    """Keeps the worker's warnings, re-logged by the parent (a spawned process has no log setup)."""

    def __init__(self, out: list[tuple[str, int, str]]) -> None:
        super().__init__(logging.WARNING)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        self.out.append((record.name, record.levelno, record.getMessage()))


def _analyzer(config: dict[str, Any]) -> Analyzer:
    key = json.dumps(config, sort_keys=True)
    a = _analyzers.get(key)
    if a is None:
        a = _analyzers[key] = Analyzer.from_config(config)
    return a


def _byte_range(fh: BinaryIO, size: int) -> Iterator[bytes]:
    if size <= 0:
        return
    for line in fh:
        yield line
        size -= len(line)
        if size <= 0:
            return


def _range_texts(name: str, start: int, end: int, encoding: str, errors: str) -> Iterator[str]:
    """The texts of lines ``[start, end)`` of a plain file, as ``iter_texts`` reads them (kind "lines")."""
    from embedstack.data._io import iter_stream_lines

    with open(name, "rb") as fh:
        fh.seek(start)
        for _, line in iter_stream_lines(_byte_range(fh, end - start), name, encoding=encoding, errors=errors):
            if line.strip():
                yield line


def _unit_texts(task: _Task, where: list[str | None]) -> Iterator[str]:
    from embedstack.data._corpus import _iter_file

    for name, start, end in task.segments:
        if end < 0:
            where[0] = None
            yield from _iter_file(Path(name), "auto", task.encoding, task.errors, "text")
        else:
            where[0] = name
            yield from _range_texts(name, start, end, task.encoding, task.errors)


def _portable(exc: EmbedstackError) -> tuple[str, str, dict[str, Any], str | None]:
    """A worker's error as plain data (class name, message, ``fix``, text detail) for the parent."""
    return (type(exc).__name__, exc._base(), dict(exc.fix), getattr(exc, "text_detail", None))


def _rebuild(data: tuple[str, str, dict[str, Any], str | None]) -> EmbedstackError:
    """The typed error a worker reported: its class from ``embedstack.errors`` (else InputError)."""
    from embedstack import errors

    name, message, fix, detail = data
    cls = getattr(errors, name, None)
    try:
        err = cls(message, fix=fix) if isinstance(cls, type) and issubclass(cls, EmbedstackError) else None
    except TypeError:  # a class whose constructor takes other arguments
        err = None
    if err is None:
        err = InputError(message, fix=fix)
    if detail is not None:
        err.text_detail = detail  # type: ignore[attr-defined]
    return err


def _run_unit(task: _Task) -> _Result:
    """Scan one unit (in a worker process)."""
    from embedstack.static._corpus import _IdSink, _scan

    if os.getcwd() != task.cwd:  # relative paths resolve as in the caller when it made the task
        os.chdir(task.cwd)
    analyzer = _analyzer(task.analyzer)
    sink = _IdSink(task.spill_threshold, Path(task.spill_dir))
    logs: list[tuple[str, int, str]] = []
    handler = _Collect(logs)
    logger = logging.getLogger("embedstack")
    logger.addHandler(handler)
    where: list[str | None] = [None]
    reported = 0

    def on_block(n: int) -> None:
        nonlocal reported
        _add_tokens(n - reported)
        reported = n

    failure: _Failure | None = None
    try:
        scan = _scan(_unit_texts(task, where), analyzer, task.max_sentence_length, sink, on_block)
    except EmbedstackError as exc:
        text = getattr(exc, "text_index", None)
        failure = _Failure(_portable(exc), text, where[0] if text is None else None)
    finally:
        logger.removeHandler(handler)
    if failure is not None:
        if sink.fh is not None:
            sink.fh.close()
        if sink.folder is not None:
            shutil.rmtree(sink.folder, ignore_errors=True)
        empty = np.zeros(0, np.int64)
        return _Result([], empty, empty, 0, 0, [], None, logs, failure)
    _add_tokens(sink.n - reported)
    spilled = sink.file
    if spilled is not None:
        sink.fh.close()
    return _Result(scan.words, scan.counts, np.asarray(scan.lengths, dtype=np.int64), scan.n_texts, sink.n,
                   [] if spilled is not None else sink.pieces(), None if spilled is None else str(spilled), logs, None)


# ---------------------------------------------------------------------------------------------- parent
def _failure_error(f: _Failure, text_base: int, encoding: str, errors: str) -> BaseException:
    """The error the serial pass raises for a unit's failure."""
    error = _rebuild(f.error)
    if f.text is not None:
        detail = getattr(error, "text_detail", str(error))
        return InputError(f"text #{text_base + f.text}: {detail}")
    if f.reread is not None:
        from embedstack.data._io import scan_lines

        try:
            scan_lines(f.reread, encoding=encoding, errors=errors)  # the same error, with the file's line numbers
        except EmbedstackError as exc:
            return exc
    return error


def _context() -> Any:
    """``forkserver`` where there is one (the server imports and warms the worker code once; each worker
    is then a fork of that single-threaded server), else ``spawn``. Never ``fork``: the calling process
    may run numba's or torch's threads."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["embedstack.static._corpus_warm"])  # only used when the server starts
    return ctx


def _ids_table() -> defaultdict[Any, int]:
    """A dict giving an unseen key the next id (``len``) inside the C-level lookup."""
    table: defaultdict[Any, int] = defaultdict()
    table.default_factory = table.__len__
    return table


def scan_parallel(units: list[list[Segment]], *, analyzer: Analyzer, encoding: str, errors: str, workers: int,
                  max_sentence_length: int, mmap_threshold: int, tmpdir: Path | None,
                  progress: Callable[[int], None] | None) -> Scanned | None:
    """Scan ``units`` on ``workers`` processes; None when processes cannot be used here (the caller then
    reads the corpus serially). Raises the serial pass's error for a bad corpus."""
    import multiprocessing
    from concurrent.futures import Future, ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from embedstack.static._corpus import Scanned

    if multiprocessing.current_process().daemon:  # a daemonic process may not start processes
        return None
    ctx = _context()
    try:
        counter = ctx.Value("q", 0)
    except OSError as exc:  # e.g. no usable /dev/shm for the shared counter
        log.warning("cannot share a counter with worker processes (%s); reading the corpus in this process.", exc)
        return None
    folder = Path(tempfile.mkdtemp(prefix="embedstack-ids-", dir=tmpdir))
    config = analyzer.get_config()
    spill = max(1, mmap_threshold // len(units))  # the units held in memory hold at most mmap_threshold ids
    tasks = [_Task(tuple(u), os.getcwd(), encoding, errors, config, max_sentence_length, spill, str(folder.resolve()))
             for u in units]
    pid = _ids_table()  # global provisional ids, first-seen order of the whole corpus
    counts = np.zeros(0, dtype=np.int64)
    lengths: list[np.ndarray] = []
    pieces: list[tuple[np.ndarray, np.ndarray | None]] = []
    n_texts = 0
    total = 0
    reported = 0
    failure: BaseException | None = None
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx, initializer=_init_worker,
                                 initargs=(counter,)) as pool:
            futures: list[Future[_Result]] = [pool.submit(_run_unit, t) for t in tasks]
            try:
                for fut in futures:
                    while True:
                        try:
                            res = fut.result(timeout=_POLL)
                            break
                        except TimeoutError:
                            if progress is not None and counter.value - reported >= 1 << 20:
                                reported = counter.value
                                progress(reported)
                    for name, level, message in res.logs:
                        logging.getLogger(name).log(level, "%s", message)
                    if res.failure is not None:
                        failure = _failure_error(res.failure, n_texts, encoding, errors)
                        break
                    lmap = np.fromiter(map(pid.__getitem__, res.words), dtype=np.int32, count=len(res.words))
                    if len(counts) < len(pid):
                        counts = np.concatenate([counts, np.zeros(len(pid) - len(counts), np.int64)])
                    counts[lmap] += res.counts
                    if res.ids_file is not None and res.n_tokens:
                        res.ids.append(np.memmap(res.ids_file, dtype=np.int32, mode="r", shape=(res.n_tokens,)))
                    pieces.extend((block, lmap) for block in res.ids)
                    lengths.append(res.lengths)
                    n_texts += res.n_texts
                    total += res.n_tokens
                    del res
            finally:
                for f in futures:
                    f.cancel()  # those not started yet (after a failure or an interrupt)
                del futures  # the results: their id blocks now live in ``pieces`` only
    except (BrokenProcessPool, OSError) as exc:  # the processes could not run (not an error of the corpus)
        pieces.clear()
        shutil.rmtree(folder, ignore_errors=True)
        log.warning("the corpus worker processes failed (%s); reading the corpus in this process instead. A script "
                    "that builds a corpus at import time needs an `if __name__ == \"__main__\":` guard for worker "
                    "processes (or pass workers=1).", exc)
        return None
    except BaseException:
        pieces.clear()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if failure is not None:
        pieces.clear()
        shutil.rmtree(folder, ignore_errors=True)
        raise failure from None
    if progress is not None and total > reported:
        progress(total)
    return Scanned(list(pid), counts, np.concatenate(lengths) if lengths else np.zeros(0, np.int64), total,
                   pieces, folder)
