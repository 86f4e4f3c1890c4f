"""What the bridges' sources and sinks share: :func:`append_retrying`, the loop that
appends a source's batch to its stream (items the log refuses repaired, a database that
is away waited out, per :mod:`streamlog.bridges.retry`), and :func:`json_payloads`, the
records of a sink as the JSON it publishes."""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, TypeVar

import orjson

from ..config import mask_url
from ..errors import BadItemError, ConsumerError, UnknownStreamError
from ..items import to_jsonable
from .base import Bridge
from .retry import Backoff, dropped, is_transient

log = logging.getLogger("streamlog")

T = TypeVar("T")

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def append_retrying(bridge: Bridge, stream_name: str, batch: list[T], append: Callable[[list[T]], Any],
                    repair: Callable[[list[T], BadItemError, int], list[T]], *, what: str,
                    give_up: Callable[[], bool]) -> list[T] | None:
    """``append(batch)`` until it succeeds; returns the batch as stored (repaired, maybe).

    The log refusing an item (:class:`BadItemError`): ``batch = repair(batch, error, n)``
    for the ``n``-th refusal (1, 2, …; it raises to give up) and append again. A failure to
    wait out (:func:`~.retry.is_transient`): counted in ``bridge.counters.errors``, logged
    (``could not store N <what>``, passwords masked) and retried after a :class:`Backoff`
    delay — unless ``give_up()`` says so: then None (nothing stored). Anything else is
    raised; a dropped stream as the one-line :func:`~.retry.dropped` error."""
    backoff = Backoff(first=0.05, cap=2.0)
    refused = 0
    while batch:
        try:
            append(batch)
            return batch
        except BadItemError as exc:
            refused += 1
            batch = repair(batch, exc, refused)
        except Exception as exc:  # sorted by the retry policy just below
            bridge.counters.add(errors=1)
            if not is_transient(exc):
                if isinstance(exc, UnknownStreamError):
                    raise dropped(stream_name, "the bridge appended to it") from None
                raise
            if give_up():
                return None
            delay = backoff.failed()
            log.warning("could not store %d %s (%s); retrying in %.2f s", len(batch), what, mask_url(str(exc)),
                        delay)
            bridge.stop_event.wait(delay)
    return batch


def json_payloads(records: Iterable[Any]) -> list[bytes]:
    """Each record as compact JSON (datetimes as ISO-8601 strings, numpy values as numbers);
    :class:`ConsumerError` naming the first record that cannot be published as JSON."""
    out = []
    for i, record in enumerate(records):
        try:
            out.append(orjson.dumps(to_jsonable(record), option=_JSON_OPTIONS))
        except TypeError as exc:
            raise ConsumerError(f"record {i} cannot be published as JSON: {exc}") from None
    return out
