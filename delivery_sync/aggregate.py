"""Rollups: `client_aggregates` and `overall_aggregates` (SPEC §4), plus `overall_daily` and
`overall_weekly`, rebuilt in one transaction.

One row per (client, period) and per period for all clients, where a period is
`last_7d`, `last_30d`, `last_90d`, `last_365d` (ending at the as-of date) or a
calendar month `YYYY-MM` with data. Every rollup row is produced by the same
named SQL (`CLIENT_SUMS`, `OVERALL_SUMS`, `with_ratios`) that `reports.py` runs
on raw rows for that window, so reading a rollup or the raw rows gives the same
numbers. Amounts are summed in whole cents (integers): exact, and independent of
the order SQLite visits rows in.

Only the standard library is imported at module level: `reports.py` imports the
named SQL from here on the fast read path. The rollup tables are derived data,
dropped and recreated on every rebuild, so their schema always matches this code
and needs no migration.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import NoReplica
from .metrics import AMOUNT_METRICS, METRICS

if TYPE_CHECKING:
    import sqlite_utils

# Rolling periods ending at the as-of date, inclusive.
ROLLING_PERIODS = {"last_7d": 7, "last_30d": 30, "last_90d": 90, "last_365d": 365}


def _sum(metric: str) -> str:
    # Cents as integers: an exact sum whatever the row order; NULL when every value is NULL.
    if metric in AMOUNT_METRICS:
        return f"SUM(CAST(ROUND({metric} * 100) AS INTEGER)) / 100.0 AS {metric}"
    return f"SUM({metric}) AS {metric}"


def _plus(*columns: str) -> str:
    """Sum of columns, NULLs as 0, but NULL when every one is NULL (a platform a client does not use)."""
    all_null = " AND ".join(f"{c} IS NULL" for c in columns)
    total = " + ".join(f"COALESCE({c}, 0)" for c in columns)
    return f"(CASE WHEN {all_null} THEN NULL ELSE {total} END)"


def _ratio(numerator: str, denominator: str) -> str:
    return f"CAST({numerator} AS REAL) / NULLIF({denominator}, 0)"


# Weighted ratios over sums (or over one day's values), NULL on a zero denominator (SPEC §4).
RATIOS = {
    "grab_ads_roas": _ratio("grab_ads_sales", "grab_ads_spend"),
    "gojek_ads_roas": _ratio("gojek_ads_sales", "gojek_ads_spend"),
    "ads_roas": _ratio(_plus("grab_ads_sales", "gojek_ads_sales"), _plus("grab_ads_spend", "gojek_ads_spend")),
    "avg_order_value": _ratio("total_sales", "total_orders"),
    "fake_order_rate": _ratio(_plus("grab_fake_orders", "gojek_fake_orders"), "total_orders"),
    "new_customer_share": _ratio(
        _plus("grab_new_customers", "gojek_new_customers"),
        _plus("grab_new_customers", "grab_repeated_customers", "gojek_new_customers", "gojek_returned_customers"),
    ),
    "ads_spend_share": _ratio(_plus("grab_ads_spend", "gojek_ads_spend"), "total_sales"),
}
# Every metric summed, named as the metric.
SUMS = ",\n       ".join(_sum(m) for m in METRICS)

# Per client over the window [:start, :end].
CLIENT_SUMS = f"""
SELECT client_id, COUNT(*) AS days_with_data,
       {SUMS}
FROM client_stats
WHERE stat_date BETWEEN :start AND :end
GROUP BY client_id"""

# All clients together over [:start, :end]; no row when the window is empty.
OVERALL_SUMS = f"""
SELECT COUNT(DISTINCT client_id) AS clients_with_data, COUNT(DISTINCT stat_date) AS days_with_data,
       {SUMS}
FROM client_stats
WHERE stat_date BETWEEN :start AND :end
HAVING COUNT(*) > 0"""


def with_ratios(sums_sql: str, columns: list[str]) -> str:
    """`columns` of a sums (or daily rows) query, followed by every ratio computed from them."""
    ratios = ",\n       ".join(f"{expr} AS {name}" for name, expr in RATIOS.items())
    return f"SELECT {', '.join(columns)},\n       {ratios}\nFROM ({sums_sql})"


def period_bounds(by: str, day: str = "stat_date") -> tuple[str, str, str]:
    """SQL for the period of the date column `day`, and for the first and last day of `period`."""
    key = {
        "day": day,
        # SQLite's %w is 0 for Sunday: step back (w + 6) % 7 days to the Monday.
        "week": f"date({day}, '-' || ((CAST(strftime('%w', {day}) AS INTEGER) + 6) % 7) || ' days')",
        "month": f"substr({day}, 1, 7)",
    }[by]
    first = {"day": "period", "week": "period", "month": "period || '-01'"}[by]
    last = {"day": "period", "week": "date(period, '+6 days')", "month": "date(period || '-01', '+1 month', '-1 day')"}[by]
    return key, first, last


def period_sums(by: str, rows: str) -> str:
    """Sums per day, Monday-started week or month of the `rows` clause, each period clipped to the window."""
    key, first, last = period_bounds(by)
    return f"""
SELECT period, MAX({first}, :start) AS period_start, MIN({last}, :end) AS period_end,
       clients_with_data, days_with_data, {', '.join(METRICS)}
FROM (SELECT {key} AS period, COUNT(DISTINCT client_id) AS clients_with_data,
             COUNT(DISTINCT stat_date) AS days_with_data,
             {SUMS}
      {rows}
      GROUP BY period)"""


# Calendar periods finer than a month, stored beside the SPEC's rollups so `query totals --by
# day|week` reads a few hundred rows instead of summing every client-day: one row per day and
# per Monday-started week with data, same columns as overall_aggregates.
FINE_TABLES = {"day": "overall_daily", "week": "overall_weekly"}

CLIENT_COLUMNS = ["client_id", "days_with_data", *METRICS]
OVERALL_COLUMNS = ["clients_with_data", "days_with_data", *METRICS]


def _columns(key: str) -> str:
    return ", ".join(["period", "period_start", "period_end", key, *CLIENT_COLUMNS[1:], *RATIOS, "computed_at"])


PERIOD_COLUMNS = ["period", "period_start", "period_end", *OVERALL_COLUMNS]


def _create_tables(db: "sqlite_utils.Database") -> None:
    metrics = {m: float if m in AMOUNT_METRICS else int for m in METRICS}
    tail = {**metrics, **{r: float for r in RATIOS}, "computed_at": str}
    head = {"period": str, "period_start": str, "period_end": str}
    db["client_aggregates"].create(
        {"client_id": int, **head, "days_with_data": int, **tail}, pk=("client_id", "period"), replace=True
    )
    db["client_aggregates"].create_index(["period"])
    for table in ("overall_aggregates", *FINE_TABLES.values()):
        db[table].create({**head, "clients_with_data": int, "days_with_data": int, **tail}, pk="period", replace=True)


@dataclass
class AggregateResult:
    """The outcome of a rebuild: its `sync_runs` row, the periods built, and how long it took."""

    run: dict
    as_of: date
    periods: int = 0
    months: int = 0
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return self.run["status"]


def run_aggregate(database: Path, as_of: date) -> AggregateResult:
    """`delivery-sync aggregate`: take the writer lock, then rebuild (never creates a replica)."""
    from . import replica

    if not database.is_file():
        raise NoReplica(f"no replica at {database}", hint="run 'delivery-sync sync' first")
    with replica.writer_lock(database, "aggregate"):
        return aggregate_locked(database, as_of)


def aggregate_locked(database: Path, as_of: date) -> AggregateResult:
    """Rebuild every rollup as of `as_of`, recorded as an `aggregate` run; the caller holds the writer lock.

    The rebuild and its `ok` run row commit in one transaction, so a reader sees
    either the old rollups and run or the new ones, never a half-built table.
    """
    from . import replica

    began = time.monotonic()
    db = replica.open_replica(database)
    try:
        run_id = replica.start_run(db, "aggregate", (as_of - timedelta(days=364), as_of))
        with replica.closed_on_error(db, run_id):
            try:
                with db.atomic():
                    built = _rebuild(db, as_of, replica.utc_now())
                    run = replica.finish_run(db, run_id, "ok", _counts(db))
            except Exception as exc:  # recorded, then reported by the caller as a failed run
                run = replica.finish_run(db, run_id, "failed", replica.RunCounts(), str(exc))
                built = []
    finally:
        db.close()
    months = sum(1 for period, _, _ in built if period not in ROLLING_PERIODS)
    return AggregateResult(run, as_of, len(built) - months, months, time.monotonic() - began)


def _counts(db: "sqlite_utils.Database"):
    """Counters of an aggregate run: clients with data, rows summarised, rollup rows written."""
    from .replica import RunCounts

    clients, rows = db.execute("SELECT COUNT(DISTINCT client_id), TOTAL(days_with_data) FROM temp.agg_months").fetchone()
    tables = ("client_aggregates", "overall_aggregates", *FINE_TABLES.values())
    written = sum(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables)
    db.execute("DROP TABLE temp.agg_months")
    return RunCounts(clients_total=clients, clients_ok=clients, rows_fetched=int(rows), rows_inserted=written)


# --- the rebuild -------------------------------------------------------------------------------
# Every raw row is read twice: once into per (client, month) and once into per day partial sums,
# amounts in whole cents. Every rollup is then a sum of partial sums (of raw rows only at the
# edges of rolling periods): integers, so exactly the numbers CLIENT_SUMS / OVERALL_SUMS /
# period_sums give on the raw rows, and NULL exactly when every value is NULL.

def _cents(metric: str) -> str:
    return f"CAST(ROUND({metric} * 100) AS INTEGER)" if metric in AMOUNT_METRICS else metric


_PARTIALS = ", ".join(f"SUM({_cents(m)}) AS {m}" for m in METRICS)
_RAW_CENTS = ", ".join(f"{_cents(m)} AS {m}" for m in METRICS)
_PLAIN = ", ".join(METRICS)
_ADDED = ", ".join(f"SUM({m}) AS {m}" for m in METRICS)
# Partial sums as the rollups store them: amounts back in rupiah.
_STORED = ", ".join(f"{m} / 100.0 AS {m}" if m in AMOUNT_METRICS else m for m in METRICS)
_MONTH_END = "date(month || '-01', '+1 month', '-1 day')"
_WEEK_KEY = period_bounds("week", "day")[0]


def _insert(db: "sqlite_utils.Database", table: str, key: str, sums_sql: str, params: dict) -> None:
    """Rows of `sums_sql` (period, period_start, period_end, `key`, days_with_data, the metrics) into
    `table`, with their ratios."""
    columns = ["period", "period_start", "period_end", key, "days_with_data", *METRICS]
    db.execute(
        f"INSERT INTO {table}({_columns(key)}) SELECT {', '.join(columns)}, {', '.join(RATIOS)}, :computed_at "
        f"FROM ({with_ratios(sums_sql, columns)})",
        params,
    )


def _rebuild(db: "sqlite_utils.Database", as_of: date, computed_at: str) -> list[tuple[str, date, date]]:
    """Recreate every rollup table as of `as_of`; returns (period, first day, last day) of every
    rolling window and every calendar month with data."""
    db.execute("DROP TABLE IF EXISTS temp.agg_months")
    db.execute("DROP TABLE IF EXISTS temp.agg_days")
    db.execute("DROP TABLE IF EXISTS temp.agg_rolling")
    db.execute(
        f"CREATE TEMP TABLE agg_months AS SELECT client_id, substr(stat_date, 1, 7) AS month, COUNT(*) AS days_with_data, "
        f"{_PARTIALS} FROM client_stats GROUP BY client_id, month"
    )
    db.execute(
        f"CREATE TEMP TABLE agg_days AS SELECT stat_date AS day, COUNT(*) AS clients_with_data, {_PARTIALS} "
        "FROM client_stats GROUP BY stat_date"
    )
    db.execute(f"CREATE TEMP TABLE agg_rolling(period, period_start, period_end, client_id, days_with_data, {_PLAIN})")
    rolling = [(name, as_of - timedelta(days=days - 1), as_of) for name, days in ROLLING_PERIODS.items()]
    months = []
    for (month,) in db.execute("SELECT DISTINCT month FROM temp.agg_months ORDER BY 1"):
        first = date.fromisoformat(f"{month}-01")
        months.append((month, first, first.replace(day=calendar.monthrange(first.year, first.month)[1])))
    _create_tables(db)
    params = {"computed_at": computed_at}
    for name, start, end in rolling:
        _rolling_partials(db, name, start, end)
    _insert(db, "client_aggregates", "client_id", (
        f"SELECT month AS period, month || '-01' AS period_start, {_MONTH_END} AS period_end, client_id, days_with_data, "
        f"{_STORED} FROM temp.agg_months"), params)
    _insert(db, "client_aggregates", "client_id", (
        f"SELECT period, period_start, period_end, client_id, days_with_data, {_STORED} FROM temp.agg_rolling"), params)
    # All clients: clients_with_data from the per-client partials, days_with_data from the days.
    _insert(db, "overall_aggregates", "clients_with_data", (
        f"SELECT m.month AS period, m.month || '-01' AS period_start, date(m.month || '-01', '+1 month', '-1 day') AS period_end, "
        f"clients_with_data, d.days AS days_with_data, {_STORED} FROM "
        f"(SELECT month, COUNT(*) AS clients_with_data, {_ADDED} FROM temp.agg_months GROUP BY month) AS m "
        "JOIN (SELECT substr(day, 1, 7) AS month, COUNT(*) AS days FROM temp.agg_days GROUP BY 1) AS d ON d.month = m.month"),
        params)
    for name, start, end in rolling:
        _insert(db, "overall_aggregates", "clients_with_data", (
            f"SELECT :period AS period, :start AS period_start, :end AS period_end, clients_with_data, "
            f"(SELECT COUNT(*) FROM temp.agg_days WHERE day BETWEEN :start AND :end) AS days_with_data, {_STORED} "
            f"FROM (SELECT COUNT(*) AS clients_with_data, {_ADDED} FROM temp.agg_rolling WHERE period = :period "
            "HAVING COUNT(*) > 0)"), params | {"period": name, "start": start.isoformat(), "end": end.isoformat()})
    _insert(db, "overall_daily", "clients_with_data", (
        f"SELECT day AS period, day AS period_start, day AS period_end, clients_with_data, 1 AS days_with_data, {_STORED} "
        "FROM temp.agg_days"), params)
    # A week's clients_with_data counts distinct clients over its days: the one figure not a sum.
    _insert(db, "overall_weekly", "clients_with_data", (
        f"SELECT w.week AS period, w.week AS period_start, date(w.week, '+6 days') AS period_end, "
        "(SELECT COUNT(DISTINCT client_id) FROM client_stats WHERE stat_date BETWEEN w.week AND date(w.week, '+6 days')) "
        f"AS clients_with_data, w.days AS days_with_data, {_STORED} "
        f"FROM (SELECT {_WEEK_KEY} AS week, COUNT(*) AS days, {_ADDED} FROM temp.agg_days GROUP BY week) AS w"), params)
    db.execute("DROP TABLE temp.agg_days")
    db.execute("DROP TABLE temp.agg_rolling")
    return rolling + months


def _rolling_partials(db: "sqlite_utils.Database", name: str, start: date, end: date) -> None:
    """Per-client partial sums over [start, end] into temp.agg_rolling: the whole months inside
    it from temp.agg_months, the days at either edge from the raw rows."""
    first_full = start if start.day == 1 else _next_month(start)
    last_full = end if _next_month(end) - timedelta(days=1) == end else end.replace(day=1) - timedelta(days=1)
    if first_full > last_full:  # no whole month inside: every day from the raw rows
        head, tail, months = (start, end), None, None
    else:
        head = (start, first_full - timedelta(days=1)) if start < first_full else None
        tail = (last_full + timedelta(days=1), end) if last_full < end else None
        months = (first_full.isoformat()[:7], last_full.isoformat()[:7])
    parts = []
    params: dict = {"period": name, "start": start.isoformat(), "end": end.isoformat()}
    if months:
        parts.append(f"SELECT client_id, days_with_data, {_PLAIN} FROM temp.agg_months WHERE month BETWEEN :m0 AND :m1")
        params.update(m0=months[0], m1=months[1])
    for i, edge in enumerate((head, tail)):
        if edge:
            parts.append(f"SELECT client_id, 1 AS days_with_data, {_RAW_CENTS} FROM client_stats WHERE stat_date BETWEEN :s{i} AND :e{i}")
            params.update({f"s{i}": edge[0].isoformat(), f"e{i}": edge[1].isoformat()})
    db.execute(
        f"INSERT INTO temp.agg_rolling SELECT :period, :start, :end, client_id, SUM(days_with_data), {_ADDED} "
        f"FROM ({' UNION ALL '.join(parts)}) GROUP BY client_id",
        params,
    )


def _next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)
