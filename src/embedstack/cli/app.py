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

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click Context, or click's (typer versions differ)
        pending = getattr(ctx, "_protected_args", None)  # click >= 8.2 (the public name is deprecated there)
        if pending is None:
            pending = getattr(ctx, "protected_args", [])
        flags = _flags_of(self, ctx, [*pending, *ctx.args])
        try:
            return super().invoke(ctx)
        except EmbedstackError as exc:
            from embedstack.cli._common import err_console

            # hints name this command's flags (`--split train`), never Python keywords
            msg = " ".join(exc.message_for(flags).split())  # one line, whatever the message's own line breaks
            err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {msg}", highlight=False, soft_wrap=True)
            raise SystemExit(2) from None
        except KeyboardInterrupt:  # Ctrl-C: one line (outputs are atomic, so nothing half-written is left)
            from embedstack.cli._common import err_console

            err_console.print("[bold red]interrupted[/] (Ctrl-C): outputs not yet complete were not written; "
                              "files that existed are unchanged.", highlight=False, soft_wrap=True)
            raise SystemExit(130) from None
        except _usage_errors() as exc:  # a typo'd option, a missing argument: one line too, not a boxed panel
            if type(exc).__name__ == "NoArgsIsHelpError":  # `embedstack index` alone shows the group's help
                raise
            from embedstack.cli._common import err_console

            usage: Any = exc  # click's UsageError or typer's vendored copy: both have .ctx and .format_message()
            where = usage.ctx.command_path if getattr(usage, "ctx", None) is not None else "embedstack"
            from rich.markup import escape

            msg = " ".join(usage.format_message().split())
            msg = msg if msg.endswith((".", "?", "!")) else msg + "."
            err_console.print(f"[bold red]error:[/] UsageError: {escape(msg)} See `{where} --help`.", highlight=False,
                              soft_wrap=True)
            raise SystemExit(2) from None


def _usage_errors() -> tuple[type[Exception], ...]:
    """click's UsageError, and typer's vendored copy where typer ships one (the one its parser raises)."""
    kinds: list[type[Exception]] = [click.UsageError]
    try:
        from typer._click.exceptions import UsageError as TyperUsageError
    except ImportError:  # pragma: no cover - typer versions that use click itself
        pass
    else:
        kinds.append(TyperUsageError)
    return tuple(kinds)


def _flags_of(group: Any, ctx: Any, args: list[str]) -> dict[str, str]:
    """Python keyword → long flag of every option of the command ``args`` invokes (``{"split": "--split"}``)."""
    cmd: Any = group
    args = list(args)
    while cmd is not None and callable(getattr(cmd, "get_command", None)):  # a group (typer may vendor click)
        name = next((a for a in args if not a.startswith("-")), None)
        if name is None:
            return {}
        args = args[args.index(name) + 1:]
        cmd = cmd.get_command(ctx, name)
    if cmd is None:
        return {}
    flags: dict[str, str] = {}
    for p in cmd.params:
        if getattr(p, "param_type_name", "") == "option" and p.name:
            longs = [o for o in p.opts if o.startswith("--")]
            flags[p.name] = longs[0] if longs else p.opts[0]
    return flags


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
    from embedstack.cli._common import route_warnings

    route_warnings()


def _register() -> None:
    from embedstack.cli import commands

    for mod in commands.modules():
        mod.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    app()
