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


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for messages and logs)."""
    return re.sub(r"^([a-z+]+://[^:/@]*):[^@/]*@", r"\1:***@", url)


def connect_timeout() -> float:
    raw = os.environ.get("STREAMLOG_CONNECT_TIMEOUT")
    if not raw:
        return DEFAULT_CONNECT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise BadURLError(f"STREAMLOG_CONNECT_TIMEOUT={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise BadURLError("STREAMLOG_CONNECT_TIMEOUT must be positive")
    return value


@dataclass(frozen=True)
class Target:
    """A parsed URL: which backend, and where."""

    kind: str  # "mongodb" or "sqlite"
    url: str
    path: Path | None = None  # sqlite
    database: str | None = None  # mongodb


def parse_url(url: str) -> Target:
    """Validate a URL and say which backend it names. Raises :class:`BadURLError`."""
    if not isinstance(url, str) or not url.strip():
        raise BadURLError("the database URL is empty")
    url = url.strip()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("mongodb", "mongodb+srv"):
        parts = urlsplit(url)
        if not parts.netloc or parts.netloc.endswith("@"):
            raise BadURLError(f"{mask_url(url)}: a MongoDB URL needs a host (mongodb://host:27017/database)")
        database = parts.path.lstrip("/") or "streamlog"
        if re.search(r'[/\\. "$\x00]', database) or len(database) > 63:
            raise BadURLError(f"{mask_url(url)}: {database!r} is not a valid MongoDB database name")
        return Target("mongodb", url, database=database)
    if scheme == "sqlite":
        # SQLAlchemy's convention: sqlite:///relative.db and sqlite:////absolute/path.db
        rest = url[len("sqlite://"):]
        if not rest.startswith("/") or len(rest) < 2:
            raise BadURLError(f"{url}: use sqlite:///relative/file.db or sqlite:////absolute/file.db")
        path = Path(rest[1:]).expanduser()
        if path.name in ("", ".", "..") or path.is_dir():
            raise BadURLError(f"{url}: the path must name a database file, not a directory")
        return Target("sqlite", url, path=path)
    raise BadURLError(
        f"{mask_url(url)}: unsupported URL scheme {scheme or '(none)'!r}; "
        "use mongodb://host/db or sqlite:///path/to/file.db"
    )
