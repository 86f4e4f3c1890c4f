"""Changing a stream that exists: ``trim`` (delete old items) and ``drop`` (delete the stream)."""

from __future__ import annotations

import re
from typing import Annotated, Optional

import typer

from streamlog.names import dead_letter_stream

from . import common
from .app import app
from .common import (
    NameArgument,
    UrlOption,
    UsageError,
    VerboseOption,
    YesOption,
    confirm,
    digits,
    examples,
    global_settings,
)
from .output import offsets, plural

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


def remaining(stream) -> str:
    first, last = stream.read(0, limit=1), stream.tail(1)
    if not first or not last:
        return "empty"
    return f"offsets {offsets(first[0]['offset'], last[0]['offset'])} remain"


@app.command("trim", epilog=examples(
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
        "--before", parser=digits(0), metavar="OFFSET", show_default=False,
        help="Delete the items with a smaller offset.")] = None,
    older_than: Annotated[Optional[str], typer.Option(
        "--older-than", metavar="DURATION", show_default=False,
        help="Delete the items appended longer ago: 90 or 90s, 15m, 2h, 7d, 1h30m.")] = None,
    url: UrlOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Delete old items from a stream (exactly one of --processed, --before, --older-than)."""
    settings = global_settings(ctx, url, None, verbose)
    chosen = [flag for flag, given in (("--processed", processed), ("--before", before is not None),
                                       ("--older-than", older_than is not None)) if given]
    if len(chosen) != 1:
        raise UsageError("give exactly one of --processed, --before OFFSET, --older-than DURATION"
                         + (f" (got {' and '.join(chosen)})" if chosen else ""), ctx)
    try:
        seconds = parse_duration(older_than) if older_than is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), ctx, param_hint="'--older-than'") from None
    stream = common.existing_client(ctx, settings.url).get(name)
    if processed:
        deleted = stream.trim(processed=True)
    elif before is not None:
        deleted = stream.trim(before=before)
    else:
        deleted = stream.trim(older_than=seconds)
    typer.echo(f"trimmed {plural(deleted, 'item')} from {name} ({remaining(stream)})")


@app.command("drop", epilog=examples(
    "streamlog drop scratch        # asks first",
    "streamlog drop scratch --yes  # in scripts",
    note="The dead-letter stream NAME.dead, if any, is a stream of its own and is kept.",
))
def drop_command(
    ctx: typer.Context,
    name: NameArgument,
    yes: YesOption = False,
    url: UrlOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Delete a stream with all its items, consumer groups and saved models."""
    settings = global_settings(ctx, url, None, verbose)
    client = common.existing_client(ctx, settings.url)
    stream = client.get(name)
    confirm(ctx, yes, f"drop {name}",
            lambda: f"Drop stream {name} with its {plural(len(stream), 'item')}, groups and saved models?",
            "not dropped")
    stream.drop()
    typer.echo(f"dropped {name}")
    dead = dead_letter_stream(name)
    if dead in client.streams():
        typer.echo(f"note: its dead-letter stream {dead} is kept (streamlog drop {dead} removes it)", err=True)
