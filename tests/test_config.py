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


# ---------------------------------------------------------------------------
# credentials never in messages

SECRET = "s3cr3t-Pw"


@pytest.mark.parametrize("url, masked", [
    (f"mongodb://alice:{SECRET}@h/db", "mongodb://alice:***@h/db"),
    (f"MONGODB://alice:{SECRET}@h/db", "MONGODB://alice:***@h/db"),
    (f"MongoDB+SRV://alice:{SECRET}@cluster.example/db", "MongoDB+SRV://alice:***@cluster.example/db"),
    (f"mongodb://alice:pa/{SECRET}@h/db", "mongodb://alice:***@h/db"),
    (f"mongodb://alice:pa@{SECRET}@h:27017/db?tls=true", "mongodb://alice:***@h:27017/db?tls=true"),
    (f"mongodb://alice:pa/ss@{SECRET}@h/db", "mongodb://alice:***@h/db"),
    (f"mongodb://alice:pa?{SECRET}@h/db", "mongodb://alice:***@h/db"),
    (f"mongodb://:{SECRET}@h/db", "mongodb://:***@h/db"),
    (f"mongodb://h/db?password={SECRET}&tls=true", "mongodb://h/db?password=***&tls=true"),
    (f"mongodb://h/db?tls=true&tlsCertificateKeyFilePassword={SECRET}",
     "mongodb://h/db?tls=true&tlsCertificateKeyFilePassword=***"),
    (f"mongodb://h/db?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:{SECRET}",
     "mongodb://h/db?authMechanism=MONGODB-AWS&authMechanismProperties=***"),
    (f"mongodb://h/db?authMechanismProperties=AWS_SESSION_TOKEN%3A{SECRET}", "mongodb://h/db?authMechanismProperties=***"),
    (f"mongodb://h/db?w=1;secretKey={SECRET}", "mongodb://h/db?w=1;secretKey=***"),
    (f"mongodb://u:{SECRET}@h1:1,h2:2/db?replicaSet=rs&token={SECRET}", "mongodb://u:***@h1:1,h2:2/db?replicaSet=rs&token=***"),
])
def test_mask_url_hides_the_password_in_every_spelling(url, masked):
    assert mask_url(url) == masked
    assert SECRET not in mask_url(url)


@pytest.mark.parametrize("url", ["mongodb://h:27017/db", "mongodb://alice@h/db", "sqlite:////tmp/a:b@c.db",
                                 "sqlite:///rel.db", "mongodb://h/db?authMechanismProperties=SERVICE_NAME:mongodb",
                                 "mongodb://h/db?appName=me@work"])
def test_mask_url_leaves_urls_without_secrets_alone(url):
    assert mask_url(url) == url


def test_mask_url_masks_every_url_inside_a_message():
    message = (f"ServerSelectionTimeoutError: mongodb://alice:{SECRET}@h:1/db timed out; "
               f"also tried MONGODB://bob:{SECRET}@h2/db?password={SECRET}.")
    masked = mask_url(message)
    assert SECRET not in masked
    assert "mongodb://alice:***@h:1/db timed out" in masked and "MONGODB://bob:***@h2" in masked


@pytest.mark.parametrize("url", [
    f"MONGODB://alice:{SECRET}@h/a.b",
    f"mongodb://alice:pa/{SECRET}@h/db",
    f"mongodb://alice:pa@{SECRET}@h/db",
    f"mongodb://alice:{SECRET}@[::1/db",
    f"mongodb://alice:{SECRET}@[zz]:27017/x",
    f"mongodb://h/a.b?password={SECRET}",
    f"postgres://alice:{SECRET}@h/db",
])
def test_bad_url_messages_never_show_the_password(url):
    with pytest.raises(BadURLError) as caught:
        parse_url(url)
    message = str(caught.value)
    assert SECRET not in message and "\n" not in message


@pytest.mark.parametrize("url", ["mongodb://[::1/db", "mongodb://[zz]:27017/x", "mongodb://::1]/db",
                                 "mongodb://u:p@[zz]/x"])
def test_malformed_ipv6_hosts_are_bad_urls_not_value_errors(url):
    with pytest.raises(BadURLError) as caught:
        parse_url(url)
    assert type(caught.value) is BadURLError and "host is not valid" in str(caught.value)


def test_the_scheme_is_case_insensitive():
    target = parse_url("MongoDB://h:27017/db")
    assert target.kind == "mongodb" and target.url == "mongodb://h:27017/db" and target.database == "db"
    assert parse_url("SQLite:///x.db").kind == "sqlite"
