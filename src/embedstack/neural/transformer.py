"""A BERT-family encoder written top to bottom: embeddings → attention → MLP → block → model.

Submodule names follow the Hugging Face checkpoint keys (``embeddings.word_embeddings.weight``,
``encoder.layer.0.attention.self.query.weight`` ...), so loading pretrained weights is a plain
mapping loop over ``model.safetensors`` read with the ``safetensors`` library (no pickle, no
``torch.load``). Attention has two paths that compute the same thing: the fast one calls
:func:`torch.nn.functional.scaled_dot_product_attention`, the reference one spells out
``softmax(QKᵀ/√d + mask) V``; a test checks that they agree. In inference the default (``"auto"``)
runs embedstack's own kernel (:mod:`embedstack.neural._attention`, register-tiled for small head dimensions)
where it runs and pays, torch's elsewhere.

Shapes: B = batch, T = tokens, C = hidden size, H = heads, D = C / H.

Example:
    >>> import torch
    >>> from embedstack.neural.config import BertConfig
    >>> cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
    ...                  intermediate_size=32)
    >>> model = BertModel(cfg).eval()
    >>> ids = torch.tensor([[2, 7, 9, 3]])
    >>> model(ids, torch.ones_like(ids)).shape
    torch.Size([1, 4, 16])
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any, cast

from embedstack._extras import require

torch = require("torch", "torch", "transformer models")
from torch import Tensor, nn  # noqa: E402
from torch.autograd import Function  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from embedstack.errors import ConfigError, EmbedstackError, FormatError  # noqa: E402
from embedstack.neural import _attention  # noqa: E402
from embedstack.neural.config import BertConfig  # noqa: E402
from embedstack.neural.packed import dense_add  # noqa: E402

__all__ = [
    "BertEmbeddings",
    "BertSelfAttention",
    "BertAttention",
    "BertLayer",
    "BertEncoder",
    "BertPooler",
    "BertModel",
    "has_pooler",
    "load_weights",
    "save_weights",
    "sinusoidal_table",
]

#: "auto": embedstack's kernel in inference where it runs (float32 / bfloat16 states, head dim a multiple of 16),
#: else torch's; "sdpa": always torch's scaled_dot_product_attention; "eager": the explicit formula
#: "x3": as "auto", with float32 states' products as three bf16 products each on the AMX tiles (fp32-bf16x3 runners)
ATTENTION_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "x3")


def _own_kernel(q: Tensor, mask: Tensor | None, head_dim: int) -> bool:
    """Whether inference attention on ``q``'s states runs embedstack's kernel (no autograd, no tracing for export,
    a boolean or no mask)."""
    return (not torch.is_grad_enabled() and (mask is None or mask.dtype == torch.bool)
            and not torch.jit.is_tracing() and _attention.supports(q, head_dim))


def sinusoidal_table(n_positions: int, dim: int) -> Tensor:
    """The fixed position table of "Attention is all you need": sin on even, cos on odd features."""
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (P, 1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))  # (C/2,)
    table = torch.zeros(n_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return table.float()  # (P, C)


def _activation(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()  # exact, erf-based, as the original BERT
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return nn.GELU(approximate="tanh")
    return nn.ReLU()


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.sinusoidal = config.position_embedding_type == "sinusoidal"
        if self.sinusoidal:
            table = sinusoidal_table(config.max_position_embeddings, config.hidden_size)
            self.register_buffer("position_table", table, persistent=False)  # fixed, never saved
        else:
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        T = input_ids.shape[1]
        x = self.word_embeddings(input_ids)  # (B, T, C)
        positions: Tensor = self.position_table if self.sinusoidal else self.position_embeddings.weight  # type: ignore[assignment]
        x = x + positions[:T]  # (T, C) broadcast over B
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]  # segment 0 everywhere, without a lookup
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))  # (B, T, C)


class _MaskedScale(Function):
    """``x * mask * scale`` that keeps only the bool mask for backward (1 byte per element)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, keep: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.mul(x, keep).mul_(scale)  # one new tensor, not two

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return torch.mul(grad, keep).mul_(ctx.scale), None, None


class _HashDropout(Function):
    """Dropout whose mask is never stored: the hash kernel applies it to ``x`` and, from the same seed, to the
    gradient (:func:`embedstack.neural._dropout_kernel.scale_kept`; float32 CPU tensors)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, p: float, seed: int) -> Tensor:
        ctx.p, ctx.seed = p, seed
        return _hash_scaled(x, p, seed)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return _hash_scaled(grad, ctx.p, ctx.seed), None, None


def _hash_scaled(x: Tensor, p: float, seed: int) -> Tensor:
    kernel = _parallel_mask()
    assert kernel is not None
    return torch.from_numpy(kernel.scale_kept(x.detach().contiguous().numpy(), p, seed))


@functools.lru_cache(maxsize=1)
def _parallel_mask() -> Any:
    """The module :mod:`embedstack.neural._dropout_kernel` where numba (the ``fast`` extra) is installed."""
    try:
        from embedstack.neural import _dropout_kernel
    except (ImportError, EmbedstackError):  # pragma: no cover - exercised only without the extra
        return None
    return _dropout_kernel


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout: each element kept with probability ``1 - p`` and scaled by ``1 / (1 - p)``, as
    :func:`torch.nn.functional.dropout`, with a cheaper keep-mask. Training spends much of its time on
    masks: MiniLM drops 10% of every attention probability, B x H x T x T elements per layer.

    On CPU with numba, the mask comes from a counter-based hash computed on every core
    (:mod:`embedstack.neural._dropout_kernel`; p to within 3e-8; seeded from torch's generator, so
    ``torch.manual_seed`` keeps training reproducible): about 20x faster than torch's one-thread
    Mersenne Twister. For float32 the mask is not even stored: one kernel pass scales the kept elements
    forward, and the same seed scales the gradient backward. Otherwise from 16-bit random integers
    (``random_(0, 10000) >= 10000 p``; p exact when a multiple of 1e-4), about 3x faster than
    ``bernoulli_`` over floats.
    """
    if not training or p == 0.0:
        return x
    kernel = _parallel_mask() if x.device.type == "cpu" and 0.0 < p < 1.0 else None
    if kernel is not None:
        seed = int(torch.randint(0, 1 << 62, (1,)).item())  # from torch's generator: reproducible
        if x.dtype == torch.float32:
            return _HashDropout.apply(x, p, seed)
        keep = torch.from_numpy(kernel.keep_mask(x.numel(), p, seed)).view(x.shape)
        return _MaskedScale.apply(x, keep, 1.0 / (1.0 - p))
    threshold = round(p * 10000)
    if abs(threshold - p * 10000) > 1e-6 or not 0 < threshold < 10000:
        return F.dropout(x, p, True)  # probabilities that 1e-4 steps cannot express exactly
    keep = torch.empty(x.shape, dtype=torch.int16, device=x.device).random_(0, 10000) >= threshold
    return _MaskedScale.apply(x, keep, 1.0 / (1.0 - p))


class Dropout(nn.Module):
    """:func:`dropout` as a module (drop-in for ``nn.Dropout``; no state)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


# padded inference runs on real tokens only when fewer than this share of the batch's positions are real
PACK_BELOW = 0.85
# a packed batch this long (padded) runs attention row by row. MiniLM, 2 threads, one forward pass, padded / row by row:
# 31 rows of 12 tokens + 1 of 300: 370 / 76 ms; 32 rows of 16..300: 745 / 554 ms; 20 rows of 300..512:
# 1153 / 1043 ms. Below it the two are even or row by row loses (64 rows of 8..64: 226 / 241 ms; 16 of 13 + 1
# of 33: 27 / 28 ms), so short batches stay padded.
VARLEN_MIN_TOKENS = 256


def bucket_rows(n: int) -> int:
    """``n`` rounded up to a row count of at most 16 per power of two (at least a multiple of 16): the rows a
    model with ``row_buckets`` runs its products on.

    oneDNN builds a kernel for every product shape it meets and keeps 1,024 of them. A new row count costs far
    more than the product (a Xeon with AMX, one thread, 2,000 rows of MiniLM in bf16: 384 -> 1,536 with GELU
    2.8 ms cached, 18.7 ms new; 384 -> 1,152 1.0 against 7.5 ms; int8 1.0 against 2.0 ms), and every batch of
    new texts has a new one: 640 new SciFact abstracts encoded at 151/s, the same again at 184/s. Padding the
    rows to these sizes leaves few shapes (about 16 per doubling): from 256 rows on at most 6.25% more rows,
    below that at most 15 more (a 5-token query runs as 16 rows).
    """
    if n <= 16:
        return 16
    step = max(16, 1 << max(0, n.bit_length() - 5))
    return -(-n // step) * step


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention (query/key/value projections)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        C = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(C, C)
        self.key = nn.Linear(C, C)
        self.value = nn.Linear(C, C)
        self.dropout_p = config.attention_probs_dropout_prob
        self.implementation = "auto"
        # inference copies only (packed.pack_linears): Q, K and V as one product, (.., C) -> (.., 3C)
        self.qkv: nn.Module | None = None

    def projections(self, x: Tensor, xq: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``q, k, v`` for queries ``xq`` (default ``x``) over keys and values from ``x``; one product when packed
        (views of it, rows 3C apart: both attention kernels take such strides)."""
        if self.qkv is not None and xq is None:
            q, k, v = self.qkv(x).split(x.shape[-1], dim=-1)
            return q, k, v
        return self.query(x if xq is None else xq), self.key(x), self.value(x)

    def _heads(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def forward(self, x: Tensor, mask: Tensor | None, queries: Tensor | None = None) -> Tensor:
        """``mask``: bool (B, 1, 1, T), True where a key may be attended to, or an additive float mask.

        ``queries`` (B, Tq, C): the rows whose outputs are wanted (default: all of ``x``); keys and values
        always come from all of ``x``. A cross-encoder reads only [CLS] after the last block, so that block
        runs its queries, output projection and MLP on one row (the same values as the full block's row 0).
        """
        B, _, C = x.shape
        xq = x if queries is None else queries
        p = self.dropout_p if self.training else 0.0
        q, k, v = self.projections(x, queries)  # (B, T, C)
        if self.implementation in ("auto", "x3") and p == 0.0 and _own_kernel(q, mask, self.head_dim):
            return _attention.attention(q, k, v, None if mask is None else mask.reshape(B, -1), self.num_heads,
                                        self.implementation == "x3")
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        if self.implementation != "eager" and p == 0.0:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, Tq, D)
        else:  # training with attention dropout: SDPA's CPU kernels have none (its fallback is slower than this)
            y = self.reference(q, k, v, mask, p)
        return y.transpose(1, 2).reshape(B, xq.shape[1], C)  # (B, Tq, C)

    @staticmethod
    def reference(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float = 0.0) -> Tensor:
        """The explicit formula: ``softmax(Q Kᵀ / sqrt(D) + mask) V``."""
        if dropout_p > 0.0:  # training: scale Q, a quarter the size of the scores (and one pass less backward)
            scores = (q / math.sqrt(q.shape[-1])) @ k.transpose(-2, -1)  # (B, H, T, T)
            if mask is not None:  # added in place: masked_fill copies the scores forward and its gradient backward
                if mask.dtype == torch.bool:
                    mask = torch.zeros(mask.shape, dtype=scores.dtype).masked_fill_(~mask, torch.finfo(scores.dtype).min)
                scores = scores.add_(mask)
            weights = dropout(scores.softmax(dim=-1).to(v.dtype), dropout_p, True)
            return weights @ v  # (B, H, T, D)
        # scaled after the product: onnxruntime's attention fusion matches this MatMul -> Div graph (the ONNX export
        # runs this formula, without dropout)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None and mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        elif mask is not None:  # additive float mask (0 or a large negative number), as ONNX exports use
            scores = scores + mask
        return scores.softmax(dim=-1).to(v.dtype) @ v  # (B, H, T, D)


class BertSelfOutput(nn.Module):
    """Attention output projection, dropout, then the post-LN residual ``LayerNorm(x + f(x))``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, y: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(dense_add(self.dense, self.dropout, y, residual))  # (B, T, C)


class BertAttention(nn.Module):
    """Self-attention followed by its output projection and residual LayerNorm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x: Tensor, mask: Tensor | None, queries: Tensor | None = None) -> Tensor:
        return self.output(self.self(x, mask, queries), x if queries is None else queries)


class BertIntermediate(nn.Module):
    """The first half of the MLP: C → intermediate_size, then GELU."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = _activation(config.hidden_act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dense(x))  # (B, T, 4C)


class BertOutput(nn.Module):
    """The second half of the MLP: intermediate_size → C, dropout, residual LayerNorm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, h: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(dense_add(self.dense, self.dropout, h, residual))  # (B, T, C)


class BertLayer(nn.Module):
    """One transformer block: attention sub-layer, then MLP sub-layer (both post-LN)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x: Tensor, mask: Tensor | None, queries: Tensor | None = None) -> Tensor:
        """``queries``: compute only these rows' outputs (see :meth:`BertSelfAttention.forward`)."""
        a = self.attention(x, mask, queries)
        return self.output(self.intermediate(a), a)

    def forward_packed(self, h: Tensor, rows: Tensor, shape: tuple[int, int], mask: Tensor,
                       first: Tensor | None = None, spans: list[tuple[int, int]] | None = None,
                       offsets: tuple[Tensor, Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """The block on packed tokens ``h`` (N, C): the real tokens of a padded (B, T) batch, at flat
        positions ``rows``. Projections, LayerNorms and the MLP see real tokens only; attention runs
        padded (B, H, T, D), with ``mask``, or, given ``spans`` (each row's (offset, length) in ``h``), one
        row at a time on its own tokens (long rows: no padding in attention either). Inference only.

        ``first`` (B,): the positions in ``h`` of each row's first token; then only those rows' outputs
        are computed and returned, (B, C).

        ``offsets`` (q_off, q_len, k_off, k_len), int64 (B,): where each row's queries and keys are in the
        packed tensors; given, and where embedstack's kernel runs, attention runs packed (no padding at all).
        """
        att = self.attention.self
        B, T = shape
        C = h.shape[-1]
        hq = h if first is None else h.index_select(0, first)
        qh, kh, vh = att.projections(h, None if first is None else hq)  # qh (N, C), or (B, C) with first
        if offsets is not None and att.implementation in ("auto", "x3") and _own_kernel(qh, None, att.head_dim):
            y = _attention.attention_rows(qh, kh, vh, *offsets, att.num_heads, att.implementation == "x3")
            a = self.attention.output(y, hq)
            return self.output(self.intermediate(a), a)
        if spans is not None:
            y = _attend_rows(att, qh, kh, vh, spans, first is not None)
            a = self.attention.output(y, hq)
            return self.output(self.intermediate(a), a)

        def padded(t: Tensor) -> Tensor:
            buf = t.new_zeros(B * T, C)
            buf.index_copy_(0, rows, t)
            return att._heads(buf.view(B, T, C))

        q = padded(qh) if first is None else att._heads(qh.view(B, 1, C))
        y = F.scaled_dot_product_attention(q, padded(kh), padded(vh), attn_mask=mask)  # (B, H, Tq, D)
        y = y.transpose(1, 2).reshape(-1, C)
        if first is None:
            y = y.index_select(0, rows)  # (N, C)
        a = self.attention.output(y, hq)
        return self.output(self.intermediate(a), a)


def _attend_rows(att: BertSelfAttention, q: Tensor, k: Tensor, v: Tensor, spans: list[tuple[int, int]],
                 first_only: bool) -> Tensor:
    """Attention of packed rows one at a time (each sees its own keys and values, no mask, no padding):
    ``k``, ``v`` (N, C); ``q`` (N, C), or (B, C) with ``first_only`` (row b's first token only)."""
    out = q.new_empty(q.shape)

    def heads(t: Tensor) -> Tensor:
        return t.view(1, -1, att.num_heads, att.head_dim).transpose(1, 2)  # (1, H, n, D)

    for b, (o, n) in enumerate(spans):
        qs = slice(b, b + 1) if first_only else slice(o, o + n)
        y = F.scaled_dot_product_attention(heads(q[qs]), heads(k[o:o + n]), heads(v[o:o + n]))  # (1, H, nq, D)
        heads(out[qs]).copy_(y)  # straight into the packed rows (one copy)
    return out


class BertEncoder(nn.Module):
    """The stack of blocks."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: Tensor, mask: Tensor | None, first_only: bool = False) -> Tensor:
        """Token states (B, T, C); ``first_only``: the last block computes row 0 alone, (B, 1, C)."""
        last = len(self.layer) - 1
        for i, block in enumerate(self.layer):
            x = block(x, mask, x[:, :1] if first_only and i == last else None)
        return x


class BertPooler(nn.Module):
    """BERT's next-sentence pooler (dense + tanh on [CLS]); kept only so checkpoints round-trip."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, C)


class BertModel(nn.Module):
    """The encoder: token ids → contextual token embeddings ``(B, T, C)``.

    Args:
        config: The hyper-parameters.
        add_pooler: Create the (unused for sentence embeddings) NSP pooler, so that checkpoints which
            have one are saved back unchanged.

    Example:
        >>> from embedstack.neural.config import BertConfig
        >>> m = BertModel(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
        ...                          num_attention_heads=2, intermediate_size=16))
        >>> sorted(m.state_dict())[:2]
        ['embeddings.LayerNorm.bias', 'embeddings.LayerNorm.weight']
    """

    def __init__(self, config: BertConfig, *, add_pooler: bool = False) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooler else None
        # the runtime's packed inference copies (bf16-pure, bf16-int8-ffn/-all; fp32 with EMBEDSTACK_PACKED=all) set
        # this: where embedstack's attention kernel runs (not with EMBEDSTACK_ATTENTION=torch), every batch then runs
        # packed (real tokens only), its rows padded to :func:`bucket_rows`
        self.row_buckets = False

    def set_attention(self, implementation: str) -> BertModel:
        """Choose ``"auto"`` (embedstack's kernel in inference where it runs, else torch's), ``"sdpa"`` (torch's
        fused kernel), ``"eager"`` (the explicit reference formula) or ``"x3"`` (as auto, float32 states' products
        as three bf16 products on the AMX tiles: what fp32-bf16x3 runners set)."""
        if implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ConfigError(f"Unknown attention implementation {implementation!r}; use 'auto', 'sdpa', 'eager' or "
                              "'x3'.")
        for module in self.attention_modules():
            module.implementation = implementation
        return self

    def attention_modules(self) -> list[BertSelfAttention]:
        """The self-attention module of every block, in order."""
        return [m for m in self.modules() if isinstance(m, BertSelfAttention)]

    def init_weights(self, seed: int | None = None) -> BertModel:
        """BERT's initialisation for training from scratch: N(0, 0.02) weights, zero biases, unit LayerNorm."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                with torch.no_grad():
                    module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
                if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        return self

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, *, pack: bool = True, first_only: bool = False) -> Tensor:
        """``input_ids`` (B, T) int64; ``attention_mask`` (B, T), 1 for real tokens, 0 for padding.

        ``pack``: in inference, compute real tokens only when the batch is mostly padding, or always with
        ``row_buckets`` (outputs at masked positions are then zeros); False when the caller reads outputs at masked
        positions.
        ``first_only``: return only the first token's states, (B, 1, C) (a [CLS] head: cross-encoders); the
        last block then runs its queries, output projection and MLP on that row alone: about a sixth less
        work for a 6-layer model, the same values.
        """
        n_tokens = input_ids.shape[1]
        if n_tokens > self.config.max_position_embeddings:
            raise ConfigError(
                f"Sequence of {n_tokens} tokens exceeds max_position_embeddings={self.config.max_position_embeddings}; "
                "truncate the input (SentenceEncoder does this for you)."
            )
        mask = None
        if attention_mask is not None and (torch.compiler.is_compiling() or not bool(attention_mask.all())):
            # a batch without padding takes the unmasked kernel (traced graphs keep the mask: no data-dependent branch)
            mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, C)
        bucketed = pack and attention_mask is not None and self._bucketed(x)
        if pack and attention_mask is not None and (mask is not None or bucketed) and self._pack(attention_mask,
                                                                                                  bucketed):
            if mask is None:
                mask = attention_mask.bool()[:, None, None, :]
            return self._forward_packed(x, attention_mask, mask, first_only, bucketed)
        return self.encoder(x, mask, first_only)  # (B, T, C), or (B, 1, C)

    def _pack(self, attention_mask: Tensor, bucketed: bool = False) -> bool:
        """Run on real tokens only: inference, eager, and at least 15% of the batch is padding; or always, in row
        buckets (``bucketed``: :meth:`_bucketed`), where embedstack's attention kernel takes the packed rows."""
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.jit.is_tracing():
            return False
        return bucketed or bool(attention_mask.sum() < PACK_BELOW * attention_mask.numel())

    def _bucketed(self, x: Tensor) -> bool:
        """Whether packed rows of ``x``'s dtype run padded to :func:`bucket_rows` (``row_buckets`` and every block
        on embedstack's kernel, which attends packed rows through offsets)."""
        if not self.row_buckets:
            return False
        heads = [cast(BertLayer, block).attention.self for block in self.encoder.layer]
        return all(a.implementation in ("auto", "x3") for a in heads) and _own_kernel(x, None, heads[0].head_dim)

    def _forward_packed(self, x: Tensor, attention_mask: Tensor, mask: Tensor, first_only: bool = False,
                        bucketed: bool = False) -> Tensor:
        """:meth:`forward` without computing padding: a batch of short texts padded to its longest row
        spends most of its matrix products on padding (a merged server batch of 16 STS-B sentences:
        13 real tokens a row, 33 padded). Padding positions of the output are zeros."""
        B, T, C = x.shape
        rows = attention_mask.reshape(-1).nonzero().squeeze(1)
        n = int(rows.shape[0])
        pad = bucket_rows(n) - n if bucketed else 0
        if pad:  # zero rows after the real ones, attending among themselves (one more item), dropped at the end
            h = x.new_zeros(n + pad, C)
            torch.index_select(x.reshape(B * T, C), 0, rows, out=h[:n])
        else:
            h = x.reshape(B * T, C).index_select(0, rows)  # (N, C)
        counts = attention_mask.sum(dim=1)
        starts = torch.cumsum(counts, 0) - counts  # each row's first token is real: its packed position
        first = starts if first_only else None
        # long rows attend one at a time (no padding in attention; a few hundred tokens a row make the
        # per-call overhead small); short ones together, padded. Where embedstack's kernel runs, all rows
        # attend packed in one call (offsets)
        spans = list(zip(starts.tolist(), counts.tolist(), strict=True)) if T >= VARLEN_MIN_TOKENS else None
        offsets = (starts, counts, starts, counts)
        if pad:
            extra = torch.tensor([n], dtype=starts.dtype), torch.tensor([pad], dtype=counts.dtype)
            offsets = (torch.cat([starts, extra[0]]), torch.cat([counts, extra[1]]), torch.cat([starts, extra[0]]),
                       torch.cat([counts, extra[1]]))
        last_offsets = (torch.arange(B), torch.ones(B, dtype=torch.int64), starts, counts)
        last = len(self.encoder.layer) - 1
        for i, block in enumerate(self.encoder.layer):
            assert isinstance(block, BertLayer)
            lastq = first_only and i == last
            h = block.forward_packed(h, rows, (B, T), mask, first if i == last else None, spans,
                                     last_offsets if lastq else offsets)
        if first_only:
            return h.view(B, 1, C)
        out = h.new_zeros(B * T, C)
        out.index_copy_(0, rows, h[:n] if pad else h)
        return out.view(B, T, C)


# ----------------------------------------------------------------------------------------------------
# Loading and saving: a plain key mapping over safetensors files.

_SKIP_PREFIXES = ("cls.", "embeddings.position_ids", "lm_head.")


def _map_key(key: str) -> str:
    """Hugging Face checkpoint key → our parameter name (BertForMaskedLM prefix, TF-era names)."""
    if key.startswith("bert."):
        key = key[len("bert."):]
    return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def load_weights(model: BertModel, path: str | os.PathLike[str]) -> BertModel:
    """Copy the tensors of ``model.safetensors`` at ``path`` into ``model`` (missing keys raise)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FormatError(
            f"Missing weights file {path}. The folder must hold 'model.safetensors' "
            "(pytorch_model.bin is not read: it needs pickle); convert it with safetensors first."
        )
    expected = model.state_dict()
    seen: set[str] = set()
    try:
        with safe_open(str(path), framework="pt") as fh, torch.no_grad():
            for raw in fh.keys():  # noqa: SIM118 - safe_open is not a dict
                if raw.startswith(_SKIP_PREFIXES) or "position_ids" in raw:
                    continue
                key = _map_key(raw)
                if key not in expected:
                    continue
                tensor = fh.get_tensor(raw)
                if tuple(tensor.shape) != tuple(expected[key].shape):
                    raise FormatError(
                        f"{path}: tensor {raw!r} has shape {tuple(tensor.shape)} but config.json implies "
                        f"{tuple(expected[key].shape)}; the config and weights do not belong together."
                    )
                expected[key].copy_(tensor.to(expected[key].dtype))
                seen.add(key)
    except FormatError:
        raise
    except Exception as exc:  # safetensors raises its own error types for truncated files
        raise FormatError(f"Cannot read {path} as safetensors ({exc}); re-save or re-download it.") from None
    missing = sorted(set(expected) - seen)
    if missing:
        raise FormatError(
            f"{path} lacks {len(missing)} tensors the model needs, e.g. {missing[:3]}; "
            "is it a BERT checkpoint matching config.json?"
        )
    return model


def check_config_fits(config: BertConfig, path: str | os.PathLike[str]) -> None:
    """Compare ``config.json``'s sizes with the checkpoint's tensor shapes, before any memory is allocated.

    A damaged or mismatched config (``hidden_size`` of 10**9 ...) is a :class:`FormatError` here, not a
    huge allocation in :class:`BertModel`.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            shapes = {_map_key(k): tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise FormatError(f"Cannot read {path} as safetensors ({exc}); re-save or re-download it.") from None
    c = config
    want = {"embeddings.word_embeddings.weight": (c.vocab_size, c.hidden_size),
            "embeddings.token_type_embeddings.weight": (c.type_vocab_size, c.hidden_size),
            "encoder.layer.0.intermediate.dense.weight": (c.intermediate_size, c.hidden_size)}
    if c.position_embedding_type == "absolute":
        want["embeddings.position_embeddings.weight"] = (c.max_position_embeddings, c.hidden_size)
    for key, shape in want.items():
        got = shapes.get(key)
        if got is None:
            raise FormatError(f"{path} lacks the tensor {key!r}; is it a BERT checkpoint matching config.json?")
        if got != shape:
            raise FormatError(f"{path}: tensor {key!r} has shape {got} but config.json implies {shape}; the config "
                              "and weights do not belong together.")
    layers = {k.split(".")[2] for k in shapes if k.startswith("encoder.layer.") and k.count(".") > 2}
    if c.num_hidden_layers > len(layers):
        raise FormatError(f"config.json asks for {c.num_hidden_layers} layers but {path} holds {len(layers)}; the "
                          "config and weights do not belong together.")


def load_encoder(folder: str | os.PathLike[str]) -> BertModel:
    """The BERT of a model folder (``config.json`` + ``model.safetensors``), without the NSP pooler: sizes checked
    before allocation, missing or mismatched tensors a :class:`FormatError`."""
    from embedstack.neural.config import BertConfig

    folder = Path(folder)
    config = BertConfig.from_json_file(folder / "config.json")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FormatError(f"Missing weights file {weights}.")
    check_config_fits(config, weights)
    return load_weights(BertModel(config, add_pooler=False), weights)


def has_pooler(path: str | os.PathLike[str]) -> bool:
    """Whether a checkpoint carries BERT's NSP pooler weights."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return any(_map_key(k).startswith("pooler.") for k in fh.keys())  # noqa: SIM118
    except Exception:  # reported properly by load_weights
        return False


def save_weights(model: BertModel, path: str | os.PathLike[str]) -> None:
    """Write ``model``'s parameters as ``model.safetensors`` with Hugging Face ``BertModel`` keys."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
