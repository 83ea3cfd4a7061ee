"""Write a ``.npy`` file row block by row block when the row count is not known in advance."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["NpyStreamWriter"]

_HEADER_BYTES = 128  # magic (6) + version (2) + length (2) + dict padded with spaces and '\n'


class NpyStreamWriter:
    """Append float32 rows to a ``.npy`` file; :meth:`close` fixes the shape and returns a memmap.

    The header is written with a fixed size, then rewritten in place with the final row count, so
    memory use does not grow with the number of rows.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "v.npy"
        >>> w = NpyStreamWriter(p, 2)
        >>> w.write(np.ones((3, 2), np.float32)); w.write(np.zeros((1, 2), np.float32))
        >>> w.close().shape
        (4, 2)
    """

    def __init__(self, path: str | os.PathLike[str], dim: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dim = int(dim)
        self.rows = 0
        self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._fh.write(_header(0, self.dim))

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) rows, got {block.shape}")
        self._fh.write(block.tobytes())
        self.rows += block.shape[0]

    def close(self) -> np.ndarray:
        self._fh.seek(0)
        self._fh.write(_header(self.rows, self.dim))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        if self.rows == 0:
            return np.load(self.path)
        return np.load(self.path, mmap_mode="r")


def _header(rows: int, dim: int) -> bytes:
    body = repr({"descr": "<f4", "fortran_order": False, "shape": (rows, dim)}).encode("latin1")
    room = _HEADER_BYTES - 10
    if len(body) + 1 > room:  # pragma: no cover - needs > 10^80 rows
        raise ValueError("shape too large for the fixed header")
    body = body + b" " * (room - len(body) - 1) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body
