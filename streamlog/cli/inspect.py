"""Looking at streams: ``ls``, ``info``, ``tail``. Read-only: they never create a database
or a stream and never change a consumer group's state."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Callable, Optional

import typer

from streamlog.config import mask_url
from streamlog.names import check_name, dead_letter_stream
from streamlog.stopping import graceful_stop
from streamlog.tables import table

from . import common
from .app import app
from .common import (
    FormatOption,
    JsonOption,
    NameArgument,
    UrlOption,
    UsageError,
    VerboseOption,
    digits,
    examples,
    global_settings,
    offset_or,
    output_format,
)
from .output import Format, RecordWriter, age, dumps, offsets, seconds, ts, write_csv, write_json_lines

if TYPE_CHECKING:  # pragma: no cover
    from streamlog.stream import Stream

FOLLOW_POLL = 0.1  # seconds between probes of `tail -f` when nothing new has landed
FOLLOW_BATCH = 1_000  # items per read of `tail -f`

# The columns of a stream in `ls --format csv` and `info --format csv` (nested values as JSON).
STREAM_COLUMNS = ("name", "url", "created", "length", "first_offset", "last_offset", "last_time",
                  "dead_letters", "pending", "groups", "retention", "models")


# ---------------------------------------------------------------------------
# ls / info


@app.command("ls", epilog=examples(
    "streamlog ls",
    "streamlog --url mongodb://localhost:27017/iot ls",
    "streamlog ls --format json | jq -r .name",
    "streamlog ls --format csv > streams.csv",
))
def ls_command(ctx: typer.Context, url: UrlOption = None, fmt: FormatOption = None,
               as_json: JsonOption = False, verbose: VerboseOption = False) -> None:
    """List the streams: items, offsets, age of the newest item, pending items per group.

    Read-only: a database that does not exist is an error (exit 3), never created.
    --format json prints one Stream.info() object per line, csv one row per stream."""
    from streamlog.errors import UnknownStreamError

    settings = global_settings(ctx, url, fmt, verbose)
    out = output_format(settings, as_json)
    client = common.existing_client(ctx, settings.url)
    infos = []
    for name in client.streams():
        try:
            infos.append(client.get(name).info())
        except UnknownStreamError:  # dropped since it was listed
            continue
    if out == Format.json:
        write_json_lines(infos)
        return
    if out == Format.csv:
        write_csv(STREAM_COLUMNS, ([info[c] for c in STREAM_COLUMNS] for info in infos))
        return
    if not infos:
        typer.echo(f"no streams at {mask_url(client.url)}")
        return
    now = time.time()
    typer.echo(table(
        ("STREAM", "ITEMS", "OFFSETS", "NEWEST", "PENDING"),
        ([info["name"], info["length"], offsets(info["first_offset"], info["last_offset"]),
          age(info["last_time"], now),
          ", ".join(f"{group} {count}" for group, count in info["pending"].items()) or "-"]
         for info in infos),
        right=("ITEMS", "OFFSETS", "NEWEST")))


@app.command("info", epilog=examples(
    "streamlog info sensors",
    "streamlog info sensors --format json | jq .groups",
))
def info_command(
    ctx: typer.Context,
    name: NameArgument,
    url: UrlOption = None,
    fmt: FormatOption = None,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Show one stream in detail: offsets, groups, dead letters, saved models, retention.

    Groups show their pending items (not processed yet), claimed (being processed now),
    failed (waiting for a retry) and dead-lettered items, and how many windows they ran.
    --format json prints Stream.info() as one JSON object; csv one row (as ls).
    """
    settings = global_settings(ctx, url, fmt, verbose)
    out = output_format(settings, as_json)
    info = common.existing_client(ctx, settings.url).get(name).info()
    if out == Format.json:
        typer.echo(dumps(info, indent=True))
        return
    if out == Format.csv:
        write_csv(STREAM_COLUMNS, [[info[c] for c in STREAM_COLUMNS]])
        return
    retention = info["retention"]
    kept = ", ".join(
        f"{k.replace('_', ' ')} {seconds(v) if k == 'max_age' else v}" for k, v in sorted(retention.items())
    ) or "everything (no retention bound)"
    now = time.time()
    dead = info["dead_letters"]
    summary = [
        ("stream", info["name"]),
        ("database", info["url"]),
        ("created", f"{ts(info['created'])} ({age(info['created'], now)})"),
        ("items", info["length"]),
        ("offsets", offsets(info["first_offset"], info["last_offset"])),
        ("newest", f"{ts(info['last_time'])} ({age(info['last_time'], now)})" if info["last_time"] else "-"),
        ("retention", kept),
        ("dead letters", f"{dead} (stream {dead_letter_stream(info['name'])})" if dead else "0"),
    ]
    typer.echo(table(("KEY", "VALUE"), summary, header=False))
    typer.echo()
    columns = ("GROUP", "START", "NEXT", "PENDING", "CLAIMED", "FAILED", "DEAD", "WINDOWS")
    typer.echo(table(columns, (
        [group, s["start"], s["next_offset"], s["pending"], s["claimed"], s["failed"], s["dead"], s["windows"]]
        for group, s in info["groups"].items()), right=columns[1:], title="groups"))
    typer.echo()
    if info["models"]:
        typer.echo(table(("MODEL", "GROUP", "WINDOW", "SAVED"), (
            [m["name"], m["group"], m["seq"], f"{ts(m['saved'])} ({age(m['saved'], now)})"]
            for m in info["models"]), right=("WINDOW",), title="saved models"))
    else:
        typer.echo("saved models: none")


# ---------------------------------------------------------------------------
# tail


def newest_offset(stream: "Stream") -> int | None:
    last = stream.tail(1)
    return last[0]["offset"] if last else None


def unprocessed_tail(stream: "Stream", group: str, n: int, upto: int | None) -> list[dict]:
    """The newest ``n`` items (offset <= ``upto``) that ``group`` has not processed, oldest
    first: the end of ``stream.buffer(group)``, read without the whole of a long backlog.
    The items after the group's next offset are the newest ones; only when they are fewer
    than ``n`` is the buffer itself read (its open windows come first), bounded by the
    group's pending count."""
    check_name(group, "group")
    if upto is None or n <= 0:
        return []
    handle = next((g for g in stream.groups() if g.name == group), None)
    if handle is None:  # buffer() semantics: a group that does not exist yet would see everything
        return stream.read(max(0, upto - n + 1), limit=n, end=upto)
    state = handle.info()
    newest = stream.read(max(state["next_offset"], upto - n + 1), limit=n, end=upto)
    if len(newest) == n:
        return newest
    records = [r for r in stream.buffer(group, limit=state["pending"] + n) if r["offset"] <= upto]
    return records[-n:]


def _follow(stream: "Stream", start: int, emit: Callable[[dict], None]) -> None:
    """Print items from offset ``start`` on as they land, until interrupted. Read-only: probes
    with ``read(start)``, sleeping ``FOLLOW_POLL`` s whenever nothing new is there.

    A drop of the stream ends it with :class:`UnknownStreamError` (exit 3): every batch is
    checked against the stream it started on before it is printed
    (:meth:`Stream.read_following`), so items of a new stream of the same name are never
    spliced after the old one's."""
    from streamlog.errors import UnknownStreamError

    gone = UnknownStreamError(f"stream {stream.name!r} was dropped while following it")
    while True:
        try:
            records = stream.read_following(start, FOLLOW_BATCH)
        except UnknownStreamError:
            raise gone from None
        for record in records:
            emit(record)
        if records:
            start = records[-1]["offset"] + 1
        if len(records) < FOLLOW_BATCH:
            time.sleep(FOLLOW_POLL)


def _interrupt(signum: int) -> None:
    raise KeyboardInterrupt


def follow_until_stopped(stream: "Stream", start: int, emit: Callable[[dict], None]) -> None:
    """``_follow`` until Ctrl-C or SIGTERM (both end it quietly, exit code 0): following
    only reads, so the signal interrupts it wherever it is."""
    try:
        with graceful_stop(_interrupt):
            _follow(stream, start, emit)
    except KeyboardInterrupt:
        return


def _print_range(stream: "Stream", start: int | None, end: int | None, writer: RecordWriter) -> int | None:
    """Print the items ``start <= offset <= end`` in offset order (``Stream.iter``: bounded
    memory); returns the last offset printed. CSV reads the range twice: first for the
    header (every key of the range), then for the rows, up to the same last offset."""
    if writer.fmt == Format.csv:
        keys: dict[str, None] = {}
        last = None
        for record in stream.iter(start=start, end=end):
            keys.update(dict.fromkeys(record["data"]))
            last = record["offset"]
        writer.set_keys(keys)
        if last is None:
            return None
        end = last
    last = None
    for record in stream.iter(start=start, end=end):
        writer.write(record)
        last = record["offset"]
    return last


@app.command("tail", epilog=examples(
    "streamlog tail sensors                   # the last 10 items",
    "streamlog tail sensors -n 100 --json | jq .data.x1",
    "streamlog tail sensors -f                # then new items; Ctrl-C stops",
    "streamlog tail sensors --group kmeans    # not yet processed by kmeans",
    "streamlog tail sensors --from 1000 --to 1999 --format csv > part.csv",
    "streamlog tail sensors --from earliest -f  # everything, then new items",
))
def tail_command(
    ctx: typer.Context,
    name: NameArgument,
    n: Annotated[Optional[int], typer.Option(
        "-n", "--lines", parser=digits(0), metavar="N", show_default=False,
        help="How many of the newest items to show [default: 10].")] = None,
    follow: Annotated[bool, typer.Option("-f", "--follow",
                                         help="Keep printing new items as they land, until Ctrl-C.")] = False,
    start: Annotated[Optional[str], typer.Option(
        "--from", metavar="OFFSET|earliest", show_default=False, callback=offset_or("earliest"),
        help="Show the items from this offset on (earliest: from the oldest kept), in offset order, "
             "instead of the newest N.")] = None,
    end: Annotated[Optional[str], typer.Option(
        "--to", metavar="OFFSET", show_default=False, callback=offset_or(),
        help="With --from: up to this offset (included). Alone: from the oldest item.")] = None,
    group: Annotated[Optional[str], typer.Option(
        "--group", "-g", metavar="GROUP", show_default=False,
        help="Show only items this consumer group has not processed yet.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help='Same as --format json: one {"offset", "timestamp", "data"} object per line.')] = False,
    url: UrlOption = None,
    fmt: FormatOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Show the newest items of a stream, or a range of offsets, with their offset and
    append time (UTC).

    Read-only: no consumer group's state changes. With --follow, new items are printed
    within a fraction of a second of landing; Ctrl-C (or SIGTERM) ends it with exit code 0.
    """
    settings = global_settings(ctx, url, fmt, verbose)
    ranged = start is not None or end is not None
    if ranged:
        if n is not None:
            raise UsageError("-n shows the newest items, --from/--to a range of offsets: give one of them", ctx)
        if group is not None:
            raise UsageError("--group shows what a group has not processed; it does not combine "
                             "with --from/--to", ctx)
        if end is not None and follow:
            raise UsageError("--to ends the output and -f follows past the end: give one of them", ctx)
        if isinstance(start, int) and end is not None and end < start:
            raise typer.BadParameter(f"{end} is before --from {start}", ctx, param_hint="'--to'")
    stream = common.existing_client(ctx, settings.url).get(name)
    writer = RecordWriter(output_format(settings, as_json))
    if ranged:
        first = start if isinstance(start, int) else None
        last = _print_range(stream, first, end, writer)
        resume = last + 1 if last is not None else (first or 0)
    else:
        count = 10 if n is None else n
        if group is not None:
            upto = newest_offset(stream)
            records = unprocessed_tail(stream, group, count, upto)
            resume = 0 if upto is None else upto + 1
        else:
            records = stream.tail(count)
            if records:
                resume = records[-1]["offset"] + 1
            else:
                upto = newest_offset(stream)
                resume = 0 if upto is None else upto + 1
        if records:
            writer.set_keys(k for record in records for k in record["data"])
        for record in records:
            writer.write(record)
    if not follow:
        writer.finish()
        return
    follow_until_stopped(stream, resume, writer.write)
