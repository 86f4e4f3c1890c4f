"""``streamlog append`` from pipes (issue 10): batches as lines arrive (--follow, the
default for a pipe), --batch-size / --flush-ms, --on-error stop|dead-letter, CSV input.

The pipe tests start a real ``streamlog append`` process, write lines into its stdin and
keep it open, and poll the stream with a deadline: items must land before stdin closes.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from helpers import reaped, wait_until
from test_cli import cli, fails, ok, subprocess_env

import streamlog
from streamlog.names import dead_letter_stream


def appender(url: str, *args: str, stdin=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streamlog.cli", "append", *args], env=subprocess_env(url),
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def length(url: str, name: str) -> int:
    client = streamlog.connect(url)
    return len(client.get(name)) if name in client.streams() else 0


def data(url: str, name: str) -> list[dict]:
    return [r["data"] for r in streamlog.connect(url).get(name).read(limit=None)]


def send(proc: subprocess.Popen, *lines: str) -> None:
    proc.stdin.write("".join(line + "\n" for line in lines).encode())
    proc.stdin.flush()


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    if proc.stdin is not None and proc.stdin.closed:
        proc.stdin = None  # communicate() would flush it
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(), err.decode()


# ---------------------------------------------------------------------------
# following a pipe


@pytest.mark.parametrize("flags", [["--follow"], []], ids=["--follow", "default-for-a-pipe"])
def test_items_land_while_the_pipe_is_still_open(url, flags):
    with reaped(appender(url, "s", *flags, "--flush-ms", "50")) as proc:
        send(proc, '{"i": 0}', '{"i": 1}', '{"i": 2}')
        wait_until(lambda: length(url, "s") == 3, timeout=30, message="the first lines, stdin open")
        assert proc.poll() is None
        send(proc, '{"i": 3}')
        wait_until(lambda: length(url, "s") == 4, timeout=30, message="the next line, stdin open")
        proc.stdin.close()
        code, out, err = finish(proc)
    assert code == 0, err
    assert out.strip() == "appended 4 items to s at offsets 0..3"
    assert data(url, "s") == [{"i": i} for i in range(4)]


def test_a_full_batch_is_appended_without_waiting_for_the_timer(url):
    with reaped(appender(url, "s", "--follow", "--batch", "2", "--flush-ms", "600000")) as proc:
        send(proc, '{"i": 0}', '{"i": 1}')
        wait_until(lambda: length(url, "s") == 2, timeout=30, message="a batch of 2 lines")
        send(proc, '{"i": 2}', '{"i": 3}', '{"i": 4}')
        wait_until(lambda: length(url, "s") == 4, timeout=30, message="the second batch of 2")
        assert length(url, "s") == 4  # the fifth line waits: the timer is 10 minutes
        proc.stdin.close()  # end of input flushes it
        code, out, err = finish(proc)
    assert code == 0, err
    assert data(url, "s") == [{"i": i} for i in range(5)]
    times = [r["timestamp"] for r in streamlog.connect(url).get("s").read()]
    assert times[0] == times[1] and times[2] == times[3]  # one extend() per batch


def test_csv_from_a_pipe_lands_row_by_row(url):
    with reaped(appender(url, "s", "--format", "csv", "--flush-ms", "20")) as proc:
        send(proc, "x,name", "1,a")
        wait_until(lambda: length(url, "s") == 1, timeout=30, message="the first row, stdin open")
        send(proc, "2.5,b")
        wait_until(lambda: length(url, "s") == 2, timeout=30, message="the second row")
        proc.stdin.close()
        code, out, err = finish(proc)
    assert code == 0, err
    assert data(url, "s") == [{"x": 1, "name": "a"}, {"x": 2.5, "name": "b"}]


def test_a_bad_line_in_a_pipe_stops_after_the_good_lines_before_it(url):
    with reaped(appender(url, "s", "--flush-ms", "600000")) as proc:
        send(proc, '{"i": 0}', '{"i": 1}', "", '{"i": 2', '{"i": 3}')
        code, out, err = finish(proc)  # exits without stdin being closed
    assert code == 5, err
    assert err.splitlines() == [
        "streamlog: note: appended 2 items from lines 1..2 to s at offsets 0..1; "
        "nothing from line 4 on was appended",
        "streamlog: error: line 4: not valid JSON",
    ]
    assert data(url, "s") == [{"i": 0}, {"i": 1}]


def test_sigterm_appends_what_was_read_and_exits_0(url):
    with reaped(appender(url, "s", "--batch", "2", "--flush-ms", "600000")) as proc:
        send(proc, '{"i": 0}', '{"i": 1}')
        wait_until(lambda: length(url, "s") == 2, timeout=30, message="the first batch (the process is up)")
        send(proc, '{"i": 2}')
        proc.send_signal(signal.SIGTERM)
        code, out, err = finish(proc)
    assert code == 0, err
    assert "Traceback" not in err
    n = length(url, "s")  # the third line is appended if it was read before the signal
    assert n in (2, 3) and data(url, "s") == [{"i": i} for i in range(n)]
    assert out.strip() == f"appended {n} items to s at offsets 0..{n - 1}"


def test_a_regular_file_is_read_whole_all_or_nothing(url, tmp_path):
    source = tmp_path / "items.jsonl"
    source.write_text('{"i": 0}\n{"i": 1}\n{"i": 2\n')
    with open(source, "rb") as stdin:
        code, out, err = finish(appender(url, "s", "--batch", "1", stdin=stdin))
    assert code == 5 and "line 3" in err and err.count("\n") == 1, err
    assert "s" not in streamlog.connect(url).streams()  # nothing appended, nothing created
    source.write_text('{"i": 0}\n{"i": 1}\n')
    with open(source, "rb") as stdin:
        code, out, err = finish(appender(url, "s", stdin=stdin))
    assert code == 0 and out.strip() == "appended 2 items to s at offsets 0..1", err


# ---------------------------------------------------------------------------
# --on-error, in both modes (typer's runner: stdin is not a pipe, so --follow is explicit)


LINES = '{"i": 0}\n{"i": 1}\n{"i": 2\n\n["not", "a", "dict"]\n{"i": 3}\n'


def test_follow_stop_reports_what_was_appended(url):
    result = cli("append", "s", "--follow", "--url", url, input=LINES)
    assert result.exit_code == 5
    assert result.stderr.splitlines() == [
        "streamlog: note: appended 2 items from lines 1..2 to s at offsets 0..1; nothing from line 3 on was appended",
        "streamlog: error: line 3: not valid JSON"]
    assert data(url, "s") == [{"i": 0}, {"i": 1}]
    # A bad first line appends nothing and creates nothing.
    fails(5, "append", "t", "--follow", "--url", url, input="nope\n" + LINES)
    assert streamlog.connect(url).streams() == ["s"]


@pytest.mark.parametrize("mode", ["--follow", "--no-follow"])
def test_dead_letter_sends_bad_lines_to_the_dead_letter_stream_and_goes_on(url, mode):
    result = ok("append", "s", mode, "--on-error", "dead-letter", "--url", url, input=LINES)
    assert result.stdout.strip() == ("appended 3 items to s at offsets 0..2; 2 bad lines sent to the "
                                     "dead-letter stream s.dead")
    assert data(url, "s") == [{"i": 0}, {"i": 1}, {"i": 3}]
    letters = data(url, dead_letter_stream("s"))
    assert [(d["line"], d["text"]) for d in letters] == [(3, '{"i": 2'), (5, '["not", "a", "dict"]')]
    assert "not valid JSON" in letters[0]["error"] and "must be a dict" in letters[1]["error"]
    assert set(letters[0]) == {"line", "text", "error"}


def test_no_follow_stop_appends_nothing(url):
    fails(5, "append", "s", "--no-follow", "--url", url, input=LINES)
    assert streamlog.connect(url).streams() == []


def test_append_argument_errors(url):
    fails(2, "append", "s", "--format", "table", "--url", url, input="")
    fails(2, "--format", "table", "append", "s", "--url", url, input="")
    fails(2, "append", "s", '{"x": 1}', "--follow", "--url", url)
    fails(2, "append", "s", '{"x": 1}', "--format", "csv", "--url", url)
    fails(2, "append", "s", "--on-error", "ignore", "--url", url, input="")
    fails(2, "append", "s", "--flush-ms", "-1", "--url", url, input="")
    fails(2, "append", "s", "--batch", "0", "--url", url, input="")
    assert streamlog.connect(url).streams() == []


# ---------------------------------------------------------------------------
# CSV


CSV = ('\ufeffid,x,name,note,zip\n'
       '1,0.5,alpha,,007\n'
       '\n'
       '2,-3e2,"beta, gamma","two\nlines",12345678901234567890123\n'
       '3,1.,delta, spaced ,-0\n')


@pytest.mark.parametrize("where", [["--format", "csv"], ["--format", "CSV"]])
def test_csv_header_row_becomes_the_keys(url, where):
    result = ok("append", "s", *where, "--url", url, input=CSV.encode())
    assert result.stdout.strip() == "appended 3 items to s at offsets 0..2"
    assert data(url, "s") == [
        {"id": 1, "x": 0.5, "name": "alpha", "note": None, "zip": "007"},
        {"id": 2, "x": -300.0, "name": "beta, gamma", "note": "two\nlines", "zip": "12345678901234567890123"},
        {"id": 3, "x": "1.", "name": "delta", "note": " spaced ", "zip": 0},
    ]


def test_global_format_csv_before_append(url):
    ok("--format", "csv", "append", "s", "--url", url, input="a,b\n1,2\n")
    assert data(url, "s") == [{"a": 1, "b": 2}]


def test_csv_bad_rows_name_their_line(url):
    text = "a,b\n1,2\n3\n4,5,6\n7,8\n"
    line = fails(5, "append", "s", "--format", "csv", "--url", url, input=text)
    assert line == "streamlog: error: line 3: 1 field, the header has 2"
    assert streamlog.connect(url).streams() == []
    result = ok("append", "s", "--format", "csv", "--on-error", "dead-letter", "--url", url, input=text)
    assert "appended 2 items" in result.stdout and "2 bad lines" in result.stdout
    assert data(url, "s") == [{"a": 1, "b": 2}, {"a": 7, "b": 8}]
    assert [(d["line"], d["text"]) for d in data(url, "s.dead")] == [(3, "3"), (4, "4,5,6")]


@pytest.mark.parametrize("header, why", [("a,a", "twice"), ("a.b,c", "'a.b'"), ("a,", "key")])
def test_a_bad_csv_header_stops_whatever_on_error_says(url, header, why):
    for extra in ([], ["--on-error", "dead-letter"], ["--follow", "--on-error", "dead-letter"]):
        line = fails(5, "append", "s", "--format", "csv", *extra, "--url", url, input=f"{header}\n1,2\n")
        assert "line 1: CSV header" in line and why in line, line
    assert streamlog.connect(url).streams() == []


def test_csv_rows_are_checked_like_items(url):
    text = "a,b\n" + "x," + "y" * 1_100_000 + "\n"
    line = fails(5, "append", "s", "--format", "csv", "--url", url, input=text)
    assert "line 2" in line and "1 MiB" in line, line
    text = 'a\n"\xff"\n'.encode("latin-1")
    assert "line 2: not valid UTF-8" in fails(5, "append", "s", "--format", "csv", "--url", url, input=text)
