"""Bring your own learner: :class:`PartialFit` wraps scikit-learn and river models."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..errors import ConsumerError
from .base import Learner
from .data import matrix
from .estimators import (
    LearnsMany,
    LearnsOne,
    PartialFitter,
    PredictsMany,
    PredictsOne,
    PredictsProba,
    PredictsProbaOne,
    fresh,
    is_river,
    params,
    task,
)
from .metrics import RunningAccuracy, RunningError
from .state_decode import decode
from .state_encode import encode
from .state_format import TAG, UnsupportedState, class_name

_MAX_SUMMARY = 100  # numbers of coefficients / centres put into each sink record


class PartialFit(Learner):
    """Any incremental model as a streaming learner with durable state.

    * scikit-learn: an estimator with ``partial_fit`` (``SGDRegressor``, ``SGDClassifier``
      — give ``classes=`` —, ``MiniBatchKMeans``, ``GaussianNB``, ``MLPRegressor``, …); it
      gets ``partial_fit(X)`` or ``partial_fit(X, y)`` per window with ``X`` the feature
      columns as a float array.
    * river: a model with ``learn_many`` (given a DataFrame per window) or ``learn_one``
      (called per item, with a dict of the features).

    ``target=`` names the label field (supervised models); without it the model learns
    from the features alone. Rows with a missing value are skipped (``n_skipped_``).
    Prequential error: regressors keep ``rmse_``/``mae_`` (in ``error_``), classifiers
    ``accuracy_``, each window scored before it is learned.

    Checkpoints are plain data (:mod:`~streamlog.learners.state_encode`): the
    estimator's parameters and every attribute it learned — arrays, numbers, dicts,
    random generator states, nested river objects — written back into a fresh instance
    on resume (:mod:`~streamlog.learners.state_decode`). No code is ever pickled
    or loaded: functions, classes and methods an estimator holds are stored by name for
    display only, and on resume the fresh instance's own are kept; objects are rebuilt
    only for classes on an allow-list (those of a fresh instance, and a reviewed few), so
    a checkpoint written by anyone with access to the database cannot run code.

    The first checkpoint an instance writes is loaded back once into a fresh estimator,
    as a resume would, and must encode to the same data; a model whose state does not
    survive (one holding a lambda it built while learning, say) fails with a clear error
    — give ``checkpoint=False`` to learn without durable state. That is all the consume
    path checks (no copy of the live model, no second learning). That a model also
    *behaves* the same after a resume — predicts and learns on identically, untouched
    global random state — is what the conformance suite checks for the models listed in
    ``docs/ml.md``; run :func:`~streamlog.learners.checks.check_learner` on
    your own.

    ``estimator`` is the live model (after a resume or a rollback it is a new object:
    read it from the learner, do not keep the one you passed in).
    """

    def __init__(self, estimator: Any, features, target: str | None = None, classes=None, *,
                 name: str | None = None, checkpoint: bool = True, threads: int | None = 1):
        super().__init__(features, target, name=name, checkpoint=checkpoint, threads=threads)
        self.river = is_river(estimator)
        if self.river:
            if not isinstance(estimator, (LearnsOne, LearnsMany)):
                raise ConsumerError(f"{type(estimator).__name__} has neither learn_one nor learn_many")
        elif not isinstance(estimator, PartialFitter):
            raise ConsumerError(f"{type(estimator).__name__} has no partial_fit: PartialFit needs an "
                                "incremental scikit-learn estimator or a river model")
        self.estimator = estimator
        # unfitted, with the parameters as given (before learning changes any): what resets
        # and resumes build on, and what a checkpoint must have been made with
        try:
            self._template = fresh(estimator)
        except Exception as exc:  # noqa: BLE001 - no get_params/clone: fine until a reset or a resume
            self._template, self._no_template = None, f"{type(exc).__name__}: {exc}"
        self._params = params(estimator)
        self.task = task(estimator, self.river)
        if self.task in ("classifier", "regressor") and target is None:
            raise ConsumerError(f"{type(estimator).__name__} is a {self.task}: give target=")
        if self.task == "classifier" and not self.river and classes is None and not hasattr(estimator, "classes_"):
            raise ConsumerError(f"{type(estimator).__name__}.partial_fit needs every class up front: give classes=")
        self.classes = None if classes is None else list(np.asarray(classes).tolist())
        self._checked = False
        self.error_ = self._new_error()

    def _new_error(self):
        if self.target is None:
            return None
        return RunningAccuracy() if self.task == "classifier" else RunningError()

    @property
    def rmse_(self) -> float | None:
        return getattr(self.error_, "rmse", None)

    @property
    def mae_(self) -> float | None:
        return getattr(self.error_, "mae", None)

    @property
    def accuracy_(self) -> float | None:
        return getattr(self.error_, "accuracy", None)

    def _config(self) -> dict:
        return {"features": self.features, "target": self.target,
                "estimator": class_name(type(self.estimator)), "params": copy.deepcopy(self._params)}

    @property
    def fitted(self) -> bool:
        if self.n_seen_ > 0:
            return True
        if self.river:
            return False
        from sklearn.utils.validation import check_is_fitted

        try:  # an estimator given already fitted predicts (and scores) from the start
            check_is_fitted(self.estimator)
        except Exception:  # noqa: BLE001 - NotFittedError, or not a full scikit-learn estimator
            return False
        return True

    # -- input ------------------------------------------------------------------------

    def _arrays(self, data: Any, y: Any = None, need_target: bool = True):
        owner = type(self).__name__
        if need_target and self.target is not None and y is None and isinstance(data, np.ndarray):
            raise ConsumerError(f"{owner}: an array holds the features only; give the targets as y=")
        numeric_target = need_target and self.target is not None and y is None and self.task != "classifier"
        X = matrix(owner, data, self.features + [self.target] if numeric_target else self.features)
        if not need_target or self.target is None and y is None:
            return X, None
        if numeric_target:
            X, y = X[:, :-1], X[:, -1]
        elif y is None:
            y = matrix(owner, data, [self.target], numeric=False)
            y = y[:, 0] if y.ndim == 2 else y
        else:
            y = np.asarray(y)
            if self.task != "classifier":
                y = y.astype(float)
        if len(y) != len(X):
            raise ConsumerError(f"{owner}: {len(X)} rows of features but {len(y)} targets")
        return X, y

    def _clean(self, X: np.ndarray, y: np.ndarray | None):
        ok = np.isfinite(X).all(axis=1)
        if y is not None:
            if y.dtype.kind in "fc":
                ok &= np.isfinite(y)
            elif y.dtype.kind == "O":
                ok &= np.array([v is not None and v == v for v in y.tolist()], dtype=bool)
        if ok.all():
            return X, y
        self.n_skipped_ += int((~ok).sum())
        return X[ok], (None if y is None else y[ok])

    # -- learning and predicting with a given model -------------------------------------

    def _frame(self, X: np.ndarray):
        import pandas as pd

        return pd.DataFrame(X, columns=self.features)

    def _learn_into(self, model: Any, X: np.ndarray, y: np.ndarray | None) -> None:
        if not self.river:
            if y is None:
                model.partial_fit(X)
            elif self.task == "classifier" and not hasattr(model, "classes_"):  # fitted state, not a method
                model.partial_fit(X, y, classes=self.classes)
            else:
                model.partial_fit(X, y)
            return
        if isinstance(model, LearnsMany):
            import pandas as pd

            frame = self._frame(X)
            if y is None:
                model.learn_many(frame)
            else:
                model.learn_many(frame, pd.Series(y))
            return
        features = self.features
        rows = X.tolist()
        if y is None:
            for row in rows:
                model.learn_one(dict(zip(features, row, strict=False)))
        else:
            for row, target in zip(rows, y.tolist(), strict=False):
                model.learn_one(dict(zip(features, row, strict=False)), target)

    def _predict_with(self, model: Any, X: np.ndarray) -> np.ndarray:
        if not self.river:
            return np.asarray(model.predict(X))
        if isinstance(model, PredictsMany):
            return np.asarray(model.predict_many(self._frame(X)))
        if isinstance(model, PredictsOne):
            features = self.features
            return np.asarray([model.predict_one(dict(zip(features, row, strict=False))) for row in X.tolist()])
        raise ConsumerError(f"{type(model).__name__} cannot predict")

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        self._learn_into(self.estimator, X, y)

    def _infer(self, X: np.ndarray) -> np.ndarray:
        return self._predict_with(self.estimator, X)

    def _score(self, X: np.ndarray, y: np.ndarray | None) -> None:
        if self.error_ is None or y is None:
            return
        pred = self._infer(X)
        if self.task == "classifier":
            self.error_.update(y, pred)
        else:
            self.error_.update(y, np.asarray(pred, dtype=float))

    def check_proba(self) -> None:
        if not isinstance(self.estimator, (PredictsProba, PredictsProbaOne)):
            raise ConsumerError(f"proba=True: {type(self.estimator).__name__} has no predict_proba")

    def probabilities(self, X: np.ndarray) -> list[dict]:
        """``{class: probability}`` per row of ``X``: the estimator's ``predict_proba``
        (river: ``predict_proba_one``), classes as strings."""
        estimator = self.estimator
        if not self.river:
            table = np.asarray(estimator.predict_proba(X), dtype=float)
            classes = [str(c) for c in np.asarray(estimator.classes_).tolist()]
            return [dict(zip(classes, row, strict=False)) for row in table.tolist()]
        features = self.features
        rows = (dict(zip(features, row, strict=False)) for row in X.tolist())
        return [{str(k): float(v) for k, v in estimator.predict_proba_one(row).items()} for row in rows]

    # -- state ---------------------------------------------------------------------------

    @classmethod
    def configured_from(cls, config: dict, model: dict, *, name: str,
                        template: Learner | None = None) -> "PartialFit":
        """With ``template`` (a ``PartialFit``): a fresh copy of its estimator. Without: an
        estimator of a class from the fixed list of
        :func:`~.state_allowlist.template_free_estimators`, made from the checkpoint's plain
        parameters (nothing named by the data is imported or called); any other estimator
        (river models, say) needs the template."""
        classes = model.get("classes")
        if isinstance(template, PartialFit):
            estimator = template.fresh_estimator()
            classes = template.classes if classes is None else classes
        else:
            from .state_allowlist import template_free_estimators

            estimator_class = template_free_estimators().get(config.get("estimator"))
            params = config.get("params")
            if estimator_class is None or not isinstance(params, dict) \
                    or not all(map(_plain_params, params.values())):
                raise ConsumerError(
                    f"model {name!r} is a PartialFit of {config.get('estimator')}, which is not rebuilt from "
                    "a checkpoint by name: give model=PartialFit(<the same estimator>, features=…, "
                    "target=…) to load it into")
            estimator = estimator_class(**params)
        return cls(estimator, config["features"], config.get("target"), classes=classes,
                   name=name, checkpoint=False, threads=None)

    def fresh_estimator(self) -> Any:
        """A new, unfitted estimator with the parameters this learner was given."""
        if self._template is None:
            raise ConsumerError(f"{self.name}: cannot make an unfitted copy of {type(self.estimator).__name__} "
                                f"({self._no_template}): resets and resumes need get_params() or clone()")
        return fresh(self._template)

    def _reset_model(self) -> None:
        self.estimator = self.fresh_estimator()
        self.error_ = self._new_error()

    def _check_checkpoint(self) -> None:
        """Before the first checkpoint: the state must load back as it is (what a resume
        does, once; no copy of the live model, no learning)."""
        if self._checked:
            return
        data = encode(self.estimator)
        try:
            found = _difference(data, encode(decode(data, self.fresh_estimator())))
            problem = None if found is None else f"the restored model differs at {found}"
        except UnsupportedState as exc:
            problem = str(exc)
        if problem is not None:
            raise ConsumerError(
                f"{self.name}: cannot checkpoint {type(self.estimator).__name__} as plain data ({problem}); "
                "give PartialFit(..., checkpoint=False) to learn without durable state")
        self._checked = True

    def _model_state(self) -> dict:
        return {
            "estimator": encode(self.estimator),
            "classes": self.classes,
            "error": None if self.error_ is None else self.error_.state(),
        }

    def _load_model_state(self, state: dict) -> None:
        try:
            self.estimator = decode(state["estimator"], self.fresh_estimator())
        except UnsupportedState as exc:
            raise UnsupportedState(
                f"{self.name}: refused to load the saved {type(self.estimator).__name__} state: {exc}") from None
        self.error_ = self._new_error()
        if self.error_ is not None and state.get("error"):
            self.error_.load(state["error"])

    def summary(self) -> dict:
        out: dict[str, Any] = {"estimator": type(self.estimator).__name__}
        model = self.estimator
        coef = getattr(model, "coef_", None) if not self.river else None
        if coef is not None and np.size(coef) <= _MAX_SUMMARY:
            coef = np.asarray(coef, dtype=float)
            if coef.ndim == 1 and len(coef) == len(self.features):
                out["coef"] = {f: float(c) for f, c in zip(self.features, coef, strict=False)}
            elif coef.ndim == 2 and coef.shape[1] == len(self.features):  # one row per class
                out["coef"] = [dict(zip(self.features, row, strict=False)) for row in coef.tolist()]
            else:
                out["coef"] = coef.ravel().tolist()
            intercept = np.asarray(getattr(model, "intercept_", 0.0), dtype=float).ravel()
            out["intercept"] = float(intercept[0]) if intercept.size == 1 else intercept.tolist()
        centers = getattr(model, "cluster_centers_", None) if not self.river else None
        if centers is not None and np.size(centers) <= _MAX_SUMMARY:
            rows = np.asarray(centers, dtype=float).tolist()
            out["centers"] = [dict(zip(self.features, c, strict=False)) for c in rows]
        if self.river:
            weights = getattr(model, "weights", None)
            if isinstance(weights, dict) and len(weights) <= _MAX_SUMMARY:
                out["coef"] = {str(k): float(v) for k, v in weights.items()}
                if isinstance(getattr(model, "intercept", None), (int, float)):
                    out["intercept"] = float(model.intercept)
            centers = getattr(model, "centers", None)
            if isinstance(centers, dict) and len(centers) * len(self.features) <= _MAX_SUMMARY:
                out["centers"] = [{f: float(c.get(f, 0.0)) for f in self.features} for c in centers.values()]
        if self.error_ is not None:
            out.update(self.error_.summary())
        return out

    def __repr__(self) -> str:
        return f"PartialFit({self.estimator!r}, features={self.features!r}, n_seen_={self.n_seen_})"


def _plain_params(params: Any) -> bool:
    """Whether saved estimator parameters are plain values (no nested estimator or class)."""
    if params is None or isinstance(params, (bool, int, float, str)):
        return True
    if isinstance(params, list):
        return all(_plain_params(p) for p in params)
    return False


def _difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where two encodings first differ (a readable path), or None when they are equal."""
    if type(a) is not type(b):
        return path or "the top"
    if isinstance(a, dict):
        if a.get(TAG) == "obj" and a.get("skipped") != b.get("skipped"):
            lost = sorted(set(a.get("skipped") or ()) - set(b.get("skipped") or ()))
            return f"{path or a.get('cls')}: {', '.join(lost) or 'skipped attributes'} (not data, not restored)"
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{path}.{key}"
            found = _difference(a[key], b[key], f"{path}.{key}" if key not in ("attrs", TAG) else path)
            if found is not None:
                return found
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path} (length)"
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = _difference(x, y, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    return None if a == b else path
