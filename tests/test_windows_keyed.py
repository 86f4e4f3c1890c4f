"""Keyed windows (``key="device"``): one window sequence per key value, with the boundary
rules of the unkeyed window kinds applied to each key's items alone.

Cursor-level tests drive :class:`~streamlog.delivery.keyed.KeyedCursor` with an integer clock
(items appended at chosen times, ``now`` given to every call) on the embedded backend;
the end-to-end tests run ``streaming(..., key=...)`` on both backends."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from helpers import wait_until

import streamlog
import streamlog.delivery.keyed as keyed
from streamlog.delivery.cursor import Waiting
from streamlog.delivery.groups import ensure_group
from streamlog.delivery.keyed import KeyedCursor
from streamlog.delivery.keys import NonEmpty, key_chain_name, key_token
from streamlog.emitters import CountWindow, FixedTimeWindow, SessionWindow, SlidingCountWindow
from streamlog.emitters.base import Emit, Pending, Wait
from streamlog.errors import BadNameError, ConsumerError, GroupDeletedError
from streamlog.items import now_ms
from streamlog.names import check_name
from streamlog.store.base import Batch

S = 1000  # ms


# -- helpers ---------------------------------------------------------------------


@pytest.fixture
def sq(tmp_path):
    """A stream on a fresh embedded database."""
    url = f"sqlite:///{tmp_path}/k.db"
    yield streamlog.stream("s", url=url)
    streamlog.connect(url).close()


def put(stream, t_ms: int, *items: dict) -> None:
    """Append items with the append time ``t_ms`` (the integer clock)."""
    stream.store.append(stream.name, list(items), t_ms)


def cursor(stream, emitter, group="g", **options) -> KeyedCursor:
    options.setdefault("lease", 30)
    options.setdefault("max_retries", 3)
    return KeyedCursor(stream, ensure_group(stream, group), emitter, key=options.pop("key", "device"), **options)


def step(cur: KeyedCursor, now: int) -> list[tuple]:
    """Claim and commit every window ready at ``now``: ``(key, [i…], late)`` each."""
    out = []
    while True:
        claimed = cur.claim(now)
        if claimed is None:
            continue
        if isinstance(claimed, Waiting):
            return out
        for window in claimed.windows(cur.stream):
            out.append((window.key, [d["i"] for d in window.data], window.late))
        assert cur.commit(claimed)


def delivered_ok(windows: list[tuple], items: list[dict]) -> None:
    """Every window holds one key only, and every item is in exactly one window."""
    seen = Counter()
    for key, ids, *_ in windows:
        assert {items[i]["device"] for i in ids} == {key}
        seen.update(ids)
    assert all(n == 1 for n in seen.values()), seen


# -- keys and names ----------------------------------------------------------------


def test_key_values_compare_as_json_values():
    assert key_token(1) == key_token(1.0) != key_token(True) != key_token("1")
    assert key_token(None) == "null" != key_token("null")
    assert key_token({"b": 1, "a": [1, 2]}) == key_token({"a": [1, 2], "b": 1})
    names = {key_chain_name("g", "device", key_token(v)) for v in (1, "1", True, None, 1.5, "a", "A")}
    assert len(names) == 7
    # a key chain can never be a user's group (its '#' is not allowed in names)
    with pytest.raises(BadNameError):
        check_name(key_chain_name("g", "device", "1"), "group")
    # the field is part of the name: key="site" does not reuse key="device" chains
    assert key_chain_name("g", "site", "1") != key_chain_name("g", "device", "1")


def test_bad_key_options_are_clear_errors(tmp_path):
    url = f"sqlite:///{tmp_path}/k.db"
    with pytest.raises(ConsumerError, match="name of an item field"):
        streamlog.streaming("s", size=2, key="", url=url)
    with pytest.raises(ConsumerError, match="name of an item field"):
        streamlog.streaming("s", size=2, key=3, url=url)
    with pytest.raises(ConsumerError, match="sliding"):
        streamlog.streaming("s", size=4, step=2, key="device", url=url)
    from streamlog.consumers import OnlineLinearRegression

    fn = streamlog.streaming("s", size=2, key="device", url=url, blocking=False)
    with pytest.raises(ConsumerError, match="one model per group"):
        fn.apply(OnlineLinearRegression(features=["x"], target="y"))
    with pytest.raises(ConsumerError, match="sliding"):
        KeyedCursor(streamlog.stream("s", url=url), ensure_group(streamlog.stream("s", url=url), "g"),
                    SlidingCountWindow(4, 2), key="device", lease=1, max_retries=0)


def test_non_empty_skips_the_empty_time_windows_between_a_keys_items():
    """A key's fixed-time windows: the next window is the one holding its next item."""
    batch = Batch([7], [95 * S], [{"i": 7}])
    pending = Pending(6, 20 * S, lambda start, limit: batch if start <= 7 else Batch())
    inner = FixedTimeWindow(10, grace=0)
    assert inner.select(Pending(6, 20 * S, lambda s, n: batch if s <= 7 else Batch()), 200 * S) == \
        Emit(0, 20 * S, 90 * S, windows=7)  # unkeyed: the empty windows [20, 90) are claimed
    # keyed: the claim starts at the item's window (it may go on over closed empty windows
    # after it, as unkeyed claims do: those are not delivered)
    assert NonEmpty(inner).select(pending, 200 * S) == Emit(1, 90 * S, 200 * S, windows=11)
    # not closed yet: it waits for the window of the item, not for the empty ones
    pending = Pending(6, 20 * S, lambda start, limit: batch if start <= 7 else Batch())
    assert NonEmpty(inner).select(pending, 96 * S) == Wait(until=100 * S, pending=None)


# -- the timeline of docs/consumers.md ------------------------------------------------

TIMELINE = [(1, "a"), (2, "b"), (4, "a"), (12, "a"), (25, "b"), (27, "a")]
CLOCK = [1, 2, 4, 7, 9, 10.5, 12, 17, 20.5, 25, 27, 30, 30.5, 32]


def run_timeline(stream, emitter, group) -> dict[float, list[tuple]]:
    """Append the timeline's items at their times and record what is emitted when."""
    cur = cursor(stream, emitter, group)
    emitted = {}
    for now in CLOCK:
        for i, (t, device) in enumerate(TIMELINE):
            if t == now:
                put(stream, t * S, {"device": device, "i": i})
        got = step(cur, int(now * S))
        if got:
            emitted[now] = [(key, [TIMELINE[i][0] for i in ids]) for key, ids, _ in got]
    return emitted


def test_timeline_fixed_time_windows_per_key(sq):
    assert run_timeline(sq, FixedTimeWindow(10), "fixed") == {
        10.5: [("a", [1, 4]), ("b", [2])],
        20.5: [("a", [12])],  # b had no item in [10, 20): no window for b
        30.5: [("b", [25]), ("a", [27])],  # the window whose first item is older goes first
    }


def test_timeline_count_windows_per_key(sq):
    assert run_timeline(sq, CountWindow(2), "count") == {
        4: [("a", [1, 4])],
        25: [("b", [2, 25])],
        27: [("a", [12, 27])],
    }


def test_timeline_session_windows_per_key(sq):
    """gap=5: a key's session closes when *that key* was quiet for 5 s."""
    assert run_timeline(sq, SessionWindow(5), "session") == {
        7: [("b", [2])],
        9: [("a", [1, 4])],
        17: [("a", [12])],
        30: [("b", [25])],
        32: [("a", [27])],
    }


def test_window_bounds_and_seq_are_per_key(sq):
    for i, (t, device) in enumerate(TIMELINE):
        put(sq, t * S, {"device": device, "i": i})
    cur = cursor(sq, FixedTimeWindow(10), "bounds")
    windows = []
    while not isinstance(claimed := cur.claim(40 * S), Waiting):
        if claimed is not None:
            windows += claimed.windows(sq)
            cur.commit(claimed)
    seen = [(w.key, w.seq, w.start.timestamp(), w.end.timestamp(), w.group) for w in windows]
    assert seen == [("a", 1, 0, 10, "bounds"), ("b", 1, 0, 10, "bounds"), ("a", 2, 10, 20, "bounds"),
                    ("b", 2, 20, 30, "bounds"), ("a", 3, 20, 30, "bounds")]


def test_late_event_time_items_go_to_their_keys_next_window(sq):
    """With time_field, a key's window closes when an item *of that key* passes its end
    (plus grace); an item of the key older than that arrives in the key's next window,
    counted in ``late``. Other keys' items do not close it."""
    cur = cursor(sq, FixedTimeWindow(10, grace=0), "late", time_field="t")
    put(sq, 0, {"device": "a", "t": 1, "i": 0}, {"device": "a", "t": 4, "i": 1}, {"device": "b", "t": 30, "i": 2})
    assert step(cur, 100 * S) == []  # b's item does not close a's window [0, 10)
    put(sq, 0, {"device": "a", "t": 12, "i": 3})
    assert step(cur, 100 * S) == [("a", [0, 1], 0)]
    put(sq, 0, {"device": "a", "t": 8, "i": 4})  # late: a's [0, 10) was delivered
    put(sq, 0, {"device": "a", "t": 21, "i": 5}, {"device": "b", "t": 41, "i": 6})
    assert step(cur, 100 * S) == [("b", [2], 0), ("a", [3, 4], 1)]


def test_items_without_the_key_field_form_the_key_none(sq):
    items = [{"device": "a", "i": 0}, {"i": 1}, {"device": None, "i": 2}, {"device": "a", "i": 3}]
    put(sq, 1 * S, *items)
    assert step(cursor(sq, CountWindow(2), "none"), 2 * S) == [("a", [0, 3], 0), (None, [1, 2], 0)]


def test_numbers_that_are_equal_are_one_key(sq):
    put(sq, S, {"device": 1, "i": 0}, {"device": 1.0, "i": 1}, {"device": True, "i": 2}, {"device": "1", "i": 3})
    got = step(cursor(sq, CountWindow(2, timeout=1), "num"), 5 * S)
    assert sorted((repr(k), ids) for k, ids, _ in got) == [("'1'", [3]), ("1", [0, 1]), ("True", [2])]


# -- restarts, shared reads, idle keys -------------------------------------------------


def test_a_restarted_cursor_continues_every_key_without_loss_or_repeat(sq):
    items = [{"device": "abc"[i % 3] if i % 7 else "rare", "i": i} for i in range(200)]
    put(sq, S, *items)
    first = cursor(sq, CountWindow(4), "restart")
    got = []
    for _ in range(10):  # ten windows, then the process "stops"
        claimed = first.claim(2 * S)
        got.append([d["i"] for d in claimed.windows(sq)[0].data])
        assert first.commit(claimed)
    put(sq, S, *[{"device": "abc"[i % 3], "i": i} for i in range(200, 230)])
    items += [{"device": "abc"[i % 3], "i": i} for i in range(200, 230)]
    second = cursor(sq, CountWindow(4), "restart")
    got += [ids for _, ids, _ in step(second, 2 * S)]
    delivered_ok([(items[ids[0]]["device"], ids) for ids in got], items)
    per_key = Counter(d["device"] for d in items)
    assert sum(len(ids) for ids in got) == sum(n - n % 4 for n in per_key.values())
    for device in per_key:  # in offset order within each key, the leftovers still pending
        mine = [i for ids in got for i in ids if items[i]["device"] == device]
        assert mine == [i for i, d in enumerate(items) if d["device"] == device][: len(mine)]


def test_one_read_of_new_items_serves_every_key(sq, monkeypatch):
    put(sq, S, *[{"device": f"d{i % 20}", "i": i} for i in range(400)])
    cur = cursor(sq, CountWindow(5), "reads")
    step(cur, 2 * S)
    reads = []
    real = sq.store.read
    monkeypatch.setattr(sq.store, "read", lambda *a, **k: reads.append(a) or real(*a, **k))
    put(sq, S, *[{"device": f"d{i % 20}", "i": i} for i in range(400, 500)])
    claimed = cur.claim(2 * S)
    assert len(claimed.batch) == 5 and len(reads) == 1  # one read of the new items …
    assert sorted(len(kc.buf) for kc in cur._keys.values()) == [0] + [5] * 19  # … serves every key
    cur.commit(claimed)
    assert len(step(cur, 2 * S)) == 19 and len(reads) <= 21  # one read per round, not per key


def test_an_idle_key_is_moved_up_so_restarts_do_not_reread_the_stream(sq, monkeypatch):
    monkeypatch.setattr(keyed, "SKIP_AFTER", 50)
    put(sq, S, {"device": "quiet", "i": 0})
    put(sq, S, *[{"device": "busy", "i": i} for i in range(1, 201)])
    cur = cursor(sq, CountWindow(1), "idle")
    assert len(step(cur, 2 * S)) == 201
    restarted = cursor(sq, CountWindow(1), "idle")
    restarted._build(2 * S)
    assert restarted._base == 200  # not 0: the quiet key's chain was moved with an empty claim
    put(sq, S, {"device": "quiet", "i": 201})
    assert step(restarted, 2 * S) == [("quiet", [201], 0)]
    assert sq.group("idle").info()["windows"] == 203  # 202 windows and the one empty claim


# -- operators: info, group ls, reset, delete ------------------------------------------


def test_info_and_groups_show_a_keyed_group_once_with_its_key_count(sq):
    put(sq, S, *[{"device": "abc"[i % 3], "i": i} for i in range(10)])
    step(cursor(sq, CountWindow(2), "g"), 2 * S)
    assert [g.name for g in sq.groups()] == ["default", "g"]
    info = sq.group("g").info()
    assert {k: info[k] for k in ("keys", "windows", "next_offset", "claimed", "failed")} == \
        {"keys": 3, "windows": 4, "next_offset": 10, "claimed": 0, "failed": 0}
    assert set(sq.info()["groups"]) == {"default", "g"}


def test_reset_replays_every_key_and_delete_removes_the_key_chains(sq):
    put(sq, S, *[{"device": "ab"[i % 2], "i": i} for i in range(8)])
    cur = cursor(sq, CountWindow(2), "g")
    assert len(step(cur, 2 * S)) == 4
    sq.group("g").reset(to=4)
    cur._checked = 0  # the cursor checks for operator moves once a second; the clock is ours
    assert sorted(step(cur, 3 * S)) == [("a", [4, 6], 0), ("b", [5, 7], 0)]
    sq.group("g").reset(to="earliest")
    assert len(step(cursor(sq, CountWindow(2), "g"), 4 * S)) == 4  # a new consumer replays too
    sq.get_group("g").delete()
    assert [g.name for g in sq.store.groups("s")] == ["default"]
    cur._checked = 0
    with pytest.raises(GroupDeletedError):
        cur.claim(5 * S)
    # a new group of that name starts anew, keys included
    assert len(step(cursor(sq, CountWindow(2), "g"), 6 * S)) == 4


# -- end to end, both backends ----------------------------------------------------------


def make_items(n: int, keys: str = "xyz") -> list[dict]:
    return [{"device": keys[(i * i + i // 3) % len(keys)], "i": i, "v": float(i)} for i in range(n)]


def consume(url, group, got, **options):
    options.setdefault("blocking", False)
    return streamlog.streaming("s", group=group, url=url, key="device", **options).apply(
        lambda w: got.append((w.key, [d["i"] for d in w.data])))


def test_count_windows_per_key_end_to_end(url):
    items = make_items(60)
    streamlog.stream("s", url=url).extend(items)
    got = []
    assert consume(url, "g", got, size=3) == len(got)
    delivered_ok(got, items)
    per_key = Counter(d["device"] for d in items)
    assert Counter(k for k, _ in got) == {k: n // 3 for k, n in per_key.items()}
    assert all(len(ids) == 3 for _, ids in got)


def test_fixed_time_windows_per_key_end_to_end(url):
    """Event time, so the windows do not depend on when the test runs."""
    items = [{"device": "xy"[i % 2], "i": i, "t": 1000 + i * 0.5} for i in range(40)]  # t: 1000 … 1019.5
    streamlog.stream("s", url=url).extend(items + [{"device": "x", "i": 40, "t": 2000},
                                                   {"device": "y", "i": 41, "t": 2000}])
    got = []
    consume(url, "g", got, interval=5, grace=0, time_field="t")
    assert sorted(got) == [("x", [i for i in range(40) if i % 2 == 0 and lo <= 1000 + i / 2 < lo + 5])
                           for lo in (1000, 1005, 1010, 1015)] + \
        [("y", [i for i in range(40) if i % 2 == 1 and lo <= 1000 + i / 2 < lo + 5]) for lo in (1000, 1005, 1010, 1015)]


def test_session_windows_per_key_end_to_end(url):
    rows = [("x", 0), ("y", 1), ("x", 2), ("y", 20), ("x", 25), ("x", 26), ("y", 60), ("x", 60)]
    streamlog.stream("s", url=url).extend([{"device": d, "i": i, "t": 1000 + t} for i, (d, t) in enumerate(rows)])
    got = []
    consume(url, "g", got, gap=10, time_field="t")
    # closed by the key's own next item; the open sessions (t=60) wait for the clock (60+10 s after append)
    assert sorted(got) == [("x", [0, 2]), ("x", [4, 5]), ("y", [1]), ("y", [3])]


def test_restart_continues_without_loss_or_repeat_end_to_end(url):
    items = make_items(90)
    stream = streamlog.stream("s", url=url)
    stream.extend(items[:60])
    got = []
    assert consume(url, "g", got, size=4, max_windows=5) == 5
    stream.extend(items[60:])
    consume(url, "g", got, size=4)
    delivered_ok(got, items)
    per_key = Counter(d["device"] for d in items)
    assert sum(len(ids) for _, ids in got) == sum(n - n % 4 for n in per_key.values())


def test_a_window_whose_consumer_died_is_taken_over_end_to_end(url):
    items = make_items(40)
    stream = streamlog.stream("s", url=url)
    stream.extend(items)
    dead = KeyedCursor(stream, ensure_group(stream, "g"), CountWindow(4), key="device", lease=1, max_retries=3)
    lost = dead.claim(now_ms())  # claimed, never committed: its process "died"
    got = []
    consume(url, "g", got, size=4)
    assert not any(ids == [d["i"] for d in lost.batch.data] for _, ids in got)
    wait_until(lambda: consume(url, "g", got, size=4, lease=5), timeout=10, message="the takeover")
    delivered_ok(got, items)
    per_key = Counter(d["device"] for d in items)
    assert sum(len(ids) for _, ids in got) == sum(n - n % 4 for n in per_key.values())
    assert got[-1] == (lost.key, [d["i"] for d in lost.batch.data])


def test_a_failing_key_does_not_hold_other_keys_back_end_to_end(url):
    items = make_items(45)
    stream = streamlog.stream("s", url=url)
    stream.extend(items)
    got = []

    def fn(window):
        if window.key == "y":
            raise ValueError("bad device")
        got.append((window.key, [d["i"] for d in window.data]))

    consumer = streamlog.streaming("s", size=3, key="device", group="g", url=url, blocking=False,
                                   max_retries=1, retry_delay=0)
    consumer.apply(fn)
    per_key = Counter(d["device"] for d in items)
    assert Counter(k for k, _ in got) == {"x": per_key["x"] // 3, "z": per_key["z"] // 3}
    dead = streamlog.stream("s.dead", url=url).read(limit=None)
    y = [i for i, d in enumerate(items) if d["device"] == "y"]
    assert [d["data"]["offset"] for d in dead] == y[: len(y) - len(y) % 3]
    assert {(d["data"]["group"], d["data"]["key"], d["data"]["attempts"]) for d in dead} == {("g", "y", 2)}
    assert consumer.consumer.dead_lettered == len(dead)
    assert stream.group("g").info()["dead"] == len(dead)


def test_only_the_failing_key_waits_for_its_retry_end_to_end(url):
    """With one worker, a key's failed window holds back only that key: other keys'
    windows run during its backoff, and the key's own windows keep their order (the
    retry comes before the key's next window), within the same blocking=False run."""
    items = make_items(36)
    streamlog.stream("s", url=url).extend(items)
    calls = []

    def fn(window):
        calls.append((window.key, window.attempt, [d["i"] for d in window.data]))
        if window.key == "y" and window.attempt == 1 and window.seq == 1:
            raise ValueError("flaky device")

    consumer = streamlog.streaming("s", size=3, key="device", group="g", url=url, blocking=False,
                                   max_retries=2, retry_delay=0.4)
    consumer.apply(fn)
    failed = next(i for i, (key, attempt, _) in enumerate(calls) if key == "y" and attempt == 1)
    assert calls[failed + 1][0] != "y"  # the consumer went on with another key at once
    y_calls = [(attempt, ids) for key, attempt, ids in calls if key == "y"]
    first = y_calls[0][1]
    assert y_calls[:2] == [(1, first), (2, first)]  # the retry before y's next window
    assert [ids[0] for _, ids in y_calls[1:]] == sorted(ids[0] for _, ids in y_calls[1:])
    delivered = sorted(i for _, attempt, ids in calls if attempt == 1 or ids == first for i in ids)
    per_key = Counter(d["device"] for d in items)
    assert len(calls) == sum(n // 3 for n in per_key.values()) + 1
    assert len(set(delivered)) == sum(n - n % 3 for n in per_key.values())
    assert consumer.consumer.dead_lettered == 0


def test_two_consumers_share_a_keyed_group_end_to_end(url):
    items = make_items(80, keys="pqrs")
    streamlog.stream("s", url=url).extend(items)
    got = []
    lock = threading.Lock()
    want = sum(n // 4 for n in Counter(d["device"] for d in items).values())

    def fn(window):
        with lock:
            got.append((window.key, [d["i"] for d in window.data]))

    consumers = [streamlog.streaming("s", size=4, key="device", group="g", url=url, poll=0.005) for _ in range(2)]
    threads = [threading.Thread(target=c.apply, args=(fn,)) for c in consumers]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(got) >= want, timeout=30, message="every window")
    finally:
        for c in consumers:
            c.stop()
        for thread in threads:
            thread.join(10)
    assert len(got) == want
    delivered_ok(got, items)


def test_workers_run_keyed_windows_in_parallel_end_to_end(url):
    items = make_items(60)
    streamlog.stream("s", url=url).extend(items)
    got = []
    lock = threading.Lock()

    def fn(window):
        with lock:
            got.append((window.key, [d["i"] for d in window.data]))

    streamlog.streaming("s", size=3, key="device", group="g", url=url, blocking=False, workers=3).apply(fn)
    delivered_ok(got, items)
    assert len(got) == sum(n // 3 for n in Counter(d["device"] for d in items).values())


def test_cli_run_with_key(url, tmp_path):
    from typer.testing import CliRunner

    from streamlog.cli import app

    (tmp_path / "per_device.py").write_text(
        "def mean(window):\n"
        "    return {'device': window.key, 'n': len(window), 'mean': window.frame()['v'].mean()}\n")
    items = make_items(30)
    streamlog.stream("s", url=url).extend(items)
    result = CliRunner().invoke(app, ["run", f"{tmp_path}/per_device.py:mean", "--stream", "s", "--size", "5",
                                      "--key", "device", "--sink", "out", "--once", "--url", url])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    out = [r["data"] for r in streamlog.stream("out", url=url).read(limit=None)]
    assert result.stdout.startswith(f"{len(out)} windows processed")
    expected = Counter()
    for d in items:
        expected[d["device"]] += 1
    assert Counter(r["device"] for r in out) == {k: n // 5 for k, n in expected.items() if n >= 5}
    assert all(r["n"] == 5 for r in out)
