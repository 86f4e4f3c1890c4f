"""Prequential (test-then-train) error: each window is scored before it is learned."""

from __future__ import annotations

import math

import numpy as np


class RunningError:
    """Running regression error over every predicted item: RMSE and MAE.

    ``last_rmse`` is the error on the latest scored window alone, the quickest signal
    that a drifting model has caught up. State is three sums and a count (plain data).
    """

    __slots__ = ("n", "sse", "sae", "last_rmse")

    def __init__(self):
        self.n = 0
        self.sse = 0.0
        self.sae = 0.0
        self.last_rmse: float | None = None

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        err = y_true - y_pred
        err = err[np.isfinite(err)]
        if not len(err):
            return
        sq = float(err @ err)
        self.n += len(err)
        self.sse += sq
        self.sae += float(np.abs(err).sum())
        self.last_rmse = math.sqrt(sq / len(err))

    @property
    def rmse(self) -> float | None:
        return math.sqrt(self.sse / self.n) if self.n else None

    @property
    def mae(self) -> float | None:
        return self.sae / self.n if self.n else None

    def summary(self) -> dict:
        return {"rmse": self.rmse, "mae": self.mae, "window_rmse": self.last_rmse, "n_scored": self.n}

    def state(self) -> dict:
        return {"n": self.n, "sse": self.sse, "sae": self.sae, "last_rmse": self.last_rmse}

    def load(self, state: dict) -> None:
        self.n = int(state.get("n", 0))
        self.sse = float(state.get("sse", 0.0))
        self.sae = float(state.get("sae", 0.0))
        self.last_rmse = state.get("last_rmse")


class RunningAccuracy:
    """Running classification accuracy over every predicted item (and the latest window's)."""

    __slots__ = ("n", "correct", "last_accuracy")

    def __init__(self):
        self.n = 0
        self.correct = 0
        self.last_accuracy: float | None = None

    def update(self, y_true, y_pred) -> None:
        y_true = np.asarray(y_true)
        y_pred = np.asarray(y_pred)
        if not len(y_true):
            return
        hits = int((y_true == y_pred).sum())
        self.n += len(y_true)
        self.correct += hits
        self.last_accuracy = hits / len(y_true)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n else None

    def summary(self) -> dict:
        return {"accuracy": self.accuracy, "window_accuracy": self.last_accuracy, "n_scored": self.n}

    def state(self) -> dict:
        return {"n": self.n, "correct": self.correct, "last_accuracy": self.last_accuracy}

    def load(self, state: dict) -> None:
        self.n = int(state.get("n", 0))
        self.correct = int(state.get("correct", 0))
        self.last_accuracy = state.get("last_accuracy")
