"""The upsert of one client's window into `client_stats`, all or nothing (docs/reference.md, Tables):
in its own transaction, or inside a `WriteGroup` transaction that holds several whole clients.

The same code writes both engines: `db` is a SQLite `ReplicaDatabase` or a PostgreSQL
`postgres.Connection` (execute, executemany, insert_rows, atomic, in_transaction, encode_change)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from ..days import utc_now
from ..metrics import METRICS
from ..records import ClientRows

if TYPE_CHECKING:
    from .schema import ReplicaDatabase

_COLUMNS = (*METRICS, "extra")
_SELECT_WINDOW = f"SELECT stat_date, {', '.join(_COLUMNS)} FROM client_stats WHERE client_id = ? AND stat_date BETWEEN ? AND ?"
_SELECT_WINDOWS = f"SELECT client_id, stat_date, {', '.join(_COLUMNS)} FROM client_stats WHERE client_id IN ({{ids}}) AND stat_date BETWEEN ? AND ?"
_INSERT_COLUMNS = ("client_id", "stat_date", *_COLUMNS, "synced_at", "created_at", "updated_at")

_UPDATE = (
    f"UPDATE client_stats SET {', '.join(f'{c} = ?' for c in _COLUMNS)}, synced_at = ?, updated_at = ? "
    "WHERE client_id = ? AND stat_date = ?"
)


# Bounds of one grouped transaction: enough clients that a COMMIT (an fsync of the WAL) is paid
# rarely, few enough that readers see progress often and the WAL stays small.
GROUP_MAX_ROWS = 20_000
GROUP_MAX_SECONDS = 1.0
# Rows a group keeps for its commit (updated ones, and new ones where they wait too) before it
# runs them anyway: a remote that restates every value of a year, or a first sync, would
# otherwise have a whole group's rows and changes held in memory.
LATER_MAX_ROWS = 2_000

_LOG_CHANGE = 'INSERT INTO stat_changes(run_id, client_id, stat_date, "column", old_value, new_value, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?)'


@dataclass
class ClientWrite:
    """What writing one client's window did."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    warning: str | None = None
    days: list[str] = field(default_factory=list)  # the stat_dates inserted, updated or deleted


def write_client_window(
    db: ReplicaDatabase,
    run_id: int,
    client_id: int,
    window: tuple[date, date],
    parsed: ClientRows,
    prune: bool = False,
) -> ClientWrite:
    """Upsert one client's window in one transaction: rows, prune, rejects, last_synced_at.

    New keys are inserted; changed rows are updated (`created_at` stays) and each
    changed value is logged in `stat_changes`; unchanged rows are not written at all.
    """
    with db.atomic():
        later = _Later()
        result = _write_window(db, run_id, client_id, window, parsed, prune, later)
        later.run(db)
        return result


def _write_window(db: ReplicaDatabase, run_id: int, client_id: int, window: tuple[date, date], parsed: ClientRows,
                  prune: bool, later: _Later, stored: dict[str, tuple] | None = None) -> ClientWrite:
    """`write_client_window` inside the caller's open transaction, which must roll back on an
    error, and must run `later` (the client's last_synced_at, its updates and the changes they
    log, and its new rows where the engine says so) before it commits. `stored`: the client's
    stored rows (day -> values) of at least the window, when the caller has read them already
    (rows outside the window are never looked at)."""
    now = utc_now()
    # Rows dated outside the window were rejected by records.parse_rows: the window holds them all.
    start, end = window[0].isoformat(), window[1].isoformat()
    result = ClientWrite(rejected=len(parsed.rejects))
    encode = db.encode_change
    if stored is None:
        stored = {row[0]: tuple(row[1:]) for row in db.execute(_SELECT_WINDOW, [client_id, start, end])}
    inserts, updates, changes = [], [], []
    for day, values in parsed.values.items():
        key = day.isoformat()
        previous = stored.get(key)
        if previous is None:
            inserts.append((client_id, key, *values, now, now, now))
        elif previous != values:
            updates.append((*values, now, now, client_id, key))
            changes.extend(
                (run_id, client_id, key, column, encode(old), encode(new), now)
                for column, old, new in zip(_COLUMNS, previous, values)
                if old != new
            )
        else:
            result.unchanged += 1
    if db.inserts_wait_for_commit:
        later.inserts += inserts
    else:
        db.insert_rows("client_stats", _INSERT_COLUMNS, inserts)
    later.updates += updates
    later.changes += changes
    later.synced.append((now, client_id))
    result.inserted, result.updated = len(inserts), len(updates)
    result.days = [row[1] for row in inserts] + [row[-1] for row in updates]
    if prune:
        gone, result.warning = _prune(db, run_id, client_id, window, stored, parsed, now)
        result.deleted = len(gone)
        result.days += gone
    if parsed.rejects:
        db.executemany(
            "INSERT INTO sync_rejects(run_id, client_id, stat_date, reason, payload) VALUES (?, ?, ?, ?, ?)",
            [(run_id, client_id, r.stat_date, r.reason, r.payload) for r in parsed.rejects],
        )
    return result


def _prune(
    db: ReplicaDatabase, run_id: int, client_id: int, window: tuple[date, date], stored: dict,
    parsed: ClientRows, now: str,
) -> tuple[list[str], str | None]:
    """Delete stored rows in the window the remote no longer returns (`sync --prune`), each logged
    in `stat_changes` as column `*` with the old row as JSON; returns their dates."""
    first, last = window[0].isoformat(), window[1].isoformat()
    kept = {day.isoformat() for day in parsed.values}
    gone = [key for key in stored if first <= key <= last and key not in kept]
    if not gone:
        return [], None
    if parsed.fetched == 0:
        return [], (
            f"client {client_id}: remote returned no rows for {window[0]}..{window[1]} "
            f"but {len(gone)} are stored; nothing pruned"
        )
    if parsed.rejects:
        # A rejected row still exists remotely, but its date may be unreadable: keep everything.
        return [], f"client {client_id}: {len(parsed.rejects)} rows rejected; nothing pruned"
    db.executemany("DELETE FROM client_stats WHERE client_id = ? AND stat_date = ?", [(client_id, k) for k in gone])
    db.executemany(
        _LOG_CHANGE,
        [(run_id, client_id, k, "*", db.encode_change(json.dumps(dict(zip(_COLUMNS, stored[k])))), None, now) for k in gone],
    )
    return gone, None


@dataclass
class _Later:
    """What writes leave for the end of their transaction, to run as a few statements for all
    their clients: new rows (on engines that say so), updates of changed rows and the changes
    they log, and each client's last_synced_at."""

    inserts: list[tuple] = field(default_factory=list)
    updates: list[tuple] = field(default_factory=list)
    changes: list[tuple] = field(default_factory=list)
    synced: list[tuple[str, int]] = field(default_factory=list)  # (time stamp, client id)
    clients: set[int] = field(default_factory=set)  # whose inserts or updates wait here

    @property
    def rows(self) -> int:
        return len(self.inserts) + len(self.updates)

    def run(self, db: ReplicaDatabase) -> None:
        """Run everything that waits, then forget it."""
        db.insert_rows("client_stats", _INSERT_COLUMNS, self.inserts)
        if self.updates:
            db.executemany(_UPDATE, self.updates)
            db.executemany(_LOG_CHANGE, self.changes)
        if self.synced:
            db.executemany("UPDATE clients SET last_synced_at = ? WHERE id = ?", self.synced)
        self.clear()

    def clear(self) -> None:
        self.inserts, self.updates, self.changes, self.synced = [], [], [], []
        self.clients.clear()


class WriteGroup:
    """Whole client windows written several to a transaction, each client still all or nothing.

    A kill rolls back the whole uncommitted group, and so does an error while a client is
    written (`write` rolls it back before raising): every client is then as it was or fully
    updated. A client has no savepoint of its own: SQLite would copy every index page the client
    touches to a sub-journal first, two more writes a row on a first sync, only to roll back
    what the group's rollback undoes anyway. `due` says when the group reached its bounds and
    should be committed.

    The clients' last_synced_at are set together just before the commit, in the same
    transaction: one statement a client cost a PostgreSQL sync a round trip each (2.7 s of an
    18 s daily sync at 10,000 clients). For the same reason the updates of changed rows (and
    the changes they log), and on PostgreSQL the new rows, wait for the commit (see `_Later`),
    and `expect` reads the stored rows of the clients about to be written by one statement.
    """

    def __init__(self, db: ReplicaDatabase, max_rows: int = GROUP_MAX_ROWS, max_seconds: float = GROUP_MAX_SECONDS):
        self.db = db
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.rows = 0
        self._began = 0.0
        self._stored: dict[int, tuple[tuple[date, date], dict[str, tuple]]] = {}  # read by `expect`, not yet written
        self._later = _Later()

    def write(self, run_id: int, client_id: int, window: tuple[date, date], parsed: ClientRows, prune: bool = False) -> ClientWrite:
        """`write_client_window` inside the group's transaction (opened on the first write); on an
        error the group is rolled back, its clients as they were, before the error is raised."""
        if not self.db.in_transaction:
            self.db.execute("BEGIN")
            self._began, self.rows = time.monotonic(), 0
        read = self._stored.pop(client_id, None)
        stored = read[1] if read is not None and read[0] == window else None
        try:
            if client_id in self._later.clients or self._later.rows >= LATER_MAX_ROWS:
                self._later.run(self.db)  # written twice, the second compares with the first's rows
            result = _write_window(self.db, run_id, client_id, window, parsed, prune, self._later, stored)
            if result.updated or result.inserted:
                self._later.clients.add(client_id)
        except BaseException:
            self.rollback()  # never leave half a client in a transaction someone could commit
            raise
        self.rows += len(parsed.values) + len(parsed.rejects)
        return result

    def expect(self, windows: list[tuple[int, tuple[date, date]]]) -> None:
        """Read the stored rows of these (client, window) pairs, about to be written, by one
        statement; `write` then uses them instead of reading its client's own. The run holds the
        writers' lock, so only this group changes them; a rollback forgets them, as they may hold
        rows it undid."""
        if not windows:
            return
        first = min(window[0] for _, window in windows).isoformat()
        last = max(window[1] for _, window in windows).isoformat()
        ids = ", ".join(str(int(client_id)) for client_id, _ in windows)
        read: dict[int, dict[str, tuple]] = {client_id: {} for client_id, _ in windows}
        for row in self.db.execute(_SELECT_WINDOWS.format(ids=ids), [first, last]):
            read[row[0]][row[1]] = tuple(row[2:])
        for client_id, window in windows:
            self._stored[client_id] = (window, read[client_id])

    @property
    def due(self) -> bool:
        return self.rows >= self.max_rows or (self.rows > 0 and time.monotonic() - self._began >= self.max_seconds)

    def commit(self, also: Callable[[], None] | None = None) -> None:
        """Make every client written since the last commit durable (nothing to do when none was),
        and with them whatever `also` writes."""
        if self.db.in_transaction:
            try:
                self._later.run(self.db)
                if also is not None:
                    also()
            except BaseException:
                self.rollback()  # as a failed write: the group's clients stay as they were
                raise
            self.db.execute("COMMIT")
        self.rows = 0

    def rollback(self) -> None:
        """Drop every client written since the last commit: they stay as they were."""
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        self._stored.clear()
        self._later.clear()
        self.rows = 0
