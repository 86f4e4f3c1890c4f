"""Every learner streamlog ships, and every model docs/ml.md lists as supported by
PartialFit, through the same conformance checks (as river's ``check_estimator``):

state round trip, checkpoint resume through a real stream, NotFittedError before
learning, deterministic learning for a given seed, and no global random state touched.
The consume path itself only loads a PartialFit's first checkpoint back (no second
learning, no copy of the live model): the behavioural guarantees live here.

``SUPPORTED`` below is the list docs/ml.md prints, model for model (a test keeps them in
step).
"""

from __future__ import annotations

import functools
import re
import warnings

import numpy as np
import pytest
from helpers import ROOT

from streamlog.consumers import OnlineKMeans, OnlineLinearRegression, PartialFit
from streamlog.learners import checks

XY = ["x1", "x2"]
CLASSES = ["down", "up"]


def sklearn_models():
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.linear_model import Perceptron, SGDClassifier, SGDRegressor
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    return {
        "SGDRegressor": lambda: PartialFit(SGDRegressor(random_state=0), XY, "y"),
        "SGDClassifier": lambda: PartialFit(SGDClassifier(random_state=0), XY, "label", classes=CLASSES),
        "Perceptron": lambda: PartialFit(Perceptron(random_state=0), XY, "label", classes=CLASSES),
        "MiniBatchKMeans": lambda: PartialFit(MiniBatchKMeans(3, n_init=1, random_state=0), XY),
        "GaussianNB": lambda: PartialFit(GaussianNB(), XY, "label", classes=CLASSES),
        "MLPRegressor": lambda: PartialFit(MLPRegressor(hidden_layer_sizes=(8,), random_state=0), XY, "y"),
        "MLPClassifier": lambda: PartialFit(MLPClassifier(hidden_layer_sizes=(8,), random_state=0), XY, "label",
                                            classes=CLASSES),
    }


def river_models():
    from river import cluster, forest, linear_model, naive_bayes, neighbors, optim, preprocessing, tree

    return {
        "LinearRegression (SGD)": lambda: PartialFit(
            linear_model.LinearRegression(optimizer=optim.SGD(0.05)), XY, "y"),
        "LinearRegression (Adam)": lambda: PartialFit(linear_model.LinearRegression(optimizer=optim.Adam()), XY, "y"),
        "LogisticRegression": lambda: PartialFit(linear_model.LogisticRegression(), XY, "up"),
        "StandardScaler | LinearRegression": lambda: PartialFit(
            preprocessing.StandardScaler() | linear_model.LinearRegression(), XY, "y"),
        "KMeans": lambda: PartialFit(cluster.KMeans(n_clusters=3, seed=0), XY),
        "HoeffdingTreeRegressor": lambda: PartialFit(tree.HoeffdingTreeRegressor(grace_period=50), XY, "y"),
        "HoeffdingTreeClassifier": lambda: PartialFit(tree.HoeffdingTreeClassifier(grace_period=50), XY, "label"),
        "GaussianNB": lambda: PartialFit(naive_bayes.GaussianNB(), XY, "label"),
        "ARFRegressor": lambda: PartialFit(forest.ARFRegressor(n_models=3, seed=0), XY, "y"),
        "KNNRegressor": lambda: PartialFit(
            neighbors.KNNRegressor(engine=neighbors.SWINN(warm_up=120, seed=0)), XY, "y"),
    }


def own_learners():
    return {
        "OnlineLinearRegression": lambda: OnlineLinearRegression(XY, "y"),
        "OnlineLinearRegression (halflife)": lambda: OnlineLinearRegression(XY, "y", halflife=120),
        "OnlineKMeans": lambda: OnlineKMeans(3, XY, seed=0),
        "OnlineKMeans (halflife)": lambda: OnlineKMeans(3, XY, halflife=60, seed=0),
    }


#: what docs/ml.md lists as checked: library → model names, as printed there
SUPPORTED = {"scikit-learn": list(sklearn_models()), "river": list(river_models())}

LEARNERS = ([("streamlog", name) for name in own_learners()]
            + [("scikit-learn", name) for name in sklearn_models()]
            + [("river", name) for name in river_models()])


def make(library, name):
    return {"streamlog": own_learners, "scikit-learn": sklearn_models, "river": river_models}[library]()[name]()


def rows(n=360, seed=0):
    """Three blobs in (x1, x2); y linear in them with noise; a string and a boolean label."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-3.0, 0.0], [3.0, 3.0], [0.0, -3.0]])
    X = centres[rng.integers(0, 3, n)] + rng.normal(size=(n, 2))
    y = X @ [2.0, -1.0] + 0.5 + rng.normal(scale=0.3, size=n)
    return [{"x1": a, "x2": b, "y": t, "label": CLASSES[t > 0.5], "up": bool(t > 0.5)}
            for (a, b), t in zip(X.tolist(), y.tolist(), strict=True)]


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():  # e.g. MLP's "not converged" after one partial_fit
        warnings.simplefilter("ignore")
        yield


IDS = [f"{library}:{name}" for library, name in LEARNERS]


@pytest.mark.parametrize("check", checks.CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("library, name", LEARNERS, ids=IDS)
def test_conformance(library, name, check):
    check(lambda: make(library, name), rows())


@pytest.mark.parametrize("library, name", LEARNERS, ids=IDS)
def test_checkpoint_resume_through_a_stream(library, name, url):
    # url: a fresh sqlite:///<tmp_path>/… database, and one on the FerretDB test server
    checks.check_resume(lambda: make(library, name), rows(), url)


def test_the_docs_list_exactly_the_checked_models():
    text = " ".join((ROOT / "docs" / "ml.md").read_text().split())
    found = re.search(r"Checked by the conformance suite: (.*?) — scikit-learn: (.*?); river: (.*?);", text)
    assert found, "docs/ml.md: no 'Checked by the conformance suite: … — scikit-learn: …; river: …;' list"
    own, listed = found.group(1), {"scikit-learn": found.group(2), "river": found.group(3)}
    assert set(re.findall(r"`(Online\w+)`", own)) == {name.split()[0] for name in own_learners()}
    assert {library: [item.replace("`", "").strip() for item in names.split(",")]
            for library, names in listed.items()} == SUPPORTED


def test_the_checks_catch_what_they_are_for():
    """Each check fails on a learner that breaks its rule (so a pass means something)."""
    from sklearn.base import BaseEstimator, RegressorMixin

    class Careless(RegressorMixin, BaseEstimator):
        """Draws from the global generator, and forgets its mean on a round trip."""

        def __init__(self, scale=1.0):
            self.scale = scale

        def partial_fit(self, X, y):
            self.mean_ = float(np.mean(y)) + np.random.random()
            return self

        def fit(self, X, y):
            return self.partial_fit(X, y)

        def predict(self, X):
            return np.full(len(X), self.mean_)

    careless = lambda: PartialFit(Careless(), XY, "y")  # noqa: E731 - a one-line helper local to this test
    with pytest.raises(AssertionError, match="global random"):
        checks.check_global_random_state(careless, rows())
    with pytest.raises(AssertionError, match="states differ"):
        checks.check_deterministic(careless, rows())

    class Eager(Careless):
        def partial_fit(self, X, y):
            self.mean_ = float(np.mean(y))
            return self

        def predict(self, X):
            return np.zeros(len(X))

        def __sklearn_is_fitted__(self):
            return True  # claims to be fitted before learning anything

    with pytest.raises(AssertionError, match="NotFittedError"):
        checks.check_not_fitted(lambda: PartialFit(Eager(), XY, "y"), rows())

    class Relinking(RegressorMixin, BaseEstimator):
        """Replaces code it was built with while learning: a checkpoint keeps the fresh one."""

        def __init__(self, scale=1.0):
            self.scale = scale
            self.link = functools.partial(np.multiply, scale)

        def partial_fit(self, X, y):
            self.mean_ = float(np.mean(y))
            self.link = functools.partial(np.multiply, 2.0)
            return self

        def predict(self, X):
            return np.full(len(X), self.link(self.mean_))

    with pytest.raises(AssertionError, match="states differ after load"):
        checks.check_state_round_trip(lambda: PartialFit(Relinking(), XY, "y"), rows())
