"""GradCache (Gao et al. 2021) for MultipleNegativesRankingLoss: large in-batch-negative batches on CPU.

The in-batch softmax needs every embedding of the batch at once, but the encoder's activations need
not be kept for all of them. :class:`CachedMultipleNegativesRankingLoss`:

1. embeds every mini-batch (chunk) **without** autograd, keeping only the (n, D) embeddings;
2. computes the MNRL loss on the full batch of these cached embeddings (the value returned);
3. when ``loss.backward()`` runs, receives the gradient of the loss w.r.t. each cached embedding, then
   re-embeds each chunk **with** autograd (restoring the RNG state of step 1, so dropout masks match)
   and back-propagates that chunk's cached gradient into the encoder's parameters, one chunk at a time.

Peak memory is one chunk's activations plus the (B, D) embeddings, and the parameter gradients equal
those of plain :class:`~embedstack.training.losses.MultipleNegativesRankingLoss` on the same batch.

Example:
    >>> import torch
    >>> enc = torch.nn.Linear(3, 2)
    >>> loss_fn = CachedMultipleNegativesRankingLoss(enc)
    >>> x = torch.randn(6, 3)
    >>> loss = loss_fn(list(x.split(2)), list((x + 0.1).split(2)))  # 3 chunks of 2 rows per column
    >>> loss.backward()
    >>> enc.weight.grad.shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from embedstack._extras import require

torch = require("torch", "torch", "cached (GradCache) losses")
from torch import Tensor, nn  # noqa: E402
from torch.autograd import Function  # noqa: E402

from embedstack._validation import check_float  # noqa: E402
from embedstack.errors import ConfigError, DimensionMismatch, InputError  # noqa: E402
from embedstack.training.losses import (  # noqa: E402
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
    mnrl_from_embeddings,
)

__all__ = ["CachedMultipleNegativesRankingLoss"]

Embed = Callable[[Any], Tensor]


class _Chunk:
    """One mini-batch: its features, the RNG state it was first embedded with, its row count."""

    __slots__ = ("features", "rng", "rows")

    def __init__(self, features: Any, rng: Tensor, rows: int) -> None:
        self.features, self.rng, self.rows = features, rng, rows


class _ReplayEmbeddings(Function):
    """Identity on the cached embeddings; its backward re-embeds each chunk and pushes its gradient."""

    @staticmethod
    def forward(ctx: Any, replay: Callable[[Sequence[Tensor]], None], *cached: Tensor) -> tuple[Tensor, ...]:
        ctx.replay = replay
        return tuple(c.view_as(c) for c in cached)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[None, ...]:
        ctx.replay(grads)
        return (None,) * (len(grads) + 1)


class CachedMultipleNegativesRankingLoss(nn.Module):
    """MultipleNegativesRankingLoss computed with GradCache; same value and gradients, bounded memory.

    The formula is :class:`~embedstack.training.losses.MultipleNegativesRankingLoss`'s:
    ``L = 1/B · Σ_i −log( exp(s·cos(a_i, p_i)) / Σ_{c ∈ C} exp(s·cos(a_i, c)) )`` with ``C`` every
    positive and every hard negative of the batch (``symmetric=True`` averages in positive → anchor).

    Unlike the other losses it takes *features*, not embeddings: ``embed(chunk) -> (n, D)`` is the
    model's forward (for example a :class:`torch.nn.Module`), and each column is given as a sequence of
    chunks (mini-batches) that ``embed`` accepts. The negative column is a flat pool of extra candidates
    (any number of rows, e.g. B·k), since every hard negative is a candidate for every anchor anyway.

    Call ``loss.backward()`` on the result as usual; the encoder's gradients arrive during that call.
    With autograd disabled (evaluation) it just embeds and returns the value.

    Args:
        embed: ``features_chunk -> (n, D)`` embeddings.
        scale: ``s = 1/temperature`` (default 20).
        symmetric: Add the positive → anchor direction.
        matryoshka_dims: If given, the loss is ``Σ_k w_k · L(embeddings[:, :d_k])`` over these truncation
            sizes, as :class:`~embedstack.training.losses.MatryoshkaLoss` computes it (the wrapper itself
            cannot take features, so the cached loss does the truncation).
        matryoshka_weights: ``w_k``, one per dim; default 1 each.
    """

    columns: tuple[str, ...] = ("anchor", "positive")
    optional_columns: tuple[str, ...] = ("negative",)
    truncatable = False  # takes features, not embeddings
    embed: Embed

    def __init__(self, embed: Embed, *, scale: float = 20.0, symmetric: bool = False,
                 matryoshka_dims: Sequence[int] | None = None,
                 matryoshka_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not callable(embed):
            raise ConfigError(f"CachedMultipleNegativesRankingLoss needs a callable embed(features) -> (n, D), "
                              f"got {type(embed).__name__}.")
        # Kept outside the module tree: the encoder's parameters belong to the model, not to the loss,
        # so an optimizer built from model + loss parameters holds each parameter once.
        object.__setattr__(self, "embed", embed)
        self.scale = check_float(self, "scale", scale, low=0.0, low_open=True)
        self.symmetric = bool(symmetric)
        self.matryoshka: tuple[tuple[int, float], ...] | None = None
        if matryoshka_dims is not None:
            # validated by the wrapper's own rules; only its dims and weights are kept
            m = MatryoshkaLoss(MultipleNegativesRankingLoss(), dims=matryoshka_dims, weights=matryoshka_weights)
            self.matryoshka = tuple(zip(m.dims, m.weights, strict=True))
        elif matryoshka_weights is not None:
            raise ConfigError("CachedMultipleNegativesRankingLoss got matryoshka_weights without matryoshka_dims.")

    def _embed_column(self, name: str, chunks: Sequence[Any]) -> tuple[Tensor, list[_Chunk]]:
        if isinstance(chunks, Tensor) or not isinstance(chunks, Sequence) or len(chunks) == 0:
            raise InputError(f"CachedMultipleNegativesRankingLoss: {name} must be a non-empty sequence of "
                             "feature chunks (e.g. list(features.split(32))).")
        outs, kept = [], []
        for i, feats in enumerate(chunks):
            rng = torch.get_rng_state()
            with torch.no_grad():
                e = self.embed(feats)  # (n, D)
            if not isinstance(e, Tensor) or e.ndim != 2 or not e.is_floating_point():
                shape = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
                raise DimensionMismatch(f"CachedMultipleNegativesRankingLoss: embed({name} chunk {i}) must return "
                                        f"a floating (n, D) tensor, got {shape}.")
            outs.append(e)
            kept.append(_Chunk(feats, rng, e.shape[0]))
        dims = {e.shape[1] for e in outs}
        if len(dims) != 1:
            raise DimensionMismatch(f"CachedMultipleNegativesRankingLoss: {name} chunks embed to different sizes "
                                    f"{sorted(dims)}.")
        return torch.cat(outs, dim=0), kept  # (rows, D)

    def _replay(self, columns: list[list[_Chunk]], grads: Sequence[Tensor]) -> None:
        for chunks, grad in zip(columns, grads, strict=True):
            if grad is None:
                continue
            for chunk, g in zip(chunks, grad.split([c.rows for c in chunks]), strict=True):
                with torch.random.fork_rng(devices=[]), torch.enable_grad():
                    torch.set_rng_state(chunk.rng)
                    e = self.embed(chunk.features)  # (n, D), now with a graph
                    torch.autograd.backward(e, grad_tensors=g)  # frees this chunk's graph

    def forward(self, anchor: Sequence[Any], positive: Sequence[Any], negative: Sequence[Any] | None = None) -> Tensor:
        """Each argument: a sequence of feature chunks; anchor and positive chunks embed to B rows each."""
        names = ["anchor", "positive"] + (["negative"] if negative is not None else [])
        given = [anchor, positive] + ([negative] if negative is not None else [])
        cached, chunks = [], []
        for name, col in zip(names, given, strict=True):
            e, c = self._embed_column(name, col)
            cached.append(e)
            chunks.append(c)
        a = cached[0]  # (B, D)
        for name, e in zip(names[1:], cached[1:], strict=True):
            if e.shape[1] != a.shape[1] or (name == "positive" and e.shape[0] != a.shape[0]):
                raise DimensionMismatch(f"CachedMultipleNegativesRankingLoss: anchor embeddings have shape "
                                        f"{tuple(a.shape)} but {name} embeddings have shape {tuple(e.shape)}.")
        if torch.is_grad_enabled():
            leaves = [e.detach().requires_grad_() for e in cached]
            cached = list(_ReplayEmbeddings.apply(lambda g: self._replay(chunks, g), *leaves))
        neg = cached[2] if len(cached) > 2 else None  # (N, D)
        if self.matryoshka is None:
            return mnrl_from_embeddings(cached[0], cached[1], neg, scale=self.scale, symmetric=self.symmetric)
        if max(d for d, _ in self.matryoshka) > a.shape[1]:
            raise DimensionMismatch(f"CachedMultipleNegativesRankingLoss: matryoshka_dims "
                                    f"{tuple(d for d, _ in self.matryoshka)} exceed the embedding size {a.shape[1]}.")
        total = cached[0].new_zeros(())
        for d, w in self.matryoshka:
            cut = [e[:, :d] for e in cached]  # (rows, d)
            total = total + w * mnrl_from_embeddings(cut[0], cut[1], cut[2] if neg is not None else None,
                                                     scale=self.scale, symmetric=self.symmetric)
        return total
