"""The root typer app. Command groups register themselves via :mod:`embedstack.cli.commands`.

Command modules import the library lazily inside each command so ``embedstack --help`` is fast.
"""

from __future__ import annotations

from typing import Any

import click
import typer
from typer.core import TyperGroup

from embedstack import __version__
from embedstack.errors import EmbedstackError


class _ErrorGroup(TyperGroup):
    """Root command group: user-facing errors become one red line and exit status 2, never a traceback.

    Catching here (not in ``Typer.__call__``) means ``typer.testing.CliRunner`` sees the same behaviour.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EmbedstackError as exc:
            from embedstack.cli._common import err_console

            msg = " ".join(str(exc).split())  # one line, whatever the message's own line breaks
            err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {msg}", highlight=False, soft_wrap=True)
            raise SystemExit(2) from None


app = typer.Typer(
    cls=_ErrorGroup,
    name="embedstack",
    help="The whole history of text embeddings: counting, static vectors, transformers, retrieval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """embedstack command line."""


def _register() -> None:
    from embedstack.cli import commands

    for mod in commands.modules():
        mod.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    app()
