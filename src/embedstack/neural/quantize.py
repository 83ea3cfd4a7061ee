"""int8 inference: onnxruntime quantization recipes and torch dynamic quantization.

Recipes are named so the choice is visible and measured (``benchmarks/encode.py``):

* ``int8-dynamic`` — onnxruntime's plain dynamic quantization (per-tensor signed int8 weights,
  activations quantized per batch). On x86 CPUs without VNNI the u8×s8 kernels use
  ``VPMADDUBSW``, whose 16-bit intermediate sums saturate: quality suffers.
* ``int8`` — the recipe chosen by measurement for quality: int8 (per-tensor, signed weights) for the
  attention projections (Q/K/V and output), the feed-forward block kept in fp32.
* ``int8-fast`` — more int8: per-channel int8 everywhere except the feed-forward output projection
  (its input, the GELU output, has the widest outliers).
* ``int8-smooth`` (torch) — ``int8-fast``'s layers with their inputs smoothed first (SmoothQuant, Xiao
  et al. 2023): each input channel is divided by ``s_j = max|x_j|^a / max|W_:,j|^(1-a)`` and the
  weight column multiplied by it, the same function with the activation outliers moved into the
  weights, where per-channel weight scales absorb them. ``max|x_j|`` comes from a calibration pass over
  pseudo-sentences of the model's own vocabulary (no data needed, deterministic).
* ``int8-bf16`` (torch) — ``int8-smooth`` with the feed-forward output, the one Linear it keeps in fp32,
  in bfloat16 (:class:`Bf16Linear`): for CPUs with AVX-512 BF16 and VNNI but no AMX (measured on Zen 4), where an
  fp32 GEMM runs at a fraction of the bf16 and int8 rates (AMD EPYC, MiniLM's shapes, 2 threads: 181 / 429
  / 632 GFLOP/s). The int8 layers are unchanged, so the quality is ``int8-smooth``'s (on the EPYC: 10-NN
  0.956 either way on 500 STS-B sentences, 0.939 on 2,000; STS-B 81.96 / 81.94) at 1.3x its speed.
* ``int8-token`` (torch) — every Linear, the feed-forward output included, as int8 x int8 -> int32 products
  (``torch._int_mm``: VNNI ``vpdpbusd`` where the CPU has it; on CPUs without int8 dot-product units fbgemm's
  u8 x s8 kernel, 63 levels a side for the weights and the feed-forward output's largest input channels in
  float32) with **one scale per token** for the
  activations and one per output channel for the weights (:class:`RowInt8Linear`), inputs smoothed as in
  ``int8-smooth`` (strength :data:`TOKEN_ALPHA`). The recipes above use torch's dynamic int8 kernels, which
  quantize a whole batch with one scale: the few tokens with large activations ([CLS], [SEP], punctuation)
  set it and every other token keeps only a few levels. A scale per token does not lose them, so even the
  feed-forward output, with its GELU outliers, can be int8. The query, key and value projections read the
  same input and quantize it once (one smoothing for the three).
* ``bf16-int8-ffn`` (torch) — ``bf16-pure`` (the whole transformer in bfloat16, packed oneDNN products) with the
  feed-forward block's two products in int8 on oneDNN (AMX int8 tiles where the CPU has them, VNNI
  elsewhere, with unsigned rows: :func:`onednn_unsigned_source`), one scale per token as in ``int8-token``
  (:func:`quantize_ffn_onednn`); refused on CPUs with neither. On AMX the int8
  product of the feed-forward output runs at about twice the bf16 one, and torch's ``_int_mm`` (what
  ``int8-token`` uses) does not reach the tile unit at all. oneDNN takes one activation scale per tensor, so
  the products run with scale 1 and embedstack's row kernels (``_attention.c``) apply each token's scale, the
  bias, GELU and the residual around them (:class:`Int8FeedForwardIn`, :class:`Int8FeedForwardOut`).
* ``bf16-int8-all`` (torch) — ``bf16-int8-ffn`` with the attention's products int8 too: the Q/K/V product (one
  smoothing and one scale per token for the three, over their shared input) and the output projection, its
  residual and LayerNorm fused as the feed-forward output's (:class:`Int8Linear`). Attention itself (Q·Kᵀ, softmax,
  P·V) stays bf16, and so do a cross-encoder's [CLS]-only Q, K and V in its last block. Every other linear product of
  the block is then int8, as in ``int8-token``, but on oneDNN with bf16 states.

Measured on 1,000 STS-B test sentences against fp32 MiniLM (mean cosine / 10-NN overlap):
plain dynamic 0.962 / 0.83; per-channel 0.992 / 0.91; per-channel + FFN-out fp32 0.996 / 0.93
(``int8-fast``); per-tensor + FFN-out fp32 0.994 / 0.93; per-tensor + whole FFN fp32 0.998 / 0.96
(``int8``); per-channel + whole FFN fp32 0.998 / 0.96. Also measured and not better: reduce_range
(7-bit weights), u8×u8 kernels, keeping any single layer fp32, SmoothQuant-style scale migration on
every layer in onnxruntime (α=0.5: 0.990 / 0.89). Speed: ``benchmarks/encode.py``.

torch (``benchmarks/int8_torch_recipes.py``, 1,500 STS-B test sentences, 2 threads, AVX-512 VNNI; speed
against sentence-transformers fp32, 10-NN overlap with fp32; two runs of 5 rounds): ``int8`` 1.66–1.99× /
0.955, ``int8-fast`` 2.10–2.32× / 0.900, ``int8-smooth`` 2.02–2.17× / 0.954 (STS-B Spearman 81.98 against
82.03), ``int8-dynamic`` 2.80–3.01× / 0.817. Smoothing every Linear, the feed-forward output included, reached only 0.914 at its
best strength, so ``int8-smooth`` keeps the feed-forward output in fp32.

Example:
    >>> sorted(ONNX_RECIPES)
    ['int8', 'int8-dynamic', 'int8-fast']
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from embedstack._extras import require

torch = require("torch", "torch", "int8 quantization")

from torch import nn  # noqa: E402

from embedstack.errors import ConfigError  # noqa: E402
from embedstack.io import AtomicFile  # noqa: E402

__all__ = ["ONNX_RECIPES", "TORCH_RECIPES", "SMOOTH_ALPHA", "TOKEN_ALPHA", "FBGEMM_LEVELS", "FBGEMM_WEIGHT_LEVELS",
           "OUTLIER_CHANNELS", "Bf16Linear", "RowInt8Linear", "calibration_batches", "int8_product", "quantize_onnx",
           "quantize_rows", "scale_rows", "fbgemm_pack", "quantize_torch_dynamic", "quantize_torch_rows",
           "quantize_weight", "smooth_linears", "quantize_ffn_onednn", "Int8FeedForwardIn", "Int8FeedForwardOut"]

log = logging.getLogger(__name__)

# name -> keyword arguments of onnxruntime.quantization.quantize_dynamic
ONNX_RECIPES: dict[str, dict[str, Any]] = {
    "int8-dynamic": {"per_channel": False, "reduce_range": False, "weight_type": "QInt8"},
    "int8": {"per_channel": False, "reduce_range": False, "weight_type": "QInt8", "keep_fp32": ("ffn_in", "ffn_out")},
    "int8-fast": {"per_channel": True, "reduce_range": False, "weight_type": "QInt8", "keep_fp32": ("ffn_out",)},
}


def quantize_onnx(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, recipe: str = "int8",
                  **overrides: Any) -> Path:
    """Write an int8 copy of the ONNX model ``src`` to ``dst`` following ``recipe``."""
    require("onnxruntime", "onnx", "int8 quantization")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if recipe not in ONNX_RECIPES:
        raise ConfigError(f"Unknown int8 recipe {recipe!r}; use one of {sorted(ONNX_RECIPES)}.")
    kwargs = {**ONNX_RECIPES[recipe], **overrides}
    keep = kwargs.pop("keep_fp32", ())
    if keep:
        kwargs["nodes_to_exclude"] = [*kwargs.get("nodes_to_exclude", []), *_nodes(src, keep)]
    kwargs["weight_type"] = getattr(QuantType, kwargs["weight_type"])
    import onnx

    # fused contrib ops (Attention, SkipLayerNormalization) defeat shape inference: outputs are float.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT, **kwargs.pop("extra_options", {})}
    kwargs["extra_options"] = extra
    dst = Path(dst)
    with warnings.catch_warnings(), _root_logging_to(log), AtomicFile(dst) as f:  # renamed over `dst` only on success
        warnings.simplefilter("ignore")
        quantize_dynamic(str(src), str(f.tmp), **kwargs)
    return dst


class _Forward(logging.Handler):
    """Re-log records of the root logger on ``target`` at DEBUG level."""

    def __init__(self, target: logging.Logger) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "root":
            self.target.debug("onnxruntime: %s", record.getMessage())


@contextlib.contextmanager
def _root_logging_to(target: logging.Logger) -> Iterator[None]:
    """onnxruntime's quantizer calls ``logging.warning`` (the root logger), which installs a stderr
    handler and prints ``WARNING:root:...`` on the user's terminal; while this is active, those notes go
    to ``target`` at DEBUG level instead (a handler on root also keeps ``basicConfig`` from running)."""
    root = logging.getLogger()
    handler = _Forward(target)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


def _is_ffn_out(name: str) -> bool:
    return name.endswith("output.dense") and "attention" not in name


# name -> (which nn.Linear layers run as int8, per-channel weight scales?)
TORCH_RECIPES: dict[str, tuple[Any, bool]] = {
    "int8": (lambda name: "attention" in name, True),
    "int8-fast": (lambda name: not _is_ffn_out(name), True),
    "int8-smooth": (lambda name: not _is_ffn_out(name), True),
    "int8-bf16": (lambda name: not _is_ffn_out(name), True),
    "int8-dynamic": (lambda name: True, False),
}  # int8-token is not one of these: it replaces every Linear with a RowInt8Linear (quantize_torch_rows)
SMOOTHED = ("int8-smooth", "int8-bf16", "int8-token")  # recipes calibrated on calibration_batches
BF16_REST = ("int8-bf16",)  # the Linear layers left in float run in bfloat16
# The migration strength a of int8-smooth, chosen on STS-B *train* sentences (10-NN overlap with fp32,
# benchmarks/int8_torch_recipes.py --choose-alpha); test sentences and SciFact only report it.
SMOOTH_ALPHA = 0.7
# The same for int8-token, chosen the same way (--choose-alpha 0,0.3,...,0.8 --recipe int8-token; 10-NN on
# 1,500 STS-B train sentences: 0.942 without smoothing, 0.970 at 0.5, 0.972 at 0.6, 0.966 at 0.7).
TOKEN_ALPHA = 0.6
# int8-token on fbgemm (CPUs without int8 dot-product units): AVX2's VPMADDUBSW adds pairs of u8 x s8 products in 16
# bits, which saturate unless 2 x (activation range) x (weight range) <= 32,767. Activations keep 8 bits (127 levels
# a side per token, zero point 128: 1..255) and weights get 63 levels a side per channel (2 x 255 x 63 = 32,130).
# Chosen on 2,000 STS-B *train* sentences (10-NN over the set against fp32; int8-smooth 0.948): activations /
# weights at 63 / 127 levels 0.946, 90 / 90 0.955, 127 / 63 0.961; the feed-forward output keeps its
# OUTLIER_CHANNELS largest smoothed input channels (on the calibration batches) in float32 (0: 0.956, 8: 0.961,
# 16: 0.961); TOKEN_ALPHA still the best strength (0.5: 0.960, 0.7: 0.954, 0.8: 0.951).
FBGEMM_LEVELS = 127
FBGEMM_WEIGHT_LEVELS = 63
OUTLIER_CHANNELS = 8


class SmoothedLinear(nn.Module):
    """``linear(x / s)`` computed as ``linear'(x * (1 / s))`` with ``linear'``'s weight columns times ``s``.

    The same function in exact arithmetic; the input a dynamic int8 kernel quantizes per tensor has its
    outlier channels shrunk, and the weights, quantized per output channel, carry them instead.
    """

    def __init__(self, linear: Any, scale: Any) -> None:
        super().__init__()
        self.register_buffer("inv_scale", (1.0 / scale).to(linear.weight.dtype))
        self.linear = torch.nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
        with torch.no_grad():
            self.linear.weight.copy_(linear.weight * scale[None, :])
            if linear.bias is not None:
                self.linear.bias.copy_(linear.bias)

    def forward(self, x: Any) -> Any:
        return self.linear(x * self.inv_scale)


class Bf16Linear(nn.Module):
    """``linear`` with bfloat16 weights inside an fp32 model: the input is cast to bf16, the output back to
    fp32 (the residual stream and LayerNorms stay fp32). Inference only."""

    def __init__(self, linear: Any) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

    def forward(self, x: Any) -> Any:
        return torch.nn.functional.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)


def quantize_rows(x: Any, inv_smooth: Any | None = None) -> tuple[Any, Any]:
    """``x`` (M, K) -> (int8 (M, K), float32 scales (M, 1)): one symmetric scale per row (127 levels a side),
    after multiplying the columns by ``inv_smooth`` (K,) when given (:func:`scale_rows`, rounded). ``x`` itself is
    not modified."""
    rows, scale, _ = scale_rows(x, inv_smooth, 127)
    return rows.round_().to(torch.int8), scale


def quantize_weight(w: Any, levels: int = 127) -> tuple[Any, Any]:
    """A weight ``w`` (N, K) -> (int8 (N, K), float32 scales (N,)): one symmetric scale per output row, ``levels``
    a side."""
    w = w.detach().float()
    scale = w.abs().amax(1).clamp(min=1e-12) / float(levels)
    return (w / scale[:, None]).round_().clamp_(-levels, levels).to(torch.int8), scale


def fbgemm_pack(qweight: Any, wscale: Any) -> Any:
    """An int8 weight (N, K) with one scale per output row (:func:`quantize_weight`, at most
    :data:`FBGEMM_WEIGHT_LEVELS` a side) packed once for fbgemm's u8 x s8 product
    (``torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32``, whose float output is the int32 sums times
    the input's scale and each row's ``wscale``)."""
    if qweight.numel() and int(qweight.abs().max()) > FBGEMM_WEIGHT_LEVELS:  # AVX2's 16-bit pair sums would saturate
        raise ValueError(f"fbgemm_pack: int8 weights must lie within +-{FBGEMM_WEIGHT_LEVELS}; quantize them with "
                         f"quantize_weight(w, {FBGEMM_WEIGHT_LEVELS})")
    with warnings.catch_warnings(), _engine("fbgemm"):
        warnings.simplefilter("ignore")  # quantized tensors are deprecated; fbgemm's packing still takes one
        qw = torch._make_per_channel_quantized_tensor(qweight, wscale.double(),
                                                      torch.zeros(qweight.shape[0], dtype=torch.int64), 0)
        return torch.ops.quantized.linear_prepack(qw, None)


def scale_rows(x: Any, inv_smooth: Any | None = None, levels: int = 127,
               outliers: Any | None = None) -> tuple[Any, Any, Any | None]:
    """``x`` (M, K) -> (float32 rows of integer range (M, K), scales (M, 1), outlier columns (M, k) or None): the
    input of fbgemm's u8 x s8 product, one symmetric scale per row with ``levels`` a side. The columns
    ``outliers`` (int64 indices), when given, are taken out first (returned in float32, zero in the rows) so that
    they do not set the rows' scales. ``x`` itself is not modified."""
    # a float32 copy we may scale in place (x.float() would return fp32 ``x`` itself)
    x = x * inv_smooth if inv_smooth is not None else x.to(torch.float32, copy=True)
    kept = None
    if outliers is not None:
        kept = x.index_select(1, outliers)
        x.index_fill_(1, outliers, 0.0)
    # two reductions, no |x| copy: faster than abs().amax() (itself 13x faster than vector_norm(ord=inf)); aminmax
    # along a dim measured 7x slower than both
    scale = torch.maximum(x.amax(1, keepdim=True), x.amin(1, keepdim=True).neg_())
    scale.clamp_(min=1e-12).div_(float(levels))
    return x.div_(scale), scale, kept


class _RowQuantizer:
    """Quantizes a layer input with one scale per row (token), after multiplying its channels by ``inv_smooth``:
    to int8 for ``torch._int_mm`` (``product="int_mm"``), or to float rows of integers for fbgemm
    (``"fbgemm"``, :func:`scale_rows`; ``outliers``: input channels kept in float32). ``readers`` layers that
    read the same tensor (query, key and value: 3) share one quantizer: it keeps its last input per thread,
    quantizes it once, and lets go of it once every reader has had it (nothing stays cached between forward
    passes). A call returns (rows, scales (M, 1), outlier columns or None)."""

    def __init__(self, inv_smooth: Any | None, readers: int = 1, product: str = "int_mm",
                 outliers: Any | None = None) -> None:
        self.inv_smooth = inv_smooth  # float32 (K,) or None
        self.readers = int(readers)
        self.product = product
        self.outliers = outliers  # int64 (k,) or None (fbgemm only)
        self._last = threading.local()

    def __deepcopy__(self, memo: dict[int, Any]) -> _RowQuantizer:
        return _RowQuantizer(None if self.inv_smooth is None else self.inv_smooth.clone(), self.readers,
                             self.product, None if self.outliers is None else self.outliers.clone())

    def _quantize(self, x: Any) -> tuple[Any, Any, Any | None]:
        x = x.reshape(-1, x.shape[-1])
        if self.product == "fbgemm":
            return scale_rows(x, self.inv_smooth, FBGEMM_LEVELS, self.outliers)
        q, scale = quantize_rows(x, self.inv_smooth)
        return q, scale, None

    def __call__(self, x: Any) -> tuple[Any, Any, Any | None]:
        """``x`` (..., K) -> (rows (M, K), float32 scales (M, 1), float32 outlier columns (M, k) or None) with M
        the rows of ``x``."""
        if self.readers == 1:
            return self._quantize(x)
        last = getattr(self._last, "item", None)
        version = None if x.is_inference() else x._version  # inference tensors cannot change in place
        if last is not None and last[0] is x and last[1] == version:
            last[3] -= 1
            if last[3] == 0:
                self._last.item = None
            return last[2]
        out = self._quantize(x)
        self._last.item = [x, version, out, self.readers - 1]  # uses left
        return out


def share_quantization_in_graph(model: Any) -> Any:
    """Prepare an ``int8-token`` ``model`` for ``torch.compile``: every quantizer quantizes its input
    itself (``readers=1``; no per-thread cache for the tracer to stop at). The compiled graph computes the
    shared query/key/value quantization once anyway: the three are the same operations on the same tensor,
    which the compiler merges. Returns ``model``."""
    for module in model.modules():
        if isinstance(module, RowInt8Linear):
            module.quantizer.readers = 1
    return model


class RowInt8Linear(nn.Module):
    """``linear`` as int8 products: weights quantized per output channel (symmetric, 127 levels a side; 63 on
    fbgemm), inputs per row by ``quantizer``, int32 sums, then one float rescaling.

    The product is ``quantizer.product``: ``torch._int_mm`` (``"int_mm"``: VNNI / AMX int8 units), or fbgemm's
    u8 x s8 kernel (``"fbgemm"``: ``VPMADDUBSW`` on AVX2 CPUs, where ``_int_mm`` is a scalar loop), whose 16-bit
    pair sums saturate with 8-bit activations and 8-bit weights: there the weights get 63 levels a side
    (:data:`FBGEMM_WEIGHT_LEVELS`), the activations keep 127.
    The quantizer's ``outliers`` (fbgemm only) are input channels kept out of the int8 product: their weight
    columns are zero in it and multiply in float32 (``wout``), so they set no token's scale.

    The weight columns are multiplied by the smoothing scales the quantizer divides the input by, so
    without rounding the function is ``linear``'s. Inference only: the packed weights are not in ``state_dict`` and
    follow neither ``load_state_dict`` nor ``.to()`` (build a new layer instead).
    """

    def __init__(self, linear: Any, quantizer: _RowQuantizer, smooth: Any | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach().float()
        w = w * smooth[None, :] if smooth is not None else w.clone()
        outliers = quantizer.outliers
        if outliers is not None and quantizer.product != "fbgemm":
            raise ConfigError("outlier channels are kept in float32 only on the fbgemm product.")
        self.register_buffer("wout", None if outliers is None else w[:, outliers].T.contiguous())
        if outliers is not None:
            w[:, outliers] = 0.0
        qweight, wscale = quantize_weight(w, FBGEMM_WEIGHT_LEVELS if quantizer.product == "fbgemm" else 127)
        # (out, in) row-major, read as its transpose: measured faster than a (in, out) copy for _int_mm
        self.register_buffer("qweight", qweight)
        self.register_buffer("wscale", wscale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        self.quantizer = quantizer
        # weights reordered once into fbgemm's layout
        self.packed = fbgemm_pack(qweight, wscale) if quantizer.product == "fbgemm" else None

    def __deepcopy__(self, memo: dict[int, Any]) -> RowInt8Linear:
        """A deep copy that shares the packed weights (read-only, and not a plain tensor)."""
        out = type(self).__new__(type(self))
        memo[id(self)] = out
        if self.packed is not None:
            memo[id(self.packed)] = self.packed
        out.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return out

    def forward(self, x: Any) -> Any:
        q, scale, kept = self.quantizer(x)
        if self.packed is not None:
            # input quantized with scale 1 and zero point 128: the rows hold values in [-127, 127], rounded by the op
            y = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(q, 1.0, FBGEMM_LEVELS + 1, self.packed)
            if self.bias is not None:
                y = torch.addcmul(self.bias, y, scale, out=y)
            else:
                y.mul_(scale)
            if kept is not None:
                y.addmm_(kept, self.wout)
        else:
            y = torch._int_mm(q, self.qweight.T).float().mul_(scale)
            y = torch.addcmul(self.bias, y, self.wscale, out=y) if self.bias is not None else y.mul_(self.wscale)
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)


_ENGINE_LOCK = threading.Lock()


@contextlib.contextmanager
def _engine(name: str) -> Iterator[None]:
    """torch's quantized engine set to ``name`` (process-wide, restored after; a no-op when already set). For packing
    only (at build time, and once per int8 :class:`~embedstack.index.FlatIndex` search on fbgemm for its queries):
    the packed weights carry their kernel, so the engine at call time does not matter."""
    with _ENGINE_LOCK:  # two encoders built at once must not restore the engine under each other
        before = torch.backends.quantized.engine
        if before == name:
            yield
            return
        torch.backends.quantized.engine = name
        try:
            yield
        finally:
            torch.backends.quantized.engine = before


def int8_product() -> str:
    """How ``int8-token`` multiplies here: ``"int_mm"`` (``torch._int_mm`` on AVX-512 VNNI / AMX int8 units) or
    ``"fbgemm"`` (fbgemm's u8 x s8 kernel: where ``_int_mm`` has no units it is a scalar loop, about 20x slower than
    float32 on an AVX2 CPU; ``EMBEDSTACK_INT8_PRODUCT`` forces either)."""
    forced = os.environ.get("EMBEDSTACK_INT8_PRODUCT", "").strip().lower()
    if forced == "fbgemm" and "fbgemm" not in torch.backends.quantized.supported_engines:
        raise ConfigError("EMBEDSTACK_INT8_PRODUCT=fbgemm: this torch build has no fbgemm engine; unset it.")
    if forced in ("int_mm", "fbgemm"):
        return forced
    if forced:
        raise ConfigError(f"EMBEDSTACK_INT8_PRODUCT={forced!r}: use 'int_mm' or 'fbgemm', or unset it.")
    from embedstack.index._scan import int_gemm_units

    return "int_mm" if int_gemm_units() or "fbgemm" not in torch.backends.quantized.supported_engines else "fbgemm"


def calibration_batches(tokenizer: Any, *, rows: int = 16, lengths: tuple[int, ...] = (8, 16, 32, 64, 128),
                        max_length: int | None = None, seed: int = 0) -> list[Any]:
    """Pseudo-sentences for calibrating activation ranges: ``[CLS]`` + whole words drawn uniformly from
    ``tokenizer``'s vocabulary + ``[SEP]``, ``rows`` per length up to ``max_length`` (the model's
    positions), no padding (int64 tensors (rows, T)).

    Measured on MiniLM (``benchmarks/int8_torch_recipes.py --choose-alpha``, 1,500 STS-B train sentences):
    10-NN overlap with fp32 0.953 calibrated on them, 0.955 on 512 real STS-B train sentences; the recipe
    needs no dataset.
    """
    import numpy as np

    vocab = tokenizer.tokenizer.get_vocab()
    words = np.array(sorted(i for w, i in vocab.items() if w.isalpha() and not w.startswith("##") and len(w) > 1),
                     dtype=np.int64)
    if len(words) == 0:
        raise ConfigError("int8-smooth needs whole words in the tokenizer's vocabulary to calibrate on; "
                          "use precision='int8-fast'.")
    rng = np.random.default_rng(seed)
    out = []
    cap = max_length or max(lengths)
    for T in sorted({min(t, cap) for t in lengths}):
        ids = rng.choice(words, size=(rows, T))
        ids[:, 0], ids[:, -1] = tokenizer.cls_id, tokenizer.sep_id
        out.append(torch.from_numpy(ids))
    return out


def smooth_linears(model: Any, batches: list[Any], select: Any, alpha: float | None = None) -> tuple[Any, set[str]]:
    """A copy of ``model`` whose chosen ``nn.Linear`` layers are :class:`SmoothedLinear`, scales from the
    largest absolute input per channel over ``batches``; returns it and the smoothed layers' names.
    ``alpha``: the migration strength (default: :data:`SMOOTH_ALPHA`, read at call time)."""
    alpha = SMOOTH_ALPHA if alpha is None else float(alpha)
    peak = _input_peaks(model, batches, select)
    out = copy.deepcopy(model)
    done = set()
    for parent_name, parent in list(out.named_modules()):
        for child_name, child in list(parent.named_children()):
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            if full in peak:  # layers the forward pass never reached (BERT's pooler) stay as they are
                w = child.weight.detach().abs().amax(0).clamp(min=1e-5)
                s = peak[full].clamp(min=1e-5) ** alpha / w ** (1 - alpha)
                setattr(parent, child_name, SmoothedLinear(child, s))
                done.add(full)
    return out, done


def _input_peaks(model: Any, batches: list[Any], select: Any) -> dict[str, Any]:
    """The largest absolute input per channel of each chosen ``nn.Linear`` over ``batches`` (name -> (K,));
    layers the forward pass never reaches (BERT's pooler) are absent."""
    names = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and select(n)}
    peak: dict[str, Any] = {}

    def hook(name: str) -> Any:
        def record(module: Any, inputs: Any, output: Any) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).abs().amax(0)
            peak[name] = torch.maximum(peak[name], x) if name in peak else x
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n in names]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for ids in batches:
                model(ids)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return peak


def quantize_torch_rows(model: Any, calibration: list[Any], alpha: float | None = None,
                        product: str | None = None) -> Any:
    """A copy of ``model`` with every ``nn.Linear`` the forward pass reaches as a :class:`RowInt8Linear`
    (precision ``int8-token``; see the module docstring), inputs smoothed with strength ``alpha`` (default
    :data:`TOKEN_ALPHA`, read at call time) from their peaks over ``calibration`` (token-id batches,
    :func:`calibration_batches`). Sibling ``query``/``key``/``value`` layers share one quantizer and one
    smoothing (their weights' largest column entries taken together). ``product``: ``"int_mm"`` or ``"fbgemm"``
    (default: :func:`int8_product`, by what the CPU has); with fbgemm the feed-forward outputs keep their
    :data:`OUTLIER_CHANNELS` largest smoothed input channels in float32."""
    alpha = TOKEN_ALPHA if alpha is None else float(alpha)
    product = int8_product() if product is None else product
    peak = _input_peaks(model, calibration, lambda name: True)
    out = copy.deepcopy(model)
    for parent_name, parent in list(out.named_modules()):
        children = {n: c for n, c in parent.named_children()
                    if isinstance(c, torch.nn.Linear) and (f"{parent_name}.{n}" if parent_name else n) in peak}
        qkv = [n for n in ("query", "key", "value") if n in children]
        groups = [qkv] if len(qkv) == 3 else []
        groups += [[n] for n in children if not (len(qkv) == 3 and n in qkv)]
        for group in groups:
            full = f"{parent_name}.{group[0]}" if parent_name else group[0]
            s = _smoothing(peak[full], [children[n].weight for n in group], alpha)
            outliers = None
            if product == "fbgemm" and _is_ffn_out(full) and OUTLIER_CHANNELS:
                outliers = (peak[full].float() / s).topk(min(OUTLIER_CHANNELS, len(s))).indices.sort().values
            quantizer = _RowQuantizer((1.0 / s).float(), readers=len(group), product=product, outliers=outliers)
            for n in group:
                setattr(parent, n, RowInt8Linear(children[n], quantizer, s))
    return out


def _smoothing(peak: Any, weights: list[Any], alpha: float) -> Any:
    """SmoothQuant's per-channel factors ``s_j = max|x_j|^a / max|W_:,j|^(1-a)`` for an input whose channel peaks
    are ``peak`` (K,), read by the linears of ``weights`` ((N, K) each; their largest column entries together)."""
    w = torch.stack([m.detach().float().abs().amax(0) for m in weights]).amax(0).clamp(min=1e-5)
    return peak.float().clamp(min=1e-5) ** alpha / w ** (1 - alpha)


class QuantizedRows:
    """Token states as int8 rows with one float32 scale each: what :class:`Int8FeedForwardIn` hands to
    :class:`Int8FeedForwardOut` (the GELU activations between the two products never exist in bfloat16; the input
    product's output before GELU does). ``q`` is int8, or uint8 codes + 128 where oneDNN takes unsigned rows
    (:func:`onednn_unsigned_source`)."""

    __slots__ = ("q", "scale", "lead")

    def __init__(self, q: Any, scale: Any, lead: tuple[int, ...]) -> None:
        self.q, self.scale, self.lead = q, scale, lead


def onednn_unsigned_source() -> bool:
    """Whether oneDNN's int8 linear (``torch.ops.onednn.qlinear_pointwise``) must take unsigned rows here: without
    AMX int8 its signed-source product falls to a reference kernel, so where the CPU has AVX-512 VNNI the rows go
    in as uint8 (the sign bit flipped: q + 128) with zero point 128, the same product. On an AMD EPYC with AVX-512
    VNNI (Zen 4, 2 threads) one 256 x 384 x 1,536 product took 2,083 ms with int8 rows and 0.6 ms (538 GOP/s)
    with the same rows as uint8 and zero point 128; 2,048 rows took 14 s against 3.2 ms for ``torch._int_mm``
    (one-off probes, not in a results file). On the tiles signed
    rows are the measured path (``encode_ffn8_amx``), so they stay. ``EMBEDSTACK_ONEDNN_SOURCE=u8`` / ``s8``
    forces one (the tests run both). Read once per encoder, when it is made (``runtime``), and handed to
    :func:`quantize_ffn_onednn`."""
    from embedstack._threads import cpu_features

    raw = os.environ.get("EMBEDSTACK_ONEDNN_SOURCE", "")
    forced = raw.strip().lower()
    if forced in ("u8", "s8"):
        return forced == "u8"
    if forced:
        raise ConfigError(f"EMBEDSTACK_ONEDNN_SOURCE={raw!r}: use u8, s8, or leave it unset (chosen by the CPU).")
    feats = cpu_features()
    # VNNI sums u8 x s8 products into 32 bits; without it (AVX-512 alone) the 16-bit pair sums could saturate
    return "amx_int8" not in feats and "avx512_vnni" in feats


class _OneDnnInt8(nn.Module):
    """A linear's weight for oneDNN's int8 product: columns times the smoothing factors ``smooth`` of its input,
    quantized per output channel (:func:`quantize_weight`), then reordered once into oneDNN's layout."""

    def __init__(self, linear: Any, smooth: Any, unsigned: bool | None = None) -> None:
        super().__init__()
        from embedstack.neural.packed import ROWS_HINT

        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.unsigned = onednn_unsigned_source() if unsigned is None else bool(unsigned)
        qweight, wscale = quantize_weight(linear.weight.detach().float() * smooth[None, :])
        self.register_buffer("qweight", torch.ops.onednn.qlinear_prepack(qweight, [ROWS_HINT, self.in_features]),
                             persistent=False)
        self.register_buffer("wscale", wscale.float().contiguous(), persistent=False)
        self.register_buffer("wzero", torch.zeros(self.out_features, dtype=torch.int64), persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().contiguous(),
                             persistent=False)
        self.register_buffer("inv_smooth", (1.0 / smooth).float().contiguous(), persistent=False)

    def _empty(self, width: int, lead: tuple[int, ...]) -> QuantizedRows:
        """No rows of ``width`` codes (int8, or uint8 where oneDNN takes unsigned rows)."""
        return QuantizedRows(torch.empty((0, width), dtype=torch.uint8 if self.unsigned else torch.int8),
                             torch.empty(0), lead)

    def _quantized(self, x: Any) -> QuantizedRows:
        """bfloat16 states ``x`` (..., K) divided by the smoothing factors, one int8 scale per row (the row kernels;
        uint8 codes + 128 where oneDNN takes unsigned rows)."""
        from embedstack.neural import _attention

        lead = tuple(x.shape[:-1])
        if x.numel() == 0:
            return self._empty(self.in_features, lead)
        if x.dtype != torch.bfloat16:
            x = x.to(torch.bfloat16)
        q, scale = _attention.quant_rows(x, self.inv_smooth, self.unsigned)
        return QuantizedRows(q, scale, lead)

    def _source(self, q: Any) -> tuple[Any, int]:
        """The rows as oneDNN gets them and their zero point: int8 ``q`` itself and 0, or (without AMX int8,
        :func:`onednn_unsigned_source`) q + 128 as uint8, the sign bit flipped, and 128: the same product. Rows
        that are uint8 already (the row kernels flip the sign bit as they quantize) go in as they are."""
        if q.dtype == torch.uint8:
            return q, 128
        return (q.view(torch.uint8) ^ 128, 128) if self.unsigned else (q, 0)

    def _product(self, q: Any, dtype: Any) -> Any:
        """int8 rows ``q`` (M, K; or uint8 codes + 128) times the weight, times the weight scales: (M, N) in
        ``dtype``."""
        rows, zero = self._source(q)
        return torch.ops.onednn.qlinear_pointwise(rows, 1.0, zero, self.qweight, self.wscale, self.wzero, None, 1.0,
                                                  0, dtype, "none", [], "none")


class Int8FeedForwardIn(_OneDnnInt8):
    """The feed-forward input product and its GELU, int8 on oneDNN (precisions ``bf16-int8-ffn``, ``bf16-int8-all``).

    ``forward(x)``: bfloat16 states (..., C) -> :class:`QuantizedRows` of ``GELU(x Wᵀ + b)`` divided by the next
    product's smoothing factors ``next_smooth``, ready for :class:`Int8FeedForwardOut`. Inference only.
    """

    def __init__(self, linear: Any, smooth: Any, next_smooth: Any, unsigned: bool | None = None) -> None:
        super().__init__(linear, smooth, unsigned)
        self.register_buffer("inv_next", (1.0 / next_smooth).float().contiguous(), persistent=False)

    def forward(self, x: Any) -> QuantizedRows:
        from embedstack.neural import _attention

        h = self._quantized(x)
        if h.q.shape[0] == 0:
            return self._empty(self.out_features, h.lead)
        y = self._product(h.q, torch.bfloat16)
        q, scale = _attention.ffn_mid(y, h.scale, self.bias, self.inv_next, self.unsigned)
        return QuantizedRows(q, scale, h.lead)


class Int8FeedForwardOut(_OneDnnInt8):
    """The feed-forward output product, int8 on oneDNN, on :class:`QuantizedRows`: ``forward(h)`` is
    ``h Wᵀ + b`` and ``add(h, residual)`` adds the block's residual, both bfloat16 (..., C). Given the block's
    ``norm`` (its post-residual LayerNorm, with a weight), both apply it too, in the same pass over each row: the
    block then holds ``nn.Identity`` in its place (:func:`quantize_ffn_onednn`). Inference only."""

    fuses_residual = True  # transformer.dense_add calls add()

    def __init__(self, linear: Any, smooth: Any, norm: nn.LayerNorm | None = None,
                 unsigned: bool | None = None) -> None:
        super().__init__(linear, smooth, unsigned)
        self.eps = 0.0 if norm is None else float(norm.eps)
        for name in ("norm_weight", "norm_bias"):
            p = None if norm is None else getattr(norm, name.removeprefix("norm_"))
            self.register_buffer(name, None if p is None else p.detach().float().contiguous(), persistent=False)

    def forward(self, h: QuantizedRows) -> Any:
        return self.add(h, None)

    def add(self, h: QuantizedRows, residual: Any | None) -> Any:
        from embedstack.neural import _attention

        if h.q.shape[0] == 0:
            return torch.empty((*h.lead, self.out_features), dtype=torch.bfloat16)
        if residual is not None and residual.dtype != torch.bfloat16:
            residual = residual.to(torch.bfloat16)
        y = self._product(h.q, torch.float32)
        norm = None if self.norm_weight is None else (self.norm_weight, self.norm_bias, self.eps)
        return _attention.rows_out(y, h.scale, self.bias, residual, norm).view(*h.lead, self.out_features)


class Int8Linear(Int8FeedForwardOut):
    """A linear on bfloat16 states, int8 on oneDNN (precision ``bf16-int8-all``: the attention's Q/K/V product and
    its output projection): ``forward(x)`` quantizes each row of ``x`` (one scale per token, after the smoothing
    factors ``smooth``) and is ``x Wᵀ + b`` in bfloat16; ``add(x, residual)`` adds the block's residual, and a fused
    ``norm`` as :class:`Int8FeedForwardOut`'s. Inference only."""

    def forward(self, x: Any) -> Any:  # type: ignore[override]
        return super().add(self._quantized(x), None)

    def add(self, x: Any, residual: Any | None) -> Any:  # type: ignore[override]
        return super().add(self._quantized(x), residual)


def ffn_onednn_available(model: Any, attention: bool = False) -> str | None:
    """None when :func:`quantize_ffn_onednn` can run on ``model`` here (with ``attention``: bf16-int8-all's
    products too), else why not."""
    from embedstack.neural import _attention

    if not hasattr(torch.ops.onednn, "qlinear_pointwise"):
        return "this torch has no oneDNN int8 linear (torch.ops.onednn.qlinear_pointwise)"
    if not _attention.row_kernels():
        return f"embedstack's row kernels do not run here (they need the AVX-512 build; {_attention.status()})"
    widths = (model.config.hidden_size, model.config.intermediate_size) + ((3 * model.config.hidden_size,)
                                                                           if attention else ())
    if not all(_attention.rows_supported(w) for w in widths):
        return f"row widths {widths} are not multiples of 16 up to 8,192"
    if model.config.hidden_act != "gelu":
        return f"the feed-forward activation is {model.config.hidden_act!r}; the int8 feed-forward fuses exact GELU only"
    from embedstack.index._scan import int_gemm_units

    if not int_gemm_units():  # AVX-512 without VNNI (e.g. Skylake-SP): inferred from Zen 4, not measured there
        return ("this CPU has no AVX-512 VNNI or AMX int8 units, where oneDNN's int8 linear has no fast kernel for "
                "its rows (on a VNNI CPU without AMX the signed-row kernel ran thousands of times slower)")
    return None


def check_ffn_onednn(model: Any, attention: bool = False) -> None:
    """Raise ``ConfigError`` (naming ``bf16-pure``) where :func:`quantize_ffn_onednn` cannot run on ``model`` here."""
    why = ffn_onednn_available(model, attention)
    if why is not None:
        name = "bf16-int8-all" if attention else "bf16-int8-ffn"
        raise ConfigError(f"precision={name!r} does not run here: {why}; use precision='bf16-pure'.")


def quantize_ffn_onednn(model: Any, reference: Any, calibration: list[Any], alpha: float | None = None,
                        unsigned: bool | None = None, attention: bool = False) -> Any:
    """``model`` (a bf16-pure copy of ``reference``, packed or not) with every block's feed-forward products as
    :class:`Int8FeedForwardIn` / :class:`Int8FeedForwardOut`, **in place**; weights, biases and calibration
    from the float32 ``reference``. Inputs are smoothed with strength ``alpha`` (default :data:`TOKEN_ALPHA`) from
    their channel peaks over ``calibration`` (:func:`calibration_batches`); ``unsigned``: how the rows go to
    oneDNN (default :func:`onednn_unsigned_source`). ``attention=True`` (precision ``bf16-int8-all``): the
    attention's Q/K/V product (one, over the shared input: ``attention.self.qkv``, packed model or not) and its
    output projection as :class:`Int8Linear` too. Raises ``ConfigError`` where it cannot run
    (:func:`ffn_onednn_available`)."""
    from embedstack.neural.transformer import BertLayer

    check_ffn_onednn(reference, attention)
    alpha = TOKEN_ALPHA if alpha is None else float(alpha)
    unsigned = onednn_unsigned_source() if unsigned is None else bool(unsigned)
    ffn = ("intermediate.dense", "output.dense")
    att = ("attention.self.query", "attention.output.dense")
    peak = _input_peaks(reference, calibration,
                        lambda name: (name.endswith(ffn) and "attention" not in name)
                        or (attention and name.endswith(att)))
    blocks = [(n, m) for n, m in reference.named_modules() if isinstance(m, BertLayer)]
    targets = {n: m for n, m in model.named_modules() if isinstance(m, BertLayer)}
    with torch.no_grad():
        for name, block in blocks:
            up, down = block.intermediate.dense, block.output.dense
            s_up = _smoothing(peak[f"{name}.intermediate.dense"], [up.weight], alpha)
            s_down = _smoothing(peak[f"{name}.output.dense"], [down.weight], alpha)
            target = targets[name]
            setattr(target.intermediate, "dense", Int8FeedForwardIn(up, s_up, s_down, unsigned))  # noqa: B010
            setattr(target.intermediate, "act", nn.Identity())  # noqa: B010 - GELU runs in the row kernel
            ln = block.output.LayerNorm  # fused when it is a LayerNorm with a weight; else left to the block
            norm = ln if isinstance(ln, nn.LayerNorm) and ln.weight is not None else None
            setattr(target.output, "dense", Int8FeedForwardOut(down, s_down, norm, unsigned))  # noqa: B010
            if norm is not None:  # applied by the product's row kernel (add): the block's own becomes a no-op
                setattr(target.output, "LayerNorm", nn.Identity())  # noqa: B010
            if attention:
                _int8_attention_linears(name, block, target, peak, alpha, unsigned)
    return model


def _int8_attention_linears(name: str, block: Any, target: Any, peak: dict[str, Any], alpha: float,
                            unsigned: bool) -> None:
    """Block ``target``'s Q/K/V product and attention output projection as :class:`Int8Linear` (weights from the
    float32 ``block``). Q, K and V become one product over their shared input (``attention.self.qkv``, which the
    attention uses whenever it is set, packed model or not); the separate Q, K and V (the [CLS]-only rows of a
    cross-encoder's last block) stay as they are."""
    from embedstack.neural.packed import _side_by_side

    self_att, out = block.attention.self, block.attention.output
    linears = (self_att.query, self_att.key, self_att.value)
    s_qkv = _smoothing(peak[f"{name}.attention.self.query"], [m.weight for m in linears], alpha)
    weight, bias = _side_by_side(linears)  # one layer whose outputs are Q, K and V side by side
    qkv = torch.nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        qkv.weight.copy_(weight)
        if bias is not None:
            qkv.bias.copy_(bias)
    target.attention.self.qkv = Int8Linear(qkv, s_qkv, None, unsigned)
    s_out = _smoothing(peak[f"{name}.attention.output.dense"], [out.dense.weight], alpha)
    ln = out.LayerNorm
    norm = ln if isinstance(ln, nn.LayerNorm) and ln.weight is not None else None
    setattr(target.attention.output, "dense", Int8Linear(out.dense, s_out, norm, unsigned))  # noqa: B010
    if norm is not None:
        setattr(target.attention.output, "LayerNorm", nn.Identity())  # noqa: B010


def quantize_torch_dynamic(model: Any, recipe: str = "int8", calibration: list[Any] | None = None,
                           product: str | None = None) -> Any:
    """A copy of ``model`` whose chosen ``nn.Linear`` layers run as dynamic int8 (torch's fbgemm
    kernels: VNNI ``vpdpbusd`` where the CPU has it; activations quantized per batch).

    Recipes (``benchmarks/int8_torch_recipes.py``; MiniLM, 1,500 STS-B sentences, 2 threads, a Xeon with
    AVX-512 VNNI; 10-NN overlap with fp32 and speed against sentence-transformers fp32):

    * ``int8`` — the attention projections (Q/K/V, output), per-channel weights: 0.955, 1.69×;
    * ``int8-fast`` — every Linear but the feed-forward output (whose GELU input has the widest
      outliers), per-channel: 0.900, 2.07×;
    * ``int8-dynamic`` — every Linear, per-tensor (torch's plain recipe): 0.817, 2.82×;
    * ``int8-smooth`` — ``int8-fast`` on smoothed inputs (see the module docstring); ``calibration``:
      token-id batches (:func:`calibration_batches`);
    * ``int8-bf16`` — ``int8-smooth`` with the remaining float Linear layers in bfloat16 (:class:`Bf16Linear`);
    * ``int8-token`` — every Linear with a scale per token (:func:`quantize_torch_rows`; ``product``: its
      product, default :func:`int8_product`).
    """
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    if recipe == "int8-token":
        if not calibration:
            raise ConfigError(f"precision {recipe!r} needs calibration batches (calibration_batches(tokenizer)).")
        return quantize_torch_rows(model, calibration, product=product)
    if recipe not in TORCH_RECIPES:
        raise ConfigError(f"Unknown torch int8 recipe {recipe!r}; choose one of {sorted([*TORCH_RECIPES, 'int8-token'])}.")
    select, per_channel = TORCH_RECIPES[recipe]
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec = {name: qconfig for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and select(name)}
    if recipe in SMOOTHED:
        if not calibration:
            raise ConfigError(f"precision {recipe!r} needs calibration batches (calibration_batches(tokenizer)).")
        model, smoothed = smooth_linears(model, calibration, select)
        spec = {(f"{n}.linear" if n in smoothed else n): q for n, q in spec.items()}
    else:
        model = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)
    if recipe in BF16_REST:
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if type(child) is torch.nn.Linear:  # not a quantized or smoothed one
                    setattr(parent, child_name, Bf16Linear(child))
    return model




_NODE_GROUPS = {
    "ffn_out": lambda n: "/output/dense/" in n and "/attention/" not in n,
    "ffn_in": lambda n: "/intermediate/dense/" in n,
    "attn_out": lambda n: "/attention/output/dense/" in n,
    "attention": lambda n: n.startswith("Attention"),
}


def _nodes(path: str | os.PathLike[str], groups: tuple[str, ...]) -> list[str]:
    """Names of the MatMul/Attention nodes of ``path`` that belong to the named groups."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    unknown = set(groups) - set(_NODE_GROUPS)
    if unknown:
        raise ConfigError(f"Unknown node group(s) {sorted(unknown)}; known: {sorted(_NODE_GROUPS)}.")
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Attention")
            and any(_NODE_GROUPS[g](n.name) for g in groups)]
