"""The pipes of ``streamlog up``'s children, read without blocking supervision: their
output (stdout and stderr, one pipe) and a consumer stage's status reports, split into
lines (a partial line waits for its end; the last one is taken at end of file) and
handed to the runner as ``on_line(replica, kind, text)``, ``kind`` ``"out"`` or
``"status"``."""

from __future__ import annotations

import os
import selectors
import time
from typing import Callable

from .replica import Replica

#: what becomes of one line read from a child: ``(replica, "out" | "status", text)``
OnLine = Callable[[Replica, str, str], None]


class ChildPipes:
    """Every open pipe of the children, on one selector."""

    def __init__(self, on_line: OnLine):
        self.on_line = on_line
        self._selector = selectors.DefaultSelector()

    def add(self, replica: Replica, fds: dict[int, str]) -> None:
        """Watch a freshly started replica's pipes (``{fd: kind}``), made non-blocking."""
        for fd, kind in fds.items():
            os.set_blocking(fd, False)
            replica.pipes[fd] = [kind, b""]
            self._selector.register(fd, selectors.EVENT_READ, replica)

    def pump(self, timeout: float) -> None:
        """Read whatever the children wrote (for up to ``timeout`` seconds of waiting)."""
        if not self._selector.get_map():
            time.sleep(timeout)
            return
        for key, _ in self._selector.select(timeout):
            self._read(key.data, key.fd)

    def drain(self, replica: Replica) -> None:
        """Read what an exited process left in its pipes, then close them (the rest of a
        pipe a grandchild still holds open is not waited for)."""
        for fd in list(replica.pipes):
            while fd in replica.pipes and self._read(replica, fd):
                pass
        for fd in list(replica.pipes):
            self._forget(replica, fd)

    def close(self) -> None:
        self._selector.close()

    def _read(self, replica: Replica, fd: int) -> bool:
        """Read one chunk from ``fd``; False when there is nothing to read now, or at end
        of file (the pipe is then closed)."""
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        kind, partial = replica.pipes[fd]
        data = partial + chunk
        lines = data.split(b"\n")
        if chunk:
            replica.pipes[fd][1] = lines.pop()
        elif lines and lines[-1] == b"":
            lines.pop()
        for line in lines:
            self.on_line(replica, kind, line.decode("utf-8", "replace").rstrip("\r"))
        if not chunk:
            self._forget(replica, fd)
            return False
        return True

    def _forget(self, replica: Replica, fd: int) -> None:
        self._selector.unregister(fd)
        os.close(fd)
        del replica.pipes[fd]
