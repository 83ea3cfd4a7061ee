"""Resumable training checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint is one folder written atomically (:func:`embedstack.io.atomic_dir`: a crash, a SIGKILL
or a full disk mid-write leaves the previous checkpoint as it was) and checksummed
(``manifest.json`` lists every file's sha256, checked on load):

* ``weights.safetensors`` — every trainable tensor (transformer, Dense head, loss parameters such as
  the NLI classifier), by module-qualified name;
* ``optimizer.safetensors`` + ``optimizer.json`` — AdamW's per-parameter state (``exp_avg``,
  ``exp_avg_sq``, ``step``) by parameter position, and its hyper-parameter groups;
* ``rng.safetensors`` — torch's CPU generator state (dropout masks resume where they stopped);
* ``trainer_state.json`` — step, epoch, the sampler's position, the best metric so far, the log.

``torch.save``/``torch.load`` (pickle) are never used: a checkpoint cannot run code when loaded.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from embedstack._extras import require

torch = require("torch", "torch", "training checkpoints")

from embedstack.errors import FormatError, ModelMismatch  # noqa: E402
from embedstack.io import atomic_dir  # noqa: E402

__all__ = ["CHECKPOINT", "save_checkpoint", "load_checkpoint", "read_identity", "nonfinite_tensors"]

CHECKPOINT = "training checkpoint"
FORMAT_VERSION = 1


def nonfinite_tensors(tensors: Mapping[str, Any]) -> list[str]:
    """Names of floating tensors holding NaN or inf (a checkpoint is never written with one)."""
    return [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _optimizer_tensors(optimizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().contiguous().clone()
            else:
                scalars[f"{idx}.{name}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _restore_optimizer(optimizer: Any, tensors: Mapping[str, Any], meta: Mapping[str, Any], where: Path) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    current = optimizer.state_dict()
    if [len(g["params"]) for g in current["param_groups"]] != [len(g["params"]) for g in groups]:
        raise ModelMismatch(f"{where}: the optimizer state holds parameter groups of sizes "
                            f"{[len(g['params']) for g in groups]}, this model has "
                            f"{[len(g['params']) for g in current['param_groups']]}; it is a checkpoint of another model.")
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(path: str | os.PathLike[str], *, weights: Mapping[str, Any], optimizer: Any,
                    trainer_state: Mapping[str, Any], identity: Mapping[str, Any],
                    extra: Callable[[Path], None] | None = None) -> Path:
    """Write a checkpoint folder atomically; refuses non-finite weights (the old checkpoint stays).

    Args:
        path: the checkpoint folder (replaced only if it is a checkpoint or empty).
        weights: ``{name: tensor}`` of everything trained.
        optimizer: a torch optimizer.
        trainer_state: JSON-serialisable state (step, epoch, sampler, log ...).
        identity: what the checkpoint belongs to (model config digest, loss, data fingerprint);
            :func:`load_checkpoint` compares it before restoring anything.
        extra: called with the temporary folder to add files of its own.
    """
    from safetensors.torch import save_file

    from embedstack.io.manifest import file_checksums

    bad = nonfinite_tensors(weights)
    if bad:
        raise FormatError(f"refusing to write a checkpoint with non-finite weights ({bad[:3]}); "
                          f"the previous checkpoint at {path} is kept.")
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    with atomic_dir(path, kind=CHECKPOINT) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / "weights.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(opt_meta), encoding="utf-8")
        save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1, allow_nan=False), encoding="utf-8")
        (tmp / "identity.json").write_text(json.dumps(identity, indent=1, sort_keys=True), encoding="utf-8")
        if extra is not None:
            extra(tmp)
        manifest = {"type": CHECKPOINT, "format_version": FORMAT_VERSION,
                    "files": file_checksums(tmp, exclude=("manifest.json",))}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return Path(path)


def read_identity(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The identity recorded in checkpoint ``path``, or None when there is no checkpoint there."""
    p = Path(path) / "identity.json"
    if not p.is_file():
        return None
    from embedstack.data._io import read_json

    data = read_json(p, hint="delete the checkpoint folder to start over")
    return data if isinstance(data, dict) else None


def _describe(identity: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={identity[k]}" for k in ("model", "loss", "data") if k in identity)


def load_checkpoint(path: str | os.PathLike[str], *, identity: Mapping[str, Any], weights: Mapping[str, Any],
                    optimizer: Any) -> dict[str, Any]:
    """Restore ``weights`` (in place), ``optimizer`` and torch's RNG from a checkpoint; return its trainer state.

    Raises:
        ModelMismatch: the checkpoint belongs to another model, loss or dataset (names both).
        FormatError: a file is missing, corrupt (checksum) or does not fit the model.
    """
    from safetensors.torch import load_file

    from embedstack.data._io import read_json
    from embedstack.io.manifest import verify_files

    folder = Path(path)
    manifest = read_json(folder / "manifest.json", hint="delete the checkpoint folder to start over")
    if not isinstance(manifest, dict) or manifest.get("type") != CHECKPOINT:
        raise FormatError(f"{folder} is not a training checkpoint (no checkpoint manifest.json).")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise FormatError(f"{folder} was written by a newer embedstack (checkpoint format "
                          f"{manifest.get('format_version')}); upgrade embedstack to resume it.")
    verify_files(folder, manifest)
    saved = read_identity(folder) or {}
    diff = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
    if diff:
        raise ModelMismatch(
            f"cannot resume from {folder}: it belongs to another run ({_describe(saved)}; differs in {diff}) than "
            f"this one ({_describe(identity)}). Resume with the same model, loss and data, or start afresh in "
            "another output folder (or delete the checkpoint folder).")
    tensors = load_file(str(folder / "weights.safetensors"))
    missing = sorted(set(weights) - set(tensors))
    if missing:
        raise FormatError(f"{folder}: the checkpoint lacks {len(missing)} weights this model has, e.g. {missing[:3]}.")
    with torch.no_grad():
        for name, param in weights.items():
            value = tensors[name]
            if tuple(value.shape) != tuple(param.shape):
                raise FormatError(f"{folder}: weight {name!r} has shape {tuple(value.shape)}, the model's is "
                                  f"{tuple(param.shape)}.")
            param.copy_(value.to(param.dtype))
    _restore_optimizer(optimizer, load_file(str(folder / "optimizer.safetensors")),
                       read_json(folder / "optimizer.json"), folder)
    torch.set_rng_state(load_file(str(folder / "rng.safetensors"))["torch"])
    state = read_json(folder / "trainer_state.json")
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise FormatError(f"{folder / 'trainer_state.json'} has no integer 'step'.")
    best = state.get("best_metric")
    if best is not None and not math.isfinite(float(best)):
        state["best_metric"] = None
    return state
