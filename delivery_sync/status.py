"""Status facts: what is in the replica, how fresh it is, how the last runs went (docs/reference.md, status).

Read through `readonly.py`: never creates the file, never takes the writer
lock, works while a sync runs. Standard library only, so `status --check`
starts fast enough for a monitor polling every minute.

Dates follow the source time zone, never the machine's: "today" is the
remote's calendar day.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from .aggregate.current import rollups_as_of
from .dialect import dialect_of
from .errors import DamagedReplica, DeliverySyncError, capped
from .metrics import RUN_COUNTERS
from .readonly import UNRECORDED_END, damaged, left_behind, not_reached, reader_for, snapshot

# An active client whose latest day is more than this many days before today lags (docs/reference.md, status).
LAG_DAYS = 2
# A repair line names at most this many client ids; past that it advises the whole sync.
MAX_ADVISED_IDS = 50


@dataclass
class Verdict:
    """Whether the replica can be trusted, why, and what to run if not."""

    ok: bool
    reason: str
    advice: str | None = None


@dataclass
class Status:
    """Everything `status` shows; `as_json()` is the `--json` object."""

    database: str
    exists: bool
    checked_at: str
    timezone: str
    today: str
    stale_after_hours: float
    database_bytes: int | None = None
    clients: int = 0
    active_clients: int = 0
    rows: int = 0
    date_min: str | None = None
    date_max: str | None = None
    freshness: str = "never"
    last_ok_sync_at: str | None = None
    age_hours: float | None = None
    last_sync: dict | None = None
    last_collect: dict | None = None
    last_aggregate: dict | None = None
    # The as-of date of the rollup tables when they are current (what an analyst reading them
    # directly needs to know: reports read the raw rows whenever they are not), else None.
    rollups_as_of: str | None = None
    running: list[dict] = field(default_factory=list)
    failed_clients: list[int] = field(default_factory=list)
    failures: dict[int, str] = field(default_factory=dict)
    unfetched_clients: list[int] = field(default_factory=list)  # the last sync stopped before fetching them
    # Active clients an earlier sync failed or did not fetch that no run has written since (a `sync
    # --clients` of some of them ran after it), for `sync --retry-failed` too.
    earlier_failed_clients: list[int] = field(default_factory=list)
    lagging_clients: list[int] = field(default_factory=list)
    # Those of them with no row at all (say, clients a first sync has not reached yet).
    lagging_without_rows: list[int] = field(default_factory=list)
    stale_clients: list[int] = field(default_factory=list)
    missing_days: int = 0
    missing_by_client: dict[int, int] = field(default_factory=dict)
    verdict: Verdict | None = None
    history: list[dict] | None = None  # the last N runs of any command, newest first (`--history N`)
    unreadable: str | None = None  # why the replica could not be read (damaged, or no access): nothing above is known
    unreadable_advice: str | None = None
    may_write: bool | None = None  # may this user or role run a writing command on the replica? (None: not known)

    def as_json(self) -> dict:
        data = asdict(self)
        del data["may_write"]  # said in verdict.advice
        # JSON object keys are strings; keep ids readable as such.
        data["missing_by_client"] = {str(k): v for k, v in self.missing_by_client.items()}
        data["failures"] = {str(k): v for k, v in self.failures.items()}
        if self.history is None:
            del data["history"]
        return data


def read_status(database, tz: ZoneInfo, stale_after_hours: float, history: int = 0,
                tolerate_unopenable: bool = False) -> Status:
    """Gather the status facts of the replica at `database` (a path or a PostgreSQL URL; it may not
    exist yet), with its last `history` runs.

    A replica that is damaged (a check of the small tables, or any read, fails) is `unreadable`,
    and so, with `tolerate_unopenable`, is one that cannot be opened at all (else NoReplica, exit 2).
    """
    reader = reader_for(database)
    now = datetime.now(UTC)
    today = now.astimezone(tz).date()
    status = Status(
        database=reader.location,
        exists=False,  # until asked: a server that cannot be asked is not said to hold a replica
        checked_at=now.replace(microsecond=0).isoformat(),
        timezone=str(tz),
        today=today.isoformat(),
        stale_after_hours=stale_after_hours,
        history=[] if history else None,
    )
    try:
        status.exists = reader.exists()  # PostgreSQL: asks the server
        if status.exists:
            status.database_bytes = reader.size()
            conn = reader.connect()
    except DeliverySyncError as exc:  # no replica, or (PostgreSQL) no server to ask
        # A file SQLite cannot read as a database is a damaged replica: a verdict, not an error.
        if not tolerate_unopenable and not isinstance(exc, DamagedReplica):
            raise
        status.unreadable, status.unreadable_advice = str(exc), exc.hint
        status.verdict = judge(status)
        return status
    if status.exists:
        blank = replace(status)  # what is known before reading: all a damaged file leaves standing
        try:
            # A `running` row is dead when no writer held the lock before and after the snapshot
            # (a writer starting or finishing in between holds it at one of the two checks).
            idle = reader.writer_holds_lock() is False
            # One read transaction: counts and runs agree even while a sync commits.
            with snapshot(conn):
                reader.check_intact(conn)
                _read(conn, status, now, today, idle and reader.writer_holds_lock() is False, history)
                status.may_write = reader.may_write(conn)
        except reader.damage as exc:  # a damaged replica: nothing read from it can be vouched for
            said = damaged(reader.location, str(exc).replace("*** in database main ***", ""))
            status = replace(blank, unreadable=str(said), unreadable_advice=said.hint)
        except DeliverySyncError as exc:  # (PostgreSQL) a role without rights, a server gone mid-read
            if not tolerate_unopenable:
                raise
            status = replace(blank, unreadable=str(exc), unreadable_advice=exc.hint)
        finally:
            conn.close()
        if not status.running and (holder := reader.lock_holder()):
            # A live writer that has not opened its run row yet (a sync retrying the client list).
            status.running = [{"id": None, "command": holder["command"], "status": "running",
                               "started_at": holder["started_at"], "pid": holder["pid"]}]
    status.verdict = judge(status)
    return status


def _read(conn: sqlite3.Connection, status: Status, now: datetime, today: date, dead_running: bool = False,
          history: int = 0) -> None:
    status.clients, status.active_clients = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(active), 0) FROM clients"
    ).fetchone()
    # Each in its own subquery: a lone MIN or MAX reads one end of the date index, both together
    # scan it all (0.3 s at 10,000 clients x 365 days).
    status.rows, status.date_min, status.date_max = conn.execute(
        "SELECT (SELECT COUNT(*) FROM client_stats), (SELECT MIN(stat_date) FROM client_stats), "
        "(SELECT MAX(stat_date) FROM client_stats)"
    ).fetchone()
    status.last_sync = _last_run(conn, "sync", dead_running)
    status.last_collect = _last_run(conn, "collect", dead_running)
    status.last_aggregate = _last_run(conn, "aggregate", dead_running)
    as_of = rollups_as_of(conn)
    status.rollups_as_of = as_of and as_of.isoformat()
    if history:
        rows = conn.execute("SELECT * FROM sync_runs ORDER BY id DESC LIMIT ?", [history])
        status.history = [_shown_run(_run(row), dead_running) for row in rows]
    if not dead_running:
        status.running = [_run(r) for r in conn.execute("SELECT * FROM sync_runs WHERE status = 'running' ORDER BY id")]

    fresh = read_freshness(conn, now, status.stale_after_hours)
    status.freshness, status.last_ok_sync_at, status.stale_clients = fresh.freshness, fresh.last_ok_sync_at, fresh.stale_clients
    if fresh.last_ok_sync_at:
        status.age_hours = round((now - datetime.fromisoformat(fresh.last_ok_sync_at)).total_seconds() / 3600, 2)

    if status.last_sync:
        status.failures = dict(
            conn.execute(
                "SELECT client_id, error FROM sync_failures WHERE run_id = ? AND client_id IS NOT NULL "
                f"ORDER BY client_id, {dialect_of(conn).row_order}",
                [status.last_sync["id"]],
            ).fetchall()
        )
        status.failed_clients = list(status.failures)
        tables = {row[0] for row in conn.execute(dialect_of(conn).table_names)}
        if "sync_unfetched" in tables:  # else a replica before it
            status.unfetched_clients = [cid for (cid,) in conn.execute(
                "SELECT client_id FROM sync_unfetched WHERE run_id = ? ORDER BY client_id", [status.last_sync["id"]])]
            # Killed, or its replica failed under it: what it left unrecorded, those not written since it began.
            selections = "sync_selected" in tables
            reached_not = set(not_reached(conn, status.last_sync["id"], selections)) - set(status.failed_clients)
            status.unfetched_clients = sorted({*status.unfetched_clients, *reached_not})
            now_listed = set(status.failed_clients) | set(status.unfetched_clients)
            since = stale_cutoff(now, status.stale_after_hours)
            status.earlier_failed_clients = sorted(set(left_behind(conn, status.last_sync["id"], since, selections)) - now_listed)
        status.missing_by_client = _missing(conn, status.last_sync, today)
        status.missing_days = sum(status.missing_by_client.values())

    # A client with no rows at all lags too: it is the worst case of lagging.
    cutoff = (today - timedelta(days=LAG_DAYS)).isoformat()
    lagging = conn.execute(
        "SELECT c.id, MAX(s.stat_date) IS NULL FROM clients c LEFT JOIN client_stats s ON s.client_id = c.id WHERE c.active = 1 "
        "GROUP BY c.id HAVING MAX(s.stat_date) IS NULL OR MAX(s.stat_date) < ? ORDER BY c.id",
        [cutoff],
    ).fetchall()
    status.lagging_clients = [cid for cid, _ in lagging]
    status.lagging_without_rows = [cid for cid, without in lagging if without]


@dataclass
class Freshness:
    """How fresh the replica is (docs/reference.md, status): `fresh`, `stale` or `never`, and why."""

    freshness: str
    last_ok_sync_at: str | None
    stale_clients: list[int]
    sync_too_old: bool = False  # the last ok sync itself is past the limit (not only some clients)


def stale_cutoff(now: datetime, stale_after_hours: float) -> str:
    """The replica time (`YYYY-MM-DDTHH:MM:SS+00:00`) `stale_after_hours` before `now`: a client
    last confirmed before it is stale, and a failed sync that ended before it is the stale check's
    (`readonly.left_behind`)."""
    return (now - timedelta(hours=stale_after_hours)).replace(microsecond=0).isoformat()


def read_freshness(conn: sqlite3.Connection, now: datetime, stale_after_hours: float) -> Freshness:
    """The freshness rule, in one place for `status` and the warning of `query`: the last ok sync and
    every active client's last confirmation within `stale_after_hours` (exactly at the limit is fresh)."""
    last_ok = conn.execute(
        "SELECT finished_at FROM sync_runs WHERE command = 'sync' AND status = 'ok' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    # Per client too: a narrow repair sync must not make a replica whose other clients are old look fresh.
    cutoff = stale_cutoff(now, stale_after_hours)
    stale_clients = [
        r[0] for r in conn.execute(
            "SELECT id FROM clients WHERE active = 1 AND (last_synced_at IS NULL OR last_synced_at < ?) ORDER BY id", [cutoff]
        )
    ]
    if not last_ok:
        return Freshness("never", None, stale_clients)
    too_old = now - datetime.fromisoformat(last_ok[0]) > timedelta(hours=stale_after_hours)
    return Freshness("stale" if too_old or stale_clients else "fresh", last_ok[0], stale_clients, too_old)


def _last_run(conn: sqlite3.Connection, command: str, dead_running: bool = False) -> dict | None:
    """The latest finished run of `command` (a run in progress is listed under `running`); with
    `dead_running`, a run left `running` by a dead process counts, shown as the next writer will
    mark it: failed, interrupted."""
    row = conn.execute(
        "SELECT * FROM sync_runs WHERE command = ? AND (status != 'running' OR ?) ORDER BY id DESC LIMIT 1",
        [command, dead_running],
    ).fetchone()
    return None if row is None else _shown_run(_run(row), dead_running)


def end_recorded(run: dict) -> bool:
    """Whether the run recorded its end: not one a dead process left, whose `finished_at` (if any)
    is only the last moment the replica knew it alive (`UNRECORDED_END`)."""
    return run["finished_at"] is not None and UNRECORDED_END not in (run["error"] or "")


def _shown_run(run: dict, dead_running: bool) -> dict:
    """A run as `status` shows it: one left `running` by a dead process is failed, interrupted."""
    if dead_running and run["status"] == "running":
        run.update(status="failed", error="; ".join(filter(None, [run["error"], UNRECORDED_END])))
    return run


def _run(row: sqlite3.Row) -> dict:
    """A `sync_runs` row as a dict; counters a killed run never wrote read as 0."""
    run = dict(row)
    for name in RUN_COUNTERS:
        if run.get(name) is None:
            run[name] = 0
    return run


def _missing(conn: sqlite3.Connection, run: dict, today: date) -> dict[int, int]:
    """Active clients with days of the run's window that have no row: {client_id: days missing}."""
    if not run["window_start"] or not run["window_end"]:
        return {}
    start = date.fromisoformat(run["window_start"])
    # Days after today cannot have rows yet (a window given with a future --to).
    end = min(date.fromisoformat(run["window_end"]), today)
    days = (end - start).days + 1
    if days <= 0:
        return {}
    present = conn.execute(
        "SELECT c.id, COUNT(s.stat_date) FROM clients c LEFT JOIN client_stats s "
        "ON s.client_id = c.id AND s.stat_date BETWEEN ? AND ? WHERE c.active = 1 GROUP BY c.id ORDER BY c.id",
        [start.isoformat(), end.isoformat()],
    )
    return {client_id: days - count for client_id, count in present if count < days}


def judge(status: Status) -> Verdict:
    """Trusted when the last sync is `ok` and fresh; else why not, and the command that fixes it."""
    verdict = _judge(status)
    running = [r for r in status.running if r["command"] == "sync"]
    if running and not verdict.ok:
        # Its fix would be refused (exit 75) until it ends, and that sync may well be the fix.
        verdict.reason += f" (a sync is running since {stamp_text(running[-1]['started_at'])})"
        verdict.advice = verdict.advice and f"once the running sync has ended, {verdict.advice}"
    if verdict.advice and status.may_write is False and not verdict.advice.startswith("delivery-sync query"):
        # An analyst's account or read-only role: the fix is someone else's to run.
        who = "by a user or role that may write the replica: this one may not"
        verdict.advice = f"{verdict.advice[:-1]}; {who})" if verdict.advice.endswith(")") else f"{verdict.advice} ({who})"
    return verdict


def _judge(status: Status) -> Verdict:
    if status.unreadable:  # first: a server that cannot be asked holds no replica as far as status knows
        return Verdict(False, status.unreadable, status.unreadable_advice)
    if not status.exists:
        return Verdict(False, f"no replica at {status.database} yet", "delivery-sync sync")
    last = status.last_sync
    if last is None:
        return Verdict(False, "the replica has never been synced", "delivery-sync sync")
    if last["status"] != "ok":
        when = stamp_text(last['finished_at'] or last['started_at'])
        return Verdict(False, f"last sync {last['status']} at {when}: {_what_went_wrong(status)}", _repair(status))
    if status.earlier_failed_clients:  # an ok sync of a few clients ran after a partial one
        count = len(status.earlier_failed_clients)
        return Verdict(False, f"{count} client{'s' if count != 1 else ''} an earlier sync did not bring in, not synced since "
                              f"({capped(status.earlier_failed_clients, 10)})", "delivery-sync sync --retry-failed")
    if status.freshness != "fresh" and status.last_ok_sync_at and status.stale_clients and not _run_too_old(status):
        # The last ok sync is recent, but it did not confirm every active client.
        count = len(status.stale_clients)
        advice = "delivery-sync sync"
        if 0 < count < status.active_clients and count <= MAX_ADVISED_IDS:  # else the whole sync: a runnable line
            advice += f" --clients {','.join(map(str, status.stale_clients))}"
        return Verdict(
            False,
            f"stale, {count} active client{'s' if count != 1 else ''} not confirmed within "
            f"{status.stale_after_hours:g} h ({capped(status.stale_clients, 10)})",
            advice,
        )
    if status.freshness != "fresh":
        return Verdict(
            False,
            f"stale, last ok sync finished {age_text(hours_since(status.last_ok_sync_at, status))} ago (limit {status.stale_after_hours:g} h)",
            "delivery-sync sync (and check that cron runs it)",
        )
    rollup = status.last_aggregate
    if rollup and rollup["status"] == "failed":
        # The rows are fresh, but the rollups (and reports of stored periods) may not be.
        when = stamp_text(rollup["finished_at"] or rollup["started_at"])
        return Verdict(False, f"last aggregate failed at {when}: {rollup['error'] or 'no error recorded'}; "
                              "the rollups may be out of date", "delivery-sync aggregate")
    # Not age_hours, rounded to 0.01 h for JSON: 2.6 min read "2 min" beside the Freshness line's "3 min".
    reason = f"fresh, last sync ok {age_text(hours_since(status.last_ok_sync_at, status))} ago, data through {status.date_max}"
    if status.lagging_clients:
        # Not a failure (`--check` wants fresh and the last sync ok), but the operator should see it in the headline.
        count = len(status.lagging_clients)
        reason += f"; but {count} active client{'s lag' if count != 1 else ' lags'} (see lagging clients)"
    return Verdict(True, reason)


def _run_too_old(status: Status) -> bool:
    """Whether the last ok sync itself is older than the limit (rather than only some clients)."""
    return hours_since(status.last_ok_sync_at, status) > status.stale_after_hours


def stamp_text(stamp: str) -> str:
    """A replica time for people: `2026-01-25 01:00 UTC`."""
    return f"{datetime.fromisoformat(stamp):%Y-%m-%d %H:%M} UTC"


def hours_since(stamp: str | None, status: Status) -> float | None:
    """Hours from `stamp` to the moment `status` was checked (never below 0), None without a stamp:
    every "... ago" of one status is worked out from the same two times, so they agree."""
    if stamp is None:
        return None
    return max((datetime.fromisoformat(status.checked_at) - datetime.fromisoformat(stamp)).total_seconds() / 3600, 0)


def age_text(hours: float | None) -> str:
    """A duration for people: `4 min`, `3.2 h`, `2.5 days`."""
    if hours is None:
        return "never"
    if hours < 1 / 60:
        return "<1 min"
    if hours < 1:
        return f"{round(hours * 60)} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


def _what_went_wrong(status: Status) -> str:
    last = status.last_sync
    problems = []
    if status.failed_clients:
        count = len(status.failed_clients)
        problems.append(f"{count} client{'s' if count != 1 else ''} failed ({capped(status.failed_clients, 10)})")
    if last["rows_rejected"]:
        problems.append(f"{last['rows_rejected']} rows rejected")
    if last["error"]:
        problems.append(last["error"])
    if status.unfetched_clients and "not fetched" not in (last["error"] or ""):  # a deadline's error names them already
        count = len(status.unfetched_clients)
        problems.append(f"{count} client{'s' if count != 1 else ''} not fetched ({capped(status.unfetched_clients, 10)})")
    return "; ".join(problems) or "no error recorded"


def _repair(status: Status) -> str:
    """The command that re-fetches what the last sync missed, or shows why it cannot."""
    last = status.last_sync
    error = last["error"] or ""
    if "authentication failed" in error:
        return "fix source.token, then delivery-sync sync"
    if status.failed_clients or status.unfetched_clients:
        return "delivery-sync sync --retry-failed"
    if last["rows_rejected"] and not status.failed_clients:
        # Re-syncing fetches the same bad rows: the remote's data must be fixed first.
        return f"delivery-sync query sql \"SELECT * FROM sync_rejects WHERE run_id = {last['id']}\""
    return "delivery-sync sync"
