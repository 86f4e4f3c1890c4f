"""What the streaming runtime may find on a consumer function and on a sink, as protocols.

A consumer function is any callable taking a window. It may also have these hooks,
each a :class:`typing.Protocol` checked with ``isinstance`` (structurally: no base class
to inherit):

* :class:`Attaches` — ``attach(stream, group)``: called once when the consumer starts,
  right after the group is created and before any window is claimed (learners resume
  their checkpoint there);
* :class:`StartsUp` — ``on_start(consumer)``: called once before the first window is
  claimed, with the signal handlers in place; it may wait while ``consumer.stopping`` is
  False, or call ``consumer.stop()`` (a predictor waits for its first model there);
* :class:`Sequential` — ``sequential``: True when the function must see windows one at
  a time, in order;
* :class:`SavesPerClaim` — ``defer_checkpoints(deferred)`` and ``flush_checkpoint()``:
  state saved once per claim when claims hold runs of windows (``windows_per_claim``).

A function that attaches or is sequential runs with one worker only
(:func:`runs_in_order`).

A sink (``sink=``) is a :class:`Sink`: a stream of this database, a :class:`OnceSink`
(safe to feed from several threads; the client owns its connection) that receives each
window's records exactly once, under the window's key, whatever crashes and retries
happen (:mod:`streamlog.delivery.once`); or a :class:`ConnectedSink`, made from a URL for
one run and holding its own connection (MQTT, Kafka): it is fed one window's records at a
time, at least once, and closed when the run ends.

This module imports nothing at run time: any module may import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from .stream import Stream


@runtime_checkable
class Attaches(Protocol):
    """A consumer function told its stream and group before the first window is claimed."""

    def attach(self, stream: "Stream", group: str) -> None: ...


class RunningConsumer(Protocol):
    """What ``on_start`` may use of the consumer that runs the function."""

    @property
    def stream(self) -> "Stream": ...

    @property
    def blocking(self) -> bool: ...

    @property
    def stopping(self) -> bool: ...

    def stop(self) -> None: ...


@runtime_checkable
class StartsUp(Protocol):
    """A consumer function called once before the first window is claimed."""

    def on_start(self, consumer: RunningConsumer) -> None: ...


@runtime_checkable
class Sequential(Protocol):
    """A consumer function that says whether it must see windows one at a time, in order."""

    sequential: bool


@runtime_checkable
class SavesPerClaim(Protocol):
    """A consumer function whose state may be saved once per claim instead of once per
    window (learners). With ``windows_per_claim > 1`` the runtime calls
    ``defer_checkpoints(True)`` when it starts (False when it ends) and
    ``flush_checkpoint()`` after a claim's last window, before the claim's sink write and
    commit — so a commit never runs ahead of the saved state."""

    def defer_checkpoints(self, deferred: bool) -> None: ...

    def flush_checkpoint(self) -> None: ...


def runs_in_order(fn: object) -> bool:
    """Whether ``fn`` keeps state that must see windows one at a time, in order (so it
    refuses ``workers > 1``): it attaches, or says ``sequential = True``."""
    return isinstance(fn, Attaches) or (isinstance(fn, Sequential) and bool(fn.sequential))


@runtime_checkable
class Sink(Protocol):
    """Where a consumer's returned records go (``sink=``)."""

    def extend(self, items: Iterable[dict]) -> Any: ...


@runtime_checkable
class OnceSink(Sink, Protocol):
    """A sink that appends a batch at most once per key (a stream: :meth:`Stream.extend_once`);
    ``check_items=False``: a retry with other items replays the first batch."""

    def extend_once(self, key: str, items: Iterable[dict], *, wait: float = 30.0,
                    check_items: bool = True) -> Any: ...


@runtime_checkable
class ConnectedSink(Sink, Protocol):
    """A sink holding its own connection, made for one run (a URL sink): fed one window's
    records at a time (its client is not shared between threads), closed when the run ends."""

    def close(self) -> None: ...


@runtime_checkable
class Records(Protocol):
    """A table a consumer may return for its sink: a pandas DataFrame (one record per row),
    recognised without importing pandas."""

    columns: Any

    def to_dict(self, orient: str) -> Any: ...


__all__ = ["Records", "Attaches", "RunningConsumer", "StartsUp", "Sequential", "runs_in_order", "Sink", "OnceSink",
           "ConnectedSink"]
