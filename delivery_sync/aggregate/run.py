"""The `aggregate` run: the engine's rollup build in one transaction with its `sync_runs` row.

SQLite's build is build.py's; PostgreSQL's full rebuild is postgres.py's, which shares build.py's
refresh and rolling periods. Choosing between them here keeps both build modules free of each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

from ..errors import NoReplica
from .sql import ROLLING_PERIODS

if TYPE_CHECKING:
    from ..replica import ChangedRows, Store


@dataclass
class AggregateResult:
    """The outcome of a rebuild: its `sync_runs` row, the periods built, and how long it took."""

    run: dict
    as_of: date
    periods: int = 0
    months: int = 0
    seconds: float = 0.0
    refreshed: bool = False  # only what a sync changed was recomputed (else a full rebuild)

    @property
    def status(self) -> str:
        return self.run["status"]


def run_aggregate(database, as_of: date) -> AggregateResult:
    """`delivery-sync aggregate`: take the writer lock, then rebuild (never creates a replica)."""
    from .. import replica

    store = replica.open_store(database)
    if not store.exists():
        raise NoReplica(f"no replica at {store}", hint="run 'delivery-sync sync' first")
    with store.writer_lock("aggregate"):
        return aggregate_locked(store, as_of)


def aggregate_locked(store: Store, as_of: date, changed: ChangedRows | None = None) -> AggregateResult:
    """Rebuild every rollup as of `as_of`, recorded as an `aggregate` run; the caller holds the writer lock.

    With `changed` (what the sync that just ran wrote), and when the rollups and their partial
    sums were current just before that sync, only the partial sums and rollup rows of the
    months, weeks and days those rows fall in are recomputed, plus the rolling periods (from
    partial sums, so a new as-of date costs little). Otherwise everything is rebuilt.

    The rebuild and its `ok` run row commit in one transaction, so a reader sees
    either the old rollups and run or the new ones, never a half-built table.
    """
    from .. import replica

    clock = replica.RunClock()  # the summary's seconds are the run row's duration
    db = store.open()
    refreshed = False
    try:
        try:
            run_id = db.start_run("aggregate", (as_of - timedelta(days=364), as_of), started_at=clock.started_at)
        except Exception as exc:  # a full disk refuses even the run row: still a result to print
            error = f"{store.describe_failure(exc)} (this failure could not be recorded)"
            run = {"status": "failed", "error": error, **replica.RunCounts().as_row()}
            return AggregateResult(run, as_of, seconds=clock.stop()[0])
        with db.closed_on_error(run_id):
            try:
                with db.transaction():
                    built, refreshed, counts = _builder(db.engine)(db, as_of, run_id, changed)
                    seconds, finished_at = clock.stop()
                    run = db.finish_run(run_id, "ok", counts, finished_at=finished_at)
            except Exception as exc:  # recorded, then reported by the caller as a failed run
                seconds, finished_at = clock.stop()
                run = db.finish_run(run_id, "failed", replica.RunCounts(), store.describe_failure(exc), finished_at)
                built = []
    finally:
        db.close()
    months = sum(1 for period, _, _ in built if period not in ROLLING_PERIODS)
    return AggregateResult(run, as_of, len(built) - months, months, seconds, refreshed)


def _builder(engine: str):
    """The rollup build of an engine: where the two engines' SQL differs most, each has its own."""
    if engine == "postgresql":
        from .postgres import build
    else:
        from .build import build
    return build
