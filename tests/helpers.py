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
