"""Inference linears on oneDNN: weights packed once, the bias, GELU and residual add fused into the product.

``nn.Linear`` in eager torch does three things a transformer block does not need on a CPU: ``addmm``
first copies the bias into every row of the output and then accumulates the product on top of it
(one more write of the whole output), the activation that follows (GELU) reads and writes that output
again, and so does the residual add after the block's output projection. oneDNN does all three inside
the matrix product ("post-ops"), from a weight reordered once into its own blocked layout. torch
exposes that kernel as ``torch.ops.mkldnn._linear_pointwise`` (what ``torch.compile`` with freezing emits
for a Linear); :class:`PackedLinear` calls it in eager mode, so packed batches, embedstack's attention
kernel and the fused products run together.

Measured on a Xeon with AMX (2 threads, bfloat16, ``benchmarks/encode.py`` has the model-level A/B):
a 2,730 x 384 -> 1,536 product with GELU 3.2 ms against 2.4 ms; 13 rows (a query) 0.106 against 0.042 ms.
The three query/key/value projections also run as one product (:func:`pack_linears` concatenates them).

Inference only: the packed weight has no gradient and its layout is opaque (never saved, never copied;
the runner that packs holds its own copy of the model). Where the operator is missing (a torch built
without oneDNN), :func:`pack_linears` leaves the model as it is.
"""

from __future__ import annotations

import os
from typing import Any, cast

from embedstack._extras import require

torch = require("torch", "torch", "transformer models")
from torch import Tensor, nn  # noqa: E402

# the row count oneDNN picks the weight's layout for; any row count runs on it (2 threads, 384 -> 1,536 + GELU,
# bf16: a hint of 256 or 1,024 gives the same times from 1 to 2,730 rows, within 3%; a hint of 1 or 16 is
# 1.6-1.7x slower at 2,730 rows)
ROWS_HINT = 256


def precisions() -> tuple[str, ...]:
    """The runner precisions that pack: bf16-pure, bf16-int8-ffn (its attention products) and bf16-int8-all (before
    its products become int8); fp32 too with
    ``EMBEDSTACK_PACKED=all``. Packed runners also run their rows in :func:`~embedstack.neural.transformer.bucket_rows`
    sizes, where embedstack's attention kernel runs.

    fp32 is not packed by default. Its plain products run on MKL, which keeps no per-shape state. oneDNN compiles and
    caches a kernel per (rows, product) shape, and a new shape costs far more than the product: at 256 rows, fp32
    2.1 against 1.0 ms, bf16 4.1 against 0.2 ms. Past the cache's 1,024 entries, memory keeps growing: 600 distinct
    row counts, run twice, took a process from 236 to 1,994 MB in fp32. Batches of varying length make many shapes,
    and fp32 gained only 4-6% from packing (``encode_amx``), so it keeps MKL. bf16 products run on oneDNN with or
    without packing (plain bf16 ``F.linear`` grew by 646 MB over the same 600 shapes), so bf16-pure packs.
    """
    from embedstack.neural.runtime import ONEDNN_INT8  # (runtime imports this module)

    mode = os.environ.get("EMBEDSTACK_PACKED", "1").strip().lower()
    bf16 = ("bf16-pure", *ONEDNN_INT8)
    return ("fp32", *bf16) if mode == "all" else bf16


def available(dtype: Any = None) -> bool:
    """Whether this torch has oneDNN's fused linear (``torch.ops.mkldnn._linear_pointwise``), it runs for ``dtype``
    (default float32) on this CPU, and it is not turned off (``EMBEDSTACK_PACKED=0``: plain ``nn.Linear``, for an
    A/B or a suspected fault).

    The operator is tried once per dtype on a tiny product rather than guessed from the CPU's flags: oneDNN's
    bfloat16 inner product needs AVX-512 (an AMD EPYC with AVX2 only refuses to build it, "could not create a
    primitive descriptor"), while torch's plain bfloat16 ``F.linear`` still runs there."""
    if os.environ.get("EMBEDSTACK_PACKED", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
            return False
    except (AttributeError, RuntimeError):
        return False
    dtype = torch.float32 if dtype is None else dtype
    if dtype not in _RUNS:
        _RUNS[dtype] = _probe(dtype)
    return _RUNS[dtype]


_RUNS: dict[Any, bool] = {}


def _probe(dtype: Any) -> bool:
    """Whether small packed products run in ``dtype`` here and give the plain results: with GELU fused on 2 rows,
    and with the residual add fused on :data:`ROWS_HINT` rows (the two operators :class:`PackedLinear` calls)."""
    try:
        weight, bias = torch.full((16, 16), 0.25, dtype=dtype), torch.zeros(16, dtype=dtype)
        x = torch.ones(ROWS_HINT, 16, dtype=dtype)
        want = x.float() @ weight.float().T
        y = PackedLinear(weight, bias, "gelu").forward(x[:2])
        z = PackedLinear(weight, bias).add(x, x)
        return bool(torch.allclose(y.float(), torch.nn.functional.gelu(want[:2]), rtol=1e-2)
                    and torch.allclose(z.float(), want + 1.0, rtol=1e-2))
    except (AttributeError, RuntimeError):
        return False


def _side_by_side(linears: tuple[nn.Linear, ...]) -> tuple[Tensor, Tensor | None]:
    """The weight and bias of ``linears`` as one layer whose outputs are theirs concatenated."""
    weight = torch.cat([m.weight.detach() for m in linears])
    biases = [m.bias for m in linears]
    bias = None if any(b is None for b in biases) else torch.cat([b.detach() for b in biases])  # type: ignore[union-attr]
    return weight, bias


class PackedLinear(nn.Module):
    """``y = act(x Wᵀ + b)`` (or ``x Wᵀ + b + residual`` with :meth:`add`) in one oneDNN product, for inference.

    ``weight`` (N, K) and ``bias`` (N,) in the dtype the inputs will have (float32 or bfloat16); ``activation``
    ``"gelu"`` / ``"gelu_tanh"`` / ``"relu"`` / ``None``.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, activation: str | None = None) -> None:
        super().__init__()
        weight = weight.detach()
        self.out_features, self.in_features = weight.shape
        self.dtype = weight.dtype
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, ROWS_HINT)
        except (AttributeError, RuntimeError):  # the plain layout runs too, only a little slower
            packed = weight.contiguous()
        self.register_buffer("weight", packed, persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().contiguous(), persistent=False)
        if activation in (None, "relu"):
            self.attr, self.algorithm = activation or "none", ""
        elif activation in ("gelu", "gelu_tanh"):
            self.attr, self.algorithm = "gelu", "tanh" if activation == "gelu_tanh" else "none"
        else:
            raise ValueError(f"PackedLinear: no fused form of activation {activation!r}")

    @classmethod
    def of(cls, *linears: nn.Linear, activation: str | None = None) -> PackedLinear:
        """One packed product for ``linears`` side by side (their outputs concatenated: Q, K, V)."""
        return cls(*_side_by_side(linears), activation)

    def _rows(self, x: Tensor) -> Tensor:
        return x.reshape(-1, self.in_features)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        if x.numel() == 0:
            return x.new_zeros((*lead, self.out_features))
        y = torch.ops.mkldnn._linear_pointwise(self._rows(x), self.weight, self.bias, self.attr, [], self.algorithm)
        return y.view(*lead, self.out_features)

    def add(self, x: Tensor, residual: Tensor) -> Tensor:
        """``x Wᵀ + b + residual`` (the block's output projection and its residual): one product."""
        if self.attr != "none":
            raise ValueError("PackedLinear.add: the residual add is fused only into a product without activation")
        lead = x.shape[:-1]
        if x.numel() == 0:
            return residual.clone()
        other = residual.reshape(-1, self.out_features)
        if other.dtype != x.dtype or not other.is_contiguous():
            other = other.to(x.dtype).contiguous()
        y = torch.ops.mkldnn._linear_pointwise.binary(self._rows(x), other, self.weight, self.bias, "add")
        return y.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        post = self.attr if self.attr != "gelu" or self.algorithm != "tanh" else "gelu_tanh"
        return f"in_features={self.in_features}, out_features={self.out_features}, post={post}, dtype={self.dtype}"


class X3Linear(nn.Module):
    """``y = act(x Wᵀ + b)`` for float32 ``x`` on the AMX tiles, to float32 accuracy: the product as three bf16
    products (``_attention.linear_x3``: about 4e-6 of the output's scale against 5e-7 for float32's own product),
    2.2-2.3x the rate of torch's float32 product on a Xeon with AMX (2 threads, 2,048 rows of MiniLM's shapes;
    benchmarks/x3_kernels.py). The
    bias, and GELU (erf form, by the row kernels' cubic segments: within 2.5e-6 of the exact GELU), are applied in the
    kernel; ReLU, the tanh GELU and the residual add run after it in float32. Inference only; built by
    :func:`pack_linears` with ``x3=True`` (precision ``fp32-bf16x3``)."""

    fuses_residual = True  # dense_add calls add()

    def __init__(self, weight: Tensor, bias: Tensor | None, activation: str | None = None) -> None:
        from embedstack.neural import _attention

        super().__init__()
        self.out_features, self.in_features = weight.shape
        high, low = _attention.pack_x3(weight)
        self.register_buffer("high", high, persistent=False)
        self.register_buffer("low", low, persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous(), persistent=False)
        if activation not in (None, "relu", "gelu", "gelu_tanh"):
            raise ValueError(f"X3Linear: no form of activation {activation!r}")
        self.activation = activation

    @classmethod
    def of(cls, *linears: nn.Linear, activation: str | None = None) -> X3Linear:
        """One product for ``linears`` side by side (their outputs concatenated: Q, K, V)."""
        return cls(*_side_by_side(linears), activation)

    def forward(self, x: Tensor) -> Tensor:
        from embedstack.neural import _attention

        y = _attention.linear_x3(x.float(), (self.high, self.low), self.bias, gelu=self.activation == "gelu")
        if self.activation == "relu":
            return torch.relu_(y)
        if self.activation == "gelu_tanh":  # (the erf form runs in the kernel)
            return torch.nn.functional.gelu(y, approximate="tanh")
        return y

    def add(self, x: Tensor, residual: Tensor) -> Tensor:
        """``x Wᵀ + b + residual``."""
        if self.activation is not None:
            raise ValueError("X3Linear.add: the residual add follows only a product without activation")
        return self.forward(x).add_(residual)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, post={self.activation}, bf16x3"


class RowLayerNorm(nn.Module):
    """``layer_norm`` of bfloat16 states on embedstack's row kernel (``_attention.layer_norm_rows``): one pass a row
    in float32, where torch's bf16 kernel took 4-5% of a bf16-pure forward pass on SciFact abstracts. Inference
    only; float32 parameters copied from ``norm``."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.eps = float(norm.eps)
        self.register_buffer("weight", norm.weight.detach().float().contiguous(), persistent=False)
        self.register_buffer("bias", None if norm.bias is None else norm.bias.detach().float().contiguous(),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        from embedstack.neural import _attention

        if x.dtype != torch.bfloat16 or x.numel() == 0:
            return torch.nn.functional.layer_norm(x, (x.shape[-1],), self.weight.to(x.dtype),
                                                  None if self.bias is None else self.bias.to(x.dtype), self.eps)
        return _attention.layer_norm_rows(x, self.weight, self.bias, self.eps)


def _row_norms(norm: nn.Module) -> bool:
    """Whether ``norm`` (a bfloat16 ``nn.LayerNorm`` over the last dimension) can run as a :class:`RowLayerNorm`."""
    from embedstack.neural import _attention

    return (type(norm) is nn.LayerNorm and norm.elementwise_affine and len(norm.normalized_shape) == 1
            and norm.weight.dtype == torch.bfloat16 and _attention.rows_supported(norm.normalized_shape[0]))


def _activation_name(act: nn.Module) -> str | None:
    """The fusable name of a block's activation module, or None when it has no fused form."""
    if isinstance(act, nn.GELU):
        return "gelu_tanh" if act.approximate == "tanh" else "gelu"
    if isinstance(act, nn.ReLU):
        return "relu"
    return None


def x3_available(model: Any) -> bool:
    """Whether :func:`pack_linears` with ``x3=True`` can put ``model``'s linears on the AMX tiles here: the AMX build
    of embedstack's kernels, and every block's linears float32 with both sides multiples of 32."""
    from embedstack.neural import _attention
    from embedstack.neural.transformer import BertLayer

    layers = [m for m in model.modules() if isinstance(m, BertLayer)]
    linears = [m for b in layers for m in b.modules() if type(m) is nn.Linear]
    return bool(linears) and all(m.weight.dtype == torch.float32
                                 and _attention.x3_supported(m.in_features, m.out_features) for m in linears)


def pack_linears(model: Any, *, x3: bool = False) -> Any:
    """``model`` (a :class:`~embedstack.neural.transformer.BertModel` in eval mode, float32 or bfloat16 weights)
    with every block's linears replaced by :class:`PackedLinear`, **in place** (pass a copy): Q, K and V also
    as one product (``attention.self.qkv``), GELU fused into the feed-forward input, the residual add into both
    output projections. Linears that are not plain ``nn.Linear`` (int8 modules) and blocks whose weights are in
    another dtype, or in a dtype oneDNN's product does not run in on this CPU (:func:`available`), are left alone;
    without oneDNN's operator nothing changes. ``x3=True``: :class:`X3Linear`
    instead (float32 weights, products on the AMX tiles; only where :func:`x3_available`)."""
    from embedstack.neural.transformer import BertLayer

    if model.training or not (x3_available(model) if x3 else available()):
        return model
    product = X3Linear if x3 else PackedLinear
    if x3 and all(m.implementation == "auto" for m in model.attention_modules()):
        model.set_attention("x3")  # attention's products on the tiles too
    with torch.no_grad():
        for block in model.modules():
            if not isinstance(block, BertLayer):
                continue
            att, out, inter, ffn_out = (block.attention.self, block.attention.output, block.intermediate,
                                        block.output)
            linears = [att.query, att.key, att.value, out.dense, inter.dense, ffn_out.dense]
            if not all(type(m) is nn.Linear for m in linears):
                continue
            if len({m.weight.dtype for m in linears}) != 1 or linears[0].weight.dtype not in (torch.float32,
                                                                                              torch.bfloat16):
                continue
            if not x3 and not available(linears[0].weight.dtype):
                continue
            act = _activation_name(inter.act)
            att.qkv = product.of(att.query, att.key, att.value)
            # module surgery by name (the attributes are typed nn.Linear); Q, K, V alone serve [CLS]-only rows
            for parent, name in ((att, "query"), (att, "key"), (att, "value"), (out, "dense"), (ffn_out, "dense")):
                setattr(parent, name, product.of(getattr(parent, name)))
            setattr(inter, "dense", product.of(inter.dense, activation=act))  # noqa: B010
            if act is not None:  # fused into the product
                setattr(inter, "act", nn.Identity())  # noqa: B010
            for parent in (out, ffn_out):  # bf16: the residual LayerNorms on embedstack's row kernel
                if _row_norms(parent.LayerNorm):
                    setattr(parent, "LayerNorm", RowLayerNorm(parent.LayerNorm))  # noqa: B010
    return model


def dense_add(dense: nn.Module, dropout: nn.Module, x: Tensor, residual: Tensor) -> Tensor:
    """``dropout(dense(x)) + residual``, as one fused product when ``dense`` is packed (inference: no dropout)."""
    if isinstance(dense, PackedLinear) or getattr(dense, "fuses_residual", False):  # packed or int8 (quantize.py)
        return cast(Any, dense).add(x, residual)
    return dropout(dense(x)) + residual
