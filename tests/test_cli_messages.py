"""Error messages of the command line: one line of at most 200 characters, the cause
first, no password; a mistyped stream or group name gets a suggestion."""

from __future__ import annotations

import socket

import pytest
from test_cli import fails

import streamlog
from streamlog.cli.app import MAX_ERROR_LINE
from streamlog.errors import UnknownGroupError, UnknownStreamError, UnreachableError

SECRET = "s3cr3t-Pw"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: connections are refused


# ---------------------------------------------------------------------------
# short, cause-first lines


def test_unreachable_mongodb_is_one_short_line_with_the_cause_first():
    port = closed_port()
    for url in (f"mongodb://alice:{SECRET}@127.0.0.1:{port}/db?authSource=admin", f"mongodb://127.0.0.1:{port}/db"):
        line = fails(4, "--url", url, "ls", env={"STREAMLOG_CONNECT_TIMEOUT": "1"})
        assert len(line) <= MAX_ERROR_LINE and SECRET not in line, line
        where = f"alice:***@127.0.0.1:{port}" if "alice" in url else f"127.0.0.1:{port}"
        assert line.startswith(f"streamlog: error: cannot reach MongoDB at {where} (connection refused) "
                               "within 1 s"), line


def test_a_lost_server_is_reported_in_one_short_line():
    from pymongo.errors import ServerSelectionTimeoutError

    from streamlog.store.mongo_retry import Outage

    store = type("Store", (), {"url": f"mongodb://alice:{SECRET}@db.example:27017/iot", "retry_timeout": 0})()
    driver = ServerSelectionTimeoutError(
        "db.example:27017: [Errno 111] Connection refused (configured timeouts: socketTimeoutMS: 20000.0ms), "
        "Timeout: 30s, Topology Description: <TopologyDescription id: 6b0a, topology_type: Unknown, servers: "
        "[<ServerDescription ('db.example', 27017) server_type: Unknown, rtt: None>]>")
    with pytest.raises(UnreachableError) as caught:
        Outage(store).wait(driver)
    message = str(caught.value)
    assert message == ("lost MongoDB at alice:***@db.example:27017 (connection refused) for more than 0 s "
                       "(STREAMLOG_RETRY_TIMEOUT sets the wait)")


def test_a_driver_error_during_a_command_is_one_short_line(monkeypatch):
    from pymongo.errors import ServerSelectionTimeoutError

    def broken(*args, **kwargs):
        raise ServerSelectionTimeoutError(
            f"mongodb://alice:{SECRET}@h:27017/db: timed out (configured timeouts: connectTimeoutMS: 5000.0ms), "
            "Timeout: 5s, Topology Description: <TopologyDescription id: 6b0a, " + "servers: [...] " * 40 + ">")

    monkeypatch.setattr("streamlog.cli.common.existing_client", broken)
    line = fails(4, "ls", "--url", "sqlite:///unused.db")
    assert line == ("streamlog: error: database error: ServerSelectionTimeoutError: "
                    "mongodb://alice:***@h:27017/db: timed out"), line


def test_every_error_line_is_cut_at_200_characters(monkeypatch):
    def broken(*args, **kwargs):
        raise UnknownStreamError("no stream named 'x' " + "and more words\n" * 60)

    monkeypatch.setattr("streamlog.cli.common.existing_client", broken)
    line = fails(3, "ls", "--url", "sqlite:///unused.db")
    assert len(line) == MAX_ERROR_LINE and line.startswith("streamlog: error: no stream named 'x' and more")
    assert line.endswith("…")


# ---------------------------------------------------------------------------
# did you mean


@pytest.fixture
def sensors(url):
    stream = streamlog.connect(url).stream("sensors")
    stream.append({"i": 1})
    stream.group("kmeans")
    return stream


def test_a_mistyped_stream_name_gets_a_suggestion(url, sensors):
    for args in (["info", "senors"], ["tail", "senors"], ["drop", "senors", "--yes"], ["trim", "senors", "--processed"],
                 ["group", "ls", "senors"], ["group", "reset", "senors", "kmeans", "--to", "0", "--yes"]):
        line = fails(3, *args, "--url", url)
        assert line.startswith("streamlog: error: no stream named 'senors' (did you mean 'sensors'?)"), (args, line)
    line = fails(3, "info", "zzz", "--url", url)  # nothing close: no suggestion
    assert "did you mean" not in line and "no stream named 'zzz'" in line
    with pytest.raises(UnknownStreamError, match=r"no stream named 'senors' \(did you mean 'sensors'\?\)"):
        streamlog.connect(url).get("senors")
    assert streamlog.connect(url).streams() == ["sensors"]


def test_a_mistyped_group_name_gets_a_suggestion(url, sensors):
    for args in (["group", "reset", "sensors", "kmean", "--to", "0", "--yes"],
                 ["group", "delete", "sensors", "kmean", "--yes"]):
        line = fails(3, *args, "--url", url)
        assert line == "streamlog: error: stream 'sensors' has no group 'kmean' (did you mean 'kmeans'?)", line
    with pytest.raises(UnknownGroupError, match=r"has no group 'defualt' \(did you mean 'default'\?\)"):
        sensors.get_group("defualt")
    assert sorted(g.name for g in sensors.groups()) == ["default", "kmeans"]
