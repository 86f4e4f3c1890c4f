"""The streamlog demo: a producer streams sensor data, an online regression learns it.

    python scripts/demo.py              # embedded default database; ends by itself in ~20 s

A producer thread appends batches of 60 points ``y = c1·x1 + c2·x2 + noise`` to the
stream ``demo.sensors``, one batch every 0.5-1 s; halfway through, the relationship
changes from (c1, c2) = (2, -1) to (-1, 3). In the main thread a consumer reads the
stream in windows of 60 items and feeds them to an ``OnlineLinearRegression`` with a
half-life of 60 items (one window), printing one line per window: the coefficients converge, jump
when the relationship changes, and converge again. Each window's model record goes
to the stream ``demo.model`` (``streamlog tail demo.model``), and the model is
checkpointed after every window (``streamlog info demo.sensors``).

The two streams are dropped and recreated at the start, so every run begins afresh.
"""

from __future__ import annotations

import argparse
import random
import threading
import time

import numpy as np

import streamlog
from streamlog.consumers import OnlineLinearRegression

STREAM, SINK = "demo.sensors", "demo.model"
BEFORE, AFTER = (2.0, -1.0), (-1.0, 3.0)


def fresh(name: str, url: str | None) -> streamlog.Stream:
    client = streamlog.connect(url)
    for old in (name, name + ".dead"):
        if old in client.streams():
            client.get(old).drop()
    return client.stream(name)


def produce(stream, batches: int, pause: float, seed: int, done: threading.Event, consumer) -> None:
    rng = np.random.default_rng(seed)
    for batch in range(batches):
        c1, c2 = BEFORE if batch < batches // 2 else AFTER
        x = rng.uniform(-1, 1, size=(60, 2))
        y = c1 * x[:, 0] + c2 * x[:, 1] + rng.normal(scale=0.1, size=60)
        stream.extend([{"x1": a, "x2": b, "y": t} for (a, b), t in zip(x.tolist(), y.tolist(), strict=True)])
        time.sleep(random.uniform(pause / 2, pause))
    done.wait(timeout=30)  # the consumer has learned the last batch
    consumer.stop()  # it finishes and commits its window, then apply() returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=24, help="batches of 60 points (default 24)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between batches: 0.5-1 x this")
    parser.add_argument("--url", default=None, help="database URL (default: STREAMLOG_URL or the embedded file)")
    args = parser.parse_args()

    stream = fresh(STREAM, args.url)
    fresh(SINK, args.url)
    model = OnlineLinearRegression(features=["x1", "x2"], target="y", halflife=60)
    consumer = streamlog.streaming(STREAM, size=60, sink=SINK, url=args.url)
    done = threading.Event()
    print(f"streaming {args.batches} batches of 60 points to {STREAM!r} ({stream.store.url}); "
          f"y = c1*x1 + c2*x2 + noise, (c1, c2) = {BEFORE} then {AFTER}")
    print(" window  items   coef x1   coef x2   truth       rmse(window)  rmse(all)")

    def learn(window):
        record = model(window)  # predict, learn, checkpoint; the record goes to the sink
        if record is None:
            return None
        truth = BEFORE if window.offsets[0] < args.batches // 2 * 60 else AFTER
        print(f"{window.seq:7d} {record['n_seen']:6d} {record['coef']['x1']:+9.3f} {record['coef']['x2']:+9.3f}"
              f"   ({truth[0]:+.0f}, {truth[1]:+.0f})  {_fmt(record['window_rmse']):>12}  {_fmt(record['rmse']):>9}",
              flush=True)
        if window.offsets[-1] >= args.batches * 60 - 1:
            done.set()
        return record

    producer = threading.Thread(target=produce, args=(stream, args.batches, args.pause, 0, done, consumer),
                                daemon=True)
    producer.start()
    windows = consumer.apply(learn)
    producer.join()
    coef = ", ".join(f"{f}={c:+.3f}" for f, c in zip(model.features, model.coef_, strict=True))
    print(f"done: {windows} windows, {model.n_seen_} items; final model y = {coef}, "
          f"intercept {model.intercept_:+.3f}; prequential RMSE {model.rmse_:.3f}")
    print(f"next: streamlog tail {SINK} -n 3   |   streamlog info {STREAM}")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
