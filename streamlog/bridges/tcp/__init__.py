"""TCP line sockets: :class:`TCPListener` (clients send lines, the lines are appended) and
:class:`TCPPublisher` (clients receive a stream's items as JSON lines), like R's
``streamConnect`` socket reader/publisher.

One job per module:

* :mod:`.protocol` — the wire protocol: line framing, ``# ack``, the ``AUTH`` line, CSV records;
* :mod:`.access` — who may connect: token, allow-list, the exposure rule;
* :mod:`.server` — the asyncio server both bridges run on (bind, start/stop, waits);
* :mod:`.listener` — :class:`TCPListener`: lines in, batched appends, back-pressure;
* :mod:`.publisher` — :class:`TCPPublisher`: items out, one shared reader, per-client queues.

Security: by default both bind ``127.0.0.1``. A host that is not a loopback address is
refused (:class:`~streamlog.StreamlogError`, before anything is bound) unless ``token``
(every client's first line must be ``AUTH <token>``, compared in constant time) or
``allow`` (client IP addresses or networks; others get ``error forbidden``) is given.
Addresses, loopback and binding are :mod:`streamlog.listening`'s, shared with
``streamlog serve``; failures follow :mod:`streamlog.bridges.retry`.
"""

from ...listening import DEFAULT_HOST, is_loopback
from ...listening import parse_tcp_address as parse_address
from .listener import TCPListener
from .protocol import ACK, MAX_LINE
from .publisher import TCPPublisher

__all__ = ["ACK", "DEFAULT_HOST", "MAX_LINE", "TCPListener", "TCPPublisher", "is_loopback", "parse_address"]
