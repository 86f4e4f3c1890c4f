"""Learner checkpoints and model history in the MongoDB backend: the ``models`` collection
and the model operations of the store contract (:class:`MongoModels`, part of
:class:`~streamlog.store.mongo.MongoStore`).

A document is one checkpoint, ``_id`` ``"<stream>/<group>/<model>/<seq:012>"``, with
``s``, ``g``, ``m``, ``q`` (stream, group, model, seq), ``saved`` (ms) and ``state``, the
learner's full state, plus ``p``, the window's metrics point, when the learner gave one.
The newest :data:`~streamlog.store.base.KEEP_MODEL_VERSIONS` checkpoints of a model keep
their ``state``; older ones keep only ``p`` (the model's history), for the last
:data:`~streamlog.store.base.KEEP_MODEL_HISTORY` windows. A save is one upsert plus one
update that strips the states falling out of the kept ones (deletes those checkpoints when
the save has no point); the first save of a model in a process reads the kept versions
once, and points past the history are deleted every :data:`HISTORY_TRIM_EVERY` windows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from ..items import now_ms
from .base import KEEP_MODEL_HISTORY, KEEP_MODEL_VERSIONS
from .mongo_retry import Outage, retried

#: a model's metric points older than KEEP_MODEL_HISTORY windows are deleted every this many windows
HISTORY_TRIM_EVERY = 32


class MongoModels:
    """The model operations of :class:`~streamlog.store.mongo.MongoStore`, on ``models``."""

    if TYPE_CHECKING:  # provided by MongoStore
        _models: Collection
        #: the newest model versions this process saved, per (stream, group, model)
        _versions: dict[tuple[str, str, str], list[int]]

        def _outage(self) -> Outage: ...

    @retried
    def save_model(self, name: str, group: str, model: str, seq: int, state: dict,
                   point: dict | None = None) -> None:
        doc = {"s": name, "g": group, "m": model, "q": seq, "saved": now_ms(), "state": state}
        if point is not None:
            doc["p"] = point
        key = f"{name}/{group}/{model}/{seq:012d}"
        try:
            self._models.replace_one({"_id": key}, doc, upsert=True)
        except DuplicateKeyError:  # a concurrent upsert of the same version won
            pass
        # Keep the newest KEEP_MODEL_VERSIONS full states: the versions this process saved are
        # known; the first save of a model in a process looks the older ones up once. Older
        # checkpoints lose their state but keep their metrics point (the model's history): the
        # one write per window that used to delete them now strips them, so the history costs
        # no round trip; points older than KEEP_MODEL_HISTORY windows go every HISTORY_TRIM_EVERY saves.
        who = {"s": name, "g": group, "m": model}
        versions = self._versions.get((name, group, model))
        if versions is None:
            versions = [d["q"] for d in self._models.find({**who, "state": {"$exists": True}}, {"q": 1})
                        .sort("q", -1).limit(KEEP_MODEL_VERSIONS)]
        versions = sorted(set(versions) | {seq}, reverse=True)[:KEEP_MODEL_VERSIONS]
        self._versions[(name, group, model)] = versions
        if len(versions) == KEEP_MODEL_VERSIONS:
            older = {**who, "q": {"$lt": versions[-1]}, "state": {"$exists": True}}
            if point is None:
                self._models.delete_many(older)
            else:
                self._models.update_many(older, {"$unset": {"state": ""}})
        if seq > KEEP_MODEL_HISTORY and seq % HISTORY_TRIM_EVERY == 0:
            self._models.delete_many({**who, "q": {"$lte": seq - KEEP_MODEL_HISTORY}})

    @retried
    def load_model(self, name: str, group: str, model: str) -> tuple[int, int, dict] | None:
        doc = self._models.find_one({"s": name, "g": group, "m": model, "state": {"$exists": True}},
                                    sort=[("q", -1)])
        return None if doc is None else (doc["q"], doc["saved"], doc["state"])

    @retried
    def models(self, name: str) -> list[tuple[str, str, int, int]]:
        newest: dict[tuple[str, str], tuple[str, str, int, int]] = {}
        for d in self._models.find({"s": name, "state": {"$exists": True}}, {"g": 1, "m": 1, "q": 1, "saved": 1}):
            key = (d["g"], d["m"])
            if key not in newest or d["q"] > newest[key][2]:
                newest[key] = (d["g"], d["m"], d["q"], d["saved"])
        return [newest[k] for k in sorted(newest)]

    @retried
    def model_history(self, name: str, group: str, model: str,
                      limit: int = KEEP_MODEL_HISTORY) -> list[tuple[int, int, dict]]:
        limit = max(0, int(limit))
        if not limit:
            return []
        docs = self._models.find({"s": name, "g": group, "m": model, "p": {"$exists": True}},
                                 {"q": 1, "saved": 1, "p": 1}).sort("q", -1).limit(limit)
        return [(d["q"], d["saved"], d["p"]) for d in docs][::-1]
