"""The Transformer era (needs the ``torch`` extra): our BERT encoder, sentence bi-encoders, MLM pretraining.

Modules import torch, so nothing here is imported by ``import embedstack``; use
:func:`embedstack.load` or import the submodules directly:

* :mod:`~embedstack.neural.config` — ``BertConfig`` from/to ``config.json``.
* :mod:`~embedstack.neural.transformer` — the BERT encoder and safetensors weight mapping.
* :mod:`~embedstack.neural.tokenizer` — WordPiece via the Rust ``tokenizers`` library.
* :mod:`~embedstack.neural.pooling` — cls / mean / max pooling, Dense.
* :mod:`~embedstack.neural.sentence` — ``SentenceEncoder`` (a DenseEncoder).
* :mod:`~embedstack.neural.hub` — model resolution (path → cache → package → hub).
* :mod:`~embedstack.neural.onnx`, :mod:`~embedstack.neural.quantize` — fast CPU inference.
* :mod:`~embedstack.neural.mlm` — the masked-LM objective and pretraining loop.
* :mod:`~embedstack.neural.elmo` — ELMo: char CNN + biLSTM language model, per-layer word vectors (``elmo:PATH``).
* :mod:`~embedstack.neural.specs` — ``NAME@option=value`` model SPECs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load", "SentenceEncoder"]


def load(name_or_path: str, **options: Any) -> Any:
    """Load a transformer sentence encoder; see :func:`embedstack.neural.specs.load`."""
    from embedstack.neural.specs import load as _load

    return _load(name_or_path, **options)


def __getattr__(name: str) -> Any:
    if name == "SentenceEncoder":
        from embedstack.neural.sentence import SentenceEncoder

        return SentenceEncoder
    raise AttributeError(f"module 'embedstack.neural' has no attribute {name!r}")
