"""Window times and a sliding window's history: the earlier items it re-reads from the log.

Sliding windows claim only their new items; the emitter's ``lookback`` names the
earlier items their windows re-show, which the cursor re-reads by offset range when
it claims or takes over the window (:func:`read_history`): one more read for the count
kind, a few for the time kind. A function of the claim and the log only, so every
attempt of a window re-reads the same items (unless the log was trimmed in between).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable, Protocol, runtime_checkable

from ..emitters.base import Emitter, Lookback
from ..items import datetime_to_ms
from ..store.base import Batch, Claim

log = logging.getLogger("streamlog")

#: offsets a sliding time window's look-back reads at least per round trip (then doubling)
LOOKBACK_CHUNK = 256


@runtime_checkable
class LooksBack(Protocol):
    """An emitter whose windows may re-show items before their claim (sliding windows;
    :meth:`streamlog.emitters.base.Emitter.lookback`). A custom emitter that does not
    subclass :class:`~streamlog.emitters.base.Emitter` may lack the method."""

    def lookback(self, claim: Claim) -> Lookback | None: ...


def reshows_history(emitter: object) -> bool:
    """Whether ``emitter``'s windows re-show items from before their claim: its class
    overrides :meth:`Emitter.lookback <streamlog.emitters.base.Emitter.lookback>` (whose
    default shows none). Such windows are claimed one at a time and never keyed."""
    lookback = getattr(type(emitter), "lookback", None)
    return lookback is not None and lookback is not Emitter.lookback


def event_times(field: str) -> Callable[[Batch], list[int]]:
    """A function mapping a batch to its items' event times (ms): ``data[field]`` as a
    datetime, an ISO-8601 string or epoch seconds; the append time when it is missing
    or unreadable (logged once per consumer)."""
    warned = False

    def times(batch: Batch) -> list[int]:
        nonlocal warned
        out = []
        for data, appended in zip(batch.data, batch.times, strict=True):
            value = data.get(field)
            try:
                if isinstance(value, datetime):
                    out.append(datetime_to_ms(value))
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    out.append(int(value * 1000))
                elif isinstance(value, str):
                    out.append(datetime_to_ms(datetime.fromisoformat(value)))
                else:
                    raise ValueError(value)
            except (ValueError, OverflowError):
                if not warned:
                    log.warning("item without a usable %r field; using its append time", field)
                    warned = True
                out.append(appended)
        return out

    return times


def read_history(claim: Claim, lookback: Lookback, floor: int, claimed: int,
                 read: Callable[[int, int], Batch], times: Callable[[Batch], list[int]]) -> tuple[Batch, list[int]]:
    """The history ``lookback`` asks for before ``claim``, and its items' window times.

    ``read(lo, hi)`` returns the stored items at offsets ``lo … hi``; ``floor`` is the
    group's first offset (history never reaches below it); ``claimed`` the number of
    claimed items:

    * ``first`` — offsets ``max(first, floor) … claim.lo - 1``, one read;
    * ``stop`` — read back from ``claim.lo - 1`` in offset order up to (excluding) the
      first item with a time before ``stop``; of those, the items the claim's first
      window can show (time at or after its start, ``end - span``). Chunks are sized
      from the claim's own item rate and double, so it costs a few round trips.
    """
    last = claim.lo - 1
    if lookback.first is not None:
        first = max(lookback.first, floor)
        history = read(first, last) if first <= last else Batch()
        return history, times(history)
    if lookback.stop is None or last < floor:
        return Batch(), []
    assert claim.start is not None and claim.end is not None and lookback.span is not None  # time kind
    step = (claim.end - claim.start) // claim.windows
    since = claim.start + step - lookback.span  # the first (earliest) window's start
    reach = max(0, claim.start - lookback.stop) / max(1, claim.end - claim.start)  # in claims' lengths
    chunk = max(LOOKBACK_CHUNK, int(claimed * reach) + 1)
    parts: list[tuple[Batch, list[int]]] = []
    hi = last
    while hi >= floor:
        lo = max(floor, hi - chunk + 1)
        part = read(lo, hi)
        ptimes = times(part)
        cut = next((i for i in range(len(part) - 1, -1, -1) if ptimes[i] < lookback.stop), -1)
        keep = [i for i in range(cut + 1, len(part)) if ptimes[i] >= since]
        parts.append((Batch([part.offsets[i] for i in keep], [part.times[i] for i in keep],
                            [part.data[i] for i in keep]), [ptimes[i] for i in keep]))
        if cut >= 0 or len(part) < hi - lo + 1:
            break  # reached an item older than stop, or the log is trimmed below this chunk
        hi, chunk = lo - 1, chunk * 2
    history, history_times = Batch(), []
    for part, ptimes in reversed(parts):
        history.extend(part)
        history_times.extend(ptimes)
    return history, history_times
