"""``streamlog run``: run a consumer function on windows of a stream, blocking or once."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Callable, Optional

import typer

import streamlog
from streamlog.consumers.streaming import StreamingTarget
from streamlog.hooks import StartsUp, runs_in_order
from streamlog.loading import load_decorated
from streamlog.options import STRATEGY

from .app import EXIT_DEAD_LETTERED, app
from .common import PROG, UrlOption, UsageError, examples, global_settings
from .output import offsets, plural, ts
from .run_flags import option_values, with_option_flags


def _logged(fn: Callable) -> Callable:
    """``fn`` that first prints a line about each window on stderr (``run --verbose``)."""

    def consume(window):
        ids = window.offsets
        span = offsets(ids[0], ids[-1]) if ids else "-"
        key = "" if window.key is None else f"key {window.key!r}, "
        typer.echo(f"{PROG}: window #{window.seq}: {key}{plural(len(window), 'item')}, offsets {span}, "
                   f"{ts(window.start)} .. {ts(window.end)}", err=True)
        return fn(window)

    # a learner's sequential state still refuses --workers > 1 through the wrapper, and a
    # predict stage still waits for its first model before any window is claimed
    consume.sequential = runs_in_order(fn)  # type: ignore[attr-defined]
    if isinstance(fn, StartsUp):
        consume.on_start = fn.on_start  # type: ignore[attr-defined]
    return consume


@app.command("run", epilog=examples(
    "streamlog run consumer:consume --stream sensors --size 60",
    "streamlog run jobs/report.py:main -s sensors --interval 60 --once",
    "streamlog run models:kmeans -s sensors --size 100 --group kmeans",
    "streamlog run stats:average -s sensors --interval 300 --every 10",
    note="The function gets a Window (window.data, window.frame(), window.offsets, ...); "
         "a return value other than None is appended to the --sink stream. A window whose "
         "function raises is retried, then moved to the dead-letter stream NAME.dead (see streamlog redrive).",
))
@with_option_flags
def run_command(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(
        metavar="MODULE:FUNCTION", show_default=False,
        help="The consumer: a dotted module importable from the current directory, or a path to a "
             ".py file, then : and a function (or any callable) in it.")],
    stream: Annotated[Optional[str], typer.Option(
        "--stream", "-s", metavar="NAME", show_default=False,
        help="The stream to consume (created if it does not exist). Default: the stream of "
             "the function's @streaming decorator.")] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Print a line on stderr for every window, info-level logs, and the "
                                "underlying cause of an error.")] = False,
    url: UrlOption = None,
    **flags: Any,
) -> None:
    """Run a consumer function on windows of a stream.

    Blocking by default: runs until Ctrl-C or SIGTERM, finishes and commits the current
    window, prints how many windows it processed and exits 0. With --once, processes only
    the windows ready now (cron mode), and exits 6 if it moved items to the dead-letter
    stream NAME.dead (saying how many on stderr).

    FUNCTION may be decorated with @streamlog.streaming(...): importing the module then
    does not start it, and the decorator's stream and options apply where no flag is given.
    """
    settings = global_settings(ctx, url, None, verbose)
    verbose, url = settings.verbose, settings.url
    windowed = any(given(ctx, name) for name in STRATEGY if name in flags)
    if windowed:
        check_window_flags(ctx, flags)
    import logging

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s streamlog %(levelname)s: %(message)s")
    fn = load_decorated(target)
    decorated: dict[str, Any] = {}
    if isinstance(fn, StreamingTarget):  # @streaming in the module: its options are the defaults
        decorated, stream, fn = dict(fn.options), stream or fn.name, fn.fn
    if stream is None:
        raise UsageError("Missing option '--stream' / '-s' (the stream to consume).", ctx)
    if not windowed and not decorated:
        check_window_flags(ctx, flags)
    if verbose:
        fn = _logged(fn)
    options = _merged(ctx, option_values(flags), decorated, windowed)
    if url is not None or "url" not in options:
        options["url"] = url
    consumer = streamlog.streaming(stream, **options)
    group, blocking = options["group"], options["blocking"]
    if blocking:
        typer.echo(f"{PROG}: consuming {stream} with {target} ({consumer.emitter!r}, group {group}); "
                   "Ctrl-C or SIGTERM stops after the current window", err=True)
    processed = consumer.apply(fn)
    run = consumer.consumer
    failed = run.failed if run is not None else 0
    extra = f", {plural(failed, 'failed attempt')}" if failed else ""
    typer.echo(f"{plural(processed, 'window')} processed (stream {stream}, group {group}{extra})")
    dead = getattr(run, "dead_lettered", 0) if run is not None else 0
    if dead:
        typer.echo(f"{PROG}: {plural(dead, 'item')} in {plural(run.dead_windows, 'window')} moved to the "
                   f"dead-letter stream {run.dead_stream}", err=True)
        if not blocking:
            raise typer.Exit(EXIT_DEAD_LETTERED)


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the option ``name`` was given on the command line (not left at its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _merged(ctx: typer.Context, values: dict[str, Any], decorated: dict[str, Any], windowed: bool) -> dict:
    """The ``streaming()`` options of a run: a flag given wins; else the decorator's
    option; else the flag's default. Window strategy flags replace the decorator's whole
    strategy; ``--once`` only ever turns blocking off."""
    options = {k: v for k, v in decorated.items() if k not in STRATEGY or not windowed}
    for name, value in values.items():
        if name in STRATEGY:
            if windowed:
                options[name] = value
        elif name == "blocking":
            if not value or name not in options:
                options[name] = value
        elif given(ctx, name) or name not in options:
            options[name] = value
    return options


def check_window_flags(ctx: typer.Context, flags: dict[str, Any]) -> None:
    """The window flags of ``run``: exactly one of --size, --interval, --gap, and the flags
    that refine one of them only with it (``WindowOptions.validate`` checks the rest)."""
    size, interval, gap, relaxed = flags["size"], flags["interval"], flags["gap"], flags["relaxed"]
    step, every, timeout, grace, max_size = (flags[k] for k in ("step", "every", "timeout", "grace", "max_size"))
    if [size, interval, gap].count(None) != 2:
        raise UsageError("give exactly one of --size N, --interval SECONDS or --gap SECONDS", ctx)
    if step is not None and size is None:
        raise typer.BadParameter("--step needs --size", ctx, param_hint="'--step'")
    if every is not None and (interval is None or relaxed):
        raise typer.BadParameter("--every needs --interval (without --relaxed)", ctx, param_hint="'--every'")
    if relaxed and interval is None:
        raise typer.BadParameter("--relaxed needs --interval", ctx, param_hint="'--relaxed'")
    if timeout is not None and (size is None or step is not None):
        raise typer.BadParameter("--timeout applies to count windows (--size, without --step)", ctx,
                                 param_hint="'--timeout'")
    if grace is not None and (interval is None or relaxed):
        raise typer.BadParameter("--grace applies to time windows (--interval, without --relaxed)", ctx,
                                 param_hint="'--grace'")
    if max_size is not None and not (gap is not None or relaxed):
        raise typer.BadParameter("--max-size applies to relaxed time windows (--interval --relaxed) and "
                                 "session windows (--gap)", ctx, param_hint="'--max-size'")
