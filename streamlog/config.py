"""Where streams live: URL resolution and connection settings.

Resolution order for every entry point (Python API and CLI):

1. the ``url=`` argument (``--url`` on the command line);
2. the ``STREAMLOG_URL`` environment variable;
3. the embedded default: a SQLite file at one fixed per-user path,
   ``$XDG_DATA_HOME/streamlog/streamlog.db`` (``~/.local/share/streamlog/streamlog.db``),
   so that a producer and a consumer started in two shells meet with no configuration.

Accepted URLs: ``mongodb://…`` / ``mongodb+srv://…`` (database from the URL path,
``streamlog`` when none) and, as in SQLAlchemy, ``sqlite:///relative/path.db`` or
``sqlite:////absolute/path.db`` (four slashes).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import BadURLError

DEFAULT_CONNECT_TIMEOUT = 5.0
"""Seconds to wait for an unreachable MongoDB server (``STREAMLOG_CONNECT_TIMEOUT``)."""


def default_path() -> Path:
    """The embedded database file used when no URL is configured."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "streamlog" / "streamlog.db"


def resolve_url(url: str | None = None) -> str:
    """Return the URL to use: the argument, else ``STREAMLOG_URL``, else the embedded default."""
    if url:
        return url
    env = os.environ.get("STREAMLOG_URL")
    if env:
        return env
    return f"sqlite:///{default_path()}"


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_URL_IN_TEXT = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://\S+")
# Query options that hold secrets: password, tlsCertificateKeyFilePassword, *token*, *secret*,
# *key* (key material), and authMechanismProperties=AWS_SESSION_TOKEN:... pairs.
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|credential", re.IGNORECASE)
_SECRET_PAIR = re.compile(r"(?:pass|pwd|secret|token|key|credential)[^:,=&]*:", re.IGNORECASE)


def _split_userinfo(rest: str) -> tuple[str | None, str]:
    """``(userinfo, remainder)`` of what follows ``scheme://``; userinfo is None when absent.

    The userinfo runs to the *last* ``@`` before the options (``?``), so a password with an
    unescaped ``/`` or ``@`` is still all of it. A ``?`` before any ``/`` cannot start
    MongoDB options (they need ``host/?``): it is part of the password then.
    """
    if rest.startswith("/"):  # sqlite:///path: no authority
        return None, rest
    query = rest.find("?")
    query = len(rest) if query < 0 else query
    at = rest.rfind("@", 0, query)
    if at < 0 and query < len(rest) and "/" not in rest[:query] and "@" in rest[query:]:
        at = rest.rfind("@")
    if at < 0:
        return None, rest
    return rest[:at], rest[at + 1:]


def _mask_query(query: str) -> str:
    from urllib.parse import unquote_plus

    parts = re.split(r"([&;])", query)
    for i, part in enumerate(parts):
        name, eq, value = part.partition("=")
        if eq and value and (_SECRET_NAME.search(unquote_plus(name))
                             or _SECRET_PAIR.search(unquote_plus(value))):
            parts[i] = f"{name}=***"
    return "".join(parts)


def _mask_one(url: str) -> str:
    match = _SCHEME.match(url)
    if match is None:
        return url
    head, rest = url[:match.end()], url[match.end():]
    userinfo, rest = _split_userinfo(rest)
    if userinfo is not None and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    query = rest.find("?")
    if query >= 0:
        rest = rest[:query + 1] + _mask_query(rest[query + 1:])
    return head + (f"{userinfo}@" if userinfo is not None else "") + rest


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for messages and logs).

    Hides the password whatever the spelling (any case of scheme, unescaped ``/``, ``@``
    or ``?`` in it) and the values of query options that hold secrets (``password``,
    ``tlsCertificateKeyFilePassword``, tokens, keys, ``AWS_SESSION_TOKEN:`` in
    ``authMechanismProperties``). Given a message rather than a URL (a driver error),
    masks every URL in it.
    """
    url = str(url)
    if _SCHEME.match(url.lstrip()):
        return _mask_one(url.lstrip())
    return _URL_IN_TEXT.sub(lambda match: _mask_one(match.group()), url)


def _seconds(variable: str, default: float, allow_zero: bool) -> float:
    """A duration in seconds from the environment variable ``variable``, else ``default``."""
    raw = os.environ.get(variable)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadURLError(f"{variable}={raw!r} is not a number of seconds") from None
    if value < 0 or (value == 0 and not allow_zero) or value != value or value == float("inf"):
        raise BadURLError(f"{variable} must be a {'non-negative' if allow_zero else 'positive'} number of seconds")
    return value


def connect_timeout() -> float:
    """How long to wait for an unreachable MongoDB server when connecting."""
    return _seconds("STREAMLOG_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT, allow_zero=False)


@dataclass(frozen=True)
class DatabaseLocation:
    """A parsed database URL: which backend, and where (the file, or the database name)."""

    kind: str  # "mongodb" or "sqlite"
    url: str
    path: Path | None = None  # sqlite
    database: str | None = None  # mongodb


def parse_url(url: str) -> DatabaseLocation:
    """Validate a URL and say which backend it names. Raises :class:`BadURLError`."""
    if not isinstance(url, str) or not url.strip():
        raise BadURLError("the database URL is empty")
    url = url.strip()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("mongodb", "mongodb+srv"):
        url = scheme + url[len(scheme):]  # schemes are case-insensitive; the driver wants lower case
        masked = mask_url(url)
        userinfo, rest = _split_userinfo(url[len(scheme) + 3:])
        if userinfo is not None and (re.search(r"[@/?]", userinfo) or userinfo.count(":") > 1):
            raise BadURLError(f"{masked}: the user name and password must be percent-escaped "
                              "(urllib.parse.quote_plus)")
        try:  # without the userinfo, which cannot leak into a message from here on
            parts = urlsplit(f"{scheme}://{rest}")
        except ValueError:  # "Invalid IPv6 URL", "'zz' does not appear to be an IPv4 or IPv6 address"
            raise BadURLError(f"{masked}: the host is not valid (an IPv6 address goes in brackets: "
                              "mongodb://[::1]:27017/database)") from None
        if not parts.netloc:
            raise BadURLError(f"{masked}: a MongoDB URL needs a host (mongodb://host:27017/database)")
        database = parts.path.lstrip("/") or "streamlog"
        if re.search(r'[/\\. "$\x00]', database) or len(database) > 63:
            raise BadURLError(f"{masked}: {database!r} is not a valid MongoDB database name")
        return DatabaseLocation("mongodb", url, database=database)
    if scheme == "sqlite":
        # SQLAlchemy's convention: sqlite:///relative.db and sqlite:////absolute/path.db
        rest = url[len("sqlite://"):]
        if not rest.startswith("/") or len(rest) < 2:
            raise BadURLError(f"{url}: use sqlite:///relative/file.db or sqlite:////absolute/file.db")
        path = Path(rest[1:]).expanduser()
        if path.name in ("", ".", "..") or path.is_dir():
            raise BadURLError(f"{url}: the path must name a database file, not a directory")
        return DatabaseLocation("sqlite", url, path=path)
    raise BadURLError(
        f"{mask_url(url)}: unsupported URL scheme {scheme or '(none)'!r}; "
        "use mongodb://host/db or sqlite:///path/to/file.db"
    )


DEFAULT_RETRY_TIMEOUT = 60.0
"""Seconds a MongoDB operation keeps retrying through an outage (``STREAMLOG_RETRY_TIMEOUT``)."""


def retry_timeout() -> float:
    """How long transient database errors are retried before :class:`UnreachableError`."""
    return _seconds("STREAMLOG_RETRY_TIMEOUT", DEFAULT_RETRY_TIMEOUT, allow_zero=True)
