"""``streamlog group ls|reset|delete``: a stream's consumer groups, over the public group
handles (``Stream.groups()``, ``Stream.get_group()``, ``group.info()``, ``group.reset()``,
``group.delete()``)."""

from __future__ import annotations

from typing import Annotated

import typer

from streamlog.names import check_name
from streamlog.tables import table

from . import common
from .app import app
from .common import (
    FormatOption,
    JsonOption,
    NameArgument,
    UrlOption,
    VerboseOption,
    YesOption,
    confirm,
    examples,
    global_settings,
    offset_or,
    output_format,
    remember,
)
from .output import Format, plural, ts, write_csv, write_json_lines

group_app = typer.Typer(
    name="group",
    help="A stream's consumer groups: list them, move one to another offset, delete one.",
    epilog=examples(
        "streamlog group ls sensors",
        "streamlog group ls sensors --format json",
        "streamlog group reset sensors kmeans --to earliest   # process everything again",
        "streamlog group reset sensors kmeans --to latest --yes",
        "streamlog group delete sensors kmeans --yes",
        note="--url, --format and -v may also come before the command (streamlog --url U group ls NAME).",
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(group_app, name="group")

GroupArgument = Annotated[str, typer.Argument(metavar="GROUP", show_default=False,
                                              help="The consumer group (must exist).")]
# Columns of `group ls`: the table's headers and the keys of the JSON and CSV records.
COLUMNS = (("GROUP", "group"), ("START", "start"), ("PENDING", "pending"), ("CLAIMED", "claimed"),
           ("FAILED", "failed"), ("DEAD", "dead"), ("NEXT", "next_offset"), ("WINDOWS", "windows"),
           ("CREATED", "created"))


@group_app.callback()
def _group(ctx: typer.Context, url: UrlOption = None, fmt: FormatOption = None,
           verbose: VerboseOption = False) -> None:
    """Global options given between ``group`` and its command."""
    remember(ctx, url, fmt, verbose)


def group_record(stream_name: str, handle, state: dict | None = None) -> dict:
    """A group as ``group ls`` shows it (``state``: its ``info()``, when already known)."""
    state = state or handle.info()
    return {"stream": stream_name, "group": handle.name, "start": handle.start,
            "pending": state["pending"], "claimed": state["claimed"], "failed": state["failed"],
            "dead": state["dead"], "next_offset": state["next_offset"], "windows": state["windows"],
            "created": handle.created}


@group_app.command("ls", epilog=examples(
    "streamlog group ls sensors",
    "streamlog group ls sensors --format json | jq 'select(.pending > 0) | .group'",
    "streamlog group ls sensors --format csv",
))
def ls_command(ctx: typer.Context, name: NameArgument, url: UrlOption = None, fmt: FormatOption = None,
               as_json: JsonOption = False, verbose: VerboseOption = False) -> None:
    """List a stream's consumer groups: where each started, its pending, claimed, failed and
    dead-lettered items, its next offset, windows run, and when it was created.

    Read-only. --format json prints one object per group and line; csv a header row and one
    row per group."""
    settings = global_settings(ctx, url, fmt, verbose)
    out = output_format(settings, as_json)
    stream = common.existing_client(ctx, settings.url).get(name)
    # One Stream.info() for every group: it counts the dead letters once, not once per group.
    states = stream.info()["groups"]
    records = [group_record(name, handle, states.get(handle.name)) for handle in stream.groups()]
    if out == Format.json:
        write_json_lines(records)
    elif out == Format.csv:
        write_csv([key for _, key in COLUMNS], ([r[key] for _, key in COLUMNS] for r in records))
    else:
        typer.echo(table([header for header, _ in COLUMNS],
                         ([ts(r[key]) if key == "created" else r[key] for _, key in COLUMNS] for r in records),
                         right=[header for header, _ in COLUMNS[1:-1]]))


@group_app.command("reset", epilog=examples(
    "streamlog group reset sensors kmeans --to earliest   # process every kept item again",
    "streamlog group reset sensors kmeans --to latest     # skip the backlog",
    "streamlog group reset sensors kmeans --to 1000 --yes",
    note="Asks first on a terminal; off one (scripts, cron, CI) it needs --yes.",
))
def reset_command(
    ctx: typer.Context,
    name: NameArgument,
    group: GroupArgument,
    to: Annotated[str, typer.Option(
        "--to", metavar="OFFSET|earliest|latest", show_default=False, callback=offset_or("earliest", "latest"),
        help="The group's next offset: an offset, earliest (the oldest kept item) or latest "
             "(after the newest).")],
    yes: YesOption = False,
    url: UrlOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Move a consumer group to another offset: it next processes the items from there on
    (earlier ones again, or skipping a backlog)."""
    settings = global_settings(ctx, url, None, verbose)
    check_name(group, "group")
    stream = common.existing_client(ctx, settings.url).get(name)
    handle = stream.get_group(group)
    before = handle.info()
    confirm(ctx, yes, f"reset group {group} of {name}",
            lambda: f"Reset group {group} of {name} (next offset {before['next_offset']}, "
                    f"{before['pending']} pending) to {to}?",
            "not reset")
    offset = handle.reset(to=to)
    typer.echo(f"reset group {group} of {name} to offset {offset} (was {before['next_offset']})")


@group_app.command("delete", epilog=examples(
    "streamlog group delete sensors kmeans        # asks first",
    "streamlog group delete sensors kmeans --yes  # in scripts",
    note="Its dead letters stay in the dead-letter stream; its saved models are not touched.",
))
def delete_command(
    ctx: typer.Context,
    name: NameArgument,
    group: GroupArgument,
    yes: YesOption = False,
    url: UrlOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Delete a consumer group with its progress: a consumer using that name later starts
    it anew."""
    settings = global_settings(ctx, url, None, verbose)
    check_name(group, "group")
    stream = common.existing_client(ctx, settings.url).get(name)
    handle = stream.get_group(group)
    confirm(ctx, yes, f"delete group {group} of {name}",
            lambda: f"Delete group {group} of {name} with its {plural(handle.info()['pending'], 'pending item')}?",
            "not deleted")
    handle.delete()
    typer.echo(f"deleted group {group} of {name}")
