"""int8 inference: onnxruntime quantization recipes and torch dynamic quantization.

Recipes are named so the choice is visible and measured (``benchmarks/encode.py``):

* ``int8-dynamic`` — onnxruntime's plain dynamic quantization (per-tensor signed int8 weights,
  activations quantized per batch). On x86 CPUs without VNNI the u8×s8 kernels use
  ``VPMADDUBSW``, whose 16-bit intermediate sums saturate: quality suffers.
* ``int8`` — the recipe chosen by measurement: see :data:`ONNX_RECIPES`.

Example:
    >>> sorted(ONNX_RECIPES)
    ['int8', 'int8-dynamic']
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from embedstack._extras import require
from embedstack.errors import ConfigError

__all__ = ["ONNX_RECIPES", "quantize_onnx", "quantize_torch_dynamic"]

# name -> keyword arguments of onnxruntime.quantization.quantize_dynamic
ONNX_RECIPES: dict[str, dict[str, Any]] = {
    "int8-dynamic": {"per_channel": False, "reduce_range": False, "weight_type": "QInt8"},
    "int8": {"per_channel": True, "reduce_range": False, "weight_type": "QUInt8"},
}


def quantize_onnx(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, recipe: str = "int8",
                  **overrides: Any) -> Path:
    """Write an int8 copy of the ONNX model ``src`` to ``dst`` following ``recipe``."""
    require("onnxruntime", "onnx", "int8 quantization")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if recipe not in ONNX_RECIPES:
        raise ConfigError(f"Unknown int8 recipe {recipe!r}; use one of {sorted(ONNX_RECIPES)}.")
    kwargs = {**ONNX_RECIPES[recipe], **overrides}
    kwargs["weight_type"] = getattr(QuantType, kwargs["weight_type"])
    import onnx

    # fused contrib ops (Attention, SkipLayerNormalization) defeat shape inference: outputs are float.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT, **kwargs.pop("extra_options", {})}
    kwargs["extra_options"] = extra
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(src), str(tmp), **kwargs)
    os.replace(tmp, dst)
    return dst


def quantize_torch_dynamic(model: Any) -> Any:
    """A copy of ``model`` whose ``nn.Linear`` layers run as dynamic int8 (torch's fbgemm kernels)."""
    torch = require("torch", "torch", "int8 quantization")
    import copy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
