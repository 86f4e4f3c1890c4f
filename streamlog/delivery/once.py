"""The keys that make a window's writes happen once (:meth:`Stream.extend_once`).

A consumer's window is identified across every retry by its place in the group's chain:
``(stream, stream incarnation, chain group, seq)`` (:mod:`streamlog.delivery.chain`: a
takeover is the next *attempt* of the same ``seq``, same offsets; a reset or a deleted and
re-created group continues the chain with new ``seq`` numbers; a keyed group's key chain
is a group of its own). Its sink records are appended with :func:`window_key` — the first
attempt to append them stores them, any other attempt of the window stores nothing.

Dead letters are keyed by what they hold (:func:`dead_letter_key`): the user's group, the
key value and the failed window's item offsets and data, which every attempt at that
window reads alike. Both kinds of key are idempotency keys of the stream written to, kept
24 hours from their first use (``store.base.KEY_WINDOW_MS``) and pruned as appends go.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from ..items import fingerprint
from ..store.base import Claim

if TYPE_CHECKING:  # pragma: no cover
    from ..stream import Stream


def window_key(source: "Stream", claim: Claim) -> str:
    """The idempotency key of the sink records of ``claim``'s window (any attempt)."""
    ident = "\x00".join((source.name, source.uid, claim.group, str(claim.seq))).encode()
    return f"sink:{claim.seq}:{hashlib.blake2b(ident, digest_size=16).hexdigest()}"


def dead_letter_key(letters: list[dict]) -> str:
    """The idempotency key of a window's dead letters (``{offset, data, group, key?, …}``):
    the same for every attempt at the window whatever its error text or attempt count."""
    offsets = [o for o in (letter.get("offset") for letter in letters) if type(o) is int]
    ident = [{k: letter.get(k) for k in ("offset", "data", "group", "key")} for letter in letters]
    where = f"{min(offsets)}-{max(offsets)}" if offsets else "-"
    return f"dead:{where}:{fingerprint(ident)[:32]}"
