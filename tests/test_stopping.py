"""streamlog.stopping.graceful_stop: the one SIGINT/SIGTERM mechanism of the long-running
commands (each command's own signal test runs it in a real process)."""

from __future__ import annotations

import logging
import os
import signal
import threading

import pytest

from streamlog.stopping import graceful_stop


def _send(sig: int) -> None:
    os.kill(os.getpid(), sig)  # delivered to the main thread before the next bytecode


def test_every_signal_calls_stop_and_the_previous_handlers_come_back():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    seen: list[int] = []
    with graceful_stop(seen.append) as installed:
        assert installed
        _send(signal.SIGTERM)
        _send(signal.SIGINT)
        _send(signal.SIGTERM)
    assert seen == [signal.SIGTERM, signal.SIGINT, signal.SIGTERM]
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_the_handlers_come_back_after_an_error():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError):
        with graceful_stop(lambda signum: None):
            raise RuntimeError("boom")
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_second_signal_aborts_with_the_previous_handlers_back():
    before = signal.getsignal(signal.SIGINT)
    stopped: list[int] = []

    def abort(signum: int) -> None:
        assert signal.getsignal(signal.SIGINT) == before  # a third Ctrl-C gets Python's default
        raise SystemExit(128 + signum)

    with pytest.raises(SystemExit) as exc:
        with graceful_stop(stopped.append, abort=abort, notice="stopping after the current window"):
            _send(signal.SIGINT)
            assert stopped == [signal.SIGINT]
            _send(signal.SIGINT)
    assert exc.value.code == 130 and stopped == [signal.SIGINT]


def test_the_notice_goes_to_stderr_for_ctrl_c_and_to_the_log_for_sigterm(capfd, caplog):
    with graceful_stop(lambda signum: None, abort=lambda signum: None, notice="stopping after the current window"):
        _send(signal.SIGINT)
    assert capfd.readouterr().err == "streamlog: stopping after the current window (Ctrl-C again to abort)\n"
    with caplog.at_level(logging.INFO, logger="streamlog"):
        with graceful_stop(lambda signum: None, notice="stopping the bridge"):
            _send(signal.SIGTERM)
            _send(signal.SIGTERM)  # said once
    assert [r.getMessage() for r in caplog.records] == [f"signal {int(signal.SIGTERM)}: stopping the bridge"]
    assert capfd.readouterr().err == ""


def test_off_the_main_thread_nothing_is_installed():
    before = signal.getsignal(signal.SIGTERM)
    result: list[object] = []

    def other() -> None:
        with graceful_stop(lambda signum: None) as installed:
            result.append(installed)
            result.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert result == [False, before]
