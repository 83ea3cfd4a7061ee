"""Bengio et al. (2003)'s neural probabilistic language model, with a full softmax or negative sampling.

The previous ``context`` words are embedded, concatenated, passed through ``tanh`` and scored against
every word of the vocabulary (full softmax: cost grows with V), or, with ``loss="negative"``,
against the true next word and ``negative`` sampled noise words (cost independent of V) — the
trade-off that made word2vec's shortcuts win. The learned input embeddings are the word vectors.

Example:
    >>> texts = ["the cat sat on the mat", "the dog sat on the rug"] * 20
    >>> lm = NPLM(context=2, dim=8, hidden=16, epochs=1, min_count=1, loss="negative").fit(texts)  # doctest: +SKIP
    >>> lm.wv_.vectors.shape  # doctest: +SKIP
    (7, 8)
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from embedstack._extras import require
from embedstack._validation import check_choice, check_float, check_int
from embedstack.errors import InputError
from embedstack.static._corpus import CorpusLike, IdCorpus
from embedstack.static.keyedvectors import KeyedVectors
from embedstack.text import Analyzer

__all__ = ["NPLM", "step_cost"]


def _torch() -> Any:
    return require("torch", "torch", "the NPLM language model")


def _build_module(torch: Any, v: int, context: int, dim: int, hidden: int, sparse_out: bool) -> Any:
    """The network; embedding tables get sparse gradients where only a few rows are touched."""
    nn = torch.nn

    class _Net(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(v, dim, sparse=True)  # (V, d)
            self.hidden = nn.Linear(context * dim, hidden)  # (n*d) -> h
            self.out = nn.Embedding(v, hidden, sparse=sparse_out)  # output word vectors (V, h)
            self.bias = nn.Embedding(v, 1, sparse=sparse_out)  # (V, 1)
            nn.init.uniform_(self.emb.weight, -0.5 / dim, 0.5 / dim)
            nn.init.normal_(self.out.weight, 0.0, 1.0 / hidden ** 0.5)
            nn.init.zeros_(self.bias.weight)

        def encode(self, ctx: Any) -> Any:
            x = self.emb(ctx).flatten(1)  # (B, n*d)
            return torch.tanh(self.hidden(x))  # (B, h)

        def full_loss(self, ctx: Any, target: Any) -> Any:
            h = self.encode(ctx)
            logits = h @ self.out.weight.T + self.bias.weight.T  # (B, V)
            return torch.nn.functional.cross_entropy(logits, target)

        def ns_loss(self, ctx: Any, target: Any, noise: Any) -> Any:
            h = self.encode(ctx)  # (B, h)
            pos = (h * self.out(target)).sum(-1) + self.bias(target).squeeze(-1)  # (B,)
            neg = torch.einsum("bh,bkh->bk", h, self.out(noise)) + self.bias(noise).squeeze(-1)  # (B, k)
            f = torch.nn.functional.logsigmoid
            return -(f(pos) + f(-neg).sum(-1)).mean()

    return _Net()


class _Optim:
    """Adam for dense parameters, SparseAdam for sparse embedding tables (cost ~ rows touched)."""

    def __init__(self, torch: Any, net: Any, lr: float) -> None:
        sparse = [net.emb.weight] + ([net.out.weight, net.bias.weight] if net.out.sparse else [])
        ids = {id(p) for p in sparse}
        dense = [p for p in net.parameters() if id(p) not in ids]
        self.opts = [torch.optim.SparseAdam(sparse, lr=lr), torch.optim.Adam(dense, lr=lr)]

    def zero_grad(self) -> None:
        for o in self.opts:
            o.zero_grad()

    def step(self) -> None:
        for o in self.opts:
            o.step()


class NPLM:
    """Bengio 2003 feed-forward language model over an id stream.

    Args:
        context: previous words used to predict the next one.
        dim: word-embedding size.  hidden: tanh layer size.
        loss: ``"softmax"`` (full) or ``"negative"`` (negative sampling with ``negative`` noise words
            from the unigram^0.75 distribution).
        epochs / batch_size / learning_rate: Adam training.  max_examples: cap per epoch (None: all).
        min_count / max_vocab / analyzer / seed: as :class:`~embedstack.static.word2vec.Word2Vec`.

    Attributes:
        wv_: the input embeddings as :class:`KeyedVectors`; module_: the torch module; history_.

    Example:
        >>> NPLM(loss="negative").loss
        'negative'
    """

    def __init__(self, *, context: int = 4, dim: int = 64, hidden: int = 128, loss: str = "softmax",
                 negative: int = 5, epochs: int = 1, batch_size: int = 256, learning_rate: float = 1e-3,
                 max_examples: int | None = None, min_count: int = 5, max_vocab: int | None = None,
                 analyzer: Analyzer | None = None, seed: int = 1) -> None:
        self.context = context
        self.dim = dim
        self.hidden = hidden
        self.loss = loss
        self.negative = negative
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.max_examples = max_examples
        self.min_count = min_count
        self.max_vocab = max_vocab
        self.analyzer = analyzer
        self.seed = seed

    def _check(self) -> None:
        for name in ("context", "dim", "hidden", "epochs", "batch_size", "min_count"):
            check_int(self, name, getattr(self, name), low=1)
        check_int(self, "negative", self.negative, low=1)
        check_int(self, "max_examples", self.max_examples, low=1, allow_none=True)
        check_choice(self, "loss", self.loss, ["softmax", "negative"])
        check_float(self, "learning_rate", self.learning_rate, low=0.0, low_open=True)

    @staticmethod
    def _positions(corpus: IdCorpus, context: int) -> np.ndarray:
        lengths = np.diff(corpus.offsets)
        keep = lengths > context
        starts = corpus.offsets[:-1][keep] + context
        ends = corpus.offsets[1:][keep]
        if len(starts) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in zip(starts, ends, strict=True)])

    def fit(self, corpus: CorpusLike, *, progress: Any = None) -> NPLM:
        """Train on ``corpus`` (path, texts, token lists or an IdCorpus); returns self."""
        torch = _torch()
        self._check()
        data = IdCorpus.build(corpus, analyzer=self.analyzer, min_count=self.min_count, max_vocab=self.max_vocab)
        pos = self._positions(data, int(self.context))
        if len(pos) == 0:
            raise InputError(f"no sentence is longer than context={self.context} words; lower context.")
        v = len(data.vocab)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        net = _build_module(torch, v, int(self.context), int(self.dim), int(self.hidden),
                            sparse_out=self.loss == "negative")
        opt = _Optim(torch, net, float(self.learning_rate))
        noise = torch.as_tensor(data.vocab.noise_distribution(0.75), dtype=torch.float32)
        ids = torch.as_tensor(np.asarray(data.ids, dtype=np.int64))
        offs = torch.arange(-int(self.context), 0)
        history: list[float] = []
        t0 = time.perf_counter()
        for _epoch in range(int(self.epochs)):
            order = rng.permutation(pos)
            if self.max_examples is not None:
                order = order[: int(self.max_examples)]
            total, n = 0.0, 0
            for b in range(0, len(order), int(self.batch_size)):
                p = torch.as_tensor(order[b: b + int(self.batch_size)])
                ctx = ids[p[:, None] + offs[None, :]]  # (B, n)
                target = ids[p]  # (B,)
                if self.loss == "softmax":
                    loss = net.full_loss(ctx, target)
                else:
                    k = torch.multinomial(noise, len(p) * int(self.negative), replacement=True)
                    loss = net.ns_loss(ctx, target, k.view(len(p), int(self.negative)))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(p)
                n += len(p)
                if progress is not None:
                    progress({"done": n, "total": len(order), "loss": total / n})
            history.append(total / max(n, 1))
        self.module_ = net
        self.vocabulary_ = data.vocab
        self.history_ = history
        self.seconds_ = time.perf_counter() - t0
        emb = net.emb.weight.detach().cpu().numpy().astype(np.float32)
        self.wv_ = KeyedVectors(data.vocab.words_, emb, counts=data.vocab.counts_,
                                meta={"trainer": "NPLM", "loss": self.loss, "history": history})
        return self

    def perplexity(self, corpus: CorpusLike, *, max_examples: int = 20_000) -> float:
        """Full-softmax perplexity of the next word on ``corpus`` (words outside the vocabulary dropped)."""
        torch = _torch()
        from embedstack.base import check_is_fitted

        check_is_fitted(self, "module_")
        vocab = self.vocabulary_
        if isinstance(corpus, IdCorpus):
            data = corpus
        else:
            an = self.analyzer or Analyzer()
            toks = (an.tokenize(t) if isinstance(t, str | bytes) else list(t) for t in corpus)
            encoded = [vocab.encode(t) for t in toks]
            ids = np.concatenate(encoded) if encoded else np.zeros(0, np.int32)
            off = np.concatenate([[0], np.cumsum([len(e) for e in encoded])])
            data = IdCorpus.from_arrays(ids, off, vocab)
        pos = self._positions(data, int(self.context))[:max_examples]
        if len(pos) == 0:
            raise InputError("no evaluation example: every sentence is shorter than the context.")
        ids_t = torch.as_tensor(np.asarray(data.ids, dtype=np.int64))
        offs = torch.arange(-int(self.context), 0)
        with torch.no_grad():
            total = 0.0
            for b in range(0, len(pos), 1024):
                p = torch.as_tensor(pos[b: b + 1024])
                total += float(self.module_.full_loss(ids_t[p[:, None] + offs[None, :]], ids_t[p])) * len(p)
        return float(np.exp(total / len(pos)))


def step_cost(vocab_size: int, *, loss: str, context: int = 4, dim: int = 64, hidden: int = 128,
              negative: int = 5, batch_size: int = 256, steps: int = 5, seed: int = 0) -> float:
    """Seconds per training example (forward + backward + Adam step) at a given vocabulary size."""
    torch = _torch()
    check_choice("step_cost", "loss", loss, ["softmax", "negative"])
    torch.manual_seed(seed)
    net = _build_module(torch, int(vocab_size), context, dim, hidden, sparse_out=loss == "negative")
    opt = _Optim(torch, net, 1e-3)
    gen = torch.Generator().manual_seed(seed)

    def one() -> None:
        ctx = torch.randint(0, vocab_size, (batch_size, context), generator=gen)
        tgt = torch.randint(0, vocab_size, (batch_size,), generator=gen)
        if loss == "softmax":
            out = net.full_loss(ctx, tgt)
        else:
            out = net.ns_loss(ctx, tgt, torch.randint(0, vocab_size, (batch_size, negative), generator=gen))
        opt.zero_grad()
        out.backward()
        opt.step()

    one()  # warm-up (allocations)
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - t0) / (steps * batch_size)
