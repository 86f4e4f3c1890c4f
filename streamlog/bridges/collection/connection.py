"""Access to the source collection: the pymongo client a collection bridge reads with
(:func:`open_source`), and what counts as being refused access (:func:`access_refused`).

The client connects lazily, with the bridge's timeouts: server selection at most 2 s
(so a stop is noticed within that), the connect timeout of ``STREAMLOG_CONNECT_TIMEOUT``,
30 s per socket operation. Documents are decoded with aware UTC datetimes and standard
UUIDs. The source needs read access only.
"""

from __future__ import annotations

from datetime import timezone

import pymongo
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions, DatetimeConversion
from pymongo.errors import ConfigurationError, OperationFailure

from ...config import connect_timeout, mask_url
from ...errors import BadURLError

CODEC = CodecOptions(tz_aware=True, tzinfo=timezone.utc, uuid_representation=UuidRepresentation.STANDARD,
                     datetime_conversion=DatetimeConversion.DATETIME_AUTO)
#: server error codes of a refused login or operation: Unauthorized, AuthenticationFailed
_REFUSED = (13, 18)


def open_source(mongo_url: str, database: str, collection: str, shown_url: str):
    """``(client, collection)`` for reading ``database.collection`` at ``mongo_url``;
    nothing is connected yet. A URL pymongo refuses is a one-line :class:`BadURLError`
    naming ``shown_url`` (the masked URL)."""
    wait = min(connect_timeout(), 2.0)  # server selection: a stop is noticed within this
    try:
        client = pymongo.MongoClient(
            mongo_url, connect=False, appname="streamlog-bridge",
            serverSelectionTimeoutMS=int(wait * 1000), connectTimeoutMS=int(connect_timeout() * 1000),
            socketTimeoutMS=30_000)
    except (ConfigurationError, ValueError, TypeError) as exc:
        reason = mask_url(str(exc)).split("\n")[0]
        raise BadURLError(f"{shown_url}: {reason}") from None
    return client, client.get_database(database).get_collection(collection, codec_options=CODEC)


def access_refused(exc: OperationFailure) -> bool:
    """Whether the server refused the credentials or the access (not a missing feature)."""
    return exc.code in _REFUSED or "auth" in str(exc).lower()
