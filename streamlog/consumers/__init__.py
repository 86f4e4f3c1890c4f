"""Consumers: the streaming runtime and ready-made online learners."""

from .predict import Predictor, load_latest
from .runtime import Consumer
from .streaming import StreamingFunction, streaming

__all__ = ["Consumer", "StreamingFunction", "streaming", "Predictor", "load_latest"]


def __getattr__(name: str):
    # Learners import numpy/scikit-learn machinery; load them on first use.
    if name in ("OnlineLinearRegression", "OnlineKMeans", "PartialFit", "Learner"):
        from . import learners

        return getattr(learners, name)
    raise AttributeError(name)
