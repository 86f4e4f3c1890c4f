"""The record kinds of a group's chain (``Claim.kind``) and their storage.

A key-discovery record carries its epoch in the ``epoch`` field (SQLite column
``epoch``, MongoDB field ``e``). Databases written before that field existed kept the
epoch in the ``start`` column (``ws``): they must still read the same, and a claims file
of that age gets the column when it is opened."""

from __future__ import annotations

import sqlite3

import pytest

import streamlog
from streamlog.delivery.chain import epoch_of
from streamlog.delivery.cursor import Waiting
from streamlog.delivery.groups import ensure_group
from streamlog.delivery.keyed import KeyedCursor
from streamlog.emitters import CountWindow
from streamlog.store import open_store
from streamlog.store.base import ACTIVE, DELETED, DISCOVERY, RESET, WINDOW, Claim

#: the claims table as versions before the ``epoch`` column wrote it
LEGACY_CLAIMS = """
CREATE TABLE claims (
    sid INTEGER NOT NULL, grp TEXT NOT NULL, seq INTEGER NOT NULL, attempt INTEGER NOT NULL,
    lo INTEGER NOT NULL, hi INTEGER NOT NULL, n INTEGER NOT NULL, ws INTEGER, we INTEGER,
    windows INTEGER NOT NULL, owner TEXT NOT NULL, lease INTEGER NOT NULL, state TEXT NOT NULL,
    open INTEGER NOT NULL, error TEXT, created INTEGER NOT NULL,
    PRIMARY KEY (sid, grp, seq, attempt)
) WITHOUT ROWID
"""


def record(seq: int, **fields) -> Claim:
    values = dict(stream="s", group="g", seq=seq, attempt=1, lo=seq - 1, hi=seq - 1, count=1, owner="me",
                  lease=10_000, state=ACTIVE, created=1_000)
    values.update(fields)
    return Claim(**values)


def test_claims_are_built_with_keywords_only():
    with pytest.raises(TypeError):
        Claim("s", "g", 1, 1, 0, 0, 1)  # type: ignore[misc]


def test_every_kind_round_trips_and_a_seal_keeps_the_epoch(url):
    store = open_store(url)
    try:
        store.create_stream("s")
        assert store.claim(record(1, start=5, end=9))
        assert store.last_claim("s", "g").kind == WINDOW
        discovery = record(2, epoch=7)
        assert store.claim(discovery) and store.commit(discovery)
        head = store.last_claim("s", "g")  # the seal (attempt 2) is the head now
        assert (head.attempt, head.kind, head.epoch, head.start) == (2, DISCOVERY, 7, None)
        assert epoch_of(head) == 7
        assert store.claim(record(3, state=RESET))
        assert store.last_claim("s", "g").kind == RESET and epoch_of(store.last_claim("s", "g")) == 3
        assert store.claim(record(4, state=DELETED))
        assert store.last_claim("s", "g").kind == DELETED
    finally:
        store.close()


def test_an_old_claims_file_gets_the_epoch_column_and_reads_the_same(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    store = open_store(url)
    sid = store._sid(store.create_stream("s").name)
    store.close()
    claims_file = tmp_path / "old.db-claims"
    con = sqlite3.connect(claims_file)
    con.execute("DROP TABLE claims")
    con.execute(LEGACY_CLAIMS)
    # an old discovery record, built on the reset at seq 4: its epoch sits in ws
    con.execute("INSERT INTO claims VALUES (?, 'g', 5, 2, 4, 9, 6, 4, NULL, 1, 'old', 0, 'committed', 0, NULL, 1)",
                (sid,))
    con.commit()
    con.close()
    store = open_store(url)
    try:
        head = store.last_claim("s", "g")
        assert (head.kind, head.epoch, head.start) == (WINDOW, None, 4)
        assert epoch_of(head) == 4  # what the version that wrote it computed
        new = record(6, lo=10, hi=10, epoch=4)
        assert store.claim(new) and store.last_claim("s", "g").epoch == 4
    finally:
        store.close()
    columns = [row[1] for row in sqlite3.connect(claims_file).execute("PRAGMA table_info(claims)")]
    assert columns[-1] == "epoch" and columns.count("epoch") == 1


def test_an_old_mongodb_discovery_record_reads_the_same(mongo_url):
    store = open_store(mongo_url)
    try:
        store.create_stream("s")
        store._claims("s").insert_one({"_id": "g/000000000005/2", "g": "g", "q": 5, "k": 2, "lo": 4, "hi": 9,
                                       "n": 6, "ws": 4, "we": None, "w": 1, "owner": "old", "lease": 0,
                                       "state": "committed", "open": False, "error": None, "created": 1})
        head = store.last_claim("s", "g")
        assert (head.kind, head.epoch, head.start, epoch_of(head)) == (WINDOW, None, 4, 4)
    finally:
        store.close()


def test_a_keyed_group_after_a_reset_carries_its_epoch_in_discovery_records(url):
    s = streamlog.stream("s", url=url)
    s.extend([{"device": "ab"[i % 2], "i": i} for i in range(6)])

    def drain(cursor, now):
        while True:
            claimed = cursor.claim(now)
            if claimed is None:
                continue
            if isinstance(claimed, Waiting):
                return
            assert cursor.commit(claimed)

    cursor = KeyedCursor(s, ensure_group(s, "g"), CountWindow(1), key="device", lease=30, max_retries=0)
    drain(cursor, 1_000)
    s.group("g").reset(to=2)
    after = KeyedCursor(s, ensure_group(s, "g"), CountWindow(1), key="device", lease=30, max_retries=0)
    drain(after, 2_000)
    head = s.store.last_claim("s", "g")
    assert head.kind == DISCOVERY and head.epoch == epoch_of(head) > 0 and head.start is None
