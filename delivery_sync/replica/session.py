"""The write side of one run on an open replica, the same for both engines: the engine-neutral
functions of this package (clients.py, runs.py, upsert.py, staging.py) on one connection."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import date
from typing import Any

from ..errors import Interrupted
from ..records import Client
from . import clients, runs
from .runs import RunCounts
from .staging import Staging
from .upsert import WriteGroup

log = logging.getLogger(__name__)

# A first sync of more than this many rows (clients times days) into an empty client_stats builds
# the engine's deferred indexes once its rows are in. Below it they are written row by row: they
# stay in the writer's cache and their writes fall while it waits on the remote, where building
# them at the end added 40 ms after the last answer (127 clients x 365 days on SQLite: full sync
# 1.24x its fetch-only floor, 1.29-1.32x deferred; the same CPU either way). At 500 x 365 (182,500
# rows) writing them row by row cost 8% more CPU.
DEFERRED_FROM_ROWS = 100_000


class OpenReplica:
    """The write side of a run: the engine-neutral functions of this package on one connection
    (a SQLite `ReplicaDatabase` or a `postgres.Connection`)."""

    engine = "sqlite"
    staging_type = Staging
    # The indexes of client_stats that a large first sync builds once its rows are in (the
    # engine's `restore_deferred_indexes` makes any missing), and the engine's own errors.
    deferred_indexes: tuple[str, ...] = ()
    engine_errors: tuple[type[Exception], ...] = ()

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

    @contextmanager
    def first_load(self, rows: int) -> Iterator[None]:
        """Around the writes of a sync of up to `rows` rows: into an empty client_stats, a sync of
        more than DEFERRED_FROM_ROWS rows drops the engine's `deferred_indexes` and builds them
        again once the rows are in: the same indexes, in seconds rather than a read and a write of
        a page per row, and packed (an index filled in random order is a third to a half empty).

        Built again whether the writes end ok, failed or at the deadline. A run stopped by a signal
        (the user waits for the exit), or by an error with its transaction still open (the index
        would be rolled back with it), leaves that to the next writing run, whose open builds it;
        until then reports give the same figures, more slowly.
        """
        if not self.deferred_indexes or rows <= DEFERRED_FROM_ROWS or self.db.execute("SELECT EXISTS (SELECT 1 FROM client_stats)").fetchone()[0]:
            yield
            return
        for name in self.deferred_indexes:
            self.db.execute(f'DROP INDEX IF EXISTS "{name}"')
        try:
            yield
        except (Interrupted, KeyboardInterrupt):
            raise
        except BaseException:
            if not self.db.in_transaction:
                try:
                    self.restore_deferred_indexes()
                except self.engine_errors as exc:  # the error being raised says more; the next open builds it
                    log.debug("index not built after a failed first sync: %s", exc)
            raise
        self.restore_deferred_indexes()

    def restore_deferred_indexes(self) -> None:
        """Create any of `deferred_indexes` missing (the engine's store says how)."""
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[None]:
        """One transaction: everything inside commits together or not at all."""
        return self.db.atomic()

    def close(self) -> None:
        self.db.close()
