"""What both TCP bridges share: :class:`TCPServer`, an asyncio server in the thread that
calls ``run()``, with the address, the access policy, start/stop and the waits that a
stop interrupts.

Design: one asyncio event loop in the thread that calls ``run()``/``serve()``, one
listening socket (:func:`streamlog.listening.listening_socket`), one task per client;
the database is only touched from a small thread pool (``run_in_executor``), so a slow
append or read never blocks the sockets of other clients. Asyncio rather than
``selectors``: the flow control is the same (a task that does not read leaves its bytes
in the OS buffer, and the client's ``send`` blocks), but "wait until the queue has room,
then go on parsing where you were" is a plain ``await`` in a per-client coroutine instead
of a hand-written state machine per socket, and timeouts, the stop signal and replies
come for free. Threads per client would also work, but do not scale to many idle
clients and make stopping every reader harder.

A subclass implements ``_main()`` (a coroutine: ``await self._start(handler)``, then
``await self._until_stopped()``, then its own clean-up) and raises the failure that
ended it, if any (:attr:`_failure`), so ``run()`` raises it too.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Iterable

from ...errors import StreamlogError
from ...listening import host_port, listening_socket, parse_tcp_address
from ..base import Bridge
from .access import AccessPolicy
from .protocol import CHUNK

log = logging.getLogger("streamlog")


def peer_of(writer: asyncio.StreamWriter) -> tuple[str, str]:
    """The client's IP address and ``host:port`` (``[v6]:port``) for messages."""
    info = writer.get_extra_info("peername")
    if not info:
        return "", "?"
    return info[0], host_port(info[0], info[1])


def as_stream(stream):
    """A :class:`~streamlog.Stream`, or the name of one (got or created at the default URL)."""
    if isinstance(stream, str):
        import streamlog

        return streamlog.stream(stream)
    return stream


class TCPServer(Bridge):
    """Base of :class:`~.listener.TCPListener` and :class:`~.publisher.TCPPublisher`:
    ``address`` is checked and the access policy applied when constructed (a refused
    address never binds); the socket is bound when the bridge runs."""

    def __init__(self, address: str, *, token: str | None, allow: str | Iterable[str] | None,
                 status_every: float | None):
        super().__init__(status_every=status_every)
        self.host, self._asked_port = parse_tcp_address(address)
        self.access = AccessPolicy(self.host, token=token, allow=allow)
        self.address = address
        #: the bound port, once :attr:`ready` is set
        self.port: int | None = None
        #: set once the socket listens
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kick: asyncio.Event | None = None
        self._stop_fut: asyncio.Future | None = None
        self._thread: threading.Thread | None = None
        #: what ended the bridge (a dropped stream); raised by run() and close()
        self._failure: BaseException | None = None
        self._tasks: set[asyncio.Task] = set()

    # -- control -----------------------------------------------------------------

    def serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

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
            except BaseException as exc:  # noqa: BLE001 - kept for start()/close() to raise
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
        """Stop (what :meth:`start` started) and wait for it; returns the final counters,
        or raises what ended the bridge."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise StreamlogError(f"the {self.name} did not stop within {timeout} s")
        if self._failure is not None:
            raise self._failure
        return self.counters.snapshot()

    def _fail(self, failure: BaseException) -> None:
        """End the bridge with ``failure`` (raised by ``run()`` once everything is closed)."""
        if self._failure is None:
            self._failure = failure
        self.stop()

    # -- loop plumbing ------------------------------------------------------------

    async def _start(self, handler) -> asyncio.AbstractServer:
        sock = listening_socket(self.host, self._asked_port)
        try:
            sock.setblocking(False)
            self._loop = asyncio.get_running_loop()
            self._kick = asyncio.Event()
            self._stop_fut = self._loop.create_future()
            server = await asyncio.start_server(handler, sock=sock)
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self.ready.set()
        log.info("%s listening on %s", self.name, host_port(self.host, self.port))
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

    def _track(self) -> asyncio.Task:
        """Count the current task (a client's) among those a stop waits for."""
        task = asyncio.current_task()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
