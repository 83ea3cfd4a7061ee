"""A disk cache of text embeddings, keyed by model, settings and text content.

The ladder (and anything else that encodes the same corpus again) wraps a dense encoder in a
:class:`CachedEncoder`. Each vector is stored under

* a *namespace*: a hash of the model's identity (name and a hash of its weights file), every setting
  that changes the vectors (pooling, precision, max length, normalisation, truncation, dense head,
  backend), the role's prompt and :data:`CACHE_VERSION`; and
* a *text key*: the BLAKE2b-128 hash of the text itself,

so a different model, setting or corpus misses the cache, and a corpus that shares texts with an
earlier one (a query subset, another chunking) reuses them. One namespace is one safetensors file
``<cache>/embeddings/<namespace>.safetensors`` (``keys`` ``(n, 16)`` uint8, ``vectors`` ``(n, dim)``
float32) written through :func:`embedstack.io.save_arrays` (atomic: temp file, fsync, rename), with the
SHA-256 of both arrays and the namespace's description in its metadata. A file that is damaged,
truncated, of another namespace or whose checksum does not match is ignored (a warning) and rebuilt,
never trusted.

Example:
    >>> import tempfile, numpy as np
    >>> cache = EmbeddingCache(tempfile.mkdtemp())
    >>> ns = cache.namespace({"model": "toy", "pooling": "mean"})
    >>> cache.put(ns, text_keys(["a", "b"]), np.eye(2, dtype=np.float32))
    >>> _ = cache.flush()  # one atomic file per namespace
    >>> got, missing = cache.get(ns, text_keys(["b", "c"]))
    >>> got[0].tolist(), missing
    ([0.0, 1.0], [1])
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.errors import EmbedstackError

__all__ = ["CACHE_VERSION", "EmbeddingCache", "CachedEncoder", "text_keys", "encoder_settings", "default_cache_root"]

log = logging.getLogger(__name__)

#: Bumped when the way vectors are computed changes, so old cache files stop matching.
CACHE_VERSION = 1
_KEY_BYTES = 16


def default_cache_root() -> Path:
    """``<embedstack cache>/embeddings`` (``$EMBEDSTACK_CACHE_DIR``, else ``~/.cache/embedstack``)."""
    from embedstack.data._registry import cache_dir

    return cache_dir() / "embeddings"


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """``(n, 16)`` uint8: the BLAKE2b-128 digest of each text (UTF-8)."""
    out = np.empty((len(texts), _KEY_BYTES), dtype=np.uint8)
    for i, t in enumerate(texts):
        out[i] = np.frombuffer(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=_KEY_BYTES).digest(),
                               dtype=np.uint8)
    return out


def state_digest(module: Any) -> str:
    """SHA-256 of a torch module's tensors as they are in memory (names, float32 values).

    The weights the vectors come from, whatever file they were loaded from and whatever happened to them
    since (fine-tuning in this process changes the digest; the weights file on disk would not).
    """
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def encoder_settings(encoder: Any, *, role: str = "document", pooling: str | None = None,
                     digests: tuple[str, str | None] | None = None) -> dict[str, Any] | None:
    """What identifies ``encoder``'s vectors for ``role`` (None when the encoder cannot be cached).

    For a :class:`~embedstack.neural.sentence.SentenceEncoder`: its name, the SHA-256 of its weights as
    they are in memory (:func:`state_digest`) and of its dense head, pooling (``pooling`` overrides it),
    precision, backend, max length, normalisation, truncation and the role's prompt. ``digests`` passes
    (weights, dense head) digests already computed (hashing MiniLM's tensors takes ~0.1 s).
    """
    model = getattr(encoder, "model", None)
    tokenizer = getattr(encoder, "tokenizer", None)
    if model is None or tokenizer is None or not callable(getattr(encoder, "prompt_for", None)):
        return None
    if digests is None:
        dense = getattr(encoder, "dense", None)
        digests = (state_digest(model), state_digest(dense) if dense is not None else None)
    weights, dense_hash = digests
    return {
        "version": CACHE_VERSION,
        "model": str(getattr(encoder, "name", "")),
        "weights_sha256": weights,
        "vocab_size": int(getattr(tokenizer, "vocab_size", 0) or 0),
        "pooling": pooling or getattr(encoder, "pooling", None),
        "precision": getattr(encoder, "precision", None),
        "backend": getattr(encoder, "backend", None),
        "max_seq_length": getattr(encoder, "max_seq_length", None),
        "normalize": getattr(encoder, "normalize", None),
        "truncate_dim": getattr(encoder, "truncate_dim", None),
        "dense_sha256": dense_hash,
        "prompt": encoder.prompt_for(role),
        # int8-token's vectors depend on its product (by CPU); absent for other precisions (their keys unchanged)
        **({"int8_product": p} if (p := getattr(encoder, "int8_product", None)) else {}),
    }


class EmbeddingCache:
    """Vectors by (namespace, text key), in memory and in one safetensors file per namespace.

    Args:
        root: folder of the cache files (default :func:`default_cache_root`); None with
            ``persist=False`` keeps everything in memory.
        persist: write new vectors to disk (``False``: a per-process cache only).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, persist: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self.persist = persist
        self._mem: dict[str, tuple[dict[bytes, int], list[np.ndarray], dict[str, Any]]] = {}
        self.hits = 0
        self.misses = 0
        self.rejected: list[str] = []
        self._dirty: set[str] = set()

    @staticmethod
    def namespace(settings: Mapping[str, Any]) -> str:
        """A stable 32-hex-digit name for ``settings`` (JSON with sorted keys, SHA-256)."""
        blob = json.dumps(dict(settings), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]

    def path(self, ns: str) -> Path:
        return self.root / f"{ns}.safetensors"

    # ------------------------------------------------------------------------------------- storage
    def _load(self, ns: str) -> tuple[dict[bytes, int], list[np.ndarray], dict[str, Any]]:
        if ns in self._mem:
            return self._mem[ns]
        index: dict[bytes, int] = {}
        rows: list[np.ndarray] = []
        p = self.path(ns)
        if p.is_file():
            try:
                keys, vecs = self._read_checked(p, ns)
                index = {k.tobytes(): i for i, k in enumerate(keys)}
                rows = list(vecs)
            except (EmbedstackError, OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
                self.rejected.append(str(p))
                warnings.warn(f"ignoring the damaged embedding cache file {p} ({exc}); its vectors are recomputed.",
                              RuntimeWarning, stacklevel=3)
        entry: tuple[dict[bytes, int], list[np.ndarray], dict[str, Any]] = (index, rows, {})
        self._mem[ns] = entry
        return entry

    @staticmethod
    def _checksum(keys: np.ndarray, vecs: np.ndarray) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(keys).tobytes())
        h.update(np.ascontiguousarray(vecs, dtype=np.float32).tobytes())
        return h.hexdigest()

    def _read_checked(self, p: Path, ns: str) -> tuple[np.ndarray, np.ndarray]:
        from embedstack.errors import FormatError
        from embedstack.io import load_arrays

        arrays = load_arrays(p)
        meta = _metadata(p)
        keys, vecs = arrays.get("keys"), arrays.get("vectors")
        if keys is None or vecs is None or keys.ndim != 2 or keys.shape[1] != _KEY_BYTES or vecs.ndim != 2 \
                or len(keys) != len(vecs) or keys.dtype != np.uint8 or vecs.dtype != np.float32:
            raise FormatError("not an embedding cache file (keys/vectors missing or of the wrong shape)")
        if meta.get("namespace") != ns:
            raise FormatError(f"it holds namespace {meta.get('namespace')!r}, not {ns!r}")
        if meta.get("sha256") != self._checksum(keys, vecs):
            raise FormatError("checksum mismatch")
        if not np.isfinite(vecs).all():
            raise FormatError("non-finite vectors")
        return keys, vecs

    def get(self, ns: str, keys: np.ndarray) -> tuple[list[np.ndarray | None], list[int]]:
        """The cached vector of each key (None where missing) and the positions of the missing ones."""
        index, rows, _ = self._load(ns)
        got: list[np.ndarray | None] = []
        missing: list[int] = []
        for i, k in enumerate(keys):
            j = index.get(k.tobytes())
            if j is None:
                got.append(None)
                missing.append(i)
            else:
                got.append(rows[j])
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        return got, missing

    def put(self, ns: str, keys: np.ndarray, vectors: np.ndarray, settings: Mapping[str, Any] | None = None) -> None:
        """Add vectors (``(n, dim)``) under their text keys (written to disk by :meth:`flush`)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        index, rows, info = self._load(ns)
        if settings is not None:
            info["settings"] = dict(settings)
        for k, v in zip(keys, vectors, strict=True):
            kb = k.tobytes()
            if kb in index:
                rows[index[kb]] = v
            else:
                index[kb] = len(rows)
                rows.append(v)
        self._dirty.add(ns)

    def flush(self) -> list[Path]:
        """Write every namespace that got new vectors (atomically); returns the files written."""
        written = []
        for ns in sorted(self._dirty):
            if self.persist and self._mem[ns][1]:
                self._write(ns)
                written.append(self.path(ns))
        self._dirty.clear()
        return written

    def _write(self, ns: str) -> None:
        from embedstack.io import save_arrays

        index, rows, info = self._mem[ns]
        keys = np.zeros((len(rows), _KEY_BYTES), dtype=np.uint8)
        for kb, j in index.items():
            keys[j] = np.frombuffer(kb, dtype=np.uint8)
        vecs = np.stack(rows).astype(np.float32, copy=False)
        meta = {"namespace": ns, "sha256": self._checksum(keys, vecs), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "settings": json.dumps(info.get("settings", {}), sort_keys=True, default=str)}
        self.root.mkdir(parents=True, exist_ok=True)
        save_arrays(self.path(ns), {"keys": keys, "vectors": vecs}, metadata=meta)


def _metadata(path: Path) -> dict[str, Any]:
    """The ``__metadata__`` of a safetensors header ({} when absent)."""
    from embedstack.errors import FormatError

    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise FormatError("truncated header")
        n = int.from_bytes(raw, "little")
        if n > path.stat().st_size - 8:
            raise FormatError("truncated header")
        header = json.loads(fh.read(n).decode("utf-8"))
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    return meta if isinstance(meta, dict) else {}


class CachedEncoder:
    """A dense encoder whose multi-text ``encode`` calls go through an :class:`EmbeddingCache`.

    Calls with a single text (latency probes: one query encoded alone) are passed straight to the
    encoder, so per-query timings stay real. With ``poolings`` and an encoder that has
    ``encode_poolings`` (:class:`~embedstack.neural.sentence.SentenceEncoder`), a miss computes every
    listed pooling from one forward pass and caches them all, so the sibling rows (CLS / mean / max of
    the same model) then hit the cache.

    Args:
        encoder: the dense encoder.
        cache: where vectors live.
        poolings: pooling modes computed together on a miss (must include the encoder's own).
    """

    def __init__(self, encoder: Any, cache: EmbeddingCache, *, poolings: Sequence[str] | None = None) -> None:
        self.encoder = encoder
        self.cache = cache
        own = getattr(encoder, "pooling", None)
        self.poolings = tuple(dict.fromkeys([own, *(poolings or ())])) if own and poolings else None
        self.encoded = 0  # texts this wrapper sent to the model
        self.from_cache = 0  # texts answered by the cache
        self.from_cache_by_role: dict[str, int] = {}
        self._digests: tuple[str, str | None] | None = None
        self._settings: dict[tuple[str, str | None], dict[str, Any] | None] = {}

    def settings(self, role: str, pooling: str | None = None) -> dict[str, Any] | None:
        """:func:`encoder_settings`, with the weights hashed once per wrapper (wrap again after changing them)."""
        if (role, pooling) not in self._settings:
            if self._digests is None and getattr(self.encoder, "model", None) is not None:
                dense = getattr(self.encoder, "dense", None)
                self._digests = (state_digest(self.encoder.model), state_digest(dense) if dense is not None else None)
            self._settings[role, pooling] = encoder_settings(self.encoder, role=role, pooling=pooling,
                                                             digests=self._digests)
        return self._settings[role, pooling]

    def __getattr__(self, name: str) -> Any:  # dim, name, pooling ... come from the wrapped encoder
        return getattr(self.__dict__["encoder"], name)

    def __repr__(self) -> str:
        return f"CachedEncoder({self.encoder!r})"

    def encode(self, texts: Sequence[str], *, role: str = "document", batch_size: int = 64,
               progress: Callable[[int], None] | None = None, **kwargs: Any) -> np.ndarray:
        """``encoder.encode`` answered from the cache where possible (``progress(done)`` as the encoder's)."""
        from embedstack.base import progress_kwargs

        texts = list(texts)
        settings = None if len(texts) < 2 or kwargs else self.settings(role)  # one text: the model, timed
        if settings is None:
            if progress is not None:
                kwargs.update(progress_kwargs(self.encoder.encode, progress))
            return self.encoder.encode(texts, role=role, batch_size=batch_size, **kwargs)
        keys = text_keys(texts)
        ns = self.cache.namespace(settings)
        got, missing = self.cache.get(ns, keys)
        self.from_cache += len(texts) - len(missing)
        self.from_cache_by_role[role] = self.from_cache_by_role.get(role, 0) + len(texts) - len(missing)
        if missing:
            todo = [texts[i] for i in missing]
            self.encoded += len(todo)
            if self.poolings and callable(getattr(self.encoder, "encode_poolings", None)):
                by_mode = self.encoder.encode_poolings(todo, self.poolings, role=role, batch_size=batch_size,
                                                       progress=progress)
                for mode, vecs in by_mode.items():
                    s = self.settings(role, mode)
                    assert s is not None
                    self.cache.put(self.cache.namespace(s), keys[missing], vecs, settings=s)
                fresh = by_mode[self.encoder.pooling]
            else:
                extra = progress_kwargs(self.encoder.encode, progress) if progress is not None else {}
                fresh = np.asarray(self.encoder.encode(todo, role=role, batch_size=batch_size, **extra),
                                   dtype=np.float32)
                self.cache.put(ns, keys[missing], fresh, settings=settings)
            for j, i in enumerate(missing):
                got[i] = fresh[j]
        if progress is not None:
            progress(len(texts))
        return np.stack([g for g in got if g is not None]).astype(np.float32, copy=False)
