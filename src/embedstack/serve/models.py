"""The model registry of a server: served name → a loaded model, its kind, version, token counter and batcher.

Any model SPEC plugs in (:func:`embedstack.models.resolve` / :func:`~embedstack.retrieval.evaluate.load_reranker`):
dense bi-encoders and pooled word vectors, sparse encoders (fitted counting models, SPLADE), multi-vector
(ColBERT) and cross-encoder rerankers. Every call goes through the model's :class:`~embedstack.serve.batching.Batcher`,
and query embeddings through the shared :class:`~embedstack.serve.batching.QueryCache`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedstack.errors import ConfigError, InputError
from embedstack.serve.batching import DEFAULT_MAX_BATCH_TOKENS, Batcher, QueryCache

__all__ = ["ServedModel", "load_model", "KINDS"]

KINDS = ("dense", "words", "sparse", "multivector", "reranker")
_WORD = re.compile(r"\w+|[^\w\s]")


def _kind(obj: Any, reranker: bool) -> str:
    if reranker:
        return "reranker"
    if callable(getattr(obj, "encode_sparse", None)):
        return "sparse"
    if callable(getattr(obj, "encode_tokens", None)) and not callable(getattr(obj, "encode", None)):
        return "multivector"
    if callable(getattr(obj, "encode", None)):
        vectors = getattr(obj, "vectors", None)
        return "words" if hasattr(vectors, "key_to_index") and callable(getattr(vectors, "most_similar", None)) else "dense"
    raise ConfigError(f"{type(obj).__name__} is neither an encoder (encode, encode_sparse, encode_tokens) nor a reranker.")


class _Counter:
    """Token counts (with ``[CLS]``/``[SEP]``) of a WordPiece model, or word counts for other models.

    Transformer models count with their own tokenizer (a private copy without truncation, so counting on
    the event loop never races the model thread's tokenizer).
    """

    def __init__(self, obj: Any) -> None:
        wp = getattr(obj, "tokenizer", None)
        inner = getattr(wp, "tokenizer", None)
        self._tok: Any = None
        if inner is not None and callable(getattr(inner, "to_str", None)):
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_str(inner.to_str())
            self._tok.no_truncation()
            self._tok.no_padding()
        stride = getattr(obj, "doc_stride", None)  # a cross-encoder reading long documents as windows
        self._windows = (int(obj.max_seq_length), int(stride)) if isinstance(stride, int) and self._tok is not None else None

    def count(self, texts: Sequence[str]) -> list[int]:
        if self._tok is None:
            return [len(_WORD.findall(t)) for t in texts]
        if len(texts) == 1:
            return [len(self._tok.encode(texts[0]).ids)]
        return [len(e.ids) for e in self._tok.encode_batch(list(texts))]

    def count_pairs(self, query: str, docs: Sequence[str]) -> list[int]:
        return self.count_pair_windows(query, docs)[0]

    def count_pair_windows(self, query: str, docs: Sequence[str]) -> tuple[list[int], list[int]]:
        """Tokens the model will run for each (query, document) pair, and the windows each takes (1 without
        ``doc_stride``)."""
        q = self.count([query])[0]
        if self._windows is not None:  # every window repeats the query: the tokens the model will run
            from embedstack.neural.tokenizer import window_plan

            length, stride = self._windows
            tokens, windows = [], []
            for d in self.count(docs):  # d counts [CLS] and [SEP]
                keep, room, step, n = window_plan(q, d - 2, length, stride)
                tokens.append(n * (keep + 1) + (n - 1) * (room - step) + d - 2)  # n windows, overlaps counted twice
                windows.append(n)
            return tokens, windows
        counts = self.count(docs)
        return ([q + d - 1 for d in counts] if self._tok is not None else [q + d for d in counts]), [1] * len(counts)

    def cut(self, text: str, limit: int) -> str:
        """``text`` cut to its first ``limit`` tokens (special tokens included)."""
        if self._tok is None:
            words = list(_WORD.finditer(text))
            return text if len(words) <= limit else text[: words[limit - 1].end()]
        enc = self._tok.encode(text)
        if len(enc.ids) <= limit:
            return text
        inner = [o for o, s in zip(enc.offsets, enc.special_tokens_mask, strict=False) if not s]
        keep = max(0, limit - 2)
        return text[: inner[keep - 1][1]] if keep else ""


@dataclass
class ServedModel:
    """One model of the server (see :func:`load_model`)."""

    name: str
    spec: str
    kind: str
    obj: Any
    version: str
    dim: int | None
    max_tokens: int | None
    counter: _Counter
    batcher: Batcher
    cache: QueryCache | None = None
    identity: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ model calls (in the model thread)
    def run(self, inputs: list[Any], group: Hashable, threads: int = 1) -> Any:
        """One merged batch on ``threads`` CPU threads (torch's intra-op threads are per calling thread)."""
        torch = sys.modules.get("torch")
        if torch is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        obj = self.obj
        if self.kind == "reranker":
            return np.asarray(obj.score(inputs), dtype=np.float32).reshape(-1)
        if self.kind == "sparse":
            kwargs: dict[str, Any] = {"batch_size": 32} if "batch_size" in _params(obj.encode_sparse) else {}
            return obj.encode_sparse(inputs, role=group, **kwargs).tocsr()
        if self.kind == "multivector":
            return obj.encode_tokens(inputs, role=group, batch_size=32)
        return np.asarray(obj.encode(inputs, role=group, batch_size=64), dtype=np.float32).reshape(len(inputs), -1)

    # ------------------------------------------------------------------ limits
    def check_lengths(self, texts: list[str], *, truncate: bool, limit: int | None, param: str = "input"
                      ) -> tuple[list[str], list[int]]:
        """Token counts of ``texts``; over-long texts are cut (``truncate``) or refused (:class:`InputError`)."""
        counts = self.counter.count(texts)
        cap = min(x for x in (limit, self.max_tokens) if x is not None) if (limit or self.max_tokens) else None
        if cap is None:
            return texts, counts
        over = [i for i, c in enumerate(counts) if c > cap]
        if not over:
            return texts, counts
        if not truncate:
            raise InputError(f"{param}[{over[0]}] has {counts[over[0]]} tokens, more than the limit of {cap} for model "
                             f"{self.name!r} ({len(over)} input(s) too long); shorten it or send \"truncate\": true.",
                             fix={"truncate": True})
        texts = list(texts)
        for i in over:
            texts[i] = self.counter.cut(texts[i], cap)
            counts[i] = cap
        return texts, counts

    # ------------------------------------------------------------------ embeddings with the cache
    def _keys(self, texts: Sequence[str], role: str) -> list[Hashable]:
        # the served name too: two names may serve the same weights at different precisions or poolings
        return [(self.name, self.version, role, t) for t in texts]

    def _assemble(self, parts: list[Any]) -> Any:
        if self.kind == "sparse":
            import scipy.sparse as sp

            return sp.vstack(parts, format="csr")
        if self.kind == "multivector":
            return [m for p in parts for m in p]
        return np.concatenate(parts, axis=0)

    def _rows(self, result: Any) -> list[Any]:
        return [result[i:i + 1] for i in range(len(result) if isinstance(result, list) else result.shape[0])]

    async def embed(self, texts: list[str], *, role: str, tokens: int, cache: bool = True) -> Any:
        """Vectors of ``texts`` (rows in order), from the cache where present, the rest through the batcher."""
        use_cache = cache and self.cache is not None and self.cache.size > 0
        if not use_cache:
            return await self.batcher.submit(texts, tokens=tokens, group=role)
        assert self.cache is not None
        keys = self._keys(texts, role)
        got = self.cache.get_many(self.name, keys)
        todo = [i for i, g in enumerate(got) if g is None]
        if todo:
            fresh = await self.batcher.submit([texts[i] for i in todo], tokens=tokens, group=role)
            rows = self._rows(fresh)
            self.cache.put_many([(keys[i], r) for i, r in zip(todo, rows, strict=True)])
            for i, r in zip(todo, rows, strict=True):
                got[i] = r
        return self._assemble(got)

    def embed_sync(self, texts: list[str], *, role: str) -> Any:
        """:meth:`embed` from a worker thread (the search pipeline)."""
        import asyncio

        loop = self.batcher._loop
        if loop is None:
            raise RuntimeError(f"model {self.name!r} is not started.")
        texts, counts = self.check_lengths(list(texts), truncate=True, limit=None)
        return asyncio.run_coroutine_threadsafe(self.embed(texts, role=role, tokens=sum(counts)), loop).result()

    def describe(self) -> dict[str, Any]:
        return {"id": self.name, "object": "model", "owned_by": "embedstack", "kind": self.kind, "dim": self.dim,
                "max_tokens": self.max_tokens, "spec": self.spec, "version": self.version, **self.info}


def _params(fn: Any) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


class QueryEncoder:
    """What a :class:`~embedstack.retrieval.Retriever` sees: the served model, called through its batcher and cache."""

    def __init__(self, model: ServedModel) -> None:
        self.model = model
        self.dim = model.dim
        if model.kind == "sparse":
            self.encode_sparse = self._call
        elif model.kind == "multivector":
            self.encode_tokens = self._call
        else:
            self.encode = self._call

    def _call(self, texts: Sequence[str], *, role: str = "query", **_: Any) -> Any:
        return self.model.embed_sync(list(texts), role=role)


class BatchedReranker:
    """A ``Reranker`` (``score(pairs)``) whose calls go through the served cross-encoder's batcher."""

    def __init__(self, model: ServedModel) -> None:
        self.model = model

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        import asyncio

        pairs = list(pairs)
        tokens = sum(self.model.counter.count_pairs(pairs[0][0], [d for _, d in pairs])) if pairs else 0
        loop = self.model.batcher._loop
        assert loop is not None
        fut = asyncio.run_coroutine_threadsafe(self.model.batcher.submit(pairs, tokens=tokens), loop)
        return np.asarray(fut.result(), dtype=np.float32)


def _identity(obj: Any, spec: str) -> dict[str, Any]:
    from embedstack.index.store import encoder_identity

    return encoder_identity(obj, spec)


def load_model(name: str, spec: str | Any, *, spec_name: str | None = None, reranker: bool = False, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
               max_wait_s: float = 0.002, max_queue: int = 4096, cache: QueryCache | None = None,
               observe: Any = None, threads: int = 1) -> ServedModel:
    """Load ``spec`` (or take a loaded model) and wrap it for serving.

    Raises:
        ConfigError: the model cannot be served as given (an unfitted counting model, no reranker ...).
    """
    from embedstack.models import needs_fit, resolve

    if reranker:
        from embedstack.retrieval.evaluate import load_reranker

        obj = load_reranker(spec, flag="--rerank")
    else:
        obj = resolve(spec) if isinstance(spec, str) else spec
        if needs_fit(obj):
            raise ConfigError(f"model {name!r} ({spec}) must be fitted on a corpus before it can be served: serve the "
                              "index folder built with it (--index NAME=FOLDER: its fitted encoder comes along) or a "
                              "saved fitted model folder.", param=("model", "--model"))
    kind = _kind(obj, reranker)
    raw_dim = getattr(obj, "dim", None)
    dim = int(raw_dim) if isinstance(raw_dim, int | np.integer) else None
    max_tokens = getattr(obj, "max_seq_length", None)
    spec_s = spec_name or (spec if isinstance(spec, str) else type(spec).__name__)
    ident = _identity(obj, spec_s)
    model = ServedModel(name=name, spec=spec_s, kind=kind, obj=obj,
                        version=str(ident.get("sha256") or ident.get("name") or spec_s)[:16], dim=dim,
                        max_tokens=int(max_tokens) if max_tokens else None, counter=_Counter(obj),
                        batcher=None,  # type: ignore[arg-type]  # set below: the batcher calls model.run
                        cache=None if reranker else cache, identity=ident)
    model.batcher = Batcher(name, model.run, max_batch_tokens=max_batch_tokens, max_wait_s=max_wait_s,
                            max_queue=max_queue, threads=threads,
                            observe=(lambda *a: observe(name, *a)) if observe is not None else None)
    if kind == "dense" or kind == "words":
        model.info["matryoshka"] = True
    if isinstance(getattr(obj, "doc_stride", None), int):  # max_tokens is then a window's length, nothing is cut
        model.info["doc_stride"] = int(obj.doc_stride)
    warm_up = getattr(obj, "warm_up", None)
    if callable(warm_up):  # compiled transformers: their graphs now, before /ready, not on the first requests
        warm_up(thread_counts=(threads,))
    return model


def check_role(role: str) -> str:
    if role not in ("query", "document"):
        raise InputError(f"role must be 'query' or 'document'; got {role!r}.", fix={"role": "query"})
    return role
