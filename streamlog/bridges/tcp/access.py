"""Who may use a TCP bridge: :class:`AccessPolicy`.

A bridge on a loopback address admits every local client. On any other address it must
be guarded — a ``token`` (every client's first line is ``AUTH <token>``) or ``allow``
(client IP addresses or networks; others are answered ``error forbidden``) — or it is
refused before anything is bound (the exposure rule of :mod:`streamlog.listening`).
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from ...errors import StreamlogError
from ...listening import check_exposure
from .protocol import auth_line_ok, token_bytes


def allowed_networks(allow: str | Iterable[str] | None) -> list:
    """``allow`` (comma-separated text or an iterable of addresses/networks) as IP
    networks; [] for None. Raises a one-line :class:`StreamlogError` for a bad entry or
    an empty list."""
    if allow is None:
        return []
    entries = allow.split(",") if isinstance(allow, str) else list(allow)
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise StreamlogError(f"allow: {entry!r} is not an IP address or network (like 10.0.0.0/8)") from None
    if not networks:
        raise StreamlogError("allow is empty: give client addresses or networks, or leave it out")
    return networks


class AccessPolicy:
    """The token and allow-list of a bridge listening on ``host``. Constructing it
    checks both and applies the exposure rule, so a refused bridge never binds."""

    def __init__(self, host: str, *, token: str | None, allow: str | Iterable[str] | None):
        self.token = token_bytes(token)
        self.allow = allowed_networks(allow)
        check_exposure(host, guarded=self.token is not None or bool(self.allow), refusal=(
            f"refusing to listen on {host}, which is not a loopback address: give a token "
            "(clients send 'AUTH <token>' first) or allow (client addresses/networks)"))

    @property
    def needs_auth(self) -> bool:
        """Whether a client must send ``AUTH <token>`` first."""
        return self.token is not None

    def admits(self, host: str) -> bool:
        """Whether a client at IP address ``host`` may connect (always, without allow)."""
        if not self.allow:
            return True
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.allow)

    def auth_ok(self, line: bytes) -> bool:
        """Whether ``line`` authenticates (constant time); any line does without a token."""
        return self.token is None or auth_line_ok(line, self.token)
