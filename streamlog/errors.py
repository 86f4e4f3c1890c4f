"""The streamlog exception hierarchy.

Every error streamlog raises on purpose is a :class:`StreamlogError`, carrying a
one-line message that says what was wrong and, where it helps, what to do. The
CLI maps each class to its own exit code (``exit_code``).
"""

from __future__ import annotations


class StreamlogError(Exception):
    """Base class of every streamlog error."""

    exit_code = 1


class BadItemError(StreamlogError, ValueError):
    """An item cannot be stored: not a dict, a key or value of an unsupported type.

    Raised before anything is written: a failing ``extend`` stores none of its items.
    """

    exit_code = 5


class BadNameError(StreamlogError, ValueError):
    """A stream, group or model name that streamlog does not accept."""

    exit_code = 2


class BadURLError(StreamlogError, ValueError):
    """A URL streamlog cannot use (unknown scheme, missing path, bad option)."""

    exit_code = 2


class UnreachableError(StreamlogError, ConnectionError):
    """The database did not answer within the configured time."""

    exit_code = 4


class NoDatabaseError(StreamlogError, LookupError):
    """A read-only command named an embedded database file that does not exist.

    Read-only entry points (``ls``, ``info``, ``tail``) never create a database.
    """

    exit_code = 3


class UnknownGroupError(StreamlogError, LookupError):
    """A consumer group that must exist does not (``group reset``, ``group delete``)."""

    exit_code = 3


class GroupDeletedError(StreamlogError):
    """The consumer group was deleted while a consumer of it was running."""

    exit_code = 3


class UnknownStreamError(StreamlogError, LookupError):
    """A stream that must exist does not (``info``, ``tail``, ``drop``, ``trim``)."""

    exit_code = 3


class IdempotencyError(StreamlogError):
    """An idempotent append (:meth:`Stream.extend_once`) could not be answered."""


class KeyReusedError(IdempotencyError):
    """The idempotency key was already used, within its window, for other items."""


class KeyBusyError(IdempotencyError):
    """The first append with this key is still in progress in another process: retry later."""


class ConsumerError(StreamlogError):
    """A consumer is configured wrongly (window options, callable, learner features)."""

    exit_code = 2


class MissingFieldError(ConsumerError, KeyError):
    """A learner was given items without a feature or target column it needs."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
