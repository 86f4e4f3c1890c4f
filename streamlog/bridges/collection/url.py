"""Addressing the source of a collection bridge: :func:`parse_collection_url` turns
``mongodb-collection://[user:pass@]host[:port]/DB/COLLECTION[?options]`` (or
``mongodb://host/DB`` plus a collection name) into the MongoDB URL, database and
collection to read. Every error is one line with the password masked."""

from __future__ import annotations

from urllib.parse import unquote

from ...config import _split_userinfo, mask_url, parse_url
from ...errors import BadURLError

SCHEME = "mongodb-collection"


def parse_collection_url(url: str, collection: str | None = None) -> tuple[str, str, str]:
    """``(mongodb_url, database, collection)`` from
    ``mongodb-collection://[user:pass@]host[:port]/DB/COLLECTION[?options]`` (also
    ``mongodb-collection+srv://``), or from ``mongodb://host/DB`` plus ``collection``.
    Raises a one-line :class:`BadURLError` (password masked)."""
    if not isinstance(url, str) or not url.strip():
        raise BadURLError("the source URL is empty")
    url = url.strip()
    masked = mask_url(url)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    usage = f"use {SCHEME}://[user:pass@]host[:port]/DATABASE/COLLECTION"
    if scheme in (SCHEME, SCHEME + "+srv"):
        userinfo, rest = _split_userinfo(url[len(scheme) + 3:])
        rest, question, query = rest.partition("?")
        hosts, slash, path = rest.partition("/")
        database, slash2, name = path.partition("/")
        if not hosts:
            raise BadURLError(f"{masked}: no host; {usage}")
        if not database or not slash2 or not name:
            raise BadURLError(f"{masked}: the URL must name a database and a collection; {usage}")
        if collection is not None:
            raise BadURLError(f"{masked}: the collection is given twice (in the URL and as collection=)")
        collection = unquote(name)
        mongo_scheme = "mongodb+srv" if scheme.endswith("+srv") else "mongodb"
        mongo_url = (f"{mongo_scheme}://{'' if userinfo is None else userinfo + '@'}{hosts}/{database}"
                     f"{question}{query}")
    elif scheme in ("mongodb", "mongodb+srv"):
        if not collection:
            raise BadURLError(f"{masked}: name the collection (collection=...), or {usage}")
        userinfo, rest = _split_userinfo(url[len(scheme) + 3:])
        path = rest.partition("?")[0].partition("/")[2]
        if not path:
            raise BadURLError(f"{masked}: the URL must name the database (mongodb://host/DATABASE)")
        mongo_url = url
    else:
        raise BadURLError(f"{masked}: unsupported source URL scheme {scheme or '(none)'!r}; {usage}")
    target = parse_url(mongo_url)  # userinfo escaping, host, database name: one-line errors
    if not isinstance(collection, str) or not collection or "$" in collection or "\x00" in collection \
            or len(collection.encode("utf-8", "replace")) > 255:
        raise BadURLError(f"{masked}: {collection!r} is not a valid MongoDB collection name")
    return target.url, target.database, collection
