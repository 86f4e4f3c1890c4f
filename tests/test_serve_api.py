"""The HTTP API in process (the framework's test client), on both backends: every route,
ingest errors, idempotent retries, read-only reads, SSE follow and resume, the model
service, metrics, the token and CORS."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import streamlog
from streamlog.consumers import OnlineKMeans, OnlineLinearRegression
from streamlog.serve import create_app
from streamlog.serve import follow as follow_module

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}


def client_for(app):
    from fastapi.testclient import TestClient

    return TestClient(app)


@pytest.fixture
def api(url):
    app = create_app(url)
    with client_for(app) as http:
        yield http
    app.state.service.client.close()


def stored(url: str, name: str) -> list[dict]:
    return [r["data"] for r in streamlog.connect(url).get(name).read(limit=None)]


def sse_events(response, count: int) -> list[dict]:
    """The first ``count`` events (``id``, ``event``, ``data``) of an SSE response; comments
    are returned as ``{"comment": text}``."""
    if not hasattr(response, "sse_lines"):  # one line iterator per response, read bit by bit
        response.sse_lines = response.iter_lines()
    events, current = [], {}
    for line in response.sse_lines:
        if line.startswith(":"):
            events.append({"comment": line[1:].strip()})
        elif line == "":
            if current:
                events.append(current)
                current = {}
        else:
            field, _, value = line.partition(": ")
            current[field] = value
        if len(events) >= count:
            return events
    return events


def offsets_of(events: list[dict]) -> list[int]:
    return [int(e["id"]) for e in events if "id" in e]


# -- ingest ---------------------------------------------------------------------------


def test_ingest_a_json_array_one_object_and_ndjson(api, url):
    r = api.post("/streams/s/items", json=[{"x": 1}, {"x": 2, "tags": ["a"]}])
    assert (r.status_code, r.json()) == (200, {"offsets": [0, 1], "count": 2})
    assert r.headers["x-content-type-options"] == "nosniff"
    assert api.post("/streams/s/items", json={"x": 3}).json()["offsets"] == [2]
    r = api.post("/streams/s/items", content=b'{"x": 4}\n\n{"x": 5}\r\n', headers=NDJSON)
    assert r.json() == {"offsets": [3, 4], "count": 2}
    assert stored(url, "s") == [{"x": 1}, {"x": 2, "tags": ["a"]}, {"x": 3}, {"x": 4}, {"x": 5}]


@pytest.mark.parametrize("body, headers, status, message", [
    (b'[{"x": 1}, {"$bad": 2}]', JSON, 400, "item 1: item key '$bad'"),
    (b'[{"x": 1}, 7]', JSON, 400, "item 1: an item must be a dict, not int"),
    (b'[{"x": 123456789012345678901234}]', JSON, 400, "item 0: item value at x is an integer outside the 64-bit"),
    # 19 digits below -2**63: orjson reads them as a float; the one number rule refuses them
    (b'[{"x": -9223372036854775809}]', JSON, 400, "item 0: item value at x is an integer outside the 64-bit"),
    (b'[{"x": 1}', JSON, 400, "not valid JSON"),
    (b'"text"', JSON, 400, "must be a JSON array of objects"),
    (b'{"x": 1}\n{"x": 2}\n{"x": }\n', NDJSON, 400, "line 3: not valid JSON"),
    (b'{"x": 1}\n\n[1, 2]\n', NDJSON, 400, "line 3: an item must be a dict"),
    (b'x=1', {"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported Content-Type"),
    (b'[{"x": 1}]', {}, 415, "unsupported Content-Type '(none)'"),
])
def test_a_bad_body_appends_nothing_and_says_why(api, url, body, headers, status, message):
    api.post("/streams/s/items", json=[{"ok": True}])
    r = api.post("/streams/s/items", content=body, headers=headers)
    assert r.status_code == status
    assert message in r.json()["error"] and "\n" not in r.json()["error"]
    assert stored(url, "s") == [{"ok": True}]


def test_an_item_over_one_mib_and_a_body_over_the_limit(url):
    app = create_app(url, max_body=2 * 1024 * 1024)
    with client_for(app) as http:
        big = b'[{"x": 1}, {"s": "' + b"a" * (1024 * 1024) + b'"}]'
        r = http.post("/streams/s/items", content=big, headers=JSON)
        assert r.status_code == 400 and r.json()["error"].startswith("item 1: the item is")
        r = http.post("/streams/s/items", content=b"[" + b'{"x": 1},' * 300_000 + b'{"x": 1}]', headers=JSON)
        assert r.status_code == 413 and "--max-body" in r.json()["error"]
        assert http.get("/streams/s").status_code == 404  # a refused first request creates nothing
    app.state.service.client.close()


def test_a_retried_request_with_an_idempotency_key_appends_nothing(api, url):
    key = {"Idempotency-Key": "order-17", **JSON}
    first = api.post("/streams/s/items", content=b'[{"n": 1}, {"n": 2}]', headers=key)
    assert first.json()["offsets"] == [0, 1] and "idempotent-replayed" not in first.headers
    api.post("/streams/s/items", json=[{"other": 1}])
    retry = api.post("/streams/s/items", content=b'[{"n": 1}, {"n": 2}]', headers=key)
    assert retry.status_code == 200 and retry.json()["offsets"] == [0, 1]
    assert retry.headers["idempotent-replayed"] == "true"
    reused = api.post("/streams/s/items", content=b'[{"n": 3}]', headers=key)
    assert reused.status_code == 409 and "other items" in reused.json()["error"]
    bad = api.post("/streams/s/items", json=[{"n": 1}], headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 400
    ndjson = {"Idempotency-Key": "lines-1", **NDJSON}
    assert api.post("/streams/s/items", content=b'{"n": 9}\n', headers=ndjson).json()["offsets"] == [3]
    assert api.post("/streams/s/items", content=b'{"n": 9}\n', headers=ndjson).json()["offsets"] == [3]
    assert stored(url, "s") == [{"n": 1}, {"n": 2}, {"other": 1}, {"n": 9}]


def test_concurrent_requests_with_one_key_append_once(api, url):
    headers = {"Idempotency-Key": "same", **JSON}
    answers, barrier = [], threading.Barrier(4)

    def send():
        barrier.wait()
        answers.append(api.post("/streams/s/items", content=b'[{"a": 1}, {"a": 2}, {"a": 3}]', headers=headers))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [200] * 4
    assert all(a.json()["offsets"] == [0, 1, 2] for a in answers)
    assert sorted(a.headers.get("idempotent-replayed", "no") for a in answers) == ["no", "true", "true", "true"]
    assert stored(url, "s") == [{"a": 1}, {"a": 2}, {"a": 3}]


# -- read -------------------------------------------------------------------------------


def test_streams_and_info_are_what_ls_and_info_show(api, url):
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"x": i} for i in range(5)])
    stream.group("late", start="latest")
    listed = api.get("/streams").json()
    assert [s["name"] for s in listed] == ["s"]
    info = api.get("/streams/s").json()
    assert listed[0] == info
    assert (info["length"], info["first_offset"], info["last_offset"]) == (5, 0, 4)
    assert info["pending"] == {"default": 5, "late": 0}
    assert info["groups"]["default"]["pending"] == 5 and info["url"] == streamlog.connect(url).store.url


def test_reading_creates_nothing_and_changes_no_state(api, url):
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"x": i} for i in range(30)])
    page = api.get("/streams/s/items", params={"start": 10, "limit": 5}).json()
    assert [i["offset"] for i in page["items"]] == [10, 11, 12, 13, 14] and page["next"] == 15
    assert page["items"][0]["data"] == {"x": 10} and page["items"][0]["timestamp"].endswith("+00:00")
    assert api.get("/streams/s/items", params={"start": 28, "end": 40}).json()["next"] == 30
    assert api.get("/streams/s/items", params={"start": 99}).json() == {"items": [], "next": 99}
    assert api.get("/streams/s/items", params={"limit": 0}).json()["items"] == []
    assert stream.info()["pending"] == {"default": 30}
    for path in ("/streams/nope", "/streams/nope/items", "/streams/nope/follow"):
        r = api.get(path)
        assert r.status_code == 404 and "no stream named 'nope'" in r.json()["error"]
    assert api.get("/streams/bad$name").status_code == 400
    r = api.get("/streams/s/items", params={"limit": 10_001})
    assert (r.status_code, r.json()) == (400, {"error": "limit 10001 is out of range: at most 10000"})
    assert streamlog.connect(url).streams() == ["s"]


# -- follow ------------------------------------------------------------------------------


def test_follow_sends_one_event_per_item_and_resumes_after_last_event_id(api, url):
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"n": i} for i in range(5)])
    with api.stream("GET", "/streams/s/follow", params={"start": "earliest"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        first = sse_events(r, 4)
    assert first[0] == {"retry": "1000"}
    assert offsets_of(first) == [0, 1, 2]
    assert [int(e["id"]) for e in first[1:]] == [0, 1, 2]
    import json
    assert json.loads(first[1]["data"])["data"] == {"n": 0}
    # the browser reconnects with the last id it saw: nothing skipped, nothing repeated,
    # including items appended while it was away and while it follows
    stream.extend([{"n": 5}, {"n": 6}])
    with api.stream("GET", "/streams/s/follow", params={"start": "earliest"}, headers={"Last-Event-ID": "2"}) as r:
        events = sse_events(r, 5)  # retry, 3, 4, 5, 6
        assert offsets_of(events) == [3, 4, 5, 6]
        api.post("/streams/s/items", json=[{"n": 7}, {"n": 8}])
        assert offsets_of(sse_events(r, 2)) == [7, 8]
    assert api.get("/streams/s/follow", headers={"Last-Event-ID": "x"}).status_code == 400


def test_follow_starts_after_the_newest_item_by_default_and_keeps_alive(api, url, monkeypatch):
    monkeypatch.setattr(follow_module, "KEEPALIVE", 0.05)
    stream = streamlog.connect(url).stream("s")
    stream.extend([{"old": True}])
    with api.stream("GET", "/streams/s/follow") as r:
        assert sse_events(r, 2)[1] == {"comment": "keep-alive"}
        stream.append({"new": True})
        event = next(e for e in sse_events(r, 3) if "id" in e)
    assert event["id"] == "1" and '"new":true' in event["data"]


def test_follow_ends_when_the_stream_is_dropped(api, url):
    client = streamlog.connect(url)
    client.stream("s").append({"x": 1})
    with api.stream("GET", "/streams/s/follow", params={"start": "earliest"}) as r:
        assert offsets_of(sse_events(r, 2)) == [0]
        client.get("s").drop()
        end = sse_events(r, 1)[0]
    assert end["event"] == "end" and "dropped" in end["data"]


def test_a_late_follower_never_splices_a_stream_created_again_under_the_name(api, url, monkeypatch):
    """A follower woken only after its stream was dropped, created again and given new
    items ends (``event: end``) instead of going on with the new stream's items."""
    import asyncio

    from streamlog.serve.hub import Hub

    gate = threading.Event()
    real_wait = Hub.wait

    async def late_wait(self, key, version, timeout):  # a follower that wakes late
        while not gate.is_set():
            await asyncio.sleep(0.01)
        return await real_wait(self, key, version, timeout)

    monkeypatch.setattr(Hub, "wait", late_wait)
    client = streamlog.connect(url)
    client.stream("s").append({"old": 0})
    with api.stream("GET", "/streams/s/follow", params={"start": "earliest"}) as r:
        assert offsets_of(sse_events(r, 2)) == [0]
        client.get("s").drop()
        client.stream("s").extend([{"new": i} for i in range(3)])  # offsets 0, 1, 2 again
        gate.set()
        after = [e for e in sse_events(r, 1)]
    assert [e.get("event") for e in after] == ["end"] and "dropped" in after[0]["data"]


# -- models -------------------------------------------------------------------------------


def labelled(n: int, seed: int = 0) -> list[dict]:
    x = np.random.default_rng(seed).uniform(-1, 1, size=(n, 2))
    return [{"x1": a, "x2": b, "y": 2 * a - b + 0.5} for a, b in x.tolist()]


def test_model_summary_predictions_and_follow_after_a_learner_consumed_windows(api, url):
    stream = streamlog.connect(url).stream("s")
    stream.extend(labelled(40))
    model = OnlineLinearRegression(["x1", "x2"], "y", name="reg")
    assert streamlog.streaming("s", size=20, group="g", blocking=False, url=url).apply(model) == 2
    listed = api.get("/models").json()
    assert [(m["stream"], m["group"], m["name"], m["seq"]) for m in listed] == [("s", "g", "reg", 2)]
    summary = api.get("/streams/s/models/g/reg").json()
    assert (summary["kind"], summary["seq"], summary["n_seen"], summary["target"]) == (
        "OnlineLinearRegression", 2, 40, "y")
    assert summary["summary"]["coef"] == pytest.approx({"x1": 2.0, "x2": -1.0})
    r = api.post("/streams/s/models/g/reg/predict", json=[{"x1": 1.0, "x2": 0.0}, {"x1": 0.0, "x2": 1.0}])
    assert r.json()["model"]["seq"] == 2 and r.json()["predictions"] == pytest.approx([2.5, -0.5])
    missing = api.post("/streams/s/models/g/reg/predict", json=[{"x1": 1.0}])
    assert missing.status_code == 400 and "'x2'" in missing.json()["error"]
    assert api.post("/streams/s/models/g/reg/predict", json=[{"x1": 1.0, "x2": None}]).status_code == 400
    assert api.get("/streams/s/models/g/nope").status_code == 404
    assert api.post("/streams/s/models/g/nope/predict", json=[{"x1": 1}]).status_code == 404
    assert api.get("/streams/nope/models/g/reg").status_code == 404
    with api.stream("GET", "/streams/s/models/g/reg/follow") as r:
        first = [e for e in sse_events(r, 2) if "id" in e][0]
        assert '"seq":2' in first["data"]
        # a newer checkpoint lands: the next event is it, and predictions come from it
        stream.extend([dict(row, y=row["y"] + 10) for row in labelled(20, seed=1)])
        assert streamlog.streaming("s", size=20, group="g", blocking=False, url=url).apply(model) == 1
        newer = [e for e in sse_events(r, 1) if "id" in e][0]
    assert '"seq":3' in newer["data"] and '"n_seen":60' in newer["data"]
    assert int(newer["id"]) > int(first["id"])  # ids are save times: they only grow
    assert api.post("/streams/s/models/g/reg/predict", json={"x1": 0, "x2": 0}).json()["model"]["seq"] == 3
    # The stream is dropped and created again: a client resuming with the old model's last
    # id still gets the new model's first checkpoint (window 1 < 3, saved later).
    stream.drop()
    stream = streamlog.connect(url).stream("s")
    stream.extend(labelled(20, seed=2))
    fresh = OnlineLinearRegression(["x1", "x2"], "y", name="reg")
    assert streamlog.streaming("s", size=20, group="g", blocking=False, url=url).apply(fresh) == 1
    with api.stream("GET", "/streams/s/models/g/reg/follow", headers={"Last-Event-ID": newer["id"]}) as r:
        resumed = [e for e in sse_events(r, 2) if "id" in e][0]
    assert '"seq":1' in resumed["data"] and '"n_seen":20' in resumed["data"]


def test_kmeans_predictions_are_the_cluster_and_its_distance(api, url):
    stream = streamlog.connect(url).stream("s")
    points = [{"a": float(c) + d, "b": float(c)} for c in (0, 10) for d in (-0.1, 0.1)] * 5
    stream.extend(points)
    model = OnlineKMeans(2, ["a", "b"], name="km")
    streamlog.streaming("s", size=20, group="k", blocking=False, url=url).apply(model)
    summary = api.get("/streams/s/models/k/km").json()
    assert summary["kind"] == "OnlineKMeans" and len(summary["summary"]["centers"]) == 2
    out = api.post("/streams/s/models/k/km/predict", json=[{"a": 0, "b": 0}, {"a": 10, "b": 10}]).json()
    near, far = out["predictions"]
    assert near["cluster"] != far["cluster"] and near["distance"] == pytest.approx(0, abs=0.2)


# -- metrics, health, security ---------------------------------------------------------------


def test_metrics_parse_as_prometheus_text(api, url):
    stream = streamlog.connect(url).stream("s")
    stream.extend(labelled(35))
    streamlog.streaming("s", size=10, group="g", blocking=False, url=url).apply(
        OnlineLinearRegression(["x1", "x2"], "y", name="reg"))
    stream.group("idle")
    r = api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(r.text) for s in family.samples}
    assert samples[("streamlog_stream_items", (("stream", "s"),))] == 35
    assert samples[("streamlog_stream_appended_total", (("stream", "s"),))] == 35
    assert samples[("streamlog_stream_last_offset", (("stream", "s"),))] == 34
    assert samples[("streamlog_group_pending", (("group", "g"), ("stream", "s")))] == 5
    assert samples[("streamlog_group_pending", (("group", "idle"), ("stream", "s")))] == 35
    assert samples[("streamlog_group_lag_seconds", (("group", "g"), ("stream", "s")))] >= 0
    assert samples[("streamlog_group_dead_letters", (("group", "g"), ("stream", "s")))] == 0
    model = (("group", "g"), ("model", "reg"), ("stream", "s"))
    assert samples[("streamlog_model_n_seen", model)] == 30
    assert samples[("streamlog_model_seq", model)] == 3
    assert samples[("streamlog_model_error", (("group", "g"), ("metric", "rmse"), ("model", "reg"),
                                              ("stream", "s")))] >= 0
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)


def test_a_token_guards_every_route_but_healthz(url):
    app = create_app(url, token="s3cret-token")
    with client_for(app) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        for method, path in (("get", "/streams"), ("get", "/metrics"), ("get", "/models"),
                             ("post", "/streams/s/items"), ("get", "/openapi.json")):
            r = getattr(http, method)(path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), path
        assert http.get("/streams", headers={"Authorization": "Bearer wrong"}).status_code == 401
        good = {"Authorization": "Bearer s3cret-token"}
        assert http.post("/streams/s/items", json=[{"x": 1}], headers=good).status_code == 200
        assert http.get("/streams", headers=good).status_code == 200
        assert http.post("/login", data={"token": "wrong"}).status_code == 401
        assert "streamlog_session" not in http.cookies
        r = http.post("/login", data={"token": "s3cret-token"}, follow_redirects=False)
        assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
        assert "s3cret-token" not in r.headers["set-cookie"]
        assert http.get("/streams/s").status_code == 200  # the cookie alone
        with http.stream("GET", "/streams/s/follow", params={"start": "earliest"}) as follow:
            assert offsets_of(sse_events(follow, 2)) == [0]
    app.state.service.client.close()


def test_no_cors_headers_unless_an_origin_is_allowed(url):
    preflight = {"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "POST"}
    plain = create_app(url)
    with client_for(plain) as http:
        assert "access-control-allow-origin" not in http.get("/healthz", headers=preflight).headers
        assert "access-control-allow-origin" not in http.options("/streams/s/items", headers=preflight).headers
    allowed = create_app(url, cors="http://elsewhere.example", token="t0ken")
    with client_for(allowed) as http:
        r = http.options("/streams/s/items", headers={**preflight, "Access-Control-Request-Headers": "authorization"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://elsewhere.example"
    for app in (plain, allowed):
        app.state.service.client.close()


def test_openapi_schema_lists_every_route(api):
    paths = api.get("/openapi.json").json()["paths"]
    for path in ("/streams", "/streams/{name}", "/streams/{name}/items", "/streams/{name}/follow", "/models",
                 "/streams/{stream}/models/{group}/{name}", "/streams/{stream}/models/{group}/{name}/predict",
                 "/metrics", "/healthz"):
        assert path in paths, path
    assert set(paths["/streams/{name}/items"]) == {"get", "post"}


@pytest.mark.mongo
def test_healthz_fails_when_the_database_is_unreachable(own_ferretdb, monkeypatch):
    monkeypatch.setenv("STREAMLOG_CONNECT_TIMEOUT", "1")
    app = create_app(f"{own_ferretdb.base}/health")
    with client_for(app) as http:
        assert http.get("/healthz").status_code == 200
        own_ferretdb.stop()
        r = http.get("/healthz")
        assert r.status_code == 503 and "unreachable" in r.json()["error"]
    app.state.service.client.close()


# -- issue 17: typed offsets, empty batches, dead letters, sessions -------------------------


@pytest.mark.parametrize("header", ["9223372036854775807", "9223372036854775808", "1" + "0" * 40,
                                    "1_000", "+3", "-1", "0x10", "3.0", "\u0663".encode()])
def test_a_bad_or_out_of_range_last_event_id_is_a_400_before_any_event(api, url, header):
    streamlog.connect(url).stream("s").append({"x": 1})
    with api.stream("GET", "/streams/s/follow", headers={"Last-Event-ID": header}) as r:  # never hangs on a 200
        assert r.status_code == 400 and "text/event-stream" not in r.headers["content-type"]
        r.read()
    assert r.json()["error"].startswith("Last-Event-ID")


@pytest.mark.parametrize("start, message", [
    ("9223372036854775808", "start 9223372036854775808 is out of range: it must be below 9223372036854775808"),
    ("1_0", "start must be an offset (decimal digits), 'earliest' or 'latest', not '1_0'"),
    (" 5", "start must be an offset (decimal digits), 'earliest' or 'latest', not ' 5'"),
    ("-0", "start must be an offset (decimal digits), 'earliest' or 'latest', not '-0'"),
    ("earliest ", "start must be an offset (decimal digits), 'earliest' or 'latest', not 'earliest '"),
])
def test_a_bad_or_out_of_range_follow_start_is_a_400(api, url, start, message):
    streamlog.connect(url).stream("s").append({"x": 1})
    with api.stream("GET", "/streams/s/follow", params={"start": start}) as r:  # never hangs on a 200
        assert r.status_code == 400
        r.read()
    assert r.json() == {"error": message}


def test_the_highest_resumable_last_event_id_is_accepted(api, url, monkeypatch):
    monkeypatch.setattr(follow_module, "KEEPALIVE", 0.05)
    streamlog.connect(url).stream("s").append({"x": 1})
    with api.stream("GET", "/streams/s/follow", headers={"Last-Event-ID": str(2**63 - 2)}) as r:
        assert r.status_code == 200
        assert sse_events(r, 2) == [{"retry": "1000"}, {"comment": "keep-alive"}]


@pytest.mark.parametrize("params, message", [
    ({"start": "1_0"}, "start must be an offset (decimal digits), not '1_0'"),
    ({"start": " 5"}, "start must be an offset (decimal digits), not ' 5'"),
    ({"start": "9223372036854775808"},
     "start 9223372036854775808 is out of range: it must be below 9223372036854775808"),
    ({"limit": "1_0"}, "limit must be a count (decimal digits), not '1_0'"),
    ({"limit": "10001"}, "limit 10001 is out of range: at most 10000"),
    ({"end": "5.0"}, "end must be an offset (decimal digits), not '5.0'"),
])
def test_read_parameters_are_strict_decimal_digits(api, url, params, message):
    streamlog.connect(url).stream("s").extend([{"x": i} for i in range(12)])
    r = api.get("/streams/s/items", params=params)
    assert (r.status_code, r.json()) == (400, {"error": message})
    ok = api.get("/streams/s/items", params={"start": "010", "limit": "1"}).json()
    assert [i["offset"] for i in ok["items"]] == [10] and ok["next"] == 11


@pytest.mark.parametrize("body, headers", [(b"[]", JSON), (b"\n\n", NDJSON), (b"", NDJSON)])
def test_an_empty_batch_is_a_400_and_creates_no_stream(api, url, body, headers):
    for extra in ({}, {"Idempotency-Key": "k1"}):
        r = api.post("/streams/s/items", content=body, headers={**headers, **extra})
        assert (r.status_code, r.json()) == (400, {"error": "empty batch: the body holds no items (nothing was "
                                                            "appended, no stream was created)"})
    assert api.get("/streams/s").status_code == 404
    assert "s" not in streamlog.connect(url).streams()


def test_dead_letter_streams_are_not_writable_over_http(api, url):
    api.post("/streams/s/items", json=[{"x": 1}])
    for name in ("s.dead", "other.dead"):
        r = api.post(f"/streams/{name}/items", json=[{"forged": True}], headers={"Idempotency-Key": "f"})
        assert r.status_code == 403
        assert r.json()["error"].startswith(f"'{name}' is a dead-letter stream: only streamlog's consumers write")
    assert sorted(streamlog.connect(url).streams()) == ["s"]


def test_logout_revokes_the_session_and_sessions_expire(url):
    app = create_app(url, token="s3cret-token")
    sessions = app.state.service.sessions
    with client_for(app) as http:
        http.post("/login", data={"token": "s3cret-token"}, follow_redirects=False)
        cookie = http.cookies["streamlog_session"]
        assert http.get("/streams").status_code == 200
        r = http.post("/logout", follow_redirects=False)
        assert r.status_code == 303 and len(sessions) == 0
        # the same cookie replayed (a copy kept, or a browser that ignored the deletion)
        replay = http.get("/streams", headers={"Cookie": f"streamlog_session={cookie}"})
        assert replay.status_code == 401 and "needs a token" in replay.json()["error"]
        # expiry is the server's: a session older than its lifetime no longer works
        now = [1000.0]
        sessions.clock = lambda: now[0]
        http.cookies.clear()
        http.post("/login", data={"token": "s3cret-token"}, follow_redirects=False)
        assert http.get("/streams").status_code == 200
        now[0] += sessions.lifetime - 1
        assert http.get("/streams").status_code == 200
        now[0] += 1
        assert http.get("/streams").status_code == 401
        # a forged cookie (the old scheme's HMAC of the token) is nothing
        import hashlib
        import hmac
        old = hmac.new(b"s3cret-token", b"streamlog session v1", hashlib.sha256).hexdigest()
        http.cookies.clear()
        assert http.get("/streams", headers={"Cookie": f"streamlog_session={old}"}).status_code == 401
    app.state.service.client.close()


def test_a_burst_of_followers_reads_on_a_few_threads_not_one_per_follower(api, url, monkeypatch):
    """Followers' reads share :data:`follow.READ_THREADS` worker threads: 20 followers that
    connect at once do not grow the thread pool to 20 threads (each left alive)."""
    from streamlog.stream import Stream

    n, lock, state = 20, threading.Condition(), {"in": 0, "most": 0, "threads": set()}
    real = Stream.read_following

    def overlapping(self, start, limit=100):
        with lock:
            state["in"] += 1
            state["most"] = max(state["most"], state["in"])
            state["threads"].add(threading.get_ident())
            lock.notify_all()
            # give other followers' reads the chance to overlap with this one (bounded)
            lock.wait_for(lambda: state["in"] > follow_module.READ_THREADS, timeout=0.3)
            state["in"] -= 1
        return real(self, start, limit)

    monkeypatch.setattr(Stream, "read_following", overlapping)
    streamlog.connect(url).stream("s").extend([{"n": i} for i in range(3)])
    got, barrier = [], threading.Barrier(n)

    def follower():
        barrier.wait()
        with api.stream("GET", "/streams/s/follow", params={"start": "earliest"}) as r:
            got.append(offsets_of(sse_events(r, 4)))

    threads = [threading.Thread(target=follower) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == [[0, 1, 2]] * n
    assert state["most"] <= follow_module.READ_THREADS and len(state["threads"]) <= follow_module.READ_THREADS
