"""The ``streamlog`` typer application: the top level with its global options, and the
one place where failures become a single ``streamlog: error: ...`` line and an exit code.

Exit codes are those of the error classes (:mod:`streamlog.errors`): 2 bad arguments,
name or URL; 3 unknown stream or group, or no database at that path; 4 database
unreachable; 5 bad item; 6 ``run --once`` moved items to the dead-letter stream. Every
message goes through :func:`streamlog.config.mask_url`, so credentials never show.
With ``-v`` the underlying causes (the exception chain, e.g. the driver's own message)
follow on ``streamlog: cause: ...`` lines, masked the same way.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

import streamlog
from streamlog.config import mask_url
from streamlog.errors import StreamlogError, UnreachableError

from . import common
from .common import PROG, ClickException, FormatOption, UrlOption, UsageError, VerboseOption

EXIT_DEAD_LETTERED = 6  # `run --once` moved items to the dead-letter stream


MAX_ERROR_LINE = 200  # characters of a ``streamlog: error: ...`` line, prefix included


def error_line(message: str, kind: str = "error") -> None:
    """Print one ``streamlog: KIND: message`` line, credentials masked. An error line is
    cut at :data:`MAX_ERROR_LINE` characters: the messages streamlog builds are short and
    cause-first, so this only guards against a long foreign text (``-v`` causes are whole)."""
    message = mask_url(" ".join(str(message).splitlines()).strip()) or "unknown error"
    line = f"{PROG}: {kind}: {message}"
    if kind == "error" and len(line) > MAX_ERROR_LINE:
        line = line[:MAX_ERROR_LINE - 1] + "…"
    typer.echo(line, err=True)


def _causes(exc: BaseException) -> None:
    """With -v: the exceptions behind ``exc`` (``raise ... from``, or raised while handling),
    one masked line each."""
    if not common.state["verbose"]:
        return
    seen = {id(exc)}
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        error_line(f"{type(cause).__module__}.{type(cause).__name__}: {cause}", "cause")
        cause = cause.__cause__ or cause.__context__


def database_error(exc: BaseException) -> StreamlogError | None:
    """A driver error (pymongo, sqlite3) as an UnreachableError, or None if it is not one.
    The driver's message is masked: it may quote the URL, password included."""
    import sqlite3

    module = type(exc).__module__ or ""
    if module.startswith("pymongo") or module.startswith("bson"):
        from streamlog.store.mongo_errors import describe_error  # pymongo is loaded: it raised this

        return UnreachableError(f"database error: {describe_error(exc)}")
    if isinstance(exc, sqlite3.Error):
        return UnreachableError(mask_url(f"database error: {exc}"))
    return None


class StreamlogGroup(TyperGroup):
    """Turns every failure into one ``streamlog: error: ...`` line and an exit code.

    Used by the console script and by typer's ``CliRunner`` alike, so tests see exactly
    what a user sees.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        common.state["verbose"] = False
        try:
            rv = super().main(args, PROG, complete_var, standalone_mode=False, **extra)
        except UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `streamlog` alone: the help was printed
                sys.exit(exc.exit_code)
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            error_line(exc.format_message() + hint)
            sys.exit(exc.exit_code)
        except ClickException as exc:
            error_line(exc.format_message())
            sys.exit(exc.exit_code)
        except typer.Abort:
            error_line("aborted")
            sys.exit(1)
        except StreamlogError as exc:
            error_line(str(exc))
            _causes(exc)
            sys.exit(exc.exit_code)
        except Exception as exc:  # driver errors; anything else is a bug: show its traceback
            mapped = database_error(exc)
            if mapped is None:
                raise
            error_line(str(mapped))
            _causes(exc)
            sys.exit(mapped.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=StreamlogGroup,
    name=PROG,
    help="A durable stream log in MongoDB (or an embedded SQLite file): look at streams, "
         "follow them, append items, run consumers, manage consumer groups and dead letters.",
    epilog="Global options --url, --format and -v go before the command or after it "
           "(`streamlog --url U ls` = `streamlog ls --url U`); --url defaults to $STREAMLOG_URL, "
           "then the embedded file database.\n\n"
           "Exit codes: 0 ok, 1 failure or declined, 2 bad arguments/name/URL, 3 unknown stream "
           "or group, or no database, 4 database unreachable, 5 bad item, 6 run --once dead-lettered items.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {streamlog.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    url: UrlOption = None,
    fmt: FormatOption = None,
    verbose: VerboseOption = False,
    version: Annotated[bool, typer.Option(
        "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """The top level: the global options, kept for the command (which may override them)."""
    common.remember(ctx, url, fmt, verbose)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``streamlog`` console script (and ``python -m streamlog.cli``)."""
    typer.main.get_command(app).main(args=argv, prog_name=PROG)
