"""``streamlog redrive``: put a stream's dead letters back on a stream (``Stream.redrive``)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from streamlog.names import check_name

from . import common
from .app import app
from .common import NameArgument, UrlOption, VerboseOption, digits, examples, global_settings
from .output import plural


@app.command("redrive", epilog=examples(
    "streamlog redrive sensors                   # every dead letter, back onto sensors",
    "streamlog redrive sensors --group kmeans --limit 100",
    "streamlog redrive sensors --to sensors.retry",
    note="A dead letter is re-driven once: running it again re-drives only newer ones.",
))
def redrive_command(
    ctx: typer.Context,
    name: NameArgument,
    group: Annotated[Optional[str], typer.Option(
        "--group", "-g", metavar="GROUP", show_default=False,
        help="Only the dead letters of this consumer group.")] = None,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", parser=digits(1), metavar="N", show_default=False,
        help="At most N dead letters (the oldest first).")] = None,
    to: Annotated[Optional[str], typer.Option(
        "--to", metavar="STREAM", show_default=False,
        help="Append them to this stream instead of NAME.")] = None,
    url: UrlOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Re-drive dead letters: append the items that consumers gave up on (in the dead-letter
    stream NAME.dead) again, to NAME or to --to STREAM, so that they are processed anew."""
    settings = global_settings(ctx, url, None, verbose)
    if group is not None:
        check_name(group, "group")
    if to is not None:
        check_name(to)
    stream = common.existing_client(ctx, settings.url).get(name)
    count = stream.redrive(group=group, limit=limit, to=to)
    which = f" (group {group})" if group is not None else ""
    typer.echo(f"re-drove {plural(count, 'dead letter')} of {name}{which} to {to or name}")
