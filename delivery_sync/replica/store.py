"""The store interface: what the commands need of a replica, whichever engine holds it.

`open_store(database)` gives a `Store` for a SQLite file (the embedded default) or a PostgreSQL
server (`postgresql://...`, psycopg imported only then). A store takes the writer lock and opens
a `Replica`: the write side of one run (client list, runs, the sync's writer, its staging).
Readers (`status`, `query`) get a read-only connection from `open_reader()`. Everything above
this module asks these objects, never which engine it has; where the SQL of the two engines
differs, each implementation holds its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import sqlite_utils

from ..errors import DeliverySyncError, one_line
from ..records import Client
from .lock import writer_lock
from .runs import RunCounts
from .schema import DEFERRED_INDEXES, open_replica, restore_deferred_indexes, storage_error, storage_kind
from .session import OpenReplica


class Replica(Protocol):
    """An open, migrated replica, written by one run that holds the writer lock."""

    engine: str  # "sqlite" or "postgresql": which rollup builder and SQL dialect apply

    def save_client_list(self, listed: list[Client]) -> None: ...
    def latest_dates(self) -> dict[int, date]: ...
    def start_run(self, command: str, window: tuple[date, date] | None = None, clients_total: int = 0,
                  started_at: str | None = None) -> int: ...
    def finish_run(self, run_id: int, status: str, counts: RunCounts, error: str | None = None,
                   finished_at: str | None = None) -> dict: ...
    def closed_on_error(self, run_id: int, counts: RunCounts | None = None,
                        described: Callable[[BaseException], str | None] | None = None) -> AbstractContextManager[None]: ...
    def record_failure(self, run_id: int, client_id: int | None, error: str) -> None: ...
    def record_unfetched(self, run_id: int, client_ids: list[int]) -> None: ...
    def record_selected(self, run_id: int, client_ids: list[int]) -> None: ...
    def last_sync_to_retry(self, since: str) -> tuple[int, str, str | None, str | None, list[int]] | None: ...
    def write_group(self): ...
    def staging(self): ...
    def first_load(self, rows: int) -> AbstractContextManager[None]: ...
    def close(self) -> None: ...


class Store(Protocol):
    """Where the replica lives."""

    def __str__(self) -> str: ...
    def exists(self) -> bool: ...
    def writer_lock(self, command: str, discard_unused: bool = False) -> AbstractContextManager[None]: ...
    def open(self) -> Replica: ...
    def open_reader(self): ...
    def describe_failure(self, exc: Exception) -> str: ...
    def failure(self, exc: Exception) -> DeliverySyncError | None: ...


def open_store(database) -> Store:
    """The store of `settings.database`: a `PostgresURL`, or the path of a SQLite file."""
    if isinstance(database, Path):
        return SqliteStore(database)
    from .postgres import PostgresStore

    return PostgresStore(database)


# --- SQLite -------------------------------------------------------------------------------------


class SqliteStore:
    """The replica as one SQLite file (WAL), locked by `<database>.lock`."""

    def __init__(self, path: Path):
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        return self.path.is_file()

    def writer_lock(self, command: str, discard_unused: bool = False) -> AbstractContextManager[None]:
        """The `<database>.lock` (with `discard_unused`, a replica this run created and left empty is removed)."""
        return writer_lock(self.path, command, discard_unused)

    def open(self) -> SqliteReplica:
        return SqliteReplica(open_replica(self.path), self.path, self.open_reader)

    def open_reader(self):
        from ..readonly import open_readonly

        return open_readonly(self.path)

    def describe_failure(self, exc: Exception) -> str:
        """Why a run failed, on one line; a full disk (or file-size limit) or a damaged page said as
        a sync says it, with the file's name."""
        if isinstance(exc, sqlite3.Error) and storage_kind(exc) in ("space", "corrupt"):
            return str(storage_error(self.path, exc))
        return one_line(exc)

    def failure(self, exc: Exception) -> DeliverySyncError | None:
        """The one-line error of a SQLite failure on the file mid-run (None: `exc` is none)."""
        return storage_error(self.path, exc) if isinstance(exc, sqlite3.Error) else None


class SqliteReplica(OpenReplica):
    """A run's write side on a SQLite replica file."""

    deferred_indexes = tuple(DEFERRED_INDEXES)
    engine_errors = (sqlite3.Error,)

    def __init__(self, db: sqlite_utils.Database, path: Path, open_reader: Callable[[], Any]):
        super().__init__(db, open_reader)
        self.path = path

    def restore_deferred_indexes(self) -> None:
        restore_deferred_indexes(self.db)
