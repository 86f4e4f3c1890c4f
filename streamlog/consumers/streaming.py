"""``streamlog.streaming``: the decorator and lazy form that run consumer functions."""

from __future__ import annotations

from typing import Callable

from ..client import connect
from ..stream import Stream
from ..emitters import CountWindow, Emitter, FixedTimeWindow, RelaxedTimeWindow
from ..errors import ConsumerError
from ..names import check_name
from .runtime import Consumer


def _emitter(size, interval, relaxed, emitter, timeout, grace, max_size) -> Emitter:
    chosen = [x is not None for x in (size, interval, emitter)]
    if sum(chosen) > 1:
        raise ConsumerError("give one of size=, interval= or emitter=")
    if emitter is not None:
        if not isinstance(emitter, Emitter) and not hasattr(emitter, "select"):
            raise ConsumerError(f"emitter= must be an Emitter, not {type(emitter).__name__}")
        if relaxed or timeout is not None or grace is not None:
            raise ConsumerError("relaxed=, timeout= and grace= do not apply to a custom emitter")
        return emitter
    if interval is not None:
        if timeout is not None:
            raise ConsumerError("timeout= applies to count windows (size=), not to time windows")
        if relaxed:
            if grace is not None:
                raise ConsumerError("grace= applies to fixed time windows, not relaxed ones")
            return RelaxedTimeWindow(interval, max_size=max_size)
        return FixedTimeWindow(interval, **({} if grace is None else {"grace": grace}))
    if relaxed:
        raise ConsumerError("relaxed=True needs interval=")
    if grace is not None:
        raise ConsumerError("grace= applies to fixed time windows (interval=)")
    return CountWindow(1 if size is None else size, timeout=timeout)


def _is_url_sink(sink: str) -> bool:
    return isinstance(sink, str) and "://" in sink


def _url_sink(sink: str):
    """A sink given as a URL: ``mqtt://host/topic/{field}`` publishes each returned record
    with QoS 1, and the window is committed only after the broker acknowledged them all."""
    scheme = sink.split("://", 1)[0].lower()
    if scheme in ("mqtt", "mqtts"):
        from ..bridges.mqtt import MQTTSink

        return MQTTSink(sink)
    from ..config import mask_url

    raise ConsumerError(f"sink={mask_url(sink)!r}: a sink is a stream name or mqtt://host/topic")


class StreamingFunction:
    """A configured consumer, not yet running (the omega|ml "lazy" stream).

    ``fn.apply(consumer)`` — or using the object as a decorator — runs ``consumer``
    on each window and returns the number of windows processed: when stopped
    (blocking) or once nothing more is ready (``blocking=False``). ``stop()`` ends a
    running consumer from another thread after its current window.
    """

    def __init__(self, name: str, *, size: int | None = None, interval: float | None = None,
                 relaxed: bool = False, emitter: Emitter | None = None, timeout: float | None = None,
                 grace: float | None = None, max_size: int | None = None, group: str = "default",
                 start: str | int = "earliest", sink: str | None = None, blocking: bool = True,
                 lease: float = 30.0, max_retries: int = 3, max_windows: int | None = None,
                 time_field: str | None = None, url: str | None = None, poll: float | None = None,
                 retry_delay: float = 0.5, retry_max_delay: float = 30.0):
        check_name(name)
        check_name(group, "group")
        if sink is not None and not _is_url_sink(sink):
            check_name(sink, "sink stream")
        if not isinstance(lease, (int, float)) or lease <= 0:
            raise ConsumerError(f"lease must be a positive number of seconds, not {lease!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ConsumerError(f"max_retries must be an integer >= 0, not {max_retries!r}")
        for option, value in (("retry_delay", retry_delay), ("retry_max_delay", retry_max_delay)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 86_400:
                raise ConsumerError(f"{option} must be a number of seconds >= 0, not {value!r}")
        if max_windows is not None and (not isinstance(max_windows, int) or max_windows < 1):
            raise ConsumerError(f"max_windows must be a positive integer, not {max_windows!r}")
        if start not in ("earliest", "latest") and not (isinstance(start, int) and start >= 0):
            raise ConsumerError(f"start must be 'earliest', 'latest' or an offset >= 0, not {start!r}")
        self.emitter = _emitter(size, interval, relaxed, emitter, timeout, grace, max_size)
        self.client = connect(url)
        self.stream = self.client.stream(name)
        self.sink = None if sink is None else _url_sink(sink) if _is_url_sink(sink) else self.client.stream(sink)
        self.options = dict(group=group, start=start, blocking=blocking, lease=lease,
                            max_retries=max_retries, max_windows=max_windows, time_field=time_field, poll=poll,
                            retry_delay=retry_delay, retry_max_delay=retry_max_delay)
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
            if self.sink is not None and not isinstance(self.sink, Stream):  # a URL sink: disconnect
                self.sink.close()

    __call__ = apply

    def stop(self) -> None:
        """Stop the running consumer after its current window (thread-safe)."""
        self._stopped = True
        if self.consumer is not None:
            self.consumer.stop()

    def __repr__(self) -> str:
        return f"<streaming {self.stream.name!r} {self.emitter!r} group={self.options['group']!r}>"


def streaming(name: str, size: int | None = None, interval: float | None = None, relaxed: bool = False,
              emitter: Emitter | None = None, **options) -> StreamingFunction:
    """Consume windows of the stream ``name``.

    Window strategy: ``size=N`` → :class:`CountWindow` (``timeout=`` seconds for partial
    windows); ``interval=T`` → :class:`FixedTimeWindow` (``grace=``); ``interval=T,
    relaxed=True`` → :class:`RelaxedTimeWindow`; ``emitter=`` → your own; none → one
    item per window.

    Options: ``group`` (consumer group, default ``"default"``), ``start``
    (``"earliest"``/``"latest"``/offset, for a new group), ``sink`` (stream that receives
    the function's non-None return values, or ``mqtt://host/topic/{field}`` to publish
    them, committing only after the broker acknowledged), ``blocking`` (False: process what is ready,
    then return — for cron), ``max_windows``, ``lease`` (seconds, default 30),
    ``max_retries`` (default 3), ``retry_delay`` / ``retry_max_delay`` (seconds: a failed
    window is retried after ``retry_delay · 2^(attempt-1)``, capped, with jitter; default
    0.5 / 30; 0 retries at once), ``time_field`` (event time), ``url``.

    As a decorator it runs the consumer at once and the decorated name is bound to the
    number of windows processed::

        @streamlog.streaming("sensors", size=60)
        def consume(window):
            print(window.frame().mean())
    """
    return StreamingFunction(name, size=size, interval=interval, relaxed=relaxed, emitter=emitter, **options)
