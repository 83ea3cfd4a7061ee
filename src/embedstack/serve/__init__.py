"""``embedstack serve``: an embedding, rerank and search service (the ``serve`` extra: FastAPI + uvicorn).

``create_app(ServeConfig(...))`` builds the app (no globals); :func:`run` serves it with uvicorn.
Importing this package is light; FastAPI is imported when an app is built.
"""

from __future__ import annotations

from typing import Any

from embedstack.serve.config import Limits, ServeConfig, hash_key, load_config

__all__ = ["ServeConfig", "Limits", "load_config", "hash_key", "create_app", "run"]


def create_app(config: ServeConfig, **kwargs: Any) -> Any:
    """The ASGI app for ``config`` (see :func:`embedstack.serve.app.create_app`)."""
    from embedstack.serve.app import create_app as _create

    return _create(config, **kwargs)


def run(config: ServeConfig, *, log_level: str = "info", graceful_s: float = 30.0) -> None:
    """Serve ``config`` with uvicorn until SIGINT/SIGTERM; requests in flight finish first (up to ``graceful_s``)."""
    from embedstack._extras import require

    uvicorn = require("uvicorn", "serve", "embedstack serve")
    from embedstack.serve.app import Server

    server = Server(config)
    server.load()  # a model or index that cannot load is reported here, before the port is bound
    app = create_app(config, server=server)
    uvicorn.run(app, host=config.host, port=int(config.port), log_level=log_level, access_log=False,
                timeout_graceful_shutdown=int(graceful_s), lifespan="on")
