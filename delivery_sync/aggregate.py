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


_PERIOD = ":period, :start, :end"
INSERT_CLIENT = (
    f"INSERT INTO client_aggregates({_columns('client_id')}) "
    f"SELECT {_PERIOD}, client_id, {', '.join(CLIENT_COLUMNS[1:])}, {', '.join(RATIOS)}, :computed_at "
    f"FROM ({with_ratios(CLIENT_SUMS, CLIENT_COLUMNS)})"
)
PERIOD_COLUMNS = ["period", "period_start", "period_end", *OVERALL_COLUMNS]
INSERT_FINE = {
    by: f"INSERT INTO {table}({_columns('clients_with_data')}) "
    f"SELECT {', '.join(PERIOD_COLUMNS)}, {', '.join(RATIOS)}, :computed_at "
    f"FROM ({with_ratios(period_sums(by, 'FROM client_stats'), PERIOD_COLUMNS)})"
    for by, table in FINE_TABLES.items()
}
INSERT_OVERALL = (
    f"INSERT INTO overall_aggregates({_columns('clients_with_data')}) "
    f"SELECT {_PERIOD}, {', '.join(OVERALL_COLUMNS)}, {', '.join(RATIOS)}, :computed_at "
    f"FROM ({with_ratios(OVERALL_SUMS, OVERALL_COLUMNS)})"
)


def periods(db: "sqlite_utils.Database", as_of: date) -> list[tuple[str, date, date]]:
    """(period, first day, last day) of every rolling window and every calendar month with data."""
    rolling = [(name, as_of - timedelta(days=days - 1), as_of) for name, days in ROLLING_PERIODS.items()]
    months = []
    for (month,) in db.execute("SELECT DISTINCT substr(stat_date, 1, 7) FROM client_stats ORDER BY 1"):
        first = date.fromisoformat(f"{month}-01")
        months.append((month, first, first.replace(day=calendar.monthrange(first.year, first.month)[1])))
    return rolling + months


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
                    built = periods(db, as_of)
                    _create_tables(db)
                    computed_at = replica.utc_now()
                    for period, start, end in built:
                        params = {"period": period, "start": start.isoformat(), "end": end.isoformat(), "computed_at": computed_at}
                        db.execute(INSERT_CLIENT, params)
                        db.execute(INSERT_OVERALL, params)
                    for insert in INSERT_FINE.values():  # every day and week, unclipped
                        db.execute(insert, {"start": "0000-01-01", "end": "9999-12-31", "computed_at": computed_at})
                    counts = _counts(db)
                    run = replica.finish_run(db, run_id, "ok", counts)
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

    clients, rows = db.execute("SELECT COUNT(DISTINCT client_id), COUNT(*) FROM client_stats").fetchone()
    tables = ("client_aggregates", "overall_aggregates", *FINE_TABLES.values())
    written = sum(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables)
    return RunCounts(clients_total=clients, clients_ok=clients, rows_fetched=rows, rows_inserted=written)
