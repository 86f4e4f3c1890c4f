"""Shared helpers of the benchmark suite: items, statistics, child processes, FerretDB, machine info."""

from __future__ import annotations

import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------
# items


def make_items(n: int, seed: int = 1, start: int = 0) -> list[dict]:
    """``n`` small sensor-like items (5 fields: an int, three floats, a short string)."""
    rnd = random.Random(seed + start)
    return [
        {"i": start + k, "x1": rnd.random(), "x2": rnd.random(), "y": rnd.random(), "sensor": f"s-{k % 7}"}
        for k in range(n)
    ]


# ---------------------------------------------------------------------------
# MongoDB round trips

#: the driver's handshakes and monitoring: not a call's round trips
DRIVER_COMMANDS = ("ping", "hello", "isMaster", "ismaster", "buildInfo", "endSessions")


def store_commands():
    """A pymongo command listener recording the commands a store sends in ``sent``, as
    ``(command, collection, filter keys)``, leaving out the driver's own and the producers'
    wake-up signals (``wakeups``: sent from a background thread, never waited for)."""
    from pymongo import monitoring

    class StoreCommands(monitoring.CommandListener):
        def __init__(self):
            self.sent: list[tuple[str, str, tuple]] = []

        def started(self, event):
            name = event.command_name
            target = event.command.get(name)
            if name in DRIVER_COMMANDS or target == "wakeups":
                return
            keys = tuple(event.command.get("filter", {})) if name == "find" else ()
            self.sent.append((name, target if isinstance(target, str) else "", keys))

        def succeeded(self, event):
            pass

        def failed(self, event):
            pass

    return StoreCommands()


# ---------------------------------------------------------------------------
# statistics


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def percentile(values, q: float):
    """Nearest-rank percentile (q in 0..100)."""
    values = sorted(values)
    if not values:
        return None
    k = max(0, min(len(values) - 1, int(round(q / 100 * len(values) + 0.5)) - 1))
    return values[k]


# ---------------------------------------------------------------------------
# child processes: every one is registered, and cleanup() ends them all


_children: list = []  # subprocess.Popen or multiprocessing.Process
_tempdirs: list[str] = []


def register(proc):
    _children.append(proc)
    return proc


def tempdir(prefix: str) -> str:
    path = tempfile.mkdtemp(prefix=prefix)
    _tempdirs.append(path)
    return path


def _alive(proc) -> bool:
    if hasattr(proc, "poll"):
        return proc.poll() is None
    return proc.is_alive()


def stop_process(proc, timeout: float = 5.0) -> None:
    """SIGTERM, wait, then SIGKILL one registered process (ours, by its handle)."""
    if proc is None or not _alive(proc):
        return
    proc.terminate()
    deadline = time.monotonic() + timeout
    while _alive(proc) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(proc):
        proc.kill()
    try:
        proc.wait(timeout) if hasattr(proc, "wait") else proc.join(timeout)
    except Exception:  # noqa: BLE001 - any failure is reported and the run goes on
        pass


def cleanup() -> None:
    while _children:
        stop_process(_children.pop())
    while _tempdirs:
        shutil.rmtree(_tempdirs.pop(), ignore_errors=True)


interrupted = False


def install_signal_handlers() -> None:
    """SIGINT (also when started in the background, where it is inherited as ignored) and
    SIGTERM unwind through the finally blocks, which clean up."""

    def on_signal(signum, frame):
        global interrupted
        interrupted = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


# ---------------------------------------------------------------------------
# FerretDB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_ferretdb(given: str | None = None) -> str | None:
    if given:
        return given if Path(given).exists() else None
    found = shutil.which("ferretdb")
    if found:
        return found
    candidates = []
    if shutil.which("go"):
        try:
            gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True, timeout=20).stdout.strip()
            if gopath:
                candidates.append(Path(gopath) / "bin" / "ferretdb")
        except (OSError, subprocess.SubprocessError):
            pass
    candidates.append(Path.home() / "go" / "bin" / "ferretdb")
    for c in candidates:
        if c.exists():
            return str(c)
    return None


class FerretDB:
    """A private FerretDB (SQLite handler) on 127.0.0.1, in a temporary state directory."""

    def __init__(self, binary: str):
        self.binary = binary
        self.state = tempdir("streamlog-bench-ferretdb-")
        self.port = free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}"
        self.log = open(Path(self.state) / "ferretdb.log", "wb")
        self.proc = register(subprocess.Popen(
            [binary, "--handler=sqlite", f"--sqlite-url=file:{self.state}/", f"--state-dir={self.state}",
             f"--listen-addr=127.0.0.1:{self.port}", "--debug-addr=-", "--telemetry=disable",
             "--log-level=error"],
            stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal must not kill it before we clean up
        ))
        self._wait()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait(self, timeout: float = 30.0) -> None:
        import pymongo

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ferretdb exited with {self.proc.returncode}: "
                                   f"{(Path(self.state) / 'ferretdb.log').read_text()[-2000:]}")
            try:
                client = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=500)
                client.admin.command("ping")
                client.close()
                return
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                last = exc
                time.sleep(0.1)
        raise RuntimeError(f"FerretDB did not answer at {self.url}: {last}")

    def version(self) -> str:
        try:
            out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=10).stdout
            for line in out.splitlines():
                if line.lower().startswith("version"):
                    return line.split(":", 1)[-1].strip()
            return out.splitlines()[0] if out else "?"
        except (OSError, subprocess.SubprocessError):
            return "?"

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


# ---------------------------------------------------------------------------
# the machine


def machine_info() -> dict:
    import psutil
    import pymongo

    import streamlog

    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = "?"
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip() or "?"
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if dirty:
            commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "pymongo": pymongo.version,
        "streamlog": streamlog.__version__,
        "commit": commit,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "argv": sys.argv,
    }
