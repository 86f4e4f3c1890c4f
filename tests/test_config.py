"""URLs, the embedded default, and connection errors (no server needed)."""

from __future__ import annotations

import time

import pytest

import streamlog
from streamlog.config import default_path, mask_url, parse_url, resolve_url
from streamlog.errors import BadURLError, UnreachableError


def test_url_resolution_order(monkeypatch, tmp_path):
    monkeypatch.delenv("STREAMLOG_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert resolve_url() == f"sqlite:///{tmp_path}/streamlog/streamlog.db"
    monkeypatch.setenv("STREAMLOG_URL", "mongodb://db.example/streams")
    assert resolve_url() == "mongodb://db.example/streams"
    assert resolve_url("sqlite:///x.db") == "sqlite:///x.db"


def test_the_embedded_default_is_one_fixed_per_user_file(monkeypatch, tmp_path):
    monkeypatch.delenv("STREAMLOG_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    s = streamlog.stream("hello")
    s.append({"a": 1})
    assert default_path() == tmp_path / "streamlog" / "streamlog.db" and default_path().exists()
    # Another client on the default (as a second process would be) sees the same stream.
    assert streamlog.Client().get("hello").read()[0]["data"] == {"a": 1}


@pytest.mark.parametrize("url", ["http://x", "sqlite://rel.db", "sqlite:///", "mongodb://", "mongodb://h/a.b",
                                 "postgres://h/db", "mongodb://h:notaport/db", "mongodb://@/db"])
def test_bad_urls_are_one_line_errors(url):
    with pytest.raises(BadURLError) as caught:
        streamlog.connect(url).stream("x")
    assert "\n" not in str(caught.value)


def test_sqlite_paths_follow_sqlalchemy():
    assert str(parse_url("sqlite:///rel/x.db").path) == "rel/x.db"
    assert str(parse_url("sqlite:////abs/x.db").path) == "/abs/x.db"


def test_an_unreachable_mongodb_fails_within_the_configured_time_and_masks_credentials(monkeypatch):
    monkeypatch.setenv("STREAMLOG_CONNECT_TIMEOUT", "0.5")
    started = time.monotonic()
    with pytest.raises(UnreachableError) as caught:
        streamlog.connect("mongodb://alice:s3cret@127.0.0.1:1/db")
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "s3cret" not in message and "alice:***@127.0.0.1:1" in message and "\n" not in message
    assert mask_url("mongodb://alice:s3cret@h/db") == "mongodb://alice:***@h/db"


def test_an_unusable_sqlite_path_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(streamlog.StreamlogError):
        streamlog.connect(f"sqlite:///{blocker}/sub/x.db")
