"""Rendering for the command line: plain-text tables (:mod:`streamlog.tables`), JSON
lines, CSV, and the small formatters (timestamps, ages, offset ranges) every command
shares.

Tables are plain text, columns separated by two spaces, and are never cut or wrapped:
piped into a file, ``grep`` or ``cut`` every value is complete whatever its width; on a
terminal the headers are bold (unless ``NO_COLOR`` is set) and a row wider than the
window wraps as the terminal wraps it. JSON is one object per line for lists (``ls``,
``tail``, ``group ls``) and one indented object for ``info``; CSV has a header row, with
nested values as compact JSON in their cell.
"""

from __future__ import annotations

import enum
import sys
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence, TextIO

from streamlog.tables import color


class Format(str, enum.Enum):
    """``--format`` of the commands that print streams, items or groups."""

    table = "table"
    json = "json"
    csv = "csv"


def ts(value: datetime | None) -> str:
    """A timestamp for people: ISO-8601 UTC with milliseconds and a Z."""
    if value is None:
        return "-"
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def age(value: datetime | None, now: float | None = None) -> str:
    if value is None:
        return "-"
    seconds = max(0.0, (now if now is not None else time.time()) - value.timestamp())
    if seconds < 60:
        return f"{seconds:.0f}s ago" if seconds >= 1 else "now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return "now"  # pragma: no cover


def seconds(value: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{value / size:g}{unit}"
    return f"{value:g}s"


def offsets(first: int | None, last: int | None) -> str:
    if first is None or last is None:
        return "-"
    return str(first) if first == last else f"{first}..{last}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


from streamlog.lines import dumps  # noqa: E402,F401  (JSON text, shared with the TCP publisher)


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: None empty, datetimes ISO-8601, dicts and lists compact JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, (dict, list)):
        return dumps(value)
    return value


def csv_writer(out: TextIO | None = None):
    import csv

    return csv.writer(out or sys.stdout, lineterminator="\n")


def write_csv(headers: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO | None = None) -> None:
    writer = csv_writer(out)
    writer.writerow(headers)
    for row in rows:
        writer.writerow([csv_cell(v) for v in row])


def write_json_lines(objects: Iterable[Any], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    for obj in objects:
        out.write(dumps(obj) + "\n")


class RecordWriter:
    """Prints items (``{"offset", "timestamp", "data"}`` records, as ``Stream.read`` gives
    them) in one format, flushing each line so that ``| jq`` sees items at once:

    * ``table``: ``OFFSET  TIMESTAMP  DATA`` (the append time in UTC, the item as compact JSON);
    * ``json``: the record as one JSON object per line;
    * ``csv``: ``offset,timestamp`` and one column per top-level key of the items (nested
      values as JSON; a key that is also ``offset``/``timestamp`` becomes ``data:KEY``).
      The columns are fixed by the header: :meth:`set_keys` with every key to be
      printed, else the keys of the first record. A later record with a key outside the
      header is printed without it, with a note on stderr (once per key).
    """

    def __init__(self, fmt: Format, out: TextIO | None = None):
        self.fmt = fmt
        self.out = out or sys.stdout
        self.keys: list[str] | None = None
        self._warned: set[str] = set()
        self._color = fmt == Format.table and color(self.out)
        self._csv = csv_writer(self.out) if fmt == Format.csv else None

    def set_keys(self, keys: Iterable[str]) -> None:
        if self.fmt == Format.csv and self.keys is None:
            self.keys = list(dict.fromkeys(keys))
            self._csv.writerow(["offset", "timestamp"] +
                               [f"data:{k}" if k in ("offset", "timestamp") else k for k in self.keys])

    def finish(self) -> None:
        """End the output: a CSV of no items still gets its header row."""
        if self.fmt == Format.csv and self.keys is None:
            self.set_keys([])
        self.out.flush()

    def write(self, record: dict) -> None:
        if self.fmt == Format.json:
            self.out.write(dumps(record) + "\n")
        elif self.fmt == Format.csv:
            data = record["data"]
            if self.keys is None:
                self.set_keys(data)
            extra = [k for k in data if k not in self.keys and k not in self._warned]
            if extra:
                self._warned.update(extra)
                sys.stderr.write(f"streamlog: note: item {record['offset']} has keys outside the CSV header "
                                 f"({', '.join(extra)}): left out (use --format json to see every key)\n")
            self._csv.writerow([record["offset"], csv_cell(record["timestamp"])] +
                               [csv_cell(data.get(k)) for k in self.keys])
        else:
            offset, stamp, data = str(record["offset"]), ts(record["timestamp"]), dumps(record["data"])
            if self._color:
                offset, stamp = f"\x1b[33m{offset}\x1b[0m", f"\x1b[2m{stamp}\x1b[0m"
            self.out.write(f"{offset}  {stamp}  {data}\n")
        self.out.flush()
