"""streamlog.listening: the addresses, loopback rule, exposure rule and socket binding
that `streamlog serve` and the TCP bridges share."""

from __future__ import annotations

import socket

import pytest

from streamlog.errors import StreamlogError
from streamlog.listening import (
    BACKLOG,
    DEFAULT_HOST,
    check_exposure,
    host_port,
    is_loopback,
    listening_socket,
    parse_tcp_address,
)


def test_tcp_addresses():
    assert parse_tcp_address("tcp://:0") == (DEFAULT_HOST, 0)
    assert parse_tcp_address("localhost:9000") == ("localhost", 9000)
    assert parse_tcp_address("tcp://[::1]:7") == ("::1", 7)
    for bad in ["http://127.0.0.1:80", "tcp://127.0.0.1", "tcp://127.0.0.1:99999", "tcp://u@h:1", 9000]:
        with pytest.raises(StreamlogError, match="TCP address"):
            parse_tcp_address(bad)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost", "LOCALHOST"])
def test_loopback_hosts(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.org", "localhost.example.org"])
def test_hosts_reachable_from_elsewhere(host):
    assert not is_loopback(host)


def test_the_exposure_rule():
    assert check_exposure("127.0.0.1", guarded=False, refusal="no") is None
    assert check_exposure("0.0.0.0", guarded=True, refusal="no") is None
    assert check_exposure("0.0.0.0", guarded=False, insecure=True, refusal="no", warning="open!") == "open!"
    with pytest.raises(StreamlogError, match="^refused here$"):
        check_exposure("0.0.0.0", guarded=False, refusal="refused here")


def test_a_listening_socket_and_a_port_in_use():
    sock = listening_socket("localhost", 0)
    try:
        host, port = sock.getsockname()[:2]
        assert host == "127.0.0.1" and port > 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # it listens
        with pytest.raises(StreamlogError, match=f"cannot listen on 127.0.0.1:{port}: ") as info:
            listening_socket("127.0.0.1", port)
        assert "\n" not in str(info.value)
    finally:
        sock.close()
    assert BACKLOG >= 128


def test_a_failed_bind_closes_its_socket(monkeypatch):
    made: list[socket.socket] = []
    real = socket.socket

    def tracked(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(socket, "socket", tracked)
    with pytest.raises(StreamlogError, match="cannot listen on 192.0.2.1:1: "):
        listening_socket("192.0.2.1", 1)  # TEST-NET-1: not an address of this machine
    assert made and all(s.fileno() == -1 for s in made)


def test_host_port_brackets_ipv6():
    assert host_port("::1", 80) == "[::1]:80" and host_port("h", 1) == "h:1"
