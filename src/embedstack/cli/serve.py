"""``embedstack serve``: the embedding / rerank / search service and its web UI.

    embedstack serve --model minilm=all-MiniLM-L6-v2 --rerank ce=recipe:minilm-scifact-ce \
        --index bm25=idx/scifact-bm25 --index dense=idx/scifact-minilm --data-dir served/

Binds 127.0.0.1 unless ``--host`` says otherwise. ``--config FILE.toml|json`` gives the same settings in a
file (flags add to it and win). API keys: ``--api-key-file FILE`` (one per line; only their SHA-256 is kept).
"""

from __future__ import annotations

from typing import Any

import typer

__all__ = ["register"]


def serve_cmd(
    model: list[str] = typer.Option(None, "--model", "-m", help="NAME=SPEC of a model to serve (repeatable)."),
    rerank: list[str] = typer.Option(None, "--rerank", help="NAME=SPEC of a cross-encoder to serve (repeatable)."),
    index: list[str] = typer.Option(None, "--index", help="NAME=FOLDER of a saved index to serve read-only (repeatable)."),
    data_dir: str = typer.Option(None, "--data-dir", help="Folder for indexes created through the API (+ aliases)."),
    config: str = typer.Option(None, "--config", help="A TOML or JSON config file."),
    host: str = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Port (default 8000)."),
    api_key_file: str = typer.Option(None, "--api-key-file", help="File of API keys, one per line."),
    max_inputs: int = typer.Option(None, "--max-inputs", help="Inputs per request at most."),
    max_batch_tokens: int = typer.Option(None, "--max-batch-tokens", help="Token budget of a merged batch."),
    max_wait_ms: float = typer.Option(None, "--max-wait-ms", help="Longest wait for a batch to fill, under load."),
    max_queue: int = typer.Option(None, "--max-queue", help="Inputs queued per model before 503."),
    truncate: bool = typer.Option(None, "--truncate/--no-truncate", help="Cut over-long inputs instead of refusing."),
    cache_size: int = typer.Option(None, "--cache-size", help="Query embeddings cached (0: off)."),
    no_ui: bool = typer.Option(False, "--no-ui", help="Do not serve the web UI."),
    quiet: bool = typer.Option(False, "--quiet", help="Warnings and errors only."),
) -> None:
    """Serve models, rerankers and indexes over HTTP (OpenAI-compatible embeddings, rerank, search, a web UI)."""
    from dataclasses import replace

    from embedstack.cli._common import err_console
    from embedstack.errors import ConfigError
    from embedstack.serve import run
    from embedstack.serve.config import ServeConfig, load_config, parse_named, read_key_file

    cfg = load_config(config) if config else ServeConfig()
    models = {**cfg.models, **parse_named(model, "--model")}
    rerankers = {**cfg.rerankers, **parse_named(rerank, "--rerank")}
    indexes = {**cfg.indexes, **parse_named(index, "--index")}
    limits = cfg.limits
    changes: dict[str, Any] = {k: v for k, v in {"max_inputs": max_inputs, "max_batch_tokens": max_batch_tokens,
                                  "max_wait_ms": max_wait_ms, "max_queue": max_queue, "truncate": truncate,
                                  "cache_size": cache_size}.items() if v is not None}
    if changes:
        limits = replace(limits, **changes)
    keys = list(cfg.api_key_hashes) + (read_key_file(api_key_file) if api_key_file else [])
    cfg = ServeConfig(models=models, rerankers=rerankers, indexes=indexes, data_dir=data_dir or cfg.data_dir,
                      host=host or cfg.host, port=port or cfg.port, api_key_hashes=keys, limits=limits,
                      ui=cfg.ui and not no_ui, checkpoint_every=cfg.checkpoint_every)
    if not (cfg.models or cfg.rerankers or cfg.indexes or cfg.data_dir):
        raise ConfigError("nothing to serve: give --model NAME=SPEC, --rerank, --index NAME=FOLDER or --data-dir.",
                          param=("model", "--model"))
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.api_key_hashes:
        err_console.print(f"[yellow]warning:[/] listening on {cfg.host} without API keys (--api-key-file).")
    if not quiet:
        err_console.print(f"embedstack serve: http://{cfg.host}:{cfg.port}  models {sorted(cfg.models)} rerankers "
                          f"{sorted(cfg.rerankers)} indexes {sorted(cfg.indexes)} (loading models ...)")
    run(cfg, log_level="warning" if quiet else "info")


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the root app."""
    app.command("serve")(serve_cmd)
