"""Consumer groups as operators handle them (list, reset, delete), dead-letter re-drive,
reading ranges (read limits, iter, frame) and the drop policy, on both backends."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
from helpers import wait_until

import streamlog
from streamlog.errors import GroupDeletedError, UnknownGroupError


def _consume(url, name, group="default", size=1, **options):
    seen: list[int] = []
    n = streamlog.streaming(name, size=size, group=group, blocking=False, url=url, **options).apply(
        lambda w: seen.extend(w.offsets))
    return n, seen


def test_groups_are_listed_with_their_state(url):
    s = streamlog.stream("g", url=url)
    s.extend([{"n": i} for i in range(5)])
    s.group("late", start="latest")
    _consume(url, "g", size=2)  # default: 4 processed, 1 pending
    groups = {g.name: g for g in s.groups()}
    assert list(groups) == ["default", "late"]
    assert groups["late"].start == 5 and groups["default"].start == 0
    info = groups["default"].info()
    assert (info["pending"], info["next_offset"], info["dead"]) == (1, 4, 0)
    assert groups["late"].info()["pending"] == 0
    assert s.get_group("late").name == "late"
    with pytest.raises(UnknownGroupError):
        s.get_group("tpyo")
    assert "tpyo" not in [g.name for g in s.groups()]  # looking does not create


def test_reset_replays_or_skips(url):
    s = streamlog.stream("r", url=url)
    s.extend([{"n": i} for i in range(6)])
    assert _consume(url, "r")[1] == list(range(6))
    group = s.get_group("default")
    assert group.reset(to=2) == 2
    assert group.info()["pending"] == 4
    assert _consume(url, "r")[1] == [2, 3, 4, 5]  # replayed
    s.extend([{"n": i} for i in range(6, 9)])
    assert group.reset(to="latest") == 9
    assert _consume(url, "r")[1] == []  # skipped 6..8
    assert group.reset(to="earliest") == 0
    assert _consume(url, "r")[1] == list(range(9))
    with pytest.raises(streamlog.ConsumerError):
        group.reset(to=-1)


def test_reset_while_a_consumer_of_the_group_runs(url):
    """The window in flight is cancelled: its commit is refused; the consumer goes on from
    the reset point. Nothing is skipped or repeated other than what the reset asked for."""
    s = streamlog.stream("live", url=url)
    s.extend([{"n": i} for i in range(4)])
    started, release = threading.Event(), threading.Event()
    delivered: list[list[int]] = []

    def consume(window):
        delivered.append(window.offsets)
        if window.offsets == [0, 1]:
            started.set()
            release.wait(20)

    fn = streamlog.streaming("live", size=2, url=url, poll=0.01)
    runner = threading.Thread(target=fn.apply, args=(consume,))
    runner.start()
    try:
        assert started.wait(20)
        s.get_group("default").reset(to=3)  # skip 0..2 while window [0, 1] runs
        release.set()
        s.append({"n": 4})
        wait_until(lambda: [3, 4] in delivered, message="the window after the reset")
    finally:
        fn.stop()
        runner.join(20)
    assert delivered == [[0, 1], [3, 4]]
    assert fn.consumer.fenced == 1 and fn.consumer.processed == 1
    assert s.info()["pending"]["default"] == 0


def test_delete_a_group(url):
    s = streamlog.stream("d", url=url)
    s.extend([{"n": i} for i in range(3)])
    _consume(url, "d", group="tpyo")
    assert s.trim(processed=True) == 0  # the default group holds the items back, not tpyo
    s.get_group("tpyo").delete()
    assert [g.name for g in s.groups()] == ["default"]
    with pytest.raises(UnknownGroupError):
        s.get_group("tpyo").delete()
    with pytest.raises(streamlog.ConsumerError):
        s.get_group("default").delete()
    assert _consume(url, "d", group="tpyo")[1] == [0, 1, 2]  # a new group of that name starts afresh


def test_a_consumer_of_a_deleted_group_stops_with_a_clear_error(url):
    s = streamlog.stream("gone", url=url)
    s.append({"n": 0})
    started, release = threading.Event(), threading.Event()

    def consume(window):
        started.set()
        release.wait(20)

    fn = streamlog.streaming("gone", size=1, group="g", url=url, poll=0.01)
    outcome: dict = {}

    def run():
        try:
            outcome["n"] = fn.apply(consume)
        except Exception as exc:  # noqa: BLE001 - asserted below
            outcome["error"] = exc

    runner = threading.Thread(target=run)
    runner.start()
    assert started.wait(20)
    s.get_group("g").delete()
    release.set()
    s.append({"n": 1})
    runner.join(20)
    assert isinstance(outcome.get("error"), GroupDeletedError), outcome
    assert "was deleted" in str(outcome["error"])


def test_redrive_dead_letters_once(url):
    s = streamlog.stream("jobs", url=url)
    s.extend([{"n": i} for i in range(4)])
    broken = {1, 2}

    def consume(window):
        if window.data[0]["n"] in broken:
            raise ValueError("broken")

    streamlog.streaming("jobs", size=1, max_retries=0, blocking=False, url=url).apply(consume)
    assert s.info()["dead_letters"] == 2
    broken.clear()  # the bug is fixed
    assert s.redrive(group="default") == 2
    assert s.redrive(group="default") == 0  # marked: not twice
    assert [r["data"] for r in s.read(4)] == [{"n": 1}, {"n": 2}]
    n, seen = _consume(url, "jobs")
    assert seen == [4, 5]
    assert s.redrive(group="other") == 0
    with pytest.raises(streamlog.StreamlogError):
        s.redrive(limit=0)


def test_redrive_with_a_limit_and_to_another_stream(url):
    s = streamlog.stream("src", url=url)
    s.extend([{"n": i} for i in range(5)])
    streamlog.streaming("src", size=1, max_retries=0, blocking=False, url=url).apply(
        lambda w: (_ for _ in ()).throw(RuntimeError("all fail")))
    assert s.redrive(limit=2, to="retry") == 2
    assert s.redrive(to="retry") == 3
    assert [r["data"]["n"] for r in streamlog.connect(url).get("retry").read()] == [0, 1, 2, 3, 4]
    assert len(s) == 5


def test_read_limit_iter_and_frame(url):
    s = streamlog.stream("range", url=url)
    s.extend([{"n": i, "sq": i * i} for i in range(250)])
    assert len(s.read()) == 100  # the documented default limit
    assert len(s.read(limit=None)) == 250
    assert [r["offset"] for r in s.read(10, limit=5)] == [10, 11, 12, 13, 14]
    assert [r["offset"] for r in s.iter(240)] == list(range(240, 250))
    assert sum(1 for _ in s.iter()) == 250
    assert [r["offset"] for r in s.iter(5, 7)] == [5, 6, 7]
    frame = s.frame(100, 199)
    assert isinstance(frame, pd.DataFrame) and len(frame) == 100
    assert list(frame.index[:2]) == [100, 101] and frame.index.name == "offset"
    assert frame.loc[150, "sq"] == 22_500 and str(frame["timestamp"].dt.tz) == "UTC"
    with pytest.raises(streamlog.StreamlogError):
        s.read(start=-1)
    with pytest.raises(streamlog.StreamlogError):
        s.read(start=2**64)


def test_a_frame_never_clobbers_an_item_key(url):
    s = streamlog.stream("keys", url=url)
    s.append({"timestamp": "mine", "offset": 7})
    frame = s.frame()
    assert frame.loc[0, "timestamp"] == "mine" and frame.loc[0, "offset"] == 7


def test_a_producer_appending_across_a_drop_gets_an_error(url):
    producer, operator = streamlog.Client(url), streamlog.Client(url)
    try:
        stream = producer.stream("dropped")
        stream.append({"n": 0})
        handle = operator.get("dropped")
        handle.drop()
        assert not stream.exists()
        with pytest.raises(streamlog.UnknownStreamError, match="was dropped"):
            stream.extend([{"n": 1}, {"n": 2}])
        assert "dropped" not in operator.streams()
        fresh = operator.stream("dropped")  # an explicit get-or-create makes a new one
        assert fresh.exists() and not stream.exists() and len(fresh) == 0
    finally:
        producer.close()
        operator.close()


def test_redrive_all_then_one_group_never_twice(url):
    s = streamlog.stream("twice", url=url)
    s.extend([{"n": i} for i in range(3)])
    for group in ("default", "audit"):
        streamlog.streaming("twice", size=1, group=group, max_retries=0, blocking=False, url=url).apply(
            lambda w: (_ for _ in ()).throw(RuntimeError("fail")))
    assert s.info()["dead_letters"] == 6
    assert s.redrive(group="audit", limit=1) == 1
    assert s.redrive() == 5  # the rest of audit's and all of default's
    assert s.redrive(group="audit") == 0 and s.redrive(group="default") == 0 and s.redrive() == 0
