"""The :class:`Window` a consumer function receives."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from .items import ms_to_datetime

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .stream import Stream


class Window:
    """A window of items delivered to a consumer group.

    * ``data`` — the items' dicts, in offset order; ``offsets`` and ``timestamps``
      (timezone-aware UTC append times) alongside; ``len(window)`` items;
    * ``start`` / ``end`` — aware UTC datetimes: the bounds of a fixed-time window,
      otherwise the first and last item's time (its event time with ``time_field=``;
      None for an empty window);
    * ``stream`` (the :class:`~streamlog.stream.Stream`), ``group`` (its name),
      ``seq`` (the number of the window's claim in the group, from 1; the empty
      fixed-time windows claimed together after a quiet spell share their claim's
      ``seq``), ``attempt`` (1 on first
      delivery), ``late`` (items that belonged to an earlier fixed-time window);
    * ``key`` — the key value of a keyed window (``key="device"``), else None;
      ``history`` — how many of the leading items a sliding window re-read from the
      log (items earlier windows already claimed); 0 for every other kind;
    * ``frame()`` — a pandas DataFrame, one row per item, item keys as columns,
      indexed by offset (the index is named ``offset``; an item key ``offset`` stays a column).
    """

    __slots__ = ("stream", "group", "seq", "attempt", "offsets", "data", "_times", "_start", "_end",
                 "late", "_timestamps", "key", "history")

    def __init__(self, stream: "Stream", group: str, seq: int, attempt: int, offsets: list[int],
                 times: list[int], data: list[dict], start: int | None = None, end: int | None = None,
                 late: int = 0, key: Any = None, history: int = 0):
        self.stream = stream
        self.group = group
        self.seq = seq
        self.attempt = attempt
        self.offsets = offsets
        self.data = data
        self._times = times
        self._start = start
        self._end = end
        self.late = late
        self.key = key
        self.history = history
        self._timestamps: list[datetime] | None = None

    @property
    def timestamps(self) -> list[datetime]:
        if self._timestamps is None:
            self._timestamps = [ms_to_datetime(t) for t in self._times]
        return self._timestamps

    @property
    def times_ms(self) -> list[int]:
        """The items' times as integer milliseconds since the epoch (cheap)."""
        return self._times

    @property
    def start(self) -> datetime | None:
        return None if self._start is None else ms_to_datetime(self._start)

    @property
    def end(self) -> datetime | None:
        return None if self._end is None else ms_to_datetime(self._end)

    def __len__(self) -> int:
        return len(self.offsets)

    def __iter__(self):
        return iter(self.data)

    def frame(self) -> "pd.DataFrame":
        import pandas as pd

        frame = pd.DataFrame.from_records(self.data, index=pd.Index(self.offsets, name="offset", dtype="int64"))
        return frame

    def __repr__(self) -> str:
        # The omega|ml / minibatch format users know: Window [start] [items]
        bounds = f"{self.start:%Y-%m-%d %H:%M:%S.%f}"[:-3] if self._start is not None else "-"
        shown: list[Any] = self.data[:5]
        more = f" (+{len(self.data) - 5} more)" if len(self.data) > 5 else ""
        return f"Window #{self.seq} [{bounds}] {shown}{more}"
