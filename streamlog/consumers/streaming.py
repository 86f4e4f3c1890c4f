"""``streamlog.streaming``: the decorator and lazy form that run consumer functions."""

from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterator

from ..client import connect
from ..stream import Stream
from ..emitters import (CountWindow, Emitter, FixedTimeWindow, RelaxedTimeWindow, SessionWindow,
                        SlidingCountWindow, SlidingTimeWindow)
from ..errors import ConsumerError
from ..keyed import check_key
from ..names import check_name, did_you_mean
from .runtime import Consumer, check_workers


def _emitter(size, interval, relaxed, emitter, timeout, grace, max_size, step=None, every=None,
             gap=None) -> Emitter:
    chosen = [x is not None for x in (size, interval, gap, emitter)]
    if sum(chosen) > 1:
        raise ConsumerError("give one of size=, interval=, gap= or emitter=")
    if step is not None or every is not None or gap is not None:
        return _sliding_or_session(size, interval, relaxed, timeout, grace, max_size, step, every, gap)
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


def _sliding_or_session(size, interval, relaxed, timeout, grace, max_size, step, every, gap) -> Emitter:
    """``size=N, step=S`` → SlidingCountWindow; ``interval=T, every=S`` → SlidingTimeWindow;
    ``gap=G`` → SessionWindow (exactly one of the three; the caller checked the rest)."""
    if relaxed:
        raise ConsumerError("relaxed=True does not apply to sliding or session windows")
    if timeout is not None:
        raise ConsumerError("timeout= applies to tumbling count windows (size= without step=)")
    if step is not None and size is None:
        raise ConsumerError("step= makes sliding count windows: give it with size= (size=N, step=S)")
    if every is not None and interval is None:
        raise ConsumerError("every= makes sliding time windows: give it with interval= (interval=T, every=S)")
    if gap is not None:
        if grace is not None:
            raise ConsumerError("grace= applies to time windows (interval=), not to session windows")
        return SessionWindow(gap, max_size=max_size)
    if max_size is not None:
        raise ConsumerError("max_size= applies to relaxed and session windows, not to sliding ones")
    if size is not None:
        if grace is not None:
            raise ConsumerError("grace= applies to time windows (interval=), not to count windows")
        return SlidingCountWindow(size, step)
    return SlidingTimeWindow(interval, every, **({} if grace is None else {"grace": grace}))


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
                 grace: float | None = None, max_size: int | None = None, step: int | None = None,
                 every: float | None = None, gap: float | None = None, group: str = "default",
                 start: str | int = "earliest", sink: str | None = None, blocking: bool = True,
                 lease: float = 30.0, max_retries: int = 3, max_windows: int | None = None,
                 time_field: str | None = None, url: str | None = None, poll: float | None = None,
                 retry_delay: float = 0.5, retry_max_delay: float = 30.0, workers: int = 1,
                 key: str | None = None):
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
        check_workers(workers)
        self.emitter = _emitter(size, interval, relaxed, emitter, timeout, grace, max_size, step, every, gap)
        check_key(key, emitter=self.emitter)
        self.client = connect(url)
        self.stream = self.client.stream(name)
        self.sink = None if sink is None else _url_sink(sink) if _is_url_sink(sink) else self.client.stream(sink)
        self.options = dict(group=group, start=start, blocking=blocking, lease=lease,
                            max_retries=max_retries, max_windows=max_windows, time_field=time_field, poll=poll,
                            retry_delay=retry_delay, retry_max_delay=retry_max_delay, workers=workers,
                            key=key)
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
        """Stop the running consumer after its current window(s) (thread-safe)."""
        self._stopped = True
        if self.consumer is not None:
            self.consumer.stop()

    def __repr__(self) -> str:
        return f"<streaming {self.stream.name!r} {self.emitter!r} group={self.options['group']!r}>"


# True while a module is imported to name a consumer (``streamlog run MODULE:FUNCTION``,
# a pipeline file's stage): ``@streaming`` then marks the function instead of running it.
_deferring: ContextVar[bool] = ContextVar("streamlog_deferring", default=False)

#: the options of the window strategy (the CLI's window flags replace all of them at once)
WINDOW_OPTIONS = ("size", "interval", "relaxed", "emitter", "timeout", "grace", "max_size", "step", "every", "gap")


@contextmanager
def deferred() -> Iterator[None]:
    """Within this block ``@streaming(...)`` does not consume: the decorated name is bound
    to a :class:`StreamingTarget` holding the function and the decorator's options (used
    by :func:`streamlog.targets.load_target` while it imports the operator's module)."""
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


def _check_options(options: dict[str, Any]) -> None:
    known = [p for p in inspect.signature(StreamingFunction.__init__).parameters if p not in ("self", "name")]
    for option in options:
        if option not in known:
            raise ConsumerError(f"streaming() has no option {option!r}{did_you_mean(option, known)}")


def streaming(name: str, size: int | None = None, interval: float | None = None, relaxed: bool = False,
              emitter: Emitter | None = None, **options) -> StreamingFunction:
    """Consume windows of the stream ``name``.

    Window strategy: ``size=N`` → :class:`CountWindow` (``timeout=`` seconds for partial
    windows); ``interval=T`` → :class:`FixedTimeWindow` (``grace=``); ``interval=T,
    relaxed=True`` → :class:`RelaxedTimeWindow`; ``size=N, step=S`` →
    :class:`SlidingCountWindow` (every S new items, the last N); ``interval=T, every=S``
    → :class:`SlidingTimeWindow` (every S seconds, the last T seconds; ``grace=``);
    ``gap=G`` → :class:`SessionWindow` (closes after G seconds without an item;
    ``max_size=``); ``emitter=`` → your own; none → one item per window. Sliding
    windows claim and commit only their new items and re-read the rest from the log
    (``window.history`` leading items), so a redelivered window is the same.

    Options: ``group`` (consumer group, default ``"default"``), ``start``
    (``"earliest"``/``"latest"``/offset, for a new group), ``sink`` (stream that receives
    the function's non-None return values, or ``mqtt://host/topic/{field}`` to publish
    them, committing only after the broker acknowledged), ``blocking`` (False: process what is ready,
    then return — for cron), ``max_windows``, ``lease`` (seconds, default 30),
    ``max_retries`` (default 3), ``retry_delay`` / ``retry_max_delay`` (seconds: a failed
    window is retried after ``retry_delay · 2^(attempt-1)``, capped, with jitter; default
    0.5 / 30; 0 retries at once), ``time_field`` (event time), ``url``, ``workers`` (up to N
    windows in flight at once on N threads, committed in any order; default 1), ``key``
    (an item field: each value gets its own windows with the same boundary rules, and
    ``window.key``; see docs/consumers.md, "Keyed windows").

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
    _check_options(options)
    if _deferring.get():
        check_name(name)
        return _Deferred(name, options)  # type: ignore[return-value]
    return StreamingFunction(name, **options)
