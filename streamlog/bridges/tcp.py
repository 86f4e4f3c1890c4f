"""TCP line sockets: :class:`TCPListener` (clients send lines, the lines are appended) and
:class:`TCPPublisher` (clients receive a stream's items as JSON lines), like R's
``streamConnect`` socket reader/publisher.

Design (both bridges): one asyncio event loop in the thread that calls ``run()``/``serve()``,
one listening socket, one task per client; the database is only touched from a small
thread pool (``run_in_executor``), so a slow append or read never blocks the sockets of
other clients. Asyncio rather than ``selectors``: the flow control is the same (a task that
does not read leaves its bytes in the OS buffer, and the client's ``send`` blocks), but
"wait until the queue has room, then go on parsing where you were" is a plain ``await``
in a per-client coroutine instead of a hand-written state machine per socket, and
timeouts, the stop signal and replies come for free. Threads per client would also
work, but do not scale to many idle clients and make stopping every reader harder.

Memory is bounded whatever the clients do: per client at most 128 KiB in the
StreamReader buffer (asyncio pauses the socket above that), one line of at most
``max_line`` bytes being assembled and 64 KiB of unread replies; for the listener, at
most ``max_pending`` (2 × ``batch``) parsed lines queued or being appended in total;
for the publisher, at most ``max_behind`` lines queued per client.

Security: by default both bind ``127.0.0.1``. A host that is not a loopback address is
refused (:class:`~streamlog.StreamlogError`, before anything is bound) unless ``token``
(every client's first line must be ``AUTH <token>``, compared in constant time) or
``allow`` (client IP addresses or networks; others get ``error forbidden``) is given.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import csv
import hmac
import ipaddress
import logging
import re
import socket
import threading
import time
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from ..lines import Line, csv_rows, parse_json  # shared with `streamlog append`: lines checked the same way
from ..errors import BadItemError, StreamlogError, UnknownStreamError, UnreachableError
from ..names import dead_letter_stream
from .base import STATUS_EVERY, Bridge

log = logging.getLogger("streamlog")

DEFAULT_HOST = "127.0.0.1"
CHUNK = 65_536  # bytes per socket read
AUTH_TIMEOUT = 10.0  # seconds a client has to send its AUTH line
REPLY_BUFFER = 65_536  # bytes of replies a client has not read before its lines wait
ACK = b"# ack"  # a line asking "is everything I sent so far stored?"
MAX_LINE = 1_048_576 + 1024

_BOM = b"\xef\xbb\xbf"
_WHERE = re.compile(r"line (\d+): ")


# ---------------------------------------------------------------------------
# addresses and access


def parse_address(address: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` (``tcp://:PORT`` and ``HOST:PORT`` too) → ``(host, port)``;
    no host means 127.0.0.1, port 0 any free port."""
    if not isinstance(address, str):
        raise StreamlogError(f"a TCP address is a string like tcp://127.0.0.1:9000, not {type(address).__name__}")
    text = address.strip()
    if "://" not in text:
        text = "tcp://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise StreamlogError(f"bad TCP address {address!r}: {exc}") from None
    if (parts.scheme.lower() != "tcp" or port is None or parts.path not in ("", "/") or parts.query
            or parts.fragment or parts.username is not None or parts.password is not None):
        raise StreamlogError(f"bad TCP address {address!r}: use tcp://HOST:PORT (port 0: any free port)")
    return parts.hostname or DEFAULT_HOST, port


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address (names are not resolved)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _networks(allow: str | Iterable[str] | None) -> list:
    if allow is None:
        return []
    entries = allow.split(",") if isinstance(allow, str) else list(allow)
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise StreamlogError(f"allow: {entry!r} is not an IP address or network (like 10.0.0.0/8)") from None
    if not networks:
        raise StreamlogError("allow is empty: give client addresses or networks, or leave it out")
    return networks


def _token(token: str | None) -> bytes | None:
    if token is None:
        return None
    if not isinstance(token, str) or not token.strip() or token != token.strip() or "\n" in token:
        raise StreamlogError("the token must be a non-empty string without surrounding spaces or newlines")
    return token.encode()


def _peer(writer: asyncio.StreamWriter) -> tuple[str, str]:
    """The client's address and ``host:port`` (``[v6]:port``)."""
    info = writer.get_extra_info("peername")
    if not info:
        return "", "?"
    host, port = info[0], info[1]
    return host, (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


def _as_stream(stream):
    """A :class:`~streamlog.Stream`, or the name of one (got or created at the default URL)."""
    if isinstance(stream, str):
        import streamlog

        return streamlog.stream(stream)
    return stream


class _TCPServer(Bridge):
    """What both bridges share: the address, access rules, the event loop, start/stop."""

    def __init__(self, address: str, *, token: str | None, allow, status_every: float | None):
        super().__init__(status_every=status_every)
        self.host, self._asked_port = parse_address(address)
        self._token = _token(token)
        self.allow = _networks(allow)
        if not is_loopback(self.host) and self._token is None and not self.allow:
            raise StreamlogError(
                f"refusing to listen on {self.host}, which is not a loopback address: give a token "
                "(clients send 'AUTH <token>' first) or allow (client addresses/networks)")
        self.address = address
        #: the bound port, once :attr:`ready` is set
        self.port: int | None = None
        #: set once the socket listens
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kick: asyncio.Event | None = None
        self._stop_fut: asyncio.Future | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._tasks: set[asyncio.Task] = set()

    # -- control -----------------------------------------------------------------

    def serve(self) -> None:
        asyncio.run(self._main())

    def stop(self) -> None:
        super().stop()
        loop, kick = self._loop, self._kick
        if loop is not None and kick is not None:
            try:
                loop.call_soon_threadsafe(kick.set)
            except RuntimeError:  # the loop has finished already
                pass

    def start(self, timeout: float = 10.0):
        """Run in a background thread and return once listening (:attr:`port` is set);
        raises what made it fail to start. Stop it with :meth:`close`."""
        def target():
            try:
                self.run()
            except BaseException as exc:  # noqa: BLE001 - reported by start()/close()
                self._failure = exc
                log.error("%s failed: %s", self.name, exc)

        self._thread = threading.Thread(target=target, name=f"streamlog-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.01):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                self._thread.join(timeout)
                raise self._failure or StreamlogError(f"the {self.name} did not start within {timeout} s")
        return self

    def close(self, timeout: float = 10.0) -> dict:
        """Stop (what :meth:`start` started) and wait for it; returns the final counters."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise StreamlogError(f"the {self.name} did not stop within {timeout} s")
        if self._failure is not None:
            raise self._failure
        return self.counters.snapshot()

    # -- loop plumbing ------------------------------------------------------------

    def _bind(self) -> socket.socket:
        host = DEFAULT_HOST if self.host == "localhost" else self.host
        try:
            family, kind, proto, _, where = socket.getaddrinfo(
                host, self._asked_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise StreamlogError(f"cannot listen on {self.host}:{self._asked_port}: {exc}") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(where)
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise StreamlogError(f"cannot listen on {self.host}:{self._asked_port}: "
                                 f"{exc.strerror or exc}") from None
        return sock

    async def _start(self, handler) -> asyncio.AbstractServer:
        sock = self._bind()
        self._loop = asyncio.get_running_loop()
        self._kick = asyncio.Event()
        self._stop_fut = self._loop.create_future()
        server = await asyncio.start_server(handler, sock=sock)
        self.port = sock.getsockname()[1]
        self.ready.set()
        log.info("%s listening on %s:%d", self.name, self.host, self.port)
        return server

    async def _until_stopped(self) -> None:
        while not self.stop_event.is_set():  # also set by the signal handlers of run()
            try:
                await asyncio.wait_for(self._kick.wait(), 0.1)
            except asyncio.TimeoutError:
                pass
        if not self._stop_fut.done():
            self._stop_fut.set_result(None)

    async def _read(self, reader: asyncio.StreamReader, timeout: float | None = None) -> bytes | None:
        """The next bytes from a client: b"" at its end, None once stopping; raises
        TimeoutError after ``timeout`` seconds."""
        if self._stop_fut.done():
            return None
        task = asyncio.ensure_future(reader.read(CHUNK))
        done, _ = await asyncio.wait((task, self._stop_fut), timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            try:
                return task.result()
            except OSError:  # reset by the peer
                return b""
        task.cancel()
        if self._stop_fut.done():
            return None
        raise TimeoutError

    async def _drain(self, writer: asyncio.StreamWriter) -> bool:
        """Wait until the client has taken our replies (or we stop); False if it is gone."""
        task = asyncio.ensure_future(writer.drain())
        await asyncio.wait((task, self._stop_fut), return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            return True
        try:
            task.result()
        except OSError:
            return False
        return True

    def _allowed(self, host: str) -> bool:
        if not self.allow:
            return True
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.allow)

    def _auth_ok(self, line: bytes) -> bool:
        line = line.strip()
        given = line[5:].strip() if line[:5] == b"AUTH " else b""
        return hmac.compare_digest(given, self._token)  # constant time, whatever was given

    def _track(self) -> asyncio.Task:
        task = asyncio.current_task()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


# ---------------------------------------------------------------------------
# listener: lines in

_ITEM, _DEAD, _ACK = 0, 1, 2


class _Client:
    """One connection of the listener."""

    __slots__ = ("reader", "writer", "registry", "host", "peer", "number", "authed", "closed", "eof", "inflight",
                 "header", "record", "record_start", "record_bytes")

    def __init__(self, reader, writer, registry: set):
        self.reader, self.writer, self.registry = reader, writer, registry
        registry.add(self)
        self.host, self.peer = _peer(writer)
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
            self.writer.write(text.replace("\n", " ").encode("utf-8", "replace") + b"\n")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()
            self.registry.discard(self)

    def done_one(self) -> None:
        self.inflight -= 1
        if self.eof and self.inflight == 0:
            self.close()


def _csv_lines(record: list[bytes]) -> list[str]:
    return [line.decode("utf-8", "surrogateescape") for line in record]


def _csv_complete(record: list[bytes]) -> bool:
    """Whether ``record`` (lines) ends outside a quoted value, as the csv module reads it."""
    try:
        for _ in csv.reader(_csv_lines(record), strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" not in str(exc)
    return True


def _csv_blank(record: list[bytes]) -> bool:
    try:
        return not any(cell.strip() for row in csv.reader(_csv_lines(record), strict=True) for cell in row)
    except csv.Error:
        return False


class TCPListener(_TCPServer):
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
        self.stream = _as_stream(stream)
        self.format = format
        self.batch = batch
        self.flush = flush_ms / 1000
        self.on_error = on_error
        self.max_line = max_line
        self.max_pending = max_pending
        #: the most lines ever waiting or being appended at once (≤ max_pending)
        self.max_pending_seen = 0
        self._nested = stream.store.nested_arrays
        if format == "csv":  # as csv_rows sets it, and before _csv_complete first reads a row
            from ..items import MAX_ITEM_BYTES

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

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track()
        client = _Client(reader, writer, self._clients)
        if self._stop_fut.done():
            client.close()
            return
        if not self._allowed(client.host):
            log.warning("%s: refused %s (not in allow)", self.name, client.peer)
            client.reply("error forbidden")
            client.close()
            self.counters.add(errors=1)
            return
        try:
            await self._pump(client)
        except Exception:  # noqa: BLE001 - one client's trouble must not stop the others
            log.exception("%s: client %s failed", self.name, client.peer)
            client.eof = True
        finally:
            if not client.eof or client.inflight == 0:  # else once its last queued line is done
                client.close()

    async def _pump(self, client: _Client) -> None:
        """Read a client's lines until it ends, fails authentication or we stop."""
        rest = b""
        skipping = False  # the rest of an over-long line is being discarded
        received = 0
        while True:
            timeout = AUTH_TIMEOUT if self._token is not None and not client.authed else None
            try:
                data = await self._read(client.reader, timeout)
            except TimeoutError:
                client.reply("error unauthorized")
                self.counters.add(errors=1)
                return
            if not data:
                break
            lines = (rest + data if rest else data).split(b"\n")
            rest = lines.pop()
            for line in lines:
                client.number += 1
                if skipping:
                    skipping = False
                elif len(line) > self.max_line:
                    received += 1
                    await self._bad(client, client.number, line[:1024], self._too_long())
                else:
                    count = await self._line(client, line)
                    if count is None:
                        return
                    received += count
            if len(rest) > self.max_line:
                if not skipping:
                    received += 1
                    await self._bad(client, client.number + 1, rest[:1024], self._too_long())
                skipping, rest = True, b""
            if received:
                self.counters.add(received=received)
                received = 0
            transport = client.writer.transport
            if transport.get_write_buffer_size() > REPLY_BUFFER and not await self._drain(client.writer):
                break
        client.eof = True
        if (rest.strip() and not skipping) or client.record:
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
        if client.number == 1 and line[:3] == _BOM:
            line = line[3:]
        if self._token is not None and not client.authed:
            if self._auth_ok(line):
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
        if (len(client.record) > 1 or b'"' in line) and not _csv_complete(client.record):
            if client.record_bytes > self.max_line:  # a quote never closed: give up on the row
                start, head = client.record_start, client.record[0][:1024]
                client.record, client.record_bytes = [], 0
                await self._bad(client, start, head, f"a quoted CSV value is not closed within {self.max_line} bytes")
                return 1
            return 0
        record, start = client.record, client.record_start
        client.record, client.record_bytes = [], 0
        if client.header is None:
            if _csv_blank(record):
                return 0
            try:
                rows = list(csv_rows(iter(record), self._nested))
            except BadItemError as exc:  # a bad header ends the connection, as it ends `append`
                reason = _WHERE.sub(lambda m: f"line {start + int(m.group(1)) - 1}: ", str(exc), count=1)
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
            except Exception:  # noqa: BLE001 - never leave the readers waiting for room
                log.exception("%s: appending a batch failed", self.name)
            for _, client, _ in take:
                client.done_one()
            self._pending -= len(take)
            self._room.set()

    async def _store(self, take: list) -> None:
        items = [payload[1] for kind, _, payload in take if kind == _ITEM]
        letters = [payload for kind, _, payload in take if kind == _DEAD]
        failure = await self._append(self._extend, items) if items else None
        if letters:
            dead_failure = await self._append(self._extend_dead, letters)
            if dead_failure is not None:
                log.error("%s: %d dead letters not stored: %s", self.name, len(letters), dead_failure)
        if failure is not None:
            for kind, client, payload in take:
                if kind == _ITEM:
                    client.reply(f"error line {payload[0]}: not stored ({failure})")
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

    async def _append(self, extend: Callable[[list], None], items: list[dict]) -> str | None:
        """``extend(items)`` in the append thread, retried while the store fails (for a
        few attempts only once stopping). Returns why it gave up, or None."""
        loop = asyncio.get_running_loop()
        attempts, delay = 0, 0.1
        while True:
            try:
                await loop.run_in_executor(self._executor, extend, items)
                return None
            except StreamlogError as exc:
                if not isinstance(exc, UnreachableError):  # a bad item (checked before: not expected),
                    self.counters.add(errors=1)  # a dropped stream...: retrying cannot help
                    return str(exc)
                failure = exc
            except Exception as exc:  # noqa: BLE001 - the store failed: retry
                failure = exc
            attempts += 1
            self.counters.add(errors=1)
            if self._stop_fut.done() and attempts >= 3:
                return f"{type(failure).__name__}: {failure}"
            log.warning("%s: appending failed (%s); retrying in %.1f s", self.name, failure, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


# ---------------------------------------------------------------------------
# publisher: items out


class _Subscriber:
    """One connection of the publisher: a bounded queue of lines and the task writing it."""

    __slots__ = ("writer", "peer", "cursor", "queue", "wake", "idle", "closed")

    def __init__(self, writer, peer: str, cursor: int):
        self.writer = writer
        self.peer = peer
        self.cursor = cursor  # the next offset this client is to get
        self.queue: collections.deque = collections.deque()
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()  # everything queued was written and drained
        self.idle.set()
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.clear()
            self.wake.set()
            self.idle.set()
            self.writer.close()


class TCPPublisher(_TCPServer):
    """Serve ``stream`` on a TCP port: every client receives the items as JSON lines,
    ``{"offset", "timestamp", "data"}`` (as ``streamlog tail --json`` prints them), from
    ``start`` on — ``"latest"`` (new items only: after the newest offset when the client
    connects), ``"earliest"`` (the whole history) or an offset — and then new items as
    they land.

    One shared reader task polls ``stream.read(next, limit=page)`` every ``poll_ms`` (at
    once again after a full page) and fans each page out to every client that is
    caught up; a client that starts further back first reads its own history, page by
    page as fast as it takes them, then joins. A slow client does not stall the others:
    each has its own queue, and a client more than ``max_behind`` items behind is sent
    ``error too slow`` and disconnected. Clients' own input is ignored (after the
    ``AUTH <token>`` line when a token is set).
    """

    name = "tcp publisher"

    def __init__(self, stream, address: str, *, start: str | int = "latest", token: str | None = None,
                 allow: str | Iterable[str] | None = None, status_every: float | None = STATUS_EVERY,
                 poll_ms: float = 50, max_behind: int = 10_000, page: int = 1000):
        if not (start in ("latest", "earliest") or
                (isinstance(start, int) and not isinstance(start, bool) and 0 <= start < 2**63)):
            raise StreamlogError(f"start must be 'latest', 'earliest' or an offset, not {start!r}")
        for what, value in (("max_behind", max_behind), ("page", page)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise StreamlogError(f"{what} must be a positive integer, not {value!r}")
        super().__init__(address, token=token, allow=allow, status_every=status_every)
        self.stream = _as_stream(stream)
        self.start_at = start
        self.poll = max(0.001, poll_ms / 1000)
        self.max_behind = max_behind
        self.page = min(page, max_behind)  # a page is queued at once: it must not count as too slow
        self._head = 0  # the next offset the shared reader reads
        self._live: set[_Subscriber] = set()
        self._subscribers: set[_Subscriber] = set()
        from ..lines import dumps

        self._dumps = dumps

    @property
    def subscribers(self) -> int:
        """How many clients are caught up and receive new items as they land."""
        return len(self._live)

    def _encode(self, records: list[dict]) -> list[tuple[int, bytes]]:
        dumps = self._dumps
        return [(r["offset"], (dumps(r) + "\n").encode()) for r in records]

    async def _call(self, fn: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _next_offset(self) -> int:
        last = self.stream.store.last_offset(self.stream.name)
        return 0 if last is None else last + 1

    async def _main(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="streamlog-tcp-read")
        try:
            self._head = await asyncio.get_running_loop().run_in_executor(self._executor, self._next_offset)
            server = await self._start(self._handle)
            poller = asyncio.create_task(self._poller())
            try:
                await self._until_stopped()
            finally:
                server.close()
                if not self._stop_fut.done():
                    self._stop_fut.set_result(None)
                await poller
                for sub in list(self._subscribers):
                    sub.close()
                    sub.writer.transport.abort()
                while self._tasks:
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)
                await server.wait_closed()
        finally:
            self._executor.shutdown(wait=True)
        log.info("%s stopped: %s", self.name, self.counters.snapshot())
        if self._failure is not None:
            raise self._failure

    async def _poller(self) -> None:
        """The shared reader: new items from the head on, to every caught-up client."""
        delay = self.poll
        while not self._stop_fut.done():
            full = False
            try:
                if not self._live:  # nobody to send to: just follow the head
                    head = await self._call(self._next_offset)
                    if head > self._head and not await self._call(self.stream.exists):
                        raise UnknownStreamError(self.stream.name)
                    if not self._live:
                        self._head = max(self._head, head)
                else:
                    # this stream's items only, never a stream created again under the name
                    records = await self._call(self.stream.read_following, self._head, self.page)
                    if records:
                        lines = self._encode(records)
                        for sub in list(self._live):
                            self._push(sub, lines)
                        self._head = records[-1]["offset"] + 1
                        full = len(records) >= self.page
                delay = self.poll
            except UnknownStreamError:  # dropped: end, as `streamlog tail -f` does (exit 3)
                self._failure = UnknownStreamError(f"stream {self.stream.name!r} was dropped while publishing it")
                log.error("%s: %s", self.name, self._failure)
                self.stop()
                return
            except Exception as exc:  # noqa: BLE001 - the store failed: retry
                self.counters.add(errors=1)
                log.warning("%s: reading %s failed (%s); retrying", self.name, self.stream.name, exc)
                delay = min(max(delay * 2, 0.1), 5.0)
            if not full:
                await asyncio.wait((self._stop_fut,), timeout=delay)

    def _push(self, sub: _Subscriber, lines: list[tuple[int, bytes]]) -> None:
        if sub.closed:
            self._live.discard(sub)
            return
        cursor = sub.cursor
        for offset, line in lines:
            if offset >= cursor:
                sub.queue.append(line)
                cursor = offset + 1
        sub.cursor = cursor
        if len(sub.queue) > self.max_behind:
            log.warning("%s: %s is more than %d items behind: disconnected", self.name, sub.peer, self.max_behind)
            self.counters.add(errors=1)
            sub.queue.clear()
            sub.writer.write(b"error too slow\n")
            sub.close()
            self._live.discard(sub)
        elif sub.queue:
            sub.idle.clear()
            sub.wake.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track()
        host, peer = _peer(writer)
        if self._stop_fut.done():
            writer.close()
            return
        if not self._allowed(host):
            log.warning("%s: refused %s (not in allow)", self.name, peer)
            writer.write(b"error forbidden\n")
            writer.close()
            self.counters.add(errors=1)
            return
        if self._token is not None and not await self._authenticate(reader):
            if not self._stop_fut.done():
                writer.write(b"error unauthorized\n")
                self.counters.add(errors=1)
            writer.close()
            return
        try:
            if self.start_at == "earliest":
                cursor = 0
            elif self.start_at == "latest":
                cursor = await self._call(self._next_offset)
            else:
                cursor = self.start_at
        except Exception as exc:  # noqa: BLE001
            log.warning("%s: %s: %s", self.name, peer, exc)
            writer.write(b"error the stream cannot be read\n")
            writer.close()
            self.counters.add(errors=1)
            return
        sub = _Subscriber(writer, peer, cursor)
        self._subscribers.add(sub)
        sender = asyncio.create_task(self._sender(sub))
        try:
            await self._catch_up(sub)
            if not sub.closed and not self._stop_fut.done():
                self._live.add(sub)  # no await since the catch-up loop saw cursor >= head
            # the client's input is ignored; its end (or a failed write) ends the connection
            while not sub.closed:
                data = await self._read(reader)
                if data is None:
                    break
                if not data:
                    await asyncio.wait((sender, self._stop_fut), return_when=asyncio.FIRST_COMPLETED)
                    break
        except Exception:  # noqa: BLE001
            log.exception("%s: client %s failed", self.name, peer)
        finally:
            self._live.discard(sub)
            sub.close()
            sender.cancel()
            self._subscribers.discard(sub)

    async def _authenticate(self, reader: asyncio.StreamReader) -> bool:
        line = b""
        deadline = time.monotonic() + AUTH_TIMEOUT
        while b"\n" not in line and len(line) < 4096:
            try:
                data = await self._read(reader, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return False
            if not data:
                return False
            line += data
        return self._auth_ok(line.split(b"\n", 1)[0])

    async def _catch_up(self, sub: _Subscriber) -> None:
        """Send the history from the client's start up to the shared head, a page at a time."""
        while sub.cursor < self._head and not sub.closed and not self._stop_fut.done():
            end = self._head - 1
            records = await self._call(self.stream.read, sub.cursor, self.page, end)
            if not records:
                sub.cursor = max(sub.cursor, end + 1)
                continue
            self._push(sub, self._encode(records))
            waiter = asyncio.ensure_future(sub.idle.wait())
            await asyncio.wait((waiter, self._stop_fut), return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    async def _sender(self, sub: _Subscriber) -> None:
        while not sub.closed:
            if not sub.queue:
                sub.idle.set()
                sub.wake.clear()
                await sub.wake.wait()
                continue
            lines = list(sub.queue)
            sub.queue.clear()
            sub.writer.write(b"".join(lines))
            self.counters.add(sent=len(lines))
            if not await self._drain(sub.writer) or sub.writer.is_closing():
                sub.close()
