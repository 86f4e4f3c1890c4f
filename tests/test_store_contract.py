"""The store contract, on every backend: offsets, items, groups, claims, trim, drop.

Each test runs twice: on the embedded SQLite backend and on FerretDB (a real
MongoDB-wire server that applies updates without isolation).
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from conftest import IN_CI
from helpers import listened_client, run_python, store_commands, wait_until

import streamlog
from streamlog.delivery.cursor import Cursor
from streamlog.delivery.groups import ensure_group
from streamlog.emitters import CountWindow
from streamlog.items import now_ms
from streamlog.store.base import ACTIVE, Claim

UTC = timezone.utc


@pytest.fixture(params=["sqlite", "mongo", "ferretdb-v1"])
def backend(request) -> str:
    """The contract holds on every backend and on both MongoDB-wire servers: the run's
    (FerretDB v2 + DocumentDB in CI) and FerretDB v1 (no index pushdown)."""
    if request.param == "ferretdb-v1" and not os.environ.get("STREAMLOG_TEST_MONGO_URL"):
        message = "the MongoDB server of this run is FerretDB v1 already (the 'mongo' cases)"
        if IN_CI:  # CI runs the MongoDB half on FerretDB v2 (.ci/run sets STREAMLOG_TEST_MONGO_URL)
            pytest.fail(f"{message}: CI must set STREAMLOG_TEST_MONGO_URL to FerretDB v2", pytrace=False)
        pytest.skip(message)
    return request.param


def test_offsets_start_at_zero_and_increase_without_gaps(url):
    s = streamlog.stream("events", url=url)
    assert s.append({"n": 0}) == 0
    assert s.extend([{"n": i} for i in range(1, 6)]) == [1, 2, 3, 4, 5]
    assert s.append({"n": 6}) == 6
    assert s.extend([]) == []
    assert [r["offset"] for r in s.read(0, None)] == list(range(7))
    assert [r["data"]["n"] for r in s.read(0, None)] == list(range(7))
    info = s.info()
    assert (info["length"], info["first_offset"], info["last_offset"]) == (7, 0, 6)


def test_read_is_a_range_query_that_changes_nothing(url):
    s = streamlog.stream("events", url=url)
    s.extend([{"n": i} for i in range(20)])
    assert [r["offset"] for r in s.read(5, 3)] == [5, 6, 7]
    assert [r["offset"] for r in s.read(15, 100)] == [15, 16, 17, 18, 19]
    assert [r["offset"] for r in s.read(3, None, end=5)] == [3, 4, 5]
    assert s.read(20, 10) == []
    assert [r["offset"] for r in s.tail(3)] == [17, 18, 19]
    before = s.info()["groups"]
    s.read(0, None)
    s.tail(5)
    s.buffer()
    assert s.info()["groups"] == before


def test_items_round_trip_identically(url):
    s = streamlog.stream("types", url=url)
    when = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    item = {
        "int": 2**62, "float": 1.5, "nan": float("nan"), "str": "héllo", "none": None, "bool": True,
        "list": [1, "a", {"b": [2.5]}], "nested": {"a": {"b": [1, 2]}},
        "np_float": np.float32(0.25), "np_int": np.int64(7), "array": np.arange(3), "when": when,
    }
    offset = s.append(item)
    record = s.read(offset, 1)[0]
    assert record["data"] == {
        "int": 2**62, "float": 1.5, "nan": None, "str": "héllo", "none": None, "bool": True,
        "list": [1, "a", {"b": [2.5]}], "nested": {"a": {"b": [1, 2]}},
        "np_float": 0.25, "np_int": 7, "array": [0, 1, 2], "when": when.replace(microsecond=123000),
    }
    assert record["timestamp"].tzinfo is not None
    assert abs((datetime.now(UTC) - record["timestamp"]).total_seconds()) < 60


@pytest.mark.parametrize("bad", [
    {"a.b": 1}, {"$set": 1}, {1: "x"}, {"x": {1, 2}}, {"x": b"raw"}, {"x": 2**64}, {"x": object()},
])
def test_a_failed_extend_stores_none_of_its_items(url, bad):
    s = streamlog.stream("strict", url=url)
    s.extend([{"ok": 1}])
    with pytest.raises(streamlog.BadItemError) as caught:
        s.extend([{"ok": 2}, {"ok": 3}, bad, {"ok": 4}])
    assert "item 2" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(streamlog.BadItemError):
        s.append(bad)
    assert len(s) == 1
    assert s.append({"ok": 5}) == 1  # no offset was used up by the failures


def test_nested_lists_where_the_server_can_store_them(url):
    s = streamlog.stream("matrix", url=url)
    item = {"m": [[1, 2], [3, 4]]}
    if s.store.nested_arrays:
        s.append(item)
        assert s.read()[0]["data"] == item
    else:  # FerretDB v1: refused up front, with the path, and nothing stored
        with pytest.raises(streamlog.BadItemError, match=r"m\[0\]"):
            s.extend([{"ok": 1}, item])
        assert len(s) == 0


def test_non_dict_items_are_rejected(url):
    s = streamlog.stream("strict", url=url)
    for bad in (5, "text", [1, 2], None):
        with pytest.raises(streamlog.BadItemError):
            s.append(bad)
    with pytest.raises(streamlog.BadItemError):
        s.extend({"a": 1})  # a dict is not a batch
    assert len(s) == 0


def test_extend_takes_a_dataframe(url):
    import pandas as pd

    s = streamlog.stream("frames", url=url)
    frame = pd.DataFrame({"x": [1.0, 2.0], "label": ["a", "b"]})
    assert s.extend(frame) == [0, 1]
    assert [r["data"] for r in s.read()] == [{"x": 1.0, "label": "a"}, {"x": 2.0, "label": "b"}]


PRODUCER = textwrap.dedent("""
    import json, sys, streamlog
    name, me, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    s = streamlog.stream(name)
    acked = []
    for r in range(rounds):
        if r % 3 == 0:
            acked.append([s.append({"p": me, "r": r, "i": 0}), me, r, 0])
        else:
            batch = [{"p": me, "r": r, "i": i} for i in range(1 + (r * 7 + me) % 13)]
            for offset, item in zip(s.extend(batch), batch):
                acked.append([offset, me, r, item["i"]])
    print(json.dumps(acked))
""")


def test_four_concurrent_producer_processes_get_unique_gapless_offsets(url):
    streamlog.stream("shared", url=url)
    procs = [run_python(PRODUCER, url, "shared", str(p), "40", stdout=subprocess.PIPE) for p in range(4)]
    acked = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        mine = json.loads(out)
        offsets = [a[0] for a in mine]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)  # increasing per producer
        acked.extend(mine)
    offsets = sorted(a[0] for a in acked)
    assert offsets == list(range(len(acked)))  # unique, and no gaps among acknowledged items
    stored = {r["offset"]: r["data"] for r in streamlog.stream("shared", url=url).read(0, None)}
    assert len(stored) == len(acked)
    for offset, producer, rnd, i in acked:
        assert stored[offset] == {"p": producer, "r": rnd, "i": i}


def _claim(s, group, seq, attempt, lo, hi, lease_ms=60_000, owner="me"):
    now = now_ms()
    return Claim(stream=s.name, group=group, seq=seq, attempt=attempt, lo=lo, hi=hi, count=hi - lo + 1, owner=owner,
                 lease=now + lease_ms, state=ACTIVE, created=now)


def test_a_claim_key_can_be_inserted_once(url):
    s = streamlog.stream("claims", url=url)
    s.extend([{"n": i} for i in range(4)])
    store = s.store
    assert store.claim(_claim(s, "default", 1, 1, 0, 1, owner="a"))
    assert not store.claim(_claim(s, "default", 1, 1, 0, 3, owner="b"))
    assert store.claim(_claim(s, "other", 1, 1, 0, 3))  # groups are independent
    head = store.last_claim(s.name, "default")
    assert (head.seq, head.lo, head.hi, head.owner) == (1, 0, 1, "a")


def test_commit_and_claim_seals_then_claims_the_next_window(url):
    """Store.commit_and_claim: the seal first (a fenced-off commit claims nothing), then
    the next claim, which may lose its race without undoing the seal."""
    s = streamlog.stream("folded", url=url)
    s.extend([{"n": i} for i in range(9)])
    store = s.store
    ensure_group(s, "g")
    first = _claim(s, "g", 1, 1, 0, 2, owner="a")
    assert store.claim(first)
    assert store.commit_and_claim(first, _claim(s, "g", 2, 1, 3, 5, owner="a")) == (True, True)
    head = store.last_claim(s.name, "g")
    assert (head.seq, head.attempt, head.owner, head.lo, head.hi) == (2, 1, "a", 3, 5)
    assert [(c.seq, c.attempt) for c in store.open_claims(s.name, "g")] == [(2, 1)]  # window 1 sealed and closed

    # window 2 taken over (attempt 2) before its owner commits: nothing is written
    second = store.last_claim(s.name, "g")
    assert store.claim(_claim(s, "g", 2, 2, 3, 5, owner="b"))
    store.supersede(second)  # as a takeover does
    assert store.commit_and_claim(second, _claim(s, "g", 3, 1, 6, 8, owner="a")) == (False, False)
    assert store.last_claim(s.name, "g").seq == 2  # no window 3

    # the next window already claimed by another consumer: the seal stands alone
    taken = store.last_claim(s.name, "g")
    assert store.claim(_claim(s, "g", 3, 1, 6, 8, owner="c"))
    assert store.commit_and_claim(taken, _claim(s, "g", 3, 1, 6, 8, owner="b")) == (True, False)
    assert [(c.seq, c.attempt, c.owner) for c in store.open_claims(s.name, "g")] == [(3, 1, "c")]


def test_commit_release_and_reclaim_of_expired_leases(url):
    s = streamlog.stream("leases", url=url)
    s.extend([{"n": i} for i in range(6)])
    group = ensure_group(s, "g")
    first = Cursor(s, group, CountWindow(3), lease=0.2, max_retries=3, owner="first")
    second = Cursor(s, group, CountWindow(3), lease=30, max_retries=3, owner="second")

    held = first.claim(now_ms())
    assert held.batch.offsets == [0, 1, 2] and held.claim.attempt == 1
    assert second.reclaim(now_ms()) is None  # the lease is live: nothing to take over
    nxt = second.claim(now_ms())
    assert nxt.batch.offsets == [3, 4, 5]  # the chain moved on past the held window
    second.commit(nxt)

    # The first consumer "dies": its lease runs out and the window is taken over.
    taken = wait_until(lambda: second.reclaim(now_ms()), timeout=10, message="lease expiry")
    assert (taken.claim.seq, taken.claim.attempt, taken.batch.offsets) == (1, 2, [0, 1, 2])
    assert "lease expired" in taken.previous_error
    assert s.store.expired(s.name, "g", now_ms()) == []  # attempt 1 was closed; attempt 2 is live
    assert first.reclaim(now_ms()) is None
    second.release(taken, "ValueError: boom")  # a failure: reclaimable at once, with its error
    again = first.reclaim(now_ms())
    assert (again.claim.attempt, again.previous_error) == (3, "ValueError: boom")
    first.commit(again)
    assert s.info()["groups"]["g"]["pending"] == 0
    assert s.buffer("g") == []


def test_two_groups_each_get_every_item(url):
    s = streamlog.stream("fanout", url=url)
    s.extend([{"n": i} for i in range(10)])
    appended = s.read(9, 1)[0]["timestamp"]
    # the partial last window is due once its item has waited the 1 ms timeout
    wait_until(lambda: datetime.now(timezone.utc) - appended > timedelta(milliseconds=2), message="1 ms")
    seen = {"a": [], "b": []}
    for g in seen:
        n = streamlog.streaming("fanout", size=3, timeout=0.001, group=g, blocking=False, url=url).apply(
            lambda w, g=g: seen[g].extend(w.offsets))
        assert n == 4
    assert seen["a"] == seen["b"] == list(range(10))
    assert s.info()["pending"] == {"a": 0, "b": 0, "default": 10}


def test_group_start_earliest_latest_and_offset(url):
    s = streamlog.stream("starts", url=url)
    s.extend([{"n": i} for i in range(5)])
    assert s.group("early").start == 0
    assert s.group("late", start="latest").start == 5
    assert s.group("mid", start=3).start == 3
    assert s.group("late", start="earliest").start == 5  # an existing group keeps its start
    s.extend([{"n": 5}, {"n": 6}])
    assert [r["offset"] for r in s.buffer("late")] == [5, 6]
    assert [r["offset"] for r in s.buffer("mid")] == [3, 4, 5, 6]
    assert s.info()["pending"] == {"default": 7, "early": 7, "late": 2, "mid": 4}
    with pytest.raises(streamlog.ConsumerError):
        s.group("bad", start="yesterday")
    with pytest.raises(streamlog.BadNameError):
        s.group("no/slash")


def test_racing_cursors_of_one_group_never_claim_the_same_item(url):
    s = streamlog.stream("race", url=url)
    s.extend([{"n": i} for i in range(30)])
    group = ensure_group(s, "default")
    cursors = [Cursor(s, group, CountWindow(4), lease=30, max_retries=0, owner=f"c{i}") for i in range(3)]
    claimed, lost = [], 0
    # Interleave three cursors step by step, each starting from a stale view of the head.
    for _ in range(40):
        for c in cursors:
            got = c.claim(now_ms())
            if got is None:
                lost += 1
            elif hasattr(got, "claim"):
                claimed.append(got.batch.offsets)
                c.commit(got)
    flat = [o for window in claimed for o in window]
    assert sorted(flat) == list(range(28)) and len(flat) == len(set(flat))
    assert lost > 0  # the cursors really did collide, and the unique key decided


def test_trim_before_processed_and_older_than(url):
    s = streamlog.stream("trims", url=url)
    s.extend([{"n": i} for i in range(10)])
    assert s.trim(before=3) == 3
    assert s.info()["first_offset"] == 3
    streamlog.streaming("trims", size=5, blocking=False, url=url).apply(lambda w: None)  # processes 3..7
    s.group("slow", start=6)
    assert s.trim(processed=True) == 3  # 3, 4, 5: below both groups' first unprocessed offset
    assert [r["offset"] for r in s.read(0, None)] == [6, 7, 8, 9]
    assert s.trim(older_than=3600) == 0
    assert s.trim(older_than=0) == 3  # the newest item always stays: offsets never restart
    assert [r["offset"] for r in s.read(0, None)] == [9]
    assert s.append({"n": 10}) == 10
    with pytest.raises(streamlog.StreamlogError):
        s.trim()
    with pytest.raises(streamlog.StreamlogError):
        s.trim(before=1, processed=True)


def test_retention_bounds_the_history(url):
    s = streamlog.stream("bounded", url=url, max_items=5)
    s.extend([{"n": i} for i in range(12)])
    assert s.info()["retention"] == {"max_items": 5}
    if s.store.trim_fence:
        # MongoDB: retention deletes only below an offset observed a fence earlier (so a
        # producer's cached offset can never point into a trimmed range): a later check does it.
        assert len(s) == 12
        wait_until(lambda: s.enforce_retention() or len(s) == 5, timeout=s.store.trim_fence + 5,
                   interval=0.1, message="retention after the trim fence")
    assert [r["offset"] for r in s.read(0, None)] == [7, 8, 9, 10, 11]
    assert s.append({"n": 12}) == 12


def test_drop_removes_everything_and_missing_streams_are_errors(url):
    s = streamlog.stream("doomed", url=url)
    s.extend([{"n": 1}])
    streamlog.streaming("doomed", size=1, blocking=False, url=url).apply(lambda w: None)
    client = streamlog.connect(url)
    assert "doomed" in client.streams()
    s.drop()
    assert "doomed" not in client.streams()
    with pytest.raises(streamlog.UnknownStreamError):
        client.get("doomed")
    with pytest.raises(streamlog.UnknownStreamError):
        s.info()
    with pytest.raises(streamlog.UnknownStreamError):
        s.drop()
    fresh = streamlog.stream("doomed", url=url)  # recreated empty: offsets start over, no old groups
    assert len(fresh) == 0 and fresh.append({"n": 2}) == 0
    assert list(fresh.info()["groups"]) == ["default"]
    assert fresh.info()["groups"]["default"]["windows"] == 0


def test_bad_names_are_rejected(url):
    for bad in ("", "has space", "a/b", "$x", "x" * 201, ".hidden", "trailing."):
        with pytest.raises(streamlog.BadNameError):
            streamlog.stream(bad, url=url)


def test_ls_lists_streams(url):
    for name in ("b", "a", "c.dead"):
        streamlog.stream(name, url=url)
    assert streamlog.connect(url).streams() == ["a", "b", "c.dead"]


def test_reads_larger_than_one_server_batch_are_complete(url):
    s = streamlog.stream("big", url=url)
    s.extend([{"n": i} for i in range(10_050)])
    assert [r["offset"] for r in s.read(0, None)] == list(range(10_050))
    assert [r["offset"] for r in s.read(20, 10_020)] == list(range(20, 10_040))
    assert s.read(10_049, None)[0]["data"] == {"n": 10_049}


def test_mongodb_round_trips_do_not_depend_on_batch_or_window_size(mongo_server):
    """extend = 1 command whatever the batch; a window = 2 (claim, seal) whatever its size,
    1 in a backlog where each commit also claims the next window; items read ahead for
    several windows in one query, sealed attempts closed in one batch."""
    import math
    import uuid

    from streamlog.delivery.cursor import read_ahead

    listener = store_commands()
    url = f"{mongo_server}/rt{uuid.uuid4().hex[:8]}"
    client = listened_client(url, listener)
    try:
        s = client.stream("rt")
        s.append({"n": -1})  # the first append reads the last offset; later ones need not
        for size in (1, 100, 2000):
            listener.sent.clear()
            s.extend([{"n": i} for i in range(size)])
            assert [name for name, _ in listener.sent] == ["insert"], size
        windows = 20
        s.extend([{"n": i} for i in range(windows * 1000)])
        for size in (10, 1000):
            group = ensure_group(s, f"g{size}")
            cursor = Cursor(s, group, CountWindow(size), lease=30, max_retries=0)
            cursor.head(now_ms())  # a consumer reads the chain head once, then keeps it
            listener.sent.clear()
            started = time.monotonic()
            for _ in range(windows):
                claimed = cursor.claim(now_ms())
                assert len(claimed.batch) == size
                assert cursor.commit(claimed)
            client.store.flush()
            seconds = time.monotonic() - started
            reads = math.ceil(windows * size / read_ahead(size))
            commands = [name for name, _ in listener.sent]
            assert commands.count("insert") == 2 * windows, size  # claim + seal
            assert commands.count("find") == reads, size  # read ahead: 2 for 200 items, 5 for 20,000
            # the sealed attempts are closed in one write a second (at most), and at the flush
            assert 1 <= commands.count("update") <= 1 + math.ceil(seconds), size
            assert not client.store.open_claims("rt", group.name)
        # a single consumer in a backlog: the seal and the next claim in one ordered insert
        cursor = Cursor(s, ensure_group(s, "folded"), CountWindow(10), lease=30, max_retries=0)
        cursor.head(now_ms())
        listener.sent.clear()
        claimed = cursor.claim(now_ms())
        for _ in range(windows - 1):
            committed, claimed = cursor.commit_and_claim(claimed, now_ms())
            assert committed and len(claimed.batch) == 10
        assert cursor.commit(claimed)
        assert [name for name, _ in listener.sent].count("insert") == windows + 1  # first claim … last seal
        assert s.info()["groups"]["folded"]["windows"] == windows
    finally:
        client.store.client.drop_database(url.rsplit("/", 1)[1])
        client.close()


def test_extend_once_stores_a_retried_batch_once(url):
    """A producer that retries a batch with the same key (it timed out, or restarted)
    stores nothing new and gets the first call's offsets; other items under the same key
    are refused; the same items serialised differently are still the same batch."""
    stream = streamlog.connect(url).stream("s")
    stream.append({"before": True})
    batch = [{"n": i, "tags": ["a", "b"]} for i in range(3)]
    first = stream.extend_once("batch-17", batch)
    assert first == ([1, 2, 3], False)
    stream.append({"between": True})
    again = stream.extend_once("batch-17", [{"tags": ["a", "b"], "n": i} for i in range(3)])  # other key order
    assert again == ([1, 2, 3], True) and again.replayed
    assert stream.info()["length"] == 5
    with pytest.raises(streamlog.KeyReusedError, match="batch-17"):
        stream.extend_once("batch-17", batch[:2])
    with pytest.raises(streamlog.BadNameError):
        stream.extend_once("has space", batch)
    with pytest.raises(streamlog.BadItemError):
        stream.extend_once("bad-item", [{"ok": 1}, {"bad": object()}])
    assert stream.extend_once("bad-item", [{"ok": 1}]) == ([5], False)  # the refused call recorded nothing
    other = streamlog.connect(url).stream("t")
    assert other.extend_once("batch-17", batch) == ([0, 1, 2], False)  # keys are per stream
    assert [r["data"] for r in stream.read(limit=None)] == [{"before": True}, *batch, {"between": True}, {"ok": 1}]


def test_read_following_never_returns_a_successor_streams_items(url):
    """What followers read with: the handle's own stream, or UnknownStreamError once it was
    dropped — also when a new stream of the same name already holds items past the follower."""
    client = streamlog.connect(url)
    old = client.stream("s")
    old.extend([{"old": i} for i in range(2)])
    assert [r["data"] for r in old.read_following(1)] == [{"old": 1}]
    assert old.read_following(2) == []
    old.drop()
    client.stream("s").extend([{"new": i} for i in range(5)])
    with pytest.raises(streamlog.UnknownStreamError, match="dropped"):
        old.read_following(2)
