"""Training cross-encoders with the same trainer as bi-encoders.

:class:`CrossEncoderTrainer` is :class:`~embedstack.training.trainer.SentenceTrainer` with a
different forward: every row's (query, candidate) pairs go through
:meth:`~embedstack.neural.cross_encoder.CrossEncoder.forward_pairs` as one length-pieced call, and
the loss (:mod:`embedstack.training.ce_losses`) reads the logits. Everything else is shared: AdamW
with warmup and decay, accumulation, clipping, bf16 / bf16-pure, length-grouped batches, evaluation
(:class:`~embedstack.training.evaluators.RerankEvaluator`) and best-checkpoint selection, atomic
resumable checkpoints, the JSONL log and the loss curve.

Data (:class:`~embedstack.training.data.TrainingData`):

* ``bce``: ``(anchor, positive, label)`` labelled pairs, or ``(anchor, positive, negative_1..k)``
  groups, which :func:`groups_to_labelled_pairs` turns into labelled pairs;
* ``listwise``: ``(anchor, positive, negative_1..k)`` groups (mined hard negatives), optionally with a
  teacher (a cross-encoder, or a bi-encoder through :class:`~embedstack.training.ranking.BiEncoderTeacher`)
  whose scores of each group, computed once before training, add a KL term to the loss
  (:class:`~embedstack.training.ce_losses.ListwiseSoftmaxLoss`, as ColBERT and SPLADE training do);
* ``regression``: ``(anchor, positive, score)`` with scores in [0, 1].

Example:
    >>> from embedstack.training.data import TrainingData
    >>> d = TrainingData.from_columns({"anchor": ["q"], "positive": ["p"], "negative_1": ["n"]})
    >>> groups_to_labelled_pairs(d).column("label")
    [1, 0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from embedstack._extras import require

torch = require("torch", "torch", "cross-encoder training")

from torch import Tensor, nn  # noqa: E402

from embedstack.errors import ConfigError  # noqa: E402
from embedstack.training.trainer import SentenceTrainer  # noqa: E402

__all__ = ["CrossEncoderTrainer", "groups_to_labelled_pairs"]


def groups_to_labelled_pairs(data: Any) -> Any:
    """``(anchor, positive, negative_1..k)`` rows → ``(anchor, positive, label)`` pairs: 1 then k zeros per row."""
    from embedstack.training.data import TrainingData

    negs = sorted((c for c in data.columns if c.startswith("negative_")), key=lambda c: int(c.split("_")[1]))
    if "anchor" not in data.columns or "positive" not in data.columns or not negs:
        raise ConfigError(f"labelled pairs come from (anchor, positive, negative_1..k) rows; the data has "
                          f"{list(data.columns)}.")
    a, p, y = [], [], []
    columns = [data.column("anchor"), data.column("positive"), *[data.column(c) for c in negs]]
    for row in zip(*columns, strict=True):
        for j, text in enumerate(row[1:]):
            a.append(row[0])
            p.append(text)
            y.append(1 if j == 0 else 0)
    return TrainingData.from_columns({"anchor": a, "positive": p, "label": y},
                                     source=f"{getattr(data, 'source', 'records')} as labelled pairs")


class CrossEncoderTrainer(SentenceTrainer):
    """Fine-tune a :class:`~embedstack.neural.cross_encoder.CrossEncoder` (trained in place).

    Args:
        model: The cross-encoder (``CrossEncoder.from_pretrained_encoder("all-MiniLM-L6-v2")`` starts
            one from a bi-encoder's weights).
        loss: ``bce``, ``listwise`` or ``regression`` (:data:`~embedstack.training.ce_losses.CE_LOSSES`),
            or a loss module.
        data, args, evaluator, progress: As :class:`~embedstack.training.trainer.SentenceTrainer`;
            ``args.max_seq_length`` caps the pair length (query kept whole, document cut).
        teacher: ``listwise`` only: a scorer of pairs (``predict(pairs, activation=False)``); its scores of each
            group are the target of the listwise loss's KL term (its ``distill_weight``, ``teacher_temperature``).
    """

    takes_teacher = True

    def __init__(self, model: Any, loss: nn.Module | str, data: Any, **kwargs: Any) -> None:
        super().__init__(model, loss, data, **kwargs)
        from embedstack.training.ce_losses import ListwiseSoftmaxLoss

        if self.teacher is not None and not isinstance(self.loss, ListwiseSoftmaxLoss):
            raise ConfigError(f"distillation from a teacher trains the listwise loss on (anchor, positive, "
                              f"negative_1..k) groups; this run's loss is {type(self.loss).__name__}.",
                              fix={"loss": "listwise"})

    def _check_model(self, model: Any) -> None:
        from embedstack.neural.cross_encoder import CrossEncoder

        if not isinstance(model, CrossEncoder):
            raise ConfigError(f"CrossEncoderTrainer trains a CrossEncoder (CrossEncoder.from_pretrained_encoder(...) "
                              f"or a cross-encoder folder); got {type(model).__name__}.")

    def _make_loss(self, name: str) -> nn.Module:
        from embedstack.training.ce_losses import CE_LOSSES

        if name not in CE_LOSSES:
            from embedstack.models import did_you_mean

            raise ConfigError(f"Unknown cross-encoder loss {name!r}{did_you_mean(name, list(CE_LOSSES))}; use one of "
                              f"{list(CE_LOSSES)}.", param=("loss", "loss"))
        return CE_LOSSES[name]()

    # ------------------------------------------------------------------------------------------- setup
    def _tokenize_columns(self, enc: Any) -> None:
        anchors = self.data.column("anchor")
        candidates = ["positive", *([f"negative_{i + 1}" for i in range(self.n_negatives)]
                                    if "negative" in self.text_columns else [])]
        self._ids: dict[str, list[np.ndarray]] = {}
        self._types: dict[str, list[np.ndarray]] = {}
        for col in candidates:
            ids: list[np.ndarray] = []
            types: list[np.ndarray] = []
            values = self.data.column(col)
            for i in range(0, len(values), 8192):
                a, t, _ = enc._tokenize_pairs(list(zip(anchors[i:i + 8192], values[i:i + 8192], strict=True)), windows=False)
                ids += a
                types += t
            self._ids[col], self._types[col] = ids, types
        self._candidates = candidates
        self._lengths = np.zeros(len(self.data), dtype=np.int64)
        for ids in self._ids.values():
            self._lengths += np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        if self.label_column is not None:
            values = np.asarray(self.data.column(self.label_column))
            self._labels = torch.from_numpy(values.astype(np.float32))

    def _is_head(self, name: str) -> bool:
        """The classifier and BERT's pooler are the new head (``TrainingArgs.head_lr_scale``)."""
        return name.startswith(("classifier.", "model.pooler.", "loss."))

    def _named_weights(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {f"model.{k}": p for k, p in self.model.model.named_parameters()}
        out.update({f"classifier.{k}": p for k, p in self.model.classifier.named_parameters()})
        out.update({f"loss.{k}": p for k, p in self.loss.named_parameters()})
        return out

    # ----------------------------------------------------------------------------------------- forward
    def _batch_loss(self, rows: np.ndarray) -> Tensor:
        from embedstack.training.ce_losses import ListwiseSoftmaxLoss

        ids = [self._ids[c][r] for r in rows for c in self._candidates]  # row-major: each row's group together
        types = [self._types[c][r] for r in rows for c in self._candidates]
        with self._autocast():
            logits = self.model.forward_pairs(ids, types, model=self._work, min_rows=self.args.min_piece_rows)
        z = logits[:, 0].float().reshape(len(rows), len(self._candidates))  # (B, 1 + k)
        if isinstance(self.loss, ListwiseSoftmaxLoss):
            return self.loss(z, self._teacher_for(rows))
        if self.label_column is None:
            raise ConfigError(f"{type(self.loss).__name__} reads a label or score column; the data has none.")
        return self.loss(z[:, 0], self._labels[torch.from_numpy(np.asarray(rows))])

    def _load_best(self, folder: Any) -> None:
        from embedstack.neural.cross_encoder import CrossEncoder

        best = CrossEncoder.from_folder(folder, verify=False)
        with torch.no_grad():
            for p, q in zip(self.model.model.parameters(), best.model.parameters(), strict=True):
                p.copy_(q)
            self.model.classifier.load_state_dict(best.classifier.state_dict())
