"""A consumer process for tests/test_exactly_once.py that SIGKILLs itself at a named point
of a window's sink / dead-letter / commit path (``python tests/exactly_once_child.py URL
POINT MODE OUT``).

It consumes ``src`` (group ``g``, windows of 5, lease 1 s, one retry), returning one record
per item (``{"o": offset, "pid", "attempt"}``) for the stream sink ``out``; in MODE ``dead``
window 2 raises instead (so it is dead-lettered). The points (see :data:`POINTS`) wrap the
store's own methods in this process only: the store code is the one under test. Before the
kill it writes ``{"killed": POINT, "pid", "seq"}`` to OUT (the harness's accounting).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any, Callable

SIZE, LEASE, KILLED_SEQ = 5, 1.0, 2

#: point → (store method, which call kills (1-based), when: "after" it returned / "before" it runs,
#:          the claim state a commit must have to count)
POINTS: dict[str, tuple[str, int, str, str | None]] = {
    # SQLite: the sink's items are inserted, the key row not yet, the transaction open
    "sqlite-in-transaction": ("_insert", KILLED_SEQ, "after", None),
    # MongoDB: the key's attempt is inserted (pending), no item yet
    "mongo-key-reserved": ("_reserve_key", KILLED_SEQ, "after", None),
    # MongoDB: every item is stored (nothing more is written for the key: a retry recognises
    # the complete batch by its items' token), the window not committed
    "mongo-items-appended": ("_append", KILLED_SEQ, "after", None),
    # both: the sink append returned, the window's seal not yet inserted
    "before-commit": ("commit", KILLED_SEQ, "before", "committed"),
    # both: the dead letters are appended, the window not yet sealed dead
    "dead-before-seal": ("commit", 1, "before", "dead"),
}

current = {"seq": None}


def _die(out: str, point: str, seq: Any) -> None:
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps({"killed": point, "pid": os.getpid(), "seq": seq}) + "\n")
    os.kill(os.getpid(), signal.SIGKILL)


def install(store: Any, point: str, out: str) -> None:
    """Make this process SIGKILL itself at ``point`` (wraps one method of ``store``)."""
    name, nth, when, state = POINTS[point]
    original: Callable = getattr(store, name)  # fails loudly if the store has no such method
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if state is not None:
            claim = args[0]
            if (args[1] if len(args) > 1 else kwargs.get("state", "committed")) != state:
                return original(*args, **kwargs)
            seq = claim.seq
        else:
            seq = current["seq"]
        calls[0] += 1
        if when == "before" and calls[0] == nth:
            _die(out, point, seq)
        result = original(*args, **kwargs)
        if when == "after" and calls[0] == nth:
            _die(out, point, seq)
        return result

    setattr(store, name, wrapper)
    from streamlog.store.base import Store

    if name == "commit" and type(store).commit_and_claim is not Store.commit_and_claim:
        # A single consumer's commit in a backlog also claims the next window in the same
        # write (the embedded store's commit_and_claim; the base one calls commit): a
        # committing seal all the same.
        folded: Callable = store.commit_and_claim

        def commit_and_claim(claim: Any, next_claim: Any) -> Any:
            if state == "committed":
                calls[0] += 1
                if when == "before" and calls[0] == nth:
                    _die(out, point, claim.seq)
            return folded(claim, next_claim)

        store.commit_and_claim = commit_and_claim


def records(window: Any, mode: str) -> list[dict]:
    """The stage function: one record per item; in mode ``dead`` window 2 always fails."""
    current["seq"] = window.seq
    if mode == "dead" and window.seq == KILLED_SEQ:
        raise ValueError(f"window {window.seq} is bad")
    return [{"o": o, "pid": os.getpid(), "attempt": window.attempt} for o in window.offsets]


def consume(url: str, mode: str) -> int:
    import streamlog

    # one retry for the killed window (mode dead: none, the window goes to the dead letters at once)
    fn = streamlog.streaming("src", size=SIZE, group="g", lease=LEASE, max_retries=0 if mode == "dead" else 1,
                             retry_delay=0,
                             blocking=False, sink="out", url=url)
    return fn.apply(lambda window: records(window, mode))


def main(argv: list[str]) -> int:
    url, point, mode, out = argv
    import streamlog

    install(streamlog.connect(url).store, point, out)
    consume(url, mode)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
