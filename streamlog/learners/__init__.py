"""Online learners: callable consumers for :func:`streamlog.streaming` that learn window by
window and checkpoint their state to the store, and predict stages that apply them.

* :class:`OnlineLinearRegression` — exact (or exponentially forgetting) least squares;
* :class:`OnlineKMeans` — mini-batch k-means with Spark-style decay;
* :class:`PartialFit` — any scikit-learn ``partial_fit`` estimator or river model.

::

    from streamlog.consumers import OnlineLinearRegression
    model = OnlineLinearRegression(features=["x1", "x2"], target="y")
    streamlog.streaming("sensors", size=60, sink="sensors.model").apply(model)

Modules: ``base`` (the :class:`Learner` base class: predict-then-learn per window,
checkpoints, resume), ``regression``, ``kmeans``, ``partial_fit``; ``kinds`` (the one
registry of learner kinds: pipeline-file names ↔ classes), ``checkpoints`` (the one way
to rebuild a learner from a checkpoint), ``predictor`` (:class:`~.predictor.Predictor`,
the predict stage); a ``PartialFit`` checkpoint is written by ``state_encode`` and read
back by ``state_decode`` (format: ``state_format``; what decoding may create:
``state_allowlist``), ``estimators`` knows scikit-learn and river estimators, ``checks``
is the conformance suite (run it on your own model), ``data`` turns items into numpy
arrays, ``metrics`` keeps running errors, ``threads`` caps BLAS/OpenMP pools.

The learner classes are imported on first use (they need numpy and scipy), so importing
this package, its registry or its predictor costs no numerical import.
"""

from typing import Any

__all__ = ["Learner", "OnlineLinearRegression", "OnlineKMeans", "PartialFit"]


def __getattr__(name: str) -> Any:
    if name == "Learner":
        from .base import Learner

        return Learner
    if name == "NotFittedError":  # made on first use: it subclasses scikit-learn's (a slow import)
        from .base import not_fitted_error

        return not_fitted_error()
    from .kinds import kind_named

    kind = kind_named(name) if name in __all__ else None
    if kind is not None:
        return kind.learner_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
