"""The guardian of ``streamlog up``: ends every stage's process group when the runner dies.

Each stage replica runs in a process group of its own (its own session). The runner
stops a group with SIGTERM, then SIGKILL after ``stop_timeout`` seconds; but a runner
that is killed itself (SIGKILL, the OOM killer, a crash) can stop nothing. The
parent-death signal of Linux is no answer: it reaches the runner's direct child only
(not what a command stage starts, nor a program a shell runs), it is one signal (a
stage that ignores it, or hangs in a window, stays), and a thread in the stage cannot
help a command stage (it execs another program).

So the runner starts one guardian, a separate small process (standard library only,
``python -I -S guardian.py STOP_TIMEOUT``, in a session of its own so a Ctrl-C or a
signal to the runner's process group does not reach it), and tells it on a pipe (its
stdin) the groups it starts (``+PGID``) and the ones it has finished with (``-PGID``).
The runner holds the only write end, so end of file on that pipe is a reliable sign
that the runner is gone, however it ended. Then the guardian sends SIGTERM to every
group still known, waits until they are empty or ``STOP_TIMEOUT`` seconds have
passed, SIGKILLs what is left and exits. After a normal stop the runner has finished
with every group and closes the pipe: the guardian exits at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

#: seconds between two checks that the groups are empty
POLL = 0.05


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid`` (0: only check it); False when the group has
    no process left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # only a stranger's process would answer this: not ours any more
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs. A zombie does not count: an orphan
    that died is re-parented to PID 1, which in a container may never reap it (it then
    stays a group member for ``kill``). Linux: read from /proc; elsewhere: ``kill(0)``."""
    if not signal_group(pgid, 0):
        return False
    try:
        names = os.listdir("/proc")
    except OSError:
        return True
    if "self" not in names:
        return True
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as file:
                stat = file.read()
        except OSError:  # it just ended
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # state, ppid, pgrp, … (the name may hold spaces)
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
            return True
    return False


def end_groups(groups, grace: float) -> None:
    """SIGTERM every group, SIGKILL those not empty ``grace`` seconds later."""
    alive = {g for g in groups if signal_group(g, signal.SIGTERM)}
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(POLL)
        alive = {g for g in alive if group_alive(g)}
    for group in alive:
        signal_group(group, signal.SIGKILL)


def watch(lifeline, grace: float) -> None:
    """Follow the runner's messages on ``lifeline`` (a binary file) until end of file,
    then end the groups it left."""
    groups: set[int] = set()
    for line in iter(lifeline.readline, b""):
        text = line.strip()
        try:
            pgid = int(text[1:])
        except ValueError:
            continue
        if pgid <= 1:  # never signal a whole session's worth by mistake
            continue
        if text[:1] == b"+":
            groups.add(pgid)
        elif text[:1] == b"-":
            groups.discard(pgid)
    end_groups(groups, grace)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    grace = float(argv[0]) if argv else 30.0
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    watch(sys.stdin.buffer, grace)
    return 0


class Guardian:
    """The runner's side: starts the guardian, tells it about groups, closes the pipe."""

    def __init__(self, grace: float):
        self.grace = grace
        self.proc: subprocess.Popen | None = None
        self._fd: int | None = None

    def start(self) -> Guardian:
        read, write = os.pipe()  # both close-on-exec: no stage inherits the write end
        try:
            self.proc = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__), repr(self.grace)],
                                         stdin=read, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True)
        except OSError:
            os.close(write)
            raise
        finally:
            os.close(read)
        os.set_blocking(write, False)  # a stopped guardian must never block the runner
        self._fd = write
        return self

    def _send(self, text: str) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, text.encode())  # one short write: atomic on a pipe
        except (BlockingIOError, BrokenPipeError, OSError):
            pass

    def add(self, pgid: int) -> None:
        self._send(f"+{pgid}\n")

    def remove(self, pgid: int) -> None:
        self._send(f"-{pgid}\n")

    def close(self) -> None:
        """Close the pipe: the guardian ends what is still registered (nothing, after a
        normal stop) and exits; wait for it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=self.grace + 5)
            except subprocess.TimeoutExpired:  # it cannot be stuck for long: make sure
                self.proc.kill()
                self.proc.wait()
            self.proc = None


if __name__ == "__main__":
    sys.exit(main())
