"""The claims file of the embedded backend, ``<database>-claims``: its schema, how a file
written by an earlier version is brought up to date, and the claim operations of the
store contract with their row mapping (:class:`SQLiteClaims`, part of
:class:`~streamlog.store.sqlite.SQLiteStore`).

A row is one :class:`~streamlog.store.base.Claim`: ``ws``/``we`` are its ``start``/``end``,
``n`` its ``count``, ``open`` whether its state is open, and ``epoch`` a key-discovery
record's epoch (NULL for every other kind). Files written before the ``epoch`` column
existed get it when opened (NULL in their rows: such a discovery record kept its epoch
in ``ws``, where :func:`streamlog.delivery.chain.epoch_of` still finds it).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, ContextManager

from ..items import now_ms
from .base import COMMITTED, FAILED, OPEN_STATES, Claim

# Claims live in a companion file, "<database>-claims": a producer's long write
# transaction on the items (a 400k-item extend holds the write lock for seconds) must
# never hold up a consumer renewing its lease, claiming or committing a window.
_CLAIMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    sid INTEGER NOT NULL,
    grp TEXT NOT NULL,
    seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    lo INTEGER NOT NULL,
    hi INTEGER NOT NULL,
    n INTEGER NOT NULL,
    ws INTEGER,
    we INTEGER,
    windows INTEGER NOT NULL,
    owner TEXT NOT NULL,
    lease INTEGER NOT NULL,
    state TEXT NOT NULL,
    open INTEGER NOT NULL,
    error TEXT,
    created INTEGER NOT NULL,
    epoch INTEGER,
    PRIMARY KEY (sid, grp, seq, attempt)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS claims_open ON claims (sid, grp, lease) WHERE open = 1;
"""

_CLAIM_COLUMNS = "grp, seq, attempt, lo, hi, n, ws, we, windows, owner, lease, state, error, created, epoch"
#: every column of a claims row, in the order the INSERTs give them
_CLAIM_ROW = "sid, grp, seq, attempt, lo, hi, n, ws, we, windows, owner, lease, state, open, error, created, epoch"
#: the columns of the claims table before ``epoch`` was added (databases written by earlier versions)
_LEGACY_CLAIM_ROW = "sid, grp, seq, attempt, lo, hi, n, ws, we, windows, owner, lease, state, open, error, created"


class SQLiteClaims:
    """The claim operations of :class:`~streamlog.store.sqlite.SQLiteStore`, on its claims file."""

    if TYPE_CHECKING:  # provided by SQLiteStore
        def _need(self, name: str) -> int: ...

        def _need_fresh(self, name: str) -> int: ...

        def _ccon(self) -> sqlite3.Connection: ...

        def _write(self, con: sqlite3.Connection | None = None) -> ContextManager[sqlite3.Connection]: ...

        @staticmethod
        def _write_on(con: sqlite3.Connection) -> ContextManager[sqlite3.Connection]: ...

    def _prepare_claims_file(self, con: sqlite3.Connection, ccon: sqlite3.Connection, fresh: bool) -> None:
        """Create the table (inside the opener's write transaction on ``ccon``), add what
        earlier versions lacked, and move a ``fresh`` file's claims over from the main file."""
        for statement in _CLAIMS_SCHEMA.split(";"):
            if statement.strip():
                ccon.execute(statement)
        self._add_epoch_column(ccon)
        if fresh:
            self._migrate_claims(con, ccon)

    @staticmethod
    def _add_epoch_column(ccon: sqlite3.Connection) -> None:
        """Claims files written before key-discovery records had their own ``epoch`` column
        get it (NULL in their rows; such a record kept its epoch in ``ws``, which
        streamlog.delivery.chain.epoch_of still reads). Runs inside the opener's write
        transaction, so two processes opening at once add it once."""
        columns = {row[1] for row in ccon.execute("PRAGMA table_info(claims)")}
        if "epoch" not in columns:
            ccon.execute("ALTER TABLE claims ADD COLUMN epoch INTEGER")

    def _migrate_claims(self, con: sqlite3.Connection, ccon: sqlite3.Connection) -> None:
        """Databases written before the claims file existed kept claims in the main file."""
        if con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='claims'").fetchone():
            rows = con.execute(f"SELECT {_LEGACY_CLAIM_ROW} FROM claims").fetchall()
            ccon.executemany(f"INSERT OR IGNORE INTO claims ({_LEGACY_CLAIM_ROW}) VALUES "
                             "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            with self._write_on(con):
                con.execute("DROP TABLE claims")

    # -- claims ---------------------------------------------------------------

    @staticmethod
    def _insert_claim(con: sqlite3.Connection, sid: int, c: Claim) -> None:
        """Insert attempt ``c`` (IntegrityError: its key exists)."""
        con.execute(f"INSERT INTO claims ({_CLAIM_ROW}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (sid, c.group, c.seq, c.attempt, c.lo, c.hi, c.count, c.start, c.end, c.windows, c.owner,
                     c.lease, c.state, int(c.state in OPEN_STATES), c.error, c.created or now_ms(), c.epoch))

    @staticmethod
    def _seal(con: sqlite3.Connection, sid: int, c: Claim, state: str, error: str | None) -> bool:
        """The seal of attempt ``c`` and its close; False (nothing written) when a newer
        attempt holds the seal's key. Inside the caller's write transaction."""
        try:  # the seal: the next attempt's key, closed
            con.execute(
                f"INSERT INTO claims ({_CLAIM_ROW}) VALUES (?,?,?,?,?,?,?,?,?,?,?,0,?,0,?,?,?)",
                (sid, c.group, c.seq, c.attempt + 1, c.lo, c.hi, c.count, c.start, c.end, c.windows,
                 c.owner, state, error, now_ms(), c.epoch))
        except sqlite3.IntegrityError:
            return False  # a newer attempt took the window over
        con.execute("UPDATE claims SET state=?, open=0, error=? WHERE sid=? AND grp=? AND seq=? AND attempt=?",
                    (state, error, sid, c.group, c.seq, c.attempt))
        return True

    def claim(self, claim: Claim) -> bool:
        sid = self._need(claim.stream)
        try:
            # One autocommit statement: its own write transaction (no BEGIN/COMMIT round).
            self._insert_claim(self._ccon(), sid, claim)
        except sqlite3.IntegrityError:
            return False
        return True

    def _claims(self, name: str, rows) -> list[Claim]:
        return [
            Claim(stream=name, group=g, seq=q, attempt=k, lo=lo, hi=hi, count=n, start=ws, end=we, windows=w,
                  owner=owner, lease=lease, state=state, error=error, created=created, epoch=epoch)
            for g, q, k, lo, hi, n, ws, we, w, owner, lease, state, error, created, epoch in rows
        ]

    def last_claim(self, name: str, group: str) -> Claim | None:
        sid = self._need(name)
        rows = self._ccon().execute(
            f"SELECT {_CLAIM_COLUMNS} FROM claims WHERE sid=? AND grp=? ORDER BY seq DESC, attempt DESC LIMIT 1",
            (sid, group),
        ).fetchall()
        return self._claims(name, rows)[0] if rows else None

    def _update(self, claim: Claim, sql: str, args: tuple) -> None:
        sid = self._need(claim.stream)
        # One autocommit statement: it takes the claims file's write lock by itself.
        self._ccon().execute(f"UPDATE claims SET {sql} WHERE sid=? AND grp=? AND seq=? AND attempt=?",
                             (*args, sid, claim.group, claim.seq, claim.attempt))

    def renew(self, claim: Claim, lease: int) -> None:
        self._update(claim, "lease=?", (lease,))

    def commit(self, claim: Claim, state: str = COMMITTED, error: str | None = None) -> bool:
        sid = self._need(claim.stream)
        with self._write(self._ccon()) as con:
            return self._seal(con, sid, claim, state, error)

    def commit_and_claim(self, claim: Claim, next_claim: Claim) -> tuple[bool, bool]:
        """The seal, the close and the next claim in one write transaction (one WAL commit
        where a commit and a claim take two). A lost race for the next claim undoes only
        that insert (SQLite rolls back the failing statement, not the transaction)."""
        sid = self._need(claim.stream)
        with self._write(self._ccon()) as con:
            if not self._seal(con, sid, claim, COMMITTED, None):
                return False, False
            try:
                self._insert_claim(con, sid, next_claim)
            except sqlite3.IntegrityError:
                return True, False
        return True, True

    def release(self, claim: Claim, error: str, retry_at: int = 0) -> None:
        self._update(claim, "state=?, lease=?, error=?", (FAILED, retry_at, error))

    def supersede(self, claim: Claim) -> None:
        self._update(claim, "open=0", ())

    def expired(self, name: str, group: str, now: int, limit: int = 10) -> list[Claim]:
        sid = self._need(name)
        rows = self._ccon().execute(
            f"SELECT {_CLAIM_COLUMNS} FROM claims WHERE sid=? AND grp=? AND open=1 AND lease < ? "
            "ORDER BY seq, attempt LIMIT ?",
            (sid, group, now, limit),
        ).fetchall()
        return self._claims(name, rows)

    def open_claims(self, name: str, group: str | None = None) -> list[Claim]:
        sid = self._need_fresh(name)
        if group is None:
            rows = self._ccon().execute(
                f"SELECT {_CLAIM_COLUMNS} FROM claims WHERE sid=? AND open=1 ORDER BY grp, seq, attempt", (sid,))
        else:
            rows = self._ccon().execute(
                f"SELECT {_CLAIM_COLUMNS} FROM claims WHERE sid=? AND grp=? AND open=1 ORDER BY seq, attempt",
                (sid, group))
        return self._claims(name, rows.fetchall())

    def forget_claims(self, name: str, below: int, older_than: int) -> int:
        sid = self._need(name)
        with self._write(self._ccon()) as con:
            return con.execute(
                "DELETE FROM claims WHERE sid=? AND open=0 AND hi < ? AND created < ? "
                "AND seq < (SELECT max(c.seq) FROM claims c WHERE c.sid=claims.sid AND c.grp=claims.grp)",
                (sid, below, older_than),
            ).rowcount
