"""The `query` reports: named SQL over a read-only connection (SPEC §1, §4, §5).

Each report returns a `Report`: its rows as dicts keyed by the SPEC §4 names,
in the column order of `columns`. A window that is a stored rollup period
(`last_Nd` ending at the rollup's as-of date, or a whole calendar month) is read
from the rollup tables when they are current; otherwise the raw rows are summed
with the very SQL that built the rollups, so both paths give identical rows.

Imports only the standard library and our light modules: `query` must start fast.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

from .aggregate.sql import (
    CLIENT_COLUMNS,
    CLIENT_SUMS,
    EDGE_CLIENTS,
    FINE_TABLES,
    OVERALL_COLUMNS,
    OVERALL_SUMS,
    PARTS_TABLES,
    PERIOD_COLUMNS,
    RATIOS,
    ROLLING_PERIODS,
    SUMS,
    id_list,
    period_bounds,
    period_sums,
    with_ratios,
)
from .aggregate.windows import OVERALL_DAY_SUMS, client_window_sums, clients_with_data, window_ranking
from .errors import QueryTimeout, ReadOnlyViolation, UsageError
from .metrics import METRICS
from .readonly import check_denied
from .window import Window

log = logging.getLogger(__name__)

# The largest single value `query sql` may produce: far above any stored value (a row's extra).
MAX_VALUE_BYTES = 16 * 2**20
WINDOW_COLUMNS = ["period_start", "period_end"]
CLIENT_REPORT_COLUMNS = ["client_id", "name", *WINDOW_COLUMNS, "days_with_data", *METRICS, *RATIOS]
TOTALS_COLUMNS = [*WINDOW_COLUMNS, *OVERALL_COLUMNS, *RATIOS]
PERIOD_TOTALS_COLUMNS = ["period", *TOTALS_COLUMNS]
DAILY_COLUMNS = ["client_id", "name", "stat_date", *METRICS, *RATIOS]
GROUPINGS = ("day", "week", "month")


@dataclass
class Report:
    """Rows of one report. `table_columns` is what a terminal table shows; csv/json carry `columns`."""

    title: str
    columns: list[str]
    rows: list[dict]
    table_columns: list[str] = field(default_factory=list)
    single: bool = False  # one row, best shown as a "field | value" list
    table_rows: list[dict] | None = None  # the rows as a terminal shows them, where that differs
    keep: int = 1  # the leading table columns a narrow terminal must still show (else rows are stacked)
    raw: bool = False  # values as SQLite gave them (query sql), not formatted as metrics
    more: bool = False  # query sql: the statement returns more rows than `rows` (--max-rows)
    deadline: float | None = None  # query sql: time.monotonic() by which rendering must be done too (--max-seconds)

    def select(self, columns: list[str]) -> Report:
        """This report with only `columns`, in that order, in every format (`--columns`)."""
        twice = sorted({c for c in columns if columns.count(c) > 1})
        if twice:
            raise UsageError(f"--columns: {twice[0]!r} is given twice")
        unknown = [c for c in columns if c not in self.columns]
        if unknown:
            raise UsageError(f"--columns: no column {unknown[0]!r} in this report", hint=f"one of: {', '.join(self.columns)}")
        return replace(self, columns=columns, table_columns=columns, keep=len(columns))


# --- the reports ------------------------------------------------------------------


def top(conn: sqlite3.Connection, window: Window, by: str = "total_sales", limit: int = 10) -> Report:
    """Clients ranked by the sum of `by` over the window (NULL sums last, ties by client id)."""
    if by not in METRICS:
        raise UsageError(f"unknown metric {by!r} for --by", hint=f"one of: {', '.join(METRICS)}")
    if not 1 <= limit < 2**63:  # SQLite cannot bind a larger one
        raise UsageError(f"--limit must be at least 1 and below 2^63 (got {limit})")
    order = f"ORDER BY {by} IS NULL, {by} DESC, client_id LIMIT :limit"
    plan = _plan(conn, window)
    clients = None
    if plan.current and plan.period is None:
        # Summing every column of every client costs 3-4x ranking by the one metric: rank first,
        # then sum the rest for the `limit` clients ranked (same order, same numbers).
        sql, params = window_ranking(window.start, window.end, by)
        clients = [row[0] for row in conn.execute(sql, {**params, "limit": limit})]
    rows = _client_rows(conn, plan, order, {"limit": limit}, clients) if clients != [] else []
    shown = ["client_id", "name", by, *(c for c in _TOP_SHOWN if c != by)]  # the ranked metric stays in view
    title = f"Top {limit} clients by {by}, {window}"
    return Report(title, CLIENT_REPORT_COLUMNS, rows, shown, keep=3)


_TOP_SHOWN = ["total_sales", "total_orders", "avg_order_value", "grab_sales", "gojek_sales", "ads_roas",
              "ads_spend_share", "fake_order_rate", "new_customer_share", "days_with_data"]


def client(conn: sqlite3.Connection, window: Window, client_id: int, daily: bool = False) -> Report:
    """One client's sums and ratios over the window (always one row), or its daily rows with their ratios."""
    known = conn.execute(
        "SELECT (SELECT name FROM clients WHERE id = :id), "
        "EXISTS (SELECT 1 FROM clients WHERE id = :id) OR EXISTS (SELECT 1 FROM client_stats WHERE client_id = :id)",
        {"id": client_id},
    ).fetchone()
    if not known[1]:
        raise UsageError(f"unknown client id {client_id}: not in the replica", hint="see 'delivery-sync query top'")
    name = known[0]
    if daily:
        sql = with_ratios(
            "SELECT * FROM client_stats WHERE client_id = :id AND stat_date BETWEEN :start AND :end",
            ["client_id", ":name AS name", "stat_date", *METRICS],
        ) + " ORDER BY stat_date"
        rows = _fetch(conn, sql, {**window.params(), "id": client_id, "name": name})
        shown = ["stat_date", "total_sales", "total_orders", "grab_sales", "grab_orders", "gojek_sales",
                 "gojek_orders", "avg_order_value", "ads_roas", "fake_order_rate"]
        return Report(f"Client {client_id} {name or ''}, daily, {window}", DAILY_COLUMNS, rows, shown, keep=2)
    rows = _client_rows(conn, _plan(conn, window), "", {}, [client_id]) or [_empty(CLIENT_REPORT_COLUMNS, window, client_id=client_id, name=name)]
    return Report(f"Client {client_id} {name or ''}, {window}", CLIENT_REPORT_COLUMNS, rows, CLIENT_REPORT_COLUMNS, single=True)


def totals(conn: sqlite3.Connection, window: Window, by: str | None = None) -> Report:
    """All clients together over the window (one row), or per day, Monday-started week or month."""
    if by is None:
        plan = _plan(conn, window)
        if plan.period:
            sql = f"SELECT {', '.join(TOTALS_COLUMNS)} FROM overall_aggregates WHERE period = :period"
        else:
            sums = OVERALL_DAY_SUMS if plan.current else OVERALL_SUMS
            sql = with_ratios(sums, [":start AS period_start", ":end AS period_end", *OVERALL_COLUMNS])
        rows = _fetch(conn, sql, plan.params())
        rows = rows or [_empty(TOTALS_COLUMNS, window)]
        return Report(f"Totals, all clients, {window}", TOTALS_COLUMNS, rows, TOTALS_COLUMNS, single=True)
    if by not in GROUPINGS:
        raise UsageError(f"unknown grouping {by!r} for --by", hint="one of: day, week, month")
    plan = _plan(conn, window, by=by)
    if plan.current:  # whole periods from their rollup rows, the partial ones at the edges from daily totals
        parts = [with_ratios(_edge_period_sums(by), PERIOD_COLUMNS)]
        if plan.whole:
            table = FINE_TABLES.get(by, "overall_aggregates")
            parts.insert(0, f"SELECT {', '.join(PERIOD_TOTALS_COLUMNS)} FROM {table} WHERE period BETWEEN :first_period AND :last_period")
        sql = " UNION ALL ".join(parts) + " ORDER BY period"
    else:
        sql = with_ratios(period_sums(by, "FROM client_stats WHERE stat_date BETWEEN :start AND :end"), PERIOD_COLUMNS) + " ORDER BY period"
    rows = _fetch(conn, sql, plan.params())
    # The figures first: on a narrow terminal the period and its totals stay, its clipped edges go.
    shown = ["period", "total_sales", "total_orders", "period_start", "period_end", "clients_with_data",
             "grab_sales", "gojek_sales", "avg_order_value", "ads_roas", "fake_order_rate"]
    return Report(f"Totals per {by}, all clients, {window}", PERIOD_TOTALS_COLUMNS, rows, shown, keep=2)


_STATEMENT_START = re.compile(r"\s*(?:(?:--[^\n]*(?:\n|$)|/\*.*?\*/)\s*)*(\w+)", re.S)
_READING_STATEMENTS = {"SELECT", "WITH", "EXPLAIN", "PRAGMA", "VALUES"}


CHANGES_COLUMNS = ["client_id", "name", "stat_date", "column", "old_value", "new_value", "difference", "run_id", "changed_at"]
_CHANGES = """
SELECT s.client_id, c.name, s.stat_date, s.[column], s.old_value, s.new_value,
       CASE WHEN typeof(s.old_value) IN ('integer', 'real') AND typeof(s.new_value) IN ('integer', 'real')
            THEN CASE WHEN typeof(s.old_value) = 'integer' AND typeof(s.new_value) = 'integer'
                      THEN s.new_value - s.old_value ELSE ROUND(s.new_value - s.old_value, 2) END
       END AS difference,
       s.run_id, s.changed_at
FROM stat_changes s LEFT JOIN clients c ON c.id = s.client_id
WHERE s.stat_date BETWEEN :start AND :end AND (:client_id IS NULL OR s.client_id = :client_id)
ORDER BY s.run_id DESC, s.client_id, s.stat_date, s.rowid"""


def changes(conn: sqlite3.Connection, window: Window, client_id: int | None = None) -> Report:
    """The restatements logged in `stat_changes` whose day lies in the window, newest run first."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'stat_changes'").fetchone():
        raise UsageError("this replica predates the change log (stat_changes)", hint="any writing run upgrades it, e.g. 'delivery-sync sync'")
    rows = _fetch(conn, _CHANGES, {**window.params(), "client_id": client_id})
    # A pruned row's old value is the whole row as JSON: too wide for a table (csv/json carry it).
    shown = [{**row, "old_value": "(whole row)", "new_value": "deleted"} if row["column"] == "*" else row for row in rows]
    who = f"client {client_id}" if client_id is not None else "all clients"
    return Report(f"Changes to stored days, {who}, {window} (newest run first)", CHANGES_COLUMNS, rows,
                  [c for c in CHANGES_COLUMNS if c != "changed_at"], table_rows=shown, keep=6)


def check_statement(statement: str) -> None:
    """Refuse, before the replica is even opened, anything but one SELECT, WITH, EXPLAIN,
    VALUES or PRAGMA statement (`ReadOnlyViolation`, exit 2).

    The keyword check stops `VACUUM INTO` (which SQLite allows on a read-only
    database and which writes a new file); the authorizer and `mode=ro` stop every
    other write. Checking first means a refused statement touches no file at all.
    """
    match = _STATEMENT_START.match(statement)
    keyword = match.group(1).upper() if match else ""
    if keyword not in _READING_STATEMENTS:
        raise ReadOnlyViolation(
            f"refused: {keyword or ('empty statement' if not statement.strip() else statement.strip()[:20])}"
            " - query sql runs only SELECT, WITH, EXPLAIN and read-only PRAGMAs"
        )
    # SQLite's own tokenizer says where a statement ends (quotes and comments included).
    for end, char in enumerate(statement):
        if char == ";" and sqlite3.complete_statement(statement[: end + 1]):
            rest = _STATEMENT_START.match(statement[end + 1 :].replace(";", " "))
            if rest:
                raise ReadOnlyViolation("refused: query sql takes exactly one statement")
            break


def sql(conn: sqlite3.Connection, statement: str, max_seconds: float = 10, max_rows: int | None = None) -> Report:
    """Run one read-only statement (see `check_statement`); interrupted with `QueryTimeout` after `max_seconds`.

    Reads at most `max_rows` rows (the report's `more` then says whether there were more):
    a statement returning millions of rows must not hold them all in memory to print them.
    """
    check_statement(statement)
    deadline = time.monotonic() + max_seconds
    # Called every 10k VM steps: returning True makes SQLite interrupt the query.
    conn.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
    # One value can be built in a single VM step (`zeroblob(999999999)`): bound its size too.
    length = conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    try:
        cursor = conn.execute(statement)
        rows = []
        wanted = None if max_rows is None else max_rows + 1  # one more tells whether there are more
        while wanted is None or len(rows) < wanted:  # (fetchmany(0) would fetch every row)
            batch = cursor.fetchmany(1000 if wanted is None else min(1000, wanted - len(rows)))
            if not batch:
                break
            rows.extend(batch)
            if time.monotonic() > deadline:  # fetching rows out of SQLite counts too
                raise sqlite3.OperationalError("interrupted")
    except sqlite3.ProgrammingError as exc:
        if "one statement" in str(exc):  # stacked statements: refused before any of them ran
            raise ReadOnlyViolation("refused: query sql takes exactly one statement") from None
        raise UsageError(f"SQL error: {exc}") from None
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            raise QueryTimeout(f"query interrupted after {max_seconds:g} s", hint="raise --max-seconds or narrow the query") from None
        check_denied(exc)
        raise UsageError(f"SQL error: {exc}") from None
    except sqlite3.DatabaseError as exc:
        if "too big" in str(exc):
            raise UsageError(f"SQL error: a value would exceed {MAX_VALUE_BYTES // 2**20} MB ({exc})") from None
        check_denied(exc)
        raise UsageError(f"SQL error: {exc}") from None
    finally:
        conn.set_progress_handler(None, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, length)
    columns = _unique([d[0] for d in cursor.description or []])
    more = max_rows is not None and len(rows) > max_rows
    return Report("", columns, [dict(zip(columns, row)) for row in rows[:max_rows]], columns, keep=len(columns), raw=True,
                  more=more, deadline=deadline)


def _unique(names: list[str]) -> list[str]:
    """Column names made distinct (`error`, `error_2`): a join of two tables must not lose a column."""
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate)
        out.append(candidate)
    return out


# --- helpers ----------------------------------------------------------------------


def _client_rows(conn: sqlite3.Connection, plan: _Plan, order: str, params: dict, clients: list[int] | None = None) -> list[dict]:
    """Per-client sums and ratios with names over the plan's window (of `clients` only, when
    given), read the fastest way the plan allows."""
    window = plan.window
    extra: dict = {}
    only = "" if clients is None else f"client_id IN ({id_list(clients)})"
    if plan.period:
        source = "(SELECT * FROM client_aggregates WHERE period = :period)"
        bounds = "a.period_start, a.period_end"
    else:
        if plan.current:  # whole months and pieces from the partial sums, raw rows only at the edges
            sums, extra = client_window_sums(window.start, window.end, clients)
        elif clients is not None:  # read their rows by the (client_id, ...) keys, not every client's
            sums = CLIENT_SUMS.replace("FROM client_stats", f"FROM (SELECT * FROM client_stats WHERE {only})")
        else:
            sums = CLIENT_SUMS
        source = f"({with_ratios(sums, CLIENT_COLUMNS)})"
        bounds = ":start AS period_start, :end AS period_end"
    columns = ", ".join(["a.client_id", "c.name", bounds, *(f"a.{c}" for c in [*CLIENT_COLUMNS[1:], *RATIOS])])
    where = f"WHERE a.{only}" if only else ""
    sql = f"SELECT {columns} FROM {source} a LEFT JOIN clients c ON c.id = a.client_id {where} {order}"
    return _fetch(conn, sql, {**params, **extra, **plan.params()})


_METRIC_LIST = ", ".join(METRICS)


def _edge_period_sums(by: str) -> str:
    """`period_sums` of the window's partial edge periods, from the stored daily totals.

    Sums come from `overall_daily` (exact cents, so equal to summing the raw rows).
    Clients with data are read from EDGE_CLIENTS, which holds the edges of the stored
    rolling periods; any other edge probes the (client_id, stat_date) index once per
    client, far cheaper than reading every client-day of the edges.
    """
    key, first, last = period_bounds(by, day="period")
    stored = f"SELECT e.clients_with_data FROM {EDGE_CLIENTS} e WHERE e.period_start = x.period_start AND e.period_end = x.period_end"
    return f"""
SELECT period, period_start, period_end,
       COALESCE(({stored}), {clients_with_data("period_start", "period_end")}) AS clients_with_data,
       days_with_data, {_METRIC_LIST}
FROM (SELECT period, MAX({first}, :start) AS period_start, MIN({last}, :end) AS period_end, days_with_data, {_METRIC_LIST}
      FROM (SELECT {key} AS period, COUNT(*) AS days_with_data,
                   {SUMS}
            FROM overall_daily
            WHERE period BETWEEN :head_start AND :head_end OR period BETWEEN :tail_start AND :tail_end
            GROUP BY 1)) AS x"""


@dataclass(frozen=True)
class _Plan:
    """How to read a window: one stored period; or (`current`) from the partial sums, or with a
    grouping, whole stored periods (days, weeks or months) plus daily totals at the edges; or
    raw rows only."""

    window: Window
    period: str | None = None
    whole: tuple[date, date] | None = None  # first and last day of the span of whole stored periods
    by: str = "month"
    current: bool = False  # the rollup tables match client_stats

    def params(self) -> dict[str, str]:
        start, end = self.window.start, self.window.end
        if self.whole is None:  # the head is the whole window, the tail is empty
            first, last = end + timedelta(days=1), end
        else:
            first, last = self.whole
        return {
            **self.window.params(),
            "period": self.period,
            "first_period": _period_key(first, self.by),
            "last_period": _period_key(last, self.by),
            "head_start": start.isoformat(),
            "head_end": (first - timedelta(days=1)).isoformat(),
            "tail_start": (last + timedelta(days=1)).isoformat(),
            "tail_end": end.isoformat(),
        }


def _period_key(day: date, by: str) -> str:
    """The `period` of the stored row holding `day`: YYYY-MM for months, the Monday for weeks."""
    if by == "month":
        return day.strftime("%Y-%m")
    if by == "week":
        return (day - timedelta(days=day.weekday())).isoformat()
    return day.isoformat()


def _whole_span(window: Window, by: str) -> tuple[date, date]:
    """First and last day of the whole periods inside the window (first > last when there is none)."""
    if by == "day":
        return window.start, window.end
    if by == "week":
        first = window.start + timedelta(days=-window.start.weekday() % 7)
        last = window.end - timedelta(days=(window.end.weekday() + 1) % 7)
        return first, last
    first = window.start if window.start.day == 1 else _next_month(window.start)
    last = window.end if _next_month(window.end) - timedelta(days=1) == window.end else window.end.replace(day=1) - timedelta(days=1)
    return first, last


def _plan(conn: sqlite3.Connection, window: Window, by: str | None = None) -> _Plan:
    """Read a rolling period ending at the rollups' as-of date from its row; with `by`, whole
    periods from theirs; any other window from the partial sums (`current`); all raw when the
    rollups are not current."""
    as_of = _rollups_as_of(conn)
    if as_of is None:
        return _Plan(window, by=by or "month")
    names = {days: name for name, days in ROLLING_PERIODS.items()}
    if by is None:
        if window.end == as_of and window.days in names:
            log.debug("reading stored rollup %s", names[window.days])
            return _Plan(window, period=names[window.days], current=True)
        log.debug("reading partial sums for %s", window)
        return _Plan(window, current=True)
    first, last = _whole_span(window, by)
    if first > last:
        return _Plan(window, by=by, current=True)
    log.debug("reading stored %ss %s..%s", by, _period_key(first, by), _period_key(last, by))
    return _Plan(window, whole=(first, last), by=by, current=True)


def _next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _rollups_as_of(conn: sqlite3.Connection) -> date | None:
    """The as-of date of the rollups if they are current, else None (read raw rows).

    Current means: the latest `aggregate` run is `ok` (its row commits with its
    tables) and brought the partial sums up to date (`agg_parts_run`), and no `sync`
    since may have changed `client_stats` (one running, interrupted, or that wrote or
    deleted rows).
    """
    latest = conn.execute(
        "SELECT id, status, window_end FROM sync_runs WHERE command = 'aggregate' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if latest is None or latest["status"] != "ok":
        return None
    tables = {"client_aggregates", "overall_aggregates", *FINE_TABLES.values(), *PARTS_TABLES, EDGE_CLIENTS}
    present = conn.execute(
        f"SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ({', '.join('?' * len(tables))})", sorted(tables)
    ).fetchone()[0]
    # Rollups built by an older delivery-sync, without partial sums or past those it left:
    # read raw rows until the next rebuild.
    if present < len(tables) or conn.execute("SELECT MAX(run_id) FROM agg_parts_run").fetchone()[0] != latest["id"]:
        return None
    changed = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM sync_runs WHERE id > ? AND command = 'sync' AND (status = 'running' "
        "OR COALESCE(error, '') LIKE '%interrupted%' "
        "OR COALESCE(rows_inserted, 0) + COALESCE(rows_updated, 0) + COALESCE(rows_deleted, 0) > 0))",
        [latest["id"]],
    ).fetchone()[0]
    return None if changed else date.fromisoformat(latest["window_end"])


def _fetch(conn: sqlite3.Connection, sql: str, params: dict) -> list[dict]:
    return [dict(row) for row in conn.execute(sql, params)]


def _empty(columns: list[str], window: Window, **known) -> dict:
    """The one row of a single-row report over a window with no data: counts 0, sums and ratios NULL."""
    row = dict.fromkeys(columns)
    row.update(period_start=window.start.isoformat(), period_end=window.end.isoformat(), **known)
    for count in ("days_with_data", "clients_with_data"):
        if count in row:
            row[count] = 0
    return row
