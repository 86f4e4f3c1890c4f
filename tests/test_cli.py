"""The ``streamlog`` command line, on both backends (the ``url`` fixture).

Most commands run in-process through typer's CliRunner (which goes through the same
error handling as the console script); ``tail -f`` and ``run`` run as real processes,
signalled the way a user or a supervisor would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from helpers import ROOT, reaped, run_python, wait_until, windows_log
from typer.testing import CliRunner

import streamlog
from streamlog.cli import app, parse_duration
from streamlog.items import now_ms

runner = CliRunner()


def cli(*args: str, input: str | bytes | None = None, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input, env=env)


def ok(*args: str, **kwargs):
    result = cli(*args, **kwargs)
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def fails(code: int, *args: str, **kwargs):
    """Run a command that must fail with ``code`` and one clean ``streamlog: error:`` line."""
    result = cli(*args, **kwargs)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamlog: error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def records(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def subprocess_env(url: str) -> dict:
    return dict(os.environ, STREAMLOG_URL=url, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


def streamlog_process(args: list[str], url: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streamlog.cli", *args], env=subprocess_env(url),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


class LineReader:
    """Collects a process's stdout lines in a thread (so the test can poll them)."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self.times: list[float] = []
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream):
        for line in stream:
            self.lines.append(line)
            self.times.append(time.monotonic())


# ---------------------------------------------------------------------------
# top level


def test_version_and_help_with_examples():
    result = ok("--version")
    assert result.stdout.strip() == f"streamlog {streamlog.__version__}"
    top = ok("--help").stdout
    for command in ("ls", "info", "tail", "append", "run", "trim", "drop"):
        assert command in top
        text = ok(command, "--help").stdout
        assert "Examples" in text and f"streamlog {command}" in text, command
        assert "--url" in text, command


def test_startup_does_not_import_heavy_modules():
    code = ("import sys, streamlog.cli; "
            "print(sorted(m for m in ('pandas', 'sklearn', 'pymongo', 'rich.table') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout
    assert out.strip() == "[]"


def test_console_entry_point_usage_error_is_one_line(sqlite_url):
    streamlog.connect(sqlite_url)  # the database exists; the stream does not
    proc = subprocess.run([sys.executable, "-m", "streamlog.cli", "tail", "--url", sqlite_url],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "streamlog: error: Missing argument 'NAME'. (see 'streamlog tail --help')"]
    proc = subprocess.run([sys.executable, "-m", "streamlog.cli", "info", "nope", "--url", sqlite_url],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.startswith("streamlog: error: no stream named 'nope'") and proc.stderr.count("\n") == 1


# ---------------------------------------------------------------------------
# errors


def test_unknown_stream_is_exit_3_and_never_created(url):
    streamlog.connect(url)  # the database exists; the stream does not
    for args in (["info", "nope"], ["tail", "nope"], ["tail", "nope", "--group", "g"],
                 ["trim", "nope", "--processed"], ["drop", "nope", "--yes"]):
        line = fails(3, *args, "--url", url)
        assert "no stream named 'nope'" in line, line
    assert streamlog.connect(url).streams() == []


@pytest.mark.parametrize("bad", ["foo://x", "sqlite://", "mongodb://"])
def test_bad_url_is_exit_2(bad):
    line = fails(2, "ls", "--url", bad)
    assert bad.split(":")[0] in line


def test_bad_url_from_environment_is_exit_2():
    fails(2, "ls", env={"STREAMLOG_URL": "postgres://localhost/x"})


def test_unreachable_mongo_is_exit_4():
    line = fails(4, "ls", "--url", "mongodb://127.0.0.1:1/x", env={"STREAMLOG_CONNECT_TIMEOUT": "1"})
    assert "cannot reach" in line


def test_bad_names_and_arguments_are_exit_2(url):
    fails(2, "append", "bad name", "{}", "--url", url)
    fails(2, "tail", "s", "-n", "-1", "--url", url)
    fails(2, "tail", "s", "--bogus", "--url", url)
    fails(2, "bogus-command")
    assert streamlog.connect(url).streams() == []


# ---------------------------------------------------------------------------
# ls / info


def test_ls_lists_streams_with_pending_per_group(url):
    streamlog.connect(url)  # an empty database
    assert "no streams" in ok("ls", "--url", url).stdout
    stream = streamlog.connect(url).stream("sensors")
    stream.extend([{"x": i} for i in range(5)])
    stream.group("kmeans")
    streamlog.connect(url).stream("empty")
    table = ok("ls", "--url", url).stdout
    row = next(line for line in table.splitlines() if line.startswith("sensors"))
    assert "5" in row and "0..4" in row and "default 5" in row and "kmeans 5" in row
    assert any(line.startswith("empty") for line in table.splitlines())
    listed = records(ok("ls", "--json", "--url", url).stdout)
    assert [i["name"] for i in listed] == ["empty", "sensors"]
    assert listed[1]["length"] == 5 and listed[1]["pending"] == {"default": 5, "kmeans": 5}
    datetime.fromisoformat(listed[1]["last_time"])


def test_info_shows_groups_models_and_retention(url):
    stream = streamlog.connect(url).stream("sensors")
    stream.extend([{"x": i} for i in range(10)])
    streamlog.streaming("sensors", size=4, group="g", blocking=False, url=url).apply(lambda w: None)
    stream.save_model("MyModel", "g", 2, {"coef": [1.0, 2.0]})
    stream.retain(max_items=1000)
    text = ok("info", "sensors", "--url", url).stdout
    assert "0..9" in text and "max items 1000" in text and "MyModel" in text
    g_row = next(line for line in text.splitlines() if line.startswith("g "))
    assert g_row.split() == ["g", "0", "8", "2", "0", "0", "0", "2"]  # start next pending claimed failed dead windows
    info = json.loads(ok("info", "sensors", "--json", "--url", url).stdout)
    assert info["length"] == 10 and info["groups"]["g"]["pending"] == 2 and info["groups"]["default"]["pending"] == 10
    assert info["models"][0]["name"] == "MyModel" and info["retention"] == {"max_items": 1000}


# ---------------------------------------------------------------------------
# append


def test_append_stdin_round_trips_through_tail_json(url):
    items = [{"i": i, "name": f"sensor-{i}", "nested": {"v": [i, i / 2, None, True]}, "s": "é ü ✓"}
             for i in range(7)]
    text = "\n".join(json.dumps(item) for item in items[:3]) + "\n\n   \n" + \
        "\n".join(json.dumps(item) for item in items[3:]) + "\n"
    before = now_ms()
    result = ok("append", "sensors", "--batch-size", "3", "--url", url, input=text)
    assert "appended 7 items to sensors at offsets 0..6" in result.stdout
    shown = records(ok("tail", "sensors", "-n", "100", "--json", "--url", url).stdout)
    assert [r["offset"] for r in shown] == list(range(7))
    assert [r["data"] for r in shown] == items
    assert all(set(r) == {"offset", "timestamp", "data"} for r in shown)
    stamp = datetime.fromisoformat(shown[0]["timestamp"])
    assert stamp.utcoffset().total_seconds() == 0 and stamp.timestamp() * 1000 >= before - 1


def test_append_one_item_from_the_argument(url):
    assert "at offset 0" in ok("append", "s", '{"x": 1.5, "when": "2024-01-01"}', "--url", url).stdout
    assert "at offset 1" in ok("append", "s", '{"x": 2}', "--url", url).stdout
    assert [r["data"] for r in streamlog.connect(url).get("s").read()] == \
        [{"x": 1.5, "when": "2024-01-01"}, {"x": 2}]
    line = fails(5, "append", "t", "{nope", "--url", url)
    assert "JSON argument" in line
    fails(5, "append", "t", "[1, 2]", "--url", url)
    assert streamlog.connect(url).streams() == ["s"]  # a rejected item creates nothing


def test_append_empty_input_creates_the_stream(url):
    assert "nothing appended" in ok("append", "fresh", "--url", url, input="\n\n").stdout
    assert len(streamlog.connect(url).get("fresh")) == 0


@pytest.mark.parametrize("bad, why", [
    ('{"x": 3', "not valid JSON"),
    ("[1, 2, 3]", "must be a dict"),
    ('{"a.b": 3}', "'a.b'"),
    ('"just a string"', "must be a dict"),
    ('{"x": 123456789012345678901234567890}', "64-bit"),  # orjson alone would make it a float
    ('{"s": "' + "x" * 1_048_576 + '"}', "over the 1 MiB limit"),  # found before the first batch
    ('{"a": ' * 65 + "1" + "}" * 65, "more than 64 levels"),
    ('{"s": "\\ud800"}', "not valid JSON"),  # a lone surrogate
])
def test_malformed_line_appends_nothing_and_names_the_line(url, bad, why):
    existing = streamlog.connect(url).stream("existing")
    existing.append({"x": 0})
    lines = ['{"x": 1}', "", bad, '{"x": 4}'] + ['{"x": 5}'] * 30  # bad item on line 3
    for name in ("existing", "new"):
        line = fails(5, "append", name, "--batch-size", "2", "--url", url, input="\n".join(lines) + "\n")
        assert "line 3" in line and why in line, line
    assert len(existing) == 1 and existing.read()[0]["data"] == {"x": 0}
    assert streamlog.connect(url).streams() == ["existing"]


def test_append_checks_every_line_as_the_target_server_stores_it(url):
    """A list inside a list: stored where the server can (SQLite, MongoDB), refused up front
    on FerretDB v1 — in a later batch too, so nothing of the input is appended."""
    lines = ['{"x": 1}'] * 3 + ['{"m": [[1, 2], [3, 4]]}']
    stream = streamlog.connect(url).stream("matrix")
    if stream.store.nested_arrays:
        ok("append", "matrix", "--batch-size", "1", "--url", url, input="\n".join(lines) + "\n")
        assert stream.read(3, 1)[0]["data"] == {"m": [[1, 2], [3, 4]]}
    else:
        line = fails(5, "append", "matrix", "--batch-size", "1", "--url", url, input="\n".join(lines) + "\n")
        assert "line 4" in line and "list inside a list" in line, line
        assert len(stream) == 0


# ---------------------------------------------------------------------------
# tail


def test_tail_shows_the_newest_items_and_changes_nothing(url):
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"i": i} for i in range(15)])
    pending = stream.info()["pending"]
    text = ok("tail", "s", "--url", url).stdout
    lines = text.splitlines()
    assert [int(line.split()[0]) for line in lines] == list(range(5, 15))
    assert lines[-1].split(None, 2)[2] == '{"i":14}' and lines[-1].split()[1].endswith("Z")
    assert [r["offset"] for r in records(ok("tail", "s", "-n", "3", "--json", "--url", url).stdout)] == [12, 13, 14]
    assert ok("tail", "s", "-n", "0", "--url", url).stdout == ""
    assert stream.info()["pending"] == pending  # tail is read-only
    ok("append", "empty", "--url", url, input="")
    assert ok("tail", "empty", "--url", url).stdout == ""


def test_tail_group_shows_what_the_group_has_not_processed(url):
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"i": i} for i in range(10)])
    assert streamlog.streaming("s", size=4, group="g", blocking=False, url=url).apply(lambda w: None) == 2

    def offsets(*args):
        return [r["offset"] for r in records(ok("tail", "s", "--json", "--url", url, *args).stdout)]

    assert offsets("--group", "g") == [8, 9]
    assert offsets("--group", "g", "-n", "1") == [9]
    assert offsets("--group", "default", "-n", "3") == [7, 8, 9]
    assert offsets("--group", "not-yet-created", "-n", "2") == [8, 9]  # buffer(): a new group sees all
    assert [r["offset"] for r in stream.buffer("g")] == [8, 9]  # unchanged by tail


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_tail_follow_shows_items_from_another_process(url, sig):
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"i": 0}, {"i": 1}])
    with reaped(streamlog_process(["tail", "s", "-f", "-n", "1", "--json"], url)) as proc:
        out = LineReader(proc.stdout)
        wait_until(lambda: out.lines, timeout=30, message="the initial tail")
        assert json.loads(out.lines[0])["offset"] == 1
        producer = run_python("import streamlog; streamlog.stream('s').extend([{'late': 1}, {'late': 2}])", url)
        assert producer.wait(30) == 0
        landed = time.monotonic()
        wait_until(lambda: len(out.lines) >= 3, timeout=10, message="the new items in tail -f")
        assert [json.loads(line)["data"] for line in out.lines] == [{"i": 1}, {"late": 1}, {"late": 2}]
        assert out.times[2] - landed < 3.0  # printed promptly (the poll is 0.1 s)
        proc.send_signal(sig)
        assert proc.wait(15) == 0
        assert "Traceback" not in proc.stderr.read()
    assert stream.info()["pending"] == {"default": 4}  # following changed nothing


def test_tail_follow_ends_when_the_stream_is_dropped_and_never_splices_a_new_one(url):
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"old": 0}, {"old": 1}])
    with reaped(streamlog_process(["tail", "s", "-f", "-n", "2", "--json"], url)) as proc:
        out = LineReader(proc.stdout)
        wait_until(lambda: len(out.lines) >= 2, timeout=30, message="the initial tail")
        dropper = run_python("import streamlog; c = streamlog.connect(); c.get('s').drop(); "
                             "streamlog.stream('s').extend([{'new': i} for i in range(5)])", url)
        assert dropper.wait(60) == 0
        assert proc.wait(30) == 3
        assert "was dropped while following" in proc.stderr.read()
        assert [json.loads(line)["data"] for line in out.lines] == [{"old": 0}, {"old": 1}]


# ---------------------------------------------------------------------------
# run

CONSUMERS = '''
import json, time
from pathlib import Path

HERE = Path(__file__).parent


def record(window):
    with open(HERE / "windows.log", "a") as f:
        f.write(json.dumps(window.offsets) + "\\n")


def consume(window):
    record(window)
    return {"n": len(window)}


class Counter:
    def __call__(self, window):
        record(window)


counter = Counter()


def boom(window):
    raise RuntimeError("this consumer always fails")


def gated(window):
    """Holds its first window until the test creates the file 'go'."""
    (HERE / "started").touch()
    deadline = time.monotonic() + 60
    while not (HERE / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    record(window)
'''


@pytest.fixture
def consumers(tmp_path) -> Path:
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "consumers_mod.py").write_text(CONSUMERS)
    return folder


def test_run_once_processes_exactly_the_ready_windows(url, consumers):
    streamlog.connect(url).stream("s").extend([{"i": i} for i in range(10)])
    proc = subprocess.run(
        [sys.executable, "-m", "streamlog.cli", "run", "consumers_mod:consume", "--stream", "s", "--size", "4",
         "--once", "--sink", "out"],
        cwd=consumers, env=subprocess_env(url), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("2 windows processed")
    assert windows_log(consumers) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    info = streamlog.connect(url).get("s").info()
    assert info["pending"] == {"default": 2}
    assert [r["data"] for r in streamlog.connect(url).get("out").read()] == [{"n": 4}, {"n": 4}]


def test_run_once_from_a_file_path_with_a_callable_instance(url, consumers, tmp_path):
    streamlog.connect(url).stream("s").extend([{"i": i} for i in range(5)])
    proc = subprocess.run(
        [sys.executable, "-m", "streamlog.cli", "run", str(consumers / "consumers_mod.py") + ":counter",
         "-s", "s", "--size", "1", "--group", "g", "--once", "--max-windows", "3"],
        cwd=tmp_path, env=subprocess_env(url), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("3 windows processed")
    assert windows_log(consumers) == [[0], [1], [2]]
    assert streamlog.connect(url).get("s").info()["pending"] == {"default": 5, "g": 2}


def test_run_blocking_stops_on_sigterm_after_committing_the_window(url, consumers):
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"i": i} for i in range(10)])
    command = ["run", "consumers_mod:gated", "--stream", "s", "--size", "4"]
    with reaped(streamlog_process(command, url, cwd=consumers)) as proc:
        wait_until(lambda: (consumers / "started").exists() or proc.poll() is not None, timeout=30,
                   message="the consumer to start its first window")
        assert proc.poll() is None, proc.stderr.read()
        # While window 0..3 is claimed, tail --group shows it along with the items after it.
        shown = records(ok("tail", "s", "--group", "default", "-n", "8", "--json", "--url", url).stdout)
        assert [r["offset"] for r in shown] == list(range(2, 10))
        assert stream.info()["groups"]["default"]["claimed"] == 4
        proc.send_signal(signal.SIGTERM)
        (consumers / "go").touch()
        assert proc.wait(30) == 0, proc.stderr.read()
        assert proc.stdout.read().strip().splitlines()[-1].startswith("1 window processed")
    assert windows_log(consumers) == [[0, 1, 2, 3]]
    state = stream.info()["groups"]["default"]
    assert state["pending"] == 6 and state["claimed"] == 0 and state["windows"] == 1


def test_run_argument_errors(url, consumers, monkeypatch):
    monkeypatch.chdir(consumers)
    monkeypatch.syspath_prepend(str(consumers))
    fails(2, "run", "consumers_mod:consume", "-s", "s", "--url", url)  # neither --size nor --interval
    fails(2, "run", "consumers_mod:consume", "-s", "s", "--size", "2", "--interval", "1", "--url", url)
    fails(2, "run", "consumers_mod:consume", "-s", "s", "--size", "2", "--relaxed", "--url", url)
    assert "MODULE:FUNCTION" in fails(2, "run", "consumers_mod", "-s", "s", "--size", "2", "--url", url)
    assert "No module named" in fails(2, "run", "no_such_mod:f", "-s", "s", "--size", "2", "--url", url)
    assert "no attribute" in fails(2, "run", "consumers_mod:nope", "-s", "s", "--size", "2", "--url", url)
    assert "is a class" in fails(2, "run", "consumers_mod:Counter", "-s", "s", "--size", "2", "--url", url)
    assert "no such file" in fails(2, "run", "missing.py:f", "-s", "s", "--size", "2", "--url", url)
    assert streamlog.connect(url).streams() == []


# ---------------------------------------------------------------------------
# trim / drop


def test_trim_variants(url):
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"i": i} for i in range(10)])
    fails(2, "trim", "s", "--url", url)
    fails(2, "trim", "s", "--processed", "--before", "3", "--url", url)
    fails(2, "trim", "s", "--older-than", "soon", "--url", url)
    assert "trimmed 3 items from s (offsets 3..9 remain)" in ok("trim", "s", "--before", "3", "--url", url).stdout
    streamlog.streaming("s", size=2, blocking=False, url=url).apply(lambda w: None)  # processes 3..8
    assert "trimmed 6 items" in ok("trim", "s", "--processed", "--url", url).stdout
    assert [r["offset"] for r in stream.read()] == [9]
    stream.extend([{"i": i} for i in range(10, 13)])
    assert "trimmed 0 items" in ok("trim", "s", "--older-than", "1h", "--url", url).stdout
    appended = stream.read(12)[0]["timestamp"].timestamp() * 1000
    wait_until(lambda: now_ms() > appended, message="the clock to pass the last append")
    result = ok("trim", "s", "--older-than", "0s", "--url", url)
    assert "trimmed 3 items from s (offsets 12 remain)" in result.stdout  # the newest is always kept


def test_parse_duration():
    assert parse_duration("90") == 90 and parse_duration("90s") == 90 and parse_duration("15m") == 900
    assert parse_duration("2h") == 7200 and parse_duration("7d") == 604800 and parse_duration("1h30m") == 5400
    assert parse_duration("0.5") == 0.5 and parse_duration("500ms") == 0.5 and parse_duration(" 1W ") == 604800
    for bad in ("", "h", "1x", "-5", "1h 30", "nan", "inf"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_drop_needs_confirmation(url, monkeypatch):
    client = streamlog.connect(url)
    client.stream("s").append({"x": 1})
    assert "--yes" in fails(2, "drop", "s", "--url", url, input="y\n")  # stdin is not a terminal
    monkeypatch.setattr("streamlog.cli.common.stdin_is_tty", lambda: True)
    declined = cli("drop", "s", "--url", url, input="n\n")
    assert declined.exit_code == 1 and "Drop stream s" in declined.stderr
    assert client.streams() == ["s"]
    assert "dropped s" in ok("drop", "s", "--url", url, input="y\n").stdout
    assert client.streams() == []
    client.stream("t").append({"x": 1})
    monkeypatch.setattr("streamlog.cli.common.stdin_is_tty", lambda: False)
    assert "dropped t" in ok("drop", "t", "--yes", "--url", url).stdout
    assert client.streams() == []
    fails(3, "drop", "t", "--yes", "--url", url)


# ---------------------------------------------------------------------------
# issue 9: bounds, read-only commands, dead letters, credentials

HUGE = "99999999999999999999999"
INT64_MAX = str(2**63 - 1)


def test_offsets_and_counts_are_checked_before_anything_changes(url):
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"i": i} for i in range(5)])
    for args in (["trim", "s", "--before", HUGE], ["trim", "s", "--before", str(2**63)],
                 ["tail", "s", "-n", HUGE], ["tail", "s", "-n", HUGE, "--group", "g"],
                 ["append", "s", "--batch-size", HUGE],
                 ["run", "mod:f", "-s", "s", "--size", HUGE], ["run", "mod:f", "-s", "s", "--size", "1",
                                                              "--max-windows", HUGE],
                 ["run", "mod:f", "-s", "s", "--size", "1", "--max-retries", HUGE],
                 ["run", "mod:f", "-s", "s", "--size", "1", "--lease", "inf"],
                 ["run", "mod:f", "-s", "s", "--interval", "inf"]):
        line = fails(2, *args, "--url", url, input="")
        assert "Invalid value" in line, line
    assert "9223372036854775807" in fails(2, "trim", "s", "--before", HUGE, "--url", url)
    assert [r["offset"] for r in stream.read()] == [0, 1, 2, 3, 4]  # nothing trimmed
    assert stream.info()["groups"].keys() == {"default"}
    # The largest valid values work.
    assert [r["offset"] for r in records(ok("tail", "s", "-n", INT64_MAX, "--json", "--url", url).stdout)] == \
        [0, 1, 2, 3, 4]
    assert len(records(ok("tail", "s", "-n", INT64_MAX, "--group", "g", "--json", "--url", url).stdout)) == 5
    assert "trimmed 4 items" in ok("trim", "s", "--before", INT64_MAX, "--url", url).stdout


def test_typed_offsets_and_counts_are_plain_decimal_digits(url):
    """Issue 17: int() took ``1_000``, ``+5`` and non-ASCII digits; every offset or count
    typed on the command line is now plain decimal digits, or an error naming the option."""
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"i": i} for i in range(5)])
    for args in (["tail", "s", "-n", "1_0"], ["tail", "s", "--from", "1_0"], ["tail", "s", "--from", "+1"],
                 ["tail", "s", "--from", "0", "--to", "\u0663"], ["trim", "s", "--before", "+3"],
                 ["trim", "s", "--before", " 3"], ["run", "mod:f", "-s", "s", "--size", "1e3"],
                 ["redrive", "s", "--limit", "0x10"]):
        line = fails(2, *args, "--url", url, input="")
        assert "Invalid value" in line, line
    assert [r["offset"] for r in stream.read()] == [0, 1, 2, 3, 4]  # nothing trimmed
    assert [r["offset"] for r in records(ok("tail", "s", "--from", "3", "--json", "--url", url).stdout)] == [3, 4]


@pytest.mark.parametrize("use_env", [False, True], ids=["--url", "STREAMLOG_URL"])
def test_read_only_commands_never_create_a_database(tmp_path, use_env):
    path = tmp_path / "typo" / "deeper" / "streams.db"
    url = f"sqlite:///{path}"
    where = ([], {"STREAMLOG_URL": url}) if use_env else (["--url", url], None)
    for args in (["ls"], ["ls", "--json"], ["info", "s"], ["tail", "s"], ["tail", "s", "-f"],
                 ["tail", "s", "--group", "g"], ["trim", "s", "--processed"], ["drop", "s", "--yes"]):
        line = fails(3, *args, *where[0], env=where[1])
        assert line == f"streamlog: error: no streamlog database at {path}", line
    assert not path.exists() and not (tmp_path / "typo").exists()


def test_run_once_says_where_dead_letters_went_and_exits_6(url, consumers):
    streamlog.connect(url).stream("s").extend([{"i": i} for i in range(5)])
    proc = subprocess.run(
        [sys.executable, "-m", "streamlog.cli", "run", "consumers_mod:boom", "--stream", "s", "--size", "2",
         "--once", "--max-retries", "0", "--retry-delay", "0"],
        cwd=consumers, env=subprocess_env(url), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 6, (proc.stdout, proc.stderr)
    assert "streamlog: 4 items in 2 windows moved to the dead-letter stream s.dead" in \
        proc.stderr.splitlines(), proc.stderr
    dead = streamlog.connect(url).get("s.dead").read()
    assert [r["data"]["offset"] for r in dead] == [0, 1, 2, 3]
    # A run that dead-letters nothing exits 0 (the fifth item waits for a full window).
    proc = subprocess.run(
        [sys.executable, "-m", "streamlog.cli", "run", "consumers_mod:boom", "--stream", "s", "--size", "2",
         "--once", "--max-retries", "0", "--retry-delay", "0"],
        cwd=consumers, env=subprocess_env(url), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "dead-letter" not in proc.stderr


SECRET = "s3cr3t-Pw"


@pytest.mark.parametrize("make", [
    lambda: __import__("pymongo.errors").errors.ServerSelectionTimeoutError(
        f"mongodb://alice:{SECRET}@db.example:27017/iot: timed out"),
    lambda: __import__("pymongo.errors").errors.ConfigurationError(
        f"bad option in MONGODB://alice:pa/{SECRET}@h/db?tlsCertificateKeyFilePassword={SECRET}"),
    lambda: __import__("sqlite3").OperationalError(f"unable to open mongodb://u:{SECRET}@h"),
    lambda: streamlog.UnreachableError(f"lost mongodb://alice:{SECRET}@h/db?password={SECRET}"),
], ids=["pymongo-timeout", "pymongo-config", "sqlite3", "streamlog-error"])
def test_error_messages_never_show_credentials(monkeypatch, make):
    def broken(*args, **kwargs):
        raise make()

    monkeypatch.setattr("streamlog.cli.common.existing_client", broken)
    line = fails(4, "ls", "--url", "sqlite:///unused.db")
    assert SECRET not in line and "***" in line, line


@pytest.mark.parametrize("bad", [f"mongodb://alice:pa/{SECRET}@h/db", f"MONGODB://alice:{SECRET}@h/a.b",
                                 f"mongodb://alice:{SECRET}@[::1/db", "mongodb://[zz]:27017/x",
                                 f"mongodb://h/a.b?password={SECRET}"])
def test_bad_mongodb_urls_are_exit_2_without_the_password(bad):
    line = fails(2, "ls", "--url", bad)
    assert SECRET not in line, line


# ---------------------------------------------------------------------------
# issue 10: run -v (after or before the command)


@pytest.mark.parametrize("where", ["after", "before"])
def test_run_verbose_prints_a_line_per_window(url, consumers, where):
    streamlog.connect(url).stream("s").extend([{"i": i} for i in range(8)])
    args = ["run", "consumers_mod:consume", "--stream", "s", "--size", "4", "--once"]
    args = args + ["-v"] if where == "after" else ["-v"] + args
    proc = subprocess.run([sys.executable, "-m", "streamlog.cli", *args], cwd=consumers, env=subprocess_env(url),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "window #" in line]
    assert [line.split(": ", 1)[1].split(", 20")[0] for line in lines] == [
        "window #1: 4 items, offsets 0..3", "window #2: 4 items, offsets 4..7"], proc.stderr
