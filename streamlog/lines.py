"""Lines in and out: JSON lines and CSV rows as checked items, and items as JSON text.

Shared by ``streamlog append`` and the TCP bridges, so a line is accepted or refused the
same way wherever it comes from: :func:`parse_json` and :func:`csv_rows` check each item
exactly as ``Stream.extend`` will (types, nesting, the 1 MiB limit, the target server's
nested-array rule), so one bad line never sinks a batch of good ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from .errors import BadItemError

DEAD_TEXT_LIMIT = 65_536  # characters of a bad line kept in its dead letter
# orjson reads an integer below -2**63 or above 2**64 - 1 as a float: 19 digits or more
# orjson reads integers of 19 digits and more (past 64 bits) as floats: a run of 19 digits
# sends the text to the exact parser instead. Found with translate + find (C loops, ~30 µs
# per 50 KB; a regex takes 0.5 ms).
_DIGITS = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_LONG_RUN = b"0" * 19
_INT = re.compile(r"-?(0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?\Z")
_BOM = b"\xef\xbb\xbf"


def dumps(value: Any, indent: bool = False) -> str:
    """Compact JSON (datetimes as ISO-8601 strings, as :func:`streamlog.items.to_jsonable`):
    what ``streamlog tail --json`` prints and the TCP publisher sends."""
    import orjson

    from .items import to_jsonable

    option = orjson.OPT_INDENT_2 if indent else 0
    return orjson.dumps(to_jsonable(value), option=option | orjson.OPT_NON_STR_KEYS).decode()


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON")


def json_value(raw: bytes | str) -> Any:
    """One JSON value, with streamlog's number rule: every integer is read exactly (never
    as a float), so that :func:`streamlog.items.normalize` refuses one outside the signed
    64-bit range as ``Stream.append`` would, instead of storing it rounded; a number with a
    fraction or an exponent is a float. Raises ``orjson.JSONDecodeError`` (a ``ValueError``)
    when ``raw`` is not JSON. Shared by every path that reads JSON text into items (lines,
    the TCP and MQTT bridges)."""
    import orjson

    raw = raw.encode() if isinstance(raw, str) else raw
    value = orjson.loads(raw)
    if raw.translate(_DIGITS).find(_LONG_RUN) >= 0:
        # orjson turns integers beyond 64 bits into floats, silently; the standard parser
        # keeps them exact (orjson has already refused what is not JSON, NaN included).
        import json

        value = json.loads(raw, parse_constant=_no_constants)
    return value


def parse_json(raw: bytes | str, where: str, nested_arrays: bool = True) -> dict:
    """Parse (:func:`json_value`) and check one item as the target store will
    (``nested_arrays``: whether it can hold a list inside a list); raises
    :class:`BadItemError` saying ``where`` it is."""
    import orjson

    try:
        value = json_value(raw)
    except orjson.JSONDecodeError as exc:
        # Streamlog's own words only: the parser's message (its wording, even its column,
        # changes between orjson versions) stays the exception's __cause__.
        raise BadItemError(f"{where}: not valid JSON") from exc
    return check_item(value, where, nested_arrays)


def check_item(value: Any, where: str, nested_arrays: bool = True) -> dict:
    from .items import encode_many, normalize

    try:
        item = normalize(value, nested_arrays)
        encode_many([item])  # the size limit, checked here so that a bad line appends nothing
    except BadItemError as exc:
        raise BadItemError(f"{where}: {str(exc).removeprefix('item 0: ')}") from None
    return item


def csv_value(text: str) -> Any:
    """A CSV cell as an item value: empty → None; an integer (no leading zeros, within 64
    bits) → int; a decimal or exponent number → float; anything else the text itself."""
    if text == "":
        return None
    stripped = text.strip()
    if _INT.match(stripped):
        number = int(stripped)
        return number if -2**63 <= number < 2**63 else text
    if _FLOAT.match(stripped):
        value = float(stripped)
        return value if value not in (float("inf"), float("-inf")) else text
    return text


@dataclass
class Line:
    """One input record: its (first) line number and text, and the checked item or why not."""

    number: int
    raw: bytes
    item: Optional[dict] = None
    why: Optional[str] = None

    def error(self) -> BadItemError:
        return BadItemError(f"line {self.number}: {self.why}")

    def dead_letter(self) -> dict:
        text = self.raw.decode("utf-8", "replace")
        letter: dict[str, Any] = {"line": self.number, "text": text[:DEAD_TEXT_LIMIT], "error": self.why}
        if len(text) > DEAD_TEXT_LIMIT:
            letter["truncated"] = True
        return letter


def json_lines(source, nested_arrays: bool) -> Iterator[Line]:
    """JSON lines: one object per line, blank lines skipped."""
    for number, raw in enumerate(source, 1):
        if number == 1 and raw.startswith(_BOM):
            raw = raw[3:]
        raw = raw.strip()
        if not raw:
            continue
        where = f"line {number}"
        try:
            yield Line(number, raw, parse_json(raw, where, nested_arrays))
        except BadItemError as exc:
            yield Line(number, raw, why=str(exc).removeprefix(where + ": "))


def csv_rows(source, nested_arrays: bool) -> Iterator[Line]:
    """CSV with a header row: one item per row, the header's names as keys (values as
    :func:`csv_value`). Blank rows are skipped; a quoted value may span lines (the item's
    line number is its first). A bad header stops the input whatever ``--on-error`` says."""
    import csv

    from .items import MAX_ITEM_BYTES

    csv.field_size_limit(2 * MAX_ITEM_BYTES)
    consumed: list[bytes] = []

    def lines() -> Iterator[str]:
        for number, raw in enumerate(source, 1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[3:]
            consumed.append(raw)
            yield raw.decode("utf-8", "surrogateescape")

    reader = csv.reader(lines(), strict=True)
    header: list[str] | None = None
    while True:
        number = reader.line_num + 1
        consumed.clear()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Line(number, b"".join(consumed).rstrip(b"\r\n"), why=f"not valid CSV ({exc})")
            continue
        raw = b"".join(consumed).rstrip(b"\r\n")
        if not any(cell.strip() for cell in row):
            continue
        if any("\udc80" <= ch <= "\udcff" for cell in row for ch in cell):
            why = "not valid UTF-8"
            if header is None:
                raise BadItemError(f"line {number}: CSV header: {why}")
            yield Line(number, raw, why=why)
            continue
        if header is None:
            names = [cell.strip() for cell in row]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise BadItemError(f"line {number}: CSV header: {', '.join(map(repr, twice))} appear(s) twice")
            check_item({n: None for n in names}, f"line {number}: CSV header")
            header = names
            continue
        if len(row) != len(header):
            yield Line(number, raw, why=f"{len(row)} field{'s' if len(row) != 1 else ''}, the header has {len(header)}")
            continue
        where = f"line {number}"
        try:
            item = check_item({k: csv_value(v) for k, v in zip(header, row, strict=False)}, where, nested_arrays)
        except BadItemError as exc:
            yield Line(number, raw, why=str(exc).removeprefix(where + ": "))
            continue
        yield Line(number, raw, item)
