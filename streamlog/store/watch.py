"""Wake-ups when a database file changes: Linux inotify, through ctypes.

An idle consumer of the embedded backend sleeps in ``select`` on an inotify
descriptor watching the database's directory, and wakes as soon as another process
commits (every commit writes the ``-wal`` file). That costs nothing while idle and
reacts in well under a millisecond. Where inotify is not available (other systems,
exhausted watch limits) :func:`file_watch` returns None and consumers poll instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import sys
from pathlib import Path

_IN_MODIFY, _IN_MOVED_TO, _IN_CREATE = 0x2, 0x80, 0x100
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
_libc = None


def _load_libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


class FileWatch:
    """Tells when a SQLite database file (or its WAL / journal) was written.

    :meth:`interrupt` (any thread, or a signal handler) ends a wait at once, so a waiter
    can sleep until its next deadline instead of waking to check for a stop."""

    #: :meth:`interrupt` ends a :meth:`wait` at once
    interruptible = True

    def __init__(self, fd: int, names: set[bytes]):
        self._fd = fd
        self._names = names
        self._wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def interrupt(self) -> None:
        """End the current (or the next) :meth:`wait` at once."""
        try:
            os.eventfd_write(self._wakeup, 1)
        except OSError:  # closed meanwhile, or the counter is full: a wake-up is pending anyway
            pass

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True as soon as the database was written (or
        :meth:`interrupt` was called: the caller looks again)."""
        readable, _, _ = select.select([self._fd, self._wakeup], [], [], max(0.0, timeout))
        if not readable:
            return False
        if self._wakeup in readable:
            try:
                os.eventfd_read(self._wakeup)
            except BlockingIOError:
                pass
            return True
        try:
            buf = os.read(self._fd, 65536)
        except BlockingIOError:
            return False
        i = 0
        while i + _EVENT.size <= len(buf):
            _, _, _, length = _EVENT.unpack_from(buf, i)
            name = buf[i + _EVENT.size: i + _EVENT.size + length].rstrip(b"\0")
            i += _EVENT.size + length
            if name in self._names:
                return True
        return False  # another file in the directory: not ours

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            os.close(self._wakeup)
            self._fd = self._wakeup = -1


def file_watch(path: Path) -> FileWatch | None:
    """A watch on the database at ``path``, or None where inotify cannot be used."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = _load_libc()
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None
        directory = os.fsencode(os.path.dirname(os.path.abspath(path)))
        if libc.inotify_add_watch(fd, directory, _IN_MODIFY | _IN_CREATE | _IN_MOVED_TO) < 0:
            os.close(fd)
            return None
    except (OSError, AttributeError):
        return None
    base = os.fsencode(os.path.basename(path))
    return FileWatch(fd, {base, base + b"-wal", base + b"-journal"})
