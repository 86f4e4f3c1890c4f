"""A model's history: each checkpoint a learner saves carries a small metrics point (seq,
n_seen, its summary), kept for the last ``KEEP_MODEL_HISTORY`` windows after the full
states are gone (the last ``KEEP_MODEL_VERSIONS``), on both backends, and served by
``GET /streams/{s}/models/{g}/{n}/history`` — so a dashboard page opened late (or after a
restart) draws the whole curve, not only the checkpoints that are still stored."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import _forget_client

import streamlog
import streamlog.store.mongo_models
import streamlog.store.sqlite
from streamlog.consumers import OnlineKMeans, OnlineLinearRegression
from streamlog.serve import app as create_app
from streamlog.store.base import KEEP_MODEL_VERSIONS


def labelled(n: int, seed: int = 0) -> list[dict]:
    x = np.random.default_rng(seed).uniform(-1, 1, size=(n, 2))
    return [{"x1": a, "x2": b, "y": 2 * a - b + 0.5} for a, b in x.tolist()]


def test_every_window_learned_leaves_a_point_and_the_history_survives_a_restart(url):
    stream = streamlog.connect(url).stream("s")
    stream.extend(labelled(100))
    model = OnlineLinearRegression(["x1", "x2"], "y", name="reg")
    assert streamlog.streaming("s", size=10, group="g", blocking=False, url=url).apply(model) == 10
    _forget_client(url)  # a new process: nothing cached
    history = streamlog.connect(url).get("s").model_history("reg", "g")
    assert [p["seq"] for p in history] == list(range(1, 11))  # more than the 3 full states kept
    assert [p["n_seen"] for p in history] == list(range(10, 101, 10))
    assert history[-1]["coef"] == pytest.approx({"x1": 2.0, "x2": -1.0})
    assert history[0]["rmse"] is None and history[-1]["rmse"] == pytest.approx(0.0, abs=1e-6)
    # the newest checkpoint is still the learner's full state, and a new instance resumes from it
    assert streamlog.connect(url).get("s").model("reg", "g")["seq"] == 10
    resumed = OnlineLinearRegression(["x1", "x2"], "y", name="reg")
    stream = streamlog.connect(url).get("s")
    stream.extend(labelled(10, seed=1))
    assert streamlog.streaming("s", size=10, group="g", blocking=False, url=url).apply(resumed) == 1
    assert [p["seq"] for p in stream.model_history("reg", "g")][-2:] == [10, 11]
    assert resumed.n_seen_ == 110
    assert [m["seq"] for m in stream.info()["models"]] == [11]


def test_full_states_keep_the_last_few_and_points_the_last_n_windows(url, monkeypatch):
    for module in (streamlog.store.sqlite, streamlog.store.mongo_models):
        monkeypatch.setattr(module, "KEEP_MODEL_HISTORY", 10)
    stream = streamlog.connect(url).stream("s")
    store = stream.store
    for seq in range(1, 65):
        stream.save_model("m", "default", seq, {"w": [seq, 1.0]}, point={"n_seen": seq * 2, "rmse": 1 / seq})
    points = store.model_history("s", "default", "m")
    assert [p[0] for p in points] == list(range(55, 65))
    assert points[-1][2] == {"n_seen": 128, "rmse": pytest.approx(1 / 64)}
    assert [p[0] for p in store.model_history("s", "default", "m", limit=3)] == [62, 63, 64]
    assert store.load_model("s", "default", "m")[2] == {"w": [64, 1.0]}
    assert store.models("s")[0][:3] == ("default", "m", 64)
    assert full_states(url, store) == list(range(65 - KEEP_MODEL_VERSIONS, 65))
    # saving the newest window again (a late window filled a hole) replaces its point
    stream.save_model("m", "default", 64, {"w": [64, 2.0]}, point={"n_seen": 130})
    assert store.model_history("s", "default", "m")[-1][2] == {"n_seen": 130}
    stream.drop()
    stream = streamlog.connect(url).stream("s")
    assert stream.model_history("m") == []


def full_states(url: str, store) -> list[int]:
    """The window numbers whose checkpoints still hold a full state."""
    if url.startswith("sqlite"):
        rows = store._con().execute("SELECT seq FROM models ORDER BY seq").fetchall()
        return [r[0] for r in rows]
    return sorted(d["q"] for d in store._models.find({"state": {"$exists": True}}, {"q": 1}))


def test_the_history_route_serves_the_points_oldest_first(url):
    from fastapi.testclient import TestClient

    stream = streamlog.connect(url).stream("pts")
    rng = np.random.default_rng(3)
    stream.extend([{"x": float(v), "y": float(w)} for v, w in rng.normal(size=(60, 2))])
    model = OnlineKMeans(2, ["x", "y"], name="km")
    assert streamlog.streaming("pts", size=12, blocking=False, url=url).apply(model) == 5
    app = create_app(url)
    try:
        with TestClient(app) as http:
            body = http.get("/streams/pts/models/default/km/history").json()
            assert (body["stream"], body["group"], body["name"]) == ("pts", "default", "km")
            assert [p["seq"] for p in body["points"]] == [1, 2, 3, 4, 5]
            assert [p["n_seen"] for p in body["points"]] == [12, 24, 36, 48, 60]
            assert len(body["points"][-1]["centers"]) == 2 and "saved" in body["points"][0]
            assert [p["seq"] for p in http.get("/streams/pts/models/default/km/history?limit=2").json()["points"]] \
                == [4, 5]
            assert http.get("/streams/pts/models/default/km/history?limit=0").status_code == 400
            assert http.get("/streams/pts/models/default/nope/history").status_code == 404
            assert http.get("/streams/nope/models/default/km/history").status_code == 404
    finally:
        app.state.service.client.close()


def test_a_point_too_big_or_with_nested_lists_keeps_its_scalars(sqlite_url):
    model = OnlineLinearRegression(["x1", "x2"], "y")
    model.learn(labelled(20))
    point = model.history_point()
    assert point["n_seen"] == 20 and set(point["coef"]) == {"x1", "x2"}
    model.summary = lambda: {"coef": [[1.0, 2.0]], "rmse": 0.5}  # a list in a list
    assert model.history_point() == {"n_seen": 20, "n_skipped": 0, "rmse": 0.5}
    model.summary = lambda: {"coef": list(range(5000)), "rmse": 0.25}  # too big
    assert model.history_point() == {"n_seen": 20, "n_skipped": 0, "rmse": 0.25}
