"""The clusters example: a simulator of points from three Gaussian clusters in 3-D (run as a
command stage), and the report of what the k-means and assignment stages did.

Each point carries its true cluster as ``label``; the learner sees only ``x``, ``y``, ``z``.
"""

from __future__ import annotations

import os
import time
from itertools import permutations

import numpy as np

import streamlog

CENTRES = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0], [0.0, 5.0, 5.0]])
SPREAD = 0.6
BATCHES, SIZE = 20, 45
PAUSE = 0.15


def produce() -> None:
    rng = np.random.default_rng(int(os.environ.get("SEED", "0")))
    points = streamlog.stream("points")  # STREAMLOG_URL: set by the runner
    for _ in range(BATCHES):
        labels = rng.integers(0, len(CENTRES), size=SIZE)
        xyz = CENTRES[labels] + rng.normal(scale=SPREAD, size=(SIZE, 3))
        points.extend([{"x": a, "y": b, "z": c, "label": int(k)}
                       for (a, b, c), k in zip(xyz.tolist(), labels, strict=True)])
        time.sleep(PAUSE)
    print(f"appended {BATCHES * SIZE} points from {len(CENTRES)} clusters")


def report(url: str) -> list[str]:
    from streamlog.learners.checkpoints import load_latest

    client = streamlog.connect(url)
    loaded = load_latest(client, "points", "kmeans", "OnlineKMeans")
    centres = loaded.learner.centers_
    # match learned centres to the true ones (3! orders)
    order = min(permutations(range(len(CENTRES))),
                key=lambda p: float(np.linalg.norm(centres[list(p)] - CENTRES)))
    error = float(np.abs(centres[list(order)] - CENTRES).max())
    lines = [f"kmeans: {client.get('points').info()['length']} points learned in {loaded.seq} windows; "
             f"centres within {error:.2f} of the truth:"]
    for true, learned in zip(CENTRES, centres[list(order)], strict=True):
        lines.append(f"        truth ({', '.join(f'{v:+.1f}' for v in true)})  "
                     f"learned ({', '.join(f'{v:+.2f}' for v in learned)})")
    assignments = [a["data"] for a in client.get("assignments").read(0, None)]
    to_true = {learned: true for true, learned in enumerate(order)}
    right = sum(to_true.get(a["cluster"]) == a["label"] for a in assignments)
    seqs = sorted({a["model_seq"] for a in assignments})
    lines.append(f"assign: {len(assignments)} points assigned with models #{seqs[0]}..#{seqs[-1]}; "
                 f"{right / len(assignments):.1%} in their true cluster")
    return lines


if __name__ == "__main__":
    produce()
