"""What every route of one app shares: the :class:`Service` (one client, the hub, the model
cache, the options), reached from a request as :func:`service`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

if TYPE_CHECKING:  # pragma: no cover
    from ..client import Client
    from ..stream import Stream
    from .auth import Sessions
    from .hub import Hub
    from .models import ModelCache

#: default largest request body (bytes): ``--max-body``
DEFAULT_MAX_BODY = 16 * 1024 * 1024


@dataclass
class Service:
    """The state of one app: created by :func:`~streamlog.serve.app.create_app`."""

    client: "Client"
    hub: "Hub"
    models: "ModelCache"
    token: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    sessions: "Sessions | None" = None  # the dashboard's login sessions (with a token)
    follow_limiter: Any = None  # anyio.CapacityLimiter of followers' reads (follow.reads)
    _streams: dict[str, "Stream"] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def store(self):
        return self.client.store

    def producer(self, name: str, fresh: bool = False) -> "Stream":
        """A cached handle to append to ``name`` (created if need be, as ``streamlog.stream``
        does); ``fresh``: make a new one (the cached stream was dropped)."""
        stream = None if fresh else self._streams.get(name)
        if stream is None:
            stream = self.client.stream(name)
            with self._lock:
                self._streams[name] = stream
        return stream

    def known(self, name: str) -> bool:
        """Whether this server holds a producer handle on ``name`` (so the stream exists)."""
        return name in self._streams

    def existing(self, name: str) -> "Stream":
        """A handle on a stream that must exist (reads never create one): 404 otherwise."""
        return self.client.get(name)

    def forget(self, name: str) -> None:
        with self._lock:
            self._streams.pop(name, None)


def service(request: Request) -> Service:
    return request.app.state.service

