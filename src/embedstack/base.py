"""Core protocols shared by every generation, and the Component save/load contract.

* ``DenseEncoder.encode(texts, *, role, batch_size) -> float32 (n, dim)``, always 2-D.
* ``SparseEncoder.encode_sparse(texts, *, role) -> scipy.sparse.csr_array (n, vocab)``.
* ``MultiVectorEncoder.encode_tokens(texts, *, role) -> list[float32 (t_i, dim)]``.
* ``Reranker.score(pairs) -> float32 (n,)``.
* ``VectorIndex``: ``add``, batched ``search``, ``remove``, ``len``, ``save``/``load``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from embedstack.errors import NotFittedError

__all__ = [
    "Role",
    "Hit",
    "DenseEncoder",
    "SparseEncoder",
    "MultiVectorEncoder",
    "Reranker",
    "VectorIndex",
    "Component",
    "check_is_fitted",
]

Role = Literal["document", "query"]


@dataclass(slots=True)
class Hit:
    """One search result: the user's id, its score, and optional per-stage scores and text."""

    id: str
    score: float
    stages: dict[str, float] = field(default_factory=dict)
    text: str | None = None
    metadata: dict[str, Any] | None = None


@runtime_checkable
class DenseEncoder(Protocol):
    """Anything that maps texts to one float32 vector each."""

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str], *, role: Role = "document", batch_size: int = 64) -> np.ndarray: ...


@runtime_checkable
class SparseEncoder(Protocol):
    """Anything that maps texts to sparse term-weight rows (a ``scipy.sparse.csr_array``)."""

    def encode_sparse(self, texts: Sequence[str], *, role: Role = "document") -> Any: ...


@runtime_checkable
class MultiVectorEncoder(Protocol):
    """Anything that maps each text to a matrix of token vectors (late interaction)."""

    def encode_tokens(self, texts: Sequence[str], *, role: Role = "document") -> list[np.ndarray]: ...


@runtime_checkable
class Reranker(Protocol):
    """Scores (query, document) pairs jointly."""

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray: ...


@runtime_checkable
class VectorIndex(Protocol):
    """A searchable collection of vectors keyed by user string ids."""

    def add(self, vectors: np.ndarray, ids: Sequence[str]) -> None: ...

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[Hit]]: ...

    def remove(self, ids: Sequence[str]) -> int: ...

    def __len__(self) -> int: ...

    def save(self, path: str | os.PathLike[str]) -> None: ...


def check_is_fitted(obj: object, attribute: str) -> None:
    """Raise NotFittedError unless ``obj`` has the learned ``attribute`` (trailing underscore)."""
    if getattr(obj, attribute, None) is None:
        raise NotFittedError(obj)


class Component:
    """Save/load contract: a folder holding ``manifest.json`` (type, format_version, config) + arrays.

    Subclasses set ``type_name``, register themselves in :mod:`embedstack.registry`, and implement
    ``get_config`` (JSON-able constructor arguments), ``_state`` (arrays + JSON state) and
    ``_set_state``.
    """

    type_name: ClassVar[str] = ""

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Component:
        return cls(**config)

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Return (arrays, JSON-able state) of the fitted model."""
        raise NotImplementedError

    def _set_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save atomically to the folder ``path`` (replaced whole if it exists)."""
        from embedstack.io import atomic_dir, save_arrays, write_manifest

        arrays, state = self._state()
        with atomic_dir(path) as tmp:
            save_arrays(tmp / "arrays.safetensors", arrays)
            write_manifest(tmp, self.type_name, self.get_config(), state=state)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = False) -> Component:
        """Load a folder written by :meth:`save`."""
        from embedstack.io import load_arrays, read_manifest

        manifest = read_manifest(path, expected_type=cls.type_name or None)
        obj = cls.from_config(manifest["config"])
        obj._set_state(load_arrays(Path(path) / "arrays.safetensors", mmap=mmap), manifest.get("state", {}))
        return obj
