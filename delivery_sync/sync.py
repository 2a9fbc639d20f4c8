"""The `sync` run: source -> records -> replica, several whole clients per transaction.

`fetch.Fetcher` gets the windows (batch or per client, on `source.concurrency`
threads); every write happens on the calling thread, one client's whole window
at a time in a `replica.WriteGroup` committed when it reaches its bounds or
when the writer would otherwise wait for the network, so a run killed at any
moment leaves each client either as it was or fully updated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

from . import replica
from .aggregate.build import AggregateResult, ChangedRows, aggregate_locked
from .config import Settings
from .errors import Interrupted, SourceError, UsageError
from .fetch import DeadlineStop, Fetcher, Progress, StopRun
from .records import ClientRows, parse_clients
from .replica import RunCounts
from .source import SourceClient
from .window import Window

log = logging.getLogger(__name__)


@dataclass
class SyncOptions:
    """What the user asked of one `sync` run."""

    window: Window
    client_ids: list[int] | None = None
    incremental: bool = False
    prune: bool = False
    aggregate: bool = True  # rebuild the rollups afterwards (`--no-aggregate` turns it off)
    retry_failed: bool = False  # only what the last sync did not bring in, over its window (`window` is ignored)
    retrying: bool = False  # set by --retry-failed on the options it builds
    deadline_minutes: float = 0  # the run's time budget (0 = none)


@dataclass
class SyncResult:
    """The outcome of a sync: its `sync_runs` row and the failures behind it."""

    run: dict
    failures: list[tuple[int | None, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    aggregate: AggregateResult | None = None  # the rollup rebuild that ended the run, if any
    changed: ChangedRows | None = None  # the keys the run wrote, for the aggregate to refresh only those

    @property
    def status(self) -> str:
        return self.run["status"]


class NothingToRetry(Exception):
    """`sync --retry-failed` found nothing to retry: not an error; the message says why."""


def run_sync(settings: Settings, options: SyncOptions, progress: Progress | None = None) -> SyncResult:
    """Replicate `options.window` from the remote into the replica, holding the writer lock."""
    with replica.writer_lock(settings.database, "sync", discard_unused=True):
        if options.retry_failed:
            options = _retry_options(settings.database, options)
        result = _sync(settings, options, progress)
        # After a partial sync too, and after a failed one that still wrote rows: rollups of what
        # is stored are right either way. A failed sync that wrote nothing changed nothing to roll up.
        run = result.run
        changed = (run["rows_inserted"] or 0) + (run["rows_updated"] or 0) + (run["rows_deleted"] or 0)
        if options.aggregate and (run["status"] != "failed" or changed):
            result.aggregate = aggregate_locked(settings.database, settings.source.today(), result.changed)
        return result


def _sync(settings: Settings, options: SyncOptions, progress: Progress | None) -> SyncResult:
    # One clock for the run: its `sync_runs` times and the summary's seconds both come from it,
    # the client list included.
    clock = replica.RunClock()
    failures: list[tuple[int | None, str]] = []
    deadline = clock.began + options.deadline_minutes * 60 if options.deadline_minutes else None
    with SourceClient(settings.source, deadline=deadline) as source:
        try:
            listed, problems = parse_clients(source.list_clients())
            if not listed:  # never read this as "every client is gone": that would deactivate them all
                unreadable = f" ({len(problems)} unreadable entries)" if problems else ""
                raise SourceError(f"the remote listed no clients{unreadable}; nothing changed")
        except SourceError as exc:
            return _failed_before_fetch(settings, options, str(exc), source.requests, clock)
        except Interrupted as stop:  # stopped while the list was retried: recorded like any other run
            stop.run = _failed_before_fetch(settings, options, "interrupted", source.requests, clock).run
            raise
        selected = _select(listed, options.client_ids, options.retrying)
        db = replica.open_replica(settings.database)
        try:
            replica.save_client_list(db, listed)
            windows = _client_windows(db, selected, options, settings.sync.lookback_days)
            window_start = min((w.start for w in windows.values()), default=options.window.start)
            run_id = replica.start_run(db, "sync", (window_start, options.window.end), len(selected), clock.started_at)
            counts = RunCounts(clients_total=len(selected), warnings=list(problems))
            changed = ChangedRows(run_id)
            error = None
            with replica.closed_on_error(db, run_id, counts):
                written: set[int] = set()
                deadline_hit = False

                def record_unfetched() -> list[int]:
                    # Recorded so that `sync --retry-failed` fetches them too, and only them.
                    failed = {cid for cid, _ in failures}
                    unfetched = [cid for cid in windows if cid not in written and cid not in failed]
                    replica.record_unfetched(db, run_id, unfetched)
                    return unfetched

                try:
                    _fetch_and_write(db, source, run_id, windows, options.prune, counts, failures, written, progress, settings,
                                     changed)
                except StopRun as stop:
                    unfetched = record_unfetched()
                    error = str(stop)
                    if isinstance(stop, DeadlineStop):
                        shown = ", ".join(map(str, unfetched[:20])) + (", ..." if len(unfetched) > 20 else "")
                        error = (f"deadline of {options.deadline_minutes:g} min reached: "
                                 f"{len(unfetched)} client{'s' if len(unfetched) != 1 else ''} not fetched ({shown})")
                        deadline_hit = True
                except (Interrupted, KeyboardInterrupt):
                    # Ctrl-C or SIGTERM: the clients written stay written, the rest is for --retry-failed.
                    try:
                        record_unfetched()
                    except Exception as exc:  # a note that cannot be written must not turn the stop into a crash
                        log.debug("could not record the clients not fetched: %s", exc)
                    raise
                finally:
                    counts.requests, counts.clients_failed = source.requests, len(failures)
            # A deadline keeps what was fetched: the run is partial, not failed.
            status = "partial" if deadline_hit else _status(counts, error)
            seconds, finished_at = clock.stop()
            run = replica.finish_run(db, run_id, status, counts, error, finished_at)
        finally:
            db.close()
    for warning in counts.warnings:
        log.warning(warning)
    return SyncResult(run, failures, counts.warnings, seconds, changed=changed)


def _retry_options(database, options: SyncOptions) -> SyncOptions:
    """The last sync's window and the clients it did not bring in: those that failed and those it
    never fetched (it stopped early). Raises NothingToRetry when there are none."""
    if not database.is_file():
        raise NothingToRetry("no replica yet, so no sync to retry")
    db = replica.open_replica(database)
    try:
        last = db.execute(
            "SELECT id, status, window_start, window_end FROM sync_runs WHERE command = 'sync' AND status != 'running' "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if last is None:
            raise NothingToRetry("no sync has run yet")
        run_id, status, start, end = last
        ids = sorted({cid for (cid,) in db.execute(
            "SELECT client_id FROM sync_failures WHERE run_id = :run AND client_id IS NOT NULL "
            "UNION SELECT client_id FROM sync_unfetched WHERE run_id = :run", {"run": run_id}
        )})
    finally:
        db.close()
    if not ids and status == "failed" and start:
        ids = None  # it failed before any client (e.g. the client list): every client, over its window
    elif not ids:
        why = "ended ok" if status == "ok" else f"was {status} only for rejected rows, which a re-fetch brings back unchanged"
        raise NothingToRetry(f"the last sync (run {run_id}) {why}")
    window = Window(date.fromisoformat(start), date.fromisoformat(end))
    return replace(options, window=window, client_ids=ids, incremental=False, retry_failed=False, retrying=True)


def _select(listed, client_ids: list[int] | None, retrying: bool = False) -> list[int]:
    known = [c.id for c in listed]
    if client_ids is None:
        return known
    unknown = sorted(set(client_ids) - set(known))
    if unknown and retrying:  # clients the remote no longer lists cannot be retried
        log.warning("not retrying client%s %s: the remote no longer lists them", "s" if len(unknown) > 1 else "", ", ".join(map(str, unknown)))
        return [cid for cid in dict.fromkeys(client_ids) if cid not in unknown]
    if unknown:
        raise UsageError(
            f"unknown client id{'s' if len(unknown) > 1 else ''} {', '.join(map(str, unknown))}: "
            "the remote does not list them"
        )
    return list(dict.fromkeys(client_ids))


def _client_windows(db, selected: list[int], options: SyncOptions, lookback_days: int) -> dict[int, Window]:
    """Each selected client's window: the requested one, or the incremental start for clients with rows."""
    window = options.window
    if not options.incremental:
        return {cid: window for cid in selected}
    latest = replica.latest_dates(db)
    start = min(
        (latest[cid] - timedelta(days=lookback_days) for cid in selected if cid in latest),
        default=window.start,
    )
    incremental = Window(max(start, window.start), window.end)
    return {cid: incremental if cid in latest else window for cid in selected}


def _fetch_and_write(db, source: SourceClient, run_id: int, windows: dict[int, Window], prune: bool,
                     counts: RunCounts, failures: list, written: set[int], progress: Progress | None,
                     settings: Settings, changed: ChangedRows) -> None:
    # Several whole clients per transaction; a client counts as written once its group commits.
    group = replica.WriteGroup(db)
    uncommitted: list[tuple[int, int, replica.ClientWrite]] = []

    def commit() -> None:
        group.commit()
        for cid, fetched, result in uncommitted:
            written.add(cid)
            _count(counts, fetched, result)
        uncommitted.clear()

    def write(cid: int, window: Window, rows: ClientRows) -> None:
        result = group.write(run_id, cid, (window.start, window.end), rows, prune)
        changed.add(cid, result.days)  # before its commit: a group rolled back later only costs a recomputation
        uncommitted.append((cid, rows.fetched, result))
        for reject in rows.rejects:
            log.warning("client %s: rejected row %s: %s", cid, reject.stat_date, reject.reason)
        if group.due:
            commit()

    def fail(cid: int | None, error: str) -> None:
        commit()  # so that the failure is recorded whatever happens to a later group
        failures.append((cid, error))
        replica.record_failure(db, run_id, cid, error)

    try:
        Fetcher(source, settings.source, db, write, fail, progress, idle=commit).run(windows)
    except StopRun:
        commit()  # what was fetched whole is kept
        raise
    except BaseException:
        group.rollback()  # Ctrl-C or a crash: the clients of the open group stay as they were
        raise
    commit()


def _count(counts: RunCounts, fetched: int, written: replica.ClientWrite) -> None:
    counts.clients_ok += 1
    counts.rows_fetched += fetched
    counts.rows_inserted += written.inserted
    counts.rows_updated += written.updated
    counts.rows_unchanged += written.unchanged
    counts.rows_rejected += written.rejected
    counts.rows_deleted += written.deleted
    if written.warning:
        counts.warnings.append(written.warning)


def _status(counts: RunCounts, error: str | None) -> str:
    if error or (counts.clients_total and counts.clients_ok == 0):
        return "failed"
    if counts.clients_failed or counts.rows_rejected:
        return "partial"
    return "ok"


def _failed_before_fetch(settings: Settings, options: SyncOptions, error: str, requests: int,
                         clock: replica.RunClock) -> SyncResult:
    """The client list could not be had: record a failed run, touch no data."""
    db = replica.open_replica(settings.database)
    try:
        run_id = replica.start_run(db, "sync", (options.window.start, options.window.end), started_at=clock.started_at)
        seconds, finished_at = clock.stop()
        run = replica.finish_run(db, run_id, "failed", RunCounts(requests=requests), error, finished_at)
    finally:
        db.close()
    return SyncResult(run, [(None, error)], [], seconds)
