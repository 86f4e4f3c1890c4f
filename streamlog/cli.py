"""The ``streamlog`` command line: look at streams, follow them, push items in, run consumers.

    streamlog ls                                  # every stream, with pending items per group
    streamlog info sensors                        # one stream in detail: groups, models, retention
    streamlog tail sensors -n 20 -f               # the last 20 items, then new ones as they land
    producer | streamlog append sensors           # JSON lines from stdin (all or nothing)
    streamlog run mymodule:consume --stream sensors --size 60 --once    # a cron job
    streamlog trim sensors --processed            # drop what every group has processed
    streamlog drop sensors --yes

Every command takes ``--url`` (default: ``$STREAMLOG_URL``, then the embedded file
database). Errors print one line, ``streamlog: error: ...``, and exit with the code of
the error's class (see :mod:`streamlog.errors`): 2 bad arguments, name or URL (offsets and
counts must lie in 0..2**63-1), 3 unknown stream or no database at that path, 4 database
unreachable, 5 bad item. ``run --once`` exits 6 when it moved items to the dead-letter
stream (and says so on stderr). Credentials never appear in a message: every error line
goes through :func:`streamlog.config.mask_url`.

The read-only commands (``ls``, ``info``, ``tail``), and ``trim`` and ``drop``, which
only change a stream that exists, never create a database: a mistyped ``sqlite:`` path
is an error (exit 3), not a new empty file.

Start-up is kept short: heavy modules (pandas, scikit-learn, pymongo) are imported only
by the commands that need them.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import os
import re
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Iterator, Optional

import typer
from typer.core import TyperGroup

import streamlog
from streamlog.config import mask_url
from streamlog.errors import BadItemError, StreamlogError, UnreachableError

if TYPE_CHECKING:  # pragma: no cover
    from streamlog.stream import Stream

PROG = "streamlog"


def _click_class(name: str) -> type:
    """Click's exception class ``name`` as typer uses it (typer >= 0.20 vendors its own
    copy of click, older versions use the click package): found from ``typer.BadParameter``."""
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == name:
            return cls
    raise ImportError(name)  # pragma: no cover


UsageError = _click_class("UsageError")
ClickException = _click_class("ClickException")

APPEND_BATCH = 10_000  # items per extend() when appending JSON lines
FOLLOW_POLL = 0.1  # seconds between probes of `tail -f` when nothing new has landed
FOLLOW_BATCH = 1_000  # items per read of `tail -f`
SPOOL_IN_MEMORY = 64 * 1024 * 1024  # bytes of validated input kept in memory before spilling to disk
MAX_INT = 2**63 - 1  # the largest offset or count the stores can hold (a signed 64-bit integer)
MAX_SECONDS = 10 * 365 * 86400  # durations on the command line: finite, at most ~10 years
EXIT_DEAD_LETTERED = 6  # `run --once` moved items to the dead-letter stream


# ---------------------------------------------------------------------------
# errors: one line on stderr, a distinct exit code, no traceback


def _error_line(message: str) -> None:
    message = mask_url(" ".join(str(message).split("\n")).strip()) or "unknown error"
    typer.echo(f"{PROG}: error: {message}", err=True)


def _database_error(exc: BaseException) -> StreamlogError | None:
    """A driver error (pymongo, sqlite3) as an UnreachableError, or None if it is not one.
    The driver's message is masked: it may quote the URL, password included."""
    import sqlite3

    module = type(exc).__module__ or ""
    if module.startswith("pymongo") or module.startswith("bson"):
        return UnreachableError(mask_url(f"database error: {type(exc).__name__}: {exc}"))
    if isinstance(exc, sqlite3.Error):
        return UnreachableError(mask_url(f"database error: {exc}"))
    return None


class _StreamlogGroup(TyperGroup):
    """Turns every failure into one ``streamlog: error: ...`` line and an exit code.

    Used by the console script and by typer's ``CliRunner`` alike, so tests see exactly
    what a user sees.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, PROG, complete_var, standalone_mode=False, **extra)
        except UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `streamlog` alone: the help was printed
                sys.exit(exc.exit_code)
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _error_line(exc.format_message() + hint)
            sys.exit(exc.exit_code)
        except ClickException as exc:
            _error_line(exc.format_message())
            sys.exit(exc.exit_code)
        except typer.Abort:
            _error_line("aborted")
            sys.exit(1)
        except StreamlogError as exc:
            _error_line(str(exc))
            sys.exit(exc.exit_code)
        except Exception as exc:  # driver errors; anything else is a bug: show its traceback
            mapped = _database_error(exc)
            if mapped is None:
                raise
            _error_line(str(mapped))
            sys.exit(mapped.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=_StreamlogGroup,
    name=PROG,
    help="A durable stream log in MongoDB (or an embedded SQLite file): look at streams, "
         "follow them, append items, run consumers.",
    epilog="Every command takes --url (default: $STREAMLOG_URL, then the embedded file database).\n"
           "Exit codes: 0 ok, 1 failure or declined, 2 bad arguments/name/URL, 3 unknown stream "
           "or no database, 4 database unreachable, 5 bad item, 6 run --once dead-lettered items.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _int64(value: int | None) -> int | None:
    """Option callback: offsets and counts must fit the stores' signed 64-bit integers
    (checked before anything is read or changed)."""
    if value is not None and value > MAX_INT:
        raise typer.BadParameter(f"{value} is too large (offsets and counts go up to 2**63-1 = {MAX_INT})")
    return value


def _duration(value: float | None) -> float | None:
    """Option callback: a duration in seconds must be finite and at most ~10 years."""
    if value is not None and not value <= MAX_SECONDS:  # also NaN
        raise typer.BadParameter(f"{value} is not a duration streamlog accepts (at most {MAX_SECONDS} s)")
    return value


def _version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {streamlog.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option(
        "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """The top level: only --version (the help text is Typer(help=...) above)."""


UrlOption = Annotated[Optional[str], typer.Option(
    "--url", metavar="URL", show_default=False,
    help="Database: mongodb://host:27017/db or sqlite:///file.db "
         "(default: $STREAMLOG_URL, then the embedded file database).")]
NameArgument = Annotated[str, typer.Argument(metavar="NAME", show_default=False,
                                             help="The stream (must exist).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def _examples(*lines: str, note: str | None = None) -> str:
    """A command's epilog: its examples as a code block (typer renders it as Markdown)."""
    text = "**Examples**\n\n```\n" + "\n".join(lines) + "\n```"
    return text + (f"\n\n{note}" if note else "")


def _client(url: str | None):
    """The shared client, creating the database if need be (``append``, ``run``)."""
    return streamlog.connect(url)


def _existing(ctx: typer.Context, url: str | None):
    """A client that never creates anything (``ls``, ``info``, ``tail``, ``trim``, ``drop``):
    a ``sqlite:`` URL naming a file that does not exist raises NoDatabaseError (exit 3),
    leaving neither the file nor its folder behind. Closed when the command ends."""
    from streamlog.client import Client

    client = Client(url, create=False)
    ctx.call_on_close(client.close)
    return client


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


# ---------------------------------------------------------------------------
# formatting helpers


def _ts(value: datetime | None) -> str:
    """A timestamp for people: ISO-8601 UTC with milliseconds and a Z."""
    if value is None:
        return "-"
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _age(value: datetime | None, now: float | None = None) -> str:
    if value is None:
        return "-"
    seconds = max(0.0, (now if now is not None else time.time()) - value.timestamp())
    if seconds < 60:
        return f"{seconds:.0f}s ago" if seconds >= 1 else "now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return "now"  # pragma: no cover


def _seconds(value: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{value / size:g}{unit}"
    return f"{value:g}s"


def _dumps(value: Any, indent: bool = False) -> str:
    import orjson

    from streamlog.items import to_jsonable

    option = orjson.OPT_INDENT_2 if indent else 0
    return orjson.dumps(to_jsonable(value), option=option | orjson.OPT_NON_STR_KEYS).decode()


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def _offsets(first: int | None, last: int | None) -> str:
    if first is None or last is None:
        return "-"
    return str(first) if first == last else f"{first}..{last}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# ---------------------------------------------------------------------------
# ls / info


@app.command("ls", epilog=_examples(
    "streamlog ls",
    "streamlog ls --json | jq -r .name",
    "streamlog ls --url mongodb://localhost:27017/iot",
))
def ls_command(ctx: typer.Context, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List the streams: items, offsets, age of the newest item, pending items per group.

    Read-only: a database that does not exist is an error (exit 3), never created."""
    from streamlog.errors import UnknownStreamError

    client = _existing(ctx, url)
    infos = []
    for name in client.streams():
        try:
            infos.append(client.get(name).info())
        except UnknownStreamError:  # dropped since it was listed
            continue
    if as_json:
        for info in infos:
            typer.echo(_dumps(info))
        return
    console = _console()
    if not infos:
        console.print(f"no streams at {client.store.url}")
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column, justify in (("STREAM", "left"), ("ITEMS", "right"), ("OFFSETS", "right"),
                            ("NEWEST", "right"), ("PENDING", "left")):
        table.add_column(column, justify=justify, no_wrap=column != "PENDING")
    now = time.time()
    for info in infos:
        pending = ", ".join(f"{group} {count}" for group, count in info["pending"].items()) or "-"
        table.add_row(info["name"], str(info["length"]), _offsets(info["first_offset"], info["last_offset"]),
                      _age(info["last_time"], now), pending)
    console.print(table)


@app.command("info", epilog=_examples(
    "streamlog info sensors",
    "streamlog info sensors --json | jq .groups",
))
def info_command(
    ctx: typer.Context,
    name: NameArgument,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one stream in detail: offsets, groups, dead letters, saved models, retention.

    Groups show their pending items (not processed yet), claimed (being processed now),
    failed (waiting for a retry) and dead-lettered items, and how many windows they ran.
    """
    info = _existing(ctx, url).get(name).info()
    if as_json:
        typer.echo(_dumps(info, indent=True))
        return
    from rich.table import Table

    console = _console()
    retention = info["retention"]
    kept = ", ".join(
        f"{k.replace('_', ' ')} {_seconds(v) if k == 'max_age' else v}" for k, v in sorted(retention.items())
    ) or "everything (no retention bound)"
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    now = time.time()
    summary.add_row("stream", info["name"])
    summary.add_row("database", info["url"])
    summary.add_row("created", f"{_ts(info['created'])} ({_age(info['created'], now)})")
    summary.add_row("items", str(info["length"]))
    summary.add_row("offsets", _offsets(info["first_offset"], info["last_offset"]))
    summary.add_row("newest", f"{_ts(info['last_time'])} ({_age(info['last_time'], now)})"
                    if info["last_time"] else "-")
    summary.add_row("retention", kept)
    dead = info["dead_letters"]
    summary.add_row("dead letters", f"{dead} (stream {info['name']}.dead)" if dead else "0")
    console.print(summary)

    console.print()
    groups = Table(title="groups", title_justify="left", title_style="bold", box=None,
                   header_style="bold", pad_edge=False)
    for column in ("GROUP", "START", "NEXT", "PENDING", "CLAIMED", "FAILED", "DEAD", "WINDOWS"):
        groups.add_column(column, justify="left" if column == "GROUP" else "right", no_wrap=True)
    for group, state in info["groups"].items():
        groups.add_row(group, str(state["start"]), str(state["next_offset"]), str(state["pending"]),
                       str(state["claimed"]), str(state["failed"]), str(state["dead"]), str(state["windows"]))
    console.print(groups)

    console.print()
    if info["models"]:
        models = Table(title="saved models", title_justify="left", title_style="bold", box=None,
                       header_style="bold", pad_edge=False)
        for column in ("MODEL", "GROUP", "WINDOW", "SAVED"):
            models.add_column(column, justify="right" if column == "WINDOW" else "left", no_wrap=True)
        for model in info["models"]:
            models.add_row(model["name"], model["group"], str(model["seq"]),
                           f"{_ts(model['saved'])} ({_age(model['saved'], now)})")
        console.print(models)
    else:
        console.print("saved models: none")


# ---------------------------------------------------------------------------
# tail


def _unprocessed_tail(stream: "Stream", group: str, n: int, upto: int | None) -> list[dict]:
    """The newest ``n`` items (offset <= ``upto``) that ``group`` has not processed, oldest
    first; the same items as the end of ``stream.buffer(group)``, without reading all of a
    long backlog: the items after the group's head are the newest ones, so only when they
    are fewer than ``n`` are the group's open (claimed or failed) windows read too."""
    from streamlog import delivery
    from streamlog.names import check_name

    check_name(group, "group")
    if upto is None or n <= 0:
        return []
    known = next((g for g in stream.groups() if g.name == group), None)
    if known is None:  # buffer() semantics: a group that does not exist yet would see everything
        return stream.read(max(0, upto - n + 1), limit=n, end=upto)
    head = delivery.group_state(stream, known)["next_offset"]
    newest = stream.read(max(head, upto - n + 1), limit=n, end=upto)
    if len(newest) == n:
        return newest
    # The backlog after the head is short: the group's open windows come before it.
    records = [r for r in stream.buffer(group) if r["offset"] <= upto]
    return records[-n:]


def _printer(as_json: bool) -> Callable[[dict], None]:
    out = sys.stdout
    color = not as_json and out.isatty() and "NO_COLOR" not in os.environ

    if as_json:
        def emit(record: dict) -> None:
            out.write(_dumps(record) + "\n")
            out.flush()
    else:
        def emit(record: dict) -> None:
            offset, stamp, data = str(record["offset"]), _ts(record["timestamp"]), _dumps(record["data"])
            if color:
                offset, stamp = typer.style(offset, fg="yellow"), typer.style(stamp, dim=True)
            out.write(f"{offset}  {stamp}  {data}\n")
            out.flush()
    return emit


def _follow(stream: "Stream", start: int, emit: Callable[[dict], None]) -> None:
    """Print items from offset ``start`` on as they land, until interrupted. Read-only: probes
    with ``read(start)``, sleeping ``FOLLOW_POLL`` s whenever nothing new is there."""
    while True:
        records = stream.read(start, limit=FOLLOW_BATCH)
        for record in records:
            emit(record)
        if records:
            start = records[-1]["offset"] + 1
        if len(records) < FOLLOW_BATCH:
            time.sleep(FOLLOW_POLL)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@app.command("tail", epilog=_examples(
    "streamlog tail sensors                 # the last 10 items",
    "streamlog tail sensors -n 100 --json | jq .data.x1",
    "streamlog tail sensors -f              # then new items; Ctrl-C stops",
    "streamlog tail sensors --group kmeans  # not yet processed by kmeans",
))
def tail_command(
    ctx: typer.Context,
    name: NameArgument,
    n: Annotated[int, typer.Option("-n", "--lines", min=0, callback=_int64, metavar="N",
                                   help="How many of the newest items to show.")] = 10,
    follow: Annotated[bool, typer.Option("-f", "--follow",
                                         help="Keep printing new items as they land, until Ctrl-C.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help='One JSON object per line: {"offset", "timestamp", "data"}.')] = False,
    group: Annotated[Optional[str], typer.Option(
        "--group", "-g", metavar="GROUP", show_default=False,
        help="Show only items this consumer group has not processed yet.")] = None,
    url: UrlOption = None,
) -> None:
    """Show the newest items of a stream with their offset and append time (UTC).

    Read-only: no consumer group's state changes. With --follow, new items are printed
    within a fraction of a second of landing; Ctrl-C (or SIGTERM) ends it with exit code 0.
    """
    stream = _existing(ctx, url).get(name)
    emit = _printer(as_json)
    if group is not None:
        upto = stream.store.last_offset(stream.name)
        records = _unprocessed_tail(stream, group, n, upto)
        start = 0 if upto is None else upto + 1
    else:
        records = stream.tail(n)
        if records:
            start = records[-1]["offset"] + 1
        else:
            last = stream.store.last_offset(stream.name)
            start = 0 if last is None else last + 1
    for record in records:
        emit(record)
    if not follow:
        return
    previous = None
    if sys.platform != "win32" and _is_main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        _follow(stream, start, emit)
    except KeyboardInterrupt:
        return
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ---------------------------------------------------------------------------
# append


_LONG_NUMBER = re.compile(rb"\d{20}")


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(raw: bytes | str, where: str, nested_arrays: bool = True) -> dict:
    """Parse and check one item as the target store will (``nested_arrays``: whether it
    can hold a list inside a list); raises :class:`BadItemError` saying ``where`` it is."""
    import orjson

    from streamlog.items import encode_many, normalize

    raw = raw.encode() if isinstance(raw, str) else raw
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadItemError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if _LONG_NUMBER.search(raw):
        # orjson turns integers beyond 64 bits into floats, silently; the standard parser
        # keeps them exact, so that normalize() rejects them as Stream.append would.
        import json

        value = json.loads(raw, parse_constant=_no_constants)
    try:
        item = normalize(value, nested_arrays)
        encode_many([item])  # the size limit, checked here so that a bad line appends nothing
    except BadItemError as exc:
        raise BadItemError(f"{where}: {str(exc).removeprefix('item 0: ')}") from None
    return item


def _validated_lines(source, nested_arrays: bool = True) -> tuple[Any, int, int]:
    """Read JSON lines from a binary stream, check every one, and spool the good ones.

    Returns ``(spool, items, lines)``: the non-blank lines, one per line in a temporary file
    (in memory up to ``SPOOL_IN_MEMORY`` bytes, then on disk), ready to be appended. Raises
    :class:`BadItemError` naming the first bad line before anything is appended.
    """
    import tempfile

    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
    count = 0
    number = 0
    try:
        for number, line in enumerate(source, 1):
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]  # UTF-8 byte-order mark
            line = line.strip()
            if not line:
                continue
            _parse_json(line, f"line {number}", nested_arrays)
            spool.write(line)
            spool.write(b"\n")
            count += 1
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, count, number


def _batches(spool, size: int) -> Iterator[list[dict]]:
    import orjson

    batch: list[dict] = []
    for line in spool:
        batch.append(orjson.loads(line))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress(total: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("appending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True)


@app.command("append", epilog=_examples(
    """streamlog append sensors '{"x1": 0.3, "x2": 0.1, "y": 0.5}'""",
    "python producer.py | streamlog append sensors",
    "streamlog append sensors < readings.jsonl",
    note="Input on stdin is read and checked completely before the first item is appended "
         "(beyond 64 MB it is buffered in a temporary file, not in memory), so a bad line "
         "appends nothing; the items are then appended in batches of --batch-size.",
))
def append_command(
    name: Annotated[str, typer.Argument(metavar="NAME", show_default=False,
                                        help="The stream (created if it does not exist).")],
    item: Annotated[Optional[str], typer.Argument(
        metavar="[JSON]", show_default=False,
        help="One item as a JSON object; without it (or with -), JSON lines are read from stdin.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, callback=_int64, metavar="N",
                                            help="Items per database round trip.")] = APPEND_BATCH,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success.")] = False,
    url: UrlOption = None,
) -> None:
    """Append one item, or JSON lines from stdin (one object per line; blank lines skipped).

    All or nothing for bad input: a line that is not a JSON object streamlog can store stops
    the command with an error naming the line, before anything is appended. Prints the
    offsets given to the new items.
    """
    from streamlog.names import check_name

    check_name(name)
    client = _client(url)  # fail fast on a bad URL or an unreachable server
    if item is not None and item != "-":
        parsed = _parse_json(item, "the JSON argument", client.store.nested_arrays)  # before creating the stream
        offset = client.stream(name).append(parsed)
        if not quiet:
            typer.echo(f"appended 1 item to {name} at offset {offset}")
        return

    if _stdin_is_tty():
        typer.echo(f"{PROG}: reading JSON lines from stdin for {name!r} (Ctrl-D to end)", err=True)
    source = typer.get_binary_stream("stdin")
    spool, total, _ = _validated_lines(source, client.store.nested_arrays)
    with spool:
        stream = client.stream(name)
        if total == 0:
            if not quiet:
                typer.echo(f"no items on stdin; nothing appended to {name}")
            return
        first = last = None
        done = 0
        progress = _progress(total) if total > batch_size and _stderr_is_tty() and not quiet else None
        task = progress.add_task("append", total=total) if progress else None
        try:
            if progress:
                progress.start()
            for batch in _batches(spool, batch_size):
                offsets = stream.extend(batch)
                first = offsets[0] if first is None else min(first, offsets[0])
                last = offsets[-1] if last is None else max(last, offsets[-1])
                done += len(offsets)
                if progress:
                    progress.update(task, completed=done)
        except BaseException:
            if done:
                typer.echo(f"{PROG}: note: {_plural(done, 'item')} of {total} were appended to {name} "
                           f"(offsets {_offsets(first, last)}) before the failure; the rest were not",
                           err=True)
            raise
        finally:
            if progress:
                progress.stop()
    if not quiet:
        where = f"offset {first}" if total == 1 else f"offsets {_offsets(first, last)}"
        typer.echo(f"appended {_plural(total, 'item')} to {name} at {where}")


# ---------------------------------------------------------------------------
# run


class Start(str, enum.Enum):
    earliest = "earliest"
    latest = "latest"


def _load_target(target: str) -> Callable:
    """Import ``MODULE:FUNCTION``. MODULE is a dotted module (importable from the current
    directory) or a path to a ``.py`` file; FUNCTION may be a dotted attribute path and any
    callable (a function, an instance with ``__call__``, a bound method)."""
    from streamlog.errors import ConsumerError

    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConsumerError(f"{target!r}: expected MODULE:FUNCTION (e.g. mymodule:consume or jobs/consume.py:main)")
    is_path = module_name.endswith(".py") or os.sep in module_name or "/" in module_name
    if is_path:
        path = Path(module_name).expanduser().resolve()
        if not path.is_file():
            raise ConsumerError(f"{module_name}: no such file")
        name = path.stem if path.stem.isidentifier() and path.stem not in sys.modules else \
            "_streamlog_run_" + re.sub(r"\W", "_", path.stem)
        sys.path.insert(0, str(path.parent))  # let the file import its neighbours
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConsumerError(f"{module_name}: cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    else:
        cwd = os.getcwd()
        if cwd not in sys.path and "" not in sys.path:
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                raise ConsumerError(f"cannot import {module_name!r}: {exc} (run from the directory "
                                    "that contains it, or give a path to the .py file)") from None
            raise
    fn: Any = module
    for part in attr.split("."):
        try:
            fn = getattr(fn, part)
        except AttributeError:
            raise ConsumerError(f"{target!r}: {module_name} has no attribute {attr!r}") from None
    if isinstance(fn, type):
        raise ConsumerError(f"{target!r} is a class; point at a function or an instance "
                            f"(e.g. model = {fn.__name__}(...) in {module_name}, then {module_name}:model)")
    if not callable(fn):
        raise ConsumerError(f"{target!r} is not callable (it is a {type(fn).__name__})")
    return fn


def _logged(fn: Callable) -> Callable:
    """``fn`` that first prints a line about each window on stderr (``run --verbose``)."""

    def consume(window):
        offsets = window.offsets
        span = _offsets(offsets[0], offsets[-1]) if offsets else "-"
        typer.echo(f"{PROG}: window #{window.seq}: {_plural(len(window), 'item')}, offsets {span}, "
                   f"{_ts(window.start)} .. {_ts(window.end)}", err=True)
        return fn(window)

    return consume


@app.command("run", epilog=_examples(
    "streamlog run consumer:consume --stream sensors --size 60",
    "streamlog run jobs/report.py:main -s sensors --interval 60 --once",
    "streamlog run models:kmeans -s sensors --size 100 --group kmeans",
    note="The function gets a Window (window.data, window.frame(), window.offsets, ...); "
         "a return value other than None is appended to the --sink stream. A window whose "
         "function raises is retried, then moved to the dead-letter stream NAME.dead.",
))
def run_command(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(
        metavar="MODULE:FUNCTION", show_default=False,
        help="The consumer: a dotted module importable from the current directory, or a path to a "
             ".py file, then : and a function (or any callable) in it.")],
    stream: Annotated[str, typer.Option("--stream", "-s", metavar="NAME", show_default=False,
                                        help="The stream to consume (created if it does not exist).")],
    size: Annotated[Optional[int], typer.Option(
        "--size", min=1, callback=_int64, metavar="N", show_default=False, help="Count windows of N items.")] = None,
    interval: Annotated[Optional[float], typer.Option(
        "--interval", min=0.001, callback=_duration, metavar="SECONDS", show_default=False,
        help="Time windows of SECONDS, aligned on the UTC clock (with --relaxed: "
             "everything pending, every SECONDS).")] = None,
    relaxed: Annotated[bool, typer.Option("--relaxed", help="Relaxed time windows (with --interval).")] = False,
    timeout: Annotated[Optional[float], typer.Option(
        "--timeout", min=0.0, callback=_duration, metavar="SECONDS", show_default=False,
        help="With --size: emit a partial window once its oldest item has waited this long.")] = None,
    group: Annotated[str, typer.Option("--group", "-g", metavar="GROUP", help="Consumer group.")] = "default",
    sink: Annotated[Optional[str], typer.Option(
        "--sink", metavar="STREAM", show_default=False,
        help="Append the function's non-None return values to this stream.")] = None,
    once: Annotated[bool, typer.Option(
        "--once", help="Process the windows that are ready now, print how many, and exit (cron mode).")] = False,
    max_windows: Annotated[Optional[int], typer.Option(
        "--max-windows", min=1, callback=_int64, metavar="N", show_default=False,
        help="Stop after N windows.")] = None,
    lease: Annotated[float, typer.Option("--lease", min=0.001, callback=_duration, metavar="SECONDS",
                                         help="Claim lease; renewed while the function runs.")] = 30.0,
    max_retries: Annotated[int, typer.Option("--max-retries", min=0, callback=_int64, metavar="N",
                                             help="Retries of a failing window before it is dead-lettered.")] = 3,
    retry_delay: Annotated[float, typer.Option(
        "--retry-delay", min=0.0, callback=_duration, metavar="SECONDS",
        help="Wait before retrying a failed window, doubling per attempt (0: retry at once).")] = 0.5,
    start: Annotated[Start, typer.Option("--start", help="Where a new group starts.")] = Start.earliest,
    time_field: Annotated[Optional[str], typer.Option(
        "--time-field", metavar="FIELD", show_default=False,
        help="Time windows on this item field (event time) instead of the append time.")] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Print a line on stderr for every window, and info-level logs.")] = False,
    url: UrlOption = None,
) -> None:
    """Run a consumer function on windows of a stream.

    Blocking by default: runs until Ctrl-C or SIGTERM, finishes and commits the current
    window, prints how many windows it processed and exits 0. With --once, processes only
    the windows ready now (cron mode), and exits 6 if it moved items to the dead-letter
    stream NAME.dead (saying how many on stderr).
    """
    if (size is None) == (interval is None):
        raise UsageError("give exactly one of --size N or --interval SECONDS", ctx)
    if relaxed and interval is None:
        raise typer.BadParameter("--relaxed needs --interval", ctx, param_hint="'--relaxed'")
    if timeout is not None and size is None:
        raise typer.BadParameter("--timeout applies to count windows (--size)", ctx, param_hint="'--timeout'")
    import logging

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s streamlog %(levelname)s: %(message)s")
    fn = _load_target(target)
    if verbose:
        fn = _logged(fn)
    options: dict[str, Any] = dict(group=group, start=start.value, sink=sink, blocking=not once,
                                   lease=lease, max_retries=max_retries, retry_delay=retry_delay,
                                   max_windows=max_windows,
                                   time_field=time_field, url=url)
    if size is not None:
        consumer = streamlog.streaming(stream, size=size, timeout=timeout, **options)
    else:
        consumer = streamlog.streaming(stream, interval=interval, relaxed=relaxed, **options)
    if not once:
        typer.echo(f"{PROG}: consuming {stream} with {target} ({consumer.emitter!r}, group {group}); "
                   "Ctrl-C or SIGTERM stops after the current window", err=True)
    processed = consumer.apply(fn)
    run = consumer.consumer
    failed = run.failed if run is not None else 0
    extra = f", {_plural(failed, 'failed attempt')}" if failed else ""
    typer.echo(f"{_plural(processed, 'window')} processed (stream {stream}, group {group}{extra})")
    dead = getattr(run, "dead_lettered", 0) if run is not None else 0
    if dead:
        typer.echo(f"{PROG}: {_plural(dead, 'item')} in {_plural(run.dead_windows, 'window')} moved to the "
                   f"dead-letter stream {run.dead_stream}", err=True)
        if once:
            raise typer.Exit(EXIT_DEAD_LETTERED)


# ---------------------------------------------------------------------------
# trim / drop

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``90``, ``90s``, ``15m``, ``2h``, ``7d``, ``1w``, ``1h30m``, ``500ms``."""
    raw = text.strip().lower()
    try:
        value = float(raw)
    except ValueError:
        value = None
    if value is None:
        pos = 0
        total = 0.0
        for match in _DURATION.finditer(raw):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNITS[match.group(2).lower()]
            pos = match.end()
        if pos != len(raw) or not raw:
            raise ValueError(f"{text!r} is not a duration (like 90, 90s, 15m, 2h, 7d or 1h30m)")
        value = total
    if value != value or value < 0 or value == float("inf"):
        raise ValueError(f"{text!r} is not a non-negative duration")
    return value


@app.command("trim", epilog=_examples(
    "streamlog trim sensors --processed      # processed by every group",
    "streamlog trim sensors --before 10000   # offsets below 10000",
    "streamlog trim sensors --older-than 7d  # or 90s, 15m, 2h, 1h30m",
    note="The newest item is always kept, so offsets never restart. --before and "
         "--older-than also delete items a group has not processed yet: it never sees them.",
))
def trim_command(
    ctx: typer.Context,
    name: NameArgument,
    processed: Annotated[bool, typer.Option(
        "--processed", help="Delete the items every consumer group has processed.")] = False,
    before: Annotated[Optional[int], typer.Option(
        "--before", min=0, callback=_int64, metavar="OFFSET", show_default=False,
        help="Delete the items with a smaller offset.")] = None,
    older_than: Annotated[Optional[str], typer.Option(
        "--older-than", metavar="DURATION", show_default=False,
        help="Delete the items appended longer ago: 90 or 90s, 15m, 2h, 7d, 1h30m.")] = None,
    url: UrlOption = None,
) -> None:
    """Delete old items from a stream (exactly one of --processed, --before, --older-than)."""
    chosen = [flag for flag, given in (("--processed", processed), ("--before", before is not None),
                                       ("--older-than", older_than is not None)) if given]
    if len(chosen) != 1:
        raise UsageError("give exactly one of --processed, --before OFFSET, --older-than DURATION"
                               + (f" (got {' and '.join(chosen)})" if chosen else ""), ctx)
    try:
        seconds = parse_duration(older_than) if older_than is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), ctx, param_hint="'--older-than'") from None
    stream = _existing(ctx, url).get(name)
    if processed:
        deleted = stream.trim(processed=True)
    elif before is not None:
        deleted = stream.trim(before=before)
    else:
        deleted = stream.trim(older_than=seconds)
    first, last = stream.store.first_offset(name), stream.store.last_offset(name)
    left = "empty" if first is None else f"offsets {_offsets(first, last)} remain"
    typer.echo(f"trimmed {_plural(deleted, 'item')} from {name} ({left})")


@app.command("drop", epilog=_examples(
    "streamlog drop scratch        # asks first",
    "streamlog drop scratch --yes  # in scripts",
    note="The dead-letter stream NAME.dead, if any, is a stream of its own and is kept.",
))
def drop_command(
    ctx: typer.Context,
    name: NameArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOption = None,
) -> None:
    """Delete a stream with all its items, consumer groups and saved models."""
    client = _existing(ctx, url)
    stream = client.get(name)
    if not yes:
        if not _stdin_is_tty():
            raise UsageError(f"refusing to drop {name} without --yes (stdin is not a terminal)", ctx)
        length = len(stream)
        if not typer.confirm(f"Drop stream {name} with its {_plural(length, 'item')}, groups and saved models?",
                             default=False, err=True):
            typer.echo("not dropped", err=True)
            raise typer.Exit(1)
    stream.drop()
    typer.echo(f"dropped {name}")
    dead = name + ".dead"
    if len(dead) <= 200 and dead in client.streams():
        typer.echo(f"note: its dead-letter stream {dead} is kept (streamlog drop {dead} removes it)", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``streamlog`` console script (and ``python -m streamlog.cli``)."""
    typer.main.get_command(app).main(args=argv, prog_name=PROG)


if __name__ == "__main__":
    main()
