"""The sentence-model trainer: AdamW, warmup + decay, accumulation, clipping, bf16, evaluation, resumable.

:class:`SentenceTrainer` fine-tunes a :class:`~embedstack.neural.sentence.SentenceEncoder` (the same
object that encodes: its tokenizer, pooling, Dense head and normalisation) with any loss of
:mod:`embedstack.training.losses`. Built for CPUs:

* every text of the dataset is tokenized once, up front (Rust, parallel), not per step;
* all text columns of a batch (anchors, positives, negatives) run through the transformer in ONE call,
  as length-sorted pieces each padded to its own longest text
  (:meth:`~embedstack.neural.sentence.SentenceEncoder.forward_ids`), so a short query never pays for a
  256-token abstract's padding and small columns share matmuls;
* ``precision="bf16"`` runs matmuls in bfloat16 under :func:`torch.autocast` (fp32 weights and AdamW
  state); ``bf16-pure`` keeps a bfloat16 working copy of the transformer (activations and gradients in
  bf16: half the memory traffic) and fp32 master weights that AdamW updates and copies back each step;
* the fused AdamW kernel on CPU.

Checkpoints (:mod:`embedstack.training.checkpoint`) hold the model, optimizer, schedule position,
sampler position and RNG: a run killed at any moment and resumed ends with the same weights as one
that never stopped. A NaN loss stops the run naming the step and the batch, and is never saved.

Example:
    >>> from embedstack.neural.config import BertConfig
    >>> from embedstack.neural.sentence import SentenceEncoder
    >>> from embedstack.neural.tokenizer import WordPiece
    >>> from embedstack.neural.transformer import BertModel
    >>> from embedstack.training import TrainingData, TrainingArgs, SentenceTrainer
    >>> tok = WordPiece.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d"])
    >>> cfg = BertConfig(vocab_size=9, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
    ...                  intermediate_size=16)
    >>> enc = SentenceEncoder(BertModel(cfg).init_weights(seed=0), tok)
    >>> data = TrainingData.from_columns({"anchor": ["a", "b", "c"], "positive": ["a b", "b c", "c d"]})
    >>> result = SentenceTrainer(enc, "mnrl", data, args=TrainingArgs(batch_size=3, epochs=2)).train()
    >>> result.steps
    2
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._extras import require

torch = require("torch", "torch", "training")
from torch import Tensor, nn  # noqa: E402

from embedstack.errors import ConfigError, EmbedstackError, InputError  # noqa: E402
from embedstack.io import SENTENCE_MODEL, check_output  # noqa: E402
from embedstack.training.checkpoint import (  # noqa: E402
    load_checkpoint,
    nonfinite_tensors,
    read_identity,
    save_checkpoint,
)

__all__ = ["TrainingArgs", "SentenceTrainer", "TrainResult", "TrainingError", "lr_factor", "make_loss", "LOSSES"]

log = logging.getLogger(__name__)

SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "bf16-pure")
#: loss names accepted by :func:`make_loss` (and ``embedstack train sentence --loss``)
LOSSES = ("mnrl", "mnrl-symmetric", "cached-mnrl", "cosent", "cosine", "contrastive", "online-contrastive",
          "triplet", "softmax")
# loss column name → dataset column it reads
_ALIASES = {"sentence1": "anchor", "sentence2": "positive"}


class TrainingError(EmbedstackError, RuntimeError):
    """Training cannot go on (a non-finite loss or gradient); names the step and the batch."""


@dataclass
class TrainingArgs:
    """How to train. Most fields have a CLI flag of the same name on ``embedstack train sentence``.

    Args:
        epochs: Passes over the data (ignored when ``max_steps`` is set).
        max_steps: Optimizer steps in all (overrides ``epochs``).
        batch_size: Rows per forward/backward (in-batch negatives come from the same batch).
        grad_accum: Batches whose gradients are summed per optimizer step.
        lr: Peak learning rate of AdamW.
        weight_decay: AdamW decoupled weight decay (not on biases and LayerNorm).
        warmup_ratio: Fraction of steps of linear warmup (``warmup_steps`` wins when given).
        warmup_steps: Steps of linear warmup.
        schedule: After warmup, ``linear`` decay to 0, ``cosine`` decay to 0, or ``constant``.
        max_grad_norm: Clip the global gradient norm (0: no clipping).
        precision: ``fp32``, ``bf16`` (autocast), ``bf16-pure`` (bf16 working copy + fp32 master weights)
            or ``auto`` (``bf16`` where the CPU has AVX-512 BF16 / AMX, else ``fp32``).
        seed: Seeds dropout, shuffling and any loss parameters.
        max_seq_length: Truncate training texts to this many tokens (default: the model's); the trained
            model keeps its own limit for encoding.
        group_by_length: Batches of rows of similar length (less padding; shuffled order of batches).
        no_duplicates: Never put the same text twice in a batch (default: when the loss uses in-batch
            negatives, where a duplicate would be a false negative).
        mini_batch_size: Rows per chunk of the cached (GradCache) MNRL loss.
        eval_steps: Evaluate every N optimizer steps (and at the end), if an evaluator is given.
        save_steps: Write a resumable checkpoint every N optimizer steps (and at the end).
        log_steps: One JSONL log entry per N steps (mean loss over them).
        min_piece_rows: Rows per length piece of a forward call (see ``SentenceEncoder.forward_ids``).
        threads: torch intra-op threads (default: leave the process setting).
        head_lr_scale: Learning-rate multiplier of a new head (a cross-encoder's pooler and classifier,
            a loss's own classifier), which starts from scratch while the transformer is pretrained.
    """

    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    schedule: str = "linear"
    max_grad_norm: float = 1.0
    precision: str = "auto"
    seed: int = 0
    max_seq_length: int | None = None
    group_by_length: bool = False
    no_duplicates: bool | None = None
    mini_batch_size: int = 32
    eval_steps: int | None = None
    save_steps: int | None = None
    log_steps: int = 10
    min_piece_rows: int = 8
    threads: int | None = None
    head_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        def positive_int(name: str, allow_none: bool = False, low: int = 1) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
                raise ConfigError(f"TrainingArgs.{name} must be an int >= {low}. Got {v!r}.",
                                  param=(name, f"TrainingArgs.{name}"))

        for name in ("epochs", "batch_size", "grad_accum", "log_steps", "mini_batch_size", "min_piece_rows"):
            positive_int(name)
        for name in ("max_steps", "eval_steps", "save_steps", "max_seq_length", "threads"):
            positive_int(name, allow_none=True)
        positive_int("warmup_steps", allow_none=True, low=0)
        positive_int("seed", low=0)
        for name, low, high in (("lr", 0.0, 1.0), ("weight_decay", 0.0, 10.0), ("warmup_ratio", 0.0, 1.0),
                                ("max_grad_norm", 0.0, 1e9), ("head_lr_scale", 0.0, 1e4)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not low <= v <= high:
                raise ConfigError(f"TrainingArgs.{name} must be a number in [{low}, {high}]. Got {v!r}.",
                                  param=(name, f"TrainingArgs.{name}"))
        if self.lr == 0:
            raise ConfigError("TrainingArgs.lr must be > 0.", param=("lr", "TrainingArgs.lr"))
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"Unknown schedule {self.schedule!r}; use one of {list(SCHEDULES)}.",
                              param=("schedule", "schedule"))
        if self.precision not in PRECISIONS:
            raise ConfigError(f"Unknown training precision {self.precision!r}; use one of {list(PRECISIONS)}.",
                              param=("precision", "precision"))


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based) of ``total``.

    Linear warmup ``(step + 1) / warmup`` for ``step < warmup``; then ``linear``: ``(total - step) /
    (total - warmup)``, ``cosine``: ``½ (1 + cos(π · (step - warmup) / (total - warmup)))``, or 1.

    Example:
        >>> [round(lr_factor(s, 10, 2, "linear"), 3) for s in (0, 1, 2, 9)]
        [0.5, 1.0, 1.0, 0.125]
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    frac = (step - warmup) / (total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    return max(0.0, 1.0 - frac)


@dataclass
class TrainResult:
    """What :meth:`SentenceTrainer.train` did.

    ``seconds`` counts the training steps only (not evaluation or checkpoints); ``pairs_per_second``
    is rows trained per second of it.
    """

    steps: int = 0
    epochs: float = 0.0
    rows: int = 0
    seconds: float = 0.0
    eval_seconds: float = 0.0
    final_loss: float = math.nan
    best_metric: float | None = None
    best_step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    precision: str = "fp32"
    out: str | None = None
    mining: dict[str, Any] | None = None

    @property
    def pairs_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


# ------------------------------------------------------------------------------------------------ losses
def make_loss(name: str, encoder: Any, *, matryoshka_dims: Sequence[int] | None = None,
              matryoshka_weights: Sequence[float] | None = None, n_labels: int = 3, seed: int = 0,
              **options: Any) -> nn.Module:
    """A loss by name (see :data:`LOSSES`), optionally wrapped in :class:`MatryoshkaLoss`.

    ``options`` go to the loss (``scale``, ``margin``, ``distance`` ...). ``cached-mnrl`` embeds through the
    trainer (it is given the embedding function when training starts). Loss parameters (the NLI
    classifier) are initialised from ``seed`` without touching the global RNG.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _make_loss(name, encoder, matryoshka_dims, matryoshka_weights, n_labels, options)


def _make_loss(name: str, encoder: Any, matryoshka_dims: Sequence[int] | None,
               matryoshka_weights: Sequence[float] | None, n_labels: int, options: dict[str, Any]) -> nn.Module:
    from embedstack.training import losses as L

    if name not in LOSSES:
        from embedstack.models import did_you_mean

        raise ConfigError(f"Unknown loss {name!r}{did_you_mean(name, list(LOSSES))}; use one of {list(LOSSES)}.",
                          param=("loss", f"loss {name!r}"))
    try:
        if name == "cached-mnrl":
            from embedstack.training.cached import CachedMultipleNegativesRankingLoss

            return CachedMultipleNegativesRankingLoss(_unbound_embed, matryoshka_dims=matryoshka_dims,
                                                      matryoshka_weights=matryoshka_weights, **options)
        loss: nn.Module
        if name in ("mnrl", "mnrl-symmetric"):
            loss = L.MultipleNegativesRankingLoss(symmetric=name == "mnrl-symmetric", **options)
        elif name == "cosent":
            loss = L.CoSENTLoss(**options)
        elif name == "cosine":
            loss = L.CosineSimilarityLoss(**options)
        elif name == "contrastive":
            loss = L.ContrastiveLoss(**options)
        elif name == "online-contrastive":
            loss = L.OnlineContrastiveLoss(**options)
        elif name == "triplet":
            loss = L.TripletLoss(**options)
        else:
            loss = L.SoftmaxLoss(encoder.dim, n_labels=n_labels, **options)
    except TypeError as exc:
        raise ConfigError(f"loss {name!r} does not take these options: {exc}.") from None
    if matryoshka_dims is not None:
        loss = L.MatryoshkaLoss(loss, dims=matryoshka_dims, weights=matryoshka_weights)
    elif matryoshka_weights is not None:
        raise ConfigError("matryoshka_weights given without matryoshka_dims.")
    return loss


def _unbound_embed(features: Any) -> Tensor:  # replaced by the trainer's embedding function
    raise ConfigError("this cached loss is not attached to a trainer; pass it to SentenceTrainer.")


def _base_loss(loss: nn.Module) -> nn.Module:
    inner = getattr(loss, "loss", None)
    return inner if isinstance(inner, nn.Module) else loss


def _uses_in_batch_negatives(loss: nn.Module) -> bool:
    from embedstack.training.cached import CachedMultipleNegativesRankingLoss
    from embedstack.training.losses import MultipleNegativesRankingLoss

    base = _base_loss(loss)
    return isinstance(base, MultipleNegativesRankingLoss | CachedMultipleNegativesRankingLoss) \
        or bool(getattr(base, "in_batch_negatives", False))


# ------------------------------------------------------------------------------------------------ trainer
class SentenceTrainer:
    """Fine-tune a sentence encoder with a loss on a :class:`~embedstack.training.data.TrainingData`.

    Args:
        model: The :class:`~embedstack.neural.sentence.SentenceEncoder` to train (trained in place).
        loss: A loss module, or a name of :data:`LOSSES` (built by :func:`make_loss`).
        data: Training rows with the columns the loss needs (``anchor``/``sentence1``, ``positive``/
            ``sentence2``, ``negative_1..k``, ``score``, ``label``).
        args: :class:`TrainingArgs`.
        evaluator: Called every ``args.eval_steps`` and at the end; its ``primary`` metric (higher is
            better) selects the best checkpoint, which becomes the result.
        progress: Called after every optimizer step with a dict (step, total, loss, lr, eta_s, epoch).
        teacher: For the trainers that distil (``takes_teacher``: cross-encoder, ColBERT, SPLADE): a scorer of pairs
            (``predict(pairs, activation=False)``); its scores of each row's candidates (positive, then
            negative_1..k) are computed once, before the first step, for the loss's KL term (:meth:`_teacher_for`).
    """

    #: whether this trainer's loss reads a teacher's scores (cross-encoder, ColBERT and SPLADE training)
    takes_teacher = False

    def __init__(self, model: Any, loss: nn.Module | str, data: Any, *, args: TrainingArgs | None = None,
                 evaluator: Callable[[Any], Mapping[str, float]] | None = None,
                 progress: Callable[[dict[str, Any]], None] | None = None, teacher: Any = None) -> None:
        self._check_model(model)
        if model.backend != "torch":
            raise ConfigError(f"training needs the torch backend; this model runs on {model.backend!r}.")
        self.args = args or TrainingArgs()
        self.model = model
        self.loss = self._make_loss(loss) if isinstance(loss, str) else loss
        if not isinstance(self.loss, nn.Module):
            raise ConfigError(f"loss must be a torch loss module or one of {list(LOSSES)}; got {type(loss).__name__}.")
        self.data = data
        self.evaluator = evaluator
        self.progress = progress
        self.notes: dict[str, Any] = {}  # written into training/result.json beside the run's own figures
        if len(data) == 0:
            raise InputError(f"the training data ({getattr(data, 'source', 'records')}) has no rows.")
        self.text_columns, self.label_column, self.n_negatives = self._resolve_columns()
        if teacher is not None:
            if not self.takes_teacher:
                raise ConfigError(f"{type(self).__name__} has no distillation: a teacher is for cross-encoder, "
                                  "ColBERT and SPLADE training.", param=("teacher", "teacher"))
            if not self.n_negatives:
                raise ConfigError("distillation from a teacher needs (anchor, positive, negative_1..k) rows: mine hard "
                                  "negatives first.", fix={"hard_negatives": "bm25"})
        self.teacher = teacher
        self._teacher_scores: Tensor | None = None  # (rows, 1 + k), scored once by _tokenize
        precision = self.args.precision
        if precision == "auto":
            from embedstack.neural.sentence import cpu_has_bf16

            precision = "bf16" if cpu_has_bf16() else "fp32"
        self.precision = precision
        if self.args.max_seq_length is not None:
            limit = model.model.config.max_position_embeddings
            if self.args.max_seq_length > limit:
                raise ConfigError(f"max_seq_length={self.args.max_seq_length} exceeds the model's "
                                  f"max_position_embeddings={limit}.", param=("max_seq_length", "max_seq_length"))
        self._best_weights: dict[str, Tensor] | None = None

    def _check_model(self, model: Any) -> None:
        from embedstack.neural.sentence import SentenceEncoder

        if not isinstance(model, SentenceEncoder):
            raise ConfigError(f"SentenceTrainer trains a SentenceEncoder (embedstack.load('all-MiniLM-L6-v2'), a "
                              f"sentence-transformers folder ...); got {type(model).__name__}.")

    def _make_loss(self, name: str) -> nn.Module:
        return make_loss(name, self.model, seed=self.args.seed)

    # ---------------------------------------------------------------------------------------- columns
    def _resolve_columns(self) -> tuple[list[str], str | None, int]:
        have = list(self.data.columns)
        needed = tuple(getattr(self.loss, "columns", ()))
        optional = tuple(getattr(self.loss, "optional_columns", ()))
        if not needed:
            raise ConfigError(f"{type(self.loss).__name__} does not name the data columns it needs ('columns').")
        negatives = sorted((c for c in have if c.startswith("negative_")), key=lambda c: int(c.split("_")[1]))
        texts: list[str] = []
        label: str | None = None
        missing = []
        for col in needed + tuple(c for c in optional if c in ("negative",) and negatives):
            if col in ("score", "label"):
                if col in have:
                    label = col
                else:
                    missing.append(col)
            elif col == "negative":
                if negatives:
                    texts.append("negative")
                else:
                    missing.append(col)
            else:
                mapped = _ALIASES.get(col, col)
                if mapped in have:
                    texts.append(mapped)
                else:
                    missing.append(col)
        if missing:
            raise ConfigError(
                f"{type(_base_loss(self.loss)).__name__} needs the columns {needed} (sentence1≡anchor, "
                f"sentence2≡positive, negative≡negative_1..k) but the data ({getattr(self.data, 'source', 'records')}) "
                f"has {have}: missing {missing}. Choose a loss that fits the data (--loss), or map the file's "
                "columns (--columns).", param=("loss", "the loss"))
        k = len(negatives) if "negative" in texts else 0
        from embedstack.training.losses import TripletLoss

        if isinstance(_base_loss(self.loss), TripletLoss) and k > 1:
            raise ConfigError(f"TripletLoss takes one negative per row; the data has {k} (negative_1..{k}). "
                              "Use --loss mnrl (it takes any number), or mine with num_negatives=1.")
        return texts, label, k

    # ------------------------------------------------------------------------------------------- setup
    def _tokenize(self) -> None:
        """Every text once: ids per (column, row); anchors get the query prompt, the rest the document one."""
        enc = self.model
        saved_length = enc.max_seq_length  # training may truncate shorter; the saved model keeps its own limit
        if self.args.max_seq_length is not None:
            enc.max_seq_length = self.args.max_seq_length
        try:
            self._tokenize_columns(enc)
        finally:
            enc.max_seq_length = saved_length
        if self.teacher is not None and self._teacher_scores is None:
            from embedstack.training.ranking import teacher_scores

            self._teacher_scores = teacher_scores(self.teacher, self.data, ["positive", *[
                f"negative_{i + 1}" for i in range(self.n_negatives)]])

    def _teacher_for(self, rows: np.ndarray) -> Tensor | None:
        """The teacher's scores of these rows' candidates (positive first, then negative_1..k), or None."""
        return None if self._teacher_scores is None else self._teacher_scores[torch.from_numpy(np.asarray(rows))]

    def _tokenize_columns(self, enc: Any) -> None:
        self._ids: dict[str, list[np.ndarray]] = {}
        cache: dict[tuple[str, str], np.ndarray] = {}
        for col in self.text_columns:
            names = [f"negative_{i + 1}" for i in range(self.n_negatives)] if col == "negative" else [col]
            prompt = enc.prompt_for("query" if col == "anchor" else "document")
            for name in names:
                values = self.data.column(name)
                todo = list(dict.fromkeys(t for t in values if (prompt, t) not in cache))
                for i in range(0, len(todo), 8192):
                    part = todo[i:i + 8192]
                    ids = enc._tokenize(part, prompt)
                    cache.update({(prompt, t): x for t, x in zip(part, ids, strict=True)})
                self._ids[name] = [cache[(prompt, t)] for t in values]
        self._lengths = np.zeros(len(self.data), dtype=np.int64)
        for ids in self._ids.values():
            self._lengths += np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        if self.label_column is not None:
            values = np.asarray(self.data.column(self.label_column))
            self._labels = torch.from_numpy(values.astype(np.int64 if self.label_column == "label" else np.float32))

    def _sampler(self) -> Any:
        from embedstack.training.data import NoDuplicatesBatchSampler

        no_dup = self.args.no_duplicates
        if no_dup is None:
            no_dup = _uses_in_batch_negatives(self.loss)
        return NoDuplicatesBatchSampler(self.data, self.args.batch_size, seed=self.args.seed,
                                        no_duplicates=bool(no_dup), group_by_length=self.args.group_by_length,
                                        lengths=self._lengths if self.args.group_by_length else None)

    def _identity(self) -> dict[str, Any]:
        cfg = json.dumps(self.model.model.config.to_dict(), sort_keys=True)
        h = hashlib.sha256()
        for name in sorted(self._ids):
            for x in self._ids[name]:
                h.update(x.tobytes())
                h.update(b"|")
        if self.label_column is not None:
            h.update(self._labels.numpy().tobytes())
        a = self.args
        out: dict[str, Any] = {
            "model": f"{self.model.name} ({hashlib.sha256(cfg.encode()).hexdigest()[:12]})",
            "loss": type(_base_loss(self.loss)).__name__ + ("+matryoshka" if _base_loss(self.loss) is not self.loss else ""),
            "data": f"{len(self.data)} rows {h.hexdigest()[:12]}",
            "batch_size": a.batch_size,
            "seed": a.seed,
            # a resume with other settings would mix two runs: these must match too
            "settings": {"lr": a.lr, "grad_accum": a.grad_accum, "epochs": a.epochs, "max_steps": a.max_steps,
                         "schedule": a.schedule, "warmup": [a.warmup_ratio, a.warmup_steps], "precision": self.precision,
                         "max_seq_length": a.max_seq_length, "weight_decay": a.weight_decay,
                         "group_by_length": a.group_by_length, "head_lr_scale": a.head_lr_scale},
        }
        if self.teacher is not None:  # by name, not by its scores: a resume scores again, and bf16 may round otherwise
            out["teacher"] = str(getattr(self.teacher, "name", type(self.teacher).__name__))
        return out

    def _encoder_weights(self) -> dict[str, Tensor]:
        return {k: p for k, p in self._named_weights().items() if not k.startswith("loss.")}

    def _named_weights(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {f"model.{k}": p for k, p in self.model.model.named_parameters()}
        if self.model.dense is not None:
            out.update({f"dense.{k}": p for k, p in self.model.dense.named_parameters()})
        out.update({f"loss.{k}": p for k, p in self.loss.named_parameters()})
        return out

    def _is_head(self, name: str) -> bool:
        """Whether a weight belongs to a new head (``head_lr_scale``): a loss's own parameters."""
        return name.startswith("loss.")

    def _build_optimizer(self) -> Any:
        groups: dict[tuple[bool, bool], list[Tensor]] = {}
        for name, p in self._named_weights().items():
            if not p.requires_grad:
                continue
            decay = not (p.ndim < 2 or "LayerNorm" in name)
            groups.setdefault((decay, self._is_head(name)), []).append(p)
        scale = self.args.head_lr_scale
        param_groups = [{"params": params, "weight_decay": self.args.weight_decay if decay else 0.0,
                         "lr_scale": scale if head else 1.0, "lr": self.args.lr * (scale if head else 1.0)}
                        for (decay, head), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))]
        try:
            return torch.optim.AdamW(param_groups, lr=self.args.lr, fused=True)
        except (RuntimeError, TypeError):  # builds without the fused CPU kernel
            return torch.optim.AdamW(param_groups, lr=self.args.lr)

    # ----------------------------------------------------------------------------------------- forward
    def _autocast(self) -> Any:
        return (torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "bf16"
                else contextlib.nullcontext())

    def _embed(self, ids: Sequence[np.ndarray]) -> Tensor:
        with self._autocast():
            return self.model.forward_ids(ids, model=self._work, min_rows=self.args.min_piece_rows).float()

    def _batch_loss(self, rows: np.ndarray) -> Tensor:
        from embedstack.training.cached import CachedMultipleNegativesRankingLoss

        cols = [f"negative_{i + 1}" for i in range(self.n_negatives)] if "negative" in self.text_columns else []
        plain = [c for c in self.text_columns if c != "negative"]
        if isinstance(self.loss, CachedMultipleNegativesRankingLoss):
            size = self.args.mini_batch_size
            args: list[Any] = []
            for col in plain:
                col_ids = [self._ids[col][r] for r in rows]
                args.append([col_ids[i:i + size] for i in range(0, len(col_ids), size)])
            if cols:
                neg = [self._ids[c][r] for r in rows for c in cols]
                args.append([neg[i:i + size] for i in range(0, len(neg), size)])
            return self.loss(*args)
        # one forward call for every text of the batch
        ids: list[np.ndarray] = []
        for col in plain:
            ids.extend(self._ids[col][r] for r in rows)
        for r in rows:
            ids.extend(self._ids[c][r] for c in cols)
        emb = self._embed(ids)  # (B·(columns + k), D)
        b = len(rows)
        inputs: list[Tensor] = [emb[i * b:(i + 1) * b] for i in range(len(plain))]
        if cols:
            negs = emb[len(plain) * b:].reshape(b, len(cols), -1)  # (B, k, D)
            from embedstack.training.losses import TripletLoss

            inputs.append(negs[:, 0] if isinstance(_base_loss(self.loss), TripletLoss) else negs)
        if self.label_column is not None:
            inputs.append(self._labels[torch.from_numpy(np.asarray(rows))])
        return self.loss(*inputs)

    # ---------------------------------------------------------------------------------------- training
    def train(self, *, out: str | os.PathLike[str] | None = None, checkpoint_dir: str | os.PathLike[str] | None = None,
              resume: bool = False, force: bool = False, keep_checkpoints: bool = False) -> TrainResult:
        """Train; with ``out``, save the result (the best checkpoint if evaluated, else the last) there.

        Args:
            out: Folder for the trained model (a sentence-transformers folder, with ``training/``: the
                JSONL log, the loss-curve PNG, the arguments and the result).
            checkpoint_dir: Where resumable checkpoints go (default ``OUT.ckpt`` beside ``out``; without
                ``out`` and this, no checkpoints are written).
            resume: Continue from the checkpoint in ``checkpoint_dir`` (an error if it belongs to another
                model, loss or dataset; a fresh start if there is none).
            force: Replace whatever is at ``out``.
            keep_checkpoints: Keep ``checkpoint_dir`` after a successful run (it is removed otherwise).
        """
        args = self.args
        if out is not None:
            check_output(out, kind=SENTENCE_MODEL, force=force)  # before hours of training, not after
        ckpt_root = Path(checkpoint_dir) if checkpoint_dir is not None else (
            Path(f"{os.fspath(out).rstrip('/')}.ckpt") if out is not None else None)
        prev_threads = torch.get_num_threads()
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        try:
            return self._train(out, ckpt_root, resume, force, keep_checkpoints)
        finally:
            if args.threads is not None:
                torch.set_num_threads(prev_threads)
            self.model.model.eval()
            for head in (getattr(self.model, "dense", None), getattr(self.model, "classifier", None)):
                if head is not None:
                    head.eval()

    def _train(self, out: Any, ckpt_root: Path | None, resume: bool, force: bool, keep: bool) -> TrainResult:
        from embedstack.training.cached import CachedMultipleNegativesRankingLoss

        args = self.args
        torch.manual_seed(args.seed)
        self._tokenize()
        sampler = self._sampler()
        if args.max_steps is not None:
            total = args.max_steps
        else:  # packing without duplicates gives each epoch its own number of batches
            total = 0
            for e in range(args.epochs):
                sampler.set_epoch(e)
                total += max(1, math.ceil(len(sampler) / args.grad_accum))
            sampler.set_epoch(0)
        warmup = args.warmup_steps if args.warmup_steps is not None else int(round(args.warmup_ratio * total))
        master = self.model.model.train()
        for head in (getattr(self.model, "dense", None), getattr(self.model, "classifier", None)):
            if head is not None:  # a bi-encoder's Dense projection, a cross-encoder's classifier
                head.train()
        self.loss.train()
        self._work = copy.deepcopy(master).to(torch.bfloat16).train() if self.precision == "bf16-pure" else master
        if isinstance(self.loss, CachedMultipleNegativesRankingLoss):
            object.__setattr__(self.loss, "embed", self._embed)
        optimizer = self._build_optimizer()
        identity = self._identity()
        result = TrainResult(precision=self.precision)
        state: dict[str, Any] = {"step": 0, "epoch": 0, "best_metric": None, "best_step": None, "log": [],
                                 "rows": 0, "seconds": 0.0, "eval_seconds": 0.0}
        last_dir = ckpt_root / "last" if ckpt_root is not None else None
        best_dir = ckpt_root / "best" if ckpt_root is not None else None
        if resume:
            if last_dir is None:
                raise ConfigError("resume=True needs an output folder (out=) or checkpoint_dir= to resume from.")
            if read_identity(last_dir) is not None:
                state = load_checkpoint(last_dir, identity=identity, weights=self._named_weights(), optimizer=optimizer)
                sampler.load_state_dict(state["sampler"])
                result.resumed_from = state["step"]
                log.info(f"resumed from step {state['step']} ({last_dir})")
            else:
                log.info(f"no checkpoint in {ckpt_root}; starting afresh")
        elif last_dir is not None and read_identity(last_dir) is not None:
            raise ConfigError(f"{ckpt_root} holds a checkpoint of an earlier run (step "
                              f"{_peek_step(last_dir)}); resume it (--resume) or delete the folder to start over.",
                              fix={"resume": True})
        if self._work is not master:
            self._sync_work(master)
        self._live = None
        if ckpt_root is not None:  # a log to follow while training (`tail -f OUT.ckpt/log.jsonl`)
            ckpt_root.mkdir(parents=True, exist_ok=True)
            self._live = ckpt_root / "log.jsonl"
            with open(self._live, "w", encoding="utf-8") as fh:  # restarted from the checkpoint's log on resume
                fh.writelines(json.dumps(e) + "\n" for e in state["log"])
        step = int(state["step"])
        resumed_seconds = float(state["seconds"])
        window: list[float] = []
        last_loss = math.nan
        started = time.perf_counter()
        epoch = int(state["epoch"])
        if result.resumed_from is None:
            sampler.set_epoch(epoch)
        micro = 0
        params = [p for g in optimizer.param_groups for p in g["params"]]
        work_params = dict(zip(self._master_names(), self._work.parameters(), strict=True)) \
            if self._work is not master else None
        t_step = time.perf_counter()
        while step < total:
            batches: Iterator[list[int]] = iter(sampler)
            exhausted = True
            for batch in batches:
                exhausted = False
                rows = np.asarray(batch, dtype=np.int64)
                factor = lr_factor(step, total, warmup, args.schedule)
                for g in optimizer.param_groups:
                    g["lr"] = args.lr * factor * g.get("lr_scale", 1.0)
                loss = self._batch_loss(rows) / args.grad_accum
                value = float(loss.detach()) * args.grad_accum
                if not math.isfinite(value):
                    raise self._nonfinite("loss", value, step, epoch, sampler, rows, last_dir)
                loss.backward()
                micro += 1
                state["rows"] += len(rows)
                end_of_epoch = sampler.position >= len(sampler)
                if micro < args.grad_accum and not end_of_epoch:
                    continue
                if micro < args.grad_accum:  # the epoch ended mid-accumulation: mean over the batches it had
                    for p in params:
                        if p.grad is not None:
                            p.grad.mul_(args.grad_accum / micro)
                    if work_params is not None:
                        for p in self._work.parameters():
                            if p.grad is not None:
                                p.grad.mul_(args.grad_accum / micro)
                micro = 0
                if work_params is not None:
                    self._grads_to_master(master, work_params)
                gnorm = (float(torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm))
                         if args.max_grad_norm > 0 else math.nan)
                if args.max_grad_norm > 0 and not math.isfinite(gnorm):
                    raise self._nonfinite("gradient norm", gnorm, step, epoch, sampler, rows, last_dir)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if work_params is not None:
                    self._work.zero_grad(set_to_none=True)
                    self._sync_work(master)
                step += 1
                last_loss = value
                window.append(value)
                now = time.perf_counter()
                state["seconds"] += now - t_step
                if len(window) >= args.log_steps or step == total:
                    self._log(state, {"step": step, "epoch": round(epoch + sampler.position / max(1, len(sampler)), 4),
                                         "loss": float(np.mean(window)), "lr": args.lr * factor,
                                         "grad_norm": gnorm if math.isfinite(gnorm) else None,
                                         "rows_per_s": state["rows"] / max(state["seconds"], 1e-9)})
                    window = []
                if self.progress is not None:
                    rate = (state["seconds"] - resumed_seconds) / max(1, step - (result.resumed_from or 0))
                    self.progress({"step": step, "total": total, "loss": value, "lr": args.lr * factor,
                                   "epoch": epoch, "eta_s": rate * (total - step)})
                if self.evaluator is not None and args.eval_steps and step % args.eval_steps == 0 and step < total:
                    self._evaluate(state, step, best_dir)
                if last_dir is not None and args.save_steps and step % args.save_steps == 0 and step < total:
                    self._checkpoint(last_dir, optimizer, sampler, state, step, epoch, identity)
                t_step = time.perf_counter()
                if step >= total:
                    break
            if step >= total:
                break
            if exhausted and sampler.position == 0:
                raise InputError("the sampler produced no batch; the training data has no usable rows.")
            epoch += 1
            sampler.set_epoch(epoch)
        if self.evaluator is not None and not any(e.get("step") == step and "eval" in e for e in state["log"]):
            self._evaluate(state, step, best_dir)
        if last_dir is not None:
            self._checkpoint(last_dir, optimizer, sampler, state, step, epoch, identity)
        result.steps = step
        result.rows = int(state["rows"])
        result.seconds = float(state["seconds"])
        result.eval_seconds = float(state["eval_seconds"])
        result.final_loss = last_loss
        result.log = list(state["log"])
        result.epochs = round(step * args.grad_accum * args.batch_size / len(self.data), 4)
        result.best_metric = state["best_metric"]
        result.best_step = state["best_step"]
        if state.get("best_metrics") or state.get("last_metrics"):  # the metrics of the model that is returned
            result.metrics = dict(state.get("best_metrics") or state["last_metrics"])
        log.debug(f"trained {step} steps in {time.perf_counter() - started:.1f}s")
        master.eval()
        if self.evaluator is not None and state["best_step"] is not None and state["best_step"] != step:
            if best_dir is not None and (best_dir / "model").is_dir():
                self._load_best(best_dir / "model")
            elif self._best_weights is not None:  # no checkpoint folder: the copy kept in memory
                with torch.no_grad():
                    for name, p in self._encoder_weights().items():
                        p.copy_(self._best_weights[name])
        self.model.reset_runner()  # an inference runner built before training may hold copies of old weights
        if out is not None:
            result.out = os.fspath(out)
            self._save(out, result, force)
            if ckpt_root is not None and not keep:
                _remove_tree(ckpt_root)
        return result

    def _log(self, state: dict[str, Any], entry: dict[str, Any]) -> None:
        state["log"].append(entry)
        if self._live is not None:
            with open(self._live, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(_jsonable(entry)) + "\n")

    # ------------------------------------------------------------------------------------- bf16-pure
    def _master_names(self) -> list[str]:
        return [n for n, _ in self.model.model.named_parameters()]

    def _sync_work(self, master: nn.Module) -> None:
        with torch.no_grad():
            for w, m in zip(self._work.parameters(), master.parameters(), strict=True):
                w.copy_(m)

    @staticmethod
    def _grads_to_master(master: nn.Module, work: Mapping[str, Tensor]) -> None:
        for name, p in master.named_parameters():
            g = work[name].grad
            p.grad = None if g is None else g.float()

    # ----------------------------------------------------------------------------------- evaluation
    def _evaluate(self, state: dict[str, Any], step: int, best_dir: Path | None) -> None:
        assert self.evaluator is not None
        t0 = time.perf_counter()
        modules = [m for m in (self.model.model, getattr(self.model, "dense", None),
                               getattr(self.model, "classifier", None)) if m is not None]
        modes = [m.training for m in modules]
        train_modes = modes[0]
        enc = self.model.with_options(precision="bf16" if self.precision != "fp32" else "fp32")  # eval mode, shared weights
        try:
            metrics = {k: float(v) for k, v in self.evaluator(enc).items()}
        finally:
            for m, mode in zip(modules, modes, strict=True):
                m.train(mode)
        primary = getattr(self.evaluator, "primary", None) or next(iter(metrics))
        if primary not in metrics:
            raise ConfigError(f"the evaluator's primary metric {primary!r} is not among its results {list(metrics)}.")
        self._log(state, {"step": step, "eval": metrics})
        state["last_metrics"] = metrics
        value = metrics[primary]
        if math.isfinite(value) and (state["best_metric"] is None or value > state["best_metric"]):
            state["best_metric"], state["best_step"], state["best_metrics"] = value, step, metrics
            if best_dir is None:
                self._best_weights = {k: p.detach().clone() for k, p in self._encoder_weights().items()}
            else:
                self.model.model.eval()
                try:
                    self.model.save(best_dir / "model", force=True)
                finally:
                    self.model.model.train(train_modes)
        state["eval_seconds"] += time.perf_counter() - t0

    def _load_best(self, folder: Path) -> None:
        from embedstack.neural.transformer import load_weights

        load_weights(self.model.model, folder / "model.safetensors")
        if self.model.dense is not None:
            from embedstack.neural.pooling import Dense

            best = Dense.load_st(folder / "2_Dense")
            self.model.dense.load_state_dict(best.state_dict())

    # ----------------------------------------------------------------------------------- checkpoints
    def _checkpoint(self, last_dir: Path, optimizer: Any, sampler: Any, state: dict[str, Any], step: int,
                    epoch: int, identity: dict[str, Any]) -> None:
        state.update(step=step, epoch=epoch, sampler=sampler.state_dict(), args=asdict(self.args))
        try:
            save_checkpoint(last_dir, weights=self._named_weights(), optimizer=optimizer,
                            trainer_state=_jsonable(state), identity=identity)
        except OSError as exc:
            raise TrainingError(f"could not write the checkpoint for step {step} to {last_dir} ({exc.strerror or exc}); "
                                f"the previous checkpoint there is intact. Free disk space and resume (--resume)."
                                ) from None

    def _nonfinite(self, what: str, value: float, step: int, epoch: int, sampler: Any, rows: np.ndarray,
                   last_dir: Path | None) -> TrainingError:
        source = getattr(self.data, "source", "records")
        first = self.data[int(rows[0])]
        preview = {k: (v[:60] if isinstance(v, str) else v) for k, v in list(first.items())[:3]}
        saved = (f"the last checkpoint ({last_dir}, step {_peek_step(last_dir)}) is intact"
                 if last_dir is not None and read_identity(last_dir) is not None else "no checkpoint was written")
        bad = nonfinite_tensors({k: p.detach() for k, p in self._named_weights().items()})
        return TrainingError(
            f"the {what} became {value} at step {step + 1} (epoch {epoch}, batch {sampler.position} of "
            f"{len(sampler)}: rows {sorted(rows.tolist())[:8]}{'...' if len(rows) > 8 else ''} of {source}, first row "
            f"{preview}){'; weights already non-finite: ' + str(bad[:3]) if bad else ''}. Training stopped; {saved}. "
            f"Lower the learning rate (--lr, now {self.args.lr}), check that row's scores/labels, or use "
            "--precision fp32.")

    # ------------------------------------------------------------------------------------------ save
    def _save(self, out: Any, result: TrainResult, force: bool) -> None:
        args = asdict(self.args)

        def extra(tmp: Path) -> None:
            folder = tmp / "training"
            folder.mkdir()
            with open(folder / "log.jsonl", "w", encoding="utf-8") as fh:
                for entry in result.log:
                    fh.write(json.dumps(entry) + "\n")
            (folder / "args.json").write_text(json.dumps(args, indent=2), encoding="utf-8")
            summary = {k: v for k, v in asdict(result).items() if k not in ("log", "out")}
            summary["pairs_per_second"] = result.pairs_per_second
            summary["loss"] = type(_base_loss(self.loss)).__name__
            summary["data"] = getattr(self.data, "source", "records")
            summary["rows_in_data"] = len(self.data)
            summary.update(self.notes)
            (folder / "result.json").write_text(json.dumps(_jsonable(summary), indent=2), encoding="utf-8")
            plot_loss_curve(result.log, folder / "loss.png")

        self.model.model.eval()
        self.model.save(out, force=force, extra=extra)


def plot_loss_curve(entries: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """The loss per logged step (and each evaluation's metrics on a second axis) as a PNG; None without
    matplotlib (the ``demo`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    losses = [(e["step"], e["loss"]) for e in entries if "loss" in e]
    evals = [(e["step"], e["eval"]) for e in entries if "eval" in e]
    fig, ax = plt.subplots(figsize=(7, 4))
    if losses:
        ax.plot(*zip(*losses, strict=True), color="tab:blue", label="training loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    if evals:
        ax2 = ax.twinx()
        for name in evals[0][1]:
            ax2.plot([s for s, _ in evals], [m.get(name, math.nan) for _, m in evals], marker="o", label=name)
        ax2.set_ylabel("evaluation")
        ax2.legend(loc="center right", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("training")
    fig.tight_layout()
    from embedstack.io import AtomicFile

    with AtomicFile(path) as f:
        fig.savefig(f.tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _peek_step(folder: Path | None) -> Any:
    if folder is None:
        return None
    try:
        return json.loads((folder / "trainer_state.json").read_text(encoding="utf-8")).get("step")
    except (OSError, ValueError):
        return "?"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def _remove_tree(path: Path) -> None:
    import shutil

    if path.is_dir() and all(p.name in ("last", "best", "log.jsonl") for p in path.iterdir()):
        shutil.rmtree(path, ignore_errors=True)  # only what the trainer wrote; anything else stays

