"""The TCP publisher: every client receives a stream's items as JSON lines
(:class:`TCPPublisher`, ``streamlog publish``), like R's ``streamConnect`` socket
publisher.

Memory is bounded whatever the clients do: at most ``max_behind`` lines queued per
client (a client further behind is disconnected), and 128 KiB of its input buffered
(its input is ignored).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from typing import Callable, Iterable

from ...errors import StreamlogError, UnknownStreamError
from ...lines import dumps
from ..base import STATUS_EVERY
from ..retry import Backoff, dropped, is_transient
from .protocol import AUTH_TIMEOUT
from .server import TCPServer, as_stream, peer_of

log = logging.getLogger("streamlog")


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


class TCPPublisher(TCPServer):
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

    Failures follow the bridges' retry policy (:mod:`streamlog.bridges.retry`): a store
    that does not answer is retried with backoff; a dropped stream ends the publisher as
    it ends ``streamlog tail -f``: the clients are disconnected (never sent items of a
    stream created again under the name) and ``run()`` raises
    :class:`~streamlog.errors.UnknownStreamError` ``stream 'NAME' was dropped while
    publishing it`` (``streamlog publish``: exit code 3).
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
        self.stream = as_stream(stream)
        self.start_at = start
        self.poll = max(0.001, poll_ms / 1000)
        self.max_behind = max_behind
        self.page = min(page, max_behind)  # a page is queued at once: it must not count as too slow
        self._head = 0  # the next offset the shared reader reads
        self._live: set[_Subscriber] = set()
        self._subscribers: set[_Subscriber] = set()

    @property
    def subscribers(self) -> int:
        """How many clients are caught up and receive new items as they land."""
        return len(self._live)

    def _encode(self, records: list[dict]) -> list[tuple[int, bytes]]:
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
        """The shared reader: new items from the head on, to every caught-up client.
        Failures follow the bridges' retry policy: transient ones are retried with
        backoff; a dropped stream (or anything else) ends the publisher."""
        backoff = Backoff(first=0.1, cap=5.0)
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
                backoff.reset()
                delay = self.poll
            except Exception as exc:  # noqa: BLE001 - sorted by the retry policy just below
                if not is_transient(exc):  # dropped: end, as `streamlog tail -f` does (exit 3)
                    self._fail(dropped(self.stream.name, "publishing it")
                               if isinstance(exc, UnknownStreamError) else exc)
                    return
                self.counters.add(errors=1)
                delay = max(self.poll, backoff.failed())
                log.warning("%s: reading %s failed (%s); retrying", self.name, self.stream.name, exc)
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
        host, peer = peer_of(writer)
        if self._stop_fut.done():
            writer.close()
            return
        if not self.access.admits(host):
            log.warning("%s: refused %s (not in allow)", self.name, peer)
            writer.write(b"error forbidden\n")
            writer.close()
            self.counters.add(errors=1)
            return
        if self.access.needs_auth and not await self._authenticate(reader):
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
        except Exception as exc:  # noqa: BLE001 - this client is told; the poller judges the stream
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
        except Exception:  # one client's trouble must not stop the others
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
        return self.access.auth_ok(line.split(b"\n", 1)[0])

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
