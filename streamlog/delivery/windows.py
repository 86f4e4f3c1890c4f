"""Turning a claimed window into the :class:`~streamlog.window.Window` objects a consumer
function receives — the one place windows are built, keys and history included.

A claim becomes one window; for a run of fixed-time windows the first window
(holding every claimed item) followed by the empty ones; for a run of count windows
(``windows_per_claim``) that many windows of equal size, numbered one after another.
A sliding claim's windows show the history (:mod:`streamlog.delivery.history`)
followed by the claimed items. A key chain's claim (``keyed``) builds windows that
carry the key value and the user's group name, and only its non-empty windows are
delivered (empty fixed-time windows between a key's items and idle-key claims never are).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..emitters.base import Lookback
from ..store.base import Batch, Claim
from ..window import Window

if TYPE_CHECKING:  # pragma: no cover
    from ..stream import Stream


@dataclass(slots=True)
class Claimed:
    """A window this consumer holds: the claim attempt and its items.

    ``group`` is the group the windows show (the user's group: for a key chain, its
    keyed group; None: the claim's own group); ``key`` the key value of a key chain's
    windows; ``keyed`` whether they are (so empty windows are not delivered)."""

    claim: Claim
    batch: Batch
    times: list[int]  # window times (event time when configured)
    previous_error: str | None = None
    #: sliding windows: what the emitter's look-back asked for, and the items re-read
    lookback: Lookback | None = None
    history: Batch = field(default_factory=Batch)
    history_times: list[int] = field(default_factory=list)
    group: str | None = None
    key: Any = None
    keyed: bool = False

    @property
    def group_name(self) -> str:
        """The group the windows and dead letters name."""
        return self.claim.group if self.group is None else self.group

    def windows(self, stream: "Stream") -> list[Window]:
        """The window(s) to deliver: one, or a fixed-time window followed by empty ones;
        for sliding windows, the history followed by the claimed items."""
        built = self._sliding(stream) if self.lookback is not None else self._tumbling(stream)
        return [w for w in built if len(w)] if self.keyed else built

    def _window(self, stream: "Stream", offsets: list[int], times: list[int], data: list[dict],
                start: int | None, end: int | None, late: int = 0, history: int = 0,
                seq: int | None = None) -> Window:
        c = self.claim
        return Window(stream, self.group_name, c.seq if seq is None else seq, c.attempt, offsets, times, data,
                      start, end, late, key=self.key, history=history)

    def _tumbling(self, stream: "Stream") -> list[Window]:
        c, b = self.claim, self.batch
        if c.windows <= 1:
            start = c.start if c.start is not None else (self.times[0] if self.times else None)
            end = c.end if c.end is not None else (self.times[-1] if self.times else None)
            late = sum(1 for t in self.times if t < c.start) if c.start is not None else 0
            return [self._window(stream, b.offsets, b.times, b.data, start, end, late)]
        if c.count_run:
            return self._count_run(stream)
        assert c.start is not None and c.end is not None  # a run of windows is a fixed-time claim
        step = (c.end - c.start) // c.windows
        late = sum(1 for t in self.times if t < c.start)
        first = self._window(stream, b.offsets, b.times, b.data, c.start, c.start + step, late)
        return [first] + [self._window(stream, [], [], [], c.start + i * step, c.start + (i + 1) * step)
                          for i in range(1, c.windows)]

    def _count_run(self, stream: "Stream") -> list[Window]:
        """A run of count windows: ``claim.windows`` windows of ``count // windows`` items
        each, numbered ``seq …`` (items trimmed by retention since the claim shorten
        the last ones; a window left without items is not delivered)."""
        c, b, times = self.claim, self.batch, self.times
        size = c.count // c.windows
        windows = []
        for i in range(c.windows):
            lo, hi = i * size, (len(b) if i == c.windows - 1 else (i + 1) * size)
            if lo >= hi:
                break
            windows.append(self._window(stream, b.offsets[lo:hi], b.times[lo:hi], b.data[lo:hi],
                                        times[lo], times[hi - 1], seq=c.seq + i))
        return windows

    def _sliding(self, stream: "Stream") -> list[Window]:
        """Sliding windows: the history (offsets before the claim) followed by the claimed
        items. Count kind: one window, all of it. Time kind: one window ``[end - span, end)``
        per step of the claim; the first holds every claimed item (late ones too), later
        ones (empty steps after a quiet spell) only re-show items whose time is in range."""
        assert self.lookback is not None
        c, b, h, span = self.claim, self.batch, self.history, self.lookback.span
        new = len(b)
        if span is None:
            times = self.history_times + self.times
            return [self._window(stream, h.offsets + b.offsets, h.times + b.times, h.data + b.data,
                                 times[0] if times else None, times[-1] if times else None, history=len(h))]
        assert c.start is not None and c.end is not None  # the time kind's claims have bounds
        step = (c.end - c.start) // c.windows
        # every item any of the claim's windows may show, in offset order: (window time, index)
        old = list(zip(self.history_times, range(len(h)), strict=True))
        both = old + [(t, len(h) + i) for i, t in enumerate(self.times)]
        offsets, appended, data = h.offsets + b.offsets, h.times + b.times, h.data + b.data
        newest = max((t for t, _ in both), default=None)
        windows = []
        for k in range(c.windows):
            end = c.start + (k + 1) * step
            since = end - span
            if k == 0:  # the claimed items, late ones included, are delivered here whatever their time
                keep = [i for t, i in old if since <= t < end] + list(range(len(h), len(h) + new))
            elif newest is None or newest < since:
                keep = []
            else:
                keep = [i for t, i in both if since <= t < end]
            late = sum(1 for t in self.times if t < c.start) if k == 0 else 0
            windows.append(self._window(stream, [offsets[i] for i in keep], [appended[i] for i in keep],
                                        [data[i] for i in keep], since, end, late,
                                        history=len(keep) - (new if k == 0 else 0)))
        return windows
