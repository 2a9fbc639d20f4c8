"""The write side of one run on an open replica, the same for both engines: the engine-neutral
functions of this package (clients.py, runs.py, upsert.py, staging.py) on one connection."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import date
from typing import Any

from ..records import Client
from . import clients, runs
from .runs import RunCounts
from .staging import Staging
from .upsert import WriteGroup


class OpenReplica:
    """The write side of a run: the engine-neutral functions of this package on one connection
    (a SQLite `ReplicaDatabase` or a `postgres.Connection`)."""

    engine = "sqlite"
    staging_type = Staging

    def __init__(self, db, open_reader: Callable[[], Any]):
        self.db = db
        # A read-only connection of its own to the same replica (its store's `open_reader`), for
        # reads that run beside this connection's writes, in another thread.
        self.open_reader = open_reader

    def save_client_list(self, listed: list[Client]) -> None:
        clients.save_client_list(self.db, listed)

    def latest_dates(self) -> dict[int, date]:
        return clients.latest_dates(self.db)

    def start_run(self, command: str, window: tuple[date, date] | None = None, clients_total: int = 0,
                  started_at: str | None = None) -> int:
        return runs.start_run(self.db, command, window, clients_total, started_at)

    def finish_run(self, run_id: int, status: str, counts: RunCounts, error: str | None = None, finished_at: str | None = None) -> dict:
        return runs.finish_run(self.db, run_id, status, counts, error, finished_at)

    def closed_on_error(self, run_id: int, counts: RunCounts | None = None,
                        described: Callable[[BaseException], str | None] | None = None) -> AbstractContextManager[None]:
        return runs.closed_on_error(self.db, run_id, counts, described)

    def record_failure(self, run_id: int, client_id: int | None, error: str) -> None:
        runs.record_failure(self.db, run_id, client_id, error)

    def record_progress(self, run_id: int, counts: RunCounts) -> None:
        runs.record_progress(self.db, run_id, counts)

    def record_unfetched(self, run_id: int, client_ids: list[int]) -> None:
        runs.record_unfetched(self.db, run_id, client_ids)

    def record_selected(self, run_id: int, client_ids: list[int]) -> None:
        runs.record_selected(self.db, run_id, client_ids)

    def last_sync_to_retry(self, since: str) -> tuple[int, str, str | None, str | None, list[int]] | None:
        return runs.last_sync_to_retry(self.db, since)

    def write_group(self) -> WriteGroup:
        return WriteGroup(self.db)

    def staging(self) -> Staging:
        return self.staging_type(self.db)

    def first_load(self, rows: int) -> AbstractContextManager[None]:
        """Around the writes of a sync of up to `rows` rows: where the engine loads an empty table
        faster with some of its indexes built afterwards, it does so here. By default nothing changes."""
        return nullcontext()

    def transaction(self) -> AbstractContextManager[None]:
        """One transaction: everything inside commits together or not at all."""
        return self.db.atomic()

    def close(self) -> None:
        self.db.close()
