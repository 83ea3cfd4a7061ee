"""Layer-wise linear probes on word vectors: what each layer of a contextual encoder makes linearly readable.

Peters et al. (2018, "Deep contextualized word representations", section 5.3) probed ELMo's two biLSTM layers
and found syntax (POS) best read from the first layer and word sense from the second. This module repeats that
measurement for any encoder that gives every layer's vector of every word:

* :func:`transformer_word_layers` — our BERT (:mod:`embedstack.neural.transformer`) run block by block on
  pre-tokenized sentences: ``(n_layers + 1, n_words, hidden)`` per sentence, layer 0 the embedding output.
  A word's vector is the **mean of its sub-word vectors** (``subword="first"`` takes the first piece instead):
  the mean keeps what every piece carries and does not depend on where WordPiece happens to cut a word.
* :func:`word_layers` — the same for any object with ``word_layers(sentences)`` (our ELMo: 3 layers).
* :class:`LinearProbe` — softmax regression (torch, minibatch Adam, L2 on the weights, early stopping on a dev
  split), on one layer or on ELMo's learned mix of all layers (:class:`~embedstack.neural.pooling.ScalarMix`
  trained jointly with the linear layer; its softmax weights say which layers the task draws on).
* :func:`probe_pos` — UPOS accuracy per layer and for the mix; :func:`probe_wic` — Word-in-Context accuracy
  from the target word's vectors ``u``, ``v`` in the two sentences, features ``[u * v, |u - v|]`` (symmetric
  in the two sentences, and without ``u`` or ``v`` alone a linear probe cannot learn a prior per word: it has
  to judge whether the two uses agree).
* :func:`most_frequent_tag` and :func:`majority_class` — the context-free baselines.

Each layer's features are standardised (train mean and standard deviation per dimension) before probing, so
layers of different scale (BERT's last layers, ELMo's character layer) are comparable, in a single-layer probe
and inside the mix. The test split is only ever scored: L2 strength and the stopping epoch are chosen on dev.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2, 400, 4)).astype(np.float32)   # (layers, words, dim)
    >>> y = (x[1, :, 0] > 0).astype(int)                      # only layer 1 knows the label
    >>> res = probe_layers(x[:, :300], y[:300], x[:, 300:350], y[300:350], x[:, 350:], y[350:])
    >>> res["layers"][1]["test"] > res["layers"][0]["test"]
    True
"""

from __future__ import annotations

import copy
import logging
import numbers
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._extras import require
from embedstack.errors import ConfigError, InputError

__all__ = [
    "transformer_word_layers",
    "word_layers",
    "stack_words",
    "wic_targets",
    "LinearProbe",
    "probe_layers",
    "probe_pos",
    "probe_wic",
    "most_frequent_tag",
    "majority_class",
]

log = logging.getLogger(__name__)

SUBWORD_POOLING = ("mean", "first")
MIN_STEPS = 50  # an "epoch" of LinearProbe is one pass over the data, but at least this many minibatches


# ------------------------------------------------------------------------------------------------ features
def _check_sentences(sentences: Sequence[Sequence[str]]) -> list[list[str]]:
    if isinstance(sentences, str) or not isinstance(sentences, Sequence):
        raise InputError("sentences must be a list of pre-tokenized sentences (lists of words).")
    out: list[list[str]] = []
    for i, s in enumerate(sentences):
        if isinstance(s, str) or not isinstance(s, Sequence):
            raise InputError(f"sentence #{i} must be a list of words, got {type(s).__name__}.")
        if len(s) == 0:
            raise InputError(f"sentence #{i} has no words; drop it or give it at least one word.")
        if not all(isinstance(w, str) for w in s):
            raise InputError(f"sentence #{i} holds a word that is not a string.")
        out.append(list(s))
    if not out:
        raise InputError("no sentences given.")
    return out


def _load_transformer(source: Any) -> Any:
    """A SentenceEncoder-like object (``.model`` a BertModel, ``.tokenizer`` a WordPiece) from a spec or folder."""
    if hasattr(source, "model") and hasattr(source, "tokenizer"):
        return source
    if isinstance(source, str | os.PathLike):
        from embedstack.models import resolve

        enc = resolve(os.fspath(source))
        if hasattr(enc, "model") and hasattr(enc, "tokenizer"):
            return enc
        raise ConfigError(f"{source!s} is not a transformer encoder ({type(enc).__name__}); layer probes need a BERT "
                          "model folder or name, or an object with word_layers(sentences).")
    raise ConfigError(f"Cannot take word layers from a {type(source).__name__}; pass a BERT model folder or name, or "
                      "an object with word_layers(sentences).")


def _windows(pieces: list[list[list[int]]], budget: int) -> tuple[list[tuple[int, int, int, list[list[int]]]], int, int]:
    """Cut each sentence into runs of whole words holding at most ``budget`` sub-words.

    Returns ``([(sentence, first word, end word, pieces per word)], sentences windowed, words cut)``.
    """
    out: list[tuple[int, int, int, list[list[int]]]] = []
    windowed = cut = 0
    for si, words in enumerate(pieces):
        start, used, n_win = 0, 0, 0
        for wi, p in enumerate(words):
            if len(p) > budget:
                cut += 1
                words[wi] = p = p[:budget]
            if used + len(p) > budget and wi > start:
                out.append((si, start, wi, words[start:wi]))
                n_win += 1
                start, used = wi, 0
            used += len(p)
        out.append((si, start, len(words), words[start:]))
        windowed += n_win > 0
    return out, windowed, cut


def transformer_word_layers(source: Any, sentences: Sequence[Sequence[str]], *, batch_size: int = 32,
                            max_length: int | None = None, subword: str = "mean") -> list[np.ndarray]:
    """Every layer's vector of every word: float32 ``(n_layers + 1, n_words, hidden)`` per sentence.

    Layer 0 is the embedding output (word piece + position + type, layer-normalised), layer ``i`` the output
    of transformer block ``i``. Sentences whose sub-words do not fit in ``max_length`` are encoded in
    consecutive windows of whole words (each ``[CLS] … [SEP]``), so every word gets vectors; the number of
    sentences windowed is logged (a warning). A single word longer than a window keeps its first pieces.

    Args:
        source: a BERT model folder or name (``all-MiniLM-L6-v2``, a recipe folder), or a loaded
            :class:`~embedstack.neural.sentence.SentenceEncoder`.
        sentences: pre-tokenized sentences (lists of words); each word is sub-worded on its own.
        batch_size: windows per forward pass.
        max_length: sub-words per window with ``[CLS]``/``[SEP]`` (default: the model's ``max_seq_length``).
        subword: ``mean`` (average a word's pieces) or ``first`` (its first piece).
    """
    torch = require("torch", "torch", "layer probes")
    if subword not in SUBWORD_POOLING:
        raise ConfigError(f"subword must be one of {SUBWORD_POOLING}. Got {subword!r} instead.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int. Got {batch_size!r} instead.")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)):
        raise ConfigError(f"max_length must be an int or None. Got {max_length!r} instead.")
    sents = _check_sentences(sentences)
    enc = _load_transformer(source)
    model = enc.model.eval()
    limit = int(max_length if max_length is not None else getattr(enc, "max_seq_length", 512))
    limit = min(limit, int(model.config.max_position_embeddings))
    if limit < 3:
        raise ConfigError(f"max_length must leave room for [CLS], a word and [SEP]. Got {limit}.")
    tokenizers = require("tokenizers", "torch", "layer probes")
    tok = tokenizers.Tokenizer.from_str(enc.tokenizer.tokenizer.to_str())  # a copy: no truncation, no padding
    tok.no_truncation()
    tok.no_padding()
    cls_id, sep_id, pad_id, unk_id = enc.tokenizer.cls_id, enc.tokenizer.sep_id, enc.tokenizer.pad_id, enc.tokenizer.unk_id
    encodings = tok.encode_batch(sents, is_pretokenized=True, add_special_tokens=False)
    pieces: list[list[list[int]]] = []
    for words, e in zip(sents, encodings, strict=True):
        per_word: list[list[int]] = [[] for _ in words]
        for tid, wid in zip(e.ids, e.word_ids, strict=True):
            if wid is not None:
                per_word[wid].append(int(tid))
        pieces.append([p or [unk_id] for p in per_word])  # a word the normaliser erases entirely: [UNK]
    windows, windowed, cut = _windows(pieces, limit - 2)
    if windowed or cut:
        log.warning("%d of %d sentences are longer than %d sub-words and were encoded in windows of whole words; "
                    "%d word(s) longer than a window kept their first %d pieces.", windowed, len(sents), limit,
                    cut, limit - 2)
    n_layers = len(model.encoder.layer) + 1
    hidden = int(model.config.hidden_size)
    out = [np.empty((n_layers, len(s), hidden), dtype=np.float32) for s in sents]
    order = sorted(range(len(windows)), key=lambda k: sum(len(p) for p in windows[k][3]))
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            batch = [windows[k] for k in order[b:b + batch_size]]
            seqs = [[cls_id, *(t for p in w[3] for t in p), sep_id] for w in batch]
            T = max(len(s) for s in seqs)
            W = max(w[2] - w[1] for w in batch)
            ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), T), dtype=torch.bool)
            pool = torch.zeros((len(batch), W, T))  # (B, W, T): word ← its pieces
            for r, (s, w) in enumerate(zip(seqs, batch, strict=True)):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = True
                pos = 1
                for j, p in enumerate(w[3]):
                    if subword == "mean":
                        pool[r, j, pos:pos + len(p)] = 1.0 / len(p)
                    else:
                        pool[r, j, pos] = 1.0
                    pos += len(p)
            x = model.embeddings(ids, torch.zeros_like(ids))  # (B, T, C)
            attn = None if bool(mask.all()) else mask[:, None, None, :]  # (B, 1, 1, T)
            states = [x]
            for block in model.encoder.layer:
                x = block(x, attn)
                states.append(x)
            words = torch.einsum("lbtc,bwt->lbwc", torch.stack(states).float(), pool).numpy()  # (L, B, W, C)
            for r, (si, start, end, _p) in enumerate(batch):
                out[si][:, start:end] = words[:, r, : end - start]
    return out


def word_layers(source: Any, sentences: Sequence[Sequence[str]], *, batch_size: int = 32) -> list[np.ndarray]:
    """Per-sentence ``(n_layers, n_words, dim)`` float32 arrays from any layered encoder.

    ``source`` either has ``word_layers(sentences)`` (our ELMo: character layer + two biLSTM layers) or is a
    transformer accepted by :func:`transformer_word_layers`.
    """
    if isinstance(source, str | os.PathLike) and (Path(source).expanduser() / "manifest.json").is_file():
        from embedstack.registry import load_component  # a saved component folder (our ELMo)

        source = load_component(Path(source).expanduser())
    if callable(getattr(source, "word_layers", None)):
        sents = _check_sentences(sentences)
        got = source.word_layers(sents)
        if len(got) != len(sents):
            raise InputError(f"{type(source).__name__}.word_layers gave {len(got)} arrays for {len(sents)} sentences.")
        out = []
        for i, (a, s) in enumerate(zip(got, sents, strict=True)):
            a = np.asarray(a, dtype=np.float32)
            if a.ndim != 3 or a.shape[1] != len(s):
                raise InputError(f"{type(source).__name__}.word_layers: sentence #{i} has {len(s)} words but its "
                                 f"array has shape {a.shape}; expected (n_layers, {len(s)}, dim).")
            out.append(a)
        return out
    return transformer_word_layers(source, sentences, batch_size=batch_size)


def stack_words(layers: Sequence[np.ndarray]) -> np.ndarray:
    """Per-sentence ``(L, n_i, D)`` arrays → one ``(L, sum n_i, D)`` float32 array (words in order)."""
    if len(layers) == 0:
        raise InputError("no sentences to stack.")
    shapes = {(a.shape[0], a.shape[2]) for a in layers if a.ndim == 3}
    if len(shapes) != 1 or any(a.ndim != 3 for a in layers):
        raise InputError(f"every sentence needs the same (n_layers, dim); got {sorted(shapes)}.")
    return np.concatenate([np.asarray(a, dtype=np.float32) for a in layers], axis=1)


def wic_targets(layers1: Sequence[np.ndarray], index1: Sequence[int], layers2: Sequence[np.ndarray],
                index2: Sequence[int]) -> np.ndarray:
    """The target word's vectors in both sentences of each pair: float32 ``(L, n_pairs, 2, D)``."""
    if not (len(layers1) == len(index1) == len(layers2) == len(index2)):
        raise InputError(f"pair columns differ in length: {len(layers1)}, {len(index1)}, {len(layers2)}, "
                         f"{len(index2)}.")
    if len(layers1) == 0:
        raise InputError("no pairs given.")
    for side, (layers, index) in enumerate(((layers1, index1), (layers2, index2)), start=1):
        for p, (a, i) in enumerate(zip(layers, index, strict=True)):
            if not 0 <= int(i) < a.shape[1]:
                raise InputError(f"pair #{p}: the target word index {i} is outside sentence {side} "
                                 f"({a.shape[1]} words).")
    u = np.stack([a[:, i] for a, i in zip(layers1, index1, strict=True)], axis=1)  # (L, N, D)
    v = np.stack([a[:, i] for a, i in zip(layers2, index2, strict=True)], axis=1)
    if u.shape != v.shape:
        raise InputError(f"the two sentences' layers differ in shape: {u.shape} vs {v.shape}.")
    return np.stack([u, v], axis=2).astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------------ the probe
def _moments(X: np.ndarray, pair: bool, chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer, per-dimension mean and standard deviation over the rows of ``X`` (chunked: X may be a memmap)."""
    L, N, D = X.shape[0], X.shape[1], X.shape[-1]
    s = np.zeros((L, D))
    ss = np.zeros((L, D))
    for a in range(0, N, chunk):
        x = np.asarray(X[:, a:a + chunk], dtype=np.float64).reshape(L, -1, D)
        s += x.sum(axis=1)
        ss += (x * x).sum(axis=1)
    n = N * (2 if pair else 1)
    mean = s / n
    std = np.sqrt(np.maximum(ss / n - mean * mean, 0.0))
    return mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


class LinearProbe:
    """Softmax regression on one layer's word vectors, or on ELMo's learned mix of all layers.

    ``fit`` takes ``X`` of shape ``(L, N, D)`` (words) or ``(L, N, 2, D)`` (word pairs, ``pair=True``: the
    features are ``[u * v, |u - v|]``); ``L`` must be 1 unless ``mix=True``. Training is minibatch Adam on
    the cross-entropy plus ``l2 * ||W||^2``; after every epoch (one pass over the data, but at least
    ``MIN_STEPS`` minibatches, so that small sets are not judged after one step) the dev accuracy is measured and
    the best epoch's weights are kept (stopping after ``patience`` epochs without a gain).

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(1, 200, 3)).astype(np.float32)
        >>> y = np.where(x[0, :, 0] > 0, "a", "b")
        >>> probe = LinearProbe().fit(x[:, :150], y[:150], x[:, 150:], y[150:])
        >>> probe.score(x[:, 150:], y[150:]) > 0.9
        True
    """

    def __init__(self, *, mix: bool = False, pair: bool = False, l2: float = 1e-4, lr: float = 5e-3,
                 batch_size: int = 256, max_epochs: int = 50, patience: int = 5, seed: int = 0) -> None:
        self.mix = mix
        self.pair = pair
        self.l2 = l2
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.seed = seed

    def _check(self, X: Any, y: Any, what: str) -> tuple[Any, np.ndarray]:
        X = self._check_x(X, what)
        labels = np.asarray(y).reshape(-1)
        if labels.shape[0] != X.shape[1]:
            raise InputError(f"{what}: {X.shape[1]} rows but {labels.shape[0]} labels.")
        return X, labels

    def _check_x(self, X: Any, what: str) -> Any:
        want = 4 if self.pair else 3
        if not hasattr(X, "shape") or len(X.shape) != want:
            shape = "(L, N, 2, D)" if self.pair else "(L, N, D)"
            raise InputError(f"{what}: X must be an array of shape {shape}; got {getattr(X, 'shape', type(X))}.")
        if self.pair and X.shape[2] != 2:
            raise InputError(f"{what}: pair features need (L, N, 2, D); got {X.shape}.")
        if X.shape[1] == 0:
            raise InputError(f"{what}: no rows.")
        if not self.mix and X.shape[0] != 1:
            raise InputError(f"{what}: a single-layer probe takes X with L=1 (got {X.shape[0]} layers); slice one "
                             "layer or pass mix=True.")
        if hasattr(self, "n_layers_") and (X.shape[0], X.shape[-1]) != (self.n_layers_, self.dim_):
            raise InputError(f"{what}: the probe was fitted on {self.n_layers_} layers of dim {self.dim_}; got "
                             f"{X.shape[0]} of dim {X.shape[-1]}.")
        return X

    def _params(self) -> None:
        for k, lo in (("batch_size", 1), ("max_epochs", 1), ("patience", 1)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"The {k!r} parameter of LinearProbe must be an int >= {lo}. Got {v!r} instead.")
        if not isinstance(self.l2, numbers.Real) or not isinstance(self.lr, numbers.Real) \
                or not (self.l2 >= 0) or not (self.lr > 0):
            raise ConfigError(f"LinearProbe needs l2 >= 0 and lr > 0. Got l2={self.l2!r}, lr={self.lr!r}.")

    def _batch(self, X: Any, rows: np.ndarray | slice) -> Any:
        torch = require("torch", "torch", "layer probes")
        x = np.asarray(X[:, rows], dtype=np.float32)
        mean, scale = self.mean_, self.scale_
        if self.pair:
            mean, scale = mean[:, None, None, :], scale[:, None, None, :]
        else:
            mean, scale = mean[:, None, :], scale[:, None, :]
        return torch.from_numpy((x - mean) / scale)

    def _net(self, n_layers: int, dim: int, n_classes: int) -> Any:
        require("torch", "torch", "layer probes")
        import torch
        from torch import nn

        from embedstack.neural.pooling import ScalarMix

        pair = self.pair

        class _Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.scalar_mix = ScalarMix(n_layers) if n_layers > 1 else None
                self.linear = nn.Linear(2 * dim if pair else dim, n_classes)
                nn.init.zeros_(self.linear.weight)
                nn.init.zeros_(self.linear.bias)

            def forward(self, x: Any) -> Any:  # (L, B, D) or (L, B, 2, D)
                h = self.scalar_mix(x) if self.scalar_mix is not None else x[0]  # (B, D) or (B, 2, D)
                if pair:
                    u, v = h[:, 0], h[:, 1]
                    h = torch.cat([u * v, (u - v).abs()], dim=-1)  # (B, 2D)
                return self.linear(h)  # (B, classes)

        return _Net()

    def _logits(self, X: Any) -> Any:
        torch = require("torch", "torch", "layer probes")
        outs = []
        with torch.no_grad():
            for a in range(0, X.shape[1], 8192):
                outs.append(self.net_(self._batch(X, slice(a, a + 8192))))
        return torch.cat(outs)

    def fit(self, X: Any, y: Any, X_dev: Any, y_dev: Any) -> LinearProbe:
        """Train on ``(X, y)``, choosing the stopping epoch by accuracy on ``(X_dev, y_dev)``; returns self."""
        torch = require("torch", "torch", "layer probes")
        self._params()
        for k in ("n_layers_", "dim_"):
            self.__dict__.pop(k, None)
        X, labels = self._check(X, y, "train")
        X_dev, dev_labels = self._check(X_dev, y_dev, "dev")
        self.classes_ = np.unique(labels)
        if len(self.classes_) < 2:
            raise InputError("the training labels hold a single class; a probe needs at least two.")
        self.n_layers_, self.dim_ = int(X.shape[0]), int(X.shape[-1])
        self.mean_, self.scale_ = _moments(X, self.pair)
        target = torch.from_numpy(np.searchsorted(self.classes_, labels).astype(np.int64))
        torch.manual_seed(self.seed)
        self.net_ = self._net(self.n_layers_, self.dim_, len(self.classes_))
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr)
        gen = np.random.default_rng(self.seed)
        best, best_state, since = -1.0, copy.deepcopy(self.net_.state_dict()), 0
        self.history_: list[float] = []
        N = X.shape[1]
        bs = self.batch_size
        if -(-N // bs) >= MIN_STEPS:  # a pass is long enough: one permutation, the last minibatch may be short
            reps, n_steps = 1, -(-N // bs)
        else:  # a small set: MIN_STEPS full minibatches drawn from as many permutations as they need
            reps, n_steps = -(-(MIN_STEPS * bs) // N), MIN_STEPS
        for _epoch in range(self.max_epochs):
            self.net_.train()
            order = np.concatenate([gen.permutation(N) for _ in range(reps)])
            for step in range(n_steps):
                rows = np.sort(order[step * bs:(step + 1) * bs])  # sorted: reads from a memmap go forward
                loss = torch.nn.functional.cross_entropy(self.net_(self._batch(X, rows)), target[rows])
                if self.l2:
                    loss = loss + self.l2 * self.net_.linear.weight.pow(2).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            self.net_.eval()
            acc = self.score(X_dev, dev_labels)
            self.history_.append(acc)
            if acc > best:
                best, best_state, since = acc, copy.deepcopy(self.net_.state_dict()), 0
            else:
                since += 1
                if since >= self.patience:
                    break
        self.net_.load_state_dict(best_state)
        self.net_.eval()
        self.best_epoch_ = int(np.argmax(self.history_)) + 1
        self.dev_accuracy_ = float(best)
        return self

    def _fitted(self) -> None:
        if not hasattr(self, "net_"):
            from embedstack.errors import NotFittedError

            raise NotFittedError(self)

    @property
    def mix_weights_(self) -> np.ndarray:
        """The learned softmax weights over the layers (``mix=True``), summing to 1."""
        self._fitted()
        torch = require("torch", "torch", "layer probes")
        m = self.net_.scalar_mix
        if m is None:
            return np.ones(1, dtype=np.float32)
        return torch.softmax(m.weights.detach(), 0).numpy().astype(np.float32)

    @property
    def gamma_(self) -> float:
        """The mix's learned scale γ (1.0 for a single layer)."""
        self._fitted()
        m = self.net_.scalar_mix
        return 1.0 if m is None else float(m.gamma.detach())

    def predict(self, X: Any) -> np.ndarray:
        """The predicted label of every row."""
        self._fitted()
        X = self._check_x(X, "predict")
        return np.asarray(self.classes_[self._logits(X).argmax(1).numpy()])

    def score(self, X: Any, y: Any) -> float:
        """Accuracy on ``(X, y)`` (labels never seen in training count as errors)."""
        self._fitted()
        X, labels = self._check(X, y, "score")
        return float(np.mean(self.predict(X) == labels))


# ------------------------------------------------------------------------------------------------ runners
def _grid(l2: float | Sequence[float]) -> list[float]:
    try:
        grid = [float(l2)] if isinstance(l2, numbers.Real) else [float(v) for v in l2]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigError(f"l2 must be a float >= 0 or a non-empty list of them. Got {l2!r} instead.") from None
    if not grid or any(not v >= 0 for v in grid):
        raise ConfigError(f"l2 must be a float >= 0 or a non-empty list of them. Got {l2!r} instead.")
    return grid


def _best(X: Any, y: Any, X_dev: Any, y_dev: Any, grid: list[float], **kw: Any) -> LinearProbe:
    """The probe of the L2 strength with the highest dev accuracy (ties: the first, i.e. the weakest listed)."""
    best: LinearProbe | None = None
    for l2 in grid:
        p = LinearProbe(l2=l2, **kw).fit(X, y, X_dev, y_dev)
        if best is None or p.dev_accuracy_ > best.dev_accuracy_:
            best = p
    assert best is not None
    return best


def probe_layers(X: Any, y: Any, X_dev: Any, y_dev: Any, X_test: Any, y_test: Any, *, pair: bool = False,
                 mix: bool = True, l2: float | Sequence[float] = 1e-4, progress: Any = None,
                 **options: Any) -> dict[str, Any]:
    """A probe per layer and (``mix=True``) one on the learned mix; dev and test accuracy of each.

    ``X``/``X_dev``/``X_test`` are ``(L, N, D)`` (or ``(L, N, 2, D)`` with ``pair=True``); memmaps work (rows are
    read per minibatch). ``l2`` may list strengths: each probe keeps the one with the best dev accuracy.
    ``options`` go to :class:`LinearProbe` (``lr``, ``batch_size``, ``max_epochs``, ``patience``, ``seed``);
    ``progress(message)`` is called before each probe.

    Returns:
        ``layers``: ``[{layer, dev, test, l2, epochs}]``; ``mix``: the same plus ``weights`` (softmax, per layer)
        and ``gamma``; ``n_train``, ``n_dev``, ``n_test``, ``n_classes`` and ``primary_metric`` (``accuracy``).
    """
    grid = _grid(l2)
    unknown = set(options) - {"lr", "batch_size", "max_epochs", "patience", "seed"}
    if unknown:
        raise ConfigError(f"unknown probe option(s) {sorted(unknown)}; use lr, batch_size, max_epochs, patience, seed.")
    shapes = [getattr(a, "shape", None) for a in (X, X_dev, X_test)]
    if any(s is None for s in shapes) or len({(s[0], s[-1]) for s in shapes if s is not None}) != 1:
        raise InputError(f"train, dev and test need the same number of layers and dim; got shapes {shapes}.")
    n_layers = int(X.shape[0])
    rows: list[dict[str, Any]] = []
    for layer in range(n_layers):
        if progress is not None:
            progress(f"layer {layer}/{n_layers - 1}")
        sl = slice(layer, layer + 1)
        xs = [np.asarray(a[sl], dtype=np.float32) for a in (X, X_dev, X_test)]  # one layer in memory
        p = _best(xs[0], y, xs[1], y_dev, grid, pair=pair, **options)
        rows.append({"layer": layer, "dev": p.dev_accuracy_, "test": p.score(xs[2], y_test), "l2": p.l2,
                     "epochs": p.best_epoch_})
    out: dict[str, Any] = {"layers": rows, "n_train": int(X.shape[1]), "n_dev": int(X_dev.shape[1]),
                           "n_test": int(X_test.shape[1]), "n_classes": int(len(np.unique(np.asarray(y)))),
                           "primary_metric": "accuracy"}
    if mix and n_layers > 1:
        if progress is not None:
            progress("learned mix")
        p = _best(X, y, X_dev, y_dev, grid, pair=pair, mix=True, **options)
        out["mix"] = {"dev": p.dev_accuracy_, "test": p.score(X_test, y_test), "l2": p.l2, "epochs": p.best_epoch_,
                      "weights": [float(w) for w in p.mix_weights_], "gamma": p.gamma_}
    return out


def _words(layers: Any, tags: Any, what: str) -> tuple[Any, np.ndarray]:
    """Per-sentence arrays + tag lists, or an already stacked (L, N, D) array + flat tags."""
    if isinstance(layers, list | tuple):
        if len(layers) != len(tags):
            raise InputError(f"{what}: {len(layers)} sentences but {len(tags)} tag sequences.")
        for i, (a, t) in enumerate(zip(layers, tags, strict=True)):
            if getattr(a, "ndim", 0) != 3 or a.shape[1] != len(t):
                raise InputError(f"{what}: sentence #{i} has {len(t)} tags but layers of shape {getattr(a, 'shape', '?')}.")
        return stack_words(layers), np.asarray([x for t in tags for x in t])
    return layers, np.asarray(tags).reshape(-1)


def probe_pos(layers_train: Any, tags_train: Any, layers_test: Any, tags_test: Any, *, layers_dev: Any = None,
              tags_dev: Any = None, dev_fraction: float = 0.1, mix: bool = True,
              l2: float | Sequence[float] = (1e-6, 1e-4), seed: int = 0, **options: Any) -> dict[str, Any]:
    """Part-of-speech accuracy of a linear probe on each layer's word vectors, and on the learned mix.

    ``layers_*`` are per-sentence ``(L, n_words, D)`` arrays with per-sentence tag lists, or stacked
    ``(L, N, D)`` arrays with flat tags. Without a dev split, ``dev_fraction`` of the training words (chosen with
    ``seed``) is held out for early stopping. See :func:`probe_layers` for the result.
    """
    X, y = _words(layers_train, tags_train, "train")
    X_test, y_test = _words(layers_test, tags_test, "test")
    if layers_dev is None:
        if not 0 < dev_fraction < 1:
            raise ConfigError(f"dev_fraction must be in (0, 1). Got {dev_fraction!r} instead.")
        perm = np.random.default_rng(seed).permutation(X.shape[1])
        k = max(1, int(round(dev_fraction * X.shape[1])))
        dev_rows, train_rows = np.sort(perm[:k]), np.sort(perm[k:])
        X, X_dev, y, y_dev = X[:, train_rows], X[:, dev_rows], y[train_rows], y[dev_rows]
    else:
        X_dev, y_dev = _words(layers_dev, tags_dev, "dev")
    return probe_layers(X, y, X_dev, y_dev, X_test, y_test, mix=mix, l2=l2, seed=seed, **options)


def probe_wic(pairs_train: Any, labels_train: Any, pairs_dev: Any, labels_dev: Any, pairs_test: Any,
              labels_test: Any, *, mix: bool = True, l2: float | Sequence[float] = (1e-4, 1e-3, 1e-2),
              seed: int = 0, **options: Any) -> dict[str, Any]:
    """Word-in-Context accuracy of a linear probe on ``[u * v, |u - v|]`` per layer, and on the learned mix.

    ``pairs_*`` are ``(L, N, 2, D)`` arrays from :func:`wic_targets` (the target word's vectors in both
    sentences). See :func:`probe_layers` for the result.
    """
    return probe_layers(pairs_train, np.asarray(labels_train), pairs_dev, np.asarray(labels_dev), pairs_test,
                        np.asarray(labels_test), pair=True, mix=mix, l2=l2, seed=seed, **options)


# ------------------------------------------------------------------------------------------------ baselines
def most_frequent_tag(train_sentences: Sequence[Sequence[str]], train_tags: Sequence[Sequence[str]],
                      test_sentences: Sequence[Sequence[str]], test_tags: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Tag each test word with its most frequent training tag (exact form, then lower-cased form); a word never
    seen gets the most frequent tag overall.

    Example:
        >>> most_frequent_tag([["the", "dog", "runs"]], [["DET", "NOUN", "VERB"]], [["The", "cat"]], [["DET", "NOUN"]])
        {'accuracy': 0.5, 'unknown_rate': 0.5, 'n_test': 2}
    """
    if len(train_sentences) != len(train_tags) or len(test_sentences) != len(test_tags):
        raise InputError("sentences and tag sequences differ in number.")
    exact: dict[str, Counter[str]] = {}
    lower: dict[str, Counter[str]] = {}
    overall: Counter[str] = Counter()
    for s, t in zip(train_sentences, train_tags, strict=True):
        if len(s) != len(t):
            raise InputError(f"a training sentence has {len(s)} words but {len(t)} tags.")
        for w, tag in zip(s, t, strict=True):
            exact.setdefault(w, Counter())[tag] += 1
            lower.setdefault(w.lower(), Counter())[tag] += 1
            overall[tag] += 1
    if not overall:
        raise InputError("no training words.")
    fallback = overall.most_common(1)[0][0]
    right = unknown = total = 0
    for s, t in zip(test_sentences, test_tags, strict=True):
        if len(s) != len(t):
            raise InputError(f"a test sentence has {len(s)} words but {len(t)} tags.")
        for w, tag in zip(s, t, strict=True):
            c = exact.get(w) or lower.get(w.lower())
            unknown += c is None
            right += (c.most_common(1)[0][0] if c else fallback) == tag
            total += 1
    if total == 0:
        raise InputError("no test words.")
    return {"accuracy": right / total, "unknown_rate": unknown / total, "n_test": total}


def majority_class(train_labels: Sequence[Any], test_labels: Sequence[Any]) -> dict[str, Any]:
    """Accuracy of always answering the most frequent training label (ties: the smallest label).

    Example:
        >>> majority_class([1, 1, 0], [1, 0, 0, 0])
        {'accuracy': 0.25, 'label': 1}
    """
    tr, te = np.asarray(list(train_labels)), np.asarray(list(test_labels))
    if tr.size == 0 or te.size == 0:
        raise InputError("majority_class needs non-empty train and test labels.")
    values, counts = np.unique(tr, return_counts=True)
    label = values[int(np.argmax(counts))]
    return {"accuracy": float(np.mean(te == label)), "label": label.item() if hasattr(label, "item") else label}
