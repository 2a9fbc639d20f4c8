"""The `query` reports: named SQL over a read-only connection (docs/reference.md, query).

Each report returns a `Report`: its rows as dicts keyed by the replica's column names,
in the column order of `columns`. A window that is a stored rollup period
(`last_Nd` ending at the rollup's as-of date, or a whole calendar month) is read
from the rollup tables when they are current; otherwise the raw rows are summed
with the very SQL that built the rollups, so both paths give identical rows.

Imports only the standard library and our light modules: `query` must start fast.
"""

from __future__ import annotations

import heapq
import logging
import math
import re
import sqlite3
import time
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import NamedTuple

from .aggregate.current import rollups_as_of
from .aggregate.sql import (
    CLIENT_COLUMNS,
    CLIENT_SUMS,
    EDGE_CLIENTS,
    FINE_TABLES,
    LAST_DAYS,
    OVERALL_COLUMNS,
    OVERALL_SUMS,
    PERIOD_COLUMNS,
    RATIOS,
    ROLLING_PERIODS,
    SUMS,
    WINDOW_PAIRS,
    cents,
    id_list,
    metric_sums,
    period_bounds,
    period_sums,
    value_of,
    with_ratios,
)
from .aggregate.windows import (
    OVERALL_DAY_SUMS,
    client_window_sums,
    clients_with_data,
    data_span,
    trimmed,
    window_ranking,
    window_values,
)
from .days import Window, base_window, month_end, next_month, week_end, week_start
from .dialect import Dialect, dialect_of
from .errors import QueryTimeout, ReadOnlyViolation, UsageError
from .metrics import AMOUNT_METRICS, METRICS, shown_as
from .readonly import check_denied, is_damage
from .status import LAG_DAYS

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
    figures: list[str] | None = None  # a single row compared with a base window: a table of these figures
    subtitle: str = ""  # a second line under the title (the base window of a comparison, a note)
    notes: list[str] = field(default_factory=list)  # caveats of the figures: under the subtitle, or on stderr with csv/json
    chart: tuple[str, str, str] | None = None  # (label column, value column, what a bar is: "day", "week"): bars, not a table
    more: bool = False  # query sql: the statement returns more rows than `rows` (--max-rows)
    deadline: float | None = None  # query sql: time.monotonic() by which rendering must be done too (--max-seconds)
    empty: str = ""  # what a terminal says of no rows, where "no data in this window" would not be true

    def select(self, columns: list[str]) -> Report:
        """This report with only `columns`, in that order, in every format (`--columns`)."""
        twice = sorted({c for c in columns if columns.count(c) > 1})
        if twice:
            raise UsageError(f"--columns: {twice[0]!r} is given twice")
        unknown = [c for c in columns if c not in self.columns]
        if unknown:
            raise UsageError(f"--columns: no column {unknown[0]!r} in this report", hint=f"one of: {', '.join(self.columns)}")
        return replace(self, columns=columns, table_columns=columns, keep=len(columns), figures=None, chart=None)


# --- the reports ------------------------------------------------------------------


def top(conn: sqlite3.Connection, window: Window, by: str = "total_sales", limit: int = 10, *, ascending: bool = False,
        min_orders: int | None = None, active_only: bool = False, show_active: bool = False,
        compare: str | None = None, spark: bool = False) -> Report:
    """Clients ranked by the sum of `by`, or by the ratio `by` of their sums, over the window
    (largest first, or smallest with `ascending`; NULL last, ties by client id).

    `min_orders` keeps clients with at least that many orders in the window, `active_only` the
    clients the remote lists as active; `show_active` adds their `active` flag; `compare`
    (previous|year) puts each figure beside the base window's (see `compared`); `spark` adds a
    `trend` table column, `by` over the window's days (see `_trends`).
    """
    if by not in METRICS and by not in RATIOS:
        raise UsageError(f"unknown metric {by!r} for --by", hint=f"one of: {', '.join([*METRICS, *RATIOS])}")
    if not 1 <= limit < 2**63:  # SQLite cannot bind a larger one
        raise UsageError(f"--limit must be at least 1 and below 2^63 (got {limit})")
    if min_orders is not None and min_orders < 0:
        raise UsageError(f"--min-orders must be at least 0 (got {min_orders})")
    base = base_window(window, compare) if compare is not None else None
    order = f"ORDER BY {by} IS NULL, {by} {'ASC' if ascending else 'DESC'}, client_id LIMIT :limit"
    conditions = ((f"a.total_orders >= {int(min_orders)}",) if min_orders is not None else ()) + (("c.active = 1",) if active_only else ())
    plan, base_plan = _plans(conn, window, base)
    clients = None
    if plan.current and plan.period is None:
        # Summing every column of every client costs 3-4x ranking by the one metric: rank first,
        # then sum the rest for the `limit` clients ranked (same order, same numbers).
        span = _with_data(conn, window)
        clients = []
        if span is not None:
            sql, params = window_ranking(span.start, span.end, by, ascending=ascending, min_orders=min_orders, active_only=active_only,
                                         dialect=dialect_of(conn))
            clients = [row[0] for row in conn.execute(sql, {**params, "limit": limit})]
    elif plan.period and not active_only:
        # Sorting a stored period's 10,000 whole rows (40 columns each) costs 3-4x ranking by the
        # one column: rank first, then read the `limit` rows ranked (same order, same rows). With
        # --active-only the join to the clients comes first either way: ranking first took SQLite 2x.
        clients = [row[0] for row in conn.execute(_stored_ranking(order, min_orders), {"period": plan.period, "limit": limit})]
    rows = _client_rows(conn, plan, order, {"limit": limit}, clients, conditions, show_active) if clients != [] else []
    who = ["client_id", "name", *(["active"] if show_active else [])]
    columns = _with_active(CLIENT_REPORT_COLUMNS, show_active)
    others = [c for c in _TOP_SHOWN if c != by]
    shown = [*who, by, *others]  # the ranked metric stays in view
    # Fewer clients than --limit qualify: say how many are listed; none, and no count is named.
    counted = f" {len(rows)} client{'' if len(rows) == 1 else 's'}" if rows else " clients"
    title = f"{'Bottom' if ascending else 'Top'}{counted} by {by}, {window}"
    at_least = "" if min_orders is None else f"at least {min_orders:,} order{'' if min_orders == 1 else 's'}"
    title += f", {at_least}" if at_least else ""
    title += ", active clients only" if active_only else ""
    if base is not None:
        ids = [row["client_id"] for row in rows]
        before = {row["client_id"]: row for row in _client_rows(conn, base_plan, "", {}, ids)} if ids else {}
        rows = [compared(row, before.get(row["client_id"]), base, CLIENT_FIGURES) for row in rows]
        columns = with_comparison(columns, CLIENT_FIGURES)
        # Each figure with its change in percent; the ranked one with its base and change too.
        shown = [*who, by, f"{by}_change_pct", f"{by}_base", f"{by}_change",
                 *(c for other in others for c in (other, f"{other}_change_pct"))]
    subtitle = f"against {base} ({compare})" if base is not None else ""
    keep = len(who) + 1 + (base is not None)
    table_rows = None
    if spark:
        trends = _trends(conn, window, [row["client_id"] for row in rows], by)
        table_rows = [{**row, "trend": trends[row["client_id"]]} for row in rows]
        shown = [*shown[:keep], "trend", *shown[keep:]]
        subtitle = "\n".join(filter(None, [subtitle, f"trend: {by} per {_trend_days(window)}, oldest first"]))
    empty = ""
    if not rows and (min_orders is not None or active_only) and _holds_rows(conn, window):
        # The window has data: say which filter left no one, not "no data".
        empty = (f"no {'active ' if active_only else ''}client"
                 f"{' with ' + at_least if at_least else ''} in this window")
    return Report(title, columns, rows, shown, keep=keep, subtitle=subtitle, table_rows=table_rows, empty=empty,
                  notes=_base_notes(conn, base) if base is not None else [])


def _stored_ranking(order: str, min_orders: int | None) -> str:
    """SQL of the ids of a stored period's clients in `order` (with at least `min_orders` orders)."""
    filters = ["period = :period"]
    if min_orders is not None:
        filters.append(f"total_orders >= {int(min_orders)}")
    return f"SELECT client_id FROM client_aggregates WHERE {' AND '.join(filters)} {order}"


SPARK_POINTS = 24


def _trend_days(window: Window) -> str:
    days = -(-window.days // SPARK_POINTS)
    return "day" if days == 1 else f"{days} days"


def _trends(conn: sqlite3.Connection, window: Window, clients: list[int], by: str) -> dict[int, list]:
    """Per client, `by` per span of days over the window: each day up to SPARK_POINTS days, else
    spans of equal length ending at the window's end (the few days left at its start are not
    drawn, so no span is shorter than the others). Sums or ratios of sums, NULL where no data."""
    step = -(-window.days // SPARK_POINTS)
    points = window.days // step
    start = window.end - timedelta(days=points * step - 1)
    span = f"{dialect_of(conn).days_between('stat_date', ':start')} / {step}"
    sums = (f"SELECT client_id, {span} AS point, {SUMS} FROM client_stats "
            f"WHERE client_id IN ({id_list(clients)}) AND stat_date BETWEEN :start AND :end GROUP BY client_id, point")
    series: dict[int, list] = {c: [None] * points for c in clients}
    sql = f"SELECT client_id, point, {by} FROM ({with_ratios(sums, ['client_id', 'point', *METRICS])}) AS points"
    for client_id, point, value in conn.execute(sql, {"start": start.isoformat(), "end": window.end.isoformat()}):
        series[client_id][point] = value
    return series


_TOP_SHOWN = ["total_sales", "total_orders", "avg_order_value", "grab_sales", "gojek_sales", "ads_roas",
              "ads_spend_share", "fake_order_rate", "new_customer_share", "days_with_data"]


def _with_active(columns: list[str], show_active: bool) -> list[str]:
    """`columns` with `active` after the client's name, when asked for."""
    if not show_active:
        return columns
    at = columns.index("name") + 1
    return [*columns[:at], "active", *columns[at:]]


def client(conn: sqlite3.Connection, window: Window, client_id: int, daily: bool = False, *,
           compare: str | None = None, show_active: bool = False, chart: str | None = None) -> Report:
    """One client's sums and ratios over the window (always one row), or its daily rows with their
    ratios; `compare` puts each figure beside the base window's, `show_active` adds its flag;
    `chart` draws the daily rows' metric or ratio as bars."""
    if compare is not None and daily:
        raise UsageError("--compare compares the window's totals: it does not combine with --daily")
    if chart is not None and not daily:
        raise UsageError("--chart draws the daily rows: use it with --daily")
    _check_charted(chart)
    base = base_window(window, compare) if compare is not None else None
    known = conn.execute(
        "SELECT (SELECT name FROM clients WHERE id = :id), "
        "EXISTS (SELECT 1 FROM clients WHERE id = :id) OR EXISTS (SELECT 1 FROM client_stats WHERE client_id = :id), "
        "(SELECT active FROM clients WHERE id = :id)",
        {"id": client_id},
    ).fetchone()
    if not known[1]:
        raise _unknown_client(client_id)
    name = known[0]
    if daily:
        sql = with_ratios(
            "SELECT * FROM client_stats WHERE client_id = :id AND stat_date BETWEEN :start AND :end",
            ["client_id", ":name AS name", *([":active AS active"] if show_active else []), "stat_date", *METRICS],
        ) + " ORDER BY stat_date"
        rows = _fetch(conn, sql, {**window.params(), "id": client_id, "name": name, "active": known[2]})
        shown = ["stat_date", *(["active"] if show_active else []), "total_sales", "total_orders", "grab_sales", "grab_orders",
                 "gojek_sales", "gojek_orders", "avg_order_value", "ads_roas", "fake_order_rate"]
        # Days without a row are simply not listed: say how many, so a client that stopped sending shows.
        gaps = [f"data on {len(rows)} of the window's {window.days} days (the last {rows[-1]['stat_date']})"] \
            if rows and len(rows) < window.days else []
        return Report(f"Client {client_id} {name or ''}, daily, {window}", _with_active(DAILY_COLUMNS, show_active), rows, shown,
                      keep=2 + show_active, chart=("stat_date", chart, "day") if chart else None, notes=gaps)
    columns = _with_active(CLIENT_REPORT_COLUMNS, show_active)
    known_values = {"client_id": client_id, "name": name, **({"active": known[2]} if show_active else {})}

    def one(plan: _Plan) -> dict:
        found = _client_rows(conn, plan, "", {}, [client_id], active=show_active)
        return found[0] if found else _empty(columns, plan.window, **known_values)

    plan, base_plan = _plans(conn, window, base)
    row = one(plan)
    title = f"Client {client_id} {name or ''}, {window}"
    # One row always (a script reads its columns); a table of dashes alone would not say why.
    nothing = [] if row["days_with_data"] else ["the client has no data in this window"]
    if base is None:
        return Report(title, columns, [row], columns, single=True, notes=nothing)
    row = compared(row, one(base_plan), base, CLIENT_FIGURES)
    columns = with_comparison(columns, CLIENT_FIGURES)
    return Report(title, columns, [row], columns, single=True, figures=CLIENT_FIGURES, subtitle=f"against {base} ({compare})",
                  notes=[*nothing, *_base_notes(conn, base)])


def totals(conn: sqlite3.Connection, window: Window, by: str | None = None, *, compare: str | None = None,
           mark_partial: bool = False, chart: str | None = None) -> Report:
    """All clients together over the window (one row), or per day, Monday-started week or month,
    or per platform (`by`); `compare` puts each figure of the one row beside the base window's;
    `mark_partial` adds each period's `days` in the window and marks the `partial` ones; `chart`
    draws the periods' metric or ratio as bars."""
    if compare is not None and by is not None:
        raise UsageError("--compare compares the window's totals: it does not combine with --by")
    if mark_partial and by not in GROUPINGS:
        raise UsageError("--mark-partial marks the periods of --by day|week|month")
    if chart is not None and by not in GROUPINGS:
        raise UsageError("--chart draws the periods of --by day|week|month")
    _check_charted(chart)
    if by is None:
        base = base_window(window, compare) if compare is not None else None
        plan, base_plan = _plans(conn, window, base)
        row = _totals_row(conn, plan)
        title = f"Totals, all clients, {window}"
        if base is None:
            return Report(title, TOTALS_COLUMNS, [row], TOTALS_COLUMNS, single=True)
        row = compared(row, _totals_row(conn, base_plan), base, TOTALS_FIGURES)
        columns = with_comparison(TOTALS_COLUMNS, TOTALS_FIGURES)
        return Report(title, columns, [row], columns, single=True, figures=TOTALS_FIGURES, subtitle=f"against {base} ({compare})",
                      notes=_base_notes(conn, base))
    if by == "platform":
        return _platforms(_totals_row(conn, _plan(conn, window)), window)
    if by not in GROUPINGS:
        raise UsageError(f"unknown grouping {by!r} for --by", hint="one of: day, week, month, platform")
    plan = _plan(conn, window, by=by)
    if plan.current:  # whole periods from their rollup rows, the partial ones at the edges from daily totals
        parts = [with_ratios(_edge_period_sums(by, dialect_of(conn)), PERIOD_COLUMNS)]
        if plan.whole:
            table = FINE_TABLES.get(by, "overall_aggregates")
            parts.insert(0, f"SELECT {', '.join(PERIOD_TOTALS_COLUMNS)} FROM {table} WHERE period BETWEEN :first_period AND :last_period")
        sql = " UNION ALL ".join(parts) + " ORDER BY period"
    else:
        rows_sql = "FROM client_stats WHERE stat_date BETWEEN :start AND :end"
        sql = with_ratios(period_sums(by, rows_sql, dialect_of(conn)), PERIOD_COLUMNS) + " ORDER BY period"
    rows = _fetch(conn, sql, plan.params())
    # The figures first: on a narrow terminal the period and its totals stay, its clipped edges go.
    shown = ["period", "total_sales", "total_orders", "period_start", "period_end", "clients_with_data",
             "grab_sales", "gojek_sales", "avg_order_value", "ads_roas", "fake_order_rate"]
    if by == "day":  # a day's start and end are the day itself
        shown = [c for c in shown if c not in ("period_start", "period_end")]
    title = f"Totals per {by}, all clients, {window}"
    charted = ("period", chart, by) if chart else None
    if not mark_partial and not chart:  # a bar of a cut period would look like a fall: charts mark them
        return Report(title, PERIOD_TOTALS_COLUMNS, rows, shown, keep=2, chart=charted)
    rows = [{**row, **_partial(row, by)} for row in rows]
    columns = [*PERIOD_TOTALS_COLUMNS[:3], *PARTIAL_COLUMNS, *PERIOD_TOTALS_COLUMNS[3:]]
    at = shown.index("period_end" if "period_end" in shown else "total_orders") + 1
    shown = [*shown[:at], "days", *shown[at:]]
    marked = [{**row, "period": f"{row['period']} *"} if row["partial"] else row for row in rows]
    note = "* partial: cut by the window, or fewer days with data than days" if any(row["partial"] for row in rows) else ""
    return Report(title, columns, rows, shown, keep=2, table_rows=marked, subtitle=note, chart=charted)


def _check_charted(chart: str | None) -> None:
    if chart is not None and chart not in METRICS and chart not in RATIOS:
        raise UsageError(f"unknown metric {chart!r} for --chart", hint=f"one of: {', '.join([*METRICS, *RATIOS])}")


PARTIAL_COLUMNS = ["days", "partial"]


def _partial(row: dict, by: str) -> dict:
    """`days`: the calendar days of the row's period inside the window; `partial`: 1 when the
    window cuts the period or fewer of those days have data, else 0."""
    first, last = date.fromisoformat(row["period_start"]), date.fromisoformat(row["period_end"])
    days = (last - first).days + 1
    start = date.fromisoformat(row["period"] + ("-01" if by == "month" else ""))
    whole = {"day": 1, "week": 7}.get(by) or (next_month(start) - start).days
    return {"days": days, "partial": int(days < whole or row["days_with_data"] < days)}


def _totals_row(conn: sqlite3.Connection, plan: _Plan) -> dict:
    """The one row of all clients' sums and ratios over the plan's window, read the fastest way it allows."""
    if plan.period:
        sql = f"SELECT {', '.join(TOTALS_COLUMNS)} FROM overall_aggregates WHERE period = :period"
    else:
        sums = OVERALL_DAY_SUMS if plan.current else OVERALL_SUMS
        sql = with_ratios(sums, [":start AS period_start", ":end AS period_end", *OVERALL_COLUMNS])
    rows = _fetch(conn, sql, plan.params())
    return rows[0] if rows else _empty(TOTALS_COLUMNS, plan.window)


# --- comparisons ------------------------------------------------------------------

CLIENT_FIGURES = ["days_with_data", *METRICS, *RATIOS]
TOTALS_FIGURES = ["clients_with_data", *CLIENT_FIGURES]
_COUNTS = ("days_with_data", "clients_with_data")


def change(figure: str, current, base) -> tuple:
    """`current - base` and that change in percent of |base|, the one computation every report
    and format shows: None when either is missing, the percent None on a zero base (never a
    division error). Amounts are subtracted in whole cents, so the change is exact."""
    if current is None or base is None:
        return None, None
    if figure in AMOUNT_METRICS:
        return _moved(round(current * 100), round(base * 100), base, in_cents=True)
    return _moved(current, base, base, in_cents=False)


def _moved(current, base, base_value, in_cents: bool) -> tuple:
    """`change`'s arithmetic: `current - base` (with `in_cents`, two amounts in whole cents, the
    difference then given in rupiah) and that in percent of |`base_value`|, the base as the report
    shows it. `movers` ranks 10,000 clients' sums read in cents this way, without rounding each."""
    diff = (current - base) / 100 if in_cents else current - base
    return diff, (diff / abs(base_value) * 100 if base_value else None)


def compared(row: dict, base_row: dict | None, base: Window, figures: list[str]) -> dict:
    """`row` followed by the base window's bounds and, per figure, `<figure>_base`,
    `<figure>_change` and `<figure>_change_pct`; no `base_row` means no data in the base window."""
    out = {**row, "base_period_start": base.start.isoformat(), "base_period_end": base.end.isoformat()}
    for figure in figures:
        before = base_row[figure] if base_row else (0 if figure in _COUNTS else None)
        out[f"{figure}_base"] = before
        out[f"{figure}_change"], out[f"{figure}_change_pct"] = change(figure, row[figure], before)
    return out


def with_comparison(columns: list[str], figures: list[str]) -> list[str]:
    """The columns of `compared` rows: the report's own, then the base window and each figure's comparison."""
    return [*columns, "base_period_start", "base_period_end",
            *(f"{figure}{suffix}" for figure in figures for suffix in ("_base", "_change", "_change_pct"))]


# --- platforms ---------------------------------------------------------------------

PLATFORMS = {"grab": ("Grab", "grab_repeated_customers"), "gojek": ("GoJek", "gojek_returned_customers")}
PLATFORM_COLUMNS = ["platform", *WINDOW_COLUMNS, "sales", "sales_share", "orders", "orders_share", "avg_order_value",
                    "ads_spend", "ads_sales", "ads_roas", "new_customers", "returning_customers", "fake_orders", "fake_order_rate"]


def _platforms(row: dict, window: Window) -> Report:
    """Grab and GoJek as rows, from the window's totals: each platform's figures and its share of
    the sales and orders of both (a share is NULL when both platforms sum to zero or NULL)."""
    both = {figure: _plus(row[f"grab_{figure}"], row[f"gojek_{figure}"]) for figure in ("sales", "orders")}
    rows = []
    for prefix, (label, returning) in PLATFORMS.items():
        sales, orders = row[f"{prefix}_sales"], row[f"{prefix}_orders"]
        rows.append({
            "platform": label, "period_start": row["period_start"], "period_end": row["period_end"],
            "sales": sales, "sales_share": _share(sales, both["sales"]),
            "orders": orders, "orders_share": _share(orders, both["orders"]),
            "avg_order_value": _share(sales, orders),
            "ads_spend": row[f"{prefix}_ads_spend"], "ads_sales": row[f"{prefix}_ads_sales"],
            "ads_roas": row[f"{prefix}_ads_roas"],
            "new_customers": row[f"{prefix}_new_customers"], "returning_customers": row[returning],
            "fake_orders": row[f"{prefix}_fake_orders"], "fake_order_rate": _share(row[f"{prefix}_fake_orders"], orders),
        })
    shown = ["platform", "sales", "sales_share", "orders", "orders_share", "avg_order_value", "ads_roas",
             "ads_spend", "new_customers", "fake_order_rate", "period_start", "period_end"]
    return Report(f"Totals per platform, all clients, {window}", PLATFORM_COLUMNS, rows, shown, keep=5)


def _plus(*values):
    """Sum with NULL as 0, but NULL when every value is NULL (as SQL `_plus` in aggregate/sql.py)."""
    return None if all(v is None for v in values) else sum(v or 0 for v in values)


def _share(part, whole):
    """part / whole, NULL on a missing or zero whole (as the SQL ratios)."""
    return None if part is None or not whole else part / whole


# --- movers ------------------------------------------------------------------------

RANKINGS = ("pct", "change")


def movers(conn: sqlite3.Connection, window: Window, by: str = "total_sales", limit: int = 10, compare: str = "previous", *,
           min_base: float | None = None, rank: str = "pct", active_only: bool = False) -> Report:
    """The clients whose `by` (a metric's sum or a ratio) rose and fell most from the base window
    to this one, ranked by the change in percent (`rank="pct"`) or in value (`"change"`).

    Only clients whose base is at least `min_base` are ranked, so tiny ones do not top the list.
    A client whose last day of data is more than LAG_DAYS before the window's end has stopped
    sending data: it is listed as `lagging`, with its figures, never ranked as a fall.
    """
    if by not in METRICS and by not in RATIOS:
        raise UsageError(f"unknown metric {by!r} for --by", hint=f"one of: {', '.join([*METRICS, *RATIOS])}")
    if not 1 <= limit < 2**63:  # SQLite cannot bind a larger one
        raise UsageError(f"--limit must be at least 1 and below 2^63 (got {limit})")
    if rank not in RANKINGS:
        raise UsageError(f"--rank: {rank!r} is not one of {', '.join(RANKINGS)}")
    if min_base is not None and not math.isfinite(min_base):
        raise UsageError(f"--min-base must be a finite number (got {min_base})")
    base, by_pct = base_window(window, compare), rank == "pct"
    plan, base_plan = _plans(conn, window, base)
    # An amount is read and ranked in whole cents: 10,000 subtractions of integers, where
    # `change` of rupiah would round each value back to cents first (2-3x the time).
    in_cents = by in AMOUNT_METRICS
    end = window.end.isoformat()
    cutoff = (window.end - timedelta(days=LAG_DAYS)).isoformat()
    ranking = _Ranking(by, in_cents, by_pct, limit, min_base, active_only, cutoff)
    stored = _stored_candidates(conn, plan, base, ranking) if plan.period is not None else None
    if stored is not None:
        before, current, last_days, compared_to = stored
    else:
        before = _values(conn, base_plan, by, in_cents=in_cents)
        compared_to = any(value is not None for value in before.values())
        # Only a client with a value in the base window is ranked (a change needs both) or listed as
        # lagging (by what its base window had): the others are never looked at.
        if active_only:
            for (client_id,) in conn.execute("SELECT id FROM clients WHERE COALESCE(active, 0) = 0"):
                before.pop(client_id, None)
        current, last_days = _with_last_days(conn, plan, by, in_cents, before)
    ranked_by = 1 if by_pct else 0  # _moved's percent or its difference

    def move(client_id: int, lagging: bool) -> _Move:
        now, then = current.get(client_id), before.get(client_id)
        base_value = then / 100 if in_cents else then  # in rupiah: the double SQL gives
        diff, pct = _moved(now, then, base_value, in_cents) if now is not None else (None, None)
        if in_cents and now is not None:
            now /= 100
        return _Move(client_id, int(lagging), last_days.get(client_id, end), now, base_value, diff, pct)

    # 10,000 clients make 10,000 candidates: each is kept as a (sort key, client id) pair, and
    # only the rows shown are built (NamedTuples and key functions for all cost 2-3x as much).
    rose, fell, lagging = [], [], []
    for client_id, then in before.items():
        if then is None:
            continue
        last_day = last_days.get(client_id, end)
        if last_day is None or last_day < cutoff:  # what its base window had is what the window may miss
            lagging.append((-then, client_id))
            continue
        base_value = then / 100 if in_cents else then
        if min_base is not None and base_value < min_base:
            continue
        now = current.get(client_id)
        if now is None:
            continue
        size = _moved(now, then, base_value, in_cents)[ranked_by]
        if size is None:
            continue
        if size > 0:
            rose.append((-size, client_id))
        elif size < 0:
            fell.append((size, client_id))
    # Largest rise, largest fall, most in the base window first; ties by client id.
    sections = {name: [move(client_id, name == "lagging") for _, client_id in heapq.nsmallest(limit, keyed)]
                for name, keyed in (("rose", rose), ("fell", fell), ("lagging", lagging))}
    bounds = {"period_start": window.start.isoformat(), "period_end": window.end.isoformat(),
              "base_period_start": base.start.isoformat(), "base_period_end": base.end.isoformat()}
    shown_ids = sorted({m.client_id for chosen in sections.values() for m in chosen})
    listed = {c: (name, active) for c, name, active in
              conn.execute(f"SELECT id, name, active FROM clients WHERE id IN ({id_list(shown_ids)})")} if shown_ids else {}
    # A client whose row was deleted from `clients` by hand shows no name, as in every other report.
    rows = [{"direction": direction, "rank": at, "client_id": m.client_id, **dict(zip(("name", "active"), listed.get(m.client_id, (None, None)))),
             "lagging": m.lagging, "last_day": m.last_day, **bounds,
             by: m.now, f"{by}_base": m.base, f"{by}_change": m.diff, f"{by}_change_pct": m.pct}
            for direction, chosen in sections.items() for at, m in enumerate(chosen, 1)]
    key = f"{by}_change_pct" if by_pct else f"{by}_change"
    least = None if min_base is None else _floor_text(by, min_base)
    floor = "" if least is None else f", base at least {least}"
    shown = ["direction", "client_id", "name", key, *(c for c in (f"{by}_change", f"{by}_change_pct") if c != key),
             by, f"{by}_base", "last_day", "active"]
    if sections["lagging"]:  # since when a lagging client sent nothing is what its row is for: kept at 80 columns
        shown.remove("last_day")
        shown.insert(4, "last_day")
    notes = _base_notes(conn, base)
    if not compared_to:  # a base window before the data has its note, which says "nothing to compare" already
        span = data_span(conn)
        empty = f"no {by} in the base window {base}" + ("" if span is not None and base.end < span[0] else ": nothing to compare")
    elif least is None and not active_only:
        empty = "no client rose, fell or stopped sending data"
    else:  # say which filter left no one: the base window does have figures
        empty = (f"no {'active ' if active_only else ''}client rose or fell"
                 f"{'' if least is None else f' from a base of at least {least}'}, and none stopped sending data")
    title = f"Movers by {by} ({'percent' if by_pct else 'change'}), {window}{', active clients only' if active_only else ''}"
    return Report(title,
                  [*MOVERS_COLUMNS, by, f"{by}_base", f"{by}_change", f"{by}_change_pct"], rows, shown, keep=4,
                  subtitle=f"against {base} ({compare}){floor}", empty=empty, notes=notes)


def _floor_text(by: str, min_base: float) -> str:
    """`--min-base` in the unit the table shows `by` in (`shown_as`): `Rp 20,000,000`, `0.4%` (a
    rate or share given as the fraction 0.004), `150`."""
    kind = shown_as(by)
    if kind == "percent":
        return f"{min_base * 100:g}%"
    number = f"{int(min_base) if min_base == int(min_base) else min_base:,}"
    return f"Rp {number}" if kind == "rupiah" else number


class _Move(NamedTuple):
    """One client's figure in both windows of `movers`."""

    client_id: int
    lagging: int
    last_day: str | None
    now: float | int | None
    base: float | int | None
    diff: float | int | None
    pct: float | None


class _Ranking(NamedTuple):
    """What `movers` ranks by and keeps: its arguments, and the last day of data a client must reach."""

    by: str
    in_cents: bool
    by_pct: bool
    limit: int
    min_base: float | None
    active_only: bool
    cutoff: str


def _stored_candidates(conn: sqlite3.Connection, plan: _Plan, base: Window, ranking: _Ranking) -> tuple[dict, dict, dict, bool] | None:
    """`movers`' candidates over a rolling period (`plan`) and its `base` window from their stored
    sums (WINDOW_PAIRS), when the rollups are current and no client has data after the window (else
    None): the `limit` clients that rose and fell most and the `limit` lagging ones with most in
    the base window, chosen in SQL, each as `movers` reads every client (the base window's value,
    the window's, the last day of data before the window's end), and whether any client has a
    value in the base window.

    `movers` then ranks these few by `_moved` as it ranks every client of other windows. The SQL
    does `_moved`'s arithmetic in the same IEEE doubles (integers converted exactly, in whole
    cents below 2^53), so it keeps the very clients `movers` would keep from all of them.
    """
    window, span = plan.window, data_span(conn)
    if span is None or span[1] > window.end:
        return None
    log.debug("ranking movers of %s against %s from their stored sums", window, base)
    by, in_cents, dialect = ranking.by, ranking.in_cents, dialect_of(conn)
    inactive = " AND client_id NOT IN (SELECT id FROM clients WHERE COALESCE(active, 0) = 0)" if ranking.active_only else ""
    key = "period_start = :start AND period_end = :end AND base_start = :base_start AND base_end = :base_end"
    pairs = (f"SELECT client_id, last_day, {value_of(by, dialect, in_cents=in_cents)} AS now, "
             f"{value_of(by, dialect, in_cents=in_cents, prefix='base_')} AS base FROM {WINDOW_PAIRS} WHERE {key}{inactive}")
    base_value = "CAST(base AS DOUBLE PRECISION) / 100" if in_cents else "base"
    diff = "CAST(now - base AS DOUBLE PRECISION) / 100" if in_cents else "now - base"
    size = f"CAST({diff} AS DOUBLE PRECISION) / ABS({base_value}) * 100" if ranking.by_pct else diff
    ranked = "now IS NOT NULL AND COALESCE(last_day, :end) >= :cutoff"
    if ranking.min_base is not None:
        ranked += f" AND {base_value} >= :min_base"
    if ranking.by_pct:
        ranked += f" AND {base_value} <> 0"
    # Each client's change once (CASE, so that no base of 0 is ever divided by), then the three
    # lists from those 10,000 narrow rows: 8 ms where three passes over the pairs took 12.
    # A ratio's SQL is long: computed once a row (a subquery would be flattened, and the ratio
    # computed again wherever `now` and `base` are named: 17 ms for ads_roas, 9 this way).
    once = dialect.materialized
    values, source = (f"p AS {once} ({pairs}), ", "p") if by in RATIOS else ("", f"({pairs}) AS p")
    chosen = (
        f"WITH {values}s AS {once} (SELECT client_id, last_day, now, base, CASE WHEN {ranked} THEN {size} END AS size "
        f"FROM {source} WHERE base IS NOT NULL) "
        "SELECT * FROM (SELECT client_id, last_day, now, base FROM s WHERE size > 0 ORDER BY size DESC, client_id LIMIT :limit) AS rose "
        "UNION ALL SELECT * FROM (SELECT client_id, last_day, now, base FROM s WHERE size < 0 ORDER BY size, client_id LIMIT :limit) AS fell "
        "UNION ALL SELECT * FROM (SELECT client_id, last_day, now, base FROM s WHERE COALESCE(last_day, :end) < :cutoff "
        "ORDER BY base DESC, client_id LIMIT :limit) AS lagging"
    )
    params = {**window.params(), "base_start": base.start.isoformat(), "base_end": base.end.isoformat(), "cutoff": ranking.cutoff,
              "limit": ranking.limit, "min_base": ranking.min_base}
    before, current, last_days = {}, {}, {}
    for client_id, last_day, now, then in _tuples(conn).execute(chosen, params):
        before[client_id], current[client_id] = then, now
        if last_day is not None:
            last_days[client_id] = str(last_day)
    compared = bool(before) or conn.execute(
        f"SELECT 1 FROM {WINDOW_PAIRS} WHERE {key} AND {value_of(by, dialect, prefix='base_')} IS NOT NULL LIMIT 1", params).fetchone()
    return before, current, last_days, bool(compared)


# Then the metric ranked by: `<metric>`, `<metric>_base`, `<metric>_change`, `<metric>_change_pct`.
MOVERS_COLUMNS = ["direction", "rank", "client_id", "name", "active", "lagging", "last_day", *WINDOW_COLUMNS,
                  "base_period_start", "base_period_end"]


def _values(conn: sqlite3.Connection, plan: _Plan, by: str, days: bool = False, in_cents: bool = False) -> dict:
    """Every client's `by` over the plan's window (a sum or a ratio), read the fastest way the plan
    allows; with `days`, each client's (`by`, days_with_data); with `in_cents`, an amount in whole cents."""
    window = plan.window
    extra = ("days_with_data",) if days else ()
    columns = ", ".join(["client_id", by, *extra])
    if plan.current:
        span = _with_data(conn, window)
        if span is None:
            return {}
        sql, params = window_values(span.start, span.end, by, extra, dialect=dialect_of(conn), in_cents=in_cents)
        sql = f"SELECT {columns} FROM ({sql}) AS sums"
    else:
        value = f"{cents(by)} AS {by}" if in_cents else by  # CLIENT_SUMS' amounts are in rupiah
        sql = f"SELECT {', '.join(['client_id', value, *extra])} FROM ({with_ratios(CLIENT_SUMS, CLIENT_COLUMNS)}) AS sums"
        params = window.params()
    # 10,000 rows as plain tuples, straight from the cursor into the dictionary (no list of
    # them first: 0.5 ms less a read on SQLite; PostgreSQL's cursor fetches them all at once).
    rows = _tuples(conn).execute(sql, params)
    if days:
        return {client_id: (value, count) for client_id, value, count in rows}
    return dict(rows)


def _tuples(conn: sqlite3.Connection):
    """A cursor of `conn` (SQLite's or PostgreSQL's) whose `execute` returns rows as plain tuples,
    without the reader's row factory: 10,000 rows made as tuples cost 1-2 ms less on SQLite, and
    7 ms less on PostgreSQL."""
    cursor = conn.cursor()
    cursor.row_factory = None
    return cursor


def _with_last_days(conn: sqlite3.Connection, plan: _Plan, by: str, in_cents: bool, before: dict) -> tuple[dict, dict[int, str]]:
    """Every client's `by` over the plan's window (as `_values`), and a last day with data up to
    the window's end for at least every client with a value in `before` (movers' candidates, with
    data before the window) whose last day is before the end; a client not listed ends on it.

    When the rollups are current and no client has data after the window, LAST_DAYS holds every
    client's last day: only those before the window's end are read. Otherwise only the clients
    without data on every day of the window are looked up, one probe of the (client_id,
    stat_date) index each.
    """
    end = plan.window.end.isoformat()
    latest = conn.execute(f"SELECT MAX(last_day) FROM {LAST_DAYS}").fetchone()[0] if plan.current else None
    if latest is not None and latest <= end:
        earlier = _tuples(conn).execute(f"SELECT client_id, last_day FROM {LAST_DAYS} WHERE last_day < :end", {"end": end})
        return _values(conn, plan, by, in_cents=in_cents), dict(earlier)
    with_days, days = _values(conn, plan, by, days=True, in_cents=in_cents), plan.window.days
    values = {client_id: value for client_id, (value, _) in with_days.items()}
    short = [c for c, then in before.items() if then is not None and with_days.get(c, (None, 0))[1] < days]
    if not short:
        return values, {}
    return values, dict(conn.execute(
        "SELECT c.id, (SELECT MAX(s.stat_date) FROM client_stats s WHERE s.client_id = c.id AND s.stat_date <= :end) "
        f"FROM clients c WHERE c.id IN ({id_list(short)})", {"end": end}))


def _base_notes(conn: sqlite3.Connection, base: Window) -> list[str]:
    """A note when the base window of a comparison begins before the replica's first day of
    data: when it holds some of it, its sums cover fewer days than the window's, and every change
    (a client going from 35 days to 365 "rose 1,000%") compares unequal spans; when it holds none,
    every base and change is empty, which a script reading CSV could not tell from no change."""
    span = data_span(conn)
    if span is None:
        return []
    first = span[0]
    if base.end < first:
        return [f"the base window {base} is before the replica's first day of data ({first}): nothing to compare"]
    if not base.start < first <= base.end:  # whole
        return []
    held = (base.end - first).days + 1
    return [f"the base window holds only {held} of its {base.days} days (the replica's data starts {first}), "
            "so its changes compare unequal spans"]


def _with_data(conn: sqlite3.Connection, window: Window) -> Window | None:
    """`trimmed` to the replica's first and last day of data."""
    span = data_span(conn)
    return None if span is None else trimmed(window, *span)


def _holds_rows(conn: sqlite3.Connection, window: Window) -> bool:
    """Whether any client has a row in the window: one probe of the stat_date index (the data
    span alone would count a window inside a gap in the data)."""
    sql = "SELECT EXISTS (SELECT 1 FROM client_stats WHERE stat_date BETWEEN :start AND :end)"
    return bool(conn.execute(sql, {"start": window.start.isoformat(), "end": window.end.isoformat()}).fetchone()[0])


_STATEMENT_START = re.compile(r"\s*(?:(?:--[^\n]*(?:\n|$)|/\*.*?\*/)\s*)*(\w+)", re.S)
_READING_STATEMENTS = {"SELECT", "WITH", "EXPLAIN", "PRAGMA", "VALUES"}


CHANGES_COLUMNS = ["client_id", "name", "stat_date", "column", "old_value", "new_value", "difference", "run_id", "changed_at"]
def _changes_sql(dialect: Dialect) -> str:
    """The change log in the window, with the difference of two numbers (cents kept exact)."""
    old, new = "s.old_value", "s.new_value"
    difference = (
        f"CASE WHEN {dialect.is_number(old)} AND {dialect.is_number(new)} "
        f"THEN CASE WHEN {dialect.is_integer(old)} AND {dialect.is_integer(new)} "
        f"THEN {dialect.integer(new)} - {dialect.integer(old)} ELSE {dialect.round2(f'{dialect.real(new)} - {dialect.real(old)}')} END END"
    )
    return f"""
SELECT s.client_id, c.name, s.stat_date, s."column", s.old_value, s.new_value, {difference} AS difference, s.run_id, s.changed_at
FROM stat_changes s LEFT JOIN clients c ON c.id = s.client_id
WHERE s.stat_date BETWEEN :start AND :end AND (CAST(:client_id AS BIGINT) IS NULL OR s.client_id = :client_id)
ORDER BY s.run_id DESC, s.client_id, s.stat_date, s.{dialect.row_order}"""


def changes(conn: sqlite3.Connection, window: Window, client_id: int | None = None) -> Report:
    """The restatements logged in `stat_changes` whose day lies in the window, newest run first."""
    dialect = dialect_of(conn)
    if "stat_changes" not in {row[0] for row in conn.execute(dialect.table_names)}:
        raise UsageError("this replica predates the change log (stat_changes)", hint="any writing run upgrades it, e.g. 'delivery-sync sync'")
    if client_id is not None and not conn.execute(
            "SELECT EXISTS (SELECT 1 FROM clients WHERE id = :id) OR EXISTS (SELECT 1 FROM stat_changes WHERE client_id = :id)",
            {"id": client_id}).fetchone()[0]:  # a mistyped id must not read as "no changes"
        raise _unknown_client(client_id)
    rows = _fetch(conn, _changes_sql(dialect), {**window.params(), "client_id": client_id})
    # A pruned row's old value is the whole row as JSON, a change of `extra` two JSON objects: too
    # wide for a table, whose new value would then be left out beside the old (csv/json carry them).
    shown = [{**row, "old_value": "(whole row)", "new_value": "deleted"} if row["column"] == "*"
             else {**row, "old_value": _clipped(row["old_value"]), "new_value": _clipped(row["new_value"])} for row in rows]
    who = f"client {client_id}" if client_id is not None else "all clients"
    # On a terminal: which client, day and figure, by how much and in which run, always side by
    # side (80 columns hold them with the longest metric name: the same day restated twice shows
    # as two runs, not as two unexplained differences); then the value the replica holds now (at
    # 80 columns, with the difference it tells the old one too), the old value and the name as
    # they fit.
    on_screen = ["client_id", "stat_date", "column", "difference", "run_id", "new_value", "old_value", "name", "changed_at"]
    return Report(f"Changes to stored days, {who}, {window} (newest run first)", CHANGES_COLUMNS, rows,
                  on_screen, table_rows=shown, keep=5,
                  empty="the remote changed no stored day of this window")


# The widest text value `query changes` shows in a table: old and new side by side at 120 columns.
_CHANGED_TEXT = 24


def _clipped(value):
    """A logged text value cut to _CHANGED_TEXT characters with an ellipsis; a number as it is."""
    if isinstance(value, str) and len(value) > _CHANGED_TEXT:
        return value[:_CHANGED_TEXT - 1] + "…"
    return value


def _unknown_client(client_id: int) -> UsageError:
    """The refusal of a client id the replica has never seen."""
    return UsageError(f"unknown client id {client_id}: not in the replica", hint="see 'delivery-sync query top'")


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
            " - query sql runs only SELECT, WITH, EXPLAIN, VALUES and (on SQLite) read-only PRAGMAs"
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
    wanted = None if max_rows is None else max_rows + 1  # one more tells whether there are more
    if not isinstance(conn, sqlite3.Connection):  # PostgreSQL: the server times and fences it
        names, rows = conn.read_only_statement(statement, max_seconds, wanted)
        columns = _unique(names)
        return Report("", columns, [dict(zip(columns, row)) for row in rows[:max_rows]], columns, keep=len(columns), raw=True,
                      more=max_rows is not None and len(rows) > max_rows, deadline=deadline, notes=_renamed(names, columns))
    # Called every 10k VM steps: returning True makes SQLite interrupt the query.
    conn.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
    # One value can be built in a single VM step (`zeroblob(999999999)`): bound its size too.
    length = conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    try:
        cursor = conn.execute(statement)
        rows = []
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
        if is_damage(exc):  # the file, not the statement: said as every report says it
            raise
        if "too big" in str(exc):
            raise UsageError(f"SQL error: a value would exceed {MAX_VALUE_BYTES // 2**20} MB ({exc})") from None
        check_denied(exc)
        raise UsageError(f"SQL error: {exc}") from None
    finally:
        conn.set_progress_handler(None, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, length)
    names = [d[0] for d in cursor.description or []]
    columns = _unique(names)
    more = max_rows is not None and len(rows) > max_rows
    return Report("", columns, [dict(zip(columns, row)) for row in rows[:max_rows]], columns, keep=len(columns), raw=True,
                  more=more, deadline=deadline, notes=_renamed(names, columns))


def _renamed(names: list[str], columns: list[str]) -> list[str]:
    """A note naming the columns `_unique` renamed: a script reading the JSON keys must know."""
    renamed = [f"{name} -> {column}" for name, column in zip(names, columns) if name != column]
    return [f"columns of the same name renamed: {', '.join(renamed)}"] if renamed else []


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


def _client_rows(conn: sqlite3.Connection, plan: _Plan, order: str, params: dict, clients: list[int] | None = None,
                 conditions: tuple[str, ...] = (), active: bool = False) -> list[dict]:
    """Per-client sums and ratios with names over the plan's window (of `clients` only, when
    given, and meeting `conditions` on the columns `a.*` and `c.*`), read the fastest way the
    plan allows; with `active`, the clients' `active` flag after their name."""
    window = plan.window
    extra: dict = {}
    only = "" if clients is None else f"client_id IN ({id_list(clients)})"
    if plan.period:
        source = "(SELECT * FROM client_aggregates WHERE period = :period)"
        bounds = "a.period_start, a.period_end"
    else:
        if plan.current:  # whole months and pieces from the partial sums, raw rows only at the edges
            sums, extra = client_window_sums(window.start, window.end, clients, dialect_of(conn))
        elif clients is not None:  # read their rows by the (client_id, ...) keys, not every client's
            sums = CLIENT_SUMS.replace("FROM client_stats", f"FROM (SELECT * FROM client_stats WHERE {only}) AS s")
        else:
            sums = CLIENT_SUMS
        source = f"({with_ratios(sums, CLIENT_COLUMNS)})"
        bounds = ":start AS period_start, :end AS period_end"
    columns = ", ".join(["a.client_id", "c.name", *(["c.active"] if active else []), bounds,
                         *(f"a.{c}" for c in [*CLIENT_COLUMNS[1:], *RATIOS])])
    filters = [f"a.{only}"] if only else []
    filters += conditions
    where = f"WHERE {' AND '.join(filters)}" if filters else ""
    sql = f"SELECT {columns} FROM {source} a LEFT JOIN clients c ON c.id = a.client_id {where} {order}"
    return _fetch(conn, sql, {**params, **extra, **plan.params()})


_METRIC_LIST = ", ".join(METRICS)


def _edge_period_sums(by: str, dialect: Dialect) -> str:
    """`period_sums` of the window's partial edge periods, from the stored daily totals.

    Sums come from `overall_daily` (exact cents, so equal to summing the raw rows).
    Clients with data are read from EDGE_CLIENTS, which holds the edges of the stored
    rolling periods; any other edge counts them by `clients_with_data` (from the most clients
    on one of its days, or by probing the (client_id, stat_date) index once per client), far
    cheaper than reading every client-day of the edges.
    """
    key, first, last = period_bounds(by, day="period", dialect=dialect)
    stored = f"SELECT e.clients_with_data FROM {EDGE_CLIENTS} e WHERE e.period_start = x.period_start AND e.period_end = x.period_end"
    return f"""
SELECT period, period_start, period_end,
       COALESCE(({stored}), {clients_with_data("period_start", "period_end", "most_in_a_day")}) AS clients_with_data,
       days_with_data, {_METRIC_LIST}
FROM (SELECT period, CASE WHEN {first} > :start THEN {first} ELSE :start END AS period_start,
             CASE WHEN {last} < :end THEN {last} ELSE :end END AS period_end, days_with_data, most_in_a_day, {_METRIC_LIST}
      FROM (SELECT {key} AS period, COUNT(*) AS days_with_data, MAX(clients_with_data) AS most_in_a_day,
                   {metric_sums(dialect)}
            FROM overall_daily
            WHERE period BETWEEN :head_start AND :head_end OR period BETWEEN :tail_start AND :tail_end
            GROUP BY 1) AS edges) AS x"""


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
        return week_start(day).isoformat()
    return day.isoformat()


def _whole_span(window: Window, by: str) -> tuple[date, date]:
    """First and last day of the whole periods inside the window (first > last when there is none)."""
    if by == "day":
        return window.start, window.end
    if by == "week":
        first = window.start if window.start.weekday() == 0 else week_end(window.start) + timedelta(days=1)
        last = window.end if window.end.weekday() == 6 else week_start(window.end) - timedelta(days=1)
        return first, last
    first = window.start if window.start.day == 1 else next_month(window.start)
    last = window.end if month_end(window.end) == window.end else window.end.replace(day=1) - timedelta(days=1)
    return first, last


def _plan(conn: sqlite3.Connection, window: Window, by: str | None = None) -> _Plan:
    """Read a rolling period ending at the rollups' as-of date from its row; with `by`, whole
    periods from theirs; any other window from the partial sums (`current`); all raw when the
    rollups are not current."""
    return _plans(conn, window, by=by)[0]


def _plans(conn: sqlite3.Connection, *windows: Window | None, by: str | None = None) -> list[_Plan | None]:
    """`_plan` of each of `windows` (None for None) from one check of whether the rollups are
    current: a report reads all its windows in one snapshot, and on PostgreSQL each check is two
    round trips (about 0.6 ms)."""
    as_of = rollups_as_of(conn)
    return [None if window is None else _plan_at(as_of, window, by) for window in windows]


def _plan_at(as_of: date | None, window: Window, by: str | None) -> _Plan:
    """`_plan` of `window` given the rollups' as-of date (None: not current)."""
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


def _fetch(conn: sqlite3.Connection, sql: str, params: dict) -> list[dict]:
    cursor = conn.execute(sql, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor]


def _empty(columns: list[str], window: Window, **known) -> dict:
    """The one row of a single-row report over a window with no data: counts 0, sums and ratios NULL."""
    row = dict.fromkeys(columns)
    row.update(period_start=window.start.isoformat(), period_end=window.end.isoformat(), **known)
    for count in ("days_with_data", "clients_with_data"):
        if count in row:
            row[count] = 0
    return row
