"""Runs: the `sync_runs` rows every writing command opens and closes, and `sync_failures`.

Engine-neutral SQL: `db` is a SQLite `ReplicaDatabase` or a PostgreSQL `postgres.Connection`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from ..days import utc_now, utc_stamp
from ..errors import Interrupted
from ..readonly import UNRECORDED_END, left_behind, not_reached
from .schema import RUN_COUNTERS

if TYPE_CHECKING:
    from .schema import ReplicaDatabase


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


class RunClock:
    """A run's clock, read once at its start and once at its end: the `started_at` and `finished_at`
    of its `sync_runs` row and the seconds of its summary line come from the same two readings."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self._wall = time.time()
        self.started_at = utc_stamp(self._wall)

    def stop(self) -> tuple[float, str]:
        """(seconds since the start, the end as `finished_at`).

        The stored times have whole seconds: `finished_at` is `started_at` plus the seconds
        rounded, so `status` ("took 13 s") says what the summary line (12.9 s) said.
        """
        seconds = time.monotonic() - self.began
        return seconds, utc_stamp(math.floor(self._wall) + round(seconds))


def _mark_interrupted_runs(db: ReplicaDatabase) -> int:
    """Runs left `running` by a process that died become `failed`, interrupted, saying that they
    never recorded their end (as `status` says of them before).

    Only called (by `start_run` and `last_sync_to_retry`) while holding the writer lock, so no live
    run can be `running`. A sync's counters are those of its last commit (`record_progress`). Its
    `finished_at` is the last moment the replica knows it alive: its last client written (a sync),
    else its start; never when the next run found it, which may be a day later. Readers say "end
    not recorded" rather than a duration for such a run (`UNRECORDED_END` in its error).
    """
    # Counters a killed run never wrote: 0, not NULL, so every reader can add them up.
    counters = ", ".join(f"{name} = COALESCE({name}, 0)" for name in RUN_COUNTERS)
    cursor = db.execute(
        "UPDATE sync_runs SET status = 'failed', "
        "finished_at = COALESCE(CASE WHEN command = 'sync' THEN "
        "(SELECT MAX(c.last_synced_at) FROM clients AS c WHERE c.last_synced_at >= sync_runs.started_at) END, started_at), "
        f"error = COALESCE(error || '; ', '') || ?, {counters} WHERE status = 'running'",
        [UNRECORDED_END],
    )
    return cursor.rowcount


def record_progress(db: ReplicaDatabase, run_id: int, counts: RunCounts) -> None:
    """The run's counters so far, written in the transaction of the clients they count: a run
    killed later keeps a row that says what it wrote, and a running one shows its progress."""
    counters = counts.as_row()
    db.execute(f"UPDATE sync_runs SET {', '.join(f'{name} = ?' for name in counters)} WHERE id = ?", [*counters.values(), run_id])


def start_run(
    db: ReplicaDatabase, command: str, window: tuple[date, date] | None = None, clients_total: int = 0,
    started_at: str | None = None,
) -> int:
    """Insert a `running` row in `sync_runs` and return its id; the caller holds the writer lock.

    First marks runs left `running` by a dead process as failed ("interrupted"): every
    writing run starts here, so none of them can forget it.
    """
    _mark_interrupted_runs(db)
    return db.insert_id(
        "INSERT INTO sync_runs(command, status, started_at, window_start, window_end, clients_total) VALUES (?, 'running', ?, ?, ?, ?)",
        [command, started_at or utc_now(), window[0].isoformat() if window else None, window[1].isoformat() if window else None,
         clients_total],
    )


def finish_run(db: ReplicaDatabase, run_id: int, status: str, counts: RunCounts, error: str | None = None,
               finished_at: str | None = None) -> dict:
    """Close a run with its status, counters and error/warnings (at `finished_at`, default now); returns the stored row."""
    messages = [*counts.warnings, *([error] if error else [])]
    counters = counts.as_row()
    db.execute(
        f"UPDATE sync_runs SET status = ?, finished_at = ?, error = ?, {', '.join(f'{name} = ?' for name in counters)} WHERE id = ?",
        [status, finished_at or utc_now(), "; ".join(messages) or None, *counters.values(), run_id],
    )
    cursor = db.execute("SELECT * FROM sync_runs WHERE id = ?", [run_id])
    return dict(zip([d[0] for d in cursor.description], cursor.fetchone()))


@contextmanager
def closed_on_error(db: ReplicaDatabase, run_id: int, counts: RunCounts | None = None,
                    described: Callable[[BaseException], str | None] | None = None) -> Iterator[None]:
    """Close the run as `failed` at once if the block is interrupted (Ctrl-C, SIGTERM) or crashes,
    rather than leave it `running` until the next writing run. `described` says an error of the
    replica itself as the run's summary line does (None for any other)."""
    try:
        yield
    except BaseException as exc:
        stopped = isinstance(exc, (KeyboardInterrupt, Interrupted))
        reason = "interrupted" if stopped else (described and described(exc)) or f"crashed: {type(exc).__name__}: {exc}"
        try:
            run = finish_run(db, run_id, "failed", counts or RunCounts(), reason)
        except Exception:  # of either engine
            run = None  # the disk that failed the run may refuse this too: the next writing run marks it interrupted
        if isinstance(exc, Interrupted) and exc.run is None:  # the innermost run: its summary line is printed
            exc.run = run
        raise


def record_failure(db: ReplicaDatabase, run_id: int, client_id: int | None, error: str) -> None:
    """Record a client (None: a whole batch) the run could not fetch, and why."""
    db.execute("INSERT INTO sync_failures(run_id, client_id, error) VALUES (?, ?, ?)", [run_id, client_id, error])


def record_selected(db: ReplicaDatabase, run_id: int, client_ids: list[int]) -> None:
    """The clients a sync of some clients only selected, at its start (see `not_reached`)."""
    db.executemany("INSERT INTO sync_selected(run_id, client_id) VALUES (?, ?)", [(run_id, cid) for cid in client_ids])


def record_unfetched(db: ReplicaDatabase, run_id: int, client_ids: list[int]) -> None:
    """Clients the run selected but never fetched (it stopped early), for `sync --retry-failed`."""
    db.executemany("INSERT INTO sync_unfetched(run_id, client_id) VALUES (?, ?)", [(run_id, cid) for cid in client_ids])


def last_sync_to_retry(db: ReplicaDatabase, since: str) -> tuple[int, str, str | None, str | None, list[int]] | None:
    """The last finished sync (id, status, window start and end) and the clients it did not bring in:
    those that failed and those it never fetched, recorded or not (`not_reached`). When it brought
    in every client it tried, the
    latest earlier sync ended at `since` or later that left clients behind (`left_behind`) and
    those clients instead. None when no sync has finished. The caller holds the writer lock: a sync
    left `running` by a killed process is closed first (`failed`), so that it is the one retried,
    as `status` advises, not the sync before it.
    """
    _mark_interrupted_runs(db)
    last = db.execute(
        "SELECT id, status, window_start, window_end FROM sync_runs WHERE command = 'sync' AND status != 'running' "
        "ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if last is None:
        return None
    ids = sorted({cid for (cid,) in db.execute(
        "SELECT client_id FROM sync_failures WHERE run_id = :run AND client_id IS NOT NULL "
        "UNION SELECT client_id FROM sync_unfetched WHERE run_id = :run", {"run": last[0]}
    )})
    if not ids and last[1] != "failed":
        behind = left_behind(db, last[0], since)
        if behind:
            run_id = max(behind.values())
            earlier = db.execute("SELECT id, status, window_start, window_end FROM sync_runs WHERE id = ?", [run_id]).fetchone()
            return (*earlier, sorted(cid for cid, run in behind.items() if run == run_id))
    # A killed sync, or one whose replica failed under it, never recorded the clients it did not reach.
    ids = sorted({*ids, *not_reached(db, last[0])})
    return (*last, ids)
