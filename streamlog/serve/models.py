"""The model service: what learners learned, served over HTTP.

* ``GET /models`` — every saved model: stream, group, name, window number, save time;
* ``GET /streams/{s}/models/{group}/{name}`` — the newest checkpoint's summary
  (coefficients or centres and counts, running errors, ``n_seen``, when it was saved);
* ``POST /streams/{s}/models/{group}/{name}/predict`` — predictions for rows (a JSON array
  of objects, or one object) from the newest checkpoint: a regression's values, k-means'
  ``{"cluster", "distance"}``, a ``PartialFit`` estimator's ``predict``;
* ``GET /streams/{s}/models/{group}/{name}/follow`` — Server-Sent Events: the summary now,
  then again each time a newer checkpoint lands (``id:`` = its save time in ms).
* ``GET /streams/{s}/models/{group}/{name}/history`` — the metrics saved with each
  checkpoint (``n_seen`` and the summary), one point per window, oldest first: the last
  1,000 windows, kept in the store with the model (so a page opened late, or after a
  restart, draws the whole curve).

Models are rebuilt from checkpoints by the one loader of learners
(:func:`streamlog.learners.checkpoints.load_latest`: plain data and allow-listed classes,
nothing named by the data is imported or run) and cached per model; every request first
makes one cheap read of the newest checkpoint's version and reloads when it changed, so
an answer always comes from the newest checkpoint.
"""

from __future__ import annotations

import threading
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ..errors import ConsumerError, UnknownStreamError
from ..names import check_name
from ..store.base import KEEP_MODEL_HISTORY
from .context import Service, service
from .follow import KEEPALIVE, RETRY_MS, event, last_event_id, sse
from .ingest import body_kind, parse_json, read_body
from .responses import APIError, dumps, json_response

router = APIRouter(tags=["models"])

#: rows per predict request
MAX_ROWS = 100_000


class ModelCache:
    """Learners rebuilt from their newest checkpoints, one per ``(stream, group, name)``."""

    def __init__(self, client):
        self.client = client
        self._loaded: dict[tuple[str, str, str], tuple[tuple[int, int], Any]] = {}
        self._lock = threading.Lock()

    def version(self, stream: str, group: str, name: str) -> tuple[int, int] | None:
        """``(seq, saved_ms)`` of the newest checkpoint (one cheap read), or None."""
        from ..learners.checkpoints import latest_version

        return latest_version(self.client, stream, group, name)

    def get(self, stream: str, group: str, name: str):
        """The :class:`~streamlog.learners.checkpoints.Loaded` newest checkpoint; 404 when there is none."""
        from ..learners.checkpoints import load_latest

        key = (stream, group, name)
        version = self.version(*key)
        if version is None:
            raise APIError(404, f"no model {name!r} of group {group!r} on stream {stream!r}")
        cached = self._loaded.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        with self._lock:
            cached = self._loaded.get(key)
            if cached is not None and cached[0] == version:
                return cached[1]
            try:
                loaded = load_latest(self.client, stream, group, name)
            except ConsumerError as exc:
                raise APIError(422, f"cannot load model {name!r}: {exc}") from None
            if loaded is None:
                raise APIError(404, f"no model {name!r} of group {group!r} on stream {stream!r}")
            self._loaded[key] = (version, loaded)
            return loaded


def describe(stream: str, group: str, name: str, loaded) -> dict:
    """The JSON of a model: who it is, its checkpoint, and the learner's ``summary()``."""
    learner = loaded.learner
    try:
        summary = learner.summary() if learner.fitted else {}
    except Exception:  # noqa: BLE001 - a summary is informative only
        summary = {}
    return {
        "stream": stream, "group": group, "name": name, "kind": type(learner).__name__,
        "seq": loaded.seq, "saved": loaded.saved_at, "n_seen": learner.n_seen_, "n_skipped": learner.n_skipped_,
        "features": learner.features, "target": learner.target, "fitted": learner.fitted, "summary": summary,
    }


def predictions(learner, rows: list[dict]) -> list:
    """Predictions for ``rows``: values (regression, PartialFit) or ``{"cluster", "distance"}``
    (k-means). A missing feature or a value that is not a finite number is a 400 naming it."""
    import numpy as np

    X = learner.feature_matrix(rows, where="the rows", owner=learner.name)
    bad = np.argwhere(~np.isfinite(X))
    if len(bad):
        row, col = (int(i) for i in bad[0])
        feature = learner.features[col]
        raise APIError(400, f"row {row}: feature {feature!r} is {rows[row].get(feature)!r}, not a finite number")
    # the fields of each prediction record; a lone "prediction" is answered as its bare value
    return [fields["prediction"] if fields.keys() == {"prediction"} else fields
            for fields in learner.predictions(X)]


def list_models(svc: Service) -> list[dict]:
    out = []
    for stream in svc.client.streams():
        try:
            for group, name, seq, saved in svc.store.models(stream):
                out.append({"stream": stream, "group": group, "name": name, "seq": seq, "saved": _when(saved)})
        except UnknownStreamError:
            continue
    return out


def _when(ms: int):
    from ..items import ms_to_datetime

    return ms_to_datetime(ms)


def _names(stream: str, group: str, name: str) -> None:
    check_name(stream)
    check_name(group, "group")
    check_name(name, "model")


@router.get("/models", summary="Every saved model")
async def models(request: Request):
    """``[{"stream", "group", "name", "seq", "saved"}]``: the newest checkpoint of each model."""
    return json_response(await run_in_threadpool(list_models, service(request)))


@router.get("/streams/{stream}/models/{group}/{name}", summary="A model's newest checkpoint")
async def model(request: Request, stream: str, group: str, name: str):
    """``{"stream", "group", "name", "kind", "seq", "saved", "n_seen", "n_skipped", "features",
    "target", "fitted", "summary"}``; ``summary`` is the learner's (coefficients and
    intercept, or centres and counts; running errors)."""
    svc = service(request)
    _names(stream, group, name)
    loaded = await run_in_threadpool(svc.models.get, stream, group, name)
    return json_response(describe(stream, group, name, loaded))


def history(svc: Service, stream: str, group: str, name: str, limit: int) -> bytes:
    """The model's metric points as JSON; 404 when the model has neither points nor a checkpoint."""
    try:
        found = svc.store.model_history(stream, group, name, limit)
    except UnknownStreamError:
        found = []
    if not found and svc.models.version(stream, group, name) is None:
        raise APIError(404, f"no model {name!r} of group {group!r} on stream {stream!r}")
    points = [{**point, "seq": seq, "saved": _when(saved)} for seq, saved, point in found]
    return dumps({"stream": stream, "group": group, "name": name, "points": points})


@router.get("/streams/{stream}/models/{group}/{name}/history", summary="A model's history, one point per window")
async def model_history(request: Request, stream: str, group: str, name: str, limit: int = KEEP_MODEL_HISTORY):
    """``{"stream", "group", "name", "points": [{"seq", "saved", "n_seen", "n_skipped", …summary}]}``:
    the metrics each checkpoint was saved with (the learner's ``summary()``: coefficients,
    centres and counts, running errors), oldest first, the last ``limit`` windows (at most
    1,000 are kept per model)."""
    svc = service(request)
    _names(stream, group, name)
    if not 1 <= limit <= KEEP_MODEL_HISTORY:
        raise APIError(400, f"limit must be between 1 and {KEEP_MODEL_HISTORY}, not {limit}")
    return json_response(None, raw=await run_in_threadpool(history, svc, stream, group, name, limit))


@router.post("/streams/{stream}/models/{group}/{name}/predict", summary="Predict with a model",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "oneOf": [{"type": "array", "items": {"type": "object"}}, {"type": "object"}]}}}}})
async def predict(request: Request, stream: str, group: str, name: str):
    """Rows (a JSON array of objects with the model's features, or one object) →
    ``{"model": {"seq", "saved"}, "predictions": [...]}``, one per row."""
    svc = service(request)
    _names(stream, group, name)
    if body_kind(request.headers.get("content-type")) != "json":
        raise APIError(415, "send the rows as application/json")
    body = await read_body(request, svc.max_body)

    def work() -> bytes:
        rows = parse_json(body)
        if len(rows) > MAX_ROWS:
            raise APIError(413, f"{len(rows)} rows: at most {MAX_ROWS} per request")
        if not all(isinstance(r, dict) for r in rows):
            raise APIError(400, "every row must be a JSON object of features")
        loaded = svc.models.get(stream, group, name)
        return dumps({"model": {"seq": loaded.seq, "saved": loaded.saved_at},
                      "predictions": predictions(loaded.learner, rows)})

    return json_response(None, raw=await run_in_threadpool(work))


@router.get("/streams/{stream}/models/{group}/{name}/follow", summary="Follow a model (Server-Sent Events)")
async def follow_model(request: Request, stream: str, group: str, name: str):
    """The model's JSON (as ``GET`` on the model) now, then each time a newer checkpoint
    lands; ``id:`` is the checkpoint's save time (ms), and ``Last-Event-ID`` skips what the
    client already has. Save times, unlike window numbers, keep growing when the stream is
    dropped and created again, so a reconnecting client never misses a new model's start."""
    svc = service(request)
    _names(stream, group, name)
    await run_in_threadpool(svc.models.get, stream, group, name)  # 404 now rather than a silent stream
    hub, cache = svc.hub, svc.models
    key = ("model", stream, group, name)
    seen = last_event_id(request)

    async def events() -> AsyncIterator[bytes]:
        sent: tuple[int, int] | None = None
        hub.subscribe(key, lambda: cache.version(stream, group, name))
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            while not hub.closed:
                version = hub.version(key)
                newest = await run_in_threadpool(cache.version, stream, group, name)
                if newest is not None and newest != sent and (seen is None or newest[1] > seen):
                    try:
                        loaded = await run_in_threadpool(cache.get, stream, group, name)
                    except APIError as exc:
                        yield event(dumps({"error": str(exc)}), name="error")
                    else:
                        sent = newest
                        yield event(dumps(describe(stream, group, name, loaded)), newest[1])
                if not await hub.wait(key, version, KEEPALIVE):
                    yield b": keep-alive\n\n"
        finally:
            hub.unsubscribe(key)

    return sse(events())
