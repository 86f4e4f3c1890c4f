"""The idle polling schedule: how often something waiting for new items probes the
database when nothing tells it of news — the one schedule of the consumer runtime's idle
wait (:mod:`streamlog.delivery.idle`) and the HTTP server's follower watcher
(:mod:`streamlog.serve.hub`).

While news keeps coming a waiter probes at most ``max_poll`` apart; once nothing has
arrived for :data:`IDLE_AFTER` seconds the gap doubles every idle second up to
``idle_poll`` (:func:`poll_cap`): every probe is a driver round trip, which is what an
idle waiter's CPU is made of. Even when a change token or a file watch says nothing
changed, a waiter probes at least every :data:`FULL_PROBE_EVERY` seconds.
"""

from __future__ import annotations

#: a waiter probes at least this often even when the change token (or the file watch)
#: says nothing changed (seconds): a safety net under the token and the watch
FULL_PROBE_EVERY = 1.0
#: after this long without news a polling waiter backs off towards ``idle_poll`` (seconds)
IDLE_AFTER = 1.0


def poll_cap(max_poll: float, idle_poll: float, idle: float) -> float:
    """The longest sleep (s) between two polls after ``idle`` seconds without news:
    ``max_poll`` for the first :data:`IDLE_AFTER` seconds, then doubling every idle second
    up to ``idle_poll``."""
    return max_poll if idle < IDLE_AFTER else min(idle_poll, max_poll * 2 ** idle)
