"""Read-only access to the replica for `status` and `query` (SPEC §5).

Opened with a `mode=ro` URI, so SQLite itself refuses to create or write the
file, plus an authorizer that refuses writes, ATTACH and state-changing
PRAGMAs. Never waits for the writer lock: WAL lets readers run during a sync.
Imports only the standard library, to keep reports fast to start.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from .errors import NoReplica, ReadOnlyViolation

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
# SQLITE_TRANSACTION lets a report BEGIN a read transaction: several statements, one snapshot.
_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE,
    sqlite3.SQLITE_TRANSACTION,
}


def _authorizer(action: int, arg1, arg2, db_name, trigger) -> int:
    if action in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and arg1 and arg1.lower() in READ_ONLY_PRAGMAS:
        if arg2 is None or arg1.lower() in PRAGMAS_WITH_ARGUMENT:
            return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def replica_exists(path: Path) -> bool:
    """Whether a replica file is there to read."""
    return path.is_file()


def open_readonly(path: Path) -> sqlite3.Connection:
    """Open the replica read-only; `NoReplica` (exit 2) when there is no file. Never creates it."""
    if not replica_exists(path):
        raise NoReplica(f"no replica at {path}", hint="run 'delivery-sync sync' first")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        ours = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sync_runs'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise NoReplica(f"cannot read replica {path}: {exc}") from None
    if not ours:
        conn.close()
        raise NoReplica(f"{path} is not a delivery-sync replica (no sync_runs table)", hint="check --db or `database`")
    conn.row_factory = sqlite3.Row
    conn.set_authorizer(_authorizer)
    return conn


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One read transaction: every statement inside sees the same committed state, even mid-sync."""
    conn.execute("BEGIN")
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
