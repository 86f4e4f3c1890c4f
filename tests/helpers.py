"""Helpers for tests that start other processes or wait for something to happen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


#: the driver's handshakes and monitoring: not a call's round trips
DRIVER_COMMANDS = ("ping", "hello", "isMaster", "ismaster", "buildInfo", "endSessions")


def store_commands():
    """A pymongo command listener recording the commands a store sends, as ``(command,
    collection)``, leaving out the driver's own and the producers' wake-up signals
    (``wakeups``: sent from a background thread, never waited for). Give it to a store as
    ``MongoStore(url, database, event_listeners=[listener])``; read ``listener.sent``."""
    from pymongo import monitoring

    class StoreCommands(monitoring.CommandListener):
        def __init__(self):
            self.sent: list[tuple[str, object]] = []

        def started(self, event):
            target = event.command.get(event.command_name)
            if target == 1:  # listCollections and the like: the collection is in the filter
                target = (event.command.get("filter") or {}).get("name")
            if event.command_name not in DRIVER_COMMANDS and target != "wakeups":
                self.sent.append((event.command_name, target))

        def succeeded(self, event):
            pass

        def failed(self, event):
            pass

    return StoreCommands()


def listened_client(url: str, listener):
    """A :class:`streamlog.Client` on the MongoDB database of ``url`` whose store reports
    every command to ``listener`` (the same backend, with a listener on its driver)."""
    import streamlog
    from streamlog.store.mongo import MongoStore

    client = streamlog.Client(url)
    client.store.close()
    client.store = MongoStore(url, url.rsplit("/", 1)[1], event_listeners=[listener])
    return client


def run_python(code: str, env_url: str, *args: str, timeout: float = 60, **popen) -> subprocess.Popen:
    """Start ``python -c code`` with STREAMLOG_URL set: a separate producer or consumer process."""
    env = dict(os.environ, STREAMLOG_URL=env_url, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, **popen)


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.02, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or the deadline passes (then fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@contextmanager
def reaped(proc: subprocess.Popen):
    """Use ``proc``; if it is still running when the block ends (a failed assertion),
    kill it and wait for it, so a test never leaves a process behind."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def windows_log(folder: Path) -> list[list[int]]:
    """The windows a test consumer module recorded in ``folder/windows.log`` (one JSON
    list of offsets per line), oldest first; none before the file exists."""
    log = folder / "windows.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
