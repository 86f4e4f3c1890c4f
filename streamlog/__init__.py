"""streamlog: a durable stream log in MongoDB (or an embedded SQLite file) with window
emitters that feed windows of items to Python consumer functions.

    import streamlog
    stream = streamlog.stream("sensors")
    stream.append({"x1": 0.3, "x2": 0.1, "y": 0.5})

    @streamlog.streaming("sensors", size=60)
    def consume(window):
        print(window.frame().describe())
"""

from __future__ import annotations

from .client import Client, connect
from .consumers.streaming import StreamingFunction, streaming
from .emitters import (
    CountWindow,
    Emitter,
    FixedTimeWindow,
    RelaxedTimeWindow,
    SessionWindow,
    SlidingCountWindow,
    SlidingTimeWindow,
)
from .errors import (
    BadItemError,
    BadNameError,
    BadURLError,
    ConsumerError,
    IdempotencyError,
    KeyBusyError,
    KeyReusedError,
    MissingFieldError,
    StreamlogError,
    UnknownStreamError,
    UnreachableError,
)
from .learners.predictor import Predictor
from .stream import Stream
from .window import Window

__version__ = "0.1.0"


def stream(name: str, url: str | None = None, *, max_items: int | None = None,
           max_age: float | None = None) -> Stream:
    """Get or create the stream ``name``.

    ``url``: ``mongodb://host/db`` or ``sqlite:///file.db``; None → ``STREAMLOG_URL`` → the
    embedded default file. ``max_items`` / ``max_age`` (seconds) set a retention bound.
    """
    return connect(url).stream(name, max_items=max_items, max_age=max_age)


__all__ = [
    "stream", "connect", "streaming", "Client", "Stream", "Window", "StreamingFunction", "Predictor",
    "Emitter", "CountWindow", "FixedTimeWindow", "RelaxedTimeWindow", "SlidingCountWindow",
    "SlidingTimeWindow", "SessionWindow",
    "StreamlogError", "BadItemError", "BadNameError", "BadURLError", "UnreachableError",
    "UnknownStreamError", "ConsumerError", "MissingFieldError", "IdempotencyError", "KeyReusedError",
    "KeyBusyError", "__version__",
]
