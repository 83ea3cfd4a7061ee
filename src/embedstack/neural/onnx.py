"""ONNX export of our encoder and the onnxruntime backend.

:func:`export_onnx` traces the model with ``torch.onnx.export`` (TorchScript exporter; the graph
takes ``input_ids`` and ``attention_mask`` and returns token embeddings ``(B, T, C)``). Attention is
exported through the explicit reference path with an additive mask, the pattern onnxruntime's
transformer optimizer recognises, so :func:`optimize_onnx` fuses every layer's attention into one
``Attention`` kernel, bias + GELU into ``BiasGelu`` and residual + LayerNorm into
``SkipLayerNormalization``. Exports are cached under ``$EMBEDSTACK_CACHE_DIR/onnx/<weights hash>/``.

Example:
    >>> enc = embedstack.load("all-MiniLM-L6-v2@backend=onnx")  # doctest: +SKIP
    >>> enc.encode(["hello"]).shape  # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedstack._extras import require

torch = require("torch", "torch", "ONNX export")
from torch import nn  # noqa: E402

from embedstack.errors import ConfigError  # noqa: E402
from embedstack.io import AtomicFile, atomic_write_bytes  # noqa: E402
from embedstack.neural.transformer import BertModel  # noqa: E402

if TYPE_CHECKING:
    from embedstack.neural.runtime import TransformerRuntime

__all__ = ["export_onnx", "optimize_onnx", "onnx_path", "onnx_runner", "make_session", "weights_digest"]

log = logging.getLogger(__name__)
_FORMAT = "v1"


class _Exportable(nn.Module):
    """The encoder with an additive float mask, the form the onnxruntime fusions match."""

    def __init__(self, model: BertModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
        additive = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0  # (B, 1, 1, T)
        x = self.model.embeddings(input_ids, token_type_ids)
        return self.model.encoder(x, additive)  # (B, T, C)


def export_onnx(model: BertModel, path: str | os.PathLike[str], *, opset: int = 17, token_types: bool = False) -> Path:
    """Export ``model`` (token embeddings) to an ONNX file with dynamic batch and length axes.

    ``token_types``: the graph takes a third input, ``token_type_ids`` (sentence pairs: cross-encoders).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    before = [m.implementation for m in model.attention_modules()]
    was_training = model.training
    model.eval().set_attention("eager")
    ids = torch.tensor([[2, 5, 6, 3], [2, 5, 3, 0]], dtype=torch.int64) % model.config.vocab_size
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.int64)
    names = ["input_ids", "attention_mask"]
    inputs: tuple[Any, ...] = (ids, mask)
    if token_types:
        names.append("token_type_ids")
        inputs = (ids, mask, torch.tensor([[0, 0, 1, 1], [0, 0, 1, 0]], dtype=torch.int64))
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "token_embeddings"]}
    try:
        with warnings.catch_warnings(), AtomicFile(path) as f:  # renamed over `path` only if the export succeeds
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                _Exportable(model).eval(), inputs, str(f.tmp), dynamo=False, opset_version=opset,
                input_names=names, output_names=["token_embeddings"], dynamic_axes=axes,
            )
    finally:  # the exporter restores the wrapper's mode; the model keeps its own (eval: no dropout)
        model.train(was_training)
        for module, impl in zip(model.attention_modules(), before, strict=True):
            module.implementation = impl
    return path


def optimize_onnx(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Fuse attention / GELU / LayerNorm with onnxruntime's transformer optimizer; returns fused-op counts."""
    require("onnxruntime", "onnx", "ONNX graph optimisation")
    from onnxruntime.transformers.optimizer import optimize_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=1)
    stats = {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
    atomic_write_bytes(dst, opt.model.SerializeToString())
    return stats


def weights_digest(model: BertModel) -> str:
    """A short hash of the weights and config (the ONNX cache key)."""
    h = hashlib.sha256(repr(sorted(model.config.to_dict().items())).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def onnx_path(model: BertModel, precision: str = "fp32", *, token_types: bool = False) -> Path:
    """The cached ONNX file for ``model`` at ``precision``, exported / quantized on first use.

    ``token_types``: the graph with a ``token_type_ids`` input (a separate file in the same folder).
    """
    from embedstack.neural.hub import cache_dir
    from embedstack.neural.quantize import ONNX_RECIPES, quantize_onnx

    if precision not in ("fp32", *ONNX_RECIPES):
        raise ConfigError(f"Unknown ONNX precision {precision!r}; use 'fp32' or one of {sorted(ONNX_RECIPES)}.")
    folder = cache_dir() / "onnx" / f"{weights_digest(model)}-{_FORMAT}"
    tag = "-pairs" if token_types else ""
    fp32 = folder / f"model{tag}-fp32.onnx"
    if not fp32.is_file():
        raw = folder / f"model{tag}-raw.onnx"
        export_onnx(model, raw, token_types=token_types)
        stats = optimize_onnx(raw, fp32, num_heads=model.config.num_attention_heads, hidden_size=model.config.hidden_size)
        log.info("exported ONNX to %s; fused operators: %s", fp32, stats)
        raw.unlink(missing_ok=True)
    if precision == "fp32":
        return fp32
    recipe = hashlib.sha256(json.dumps(ONNX_RECIPES[precision], sort_keys=True).encode()).hexdigest()[:8]
    target = folder / f"model{tag}-{precision}-{recipe}.onnx"  # a changed recipe never reuses an old file
    if not target.is_file():
        quantize_onnx(fp32, target, recipe=precision)
    return target


def make_session(path: str | os.PathLike[str], *, num_threads: int | None = None, spin: bool = True) -> Any:
    """An onnxruntime CPU session with every graph optimisation on.

    ``spin=False``: its threads sleep between runs instead of spinning (onnxruntime's default spins for a
    while after each run, which takes a core from whatever else runs in the process: a server's torch batches).
    """
    ort = require("onnxruntime", "onnx", "the onnx backend")
    opts = ort.SessionOptions()
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(num_threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_runner(runtime: TransformerRuntime, *, precision: str = "fp32",
                num_threads: int | None = None, spin: bool = True) -> Callable[..., Any]:
    """A ``(input_ids, attention_mask[, token_type_ids]) -> token embeddings`` function backed by onnxruntime.

    The graph takes token types when the model does (``runtime.token_types``: a cross-encoder).
    ``num_threads``: the session's threads (default: the runtime's ``num_threads``, else torch's count now).
    """
    pairs = bool(getattr(runtime, "token_types", False))
    session = make_session(onnx_path(runtime.model, precision, token_types=pairs),
                           num_threads=num_threads or runtime.num_threads, spin=spin)

    def run(input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None,
            pack: bool = True) -> Any:  # the graph computes every position: nothing to pack
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        if pairs:
            feed["token_type_ids"] = token_type_ids if token_type_ids is not None else np.zeros_like(input_ids)
        return session.run(None, feed)[0]

    return run
