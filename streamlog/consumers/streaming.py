"""``streamlog.streaming``: the decorator and lazy form that run consumer functions."""

from __future__ import annotations

import functools
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterator

from ..client import connect
from ..delivery.consumer import Consumer, check_windows_per_claim
from ..delivery.keys import check_key
from ..delivery.workers import check_workers
from ..emitters import Emitter
from ..errors import ConsumerError
from ..hooks import ConnectedSink
from ..names import check_name
from ..options import check_option_names, split_options


def _url_sink(sink: str):
    """A sink given as a URL: ``mqtt://host/topic/{field}`` publishes each returned record
    with QoS 1, ``kafka://host:9092/topic[?key=FIELD]`` with the idempotent producer; the
    window is committed only after the broker acknowledged them all."""
    scheme = sink.split("://", 1)[0].lower()
    if scheme in ("mqtt", "mqtts"):
        from ..bridges.mqtt import MQTTSink

        return MQTTSink(sink)
    if scheme in ("kafka", "kafkas"):
        from ..bridges.kafka import KafkaSink

        return KafkaSink(sink)
    from ..config import mask_url

    raise ConsumerError(f"sink={mask_url(sink)!r}: a sink is a stream name, mqtt://host/topic or "
                        "kafka://host:port/topic")


class StreamingFunction:
    """A configured consumer, not yet running (the omega|ml "lazy" stream).

    ``fn.apply(consumer)`` — or using the object as a decorator — runs ``consumer``
    on each window and returns the number of windows processed: when stopped
    (blocking) or once nothing more is ready (``blocking=False``). ``stop()`` ends a
    running consumer from another thread after its current window.
    """

    def __init__(self, name: str, **options: Any):
        """``options``: those of :func:`streaming` (:mod:`streamlog.options` defines them)."""
        check_name(name)
        window, consumer = split_options(options)
        consumer.validate()
        check_workers(consumer.workers)
        self.emitter = window.build_emitter()
        check_key(window.key, emitter=self.emitter)
        check_windows_per_claim(consumer.windows_per_claim, window.key, self.emitter)
        self.window_options, self.consumer_options = window, consumer
        self.client = connect(consumer.url)
        self.stream = self.client.stream(name)
        sink = consumer.sink
        self.sink = None if sink is None else _url_sink(sink) if consumer.sink_is_url else self.client.stream(sink)
        self.options: dict[str, Any] = consumer.delivery(window)  # the Consumer's keyword options
        self.consumer: Consumer | None = None
        self._stopped = False

    def apply(self, fn: Callable) -> int:
        """Run ``fn(window)`` on each window; return the number of windows processed."""
        self.consumer = Consumer(self.stream, fn, self.emitter, sink=self.sink, **self.options)
        if self._stopped:
            self.consumer.stop()
        try:
            return self.consumer.run()
        finally:
            if isinstance(self.sink, ConnectedSink):  # a URL sink: disconnect
                self.sink.close()

    __call__ = apply

    def stop(self) -> None:
        """Stop the running consumer after its current window(s) (thread-safe)."""
        self._stopped = True
        if self.consumer is not None:
            self.consumer.stop()

    def __repr__(self) -> str:
        return f"<streaming {self.stream.name!r} {self.emitter!r} group={self.options['group']!r}>"


# True while a module is imported to name a consumer (``streamlog run MODULE:FUNCTION``,
# a pipeline file's stage): ``@streaming`` then marks the function instead of running it.
_deferring: ContextVar[bool] = ContextVar("streamlog_deferring", default=False)


@contextmanager
def deferred() -> Iterator[None]:
    """Within this block ``@streaming(...)`` does not consume: the decorated name is bound
    to a :class:`StreamingTarget` holding the function and the decorator's options (used
    by :func:`streamlog.loading.load_decorated` while it imports the operator's module)."""
    token = _deferring.set(True)
    try:
        yield
    finally:
        _deferring.reset(token)


class StreamingTarget:
    """A function decorated with ``@streaming`` in a module imported by ``streamlog run``:
    not running. Calling it calls the function; ``name`` and ``options`` are the
    decorator's stream and options, which the command uses where it gives none."""

    def __init__(self, fn: Callable, name: str, options: dict[str, Any]):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = name
        self.options = options

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<streaming target {getattr(self.fn, '__qualname__', self.fn)!r} on {self.name!r}>"


class _Deferred:
    """What ``streaming(...)`` returns while deferred: as a decorator, a
    :class:`StreamingTarget`; used later (outside the import), the real
    :class:`StreamingFunction`, made on first use."""

    def __init__(self, name: str, options: dict[str, Any]):
        self._name = name
        self._options = options
        self._real: StreamingFunction | None = None

    def apply(self, fn: Callable) -> Any:
        if _deferring.get():
            return StreamingTarget(fn, self._name, self._options)
        return self._function().apply(fn)

    __call__ = apply

    def _function(self) -> StreamingFunction:
        if self._real is None:
            self._real = StreamingFunction(self._name, **self._options)
        return self._real

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self._function(), attribute)


def streaming(name: str, size: int | None = None, interval: float | None = None, relaxed: bool = False,
              emitter: Emitter | None = None, **options) -> StreamingFunction:
    """Consume windows of the stream ``name``.

    Every option is a field of :class:`~streamlog.options.WindowOptions` or
    :class:`~streamlog.options.ConsumerOptions` (:mod:`streamlog.options`, where each is
    defined once; ``streamlog run`` takes each as a flag and a pipeline file as a stage
    key). An unknown option is a :class:`ConsumerError` suggesting the closest one.

    Window strategy: ``size=N`` → :class:`CountWindow` (``timeout=`` seconds for partial
    windows); ``interval=T`` → :class:`FixedTimeWindow` (``grace=``); ``interval=T,
    relaxed=True`` → :class:`RelaxedTimeWindow` (``max_size=``); ``size=N, step=S`` →
    :class:`SlidingCountWindow` (every S new items, the last N); ``interval=T, every=S``
    → :class:`SlidingTimeWindow` (every S seconds, the last T seconds; ``grace=``);
    ``gap=G`` → :class:`SessionWindow` (closes after G seconds without an item;
    ``max_size=``); ``emitter=`` → your own; none → one item per window. Sliding
    windows claim and commit only their new items and re-read the rest from the log
    (``window.history`` leading items), so a redelivered window is the same.
    ``key`` (an item field: each value gets its own windows with the same boundary
    rules, and ``window.key``; see docs/consumers.md, "Keyed windows"), ``time_field``
    (event time).

    Options: ``group`` (consumer group, default ``"default"``), ``start``
    (``"earliest"``/``"latest"``/offset, for a new group), ``sink`` (stream that receives
    the function's non-None return values, or ``mqtt://host/topic/{field}`` or
    ``kafka://host:port/topic?key=FIELD`` to publish them, committing only after the
    broker acknowledged), ``blocking`` (False: process what is ready,
    then return — for cron), ``max_windows``, ``lease`` (seconds, default 30),
    ``max_retries`` (default 3), ``retry_delay`` / ``retry_max_delay`` (seconds: a failed
    window is retried after ``retry_delay · 2^(attempt-1)``, capped, with jitter; default
    0.5 / 30; 0 retries at once), ``poll`` (the longest sleep between probes, seconds),
    ``url``, ``workers`` (up to N windows in flight at once on N threads, committed in any
    order; default 1).

    As a decorator it runs the consumer at once and the decorated name is bound to the
    number of windows processed::

        @streamlog.streaming("sensors", size=60)
        def consume(window):
            print(window.frame().mean())

    Imported by ``streamlog run MODULE:consume`` (or a pipeline file) the decorator does
    not run: the command runs ``consume`` with its own flags, the decorator's options
    standing in for the flags it was not given (see docs/cli.md, ``streamlog run``).
    """
    options.update(size=size, interval=interval, relaxed=relaxed, emitter=emitter)
    check_option_names(options)
    if _deferring.get():
        check_name(name)
        return _Deferred(name, options)  # type: ignore[return-value]
    return StreamingFunction(name, **options)
