"""Streaming linear regression, the classic Spark Streaming demo, on streamlog.

    python scripts/demo_regression.py                  # producer + consumer in one process
    python scripts/demo_regression.py --drift          # the coefficients change midway
    python scripts/demo_regression.py --role consumer  # shell 1: learn (Ctrl-C stops; run again: it resumes)
    python scripts/demo_regression.py --role producer  # shell 2: append batches

Batches of 60 points ``y = c1·x1 + c2·x2 + noise`` (plus an intercept of 0.5) go to the
stream ``demo.regression``, one every ``--pause`` seconds (0.5-1 x). The consumer reads
windows of 60 items into an ``OnlineLinearRegression``, which predicts each window
before learning it, and prints per window the coefficients next to the truth and the
prequential RMSE. Without ``--halflife`` the model is exact least squares over
everything seen; with it (the default with ``--drift``), old items fade out so the
model follows a change. Model records go to ``demo.regression.model``.

``--role both`` (the default) drops and recreates the streams first; the separate
producer and consumer roles keep them, so the consumer resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import random
import threading
import time

import numpy as np

import streamlog
from streamlog.consumers import OnlineLinearRegression

STREAM = "demo.regression"
SINK = STREAM + ".model"
START, CHANGED = (2.0, -1.0), (-1.0, 3.0)
INTERCEPT = 0.5


def truth(batch: int, args) -> tuple[float, float]:
    return CHANGED if args.drift and batch >= args.batches // 2 else START


def drop(name: str, url: str | None) -> None:
    client = streamlog.connect(url)
    for old in (name, name + ".dead"):
        if old in client.streams():
            client.get(old).drop()


def produce(args, stop_consumer=None, done: threading.Event | None = None) -> None:
    stream = streamlog.stream(STREAM, url=args.url)
    rng = np.random.default_rng(args.seed)
    for batch in range(args.batches):
        c1, c2 = truth(batch, args)
        x = rng.uniform(-1, 1, size=(60, 2))
        y = c1 * x[:, 0] + c2 * x[:, 1] + INTERCEPT + rng.normal(scale=args.noise, size=60)
        offsets = stream.extend([{"x1": a, "x2": b, "y": t} for (a, b), t in zip(x.tolist(), y.tolist(), strict=True)])
        if stop_consumer is None:
            print(f"batch {batch + 1}/{args.batches}: offsets {offsets[0]}..{offsets[-1]}, (c1, c2) = ({c1}, {c2})")
        if batch < args.batches - 1:
            time.sleep(random.uniform(args.pause / 2, args.pause))
    if stop_consumer is not None:
        done.wait(timeout=60)
        stop_consumer()


def consume(args, done: threading.Event | None = None) -> OnlineLinearRegression:
    model = OnlineLinearRegression(features=["x1", "x2"], target="y", halflife=args.halflife)
    consumer = streamlog.streaming(STREAM, size=60, sink=SINK, url=args.url, blocking=done is not None or not args.once)
    print(" window  items   coef x1   coef x2  intercept   truth        rmse(window)  rmse(all)")

    def learn(window):
        record = model(window)  # on the first window: resumes from the checkpoint, if any
        if record is None:
            return None
        if model.windows_ == 1 and model.n_seen_ > len(window):
            print(f"  (resumed from a checkpoint: {model.n_seen_ - len(window)} items learned before)")
        c1, c2 = truth(window.offsets[0] // 60, args)
        print(f"{window.seq:7d} {record['n_seen']:6d} {record['coef']['x1']:+9.3f} {record['coef']['x2']:+9.3f}"
              f" {record['intercept']:+9.3f}   ({c1:+.0f}, {c2:+.0f}, {INTERCEPT:+.1f})"
              f" {_fmt(record['window_rmse']):>12}  {_fmt(record['rmse']):>9}", flush=True)
        if done is not None and window.offsets[-1] >= args.batches * 60 - 1:
            done.set()
        return record

    if done is not None:
        producer = threading.Thread(target=produce, args=(args, consumer.stop, done), daemon=True)
        producer.start()
    windows = consumer.apply(learn)
    print(f"{windows} windows; model: {model!r}; prequential RMSE {_fmt(model.rmse_)}")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("both", "producer", "consumer"), default="both")
    parser.add_argument("--drift", action="store_true", help="change (c1, c2) from (2, -1) to (-1, 3) midway")
    parser.add_argument("--batches", type=int, default=20, help="batches of 60 points (default 20)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between batches: 0.5-1 x this")
    parser.add_argument("--halflife", type=float, default=None,
                        help="forget old items with this half-life, in items (default: 60 with --drift, else none)")
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--once", action="store_true", help="consumer role: learn what is ready, then exit")
    parser.add_argument("--url", default=None, help="database URL (default: STREAMLOG_URL or the embedded file)")
    args = parser.parse_args()
    if args.halflife is None and args.drift:
        args.halflife = 60.0
    if args.role == "producer":
        produce(args)
    elif args.role == "consumer":
        consume(args)
    else:
        drop(STREAM, args.url)
        drop(SINK, args.url)
        streamlog.stream(STREAM, url=args.url)
        consume(args, done=threading.Event())


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
