"""Online learners: callable consumers for :func:`streamlog.streaming` that learn window by
window and checkpoint their state to the store.

* :class:`OnlineLinearRegression` — exact (or exponentially forgetting) least squares;
* :class:`OnlineKMeans` — mini-batch k-means with Spark-style decay;
* :class:`PartialFit` — any scikit-learn ``partial_fit`` estimator or river model.

::

    from streamlog.consumers import OnlineLinearRegression
    model = OnlineLinearRegression(features=["x1", "x2"], target="y")
    streamlog.streaming("sensors", size=60, sink="sensors.model").apply(model)

Modules: ``base`` (the protocol), ``regression``, ``kmeans``, ``partial_fit``; a
``PartialFit`` checkpoint is written by ``state_encode`` and read back by ``state_decode``
(format: ``state_format``; what decoding may create: ``state_allowlist``), ``estimators``
knows scikit-learn and river estimators, ``checks`` is the conformance suite (run it on
your own model).
"""

from .base import Learner
from .kmeans import OnlineKMeans
from .partial_fit import PartialFit
from .regression import OnlineLinearRegression

__all__ = ["Learner", "OnlineLinearRegression", "OnlineKMeans", "PartialFit"]


def __getattr__(name: str):
    if name == "NotFittedError":  # made on first use: it subclasses scikit-learn's (a slow import)
        from .base import not_fitted_error

        return not_fitted_error()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
