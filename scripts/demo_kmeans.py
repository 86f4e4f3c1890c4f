"""Streaming k-means: three Gaussian clusters in 3-D, learned window by window.

    python scripts/demo_kmeans.py                # embedded default database, ~15 s
    python scripts/demo_kmeans.py --drift        # one cluster moves midway; the model follows

A producer thread appends batches of 60 points drawn from three Gaussian clusters
(unit variance) in 3-D to the stream ``demo.kmeans``, one batch every 0.5-1 s. The
consumer feeds windows of 60 items to ``OnlineKMeans(k=3)``, which seeds its centres
with k-means++ on the first window and then moves each centre towards the mean of the
points it receives (Spark's StreamingKMeans rule), and prints the centres after every
window. With ``--drift`` the third cluster jumps to a new place halfway through; the
model forgets old points with a half-life of 120 items and its centre follows.
Model records go to ``demo.kmeans.model``. The streams are recreated on every run.
"""

from __future__ import annotations

import argparse
import random
import threading
import time

import numpy as np

import streamlog
from streamlog.consumers import OnlineKMeans

STREAM = "demo.kmeans"
SINK = STREAM + ".model"
CENTERS = np.array([[0.0, 0.0, 0.0], [6.0, 6.0, 0.0], [0.0, 6.0, 6.0]])
MOVED = np.array([-2.0, 9.0, 9.0])  # where the third cluster goes with --drift


def centers_at(batch: int, args) -> np.ndarray:
    centers = CENTERS.copy()
    if args.drift and batch >= args.batches // 2:
        centers[2] = MOVED
    return centers


def drop(name: str, url: str | None) -> None:
    client = streamlog.connect(url)
    for old in (name, name + ".dead"):
        if old in client.streams():
            client.get(old).drop()


def produce(stream, args, done: threading.Event, consumer) -> None:
    rng = np.random.default_rng(args.seed)
    for batch in range(args.batches):
        centers = centers_at(batch, args)
        points = centers[rng.integers(0, 3, size=60)] + rng.normal(size=(60, 3))
        stream.extend([{"x": x, "y": y, "z": z} for x, y, z in points.tolist()])
        if batch < args.batches - 1:
            time.sleep(random.uniform(args.pause / 2, args.pause))
    done.wait(timeout=60)
    consumer.stop()


def show(points) -> str:
    return "  ".join("(" + ", ".join(f"{v:+5.2f}" for v in p) + ")" for p in points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20, help="batches of 60 points (default 20)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between batches: 0.5-1 x this")
    parser.add_argument("--drift", action="store_true", help="move the third cluster halfway through")
    parser.add_argument("--halflife", type=float, default=None,
                        help="forget old points with this half-life, in items (default: 120 with --drift, else none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", default=None, help="database URL (default: STREAMLOG_URL or the embedded file)")
    args = parser.parse_args()
    if args.halflife is None and args.drift:
        args.halflife = 120.0

    drop(STREAM, args.url)
    drop(SINK, args.url)
    stream = streamlog.stream(STREAM, url=args.url)
    model = OnlineKMeans(k=3, features=["x", "y", "z"], halflife=args.halflife, seed=args.seed)
    consumer = streamlog.streaming(STREAM, size=60, sink=SINK, url=args.url)
    done = threading.Event()
    print(f"true centres: {show(CENTERS)}" + (f"; the third moves to {show([MOVED])} midway" if args.drift else ""))
    print(" window  items  inertia  centres")

    def learn(window):
        record = model(window)
        if record is None:
            return None
        centers = [tuple(c.values()) for c in record["centers"]]  # each centre keeps its place
        inertia = record["window_inertia"]
        print(f"{window.seq:7d} {record['n_seen']:6d} {'-' if inertia is None else f'{inertia:8.2f}':>8}  "
              f"{show(centers)}", flush=True)
        if window.offsets[-1] >= args.batches * 60 - 1:
            done.set()
        return record

    producer = threading.Thread(target=produce, args=(stream, args, done, consumer), daemon=True)
    producer.start()
    windows = consumer.apply(learn)
    producer.join()
    truth = centers_at(args.batches - 1, args)
    error = np.linalg.norm(model.centers_[:, None] - truth[None], axis=2).min(axis=0)
    print(f"{windows} windows, {model.n_seen_} points; distance of each true centre to the nearest "
          f"learned one: {', '.join(f'{e:.2f}' for e in error)}")


if __name__ == "__main__":
    main()
