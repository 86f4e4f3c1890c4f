"""Graceful stop on SIGINT (Ctrl-C) and SIGTERM: the one mechanism of streamlog's
long-running commands (``streamlog run``, ``up``, ``serve``, ``bridge``, ``append`` from a
pipe, ``tail -f``).

Guarantees of :func:`graceful_stop`:

* While its block runs on the main thread, SIGINT and SIGTERM call ``stop(signum)``; on
  leaving the block (however it is left) the handlers that were in place before are back.
  On any other thread (Python lets only the main thread install handlers) it changes
  nothing: the caller is stopped by its own ``stop()`` method instead.
* ``stop`` runs inside the signal handler, between two bytecodes of the main thread: it
  sets a flag or an event checked between units of work (a window, a batch), or raises
  to interrupt the main thread where that is harmless (``tail -f`` only reads).
* With ``abort``, the first signal calls ``stop`` and a second one restores the previous
  handlers (a third gets Python's default) and calls ``abort(signum)``, which raises —
  the consumer runtime's ``SystemExit(128 + signal)``, 130 for Ctrl-C, no traceback.
  Without it, every signal calls ``stop`` (the command decides what a second one means).
* With ``notice``, the first signal says what happens: a Ctrl-C (someone at the
  terminal) writes ``streamlog: <notice>`` to stderr (``(Ctrl-C again to abort)`` added
  when there is an ``abort``); a SIGTERM (a supervisor) logs ``signal 15: <notice>`` at
  INFO on the ``streamlog`` logger.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterator

log = logging.getLogger("streamlog")

#: the signals that stop a long-running command
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def say(text: str) -> None:
    """Write ``text`` to stderr from a signal handler: straight to the file descriptor, as
    the handler may run while the main thread is inside a write to ``sys.stderr``. Never
    raises: when stderr is closed or busy the stop happens anyway, unannounced."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # replaced by an object without a descriptor
        fd = None
    try:
        if fd is None:
            sys.stderr.write(text)
        else:
            os.write(fd, text.encode("utf-8", "replace"))
    except (OSError, ValueError, RuntimeError):
        pass


@contextlib.contextmanager
def graceful_stop(stop: Callable[[int], None], *, abort: Callable[[int], None] | None = None,
                  notice: str | None = None) -> Iterator[bool]:
    """SIGINT and SIGTERM call ``stop(signum)`` while the block runs (see the module
    docstring for ``abort`` and ``notice``); yields whether the handlers were installed
    (False off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous: dict[int, Any] = {}
    received: list[int] = []

    def restore() -> None:
        while previous:
            sig, old = previous.popitem()
            signal.signal(sig, old if old is not None else signal.SIG_DFL)

    def handler(signum: int, frame: Any) -> None:
        if received and abort is not None:
            restore()
            abort(signum)
            return
        first = not received
        received.append(signum)
        stop(signum)
        if first and notice is not None:
            if signum == signal.SIGINT:
                say(f"streamlog: {notice}{' (Ctrl-C again to abort)' if abort is not None else ''}\n")
            else:
                log.info("signal %d: %s", signum, notice)

    for sig in SIGNALS:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield True
    finally:
        restore()
