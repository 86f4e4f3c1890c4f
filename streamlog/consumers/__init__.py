"""Consumers: the streaming runtime, and the ready-made online learners and predict stages
(defined in :mod:`streamlog.learners`, re-exported here)."""

from ..delivery.consumer import Consumer
from ..learners.checkpoints import load_latest
from ..learners.predictor import Predictor
from .streaming import StreamingFunction, streaming

__all__ = ["Consumer", "StreamingFunction", "streaming", "Predictor", "load_latest"]


def __getattr__(name: str):
    # Learners import numpy/scikit-learn machinery; load them on first use.
    if name in ("OnlineLinearRegression", "OnlineKMeans", "PartialFit", "Learner"):
        from .. import learners

        return getattr(learners, name)
    raise AttributeError(name)
