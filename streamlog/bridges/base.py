"""What every bridge shares: a blocking ``run`` with graceful stop, counters, and a
one-line status every few seconds.

A bridge subclass implements :meth:`Bridge.serve`, which runs until ``self.stopping``
is set (check it at least every 0.1 s, or wait on ``self.stop_event``), and updates
its :class:`Counters`. ``run()`` installs SIGINT/SIGTERM handlers (main thread only)
that set the stop event, starts the status printer, calls ``serve`` and returns once
it has returned: a bridge stops only after everything it received and acknowledged
is in the log.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

from ..stopping import graceful_stop

log = logging.getLogger("streamlog")

#: seconds between status lines
STATUS_EVERY = 5.0


@dataclass
class Counters:
    """What a bridge did. ``received`` messages/lines/documents in, ``stored`` of them
    appended, ``sent`` out (sinks, publishers), ``errors`` (bad input, reconnects),
    ``lag`` (seconds between a message's origin time and its append, last seen)."""

    received: int = 0
    stored: int = 0
    sent: int = 0
    errors: int = 0
    lag: float | None = None
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **amounts: float) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def snapshot(self) -> dict:
        with self._lock:
            return {"received": self.received, "stored": self.stored, "sent": self.sent,
                    "errors": self.errors, "lag": self.lag, "seconds": time.monotonic() - self.started}


class Bridge:
    """Base class: subclasses implement :meth:`serve` and set :attr:`name` (for status lines)."""

    name = "bridge"

    def __init__(self, *, status_every: float | None = STATUS_EVERY, status_stream: TextIO | None = None):
        self.counters = Counters()
        self.stop_event = threading.Event()
        self.status_every = status_every
        self.status_stream = status_stream
        self._previous: dict | None = None

    # -- control ---------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def stop(self) -> None:
        """Ask the bridge to finish what it holds and return from :meth:`run`. Thread-safe."""
        self.stop_event.set()

    def serve(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self) -> dict:
        """Serve until :meth:`stop`, SIGINT or SIGTERM; returns the final counters."""
        def on_signal(signum: int) -> None:
            log.info("signal %d: stopping the %s", signum, self.name)
            self.stop_event.set()

        with graceful_stop(on_signal):
            printer = None
            if self.status_every:
                printer = threading.Thread(target=self._print_status, name="streamlog-status", daemon=True)
                printer.start()
            try:
                self.serve()
            finally:
                self.stop_event.set()
                if printer is not None:
                    printer.join(1)
        return self.counters.snapshot()

    # -- status ----------------------------------------------------------------

    def status_line(self) -> str:
        """``<name>: 1234 received, 1234 stored, 0 sent (250/s), 0 errors, lag 0.010 s``.

        The rate is messages received plus sent per second since the previous status
        line (since the start for the first); ``lag -`` until a lag was measured.
        Subclasses may append to the line (the collection source adds ``, mode …``)."""
        now = self.counters.snapshot()
        before = self._previous or {"received": 0, "sent": 0, "seconds": 0.0}
        self._previous = now
        span = max(1e-9, now["seconds"] - before["seconds"])
        rate = (now["received"] - before["received"] + now["sent"] - before["sent"]) / span
        lag = "-" if now["lag"] is None else f"{now['lag']:.3f} s"
        return (f"{self.name}: {now['received']} received, {now['stored']} stored, {now['sent']} sent "
                f"({rate:.0f}/s), {now['errors']} errors, lag {lag}")

    def _print_status(self) -> None:
        out = self.status_stream or sys.stderr
        while not self.stop_event.wait(self.status_every):
            print(self.status_line(), file=out, flush=True)
