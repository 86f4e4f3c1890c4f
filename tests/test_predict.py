"""Predict stages: a Predictor applies the latest checkpoint of a learner trained by another
consumer, on both backends."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
from helpers import wait_until
from sklearn.linear_model import SGDClassifier, SGDRegressor

import streamlog
from streamlog.consumers import OnlineKMeans, OnlineLinearRegression, PartialFit, Predictor, load_latest
from streamlog.learners.checkpoints import latest_version

WAITING = "waiting for a first checkpoint of model"


def rows(n: int, seed: int = 0) -> list[dict]:
    x = np.random.default_rng(seed).uniform(-1, 1, size=(n, 2))
    return [{"x1": a, "x2": b} for a, b in x.tolist()]


def labelled(items: list[dict], c1: float, c2: float, c0: float) -> list[dict]:
    return [dict(r, y=c1 * r["x1"] + c2 * r["x2"] + c0) for r in items]


def train(url: str, model, size: int = 60, group: str = "trainer") -> int:
    return streamlog.streaming("labelled", size=size, group=group, blocking=False, url=url).apply(model)


def predictions(url: str, sink: str = "predictions") -> list[dict]:
    return [r["data"] for r in streamlog.connect(url).stream(sink).read(limit=None)]


def test_the_predictor_waits_for_a_first_checkpoint_then_follows_newer_ones(url, caplog):
    client = streamlog.connect(url)
    live = client.stream("live")
    features = rows(10, seed=1)
    live.extend(features)
    predictor = Predictor("regression", stream="labelled", group="trainer", reload_every=0)
    sf = streamlog.streaming("live", size=5, sink="predictions", url=url)
    thread = threading.Thread(target=sf.apply, args=(predictor,), daemon=True)
    with caplog.at_level(logging.WARNING, logger="streamlog"):
        thread.start()
        wait_until(lambda: any(WAITING in r.getMessage() for r in caplog.records), message="the waiting message")
    message = next(r.getMessage() for r in caplog.records if WAITING in r.getMessage())
    assert "'OnlineLinearRegression'" in message and "'labelled'" in message and "'trainer'" in message
    # while it waits nothing is predicted, and no window of the live stream is even claimed
    assert predictions(url) == []
    state = live.info()["groups"]["default"]
    assert (state["windows"], state["claimed"], state["pending"]) == (0, 0, 10)

    client.stream("labelled").extend(labelled(rows(120), 2.0, -1.0, 0.5))
    model = OnlineLinearRegression(["x1", "x2"], "y", halflife=20)
    assert train(url, model, size=120) == 1  # one window: one checkpoint, #1
    wait_until(lambda: len(predictions(url)) == 10, message="predictions of the waiting items")
    first = predictions(url)
    assert [p["offset"] for p in first] == list(range(10))
    assert {p["model_seq"] for p in first} == {1}
    assert np.allclose([p["prediction"] for p in first], [2 * r["x1"] - r["x2"] + 0.5 for r in features])

    # a newer checkpoint (the relationship changed): later windows use it, and it shows
    client.stream("labelled").extend(labelled(rows(120, seed=2), -1.0, 3.0, 0.0))
    assert train(url, model, size=120) == 1
    newer = load_latest(client, "labelled", "trainer", "OnlineLinearRegression")
    assert newer.seq == 2
    live.extend(features)
    wait_until(lambda: len(predictions(url)) == 20, message="predictions with the newer model")
    sf.stop()
    thread.join(20)
    assert not thread.is_alive()
    second = predictions(url)[10:]
    assert [p["offset"] for p in second] == list(range(10, 20))
    assert {p["model_seq"] for p in second} == {2}
    assert np.allclose([p["prediction"] for p in second], newer.learner.predict(features))
    assert not np.allclose([p["prediction"] for p in second], [p["prediction"] for p in first])
    assert predictor.reloads == 2 and predictor.predicted == 20
    assert sum(WAITING in r.getMessage() for r in caplog.records) == 1  # one message, not one per poll


def test_reload_every_bounds_how_often_it_looks_for_a_newer_checkpoint(url):
    client = streamlog.connect(url)
    client.stream("labelled").extend(labelled(rows(120), 2.0, -1.0, 0.5))
    model = OnlineLinearRegression(["x1", "x2"], "y")
    train(url, model)
    predictor = Predictor("regression", stream="labelled", group="trainer", reload_every=3600)
    live = client.stream("live")
    sf = streamlog.streaming("live", size=5, sink="predictions", url=url)
    thread = threading.Thread(target=sf.apply, args=(predictor,), daemon=True)
    thread.start()
    live.extend(rows(5))
    wait_until(lambda: len(predictions(url)) == 5, message="the first predictions")
    client.stream("labelled").extend(labelled(rows(60, seed=3), 2.0, -1.0, 0.5))
    train(url, model)
    assert latest_version(client, "labelled", "trainer", "OnlineLinearRegression")[0] == 3
    live.extend(rows(5))
    wait_until(lambda: len(predictions(url)) == 10, message="more predictions")
    sf.stop()
    thread.join(20)
    # within reload_every of its last look it keeps the model it has: staleness is bounded by it
    assert [p["model_seq"] for p in predictions(url)] == [2] * 10
    # a consumer (re)starting looks at once
    live.extend(rows(5))
    assert streamlog.streaming("live", size=5, sink="predictions", blocking=False, url=url).apply(predictor) == 1
    assert [p["model_seq"] for p in predictions(url)][10:] == [3] * 5


def test_kmeans_predictions_are_the_nearest_centre_and_its_distance(url):
    client = streamlog.connect(url)
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0], [0.0, 5.0, 5.0]])
    points = (centres[rng.integers(0, 3, 150)] + rng.normal(0, 0.3, (150, 3))).tolist()
    items = [{"x": a, "y": b, "z": c} for a, b, c in points]
    train_stream = client.stream("labelled")
    # a checkpoint without centres yet (2 points, k=3) is not a model to predict with
    train_stream.extend(items[:2])
    kmeans = OnlineKMeans(3, ["x", "y", "z"])
    assert train(url, kmeans, size=2) == 1
    client.stream("live").extend(items[:30])
    predictor = Predictor("kmeans", stream="labelled", group="trainer", reload_every=0)
    run = streamlog.streaming("live", size=10, sink="predictions", blocking=False, workers=2, url=url)
    assert run.apply(predictor) == 0  # blocking=False with no usable model: nothing to do
    assert predictions(url) == [] and client.stream("live").info()["groups"]["default"]["windows"] == 0

    train_stream.extend(items[2:])
    train(url, kmeans, size=50)
    assert run.apply(predictor) == 3  # workers=2: a predictor does not need sequential windows
    out = sorted(predictions(url), key=lambda p: p["offset"])
    assert [p["offset"] for p in out] == list(range(30))
    saved = load_latest(client, "labelled", "trainer", "OnlineKMeans")
    assert {p["model_seq"] for p in out} == {saved.seq}
    distances = saved.learner.transform(np.array(points[:30]))
    assert [p["cluster"] for p in out] == distances.argmin(axis=1).tolist()
    assert np.allclose([p["distance"] for p in out], distances.min(axis=1))
    assert set(p["cluster"] for p in out) == {0, 1, 2}


def test_partial_fit_regressor_from_the_allow_list_and_a_classifier_from_a_template(url):
    client = streamlog.connect(url)
    items = labelled(rows(240), 2.0, -1.0, 0.5)
    for item in items:
        item["label"] = "up" if item["y"] > 0.5 else "down"
    client.stream("labelled").extend(items)
    train(url, PartialFit(SGDRegressor(random_state=0), ["x1", "x2"], "y", name="sgd"))
    classifier = PartialFit(SGDClassifier(loss="log_loss", random_state=0), ["x1", "x2"], "label",
                            classes=["down", "up"], name="direction")
    train(url, classifier, group="classifier")
    client.stream("live").extend([dict(r, id=f"r{i}") for i, r in enumerate(rows(20, seed=5))])

    # a scikit-learn estimator on the fixed list is rebuilt from the checkpoint without a template
    sgd = Predictor("partial_fit", stream="labelled", group="trainer", name="sgd", keep=["id"])
    assert streamlog.streaming("live", size=10, group="sgd", sink="sgd", blocking=False, url=url).apply(sgd) == 2
    out = predictions(url, "sgd")
    saved = load_latest(client, "labelled", "trainer", "sgd")
    assert [p["id"] for p in out] == [f"r{i}" for i in range(20)]
    assert np.allclose([p["prediction"] for p in out], saved.learner.estimator.predict(
        np.array([[r["x1"], r["x2"]] for r in rows(20, seed=5)])))
    truth = [2 * r["x1"] - r["x2"] + 0.5 for r in rows(20, seed=5)]
    assert np.corrcoef([p["prediction"] for p in out], truth)[0, 1] > 0.9  # a model that learned something

    # a template PartialFit (what river models need): its configuration must match the checkpoint
    template = PartialFit(SGDClassifier(loss="log_loss", random_state=0), ["x1", "x2"], "label",
                          classes=["down", "up"], name="direction")
    direction = Predictor(template, stream="labelled", group="classifier", proba=True)
    assert streamlog.streaming("live", size=10, group="dir", sink="dir", blocking=False, url=url).apply(direction) == 2
    out = predictions(url, "dir")
    assert {p["prediction"] for p in out} <= {"up", "down"}
    assert all(set(p["proba"]) == {"down", "up"} and abs(sum(p["proba"].values()) - 1) < 1e-9 for p in out)
    assert template.n_seen_ == 0  # the template itself is left alone
    truth = ["up" if 2 * r["x1"] - r["x2"] + 0.5 > 0.5 else "down" for r in rows(20, seed=5)]
    assert sum(p["prediction"] == t for p, t in zip(out, truth, strict=False)) >= 16


def test_bad_rows_fail_their_window_with_a_clear_error(url):
    client = streamlog.connect(url)
    client.stream("labelled").extend(labelled(rows(60), 2.0, -1.0, 0.5))
    train(url, OnlineLinearRegression(["x1", "x2"], "y"))
    client.stream("live").extend([{"x1": 0.1, "x2": 0.2}, {"x1": 0.3}, {"x1": None, "x2": 0.1}, {"x1": 1, "x2": 1}])
    predictor = Predictor("regression", stream="labelled", group="trainer")
    sf = streamlog.streaming("live", size=1, sink="predictions", blocking=False, max_retries=0, url=url)
    assert sf.apply(predictor) == 2
    assert [p["offset"] for p in predictions(url)] == [0, 3]
    dead = {d["data"]["offset"]: d["data"]["error"] for d in client.stream("live.dead").read()}
    assert sorted(dead) == [1, 2]
    assert "MissingFieldError" in dead[1] and "'x2'" in dead[1]
    assert "offset 2" in dead[2] and "'x1'" in dead[2]


def test_wrong_models_and_options_are_clear_errors(url):
    client = streamlog.connect(url)
    client.stream("labelled").extend(labelled(rows(60), 2.0, -1.0, 0.5))
    train(url, OnlineLinearRegression(["x1", "x2"], "y"))
    client.stream("live").extend(rows(5))
    wrong = Predictor("kmeans", stream="labelled", group="trainer", name="OnlineLinearRegression")
    with pytest.raises(streamlog.ConsumerError, match="is a OnlineLinearRegression, not a OnlineKMeans"):
        streamlog.streaming("live", size=5, blocking=False, url=url).apply(wrong)
    template = OnlineLinearRegression(["x1", "x3"], "y")
    with pytest.raises(streamlog.ConsumerError, match=r"made with .*'x2'.* has .*'x3'"):
        streamlog.streaming("live", size=5, blocking=False, url=url).apply(
            Predictor(template, stream="labelled", group="trainer"))
    assert client.stream("live").info()["groups"]["default"]["windows"] == 0
    for kwargs, match in (
            (dict(model="forest"), "model must be one of"),
            (dict(model=None), "give the model's name="),
            (dict(model="regression", keep=["offset"]), "a field of the prediction records"),
            (dict(model="regression", reload_every=-1), "reload_every"),
            (dict(model="regression", group="bad name"), "group")):
        with pytest.raises(streamlog.StreamlogError, match=match):  # ConsumerError, BadNameError
            Predictor(stream="labelled", **kwargs)
    # nothing is created by looking: no checkpoint, no stream
    assert load_latest(client, "nothing", "trainer", "OnlineLinearRegression") is None
    assert "nothing" not in client.streams()


def test_a_checkpoint_naming_an_unlisted_class_is_refused_without_importing_it(url):
    client = streamlog.connect(url)
    stream = client.stream("labelled")
    state = PartialFit(SGDRegressor(), ["x1"], "y").state()
    state["config"]["estimator"] = "subprocess:Popen"
    state["config"]["params"] = {"args": "touch /tmp/streamlog-pwned"}
    stream.save_model("evil", "trainer", 1, state)
    with pytest.raises(streamlog.ConsumerError, match="not rebuilt from a checkpoint by name"):
        load_latest(client, "labelled", "trainer", "evil")


def test_stop_ends_the_wait_for_a_first_model_with_nothing_claimed(url):
    client = streamlog.connect(url)
    client.stream("live").extend(rows(5))
    predictor = Predictor("kmeans", stream="labelled", group="trainer")
    sf = streamlog.streaming("live", size=5, sink="predictions", workers=2, url=url)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("n", sf.apply(predictor)), daemon=True)
    thread.start()
    wait_until(lambda: sf.consumer is not None and predictor._consumer is not None, message="the wait to begin")
    sf.stop()
    thread.join(20)
    assert not thread.is_alive() and result["n"] == 0
    assert client.stream("live").info()["groups"]["default"]["windows"] == 0
    assert predictor.model_seq is None and predictor.learner is None
