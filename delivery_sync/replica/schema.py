"""The replica's schema: migrations (sqlite-utils `Migrations`), `meta.schema_version`, and opening
the file read-write in WAL mode, refusing files that are not ours."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import sqlite_utils
from sqlite_utils.migrations import Migrations

from ..days import utc_now
from ..errors import DeliverySyncError, UsageError, one_line
from ..metrics import COUNT_METRICS, METRICS, RUN_COUNTERS
from ..readonly import CORRUPT_ADVICE, check_small_tables

log = logging.getLogger(__name__)

SCHEMA_VERSION_KEY = "schema_version"
# How long a writer waits for another program's write transaction on the file.
BUSY_TIMEOUT_MS = 10_000
# New rows go in statements of this many rows (22 parameters each for client_stats: within
# SQLite's 32,766). One statement a client rather than one a row: SQLite lets go of the GIL
# around each statement's step, and every time it takes it back it may wait for a fetch thread's
# parsing (up to the 5 ms switch interval), which made a row cost 10x its own time.
INSERT_ROWS = 1000


class ReplicaDatabase(sqlite_utils.Database):
    """A SQLite replica connection with the few methods the engine-neutral write code calls, which
    the PostgreSQL connection (`postgres.Connection`) has too."""

    # A write group inserts each client's new rows as it writes it: here a statement is a call,
    # not a round trip, and rows held for the commit would only cost memory.
    inserts_wait_for_commit = False

    def executemany(self, statement: str, rows) -> None:
        """Run one statement for every parameter row."""
        self.conn.executemany(statement, rows)

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def insert_id(self, statement: str, params) -> int:
        """Run one INSERT and return the id it gave its row."""
        return self.execute(statement, params).lastrowid

    def insert_rows(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        """Insert `rows` (values of `columns`) into `table`, INSERT_ROWS rows a statement, inside the
        caller's transaction, which must roll back if this raises: a statement that fails half-way
        keeps the rows it had inserted (OR FAIL, see `_insert`)."""
        for first in range(0, len(rows), INSERT_ROWS):
            chunk = rows[first:first + INSERT_ROWS]
            self.conn.execute(_insert(table, columns, len(chunk)), [value for row in chunk for value in row])

    @staticmethod
    def encode_change(value):
        """A value as stat_changes keeps it: as it is (the columns have no declared type)."""
        return value


@lru_cache(maxsize=32)
def _insert(table: str, columns: tuple[str, ...], rows: int) -> str:
    """The INSERT of `rows` rows of `columns` into `table`.

    A multi-row INSERT that may ABORT half-way has SQLite copy every page it changes to a statement
    journal first, to undo just that statement: two more writes a row on a first sync. FAIL needs
    none; a failure rolls back the writer's whole transaction anyway."""
    row = f"({', '.join('?' * len(columns))})"
    return f"INSERT OR FAIL INTO {table}({', '.join(columns)}) VALUES " + ", ".join([row] * rows)


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


@migrations(name="0002_stat_changes")
def _stat_changes(db: sqlite_utils.Database) -> None:
    # old_value/new_value have no declared type on purpose: no affinity, so each value is kept
    # exactly as the replica held it (REAL amounts, INTEGER counts, TEXT extra).
    db.execute(
        "CREATE TABLE stat_changes (run_id INTEGER REFERENCES sync_runs(id), client_id INTEGER NOT NULL, "
        "stat_date TEXT NOT NULL, [column] TEXT NOT NULL, old_value, new_value, changed_at TEXT NOT NULL)"
    )
    db["stat_changes"].create_index(["client_id", "stat_date"])
    db["stat_changes"].create_index(["run_id"])


@migrations(name="0003_sync_unfetched")
def _sync_unfetched(db: sqlite_utils.Database) -> None:
    # The clients a run selected but never fetched (it stopped early): what `sync --retry-failed`
    # fetches besides the run's sync_failures.
    db["sync_unfetched"].create({"run_id": int, "client_id": int}, foreign_keys=[("run_id", "sync_runs", "id")])
    db["sync_unfetched"].create_index(["run_id"])


@migrations(name="0004_client_stats_named")
def _client_stats_named(db: sqlite_utils.Database) -> None:
    # client_stats with each client's name beside its id, for analysts and Datasette: a view rather
    # than a foreign key, which would mean rebuilding the largest table and refusing rows of clients
    # the remote no longer lists.
    rest = [c.name for c in db["client_stats"].columns if c.name != "client_id"]
    db.execute(
        "CREATE VIEW client_stats_named AS SELECT s.client_id, c.name, "
        + ", ".join(f"s.[{name}]" for name in rest)
        + " FROM client_stats s LEFT JOIN clients c ON c.id = s.client_id"
    )


@migrations(name="0005_stat_date_index_sums")
def _stat_date_index_sums(db: sqlite_utils.Database) -> None:
    # Still the index on stat_date, now with client_id, total_sales and total_orders after it: the
    # raw days at a report window's edges are read from the index alone, 10,000 clients' rows of a
    # day side by side, not each on its own page of the table (about 5x faster; 8 bytes a row more).
    # Rebuilding it on an existing replica takes seconds per million rows, once.
    db.execute("DROP INDEX IF EXISTS idx_client_stats_stat_date")
    create_stats_index(db, "idx_client_stats_stat_date", ("stat_date", "client_id", "total_sales", "total_orders"))


@migrations(name="0006_sync_selected")
def _sync_selected(db: sqlite_utils.Database) -> None:
    # The clients a sync of some clients only (`--clients`, `--retry-failed`) selected, written at
    # its start: when it is killed, those it never reached are among these, not every client.
    db["sync_selected"].create({"run_id": int, "client_id": int}, foreign_keys=[("run_id", "sync_runs", "id")])
    db["sync_selected"].create_index(["run_id"])


@migrations(name="0007_stat_date_index_all_metrics")
def _stat_date_index_all_metrics(db: sqlite_utils.Database) -> None:
    # The stat_date index holds every metric after (stat_date, client_id), not two: a window's raw
    # days are read from it whatever the report sums (ratios, platform figures), 2-3x faster than
    # a page of the table per client (docs/performance.md), for about 32 bytes a row more.
    # Rebuilt once, seconds per million rows, at the next writing run.
    db.execute("DROP INDEX IF EXISTS idx_client_stats_stat_date")
    create_stats_index(db, "idx_client_stats_stat_date")


SCHEMA_VERSION = len(migrations._migrations)

# Indexes of client_stats that a large first sync (into an empty table, more than
# session.DEFERRED_FROM_ROWS rows) builds once its rows are in, rather than row by row: each new
# row goes to a random leaf of the total_sales and stat_date indexes, which at millions of rows no
# longer fit the page cache, so each insert read and later wrote a page. Each with its columns.
DEFERRED_INDEXES = {
    "idx_client_stats_total_sales": ("total_sales",),
    "idx_client_stats_stat_date": ("stat_date", "client_id", *METRICS),
}
INDEX_BUILD_CACHE_KIB = 2 * 1024


def restore_deferred_indexes(db: sqlite_utils.Database) -> None:
    """Create any DEFERRED_INDEXES missing: after a first sync's rows are in, or, at the next
    writing run's open, after one that was killed before it built them."""
    present = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'client_stats'")}
    missing = [name for name in DEFERRED_INDEXES if name not in present]
    if not missing:
        return
    # The sort that builds an index holds up to the page cache's size in memory, on top of a first
    # sync's peak: 2 MB of it (not the writer's 16) kept that peak where it was, and sorted faster.
    db.execute(f"PRAGMA cache_size = -{INDEX_BUILD_CACHE_KIB}")
    try:
        for name in missing:
            create_stats_index(db, name)
    finally:
        db.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")


def create_stats_index(db: sqlite_utils.Database, name: str, columns: tuple[str, ...] | None = None) -> None:
    """Create DEFERRED_INDEXES[`name`] (or the index `name` of `columns`, as an earlier schema
    version had it) on client_stats, laid out as sqlite-utils writes an index, so the schema reads
    the same whether a migration or a first sync made it."""
    listed = ", ".join(f'"{column}"' for column in columns or DEFERRED_INDEXES[name])
    db.execute(f'CREATE INDEX "{name}"\n    ON "client_stats" ({listed})')


# SQLite's own files beside the replica: created by SQLite with the replica's owner and mode.
SIDE_SUFFIXES = ("-wal", "-shm", "-journal")


# The writer's page cache (SQLite's default is 2 MB). A first sync inserts each client's days at
# random places of the stat_date and total_sales indexes: with 2 MB their pages were evicted,
# spilled to the WAL before the commit and read back from it, about 2 writes and 2 reads a row
# at 1,000 clients x 365 days. SQLite grows the cache only as pages are used; 32 MB saved a little
# more but pushed a first sync's peak RSS past 250 MB.
WRITER_CACHE_KIB = 16 * 1024


def open_replica(path: Path) -> ReplicaDatabase:
    """Open (creating if needed) the replica read-write, in WAL mode, migrated to the latest schema.

    Refuses a file that is some other program's database, or a replica written by
    a newer delivery-sync, rather than change it. A file left by a first sync that
    died while creating it (only sqlite-utils' migration table, or the tables
    without `schema_version`) is completed, not refused. A new replica is created
    private to its owner (0600, whatever the umask), and SQLite gives its side
    files the same mode.
    """
    if path.parent and not path.parent.exists():
        raise UsageError(f"cannot create replica {path}: folder {path.parent} does not exist")
    if not check_replica_path(path):
        _create_private(path)
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
        db = ReplicaDatabase(conn)
        _check_is_ours(db, path)
        checked_whole = _check_intact(db, path)
        db.enable_wal()
        announce_upgrade(path, [m.name for m in migrations.pending(db)] if db["client_stats"].exists() else [])
        migrations.apply(db)
        restore_deferred_indexes(db)
        upsert_meta = "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
        db.execute(upsert_meta, [SCHEMA_VERSION_KEY, str(SCHEMA_VERSION)])
        if checked_whole:
            db.execute(upsert_meta, [WHOLE_CHECK_KEY, utc_now()])
    except sqlite3.DatabaseError as exc:
        raise storage_error(path, exc) from None
    return db


def announce_upgrade(replica, pending: list[str]) -> None:
    """One line before an existing replica's schema is upgraded: a migration may rebuild an index
    of `client_stats`, a pause of seconds per million rows before the run's first request."""
    if pending:
        log.info("replica %s: upgrading its schema to version %d (%s), once", replica, SCHEMA_VERSION, ", ".join(pending))


def check_replica_path(path: Path) -> bool:
    """Whether the replica exists; refuses (UsageError) a path a writer must not open.

    A symlink is refused rather than followed: SQLite would create or rewrite whatever it
    points at, another user's file included. So is a side file (`-wal`, `-shm`, `-journal`)
    that is a symlink or not a plain file, or one beside a replica that does not exist
    (SQLite would take its pages into the new file).
    """
    exists = _plain_or_absent(path, "replica path", "point --db or `database` at the real file")
    for suffix in SIDE_SUFFIXES:
        side = path.with_name(path.name + suffix)
        if _plain_or_absent(side, "SQLite side file", "remove it") and not exists:
            raise UsageError(f"{side} exists but the replica {path} does not: refused, it is not this replica's",
                             hint="remove it if no other program uses it")
    return exists


def _plain_or_absent(path: Path, what: str, hint: str) -> bool:
    """True for a plain file, False for nothing there; UsageError for anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise UsageError(f"cannot inspect {what} {path}: {exc.strerror}") from None
    if stat.S_ISREG(mode):
        return True
    if stat.S_ISDIR(mode) and what == "replica path":
        raise UsageError(f"{path} is a folder, not a replica file")
    kind = "a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a plain file"
    raise UsageError(f"{what} {path} is {kind}: refused, never followed or written", hint=hint)


def _create_private(path: Path) -> None:
    """Create the empty replica file 0600 before SQLite opens it, never through a symlink."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        check_replica_path(path)  # created meanwhile: opened only if it is a plain file
    except OSError as exc:
        folder = path.parent if str(path.parent) else Path(".")
        raise UsageError(f"cannot create replica {path}: {exc.strerror}",
                         hint=f"a writing run needs write permission on the folder {folder}") from None


def discard_if_unused(path: Path) -> None:
    """Remove a replica this run created if it holds no stats row and no run ended ok in it.

    Only called by the run that created it, under the writer lock, once its connections are
    closed. Any doubt (an unreadable file) keeps it.
    """
    try:
        # Read-write, though it only reads: closing the last connection so removes an empty -wal,
        # which a read-only one would leave behind.
        conn = sqlite3.connect(path)
        try:
            used = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM client_stats) OR EXISTS (SELECT 1 FROM sync_runs WHERE status = 'ok')"
            ).fetchone()[0]
        finally:
            conn.close()
    except (sqlite3.Error, OSError):
        return
    if used:
        return
    for suffix in (*SIDE_SUFFIXES, ""):
        try:
            os.unlink(path.with_name(path.name + suffix))
        except FileNotFoundError:
            pass
        except OSError:
            return


# Replicas whose integrity this writing run has checked, once per run; reset by `writer_lock`
# when a run starts and ends.
verified: set[Path] = set()

# When the last quick check of the whole file found it intact (meta, as `utc_now` writes times).
WHOLE_CHECK_KEY = "integrity_checked_at"
# How old that may be before a writing run checks the whole file again. The whole check reads
# every page: 35 ms for a year of 127 clients, 5 s (16 s from disk) for 1.3 GB at 10,000 clients,
# a third of a daily incremental sync there. Every run still checks the small tables and the first
# page of every table. 12 hours, not 24: a daily cron's first run checks it every day, even when
# it starts a few seconds earlier than yesterday's.
WHOLE_CHECK_EVERY = timedelta(hours=12)


def _check_intact(db: sqlite_utils.Database, path: Path) -> bool:
    """Refuse, before anything is written, a replica SQLite finds damaged; True when this run
    checked the whole file (and found it intact), for the caller to record in meta."""
    key = path.resolve()
    if key in verified:
        return False
    try:
        whole = _whole_check_due(db)
        problem = db.execute("PRAGMA quick_check(1)").fetchone()[0] if whole else check_small_tables(db.conn)
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError):  # locked, busy, I/O: not damage
            raise
        problem = str(exc)  # a page too broken to read: "database disk image is malformed"
    if problem != "ok":
        problem = one_line(problem.replace("*** in database main ***", ""))
        raise UsageError(f"replica {path} is corrupt ({problem}); nothing was written", hint=CORRUPT_ADVICE)
    verified.add(key)
    return whole


def _whole_check_due(db: sqlite_utils.Database) -> bool:
    """Whether the last whole-file check that found the replica intact is WHOLE_CHECK_EVERY old,
    or there was none (a new replica, or one from before this was recorded)."""
    if not db["meta"].exists():
        return True
    row = db.execute("SELECT value FROM meta WHERE key = ?", [WHOLE_CHECK_KEY]).fetchone()
    try:
        last = datetime.fromisoformat(row[0])
    except (TypeError, ValueError):
        return True
    if last.tzinfo is None:  # not a time this code wrote (a hand edit): no zone to compare it in
        return True
    now = datetime.now(UTC)
    return not (now - WHOLE_CHECK_EVERY < last <= now)  # a time in the future is not trusted


def storage_kind(exc: sqlite3.Error) -> str | None:
    """What a SQLite error says of the replica file: "space" (disk full, I/O, a file-size limit),
    "locked", "readonly", "corrupt", or None for anything else."""
    text = str(exc).lower()
    kinds = (("space", ("full", "disk i/o")), ("locked", ("locked", "busy")),
             ("readonly", ("readonly", "read-only", "unable to open")), ("corrupt", ("malformed", "corrupt")))
    return next((kind for kind, words in kinds if any(word in text for word in words)), None)


def storage_error(path: Path, exc: sqlite3.Error) -> DeliverySyncError:
    """The one-line error for a SQLite failure on the replica file: exit 1 for a run the machine
    could not complete (full disk, I/O, busy), exit 2 for a path the user must fix."""
    kind = storage_kind(exc)
    folder = path.parent if str(path.parent) else Path(".")
    if kind == "space":
        # A full disk and a file-size limit (EFBIG on the -wal or -shm) both end here.
        return DeliverySyncError(
            f"cannot write replica {path}: {exc} (disk full or file size limit reached)",
            hint="free space and run again; every stored client is as it was or fully updated",
        )
    if kind == "locked":
        return DeliverySyncError(
            f"replica {path} is locked by another program (waited {BUSY_TIMEOUT_MS / 1000:g} s)",
            hint="close sqlite3 or other sessions writing to it",
        )
    if kind == "readonly":
        return UsageError(
            f"cannot write replica {path}: {exc}",
            hint=f"a writing run needs write permission on {path} and on its folder {folder}",
        )
    if kind == "corrupt":
        return UsageError(f"replica {path} is corrupt ({exc})", hint=CORRUPT_ADVICE)
    if isinstance(exc, sqlite3.OperationalError):
        return UsageError(f"cannot open replica {path}: {exc}")
    return UsageError(f"{path} is not a usable SQLite database ({exc})", hint="restore it from a backup, or move it away")


def _check_is_ours(db: sqlite_utils.Database, path: Path) -> None:
    """Refuse, before anything is changed, a file that is not an empty database or one of our replicas."""
    tables = set(db.table_names())
    sets: set[str] = set()
    if migrations.migrations_table in tables:
        sets = {row[0] for row in db.execute(f"SELECT DISTINCT migration_set FROM [{migrations.migrations_table}]")}
    if not tables - {migrations.migrations_table} and sets <= {migrations.name}:
        return  # empty, or a first sync died before its first migration committed: completed now
    version = None
    if {"meta", "sync_runs"} <= tables:
        row = db.execute("SELECT value FROM meta WHERE key = ?", [SCHEMA_VERSION_KEY]).fetchone()
        version = row[0] if row else None
    if version is None and migrations.name in sets:
        # A first sync died after a migration committed but before `schema_version` was written.
        version = str(len(migrations.applied(db)))
    if version is None or not str(version).isdigit():
        raise UsageError(f"{path} is not a delivery-sync replica (it holds other tables)", hint="check --db or `database`")
    if int(version) > SCHEMA_VERSION:
        raise UsageError(
            f"replica {path} has schema version {version}, newer than this delivery-sync knows ({SCHEMA_VERSION})",
            hint="upgrade delivery-sync",
        )
