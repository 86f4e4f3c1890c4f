"""A learner's records reach its sink at least once: a window learned (checkpointed) whose
sink failed is retried without being learned again, and its record is sent again."""

from __future__ import annotations

import numpy as np
import pytest
from test_learners import FEATURES, MemoryStream, lstsq, regression_rows, windows_of

import streamlog
from streamlog.consumers import OnlineKMeans, OnlineLinearRegression
from streamlog.window import Window


class SinkFailsOnce:
    """Makes ``stream``'s ``extend_once`` (the runtime's call for a stream sink: a claim's
    records under its window's key) fail the first time it is given the record of window
    ``seq``; the sink takes nothing on that call."""

    def __init__(self, stream, seq):
        self.real = stream.extend_once
        self.seq = seq
        self.failures = 0
        stream.extend_once = self

    def __call__(self, key, records, **options):
        records = list(records)
        if not self.failures and any(r.get("seq") == self.seq for r in records):
            self.failures += 1
            raise ConnectionError("the sink did not acknowledge")
        return self.real(key, records, **options)


def sink_records(url, name):
    return [r["data"] for r in streamlog.stream(name, url=url).read(limit=None)]


@pytest.mark.parametrize("make", [
    lambda: OnlineLinearRegression(FEATURES, "y"),
    lambda: OnlineKMeans(2, FEATURES),
], ids=["regression", "kmeans"])
def test_a_learned_window_whose_sink_failed_is_sent_on_retry_and_learned_once(url, make):
    stream = streamlog.stream("sensors", url=url)
    rows = regression_rows(300, seed=21)
    stream.extend(rows)

    reference = make()  # the same model, its sink never failing
    assert streamlog.streaming("sensors", size=60, blocking=False, group="ref", sink="sensors.ref",
                               url=url).apply(reference) == 5

    model = make()
    run = streamlog.streaming("sensors", size=60, blocking=False, sink="sensors.model", url=url,
                              retry_delay=0)
    fault = SinkFailsOnce(run.sink, seq=2)
    assert run.apply(model) == 5
    assert fault.failures == 1 and run.consumer.failed == 1  # attempt 1 of window 2 did fail

    records = sink_records(url, "sensors.model")
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]  # window 2's record was sent on its retry
    assert records == sink_records(url, "sensors.ref")  # … and is the record of the state after window 2
    assert records[1]["n_seen"] == 120 and "model_seq" not in records[1]
    # nothing dead-lettered, every window committed
    assert run.consumer.dead_lettered == 0 and run.consumer.dead_windows == 0
    assert "sensors.dead" not in streamlog.connect(url).streams()
    assert stream.info()["pending"]["default"] == 0
    # learned once: window 2 was not learned again on its retry
    assert model.n_seen_ == 300 and model.windows_ == 5
    assert stream.model(model.name)["state"]["n_seen"] == 300
    assert model.summary() == reference.summary()


def test_a_plain_function_and_a_learner_meet_the_same_sink_failure_alike(sqlite_url):
    # The learner's retried window reaches the sink as a plain function's does.
    stream = streamlog.stream("pair", url=sqlite_url)
    stream.extend(regression_rows(120, seed=22))
    for group, fn in (("plain", lambda w: {"seq": w.seq, "items": len(w)}),
                      ("learner", OnlineLinearRegression(FEATURES, "y"))):
        run = streamlog.streaming("pair", size=60, blocking=False, group=group, sink=f"pair.{group}",
                                  url=sqlite_url, retry_delay=0)
        fault = SinkFailsOnce(run.sink, seq=1)
        assert run.apply(fn) == 2
        assert fault.failures == 1 and run.consumer.failed == 1
        assert [r["seq"] for r in sink_records(sqlite_url, f"pair.{group}")] == [1, 2]
        assert run.consumer.dead_lettered == 0


def test_a_redelivered_newest_window_sends_the_same_record_again():
    stream = MemoryStream()
    rows = regression_rows(180, seed=23)
    w1, w2, w3 = windows_of(stream, rows, 60)
    first = OnlineLinearRegression(FEATURES, "y")
    first(w1)
    sent = first(w2)
    # the same process retries it (its sink failed) …
    assert first(Window(stream, "default", 2, 2, w2.offsets, w2.times_ms, w2.data)) == sent
    # … or a restarted process gets it back from the checkpoint
    second = OnlineLinearRegression(FEATURES, "y")
    assert second(Window(stream, "default", 2, 3, w2.offsets, w2.times_ms, w2.data)) == sent
    assert first.n_seen_ == second.n_seen_ == 120 and first.windows_ == 2 and second.windows_ == 0
    assert second(w3)["n_seen"] == 180
    np.testing.assert_allclose(np.r_[second.coef_, second.intercept_], lstsq(rows), rtol=1e-9)


def test_an_older_learned_window_is_sent_with_the_newer_model_and_says_so():
    # A window that comes back after later ones were learned (its first process died between
    # checkpoint and sink; a new process took the next windows): the state after that window
    # alone is gone, so its record carries the current model and names its newest window.
    stream = MemoryStream()
    rows = regression_rows(240, seed=24)
    w = windows_of(stream, rows, 60)
    model = OnlineLinearRegression(FEATURES, "y")
    for window in w[:3]:
        model(window)
    again = model(Window(stream, "default", 2, 2, w[1].offsets, w[1].times_ms, w[1].data))
    assert again["seq"] == 2 and again["model_seq"] == 3
    assert (again["first_offset"], again["last_offset"], again["items"]) == (60, 119, 60)
    assert again["n_seen"] == 180 and model.n_seen_ == 180  # not learned twice
    assert again["coef"] == model.summary()["coef"]
    assert "model_seq" not in model(w[3])


def test_an_empty_window_learned_before_sends_nothing():
    stream = MemoryStream()
    model = OnlineLinearRegression(FEATURES, "y")
    empty = Window(stream, "default", 1, 1, [], [], [])
    assert model(empty) is None and model.seq_ == 1
    assert model(Window(stream, "default", 1, 2, [], [], [])) is None
