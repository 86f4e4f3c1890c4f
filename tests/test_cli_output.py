"""The command line's output and global options (issue 10): --format table|json|csv for
ls, info, tail and group ls; nothing truncated when piped; --url, --format and -v before
or after the command; tail --from/--to."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
from datetime import datetime

import pytest
from helpers import reaped, run_python, wait_until
from test_cli import LineReader, cli, fails, ok, records, streamlog_process, subprocess_env

import streamlog


def csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


# ---------------------------------------------------------------------------
# global options before or after the command


def test_global_url_before_or_after_the_command(url):
    streamlog.connect(url).stream("s").extend([{"i": i} for i in range(3)])
    before = ok("--url", url, "ls").stdout
    after = ok("ls", "--url", url).stdout
    assert before.splitlines()[1].split()[:3] == after.splitlines()[1].split()[:3] == ["s", "3", "0..2"]
    assert records(ok("--url", url, "tail", "s", "--json").stdout) == \
        records(ok("tail", "s", "--json", "--url", url).stdout)
    assert "appended 1 item to s at offset 3" in ok("--url", url, "append", "s", '{"i": 3}').stdout
    assert "trimmed 1 item" in ok("--url", url, "trim", "s", "--before", "1").stdout
    assert [r["group"] for r in records(ok("--url", url, "--format", "json", "group", "ls", "s").stdout)] == ["default"]
    assert [r["group"] for r in records(ok("group", "--url", url, "ls", "s", "--json").stdout)] == ["default"]


def test_the_commands_own_option_wins(url, tmp_path):
    streamlog.connect(url).stream("here").append({"x": 1})
    other = f"sqlite:///{tmp_path}/other.db"
    streamlog.connect(other).stream("there").append({"x": 1})
    assert [i["name"] for i in records(ok("--url", other, "ls", "--url", url, "--json").stdout)] == ["here"]
    assert [i["name"] for i in records(ok("--format", "table", "ls", "--url", url, "--format", "json").stdout)] \
        == ["here"]
    assert ok("--format", "json", "ls", "--url", url, "--format", "table").stdout.startswith("STREAM")


def test_global_format_applies_to_every_listing(url):
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"i": i} for i in range(3)])
    assert [r["offset"] for r in records(ok("--format", "json", "tail", "s", "--url", url).stdout)] == [0, 1, 2]
    assert json.loads(ok("--format", "json", "info", "s", "--url", url).stdout)["length"] == 3
    assert csv_rows(ok("--format", "csv", "tail", "s", "--url", url).stdout)[0] == \
        {"offset": "0", "timestamp": stream.read()[0]["timestamp"].isoformat(timespec="milliseconds"), "i": "0"}
    fails(2, "--format", "yaml", "ls", "--url", url)
    fails(2, "ls", "--format", "yaml", "--url", url)


def test_verbose_shows_the_underlying_cause_masked():
    secret = "s3cr3t-Pw"
    bad = f"mongodb://alice:{secret}@127.0.0.1:1/x"
    for args in (["-v", "ls", "--url", bad], ["ls", "--url", bad, "-v"], ["--verbose", "--url", bad, "ls"]):
        result = cli(*args, env={"STREAMLOG_CONNECT_TIMEOUT": "1"})
        assert result.exit_code == 4, (result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert lines[0].startswith("streamlog: error: cannot reach MongoDB"), lines
        assert len(lines) >= 2 and all(line.startswith("streamlog: cause: ") for line in lines[1:]), lines
        assert any("pymongo.errors.ServerSelectionTimeoutError" in line for line in lines[1:]), lines
        assert secret not in result.stderr and "***" in result.stderr
    # Without -v: the one line only.
    line = fails(4, "ls", "--url", bad, env={"STREAMLOG_CONNECT_TIMEOUT": "1"})
    assert secret not in line


def test_verbose_on_an_error_without_a_cause_is_still_one_line(url):
    streamlog.connect(url)
    result = cli("-v", "info", "nope", "--url", url)
    assert result.exit_code == 3
    assert result.stderr.strip().splitlines() == [f"streamlog: error: no stream named 'nope' at {url}"]


# ---------------------------------------------------------------------------
# formats


def test_ls_and_info_as_csv(url):
    stream = streamlog.connect(url).stream("sensors")
    stream.extend([{"x": i} for i in range(4)])
    stream.group("kmeans")
    streamlog.connect(url).stream("empty")
    rows = csv_rows(ok("ls", "--format", "csv", "--url", url).stdout)
    assert [r["name"] for r in rows] == ["empty", "sensors"]
    assert rows[1]["length"] == "4" and rows[1]["first_offset"] == "0" and rows[1]["last_offset"] == "3"
    assert json.loads(rows[1]["pending"]) == {"default": 4, "kmeans": 4}
    assert rows[0]["first_offset"] == "" and rows[0]["last_time"] == ""
    datetime.fromisoformat(rows[1]["last_time"])
    info = csv_rows(ok("info", "sensors", "--format", "csv", "--url", url).stdout)
    assert len(info) == 1 and info[0] == rows[1]
    assert json.loads(info[0]["groups"])["kmeans"]["pending"] == 4


def test_tail_csv_has_every_key_of_the_items_in_its_header(url):
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"a": 1, "b": "x,y"}, {"a": 2.5, "c": None}, {"nested": {"k": [1, 2]}, "offset": "mine"}])
    rows = csv_rows(ok("tail", "s", "--format", "csv", "--url", url).stdout)
    assert list(rows[0]) == ["offset", "timestamp", "a", "b", "c", "nested", "data:offset"]
    assert [r["offset"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["b"] == "x,y" and rows[1]["a"] == "2.5" and rows[1]["c"] == "" and rows[1]["b"] == ""
    assert json.loads(rows[2]["nested"]) == {"k": [1, 2]} and rows[2]["data:offset"] == "mine"
    ok("append", "empty", "--url", url, input="")
    assert ok("tail", "empty", "--format", "csv", "--url", url).stdout == "offset,timestamp\n"


def test_nothing_is_truncated_when_piped(tmp_path):
    """Through a pipe (no terminal, COLUMNS small): every value complete, one row per line."""
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "streams.db"
    deep.parent.mkdir(parents=True)
    url = f"sqlite:///{deep}"
    name = "sensors." + "x" * 150
    group = "group-" + "g" * 120
    stream = streamlog.connect(url).stream(name)
    stream.append({"value": "v" * 300})
    stream.group(group)
    env = dict(subprocess_env(url), COLUMNS="40")

    def run(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "streamlog.cli", *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    ls = run("ls").splitlines()
    assert len(ls) == 2 and ls[1].startswith(name + "  ") and f"{group} 1" in ls[1]
    info = run("info", name)
    assert f"database      {url}\n" in info
    assert any(line.startswith(group + "  ") for line in info.splitlines())
    groups = run("group", "ls", name).splitlines()
    assert len(groups) == 3 and groups[2].startswith(group + "  ")
    assert run("tail", name).rstrip("\n").endswith('{"value":"' + "v" * 300 + '"}')


# ---------------------------------------------------------------------------
# tail --from / --to


def test_tail_from_to_prints_the_range_in_offset_order(url):
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"i": i} for i in range(2500)])  # more than one read of Stream.iter

    def offsets(*args):
        return [r["offset"] for r in records(ok("tail", "s", "--json", "--url", url, *args).stdout)]

    assert offsets("--from", "10", "--to", "14") == [10, 11, 12, 13, 14]
    assert offsets("--from", "earliest") == list(range(2500))
    assert offsets("--from", "2497") == [2497, 2498, 2499]
    assert offsets("--to", "2") == [0, 1, 2]
    assert offsets("--from", "5", "--to", "5") == [5]
    assert offsets("--from", "9999") == []
    stream.trim(before=100)
    assert offsets("--from", "earliest", "--to", "101") == [100, 101]
    assert offsets("--from", "50", "--to", "100") == [100]
    text = ok("tail", "s", "--from", "200", "--to", "201", "--url", url).stdout.splitlines()
    assert [line.split()[0] for line in text] == ["200", "201"] and text[0].endswith('{"i":200}')
    rows = csv_rows(ok("tail", "s", "--from", "300", "--to", "302", "--format", "csv", "--url", url).stdout)
    assert [(r["offset"], r["i"]) for r in rows] == [("300", "300"), ("301", "301"), ("302", "302")]


def test_tail_from_argument_errors(url):
    streamlog.connect(url).stream("s").extend([{"i": i} for i in range(3)])
    for args in (["--from", "x"], ["--from", "-1"], ["--from", "latest"], ["--to", "earliest"],
                 ["--from", "5", "--to", "4"], ["--from", "1", "-n", "2"], ["--from", "1", "--group", "g"],
                 ["--from", "1", "--to", "2", "-f"], ["--from", "99999999999999999999999"]):
        fails(2, "tail", "s", *args, "--url", url)


def test_tail_from_then_follow(url):
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"i": i} for i in range(5)])
    with reaped(streamlog_process(["tail", "s", "--from", "3", "-f", "--json"], url)) as proc:
        out = LineReader(proc.stdout)
        wait_until(lambda: len(out.lines) >= 2, timeout=30, message="the range")
        producer = run_python("import streamlog; streamlog.stream('s').extend([{'late': 1}])", url)
        assert producer.wait(30) == 0
        wait_until(lambda: len(out.lines) >= 3, timeout=10, message="the new item")
        assert [json.loads(line)["offset"] for line in out.lines] == [3, 4, 5]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


@pytest.mark.parametrize("command", [["ls"], ["info", "s"], ["tail", "s"], ["group", "ls", "s"]])
def test_json_is_an_alias_of_format_json(url, command):
    streamlog.connect(url).stream("s").append({"x": 1})
    assert ok(*command, "--json", "--url", url).stdout == ok(*command, "--format", "json", "--url", url).stdout
