"""Write a ``.npy`` file row block by row block, atomically, when the row count is not known in advance."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from embedstack.io.atomic import AtomicFile

__all__ = ["NpyStreamWriter"]

_HEADER_BYTES = 128  # magic (6) + version (2) + length (2) + dict padded with spaces and '\n'


class NpyStreamWriter:
    """Append float32 rows to a ``.npy`` file; :meth:`close` fixes the shape and returns a memmap.

    Rows go to a temporary sibling of ``path`` (through :class:`embedstack.io.AtomicFile`); the header
    is written with a fixed size and rewritten in place with the final row count, so memory use does
    not grow with the number of rows. :meth:`close` fsyncs the file and renames it over ``path``;
    :meth:`abort` (or leaving a ``with`` block by an exception, Ctrl-C included) removes it, so an
    existing ``path`` is never left half-written.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "v.npy"
        >>> w = NpyStreamWriter(p, 2)
        >>> w.write(np.ones((3, 2), np.float32)); w.write(np.zeros((1, 2), np.float32))
        >>> w.close().shape
        (4, 2)
    """

    def __init__(self, path: str | os.PathLike[str], dim: int, *, force: bool = False) -> None:
        self._file = AtomicFile(path, force=force)
        self.path = self._file.path
        self.dim = int(dim)
        self.rows = 0
        self._fh = open(self._file.tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._fh.write(_header(0, self.dim))

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) rows, got {block.shape}")
        self._fh.write(block.tobytes())
        self.rows += block.shape[0]

    def close(self) -> np.ndarray:
        """Finish the header, move the file into place and return it (memory-mapped when not empty)."""
        self._fh.seek(0)
        self._fh.write(_header(self.rows, self.dim))
        self._fh.flush()
        self._fh.close()
        self._file.commit()
        if self.rows == 0:
            return np.load(self.path)
        return np.load(self.path, mmap_mode="r")

    def abort(self) -> None:
        """Drop the partial file; ``path`` keeps its previous content (or stays absent)."""
        if not self._fh.closed:
            self._fh.close()
        self._file.abort()

    def __enter__(self) -> NpyStreamWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()


def _header(rows: int, dim: int) -> bytes:
    body = repr({"descr": "<f4", "fortran_order": False, "shape": (rows, dim)}).encode("latin1")
    room = _HEADER_BYTES - 10
    if len(body) + 1 > room:  # pragma: no cover - needs > 10^80 rows
        raise ValueError("shape too large for the fixed header")
    body = body + b" " * (room - len(body) - 1) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body
