"""``streamlog run``: run a consumer function on windows of a stream, blocking or once."""

from __future__ import annotations

import enum
import sys
from typing import Annotated, Any, Callable, Optional

import typer

import streamlog
from streamlog.consumers.streaming import WINDOW_OPTIONS, StreamingTarget
from streamlog.targets import load_decorated

from .app import EXIT_DEAD_LETTERED, app
from .common import PROG, UrlOption, UsageError, duration, examples, global_settings, digits
from .output import offsets, plural, ts


class Start(str, enum.Enum):
    earliest = "earliest"
    latest = "latest"


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
    consume.sequential = callable(getattr(fn, "attach", None)) or getattr(fn, "sequential", False)  # type: ignore[attr-defined]
    if callable(getattr(fn, "on_start", None)):
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
    size: Annotated[Optional[int], typer.Option(
        "--size", parser=digits(1), metavar="N", show_default=False, help="Count windows of N items.")] = None,
    interval: Annotated[Optional[float], typer.Option(
        "--interval", min=0.001, callback=duration, metavar="SECONDS", show_default=False,
        help="Time windows of SECONDS, aligned on the UTC clock (with --relaxed: "
             "everything pending, every SECONDS).")] = None,
    relaxed: Annotated[bool, typer.Option("--relaxed", help="Relaxed time windows (with --interval).")] = False,
    timeout: Annotated[Optional[float], typer.Option(
        "--timeout", min=0.0, callback=duration, metavar="SECONDS", show_default=False,
        help="With --size: emit a partial window once its oldest item has waited this long.")] = None,
    step: Annotated[Optional[int], typer.Option(
        "--step", parser=digits(1), metavar="N", show_default=False,
        help="With --size: sliding windows, one every N new items, each the last --size items.")] = None,
    every: Annotated[Optional[float], typer.Option(
        "--every", min=0.001, callback=duration, metavar="SECONDS", show_default=False,
        help="With --interval: sliding windows, one every SECONDS, each the last --interval seconds.")] = None,
    gap: Annotated[Optional[float], typer.Option(
        "--gap", min=0.001, callback=duration, metavar="SECONDS", show_default=False,
        help="Session windows: a window closes once no item arrived for SECONDS.")] = None,
    group: Annotated[str, typer.Option("--group", "-g", metavar="GROUP", help="Consumer group.")] = "default",
    sink: Annotated[Optional[str], typer.Option(
        "--sink", metavar="STREAM", show_default=False,
        help="Append the function's non-None return values to this stream.")] = None,
    once: Annotated[bool, typer.Option(
        "--once", help="Process the windows that are ready now, print how many, and exit (cron mode).")] = False,
    max_windows: Annotated[Optional[int], typer.Option(
        "--max-windows", parser=digits(1), metavar="N", show_default=False,
        help="Stop after N windows.")] = None,
    lease: Annotated[float, typer.Option("--lease", min=0.001, callback=duration, metavar="SECONDS",
                                         help="Claim lease; renewed while the function runs.")] = 30.0,
    max_retries: Annotated[int, typer.Option("--max-retries", parser=digits(0), metavar="N",
                                             help="Retries of a failing window before it is dead-lettered.")] = 3,
    retry_delay: Annotated[float, typer.Option(
        "--retry-delay", min=0.0, callback=duration, metavar="SECONDS",
        help="Wait before retrying a failed window, doubling per attempt (0: retry at once).")] = 0.5,
    start: Annotated[Start, typer.Option("--start", help="Where a new group starts.")] = Start.earliest,
    workers: Annotated[int, typer.Option(
        "--workers", parser=digits(1), metavar="N",
        help="Run up to N windows at once on N threads (each with its own lease; committed in any "
             "order). Learners need 1.")] = 1,
    time_field: Annotated[Optional[str], typer.Option(
        "--time-field", metavar="FIELD", show_default=False,
        help="Time windows on this item field (event time) instead of the append time.")] = None,
    key: Annotated[Optional[str], typer.Option(
        "--key", metavar="FIELD", show_default=False,
        help="Keyed windows: each value of this item field gets its own windows (same rules per value).")] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Print a line on stderr for every window, info-level logs, and the "
                                "underlying cause of an error.")] = False,
    url: UrlOption = None,
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
    windowed = [size, interval, gap].count(None) != 3 or any(
        given(ctx, option) for option in ("relaxed", "timeout", "step", "every"))
    if windowed:
        check_window_flags(ctx, size, interval, gap, relaxed, timeout, step, every)
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
        check_window_flags(ctx, size, interval, gap, relaxed, timeout, step, every)
    if verbose:
        fn = _logged(fn)
    flags: dict[str, Any] = dict(group=group, start=start.value, sink=sink, lease=lease, max_retries=max_retries,
                                 retry_delay=retry_delay, max_windows=max_windows, workers=workers,
                                 time_field=time_field, key=key)
    options = {k: v for k, v in decorated.items() if k not in WINDOW_OPTIONS or not windowed}
    options.update({k: v for k, v in flags.items() if given(ctx, k) or k not in options})
    if once or "blocking" not in options:
        options["blocking"] = not once
    if url is not None or "url" not in options:
        options["url"] = url
    if windowed and gap is not None:
        options.update(gap=gap)
    elif windowed and size is not None:
        options.update(size=size, timeout=timeout, step=step)
    elif windowed:
        options.update(interval=interval, relaxed=relaxed, every=every)
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


def check_window_flags(ctx: typer.Context, size, interval, gap, relaxed, timeout, step, every) -> None:
    """The window flags of ``run``: exactly one of --size, --interval, --gap, and the flags
    that refine one of them only with it."""
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
