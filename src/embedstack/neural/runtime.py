"""The one CPU fast path of every transformer model here: bi-encoders, cross-encoders and what builds on them.

:class:`TransformerRuntime` owns how a BERT runs on a CPU: the backend (torch or onnxruntime), the
precision (fp32, fp32 products on the AMX tiles, bf16 autocast, a bf16-pure copy, int8), ``torch.compile``, intra-op threads, worker
threads over batches, length-sorted batches padded only to their own longest row, feed-forward slices
that stay under an activation budget, and the one-warning truncation notice. A model class
(:class:`~embedstack.neural.sentence.SentenceEncoder`,
:class:`~embedstack.neural.cross_encoder.CrossEncoder`) subclasses it and adds only its head (pooling
and normalisation, or a classifier) and its inputs (one text, or a pair with token types).

Example:
    >>> import numpy as np
    >>> TransformerRuntime.batches(np.array([3, 9, 5, 1]), 2)  # longest first
    [array([1, 2]), array([0, 3])]
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from embedstack._extras import require

torch = require("torch", "torch", "transformer models")

from embedstack._validation import check_int  # noqa: E402
from embedstack.errors import ConfigError, EmbedstackError  # noqa: E402
from embedstack.neural import packed  # noqa: E402
from embedstack.neural.tokenizer import WordPiece  # noqa: E402
from embedstack.neural.transformer import BertModel  # noqa: E402

__all__ = ["TransformerRuntime", "BACKENDS", "PRECISIONS", "cpu_has_bf16"]

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
# bf16-pure with int8 products on oneDNN and embedstack's row kernels: the feed-forward block's, or every linear's
ONEDNN_INT8 = ("bf16-int8-ffn", "bf16-int8-all")
PRECISIONS = {"torch": ("fp32", "fp32-bf16x3", "bf16", "bf16-pure", "bf16-int8-ffn", "bf16-int8-all", "int8", "int8-fast", "int8-smooth", "int8-bf16", "int8-token", "int8-dynamic"), "onnx": ("fp32", "int8", "int8-fast", "int8-dynamic")}
# The largest feed-forward activation (tokens x intermediate_size) one forward call may allocate. glibc
# serves large blocks with fresh mmap'd pages, so a 32 x 256-token batch of MiniLM page-faulted 0.4-1.3M
# times per 256 abstracts (fp32 and bf16, measured); slices under 8 MiB reuse the heap (under 50k faults):
# the same vectors, 13% less time in fp32 and about 30% less in bf16 on SciFact abstracts.
_MAX_ACTIVATION_BYTES = 8 * 2**20
# With workers > 1, a batch of at least this many padded tokens runs as slices on the workers side by side (see
# _torch_runner); smaller ones run whole on all the caller's threads. One call of 32 SciFact abstracts (~7,700
# tokens), bf16-pure, 2 threads: 168.4 against 163.6 abstracts/s whole (benchmarks/encode.py, encode_slices_amx; fp32
# 41.5 against 42.2); one reranker call of 20 candidates, fp32: 24.7 against 24.0 pairs/s (rerank_workers_amx);
# batches of 32 sentences stay under the bar (their workers already take whole batches side by side)
_SPLIT_TOKENS = 2048

# (input_ids, attention_mask[, token_type_ids[, pack]]) -> token states (B, T, C) float32; pack=False when the
# caller reads the outputs at masked positions (ColBERT's [MASK] query expansion)
Runner = Callable[..., Any]
# a head applied to token states where they are computed: (tokens (B, T, C) float32, mask (B, T) numpy) -> (B, ...)
Head = Callable[[Any, np.ndarray], Any]
_CALLER = threading.local()  # .threads: the torch threads of the calling thread before a small call cut them to one


def balanced_cuts(lengths: np.ndarray, parts: int) -> list[int]:
    """Boundaries ``[0, ..., n]`` of ``parts`` contiguous, non-empty runs of rows with about equal sums of
    ``lengths`` (``parts <= n``).

    Example:
        >>> balanced_cuts(np.array([300, 200, 100, 100, 100, 100, 100]), 2)
        [0, 2, 7]
    """
    n = len(lengths)
    cum = np.cumsum(np.asarray(lengths, dtype=np.int64))
    cuts = [0]
    for k in range(1, parts):
        target = cum[-1] * k / parts
        i = int(np.searchsorted(cum, target))  # the row whose end first reaches the target
        at = i + 1 if i == 0 or cum[i] - target <= target - cum[i - 1] else i  # the nearer of its two ends
        cuts.append(min(max(at, cuts[-1] + 1), n - (parts - k)))  # each run keeps at least one row
    return [*cuts, n]


class TransformerRuntime:
    """Backend, precision, threads, workers and batching of one BERT (see the module docstring).

    Subclasses call :meth:`_init_runtime` from their ``__init__`` and run batches with
    :meth:`_run_batches`, each batch through :meth:`_get_runner`.
    """

    token_types: bool = False  # the model reads token_type_ids (sentence pairs); the ONNX graph takes them too
    activation_budget: int | None = None  # bytes per forward slice (None: _MAX_ACTIVATION_BYTES)
    split_tokens: int | None = None  # padded tokens from which workers share one batch (None: _SPLIT_TOKENS)
    first_token_only: bool = False  # the head reads [CLS] alone: the torch runner returns (B, 1, C)
    _torch_run: Runner  # the torch runner, also when small_backend routes small batches elsewhere
    _torch_model: BertModel  # the model it calls: a packed, bf16 or int8 copy, or self.model
    model: BertModel
    tokenizer: WordPiece
    max_seq_length: int
    backend: str
    precision: str
    num_threads: int | None
    compile: bool
    workers: int
    small_backend: str | None
    name: str
    source: str | None

    def _init_runtime(self, model: BertModel, tokenizer: WordPiece, *, max_seq_length: int, backend: str,
                      precision: str, num_threads: int | None, compile: bool, workers: int,
                      small_backend: str | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        limit = model.config.max_position_embeddings
        if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int | np.integer) \
                or not 2 <= int(max_seq_length) <= limit:
            raise ConfigError(f"max_seq_length must be an int in [2, {limit}]. Got {max_seq_length!r}.")
        self.max_seq_length = int(max_seq_length)
        if backend not in BACKENDS:
            raise ConfigError(f"Unknown backend {backend!r}; use one of {list(BACKENDS)}.")
        if precision not in PRECISIONS[backend]:
            raise ConfigError(f"Backend {backend!r} supports precision {list(PRECISIONS[backend])}; got {precision!r}.")
        num_threads = check_int(self, "num_threads", num_threads, low=1, allow_none=True)
        workers = check_int(self, "workers", workers, low=1)
        self.onednn_unsigned: bool | None = None  # bf16-int8-*: how their int8 rows go to oneDNN, decided now
        if precision in ONEDNN_INT8 and backend == "torch":  # refused now, not at the first encode or request
            from embedstack.neural.quantize import check_ffn_onednn, onednn_unsigned_source

            check_ffn_onednn(model, attention=precision == "bf16-int8-all")
            self.onednn_unsigned = onednn_unsigned_source()  # a bad EMBEDSTACK_ONEDNN_SOURCE is refused now too
        if precision == "fp32-bf16x3":
            from embedstack.neural import _attention

            if not _attention.x3_supported(32, 32):
                log.warning("precision='fp32-bf16x3' puts float32 products on the AMX tiles, which this CPU or build "
                            f"lacks ({_attention.status()}): it runs as fp32.")
        elif "bf16" in precision and not cpu_has_bf16():
            # bf16 products are emulated there (benchmarks/precision_speed.py on an AMD EPYC with AVX2 only: bf16 0.14-0.15x
            # and bf16-pure 0.15x fp32's texts/s; int8-smooth 1.2x, int8-token 0.05x on torch._int_mm, 1.35x on fbgemm)
            slower = "int8-smooth" if precision.startswith("int8") else "fp32"
            log.warning(f"precision={precision!r} on a CPU without AVX-512 BF16 / AMX: it works, but its bf16 products "
                        f"are emulated, several times slower than {slower} (bf16-pure ran at 0.15x fp32's speed on an "
                        f"AVX2 CPU); use {slower}.")
        product = None
        if precision == "int8-token":
            from embedstack.index._scan import int_gemm_units

            units = int_gemm_units()
            if backend == "torch":
                from embedstack.neural.quantize import int8_product

                # decided once, here: a bad EMBEDSTACK_INT8_PRODUCT is refused now, not at the first encode
                product = int8_product()
                forced = bool(os.environ.get("EMBEDSTACK_INT8_PRODUCT", "").strip())
                if not units and product == "int_mm":  # torch's _int_mm is a scalar loop there
                    log.warning("precision='int8-token' on a CPU without AVX-512 VNNI / AMX int8 units: it works, but "
                                "torch's integer products run as a scalar loop there, about 20x slower than fp32 on an "
                                "AVX2 CPU; " + ("unset EMBEDSTACK_INT8_PRODUCT (fbgemm's kernel)." if forced else
                                                "use int8-smooth."))
                elif compile and product == "fbgemm":  # encode_avx2_token's first record: 436 against 572 /s
                    log.warning("precision='int8-token' with compile=True where it multiplies on fbgemm (CPUs without "
                                "AVX-512 VNNI / AMX int8 units, or EMBEDSTACK_INT8_PRODUCT=fbgemm): it works, but "
                                "compiled ran slower than eager on an AVX2 CPU (0.76x on sentences, 0.79x on "
                                "abstracts); drop compile.")
        self.backend = backend
        if backend == "torch":
            from embedstack.neural import _attention

            # build / load the attention kernel and register its operators now: a compiled graph must not trace
            # the first load (dynamo failed on it and fell back to eager)
            _attention.available()
        self.precision = precision
        self.int8_product = product  # int8-token's product ("int_mm" / "fbgemm"), else None
        self.num_threads = num_threads
        if compile and backend != "torch":
            raise ConfigError("compile=True applies to backend='torch' (onnxruntime optimises its own graph).")
        self.compile = bool(compile)
        if workers > 1 and backend != "torch":
            raise ConfigError("workers > 1 applies to backend='torch' (onnxruntime threads itself).")
        if compile and precision == "fp32-bf16x3":
            raise ConfigError("compile=True does not apply to precision='fp32-bf16x3' (its products run in "
                              "embedstack's AMX kernel, eagerly); drop compile.")
        if compile and precision in ONEDNN_INT8:
            raise ConfigError(f"compile=True does not apply to precision={precision!r} (its int8 products run on "
                              "oneDNN with embedstack's row kernels, eagerly); drop compile.")
        if compile and precision.startswith("int8") and precision != "int8-token":
            raise ConfigError(f"compile=True does not apply to precision={precision!r} (torch's dynamic int8 modules do "
                              f"not compile); use precision='int8-token', or drop compile.")
        self.workers = workers
        if small_backend not in (None, "onnx"):
            raise ConfigError(f"small_backend must be 'onnx' or unset; got {small_backend!r}.")
        if small_backend is not None and backend != "torch":
            raise ConfigError(f"small_backend={small_backend!r} routes small batches away from backend='torch'; "
                              f"backend={backend!r} runs every batch itself, drop small_backend.")
        self.small_backend = small_backend
        self._runner: Runner | None = None
        self._warned_truncation = False

    def warm_up(self, thread_counts: Sequence[int] | None = None) -> None:
        """With ``compile=True``: compile now the graphs a run will need (a single text and a batch, at each
        intra-op thread count: 1 for small work, the caller's, each worker's share, plus ``thread_counts``), so
        that no compilation (10-30 s each) falls in the middle of a job or of a server's requests. A no-op
        without ``compile``."""
        if not self.compile or self.backend != "torch":
            return
        self._get_runner()
        run = self._torch_run  # past small_backend: its small batches never reach the compiled graphs
        total = self.num_threads if self.num_threads is not None else torch.get_num_threads()
        counts = {1, total, max(1, total // self.workers), *(thread_counts or ())}
        before = torch.get_num_threads()
        cls_id = int(getattr(self.tokenizer, "cls_id", 0))
        try:
            for n in sorted(counts):
                torch.set_num_threads(n)
                with torch.inference_mode(), self._autocast():
                    for rows in (1, 2):
                        ids = np.full((rows, 8), cls_id, dtype=np.int64)
                        mask = np.ones((rows, 8), dtype=np.int64)  # as pad_batch gives it
                        run(ids, mask, np.zeros_like(ids) if self.token_types else None)
        finally:
            torch.set_num_threads(before)

    def reset_runner(self) -> None:
        """Forget the built runner (after the weights changed: a bf16 or int8 copy holds the old ones)."""
        self._runner = None

    # -------------------------------------------------------------------------------------- backends
    def _get_runner(self) -> Runner:
        """``run(input_ids, attention_mask, token_type_ids=None)`` → token states, a float32 tensor (B, T, C)."""
        if self._runner is None:
            if self.backend == "onnx":
                from embedstack.neural.onnx import onnx_runner

                self._runner = onnx_runner(self, precision=self.precision)
            else:
                self._runner = self._torch_run = self._torch_runner()
                if self.small_backend == "onnx":
                    self._runner = self._small_via_onnx(self._runner)
        return self._runner

    def _small_via_onnx(self, big: Runner) -> Runner:
        """Batches of at most ``SMALL_BATCH`` rows and ``SMALL_TOKENS`` padded tokens through onnxruntime (fp32),
        the rest through ``big``.

        A query or a few: torch spends most of such a forward pass in GEMMs with a dozen rows, where
        onnxruntime's kernels are about twice as fast (one MiniLM sentence: 3.4 ms against 6.7-8.2 ms for torch
        bf16 on this 2-core CPU); from 8 rows on torch bf16 is faster. The fp32 graph gives the fp32 vectors
        (a bf16 ``big`` path differs from it by ~1e-4 in cosine, as bf16 differs from fp32 anyway).
        """
        from embedstack._threads import SMALL_BATCH, SMALL_TOKENS
        from embedstack.neural.onnx import onnx_runner

        # one session per thread count, made on first use: the small path takes the threads the caller gives
        # torch (a query on an idle server: all cores; a server batch under load: one, so no pool threads that
        # spin after each run and take a core from the batch beside it)
        sessions: dict[int, Runner] = {}
        lock = threading.Lock()

        def small(ids: np.ndarray, mask: np.ndarray, types: np.ndarray | None) -> Any:
            n = self.num_threads or getattr(_CALLER, "threads", None) or torch.get_num_threads()
            runner = sessions.get(n)
            if runner is None:
                with lock:
                    runner = sessions.get(n) or onnx_runner(self, precision="fp32", num_threads=n)
                    sessions[n] = runner
            return runner(ids, mask, types)

        def run(ids: np.ndarray, mask: np.ndarray, types: np.ndarray | None = None, pack: bool = True,
                head: Head | None = None) -> Any:
            if ids.shape[0] <= SMALL_BATCH and ids.size <= SMALL_TOKENS:
                tokens = torch.from_numpy(small(ids, mask, types))
                return tokens if head is None else head(tokens, mask)
            if head is not None and not getattr(big, "takes_head", False):  # a compiled big: pooled here
                return head(big(ids, mask, types, pack), mask)
            return big(ids, mask, types, pack, head=head)

        run.takes_head = True  # type: ignore[attr-defined]

        return run

    def _torch_runner(self) -> Runner:
        model = self.model
        if self.precision.startswith("int8"):
            from embedstack.neural.quantize import SMOOTHED, calibration_batches, quantize_torch_dynamic

            calibration = (calibration_batches(self.tokenizer, max_length=model.config.max_position_embeddings)
                           if self.precision in SMOOTHED else None)
            model = quantize_torch_dynamic(model, recipe=self.precision, calibration=calibration,
                                           product=self.int8_product)
        elif self.precision in ("bf16-pure", *ONEDNN_INT8):  # a copy: models made by with_options share self.model
            model = copy.deepcopy(model).to(torch.bfloat16)
        if self.precision == "fp32-bf16x3":  # float32 products on the AMX tiles (plain fp32 where there are none)
            if packed.x3_available(model):  # a copy only where the tiles run: elsewhere the fp32 model itself
                model = packed.pack_linears(copy.deepcopy(model), x3=True)
        elif (not self.compile and self.precision in packed.precisions()
              and packed.available(torch.float32 if self.precision == "fp32" else torch.bfloat16)):
            # eager: oneDNN products with packed weights, bias, GELU and residual add fused (the compiled graph
            # fuses them itself); a copy of the weights when the model is still self.model
            model = packed.pack_linears(model if model is not self.model else copy.deepcopy(model))
            model.row_buckets = True  # few product shapes for oneDNN to build (transformer.bucket_rows)
        if self.precision in ONEDNN_INT8:  # then the feed-forward products (all: every linear product) as int8
            from embedstack.neural.quantize import calibration_batches, quantize_ffn_onednn

            quantize_ffn_onednn(model, self.model, calibration_batches(  # weights and calibration from fp32
                self.tokenizer, max_length=self.model.config.max_position_embeddings), unsigned=self.onednn_unsigned,
                attention=self.precision == "bf16-int8-all")
        if self.compile and self.precision == "int8-token":
            from embedstack.neural.quantize import share_quantization_in_graph

            share_quantization_in_graph(model)  # the compiler merges Q/K/V's identical quantizations itself
        self._torch_model = model  # what the runner calls (a packed, bf16 or int8 copy, or self.model)
        forward = _compiled(model) if self.compile else model
        compiled = forward is not model
        row_buckets = bool(getattr(model, "row_buckets", False))
        act_bytes = 2 if self.precision.startswith("bf16") else 4
        budget = _MAX_ACTIVATION_BYTES if self.activation_budget is None else self.activation_budget
        max_tokens = max(1, budget // (model.config.intermediate_size * act_bytes))

        def piece(ids: np.ndarray, mask: np.ndarray, types: np.ndarray | None, pack: bool, head: Head | None) -> Any:
            # eager: a batch without padding takes the unmasked attention kernel; compiled: always the
            # mask, so one graph serves every batch of 2+ texts (no recompilation in the middle of a run)
            m = None if mask.all() and not compiled and not row_buckets else torch.from_numpy(mask)
            t = None if types is None else torch.from_numpy(types)
            first = {"first_only": True} if self.first_token_only else {}
            tokens = forward(torch.from_numpy(ids), m, t, pack=pack, **first).float()  # heads in fp32 (fp32: a no-op)
            return tokens if head is None else head(tokens, mask)

        def run(ids: np.ndarray, mask: np.ndarray, types: np.ndarray | None = None, pack: bool = True,
                head: Head | None = None) -> Any:
            # head(tokens, mask): applied to each slice where it ran (a worker), so only its outputs are joined
            # (a pooled (b, C) instead of (b, T, C) token states: 32 abstracts, 12.6 MB of float32 copied no more)
            # Long batches run as equal row slices whose feed-forward activations stay under
            # _MAX_ACTIVATION_BYTES: same outputs, and no fresh mmap'd pages on every layer. With workers, a
            # batch of at least _SPLIT_TOKENS padded tokens on several threads runs as slices side by side, one
            # share of the threads each, as whole batches do (one call of 32 abstracts has one batch only)
            n, t = ids.shape
            pieces = -(-n // max(1, max_tokens // t))
            total = torch.get_num_threads()
            split = _SPLIT_TOKENS if self.split_tokens is None else self.split_tokens
            workers = min(self.workers, total, n) if n * t >= split else 1
            if workers > 1:
                pieces = min(n, -(-max(pieces, workers) // workers) * workers)  # a multiple of workers: even shares
            if pieces <= 1:
                return piece(ids, mask, types, pack, head)
            bounds = [n * k // pieces for k in range(pieces + 1)]  # sizes differ by one at most

            def one(span: tuple[int, int]) -> Any:
                a, b = span
                return piece(ids[a:b], mask[a:b], None if types is None else types[a:b], pack, head)

            if workers <= 1:
                return torch.cat([one(s) for s in zip(bounds[:-1], bounds[1:], strict=True)])
            # side by side, the slices are cut at equal real tokens, not equal rows: the rows come sorted by length,
            # and equal row counts gave the first worker the longest ones (one query's 20 candidates: 92 against 106
            # pairs/s with one worker)
            cuts = balanced_cuts(mask.sum(axis=1), pieces)
            shares = list(zip(cuts[:-1], cuts[1:], strict=True))
            try:
                return torch.cat(list(self._on_workers(one, shares, workers, max(1, total // workers))))
            finally:
                if torch.get_num_threads() != total:  # in case the thread setting is process-wide in this build
                    torch.set_num_threads(total)

        # compiled graphs: pooled after the join, as before (dynamo's guards raced with the workers' pooling:
        # a graph recompiled now and then for a thread count it already had, "runtime guards failed")
        run.takes_head = not compiled  # type: ignore[attr-defined]
        return run

    def _autocast(self) -> Any:
        """One autocast region (bf16 weight copies are cached inside it); autocast state is per thread."""
        return (torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "bf16"
                else contextlib.nullcontext())

    @contextlib.contextmanager
    def _threads(self, small: bool = False) -> Iterator[None]:
        """Intra-op threads and, for ``bf16``, the autocast region (workers split the threads themselves).

        ``small`` work (a query or a few) runs on the calling thread unless ``num_threads`` is set: its
        matrices are too small to gain from more threads, and on a busy machine (or next to BLAS and
        numba pools) torch's OpenMP barriers made one MiniLM query 3-4x slower with 2 threads than with 1.
        """
        if self.backend == "onnx":  # onnxruntime gets its threads at session creation
            yield
            return
        before = torch.get_num_threads()
        total = self.num_threads if self.num_threads is not None else (1 if small else before)
        if total != before:
            torch.set_num_threads(total)
        outer = getattr(_CALLER, "threads", None)
        _CALLER.threads = before  # what the caller allowed (the onnxruntime small path uses as many)
        try:
            with self._autocast():
                yield
        finally:
            _CALLER.threads = outer
            if total != before:
                torch.set_num_threads(before)

    def _warn_truncated(self, count: int, what: str = "text(s)", option: str = "max_seq_length=512",
                        stacklevel: int = 5, limit_label: str | None = None) -> None:
        """One warning per model when inputs were cut to ``max_seq_length``."""
        if count and not self._warned_truncation:
            self._warned_truncation = True
            limit = int(getattr(getattr(getattr(self, "model", None), "config", None), "max_position_embeddings", 0) or 0)
            hint = (f"the model reads at most {limit} tokens, so split long documents into passages"
                    if limit and self.max_seq_length >= limit else
                    f"to keep more, raise the model option, e.g. MODEL@{option}")
            warnings.warn(
                f"{count} {what} longer than {limit_label or f'max_seq_length={self.max_seq_length}'} tokens were truncated "
                f"(warned once per model; {hint}).",
                UserWarning, stacklevel=stacklevel,
            )

    # -------------------------------------------------------------------------------------- batching
    @staticmethod
    def batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
        """Row indices in batches of ``batch_size``, longest rows first (memory peaks early, padding is small)."""
        order = np.argsort(-np.asarray(lengths), kind="stable")
        return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]

    def _run_batches(self, lengths: np.ndarray, batch_size: int, one: Callable[[np.ndarray], None],
                     on_batch: Callable[[int], None] | None = None) -> None:
        """Call ``one(rows)`` for each length-sorted batch, on ``workers`` threads when asked.

        Called inside :meth:`_threads` and ``torch.inference_mode``: each worker gets
        ``num_threads // workers`` intra-op threads and its own inference mode and autocast region.
        ``on_batch(n)`` follows every batch, in order, with its number of rows.
        """
        batches = self.batches(lengths, batch_size)
        total = torch.get_num_threads() if self.backend == "torch" else 1  # set by _threads() in the calling thread
        # never more workers than the caller's threads: a server running two batches side by side on one thread
        # each would otherwise put four compute threads on two cores
        workers = min(self.workers, len(batches), total)
        if workers <= 1:  # one batch (or one worker): all the threads inside each op
            for sel in batches:
                one(sel)
                if on_batch is not None:
                    on_batch(len(sel))
            return
        try:
            # in order; re-raises the first worker error here
            for sel, _ in zip(batches, self._on_workers(one, batches, workers, max(1, total // workers)), strict=True):
                if on_batch is not None:
                    on_batch(len(sel))
        finally:
            if torch.get_num_threads() != total:  # in case the thread setting is process-wide in this build
                torch.set_num_threads(total)

    def _on_workers(self, fn: Callable[[Any], Any], items: Sequence[Any], workers: int,
                    per_worker: int) -> Iterator[Any]:
        """``fn(item)`` for each of ``items`` on ``workers`` threads with ``per_worker`` intra-op threads each,
        results in order. Inference mode, autocast and OpenMP threads are per thread: each worker sets its own."""
        def in_worker(item: Any) -> Any:
            if torch.get_num_threads() != per_worker:
                torch.set_num_threads(per_worker)
            with torch.inference_mode(), self._autocast():
                return fn(item)

        with ThreadPoolExecutor(workers, thread_name_prefix="embedstack-encode") as pool:
            yield from pool.map(in_worker, items)

    @staticmethod
    def _pieced(lengths: np.ndarray, min_rows: int, run: Callable[[np.ndarray], Any]) -> Any:
        """Rows **with autograd** (training): ``run(rows)`` on length pieces, results back in input order.

        The rows are sorted by length and cut (:func:`~embedstack.neural.sentence.length_pieces`: over
        multiples of ``min_rows`` rows, minimising padded tokens plus a per-piece overhead), so a short
        query and a 512-token abstract do not pay for each other's padding.
        """
        from embedstack.neural.sentence import length_pieces

        order = np.argsort(lengths, kind="stable")
        outs = [run(order[a:b]) for a, b in length_pieces(lengths[order], min_rows=min_rows)]
        out = torch.cat(outs) if len(outs) > 1 else outs[0]  # in length order
        inverse = np.empty(len(lengths), dtype=np.int64)
        inverse[order] = np.arange(len(lengths))
        return out[torch.from_numpy(inverse)]

    def _copy_with(self, own: dict[str, Any], options: dict[str, Any]) -> Any:
        """A new model of this class sharing the weights: ``own`` options (the subclass's) and the runtime
        options, overridden by ``options`` (an unknown name is a ConfigError listing the known ones)."""
        current = {**own, **self.runtime_options()}
        unknown = set(options) - set(current)
        if unknown:
            raise ConfigError(f"Unknown {type(self).__name__} option(s) {sorted(unknown)}; known: {sorted(current)}.")
        current.update(options)
        cls: Any = type(self)
        new = cls(self.model, self.tokenizer, **current)
        new.folder = getattr(self, "folder", None)
        return new

    def _head_modules(self) -> list[Any]:
        """The modules on top of the transformer (a classifier, a projection, an MLM head); none by default."""
        return []

    def parameters(self) -> list[Any]:
        """Every trainable tensor, once: the transformer's and its head's (a tied weight is listed once)."""
        params: dict[int, Any] = {}
        for module in (self.model, *self._head_modules()):
            for p in module.parameters():
                params.setdefault(id(p), p)
        return list(params.values())

    def train(self, mode: bool = True) -> Any:
        """Training (dropout on) or inference mode for the transformer and its head; returns self."""
        for module in (self.model, *self._head_modules()):
            module.train(mode)
        return self

    def eval(self) -> Any:
        return self.train(False)

    def runtime_options(self) -> dict[str, Any]:
        """The runtime options as keyword arguments (for ``with_options``)."""
        return {"max_seq_length": self.max_seq_length, "backend": self.backend, "precision": self.precision,
                "num_threads": self.num_threads, "compile": self.compile, "workers": self.workers,
                "small_backend": self.small_backend}


def _compiled(model: BertModel) -> Callable[..., Any]:
    """``torch.compile`` of ``model`` with frozen weights; falls back to eager (one warning) on failure."""
    import inspect

    import torch._dynamo.config as dynamo_config

    # graphs per (batch of 1 or more) x (fp32 or bf16 autocast) x intra-op threads (the runner always passes the
    # mask); the default limit of 8 per function is reached when several compiled encoders share a process. torch
    # >= 2.13 takes the limit per compiled model (the global setting is not seen by worker threads there)
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 32)
    # no "duck" sizing: a batch whose row count equals its length (32 texts of 32 tokens) would otherwise get its
    # own graph, compiled in the middle of a run (10-30 s) when such a batch first comes (a server's p99)
    import torch.fx.experimental._config as fx_config

    fx_config.use_duck_shape = False
    per_call = {"recompile_limit": 32, "isolate_recompiles": True}
    per_call = {k: v for k, v in per_call.items() if k in inspect.signature(torch.compile).parameters}
    # cpp_wrapper: the graph runs as one C++ function that releases the GIL. With Python's wrapper each fused
    # kernel holds the GIL while it runs, so two batches on two threads (workers, a server's batcher) and the
    # server's event loop took turns instead of running side by side
    compiled = torch.compile(model, dynamic=True, options={"freezing": True, "cpp_wrapper": True}, **per_call)
    state = {"fn": compiled}
    seen: set[tuple[Any, ...]] = set()
    lock = threading.Lock()

    def call(ids: Any, mask: Any, types: Any, first: dict[str, Any]) -> Any:
        # Calls that may compile run one at a time (workers, serving threads): a new call signature (the
        # guards dynamo adds for our inputs: batch of 1, mask, token types,
        # [CLS] only; and the thread state it checks: intra-op threads, inference mode, autocast) compiles
        # under the lock; known signatures run the compiled graph concurrently.
        key = (ids.shape[0] == 1, mask is None, types is None, tuple(first.items()),
               torch.get_num_threads(), torch.is_inference_mode_enabled(), torch.is_grad_enabled(),
               torch.is_autocast_enabled("cpu"))
        if key in seen:
            return state["fn"](ids, mask, types, **first)
        with lock:
            out = state["fn"](ids, mask, types, **first)
            seen.add(key)
            return out

    def forward(ids: Any, mask: Any, types: Any = None, pack: bool = True, **first: Any) -> Any:
        try:  # a traced graph never packs (see BertModel._pack): one graph for every batch
            return call(ids, mask, types, first)
        except EmbedstackError:  # our own input errors (e.g. too many tokens) are not compilation failures
            raise
        except Exception as exc:  # noqa: BLE001 - inductor needs a C++ toolchain; eager gives the same outputs
            if state["fn"] is model:
                raise
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); running eagerly.",
                          RuntimeWarning, stacklevel=2)
            state["fn"] = model
            return model(ids, mask, types, pack=pack, **first)

    return forward


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX-512 BF16 or AMX), where bf16 matmuls beat fp32.

    oneDNN alone is not the test: it reports bf16 "supported" on any AVX-512 CPU and then emulates it
    there, at about a fifth of the fp32 rate (measured on an AVX-512 Xeon without BF16: 61 against 306
    GFLOP/s), so ``precision="auto"`` would pick the slow path. Where the CPU flags cannot be read, torch's own
    CPUID probes for AVX-512 BF16 and AMX tiles answer on x86 (not Linux), and oneDNN on ARM.
    """
    from embedstack._threads import cpu_features

    flags = cpu_features()
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    import platform

    try:
        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):  # torch.cpu's CPUID probes (x86 only)
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # ARM (Linux too: no "flags" line): oneDNN knows
    except (AttributeError, RuntimeError):  # private helpers; absent in some builds
        return False


def pad_types(types: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Right-pad token-type arrays with 0 to ``width`` columns: int64 (B, width)."""
    out = np.zeros((len(types), width), dtype=np.int64)
    for i, t in enumerate(types):
        out[i, : len(t)] = t
    return out
