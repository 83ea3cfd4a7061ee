"""Sentence bi-encoders: transformer → pooling → optional Dense → optional truncate + normalise.

:class:`SentenceEncoder` is a :class:`~embedstack.base.DenseEncoder`. It reads a
sentence-transformers folder (``modules.json``, ``1_Pooling/config.json``,
``sentence_bert_config.json``, ``config_sentence_transformers.json``) and writes one that
sentence-transformers loads. Inference is built for CPUs: texts are tokenized in Rust one chunk at a
time, sorted by length so every batch pads only to its own longest text, run under
``torch.inference_mode`` (or onnxruntime), pooled, and written back in input order — into a
memory-mapped ``.npy`` when ``out=`` is given, so a million texts keep memory flat.

Example:
    >>> import embedstack
    >>> enc = embedstack.load("all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> enc.encode(["A man is playing a guitar."]).shape  # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._extras import require

torch = require("torch", "torch", "sentence encoders")

from embedstack._threads import SMALL_BATCH, SMALL_TOKENS  # noqa: E402
from embedstack.base import one_text_one_vector  # noqa: E402
from embedstack.data._io import read_json  # noqa: E402
from embedstack.errors import ConfigError, FormatError, InputError  # noqa: E402
from embedstack.io import atomic_dir  # noqa: E402
from embedstack.neural._npy import NpyStreamWriter  # noqa: E402
from embedstack.neural.config import BertConfig  # noqa: E402
from embedstack.neural.pooling import Dense, Pooling  # noqa: E402
from embedstack.neural.runtime import BACKENDS, PRECISIONS, TransformerRuntime, cpu_has_bf16  # noqa: E402
from embedstack.neural.tokenizer import WordPiece, pad_batch  # noqa: E402
from embedstack.neural.transformer import (  # noqa: E402
    BertModel,
    check_config_fits,
    has_pooler,
    load_weights,
    save_weights,
)

__all__ = ["SentenceEncoder", "BACKENDS", "PRECISIONS", "length_pieces", "cpu_has_bf16"]

log = logging.getLogger(__name__)

_ROLE_PROMPT_KEYS = {"query": ("query",), "document": ("document", "passage", "corpus")}
_ST_TYPES = {
    "Transformer": "sentence_transformers.models.Transformer",
    "Pooling": "sentence_transformers.models.Pooling",
    "Dense": "sentence_transformers.models.Dense",
    "Normalize": "sentence_transformers.models.Normalize",
}


class SentenceEncoder(TransformerRuntime):
    """A transformer sentence encoder (bi-encoder) with pooling, prompts and CPU fast paths.

    The fast paths (backend, precision, compile, threads, workers, length-sorted batches) are the
    shared :class:`~embedstack.neural.runtime.TransformerRuntime`; this class adds pooling, the
    optional Dense projection, Matryoshka truncation, normalisation and prompts.

    Args:
        model: The transformer (:class:`~embedstack.neural.transformer.BertModel`).
        tokenizer: Its WordPiece tokenizer.
        pooling: ``cls``, ``mean``, ``max`` or ``mean_sqrt_len``.
        dense: Optional projection applied after pooling.
        normalize: L2-normalise the output vectors.
        max_seq_length: Longer texts are truncated (with one warning per encoder).
        prompts: Prompt strings by name; roles use ``query`` and ``document`` (or ``passage``/``corpus``).
        default_prompt_name: Prompt used when the role has none.
        truncate_dim: Keep only the first dimensions (Matryoshka), before normalising.
        backend: ``torch`` or ``onnx`` (onnxruntime with graph optimisations).
        precision: ``fp32``; ``fp32-bf16x3`` (torch, CPUs with AMX: float32 values throughout, every product
            (linear layers and attention) as three bf16 products on the tile unit, to about 4e-6 of a linear
            layer's output scale; vectors at cosine 0.9999999 to fp32; plain fp32 elsewhere); ``bf16`` (torch: matmuls in bfloat16 under :func:`torch.autocast`, LayerNorm,
            softmax and pooling in fp32; several times faster on CPUs with AMX / AVX-512 BF16, cosine to
            fp32 ≥ 0.9999 on STS-B and SciFact); ``bf16-pure`` (torch: a bfloat16 copy of the whole
            transformer, activations and residual stream included, pooling in fp32: half the memory
            traffic of ``bf16`` and no casts, faster again with ``compile``; cosine to fp32 ≥ 0.9998,
            min 0.99988 on STS-B); or ``int8`` / ``int8-fast`` / ``int8-dynamic`` / ``int8-smooth`` (torch:
            int8-fast on SmoothQuant-smoothed inputs) / ``int8-bf16`` (torch: int8-smooth with its fp32 layer in
            bf16, for CPUs with native bf16) / ``int8-token`` (torch: every Linear in int8 with a scale per
            token; ``torch._int_mm`` on CPUs with VNNI / AMX, fbgemm on AVX2-only ones, where it is the fastest
            mode too) / ``bf16-int8-ffn`` and ``bf16-int8-all`` (torch: bf16-pure with the feed-forward products,
            or every linear product, as oneDNN int8 with a scale per token; CPUs with VNNI or AMX int8) (see
            :mod:`embedstack.neural.quantize` for what each means per backend).
        num_threads: Intra-op threads while encoding (default: leave the process setting).
        compile: torch backend: run the transformer through ``torch.compile`` (inductor, dynamic shapes,
            frozen weights: prepacked oneDNN matmuls with fused bias/GELU/residual epilogues). The first
            batches pay a one-off compilation (10-30 s each, a C++ compiler is needed) of a graph for a
            single text and one for every batch of 2+, per intra-op thread count (the mask is always passed,
            so padding does not trigger a recompilation mid-run; :meth:`warm_up` compiles them up front, as
            ``embedstack serve`` does before it reports ready); afterwards up to 1.1-1.3× faster in fp32 (same vectors to
            1e-5) and in bf16. With ``int8-token`` the compiler fuses each quantization with the LayerNorm,
            GELU or rescaling before it: 1.07-1.14× faster than eager int8-token on 2 cores with VNNI (on fbgemm,
            without int8 units, slower than eager: a warning says so). Other int8
            precisions do not compile (ConfigError). Each intra-op thread count compiles its own graphs; calls
            that may compile run one at a time. If compilation fails the encoder warns once and runs eagerly.
        workers: Batches encoded at the same time (torch backend), each with ``num_threads // workers``
            intra-op threads (a call with a single batch keeps all threads for it). Small matmuls (short
            texts) scale poorly across threads inside one op; two batches on one thread each keep both cores busy: measured 1.1× (fp32) and 1.5× (bf16)
            on STS-B sentences with 2 cores. Same vectors. Combines with ``compile`` (each worker's thread count
            gets its graphs on first use).
        small_backend: ``"onnx"``: batches of a few short texts (up to 4 rows, 128 padded tokens: a query)
            run through onnxruntime in fp32, the rest through torch as configured. For a server that
            answers single queries and bulk requests: one MiniLM sentence in 3.4 ms instead of 6.7-8.2 ms,
            while large batches keep torch bf16's throughput.
        name: A display name; ``source`` records how the model was found.

    Example:
        >>> from embedstack.neural.config import BertConfig
        >>> from embedstack.neural.tokenizer import WordPiece
        >>> tok = WordPiece.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"])
        >>> cfg = BertConfig(vocab_size=7, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                  intermediate_size=16)
        >>> enc = SentenceEncoder(BertModel(cfg).init_weights(seed=0), tok, pooling="cls")
        >>> enc.encode(["a b", ""]).shape, enc.encode([]).shape
        ((2, 8), (0, 8))
    """

    def __init__(
        self,
        model: BertModel,
        tokenizer: WordPiece,
        *,
        pooling: str = "mean",
        dense: Dense | None = None,
        normalize: bool = True,
        max_seq_length: int = 256,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        truncate_dim: int | None = None,
        backend: str = "torch",
        precision: str = "fp32",
        num_threads: int | None = None,
        compile: bool = False,
        workers: int = 1,
        small_backend: str | None = None,
        name: str | None = None,
        source: str | None = None,
    ) -> None:
        self._init_runtime(model, tokenizer, max_seq_length=max_seq_length, backend=backend, precision=precision,
                           num_threads=num_threads, compile=compile, workers=workers, small_backend=small_backend)
        self.pooler = Pooling(pooling)
        self.dense = dense.eval() if dense is not None else None
        self.normalize = bool(normalize)
        self.prompts = dict(prompts or {})
        if default_prompt_name is not None and default_prompt_name not in self.prompts:
            raise ConfigError(f"default_prompt_name {default_prompt_name!r} is not one of the prompts {list(self.prompts)}.")
        self.default_prompt_name = default_prompt_name
        full = dense.linear.out_features if dense is not None else model.config.hidden_size
        if truncate_dim is not None and (isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int | np.integer)
                                         or not 1 <= int(truncate_dim) <= full):
            raise ConfigError(f"truncate_dim must be an int in [1, {full}]. Got {truncate_dim!r}.")
        self.truncate_dim = None if truncate_dim is None else int(truncate_dim)
        self.name = name or "bert"
        self.source = source
        self.folder: Path | None = None

    # ---------------------------------------------------------------------------------------- basics
    @property
    def dim(self) -> int:
        """Output dimensionality."""
        if self.truncate_dim is not None:
            return self.truncate_dim
        return self.dense.linear.out_features if self.dense is not None else self.model.config.hidden_size

    @property
    def pooling(self) -> str:
        return self.pooler.mode

    def _head_modules(self) -> list[Any]:
        return [self.dense] if self.dense is not None else []

    def __repr__(self) -> str:
        return (f"SentenceEncoder(name={self.name!r}, dim={self.dim}, pooling={self.pooling!r}, "
                f"backend={self.backend!r}, precision={self.precision!r})")

    def prompt_for(self, role: str) -> str:
        """The prompt prepended to texts of ``role`` ('' if none)."""
        if role not in _ROLE_PROMPT_KEYS:
            raise ConfigError(f"Unknown role {role!r}; use 'query' or 'document'.")
        for key in _ROLE_PROMPT_KEYS[role]:
            if key in self.prompts:
                return self.prompts[key]
        if self.default_prompt_name is not None:
            return self.prompts[self.default_prompt_name]
        return ""

    # -------------------------------------------------------------------------------------- encoding
    def _tokenize(self, texts: Sequence[str], prompt: str) -> list[np.ndarray]:
        if prompt:
            texts = [prompt + t for t in texts]
        ids, truncated = self.tokenizer.encode_batch(texts, max_length=self.max_seq_length)
        self._warn_truncated(truncated)
        return ids

    def _embed_ids(self, ids: list[np.ndarray], batch_size: int,
                   on_batch: Callable[[int], None] | None = None, poolers: Sequence[Pooling] | None = None) -> Any:
        """Vectors for one chunk of token-id arrays, in the same order (length-sorted inside).

        ``on_batch(n)`` is called after every batch with the number of texts it held (progress bars move
        per batch, not per chunk). With ``poolers``: a list, one array per pooler, from the same forward passes.
        """
        heads = list(poolers) if poolers is not None else [self.pooler]
        outs = [np.empty((len(ids), self.dim), dtype=np.float32) for _ in heads]
        run = self._get_runner()

        def pooled(tokens: Any, mask: np.ndarray) -> Any:  # every head's vectors side by side, (B, len(heads) * dim)
            m = torch.from_numpy(mask)
            return torch.cat([self._head(tokens, m, pooler) for pooler in heads], dim=1)

        def one(sel: np.ndarray) -> None:
            input_ids, mask = pad_batch([ids[i] for i in sel], self.tokenizer.pad_id)
            # the runner pools each slice where it ran (torch); others return token states (B, T, C)
            vectors = (run(input_ids, mask, head=pooled) if getattr(run, "takes_head", False)
                       else pooled(run(input_ids, mask), mask)).numpy()
            for k, o in enumerate(outs):
                o[sel] = vectors[:, k * self.dim:(k + 1) * self.dim]

        self._run_batches(np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)), batch_size, one, on_batch)
        return outs[0] if poolers is None else outs

    def _head(self, tokens: Any, mask: Any, pooler: Pooling | None = None) -> Any:
        if isinstance(tokens, np.ndarray):
            tokens = torch.from_numpy(tokens)
        x = (pooler or self.pooler)(tokens, mask)  # (B, C)
        if self.dense is not None:
            x = self.dense(x)
        if self.truncate_dim is not None:
            x = x[:, : self.truncate_dim]
        if self.normalize:
            x = torch.nn.functional.normalize(x, dim=-1)
        return x.float()

    def forward_ids(self, ids: Sequence[np.ndarray], *, model: Any = None, min_rows: int = 16) -> Any:
        """Embeddings ``(n, dim)`` of token-id arrays **with autograd** (training): the same head as
        :meth:`encode`, without ``inference_mode``; dropout follows the module's train/eval mode.

        The texts run as a few length-sorted pieces, each padded only to its own longest text: cut
        points are chosen (over multiples of ``min_rows`` rows, by dynamic programming) to minimise
        padded tokens plus a per-piece overhead worth ``min_rows`` x 16 tokens, so mixed lengths (a
        short query and a 256-token abstract) stop paying for each other's padding. Rows come back in
        input order. ``model`` runs instead of ``self.model`` (a bf16 working copy of it, say).
        """
        net = self.model if model is None else model
        if len(ids) == 0:
            return torch.zeros((0, self.dim))

        def run(sel: np.ndarray) -> Any:
            input_ids, mask = pad_batch([ids[i] for i in sel], self.tokenizer.pad_id)
            m = torch.from_numpy(mask)
            return self._head(net(torch.from_numpy(input_ids), m).float(), m)  # (rows, dim)

        return self._pieced(np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)), min_rows, run)

    @one_text_one_vector
    def encode(
        self,
        texts: Sequence[str] | Iterable[str],
        *,
        role: str = "document",
        batch_size: int = 64,
        out: str | os.PathLike[str] | None = None,
        chunk_size: int = 8192,
        progress: Callable[[int], None] | None = None,
        force: bool = False,
    ) -> np.ndarray:
        """Encode texts into float32 vectors ``(n, dim)`` (``(0, dim)`` for no texts; ``(dim,)`` for one string).

        Args:
            texts: A sequence of strings, or any iterable (streamed ``chunk_size`` texts at a time), or one
                string (then one 1-D vector comes back, as in sentence-transformers).
            role: ``document`` or ``query`` (selects the prompt).
            batch_size: Texts per forward pass.
            out: Write the vectors to this ``.npy`` file (memory-mapped) and return the memmap. The file is
                written beside ``out`` and renamed over it only when every row is done (an error or Ctrl-C
                leaves an existing ``out`` as it was); an existing folder there is refused unless ``force``.
            chunk_size: Texts tokenized and length-sorted together.
            progress: Called with the number of texts finished after every batch.
        """
        if isinstance(texts, bytes):
            raise InputError("encode() takes str texts, not bytes; decode them first (bytes.decode('utf-8')).")
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1. Got {batch_size}.")
        if int(chunk_size) < 1:
            raise ConfigError(f"chunk_size must be >= 1. Got {chunk_size}.")
        prompt = self.prompt_for(role)
        sized = isinstance(texts, Sequence)
        n = len(texts) if sized else None  # type: ignore[arg-type]
        writer: NpyStreamWriter | None = None
        result: np.ndarray | None = None
        if out is not None:  # a temporary sibling, renamed over `out` only when every row is written
            writer = NpyStreamWriter(out, self.dim, force=force)
        elif n is not None:
            result = np.empty((n, self.dim), dtype=np.float32)
        pieces: list[np.ndarray] = []
        done = 0
        finished = 0  # texts whose batch is done (progress moves per batch)

        def on_batch(k: int) -> None:
            nonlocal finished
            finished += k
            if progress is not None:
                progress(finished)

        # on any error or Ctrl-C the writer removes its temporary file: an existing `out` stays as it was
        # a few short texts (a query): one thread; long ones are not small (chars: ~4 per token, before tokenizing)
        small = n is not None and n <= SMALL_BATCH and sum(len(t) for t in texts) <= 4 * SMALL_TOKENS  # type: ignore[union-attr]
        with torch.inference_mode(), self._threads(small), writer if writer is not None else contextlib.nullcontext():
            for chunk in _chunks(texts, int(chunk_size)):
                vecs = self._embed_ids(self._tokenize(chunk, prompt), int(batch_size), on_batch)
                if result is not None:
                    result[done:done + len(vecs)] = vecs
                elif writer is not None:
                    writer.write(vecs)
                else:
                    pieces.append(vecs)
                done += len(vecs)
        if writer is not None:
            return writer.close()
        if result is not None:
            if isinstance(result, np.memmap):
                result.flush()
            return result
        return np.concatenate(pieces) if pieces else np.zeros((0, self.dim), dtype=np.float32)

    def encode_poolings(self, texts: Sequence[str], poolings: Sequence[str] = ("cls", "mean", "max"), *,
                        role: str = "document", batch_size: int = 64, chunk_size: int = 8192,
                        progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
        """Several poolings from ONE forward pass: ``{mode: (n, dim)}`` (``progress`` as in :meth:`encode`).

        Each array equals ``self.with_options(pooling=mode).encode(texts)`` (same dense head, truncation
        and normalisation), at the cost of a single encode: the ladder's CLS / mean / max rows share it.

        Example:
            >>> vecs = enc.encode_poolings(["a text", "another"], ("cls", "max"))  # doctest: +SKIP
            >>> sorted(vecs), vecs["cls"].shape  # doctest: +SKIP
            (['cls', 'max'], (2, 384))
        """
        if isinstance(texts, (str, bytes)):
            raise InputError("encode_poolings() takes a list of texts, not a single string; wrap it: [text].")
        modes = list(dict.fromkeys(poolings))
        if not modes:
            raise ConfigError("encode_poolings needs at least one pooling mode, e.g. ('cls', 'mean', 'max').")
        poolers = [Pooling(m) for m in modes]
        texts = list(texts)
        parts: list[list[np.ndarray]] = [[] for _ in modes]
        prompt = self.prompt_for(role)
        finished = [0]

        def on_batch(k: int) -> None:
            finished[0] += k
            if progress is not None:
                progress(finished[0])

        with torch.inference_mode(), self._threads():
            for chunk in _chunks(texts, int(chunk_size)):
                vecs = self._embed_ids(self._tokenize(chunk, prompt), int(batch_size), on_batch, poolers)
                for acc, v in zip(parts, vecs, strict=True):
                    acc.append(v)
        empty = np.zeros((0, self.dim), dtype=np.float32)
        return {m: (np.concatenate(acc) if acc else empty) for m, acc in zip(modes, parts, strict=True)}

    def encode_queries(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        """``encode(texts, role="query")``."""
        return self.encode(texts, role="query", **kwargs)

    def token_embeddings(self, texts: Sequence[str], *, role: str = "document") -> list[np.ndarray]:
        """Contextual token vectors ``(t_i, hidden)`` of each text (special tokens included)."""
        ids = self._tokenize(list(texts), self.prompt_for(role))
        run = self._get_runner()
        res = []
        with torch.inference_mode(), self._threads():
            for x in ids:
                tokens = run(x[None, :], np.ones((1, len(x)), dtype=np.int64))
                res.append(np.asarray(tokens[0], dtype=np.float32))
        return res

    def with_options(self, **options: Any) -> SentenceEncoder:
        """A new encoder sharing the weights, with other pooling/backend/precision/... options."""
        return self._copy_with(dict(pooling=self.pooling, dense=self.dense, normalize=self.normalize,
                                    prompts=self.prompts, default_prompt_name=self.default_prompt_name,
                                    truncate_dim=self.truncate_dim, name=self.name, source=self.source), options)

    # ----------------------------------------------------------------------------------- persistence
    @classmethod
    def from_folder(cls, path: str | os.PathLike[str], **options: Any) -> SentenceEncoder:
        """Load a sentence-transformers folder (or a plain BERT folder: mean pooling, normalised).

        ``options`` override what the folder says (``pooling``, ``normalize``, ``backend`` ...).
        Folders saved by embedstack list their files' sha256 in ``embedstack.json``; they are checked
        unless ``verify=False`` is given or ``EMBEDSTACK_VERIFY=0`` is set.
        """
        from embedstack.io import verify_files

        folder = Path(path)
        verify = options.pop("verify", None)
        if not folder.is_dir():
            raise FormatError(f"Model folder {folder} does not exist.")
        verify_files(folder, _read_json_opt(folder / "embedstack.json"), verify=verify)
        from embedstack.neural.specs import is_cross_encoder

        if is_cross_encoder(folder):
            raise FormatError(f"{folder} holds a cross-encoder (it scores pairs, it makes no vectors); load it with "
                              "embedstack.load(...) or CrossEncoder.from_folder(...).")
        modules = _read_modules(folder)
        transformer_dir = folder
        pooling, dense, normalize = "mean", None, False
        for entry in modules:
            kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
            sub = folder / entry.get("path", "")
            if kind == "Transformer":
                transformer_dir = sub
            elif kind == "Pooling":
                pooling = Pooling.from_st_config(sub / "config.json").mode
            elif kind == "Dense":
                dense = Dense.load_st(sub)
            elif kind == "Normalize":
                normalize = True
            else:
                raise FormatError(f"{folder / 'modules.json'}: module type {entry.get('type')!r} is not supported "
                                  "(supported: Transformer, Pooling, Dense, Normalize).")
        if not modules:
            normalize = True
        config = BertConfig.from_json_file(transformer_dir / "config.json")
        weights = transformer_dir / "model.safetensors"
        if not weights.is_file():
            raise FormatError(f"Missing weights file {weights}: the folder has config.json but no model.safetensors.")
        check_config_fits(config, weights)
        model = load_weights(BertModel(config, add_pooler=has_pooler(weights)), weights)
        tokenizer = WordPiece.from_file(transformer_dir)
        st_cfg = _read_json_opt(transformer_dir / "sentence_bert_config.json")
        st_model_cfg = _read_json_opt(folder / "config_sentence_transformers.json")
        ours = _read_json_opt(folder / "embedstack.json")
        max_len = st_cfg.get("max_seq_length", min(512, config.max_position_embeddings))
        prompts = st_model_cfg.get("prompts") or {}
        default_prompt = st_model_cfg.get("default_prompt_name") or None
        if isinstance(max_len, bool) or not isinstance(max_len, int):
            raise FormatError(f"{transformer_dir / 'sentence_bert_config.json'}: max_seq_length must be an integer, "
                              f"got {max_len!r}.")
        if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()) \
                or not isinstance(default_prompt, str | None):
            raise FormatError(f"{folder / 'config_sentence_transformers.json'}: 'prompts' must map names to strings "
                              "and 'default_prompt_name' must be a name.")
        name = ours.get("name")
        kwargs: dict[str, Any] = {
            "pooling": pooling,
            "dense": dense,
            "normalize": normalize,
            "max_seq_length": max_len,
            "prompts": {k: v for k, v in prompts.items() if v},
            "default_prompt_name": default_prompt,
            "truncate_dim": ours.get("truncate_dim"),
            "name": name if isinstance(name, str) and name else folder.name,
        }
        if kwargs["default_prompt_name"] not in kwargs["prompts"]:
            kwargs["default_prompt_name"] = None
        kwargs.update(options)
        enc = cls(model, tokenizer, **kwargs)
        enc.folder = folder
        return enc

    def save(self, path: str | os.PathLike[str], *, force: bool = False,
             extra: Callable[[Path], None] | None = None) -> Path:
        """Write a sentence-transformers folder atomically (also read back by :meth:`from_folder`).

        Args:
            path: destination folder; an existing one is replaced only if embedstack saved a model there
                (``embedstack.json``) or it is empty, unless ``force=True``.
            force: replace whatever is at ``path``.
            extra: called with the temporary folder to add files of its own before the swap.
        """
        from embedstack.io import SENTENCE_MODEL, file_checksums

        with atomic_dir(path, kind=SENTENCE_MODEL, force=force) as tmp:
            cfg = self.model.config.to_dict()
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
            save_weights(self.model, tmp / "model.safetensors")
            self.tokenizer.save(tmp, model_max_length=self.model.config.max_position_embeddings)
            (tmp / "sentence_bert_config.json").write_text(
                json.dumps({"max_seq_length": self.max_seq_length, "do_lower_case": False}, indent=2), encoding="utf-8")
            modules = [{"idx": 0, "name": "0", "path": "", "type": _ST_TYPES["Transformer"]}]
            (tmp / "1_Pooling").mkdir()
            (tmp / "1_Pooling" / "config.json").write_text(
                json.dumps(self.pooler.st_config(self.model.config.hidden_size), indent=2), encoding="utf-8")
            modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": _ST_TYPES["Pooling"]})
            if self.dense is not None:
                self.dense.save_st(tmp / "2_Dense")
                modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": _ST_TYPES["Dense"]})
            if self.normalize:
                idx = len(modules)
                (tmp / f"{idx}_Normalize").mkdir()
                modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Normalize", "type": _ST_TYPES["Normalize"]})
            (tmp / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
            st_model = {"prompts": self.prompts, "default_prompt_name": self.default_prompt_name,
                        "similarity_fn_name": "cosine", "model_type": "SentenceTransformer",
                        "__version__": {"embedstack": _version()}}
            (tmp / "config_sentence_transformers.json").write_text(json.dumps(st_model, indent=2), encoding="utf-8")
            if extra is not None:
                extra(tmp)
            ours = {"name": self.name, "truncate_dim": self.truncate_dim, "format_version": 1,
                    "files": file_checksums(tmp, exclude=("embedstack.json",))}
            (tmp / "embedstack.json").write_text(json.dumps(ours, indent=2), encoding="utf-8")
        self.folder = Path(path)
        return Path(path)


# ------------------------------------------------------------------------------------------- helpers
def _chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    if isinstance(texts, Sequence):
        for i in range(0, len(texts), size):
            yield list(texts[i:i + size])
        return
    buf: list[str] = []
    for t in texts:
        buf.append(t)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def length_pieces(sorted_lengths: np.ndarray, *, min_rows: int = 16, overhead_tokens: int | None = None
                  ) -> list[tuple[int, int]]:
    """Cut ascending lengths into contiguous pieces ``[(start, stop), ...]`` minimising padded tokens.

    A piece costs ``rows x its longest length`` plus ``overhead_tokens`` (default ``16 x min_rows``: a
    forward call on a small piece uses the cores less well); cuts fall on multiples of ``min_rows``
    (and the end), so the dynamic programme over ``m = ceil(n / min_rows)`` points is O(m²).

    Example:
        >>> length_pieces(np.array([4] * 16 + [200] * 16), min_rows=16)
        [(0, 16), (16, 32)]
        >>> length_pieces(np.array([10] * 20 + [11] * 12), min_rows=16)
        [(0, 32)]
    """
    n = len(sorted_lengths)
    if n == 0:
        return []
    step = max(1, int(min_rows))
    over = 16 * step if overhead_tokens is None else int(overhead_tokens)
    cuts = list(range(0, n, step)) + [n]  # candidate boundaries
    m = len(cuts)
    best = [0.0] + [np.inf] * (m - 1)
    back = [0] * m
    for j in range(1, m):
        stop = cuts[j]
        longest = int(sorted_lengths[stop - 1])
        for i in range(j):
            cost = best[i] + (stop - cuts[i]) * longest + over
            if cost < best[j]:
                best[j], back[j] = cost, i
    pieces = []
    j = m - 1
    while j > 0:
        pieces.append((cuts[back[j]], cuts[j]))
        j = back[j]
    return pieces[::-1]


def _read_modules(folder: Path) -> list[dict[str, Any]]:
    path = folder / "modules.json"
    if not path.is_file():
        return []
    data = read_json(path, hint="re-save or re-download the model")
    if not isinstance(data, list) or not all(
            isinstance(e, dict) and isinstance(e.get("idx", 0), int) and isinstance(e.get("path", ""), str)
            for e in data):
        raise FormatError(f"{path} must hold a JSON list of modules ({{'idx': int, 'path': str, 'type': str}}).")
    return sorted(data, key=lambda e: int(e.get("idx", 0)))


def _read_json_opt(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = read_json(path, hint="re-save or re-download the model")
    return data if isinstance(data, dict) else {}


def _version() -> str:
    from embedstack import __version__

    return __version__
