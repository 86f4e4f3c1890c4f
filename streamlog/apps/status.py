"""The runner's status table: one row per stage replica.

Columns: stage (``name`` or ``name#2`` for a second replica), pid, state, windows,
windows/s (over the last refresh), items, out (records sunk), pending (items the
stage's group has not processed: one value per stage, shared by its replicas),
restarts, last error. :func:`rich_table` renders it for a terminal (rich Live; without
items and out), :func:`text_table` as a plain-text table of :mod:`streamlog.tables`
(never truncated: the periodic status off a terminal, and the summary at the end).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..tables import table

HEADERS = ("stage", "pid", "state", "windows", "win/s", "items", "out", "pending", "restarts", "last error")
RIGHT = ("pid", "windows", "win/s", "items", "out", "pending", "restarts")
#: the live table leaves these out, to leave the last error room on an 80-column terminal
LIVE_LEAVES_OUT = ("items", "out")


@dataclass
class Row:
    """What the table shows about one replica."""

    stage: str
    pid: int | None
    state: str
    windows: int | None
    rate: float | None
    items: int | None
    out: int | None
    pending: int | None
    restarts: int
    error: str | None

    def cells(self, width: int | None = None) -> list[str]:
        error = self.error or ""
        if width is not None and len(error) > width:
            error = error[:width - 1] + "…"
        return [self.stage, _n(self.pid), self.state, _n(self.windows),
                "-" if self.rate is None else f"{self.rate:.1f}", _n(self.items), _n(self.out),
                _n(self.pending), str(self.restarts), error or "-"]


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def text_table(rows: Sequence[Row]) -> str:
    """The table as plain text (periodic status lines off a terminal, and the summary)."""
    return table(HEADERS, [row.cells() for row in rows], right=RIGHT)


def rich_table(rows: Sequence[Row], title: str):
    """The table for rich Live: numbers are never cut; the last error folds into the
    width that is left (its full text is in the log above the table)."""
    from rich import box
    from rich.table import Table

    keep = [i for i, header in enumerate(HEADERS) if header not in LIVE_LEAVES_OUT]
    cells = [[row.cells()[i] for i in keep] for row in rows]
    grid = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, expand=False, pad_edge=False)
    for i, header in enumerate(HEADERS[j] for j in keep):
        if header == "last error":
            grid.add_column(header, overflow="fold", ratio=1, min_width=10)
        else:
            width = max([len(header)] + [len(c[i]) for c in cells])
            grid.add_column(header, justify="right" if header in RIGHT else "left", no_wrap=True,
                            min_width=width)
    for row, row_cells in zip(rows, cells, strict=True):
        style = {"backoff": "yellow", "failed": "bold red", "finished": "green"}.get(row.state)
        grid.add_row(*row_cells, style=style)
    return grid
