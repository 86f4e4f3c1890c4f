"""The embedded backend: one SQLite file, shared safely by any number of processes.

Data model (see docs/architecture.md):

* ``streams(id, name UNIQUE, created, options)`` — ``id`` is never reused
  (AUTOINCREMENT), so a dropped and recreated stream gets fresh tables;
* ``items_<id>(off INTEGER PRIMARY KEY, ts, data)`` — one table per stream whose
  rowid *is* the offset: appends go to the right edge of one B-tree, ``max(off)``
  and offset ranges are index lookups, and a stream's size never slows another;
* ``groups(sid, name, start, created)``;
* ``models(sid, grp, name, seq, saved, state)`` (the last few full states) and
  ``model_points(sid, grp, name, seq, saved, point)`` (the per-window metrics of the last
  :data:`~streamlog.store.base.KEEP_MODEL_HISTORY` windows), written in one transaction;
* in the companion file ``<database>-claims``: ``claims(sid, grp, seq, attempt, …)``
  with primary key ``(sid, grp, seq, attempt)`` (the arbitration key) and a partial
  index on open attempts by lease (:mod:`streamlog.store.sqlite_claims`). A separate
  file has its own write lock, so a long producer transaction never delays a lease
  renewal or a commit.

Both files are created readable by their owner only (0600, in a 0700 directory when
streamlog creates it). ``create=False`` (read-only commands) never creates anything.

The file runs in WAL mode (readers never block the writer) with
``synchronous=NORMAL``: a committed write survives a crash of any process; after
a power loss the last few commits may be lost (``?synchronous=full`` in the URL
makes every commit durable at the cost of an fsync). Writes use ``BEGIN IMMEDIATE``
so concurrent writers queue on the file lock (``busy_timeout``) instead of failing.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from itertools import repeat
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import orjson

from ..errors import BadURLError, NoDatabaseError, UnknownStreamError, UnreachableError
from ..items import decode_many, encode, now_ms
from .base import (
    DEFAULT_GROUP,
    KEEP_MODEL_HISTORY,
    KEEP_MODEL_VERSIONS,
    KEY_WINDOW_MS,
    Batch,
    Group,
    Once,
    Store,
    StreamRecord,
    offset_ranges,
    range_offsets,
)
from .sqlite_claims import SQLiteClaims

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL,
    options TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS groups (
    sid INTEGER NOT NULL,
    name TEXT NOT NULL,
    start INTEGER NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (sid, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS models (
    sid INTEGER NOT NULL,
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    saved INTEGER NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (sid, grp, name, seq)
);
CREATE TABLE IF NOT EXISTS model_points (
    sid INTEGER NOT NULL,
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    saved INTEGER NOT NULL,
    point BLOB NOT NULL,
    PRIMARY KEY (sid, grp, name, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency_keys (
    sid INTEGER NOT NULL,
    key TEXT NOT NULL,
    digest TEXT NOT NULL,
    offsets TEXT NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (sid, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created);
"""

def _create_private(path: Path) -> None:
    """Create ``path`` (and a missing parent directory, 0700) readable by its owner only."""
    if path.exists():
        return
    if not path.parent.is_dir():
        os.makedirs(path.parent, mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


class SQLiteStore(SQLiteClaims, Store):
    """A :class:`Store` in one SQLite file (see the module docstring for the layout)."""

    max_poll = 0.005
    idle_poll = 0.02  # only without inotify: with it, idle consumers sleep until a write
    encoded_only = True  # append stores the encoding (see Store.encoded_only)

    def __init__(self, url: str, path: Path, timeout: float = 30.0, create: bool = True):
        self.url = url
        self.path = Path(path)
        query = parse_qs(urlsplit(url).query) if "?" in url else {}
        self.path = Path(str(self.path).split("?", 1)[0])
        sync = (query.get("synchronous") or ["normal"])[0].upper()
        if sync not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise BadURLError(f"{url}: synchronous must be off, normal, full or extra")
        self._synchronous = sync
        self._timeout = timeout
        self.claims_path = self.path.with_name(self.path.name + "-claims")
        self._local = threading.local()
        self._sids: dict[str, int] = {}
        self._filled: set[int] = set()  # stream ids whose items table holds an item (it always will)
        self._lock = threading.Lock()
        if not create and not self.path.is_file():
            raise NoDatabaseError(f"no streamlog database at {self.path}")
        try:
            fresh_claims = not self.claims_path.exists()
            for file in (self.path, self.claims_path):
                _create_private(file)
            con = self._con()
            with self._write(con):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        con.execute(statement)
            ccon = self._ccon()
            with self._write(ccon):
                self._prepare_claims_file(con, ccon, fresh_claims)
        except (sqlite3.Error, OSError) as exc:
            raise UnreachableError(f"cannot open the database file {self.path}: {exc}") from None

    # -- connections -----------------------------------------------------------

    def _open(self, path: Path) -> sqlite3.Connection:
        con = sqlite3.connect(path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
        con.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(f"PRAGMA synchronous={self._synchronous}")
        return con

    def _con(self) -> sqlite3.Connection:
        """This thread's connection to the main file (streams, groups, items, models)."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.con = local.ccon = None
            local.pid = os.getpid()
        if local.con is None:
            local.con = self._open(self.path)
        return local.con

    def _ccon(self) -> sqlite3.Connection:
        """This thread's connection to the claims file."""
        self._con()  # resets both after a fork
        if self._local.ccon is None:
            self._local.ccon = self._open(self.claims_path)
        return self._local.ccon

    @staticmethod
    @contextmanager
    def _write_on(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """One write transaction; concurrent writers wait for the file lock."""
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _write(self, con: sqlite3.Connection | None = None):
        return self._write_on(con or self._con())

    def close(self) -> None:
        for attr in ("con", "ccon"):
            con = getattr(self._local, attr, None)
            if con is not None:
                con.close()
                setattr(self._local, attr, None)

    # -- streams --------------------------------------------------------------

    def _sid(self, name: str, create: bool = False) -> int | None:
        sid = self._sids.get(name)
        if sid is not None:
            return sid
        row = self._con().execute("SELECT id FROM streams WHERE name=?", (name,)).fetchone()
        if row is None:
            if not create:
                return None
            self.create_stream(name)
            return self._sids[name]
        self._sids[name] = row[0]
        return row[0]

    def _need(self, name: str) -> int:
        sid = self._sid(name)
        if sid is None:
            raise UnknownStreamError(f"no stream named {name!r}")
        return sid

    def _fresh(self, name: str) -> int | None:
        """The stream's current id, looked up (one index probe), never the cached one.

        The hot paths (items, claims) trust the cache and notice a drop by its missing
        table; lookups an operator or a model reader makes must also see a stream that
        another process dropped and created again under the same name."""
        self._sids.pop(name, None)
        return self._sid(name)

    def _need_fresh(self, name: str) -> int:
        sid = self._fresh(name)
        if sid is None:
            raise UnknownStreamError(f"no stream named {name!r}")
        return sid

    def create_stream(self, name: str) -> StreamRecord:
        con = self._con()
        row = con.execute("SELECT id, created, options FROM streams WHERE name=?", (name,)).fetchone()
        if row is None:
            with self._write(con):
                row = con.execute("SELECT id, created, options FROM streams WHERE name=?", (name,)).fetchone()
                if row is None:
                    created = now_ms()
                    cur = con.execute("INSERT INTO streams (name, created) VALUES (?, ?)", (name, created))
                    sid = cur.lastrowid
                    con.execute(
                        f"CREATE TABLE IF NOT EXISTS items_{sid} "
                        "(off INTEGER PRIMARY KEY, ts INTEGER NOT NULL, data BLOB NOT NULL)"
                    )
                    con.execute("INSERT OR IGNORE INTO groups VALUES (?, ?, 0, ?)", (sid, DEFAULT_GROUP, created))
                    row = (sid, created, "{}")
        self._sids[name] = row[0]
        return StreamRecord(name, row[1], orjson.loads(row[2]), uid=str(row[0]))

    def get_stream(self, name: str) -> StreamRecord | None:
        row = self._con().execute("SELECT id, created, options FROM streams WHERE name=?", (name,)).fetchone()
        if row is None:
            self._sids.pop(name, None)
            return None
        self._sids[name] = row[0]
        return StreamRecord(name, row[1], orjson.loads(row[2]), uid=str(row[0]))

    def streams(self) -> list[str]:
        return [r[0] for r in self._con().execute("SELECT name FROM streams ORDER BY name")]

    def set_options(self, name: str, options: dict) -> None:
        with self._write() as con:
            con.execute("UPDATE streams SET options=? WHERE name=?", (orjson.dumps(options).decode(), name))

    def drop(self, name: str) -> bool:
        with self._write() as con:
            row = con.execute("SELECT id FROM streams WHERE name=?", (name,)).fetchone()
            if row is None:
                return False
            sid = row[0]
            con.execute(f"DROP TABLE IF EXISTS items_{sid}")
            for table in ("groups", "models", "model_points", "idempotency_keys"):
                con.execute(f"DELETE FROM {table} WHERE sid=?", (sid,))
            con.execute("DELETE FROM streams WHERE id=?", (sid,))
        # Stream ids are never reused, so claims left by a crash right here are inert.
        with self._write(self._ccon()) as ccon:
            ccon.execute("DELETE FROM claims WHERE sid=?", (sid,))
        self._sids.pop(name, None)
        return True

    # -- items ----------------------------------------------------------------

    def _items_call(self, name: str, fn):
        """Run ``fn(sid)``; if the stream was dropped meanwhile, refresh the id once."""
        try:
            return fn(self._need(name))
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            self._sids.pop(name, None)
            return fn(self._need(name))

    def append(self, name: str, items: list[dict], time: int, encoded: list[bytes] | None = None) -> list[int]:
        if not items:
            return []
        rows = encoded if encoded is not None else [encode(item) for item in items]

        def run(sid: int) -> list[int]:
            if len(rows) == 1:
                # One autocommit statement: SQLite takes the write lock before it picks the
                # offset, so this is as safe as BEGIN IMMEDIATE … COMMIT, at a quarter of
                # the statements. In a table known to hold an item the offset is SQLite's
                # own next rowid (max + 1: the newest item is never deleted, see trim);
                # the first item of a stream gets offset 0.
                if sid in self._filled:
                    cur = self._con().execute(f"INSERT INTO items_{sid} (ts, data) VALUES (?, ?)", (time, rows[0]))
                else:
                    cur = self._con().execute(
                        f"INSERT INTO items_{sid} (off, ts, data) VALUES "
                        f"((SELECT coalesce(max(off) + 1, 0) FROM items_{sid}), ?, ?)", (time, rows[0]))
                    self._filled.add(sid)
                return [cur.lastrowid]  # type: ignore[list-item]
            with self._write() as con:
                return self._insert(con, sid, rows, time)

        try:
            return self._items_call(name, run)
        except UnknownStreamError:
            # Dropped (by any process): the same on every backend, see Store.append.
            raise UnknownStreamError(f"stream {name!r} was dropped") from None

    @staticmethod
    def _insert(con: sqlite3.Connection, sid: int, rows: list[bytes], time: int) -> list[int]:
        """Insert encoded items after the newest offset (inside the caller's write transaction)."""
        last = con.execute(f"SELECT max(off) FROM items_{sid}").fetchone()[0]
        first = 0 if last is None else last + 1
        con.executemany(
            f"INSERT INTO items_{sid} (off, ts, data) VALUES (?, ?, ?)",
            zip(range(first, first + len(rows)), repeat(time), rows),
        )
        return list(range(first, first + len(rows)))

    def append_once(self, name: str, key: str, digest: str, items: list[dict], time: int,
                    encoded: list[bytes] | None = None, *, window_ms: int = KEY_WINDOW_MS,
                    wait: float = 30.0) -> Once:
        # The key's row and the items in one transaction: a concurrent call with the same key
        # queues on the write lock and then finds the row; a crash leaves neither.
        rows = encoded if encoded is not None else [encode(item) for item in items]

        def run(sid: int) -> Once:
            with self._write() as con:
                found = con.execute("SELECT digest, offsets, created FROM idempotency_keys WHERE sid=? AND key=?",
                                    (sid, key)).fetchone()
                if found is not None and found[2] >= time - window_ms:
                    return Once(range_offsets(orjson.loads(found[1])), False, found[0])
                offsets = self._insert(con, sid, rows, time) if rows else []
                con.execute("INSERT OR REPLACE INTO idempotency_keys VALUES (?, ?, ?, ?, ?)",
                            (sid, key, digest, orjson.dumps(offset_ranges(offsets)).decode(), time))
            return Once(offsets, True, digest)

        try:
            once = self._items_call(name, run)
        except UnknownStreamError:
            raise UnknownStreamError(f"stream {name!r} was dropped") from None
        self._prune_keys_maybe(time, window_ms)
        return once

    def forget_keys(self, older_than: int) -> int:
        with self._write() as con:
            return con.execute("DELETE FROM idempotency_keys WHERE created < ?", (older_than,)).rowcount

    def read(self, name: str, start: int = 0, limit: int | None = None, end: int | None = None) -> Batch:
        def run(sid: int) -> Batch:
            sql = f"SELECT off, ts, data FROM items_{sid} WHERE off >= ?"
            args: list = [start]
            if end is not None:
                sql += " AND off <= ?"
                args.append(end)
            sql += " ORDER BY off"
            if limit is not None:
                sql += " LIMIT ?"
                args.append(limit)
            rows = self._con().execute(sql, args).fetchall()
            if not rows:
                return Batch()
            offsets, times, data = zip(*rows, strict=True)
            return Batch(list(offsets), list(times), decode_many(data))

        return self._items_call(name, run)

    def _scalar(self, name: str, query: str, *args) -> Any:
        """One value of a query over the stream's items table (``{items}`` names it)."""
        return self._items_call(name, lambda sid: self._con().execute(query.format(items=f"items_{sid}"),
                                                                      args).fetchone()[0])

    def last_offset(self, name: str) -> int | None:
        return self._scalar(name, "SELECT max(off) FROM {items}")

    def first_offset(self, name: str) -> int | None:
        return self._scalar(name, "SELECT min(off) FROM {items}")

    def count(self, name: str, after: int | None = None) -> int:
        if after is None:
            return self._scalar(name, "SELECT count(*) FROM {items}")
        return self._scalar(name, "SELECT count(*) FROM {items} WHERE off > ?", after)

    def _trim_bound(self, name: str, wait: bool) -> int | None:
        # No fence: an append reads max(off) under the write lock, so it never reuses
        # an offset below the newest one.
        return self.last_offset(name)

    def _delete_below(self, name: str, offset: int) -> int:
        def run(sid: int) -> int:
            with self._write() as con:
                return con.execute(f"DELETE FROM items_{sid} WHERE off < ?", (offset,)).rowcount

        return self._items_call(name, run)

    def version(self) -> int:
        return self._con().execute("PRAGMA data_version").fetchone()[0]

    def watch(self, name: str | None = None):
        from .watch import file_watch

        return file_watch(self.path)

    # -- groups ---------------------------------------------------------------

    def create_group(self, name: str, group: str, start: int) -> Group:
        sid = self._need_fresh(name)
        con = self._con()
        with self._write(con):
            con.execute("INSERT OR IGNORE INTO groups VALUES (?, ?, ?, ?)", (sid, group, start, now_ms()))
            row = con.execute("SELECT start, created FROM groups WHERE sid=? AND name=?", (sid, group)).fetchone()
        return Group(name, group, row[0], row[1])

    def groups(self, name: str) -> list[Group]:
        sid = self._need_fresh(name)
        rows = self._con().execute("SELECT name, start, created FROM groups WHERE sid=? ORDER BY name", (sid,))
        return [Group(name, g, s, c) for g, s, c in rows]

    def delete_group(self, name: str, group: str, below_seq: int) -> None:
        sid = self._need(name)
        with self._write() as con:
            con.execute("DELETE FROM groups WHERE sid=? AND name=?", (sid, group))
        with self._write(self._ccon()) as con:
            con.execute("DELETE FROM claims WHERE sid=? AND grp=? AND seq < ?", (sid, group, below_seq))

    # -- models ---------------------------------------------------------------

    def save_model(self, name: str, group: str, model: str, seq: int, state: dict,
                   point: dict | None = None) -> None:
        sid = self._need_fresh(name)
        blob = orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY)
        saved = now_ms()
        with self._write() as con:
            con.execute("INSERT OR REPLACE INTO models VALUES (?,?,?,?,?,?)",
                        (sid, group, model, seq, saved, blob))
            if point is not None:
                # the window's metrics, kept for the last KEEP_MODEL_HISTORY windows (index range deletes)
                con.execute("INSERT OR REPLACE INTO model_points VALUES (?,?,?,?,?,?)",
                            (sid, group, model, seq, saved, orjson.dumps(point, option=orjson.OPT_SERIALIZE_NUMPY)))
                con.execute("DELETE FROM model_points WHERE sid=? AND grp=? AND name=? AND seq <= ?",
                            (sid, group, model, seq - KEEP_MODEL_HISTORY))
            con.execute(
                "DELETE FROM models WHERE sid=? AND grp=? AND name=? AND seq < ("
                "SELECT min(seq) FROM (SELECT seq FROM models WHERE sid=? AND grp=? AND name=? "
                "ORDER BY seq DESC LIMIT ?))",
                (sid, group, model, sid, group, model, KEEP_MODEL_VERSIONS),
            )

    def load_model(self, name: str, group: str, model: str) -> tuple[int, int, dict] | None:
        sid = self._fresh(name)
        if sid is None:
            return None
        row = self._con().execute(
            "SELECT seq, saved, state FROM models WHERE sid=? AND grp=? AND name=? ORDER BY seq DESC LIMIT 1",
            (sid, group, model),
        ).fetchone()
        return (row[0], row[1], orjson.loads(row[2])) if row else None

    def models(self, name: str) -> list[tuple[str, str, int, int]]:
        sid = self._need_fresh(name)
        rows = self._con().execute(
            "SELECT grp, name, max(seq), saved FROM models WHERE sid=? GROUP BY grp, name ORDER BY grp, name",
            (sid,),
        ).fetchall()
        return [tuple(r) for r in rows]

    def model_history(self, name: str, group: str, model: str,
                      limit: int = KEEP_MODEL_HISTORY) -> list[tuple[int, int, dict]]:
        sid = self._need_fresh(name)
        rows = self._con().execute(
            "SELECT seq, saved, point FROM model_points WHERE sid=? AND grp=? AND name=? ORDER BY seq DESC LIMIT ?",
            (sid, group, model, max(0, int(limit))),
        ).fetchall()
        return [(seq, saved, orjson.loads(point)) for seq, saved, point in reversed(rows)]
