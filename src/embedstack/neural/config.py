"""The BERT configuration: one dataclass, read from and written to a Hugging Face ``config.json``.

Example:
    >>> cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                  intermediate_size=64)
    >>> cfg.head_dim
    8
    >>> BertConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from embedstack.errors import ConfigError, FormatError

__all__ = ["BertConfig"]

_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
_POSITIONS = ("absolute", "sinusoidal")


@dataclass(frozen=True)
class BertConfig:
    """Hyper-parameters of a BERT-family encoder (the fields of Hugging Face's ``BertConfig``).

    Args:
        vocab_size: Number of WordPiece ids.
        hidden_size: Width of every layer (``d_model``).
        num_hidden_layers: Number of transformer blocks.
        num_attention_heads: Heads per attention layer; must divide ``hidden_size``.
        intermediate_size: Width of the feed-forward layer (usually ``4 * hidden_size``).
        hidden_act: ``gelu`` (exact erf), ``gelu_new``/``gelu_pytorch_tanh`` (tanh approximation) or ``relu``.
        max_position_embeddings: Longest sequence the position table covers.
        type_vocab_size: Number of segment (token type) ids.
        layer_norm_eps: LayerNorm epsilon.
        hidden_dropout_prob: Dropout after embeddings and every residual branch (training only).
        attention_probs_dropout_prob: Dropout on attention weights (training only).
        initializer_range: Std of the normal initialisation used when training from scratch.
        pad_token_id: Id of ``[PAD]``.
        position_embedding_type: ``absolute`` (learned table, as BERT) or ``sinusoidal`` (fixed, as the
            original Transformer; no position weights are learned or stored).
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"BertConfig.{name} must be a positive integer. Got {value!r} instead.")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}); pick e.g. heads={_divisor(self.hidden_size)}."
            )
        for name in ("hidden_act", "position_embedding_type"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"BertConfig.{name} must be a string. Got {getattr(self, name)!r} instead.")
        for name in ("layer_norm_eps", "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int | float):
                raise ConfigError(f"BertConfig.{name} must be a number. Got {getattr(self, name)!r} instead.")
        if not isinstance(self.pad_token_id, int) or isinstance(self.pad_token_id, bool) \
                or not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"BertConfig.pad_token_id must be an integer in [0, vocab_size={self.vocab_size}). "
                              f"Got {self.pad_token_id!r} instead.")
        if self.hidden_act not in _ACTIVATIONS:
            raise ConfigError(f"Unsupported hidden_act {self.hidden_act!r}; use one of {list(_ACTIVATIONS)}.")
        if self.position_embedding_type not in _POSITIONS:
            raise ConfigError(
                f"Unsupported position_embedding_type {self.position_embedding_type!r}; "
                f"use one of {list(_POSITIONS)}."
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, name)
            if not 0.0 <= float(p) < 1.0:
                raise ConfigError(f"BertConfig.{name} must be in [0, 1). Got {p!r} instead.")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BertConfig:
        """Build from a ``config.json`` dict; unknown Hugging Face keys are ignored."""
        model_type = data.get("model_type", "bert")
        if model_type not in ("bert", "embedstack-bert"):
            raise ConfigError(
                f"config.json describes a {model_type!r} model; only BERT-family encoders (model_type "
                "'bert') are implemented here."
            )
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        return cls(**kwargs)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike[str]) -> BertConfig:
        """Read a Hugging Face ``config.json``."""
        path = Path(path)
        if not path.is_file():
            raise FormatError(f"Missing {path}: a BERT model folder needs its config.json.")
        from embedstack.data._io import read_json

        data = read_json(path, hint="re-save or re-download the model")
        if not isinstance(data, dict):
            raise FormatError(f"{path} must hold a JSON object (the model's sizes); re-save or re-download the model.")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """A ``config.json`` dict that Hugging Face ``transformers`` reads as a ``BertModel``."""
        out: dict[str, Any] = {"architectures": ["BertModel"], "model_type": "bert"}
        out.update(asdict(self))
        if self.position_embedding_type == "sinusoidal":
            # transformers has no sinusoidal BERT: mark it ours so nobody loads it as plain BERT silently.
            out["model_type"] = "embedstack-bert"
            out["architectures"] = ["EmbedstackBertModel"]
        return out


def _divisor(n: int) -> int:
    for h in (12, 8, 6, 4, 2, 1):
        if n % h == 0:
            return h
    return 1
