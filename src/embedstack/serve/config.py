"""What a server serves and how: models, rerankers, indexes, limits, batching, cache, keys.

A :class:`ServeConfig` comes from keyword arguments, from a TOML or JSON file (:func:`load_config`) and
from ``embedstack serve`` flags (the flags win). API keys are kept only as SHA-256 digests.

Example config file (TOML)::

    host = "127.0.0.1"
    port = 8000
    data_dir = "indexes"          # indexes created through the API live here (write-ahead logged)
    [models]
    minilm = "all-MiniLM-L6-v2"
    [rerankers]
    ce = "recipe:minilm-scifact-ce"
    [indexes]
    scifact-bm25 = "idx/scifact-bm25"
    [limits]
    max_inputs = 2048
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from embedstack._threads import available_cores
from embedstack.errors import ConfigError
from embedstack.serve.batching import DEFAULT_MAX_BATCH_TOKENS

__all__ = ["ServeConfig", "Limits", "load_config", "hash_key", "parse_named"]


@dataclass
class Limits:
    """Request limits; a request over one gets a 4xx JSON error naming the limit.

    Args:
        max_body_bytes: largest request body (413 above it).
        max_inputs: texts per embeddings request, documents per rerank or index-add request.
        max_tokens: tokens per input; ``None`` uses each model's own limit (its ``max_seq_length``).
        truncate: cut over-long inputs instead of refusing them (a request's ``truncate`` overrides it).
        max_batch_tokens: token budget of one merged batch (the micro-batcher). Under load a batch runs on one
            thread and all its requests wait for its end, so long batches spread latency: 128 clients sending
            256-token abstracts had p99 4.2-4.5 s at 16,384 tokens, 3.4-3.5 s at 4,096, the same throughput.
        max_wait_ms: longest a request waits for others to join its batch (only while under load).
        max_queue: texts waiting per model; beyond it requests get 503 with ``Retry-After``.
        cache_size: query embeddings kept (LRU); 0 disables the cache.
        cache_ttl_s: seconds a cached embedding stays valid.
        model_threads: CPU threads each model's batches share (default: the cores this process may use); a
            batch with nothing queued behind it takes all of them, under load batches run side by side on one
            thread each.
        body_timeout_s: the whole request body must arrive within this many seconds (408 otherwise), so a
            client that trickles bytes cannot hold a connection open.
        max_windows: windows of one document a reranker that reads long documents in windows (``doc_stride``)
            may run; a longer document is refused (split it into passages), so one request cannot buy unbounded
            work.
    """

    max_body_bytes: int = 8 * 1024 * 1024
    max_inputs: int = 2048
    max_tokens: int | None = None
    truncate: bool = False
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    max_wait_ms: float = 2.0
    max_queue: int = 4096
    cache_size: int = 10000
    cache_ttl_s: float = 3600.0
    body_timeout_s: float = 30.0
    model_threads: int | None = None
    max_windows: int = 64

    def threads(self) -> int:
        """``model_threads`` or the cores this process may run on."""
        if self.model_threads is not None:
            return int(self.model_threads)
        return available_cores()

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_inputs", "max_batch_tokens", "max_queue", "max_windows"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"limits.{name} must be >= 1; got {getattr(self, name)}.")
        if self.max_tokens is not None and int(self.max_tokens) < 2:
            raise ConfigError(f"limits.max_tokens must be >= 2 or unset; got {self.max_tokens}.")
        if float(self.max_wait_ms) < 0 or int(self.cache_size) < 0 or float(self.cache_ttl_s) <= 0:
            raise ConfigError("limits.max_wait_ms and cache_size must be >= 0 and cache_ttl_s > 0.")
        if self.model_threads is not None and int(self.model_threads) < 1:
            raise ConfigError(f"limits.model_threads must be >= 1 or unset; got {self.model_threads}.")
        if float(self.body_timeout_s) <= 0:
            raise ConfigError(f"limits.body_timeout_s must be > 0; got {self.body_timeout_s}.")


@dataclass
class ServeConfig:
    """Everything ``embedstack serve`` needs.

    Args:
        models: served name → model SPEC (dense, sparse, multi-vector, or word vectors: ``word2vec:PATH``).
        rerankers: served name → cross-encoder SPEC.
        indexes: served name → saved index folder (or alias), loaded read-only unless it lives in ``data_dir``.
        data_dir: folder for indexes created through the API (each a versioned folder + write-ahead log)
            and for the persisted aliases; without it the index administration routes answer 409.
        host, port: where to listen (loopback unless told otherwise).
        api_key_hashes: SHA-256 hex digests of the accepted API keys (see :func:`hash_key`); empty = no auth.
        limits: :class:`Limits`.
        ui: serve the web UI at ``/``.
        checkpoint_every: write-ahead-log records after which an index is saved whole and its log emptied.
    """

    models: dict[str, str] = field(default_factory=dict)
    rerankers: dict[str, str] = field(default_factory=dict)
    indexes: dict[str, str] = field(default_factory=dict)
    data_dir: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_hashes: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    ui: bool = True
    checkpoint_every: int = 1000

    def __post_init__(self) -> None:
        if isinstance(self.limits, dict):
            self.limits = _limits(self.limits)
        names = [*self.models, *self.rerankers]
        if len(set(names)) != len(names):
            raise ConfigError(f"model and reranker names must be distinct; got {names}.")
        for name in [*names, *self.indexes]:
            _check_name(name)
        for digest in self.api_key_hashes:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
                raise ConfigError("api_key_hashes holds SHA-256 hex digests (64 hex characters); use "
                                  "`embedstack serve --api-key-file FILE` to give keys in plain text.")
        if not (0 < int(self.port) < 65536):
            raise ConfigError(f"port must be in 1..65535; got {self.port}.", fix={"port": 8000})
        if int(self.checkpoint_every) < 1:
            raise ConfigError(f"checkpoint_every must be >= 1; got {self.checkpoint_every}.")


def _check_name(name: str) -> None:
    ok = name and len(name) <= 128 and all(c.isalnum() or c in "-_." for c in name) and not name.startswith(".")
    if not ok:
        raise ConfigError(f"name {name!r} must be 1-128 letters, digits, '-', '_' or '.', not starting with '.'.")


def _limits(raw: dict[str, Any]) -> Limits:
    known = {f.name for f in fields(Limits)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown limits {unknown}; known: {sorted(known)}.")
    return Limits(**raw)


def hash_key(key: str) -> str:
    """The SHA-256 hex digest a server stores for an API key (keys themselves are never kept)."""
    key = key.strip()
    if len(key) < 16:
        raise ConfigError("an API key must have at least 16 characters (use e.g. `python -c 'import secrets; "
                          "print(secrets.token_urlsafe(32))'`).")
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def read_key_file(path: str | os.PathLike[str]) -> list[str]:
    """Digests of the keys in a file (one key per line; ``#`` comments and blank lines skipped)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"API key file {p} does not exist.", param=("api_key_file", "--api-key-file"))
    keys = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
    if not keys:
        raise ConfigError(f"API key file {p} holds no keys.")
    return [hash_key(k) for k in keys]


def parse_named(items: list[str] | None, flag: str) -> dict[str, str]:
    """``NAME=VALUE`` flags → a dict (a bare ``VALUE`` is named after its last path part)."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            value = item
            name = Path(item.rstrip("/")).name.split("@")[0].replace(":", "-") or item
        if not value:
            raise ConfigError(f"{flag} {item!r}: give NAME=VALUE.")
        _check_name(name)
        if name in out:
            raise ConfigError(f"{flag}: the name {name!r} is given twice.")
        out[name] = value
    return out


def load_config(path: str | os.PathLike[str]) -> ServeConfig:
    """Read a TOML (``.toml``) or JSON config file; relative paths are taken from the file's folder."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist.", param=("config", "--config"))
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".toml":
            try:
                import tomllib
            except ImportError as exc:  # Python 3.10
                raise ConfigError("TOML config files need Python >= 3.11; use a .json file.") from exc
            raw = tomllib.loads(text)
        else:
            raw = json.loads(text)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - the parser's own error, reported with the file name
        raise ConfigError(f"config file {p} cannot be parsed: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {p} must hold a table/object at the top.")
    if "api_keys" in raw:
        raise ConfigError(f"{p}: plain API keys are not accepted in a config file; list their SHA-256 digests "
                          "as api_key_hashes, or pass --api-key-file.")
    known = {f.name for f in fields(ServeConfig)} | {"api_key_file"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{p}: unknown settings {unknown}; known: {sorted(known)}.")
    base = p.parent

    def rel(v: str) -> str:
        q = Path(v).expanduser()
        return str(q if q.is_absolute() or not (base / q).exists() else base / q)

    raw["indexes"] = {k: rel(v) for k, v in dict(raw.get("indexes", {})).items()}
    raw["models"] = {k: rel(v) for k, v in dict(raw.get("models", {})).items()}
    raw["rerankers"] = {k: rel(v) for k, v in dict(raw.get("rerankers", {})).items()}
    if raw.get("data_dir"):
        d = Path(str(raw["data_dir"])).expanduser()
        raw["data_dir"] = str(d if d.is_absolute() else base / d)
    key_file = raw.pop("api_key_file", None)
    if key_file:
        kf = Path(key_file).expanduser()
        raw["api_key_hashes"] = [*raw.get("api_key_hashes", []), *read_key_file(kf if kf.is_absolute() else base / kf)]
    return ServeConfig(**raw)
