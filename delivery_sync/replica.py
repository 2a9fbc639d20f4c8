"""The SQLite replica: schema and migrations, the writing lock, runs, and the upsert.

This is the only module that writes the database. Writers open it with
`open_replica()` while holding `writer_lock()`; readers use `readonly.py`.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterator

import sqlite_utils
from sqlite_utils.migrations import Migrations

from .errors import DeliverySyncError, LockHeld, UsageError
from .metrics import COUNT_METRICS, METRICS
from .records import Client, ParsedRows

SCHEMA_VERSION_KEY = "schema_version"
# How long a writer waits for another program's write transaction on the file.
BUSY_TIMEOUT_MS = 10_000
RUN_COUNTERS = (
    "clients_total",
    "clients_ok",
    "clients_failed",
    "rows_fetched",
    "rows_inserted",
    "rows_updated",
    "rows_unchanged",
    "rows_rejected",
    "rows_deleted",
    "requests",
)


def utc_now() -> str:
    """Now as the replica writes times: `YYYY-MM-DDTHH:MM:SS+00:00`."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# --- schema -----------------------------------------------------------------

migrations = Migrations("delivery_sync")


@migrations(name="0001_initial")
def _initial(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["clients"].create(
        {
            "id": int,
            "name": str,
            "active": int,
            "first_seen_at": str,
            "last_seen_at": str,
            "last_synced_at": str,
        },
        pk="id",
        not_null={"active"},
        defaults={"active": 1},
    )
    stats_columns: dict[str, type] = {"client_id": int, "stat_date": str}
    stats_columns.update({m: int if m in COUNT_METRICS else float for m in METRICS})
    stats_columns.update({"extra": str, "synced_at": str, "created_at": str, "updated_at": str})
    stats = db["client_stats"]
    stats.create(stats_columns, not_null={"client_id", "stat_date"})
    stats.create_index(["client_id", "stat_date"], unique=True)
    for column in ("stat_date", "total_sales", "synced_at"):
        stats.create_index([column])
    db["sync_runs"].create(
        {
            "id": int,
            "command": str,
            "status": str,
            "started_at": str,
            "finished_at": str,
            "window_start": str,
            "window_end": str,
            **{counter: int for counter in RUN_COUNTERS},
            "error": str,
        },
        pk="id",
        not_null={"command", "status", "started_at"},
    )
    db["sync_failures"].create({"run_id": int, "client_id": int, "error": str}, foreign_keys=[("run_id", "sync_runs", "id")])
    db["sync_failures"].create_index(["run_id"])
    db["sync_rejects"].create(
        {"run_id": int, "client_id": int, "stat_date": str, "reason": str, "payload": str},
        foreign_keys=[("run_id", "sync_runs", "id")],
    )
    db["sync_rejects"].create_index(["run_id"])


SCHEMA_VERSION = len(migrations._migrations)


def open_replica(path: Path) -> sqlite_utils.Database:
    """Open (creating if needed) the replica read-write, in WAL mode, migrated to the latest schema.

    Refuses a file that is some other program's database, or a replica written by
    a newer delivery-sync, rather than change it.
    """
    if path.is_dir():
        raise UsageError(f"{path} is a folder, not a replica file")
    if path.parent and not path.parent.exists():
        raise UsageError(f"cannot create replica {path}: folder {path.parent} does not exist")
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db = sqlite_utils.Database(conn)
        _check_is_ours(db, path)
        db.enable_wal()
        migrations.apply(db)
        db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [SCHEMA_VERSION_KEY, str(SCHEMA_VERSION)],
        )
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise DeliverySyncError(
                f"replica {path} is locked by another program (waited {BUSY_TIMEOUT_MS / 1000:g} s)",
                hint="close sqlite3 or other sessions writing to it",
            ) from None
        raise UsageError(f"cannot open replica {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{path} is not a SQLite database ({exc})") from None
    return db


def _check_is_ours(db: sqlite_utils.Database, path: Path) -> None:
    """Refuse, before anything is changed, a file that is not an empty database or one of our replicas."""
    tables = set(db.table_names())
    if not tables:
        return
    version = None
    if {"meta", "sync_runs"} <= tables:
        row = db.execute("SELECT value FROM meta WHERE key = ?", [SCHEMA_VERSION_KEY]).fetchone()
        version = row[0] if row else None
    if version is None or not str(version).isdigit():
        raise UsageError(f"{path} is not a delivery-sync replica (it holds other tables)", hint="check --db or `database`")
    if int(version) > SCHEMA_VERSION:
        raise UsageError(
            f"replica {path} has schema version {version}, newer than this delivery-sync knows ({SCHEMA_VERSION})",
            hint="upgrade delivery-sync",
        )


# --- the writing lock --------------------------------------------------------


@contextmanager
def writer_lock(database: Path, command: str) -> Iterator[None]:
    """Hold the exclusive `<database>.lock` for a whole writing run, or raise LockHeld at once."""
    lock_path = database.with_name(database.name + ".lock")
    if not lock_path.parent.exists():
        raise UsageError(f"cannot create replica {database}: folder {lock_path.parent} does not exist")
    fd, created = _acquire(lock_path, database)
    try:
        holder = {"pid": os.getpid(), "command": command, "started_at": utc_now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            if created and not database.exists():
                # The run stopped before creating the replica (e.g. an unknown client id):
                # leave no file behind. Unlinked while still locked; _acquire re-checks.
                os.unlink(lock_path)
            else:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(lock_path: Path, database: Path) -> tuple[int, bool]:
    """Open and flock the lock file; returns the fd and whether this call created the file."""
    while True:
        try:
            fd, created = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            try:
                fd, created = os.open(lock_path, os.O_RDWR), False
            except FileNotFoundError:
                continue  # removed by its holder meanwhile: try again
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            message = f"another run holds the lock on {database}: {_describe_holder(fd)}"
            os.close(fd)
            raise LockHeld(message) from None
        try:
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            return fd, created
        os.close(fd)  # we locked a file its holder had just removed: lock the current one


def _describe_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {holder['pid']} running '{holder['command']}' since {holder['started_at']}"
    except (ValueError, KeyError, OSError):
        return "holder unknown"


# --- runs ---------------------------------------------------------------------


@dataclass
class RunCounts:
    """The counters of one `sync_runs` row."""

    clients_total: int = 0
    clients_ok: int = 0
    clients_failed: int = 0
    rows_fetched: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    rows_rejected: int = 0
    rows_deleted: int = 0
    requests: int = 0
    warnings: list[str] = field(default_factory=list)

    def as_row(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in RUN_COUNTERS}


def _mark_interrupted_runs(db: sqlite_utils.Database) -> int:
    """Runs left `running` by a process that died become `failed` ("interrupted").

    Only called (by `start_run`) while holding the writer lock, so no live run can be `running`.
    """
    cursor = db.execute(
        "UPDATE sync_runs SET status = 'failed', finished_at = ?, "
        "error = COALESCE(error || '; ', '') || 'interrupted' WHERE status = 'running'",
        [utc_now()],
    )
    return cursor.rowcount


def start_run(
    db: sqlite_utils.Database, command: str, window: tuple[date, date] | None = None, clients_total: int = 0
) -> int:
    """Insert a `running` row in `sync_runs` and return its id; the caller holds the writer lock.

    First marks runs left `running` by a dead process as failed ("interrupted"): every
    writing run starts here, so none of them can forget it.
    """
    _mark_interrupted_runs(db)
    row = {
        "command": command,
        "status": "running",
        "started_at": utc_now(),
        "window_start": window[0].isoformat() if window else None,
        "window_end": window[1].isoformat() if window else None,
        "clients_total": clients_total,
    }
    return db["sync_runs"].insert(row).last_pk


def finish_run(db: sqlite_utils.Database, run_id: int, status: str, counts: RunCounts, error: str | None = None) -> dict:
    """Close a run with its status, counters and error/warnings; returns the stored row."""
    messages = [*counts.warnings, *([error] if error else [])]
    db["sync_runs"].update(
        run_id,
        {
            "status": status,
            "finished_at": utc_now(),
            "error": "; ".join(messages) or None,
            **counts.as_row(),
        },
    )
    return db["sync_runs"].get(run_id)


@contextmanager
def closed_on_error(db: sqlite_utils.Database, run_id: int, counts: RunCounts | None = None) -> Iterator[None]:
    """Close the run as `failed` at once if the block is interrupted (Ctrl-C, SIGTERM) or crashes,
    rather than leave it `running` until the next writing run."""
    try:
        yield
    except BaseException as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"crashed: {type(exc).__name__}: {exc}"
        finish_run(db, run_id, "failed", counts or RunCounts(), reason)
        raise


def record_failure(db: sqlite_utils.Database, run_id: int, client_id: int | None, error: str) -> None:
    db["sync_failures"].insert({"run_id": run_id, "client_id": client_id, "error": error})


# --- clients ------------------------------------------------------------------


def save_client_list(db: sqlite_utils.Database, clients: list[Client]) -> None:
    """Upsert the remote's client list; clients it no longer lists become inactive."""
    now = utc_now()
    with db.atomic():
        db.conn.executemany(
            "INSERT INTO clients(id, name, active, first_seen_at, last_seen_at) VALUES (?, ?, 1, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET name = excluded.name, active = 1, last_seen_at = excluded.last_seen_at",
            [(c.id, c.name, now, now) for c in clients],
        )
        listed = [c.id for c in clients]
        db.execute(
            f"UPDATE clients SET active = 0 WHERE id NOT IN ({','.join('?' * len(listed))})",
            listed,
        )


def latest_dates(db: sqlite_utils.Database) -> dict[int, date]:
    """Latest stored stat_date of each client that has rows."""
    return {
        client_id: date.fromisoformat(latest)
        for client_id, latest in db.execute("SELECT client_id, MAX(stat_date) FROM client_stats GROUP BY client_id")
    }


# --- the upsert -------------------------------------------------------------------

_COLUMNS = (*METRICS, "extra")
_SELECT_WINDOW = f"SELECT stat_date, {', '.join(_COLUMNS)} FROM client_stats WHERE client_id = ? AND stat_date BETWEEN ? AND ?"
_INSERT = (
    f"INSERT INTO client_stats(client_id, stat_date, {', '.join(_COLUMNS)}, synced_at, created_at, updated_at) "
    f"VALUES (?, ?, {', '.join('?' * len(_COLUMNS))}, ?, ?, ?)"
)
_UPDATE = (
    f"UPDATE client_stats SET {', '.join(f'{c} = ?' for c in _COLUMNS)}, synced_at = ?, updated_at = ? "
    "WHERE client_id = ? AND stat_date = ?"
)


@dataclass
class ClientWrite:
    """What writing one client's window did."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    warning: str | None = None


def write_client_window(
    db: sqlite_utils.Database,
    run_id: int,
    client_id: int,
    window: tuple[date, date],
    parsed: ParsedRows,
    prune: bool = False,
) -> ClientWrite:
    """Upsert one client's window in one transaction: rows, prune, rejects, last_synced_at.

    New keys are inserted; changed rows are updated (`created_at` stays); unchanged
    rows are not written at all.
    """
    now = utc_now()
    # A remote may answer days outside the window it was asked for: compare those too.
    start = min([window[0], *parsed.rows]).isoformat()
    end = max([window[1], *parsed.rows]).isoformat()
    result = ClientWrite(rejected=len(parsed.rejects))
    with db.atomic():
        stored = {row[0]: tuple(row[1:]) for row in db.execute(_SELECT_WINDOW, [client_id, start, end])}
        inserts, updates = [], []
        for day, row in parsed.rows.items():
            key = day.isoformat()
            values = row.values()
            previous = stored.get(key)
            if previous is None:
                inserts.append((client_id, key, *values, now, now, now))
            elif previous != values:
                updates.append((*values, now, now, client_id, key))
            else:
                result.unchanged += 1
        if inserts:
            db.conn.executemany(_INSERT, inserts)
        if updates:
            db.conn.executemany(_UPDATE, updates)
        result.inserted, result.updated = len(inserts), len(updates)
        if prune:
            result.deleted, result.warning = _prune(db, client_id, window, stored, parsed)
        if parsed.rejects:
            db.conn.executemany(
                "INSERT INTO sync_rejects(run_id, client_id, stat_date, reason, payload) VALUES (?, ?, ?, ?, ?)",
                [(run_id, client_id, r.stat_date, r.reason, r.payload) for r in parsed.rejects],
            )
        db.execute("UPDATE clients SET last_synced_at = ? WHERE id = ?", [now, client_id])
    return result


def _prune(
    db: sqlite_utils.Database, client_id: int, window: tuple[date, date], stored: dict, parsed: ParsedRows
) -> tuple[int, str | None]:
    """Delete stored rows in the window the remote no longer returns (SPEC §1 `--prune`)."""
    first, last = window[0].isoformat(), window[1].isoformat()
    kept = {day.isoformat() for day in parsed.rows}
    gone = [key for key in stored if first <= key <= last and key not in kept]
    if not gone:
        return 0, None
    if parsed.fetched == 0:
        return 0, (
            f"client {client_id}: remote returned no rows for {window[0]}..{window[1]} "
            f"but {len(gone)} are stored; nothing pruned"
        )
    if parsed.rejects:
        # A rejected row still exists remotely, but its date may be unreadable: keep everything.
        return 0, f"client {client_id}: {len(parsed.rejects)} rows rejected; nothing pruned"
    db.conn.executemany("DELETE FROM client_stats WHERE client_id = ? AND stat_date = ?", [(client_id, k) for k in gone])
    return len(gone), None
