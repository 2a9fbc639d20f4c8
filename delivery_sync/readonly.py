"""Read-only access to the replica for `status` and `query` (docs/reference.md, query).

Opened with a `mode=ro` URI, so SQLite itself refuses to create or write the
file, plus an authorizer that refuses writes, ATTACH and state-changing
PRAGMAs. Never waits for the writer lock: WAL lets readers run during a sync.
Imports only the standard library, to keep reports fast to start.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from .dialect import dialect_of
from .errors import DamagedReplica, NoReplica, ReadOnlyViolation, UnsafeLockFile, UsageError

# What a run left `running` by a dead process is said to have ended with, by `status` and in its
# row once the next writing run closes it.
UNRECORDED_END = "interrupted (it never recorded its end: its process was killed, or the replica failed under it)"

# PRAGMAs that only read state; any other PRAGMA (or one given a value) is refused.
READ_ONLY_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "database_list", "collation_list", "function_list", "module_list",
    "pragma_list", "compile_options", "user_version", "schema_version", "application_id",
    "page_count", "page_size", "freelist_count", "journal_mode", "encoding", "data_version",
    "foreign_keys", "integrity_check", "quick_check",
})
# Of those, the ones whose argument names what to read (`table_info(client_stats)`), never a new value.
PRAGMAS_WITH_ARGUMENT = frozenset({
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "integrity_check", "quick_check",
})
# The small tables `status` (and a writing run between whole checks) checks whole before it
# vouches for a replica; of every other table it reads the first page.
CHECKED_TABLES = ("sync_runs", "clients", "sync_failures", "meta")
# What to do about a damaged replica: status's advice and a writing run's hint alike.
CORRUPT_ADVICE = "restore it from a backup, or move it away and run a full sync"
# SQLITE_TRANSACTION lets a report BEGIN a read transaction: several statements, one snapshot.
_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE,
    sqlite3.SQLITE_TRANSACTION,
}


# fts3_tokenizer() hands out (and with two arguments accepts) raw C pointers: never from a query.
DENIED_FUNCTIONS = frozenset({"fts3_tokenizer", "load_extension"})


def _authorizer(action: int, arg1, arg2, db_name, trigger) -> int:
    if action == sqlite3.SQLITE_FUNCTION and arg2 and arg2.lower() in DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    if action in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_UPDATE and arg1 == "sqlite_master":
        # A table-valued pragma (`pragma_table_info('clients')`) is authorized as an update of the
        # schema table when SQLite first connects its virtual table. No real write can follow: the
        # file is open read-only and SQLite refuses any update of sqlite_master without writable_schema.
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and arg1 and arg1.lower() in READ_ONLY_PRAGMAS:
        if arg2 is None or arg1.lower() in PRAGMAS_WITH_ARGUMENT:
            return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def replica_exists(path: Path) -> bool:
    """Whether a replica file is there to read: an empty file (touched, or cut short) holds none,
    unless its `-wal` holds a first sync's pages not yet copied into it."""
    return path.is_file() and (path.stat().st_size > 0 or _wal_bytes(path) > 0)


def _wal_bytes(path: Path) -> int:
    """The size of the replica's `-wal` file (writes not yet copied into it); 0 when there is none."""
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.is_file() else 0


def open_readonly(path: Path) -> sqlite3.Connection:
    """Open the replica read-only; `NoReplica` (exit 2) when there is no file. Never creates it.

    A WAL reader needs to create or write `<database>-shm`. Where it cannot (a
    read-only mount, a backup copy, another user's folder), the file is read as
    immutable when that is safe: no `-wal` holds unmerged writes and no writer holds
    the lock. Otherwise one line says what to grant.
    """
    if not replica_exists(path):
        raise NoReplica(f"no replica at {path}", hint="run 'delivery-sync sync' first")
    try:
        conn, ours = _connect(path, "mode=ro")
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            raise damaged(path, exc) from None
        if not _is_write_refused(exc):
            raise NoReplica(f"cannot read replica {path}: {exc}") from None
        why = _immutable_unsafe(path)
        if why:
            folder = path.parent if str(path.parent) else Path(".")
            raise NoReplica(
                f"cannot read replica {path}: {exc}, and {why}",
                hint=f"readers need write permission on {folder} (for {path.name}-shm) while a sync may run",
            ) from None
        try:
            conn, ours = _connect(path, "mode=ro&immutable=1")
        except sqlite3.DatabaseError as exc2:
            raise NoReplica(f"cannot read replica {path}: {exc2}") from None
    if not ours:
        conn.close()
        raise NoReplica(f"{path} is not a delivery-sync replica (no sync_runs table)", hint="check --db or `database`")
    conn.row_factory = sqlite3.Row
    conn.set_authorizer(_authorizer)
    return conn


def _connect(path: Path, options: str) -> tuple[sqlite3.Connection, bool]:
    """A connection with URI `options`, and whether the file holds our `sync_runs` table."""
    conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?{options}", uri=True, check_same_thread=False)
    try:
        ours = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sync_runs'").fetchone()
    except sqlite3.DatabaseError:
        conn.close()
        raise
    return conn, bool(ours)


def is_damage(exc: Exception) -> bool:
    """Whether SQLite raised `exc` because the file is corrupt or not a database at all
    (SQLITE_CORRUPT, SQLITE_NOTADB), not because of the statement, a lock or a permission."""
    return isinstance(exc, sqlite3.DatabaseError) and getattr(exc, "sqlite_errorcode", None) in (
        sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def damaged(path, problem: Exception | str) -> DamagedReplica:
    """The one line a damaged replica gets, whichever command read it (`status` shows it as its
    verdict): the engine's description of the `problem`, on one line."""
    return DamagedReplica(f"replica {path} is corrupt or unreadable ({' '.join(str(problem).split())})", hint=CORRUPT_ADVICE)


def _is_write_refused(exc: sqlite3.DatabaseError) -> bool:
    """The errors of a WAL reader that may not create or write the `-shm` file."""
    text = str(exc).lower()
    return "unable to open" in text or "readonly" in text or "read-only" in text


def _immutable_unsafe(path: Path) -> str | None:
    """Why the file may not be read as immutable right now, or None when it may."""
    if _wal_bytes(path) > 0:
        return f"{path.name}-wal holds writes not yet in the file"
    held = writer_holds_lock(path)
    if held is None:
        return f"the lock {path.name}.lock cannot be read to tell whether a sync runs"
    return "a writing run holds the lock" if held else None


# Never follow a symlink, never block on a FIFO, never make a terminal ours, never leak into a child.
_LOCK_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def lock_path(database: Path) -> Path:
    """The writer lock of a replica: `<database>.lock` beside it."""
    return database.with_name(database.name + ".lock")


def open_lock_file(lock: Path, flags: int) -> int:
    """Open an existing lock file, refusing (`UnsafeLockFile`, exit 2) anything but a plain file with one name.

    A symlink is never followed and a FIFO or device never waited on, so no run can be made
    to truncate or write another file, and no reader can be made to hang. `FileNotFoundError`
    and other `OSError`s pass through.
    """
    try:
        fd = os.open(lock, flags | _LOCK_OPEN_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.ENODEV, errno.EOPNOTSUPP):
            raise _unsafe_lock(lock, os.lstat(lock)) from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise _unsafe_lock(lock, info)
    return fd


def _unsafe_lock(lock: Path, info: os.stat_result) -> UnsafeLockFile:
    mode = info.st_mode
    if stat.S_ISREG(mode):
        what = f"a file with {info.st_nlink} names (hard links)"
    else:
        what = {stat.S_IFLNK: "a symbolic link", stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO",
                stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}.get(stat.S_IFMT(mode), "not a file")
    return UnsafeLockFile(
        f"lock path {lock} is {what}, not a plain file: refused, never followed or written",
        hint="remove it; a writing run creates its own",
    )


def writer_holds_lock(path: Path) -> bool | None:
    """Whether a live writing run holds `<database>.lock` (None: cannot tell). Never waits, never creates it.

    A shared flock is refused only while a writer holds its exclusive one; a killed
    writer's lock is released by the kernel, whatever its pid file says.
    """
    return _probe_lock(path)[0]


def _probe_lock(path: Path) -> tuple[bool | None, bytes]:
    """(whether a writer holds the lock, what it wrote in it while held); never waits on the file."""
    try:
        fd = open_lock_file(lock_path(path), os.O_RDONLY)
    except FileNotFoundError:
        return False, b""
    except (OSError, UnsafeLockFile):
        return None, b""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return True, os.pread(fd, 4096, 0)
        except OSError:
            return True, b""
    except OSError:
        return None, b""
    finally:
        os.close(fd)  # releases the shared lock too
    return False, b""


def lock_problem(path: Path) -> str | None:
    """Why `<database>.lock` would be refused by a writing run (a symlink, a FIFO, ...), or None."""
    try:
        os.close(open_lock_file(lock_path(path), os.O_RDONLY))
    except UnsafeLockFile as exc:
        return str(exc)
    except OSError:
        return None
    return None


def lock_holder(path: Path) -> dict | None:
    """What the live writer holding `<database>.lock` wrote into it (`pid`, `command`, `started_at`), or None."""
    held, content = _probe_lock(path)
    if held is not True:
        return None
    try:
        holder = json.loads(content or b"{}")
    except ValueError:
        return None
    return holder if isinstance(holder, dict) and {"pid", "command", "started_at"} <= holder.keys() else None


class SqliteReader:
    """A reader's view of a SQLite replica file: is it there, how big, is a writer at work, a connection."""

    def __init__(self, path: Path):
        self.path = path
        self.location = os.path.abspath(path)

    def exists(self) -> bool:
        return replica_exists(self.path)

    def size(self) -> int:
        """Bytes on disk, the WAL included (it holds recent writes until a checkpoint)."""
        return self.path.stat().st_size + _wal_bytes(self.path)

    def check_path(self) -> None:
        """A replica path that can never hold one is the user's to fix, not a reason to advise `sync`."""
        if self.path.is_dir():
            raise UsageError(f"{self.path} is a folder, not a replica file", hint="point --db or `database` at a file, e.g. delivery_stats.db")
        if not self.path.parent.is_dir():
            raise UsageError(f"the folder of the replica {self.path} does not exist", hint="create it, or fix --db or `database`")

    def connect(self) -> sqlite3.Connection:
        if not replica_exists(self.path):
            self.check_path()  # a folder, or a missing one: said as such, not "run sync first"
        return open_readonly(self.path)

    # What reading a damaged file raises: `status` then says the replica cannot be trusted.
    damage = (sqlite3.DatabaseError,)

    def check_intact(self, conn: sqlite3.Connection) -> None:
        """Raise sqlite3.DatabaseError when `check_small_tables` finds damage: a status that says
        "yes" must not rest on a broken file."""
        problem = check_small_tables(conn)
        if problem != "ok":
            raise sqlite3.DatabaseError(problem)

    def writer_holds_lock(self) -> bool | None:
        return writer_holds_lock(self.path)

    def may_write(self, conn: sqlite3.Connection) -> bool:
        """Whether this user may run a writing command on the replica: write the file, and create
        its lock, WAL and journal files beside it."""
        return os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)

    def lock_holder(self) -> dict | None:
        return lock_holder(self.path)

    def lock_problem(self) -> str | None:
        return lock_problem(self.path)


def check_small_tables(conn: sqlite3.Connection) -> str:
    """"ok", or SQLite's description of the first damage found by a quick check of the small tables
    (CHECKED_TABLES) and a read of the first row of every other table: milliseconds on any
    replica, where a quick check of the whole file reads every page (seconds per GB).

    Raises sqlite3.DatabaseError when even the schema or a first page cannot be read.
    """
    tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT GLOB 'sqlite_*'")]
    for table in (t for t in CHECKED_TABLES if t in tables):
        problem = conn.execute(f"PRAGMA quick_check({table})").fetchone()[0]
        if problem != "ok":
            return problem
    for table in (t for t in tables if t not in CHECKED_TABLES):
        quoted = table.replace('"', '""')  # any table someone added to the file, whatever its name
        conn.execute(f'SELECT * FROM "{quoted}" LIMIT 1').fetchall()
    return "ok"


def reader_for(database):
    """The reader of `settings.database`: a SQLite file, or a PostgreSQL URL (psycopg only then)."""
    if isinstance(database, Path):
        return SqliteReader(database)
    from .postgres import PostgresReader

    return PostgresReader(database)


def open_reader(database):
    """A read-only connection to the replica, whichever engine holds it; `NoReplica` when there is none."""
    return reader_for(database).connect()


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One read transaction: every statement inside sees the same committed state, even mid-sync."""
    conn.execute(dialect_of(conn).begin_snapshot)
    try:
        yield conn
    finally:
        conn.rollback()


def check_denied(exc: sqlite3.DatabaseError) -> None:
    """Turn a write refused by the authorizer or the read-only open into `ReadOnlyViolation` (exit 2);
    other errors pass through."""
    text = str(exc).lower()
    if "not authorized" in text or "readonly" in text or "read-only" in text:
        raise ReadOnlyViolation(f"refused: the replica is read-only here ({exc})") from None


def left_behind(db, before_run: int, since: str, selections: bool = True) -> dict[int, int]:
    """Active clients that a sync before run `before_run`, ended at `since` or later, failed or did
    not fetch and that no run has written since, each with the latest such sync's id: after a
    partial sync, an ok `sync --clients` of some of them must not hide the others. Older syncs are
    left to the stale check (`since` is now minus status.stale_after_hours): such a client is
    stale, and its repair fetches the current window, not that sync's. A client counts as written
    since a run when its `last_synced_at` is not before that run's end (times have whole seconds:
    a write in the very second a sub-second run ended counts as after it)."""
    first = db.execute("SELECT MIN(id) FROM sync_runs WHERE command = 'sync' AND finished_at >= ?", [since]).fetchone()[0]
    if first is None or first >= before_run:
        return {}
    behind = {cid: run for cid, run in db.execute(
        "SELECT f.client_id, MAX(r.id) FROM (SELECT run_id, client_id FROM sync_failures WHERE run_id BETWEEN ? AND ? "
        "AND client_id IS NOT NULL UNION SELECT run_id, client_id FROM sync_unfetched WHERE run_id BETWEEN ? AND ?) AS f "
        "JOIN sync_runs AS r ON r.id = f.run_id JOIN clients AS c ON c.id = f.client_id "
        "WHERE r.command = 'sync' AND r.status != 'running' AND c.active = 1 "
        "AND (c.last_synced_at IS NULL OR c.last_synced_at < r.finished_at) GROUP BY f.client_id",
        [first, before_run - 1, first, before_run - 1],
    )}
    # And those a killed sync never reached, which it could not record (`not_reached`).
    for (run_id,) in db.execute("SELECT id FROM sync_runs WHERE command = 'sync' AND status = 'failed' AND id BETWEEN ? AND ?",
                                [first, before_run - 1]).fetchall():
        for cid in not_reached(db, run_id, selections):
            behind[cid] = max(behind.get(cid, run_id), run_id)
    return behind


def not_reached(db, run_id: int, selections: bool = True) -> list[int]:
    """The clients a failed sync that did not account for every client it selected (killed
    outright, or its replica failed under it: neither records what it left) did not write: those
    of its selection (every active client, or `sync_selected`'s) that no run has written since it
    began; [] when it accounted for all (written, failed or recorded unfetched). A client written
    in the very second it began counts as not reached: one fetch too many, never one too few.
    `db` is a reader's connection or a writer's database, of either engine; `selections` False
    for a replica (read by a newer version) from before `sync_selected`."""
    run = db.execute(
        "SELECT status, started_at, COALESCE(clients_total, 0), COALESCE(clients_ok, 0), "
        "(SELECT COUNT(*) FROM sync_failures WHERE run_id = :run AND client_id IS NOT NULL), "
        "(SELECT COUNT(*) FROM sync_unfetched WHERE run_id = :run) FROM sync_runs WHERE id = :run", {"run": run_id}).fetchone()
    status, started, total, written, failed, unfetched = run
    if status not in ("failed", "running") or written + failed + unfetched >= total:  # running: a dead one, as status shows it
        return []
    chosen = {cid for (cid,) in db.execute("SELECT client_id FROM sync_selected WHERE run_id = ?", [run_id])} if selections else set()
    active = db.execute("SELECT id, last_synced_at FROM clients WHERE active = 1").fetchall()
    return sorted(cid for cid, at in active if (not chosen or cid in chosen) and (at is None or at <= started))
