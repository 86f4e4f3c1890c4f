"""``streamlog serve``: the HTTP API and the live dashboard (see docs/serve.md)."""

from __future__ import annotations

import re
from typing import Annotated, Optional

import typer

from .app import app
from .common import UrlOption, VerboseOption, examples, global_settings

_SIZE = re.compile(r"(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """Bytes in ``text``: ``1048576``, ``512k``, ``16M``, ``1GiB`` (powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or int(match.group(1)) < 1:
        raise typer.BadParameter(f"{text!r} is not a size (e.g. 16M, 512k, 1048576)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()[:1]]


@app.command("serve", epilog=examples(
    "streamlog serve                                  # http://127.0.0.1:8765/ (dashboard at /)",
    "streamlog serve --port 9000 --url mongodb://db-host/iot",
    "STREAMLOG_TOKEN=$(openssl rand -hex 32) streamlog serve --host 0.0.0.0",
    "curl -H 'Content-Type: application/json' -d '[{\"x\": 1}]' http://127.0.0.1:8765/streams/sensors/items",
    note="Binds 127.0.0.1 unless --host says otherwise; any other address needs --token (clients "
         "send 'Authorization: Bearer TOKEN') or --insecure.",
))
def serve_command(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", metavar="ADDRESS", help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, metavar="PORT",
                                      help="The port (0: any free port, printed).")] = 8765,
    token: Annotated[Optional[str], typer.Option(
        "--token", metavar="TOKEN", show_default=False, envvar="STREAMLOG_TOKEN",
        help="Require 'Authorization: Bearer TOKEN' (or the dashboard's login) on every request but "
             "/healthz.")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Serve a non-loopback address without a token (prints a warning).")] = False,
    cors: Annotated[Optional[list[str]], typer.Option(
        "--cors", metavar="ORIGIN", show_default=False,
        help="Allow browser pages from ORIGIN (repeatable) to call the API; none by default.")] = None,
    max_body: Annotated[str, typer.Option(
        "--max-body", metavar="SIZE", help="The largest request body (413 above it): bytes, or 512k, 16M.")] = "16M",
    url: UrlOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Serve the database over HTTP: ingest (JSON or NDJSON, idempotent retries), read and
    follow streams (Server-Sent Events), the model service (summaries, predictions),
    Prometheus /metrics, /healthz, and the live dashboard at /.

    Runs in the foreground until Ctrl-C or SIGTERM (exit code 0)."""
    from streamlog.errors import StreamlogError
    from streamlog.serve.auth import check_token
    from streamlog.serve.server import check_bind, serve

    settings = global_settings(ctx, url, None, verbose)
    limit = parse_size(max_body)
    try:
        check_token(token)
    except StreamlogError as exc:
        raise typer.BadParameter(str(exc), ctx, param_hint="'--token'") from None
    try:
        check_bind(host, token, insecure)
    except StreamlogError as exc:
        raise typer.BadParameter(str(exc), ctx, param_hint="'--host'") from None
    serve(settings.url, host=host, port=port, token=token, insecure=insecure, cors=cors or None, max_body=limit,
          log_level="info" if settings.verbose else "warning")
