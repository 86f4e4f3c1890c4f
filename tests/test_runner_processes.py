"""`streamlog up` leaves no process behind: whole process groups are stopped (SIGTERM,
then SIGKILL after ``stop_timeout``), and the guardian ends them when the runner itself
is killed — grandchildren, stages that ignore SIGTERM and stages stuck in a window too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from helpers import wait_until
from test_cli import subprocess_env

import streamlog

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and /proc: Linux")

STAGES = '''\
import os
import time


def hang(window):
    open(os.environ["HUNG"], "w").close()
    time.sleep(3600)
'''

STUBBORN = '''\
import signal
import sys
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1], "w").close()
time.sleep(float(sys.argv[2]))
'''


def _app(tmp_path: Path, stop_timeout: float, body: str) -> Path:
    (tmp_path / "stages.py").write_text(STAGES)
    (tmp_path / "stubborn.py").write_text(STUBBORN)
    path = tmp_path / "app.toml"
    path.write_text(f"stop_timeout = {stop_timeout}\n\n" + textwrap.dedent(body))
    return path


def _gone(process: psutil.Process) -> bool:
    """Ended: no such process any more (or another one with its pid), or a zombie."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


class Tree:
    """The runner's process and every descendant seen so far (they are re-parented when
    the runner dies, so they are recorded while it runs)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.root = psutil.Process(proc.pid)
        self.seen: dict[int, psutil.Process] = {}

    def look(self) -> list[psutil.Process]:
        try:
            found = self.root.children(recursive=True)
        except psutil.NoSuchProcess:
            found = []
        for process in found:
            self.seen.setdefault(process.pid, process)
        return found

    def running(self, command: str) -> bool:
        """Whether a descendant runs ``command`` (its whole command line)."""
        return any(_cmdline(p) == command for p in self.look() if not _gone(p))

    def alive(self) -> list[str]:
        return [f"{p.pid} {_cmdline(p)}" for p in self.seen.values() if not _gone(p)]

    def kill_all(self) -> None:
        """Clean up after a failed test: SIGKILL what is left, by pid."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for process in self.seen.values():
            if not _gone(process):
                try:
                    process.kill()
                except psutil.Error:
                    pass


@contextmanager
def _running(path: Path, url: str, **env: str):
    proc = subprocess.Popen([sys.executable, "-m", "streamlog.cli", "up", str(path), "--url", url,
                             "--status-every", "0"], env=dict(subprocess_env(url), **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tree = Tree(proc)
    try:
        yield tree
    finally:
        tree.kill_all()
        for stream in (proc.stdout, proc.stderr):
            stream.close()


def _rows(out: str) -> dict[str, list[str]]:
    lines = out.strip().splitlines()
    return {line.split()[0]: line.split(None, 9)[1:] for line in lines[1:]}


def test_sigterm_ends_a_command_stage_with_its_grandchildren(sqlite_url, tmp_path):
    path = _app(tmp_path, 5, """\
        [stages.shell]
        command = ["sh", "-c", "sleep 333.123 & wait"]

        [stages.done]
        command = ["sh", "-c", "sleep 333.789 & echo $! > background.pid"]
        """)
    with _running(path, sqlite_url) as tree:
        wait_until(lambda: tree.running("sleep 333.123"), timeout=15, message="the grandchild sleep")
        # a command that finished (exit 0) leaves nothing behind in its group either
        pid = int(wait_until(lambda: (tmp_path / "background.pid").exists() and
                             (tmp_path / "background.pid").read_text().strip(), timeout=15, message="the pid"))
        try:
            left = tree.seen.setdefault(pid, psutil.Process(pid))  # killed at the end if need be
            wait_until(lambda: _gone(left) or "333.789" not in _cmdline(left), timeout=10,
                       message="the finished command's background sleep ended")
        except psutil.NoSuchProcess:
            pass
        assert tree.proc.poll() is None
        tree.proc.send_signal(signal.SIGTERM)
        out, err = tree.proc.communicate(timeout=15)
        assert tree.proc.returncode == 0, err
        wait_until(lambda: not tree.alive(), timeout=5, message="every descendant ended")
    rows = _rows(out)
    assert rows["shell"][1] == "stopped" and rows["done"][1] == "finished", out


def test_after_the_runner_is_killed_every_descendant_ends_within_stop_timeout(sqlite_url, tmp_path):
    """The grandchild of a command, a consumer stuck in its window and a program that
    ignores SIGTERM: all gone soon after a SIGKILL of the runner."""
    path = _app(tmp_path, 1, f"""\
        [stages.shell]
        command = ["sh", "-c", "sleep 333.456 & wait"]

        [stages.stubborn]
        command = ["python", "stubborn.py", "{tmp_path / 'stubborn.ready'}", "333.457"]

        [stages.hang]
        stream = "numbers"
        function = "stages:hang"
        """)
    streamlog.connect(sqlite_url).stream("numbers").append({"x": 1})
    with _running(path, sqlite_url, HUNG=str(tmp_path / "hung")) as tree:
        wait_until(lambda: (tmp_path / "stubborn.ready").exists() and (tmp_path / "hung").exists()
                   and tree.running("sleep 333.456"), timeout=20, message="every stage running")
        tree.look()
        assert len(tree.seen) >= 4, tree.alive()  # sh, sleep, stubborn, hang (and the guardian)
        os.kill(tree.proc.pid, signal.SIGKILL)
        tree.proc.wait(timeout=5)
        killed = time.monotonic()
        wait_until(lambda: not tree.alive(), timeout=1 + 5, message="every descendant ended")
        assert time.monotonic() - killed < 1 + 5


def test_a_stage_that_ignores_sigterm_is_killed_after_stop_timeout(sqlite_url, tmp_path):
    path = _app(tmp_path, 1, f"""\
        [stages.stubborn]
        command = ["python", "stubborn.py", "{tmp_path / 'one.ready'}", "333.1"]

        [stages.shell]
        command = ["sh", "-c", "'{sys.executable}' stubborn.py two.ready 333.2 & wait"]
        """)
    with _running(path, sqlite_url) as tree:
        wait_until(lambda: (tmp_path / "one.ready").exists() and (tmp_path / "two.ready").exists(),
                   timeout=20, message="both stubborn programs running")
        tree.look()
        started = time.monotonic()
        tree.proc.send_signal(signal.SIGTERM)
        out, err = tree.proc.communicate(timeout=15)
        assert tree.proc.returncode == 0, err
        assert time.monotonic() - started < 1 + 5
        wait_until(lambda: not tree.alive(), timeout=5, message="every descendant ended")
    rows = _rows(out)
    assert rows["stubborn"][1] == "stopped" and "did not stop in time" in rows["stubborn"][8], out
    assert rows["shell"][1] == "stopped", out


def test_after_the_runner_is_killed_a_consumer_still_finishes_its_window(sqlite_url, tmp_path):
    """The guardian's SIGTERM is one graceful stop: the window in progress is committed,
    nothing is left claimed, nothing is processed twice."""
    path = _app(tmp_path, 10, """\
        [stages.slow]
        stream = "numbers"
        function = "stages:slow"
        size = 5
        sink = "done"
        """)
    (tmp_path / "stages.py").write_text(STAGES + textwrap.dedent('''

        def slow(window):
            time.sleep(0.3)
            return [{"source": o} for o in window.offsets]
        '''))
    client = streamlog.connect(sqlite_url)
    client.stream("numbers").extend([{"x": i} for i in range(200)])
    with _running(path, sqlite_url) as tree:
        wait_until(lambda: "done" in client.streams() and len(client.get("done")) >= 10, timeout=20,
                   message="a few windows done")
        tree.look()
        os.kill(tree.proc.pid, signal.SIGKILL)
        tree.proc.wait(timeout=5)
        wait_until(lambda: not tree.alive(), timeout=10, message="the stage stopped")
    assert client.store.open_claims("numbers", "slow") == []
    done = [r["data"]["source"] for r in client.get("done").read(0, None)]
    assert len(done) == len(set(done)) and len(done) < 200
