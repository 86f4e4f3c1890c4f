"""One replica of a ``streamlog up`` stage: its state across restarts, how its process is
started, and what its status reports say.

Each replica of a consumer stage is ``python -m streamlog.apps.stage`` (:mod:`.stage`),
reporting its counters as JSON lines on a pipe of its own; a command stage is its program
(``python`` as the first word means this interpreter), run through
``python -m streamlog.apps.stage --exec`` in the pipeline file's directory. Every replica
gets ``STREAMLOG_URL``, runs in its own session and process group (so a Ctrl-C reaches
the runner only, and the runner can signal the whole group), and has its stdout and
stderr on one pipe, which the runner forwards line by line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ..config import mask_url
from .spec import Stage
from .stage import FD_VARIABLE


def exit_text(code: int) -> str:
    """How a process ended, from its exit code (negative: the signal that killed it)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class Replica:
    """One process of a stage, across its restarts."""

    stage: Stage
    index: int
    label: str
    url: str
    proc: subprocess.Popen | None = None  # while running
    state: str = "waiting"  # waiting, running, backoff, finished, stopping, stopped, failed
    restarts: int = 0
    crashes: deque = field(default_factory=deque)
    error: str | None = None
    run_error: str | None = None  # reported by the current process
    next_start: float = 0.0
    reported: bool = False  # the current process has reported at least once
    fatal: bool = False
    stop_sent: bool = False
    done: dict = field(default_factory=lambda: {"windows": 0, "items": 0, "out": 0})  # earlier processes
    now: dict = field(default_factory=lambda: {"windows": 0, "items": 0, "out": 0})  # the current one
    rate: float | None = None
    mark: tuple[float, int] = (0.0, 0)
    pipes: dict = field(default_factory=dict)  # fd -> [kind, partial line]

    def total(self, key: str) -> int:
        return self.done[key] + self.now[key]

    @property
    def alive(self) -> bool:
        return self.proc is not None

    def launch(self, directory: Path) -> tuple[int, dict[int, str]]:
        """Start the replica's process (``directory``: the pipeline file's); returns its
        pid (also its process group's id) and the read ends of its pipes,
        ``{fd: "out" | "status"}``. Raises :class:`OSError` when the process cannot be
        started, its pipes closed."""
        stage = self.stage
        status_r = status_w = None
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONUNBUFFERED="1", STREAMLOG_URL=self.url, STREAMLOG_STAGE=stage.name,
                   STREAMLOG_REPLICA=str(self.index), STREAMLOG_RUNNER_PID=str(os.getpid()),
                   PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
        cwd: str | None
        pass_fds: tuple[int, ...]
        if stage.kind == "command":
            command = list(stage.runs)
            if command[0] in ("python", "python3"):
                command[0] = sys.executable
            args = [sys.executable, "-m", "streamlog.apps.stage", "--exec", *command]
            cwd, pass_fds = str(directory), ()
        else:
            status_r, status_w = os.pipe()
            env[FD_VARIABLE] = str(status_w)
            config = {"stage": stage.as_dict(), "url": self.url, "directory": str(directory)}
            args = [sys.executable, "-m", "streamlog.apps.stage", json.dumps(config)]
            cwd, pass_fds = None, (status_w,)
        out_r, out_w = os.pipe()
        try:
            proc = self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w, env=env,
                                         cwd=cwd, pass_fds=pass_fds, start_new_session=True)
        except OSError:
            for fd in (out_r, status_r):
                if fd is not None:
                    os.close(fd)
            self.proc = None
            raise
        finally:
            os.close(out_w)
            if status_w is not None:
                os.close(status_w)
        self.state, self.reported, self.stop_sent, self.run_error = "running", False, False, None
        self.now = {"windows": 0, "items": 0, "out": 0}
        return proc.pid, {out_r: "out"} if status_r is None else {out_r: "out", status_r: "status"}

    def report(self, text: str) -> None:
        """Take in one line of the status pipe: its counters, its error (URLs masked),
        whether the error is fatal. A line that is not a JSON object is ignored."""
        try:
            message = json.loads(text)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        self.reported = True
        for key in ("windows", "items", "out"):
            if isinstance(message.get(key), int):
                self.now[key] = message[key]
        if message.get("error"):
            self.error = self.run_error = mask_url(str(message["error"]))
        if message.get("fatal"):
            self.fatal = True

    def exited(self) -> None:
        """The process is gone: its counters join those of the earlier processes."""
        self.proc = None
        for key in self.done:
            self.done[key] += self.now[key]
            self.now[key] = 0
