"""The ``embedstack`` command-line interface (typer). One module per command group."""

from embedstack.cli.app import app, main

__all__ = ["app", "main"]
