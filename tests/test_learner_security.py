"""Learner checkpoints are data: decoding one never imports, resolves or calls anything it names.

Anyone who can write to the models collection/table can write a checkpoint that every
resuming consumer decodes. Each test below stores a hostile checkpoint that the decoder of
old (import paths from the data, ``functools.partial`` and bound methods rebuilt, a
``defaultdict`` factory named by the data called while decoding) would have turned into a
call of a sentinel — ``builtins:exec`` with code that creates a file, or a function of this
module that records its call — and checks that nothing ran and that the result is a clear
streamlog error or the fresh model's own value.
"""

from __future__ import annotations

import copy
import functools
import sys
from collections import defaultdict

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin

import streamlog
from streamlog.consumers import PartialFit
from streamlog.errors import ConsumerError
from streamlog.learners.state_decode import decode
from streamlog.learners.state_format import UnsupportedState

CALLS: list = []


def sentinel(*args, **kwargs):
    """What a hostile checkpoint tries to get called."""
    CALLS.append((args, kwargs))
    return []


@pytest.fixture(autouse=True)
def no_calls():
    CALLS.clear()
    yield
    assert CALLS == [], "a function named by a checkpoint was called"


class TallyRegressor(RegressorMixin, BaseEstimator):
    """Holds code from construction (``link``) and a defaultdict it creates while learning."""

    def __init__(self, scale=1.0):
        self.scale = scale
        self.link = functools.partial(np.multiply, 1.0)

    def partial_fit(self, X, y):
        self.mean_ = float(np.mean(y))
        if not hasattr(self, "groups_"):
            self.groups_ = defaultdict(list)
        for v in np.sign(X[:, 0]).tolist():
            self.groups_[str(v)].append(1)
        return self

    def predict(self, X):
        return np.full(len(X), self.link(self.mean_))


def rows(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = X @ [2.0, -1.0] + 0.5
    return [{"x1": a, "x2": b, "y": t} for (a, b), t in zip(X.tolist(), y.tolist(), strict=True)]


def trained_state():
    model = PartialFit(TallyRegressor(), ["x1", "x2"], "y")
    model.learn(rows())
    return model.state()


EXEC = {"__sl__": "function", "name": "builtins:exec"}
SENTINEL = {"__sl__": "function", "name": f"{__name__}:sentinel"}


def exec_partial(path):
    code = f"open({str(path)!r}, 'w').write('pwned')"
    return {"__sl__": "partial", "func": EXEC, "args": [code], "keywords": {}}


def load(state):
    return PartialFit(TallyRegressor(), ["x1", "x2"], "y").load(state)


def test_an_honest_checkpoint_round_trips():
    state = trained_state()
    model = load(state)
    assert isinstance(model.estimator.groups_, defaultdict) and model.estimator.groups_.default_factory is list
    assert model.predict(rows(3)).tolist() == [state["model"]["estimator"]["attrs"]["mean_"]] * 3


@pytest.mark.parametrize("factory", ["exec", "sentinel", "sentinel-partial"])
def test_a_defaultdict_factory_named_by_the_data_is_never_called(tmp_path, factory):
    state = trained_state()
    groups = state["model"]["estimator"]["attrs"]["groups_"]
    assert groups["factory"] == {"__sl__": "class", "name": "builtins:list"}
    groups["factory"] = {"exec": exec_partial(tmp_path / "pwned"), "sentinel": SENTINEL,
                         "sentinel-partial": {"__sl__": "partial", "func": SENTINEL, "args": [], "keywords": {}},
                         }[factory]
    with pytest.raises(UnsupportedState, match="factory"):
        load(state)
    assert not (tmp_path / "pwned").exists()


def test_code_at_a_place_of_the_fresh_model_keeps_the_fresh_models_own(tmp_path):
    state = trained_state()
    attrs = state["model"]["estimator"]["attrs"]
    assert attrs["link"]["__sl__"] == "partial"
    for hostile in (SENTINEL, exec_partial(tmp_path / "pwned"),
                    {"__sl__": "method", "self": {"__sl__": "ref", "id": 0}, "name": "partial_fit"},
                    {"__sl__": "class", "name": "subprocess:Popen"}):
        attrs["link"] = hostile
        model = load(copy.deepcopy(state))
        assert model.estimator.link.func is np.multiply and model.estimator.link.args == (1.0,)
        assert model.predict(rows(2)).tolist() == [attrs["mean_"]] * 2  # predicting calls link
    assert not (tmp_path / "pwned").exists()


def test_code_where_the_fresh_model_has_none_is_refused(tmp_path):
    state = trained_state()
    attrs = state["model"]["estimator"]["attrs"]
    for hostile in (SENTINEL, EXEC, exec_partial(tmp_path / "pwned"), {"__sl__": "class", "name": "os:_wrap_close"}):
        attrs["hook_"] = hostile
        with pytest.raises(UnsupportedState, match="never loaded from a checkpoint"):
            load(copy.deepcopy(state))
    assert not (tmp_path / "pwned").exists()


def test_objects_of_classes_off_the_allow_list_are_refused_and_never_imported():
    module = "sklearn.experimental.enable_iterative_imputer"  # importing it has side effects
    if module in sys.modules:
        pytest.skip(f"{module} already imported")
    state = trained_state()
    attrs = state["model"]["estimator"]["attrs"]
    # (the classes of the fresh model itself, e.g. TallyRegressor here, are allowed)
    for cls in (f"{module}:IterativeImputer", "subprocess:Popen", "collections:OrderedDict",
                "sklearn.linear_model._stochastic_gradient:SGDRegressor"):
        attrs["helper_"] = {"__sl__": "obj", "cls": cls, "id": 99, "attrs": {}, "skipped": []}
        with pytest.raises(UnsupportedState, match="will not create"):
            load(copy.deepcopy(state))
    assert module not in sys.modules


def test_a_checkpoint_cannot_replace_methods_or_set_odd_attributes():
    state = trained_state()
    attrs = state["model"]["estimator"]["attrs"]
    for name in ("predict", "partial_fit", "__class__", "__init__"):
        hostile = copy.deepcopy(state)
        hostile["model"]["estimator"]["attrs"][name] = 1.0
        with pytest.raises(UnsupportedState, match="will not set attribute"):
            load(hostile)
    assert attrs  # the honest one still loads
    load(state)


def test_random_generators_are_rebuilt_from_a_fixed_map(monkeypatch):
    monkeypatch.setattr(np.random, "Sentinel", sentinel, raising=False)
    state = trained_state()
    state["model"]["estimator"]["attrs"]["rng_"] = {"__sl__": "Generator", "id": 98, "bit_generator": "Sentinel",
                                                     "state": {}}
    with pytest.raises(UnsupportedState, match="bit generator"):
        load(state)


@pytest.mark.parametrize("garbage", [
    {"__sl__": "ref", "id": 12345},
    {"__sl__": "obj"},
    {"__sl__": "ndarray", "dtype": "V8", "shape": [1], "data": [0]},
    {"__sl__": "ndarray", "dtype": [["a", "<f8"]], "shape": [1], "data": [0]},
    {"__sl__": "dtype", "v": "O" * 100},
    {"__sl__": "deque", "maxlen": "x", "v": []},
    {"__sl__": "nope"},
    {"__sl__": "dict", "kind": "defaultdict", "keys": [], "values": []},
])
def test_malformed_checkpoints_are_a_clear_error(garbage):
    state = trained_state()
    state["model"]["estimator"]["attrs"]["mean_"] = garbage
    with pytest.raises(UnsupportedState):
        load(state)
    with pytest.raises(UnsupportedState):
        decode({"__sl__": "obj", "cls": "builtins:object", "id": 0, "attrs": {}}, TallyRegressor())


def test_a_hostile_checkpoint_in_the_store_stops_the_consumer_before_it_runs_anything(sqlite_url, tmp_path):
    stream = streamlog.stream("tally", url=sqlite_url)
    stream.extend(rows())
    model = PartialFit(TallyRegressor(), ["x1", "x2"], "y", name="tally")
    assert streamlog.streaming("tally", size=60, blocking=False, url=sqlite_url).apply(model) == 2
    saved = stream.model("tally")
    state = saved["state"]
    state["model"]["estimator"]["attrs"]["groups_"]["factory"] = exec_partial(tmp_path / "pwned")
    state["model"]["estimator"]["attrs"]["link"] = SENTINEL
    stream.save_model("tally", "default", saved["seq"] + 1, state)  # anyone with write access
    stream.extend(rows(60, seed=1))
    fresh = PartialFit(TallyRegressor(), ["x1", "x2"], "y", name="tally")
    with pytest.raises(ConsumerError, match="factory"):
        streamlog.streaming("tally", size=60, blocking=False, url=sqlite_url).apply(fresh)
    assert not (tmp_path / "pwned").exists()
    assert fresh.n_seen_ == 0  # nothing learned on top of a checkpoint it refused
    assert len(stream.buffer()) == 60  # and the window was not consumed


def test_a_skipped_loss_object_is_rebuilt_from_the_fresh_models_own_parameters():
    # scikit-learn's SGD classifiers keep a compiled loss object (not data, so "skipped");
    # decoding recreates it from the *fresh* estimator's parameters, whatever the data says
    from sklearn.linear_model import SGDClassifier

    labelled = [dict(r, label="up" if r["y"] > 0.5 else "down") for r in rows()]
    model = PartialFit(SGDClassifier(random_state=0), ["x1", "x2"], "label", classes=["down", "up"])
    model.learn(labelled)
    state = model.state()
    attrs = state["model"]["estimator"]["attrs"]
    assert state["model"]["estimator"]["skipped"] == ["_loss_function_"]
    attrs["loss"] = "log_loss"  # the data's own idea of the loss: not what is rebuilt
    restored = PartialFit(SGDClassifier(random_state=0), ["x1", "x2"], "label", classes=["down", "up"]).load(state)
    assert type(restored.estimator._loss_function_).__name__ == "Hinge"
    for hostile in ({"hinge": {"__sl__": "tuple", "v": [SENTINEL, 1.0]}}, {"hinge": {"__sl__": "tuple", "v": [EXEC]}}):
        attrs["loss_functions"] = hostile  # a table the rebuild could look names up in: refused as code
        with pytest.raises(UnsupportedState, match="never loaded from a checkpoint"):
            PartialFit(SGDClassifier(random_state=0), ["x1", "x2"], "label", classes=["down", "up"]).load(
                copy.deepcopy(state))
