"""``streamlog run MODULE:FUNCTION`` on a module whose function carries the
``@streamlog.streaming(...)`` decorator (the README's consumer.py), and how a blocking
consumer — ``streamlog run`` or the decorator in a script — answers Ctrl-C: the first
stops after the current window (exit 0), a second exits at once (130, no traceback)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import reaped, wait_until, windows_log
from test_cli import LineReader, fails, streamlog_process, subprocess_env

import streamlog
from streamlog.errors import ConsumerError
from streamlog.loading import load_callable, load_decorated

DECORATED = '''
import json
import pathlib
import time

import streamlog

HERE = pathlib.Path(__file__).parent


def record(window):
    with open(HERE / "windows.log", "a") as f:
        f.write(json.dumps(window.offsets) + "\\n")


@streamlog.streaming("sensors", size=4, group="deco")   # runs until Ctrl-C when imported by a script
def consume(window):
    record(window)


@streamlog.streaming("sensors", size=1)
def gated(window):
    """Holds each window until the test creates the file 'go'."""
    (HERE / "started").touch()
    deadline = time.monotonic() + 60
    while not (HERE / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    record(window)
'''

SCRIPT = '''
import json
import pathlib
import time

import streamlog

HERE = pathlib.Path(__file__).parent


@streamlog.streaming("sensors", size=1)
def gated(window):
    (HERE / "started").touch()
    deadline = time.monotonic() + 60
    while not (HERE / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(HERE / "windows.log", "a") as f:
        f.write(json.dumps(window.offsets) + "\\n")

print("script went on with", gated, "windows", flush=True)
'''


@pytest.fixture
def jobs(tmp_path) -> Path:
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "decorated_mod.py").write_text(DECORATED)
    (folder / "decorated_script.py").write_text(SCRIPT)
    return folder


def run_cli(args: list[str], url: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamlog.cli", *args], cwd=cwd, env=subprocess_env(url),
                          capture_output=True, text=True, timeout=60)


# ---------------------------------------------------------------------------
# streamlog run on a decorated function


def test_run_a_decorated_function_with_the_command_flags(url, jobs):
    streamlog.connect(url).stream("sensors").extend([{"i": i} for i in range(10)])
    proc = run_cli(["run", "decorated_mod:consume", "--size", "3", "--group", "g", "--once", "--max-windows", "2"],
                   url, jobs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == ["2 windows processed (stream sensors, group g)"]
    assert windows_log(jobs) == [[0, 1, 2], [3, 4, 5]]  # --size 3, not the decorator's size=4
    assert streamlog.connect(url).get("sensors").info()["pending"] == {"default": 10, "g": 4}  # no 'deco'


def test_run_a_decorated_function_takes_the_decorator_options_as_defaults(url, jobs, tmp_path):
    streamlog.connect(url).stream("sensors").extend([{"i": i} for i in range(10)])
    # from another folder, by path: the decorator's stream, size=4 and group="deco"
    proc = run_cli(["run", str(jobs / "decorated_mod.py") + ":consume", "--once"], url, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == ["2 windows processed (stream sensors, group deco)"]
    assert windows_log(jobs) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # --stream given: the decorator's stream is replaced, its window options still apply
    streamlog.connect(url).stream("other").extend([{"i": i} for i in range(5)])
    proc = run_cli(["run", "decorated_mod:consume", "-s", "other", "--once"], url, jobs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == ["1 window processed (stream other, group deco)"]


def test_loading_a_decorated_function_does_not_consume(url, jobs, monkeypatch):
    monkeypatch.setenv("STREAMLOG_URL", url)
    streamlog.connect(url).stream("sensors").extend([{"i": i} for i in range(8)])
    path = str(jobs / "decorated_mod.py")
    target = load_decorated(path + ":consume")
    assert target.name == "sensors" and target.options["size"] == 4 and target.options["group"] == "deco"
    plain = load_callable(path + ":gated")
    assert plain.__name__ == "gated" and not hasattr(plain, "options")
    assert streamlog.connect(url).get("sensors").info()["pending"] == {"default": 8}  # nothing consumed
    target.fn(type("W", (), {"offsets": [7]})())  # the function itself is intact
    assert windows_log(jobs) == [[7]]


def test_a_lazy_streaming_object_made_during_the_import_still_runs_later(url, tmp_path, monkeypatch):
    from streamlog.consumers.streaming import deferred

    streamlog.connect(url).stream("lazy").extend([{"i": i} for i in range(4)])
    with deferred():
        lazy = streamlog.streaming("lazy", size=2, blocking=False, url=url)
    seen = []
    assert lazy.apply(lambda window: seen.append(window.offsets)) == 2
    assert seen == [[0, 1], [2, 3]] and lazy.emitter is not None


def test_an_unknown_decorator_option_is_named_with_a_suggestion():
    with pytest.raises(ConsumerError, match=r"streaming\(\) has no option 'grop' \(did you mean 'group'\?\)"):
        streamlog.streaming("s", size=2, grop="g")


def test_run_without_a_stream_or_window_needs_a_decorator(url, jobs, monkeypatch):
    monkeypatch.chdir(jobs)
    monkeypatch.syspath_prepend(str(jobs))
    (jobs / "plain_mod.py").write_text("def consume(window):\n    pass\n")
    assert "--stream" in fails(2, "run", "plain_mod:consume", "--size", "2", "--url", url)
    assert "exactly one of --size" in fails(2, "run", "plain_mod:consume", "-s", "s", "--url", url)
    assert streamlog.connect(url).streams() == []


# ---------------------------------------------------------------------------
# Ctrl-C


STOPPING = "streamlog: stopping after the current window (Ctrl-C again to abort)"


def _start(jobs: Path, url: str, script: bool) -> subprocess.Popen:
    if script:
        return subprocess.Popen([sys.executable, "decorated_script.py"], cwd=jobs, env=subprocess_env(url),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return streamlog_process(["run", "decorated_mod:gated", "--size", "2"], url, cwd=jobs)


def _interrupt_first_window(proc: subprocess.Popen, jobs: Path) -> LineReader:
    """Wait for the first window to start, press Ctrl-C, wait for the message."""
    errors = LineReader(proc.stderr)
    wait_until(lambda: (jobs / "started").exists() or proc.poll() is not None, timeout=30,
               message="the consumer to start its first window")
    assert proc.poll() is None, "".join(errors.lines)
    proc.send_signal(signal.SIGINT)
    wait_until(lambda: any(line.strip() == STOPPING for line in errors.lines) or proc.poll() is not None,
               timeout=30, message="the stopping message")
    assert proc.poll() is None, "".join(errors.lines)
    return errors


@pytest.mark.parametrize("script", [False, True], ids=["run", "script"])
def test_ctrl_c_stops_after_the_current_window_and_exits_0(url, jobs, script):
    stream = streamlog.connect(url).stream("sensors")
    stream.extend([{"i": i} for i in range(6)])
    with reaped(_start(jobs, url, script)) as proc:
        errors = _interrupt_first_window(proc, jobs)
        (jobs / "go").touch()
        assert proc.wait(30) == 0, "".join(errors.lines)
        out = proc.stdout.read()
    assert not any("Traceback" in line for line in errors.lines), errors.lines
    first = [[0, 1]] if not script else [[0]]
    assert windows_log(jobs) == first
    assert stream.info()["groups"]["default"]["windows"] == 1
    assert out.strip().splitlines()[-1] == ("script went on with 1 windows" if script else
                                            "1 window processed (stream sensors, group default)")


@pytest.mark.parametrize("script", [False, True], ids=["run", "script"])
def test_a_second_ctrl_c_exits_at_once_with_130_and_no_traceback(url, jobs, script):
    stream = streamlog.connect(url).stream("sensors")
    stream.extend([{"i": i} for i in range(6)])
    with reaped(_start(jobs, url, script)) as proc:
        errors = _interrupt_first_window(proc, jobs)
        proc.send_signal(signal.SIGINT)  # the window is still held: 'go' never appears
        assert proc.wait(30) == 130, "".join(errors.lines)
        proc.stdout.read()
    wait_until(lambda: not errors._thread.is_alive(), timeout=10, message="stderr to close")
    text = "".join(errors.lines)
    assert "Traceback" not in text, text
    assert errors.lines[-1].startswith("streamlog: aborted"), text
    assert windows_log(jobs) == []
    state = stream.info()["groups"]["default"]
    claimed = 1 if script else 2
    assert state["pending"] == 6 and state["claimed"] == claimed  # not committed: delivered again after the lease
