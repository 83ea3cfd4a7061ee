"""The masked-LM objective: a collator, BERT's MLM head, and a pretraining loop with a time budget.

* :class:`MLMCollator` selects 15% of the non-special tokens; of those, 80% become ``[MASK]``, 10%
  a random (non-special) token and 10% stay unchanged; labels are the original ids there and -100
  elsewhere.
* :class:`BertForMaskedLM` = :class:`~embedstack.neural.transformer.BertModel` + the prediction head
  (dense → GELU → LayerNorm → decoder tied to the word embeddings, plus a bias), with Hugging Face
  key names (``bert.*``, ``cls.predictions.*``). Logits are computed only at selected positions.
* :func:`pretrain_mlm` streams texts, packs them into full ``max_len`` sequences, and trains with
  AdamW (warmup, then linear decay over the step or time budget) until the budget is spent.

Example:
    >>> import numpy as np
    >>> col = MLMCollator(vocab_size=50, mask_id=4, special_ids=[0, 1, 2, 3, 4], pad_id=0, seed=0)
    >>> batch = col([np.array([2, 10, 11, 12, 3])])
    >>> sorted(batch)
    ['attention_mask', 'input_ids', 'labels']
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from embedstack._extras import require

torch = require("torch", "torch", "masked-LM pretraining")
from torch import Tensor, nn  # noqa: E402

from embedstack.errors import ConfigError, InputError  # noqa: E402
from embedstack.neural.config import BertConfig  # noqa: E402
from embedstack.neural.tokenizer import WordPiece, pad_batch  # noqa: E402
from embedstack.neural.transformer import BertModel, _activation  # noqa: E402

__all__ = ["MLMCollator", "BertForMaskedLM", "PretrainResult", "pack_sequences", "pretrain_mlm", "save_pretrained",
           "train_mlm_head"]

log = logging.getLogger(__name__)
IGNORE = -100


class MLMCollator:
    """Turn token-id sequences into a masked-LM batch (BERT's 15% → 80/10/10 rule).

    Args:
        vocab_size: Ids are in ``[0, vocab_size)``.
        mask_id: Id of ``[MASK]``.
        special_ids: Ids never selected and never drawn as random replacements.
        pad_id: Id used for padding.
        mlm_probability: Share of (non-special) tokens selected for prediction.
        mask_ratio, random_ratio: Of the selected tokens, the share replaced by ``[MASK]`` and by a
            random token; the rest stay unchanged.
        seed: Seed of the collator's own generator (deterministic batches).
    """

    def __init__(self, *, vocab_size: int, mask_id: int, special_ids: Sequence[int], pad_id: int = 0,
                 mlm_probability: float = 0.15, mask_ratio: float = 0.8, random_ratio: float = 0.1,
                 seed: int = 0) -> None:
        if not 0.0 < mlm_probability < 1.0:
            raise ConfigError(f"mlm_probability must be in (0, 1). Got {mlm_probability}.")
        if mask_ratio < 0 or random_ratio < 0 or mask_ratio + random_ratio > 1.0:
            raise ConfigError(f"mask_ratio + random_ratio must be within [0, 1]. Got {mask_ratio} + {random_ratio}.")
        self.vocab_size = int(vocab_size)
        self.mask_id = int(mask_id)
        self.pad_id = int(pad_id)
        self.special = np.zeros(self.vocab_size, dtype=bool)
        self.special[list(special_ids)] = True
        self.special[self.pad_id] = True
        self.special[self.mask_id] = True
        self.replacements = np.flatnonzero(~self.special)  # random tokens are drawn from these
        self.mlm_probability = mlm_probability
        self.mask_ratio = mask_ratio
        self.random_ratio = random_ratio
        self.rng = np.random.default_rng(seed)

    def mask(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(corrupted ids, labels)`` for a padded int64 batch ``(B, T)``."""
        candidates = (~self.special[input_ids]) & (attention_mask == 1)
        selected = candidates & (self.rng.random(input_ids.shape) < self.mlm_probability)
        if not selected.any() and candidates.any():  # never return a batch with nothing to predict
            flat = np.flatnonzero(candidates)
            selected.flat[self.rng.choice(flat)] = True
        labels = np.where(selected, input_ids, IGNORE)
        u = self.rng.random(input_ids.shape)
        to_mask = selected & (u < self.mask_ratio)
        to_random = selected & (u >= self.mask_ratio) & (u < self.mask_ratio + self.random_ratio)
        corrupted = input_ids.copy()
        corrupted[to_mask] = self.mask_id
        corrupted[to_random] = self.rng.choice(self.replacements, size=int(to_random.sum()))
        return corrupted, labels

    def __call__(self, sequences: Sequence[np.ndarray]) -> dict[str, Tensor]:
        ids, attention = pad_batch(sequences, self.pad_id)
        corrupted, labels = self.mask(ids, attention)
        return {"input_ids": torch.from_numpy(corrupted), "attention_mask": torch.from_numpy(attention),
                "labels": torch.from_numpy(labels)}


class BertPredictionHeadTransform(nn.Module):
    """dense → activation → LayerNorm, applied before the vocabulary projection."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = _activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """Transform, then a decoder whose weight is the (tied) word-embedding matrix, plus a bias."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied: one matrix for input and output
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.transform(x)) + self.bias  # (N, V)


class _MLMHeadContainer(nn.Module):
    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)


class BertForMaskedLM(nn.Module):
    """BERT with the masked-LM head (``bert.*`` and ``cls.predictions.*`` keys, as Hugging Face).

    Example:
        >>> cfg = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        ...                  intermediate_size=32)
        >>> m = BertForMaskedLM(cfg, seed=0)
        >>> ids = torch.tensor([[2, 9, 4, 3]]); labels = torch.tensor([[-100, -100, 7, -100]])
        >>> float(m(ids, torch.ones_like(ids), labels)["loss"].detach()) > 0
        True
    """

    def __init__(self, config: BertConfig, *, seed: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = _MLMHeadContainer(config, self.bert.embeddings.word_embeddings)
        self.bert.init_weights(seed)
        for m in self.cls.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        gen = torch.Generator().manual_seed(seed + 1) if seed is not None else None
        with torch.no_grad():
            dense = self.cls.predictions.transform.dense
            dense.weight.copy_(torch.randn(dense.weight.shape, generator=gen) * config.initializer_range)
            dense.bias.zero_()

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        hidden = self.bert(input_ids, attention_mask)  # (B, T, C)
        if labels is None:
            return {"logits": self.cls.predictions(hidden)}  # (B, T, V)
        selected = labels != IGNORE  # (B, T)
        logits = self.cls.predictions(hidden[selected])  # (N, V): only where a prediction is scored
        loss = nn.functional.cross_entropy(logits, labels[selected])
        return {"loss": loss, "logits": logits}


# ----------------------------------------------------------------------------------------- training
def pack_sequences(texts: Iterable[str], tokenizer: WordPiece, *, max_len: int, batch_texts: int = 256,
                   min_len: int = 8) -> Iterator[np.ndarray]:
    """Tokenize a text stream and cut the token stream into ``[CLS] … [SEP]`` sequences of ``max_len``.

    Every sequence is full (except a document's tail of at least ``min_len`` tokens), so no compute
    is spent on padding.
    """
    body = max_len - 2
    buf: list[str] = []

    def flush(batch: list[str]) -> Iterator[np.ndarray]:
        for enc in tokenizer.tokenizer.encode_batch(batch, add_special_tokens=False):
            ids = enc.ids
            for start in range(0, len(ids), body):
                piece = ids[start:start + body]
                if len(piece) >= min_len:
                    yield np.asarray([tokenizer.cls_id, *piece, tokenizer.sep_id], dtype=np.int64)

    tokenizer.tokenizer.no_truncation()
    tokenizer._truncation = None
    for text in texts:
        if text and text.strip():
            buf.append(text)
        if len(buf) >= batch_texts:
            yield from flush(buf)
            buf = []
    if buf:
        yield from flush(buf)


@dataclass
class PretrainResult:
    """What :func:`pretrain_mlm` returns: the trained model and its loss curve."""

    model: BertForMaskedLM
    tokenizer: WordPiece
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since last log)
    steps: int = 0
    sequences: int = 0
    tokens: int = 0
    seconds: float = 0.0
    epochs: int = 0


def pretrain_mlm(
    texts: Callable[[], Iterable[str]] | Sequence[str],
    tokenizer: WordPiece,
    config: BertConfig,
    *,
    minutes: float | None = 10.0,
    max_steps: int | None = None,
    batch_size: int = 32,
    max_len: int = 128,
    lr: float = 5e-4,
    warmup_steps: int = 100,
    weight_decay: float = 0.01,
    shuffle_buffer: int = 2048,
    seed: int = 0,
    log_every: int = 10,
    precision: str = "fp32",
    progress: Callable[[int, float], None] | None = None,
    model: BertForMaskedLM | None = None,
    frozen_steps: int = 0,
    encoder_lr_scale: float = 1.0,
) -> PretrainResult:
    """Pretrain a BERT from scratch with the masked-LM objective on a CPU within a budget.

    Args:
        texts: A list of texts, or a callable returning a fresh iterable (re-read each epoch).
        tokenizer: The WordPiece tokenizer (its vocabulary size must match ``config.vocab_size``).
        config: Model size.
        minutes: Wall-clock budget (None: only ``max_steps`` stops training).
        max_steps: Step budget (None: only ``minutes``). With ``max_steps`` the run is deterministic.
        batch_size, max_len: Sequences per step and tokens per sequence.
        lr, warmup_steps, weight_decay: AdamW with linear warmup, then linear decay to 10%.
        shuffle_buffer: Sequences shuffled together (seeded) before batching.
        seed: Seeds initialisation, shuffling and masking.
        log_every: Steps per entry of the loss curve.
        precision: ``fp32``, or ``bf16`` for mixed precision (forward and backward matmuls in bfloat16
            under :func:`torch.autocast`, weights and optimizer state in fp32): several times faster on
            CPUs with AMX or AVX-512 BF16, slower elsewhere.
        progress: Called with ``(step, last loss)`` after each step.
        model: Continue this model instead of a new one (:func:`train_mlm_head` passes a pretrained encoder
            with a fresh head).
        frozen_steps: The first steps train only the head (``cls.*``); the encoder, and the word embeddings
            the decoder is tied to, stay frozen.
        encoder_lr_scale: Learning-rate multiplier of the encoder's weights (after ``frozen_steps``).
    """
    if minutes is None and max_steps is None:
        raise ConfigError("Give a time budget (minutes) or a step budget (max_steps); both are None.")
    if tokenizer.mask_id is None:
        raise ConfigError("The tokenizer has no [MASK] token; masked-LM pretraining needs one.")
    if tokenizer.vocab_size != config.vocab_size:
        raise ConfigError(f"config.vocab_size={config.vocab_size} but the tokenizer has {tokenizer.vocab_size} ids.")
    if max_len > config.max_position_embeddings:
        raise ConfigError(f"max_len={max_len} exceeds max_position_embeddings={config.max_position_embeddings}.")
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"Unknown training precision {precision!r}; use 'fp32' or 'bf16'.")
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    torch.manual_seed(seed)
    model = (model if model is not None else BertForMaskedLM(config, seed=seed)).train()
    groups = []
    for head in (False, True):
        for decay in (True, False):
            params = [p for n, p in model.named_parameters()
                      if n.startswith("cls.") == head and (p.ndim >= 2) == decay]
            if params:
                groups.append({"params": params, "weight_decay": weight_decay if decay else 0.0,
                               "scale": 1.0 if head else float(encoder_lr_scale)})
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)
    encoder_params = [p for n, p in model.named_parameters() if not n.startswith("cls.")]
    for p in encoder_params:
        p.requires_grad_(frozen_steps <= 0)
    collator = MLMCollator(vocab_size=config.vocab_size, mask_id=tokenizer.mask_id, special_ids=tokenizer.special_ids(),
                           pad_id=tokenizer.pad_id, seed=seed)
    rng = np.random.default_rng(seed)
    budget_s = None if minutes is None else float(minutes) * 60.0
    result = PretrainResult(model=model, tokenizer=tokenizer)
    start = time.monotonic()
    window: list[float] = []

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, warmup_steps))
        if max_steps is not None:
            frac = step / max(1, max_steps)
        else:
            frac = (time.monotonic() - start) / budget_s if budget_s else 0.0
        return lr * warm * max(0.1, 1.0 - frac)

    def batches() -> Iterator[list[np.ndarray]]:
        while True:
            source = texts() if callable(texts) else texts
            produced = 0
            buf: list[np.ndarray] = []
            for seq in pack_sequences(source, tokenizer, max_len=max_len):
                buf.append(seq)
                produced += 1
                if len(buf) >= shuffle_buffer:
                    yield from _shuffled_batches(buf, batch_size, rng)
                    buf = []
            if buf:
                yield from _shuffled_batches(buf, batch_size, rng)
            result.epochs += 1
            if produced == 0:
                raise InputError("The corpus yielded no text of at least 8 tokens; nothing to pretrain on.")

    for batch_seqs in batches():
        if max_steps is not None and result.steps >= max_steps:
            break
        if budget_s is not None and time.monotonic() - start >= budget_s:
            break
        batch = collator(batch_seqs)
        if frozen_steps > 0 and result.steps == frozen_steps:
            for p in encoder_params:
                p.requires_grad_(True)
        for group in opt.param_groups:
            group["lr"] = lr_at(result.steps) * group["scale"]
        with autocast:
            loss = model(**batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise InputError(f"MLM loss became {value} at step {result.steps}; lower the learning rate (lr={lr}).")
        result.steps += 1
        result.sequences += len(batch_seqs)
        result.tokens += int(batch["attention_mask"].sum())
        window.append(value)
        if len(window) >= log_every:
            result.losses.append((result.steps, float(np.mean(window))))
            window = []
        if progress is not None:
            progress(result.steps, value)
    if window:
        result.losses.append((result.steps, float(np.mean(window))))
    result.seconds = time.monotonic() - start
    model.eval()
    return result


_T = TypeVar("_T")


def _shuffled_batches(buf: list[_T], batch_size: int, rng: np.random.Generator) -> Iterator[list[_T]]:
    order = rng.permutation(len(buf))
    for i in range(0, len(order), batch_size):
        yield [buf[j] for j in order[i:i + batch_size]]


def save_pretrained(result: PretrainResult, out: str | os.PathLike[str], *, max_seq_length: int = 128,
                    pooling: str = "mean", extra: dict[str, Any] | None = None, force: bool = False) -> Path:
    """Save the encoder as a sentence-transformers folder (+ ``mlm_head.safetensors``, ``training.json``).

    All files are written in one atomic folder swap; ``force`` as in :meth:`SentenceEncoder.save`.
    """
    from safetensors.torch import save_file

    from embedstack.neural.sentence import SentenceEncoder

    enc = SentenceEncoder(result.model.bert, result.tokenizer, pooling=pooling, normalize=False,
                          max_seq_length=min(max_seq_length, result.model.config.max_position_embeddings),
                          name=Path(out).name)
    head = {f"cls.predictions.{k}": v.detach().contiguous() for k, v in result.model.cls.predictions.state_dict().items()
            if not k.startswith("decoder.")}
    info = {"steps": result.steps, "sequences": result.sequences, "tokens": result.tokens,
            "seconds": round(result.seconds, 1), "epochs": result.epochs, "losses": result.losses, **(extra or {})}

    def add_files(tmp: Path) -> None:  # inside the temporary folder: part of the same atomic swap
        save_file(head, str(tmp / "mlm_head.safetensors"), metadata={"format": "pt"})
        (tmp / "training.json").write_text(json.dumps(info, indent=2), encoding="utf-8")

    return enc.save(out, force=force, extra=add_files)


def train_mlm_head(encoder: str | os.PathLike[str], texts: Callable[[], Iterable[str]] | Sequence[str], *,
                   frozen_steps: int = 300, unfrozen_steps: int = 200, batch_size: int = 32, max_len: int = 128,
                   lr: float = 1e-3, encoder_lr_scale: float = 0.05, seed: int = 0, precision: str = "bf16",
                   progress: Callable[[int, float], None] | None = None) -> PretrainResult:
    """Give a pretrained encoder that ships without one (all-MiniLM-L6-v2) a masked-LM head.

    A fresh head (transform + LayerNorm + decoder tied to the word embeddings + bias) is trained with the
    encoder frozen for ``frozen_steps``, then everything for ``unfrozen_steps`` with the encoder at
    ``lr · encoder_lr_scale`` (so the head adapts first and the encoder moves little). SPLADE reads
    this head. ``encoder`` is a model folder or name (:func:`embedstack.neural.hub.resolve_model`).
    """
    from embedstack.neural.cross_encoder import _transformer_dir
    from embedstack.neural.hub import resolve_model
    from embedstack.neural.transformer import load_weights

    folder = _transformer_dir(Path(resolve_model(str(encoder))[0]))
    config = BertConfig.from_json_file(folder / "config.json")
    tokenizer = WordPiece.from_file(folder)
    model = BertForMaskedLM(config, seed=seed)
    model.bert.pooler = None
    load_weights(model.bert, folder / "model.safetensors")  # in place: the decoder stays tied to the embeddings
    return pretrain_mlm(texts, tokenizer, config, minutes=None, max_steps=frozen_steps + unfrozen_steps,
                        batch_size=batch_size, max_len=max_len, lr=lr, warmup_steps=min(50, frozen_steps or 50),
                        seed=seed, precision=precision, progress=progress, model=model, frozen_steps=frozen_steps,
                        encoder_lr_scale=encoder_lr_scale)
