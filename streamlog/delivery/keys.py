"""Key values and key chains: what keyed windows (``key=``) are made of.

The key value ``v`` of group ``G`` is consumed through a chain of its own, the group
``G#<field digest>.<value digest>`` (:func:`key_chain_name`; ``#`` is not allowed in
user names, so no user group collides). Operators see key chains only through their
keyed group (:func:`visible_groups`). Each key cuts its windows with its own copy of
the user's emitter, wrapped in :class:`NonEmpty`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import TYPE_CHECKING, Any, Callable

from ..emitters.base import Emit, Emitter, Pending, Wait
from ..errors import ConsumerError
from ..hooks import Attaches
from ..store.base import Group
from .history import reshows_history

if TYPE_CHECKING:  # pragma: no cover
    from ..stream import Stream

#: joins a keyed group's name and a key's digest in the name of the key's chain. Not a
#: character of user names (streamlog.names), so a key chain never collides with a group.
KEY_MARK = "#"
#: consecutive empty windows a key's emitter may skip in one decision
MAX_SKIPS = 10_000


def key_token(value: Any) -> str:
    """The canonical text of a key value: values that compare equal as JSON numbers give
    equal tokens (``1`` and ``1.0``); ``True`` is not ``1``; ``None`` (a missing field
    too) is ``null``; strings, lists and objects by their (sorted) JSON text."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def key_chain_prefix(group: str, field: str) -> str:
    """The common start of the names of ``group``'s key chains for the key field ``field``."""
    return f"{group}{KEY_MARK}{hashlib.sha256(field.encode()).hexdigest()[:8]}."


def key_chain_name(group: str, field: str, token: str) -> str:
    """The chain of the key value whose canonical text is ``token`` (see
    :func:`key_token`): ``<group>#<field digest>.<value digest>``."""
    return key_chain_prefix(group, field) + hashlib.sha256(token.encode()).hexdigest()[:20]


def visible_groups(groups: list[Group]) -> list[Group]:
    """The groups an operator sees: key chains are reported through their keyed group."""
    return [g for g in groups if KEY_MARK not in g.name]


def key_chains(stream: "Stream", group: str, groups: list[Group] | None = None) -> list[Group]:
    """The key chains of ``group`` (empty for an unkeyed group); ``groups``: the stream's
    groups, when the caller already listed them."""
    prefix = group + KEY_MARK
    listed = stream.store.groups(stream.name) if groups is None else groups
    return [g for g in listed if g.name.startswith(prefix)]


def check_key(key: Any, fn: Callable | None = None, emitter: Any = None) -> str | None:
    """``key=`` as given (None: unkeyed); a :class:`ConsumerError` for a bad field name, a
    learner (its state is one model per group, not per key) or a sliding emitter (its
    history is read by offset range, which would mix keys)."""
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise ConsumerError(f"key= must be the name of an item field, not {key!r}")
    if isinstance(fn, Attaches):
        raise ConsumerError(f"{type(fn).__name__} keeps one model per group: it cannot consume keyed windows "
                            "(key=); give each key its own group, or drop key=")
    if emitter is not None and reshows_history(emitter):
        raise ConsumerError(f"key= does not work with {type(emitter).__name__}: sliding windows re-read "
                            "their history by offset range, which holds every key")
    return key


class NonEmpty(Emitter):
    """A key's emitter: the key's own copy of the user's emitter, whose empty windows
    (fixed-time windows between a key's items) are skipped instead of claimed — the next
    decision is taken as if the skipped window had been the previous one. A decision that
    makes no progress is passed on as it is (it is then claimed and not delivered)."""

    def __init__(self, inner: Emitter):
        self.inner = inner
        self.kind = getattr(inner, "kind", "custom")

    def select(self, pending: Pending, now: int) -> Emit | Wait:
        decision = self.inner.select(pending, now)
        for _ in range(MAX_SKIPS):
            if not (isinstance(decision, Emit) and decision.count == 0 and decision.end is not None):
                return decision
            if pending.previous_end is not None and decision.end <= pending.previous_end:
                return decision
            pending.previous_end = decision.end
            decision = self.inner.select(pending, now)
        return decision

    def __repr__(self) -> str:
        return repr(self.inner)


def copy_emitter(emitter: Emitter) -> Emitter:
    """A key's own copy of the emitter (emitters may keep state between decisions)."""
    try:
        return copy.deepcopy(emitter)
    except Exception:  # noqa: BLE001 - a custom emitter holding something uncopyable
        return copy.copy(emitter)
