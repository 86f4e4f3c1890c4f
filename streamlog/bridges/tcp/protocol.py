"""The TCP bridges' wire protocol: what a client sends and is sent, byte by byte.

* Lines end with ``\\n`` (:class:`LineFramer`); a line over :data:`MAX_LINE` bytes is
  refused without being buffered whole. A UTF-8 byte-order mark before the first line is ignored.
* With a token, a client's first line is ``AUTH <token>`` (:func:`auth_line_ok`,
  compared in constant time); it has :data:`AUTH_TIMEOUT` seconds to send it.
* ``# ack`` (:data:`ACK`) asks the listener "is everything I sent so far stored?" and
  is answered ``ok line N``; a bad line is answered ``error line N: <reason>``.
* CSV input: a header row first on each connection; a quoted value may span lines, so a
  record is complete only when its quotes close (:func:`csv_record_complete`).

Pure functions and constants: no sockets, no event loop, no store.
"""

from __future__ import annotations

import csv
import hmac
import re
from typing import NamedTuple

from ...errors import StreamlogError

CHUNK = 65_536  # bytes per socket read
AUTH_TIMEOUT = 10.0  # seconds a client has to send its AUTH line
REPLY_BUFFER = 65_536  # bytes of replies a client has not read before its lines wait
ACK = b"# ack"  # a line asking "is everything I sent so far stored?"
MAX_LINE = 1_048_576 + 1024  # bytes of one line: an item's limit (1 MiB) and some room
BOM = b"\xef\xbb\xbf"
#: "line N: " in a message about a CSV record (renumbered to the connection's lines)
LINE_NUMBER = re.compile(r"line (\d+): ")


class Frame(NamedTuple):
    """One event of :class:`LineFramer`: line ``number`` (from 1) and its bytes without
    the newline — or, when ``too_long``, only its first KiB. ``complete``: the newline
    was seen (False only for an over-long line still arriving)."""

    number: int
    data: bytes
    too_long: bool
    complete: bool


class LineFramer:
    """Newline framing of one connection's bytes: :meth:`feed` turns each chunk read
    into the :class:`Frame` events it completes, in order. A line over ``max_line`` bytes
    is reported once, as soon as it is known to be too long, and the rest of it is
    discarded as it arrives: it is never buffered whole. At most ``max_line`` bytes of an
    unfinished line are held."""

    def __init__(self, max_line: int):
        self.max_line = max_line
        #: lines ended so far (over-long ones included)
        self.number = 0
        self._rest = b""
        self._skipping = False  # the rest of an over-long line is being discarded

    def feed(self, data: bytes) -> list[Frame]:
        frames = []
        lines = (self._rest + data if self._rest else data).split(b"\n")
        self._rest = lines.pop()
        for line in lines:
            self.number += 1
            if self._skipping:
                self._skipping = False
            elif len(line) > self.max_line:
                frames.append(Frame(self.number, line[:1024], True, True))
            else:
                frames.append(Frame(self.number, line, False, True))
        if len(self._rest) > self.max_line:
            if not self._skipping:
                frames.append(Frame(self.number + 1, self._rest[:1024], True, False))
            self._skipping, self._rest = True, b""
        return frames

    @property
    def partial(self) -> bool:
        """Whether the bytes after the last newline hold part of a line (not blanks, not
        the discarded rest of an over-long line)."""
        return bool(self._rest.strip()) and not self._skipping


def token_bytes(token: str | None) -> bytes | None:
    """A token as the bytes an ``AUTH`` line must carry (None: no token). Raises
    :class:`StreamlogError` for an empty token, surrounding spaces or a newline."""
    if token is None:
        return None
    if not isinstance(token, str) or not token.strip() or token != token.strip() or "\n" in token:
        raise StreamlogError("the token must be a non-empty string without surrounding spaces or newlines")
    return token.encode()


def auth_line_ok(line: bytes, token: bytes) -> bool:
    """Whether ``line`` (without its newline) is ``AUTH <token>``; constant time
    whatever was given."""
    line = line.strip()
    given = line[5:].strip() if line[:5] == b"AUTH " else b""
    return hmac.compare_digest(given, token)


def reply_line(text: str) -> bytes:
    """One reply line: newlines inside ``text`` become spaces, so a reply is always one line."""
    return text.replace("\n", " ").encode("utf-8", "replace") + b"\n"


def _csv_text(record: list[bytes]) -> list[str]:
    return [line.decode("utf-8", "surrogateescape") for line in record]


def csv_record_complete(record: list[bytes]) -> bool:
    """Whether ``record`` (lines, each with its newline) ends outside a quoted value, as
    the csv module reads it."""
    try:
        for _ in csv.reader(_csv_text(record), strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" not in str(exc)
    return True


def csv_record_blank(record: list[bytes]) -> bool:
    """Whether ``record`` holds no value at all (blank lines before a header are skipped)."""
    try:
        return not any(cell.strip() for row in csv.reader(_csv_text(record), strict=True) for cell in row)
    except csv.Error:
        return False
