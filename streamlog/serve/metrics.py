"""``GET /metrics`` (Prometheus text format) and ``GET /healthz``.

The metrics are read from the database at scrape time by a custom collector
(prometheus_client's ``Collector`` protocol), so they describe every producer and
consumer of the database, not only this server's requests:

==========================================  =========  =========================================
metric                                      type       labels
==========================================  =========  =========================================
``streamlog_stream_items``                  gauge      stream — items stored now
``streamlog_stream_appended_total``         counter    stream — items ever appended (last offset
                                                       + 1): ``rate()`` of it is the append rate
``streamlog_stream_last_offset``            gauge      stream
``streamlog_group_pending``                 gauge      stream, group — items not processed yet
``streamlog_group_claimed``                 gauge      stream, group — being processed now
``streamlog_group_failed``                  gauge      stream, group — waiting for a retry
``streamlog_group_dead_letters``            gauge      stream, group
``streamlog_group_lag_seconds``             gauge      stream, group — age of the oldest item the
                                                       group has not processed (0: none)
``streamlog_model_seq``                     gauge      stream, group, model — windows learned
``streamlog_model_n_seen``                  gauge      stream, group, model — items learned
``streamlog_model_error``                   gauge      stream, group, model, metric (rmse, mae,
                                                       inertia, accuracy: what the learner keeps)
==========================================  =========  =========================================

plus the server process's own (``process_*``: CPU, memory, open files).
``/healthz`` answers 200 ``{"status": "ok"}`` when the database answers a ping within
:data:`HEALTH_TIMEOUT` seconds, else 503; it never needs a token.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..delivery.groups import processed_floor
from ..errors import StreamlogError, UnknownStreamError
from ..items import now_ms
from .context import Service, service
from .responses import APIError, error_response, json_response

HEALTH_TIMEOUT = 5.0
ERROR_METRICS = ("rmse", "mae", "inertia", "accuracy")

router = APIRouter(tags=["operations"])


class StreamlogCollector:
    """Reads the database at every scrape (see the module docstring)."""

    def __init__(self, svc: Service):
        self.svc = svc

    def collect(self):
        s, sg, sgm = ["stream"], ["stream", "group"], ["stream", "group", "model"]
        items = GaugeMetricFamily("streamlog_stream_items", "Items stored in the stream", labels=s)
        appended = CounterMetricFamily("streamlog_stream_appended", "Items ever appended to the stream", labels=s)
        last = GaugeMetricFamily("streamlog_stream_last_offset", "Offset of the newest item", labels=s)
        pending = GaugeMetricFamily("streamlog_group_pending", "Items the group has not processed", labels=sg)
        claimed = GaugeMetricFamily("streamlog_group_claimed", "Items being processed now", labels=sg)
        failed = GaugeMetricFamily("streamlog_group_failed", "Items waiting for a retry", labels=sg)
        dead = GaugeMetricFamily("streamlog_group_dead_letters", "Items moved to the dead-letter stream",
                                 labels=sg)
        lag = GaugeMetricFamily("streamlog_group_lag_seconds",
                                "Age of the oldest item the group has not processed", labels=sg)
        seq = GaugeMetricFamily("streamlog_model_seq", "Window number of the newest checkpoint", labels=sgm)
        seen = GaugeMetricFamily("streamlog_model_n_seen", "Items the model learned", labels=sgm)
        error = GaugeMetricFamily("streamlog_model_error", "The model's running (prequential) error",
                                  labels=sgm + ["metric"])
        client, now = self.svc.client, now_ms()
        for name in client.streams():
            try:
                stream = client.get(name)
                info = stream.info()
                groups = {g.name: g for g in client.store.groups(name)}
            except UnknownStreamError:
                continue
            items.add_metric([name], info["length"])
            newest = info["last_offset"]
            appended.add_metric([name], 0 if newest is None else newest + 1)
            if newest is not None:
                last.add_metric([name], newest)
            for group, state in info["groups"].items():
                labels = [name, group]
                pending.add_metric(labels, state["pending"])
                claimed.add_metric(labels, state["claimed"])
                failed.add_metric(labels, state["failed"])
                dead.add_metric(labels, state["dead"])
                lag.add_metric(labels, self._lag(stream, groups.get(group), newest, now))
            for model in info["models"]:
                labels = [name, model["group"], model["name"]]
                seq.add_metric(labels, model["seq"])
                try:
                    loaded = self.svc.models.get(name, model["group"], model["name"])
                except (APIError, StreamlogError):
                    continue
                seen.add_metric(labels, loaded.learner.n_seen_)
                summary = loaded.learner.summary() if loaded.learner.fitted else {}
                for metric in ERROR_METRICS:
                    value = summary.get(metric)
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        error.add_metric(labels + [metric], value)
        yield from (items, appended, last, pending, claimed, failed, dead, lag, seq, seen, error)

    @staticmethod
    def _lag(stream, group, newest: int | None, now: int) -> float:
        if group is None or newest is None:
            return 0.0
        floor = processed_floor(stream, group)
        if floor > newest:
            return 0.0
        batch = stream.store.read(stream.name, floor, 1)
        return max(0.0, (now - batch.times[0]) / 1000) if batch else 0.0


def registry_for(svc: Service) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StreamlogCollector(svc))
    ProcessCollector(registry=registry)
    return registry


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request):
    registry = request.app.state.registry
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", summary="Liveness: 503 when the database does not answer")
async def healthz(request: Request):
    store = service(request).store
    try:
        await asyncio.wait_for(run_in_threadpool(store.ping), HEALTH_TIMEOUT)
    except asyncio.TimeoutError:
        return error_response(503, f"the database did not answer within {HEALTH_TIMEOUT:g} s")
    except Exception as exc:  # noqa: BLE001 - any failure to answer is unhealthy
        return error_response(503, f"the database is unreachable: {type(exc).__name__}: {exc}")
    return json_response({"status": "ok"})
