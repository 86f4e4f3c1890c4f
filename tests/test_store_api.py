"""The Store contract, method by method, called directly on each backend.

Like huey's storage tests: every test talks to a :class:`~streamlog.store.base.Store`
opened with :func:`streamlog.store.open_store` (never through ``streamlog.stream``)
and runs once on the embedded SQLite backend and once on a MongoDB-wire server
(FerretDB). Expectations are exact, so a difference between the two backends
fails here. Times are integer milliseconds throughout.

MongoDB's trim is fenced (``trim_fence`` = 2 s: ``trim(..., wait=True)`` sleeps it
out), so this suite calls a waiting trim on it only twice.
"""

from __future__ import annotations

import pytest

from streamlog.items import encode_many, now_ms
from streamlog.store import open_store
from streamlog.store.base import ACTIVE, COMMITTED, DEAD, FAILED, Batch, Claim, Group, StreamRecord

#: the retention policy of learner checkpoints: the newest this many versions are kept
KEEP_MODEL_VERSIONS = 3

T0 = 1_700_000_000_000  # an append time (ms)


@pytest.fixture
def store(url):
    s = open_store(url)
    yield s
    s.close()


def items(n: int, first: int = 0) -> list[dict]:
    return [{"n": i} for i in range(first, first + n)]


def claim(stream: str = "s", group: str = "g", seq: int = 1, attempt: int = 1, lo: int = 0, hi: int = 4,
          count: int = 5, start: int | None = None, end: int | None = None, windows: int = 1,
          owner: str = "c1", lease: int = 10_000, state: str = ACTIVE, error: str | None = None,
          created: int = 1_000) -> Claim:
    return Claim(stream=stream, group=group, seq=seq, attempt=attempt, lo=lo, hi=hi, count=count,
                 start=start, end=end, windows=windows, owner=owner, lease=lease, state=state,
                 error=error, created=created)


def keys(claims: list[Claim]) -> list[tuple]:
    return [c.key for c in claims]


def model_versions(store, name: str, group: str, model: str) -> list[int]:
    """The checkpoint versions a backend holds (no contract method lists them: peek inside)."""
    if hasattr(store, "_models"):  # MongoStore
        docs = store._models.find({"s": name, "g": group, "m": model}, {"q": 1})
        return sorted(d["q"] for d in docs)
    sid = store._sid(name)  # SQLiteStore
    rows = store._con().execute("SELECT seq FROM models WHERE sid=? AND grp=? AND name=? ORDER BY seq",
                                (sid, group, model)).fetchall()
    return [r[0] for r in rows]


# -- streams ------------------------------------------------------------------


def test_create_stream_is_idempotent_and_creates_the_default_group(store):
    before = now_ms()
    record = store.create_stream("s")
    assert isinstance(record, StreamRecord)
    assert record.name == "s" and record.options == {}
    assert before <= record.created <= now_ms()
    assert store.create_stream("s") == record
    assert store.groups("s") == [Group("s", "default", 0, record.created)]
    assert store.streams() == ["s"]


def test_get_stream_streams_and_set_options(store):
    assert store.get_stream("nope") is None
    assert store.streams() == []
    for name in ("zeta", "alpha", "mid.dle"):
        store.create_stream(name)
    assert store.streams() == ["alpha", "mid.dle", "zeta"]
    record = store.get_stream("alpha")
    assert record == StreamRecord("alpha", record.created, {})
    store.set_options("alpha", {"retention": {"items": 10}})
    assert store.get_stream("alpha").options == {"retention": {"items": 10}}
    store.set_options("alpha", {"other": 1})  # replaced, not merged
    assert store.get_stream("alpha") == StreamRecord("alpha", record.created, {"other": 1})
    assert store.get_stream("zeta").options == {}


def test_drop_removes_items_groups_claims_and_models(store):
    for name in ("s", "keep"):
        store.create_stream(name)
        store.append(name, items(3), T0)
        store.create_group(name, "g", 1)
        assert store.claim(claim(name, "g", 1, 1, lo=1, hi=2, count=2))
        assert store.claim(claim(name, "g", 2, 1, lo=3, hi=2, count=0))
        assert store.commit(claim(name, "g", 2, 1, lo=3, hi=2, count=0))
        store.save_model(name, "g", "m", 1, {"w": 1})
    assert store.drop("s") is True
    assert store.get_stream("s") is None
    assert store.streams() == ["keep"]
    assert store.drop("s") is False
    assert store.drop("never") is False
    # recreated, the name starts from nothing
    store.create_stream("s")
    assert store.count("s") == 0 and store.last_offset("s") is None
    assert store.read("s") == Batch()
    assert [g.name for g in store.groups("s")] == ["default"]
    assert store.last_claim("s", "g") is None
    assert store.open_claims("s") == []
    assert store.expired("s", "g", 10**15) == []
    assert store.load_model("s", "g", "m") is None
    assert store.models("s") == []
    assert store.append("s", items(1), T0) == [0]
    # the other stream is untouched
    assert store.read("keep").offsets == [0, 1, 2]
    assert [g.name for g in store.groups("keep")] == ["default", "g"]
    assert keys(store.open_claims("keep")) == [("keep", "g", 1, 1)]
    assert store.last_claim("keep", "g").key == ("keep", "g", 2, 2)
    assert store.load_model("keep", "g", "m")[0] == 1


# -- items ----------------------------------------------------------------------


def test_append_assigns_gapless_offsets_from_zero(store):
    store.create_stream("s")
    assert store.append("s", [], T0) == []
    assert store.append("s", items(3), T0) == [0, 1, 2]
    assert store.append("s", items(1, 3), T0 + 1) == [3]
    batch = items(4, 4)
    assert store.append("s", batch, T0 + 2, encoded=encode_many(batch)) == [4, 5, 6, 7]
    assert store.append("s", [], T0 + 3) == []
    got = store.read("s")
    assert got.offsets == list(range(8))
    assert got.data == items(8)
    assert got.times == [T0] * 3 + [T0 + 1] + [T0 + 2] * 4


def test_read_ranges(store):
    store.create_stream("s")
    store.append("s", items(4), T0)
    store.append("s", items(6, 4), T0 + 5)
    whole = store.read("s")
    assert isinstance(whole, Batch)
    assert whole == Batch(list(range(10)), [T0] * 4 + [T0 + 5] * 6, items(10))
    assert len(whole) == 10

    def offsets(**kw):
        return store.read("s", **kw).offsets

    assert offsets(start=3) == list(range(3, 10))
    assert offsets(start=3, limit=2) == [3, 4]
    assert offsets(start=0, limit=4) == [0, 1, 2, 3]
    assert offsets(start=3, end=5) == [3, 4, 5]
    assert offsets(start=3, limit=2, end=8) == [3, 4]
    assert offsets(start=3, limit=10, end=5) == [3, 4, 5]
    assert offsets(start=9, limit=5) == [9]
    assert offsets(start=10) == []
    assert offsets(start=100, limit=5) == []
    assert offsets(start=5, end=4) == []
    assert offsets(start=0, limit=0) == []
    assert offsets(start=-5, limit=2) == [0, 1]
    part = store.read("s", 2, 4)
    assert part == Batch([2, 3, 4, 5], [T0, T0, T0 + 5, T0 + 5], [{"n": 2}, {"n": 3}, {"n": 4}, {"n": 5}])


def test_offset_probes_and_count(store):
    store.create_stream("s")
    assert (store.last_offset("s"), store.first_offset("s"), store.count("s")) == (None, None, 0)
    assert store.count("s", after=-1) == 0
    store.append("s", items(5), T0)
    assert (store.last_offset("s"), store.first_offset("s"), store.count("s")) == (4, 0, 5)
    assert store.count("s", after=-1) == 5
    assert store.count("s", after=2) == 2
    assert store.count("s", after=4) == 0
    assert store.count("s", after=99) == 0


def test_trim_deletes_below_and_always_keeps_the_newest_item(store):
    # two waiting trims: ~4 s on MongoDB (trim_fence)
    store.create_stream("s")
    assert store.trim("s", 10) == 0  # empty stream: nothing to do, no fence to wait out
    store.append("s", items(5), T0)
    assert store.trim("s", 2) == 2
    assert store.read("s").offsets == [2, 3, 4]
    assert (store.first_offset("s"), store.last_offset("s"), store.count("s")) == (2, 4, 3)
    assert store.trim("s", 100) == 2  # never the newest item
    assert store.read("s") == Batch([4], [T0], [{"n": 4}])
    assert store.append("s", items(2, 5), T0) == [5, 6]  # offsets never restart
    assert (store.first_offset("s"), store.last_offset("s"), store.count("s")) == (4, 6, 3)


def test_trim_without_waiting(store):
    store.create_stream("s")
    store.append("s", items(5), T0)
    deleted = store.trim("s", 3, wait=False)
    if store.trim_fence > 0:
        # the first call only observes the newest offset; a later call may delete below it
        assert deleted == 0
        assert store.read("s").offsets == [0, 1, 2, 3, 4]
    else:
        assert deleted == 3
        assert store.read("s").offsets == [3, 4]


# -- groups ---------------------------------------------------------------------


def test_create_group_gets_or_creates_and_keeps_the_first_start(store):
    store.create_stream("s")
    before = now_ms()
    group = store.create_group("s", "g", 5)
    assert group.stream == "s" and group.name == "g" and group.start == 5
    assert before <= group.created <= now_ms()
    assert store.create_group("s", "g", 9) == group
    assert store.create_group("s", "default", 7).start == 0
    store.create_group("s", "zeta", 0)
    store.create_group("s", "alpha", 2)
    assert [(g.name, g.start) for g in store.groups("s")] == [("alpha", 2), ("default", 0), ("g", 5), ("zeta", 0)]
    assert store.groups("s")[2] == group


# -- claims ---------------------------------------------------------------------


def test_claim_is_a_unique_insert(store):
    store.create_stream("s")
    first = claim(owner="c1")
    assert store.claim(first) is True
    assert store.claim(claim(owner="c2")) is False  # same (stream, group, seq, attempt)
    assert store.open_claims("s", "g") == [first]
    assert store.claim(claim(attempt=2, owner="c2")) is True
    assert store.claim(claim(group="h", owner="c2")) is True
    assert store.claim(claim(seq=2, lo=5, hi=9, owner="c2")) is True


def test_claims_round_trip_every_field(store):
    store.create_stream("s")
    c = claim(seq=7, attempt=3, lo=10, hi=19, count=10, start=T0, end=T0 + 3000, windows=3,
              owner="host:1:abc", lease=T0 + 500, state=FAILED, error="boom", created=T0 - 5)
    assert store.claim(c)
    assert store.last_claim("s", "g") == c
    assert store.open_claims("s") == [c]
    assert store.expired("s", "g", T0 + 501) == [c]
    empty = claim(group="e", seq=1, lo=20, hi=19, count=0)  # an empty window: hi < lo
    assert store.claim(empty)
    assert store.last_claim("s", "e") == empty


def test_last_claim_is_the_highest_seq_then_attempt(store):
    store.create_stream("s")
    assert store.last_claim("s", "g") is None
    store.claim(claim(seq=1, attempt=1))
    assert store.last_claim("s", "g").key == ("s", "g", 1, 1)
    store.claim(claim(seq=2, attempt=1, lo=5, hi=9))
    store.claim(claim(seq=1, attempt=3))
    assert store.last_claim("s", "g").key == ("s", "g", 2, 1)
    store.claim(claim(seq=2, attempt=2, lo=5, hi=9))
    assert store.last_claim("s", "g").key == ("s", "g", 2, 2)
    store.claim(claim(seq=10, attempt=1, lo=10, hi=12))  # numeric order, not text order
    store.claim(claim(seq=9, attempt=5, lo=10, hi=12))
    assert store.last_claim("s", "g").key == ("s", "g", 10, 1)
    store.claim(claim(group="h", seq=50))
    assert store.last_claim("s", "g").key == ("s", "g", 10, 1)
    assert store.last_claim("s", "h").key == ("s", "h", 50, 1)
    assert store.last_claim("s", "other") is None


def test_renew_moves_the_lease(store):
    store.create_stream("s")
    c = claim(lease=1_000)
    store.claim(c)
    assert keys(store.expired("s", "g", 1_500)) == [c.key]
    store.renew(c, 2_000)
    assert store.expired("s", "g", 1_500) == []
    assert store.expired("s", "g", 2_000) == []  # lease < now, strictly
    [renewed] = store.expired("s", "g", 2_001)
    assert renewed.lease == 2_000 and renewed.state == ACTIVE and renewed.owner == "c1"
    assert store.open_claims("s", "g")[0].lease == 2_000


def test_commit_seals_the_window(store):
    store.create_stream("s")
    c = claim(lo=0, hi=4, count=5, lease=5_000)
    store.claim(c)
    assert store.commit(c) is True
    head = store.last_claim("s", "g")
    assert head.key == ("s", "g", 1, 2)
    assert (head.state, head.lo, head.hi, head.count, head.owner) == (COMMITTED, 0, 4, 5, "c1")
    assert store.open_claims("s") == []
    assert store.expired("s", "g", 10**15) == []
    # a second commit of the same attempt is refused
    assert store.commit(c) is False
    assert store.last_claim("s", "g").key == ("s", "g", 1, 2)
    # a takeover of a sealed window is refused too
    assert store.claim(claim(attempt=2, owner="c2")) is False
    # the chain goes on
    nxt = claim(seq=2, lo=5, hi=9)
    assert store.claim(nxt)
    assert store.last_claim("s", "g") == nxt


def test_commit_as_dead_with_an_error(store):
    store.create_stream("s")
    c = claim(attempt=4)
    store.claim(c)
    assert store.commit(c, DEAD, "ValueError: bad") is True
    head = store.last_claim("s", "g")
    assert (head.key, head.state, head.error) == (("s", "g", 1, 5), DEAD, "ValueError: bad")
    assert store.open_claims("s") == []


def test_commit_after_a_takeover_is_refused_and_changes_nothing(store):
    store.create_stream("s")
    old = claim(owner="c1", lease=1_000)
    store.claim(old)
    new = claim(attempt=2, owner="c2", lease=9_000, created=1_500)
    assert store.claim(new) is True  # the lease ran out: c2 took the window over
    assert store.commit(old) is False
    assert store.last_claim("s", "g") == new
    assert store.open_claims("s", "g") == [old, new]  # the old attempt is not closed either
    assert keys(store.expired("s", "g", 1_001)) == [old.key]
    # the takeover's commit wins; the old attempt can still be retired
    assert store.commit(new) is True
    assert store.last_claim("s", "g").key == ("s", "g", 1, 3)
    store.supersede(old)
    assert store.open_claims("s") == []


def test_release_fails_the_attempt_until_retry_at(store):
    store.create_stream("s")
    c = claim(lease=9_000)
    store.claim(c)
    store.release(c, "RuntimeError: boom", retry_at=3_000)
    [failed] = store.open_claims("s", "g")
    assert (failed.state, failed.lease, failed.error) == (FAILED, 3_000, "RuntimeError: boom")
    assert store.expired("s", "g", 2_999) == []
    assert store.expired("s", "g", 3_000) == []
    assert store.expired("s", "g", 3_001) == [failed]
    # retry_at 0: reclaimable at once
    d = claim(seq=2, lo=5, hi=9, lease=9_000)
    store.claim(d)
    store.release(d, "boom")
    [released] = [x for x in store.expired("s", "g", 1) if x.seq == 2]
    assert (released.state, released.lease, released.error) == (FAILED, 0, "boom")


def test_supersede_closes_an_attempt(store):
    store.create_stream("s")
    old = claim(lease=1_000)
    new = claim(attempt=2, owner="c2", lease=9_000)
    store.claim(old)
    store.claim(new)
    store.supersede(old)
    assert store.open_claims("s") == [new]
    assert store.expired("s", "g", 5_000) == []
    store.supersede(old)  # idempotent
    assert store.open_claims("s") == [new]
    assert store.last_claim("s", "g") == new


def test_expired_lists_open_attempts_past_their_lease_lowest_seq_first(store):
    store.create_stream("s")
    for seq, lease in [(5, 100), (3, 400), (4, 200), (1, 300), (2, 9_000)]:
        store.claim(claim(seq=seq, lo=seq * 10, hi=seq * 10 + 9, lease=lease))
    store.claim(claim(seq=3, attempt=2, lease=50))
    store.claim(claim(seq=6, lease=10))
    store.commit(claim(seq=6, lease=10))  # closed: never expired
    store.claim(claim(group="h", seq=1, lease=10))  # another group
    assert keys(store.expired("s", "g", 100)) == [("s", "g", 3, 2)]
    assert keys(store.expired("s", "g", 301)) == [
        ("s", "g", 1, 1), ("s", "g", 3, 2), ("s", "g", 4, 1), ("s", "g", 5, 1)]
    assert keys(store.expired("s", "g", 1_000)) == [
        ("s", "g", 1, 1), ("s", "g", 3, 1), ("s", "g", 3, 2), ("s", "g", 4, 1), ("s", "g", 5, 1)]
    assert keys(store.expired("s", "g", 1_000, limit=2)) == [("s", "g", 1, 1), ("s", "g", 3, 1)]
    assert keys(store.expired("s", "g", 10**15, limit=1)) == [("s", "g", 1, 1)]
    assert keys(store.expired("s", "h", 11)) == [("s", "h", 1, 1)]
    assert store.expired("s", "h", 10) == []
    assert store.expired("s", "nobody", 10**15) == []


def test_open_claims_of_one_group_and_of_all(store):
    store.create_stream("s")
    for group, seq, attempt in [("b", 2, 1), ("a", 3, 1), ("b", 1, 2), ("a", 1, 1), ("b", 1, 1), ("c", 1, 1)]:
        store.claim(claim(group=group, seq=seq, attempt=attempt))
    store.commit(claim(group="c", seq=1, attempt=1))
    assert keys(store.open_claims("s")) == [
        ("s", "a", 1, 1), ("s", "a", 3, 1), ("s", "b", 1, 1), ("s", "b", 1, 2), ("s", "b", 2, 1)]
    assert keys(store.open_claims("s", "b")) == [("s", "b", 1, 1), ("s", "b", 1, 2), ("s", "b", 2, 1)]
    assert store.open_claims("s", "c") == []
    assert store.open_claims("s", "nobody") == []


def test_forget_claims_deletes_old_closed_attempts_but_keeps_chain_heads(store):
    store.create_stream("s")
    for group in ("g", "h"):
        store.create_group("s", group, 0)
    for seq, (lo, hi) in enumerate([(0, 4), (5, 9), (10, 14)], start=1):
        store.claim(claim(seq=seq, lo=lo, hi=hi))
        store.commit(claim(seq=seq, lo=lo, hi=hi))  # attempt 1 closed + its seal (attempt 2)
    store.claim(claim(seq=4, lo=15, hi=19))  # g's head: open
    store.claim(claim(group="h", seq=1, lo=0, hi=4))
    store.commit(claim(group="h", seq=1, lo=0, hi=4))  # h's head: closed, kept all the same
    later = now_ms() + 60_000
    assert store.forget_claims("s", below=100, older_than=0) == 0  # nothing that old
    assert store.forget_claims("s", below=0, older_than=later) == 0  # nothing that low
    assert store.forget_claims("s", below=7, older_than=later) == 2  # g #1 (hi 4)
    assert store.forget_claims("s", below=100, older_than=later) == 4  # g #2, #3
    assert store.forget_claims("s", below=100, older_than=later) == 0
    assert keys(store.open_claims("s")) == [("s", "g", 4, 1)]
    assert store.last_claim("s", "g").key == ("s", "g", 4, 1)
    assert store.last_claim("s", "h").key == ("s", "h", 1, 2)
    assert store.claim(claim(seq=2, attempt=1)) is True  # the forgotten keys are gone
    assert store.claim(claim(seq=4, attempt=1)) is False  # the head is not


# -- models -----------------------------------------------------------------------


def test_save_and_load_model_newest_seq_wins(store):
    store.create_stream("s")
    assert store.load_model("s", "g", "m") is None
    before = now_ms()
    store.save_model("s", "g", "m", 1, {"w": [1.0, 2.0], "n": 1})
    store.save_model("s", "g", "m", 3, {"w": [3.0], "n": 3})
    store.save_model("s", "g", "m", 2, {"w": [2.0], "n": 2})  # an older version saved later
    seq, saved, state = store.load_model("s", "g", "m")
    assert (seq, state) == (3, {"w": [3.0], "n": 3})
    assert before <= saved <= now_ms()
    store.save_model("s", "g", "m", 3, {"w": [4.0], "n": 4})  # the same version: replaced
    assert store.load_model("s", "g", "m")[::2] == (3, {"w": [4.0], "n": 4})
    assert store.load_model("s", "g", "other") is None
    assert store.load_model("s", "h", "m") is None
    assert store.load_model("nope", "g", "m") is None


def test_models_lists_the_newest_checkpoint_per_group_and_model(store):
    store.create_stream("s")
    store.create_stream("t")
    assert store.models("s") == []
    for group, model, seq in [("g", "b", 1), ("g", "b", 5), ("g", "b", 4), ("h", "a", 2),
                              ("g", "a", 7), ("g", "a", 6)]:
        store.save_model("s", group, model, seq, {"seq": seq})
    store.save_model("t", "g", "a", 99, {})
    listed = store.models("s")
    assert [row[:3] for row in listed] == [("g", "a", 7), ("g", "b", 5), ("h", "a", 2)]
    for group, model, seq, saved in listed:
        assert store.load_model("s", group, model)[:2] == (seq, saved)
    assert [row[:3] for row in store.models("t")] == [("g", "a", 99)]


def test_model_retention_keeps_the_last_versions_on_every_backend(store):
    """Policy: the newest KEEP_MODEL_VERSIONS (3) versions of a model are kept, on every
    backend, right after each save."""
    store.create_stream("s")
    for seq in range(1, 6):
        store.save_model("s", "g", "m", seq, {"seq": seq})
    store.save_model("s", "g", "other", 1, {})
    assert model_versions(store, "s", "g", "m") == [3, 4, 5]
    assert model_versions(store, "s", "g", "other") == [1]
    assert store.load_model("s", "g", "m")[::2] == (5, {"seq": 5})


def test_models_of_a_dropped_and_recreated_stream_start_afresh(store):
    """Whatever a backend remembers about saved versions must not outlive a drop: the
    first checkpoint of a recreated stream is kept, whatever its seq."""
    store.create_stream("s")
    for seq in range(1, 6):
        store.save_model("s", "g", "m", seq, {"seq": seq})
    assert store.drop("s")
    store.create_stream("s")
    store.save_model("s", "g", "m", 1, {"seq": "new"})
    assert store.load_model("s", "g", "m")[::2] == (1, {"seq": "new"})
    assert [row[:3] for row in store.models("s")] == [("g", "m", 1)]
    assert model_versions(store, "s", "g", "m") == [1]



def test_a_stream_recreated_by_another_client_is_seen_by_model_and_group_lookups(store, url):
    """A long-running reader (the HTTP model service, a predict stage) must see the
    models and groups of a stream another process dropped and created again."""
    store.create_stream("s")
    store.save_model("s", "g", "m", 1, {"seq": "old"})
    assert [row[:3] for row in store.models("s")] == [("g", "m", 1)]
    other = open_store(url)
    try:
        assert other.drop("s")
        other.create_stream("s")
        other.create_group("s", "fresh", 0)
        other.save_model("s", "g2", "m2", 7, {"seq": "new"})
    finally:
        other.close()
    assert [row[:3] for row in store.models("s")] == [("g2", "m2", 7)]
    assert store.load_model("s", "g2", "m2")[::2] == (7, {"seq": "new"})
    assert "fresh" in [g.name for g in store.groups("s")]

# -- idempotency keys -----------------------------------------------------------


def test_append_once_appends_a_keyed_batch_once(store):
    store.create_stream("s")
    store.append("s", items(2), T0)
    first = store.append_once("s", "k1", "d1", items(3), T0)
    assert (first.offsets, first.appended, first.digest, first.busy) == ([2, 3, 4], True, "d1", False)
    store.append("s", items(1), T0)
    again = store.append_once("s", "k1", "d1", items(3), T0 + 1000)  # the retry
    assert (again.offsets, again.appended, again.digest) == ([2, 3, 4], False, "d1")
    other = store.append_once("s", "k1", "d2", items(1), T0)  # the key, reused for another batch
    assert (other.appended, other.digest) == (False, "d1")
    assert store.count("s") == 6
    assert store.read("s", 2, 3).data == items(3)


def test_append_once_keys_belong_to_their_stream_and_expire(store):
    store.create_stream("s")
    store.create_stream("t")
    assert store.append_once("s", "k", "d", items(1), T0, window_ms=1000).offsets == [0]
    assert store.append_once("t", "k", "d", items(1), T0, window_ms=1000).appended  # another stream
    assert not store.append_once("s", "k", "d", items(1), T0 + 1000, window_ms=1000).appended
    late = store.append_once("s", "k", "d", items(1), T0 + 1001, window_ms=1000)  # past the window
    assert (late.offsets, late.appended) == ([1], True)
    assert store.append_once("s", "empty", "d", [], T0).offsets == []
    assert store.append_once("s", "empty", "d", [], T0).appended is False
    assert store.forget_keys(T0 + 1) == 2  # "k" of t, "empty" of s: first used at T0
    assert store.append_once("t", "k", "d", items(1), T0 + 2).appended


def test_append_once_arbitrates_concurrent_requests_with_one_key(store):
    import threading

    store.create_stream("s")
    results, barrier = [], threading.Barrier(4)

    def request():
        barrier.wait()
        results.append(store.append_once("s", "same", "d", items(5), now_ms()))

    threads = [threading.Thread(target=request) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.appended for r in results) == [False, False, False, True]
    assert all(r.offsets == [0, 1, 2, 3, 4] for r in results)
    assert store.count("s") == 5


def test_drop_forgets_the_streams_keys(store):
    store.create_stream("s")
    store.append_once("s", "k", "d", items(2), T0)
    assert store.drop("s")
    store.create_stream("s")
    again = store.append_once("s", "k", "d", items(2), T0)
    assert (again.offsets, again.appended) == ([0, 1], True)


@pytest.mark.mongo
def test_append_once_takes_over_a_dead_request_and_stores_only_what_is_missing(mongo_server):
    """MongoDB: the first request's process died after storing part of its batch (its key
    attempt is pending and its lease lapsed): the retry stores the rest, once."""
    import uuid

    url = f"{mongo_server}/t{uuid.uuid4().hex[:12]}"
    store = open_store(url)
    try:
        store.create_stream("s")
        store.append("s", items(2), T0)
        batch = items(5, first=100)
        # what a request that died after its first two items left behind
        store._keys.insert_one({"_id": "s/1/k", "s": "s", "k": "k", "a": 1, "digest": "d", "owner": "dead",
                                "token": 12345, "last": 1, "lease": 0, "state": "pending", "offsets": None,
                                "created": T0})
        store._append("s", batch[:2], T0, None, 12345)
        store.append("s", items(1, first=50), T0)  # another producer, after the dead request's items
        once = store.append_once("s", "k", "d", batch, T0)
        assert (once.offsets, once.appended) == ([2, 3, 5, 6, 7], True)
        assert store.read("s", 0).data == items(2) + batch[:2] + items(1, first=50) + batch[2:]
        assert store.append_once("s", "k", "d", batch, T0).offsets == [2, 3, 5, 6, 7]
        # a live attempt (lease not lapsed) is waited for, then reported busy
        store._keys.insert_one({"_id": "s/1/busy", "s": "s", "k": "busy", "a": 1, "digest": "d", "owner": "o",
                                "token": 1, "last": 7, "lease": now_ms() + 60_000, "state": "pending",
                                "offsets": None, "created": T0})
        busy = store.append_once("s", "busy", "d", batch, T0, wait=0.05)
        assert (busy.appended, busy.busy) == (False, True)
        assert store.count("s") == 8
    finally:
        store.client.drop_database(url.rsplit("/", 1)[1])
        store.close()
