"""ColBERT: late interaction. Every token of a text keeps its own small vector; relevance is MaxSim.

:class:`ColBERT` is a :class:`~embedstack.base.MultiVectorEncoder` (Khattab & Zaharia 2020; ColBERTv2,
Santhanam et al. 2022): BERT's token states → a linear projection to ``dim`` (128) → L2 norm.

* **Markers.** A query marker after ``[CLS]`` for queries, a document marker for documents (default
  ``[unused0]`` / ``[unused1]``, which every BERT vocabulary has, so no embedding row is added;
  a PyLate folder's ``[Q] `` / ``[D] `` added tokens load too).
* **Query augmentation.** Queries are padded with ``[MASK]`` to exactly ``query_length`` tokens. The
  ``[MASK]`` positions are not attended to (unless ``attend_to_expansion_tokens``) but each gets an
  output vector, and all of them score: they act as learned soft expansion terms.
* **Punctuation filter.** Document tokens whose id is in the skiplist (every punctuation character)
  are dropped after encoding. ``[CLS]``, the marker and ``[SEP]`` stay, so every document keeps at
  least three vectors, even an empty or all-punctuation one.
* **Scoring.** ``MaxSim(q, d) = Σ_i max_j q_i · d_j`` (:meth:`score`, and the index in
  :class:`~embedstack.index.MultiVectorIndex`).

It runs on the shared CPU fast path (:class:`~embedstack.neural.runtime.TransformerRuntime`:
length-sorted batches, bf16, int8, ``compile``, workers, ONNX) and reads and writes a PyLate model
folder (sentence-transformers layout: the transformer at the root, ``1_Dense`` with the projection,
``config_sentence_transformers.json`` holding the prefixes, lengths and skiplist).

Truncation: a query longer than ``query_length`` or a document longer than ``document_length`` is cut;
each is said once per model (a warning).

Example:
    >>> from embedstack.neural.config import BertConfig
    >>> from embedstack.neural.tokenizer import WordPiece
    >>> tok = WordPiece.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]",
    ...                             "a", "b", "."])
    >>> cfg = BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
    ...                  intermediate_size=16)
    >>> cb = ColBERT(BertModel(cfg).init_weights(seed=0), tok, dim=4, query_length=8)
    >>> [m.shape for m in cb.encode_tokens(["a b ."])]  # [CLS] [D] a b [SEP]: the "." is dropped
    [(5, 4)]
    >>> cb.encode_tokens(["a"], role="query")[0].shape  # padded with [MASK] to query_length
    (8, 4)
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._extras import require

torch = require("torch", "torch", "ColBERT")

from embedstack._threads import SMALL_BATCH, SMALL_TOKENS  # noqa: E402
from embedstack.errors import ConfigError, FormatError, InputError  # noqa: E402
from embedstack.io import atomic_dir  # noqa: E402
from embedstack.neural.pooling import Dense  # noqa: E402
from embedstack.neural.runtime import TransformerRuntime  # noqa: E402
from embedstack.neural.tokenizer import WordPiece  # noqa: E402
from embedstack.neural.transformer import BertModel, load_encoder, save_weights  # noqa: E402

__all__ = ["ColBERT", "maxsim_scores", "is_colbert"]

_IDENTITY = "torch.nn.modules.linear.Identity"
_PYLATE_DENSE = "pylate.models.Dense.Dense"
_ST_TRANSFORMER = "sentence_transformers.models.Transformer"


def is_colbert(folder: Any) -> bool:
    """Whether a model folder holds a ColBERT model (PyLate's ``model_type`` or its Dense module)."""
    from embedstack.neural.sentence import _read_json_opt

    root = Path(folder)
    if _read_json_opt(root / "config_sentence_transformers.json").get("model_type") == "ColBERT":
        return True
    modules = root / "modules.json"
    return modules.is_file() and _PYLATE_DENSE in modules.read_text(encoding="utf-8", errors="replace")


def maxsim_scores(queries: Any, docs: Any, doc_mask: Any, query_mask: Any = None) -> Any:
    """MaxSim of every query against every document, batched: ``(n_queries, n_docs)``.

    ``queries`` (Q, Lq, d), ``docs`` (N, Ld, d) token vectors (padded), ``doc_mask`` (N, Ld) bool: the
    document tokens that count; ``query_mask`` (Q, Lq) bool or None (all query tokens count). Works on
    torch tensors (with autograd, for training) and numpy arrays alike.
    """
    if isinstance(queries, np.ndarray):
        return maxsim_scores(torch.from_numpy(queries), torch.from_numpy(docs), torch.from_numpy(doc_mask),
                             None if query_mask is None else torch.from_numpy(query_mask)).numpy()
    sims = torch.einsum("qid,njd->qnij", queries, docs)  # (Q, N, Lq, Ld)
    sims = sims.masked_fill(~doc_mask[None, :, None, :], float("-inf"))
    best = sims.max(dim=-1).values  # (Q, N, Lq)
    if query_mask is not None:
        best = best * query_mask[:, None, :].to(best.dtype)
    return best.sum(dim=-1)


class ColBERT(TransformerRuntime):
    """A ColBERT late-interaction encoder (see the module docstring).

    Args:
        model: The transformer.
        tokenizer: Its WordPiece tokenizer (must have ``[MASK]`` for query augmentation).
        projection: The token projection (a :class:`~embedstack.neural.pooling.Dense` with identity
            activation, no bias); a new one (``dim`` outputs, N(0, 0.02)-style init, seeded) when None.
        dim: Output dimensionality of a new projection (128 as in ColBERT).
        query_prefix, document_prefix: Marker tokens inserted after ``[CLS]`` ("" for none).
        query_length: Query tokens (queries are padded with ``[MASK]`` to it, or cut to it).
        document_length: Document tokens at most (default 180 as PyLate, or the model's limit if lower).
        do_query_expansion: Pad queries with ``[MASK]`` (query augmentation).
        attend_to_expansion_tokens: Let the other tokens attend to the ``[MASK]`` padding.
        skiplist_words: Tokens dropped from documents (default: every punctuation character).
        backend, precision, num_threads, compile, workers, small_backend: The shared runtime options.
        name, source: A display name and where the model came from.
    """

    def __init__(
        self,
        model: BertModel,
        tokenizer: WordPiece,
        *,
        projection: Dense | None = None,
        dim: int = 128,
        query_prefix: str = "[unused0]",
        document_prefix: str = "[unused1]",
        query_length: int = 32,
        document_length: int | None = None,
        do_query_expansion: bool = True,
        attend_to_expansion_tokens: bool = False,
        skiplist_words: Sequence[str] | None = None,
        backend: str = "torch",
        precision: str = "fp32",
        num_threads: int | None = None,
        compile: bool = False,
        workers: int = 1,
        small_backend: str | None = None,
        name: str | None = None,
        source: str | None = None,
        seed: int = 0,
    ) -> None:
        limit = model.config.max_position_embeddings
        if document_length is None:
            document_length = min(180, limit)
        for label, value in (("query_length", query_length), ("document_length", document_length)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 4 <= int(value) <= limit:
                raise ConfigError(f"{label} must be an int in [4, {limit}]. Got {value!r}.")
        self._init_runtime(model, tokenizer, max_seq_length=max(int(query_length), int(document_length)),
                           backend=backend, precision=precision, num_threads=num_threads, compile=compile,
                           workers=workers, small_backend=small_backend)
        hidden = model.config.hidden_size
        if projection is None:
            if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or int(dim) < 1:
                raise ConfigError(f"dim must be an int >= 1 (128 in ColBERT). Got {dim!r}.")
            projection = Dense(hidden, int(dim), bias=False, activation=_IDENTITY)
            gen = torch.Generator().manual_seed(int(seed))
            with torch.no_grad():  # a scaled random projection keeps the cosine geometry of the states
                projection.linear.weight.copy_(torch.randn(int(dim), hidden, generator=gen) / hidden ** 0.5)
        elif projection.linear.in_features != hidden:
            raise FormatError(f"the projection reads {projection.linear.in_features} features; the transformer "
                              f"gives {hidden}.")
        self.projection = projection.eval()
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.query_length = int(query_length)
        self.document_length = int(document_length)
        self.do_query_expansion = bool(do_query_expansion)
        self.attend_to_expansion_tokens = bool(attend_to_expansion_tokens) and self.do_query_expansion
        self.skiplist_words = list(string.punctuation) if skiplist_words is None else list(skiplist_words)
        vocab = tokenizer.tokenizer.get_vocab()
        self.query_prefix_id = self._prefix_id(query_prefix, vocab, "query_prefix")
        self.document_prefix_id = self._prefix_id(document_prefix, vocab, "document_prefix")
        if self.do_query_expansion and tokenizer.mask_id is None:
            raise ConfigError("query expansion pads queries with [MASK], which this tokenizer lacks; pass "
                              "do_query_expansion=False.")
        self.skiplist_ids = np.array(sorted({vocab[w] for w in self.skiplist_words if w in vocab}), dtype=np.int64)
        self._warned_query = False
        self.name = name or "colbert"
        self.source = source
        self.folder: Path | None = None

    @staticmethod
    def _prefix_id(prefix: str, vocab: dict[str, int], what: str) -> int | None:
        if not prefix:
            return None
        for key in (prefix, prefix.strip()):
            if key in vocab:
                return int(vocab[key])
        raise ConfigError(f"{what} {prefix!r} is not a token of the vocabulary; use a token it has "
                          "(e.g. '[unused0]') or '' for no marker.")

    @property
    def dim(self) -> int:
        return int(self.projection.linear.out_features)

    def __repr__(self) -> str:
        return (f"ColBERT(name={self.name!r}, dim={self.dim}, query_length={self.query_length}, "
                f"document_length={self.document_length}, backend={self.backend!r}, precision={self.precision!r})")

    # ------------------------------------------------------------------------------------ tokenizing
    def tokenize(self, texts: Sequence[str], role: str = "document") -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Token ids and attention masks (int64 arrays, one per text) as the model reads them.

        Queries: ``[CLS] marker tokens [SEP]`` then ``[MASK]`` up to ``query_length`` (mask 0 on the
        padding unless ``attend_to_expansion_tokens``). Documents: ``[CLS] marker tokens [SEP]``.
        """
        if role not in ("query", "document"):
            raise ConfigError(f"Unknown role {role!r}; use 'query' or 'document'.")
        query = role == "query"
        prefix = self.query_prefix_id if query else self.document_prefix_id
        length = self.query_length if query else self.document_length
        ids, cut = self.tokenizer.encode_batch(list(texts), max_length=length - (prefix is not None))
        if cut:
            if query:
                if not self._warned_query:
                    self._warned_query = True
                    import warnings

                    warnings.warn(f"{cut} quer(y/ies) longer than query_length={self.query_length} tokens were "
                                  "truncated (warned once per model; raise it with MODEL@query_length=64).",
                                  UserWarning, stacklevel=3)
            else:
                self._warn_truncated(cut, "document(s)", "document_length=512", stacklevel=4,
                                     limit_label=f"document_length={self.document_length}")
        masks = []
        out = []
        for x in ids:
            if prefix is not None:
                x = np.concatenate([x[:1], np.array([prefix], dtype=np.int64), x[1:]])
            m = np.ones(len(x), dtype=np.int64)
            if query and self.do_query_expansion and len(x) < length:
                pad = length - len(x)
                x = np.concatenate([x, np.full(pad, self.tokenizer.mask_id, dtype=np.int64)])
                m = np.concatenate([m, np.full(pad, 1 if self.attend_to_expansion_tokens else 0, dtype=np.int64)])
            out.append(x)
            masks.append(m)
        return out, masks

    def keep_mask(self, ids: np.ndarray, mask: np.ndarray, role: str) -> np.ndarray:
        """Which positions give output vectors: every query position (with expansion: the ``[MASK]`` ones
        too), the attended document positions whose token is not in the skiplist."""
        if role == "query":
            return np.ones_like(mask, dtype=bool) if self.do_query_expansion else mask.astype(bool)
        keep = mask.astype(bool)
        if len(self.skiplist_ids):
            keep &= ~np.isin(ids, self.skiplist_ids)
        return keep

    # -------------------------------------------------------------------------------------- encoding
    def _pad(self, ids: Sequence[np.ndarray], masks: Sequence[np.ndarray], sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``sel`` right-padded to their longest: ``(input_ids, attention_mask)`` int64, the masks as tokenized
        (0 on a query's [MASK] padding unless it is attended)."""
        width = max(len(ids[i]) for i in sel)
        x = np.full((len(sel), width), self.tokenizer.pad_id, dtype=np.int64)
        m = np.zeros((len(sel), width), dtype=np.int64)
        for r, i in enumerate(sel):
            x[r, : len(ids[i])] = ids[i]
            m[r, : len(ids[i])] = masks[i]
        return x, m

    def _head(self, states: Any) -> Any:
        """Token states (B, T, hidden) → projected, L2-normalised token vectors (B, T, dim), fp32."""
        x = self.projection(states.to(self.projection.linear.weight.dtype))
        return torch.nn.functional.normalize(x.float(), dim=-1)

    def encode_tokens(self, texts: Sequence[str], *, role: str = "document", batch_size: int = 32,
                      progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
        """Token vectors of each text: float32 ``(t_i, dim)``, L2-normalised, in input order.

        Queries give ``query_length`` vectors each (with expansion); documents one per kept token.
        ``progress`` is called with the number of texts done after every batch.
        """
        if isinstance(texts, str | bytes):
            raise InputError("encode_tokens() takes a list of texts; wrap one text in a list: [text].")
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1. Got {batch_size}.")
        texts = list(texts)
        ids, masks = self.tokenize(texts, role)
        out: list[np.ndarray] = [np.zeros((0, self.dim), dtype=np.float32)] * len(ids)
        if not ids:
            return out
        run = self._get_runner()
        done = [0]

        def one(sel: np.ndarray) -> None:
            x, m = self._pad(ids, masks, sel)
            vecs = self._head(run(x, m, None, role != "query")).numpy()  # query [MASK] outputs are read: no packing
            for r, i in enumerate(sel):
                n = len(ids[i])
                out[i] = np.ascontiguousarray(vecs[r, :n][self.keep_mask(ids[i], masks[i], role)])

        def on_batch(k: int) -> None:
            done[0] += k
            if progress is not None:
                progress(done[0])

        small = len(ids) <= SMALL_BATCH and sum(len(x) for x in ids) <= SMALL_TOKENS
        with torch.inference_mode(), self._threads(small):
            self._run_batches(np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)), int(batch_size),
                              one, on_batch)
        return out

    def encode_queries(self, texts: Sequence[str], **kwargs: Any) -> list[np.ndarray]:
        return self.encode_tokens(texts, role="query", **kwargs)

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """MaxSim of one query against each document (float32 ``(n,)``)."""
        q = self.encode_tokens([query], role="query")[0]
        return np.array([float((q @ d.T).max(axis=1).sum()) for d in self.encode_tokens(list(documents))],
                        dtype=np.float32)

    # -------------------------------------------------------------------------------------- training
    def forward_tokens(self, ids: Sequence[np.ndarray], masks: Sequence[np.ndarray], role: str, *,
                       model: Any = None, min_rows: int = 16) -> tuple[Any, Any]:
        """Token vectors **with autograd** (training): ``(n, T, dim)`` padded and the ``(n, T)`` bool mask
        of the vectors that count (:meth:`keep_mask`), rows in input order. Rows run as length pieces
        (:meth:`~embedstack.neural.runtime.TransformerRuntime._pieced`)."""
        net = self.model if model is None else model
        width = max((len(x) for x in ids), default=1)

        def run(sel: np.ndarray) -> Any:
            x, m = self._pad(ids, masks, sel)
            vecs = self._head(net(torch.from_numpy(x), torch.from_numpy(m)).float())
            return torch.nn.functional.pad(vecs, (0, 0, 0, width - x.shape[1]))

        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        vecs = self._pieced(lengths, min_rows, run)
        keep = np.zeros((len(ids), width), dtype=bool)
        for i, (x, m) in enumerate(zip(ids, masks, strict=True)):
            keep[i, : len(x)] = self.keep_mask(x, m, role)
        return vecs, torch.from_numpy(keep)

    def _head_modules(self) -> list[Any]:
        return [self.projection]

    def with_options(self, **options: Any) -> ColBERT:
        """A new model sharing the weights, with other lengths / runtime options."""
        return self._copy_with(dict(projection=self.projection, query_prefix=self.query_prefix,
                                    document_prefix=self.document_prefix, query_length=self.query_length,
                                    document_length=self.document_length, do_query_expansion=self.do_query_expansion,
                                    attend_to_expansion_tokens=self.attend_to_expansion_tokens,
                                    skiplist_words=self.skiplist_words, name=self.name, source=self.source), options)

    def runtime_options(self) -> dict[str, Any]:
        opts = super().runtime_options()
        opts.pop("max_seq_length")  # set by query_length / document_length
        return opts

    # ----------------------------------------------------------------------------------- persistence
    @classmethod
    def from_pretrained_encoder(cls, path: str | os.PathLike[str], *, dim: int = 128, seed: int = 0,
                                **options: Any) -> ColBERT:
        """A new ColBERT on a bi-encoder's (or BERT's) transformer weights, with a fresh projection."""
        from embedstack.neural.cross_encoder import _transformer_dir

        folder = _transformer_dir(Path(path))
        model = load_encoder(folder)
        return cls(model, WordPiece.from_file(folder), dim=dim, seed=seed, **options)

    @classmethod
    def from_folder(cls, path: str | os.PathLike[str], **options: Any) -> ColBERT:
        """Load a PyLate ColBERT folder (or one saved here); ``options`` override its settings."""
        from embedstack.io import verify_files
        from embedstack.neural.sentence import _read_json_opt, _read_modules

        folder = Path(path)
        verify = options.pop("verify", None)
        if not folder.is_dir():
            raise FormatError(f"Model folder {folder} does not exist.")
        verify_files(folder, _read_json_opt(folder / "embedstack.json"), verify=verify)
        transformer_dir, projection = folder, None
        for entry in _read_modules(folder):
            kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
            sub = folder / entry.get("path", "")
            if kind == "Transformer":
                transformer_dir = sub
            elif kind == "Dense":
                if projection is not None:
                    raise FormatError(f"{folder}: more than one Dense module; embedstack reads ColBERT models with one "
                                      "projection.")
                cfg = _read_json_opt(sub / "config.json")
                if cfg.get("use_residual"):
                    raise FormatError(f"{sub}: residual Dense modules are not supported.")
                projection = Dense.load_st(sub)
            else:
                raise FormatError(f"{folder / 'modules.json'}: module type {entry.get('type')!r} is not supported "
                                  "in a ColBERT model (Transformer, Dense).")
        if projection is None:
            raise FormatError(f"{folder} has no Dense projection module; it is not a ColBERT model. Start a new one "
                              "with ColBERT.from_pretrained_encoder(...).")
        model = load_encoder(transformer_dir)
        st = _read_json_opt(folder / "config_sentence_transformers.json")
        ours = _read_json_opt(folder / "embedstack.json")
        kwargs: dict[str, Any] = {"projection": projection, "name": ours.get("name") or folder.name}
        defaults = {"query_prefix": "[Q] ", "document_prefix": "[D] "}  # PyLate's when its config has none
        for key in ("query_prefix", "document_prefix", "query_length", "document_length", "do_query_expansion",
                    "attend_to_expansion_tokens", "skiplist_words"):
            if st.get(key) is not None:
                kwargs[key] = st[key]
            elif key in defaults:
                kwargs[key] = defaults[key]
        kwargs.update(options)
        model_out = cls(model, WordPiece.from_file(transformer_dir), **kwargs)
        model_out.folder = folder
        return model_out

    def save(self, path: str | os.PathLike[str], *, force: bool = False,
             extra: Callable[[Path], None] | None = None) -> Path:
        """Write a PyLate ColBERT folder atomically (PyLate's ``ColBERT(path)`` loads it; so does :meth:`from_folder`)."""
        from embedstack.io import SENTENCE_MODEL, file_checksums
        from embedstack.neural.sentence import _version

        with atomic_dir(path, kind=SENTENCE_MODEL, force=force) as tmp:
            (tmp / "config.json").write_text(json.dumps(self.model.config.to_dict(), indent=2), encoding="utf-8")
            save_weights(self.model, tmp / "model.safetensors")
            self.tokenizer.save(tmp, model_max_length=self.model.config.max_position_embeddings)
            (tmp / "sentence_bert_config.json").write_text(
                json.dumps({"max_seq_length": self.document_length - 1, "do_lower_case": False}, indent=2),
                encoding="utf-8")
            (tmp / "1_Dense").mkdir()
            self.projection.save_st(tmp / "1_Dense")
            cfg = json.loads((tmp / "1_Dense" / "config.json").read_text(encoding="utf-8"))
            (tmp / "1_Dense" / "config.json").write_text(json.dumps({**cfg, "use_residual": False}, indent=2),
                                                         encoding="utf-8")
            modules = [{"idx": 0, "name": "0", "path": "", "type": _ST_TRANSFORMER},
                       {"idx": 1, "name": "1", "path": "1_Dense", "type": _PYLATE_DENSE}]
            (tmp / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
            st = {"model_type": "ColBERT", "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "MaxSim",
                  "query_prefix": self.query_prefix, "document_prefix": self.document_prefix,
                  "query_length": self.query_length, "document_length": self.document_length,
                  "attend_to_expansion_tokens": self.attend_to_expansion_tokens,
                  "skiplist_words": self.skiplist_words, "do_query_expansion": self.do_query_expansion,
                  "__version__": {"embedstack": _version()}}
            (tmp / "config_sentence_transformers.json").write_text(json.dumps(st, indent=2), encoding="utf-8")
            if extra is not None:
                extra(tmp)
            ours = {"name": self.name, "kind": "colbert", "format_version": 1,
                    "files": file_checksums(tmp, exclude=("embedstack.json",))}
            (tmp / "embedstack.json").write_text(json.dumps(ours, indent=2), encoding="utf-8")
        self.folder = Path(path)
        return Path(path)
