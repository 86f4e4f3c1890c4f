"""Running the app under uvicorn (the production ASGI server): :func:`serve`.

* Binds ``127.0.0.1`` by default. Any address that is not loopback is refused without a
  token (``--token``), unless ``insecure=True`` (``--insecure``), which prints a warning.
* ``port=0`` takes a free port; the URL served is announced once bound.
* SIGTERM or Ctrl-C stop it gracefully: live followers (SSE) are ended first, then
  requests in flight finish (at most :data:`GRACE` seconds).
"""

from __future__ import annotations

import contextlib
import socket
import sys
from typing import Callable

import uvicorn

from ..config import mask_url
from ..listening import DEFAULT_HOST, check_exposure, listening_socket
from ..stopping import graceful_stop
from .context import DEFAULT_MAX_BODY

DEFAULT_PORT = 8765
GRACE = 5  # seconds requests in flight get to finish on shutdown


def check_bind(host: str, token: str | None, insecure: bool) -> str | None:
    """The exposure rule of :mod:`streamlog.listening` for HTTP: a non-loopback ``host``
    needs a token unless ``insecure``; returns the warning to print when serving openly,
    raises :class:`~streamlog.errors.StreamlogError` when refused."""
    return check_exposure(
        host, guarded=token is not None, insecure=insecure,
        refusal=f"refusing to serve on {host}, which is not a loopback address, without a token: "
                "give --token (or $STREAMLOG_TOKEN), or --insecure to serve anyone who can reach it",
        warning=f"serving on {host} WITHOUT a token (--insecure): anyone who can reach this port can read, "
                "append to and follow every stream")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (:func:`streamlog.listening.listening_socket`),
    inheritable as uvicorn expects of the sockets it is given."""
    sock = listening_socket(host, port)
    sock.set_inheritable(True)
    return sock


def address_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def serve(url: str | None = None, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
          insecure: bool = False, cors: str | list[str] | None = None, max_body: int = DEFAULT_MAX_BODY,
          announce: Callable[[str], None] | None = None, log_level: str = "warning") -> None:
    """Serve the database at ``url`` over HTTP until SIGTERM or Ctrl-C.

    ``announce(message)`` is told where it serves once it listens (default: a line on
    stderr). Raises :class:`StreamlogError` for a refused address or a port in use,
    before anything is served.
    """
    from .app import create_app

    say = announce or (lambda message: print(f"streamlog: {message}", file=sys.stderr, flush=True))
    warning = check_bind(host, token, insecure)
    app = create_app(url, token=token, cors=cors, max_body=max_body)
    sock = bind(host, port)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", server_header=False,
                            timeout_graceful_shutdown=GRACE, proxy_headers=False)
    started = f"serving {mask_url(app.state.url)} on {address_of(sock)} " \
              f"({'token required' if token else 'no token'}); Ctrl-C or SIGTERM stops"
    server = _Server(config, app.state.service.hub, lambda: say(started))
    if warning:
        say(f"warning: {warning}")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        app.state.service.client.close()


class _Server(uvicorn.Server):
    """uvicorn's server that announces itself once it listens (its signal handlers are in
    place by then), ends live followers before it waits for requests to finish (an SSE
    response never finishes by itself), and after SIGTERM or Ctrl-C returns normally
    (exit code 0, as streamlog's other long-running commands) instead of re-raising it.
    Its handlers are :func:`streamlog.stopping.graceful_stop`'s, calling uvicorn's
    ``handle_exit``: the first signal stops gracefully, a second Ctrl-C forces the exit."""

    def __init__(self, config: uvicorn.Config, hub, on_started: Callable[[], None]):
        super().__init__(config)
        self._hub = hub
        self._on_started = on_started

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()

    async def shutdown(self, sockets=None) -> None:
        self._hub.close()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self):
        with graceful_stop(lambda signum: self.handle_exit(signum, None)):
            yield
