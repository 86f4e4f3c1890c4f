"""A TCP proxy that delays every chunk by a fixed time in each direction: what a network
hop between a client and its MongoDB server costs, on one machine.

    proxy = DelayProxy(("127.0.0.1", 27400), delay=0.001)   # 1 ms each way
    proxy.start()            # in its own process (it must not share the client's GIL)
    url = f"mongodb://127.0.0.1:{proxy.port}/"
    proxy.stop()

Order is kept per direction: chunks wait in a queue and go out ``delay`` after they came in.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import time
from collections import deque


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: deque[tuple[float, bytes]] = deque()
    ready = asyncio.Event()
    done = False

    async def send() -> None:
        while True:
            while not queue:
                if done:
                    writer.close()
                    return
                ready.clear()
                await ready.wait()
            due, data = queue.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.ensure_future(send())
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            queue.append((time.monotonic() + delay, data))
            ready.set()
    except ConnectionError:
        pass
    finally:
        done = True
        ready.set()
        try:
            await sender
        except ConnectionError:
            pass


async def _serve(port: int, target: tuple[str, int], delay: float, started) -> None:
    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(*target)
        except OSError:
            client_writer.close()
            return
        for sock in (client_writer.get_extra_info("socket"), server_writer.get_extra_info("socket")):
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_pipe(client_reader, server_writer, delay), _pipe(server_reader, client_writer, delay))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    started.set()
    async with server:
        await server.serve_forever()


def _run(port: int, target: tuple[str, int], delay: float, started) -> None:
    asyncio.run(_serve(port, target, delay, started))


class DelayProxy:
    """A delaying proxy to ``target`` on a free 127.0.0.1 port, in a child process."""

    def __init__(self, target: tuple[str, int], delay: float):
        self.target = target
        self.delay = delay
        self.port = _free_port()
        self._proc: multiprocessing.Process | None = None

    def start(self) -> "DelayProxy":
        started = multiprocessing.Event()
        self._proc = multiprocessing.Process(target=_run, args=(self.port, self.target, self.delay, started),
                                             daemon=True)
        self._proc.start()
        if not started.wait(10):
            self.stop()
            raise RuntimeError("the delay proxy did not start")
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
            self._proc = None
