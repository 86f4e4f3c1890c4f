"""Where and how streamlog listens for connections: the one home of the rules that
``streamlog serve`` (HTTP) and the TCP bridges (``streamlog listen``/``publish``) share.

* :func:`parse_tcp_address`: ``tcp://HOST:PORT`` (also ``tcp://:PORT``, ``HOST:PORT``)
  → ``(host, port)``; no host means :data:`DEFAULT_HOST`, port 0 any free port.
* :func:`is_loopback`: ``localhost`` or a loopback IP address (names are never resolved).
* :func:`check_exposure`, the exposure rule: a socket on an address that is not loopback
  is only opened when it is *guarded* (a token; for the TCP bridges also an allow-list of
  client networks) or when the caller opens it *on purpose* (``serve --insecure``), in
  which case it gets a warning to print. Otherwise it is refused with the caller's
  one-line message — before any socket exists.
* :func:`listening_socket`: bind and listen, the same way for every server: IPv4 or
  IPv6 (``localhost`` means 127.0.0.1), ``SO_REUSEADDR`` (a restarted server can take its
  port back at once), a backlog of :data:`BACKLOG`, and the socket closed again when
  binding or listening fails, so a failure never leaks a descriptor.

Only :mod:`streamlog.errors` is imported: the HTTP server and the bridges both depend
on this module, never on each other.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from .errors import StreamlogError

#: the host every server binds when none is given: loopback only
DEFAULT_HOST = "127.0.0.1"
#: connections the kernel queues before they are accepted (capped by net.core.somaxconn);
#: uvicorn's default, enough for a burst of clients reconnecting at once
BACKLOG = 2048


def parse_tcp_address(address: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` (``tcp://:PORT`` and ``HOST:PORT`` too) → ``(host, port)``;
    no host means :data:`DEFAULT_HOST`, port 0 any free port. ``[v6]`` hosts are returned
    without brackets. Raises a one-line :class:`StreamlogError` ("bad TCP address …")."""
    if not isinstance(address, str):
        raise StreamlogError(f"a TCP address is a string like tcp://127.0.0.1:9000, not {type(address).__name__}")
    text = address.strip()
    if "://" not in text:
        text = "tcp://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise StreamlogError(f"bad TCP address {address!r}: {exc}") from None
    if (parts.scheme.lower() != "tcp" or port is None or parts.path not in ("", "/") or parts.query
            or parts.fragment or parts.username is not None or parts.password is not None):
        raise StreamlogError(f"bad TCP address {address!r}: use tcp://HOST:PORT (port 0: any free port)")
    return parts.hostname or DEFAULT_HOST, port


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address (names are not resolved:
    any other name counts as reachable from elsewhere)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def host_port(host: str, port: int | str) -> str:
    """``host:port``, or ``[host]:port`` for an IPv6 address: for messages."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_exposure(host: str, *, guarded: bool, refusal: str, insecure: bool = False,
                   warning: str | None = None) -> str | None:
    """The exposure rule (module docstring). Returns None when ``host`` is loopback or the
    socket is ``guarded``; returns ``warning`` when it is opened ``insecure``\\ ly on
    purpose; else raises :class:`StreamlogError` with ``refusal`` (one line, worded by
    the caller: it names the caller's own options). Nothing is bound either way."""
    if is_loopback(host) or guarded:
        return None
    if insecure:
        return warning
    raise StreamlogError(refusal)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (module docstring: IPv4/IPv6, ``SO_REUSEADDR``,
    :data:`BACKLOG`; port 0: a free one, see ``getsockname()``). Raises a one-line
    :class:`StreamlogError` ("cannot listen on …") when the address cannot be used; the
    socket is closed again on any failure."""
    where = host_port(host, port)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            DEFAULT_HOST if host.lower() == "localhost" else host, port,
            type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StreamlogError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise StreamlogError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return sock


__all__ = ["BACKLOG", "DEFAULT_HOST", "check_exposure", "host_port", "is_loopback", "listening_socket",
           "parse_tcp_address"]
