"""ELMo (Peters et al. 2018): a character-CNN, bidirectional LSTM language model whose layers are word vectors.

Read top to bottom, the model is built bottom-up from one :class:`ElmoConfig`:

* **characters** — each word becomes its UTF-8 bytes (ids 0-255) between begin/end-of-word ids, cut at
  ``max_chars`` (50) and padded; the sentence markers ``<S>`` and ``</S>`` are words of their own
  special character (:func:`char_ids`). Input is characters, so no word is out of vocabulary at input.
* :class:`CharCNN` — char embedding (16) → convolutions of several widths → max over the word's
  positions → ReLU → highway layers → linear projection to ``proj_dim``. This is layer 0.
* :class:`LMStack` — one direction: ``n_layers`` LSTMs with a projection (``nn.LSTM(proj_size=...)``),
  a residual connection from every layer after the first. The forward stack reads left to right and
  predicts the next word, the backward stack reads right to left and predicts the previous word.
* :class:`ElmoModel` — both stacks and one softmax shared by the two directions. Layer 0 is the
  char-CNN output concatenated with itself, layers 1.. are ``[forward; backward]``, so every layer has
  width ``2 * proj_dim`` (as in the paper).

The softmax is :class:`torch.nn.AdaptiveLogSoftmaxWithLoss` (Grave et al. 2017) over the word vocabulary:
it gives the exact normalised probability of every word (so held-out perplexity is exact, which a sampled
softmax would only estimate), and because word frequencies are Zipfian almost every token is scored by
the small head cluster: on a CPU it costs a fraction of a full 50k-way softmax. Words outside the output
vocabulary are ``<unk>`` there only.

:class:`Elmo` is the saved component (``manifest.json`` + ``model.safetensors`` + ``vocab.txt``), a
:class:`~embedstack.base.DenseEncoder`: ``word_layers`` gives every layer per word, ``encode`` mean-pools the
ELMo vector ``gamma * sum_j softmax(s)_j h_j`` (:class:`~embedstack.neural.pooling.ScalarMix`) or one
chosen layer over a text's words. :func:`perplexity` scores held-out sentences; training is in
:mod:`embedstack.training.elmo`.

Example:
    >>> cfg = ElmoConfig(vocab_size=10, char_dim=4, filters=((1, 4), (2, 4)), highway_layers=1, proj_dim=8,
    ...                  hidden_dim=16)
    >>> elmo = Elmo(ElmoModel(cfg, seed=0), ["</S>", "<S>", "<unk>", "a", "b", "c", "d", "e", "f", "g"])
    >>> [x.shape for x in elmo.word_layers([["a", "cat"], ["hi"]])]
    [(3, 2, 16), (3, 1, 16)]
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._extras import require

torch = require("torch", "torch", "ELMo")
from torch import Tensor, nn  # noqa: E402

from embedstack.base import Role, one_text_one_vector  # noqa: E402
from embedstack.errors import ConfigError, FormatError, InputError, ModelNotFoundError  # noqa: E402
from embedstack.neural.pooling import ScalarMix  # noqa: E402
from embedstack.registry import register  # noqa: E402
from embedstack.text.tokenize import Analyzer  # noqa: E402

__all__ = ["ElmoConfig", "CharCNN", "LMStack", "ElmoModel", "Elmo", "char_ids", "perplexity", "elmo_spec",
           "ELMO_ANALYZER", "SPECIALS"]

# ------------------------------------------------------------------------------------ characters
BOW, EOW, PAD_CHAR, BOS_CHAR, EOS_CHAR = 256, 257, 258, 259, 260  # after the 256 byte values
N_CHARS = 261
BOS, EOS, UNK = "<S>", "</S>", "<unk>"
SPECIALS = (EOS, BOS, UNK)  # first rows of every output vocabulary (ids 0, 1, 2)

#: The word tokenizer ELMo models are trained with: case kept (the char CNN sees it), punctuation kept as
#: tokens (a language model has to predict it).
ELMO_ANALYZER = Analyzer(lowercase=False, pattern=r"\w+|[^\w\s]")


def _word_chars(word: str, max_chars: int) -> list[int]:
    if word == BOS:
        return [BOW, BOS_CHAR, EOW]
    if word == EOS:
        return [BOW, EOS_CHAR, EOW]
    return [BOW, *word.encode("utf-8")[: max_chars - 2], EOW]


def char_ids(sentences: Sequence[Sequence[str]], max_chars: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Character ids of ``<S> w_1 … w_n </S>`` for each sentence, padded: ``(B, T, C)`` int64 and lengths ``(B,)``.

    ``T`` is the longest sentence + 2, ``C`` the longest word + 2 (at most ``max_chars``); padding is
    ``PAD_CHAR`` (258), whose embedding is zero.

    Example:
        >>> ids, lengths = char_ids([["Hi"]])
        >>> ids[0, :, :4].tolist(), lengths.tolist()
        ([[256, 259, 257, 258], [256, 72, 105, 257], [256, 260, 257, 258]], [3])
    """
    words = [[BOS, *s, EOS] for s in sentences]
    lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
    encoded = [[_word_chars(w, max_chars) for w in s] for s in words]
    width = max([len(c) for s in encoded for c in s] or [3])
    out = np.full((len(words), int(lengths.max(initial=2)), width), PAD_CHAR, dtype=np.int64)
    for b, sent in enumerate(encoded):
        for t, chars in enumerate(sent):
            out[b, t, : len(chars)] = chars
    return out, lengths


# ------------------------------------------------------------------------------------ the model
@dataclass
class ElmoConfig:
    """Sizes of an :class:`ElmoModel`.

    Attributes:
        vocab_size: Output (softmax) vocabulary, ``<S>``/``</S>``/``<unk>`` included.
        max_chars: Characters per word, begin/end-of-word included (longer words are cut).
        char_dim: Character embedding size.
        filters: ``(width, channels)`` of each convolution; their channels add up to the CNN's width.
        highway_layers: Highway layers after the max-pooled convolutions.
        proj_dim: Width of the char-CNN output and of each LSTM's projected output (one direction).
        hidden_dim: LSTM cell size (projected down to ``proj_dim``).
        n_layers: LSTM layers per direction.
        cutoffs: Adaptive-softmax cluster bounds (those not below ``vocab_size`` are dropped).
        div_value: Each tail cluster's projection is this many times narrower than the previous one.
        dropout: Dropout on the LSTM inputs in training (0: a CPU budget sees each token about once).
    """

    vocab_size: int
    max_chars: int = 50
    char_dim: int = 16
    filters: tuple[tuple[int, int], ...] = ((1, 32), (2, 32), (3, 64), (4, 128), (5, 256))
    highway_layers: int = 2
    proj_dim: int = 256
    hidden_dim: int = 512
    n_layers: int = 2
    cutoffs: tuple[int, ...] = (2000, 10000)
    div_value: float = 4.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        try:
            self.filters = tuple((int(w), int(c)) for w, c in self.filters)
            self.cutoffs = tuple(int(c) for c in self.cutoffs)
        except (TypeError, ValueError):
            raise ConfigError(f"ElmoConfig.filters must be (width, channels) pairs and cutoffs ints. Got filters="
                              f"{self.filters!r}, cutoffs={self.cutoffs!r}.") from None
        if any(c < 1 for c in self.cutoffs) or list(self.cutoffs) != sorted(set(self.cutoffs)):
            raise ConfigError(f"ElmoConfig.cutoffs must be positive and strictly increasing. Got {self.cutoffs!r}.")
        if not self.div_value > 0:
            raise ConfigError(f"ElmoConfig.div_value must be > 0. Got {self.div_value!r}.")
        if isinstance(self.highway_layers, bool) or not isinstance(self.highway_layers, int) or self.highway_layers < 0:
            raise ConfigError(f"ElmoConfig.highway_layers must be an int >= 0. Got {self.highway_layers!r}.")
        for name in ("vocab_size", "max_chars", "char_dim", "proj_dim", "hidden_dim", "n_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ElmoConfig.{name} must be a positive int. Got {value!r} instead.")
        if self.vocab_size < len(SPECIALS) + 1:
            raise ConfigError(f"ElmoConfig.vocab_size must be at least {len(SPECIALS) + 1} (3 markers + a word). "
                              f"Got {self.vocab_size}.")
        if not self.filters or any(w < 1 or c < 1 for w, c in self.filters):
            raise ConfigError(f"ElmoConfig.filters must be (width, channels) pairs >= 1. Got {self.filters!r}.")
        if self.max_chars < max(w for w, _ in self.filters) or self.max_chars < 3:
            raise ConfigError(f"ElmoConfig.max_chars={self.max_chars} is narrower than the widest filter.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"ElmoConfig.dropout must be in [0, 1). Got {self.dropout!r}.")

    @property
    def dim(self) -> int:
        """Width of every output layer (``2 * proj_dim``)."""
        return 2 * self.proj_dim

    def softmax_cutoffs(self) -> list[int]:
        kept = [c for c in self.cutoffs if 0 < c < self.vocab_size - 1]
        return kept or [max(1, self.vocab_size // 2)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["filters"] = [list(f) for f in self.filters]
        d["cutoffs"] = list(self.cutoffs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ElmoConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise FormatError(f"ELMo config has unknown keys {unknown}; it was written by a newer embedstack.")
        return cls(**{**d, "filters": tuple(tuple(f) for f in d.get("filters", ())) or cls.filters,
                      "cutoffs": tuple(d.get("cutoffs", cls.cutoffs))})


class Highway(nn.Module):
    """``y = g * x + (1 - g) * relu(W x)``, gate ``g = sigmoid(W_g x)`` biased towards carrying ``x``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * dim)
        with torch.no_grad():
            self.proj.bias[dim:].fill_(1.0)  # gate bias 1: start close to the identity

    def forward(self, x: Tensor) -> Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)  # (N, D) each
        g = torch.sigmoid(gate)
        return g * x + (1 - g) * torch.relu(h)


class CharCNN(nn.Module):
    """Words as character ids ``(N, C)`` → word vectors ``(N, proj_dim)`` (ELMo's layer 0)."""

    def __init__(self, config: ElmoConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(N_CHARS, config.char_dim, padding_idx=PAD_CHAR)
        self.widths = tuple(w for w, _ in config.filters)
        self.convs = nn.ModuleList(nn.Conv1d(config.char_dim, ch, kernel_size=w) for w, ch in config.filters)
        width = sum(ch for _, ch in config.filters)
        self.highways = nn.ModuleList(Highway(width) for _ in range(config.highway_layers))
        self.proj = nn.Linear(width, config.proj_dim)

    def forward(self, chars: Tensor) -> Tensor:
        with torch.autocast(chars.device.type, enabled=False):  # bf16 conv1d backward is very slow on CPUs
            return self._forward(chars)

    def _forward(self, chars: Tensor) -> Tensor:
        short = max(self.widths) - chars.shape[1]
        if short > 0:  # a batch of short words ("I am"): pad to the widest filter, as a longer word in the batch would
            chars = nn.functional.pad(chars, (0, short), value=PAD_CHAR)
        lengths = (chars != PAD_CHAR).sum(dim=1)  # (N,) characters incl. begin/end-of-word
        x = self.embed(chars).transpose(1, 2)  # (N, E, C)
        pooled = []
        for w, conv in zip(self.widths, self.convs, strict=True):
            y = conv(x)  # (N, ch, C - w + 1)
            pos = torch.arange(y.shape[-1], device=chars.device)  # window p covers characters p .. p + w - 1
            valid = (pos[None, :] + w <= lengths[:, None]) | (pos[None, :] == 0)  # (N, C - w + 1): inside the word
            y = y.masked_fill(~valid[:, None, :], float("-inf"))  # so padding never changes a word's vector
            pooled.append(y.max(dim=-1).values)  # (N, ch)
        h = torch.relu(torch.cat(pooled, dim=-1))  # (N, sum ch)
        for hw in self.highways:
            h = hw(h)
        return self.proj(h)  # (N, P)


class LMStack(nn.Module):
    """One direction: ``n_layers`` projected LSTMs, residual from the second layer on.

    ``forward(x)`` with ``x`` ``(B, T, P)`` (padding at the end) → one ``(B, T, P)`` output per layer; the
    output at ``t`` depends on ``x[:, :t+1]`` only.
    """

    def __init__(self, config: ElmoConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.LSTM(config.proj_dim, config.hidden_dim, proj_size=config.proj_dim, batch_first=True)
            for _ in range(config.n_layers))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for i, lstm in enumerate(self.layers):
            with warnings.catch_warnings():  # torch notes that oneDNN has no projected LSTM: expected, not news
                warnings.filterwarnings("ignore", message="LSTM with projections", category=UserWarning)
                h, _ = lstm(self.dropout(x))  # (B, T, P)
            x = h + x if i > 0 else h  # residual between layer i and i + 1 (ELMo: layer 1 → layer 2)
            outputs.append(x)
        return outputs


def _reverse_index(lengths: Tensor, t: int) -> Tensor:
    """``(B, T)`` indices reversing each sequence within its length (padding stays at the end)."""
    pos = torch.arange(t, device=lengths.device)[None, :]  # (1, T)
    rev = lengths[:, None] - 1 - pos  # (B, T)
    return torch.where(rev >= 0, rev, pos.expand_as(rev))


class ElmoModel(nn.Module):
    """Char CNN + forward and backward :class:`LMStack` + one adaptive softmax shared by both directions.

    Example:
        >>> cfg = ElmoConfig(vocab_size=8, char_dim=4, filters=((1, 4), (2, 4)), proj_dim=8, hidden_dim=16)
        >>> m = ElmoModel(cfg, seed=0)
        >>> chars, lengths = char_ids([["a", "b"]])
        >>> m(torch.from_numpy(chars), torch.from_numpy(lengths)).shape  # (layers, B, T, 2 * proj_dim)
        torch.Size([3, 1, 4, 16])
    """

    def __init__(self, config: ElmoConfig, *, seed: int | None = None) -> None:
        super().__init__()
        self.config = config
        if seed is not None:
            torch.manual_seed(seed)
        self.char_cnn = CharCNN(config)
        self.forward_lm = LMStack(config)
        self.backward_lm = LMStack(config)
        self.softmax = nn.AdaptiveLogSoftmaxWithLoss(config.proj_dim, config.vocab_size,
                                                     cutoffs=config.softmax_cutoffs(), div_value=config.div_value)

    def directions(self, chars: Tensor, lengths: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """``(B, T, C)`` char ids + lengths → char-CNN output ``(B, T, P)`` and each direction's layers ``(B, T, P)``."""
        b, t, _ = chars.shape
        mask = torch.arange(t, device=chars.device)[None, :] < lengths[:, None]  # (B, T)
        words = chars[mask]  # (N, C): only real words go through the CNN
        cnn = self.char_cnn(words)  # (N, P)
        x = cnn.new_zeros(b, t, cnn.shape[-1]).masked_scatter(mask[..., None], cnn)  # (B, T, P)
        fwd = self.forward_lm(x)  # n_layers x (B, T, P)
        rev = _reverse_index(lengths, t)[..., None].expand_as(x)  # (B, T, P)
        bwd = [h.gather(1, rev) for h in self.backward_lm(x.gather(1, rev))]  # reversed in, reversed back
        return x, fwd, bwd

    def forward(self, chars: Tensor, lengths: Tensor) -> Tensor:
        """All layers ``(n_layers + 1, B, T, 2P)``: ``[cnn; cnn]``, then ``[forward; backward]`` per LSTM layer."""
        x, fwd, bwd = self.directions(chars, lengths)
        layers = [torch.cat([x, x], dim=-1)] + [torch.cat([f, b], dim=-1) for f, b in zip(fwd, bwd, strict=True)]
        return torch.stack(layers)

    def lm_losses(self, chars: Tensor, lengths: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, int]:
        """Mean negative log-likelihood of the forward and backward LMs, and the number of predictions each.

        ``targets`` ``(B, T)`` are output-vocabulary ids of ``<S> w_1 … w_n </S>`` (padding anything): the forward
        top layer at ``t`` predicts ``targets[t + 1]``, the backward one ``targets[t - 1]``.
        """
        _, fwd, bwd = self.directions(chars, lengths)
        t = chars.shape[1]
        valid = torch.arange(t - 1, device=chars.device)[None, :] < (lengths[:, None] - 1)  # (B, T-1)
        f_in = fwd[-1][:, :-1][valid]  # (N, P): positions 0 .. n, predicting 1 .. n + 1
        b_in = bwd[-1][:, 1:][valid]  # (N, P): positions 1 .. n + 1, predicting 0 .. n
        with torch.autocast(chars.device.type, enabled=False):  # the softmax in fp32 (also under bf16 autocast)
            f_loss = self.softmax(f_in.float(), targets[:, 1:][valid]).loss
            b_loss = self.softmax(b_in.float(), targets[:, :-1][valid]).loss
        return f_loss, b_loss, int(valid.sum())


# ------------------------------------------------------------------------------------ the component
_LAYER_HELP = "an int layer index (0 = char CNN, 1.. = LSTM layers) or 'mix' (the stored scalar mix)"


def _parse_layer(layer: int | str, n_layers: int) -> int | str:
    if isinstance(layer, str) and layer.strip().lower() in ("mix", "scalar_mix", "elmo"):
        return "mix"
    if isinstance(layer, int) and not isinstance(layer, bool):
        value = layer
    elif isinstance(layer, str) and layer.strip().isdigit():
        value = int(layer)
    else:
        raise ConfigError(f"ELMo option layer={layer!r} is not {_LAYER_HELP}.", fix={"layer": "mix"})
    if not 0 <= value <= n_layers:
        raise ConfigError(f"ELMo option layer={value} is out of range: this model has layers 0..{n_layers}.",
                          fix={"layer": n_layers})
    return value


@register("Elmo", module="embedstack.neural.elmo")
class Elmo:
    """A trained ELMo: per-word layers for probes, and a :class:`~embedstack.base.DenseEncoder` for texts.

    Args:
        model: The network.
        vocab: The output vocabulary (``</S>``, ``<S>``, ``<unk>`` first).
        layer: What ``encode`` pools: ``"mix"`` (``gamma * sum_j softmax(s)_j h_j`` with the stored
            :class:`ScalarMix`, equal weights and ``gamma = 1`` unless tuned) or a layer index.
        analyzer: The word tokenizer ``encode`` uses (default: :data:`ELMO_ANALYZER`, the training one).
        name: Label in reports.
        meta: Training facts stored in the manifest (perplexities, tokens seen ...).

    Example:
        >>> cfg = ElmoConfig(vocab_size=5, char_dim=4, filters=((1, 4),), proj_dim=4, hidden_dim=8)
        >>> enc = Elmo(ElmoModel(cfg, seed=0), ["</S>", "<S>", "<unk>", "the", "cat"], layer=2)
        >>> enc.encode(["The cat sat.", "A dog"]).shape, enc.dim
        ((2, 8), 8)
    """

    type_name = "Elmo"

    def __init__(self, model: ElmoModel, vocab: Sequence[str], *, layer: int | str = "mix",
                 analyzer: Analyzer | None = None, name: str = "elmo", meta: dict[str, Any] | None = None) -> None:
        vocab = list(vocab)
        if len(vocab) != model.config.vocab_size:
            raise ConfigError(f"vocab has {len(vocab)} words but the model's softmax has {model.config.vocab_size}.")
        if tuple(vocab[: len(SPECIALS)]) != SPECIALS:
            raise ConfigError(f"an ELMo vocabulary starts with {list(SPECIALS)}; got {vocab[:3]}.")
        self.model = model.eval()
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}
        self.layer = _parse_layer(layer, model.config.n_layers)
        self.analyzer = analyzer if analyzer is not None else ELMO_ANALYZER
        self.name = name
        self.meta = dict(meta or {})
        self.mix = ScalarMix(model.config.n_layers + 1).eval()

    # ------------------------------------------------------------------ protocol
    @property
    def dim(self) -> int:
        return self.model.config.dim

    @property
    def n_layers(self) -> int:
        """Output layers (char CNN + LSTM layers)."""
        return self.model.config.n_layers + 1

    def with_options(self, *, layer: int | str | None = None) -> Elmo:
        """A copy sharing the weights, with another ``layer`` (``embedstack.load(path, layer=1)``)."""
        out = Elmo(self.model, self.vocab, layer=self.layer if layer is None else layer, analyzer=self.analyzer,
                   name=self.name, meta=self.meta)
        out.mix = self.mix
        return out

    def word_ids(self, words: Sequence[str]) -> np.ndarray:
        """Output-vocabulary ids (``<unk>`` = 2 for words outside it)."""
        unk = self.index[UNK]
        return np.fromiter((self.index.get(w, unk) for w in words), dtype=np.int64, count=len(words))

    def word_layers(self, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> list[np.ndarray]:
        """Every layer for every word: one float32 ``(n_layers + 1, n_words, dim)`` array per sentence.

        Layer 0 is the char CNN (duplicated to ``dim``), layers 1.. the biLSTM ``[forward; backward]``
        states. Sentences are run in batches sorted by length; an empty sentence gives ``(L, 0, dim)``.

        Raises:
            InputError: a sentence is a string instead of a word list, or a word is empty / not a string.
        """
        sents = _check_sentences(sentences)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive int. Got {batch_size!r}.", fix={"batch_size": 32})
        out: list[np.ndarray] = [np.zeros((self.n_layers, 0, self.dim), dtype=np.float32)] * len(sents)
        order = sorted((i for i, s in enumerate(sents) if s), key=lambda i: len(sents[i]))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                chars, lengths = char_ids([sents[i] for i in idx], self.model.config.max_chars)
                layers = self.model(torch.from_numpy(chars), torch.from_numpy(lengths))  # (L, B, T, D)
                arr = layers.float().numpy()
                for row, i in enumerate(idx):
                    out[i] = np.ascontiguousarray(arr[:, row, 1: len(sents[i]) + 1])  # drop <S>, </S>
        return out

    def _select(self, layers: np.ndarray) -> np.ndarray:
        """``(L, n, D)`` → ``(n, D)``: the chosen layer or the scalar mix."""
        if self.layer == "mix":
            with torch.inference_mode():
                return self.mix(torch.from_numpy(layers)).numpy()
        return layers[int(self.layer)]

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        if isinstance(texts, str):
            texts = [texts]
        return [self.analyzer.tokenize(t) for t in texts]

    def encode_tokens(self, texts: Sequence[str], *, role: Role = "document", batch_size: int = 32) -> list[np.ndarray]:
        """One float32 ``(n_words, dim)`` matrix per text: the chosen layer or the ELMo mix of each word."""
        return [self._select(x) for x in self.word_layers(self.tokenize(texts), batch_size=batch_size)]

    @one_text_one_vector
    def encode(self, texts: Sequence[str], *, role: Role = "document", batch_size: int = 32) -> np.ndarray:
        """Mean over each text's word vectors (``encode_tokens``): float32 ``(n, dim)``; a text without words is 0."""
        rows = self.encode_tokens(texts, role=role, batch_size=batch_size)
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        for i, r in enumerate(rows):
            if len(r):
                out[i] = r.mean(axis=0)
        return out

    # ------------------------------------------------------------------ persistence
    def get_config(self) -> dict[str, Any]:
        return {"model": self.model.config.to_dict(), "layer": self.layer, "analyzer": self.analyzer.get_config(),
                "name": self.name}

    def save(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write ``manifest.json`` (config, meta, checksums) + ``model.safetensors`` + ``vocab.txt`` atomically.

        An existing ``path`` is replaced only if it is an earlier ``Elmo`` save (or empty), unless ``force``.
        """
        from embedstack.io import atomic_dir, save_arrays, write_manifest

        bad = next((w for w in self.vocab if not w or any(c.isspace() for c in w)), None)
        if bad is not None:
            raise ConfigError(f"vocabulary word {bad!r} is empty or holds whitespace; it cannot be saved one per line.")
        arrays = {k: v.detach().float().contiguous().numpy() for k, v in self.model.state_dict().items()}
        arrays.update({f"scalar_mix.{k}": v.detach().float().numpy().reshape(-1)
                       for k, v in self.mix.state_dict().items()})
        with atomic_dir(path, kind=self.type_name, force=force) as tmp:
            save_arrays(tmp / "model.safetensors", arrays)
            (tmp / "vocab.txt").write_text("\n".join(self.vocab) + "\n", encoding="utf-8")
            write_manifest(tmp, self.type_name, self.get_config(), state={"meta": self.meta})
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, layer: int | str | None = None, mmap: bool = False,
             verify: bool | None = None) -> Elmo:
        """Load a folder written by :meth:`save` (checksums checked; FormatError names a damaged file)."""
        from embedstack.io import load_arrays, read_manifest, verify_enabled, verify_files
        from embedstack.io.manifest import listed_sha256

        folder = Path(path)
        manifest = read_manifest(folder, expected_type=cls.type_name)
        # the weights are hashed on the bytes load_arrays reads, not read twice (as Component.load does)
        defer = "model.safetensors" if not mmap and verify_enabled(verify) else None
        verify_files(folder, manifest, verify=verify, defer=defer)
        cfg = manifest.get("config")
        if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
            raise FormatError(f"{folder / 'manifest.json'} has no ELMo model config; save the model again.")
        try:
            config = ElmoConfig.from_dict(cfg["model"])
        except (ConfigError, TypeError, ValueError) as exc:
            raise FormatError(f"{folder / 'manifest.json'}: invalid ELMo model config ({exc}).") from None
        vocab_file = folder / "vocab.txt"
        if not vocab_file.is_file():
            raise FormatError(f"{vocab_file} is missing; the ELMo folder is incomplete.")
        vocab = vocab_file.read_text(encoding="utf-8").split("\n")[:-1]
        if len(vocab) != config.vocab_size or tuple(vocab[: len(SPECIALS)]) != SPECIALS:
            raise FormatError(f"{vocab_file} holds {len(vocab)} words (first {vocab[:3]}) but the model's softmax has "
                              f"{config.vocab_size} starting with {list(SPECIALS)}; the folder is damaged.")
        arrays = load_arrays(folder / "model.safetensors", mmap=mmap,
                             sha256=listed_sha256(manifest, defer) if defer else None)
        state = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items() if not k.startswith("scalar_mix.")}
        mix_state = {k.split(".", 1)[1]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("scalar_mix.")}
        try:
            model = ElmoModel(config)
            model.load_state_dict(state)
            mix = ScalarMix(config.n_layers + 1)
            mix.load_state_dict({"weights": mix_state["weights"], "gamma": mix_state["gamma"].reshape(())})
        except (RuntimeError, KeyError, ValueError) as exc:
            raise FormatError(f"{folder / 'model.safetensors'} does not match the manifest's config ({exc}).") from None
        an = cfg.get("analyzer")
        obj = cls(model, vocab, layer=cfg.get("layer", "mix") if layer is None else layer,
                  analyzer=Analyzer.from_config(an) if an else None, name=str(cfg.get("name", folder.name)),
                  meta=(manifest.get("state") or {}).get("meta"))
        obj.mix = mix.eval()
        return obj

    def __repr__(self) -> str:
        c = self.model.config
        return (f"Elmo(layers={self.n_layers}, dim={self.dim}, vocab={c.vocab_size:,}, layer={self.layer!r}, "
                f"params={sum(p.numel() for p in self.model.parameters()):,})")


def _check_sentences(sentences: Sequence[Sequence[str]]) -> list[list[str]]:
    if isinstance(sentences, str):
        raise InputError("word_layers takes a list of sentences, each a list of words; got one string. "
                         "Tokenize first, e.g. [text.split()].")
    out = []
    for i, s in enumerate(sentences):
        if isinstance(s, str):
            raise InputError(f"sentence #{i} is a string, not a list of words; pass [s.split()] or tokenize it.")
        words = list(s)
        for j, w in enumerate(words):
            if not isinstance(w, str) or not w:
                raise InputError(f"word #{j} of sentence #{i} is {w!r}; every word must be a non-empty string "
                                 "(drop empty tokens before calling word_layers).")
        out.append(words)
    return out


# ------------------------------------------------------------------------------------ perplexity
def batch_targets(model: Elmo, sentences: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor, Tensor]:
    """``(chars (B, T, C), lengths (B,), targets (B, T))`` for a batch of word lists (training and scoring)."""
    chars, lengths = char_ids(sentences, model.model.config.max_chars)
    targets = np.zeros(lengths.shape + (chars.shape[1],), dtype=np.int64)
    for b, s in enumerate(sentences):
        targets[b, : len(s) + 2] = model.word_ids([BOS, *s, EOS])
    return torch.from_numpy(chars), torch.from_numpy(lengths), torch.from_numpy(targets)


def perplexity(model: Elmo, sentences: Sequence[Sequence[str]], *, batch_size: int = 64) -> dict[str, float]:
    """Held-out perplexity of the forward and backward LMs and their average (the paper's figure).

    Each sentence ``w_1 … w_n`` is scored as ``<S> w_1 … w_n </S>``: the forward LM predicts ``w_1 … </S>``, the
    backward LM ``<S> … w_n`` (``n + 1`` predictions each; ``<unk>`` is a word like any other).

    Returns:
        ``{"forward", "backward", "average", "tokens"}`` (``average`` = mean of the two perplexities,
        ``tokens`` = predictions per direction).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int. Got {batch_size!r} instead.")
    sents = [s for s in _check_sentences(sentences) if s]
    if not sents:
        raise InputError("perplexity needs at least one non-empty sentence.")
    nll_f = nll_b = 0.0
    count = 0
    order = sorted(range(len(sents)), key=lambda i: len(sents[i]))
    was_training = model.model.training
    model.model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chars, lengths, targets = batch_targets(model, [sents[i] for i in order[start:start + batch_size]])
                f, b, n = model.model.lm_losses(chars, lengths, targets)
                nll_f += float(f) * n
                nll_b += float(b) * n
                count += n
    finally:
        model.model.train(was_training)
    fwd, bwd = math.exp(nll_f / count), math.exp(nll_b / count)
    return {"forward": fwd, "backward": bwd, "average": (fwd + bwd) / 2, "tokens": float(count)}


# ------------------------------------------------------------------------------------ the SPEC
_SPEC_OPTIONS = {"layer"}


@dataclass
class _SpecArgs:
    path: str
    options: dict[str, str] = field(default_factory=dict)


def _parse_spec_arg(arg: str) -> _SpecArgs:
    from embedstack.models import split_options

    path, opts = split_options(arg, _SPEC_OPTIONS, "elmo", "'elmo:PATH,layer=2' or 'elmo:PATH,layer=mix'")
    return _SpecArgs(path, opts)


def elmo_spec(arg: str | None) -> Elmo:
    """The ``elmo:PATH[,layer=N|mix]`` model SPEC (without PATH: the ``elmo-enwiki`` recipe's model)."""
    parsed = _parse_spec_arg(arg or "")
    if parsed.path:
        folder = Path(os.path.expandvars(parsed.path)).expanduser()
    else:
        from embedstack.training.recipes import recipe_dir

        folder = recipe_dir("elmo-enwiki")
        if not (folder / "manifest.json").is_file():
            raise ModelNotFoundError(f"no ELMo model at {folder}; build it with `embedstack recipe elmo-enwiki` or give a "
                              "folder: 'elmo:PATH'.")
    layer = parsed.options.get("layer")
    return Elmo.load(folder, layer=layer)
