"""The sensors example: a simulator (run as a command stage) and the alert stage's function.

The simulator appends readings ``y = 2·x1 - 1·x2 + 0.5 + noise`` to two streams, batch by
batch: ``labelled`` (with the true ``y``: what the trainer learns from) and ``live`` (the
sensor's ``reading`` of the same quantity: what is predicted and watched). Halfway
through the live readings the sensor goes out of calibration (its readings are off by
``DRIFT``), so the prediction error jumps and the alert stage fires.
"""

from __future__ import annotations

import os
import time

import numpy as np

import streamlog

COEF, INTERCEPT = (2.0, -1.0), 0.5
NOISE = 0.1
DRIFT = 1.0  # added to the live readings from the middle on
LABELLED_BATCHES, LABELLED_SIZE = 12, 50
LIVE_BATCHES, LIVE_SIZE = 30, 20
PAUSE = 0.15  # seconds between batches
THRESHOLD = 0.5  # alert when the mean absolute error over a window passes this


def truth(x: np.ndarray) -> np.ndarray:
    return x @ np.array(COEF) + INTERCEPT


def drift_offset() -> int:
    """The first live offset that carries the drift."""
    return LIVE_BATCHES // 2 * LIVE_SIZE


def produce() -> None:
    rng = np.random.default_rng(int(os.environ.get("SEED", "0")))
    labelled, live = streamlog.stream("labelled"), streamlog.stream("live")  # STREAMLOG_URL: set by the runner
    for batch in range(max(LABELLED_BATCHES, LIVE_BATCHES)):
        if batch < LABELLED_BATCHES:
            x = rng.uniform(-1, 1, size=(LABELLED_SIZE, 2))
            y = truth(x) + rng.normal(scale=NOISE, size=LABELLED_SIZE)
            labelled.extend([{"x1": a, "x2": b, "y": t} for (a, b), t in zip(x.tolist(), y.tolist(), strict=True)])
        if batch < LIVE_BATCHES:
            x = rng.uniform(-1, 1, size=(LIVE_SIZE, 2))
            reading = truth(x) + rng.normal(scale=NOISE, size=LIVE_SIZE) + (DRIFT if batch >= LIVE_BATCHES // 2 else 0)
            live.extend([{"x1": a, "x2": b, "reading": r}
                         for (a, b), r in zip(x.tolist(), reading.tolist(), strict=True)])
        time.sleep(PAUSE)
    print(f"appended {LABELLED_BATCHES * LABELLED_SIZE} labelled and {LIVE_BATCHES * LIVE_SIZE} live readings "
          f"(drift of {DRIFT:+} from live offset {drift_offset()})")


def alert(window):
    """A sliding window of prediction records (each with the ``reading`` kept from its item):
    an alert record when their mean absolute error passes :data:`THRESHOLD`."""
    errors = [abs(p["reading"] - p["prediction"]) for p in window.data]
    mae = sum(errors) / len(errors)
    if mae <= THRESHOLD:
        return None
    first, last = window.data[0]["offset"], window.data[-1]["offset"]
    print(f"ALERT: mean |error| {mae:.2f} > {THRESHOLD} over live offsets {first}..{last}")
    return {"first_offset": first, "last_offset": last, "mae": mae, "threshold": THRESHOLD,
            "model_seq": window.data[-1]["model_seq"]}


def report(url: str) -> list[str]:
    """What each stage did, from the streams and the model's last checkpoint."""
    from streamlog.learners.checkpoints import load_latest

    client = streamlog.connect(url)
    lines = []
    loaded = load_latest(client, "labelled", "trainer", "OnlineLinearRegression")
    labelled = client.get("labelled").info()
    lines.append(f"trainer:   {labelled['length']} labelled items learned in {loaded.seq} windows; "
                 f"model y = {loaded.learner.coef_[0]:+.3f}·x1 {loaded.learner.coef_[1]:+.3f}·x2 "
                 f"{loaded.learner.intercept_:+.3f}  (truth {COEF[0]:+}·x1 {COEF[1]:+}·x2 {INTERCEPT:+})")
    predictions = client.get("predictions").read(0, None)
    before = [abs(p["data"]["reading"] - p["data"]["prediction"]) for p in predictions
              if p["data"]["offset"] < drift_offset()]
    after = [abs(p["data"]["reading"] - p["data"]["prediction"]) for p in predictions
             if p["data"]["offset"] >= drift_offset()]
    seqs = sorted({p["data"]["model_seq"] for p in predictions})
    lines.append(f"predictor: {len(predictions)} predictions for {client.get('live').info()['length']} live "
                 f"items, with models #{seqs[0]}..#{seqs[-1]}; mean |error| "
                 f"{np.mean(before):.3f} before the drift, {np.mean(after):.3f} after")
    alerts = client.get("alerts").read(0, None) if "alerts" in client.streams() else []
    if alerts:
        first = alerts[0]["data"]
        lines.append(f"alert:     {len(alerts)} alerts in 'alerts'; the first over live offsets "
                     f"{first['first_offset']}..{first['last_offset']} (mean |error| {first['mae']:.2f}), "
                     f"the drift began at offset {drift_offset()}")
    else:
        lines.append("alert:     no alerts")
    return lines


if __name__ == "__main__":
    produce()
