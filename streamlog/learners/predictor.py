"""Predict stages: apply the latest checkpoint of a learner to each window.

A learner trained by one consumer (:mod:`streamlog.learners`) checkpoints its
state under ``(stream, group, name)``. A :class:`Predictor` is a consumer function that
loads the newest such checkpoint, applies it to every item of each window it is given,
and returns one record per item for ``sink=``::

    {"offset": 1234, "prediction": 3.7, "model_seq": 42}            # regression, PartialFit
    {"offset": 1234, "cluster": 2, "distance": 0.31, "model_seq": 42}  # k-means

``offset`` is the item's offset in the stream being predicted (predictions join back to
their items); ``model_seq`` the window number the checkpoint was saved after (which
model made the prediction).

Guarantees:

* **Never garbage.** Nothing is predicted before a checkpoint of a model that can predict
  exists (a k-means checkpoint saved before its first ``k`` points has no centres yet). Run
  by the streaming runtime, the predictor waits for one *before the first window is
  claimed*, after logging one message naming the model it waits for, so no window is
  held, retried or dead-lettered meanwhile; ``stop()``, SIGINT or SIGTERM end the wait.
  A ``blocking=False`` run with no model yet processes nothing and returns 0.
* **Bounded staleness.** Before each window, at most every ``reload_every`` seconds, one
  cheap read (the newest checkpoint's window number and save time, not its state) tells
  whether a newer checkpoint landed; if so it is loaded. A window is therefore predicted
  with a checkpoint that was the newest at most ``reload_every`` seconds (plus one store
  read) before the window started; all items of a window get the same model.
* **Checkpoints are data.** The learner is rebuilt by :func:`.checkpoints.rebuild`, the
  one way a checkpoint becomes a learner: nothing named by the data is imported or run.
  A ``PartialFit`` of an estimator off the fixed scikit-learn list of that module (a river
  model, say) is loaded into a copy of the ``PartialFit`` you give as ``model=``.
* A newer checkpoint that cannot be loaded is logged (once per version) and the model in
  use is kept; rows missing a feature, or with a missing/non-finite value, fail the window
  with a clear error (retried, then dead-lettered, as for any consumer).

The loader is shared with other readers of models (the HTTP model service):
:mod:`.checkpoints`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import ConsumerError
from ..items import ms_to_datetime
from ..names import check_name
from .checkpoints import Loaded, latest_version, load_newest
from .kinds import KINDS, kind_named

if TYPE_CHECKING:  # pragma: no cover
    from ..client import Client
    from ..hooks import RunningConsumer
    from .base import Learner

log = logging.getLogger("streamlog")

#: fields every prediction record has (``keep=`` may not reuse them)
RECORD_FIELDS = ("offset", "prediction", "cluster", "distance", "proba", "model_seq")
#: while waiting for a first checkpoint, look at most this often (seconds)
WAIT_POLL = 0.5


def _kind_and_template(model: Any) -> tuple[str | None, "Learner | None"]:
    """``model=`` → the class name its checkpoints must have (None: any) and the learner to
    load into (None: rebuild from the checkpoint alone)."""
    if model is None:
        return None, None
    if isinstance(model, str):
        kind = kind_named(model)
        if kind is None:
            raise ConsumerError(f"model must be one of {', '.join(map(repr, KINDS))} or a learner, not {model!r}")
        return kind.class_name, None
    from .base import Learner

    if isinstance(model, Learner):
        return type(model).__name__, model
    raise ConsumerError(f"model must be one of {', '.join(map(repr, KINDS))} or a learner, not "
                        f"{type(model).__name__}")


class Predictor:
    """A consumer function that applies the latest checkpoint of a learner to each window.

    ``Predictor(model, stream=, group=, name=)`` finds the checkpoints a learner saved while
    consuming ``stream`` in ``group`` under ``name``:

    * ``model``: ``"regression"``, ``"kmeans"`` or ``"partial_fit"`` (the checkpoint must be
      of that kind), or a learner instance to load into — ``PartialFit(estimator, …)`` for a
      river model or an estimator off the fixed scikit-learn list; its configuration must
      match the checkpoint's. None: whatever kind the checkpoint is (``name=`` required).
    * ``name``: the learner's ``name=`` (default: its class name, as learners default to).
    * ``url``: the database of the checkpoints (default: the database of the stream being
      predicted).
    * ``reload_every``: seconds between looks for a newer checkpoint (the staleness bound).
    * ``keep``: item fields copied into each record (e.g. an id, or the true value when it
      comes later, to score the predictions).
    * ``proba=True``: also ``"proba": {class: probability}`` for a classifier that has
      ``predict_proba`` (``predict_proba_one`` for river).

    Returns one record per item (see the module docstring), None for an empty window. Safe
    with ``workers > 1``: predictions do not depend on order, and reloading is locked.
    """

    #: the runtime may run several windows at once (see Consumer(workers=))
    sequential = False

    def __init__(self, model: Any = None, *, stream: str, group: str = "default", name: str | None = None,
                 url: str | None = None, reload_every: float = 1.0, keep: Sequence[str] = (),
                 proba: bool = False):
        self.kind, self.template = _kind_and_template(model)
        self.stream = check_name(stream)
        self.group = check_name(group, "group")
        if name is None:
            if self.template is not None:
                name = self.template.name
            elif self.kind is not None:
                name = self.kind
            else:
                raise ConsumerError("give the model's name= (or model='regression'/'kmeans'/'partial_fit')")
        self.name = check_name(name, "model")
        if isinstance(reload_every, bool) or not isinstance(reload_every, (int, float)) \
                or not 0 <= reload_every < 86_400:
            raise ConsumerError(f"reload_every must be a number of seconds >= 0, not {reload_every!r}")
        self.reload_every = float(reload_every)
        if isinstance(keep, str):
            keep = [keep]
        if not all(isinstance(k, str) and k for k in keep):
            raise ConsumerError(f"keep must be a list of field names, not {keep!r}")
        clash = [k for k in keep if k in RECORD_FIELDS]
        if clash:
            raise ConsumerError(f"keep={list(keep)!r}: {clash[0]!r} is a field of the prediction records")
        self.keep = list(keep)
        self.proba = bool(proba)
        self.url = url
        self._client: Client | None = None
        if url is not None:
            from ..client import connect

            self._client = connect(url)
        self._lock = threading.Lock()
        self._loaded: Loaded | None = None
        self._version: tuple[int, int] | None = None  # of the newest checkpoint looked at
        self._checked = 0.0  # monotonic time of the last look
        self._consumer: "RunningConsumer | None" = None
        self.predicted = 0  # items predicted by this instance
        self.reloads = 0  # checkpoints loaded by this instance

    def __repr__(self) -> str:
        return f"Predictor({self.name!r}, stream={self.stream!r}, group={self.group!r})"

    @property
    def model_seq(self) -> int | None:
        """The window number of the checkpoint in use (None before the first)."""
        loaded = self._loaded
        return None if loaded is None else loaded.seq

    @property
    def learner(self) -> "Learner | None":
        """The learner in use (rebuilt from the checkpoint; None before the first)."""
        loaded = self._loaded
        return None if loaded is None else loaded.learner

    # -- the runtime's hook ----------------------------------------------------------------

    def on_start(self, consumer: "RunningConsumer") -> None:
        """Called by the runtime before the first window is claimed: wait (stop-aware) for a
        first usable checkpoint, so no window is claimed before there is a model. A
        ``blocking=False`` consumer does not wait: with no model yet it stops at once."""
        self._consumer = consumer
        if self._client is None:
            self._client = consumer.stream.client
        if self._current(force=True) is not None:
            return
        if not consumer.blocking:
            log.warning("%s: no checkpoint of model %r (stream %r, group %r) to predict with yet; "
                        "nothing predicted", self.__class__.__name__, self.name, self.stream, self.group)
            consumer.stop()
            return
        self._wait_first(lambda: consumer.stopping)

    def _wait_first(self, stopping: Callable[[], bool]) -> Loaded | None:
        log.warning("%s: waiting for a first checkpoint of model %r (stream %r, group %r) before predicting",
                    self.__class__.__name__, self.name, self.stream, self.group)
        poll = min(WAIT_POLL, self.reload_every) if self.reload_every > 0 else 0.05
        while not stopping():
            loaded = self._current(force=True)
            if loaded is not None:
                return loaded
            deadline = time.monotonic() + poll
            while not stopping() and time.monotonic() < deadline:
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return None

    # -- loading -----------------------------------------------------------------------------

    def _current(self, force: bool = False) -> Loaded | None:
        """The checkpoint to predict with: the newest one, looked for at most every
        ``reload_every`` seconds (always with ``force``)."""
        if not force and self._loaded is not None and time.monotonic() - self._checked < self.reload_every:
            return self._loaded
        with self._lock:
            if not force and self._loaded is not None and time.monotonic() - self._checked < self.reload_every:
                return self._loaded  # another worker looked meanwhile
            assert self._client is not None
            version = latest_version(self._client, self.stream, self.group, self.name)
            self._checked = time.monotonic()
            if version is None or version == self._version:
                return self._loaded
            try:
                found = load_newest(self._client, self.stream, self.group, self.name, self.template)
            except ConsumerError as exc:
                if self._loaded is None:
                    raise
                log.error("%s: cannot load checkpoint #%d of model %r (keeping #%d): %s", self.__class__.__name__,
                          version[0], self.name, self._loaded.seq, exc)
                self._version = version
                return self._loaded
            if found is None:
                return self._loaded
            learner, seq, saved = found
            self._version = (seq, saved)
            if self.kind is not None and type(learner).__name__ != self.kind:
                raise ConsumerError(f"the checkpoint of model {self.name!r} is a {type(learner).__name__}, "
                                    f"not a {self.kind}")
            if not learner.fitted:
                return self._loaded  # e.g. k-means before its first k points: nothing to predict with
            if self.proba:
                learner.check_proba()
            self._loaded = Loaded(learner, seq, ms_to_datetime(saved))
            self.reloads += 1
            log.info("%s: predicting with checkpoint #%d of model %r", self.__class__.__name__, seq, self.name)
            return self._loaded

    # -- predicting ----------------------------------------------------------------------------

    def __call__(self, window) -> list[dict] | None:
        """One record per item of ``window`` (None for an empty window)."""
        if not window.data:  # e.g. an empty time window: nothing to predict
            return None
        if self._client is None:
            self._client = window.stream.client
        loaded = self._current()
        if loaded is None:  # called without the runtime's on_start: wait here
            consumer = self._consumer
            loaded = self._wait_first(lambda: consumer is not None and consumer.stopping)
            if loaded is None:
                raise ConsumerError(f"stopped before model {self.name!r} had a checkpoint to predict with")
        records = self.predict(loaded, window.data, window.offsets)
        with self._lock:
            self.predicted += len(records)
        return records

    def predict(self, loaded: Loaded, data: list[dict], offsets: Sequence[int]) -> list[dict]:
        """Prediction records for items ``data`` at ``offsets`` with the checkpoint ``loaded``."""
        import numpy as np

        learner = loaded.learner
        X = learner.feature_matrix(data)  # MissingFieldError names a missing feature
        bad = ~np.isfinite(X)
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise ConsumerError(f"{self!r}: item at offset {offsets[row]} has no usable value for feature "
                                f"{learner.features[col]!r} ({data[row].get(learner.features[col])!r}); "
                                "nothing was predicted for this window")
        seq = loaded.seq
        predictions = learner.predictions(X)
        records = [{"offset": o, **fields, "model_seq": seq} for o, fields in zip(offsets, predictions, strict=False)]
        if self.proba:
            for record, p in zip(records, learner.probabilities(X), strict=False):
                record["proba"] = p
        for field in self.keep:
            for record, item in zip(records, data, strict=False):
                record[field] = item.get(field)
        return records


__all__ = ["Predictor"]
