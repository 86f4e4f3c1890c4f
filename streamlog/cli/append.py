"""``streamlog append``: one item from the command line, or items from stdin (JSON lines
or CSV), either read whole and appended all or nothing, or followed as lines arrive.

Two ways to read stdin:

* **whole** (a regular file, ``--no-follow``): every line is read and checked before the
  first item is appended, so a bad line appends nothing (``--on-error stop``); the checked
  items are buffered (in memory up to 64 MB, then in a temporary file) and appended in
  batches of ``--batch-size`` (default 10,000).
* **follow** (the default when stdin is a pipe, a socket or a terminal; ``--follow``):
  items are appended in batches as lines arrive, a batch once ``--batch-size`` lines
  (default 1,000) are waiting or ``--flush-ms`` (default 200) after the first of them
  arrived, whichever comes first. Each batch is all or nothing; a bad line stops the
  command after appending the good lines before it, and says exactly which were appended.

``--on-error dead-letter`` sends a bad line to the stream's dead-letter stream as
``{"line": n, "text": "...", "error": "..."}`` and goes on, in either mode.
"""

from __future__ import annotations

import enum
import os
import queue
import sys
import threading
import time
from typing import Annotated, Any, Iterator, Optional

import typer

from streamlog.errors import BadItemError
from streamlog.lines import Line, csv_rows, json_lines, parse_json
from streamlog.names import check_name, dead_letter_stream
from streamlog.stopping import graceful_stop

from . import common
from .app import app
from .common import PROG, UrlOption, UsageError, VerboseOption, digits, examples, global_settings
from .output import offsets, plural

BATCH_WHOLE = 10_000  # items per extend() when the input is read whole
BATCH_FOLLOW = 1_000  # lines per batch when following
FLUSH_MS = 200  # ms after the first waiting line when following
SPOOL_IN_MEMORY = 64 * 1024 * 1024  # bytes of checked input kept in memory before spilling to disk
QUEUE_LIMIT = 100_000  # parsed lines read ahead of the appends when following
STOP_CHECK = 0.1  # seconds between checks for Ctrl-C / SIGTERM while waiting for input




class InputFormat(str, enum.Enum):
    json = "json"
    csv = "csv"


class OnError(str, enum.Enum):
    stop = "stop"
    dead_letter = "dead-letter"


def parsed_lines(source, fmt: InputFormat, nested_arrays: bool) -> Iterator[Line]:
    return (csv_rows if fmt == InputFormat.csv else json_lines)(source, nested_arrays)


# ---------------------------------------------------------------------------
# what was appended


class Tally:
    """The items appended so far (and the bad lines dead-lettered), for the messages."""

    def __init__(self, name: str):
        self.name = name
        self.items = 0
        self.first: int | None = None
        self.last: int | None = None
        self.first_line: int | None = None
        self.last_line: int | None = None
        self.dead = 0
        self.batches = 0

    def add(self, ids: list[int], lines: tuple[int, int] | None = None) -> None:
        if not ids:
            return
        self.items += len(ids)
        self.batches += 1
        self.first = min(ids) if self.first is None else min(self.first, min(ids))
        self.last = max(ids) if self.last is None else max(self.last, max(ids))
        if lines is not None:
            self.first_line = lines[0] if self.first_line is None else self.first_line
            self.last_line = lines[1]

    def where(self) -> str:
        return f"offset {self.first}" if self.items == 1 else f"offsets {offsets(self.first, self.last)}"

    def summary(self) -> str:
        text = (f"appended {plural(self.items, 'item')} to {self.name} at {self.where()}" if self.items
                else f"no items on stdin; nothing appended to {self.name}")
        if self.dead:
            text += (f"; {plural(self.dead, 'bad line')} sent to the dead-letter stream "
                     f"{dead_letter_stream(self.name)}")
        return text


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("appending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True)


# ---------------------------------------------------------------------------
# whole input: check everything, then append


def _spooled(lines: Iterator[Line], stop: bool):
    """Check every line and spool the good items (and bad lines' dead letters) as JSON lines.
    Returns ``(items, count, dead, dead_count)``; raises at the first bad line if ``stop``."""
    import tempfile

    import orjson

    items = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
    dead = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
    count = dead_count = 0
    try:
        for line in lines:
            if line.why is not None:
                if stop:
                    raise line.error()
                dead.write(orjson.dumps(line.dead_letter()) + b"\n")
                dead_count += 1
            else:
                items.write(orjson.dumps(line.item) + b"\n")
                count += 1
    except BaseException:
        items.close()
        dead.close()
        raise
    items.seek(0)
    dead.seek(0)
    return items, count, dead, dead_count


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


def append_whole(client, name: str, lines: Iterator[Line], stop: bool, batch_size: int, quiet: bool) -> Tally:
    tally = Tally(name)
    items, total, dead, dead_count = _spooled(lines, stop)
    with items, dead:
        stream = client.stream(name)
        progress = _progress() if total > batch_size and common.stderr_is_tty() and not quiet else None
        task = progress.add_task("append", total=total) if progress else None
        try:
            if progress:
                progress.start()
            for batch in _batches(items, batch_size):
                tally.add(stream.extend(batch))
                if progress:
                    progress.update(task, completed=tally.items)
        except BaseException:
            if tally.items:
                typer.echo(f"{PROG}: note: {tally.items} of {plural(total, 'item')} were appended to {name} "
                           f"({tally.where()}) before the failure; the rest were not", err=True)
            raise
        finally:
            if progress:
                progress.stop()
        if dead_count:
            letters = client.stream(dead_letter_stream(name))
            for batch in _batches(dead, batch_size):
                letters.extend(batch)
                tally.dead += len(batch)
    return tally


# ---------------------------------------------------------------------------
# following: batches as lines arrive

_EOF = object()


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _read_ahead(lines: Iterator[Line], into: "queue.Queue") -> None:
    try:
        for line in lines:
            into.put(line)
    except BaseException as exc:  # a bad CSV header, a read error: raised by the appending side
        into.put(_Failed(exc))
    into.put(_EOF)


def append_following(client, name: str, lines: Iterator[Line], stop: bool, batch_size: int,
                     flush_ms: float) -> Tally:
    """Append batches as lines arrive, until end of input (or Ctrl-C / SIGTERM, which
    append what was read and end normally)."""
    tally = Tally(name)
    waiting = queue.Queue(maxsize=min(QUEUE_LIMIT, 2 * batch_size + 16))
    threading.Thread(target=_read_ahead, args=(lines, waiting), name="streamlog-stdin", daemon=True).start()
    handles: dict[str, Any] = {}
    good: list[Line] = []
    bad: list[Line] = []

    def flush() -> None:
        if good:
            if "stream" not in handles:
                handles["stream"] = client.stream(name)
            tally.add(handles["stream"].extend([line.item for line in good]), (good[0].number, good[-1].number))
            good.clear()
        if bad:
            if "dead" not in handles:
                handles["dead"] = client.stream(dead_letter_stream(name))
            handles["dead"].extend([line.dead_letter() for line in bad])
            tally.dead += len(bad)
            bad.clear()

    def take(entry) -> bool:
        """Handle one entry from the reader; False at the end of the input."""
        if entry is _EOF:
            return False
        if isinstance(entry, _Failed):
            flush()
            raise entry.exc
        if entry.why is None:
            good.append(entry)
        elif stop:
            flush()
            if tally.items:
                span = offsets(tally.first_line, tally.last_line)
                typer.echo(f"{PROG}: note: appended {plural(tally.items, 'item')} from "
                           f"line{'' if tally.first_line == tally.last_line else 's'} {span} to {name} at "
                           f"{tally.where()}; nothing from line {entry.number} on was appended", err=True)
            raise entry.error()
        else:
            bad.append(entry)
        return True

    # Ctrl-C and SIGTERM only set a flag, checked between appends: an exception raised
    # inside a database call could leave the driver half-way through a write.
    stopping = threading.Event()
    with graceful_stop(lambda signum: stopping.set()):
        try:
            deadline = None
            while not stopping.is_set():
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    entry = waiting.get(timeout=STOP_CHECK if left is None else min(left, STOP_CHECK))
                except queue.Empty:
                    if deadline is not None and time.monotonic() >= deadline:
                        flush()
                        deadline = None
                    continue
                if not take(entry):
                    break
                if deadline is None:
                    deadline = time.monotonic() + flush_ms / 1000
                if len(good) + len(bad) >= batch_size:
                    flush()
                    deadline = None
            if stopping.is_set():
                try:  # what was read already is appended; the rest of the input is left unread
                    while take(waiting.get_nowait()):
                        if len(good) + len(bad) >= batch_size:
                            flush()
                except queue.Empty:
                    pass
            flush()
        except BaseException as exc:
            if tally.items and not isinstance(exc, BadItemError):
                typer.echo(f"{PROG}: note: {plural(tally.items, 'item')} were appended to {name} ({tally.where()}) "
                           "before the failure", err=True)
            raise
    return tally


# ---------------------------------------------------------------------------
# the command


def stdin_kind() -> str:
    """``pipe`` (a FIFO or a socket), ``file`` (a regular file), ``tty`` or ``other``."""
    import stat

    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (AttributeError, ValueError, OSError):  # no file descriptor (e.g. a test runner's stdin)
        return "other"
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return "pipe"
    if stat.S_ISREG(mode):
        return "file"
    return "tty" if common.stdin_is_tty() else "other"


def _own_reader(source):
    """stdin on a file descriptor of its own, for the reading thread: at exit (a bad line,
    Ctrl-C) that thread may still be blocked in a read, and must not hold the lock of
    ``sys.stdin``, which the interpreter flushes as it shuts down."""
    try:
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    except (AttributeError, ValueError, OSError):  # no file descriptor (a test runner's stdin)
        return source


@app.command("append", epilog=examples(
    """streamlog append sensors '{"x1": 0.3, "x2": 0.1, "y": 0.5}'""",
    "python producer.py | streamlog append sensors          # appended as lines arrive",
    "streamlog append sensors < readings.jsonl              # all or nothing",
    "streamlog append sensors --format csv < readings.csv   # header row = keys",
    "tail -F app.log.jsonl | streamlog append logs --on-error dead-letter",
    note="A regular file on stdin (or --no-follow) is read and checked completely before the first "
         "item is appended, so a bad line appends nothing. A pipe or a terminal is followed: "
         "batches are appended as lines arrive (--batch-size lines or --flush-ms, whichever first), "
         "each all or nothing, and a bad line stops after the good lines before it.",
))
def append_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", show_default=False,
                                        help="The stream (created if it does not exist).")],
    item: Annotated[Optional[str], typer.Argument(
        metavar="[JSON]", show_default=False,
        help="One item as a JSON object; without it (or with -), items are read from stdin.")] = None,
    fmt: Annotated[Optional[str], typer.Option(
        "--format", metavar="json|csv", show_default=False,
        help="stdin holds JSON lines (json, the default) or CSV with a header row (csv).")] = None,
    follow: Annotated[Optional[bool], typer.Option(
        "--follow/--no-follow", show_default=False,
        help="Append batches as lines arrive (default when stdin is a pipe or a terminal), or read "
             "everything first and append all or nothing (default for a file).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", "--batch", parser=digits(1), metavar="N", show_default=False,
        help=f"Items per database round trip [default: {BATCH_WHOLE:,} for a whole input, "
             f"{BATCH_FOLLOW:,} when following].")] = None,
    flush_ms: Annotated[float, typer.Option(
        "--flush-ms", min=0, max=common.MAX_SECONDS * 1000, metavar="MS",
        help="When following: append waiting lines this long after the first of them arrived.")] = FLUSH_MS,
    on_error: Annotated[OnError, typer.Option(
        "--on-error", case_sensitive=False,
        help="A bad line: stop (exit 5) or send it to the dead-letter stream NAME.dead and go on.")]
        = OnError.stop,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success.")] = False,
    url: UrlOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Append one item, or items from stdin: JSON lines (one object per line; blank lines
    skipped) or CSV.

    Prints the offsets given to the new items. A line that is not an item streamlog can
    store is reported with its line number (exit 5), or dead-lettered (--on-error dead-letter).
    """
    settings = global_settings(ctx, url, None, verbose)
    chosen = fmt if fmt is not None else (settings.format.value if settings.format is not None else None)
    try:
        input_format = InputFormat((chosen or "json").lower())
    except ValueError:
        raise typer.BadParameter(f"append reads json (JSON lines) or csv, not {chosen!r}", ctx,
                                 param_hint="'--format'") from None
    check_name(name)
    client = common.client(settings)  # fail fast on a bad URL or an unreachable server
    nested = client.store.nested_arrays
    if item is not None and item != "-":
        if fmt is not None and input_format == InputFormat.csv:
            raise UsageError("--format csv applies to stdin; the JSON argument is one JSON object", ctx)
        if follow:
            raise UsageError("--follow applies to stdin, not to a JSON argument", ctx)
        parsed = parse_json(item, "the JSON argument", nested)  # before creating the stream
        offset = client.stream(name).append(parsed)
        if not quiet:
            typer.echo(f"appended 1 item to {name} at offset {offset}")
        return

    kind = stdin_kind()
    following = follow if follow is not None else kind in ("pipe", "tty")
    if kind == "tty":
        what = "CSV (a header row first)" if input_format == InputFormat.csv else "JSON lines"
        typer.echo(f"{PROG}: reading {what} from stdin for {name!r} (Ctrl-D to end)", err=True)
    source = typer.get_binary_stream("stdin")
    if following:
        source = _own_reader(source)
    lines = parsed_lines(source, input_format, nested)
    stop = on_error == OnError.stop
    if following:
        tally = append_following(client, name, lines, stop, batch_size or BATCH_FOLLOW, flush_ms)
    else:
        tally = append_whole(client, name, lines, stop, batch_size or BATCH_WHOLE, quiet)
    client.stream(name)  # an input without items still creates the stream
    if not quiet:
        typer.echo(tally.summary())
