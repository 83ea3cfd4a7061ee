"""Token embeddings → one sentence vector: pooling (cls / mean / max / mean_sqrt_len), Dense, Normalize.

Each piece reads and writes the sentence-transformers config of the same module
(``1_Pooling/config.json``, ``2_Dense/config.json`` + ``model.safetensors``), so folders move between
the two libraries.

Example:
    >>> import torch
    >>> tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])  # (B=1, T=3, C=2)
    >>> mask = torch.tensor([[1, 1, 0]])  # the third token is padding
    >>> Pooling("mean")(tokens, mask).tolist(), Pooling("max")(tokens, mask).tolist()
    ([[2.0, 3.0]], [[3.0, 4.0]])
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from embedstack._extras import require

torch = require("torch", "torch", "sentence pooling")
from torch import Tensor, nn  # noqa: E402

from embedstack.errors import ConfigError, FormatError  # noqa: E402

__all__ = ["POOLING_MODES", "Pooling", "Dense", "ScalarMix", "check_pooling"]

POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len")
_ST_KEYS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "max": "pooling_mode_max_tokens",
    "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
}
_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "torch.nn.modules.activation.Tanh": nn.Tanh,
    "torch.nn.modules.linear.Identity": nn.Identity,
    "torch.nn.modules.activation.ReLU": nn.ReLU,
    "torch.nn.modules.activation.GELU": nn.GELU,
}


def check_pooling(mode: str) -> str:
    """Return ``mode`` if it is a known pooling mode, else raise ConfigError."""
    if mode not in POOLING_MODES:
        raise ConfigError(f"Unknown pooling mode {mode!r}; use one of {list(POOLING_MODES)}.")
    return mode


class Pooling(nn.Module):
    """Pool token embeddings ``(B, T, C)`` under an attention mask ``(B, T)`` into ``(B, C)``.

    Args:
        mode: ``cls`` (first token), ``mean`` (average of real tokens), ``max`` (feature-wise max over
            real tokens) or ``mean_sqrt_len`` (sum divided by the square root of the length).
    """

    def __init__(self, mode: str = "mean") -> None:
        super().__init__()
        self.mode = check_pooling(mode)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        if self.mode == "cls":
            return tokens[:, 0]  # (B, C)
        m = mask.to(tokens.dtype).unsqueeze(-1)  # (B, T, 1)
        if self.mode == "max":
            return tokens.masked_fill(m == 0, -1e9).amax(dim=1)
        summed = (tokens * m).sum(dim=1)  # (B, C)
        count = m.sum(dim=1).clamp(min=1e-9)  # (B, 1)
        return summed / (count.sqrt() if self.mode == "mean_sqrt_len" else count)

    # sentence-transformers config ------------------------------------------------------------------
    @classmethod
    def from_st_config(cls, path: str | os.PathLike[str]) -> Pooling:
        data = _read_json(Path(path))
        if "pooling_mode" in data:  # sentence-transformers >= 5.x single key
            mode = data["pooling_mode"]
            mode = {"mean_sqrt_len_tokens": "mean_sqrt_len"}.get(mode, mode)
            if isinstance(mode, list):
                raise ConfigError(f"{path}: concatenated pooling modes {mode} are not supported; pick one.")
            return cls(mode)
        active = [m for m, key in _ST_KEYS.items() if data.get(key)]
        others = [k for k, v in data.items() if k.startswith("pooling_mode_") and v and k not in _ST_KEYS.values()]
        if others or len(active) != 1:
            raise ConfigError(
                f"{path}: pooling {active + others} is not supported; exactly one of {list(POOLING_MODES)} is."
            )
        return cls(active[0])

    def st_config(self, dim: int) -> dict[str, Any]:
        cfg: dict[str, Any] = {"word_embedding_dimension": dim}
        for mode, key in _ST_KEYS.items():
            cfg[key] = mode == self.mode
        cfg["pooling_mode_weightedmean_tokens"] = False
        cfg["pooling_mode_lasttoken"] = False
        cfg["include_prompt"] = True
        return cfg


class ScalarMix(nn.Module):
    """ELMo's task-specific layer mix: ``gamma * sum_j softmax(w)_j * h_j`` over ``n_layers`` stacked layers.

    Weights start equal (the plain average) and ``gamma`` at 1; both are learned with the task that uses
    the mix (Peters et al. 2018, eq. 1).

    Example:
        >>> mix = ScalarMix(3)
        >>> mix(torch.stack([torch.zeros(2), torch.ones(2), 2 * torch.ones(2)])).tolist()
        [1.0, 1.0]
    """

    def __init__(self, n_layers: int) -> None:
        super().__init__()
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ConfigError(f"ScalarMix needs n_layers >= 1. Got {n_layers!r} instead.")
        self.n_layers = n_layers
        self.weights = nn.Parameter(torch.zeros(n_layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, layers: Tensor) -> Tensor:
        """``layers``: ``(n_layers, ...)`` → the mix with the trailing shape ``(...)``."""
        if layers.shape[0] != self.n_layers:
            raise ConfigError(f"ScalarMix was built for {self.n_layers} layers but got {layers.shape[0]}.")
        s = torch.softmax(self.weights, dim=0).to(layers.dtype)  # (L,)
        return self.gamma.to(layers.dtype) * torch.tensordot(s, layers, dims=1)  # (...)


class Dense(nn.Module):
    """A linear projection with an activation (sentence-transformers' ``Dense`` module)."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 activation: str = "torch.nn.modules.activation.Tanh") -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"Unsupported Dense activation {activation!r}; use one of {sorted(_ACTIVATIONS)}.")
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation_name = activation
        self.activation = _ACTIVATIONS[activation]()

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.linear(x))

    @classmethod
    def load_st(cls, folder: str | os.PathLike[str]) -> Dense:
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg = _read_json(folder / "config.json")
        dense = cls(int(cfg["in_features"]), int(cfg["out_features"]), bias=bool(cfg.get("bias", True)),
                    activation=cfg.get("activation_function", "torch.nn.modules.activation.Tanh"))
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise FormatError(f"Missing weights file {weights} for the Dense module (pytorch_model.bin is not read).")
        state = load_file(str(weights))
        try:
            dense.load_state_dict(state)
        except RuntimeError as exc:
            raise FormatError(f"{weights} does not match {folder / 'config.json'}: {exc}") from None
        return dense

    def save_st(self, folder: str | os.PathLike[str]) -> None:
        """Write the sentence-transformers ``Dense`` module files (each atomically) into ``folder``."""
        from safetensors.torch import save

        from embedstack.io import atomic_write_bytes, atomic_write_text

        folder = Path(folder)
        cfg = {"in_features": self.linear.in_features, "out_features": self.linear.out_features,
               "bias": self.linear.bias is not None, "activation_function": self.activation_name}
        atomic_write_text(folder / "config.json", json.dumps(cfg, indent=2))
        atomic_write_bytes(folder / "model.safetensors",
                           save({k: v.contiguous() for k, v in self.state_dict().items()}, metadata={"format": "pt"}))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FormatError(f"Missing {path}; the sentence-transformers folder is incomplete.")
    from embedstack.data._io import read_json

    data = read_json(path, hint="re-save or re-download the model")
    if not isinstance(data, dict):
        raise FormatError(f"{path} must hold a JSON object.")
    return data
