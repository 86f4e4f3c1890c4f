"""Connections: :func:`connect` and the process-wide cache behind :func:`streamlog.stream`."""

from __future__ import annotations

import os
import threading

from .config import mask_url, resolve_url
from .errors import UnknownStreamError
from .names import check_name, did_you_mean
from .store import Store, open_store


class Client:
    """A handle on one database (MongoDB or an embedded SQLite file).

    Thread-safe; share one per process (``streamlog.connect`` does that for you).
    """

    def __init__(self, url: str | None = None, timeout: float | None = None, create: bool = True):
        """``create=False``: only look (read-only commands); a missing embedded database
        file raises :class:`~streamlog.errors.NoDatabaseError` instead of being created."""
        self.url = resolve_url(url)
        self.store: Store = open_store(self.url, timeout=timeout, create=create)

    def stream(self, name: str, *, max_items: int | None = None, max_age: float | None = None) -> "Stream":
        """Get or create a stream. ``max_items`` / ``max_age`` (seconds) set its retention."""
        from .stream import Stream

        check_name(name)
        record = self.store.create_stream(name)
        stream = Stream(self, name, record)
        if max_items is not None or max_age is not None:
            stream.retain(max_items=max_items, max_age=max_age)
        return stream

    def get(self, name: str) -> "Stream":
        """An existing stream; :class:`UnknownStreamError` when there is none by that name."""
        from .stream import Stream

        check_name(name)
        record = self.store.get_stream(name)
        if record is None:
            raise self.unknown_stream(name, f" at {mask_url(self.url)}")
        return Stream(self, name, record)

    def unknown_stream(self, name: str, where: str = "") -> UnknownStreamError:
        """The error for a stream ``name`` that does not exist, suggesting the closest
        existing name (``no stream named 'senors' (did you mean 'sensors'?)``)."""
        try:
            hint = did_you_mean(name, self.store.streams())
        except Exception:  # noqa: BLE001 - the suggestion is a courtesy: never hide the real error
            hint = ""
        return UnknownStreamError(f"no stream named {name!r}{hint}{where}")

    def streams(self) -> list[str]:
        """Names of all streams, sorted."""
        return self.store.streams()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<streamlog.Client {mask_url(self.url)}>"


_clients: dict[tuple[int, str], Client] = {}
_lock = threading.Lock()


def connect(url: str | None = None) -> Client:
    """The shared client for ``url`` (argument → ``STREAMLOG_URL`` → embedded default).

    One client per URL and process; a forked child gets its own.
    """
    resolved = resolve_url(url)
    key = (os.getpid(), resolved)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = Client(resolved)
    return client


from .stream import Stream  # noqa: E402  (cycle: Stream needs Client at runtime only)
