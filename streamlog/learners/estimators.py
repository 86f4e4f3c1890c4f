"""What :class:`~streamlog.consumers.PartialFit` needs to know about a scikit-learn or river
estimator: the methods it may call (as protocols, checked with ``isinstance``), its kind
(library, task), its parameters for display and comparison, and an unfitted copy of it.

Nothing here reads checkpoint data: these functions work on estimators the user built.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .state_format import class_name

__all__ = ["PartialFitter", "LearnsOne", "LearnsMany", "PredictsOne", "PredictsMany", "PredictsProba",
           "PredictsProbaOne", "is_river", "task", "params", "fresh"]


@runtime_checkable
class PartialFitter(Protocol):
    """A scikit-learn incremental estimator: ``partial_fit(X[, y][, classes=])``."""

    def partial_fit(self, X: Any, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class LearnsOne(Protocol):
    """A river model learning from one row (a dict of features), with its target if supervised."""

    def learn_one(self, x: dict, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class LearnsMany(Protocol):
    """A river model learning from a DataFrame (and a Series of targets if supervised)."""

    def learn_many(self, X: Any, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class PredictsOne(Protocol):
    """A river model predicting one row (a dict of features)."""

    def predict_one(self, x: dict) -> Any: ...


@runtime_checkable
class PredictsMany(Protocol):
    """A river model predicting a DataFrame."""

    def predict_many(self, X: Any) -> Any: ...


@runtime_checkable
class PredictsProba(Protocol):
    """A scikit-learn classifier giving class probabilities (with ``classes_``)."""

    def predict_proba(self, X: Any) -> Any: ...


@runtime_checkable
class PredictsProbaOne(Protocol):
    """A river classifier giving ``{class: probability}`` for one row."""

    def predict_proba_one(self, x: dict) -> Any: ...


def is_river(estimator: Any) -> bool:
    """Whether ``estimator`` is a river model (``learn_one``/``learn_many``, dict rows)."""
    return any(k.__module__.startswith("river.") for k in type(estimator).__mro__)


def task(estimator: Any, river: bool) -> str:
    """``"classifier"``, ``"regressor"``, ``"clusterer"`` or ``"other"``."""
    if river:
        from river import base

        for kind, name in ((base.Classifier, "classifier"), (base.Regressor, "regressor"),
                           (base.Clusterer, "clusterer")):
            if isinstance(estimator, kind):
                return name
        return "other"
    from sklearn import base as sklearn_base

    checks = (("classifier", sklearn_base.is_classifier), ("regressor", sklearn_base.is_regressor),
              ("clusterer", getattr(sklearn_base, "is_clusterer", None)))
    for name, check in checks:
        try:
            if check is not None and check(estimator):
                return name
        except Exception:  # noqa: BLE001 - not a full scikit-learn estimator (no tags)
            if getattr(estimator, "_estimator_type", None) == name:
                return name
    return "other"


def params(estimator: Any) -> Any:
    """The estimator's constructor parameters as plain data, for comparisons and display.

    Values that are not plain data (classes, functions, nested estimators) are shown by name.
    """
    if hasattr(estimator, "get_params"):
        raw = estimator.get_params(deep=False)
    elif hasattr(estimator, "_get_params"):
        raw = estimator._get_params()
    else:
        raw = {}
    return _lenient(raw)


def _lenient(v: Any) -> Any:
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else repr(float(v))
    if isinstance(v, dict):
        return {str(k): _lenient(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_lenient(x) for x in v]
    if isinstance(v, np.ndarray):
        return _lenient(v.tolist())
    if isinstance(v, type):
        return class_name(v)
    if hasattr(v, "get_params") or hasattr(v, "_get_params"):
        return {"class": class_name(type(v)), "params": params(v)}
    return repr(v)


def fresh(estimator: Any) -> Any:
    """A new, unfitted estimator with the same parameters (river ``clone()`` / sklearn ``clone``).

    Clone an estimator before it learns: some change their own parameters while learning
    (river's ``ARFRegressor`` turns ``max_features="sqrt"`` into a number), and a clone
    copies the parameters as they are now."""
    if type(estimator).__module__.startswith("river") and hasattr(estimator, "clone"):
        return estimator.clone()
    try:
        from sklearn.base import clone

        return clone(estimator)
    except Exception:  # noqa: BLE001 - not a scikit-learn estimator: construct from its params
        if hasattr(estimator, "clone"):
            return estimator.clone()
        return type(estimator)(**estimator.get_params(deep=False))
