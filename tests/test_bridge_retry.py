"""streamlog.bridges.retry: the one retry policy of every bridge (which failures are
waited out, which end the bridge) and its backoff. The end-to-end consequence — a
dropped stream ends each bridge with exit code 3 — is tested per bridge in
test_cli_bridges.py."""

from __future__ import annotations

import sqlite3
import time

import pytest
from pymongo.errors import AutoReconnect, OperationFailure, ServerSelectionTimeoutError

from streamlog.bridges.retry import Backoff, dropped, ends_the_bridge, is_transient
from streamlog.errors import (
    BadItemError,
    BadNameError,
    KeyBusyError,
    StreamlogError,
    UnknownStreamError,
    UnreachableError,
)


@pytest.mark.parametrize("exc", [
    UnreachableError("database down"), KeyBusyError("busy"), ConnectionResetError(), ConnectionRefusedError(),
    TimeoutError(), OSError("network is unreachable"), sqlite3.OperationalError("database is locked"),
    AutoReconnect("lost"), ServerSelectionTimeoutError("no server"), OperationFailure("stepped down", code=189),
])
def test_transient_failures_are_waited_out(exc):
    assert is_transient(exc) and not ends_the_bridge(exc)


@pytest.mark.parametrize("exc", [
    UnknownStreamError("stream 'x' was dropped"), BadItemError("bad"), BadNameError("bad"), StreamlogError("x"),
    OperationFailure("not authorized", code=13), sqlite3.IntegrityError("constraint"), ValueError("a bug"),
])
def test_everything_else_ends_the_bridge(exc):
    assert ends_the_bridge(exc) and not is_transient(exc)


def test_a_dropped_stream_is_one_line_naming_it():
    error = dropped("lines", "the bridge appended to it")
    assert isinstance(error, UnknownStreamError) and error.exit_code == 3
    assert str(error) == "stream 'lines' was dropped while the bridge appended to it"


def test_backoff_doubles_up_to_the_cap_with_jitter():
    backoff = Backoff(first=0.1, cap=0.4)
    assert not backoff.in_outage
    delays = [backoff.failed() for _ in range(5)]
    assert backoff.in_outage
    for delay, ceiling in zip(delays, [0.1, 0.2, 0.4, 0.4, 0.4], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert not backoff.in_outage and backoff.failed() <= 0.1


def test_backoff_patience_bounds_one_outage():
    backoff = Backoff(first=10.0, cap=10.0, patience=0.05)
    assert backoff.failed() <= 0.05  # never waits past the end of its patience
    assert not backoff.exhausted
    time.sleep(0.06)
    assert backoff.exhausted
    assert Backoff(patience=0).failed() == 0 and not Backoff().exhausted
