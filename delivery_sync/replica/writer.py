"""The write side of one `sync` run, as one object: whole client windows in, failures and counts
recorded, several clients to a transaction, each client still all or nothing.

The fetcher knows nothing of the database: it hands each client's complete window to `write`,
each client it could not fetch to `fail`, calls `commit` whenever it would otherwise wait for the
network, and asks `staging()` for a place where batch rows wait for their client's last tile.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from ..records import ClientRows
from .runs import RunCounts
from .upsert import ClientWrite

if TYPE_CHECKING:
    from .store import Replica

log = logging.getLogger(__name__)

# A sync that wrote more rows than this gets a full rebuild of the rollups: by then it is as
# cheap, and the keys need not be held in memory.
MAX_CHANGED_ROWS = 200_000
# Client days whose stored rows `expect` reads by one statement: on PostgreSQL each statement is
# a round trip, and the rows read are held in memory until their client is written.
EXPECTED_ROWS = 5_000


class ChangedRows:
    """The (client, day) keys a sync inserted, updated or deleted (also those of a group that was
    then rolled back: recomputing more than changed is harmless), so that the aggregate that ends
    the sync recomputes only what they touch. `keys` is None once there were too many. `deleted`
    says whether any of them was a deleted row (pruned): only then can a partial sum be left with
    no rows, which the refresh must look for."""

    def __init__(self, run_id: int | None = None, limit: int | None = None):
        self.run_id = run_id
        self.limit = MAX_CHANGED_ROWS if limit is None else limit
        self.keys: set[tuple[int, str]] | None = set()
        self.deleted = False

    def add(self, client_id: int, days, deleted: bool = False) -> None:
        """Note the days of `client_id` a write touched (`deleted`: some of them were deleted)."""
        self.deleted = self.deleted or deleted
        if self.keys is None:
            return
        self.keys.update((client_id, day) for day in days)
        if len(self.keys) > self.limit:
            self.keys = None


class SyncWriter:
    """Writes one sync run's clients into the replica, counting them into `counts`.

    A client counts as written (`written`, the counters) only once the transaction holding it
    has committed; `rollback` drops every client since the last commit, which stay as they were.
    """

    def __init__(self, replica: Replica, run_id: int, counts: RunCounts, prune: bool = False):
        self.replica = replica
        self.run_id = run_id
        self.counts = counts
        self.prune = prune
        self.changed = ChangedRows(run_id)
        self.written: set[int] = set()
        self.failures: list[tuple[int | None, str]] = []
        self._group = replica.write_group()
        self._uncommitted: list[tuple[int, int, ClientWrite]] = []

    def write(self, client_id: int, window, rows: ClientRows) -> None:
        """Upsert one client's whole window (`window` has `start` and `end` dates). On an error every
        client since the last commit is rolled back (as `rollback`) before it is raised."""
        try:
            result = self._group.write(self.run_id, client_id, (window.start, window.end), rows, self.prune)
        except BaseException:
            self._uncommitted.clear()  # the group rolled them back: never counted as written
            raise
        self.changed.add(client_id, result.days, result.deleted > 0)  # before its commit: a rollback only costs a recomputation
        self._uncommitted.append((client_id, rows.fetched, result))
        for reject in rows.rejects:
            log.warning("client %s: rejected row %s: %s", client_id, reject.stat_date, reject.reason)
        if self._group.due:
            self.commit()

    def expect(self, clients) -> int:
        """The first of `clients` ((client id, window) pairs, in the order they will be written)
        that share the first one's window: their stored rows are read by one statement, up to
        EXPECTED_ROWS days of them (at least one client), not one statement a client. One window,
        so that no client's read spans another's longer window. Returns how many were read."""
        chunk, days, shared = [], 0, None
        for client_id, window in clients:
            span = (window.start, window.end)
            if shared not in (None, span):
                break
            shared = span
            chunk.append((client_id, span))
            days += window.days
            if days >= EXPECTED_ROWS:
                break
        self._group.expect(chunk)
        return len(chunk)

    @property
    def failed_clients(self) -> list[int]:
        """The clients recorded as failed: a whole batch's failure (a token refused) names none."""
        return [client_id for client_id, _ in self.failures if client_id is not None]

    def fail(self, client_id: int | None, error: str) -> None:
        """Record a client (None: a whole batch) that could not be fetched."""
        self.commit()  # so that the failure is recorded whatever happens to a later group
        self.failures.append((client_id, error))
        self.replica.record_failure(self.run_id, client_id, error)

    def commit(self) -> None:
        """Make every client written since the last commit durable, and count them: the run's row
        gets the counters in the same transaction (see `record_progress`)."""
        if not self._uncommitted:
            self._group.commit()
            return
        counts = replace(self.counts, warnings=list(self.counts.warnings))
        for _, fetched, result in self._uncommitted:
            _count(counts, fetched, result)
        counts.clients_failed = len(self.failed_clients)
        self._group.commit(lambda: self.replica.record_progress(self.run_id, counts))
        for client_id, fetched, result in self._uncommitted:
            self.written.add(client_id)
            _count(self.counts, fetched, result)
        self._uncommitted.clear()

    def rollback(self) -> None:
        """Drop every client written since the last commit: they stay as they were."""
        self._group.rollback()
        self._uncommitted.clear()

    def unfetched(self, client_ids) -> list[int]:
        """Record the clients of `client_ids` neither written nor failed (the run stopped early),
        for `sync --retry-failed`; returns them."""
        failed = {cid for cid, _ in self.failures}
        left = [cid for cid in client_ids if cid not in self.written and cid not in failed]
        self.replica.record_unfetched(self.run_id, left)
        return left

    def staging(self):
        """A place for batch rows of clients whose window has not fully arrived (on disk)."""
        return self.replica.staging()


def _count(counts: RunCounts, fetched: int, written: ClientWrite) -> None:
    """Add one client written to `counts`."""
    counts.clients_ok += 1
    counts.rows_fetched += fetched
    counts.rows_inserted += written.inserted
    counts.rows_updated += written.updated
    counts.rows_unchanged += written.unchanged
    counts.rows_rejected += written.rejected
    counts.rows_deleted += written.deleted
    if written.warning:
        counts.warnings.append(written.warning)

