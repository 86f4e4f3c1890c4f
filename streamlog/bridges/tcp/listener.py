"""The TCP listener: clients send newline-delimited JSON objects (or CSV rows) and the
lines are appended to a stream (:class:`TCPListener`, ``streamlog listen``), like R's
``streamConnect`` socket reader.

Memory is bounded whatever the clients do: per client at most 128 KiB in the
StreamReader buffer (asyncio pauses the socket above that), one line of at most
``max_line`` bytes being assembled and 64 KiB of unread replies; at most ``max_pending``
(2 × ``batch``) parsed lines queued or being appended in total.

Lines are checked and turned into items by :mod:`streamlog.lines`, as ``streamlog append``
checks them.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import csv
import logging
import time
from typing import Any, Callable, Iterable

from ...errors import BadItemError, StreamlogError, UnknownStreamError
from ...items import MAX_ITEM_BYTES
from ...lines import Line, csv_rows, parse_json
from ...names import dead_letter_stream
from ..base import STATUS_EVERY
from ..retry import Backoff, dropped, is_transient
from .protocol import (
    ACK,
    AUTH_TIMEOUT,
    BOM,
    LINE_NUMBER,
    MAX_LINE,
    REPLY_BUFFER,
    LineFramer,
    csv_record_blank,
    csv_record_complete,
    reply_line,
)
from .server import TCPServer, as_stream, peer_of

log = logging.getLogger("streamlog")

_ITEM, _DEAD, _ACK = 0, 1, 2


class _Client:
    """One connection of the listener."""

    __slots__ = ("reader", "writer", "registry", "host", "peer", "number", "authed", "closed", "eof", "inflight",
                 "header", "record", "record_start", "record_bytes")

    def __init__(self, reader, writer, registry: set):
        self.reader, self.writer, self.registry = reader, writer, registry
        registry.add(self)
        self.host, self.peer = peer_of(writer)
        self.number = 0  # lines read so far (the AUTH line and blank lines included)
        self.authed = False
        self.closed = False
        self.eof = False  # the client sent everything: close once its queued lines are done
        self.inflight = 0  # its entries queued or being appended
        self.header: list[bytes] | None = None  # CSV: the header row's lines
        self.record: list[bytes] = []  # CSV: the lines of a row still open (a quoted newline)
        self.record_start = 0
        self.record_bytes = 0

    def reply(self, text: str) -> None:
        if not self.closed and not self.writer.is_closing():
            self.writer.write(reply_line(text))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()
            self.registry.discard(self)

    def done_one(self) -> None:
        self.inflight -= 1
        if self.eof and self.inflight == 0:
            self.close()


class TCPListener(TCPServer):
    """Accept TCP clients that send newline-delimited JSON objects (or CSV, a header row
    first on each connection) and append their lines to ``stream``.

    Lines from all clients go into one queue and are appended in batches (``batch``
    lines, or ``flush_ms`` after the first waiting line), each with one ``extend``. Every
    line is checked first as ``extend`` would check it, so a bad line never sinks a batch:
    it is answered on its socket with ``error line N: <reason>`` and skipped
    (``on_error="skip"``) or written to the dead-letter stream as
    ``{"line", "text", "error", "peer"}`` (``"dead-letter"``). Line numbers count every
    line of the connection from 1 (blank lines and the ``AUTH`` line included).

    Back-pressure: at most ``max_pending`` (default 2 × ``batch``) lines wait or are
    being appended; a client whose next line does not fit stops being read, its socket
    buffers fill and its ``send`` blocks until the log catches up.

    A line ``# ack`` is answered with ``ok line N`` (N: its line number) once every line
    before it is stored (lines that got an ``error`` reply excepted). Every line ends with
    a newline: a client that disconnects (or half-closes) in the middle of a line has that
    partial line dropped, never half-stored (an error; answered if it still reads). A line
    over ``max_line`` bytes is refused without being buffered whole.

    Stopping (``stop()``, SIGINT, SIGTERM): no new connections, every line read so far is
    appended, then the clients are disconnected and ``run()`` returns. A line a client got
    no ``error`` for and that was read before the stop is in the log; a batch the store
    keeps refusing is retried (back-pressure holds the clients meanwhile) and, once
    stopping, answered line by line with ``error line N: not stored (…)``.

    Failures follow the bridges' retry policy (:mod:`streamlog.bridges.retry`): an
    unreachable store is retried as above; a dropped stream (``stream``, or its
    dead-letter stream) ends the listener — every line not stored is answered
    ``error line N: not stored (stream 'NAME' was dropped while …)``, the clients are
    disconnected and ``run()`` raises :class:`~streamlog.errors.UnknownStreamError`
    (``streamlog listen``: exit code 3).
    """

    name = "tcp listener"

    def __init__(self, address: str, stream, *, format: str = "json", batch: int = 1000,
                 flush_ms: float = 200, on_error: str = "skip", token: str | None = None,
                 allow: str | Iterable[str] | None = None, max_line: int = MAX_LINE,
                 status_every: float | None = STATUS_EVERY, max_pending: int | None = None):
        if format not in ("json", "csv"):
            raise StreamlogError(f"format must be 'json' or 'csv', not {format!r}")
        if on_error not in ("skip", "dead-letter"):
            raise StreamlogError(f"on_error must be 'skip' or 'dead-letter', not {on_error!r}")
        for what, value in (("batch", batch), ("max_line", max_line)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise StreamlogError(f"{what} must be a positive integer, not {value!r}")
        if isinstance(flush_ms, bool) or not isinstance(flush_ms, (int, float)) or not flush_ms >= 0:
            raise StreamlogError(f"flush_ms must be a non-negative number, not {flush_ms!r}")
        if max_pending is None:
            max_pending = 2 * batch
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < batch:
            raise StreamlogError(f"max_pending must be an integer of at least batch ({batch}), not {max_pending!r}")
        super().__init__(address, token=token, allow=allow, status_every=status_every)
        self.stream = as_stream(stream)
        self.format = format
        self.batch = batch
        self.flush = flush_ms / 1000
        self.on_error = on_error
        self.max_line = max_line
        self.max_pending = max_pending
        #: the most lines ever waiting or being appended at once (≤ max_pending)
        self.max_pending_seen = 0
        self._nested = self.stream.store.nested_arrays
        if format == "csv":  # as csv_rows sets it, and before csv_record_complete first reads a row
            csv.field_size_limit(2 * MAX_ITEM_BYTES)
        self._queue: collections.deque = collections.deque()
        self._pending = 0
        self._clients: set[_Client] = set()
        self._closing = False
        self._dead_stream = None

    # -- the loop ---------------------------------------------------------------------

    async def _main(self) -> None:
        self._wake = asyncio.Event()  # lines for the batcher (a batch's worth, the first, or the end)
        self._room = asyncio.Event()  # the queue has room again
        self._room.set()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="streamlog-tcp-append")
        try:
            server = await self._start(self._handle)
            batcher = asyncio.create_task(self._batcher())
            try:
                await self._until_stopped()
            finally:
                server.close()  # no new connections
                if not self._stop_fut.done():
                    self._stop_fut.set_result(None)
                while self._tasks:  # each reader ends after the bytes it read (the batcher makes room)
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)
                self._closing = True
                self._wake.set()
                await batcher
                for client in list(self._clients):
                    client.close()
                await server.wait_closed()
                await asyncio.sleep(0)  # let the transports close
        finally:
            self._executor.shutdown(wait=True)
        log.info("%s stopped: %s", self.name, self.counters.snapshot())
        if self._failure is not None:
            raise self._failure

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track()
        client = _Client(reader, writer, self._clients)
        if self._stop_fut.done():
            client.close()
            return
        if not self.access.admits(client.host):
            log.warning("%s: refused %s (not in allow)", self.name, client.peer)
            client.reply("error forbidden")
            client.close()
            self.counters.add(errors=1)
            return
        try:
            await self._pump(client)
        except Exception:  # one client's trouble must not stop the others
            log.exception("%s: client %s failed", self.name, client.peer)
            client.eof = True
        finally:
            if not client.eof or client.inflight == 0:  # else once its last queued line is done
                client.close()

    async def _pump(self, client: _Client) -> None:
        """Read a client's lines until it ends, fails authentication or we stop."""
        framer = LineFramer(self.max_line)
        received = 0
        while True:
            timeout = AUTH_TIMEOUT if self.access.needs_auth and not client.authed else None
            try:
                data = await self._read(client.reader, timeout)
            except TimeoutError:
                client.reply("error unauthorized")
                self.counters.add(errors=1)
                return
            if not data:
                break
            for frame in framer.feed(data):
                if frame.complete:
                    client.number = frame.number
                if frame.too_long:
                    received += 1
                    await self._bad(client, frame.number, frame.data, self._too_long())
                    continue
                count = await self._line(client, frame.data)
                if count is None:
                    return
                received += count
            client.number = framer.number
            if received:
                self.counters.add(received=received)
                received = 0
            transport = client.writer.transport
            if transport.get_write_buffer_size() > REPLY_BUFFER and not await self._drain(client.writer):
                break
        client.eof = True
        if framer.partial or client.record:
            number = client.record_start if client.record else client.number + 1
            what = "the connection ended" if data is not None else "the listener stopped"
            log.warning("%s: %s: %s in the middle of line %d: the partial line is dropped", self.name,
                        client.peer, what, number)
            client.reply(f"error line {number}: {what} in the middle of the line (no newline): dropped")
            self.counters.add(errors=1)

    def _too_long(self) -> str:
        return f"the line is longer than {self.max_line} bytes"

    async def _line(self, client: _Client, line: bytes) -> int | None:
        """Handle one complete line (no newline); returns how many data lines it was
        (0 or 1, for CSV the rows it completed), None to close the connection."""
        if client.number == 1 and line[:3] == BOM:
            line = line[3:]
        if self.access.needs_auth and not client.authed:
            if self.access.auth_ok(line):
                client.authed = True
                return 0
            client.reply("error unauthorized")
            self.counters.add(errors=1)
            return None
        if self.format == "csv":
            return await self._csv_line(client, line)
        raw = line.strip()
        if not raw:
            return 0
        if raw == ACK:
            await self._put(client, _ACK, client.number)
            return 0
        number = client.number
        where = f"line {number}"
        try:
            item = parse_json(raw, where, self._nested)
        except BadItemError as exc:
            await self._bad(client, number, raw, str(exc).removeprefix(where + ": "))
            return 1
        await self._put(client, _ITEM, (number, item))
        return 1

    async def _csv_line(self, client: _Client, line: bytes) -> int | None:
        if not client.record:
            if line.strip() == ACK:
                await self._put(client, _ACK, client.number)
                return 0
            client.record_start = client.number
        client.record.append(line + b"\n")
        client.record_bytes += len(line) + 1
        if (len(client.record) > 1 or b'"' in line) and not csv_record_complete(client.record):
            if client.record_bytes > self.max_line:  # a quote never closed: give up on the row
                start, head = client.record_start, client.record[0][:1024]
                client.record, client.record_bytes = [], 0
                await self._bad(client, start, head, f"a quoted CSV value is not closed within {self.max_line} bytes")
                return 1
            return 0
        record, start = client.record, client.record_start
        client.record, client.record_bytes = [], 0
        if client.header is None:
            if csv_record_blank(record):
                return 0
            try:
                rows = list(csv_rows(iter(record), self._nested))
            except BadItemError as exc:  # a bad header ends the connection, as it ends `append`
                reason = LINE_NUMBER.sub(lambda m: f"line {start + int(m.group(1)) - 1}: ", str(exc), count=1)
                client.reply(f"error {reason}")
                self.counters.add(errors=1)
                return None
            if not rows:
                client.header = record
            for row in rows:  # a header that is not valid CSV: reported as a bad line
                await self._bad(client, start + row.number - 1, row.raw, row.why)
            return len(rows)
        skip = len(client.header) + 1
        count = 0
        for row in csv_rows(iter(client.header + record), self._nested):
            count += 1
            number = start + row.number - skip
            if row.why is None:
                await self._put(client, _ITEM, (number, row.item))
            else:
                await self._bad(client, number, row.raw, row.why)
        return count

    async def _bad(self, client: _Client, number: int, raw: bytes, why: str) -> None:
        self.counters.add(errors=1)
        client.reply(f"error line {number}: {why}")
        if self.on_error == "dead-letter":
            letter = Line(number, raw, why=why).dead_letter()
            letter["peer"] = client.peer
            await self._put(client, _DEAD, letter)

    async def _put(self, client: _Client, kind: int, payload: Any) -> None:
        """Queue an entry for the batcher, waiting while the queue is full (back-pressure)."""
        while self._pending >= self.max_pending:
            self._room.clear()
            await self._room.wait()
        queue = self._queue
        queue.append((kind, client, payload))
        client.inflight += 1
        self._pending += 1
        if self._pending > self.max_pending_seen:
            self.max_pending_seen = self._pending
        if len(queue) == 1:
            self._first = time.monotonic()
            self._wake.set()
        elif len(queue) >= self.batch:
            self._wake.set()

    # -- appending ----------------------------------------------------------------------

    async def _batcher(self) -> None:
        queue = self._queue
        while True:
            self._wake.clear()
            if not queue:
                if self._closing:
                    return
                await self._wake.wait()
                continue
            if len(queue) < self.batch and not self._stop_fut.done():
                delay = self._first + self.flush - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(self._wake.wait(), delay)
                    except asyncio.TimeoutError:
                        pass
                    continue
            take = [queue.popleft() for _ in range(min(self.batch, len(queue)))]
            self._first = time.monotonic()
            try:
                await self._store(take)
            except Exception:  # a bug: logged, and the readers must not wait for room forever
                log.exception("%s: appending a batch failed", self.name)
            for _, client, _ in take:
                client.done_one()
            self._pending -= len(take)
            self._room.set()

    async def _store(self, take: list) -> None:
        """Append a batch's items and dead letters, then answer its ``# ack`` lines. Once
        the bridge has failed (a dropped stream), nothing is appended any more: every
        line is answered ``error line N: not stored (…)``."""
        items = [payload[1] for kind, _, payload in take if kind == _ITEM]
        letters = [payload for kind, _, payload in take if kind == _DEAD]
        failure = await self._append(self._extend, items, self.stream.name) if items else None
        if letters:
            dead_failure = await self._append(self._extend_dead, letters, dead_letter_stream(self.stream.name))
            if dead_failure is not None and self._failure is None:
                log.error("%s: %d dead letters not stored: %s", self.name, len(letters), dead_failure)
        if failure is not None:
            for kind, client, payload in take:
                if kind == _ITEM:
                    client.reply(f"error line {payload[0]}: not stored ({failure})")
            if self._failure is None:
                log.error("%s: %d lines not stored: %s", self.name, len(items), failure)
        for kind, client, payload in take:
            if kind == _ACK:
                client.reply(f"ok line {payload}")

    def _extend(self, items: list[dict]) -> None:
        self.stream.extend(items)
        self.counters.add(stored=len(items))

    def _extend_dead(self, letters: list[dict]) -> None:
        if self._dead_stream is None:
            self._dead_stream = self.stream.client.stream(dead_letter_stream(self.stream.name))
        self._dead_stream.extend(letters)

    async def _append(self, extend: Callable[[list], None], items: list[dict], target: str) -> str | None:
        """``extend(items)`` in the append thread under the bridges' retry policy
        (:mod:`..retry`): transient failures are retried until they pass (only a few
        attempts once stopping); a bad item (checked before: not expected) is given up;
        anything else — above all ``target`` dropped — ends the bridge. Returns why the
        items were not stored, or None when they were."""
        if self._failure is not None:
            return str(self._failure)
        loop = asyncio.get_running_loop()
        backoff = Backoff(first=0.1, cap=5.0)
        attempts = 0
        while True:
            try:
                await loop.run_in_executor(self._executor, extend, items)
                return None
            except Exception as exc:  # noqa: BLE001 - sorted by the retry policy just below
                failure = exc
            self.counters.add(errors=1)
            if isinstance(failure, BadItemError):
                return str(failure)
            if not is_transient(failure):
                self._fail(dropped(target, "the bridge appended to it")
                           if isinstance(failure, UnknownStreamError) else failure)
                return str(self._failure)
            attempts += 1
            if self._stop_fut.done() and attempts >= 3:
                return f"{type(failure).__name__}: {failure}"
            delay = backoff.failed()
            log.warning("%s: appending failed (%s); retrying in %.1f s", self.name, failure, delay)
            await asyncio.sleep(delay)
