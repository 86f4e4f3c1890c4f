"""``streamlog group ls|reset|delete`` and ``streamlog redrive`` (issue 10)."""

from __future__ import annotations

import csv
import io
from datetime import datetime

import pytest
from test_cli import cli, fails, ok, records

import streamlog


@pytest.fixture
def consumed(url):
    """A stream of 10 items; group g processed 0..7 in two windows of 4; group late starts at 10."""
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"i": i} for i in range(10)])
    assert streamlog.streaming("s", size=4, group="g", blocking=False, url=url).apply(lambda w: None) == 2
    stream.group("late", start="latest")
    return stream


def test_group_ls_in_every_format(url, consumed):
    table = ok("group", "ls", "s", "--url", url).stdout.splitlines()
    assert table[0].split() == ["GROUP", "START", "PENDING", "CLAIMED", "FAILED", "DEAD", "NEXT", "WINDOWS",
                                "CREATED"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["default"][1:8] == ["0", "10", "0", "0", "0", "0", "0"]
    assert rows["g"][1:8] == ["0", "2", "0", "0", "0", "8", "2"]
    assert rows["late"][1:8] == ["10", "0", "0", "0", "0", "10", "0"]
    assert rows["g"][8].endswith("Z")
    listed = records(ok("group", "ls", "s", "--format", "json", "--url", url).stdout)
    assert [r["group"] for r in listed] == ["default", "g", "late"]
    g = listed[1]
    assert {k: g[k] for k in ("stream", "start", "pending", "claimed", "failed", "dead", "next_offset", "windows")} \
        == {"stream": "s", "start": 0, "pending": 2, "claimed": 0, "failed": 0, "dead": 0, "next_offset": 8,
            "windows": 2}
    datetime.fromisoformat(g["created"])
    rows = list(csv.DictReader(io.StringIO(ok("--format", "csv", "group", "ls", "s", "--url", url).stdout)))
    assert list(rows[0]) == ["group", "start", "pending", "claimed", "failed", "dead", "next_offset", "windows",
                             "created"]
    assert rows[1]["group"] == "g" and rows[1]["next_offset"] == "8" and rows[1]["pending"] == "2"


def test_group_ls_unknown_stream_is_exit_3(url):
    streamlog.connect(url)
    assert "no stream named 'nope'" in fails(3, "group", "ls", "nope", "--url", url)
    assert streamlog.connect(url).streams() == []


@pytest.mark.parametrize("to, offset", [("earliest", 0), ("latest", 10), ("3", 3)])
def test_group_reset(url, consumed, to, offset):
    result = ok("group", "reset", "s", "g", "--to", to, "--yes", "--url", url)
    assert result.stdout.strip() == f"reset group g of s to offset {offset} (was 8)"
    assert [r["offset"] for r in consumed.buffer("g")] == list(range(offset, 10))
    assert consumed.get_group("g").info()["next_offset"] == offset


def test_group_reset_and_delete_need_confirmation(url, consumed, monkeypatch):
    assert "--yes" in fails(2, "group", "reset", "s", "g", "--to", "earliest", "--url", url, input="y\n")
    assert "--yes" in fails(2, "group", "delete", "s", "g", "--url", url, input="y\n")
    assert consumed.get_group("g").info()["next_offset"] == 8
    monkeypatch.setattr("streamlog.cli.common.stdin_is_tty", lambda: True)
    declined = cli("group", "reset", "s", "g", "--to", "earliest", "--url", url, input="n\n")
    assert declined.exit_code == 1 and "Reset group g of s" in declined.stderr and "not reset" in declined.stderr
    assert consumed.get_group("g").info()["next_offset"] == 8
    declined = cli("group", "delete", "s", "g", "--url", url, input="n\n")
    assert declined.exit_code == 1 and "Delete group g of s" in declined.stderr
    assert [g.name for g in consumed.groups()] == ["default", "g", "late"]
    assert "reset group g of s to offset 0" in ok("group", "reset", "s", "g", "--to", "earliest", "--url", url,
                                                  input="y\n").stdout
    assert "deleted group g of s" in ok("group", "delete", "s", "g", "--url", url, input="y\n").stdout
    assert [g.name for g in consumed.groups()] == ["default", "late"]


def test_group_delete(url, consumed):
    assert ok("group", "delete", "s", "late", "--yes", "--url", url).stdout.strip() == "deleted group late of s"
    assert [g.name for g in consumed.groups()] == ["default", "g"]
    assert "has no group 'late'" in fails(3, "group", "delete", "s", "late", "--yes", "--url", url)
    fails(2, "group", "delete", "s", "default", "--yes", "--url", url)  # reset it instead
    assert [g.name for g in consumed.groups()] == ["default", "g"]


def test_group_argument_errors(url, consumed):
    assert "has no group 'nope'" in fails(3, "group", "reset", "s", "nope", "--to", "0", "--yes", "--url", url)
    fails(3, "group", "reset", "missing", "g", "--to", "0", "--yes", "--url", url)
    fails(2, "group", "reset", "s", "g", "--yes", "--url", url)  # --to is required
    fails(2, "group", "reset", "s", "g", "--to", "soon", "--yes", "--url", url)
    fails(2, "group", "reset", "s", "g", "--to", "-1", "--yes", "--url", url)
    fails(2, "group", "reset", "s", "g", "--to", str(2**63), "--yes", "--url", url)
    fails(2, "group", "reset", "s", "bad group", "--to", "0", "--yes", "--url", url)
    fails(2, "group", "bogus", "s", "--url", url)
    assert consumed.get_group("g").info()["next_offset"] == 8


def test_group_help_has_examples():
    for args in (["group"], ["group", "ls"], ["group", "reset"], ["group", "delete"], ["redrive"]):
        text = ok(*args, "--help").stdout
        assert "Examples" in text and "streamlog " + " ".join(args) in text, args
        assert "--url" in text, args


# ---------------------------------------------------------------------------
# redrive


def boom(window):
    raise RuntimeError("always fails")


def test_redrive_puts_dead_letters_back_once(url):
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"i": i} for i in range(4)])
    streamlog.streaming("s", size=2, group="g", blocking=False, max_retries=0, retry_delay=0,
                        url=url).apply(boom)
    assert len(streamlog.connect(url).get("s.dead")) == 4
    assert ok("redrive", "s", "--group", "g", "--limit", "3", "--url", url).stdout.strip() == \
        "re-drove 3 dead letters of s (group g) to s"
    assert [r["data"] for r in stream.read(4)] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert ok("--url", url, "redrive", "s", "-g", "g").stdout.strip() == "re-drove 1 dead letter of s (group g) to s"
    assert ok("redrive", "s", "--group", "g", "--url", url).stdout.strip() == \
        "re-drove 0 dead letters of s (group g) to s"
    assert [r["data"] for r in stream.read(4)] == [{"i": i} for i in range(4)]
    # All groups, to another stream.
    other = streamlog.connect(url).stream("t")
    other.extend([{"j": j} for j in range(3)])
    streamlog.streaming("t", size=1, group="a", blocking=False, max_retries=0, retry_delay=0, url=url).apply(boom)
    streamlog.streaming("t", size=1, group="b", blocking=False, max_retries=0, retry_delay=0, url=url).apply(boom)
    assert ok("redrive", "t", "--to", "t.retry", "--url", url).stdout.strip() == \
        "re-drove 6 dead letters of t to t.retry"
    assert sorted(r["data"]["j"] for r in streamlog.connect(url).get("t.retry").read()) == [0, 0, 1, 1, 2, 2]
    assert ok("redrive", "t", "--to", "t.retry", "--url", url).stdout.strip() == \
        "re-drove 0 dead letters of t to t.retry"
    assert len(other) == 3


def test_redrive_without_dead_letters_and_errors(url):
    streamlog.connect(url).stream("s").append({"x": 1})
    assert ok("redrive", "s", "--url", url).stdout.strip() == "re-drove 0 dead letters of s to s"
    fails(3, "redrive", "nope", "--url", url)
    fails(2, "redrive", "s", "--limit", "0", "--url", url)
    fails(2, "redrive", "s", "--to", "bad name", "--url", url)
    fails(2, "redrive", "s", "--group", "bad group", "--url", url)


def test_group_commands_and_redrive_never_create_a_database(tmp_path):
    path = tmp_path / "typo" / "streams.db"
    url = f"sqlite:///{path}"
    for args in (["group", "ls", "s"], ["group", "reset", "s", "g", "--to", "0", "--yes"],
                 ["group", "delete", "s", "g", "--yes"], ["redrive", "s"]):
        assert fails(3, *args, "--url", url) == f"streamlog: error: no streamlog database at {path}"
    assert not (tmp_path / "typo").exists()
