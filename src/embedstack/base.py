"""Core protocols shared by every generation, and the Component save/load contract.

* ``DenseEncoder.encode(texts, *, role, batch_size) -> float32 (n, dim)``; one string gives one
  ``(dim,)`` vector, as in sentence-transformers (:func:`one_text_one_vector`).
* ``SparseEncoder.encode_sparse(texts, *, role) -> scipy.sparse.csr_array (n, vocab)``.
* ``MultiVectorEncoder.encode_tokens(texts, *, role) -> list[float32 (t_i, dim)]``.
* ``Reranker.score(pairs) -> float32 (n,)``.
* ``VectorIndex``: ``add``, batched ``search``, ``remove``, ``len``, ``save``/``load``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
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
    "one_text_one_vector",
    "progress_kwargs",
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

    def add(self, vectors: np.ndarray, ids: Sequence[str]) -> Any: ...  # returns the index (fluent)

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[Hit]]: ...

    def remove(self, ids: Sequence[str]) -> int: ...

    def __len__(self) -> int: ...

    def save(self, path: str | os.PathLike[str]) -> None: ...


def one_text_one_vector(encode: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a DenseEncoder's ``encode``: a list gives ``(n, dim)``, one string a ``(dim,)`` vector.

    The one place where ``enc.encode("one text")`` is handled, for every dense encoder (transformers,
    LSA, pooled word vectors ...), the way sentence-transformers users expect.

    Example:
        >>> class Ones:
        ...     @one_text_one_vector
        ...     def encode(self, texts, *, role="document", batch_size=64):
        ...         return np.ones((len(texts), 3), dtype=np.float32)
        >>> Ones().encode("one text").shape, Ones().encode(["a", "b"]).shape
        ((3,), (2, 3))
    """

    @functools.wraps(encode)
    def wrapper(self: Any, texts: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(texts, str):
            return encode(self, [texts], *args, **kwargs)[0]
        return encode(self, texts, *args, **kwargs)

    return wrapper


def progress_kwargs(encode: Callable[..., Any], report: Callable[[int], None]) -> dict[str, Any]:
    """``{"progress": report}`` when ``encode`` reports per batch (takes a ``progress`` keyword), else ``{}``.

    Callers that encode in slices pass it along, so a bar moves per batch (a transformer's 1,024-text
    slice is 16 batches) and not only per slice.
    """
    import inspect

    try:
        takes = "progress" in inspect.signature(encode).parameters
    except (TypeError, ValueError):  # builtins, C extensions
        takes = False
    return {"progress": report} if takes else {}


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

    def save(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Save atomically to the folder ``path``, with a checksum of every file in its manifest.

        An existing ``path`` is replaced whole only if it is an earlier save of the same type (or an
        empty folder); anything else raises :class:`~embedstack.errors.OutputExistsError` unless
        ``force=True``.
        """
        from embedstack.io import atomic_dir, save_arrays, write_manifest

        arrays, state = self._state()
        with atomic_dir(path, kind=self.type_name or None, force=force) as tmp:
            save_arrays(tmp / "arrays.safetensors", arrays)
            write_manifest(tmp, self.type_name, self.get_config(), state=state)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = False, verify: bool | None = None) -> Component:
        """Load a folder written by :meth:`save`, checking the files against the manifest's checksums.

        Args:
            path: the saved folder.
            mmap: memory-map the arrays instead of reading them.
            verify: hash every file against its recorded sha256 (default: yes, unless the environment
                sets ``EMBEDSTACK_VERIFY=0``); sizes are checked either way.

        Raises:
            FormatError: the folder is not a saved component of this type, or a file is damaged.
        """
        from embedstack.io import load_arrays, read_manifest, verify_enabled, verify_files
        from embedstack.io.manifest import listed_sha256

        manifest = read_manifest(path, expected_type=cls.type_name or None)
        # read into memory: arrays.safetensors is hashed on the bytes load_arrays reads, not read twice
        defer = "arrays.safetensors" if not mmap and verify_enabled(verify) else None
        verify_files(path, manifest, verify=verify, defer=defer)
        obj = cls.from_config(manifest["config"])
        arrays = load_arrays(Path(path) / "arrays.safetensors", mmap=mmap,
                             sha256=listed_sha256(manifest, defer) if defer else None)
        obj._set_state(arrays, manifest.get("state", {}))
        return obj
