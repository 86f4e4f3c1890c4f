"""The one registry of learner kinds, the one rebuild from a checkpoint, and the consumer hooks as protocols."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamlog.consumers import OnlineKMeans, OnlineLinearRegression, PartialFit, Predictor
from streamlog.errors import ConsumerError
from streamlog.hooks import Attaches, ConnectedSink, Sink, StartsUp, runs_in_order
from streamlog.learners.checkpoints import rebuild
from streamlog.learners.kinds import KINDS, kind_named, kind_of_class

ROOT = Path(__file__).resolve().parent.parent


def test_every_kind_names_its_class_both_ways():
    assert set(KINDS) == {"regression", "kmeans", "partial_fit"}
    classes = {OnlineLinearRegression, OnlineKMeans, PartialFit}
    assert {kind.learner_class() for kind in KINDS.values()} == classes
    for name, kind in KINDS.items():
        assert kind.learner_class().__name__ == kind.class_name
        assert kind_named(name) is kind_named(kind.class_name) is kind_of_class(kind.class_name) is kind
    assert kind_named("svm") is None and kind_of_class(["not", "a", "name"]) is None


def test_the_registry_and_the_predictor_import_no_numerical_library():
    code = ("import sys, streamlog, streamlog.learners.kinds, streamlog.learners.predictor, streamlog.apps.spec; "
            "print(sorted(m for m in ('numpy', 'scipy', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


def test_rebuild_gives_the_same_model_and_refuses_what_is_not_a_learner_state():
    model = OnlineLinearRegression(["x1", "x2"], "y", checkpoint=False)
    model.learn([{"x1": a, "x2": a * a, "y": 2 * a + 1} for a in range(10)])
    again = rebuild(model.state(), "m")
    assert type(again) is OnlineLinearRegression and again.name == "m" and not again.checkpoint
    assert again.predict({"x1": 3.0, "x2": 9.0}) == pytest.approx(model.predict({"x1": 3.0, "x2": 9.0}))
    with pytest.raises(ConsumerError, match="not a learner state"):
        rebuild({"kind": "OnlineKMeans"}, "m")
    with pytest.raises(ConsumerError, match="unknown kind 'Nope'"):
        rebuild({**model.state(), "kind": "Nope"}, "m")
    with pytest.raises(ConsumerError, match="is malformed"):
        rebuild({**model.state(), "config": {}}, "m")
    with pytest.raises(ConsumerError, match="is a OnlineLinearRegression, not a OnlineKMeans"):
        rebuild(model.state(), "m", OnlineKMeans(2, ["x1", "x2"]))


def test_consumer_hooks_and_sinks_are_protocols():
    learner = OnlineLinearRegression(["x1"], "y")
    predictor = Predictor("regression", stream="s")

    def plain(window):
        return None

    assert isinstance(learner, Attaches) and not isinstance(learner, StartsUp) and runs_in_order(learner)
    assert isinstance(predictor, StartsUp) and not isinstance(predictor, Attaches) and not runs_in_order(predictor)
    assert not isinstance(plain, (Attaches, StartsUp)) and not runs_in_order(plain)
    plain.sequential = True  # type: ignore[attr-defined]
    assert runs_in_order(plain)

    class Memory:
        def extend(self, items):
            return []

    class Connected(Memory):
        def close(self):
            pass

    assert isinstance(Memory(), Sink) and not isinstance(Memory(), ConnectedSink)
    assert isinstance(Connected(), ConnectedSink)


def test_the_hooks_module_imports_nothing_of_streamlog_at_run_time():
    import ast

    tree = ast.parse((ROOT / "streamlog" / "hooks.py").read_text())
    imported = {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    assert imported == {"__future__", "typing"}  # the rest only under TYPE_CHECKING
