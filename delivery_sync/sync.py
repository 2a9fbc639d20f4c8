"""The `sync` run: source -> records -> replica, several whole clients per transaction.

`fetch.Fetcher` gets the windows (batch or per client, on `source.concurrency`
threads) and hands them to a `replica.SyncWriter` on the calling thread: one
client's whole window at a time, several clients to a transaction committed when
it reaches its bounds or when the fetcher would otherwise wait for the network,
so a run killed at any moment leaves each client either as it was or fully updated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from . import replica
from .aggregate.run import AggregateResult, aggregate_locked
from .config import Settings
from .days import Window
from .errors import DeliverySyncError, Interrupted, RunFailed, SourceError, UsageError, capped
from .fetch import DeadlineStop, Fetcher, Progress, StopRun
from .records import parse_clients
from .replica import ChangedRows, RunCounts, SyncWriter
from .source import SourceClient

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
    stopped: str | None = None  # why a run that kept what it fetched ended early (its deadline)

    @property
    def status(self) -> str:
        return self.run["status"]


class NothingToRetry(Exception):
    """`sync --retry-failed` found nothing to retry: not an error; the message says why."""


def run_sync(settings: Settings, options: SyncOptions, progress: Progress | None = None) -> SyncResult:
    """Replicate `options.window` from the remote into the replica, holding the writer lock."""
    store = replica.open_store(settings.database)
    with store.writer_lock("sync", discard_unused=True):
        if options.retry_failed:
            options = _retry_options(store, options, settings.status.stale_after_hours)
        result = _sync(store, settings, options, progress)
        # After a partial sync too, and after a failed one that still wrote rows: rollups of what
        # is stored are right either way. A failed sync that wrote nothing changed nothing to roll up.
        run = result.run
        changed = (run["rows_inserted"] or 0) + (run["rows_updated"] or 0) + (run["rows_deleted"] or 0)
        if options.aggregate and (run["status"] != "failed" or changed):
            as_of = settings.source.today()
            try:
                result.aggregate = aggregate_locked(store, as_of, result.changed)
            except Interrupted as stop:
                # The sync is done and recorded: its line, ending "; aggregate failed: interrupted",
                # is the summary (a stop before the aggregate recorded its run has no row to show).
                result.aggregate = AggregateResult(stop.run or {"status": "failed", "error": "interrupted"}, as_of)
                stop.ended = result
                raise
        return result


def _sync(store: replica.Store, settings: Settings, options: SyncOptions, progress: Progress | None) -> SyncResult:
    # One clock for the run: its `sync_runs` times and the summary's seconds both come from it,
    # the client list included.
    clock = replica.RunClock()
    deadline = clock.began + options.deadline_minutes * 60 if options.deadline_minutes else None
    with SourceClient(settings.source, deadline=deadline) as source:
        try:
            listed, problems = parse_clients(source.list_clients())
            if not listed:  # never read this as "every client is gone": that would deactivate them all
                unreadable = f" ({len(problems)} unreadable entries)" if problems else ""
                raise SourceError(f"the remote listed no clients{unreadable}; nothing changed")
        except SourceError as exc:
            return _failed_before_fetch(store, options, str(exc), source.requests, clock)
        except Interrupted as stop:  # stopped while the list was retried: recorded like any other run
            stop.run = _failed_before_fetch(store, options, "interrupted", source.requests, clock).run
            raise
        selected = _select(listed, options.client_ids, options.retrying)
        db = store.open()
        try:
            db.save_client_list(listed)
            windows = _client_windows(db, selected, options, settings.sync.lookback_days)
            window_start = min((w.start for w in windows.values()), default=options.window.start)
            run_id = db.start_run("sync", (window_start, options.window.end), len(selected), clock.started_at)
            if options.client_ids is not None:  # some clients only: were it killed, its unreached are among these
                db.record_selected(run_id, selected)
            counts = RunCounts(clients_total=len(selected), warnings=list(problems))
            writer = SyncWriter(db, run_id, counts, options.prune)
            error = None
            deadline_hit = False
            # Into an empty replica, first_load may build some indexes once the rows are in.
            with _summed_up_on_failure(store, writer, (window_start, options.window.end), clock), \
                    db.closed_on_error(run_id, counts, _replica_failure(store)), db.first_load(sum(w.days for w in windows.values())):
                try:
                    _fetch_and_write(source, settings, windows, writer, progress)
                except StopRun as stop:
                    # Recorded so that `sync --retry-failed` fetches them too, and only them.
                    unfetched = writer.unfetched(windows)
                    error = str(stop)
                    if isinstance(stop, DeadlineStop):
                        shown = capped(unfetched, 10)  # as every list of clients in a summary or verdict
                        error = (f"deadline of {options.deadline_minutes:g} min reached: "
                                 f"{len(unfetched)} client{'s' if len(unfetched) != 1 else ''} not fetched ({shown})")
                        deadline_hit = True
                except (Interrupted, KeyboardInterrupt):
                    # Ctrl-C or SIGTERM: the clients written stay written, the rest is for --retry-failed.
                    try:
                        writer.unfetched(windows)
                    except Exception as exc:  # a note that cannot be written must not turn the stop into a crash
                        log.debug("could not record the clients not fetched: %s", exc)
                    raise
                finally:
                    counts.requests, counts.clients_failed = source.requests, len(writer.failed_clients)
            # A deadline keeps what was fetched: the run is partial, not failed.
            status = "partial" if deadline_hit else _status(counts, error)
            seconds, finished_at = clock.stop()
            run = db.finish_run(run_id, status, counts, error, finished_at)
        finally:
            db.close()
    for warning in counts.warnings:
        log.warning(warning)
    return SyncResult(run, writer.failures, counts.warnings, seconds, changed=writer.changed, stopped=error if deadline_hit else None)


def _retry_options(store: replica.Store, options: SyncOptions, stale_after_hours: float) -> SyncOptions:
    """The last sync's window and the clients it did not bring in: those that failed and those it
    never fetched (it stopped early); when it brought in all it tried, those of the latest earlier
    sync that left clients no run has written since. Raises NothingToRetry when there are none."""
    if not store.exists():
        raise NothingToRetry("no replica yet, so no sync to retry")
    db = store.open()
    try:
        from .status import stale_cutoff  # the status module is not needed otherwise

        last = db.last_sync_to_retry(stale_cutoff(datetime.now(UTC), stale_after_hours))
    finally:
        db.close()
    if last is None:
        raise NothingToRetry("no sync has run yet")
    run_id, status, start, end, ids = last
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
    them = "them" if len(unknown) > 1 else "it"
    if unknown and retrying:  # clients the remote no longer lists cannot be retried
        log.warning("not retrying client%s %s: the remote no longer lists %s", "s" if len(unknown) > 1 else "", ", ".join(map(str, unknown)), them)
        return [cid for cid in dict.fromkeys(client_ids) if cid not in unknown]
    if unknown:
        raise UsageError(
            f"unknown client id{'s' if len(unknown) > 1 else ''} {', '.join(map(str, unknown))}: "
            f"the remote does not list {them}"
        )
    return list(dict.fromkeys(client_ids))


def _client_windows(db: replica.Replica, selected: list[int], options: SyncOptions, lookback_days: int) -> dict[int, Window]:
    """Each selected client's window: the requested one, or the incremental start for clients with rows."""
    window = options.window
    if not options.incremental:
        return {cid: window for cid in selected}
    latest = db.latest_dates()
    start = min(
        (latest[cid] - timedelta(days=lookback_days) for cid in selected if cid in latest),
        default=window.start,
    )
    incremental = Window(max(start, window.start), window.end)
    return {cid: incremental if cid in latest else window for cid in selected}


def _fetch_and_write(source: SourceClient, settings: Settings, windows: dict[int, Window], writer: SyncWriter,
                     progress: Progress | None) -> None:
    """Fetch every window into `writer`: what was fetched whole is kept when the run stops early;
    on Ctrl-C or a crash the clients of the open transaction stay as they were."""
    try:
        Fetcher(source, settings.source, writer, progress).run(windows)
    except StopRun:
        writer.commit()
        raise
    except BaseException:
        writer.rollback()
        raise
    writer.commit()


@contextmanager
def _summed_up_on_failure(store: replica.Store, writer: SyncWriter, window: tuple[date, date], clock: replica.RunClock) -> Iterator[None]:
    """A failure of the replica mid-run (a full disk, a database server gone) ends the run as
    RunFailed: its summary line says what was written before, as every other run's does, with
    the store's one-line error as the reason. (Its `sync_runs` row may not be writable then: the
    next writing run marks it interrupted.)"""
    try:
        yield
    except Exception as exc:
        failure = store.failure(exc)
        if failure is None:
            raise
        counts = writer.counts
        run = {"status": "failed", "error": _said(failure), "window_start": window[0].isoformat(), "window_end": window[1].isoformat(),
               **counts.as_row()}
        raise RunFailed(failure, SyncResult(run, writer.failures, counts.warnings, clock.stop()[0])) from exc


def _replica_failure(store: replica.Store) -> Callable[[BaseException], str | None]:
    """How a run's `sync_runs` row says a failure of the replica itself: as its summary line does."""
    def described(exc: BaseException) -> str | None:
        failure = store.failure(exc) if isinstance(exc, Exception) else None
        return None if failure is None else _said(failure)
    return described


def _said(failure: DeliverySyncError) -> str:
    """A failure of the replica on one line with its hint: the reason of the run's summary line and row."""
    return f"{failure} ({failure.hint})" if failure.hint else str(failure)


def _status(counts: RunCounts, error: str | None) -> str:
    if error or (counts.clients_total and counts.clients_ok == 0):
        return "failed"
    if counts.clients_failed or counts.rows_rejected:
        return "partial"
    return "ok"


def _failed_before_fetch(store: replica.Store, options: SyncOptions, error: str, requests: int,
                         clock: replica.RunClock) -> SyncResult:
    """The client list could not be had: record a failed run, touch no data."""
    db = store.open()
    try:
        run_id = db.start_run("sync", (options.window.start, options.window.end), started_at=clock.started_at)
        seconds, finished_at = clock.stop()
        run = db.finish_run(run_id, "failed", RunCounts(requests=requests), error, finished_at)
    finally:
        db.close()
    return SyncResult(run, [(None, error)], [], seconds)
