"""Atomic persistence and the output guard: the one way embedstack writes files and folders.

Every writer builds its output in a temporary sibling (``.NAME.XXXX.tmp``), fsyncs it and renames it
over the target, so a process killed at any point leaves either the previous version or the new one,
never a mix, and a failed write (bad input, Ctrl-C) leaves the previous version byte-identical:

* :func:`atomic_dir` — a folder (component, index, model), swapped in with one ``renameat2``
  exchange where the kernel has it;
* :class:`AtomicFile` / :func:`atomic_write_bytes` / :func:`atomic_write_text` — a file, also when it
  is streamed block by block (``.npy`` output, downloads).

Temporary siblings are named ``.NAME.PID.XXXX.tmp``; those of killed writers (their process is gone)
are removed by the next write of the same target (:func:`sweep_stale`).

Before anything is replaced :func:`check_output` decides whether it may be: an existing folder only if
it is an embedstack artifact of the same kind (``manifest.json`` with a matching ``type``, or the
``embedstack.json`` marker of a sentence-transformers model folder) or empty; an existing file only if
a file is being written. Anything else raises :class:`~embedstack.errors.OutputExistsError` unless
``force=True`` (``--force``). The current folder, its ancestors, ``/``, the folders directly under it
(``/tmp``, ``/usr`` ...) and the home folder are never replaced, forced or not.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from embedstack.errors import EmbedstackError, OutputError, OutputExistsError

__all__ = [
    "AtomicFile",
    "Kind",
    "SENTENCE_MODEL",
    "artifact_manifest",
    "atomic_dir",
    "atomic_file",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_download_target",
    "check_output",
    "fsync_dir",
    "recover_dir",
    "sweep_stale",
    "temp_prefix",
]

#: kind of a sentence-transformers model folder written by embedstack (marked by ``embedstack.json``)
SENTENCE_MODEL = "sentence-transformers model"
_MARKER = "embedstack.json"

#: what may be replaced: a manifest ``type``, several, a predicate over the manifest, or None (any artifact)
Kind = str | Collection[str] | Callable[[dict[str, Any]], bool] | None


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that a rename inside it is durable."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


# --------------------------------------------------------------------------- the output guard

def artifact_manifest(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of the embedstack artifact folder ``path``, or None when it is not one.

    Sentence-transformers folders written by embedstack (``embedstack.json`` marker, no
    ``manifest.json``) get ``{"type": SENTENCE_MODEL}``.
    """
    p = Path(path)
    manifest = p / "manifest.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if isinstance(data, dict) and isinstance(data.get("type"), str) and "format_version" in data:
            return data
        return None
    if (p / _MARKER).is_file():
        return {"type": SENTENCE_MODEL}
    return None


def _matches(manifest: dict[str, Any], kind: Kind) -> bool:
    if kind is None:
        return True
    if isinstance(kind, str):
        return bool(manifest.get("type") == kind)
    if callable(kind):
        return bool(kind(manifest))
    return manifest.get("type") in kind


def _kind_label(kind: Kind) -> str:
    if isinstance(kind, str):
        return repr(kind)
    if kind is None or callable(kind):
        return str(getattr(kind, "label", "artifact"))
    return " or ".join(repr(k) for k in sorted(kind))


def _protected(resolved: Path) -> str | None:
    """Why ``resolved`` must never be replaced (None when it may be)."""
    if resolved == Path(resolved.anchor):
        return "the root folder"
    try:
        cwd: Path | None = Path.cwd().resolve()
    except OSError:  # the current folder was deleted
        cwd = None
    if cwd is not None and resolved == cwd:
        return "the current folder"
    if cwd is not None and resolved in cwd.parents:
        return "a folder that holds the current folder"
    try:
        home: Path | None = Path.home().resolve()
    except (OSError, RuntimeError):  # no HOME and no password entry
        home = None
    if home is not None and (resolved == home or resolved in home.parents):
        return "the home folder" if resolved == home else "a folder that holds the home folder"
    return None


def _describe(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"it holds {shown}"


def check_output(path: str | os.PathLike[str], *, kind: Kind = None, force: bool = False,
                 file: bool = False, header: bytes | tuple[bytes, ...] | None = None) -> Path:
    """Check that writing ``path`` destroys nothing but an earlier artifact of the same kind; return it.

    Args:
        path: the file or folder about to be (re)written.
        kind: for folders, what an existing folder must be to be replaced: a manifest ``type``, a set
            of them, a predicate over the manifest, or None (any embedstack artifact). Empty folders
            may always be replaced.
        force: replace whatever is at ``path`` (a foreign folder, a file where a folder goes ...).
        file: a file is being written: an existing regular file may be replaced, a folder may not.
        header: with ``file``, the first bytes of what is written (one or several): an existing
            non-empty file that starts otherwise is not an earlier output and is refused
            (``-o notes.npy`` over a text file, ``--out README.md`` for a report).

    Raises:
        OutputExistsError: ``path`` holds something else (or is the current folder, one of its
            ancestors, the root or the home folder, which are refused even with ``force``).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "notes.txt").write_text("mine")
        >>> check_output(d, kind="BM25")
        Traceback (most recent call last):
        ...
        embedstack.errors.OutputExistsError: ... is a folder that is not an embedstack 'BM25' (it holds notes.txt). Choose another path, or pass force=True to replace it.
    """
    target = Path(path).expanduser()
    resolved = target.resolve()
    why = _protected(resolved)
    if why is None and force and len(resolved.parts) <= 2 and resolved.is_dir():
        why = "a top-level folder"  # /tmp, /usr, a mounted /data: --force never deletes one whole
    if why is not None:
        raise OutputExistsError(
            f"{os.fspath(path)!r} is {why} ({resolved}); embedstack never replaces it, even when forced. "
            "Name a new file or folder inside it instead.", can_force=False)
    if not os.path.lexists(target) or force:
        return target
    if file:
        if target.is_file():
            if header is not None and target.stat().st_size:
                heads = (header,) if isinstance(header, bytes) else header
                with open(target, "rb") as fh:
                    first = fh.read(max(len(h) for h in heads))
                if not any(first.startswith(h) for h in heads):
                    raise OutputExistsError(f"{target} exists and was not written by this command (it does not "
                                            f"start with {heads[0][:24]!r}); writing there would destroy it.")
            return target
        what = "a folder" if target.is_dir() else "not a regular file"
        raise OutputExistsError(f"{target} is {what}, so writing a file there would destroy it.")
    if target.is_dir():
        manifest = artifact_manifest(target)
        if manifest is not None and _matches(manifest, kind):
            return target
        if not any(target.iterdir()):
            return target
        if manifest is not None:
            raise OutputExistsError(f"{target} holds an embedstack {manifest['type']!r}, not a {_kind_label(kind)}; "
                                    "saving here would destroy it.")
        raise OutputExistsError(f"{target} is a folder that is not an embedstack {_kind_label(kind)} "
                                f"({_describe(target)}).")
    raise OutputExistsError(f"{target} is a file, not an embedstack {_kind_label(kind)} folder; saving there would destroy it.")


def check_download_target(target: str | os.PathLike[str], what: str) -> Path:
    """A download folder in embedstack's cache may be filled only when it is absent or empty.

    Anything already there (a partial copy made by hand, files that are not ours) is left alone: the
    user is asked to move it, instead of the download deleting it.
    """
    p = Path(target)
    if p.is_dir() and any(p.iterdir()):
        raise OutputExistsError(f"{p} exists but is not a complete {what} ({_describe(p)}); embedstack will not "
                                "delete it to download a fresh copy. Move or delete it yourself, then try again.",
                                can_force=False)
    if os.path.lexists(p) and not p.is_dir():
        raise OutputExistsError(f"{p} is a file where the {what} folder goes; move or delete it, then try again.",
                                can_force=False)
    return p


# --------------------------------------------------------------------------- temporary siblings

def temp_prefix(target: Path) -> str:
    """Prefix of this process's temporary siblings of ``target``: ``.NAME.PID.``."""
    return f".{target.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process
        return True
    return True


def sweep_stale(target: Path, suffix: str = ".tmp") -> int:
    """Delete temporary siblings of ``target`` left by writers that were killed; return how many.

    Only names ``.NAME.PID.*SUFFIX`` whose process no longer runs are removed, so a concurrent writer's
    temporary file is never touched.
    """
    removed = 0
    head = f".{target.name}."
    try:
        candidates = [p for p in target.parent.iterdir() if p.name.startswith(head) and p.name.endswith(suffix)]
    except OSError:
        return 0
    for p in candidates:
        m = _TEMP_TAIL.fullmatch(p.name[len(head):len(p.name) - len(suffix)])  # PID.random: not another target's temp
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            _remove(p)
            removed += 1
    return removed


_TEMP_TAIL = re.compile(r"(\d+)\.[a-z0-9_]{8}")  # tempfile's 8 random characters


# --------------------------------------------------------------------------- permissions

def _umask() -> int:
    """The process umask, read without changing it where /proc allows (mkstemp/mkdtemp ignore it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _set_mode(tmp: Path, target: Path, default: int) -> None:
    """Give ``tmp`` the mode of the ``target`` it replaces, or what a plain open/mkdir would give."""
    try:
        mode = target.stat().st_mode & 0o7777 if target.exists() else default & ~_umask()
        os.chmod(tmp, mode)
    except OSError:  # pragma: no cover - filesystems without modes
        pass


# --------------------------------------------------------------------------- files

@contextlib.contextmanager
def _writable(target: Path) -> Iterator[None]:
    """An OSError while preparing or committing ``target`` (a missing or read-only folder, no permission)
    becomes one :class:`~embedstack.errors.OutputError` naming ``target``, not a temp file's traceback."""
    try:
        yield
    except EmbedstackError:
        raise
    except OSError as exc:
        above = next((p for p in target.parents if os.path.lexists(p)), None)
        why = (f"{above} is a file, not a folder" if above is not None and not above.is_dir()
               else exc.strerror or str(exc))
        raise OutputError(f"cannot write {target}: {why}. Choose a path in a writable folder.") from None


class AtomicFile:
    """A file written in a temporary sibling and renamed over ``path`` by :meth:`commit`.

    Use it as a context manager (commit on success, :meth:`abort` on any exception, Ctrl-C included),
    or call :meth:`commit` / :meth:`abort` yourself for writers that outlive one ``with`` block (the
    streamed ``.npy`` writer). :attr:`tmp` is the path to write; it exists (empty) from the start.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
        >>> with AtomicFile(p) as f:
        ...     _ = f.tmp.write_bytes(b"new")
        >>> p.read_bytes()
        b'new'
    """

    def __init__(self, path: str | os.PathLike[str], *, force: bool = False) -> None:
        self.path = check_output(path, force=force, file=True)
        self.force = force
        with _writable(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            sweep_stale(self.path)
            fd, tmp = tempfile.mkstemp(prefix=temp_prefix(self.path), suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.done = False
        _set_mode(self.tmp, self.path if self.path.is_file() else Path(tmp) / "-", 0o666)

    def commit(self) -> Path:
        """fsync the temporary file and rename it over the target (checked again first)."""
        if self.done:
            return self.path
        try:
            check_output(self.path, force=self.force, file=True)
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if self.force and self.path.is_dir() and not self.path.is_symlink():
                _replace_dir_with(self.tmp, self.path)
            else:
                os.replace(self.tmp, self.path)
            fsync_dir(self.path.parent)
        except BaseException:
            self.abort()
            raise
        self.done = True
        return self.path

    def abort(self) -> None:
        """Remove the temporary file; the target is left as it was."""
        self.done = True
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed."""
    with AtomicFile(path, force=force) as f:
        yield f.tmp


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, force: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (an existing regular file is replaced; a folder only with ``force``)."""
    with AtomicFile(path, force=force) as f, open(f.tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, force: bool = False) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), force=force)


# --------------------------------------------------------------------------- folders

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.cache
def _libc_renameat2() -> Any:
    """libc's renameat2, looked up on the first folder swap (not when embedstack.io is imported)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):  # pragma: no cover - not Linux/glibc >= 2.28
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    renameat2 = _libc_renameat2()
    if renameat2 is None:
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def _replace_dir_with(new: Path, target: Path) -> None:
    """Put ``new`` at ``target`` (which exists) and delete the old ``target``, with no moment without one."""
    if _exchange(new, target):  # new is now at target, the old version at new's name
        fsync_dir(target.parent)
        _remove(new)
        return
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    os.replace(target, old)
    fsync_dir(target.parent)
    os.replace(new, target)  # a crash between the two renames leaves `old`, which recover_dir puts back
    fsync_dir(target.parent)
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, kind: Kind = None, force: bool = False) -> Iterator[Path]:
    """Build a directory in a temporary sibling and move it into place on success.

    An existing ``path`` is replaced only if :func:`check_output` allows it (an artifact of ``kind``,
    an empty folder, or anything with ``force=True``), checked before the body runs and again before
    the swap. The swap is one atomic exchange of the two folders where the kernel supports it;
    elsewhere the old tree is renamed aside first, and a crash between the two renames leaves
    ``.NAME.old-PID``, which :func:`recover_dir` puts back.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "model"
        >>> with atomic_dir(d) as tmp:
        ...     _ = (tmp / "a.txt").write_text("hi")
        >>> (d / "a.txt").read_text()
        'hi'
    """
    target = Path(path).expanduser()
    with _writable(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        recover_dir(target)
        check_output(target, kind=kind, force=force)
        sweep_stale(target)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent))
    _set_mode(tmp, target if target.is_dir() else tmp / "-", 0o777)
    try:
        yield tmp
        _fsync_tree(tmp)
        check_output(target, kind=kind, force=force)
        if os.path.lexists(target):
            if target.is_dir() and not target.is_symlink():
                _replace_dir_with(tmp, target)
            else:  # a file (or link) where the folder goes, allowed by force
                _replace_file_with_dir(tmp, target)
        else:
            os.replace(tmp, target)
            fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_file_with_dir(new: Path, target: Path) -> None:
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    os.replace(target, old)
    os.replace(new, target)
    fsync_dir(target.parent)
    _remove(old)


def recover_dir(target: Path) -> None:
    """Restore ``target`` from a ``.name.old-*`` sibling left by a crash between two renames."""
    target = Path(target)
    if os.path.lexists(target):
        return
    for old in sorted(target.parent.glob(f".{target.name}.old-*")):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue  # a live writer is between its two renames: the next one puts its new version in place
        try:
            os.replace(old, target)
        except OSError:  # a read-only mount, a race with another reader: load what is there, or fail typed later
            return
        fsync_dir(target.parent)
        return
