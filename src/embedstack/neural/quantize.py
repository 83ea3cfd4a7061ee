"""int8 inference: onnxruntime quantization recipes and torch dynamic quantization.

Recipes are named so the choice is visible and measured (``benchmarks/encode.py``):

* ``int8-dynamic`` — onnxruntime's plain dynamic quantization (per-tensor signed int8 weights,
  activations quantized per batch). On x86 CPUs without VNNI the u8×s8 kernels use
  ``VPMADDUBSW``, whose 16-bit intermediate sums saturate: quality suffers.
* ``int8`` — the recipe chosen by measurement for quality: int8 (per-tensor, signed weights) for the
  attention projections (Q/K/V and output), the feed-forward block kept in fp32.
* ``int8-fast`` — more int8: per-channel int8 everywhere except the feed-forward output projection
  (its input, the GELU output, has the widest outliers).

Measured on 1,000 STS-B test sentences against fp32 MiniLM (mean cosine / 10-NN overlap):
plain dynamic 0.962 / 0.83; per-channel 0.992 / 0.91; per-channel + FFN-out fp32 0.996 / 0.93
(``int8-fast``); per-tensor + FFN-out fp32 0.994 / 0.93; per-tensor + whole FFN fp32 0.998 / 0.96
(``int8``); per-channel + whole FFN fp32 0.998 / 0.96. Also measured and not better: reduce_range
(7-bit weights), u8×u8 kernels, keeping any single layer fp32, SmoothQuant-style scale migration
(α=0.5: 0.990 / 0.89). Speed: ``benchmarks/encode.py``.

Example:
    >>> sorted(ONNX_RECIPES)
    ['int8', 'int8-dynamic', 'int8-fast']
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from embedstack._extras import require

torch = require("torch", "torch", "int8 quantization")

from embedstack.errors import ConfigError  # noqa: E402
from embedstack.io import AtomicFile  # noqa: E402

__all__ = ["ONNX_RECIPES", "TORCH_RECIPES", "quantize_onnx", "quantize_torch_dynamic"]

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
    "int8-dynamic": (lambda name: True, False),
}


def quantize_torch_dynamic(model: Any, recipe: str = "int8") -> Any:
    """A copy of ``model`` whose chosen ``nn.Linear`` layers run as dynamic int8 (torch's fbgemm
    kernels: VNNI ``vpdpbusd`` where the CPU has it; activations quantized per batch).

    Recipes (``benchmarks/int8_torch_recipes.py``; MiniLM, 1,500 STS-B sentences, 2 threads, a Xeon with
    AVX-512 VNNI; 10-NN overlap with fp32 and speed against sentence-transformers fp32):

    * ``int8`` — the attention projections (Q/K/V, output), per-channel weights: 0.955, 1.69×;
    * ``int8-fast`` — every Linear but the feed-forward output (whose GELU input has the widest
      outliers), per-channel: 0.900, 2.07×;
    * ``int8-dynamic`` — every Linear, per-tensor (torch's plain recipe): 0.817, 2.82×.
    """
    import copy

    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    if recipe not in TORCH_RECIPES:
        raise ConfigError(f"Unknown torch int8 recipe {recipe!r}; choose one of {sorted(TORCH_RECIPES)}.")
    select, per_channel = TORCH_RECIPES[recipe]
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec = {name: qconfig for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and select(name)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8)




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
