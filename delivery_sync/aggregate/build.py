"""The rollup build: every rollup and partial sum rebuilt, or, after a sync, refreshed for what
it wrote, and the rolling periods as of a day (run.py wraps it in an `aggregate` run).

The refresh and the rolling periods are one design for both engines: the same steps and SQL,
the engine's own words coming from its `Dialect` (aggregate/postgres.py calls them). The full
rebuild differs by engine: SQLite's is here, with a helper process on a large replica
(helper.py); the partial sums' tables and SQL are parts.py's.

The rollup tables are derived data, dropped and recreated on every SQLite rebuild, so their
schema always matches this code and needs no migration.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..days import Window, month_end
from ..dialect import SQLITE, Dialect
from ..errors import capped, one_line
from ..metrics import AMOUNT_METRICS, METRICS
from .current import LAYOUT_KEY, layout_stamp, rollups_as_of
from .helper import (
    READER_NICENESS,
    HelperRun,
    HelperTable,
    Shares,
    copy_from_helper,
    helper_run,
    helper_shares,
    sums_in_helper,
)
from .parts import (
    ALL_DAYS,
    MONTH_LIST_COLUMNS,
    PART_METRICS,
    calendar_table,
    create_parts,
    fill_clients,
    fill_parts,
    fill_share,
    index_parts,
    temp_rows,
)
from .pieces import base_windows, calendar, edge_spans, piece_row, piece_span, rolling_windows, window_pairs
from .rollup_rows import client_month_rows, insert_rows, overall_rows, week_key
from .sql import (
    ADDED,
    EDGE_CLIENTS,
    FINE_TABLES,
    LAST_DAYS,
    PARTS_TABLES,
    PLAIN,
    RATIOS,
    ROLLING_PERIODS,
    STORED,
    WINDOW_PAIRS,
)
from .windows import added_per_client, clients_with_data, data_span, trimmed, window_part_list, window_parts

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Future

    import sqlite_utils

    from ..replica import ChangedRows
    from ..replica.store import SqliteReplica


def _create_tables(db: sqlite_utils.Database) -> None:
    metrics = {m: float if m in AMOUNT_METRICS else int for m in METRICS}
    tail = {**metrics, **{r: float for r in RATIOS}, "computed_at": str}
    head = {"period": str, "period_start": str, "period_end": str}
    db["client_aggregates"].create(
        {"client_id": int, **head, "days_with_data": int, **tail}, pk=("client_id", "period"), replace=True
    )
    db["client_aggregates"].create_index(["period"])
    for table in ("overall_aggregates", *FINE_TABLES.values()):
        db[table].create({**head, "clients_with_data": int, "days_with_data": int, **tail}, pk="period", replace=True)
    db.execute(f"DROP TABLE IF EXISTS {EDGE_CLIENTS}")
    db.execute(f"CREATE TABLE {EDGE_CLIENTS}(period_start TEXT NOT NULL, period_end TEXT NOT NULL, "
               "clients_with_data INTEGER NOT NULL, PRIMARY KEY (period_start, period_end)) WITHOUT ROWID")
    db.execute(f"DROP TABLE IF EXISTS {OLD_WINDOW_SUMS}")
    db.execute(f"DROP TABLE IF EXISTS {WINDOW_PAIRS}")
    db.execute(f"CREATE TABLE {WINDOW_PAIRS}(period_start TEXT NOT NULL, period_end TEXT NOT NULL, base_start TEXT NOT NULL, "
               f"base_end TEXT NOT NULL, client_id INTEGER NOT NULL, last_day TEXT, {PART_METRICS}, {_BASE_METRICS}, "
               "PRIMARY KEY (period_start, period_end, base_start, base_end, client_id)) WITHOUT ROWID")
    db.execute(f"DROP TABLE IF EXISTS {LAST_DAYS}")
    db.execute(f"CREATE TABLE {LAST_DAYS}(client_id INTEGER PRIMARY KEY, last_day TEXT NOT NULL)")


def build(replica: SqliteReplica, as_of: date, run_id: int, changed: ChangedRows | None):
    """The SQLite build, inside the aggregate run's transaction: a refresh of what `changed` touched
    when the rollups were current just before the sync that wrote it, else a full rebuild.
    Returns the periods built, whether it was a refresh, and the run's counters."""
    from ..days import utc_now

    db = replica.db
    now = utc_now()
    if can_refresh(db, changed):
        index_parts(db)
        with helper_run(db) as run:
            if run is None:
                built = refresh(db, SQLITE, as_of, now, changed, lambda sums: sums_meanwhile(replica.open_reader, sums))
            else:
                built = refresh(db, SQLITE, as_of, now, changed, lambda sums: sums_in_helper(run, replica.path, sums))
        refreshed = True
    else:
        built, refreshed = _rebuild(db, replica.path, as_of, now), False
    return built, refreshed, parts_done(db, run_id)


def can_refresh(db, changed: ChangedRows | None) -> bool:
    """Whether the aggregate ending a sync may recompute only what the sync wrote (`changed`):
    it listed every key it wrote, and the rollups were current just before it ran."""
    return (changed is not None and changed.keys is not None and changed.run_id is not None
            and rollups_as_of(db, changed.run_id) is not None)


def parts_done(db, run_id: int):
    """Record aggregate run `run_id` as the one that brought the partial sums up to date
    (`agg_parts_run`); returns its counters: clients with data, rows summarised, rollup rows written."""
    from ..replica import RunCounts

    db.execute("DELETE FROM agg_parts_run")
    db.execute("INSERT INTO agg_parts_run(run_id) VALUES (?)", [run_id])
    db.execute("DELETE FROM meta WHERE key = ?", [LAYOUT_KEY])
    db.execute("INSERT INTO meta(key, value) VALUES (?, ?)", [LAYOUT_KEY, layout_stamp(run_id)])
    # Rows from the per-day sums (a row a day), and clients by one probe each of the listed clients (rows
    # exist only for them): not a pass over every client-month (45 ms at 10,000 clients x 3 years).
    clients, rows = db.execute(
        "SELECT (SELECT COUNT(*) FROM clients c WHERE EXISTS (SELECT 1 FROM agg_client_months m WHERE m.client_id = c.id)), "
        "(SELECT COALESCE(SUM(clients_with_data), 0) FROM agg_days)").fetchone()
    tables = ("client_aggregates", "overall_aggregates", *FINE_TABLES.values())
    written = sum(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables)
    return RunCounts(clients_total=clients, clients_ok=clients, rows_fetched=int(rows), rows_inserted=written)


_BASE_METRICS = ", ".join(f"base_{m} INTEGER" for m in METRICS)
# The rolling periods' and their base windows' per-client sums, while WINDOW_PAIRS is built from them.
_WINDOW_SUMS = "agg_summed_windows"
_WINDOW_SUMS_COLUMNS = ("period_start", "period_end", "client_id", *METRICS)
# Where versions before WINDOW_PAIRS stored those sums: dropped by a rebuild, which makes WINDOW_PAIRS.
OLD_WINDOW_SUMS = "agg_window_sums"


def _all_days(database: Path) -> tuple[list[tuple], None]:
    """`ALL_DAYS` on a read-only connection of its own, for a thread of the writer while it sums
    the pieces (the sqlite3 module lets go of the GIL while a statement runs); no helper file, as
    `helper_shares` would say. The writer holds the writer lock and does not write client_stats,
    so both read the same rows."""
    from ..readonly import open_readonly

    conn = open_readonly(database)
    try:
        return conn.execute(ALL_DAYS).fetchall(), None
    finally:
        conn.close()


def _parts_in_two(db: sqlite_utils.Database, database: Path, calendar_rows: list[tuple], month_rows: list[tuple],
                  run: HelperRun | None) -> list[tuple]:
    """The partial sums of every listed client's pieces and months, summed share by share by the
    writer and a helper process of `run` (`helper_shares`; None: the writer alone); returns every
    day's sums (`ALL_DAYS`), which the helper or a thread reads meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    shares = Shares([cid for (cid,) in db.execute("SELECT id FROM clients ORDER BY id")])
    pool = ThreadPoolExecutor(1, thread_name_prefix="aggregate-meanwhile")
    try:
        if run is None:
            shares.stop()  # the writer sums every share
            meanwhile = pool.submit(_all_days, database)
        else:
            meanwhile = pool.submit(helper_shares, run, database, shares, calendar_rows, month_rows)
        while (share := shares.take(helper=False)) is not None:
            fill_share(db, share)
        all_days, scratch = meanwhile.result()
    finally:
        shares.stop()
        pool.shutdown(wait=False)
    # The helper's clients follow the writer's: their rows go at the end of each table.
    copies = [(table, f"main.{table}") for table in ("agg_client_pieces", "agg_client_months")]
    if scratch is None or not copy_from_helper(db, scratch, copies):
        for share in reversed(shares.helpers):
            fill_share(db, share)
    return all_days if all_days is not None else db.execute(ALL_DAYS).fetchall()


def sums_meanwhile(open_reader: Callable[[], Any], sums: dict[Window, tuple[str, dict]]) -> dict[Window, Future[list[tuple]]]:
    """The rows of each of `sums` (a window's SQL and parameters), read one after the other on
    read-only connections of their own (`open_reader()`) by a thread, while the caller refreshes
    the partial sums: on SQLite the sqlite3 module runs a statement without the GIL, and on
    PostgreSQL another server process sums them, so they cost the refresh little more than their
    insert. The windows hold no day the refresh rewrites, so the committed partial sums give them
    as the refreshed ones would.

    One thread, not two: on two cores the writer needs one (a refresh at 10,000 x 365 with two
    reader threads and with one, in turn: SQLite 1.95 and 1.89 s, PostgreSQL 2.95 and 2.86 s).
    """
    from concurrent.futures import ThreadPoolExecutor

    def read(sql: str, params: dict) -> list[tuple]:
        conn = open_reader()
        try:
            cursor = conn.cursor()
            cursor.row_factory = None  # plain tuples, to insert as they are
            return cursor.execute(sql, params).fetchall()
        finally:
            conn.close()

    pool = ThreadPoolExecutor(1, thread_name_prefix="aggregate-sums", initializer=yield_to_the_writer)
    try:
        return {window: pool.submit(read, sql, params) for window, (sql, params) in sums.items()}
    finally:
        pool.shutdown(wait=False)


def yield_to_the_writer() -> None:
    """Lower the calling thread's priority by READER_NICENESS, on Linux, where a thread has a
    priority of its own (elsewhere, or when refused, it stays as it is). The refresh's readers
    call it: on two cores they and the writer contend, and the run waits on the writer, while
    their sums are needed only at its end (at 10,000 x 365, a refresh took 1.93 s with readers at
    the writer's priority and 1.79 s with them at nice 5, each median of 7)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            thread = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + READER_NICENESS)


def _rebuild(db: sqlite_utils.Database, database: Path, as_of: date, computed_at: str) -> list[tuple[str, date, date]]:
    """Recreate every partial sum and rollup table as of `as_of`; returns (period, first day, last
    day) of every rolling window and every calendar month with data."""
    create_parts(db)
    span = data_span(db)
    calendar_rows = calendar(*span) if span is not None else []
    month_rows = [(month,) for month in dict.fromkeys(row[3] for row in calendar_rows)]
    calendar_table(db, SQLITE, calendar_rows)
    temp_rows(db, SQLITE, "agg_month_list", MONTH_LIST_COLUMNS, "month", month_rows)
    with helper_run(db) as run:
        all_days = _parts_in_two(db, database, calendar_rows, month_rows, run)
    # Clients are never deleted and rows are written only for listed clients: `clients` lists
    # every client with rows, and is far cheaper to read. Checked by the row count.
    if db.execute("SELECT TOTAL(days_with_data) FROM agg_client_pieces").fetchone()[0] != sum(row[1] for row in all_days):
        for table in PARTS_TABLES:
            db.execute(f"DELETE FROM {table}")
        fill_clients(db, "SELECT DISTINCT client_id FROM client_stats")
    list_unlisted_clients(db)
    # The sorts that make the indexes on two cores: nothing else runs by then (1.4x faster).
    db.execute("PRAGMA threads = 2")
    index_parts(db)
    db.execute("PRAGMA threads = 0")
    db.conn.executemany(f"INSERT INTO agg_days VALUES ({', '.join('?' * (len(METRICS) + 2))})", all_days)
    _create_tables(db)
    params = {"computed_at": computed_at}
    insert_rows(db, "client_aggregates", "client_id", client_month_rows("agg_client_months"), params)
    overall_rows(db, params)
    db.execute("DROP TABLE temp.agg_calendar")
    db.execute("DROP TABLE temp.agg_month_list")
    return rolling(db, SQLITE, as_of, params) + months_built(db)


def list_unlisted_clients(db) -> list[int]:
    """List in `clients` (inactive, without a name) every client with partial sums, so with daily
    rows, that `clients` lacks, and say so; returns their ids. A sync never writes such rows, but a
    `clients` row deleted by hand left its client's rows out of every window read client by
    client, while the raw rows still counted them: reports disagreed with themselves. Called by a
    rebuild once the partial sums are in (a read of agg_client_months' keys, milliseconds)."""
    ids = [cid for (cid,) in db.execute(
        "SELECT m.client_id FROM (SELECT DISTINCT client_id FROM agg_client_months) AS m "
        "WHERE NOT EXISTS (SELECT 1 FROM clients AS c WHERE c.id = m.client_id) ORDER BY m.client_id")]
    if ids:

        db.executemany("INSERT INTO clients (id, name, active) VALUES (?, NULL, 0)", [(cid,) for cid in ids])
        log.warning("aggregate: %d client%s had daily rows but no row in `clients` (%s): listed again, inactive and without a name",
                    len(ids), "" if len(ids) == 1 else "s", capped(ids, 10))
    return ids


def dirty_keys(keys: set[tuple[int, str]]) -> tuple[set[tuple], set[tuple], set[tuple]]:
    """The (client, piece, piece_end, week, month), (client, month) and (day,) keys of the partial
    sums that the changed (client, day) `keys` fall in."""
    pieces, months = set(), set()
    piece_of: dict[str, tuple[str, str, str, str]] = {}  # a sync touches many clients but few days
    for client_id, day in keys:
        if day not in piece_of:
            piece_of[day] = piece_row(piece_span(date.fromisoformat(day))[0])
        pieces.add((client_id, *piece_of[day]))
        months.add((client_id, day[:7]))
    return pieces, months, {(day,) for day in piece_of}


def refresh(db, dialect: Dialect, as_of: date, computed_at: str, changed: ChangedRows,
            meanwhile: Callable[[dict[Window, tuple[str, dict]]], dict[Window, Future[list[tuple] | HelperTable]]]) -> list[tuple[str, date, date]]:
    """Recompute the partial sums and rollup rows of the pieces, months, weeks and days the
    `changed` (client, day) keys fall in, and every rolling period as of `as_of`, on the replica
    connection `db` of `dialect`'s engine; returns (period, first day, last day) of every rolling
    window and every calendar month with data. The base windows (WINDOW_PAIRS) without a changed
    day (deleted days included) are handed to `meanwhile` first (`sums_meanwhile`, or
    `sums_in_helper` on a large SQLite replica), to be read while the rest is refreshed:
    client_stats is as the sync committed it, so their first and last day of data, and every
    partial sum inside them, are the same before the refresh and after."""
    pieces, months, days = dirty_keys(changed.keys)
    base = _base_window_sums(db, dialect, as_of)
    dirty = [date.fromisoformat(day) for (day,) in days]
    read = meanwhile({w: sql for w, sql in base.items() if not any(w.start <= day <= w.end for day in dirty)})
    day, temp, join = dialect.day_type, dialect.temp, dialect.ordered_join
    temp_rows(db, dialect, "agg_dirty_pieces", {"client_id": "BIGINT", "piece": day, "piece_end": day, "week": day, "month": "TEXT"},
          "client_id, piece", pieces)
    temp_rows(db, dialect, "agg_dirty_months", {"client_id": "BIGINT", "month": "TEXT"}, "client_id, month", months)
    temp_rows(db, dialect, "agg_dirty_days", {"day": day}, "day", days)
    db.execute(f"DELETE FROM agg_days WHERE day IN (SELECT day FROM {temp}.agg_dirty_days)")
    # No key: no dirty row to join, and any day will do.
    within = (min((p[1] for p in pieces), default=as_of.isoformat()), max((p[2] for p in pieces), default=as_of.isoformat()))
    fill_parts(db, f"SELECT * FROM {temp}.agg_dirty_pieces", f"SELECT * FROM {temp}.agg_dirty_months",
                f"SELECT day FROM {temp}.agg_dirty_days", within, dialect, changed.deleted)
    params = {"computed_at": computed_at}
    # A join by key: SQLite plans `(client_id, month) IN (SELECT ...)` on client_id alone.
    dirty = f"{temp}.agg_dirty_months {join} agg_client_months USING (client_id, month)"
    insert_rows(db, "client_aggregates", "client_id", client_month_rows(dirty, dialect), params, replace="client_id, period", dialect=dialect)
    month_keys = f"(SELECT DISTINCT month FROM {temp}.agg_dirty_months)"
    week_keys = f"(SELECT DISTINCT {week_key(dialect)} FROM {temp}.agg_dirty_days)"
    db.execute(f"DELETE FROM overall_aggregates WHERE period IN {month_keys}")
    db.execute(f"DELETE FROM overall_daily WHERE period IN (SELECT {dialect.day_text('day')} FROM {temp}.agg_dirty_days)")
    db.execute(f"DELETE FROM overall_weekly WHERE period IN {week_keys}")
    overall_rows(db, params, f"IN {month_keys}", f"IN (SELECT day FROM {temp}.agg_dirty_days)", f"IN {week_keys}", dialect)
    for name in ("agg_dirty_pieces", "agg_dirty_months", "agg_dirty_days"):
        db.execute(f"DROP TABLE {temp}.{name}")
    db.execute(f"DELETE FROM client_aggregates WHERE period IN ({', '.join('?' * len(ROLLING_PERIODS))})", list(ROLLING_PERIODS))
    db.execute(f"DELETE FROM overall_aggregates WHERE period IN ({', '.join('?' * len(ROLLING_PERIODS))})", list(ROLLING_PERIODS))
    return rolling(db, dialect, as_of, params, base, read) + months_built(db)


def months_built(db) -> list[tuple[str, date, date]]:
    """(month, first day, last day) of every calendar month with partial sums, in order."""
    months = []
    for (month,) in db.execute("SELECT DISTINCT month FROM agg_client_months ORDER BY 1"):
        first = date.fromisoformat(f"{month}-01")
        months.append((month, first, month_end(first)))
    return months


def rolling(db, dialect: Dialect, as_of: date, params: dict, base: dict[Window, tuple[str, dict]] | None = None,
            read: dict[Window, Future[list[tuple] | HelperTable]] | None = None) -> list[tuple[str, date, date]]:
    """The rolling periods' rows as of `as_of`, per client and overall, from the partial sums (no
    row of theirs may be stored yet), EDGE_CLIENTS, WINDOW_PAIRS and LAST_DAYS for them; returns
    (period, first day, last day). `base` and `read`: the base windows' sums, as `_window_pairs`
    takes them."""
    temp = dialect.temp
    db.execute(f"DROP TABLE IF EXISTS {temp}.agg_rolling")
    db.execute(dialect.temp_table("agg_rolling", {"period": "TEXT", "period_start": dialect.day_type, "period_end": dialect.day_type,
                                                  "client_id": "BIGINT", "days_with_data": "BIGINT", **dict.fromkeys(METRICS, "BIGINT")}))
    periods = [(name, window.start, window.end) for name, window in zip(ROLLING_PERIODS, rolling_windows(as_of))]
    # Every period ends at as_of: the month so far (its raw days the costliest part at scale) is
    # summed once, and each period longer than it adds only what lies before.
    month_start = as_of.replace(day=1)
    if db.execute("SELECT 1 FROM client_stats WHERE stat_date > :day LIMIT 1", {"day": as_of.isoformat()}).fetchone():
        sql, params_so_far = window_parts(month_start, as_of, dialect=dialect)
    else:  # the month so far is the whole month, whose partial sums are current by now: no raw day read again
        sql, params_so_far = (f"SELECT client_id, days_with_data, {PLAIN} FROM agg_client_months WHERE month = :w_month",
                              {"w_month": month_start.strftime("%Y-%m")})
    db.execute(f"DROP TABLE IF EXISTS {temp}.agg_month_so_far")
    db.execute(dialect.temp_table_as("agg_month_so_far", sql), params_so_far)
    head = f"CAST(:period AS TEXT), {dialect.as_date(':start')}, {dialect.as_date(':end')}"
    for name, start, end in periods:
        if start < month_start:  # one sum of its parts and the month so far (not a sum of sums)
            parts, window = window_part_list(start, month_start - timedelta(days=1), dialect=dialect)
            sql = added_per_client([*parts, f"SELECT client_id, days_with_data, {PLAIN} FROM {temp}.agg_month_so_far"])
        else:
            sql, window = window_parts(start, end, dialect=dialect)
        db.execute(
            f"INSERT INTO {temp}.agg_rolling SELECT {head}, client_id, days_with_data, {PLAIN} FROM ({sql}) AS w",
            window | {"period": name, "start": start.isoformat(), "end": end.isoformat()},
        )
    _edge_clients(db, dialect, as_of)
    db.execute(f"DROP TABLE {temp}.agg_month_so_far")
    _last_days(db)
    _window_pairs(db, dialect, as_of, base if base is not None else _base_window_sums(db, dialect, as_of), read or {})
    insert_rows(db, "client_aggregates", "client_id", (
        f"SELECT period, period_start, period_end, client_id, days_with_data, {STORED} FROM {temp}.agg_rolling"), params)
    for name, start, end in periods:
        insert_rows(db, "overall_aggregates", "clients_with_data", (
            f"SELECT CAST(:period AS TEXT) AS period, {dialect.as_date(':start')} AS period_start, {dialect.as_date(':end')} AS period_end, "
            f"clients_with_data, (SELECT COUNT(*) FROM agg_days WHERE day BETWEEN :start AND :end) AS days_with_data, {STORED} "
            f"FROM (SELECT COUNT(*) AS clients_with_data, {ADDED} FROM {temp}.agg_rolling WHERE period = :period "
            "HAVING COUNT(*) > 0) AS o"), params | {"period": name, "start": start.isoformat(), "end": end.isoformat()})
    db.execute(f"DROP TABLE {temp}.agg_rolling")
    return periods


def _base_window_sums(db, dialect: Dialect, as_of: date) -> dict[Window, tuple[str, dict]]:
    """The SQL and parameters of the per-client sums of each base window of the rolling periods
    ending at `as_of` that holds a day of data, summed over those days from the partial sums."""
    span = data_span(db)
    if span is None:
        return {}
    first, last = span
    sums = {}
    for window in base_windows(as_of):
        span = trimmed(window, first, last)
        if span is not None:  # else no day of data in it: no row
            sql, params = window_parts(span.start, span.end, columns=list(METRICS), dialect=dialect)
            whole = ", ".join(f"{dialect.counted(c)} AS {c}" for c in METRICS)  # sums of cents: integers
            sums[window] = (f"SELECT {dialect.as_date(':start')}, {dialect.as_date(':end')}, client_id, {whole} "
                            f"FROM ({sql}) AS w", params | window.params())
    return sums


def _window_pairs(db, dialect: Dialect, as_of: date, base: dict[Window, tuple[str, dict]],
                  read: dict[Window, Future[list[tuple] | HelperTable]]) -> None:
    """WINDOW_PAIRS: each rolling period's per-client sums (temp.agg_rolling) beside each of its
    base windows' with data, and LAST_DAYS' last day, for every client with data in the base
    window. The base windows' sums come from the rows a reader thread summed or the table a
    helper process left (`read`, see `sums_meanwhile` and `sums_in_helper`), or else from their
    SQL (`base`, `_base_window_sums`). `movers` of a stored period then ranks 10,000 clients in
    SQL over one table (7 ms where reading both windows' 20,000 rows into Python and ranking them
    there took 15)."""
    temp = dialect.temp
    db.execute(f"DROP TABLE IF EXISTS {temp}.{_WINDOW_SUMS}")
    db.execute(dialect.temp_table(_WINDOW_SUMS, {"period_start": dialect.day_type, "period_end": dialect.day_type, "client_id": "BIGINT",
                                                 **dict.fromkeys(METRICS, "BIGINT")}, "period_start, period_end, client_id"))
    db.execute(f"INSERT INTO {temp}.{_WINDOW_SUMS} SELECT period_start, period_end, client_id, {PLAIN} FROM {temp}.agg_rolling")
    failed: list[Exception] = []
    for window, (sql, params) in base.items():
        try:
            rows = read[window].result() if window in read else None
        except Exception as exc:  # e.g. no connection left on the server for the reader: it costs time, not the run
            failed.append(exc)
            rows = None
        if isinstance(rows, HelperTable) and copy_from_helper(db, rows.path, [(rows.table, f"{temp}.{_WINDOW_SUMS}")]):
            continue
        if isinstance(rows, list):
            db.insert_rows(f"{temp}.{_WINDOW_SUMS}", _WINDOW_SUMS_COLUMNS, rows)
        else:  # not read meanwhile, or the helper's table could not be read
            db.execute(f"INSERT INTO {temp}.{_WINDOW_SUMS} {sql}", params)
    if failed:
        log.warning("aggregate: its reader failed (%s); the writer summed %d base window%s itself",
                    one_line(failed[0], 200), len(failed), "" if len(failed) == 1 else "s")
    for statement in dialect.fresh_statistics(f"{temp}.{_WINDOW_SUMS}"):
        db.execute(statement)
    db.execute(f"DELETE FROM {WINDOW_PAIRS}")
    now, before = ", ".join(f"c.{m}" for m in METRICS), ", ".join(f"b.{m}" for m in METRICS)
    for window, base_window in window_pairs(as_of):
        if base_window in base:  # else no day of data in the base window: nothing to compare, no row
            db.execute(
                f"INSERT INTO {WINDOW_PAIRS} SELECT {dialect.as_date(':start')}, {dialect.as_date(':end')}, {dialect.as_date(':base_start')}, "
                f"{dialect.as_date(':base_end')}, b.client_id, l.last_day, {now}, {before} FROM {temp}.{_WINDOW_SUMS} b "
                f"LEFT JOIN {temp}.{_WINDOW_SUMS} c ON c.period_start = :start AND c.period_end = :end AND c.client_id = b.client_id "
                f"LEFT JOIN {LAST_DAYS} l ON l.client_id = b.client_id WHERE b.period_start = :base_start AND b.period_end = :base_end",
                {**window.params(), "base_start": base_window.start.isoformat(), "base_end": base_window.end.isoformat()})
    db.execute(f"DROP TABLE {temp}.{_WINDOW_SUMS}")


def _last_days(db) -> None:
    """LAST_DAYS: every client's last day of data, one probe of the (client_id, stat_date) index
    a listed client (rows exist only for them; 30 ms at 10,000 clients)."""
    db.execute(f"DELETE FROM {LAST_DAYS}")
    db.execute(f"INSERT INTO {LAST_DAYS} SELECT client_id, last_day FROM (SELECT c.id AS client_id, "
               "(SELECT MAX(s.stat_date) FROM client_stats s WHERE s.client_id = c.id) AS last_day FROM clients c) AS l "
               "WHERE last_day IS NOT NULL")


def _edge_clients(db, dialect: Dialect, as_of: date) -> None:
    """EDGE_CLIENTS: clients with data in the partial week and month at each end of every rolling
    period ending at `as_of`, so that `totals --by week|month` of a stored period reads them: a
    count of clients is not a sum of counts, and probing every client's index at both edges cost
    40 ms at 10,000 clients. The month so far needs no probe: it is temp.agg_month_so_far's rows.
    The others count from the most clients on one of their days (agg_days, up to date by now)."""
    db.execute(f"DELETE FROM {EDGE_CLIENTS}")
    month_so_far = (as_of.replace(day=1), as_of)
    for a, b in edge_spans(as_of):
        if (a, b) == month_so_far:
            count = f"(SELECT COUNT(*) FROM {dialect.temp}.agg_month_so_far)"
        else:
            count = clients_with_data(":a", ":b", "(SELECT MAX(clients_with_data) FROM agg_days WHERE day BETWEEN :a AND :b)")
        db.execute(f"INSERT INTO {EDGE_CLIENTS} VALUES (:a, :b, {count})", {"a": a.isoformat(), "b": b.isoformat()})
