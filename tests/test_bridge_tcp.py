"""TCP line sockets: TCPListener (lines in) and TCPPublisher (items out).

Clients are plain sockets in threads; every wait is a poll with a deadline; every
server is stopped by the test that started it."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import threading
import time

import pytest
from helpers import reaped, run_python, wait_until

import streamlog
from streamlog.bridges.tcp import TCPListener, TCPPublisher
from streamlog.errors import UnknownStreamError

pytestmark = pytest.mark.timeout(15)


class Client:
    """A plain TCP client: send lines, read reply lines with a deadline."""

    def __init__(self, port: int, *, sndbuf: int | None = None, rcvbuf: int | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if sndbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""

    @property
    def peer(self) -> str:
        host, port = self.sock.getsockname()
        return f"{host}:{port}"

    def send(self, *lines) -> None:
        self.sock.sendall(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))

    def line(self, timeout: float = 10.0) -> str | None:
        """The next line the server sent, None at its end of the connection."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line from the server within {timeout} s (got {self.buf[:200]!r})")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                if self.buf:
                    raise AssertionError(f"connection ended mid-line: {self.buf[:200]!r}")
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def lines(self, n: int, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        return [self.line(max(0.01, deadline - time.monotonic())) for _ in range(n)]

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def serving(bridge):
    bridge.start()
    try:
        yield bridge
    finally:
        bridge.close()


@contextlib.contextmanager
def clients(port: int, n: int = 1, **options):
    made = [Client(port, **options) for _ in range(n)]
    try:
        yield made
    finally:
        for c in made:
            c.close()


def data(stream) -> list[dict]:
    return [r["data"] for r in stream.read(0, limit=None)]


@pytest.fixture
def stream(sqlite_url):
    return streamlog.stream("lines", url=sqlite_url)


# ---------------------------------------------------------------------------
# listener


def test_clients_at_once_all_land_in_client_order(url):
    s = streamlog.stream("lines", url=url)
    per_client, n_clients = 120, 4
    with serving(TCPListener("tcp://127.0.0.1:0", s, batch=50, flush_ms=20, status_every=None)) as listener, \
            clients(listener.port, n_clients) as conns:
        replies: dict[int, str | None] = {}

        def produce(c: int) -> None:
            for i in range(0, per_client, 10):  # in several writes, interleaved with the others
                conns[c].send(*(json.dumps({"c": c, "i": j, "pad": "x" * 40}) for j in range(i, i + 10)))
            conns[c].send("# ack")
            replies[c] = conns[c].line()

        threads = [threading.Thread(target=produce, args=(c,)) for c in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert replies == {c: f"ok line {per_client + 1}" for c in range(n_clients)}
        assert listener.counters.snapshot()["stored"] == per_client * n_clients
    items = data(s)
    assert len(items) == per_client * n_clients
    for c in range(n_clients):  # per-client order preserved
        assert [x["i"] for x in items if x["c"] == c] == list(range(per_client))


def test_a_bad_line_is_answered_and_skipped(url):
    s = streamlog.stream("lines", url=url)
    with serving(TCPListener("tcp://127.0.0.1:0", s, flush_ms=10, status_every=None)) as listener, \
            clients(listener.port) as (c,):
        c.send('{"a": 1}', "not json", "[1, 2]", '{"n": 123456789012345678901234567890}', "",
               '{"a": 2}', "# ack")
        assert c.lines(4) == [
            "error line 2: not valid JSON",
            "error line 3: an item must be a dict, not list",
            "error line 4: item value at n is an integer outside the 64-bit range",
            "ok line 7",
        ]
        counters = listener.counters.snapshot()
    assert data(s) == [{"a": 1}, {"a": 2}]
    assert (counters["received"], counters["stored"], counters["errors"]) == (5, 2, 3)
    assert s.client.store.get_stream(streamlog.names.dead_letter_stream("lines")) is None


def test_a_bad_line_goes_to_the_dead_letter_stream(stream):
    listener = TCPListener("tcp://127.0.0.1:0", stream, flush_ms=10, on_error="dead-letter", status_every=None)
    with serving(listener), clients(listener.port) as (c,):
        c.send('{"a": 1}', '{"a": ', '{"a": 2}', "# ack")
        assert c.lines(2) == ["error line 2: not valid JSON", "ok line 4"]
        peer = c.peer
    assert data(stream) == [{"a": 1}, {"a": 2}]
    dead = streamlog.stream(streamlog.names.dead_letter_stream("lines"), url=stream.store.url)
    assert data(dead) == [{"line": 2, "text": '{"a":', "error": "not valid JSON",
                           "peer": peer}]


def test_an_over_long_line_is_refused_without_buffering_it(stream):
    listener = TCPListener("tcp://127.0.0.1:0", stream, flush_ms=10, max_line=100, status_every=None)
    with serving(listener), clients(listener.port) as (c,):
        c.send('{"big": "' + "x" * 5000 + '"}', '{"a": 1}', "# ack")
        assert c.lines(2) == ["error line 1: the line is longer than 100 bytes", "ok line 3"]
    assert data(stream) == [{"a": 1}]


def test_a_client_that_disconnects_mid_line_loses_only_that_line(stream):
    with serving(TCPListener("tcp://127.0.0.1:0", stream, flush_ms=10, status_every=None)) as listener:
        c = Client(listener.port)
        c.sock.sendall(b'{"a": 1}\n{"a": 2}\n{"a": 3, "b": "half')
        c.close()
        wait_until(lambda: listener.counters.snapshot()["errors"] == 1, 10, message="the partial line counted")
        wait_until(lambda: listener.counters.snapshot()["stored"] == 2, 10, message="the two lines stored")
        with clients(listener.port) as (half,):  # one that only stops sending still hears why
            half.sock.sendall(b'{"a": 4}\n{"a": 5}')
            half.sock.shutdown(socket.SHUT_WR)
            assert half.line() == ("error line 2: the connection ended in the middle of the line (no newline): "
                                   "dropped")
            assert half.line() is None
    assert data(stream) == [{"a": 1}, {"a": 2}, {"a": 4}]


def test_csv_a_header_row_per_connection(url):
    s = streamlog.stream("lines", url=url)
    listener = TCPListener("tcp://127.0.0.1:0", s, format="csv", flush_ms=10, status_every=None)
    with serving(listener), clients(listener.port, 2) as (a, b):
        a.send("x,y", "1,2.5", '3,"two', 'lines"', "4,5,6", "", "7,", "# ack")
        assert a.lines(2) == ["error line 5: 3 fields, the header has 2", "ok line 8"]
        b.send("name,value", "temp,21", "# ack")
        assert b.line() == "ok line 3"
    items = data(s)
    assert [x for x in items if "x" in x] == [{"x": 1, "y": 2.5}, {"x": 3, "y": "two\nlines"}, {"x": 7, "y": None}]
    assert [x for x in items if "name" in x] == [{"name": "temp", "value": 21}]


def test_csv_a_bad_header_ends_the_connection(stream):
    listener = TCPListener("tcp://127.0.0.1:0", stream, format="csv", flush_ms=10, status_every=None)
    with serving(listener), clients(listener.port) as (c,):
        c.send("", "a,b,a", "1,2,3")
        assert c.line() == "error line 2: CSV header: 'a' appear(s) twice"
        assert c.line() is None  # closed
    assert data(stream) == []


def test_back_pressure_bounds_the_queue_while_the_log_is_slow(stream, monkeypatch):
    """A client sends far more than the bound while extend is held: the listener stops
    reading (its queue never passes 2 x batch) and the client's send blocks."""
    gate = threading.Event()
    original = stream.extend

    def held_extend(items, **kw):
        gate.wait(10)
        return original(items, **kw)

    monkeypatch.setattr(stream, "extend", held_extend)
    batch, total = 100, 30_000
    line = b'{"i": %d, "pad": "' + b"p" * 80 + b'"}\n'
    payload = b"".join(line % i for i in range(total))  # ~3.3 MB
    listener = TCPListener("tcp://127.0.0.1:0", stream, batch=batch, flush_ms=5, status_every=None)
    with serving(listener), clients(listener.port, sndbuf=65536) as (c,):
        sender = threading.Thread(target=c.sock.sendall, args=(payload,))
        sender.start()
        try:
            wait_until(lambda: listener.max_pending_seen == 2 * batch, 10, message="the queue to fill up")
            sender.join(1.0)  # held for a second: the client cannot hand over its data
            assert sender.is_alive(), "the client sent everything although nothing was appended"
            assert listener.counters.snapshot()["received"] <= 2 * batch
        finally:
            gate.set()
        sender.join(10)
        c.send("# ack")
        assert c.line() == f"ok line {total + 1}"
    assert listener.max_pending_seen == 2 * batch
    assert [x["i"] for x in data(stream)] == list(range(total))


def test_stop_returns_promptly_and_keeps_every_line_read(url):
    s = streamlog.stream("lines", url=url)
    listener = TCPListener("tcp://127.0.0.1:0", s, batch=1000, flush_ms=60_000, status_every=None)
    listener.start()
    try:
        with clients(listener.port) as (c,):
            c.send(*(json.dumps({"i": i}) for i in range(100)), "# ack")  # the ack forces no flush:
            c.send(*(json.dumps({"i": i}) for i in range(100, 150)))      # the timer is a minute
            wait_until(lambda: listener.counters.snapshot()["received"] == 150, 10, message="150 lines read")
            started = time.monotonic()
            counters = listener.close()
            assert time.monotonic() - started < 3
            assert c.line() == "ok line 101"
            assert c.line() is None  # disconnected
    finally:
        listener.close()
    assert counters["stored"] == 150
    assert [x["i"] for x in data(s)] == list(range(150))


def test_sigterm_appends_what_was_read_and_returns(sqlite_url):
    code = (
        "import threading, streamlog\n"
        "from streamlog.bridges.tcp import TCPListener\n"
        "listener = TCPListener('tcp://127.0.0.1:0', streamlog.stream('lines'), flush_ms=60000, status_every=None)\n"
        "threading.Thread(target=lambda: listener.ready.wait(10) and print(listener.port, flush=True),"
        " daemon=True).start()\n"
        "print(listener.run()['stored'], flush=True)\n"
    )
    with reaped(run_python(code, sqlite_url, stdout=subprocess.PIPE, text=True)) as proc:
        port = int(proc.stdout.readline())
        with clients(port) as (c,):
            # the reply to the bad line 21 shows lines 1-20 were read; they wait for a full batch
            c.send(*(json.dumps({"i": i}) for i in range(20)), "x", "# ack")
            assert c.line().startswith("error line 21: not valid JSON")
            proc.send_signal(signal.SIGTERM)
            assert c.line() == "ok line 22"
            assert c.line() is None
        assert proc.wait(10) == 0
        assert proc.stdout.read().strip() == "20"
    assert [x["i"] for x in data(streamlog.stream("lines", url=sqlite_url))] == list(range(20))


# ---------------------------------------------------------------------------
# access


def _no_sockets(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a socket was made before the address was checked")

    monkeypatch.setattr(socket, "socket", refuse)


@pytest.mark.parametrize("cls", [TCPListener, TCPPublisher])
@pytest.mark.parametrize("address", ["tcp://0.0.0.0:9000", "tcp://[::]:9000", "tcp://10.1.2.3:9000",
                                     "tcp://example.org:9000"])
def test_a_non_loopback_host_is_refused_without_token_or_allow(stream, monkeypatch, cls, address):
    _no_sockets(monkeypatch)
    if cls is TCPListener:
        def make(**kw):
            return cls(address, stream, **kw)
    else:
        def make(**kw):
            return cls(stream, address, **kw)
    with pytest.raises(streamlog.StreamlogError, match="not a loopback address") as info:
        make()
    assert "\n" not in str(info.value)
    assert make(token="s3cret").host == address.split("//")[1].rsplit(":", 1)[0].strip("[]")  # accepted, not bound
    assert make(allow=["192.168.0.0/16", "10.0.0.7"]).port is None


def test_addresses_default_host_and_bad_input(stream, monkeypatch):
    _no_sockets(monkeypatch)
    assert TCPListener("tcp://:0", stream).host == "127.0.0.1"
    assert TCPListener("localhost:9000", stream).host == "localhost"
    assert TCPPublisher(stream, "tcp://[::1]:0").host == "::1"
    for bad in ["http://127.0.0.1:80", "tcp://127.0.0.1", "tcp://127.0.0.1:99999", "tcp://127.0.0.1:1/x", 9000]:
        with pytest.raises(streamlog.StreamlogError, match="TCP address"):
            TCPListener(bad, stream)
    for kwargs, why in [({"allow": ["not-an-ip"]}, "not an IP address"), ({"token": ""}, "token"),
                        ({"format": "xml"}, "format"), ({"on_error": "stop"}, "on_error"), ({"batch": 0}, "batch")]:
        with pytest.raises(streamlog.StreamlogError, match=why):
            TCPListener("tcp://:0", stream, **kwargs)
    with pytest.raises(streamlog.StreamlogError, match="start"):
        TCPPublisher(stream, "tcp://:0", start="newest")


def test_the_default_host_is_loopback(stream):
    with serving(TCPListener("tcp://:0", stream, status_every=None)) as listener:
        assert listener.host == "127.0.0.1"
        with clients(listener.port) as (c,):
            assert c.sock.getpeername()[0] == "127.0.0.1"


def test_token_auth(stream):
    listener = TCPListener("tcp://127.0.0.1:0", stream, token="s3cret", flush_ms=10, status_every=None)
    with serving(listener), clients(listener.port, 3) as (good, wrong, none):
        good.send("AUTH s3cret", '{"a": 1}', "# ack")
        wrong.send("AUTH s3cre7", '{"a": 2}')
        none.send('{"a": 3}')
        assert good.line() == "ok line 3"
        for c in (wrong, none):
            assert c.line() == "error unauthorized"
            assert c.line() is None
    assert data(stream) == [{"a": 1}]

    stream.append({"a": 4})
    publisher = TCPPublisher(stream, "tcp://127.0.0.1:0", start="earliest", token="s3cret", status_every=None)
    with serving(publisher), clients(publisher.port, 2) as (good, wrong):
        good.send("AUTH s3cret")
        wrong.send("AUTH nope")
        assert [json.loads(x)["data"] for x in good.lines(2)] == [{"a": 1}, {"a": 4}]
        assert wrong.line() == "error unauthorized"
        assert wrong.line() is None


def test_allow_lists_client_addresses(stream):
    with serving(TCPListener("tcp://127.0.0.1:0", stream, allow=["10.0.0.0/8"], status_every=None)) as listener, \
            clients(listener.port) as (c,):
        assert c.line() == "error forbidden"
        assert c.line() is None
    with serving(TCPListener("tcp://127.0.0.1:0", stream, allow="10.0.0.0/8, 127.0.0.1", flush_ms=10,
                             status_every=None)) as listener, clients(listener.port) as (c,):
        c.send('{"a": 1}', "# ack")
        assert c.line() == "ok line 2"
    assert data(stream) == [{"a": 1}]


# ---------------------------------------------------------------------------
# publisher


def test_publisher_two_clients_receive_the_same_new_items_in_order(url):
    s = streamlog.stream("items", url=url)
    s.extend([{"old": i} for i in range(3)])
    publisher = TCPPublisher(s, "tcp://127.0.0.1:0", poll_ms=10, status_every=None)
    with serving(publisher), clients(publisher.port, 2) as (a, b):
        wait_until(lambda: publisher.subscribers == 2, 10, message="two clients following")
        for i in range(5):
            s.extend([{"new": i}, {"new": i, "second": True}])
        got = [[json.loads(x) for x in c.lines(10)] for c in (a, b)]
    assert got[0] == got[1]
    assert [r["offset"] for r in got[0]] == list(range(3, 13))
    assert [r["data"] for r in got[0]] == [d for i in range(5) for d in ({"new": i}, {"new": i, "second": True})]
    stored = s.read(3, limit=None)
    assert [r["timestamp"] for r in got[0]] == [r["timestamp"].isoformat(timespec="milliseconds") for r in stored]
    assert publisher.counters.snapshot()["sent"] == 20


def test_publisher_earliest_sends_the_history_then_follows(url):
    s = streamlog.stream("items", url=url)
    s.extend([{"i": i} for i in range(25)])
    publisher = TCPPublisher(s, "tcp://127.0.0.1:0", start="earliest", poll_ms=10, page=10, status_every=None)
    with serving(publisher), clients(publisher.port) as (c,):
        assert [json.loads(x)["offset"] for x in c.lines(25)] == list(range(25))
        s.extend([{"i": 25}, {"i": 26}])
        assert [json.loads(x)["data"] for x in c.lines(2)] == [{"i": 25}, {"i": 26}]
    offset = TCPPublisher(s, "tcp://127.0.0.1:0", start=20, poll_ms=10, status_every=None)
    with serving(offset), clients(offset.port) as (c,):
        assert [json.loads(x)["offset"] for x in c.lines(7)] == list(range(20, 27))


def test_publisher_ends_when_its_stream_is_dropped_and_never_splices_a_new_one(url):
    """As `streamlog tail -f`: a drop ends the publisher (UnknownStreamError), and items of a
    stream created again under the name never reach its clients."""
    s = streamlog.stream("items", url=url)
    s.append({"old": 0})
    publisher = TCPPublisher(s, "tcp://127.0.0.1:0", start="earliest", poll_ms=10, status_every=None)
    publisher.start()
    try:
        with clients(publisher.port) as (c,):
            assert json.loads(c.line())["data"] == {"old": 0}
            wait_until(lambda: publisher.subscribers == 1, 10, message="the client following")
            s.drop()
            streamlog.connect(url).stream("items").extend([{"new": i} for i in range(3)])
            assert c.line() is None  # the connection ends; nothing of the new stream came
    finally:
        with pytest.raises(UnknownStreamError, match="dropped while publishing"):
            publisher.close()


def test_publisher_a_slow_client_is_dropped_without_stalling_the_others(stream):
    publisher = TCPPublisher(stream, "tcp://127.0.0.1:0", poll_ms=5, max_behind=200, status_every=None)
    total = 3000
    with serving(publisher), clients(publisher.port, rcvbuf=4096) as (slow,), clients(publisher.port) as (fast,):
        wait_until(lambda: publisher.subscribers == 2, 10, message="two clients following")
        got: list[int] = []

        def read_fast() -> None:
            for _ in range(total):
                got.append(json.loads(fast.line())["data"]["i"])

        reader = threading.Thread(target=read_fast)
        reader.start()
        pad = "p" * 2000
        for i in range(0, total, 100):  # the fast client keeps up; the slow one reads nothing
            stream.extend([{"i": j, "pad": pad} for j in range(i, i + 100)])
            wait_until(lambda i=i: len(got) >= i + 100 or not reader.is_alive(), 10, message="the fast client")
        reader.join(10)
        assert got == list(range(total))
        wait_until(lambda: publisher.counters.snapshot()["errors"] == 1, 10, message="the slow client dropped")
        lines = []
        while (x := slow.line()) is not None:
            lines.append(x)
    assert lines[-1] == "error too slow"
    offsets = [json.loads(x)["offset"] for x in lines[:-1]]
    assert offsets == list(range(len(offsets))) and len(offsets) < total


def test_publisher_stop_is_prompt_with_a_client_that_does_not_read(stream):
    publisher = TCPPublisher(stream, "tcp://127.0.0.1:0", start="earliest", poll_ms=5, status_every=None)
    stream.extend([{"i": i, "pad": "p" * 1000} for i in range(2000)])
    publisher.start()
    try:
        with clients(publisher.port, rcvbuf=4096) as (c,):
            wait_until(lambda: publisher.counters.snapshot()["sent"] > 0, 10, message="sending")
            started = time.monotonic()
            publisher.close()
            assert time.monotonic() - started < 3
    finally:
        publisher.close()
