"""What every command shares: the global options (``--url``, ``--format``, ``-v``) and how
a command's own value overrides the one given before the command, the two ways to open
the database, argument checks, confirmation of destructive commands.

Tests replace :func:`existing_client` and :func:`stdin_is_tty` here; commands call them
through this module (``common.stdin_is_tty()``) so that a replacement takes effect.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Annotated, Callable, Optional

import typer

from ..offsets import BadOffsetError, parse_offset
from .output import Format

PROG = "streamlog"
MAX_INT = 2**63 - 1  # the largest offset or count the stores can hold (a signed 64-bit integer)
MAX_SECONDS = 10 * 365 * 86400  # durations on the command line: finite, at most ~10 years


def click_class(name: str) -> type:
    """Click's exception class ``name`` as typer uses it (typer >= 0.20 vendors its own
    copy of click, older versions use the click package): found from ``typer.BadParameter``."""
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == name:
            return cls
    raise ImportError(name)  # pragma: no cover


UsageError = click_class("UsageError")
ClickException = click_class("ClickException")


# ---------------------------------------------------------------------------
# global options


@dataclass(frozen=True)
class Settings:
    """The global options of one invocation (``ctx.obj``)."""

    url: Optional[str] = None
    format: Optional[Format] = None
    verbose: bool = False


# Read by the error handler, which runs after the command's context is gone.
state = {"verbose": False}


def global_settings(ctx: typer.Context, url: str | None = None, fmt: Format | None = None,
                    verbose: bool = False) -> Settings:
    """The settings of this command: its own options where given, else those given
    before it (``streamlog --url U ls`` and ``streamlog ls --url U`` alike)."""
    base = ctx.find_object(Settings) or Settings()
    merged = Settings(url=url if url is not None else base.url,
                      format=fmt if fmt is not None else base.format,
                      verbose=verbose or base.verbose)
    if merged.verbose:
        state["verbose"] = True
    return merged


def remember(ctx: typer.Context, url: str | None, fmt: Format | None, verbose: bool) -> None:
    """A callback (the top level, ``group``): store the options given before the command."""
    ctx.obj = global_settings(ctx, url, fmt, verbose)


def output_format(settings: Settings, as_json: bool = False) -> Format:
    """``--json`` is an alias of ``--format json``."""
    if as_json:
        return Format.json
    return settings.format or Format.table


UrlOption = Annotated[Optional[str], typer.Option(
    "--url", metavar="URL", show_default=False,
    help="Database: mongodb://host:27017/db or sqlite:///file.db "
         "(default: $STREAMLOG_URL, then the embedded file database). Also before the command.")]
FormatOption = Annotated[Optional[Format], typer.Option(
    "--format", show_default=False, case_sensitive=False,
    help="Output: table (default), json or csv. Also before the command.")]
VerboseOption = Annotated[bool, typer.Option(
    "--verbose", "-v", help="On an error, also print its underlying cause (the driver's message).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Same as --format json.")]
NameArgument = Annotated[str, typer.Argument(metavar="NAME", show_default=False,
                                             help="The stream (must exist).")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def examples(*lines: str, note: str | None = None) -> str:
    """A command's epilog: its examples as a code block (typer renders it as Markdown)."""
    text = "**Examples**\n\n```\n" + "\n".join(lines) + "\n```"
    return text + (f"\n\n{note}" if note else "")


# ---------------------------------------------------------------------------
# argument checks (option callbacks)


def digits(minimum: int = 0) -> Callable[[object], int]:
    """The parser of an offset or count typed on the command line: plain decimal digits
    (no ``1_000``, ``+5`` or non-ASCII digits, which ``int()`` would take), at least
    ``minimum`` and at most 2**63-1, what the stores hold (checked before anything is read
    or changed)."""

    def parse(value: object) -> int:
        if isinstance(value, int) and not isinstance(value, bool):  # a default
            return value
        text = str(value)
        try:
            number = parse_offset(text, "the value")
        except BadOffsetError as exc:
            if text.isascii() and text.isdigit():
                raise typer.BadParameter(
                    f"{text[:40]} is too large (offsets and counts go up to 2**63-1 = {MAX_INT})") from None
            raise typer.BadParameter(f"{text[:40]!r} is not a whole number of {minimum} or more "
                                     "(decimal digits only)") from exc
        assert isinstance(number, int)
        if number < minimum:
            raise typer.BadParameter(f"{number} is not a whole number of {minimum} or more")
        return number

    parse.__name__ = "integer"  # click shows it as the type's name
    return parse


def duration(value: float | None) -> float | None:
    """A duration in seconds must be finite and at most ~10 years."""
    if value is not None and not value <= MAX_SECONDS:  # also NaN
        raise typer.BadParameter(f"{value} is not a duration streamlog accepts (at most {MAX_SECONDS} s)")
    return value


def offset_or(*words: str):
    """A callback accepting an offset (0..2**63-1) or one of ``words`` (e.g. ``earliest``)."""

    def check(value: str | None) -> int | str | None:
        if value is None:
            return None
        text = value.strip().lower()
        try:
            return parse_offset(text, "the offset", words=words)
        except BadOffsetError as exc:
            if text.isascii() and text.isdigit():
                raise typer.BadParameter(
                    f"{value} is too large (offsets go up to 2**63-1 = {MAX_INT})") from None
            raise typer.BadParameter(f"{value!r} is not an offset (decimal digits) or {' or '.join(words)}") \
                from exc

    return check


# ---------------------------------------------------------------------------
# the database


def client(settings: Settings):
    """The shared client, creating the database if need be (``append``, ``run``)."""
    import streamlog

    return streamlog.connect(settings.url)


def existing_client(ctx: typer.Context, url: str | None):
    """A client that never creates a database (every command but ``append`` and ``run``):
    a ``sqlite:`` URL naming a file that does not exist raises NoDatabaseError (exit 3),
    leaving neither the file nor its folder behind. Closed when the command ends."""
    from streamlog.client import Client

    opened = Client(url, create=False)
    ctx.call_on_close(opened.close)
    return opened


# ---------------------------------------------------------------------------
# terminals and confirmation


def stdin_is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def confirm(ctx: typer.Context, yes: bool, refusal: str, question: Callable[[], str], declined: str) -> None:
    """Go on if ``--yes`` was given or the user says yes to ``question()``. Off a terminal
    (scripts, cron, CI): a usage error (exit 2) saying to pass --yes. Declined: ``declined``
    on stderr, exit 1."""
    if yes:
        return
    if not stdin_is_tty():  # a module global, looked up now: tests replace it
        raise UsageError(f"refusing to {refusal} without --yes (stdin is not a terminal)", ctx)
    if not typer.confirm(question(), default=False, err=True):
        typer.echo(declined, err=True)
        raise typer.Exit(1)

