"""Rollup rows from the partial sums, the same SQL on both engines: the calendar months per
client, and the months, days and Monday-started weeks of all clients (with their ratios).

The build of either engine writes them all, or refreshes those a sync touched. Calendar
arithmetic, and how a row replaces another, come from the engine's `Dialect`.
"""

from __future__ import annotations

from ..dialect import SQLITE, Dialect
from ..metrics import METRICS
from .sql import ADDED, RATIOS, STORED, period_bounds, with_ratios


def insert_rows(db, table: str, key: str, sums_sql: str, params: dict, replace: str | None = None, dialect: Dialect = SQLITE) -> None:
    """Rows of `sums_sql` (period, period_start, period_end, `key`, days_with_data, the metrics) into
    `table`, with their ratios and `params["computed_at"]`; with `replace` (the table's key
    columns), in place of those with the same key."""
    columns = ["period", "period_start", "period_end", key, "days_with_data", *METRICS]
    head, tail = dialect.insert_into(table, [*columns, *RATIOS, "computed_at"], replace)
    db.execute(
        f"{head} SELECT {', '.join(columns)}, {', '.join(RATIOS)}, "
        f"CAST(:computed_at AS TEXT) FROM ({with_ratios(sums_sql, columns)}) AS r WHERE true{tail}",
        params,
    )


def client_month_rows(source: str, dialect: Dialect = SQLITE) -> str:
    """client_aggregates' month rows of the agg_client_months rows `source` (a FROM clause)."""
    return (f"SELECT month AS period, {dialect.month_first('month')} AS period_start, {dialect.month_last('month')} AS period_end, "
            f"client_id, days_with_data, {STORED} FROM {source}")


def week_key(dialect: Dialect = SQLITE) -> str:
    """The `period` of the week holding agg_days' `day`: its Monday, as text."""
    return period_bounds("week", "day", dialect)[0]


def overall_rows(db, params: dict, months: str = "", days: str = "", weeks: str = "", dialect: Dialect = SQLITE) -> None:
    """overall_aggregates month rows, overall_daily and overall_weekly rows from the partial sums:
    every one, or those whose month, day or week is `months`, `days`, `weeks` ("IN (...)")."""
    in_months = f"WHERE month {months}" if months else ""
    # All clients: clients_with_data from the per-client partials, days_with_data from the days.
    insert_rows(db, "overall_aggregates", "clients_with_data", (
        f"SELECT m.month AS period, {dialect.month_first('m.month')} AS period_start, {dialect.month_last('m.month')} AS period_end, "
        f"clients_with_data, d.days AS days_with_data, {STORED} FROM "
        f"(SELECT month, COUNT(*) AS clients_with_data, {ADDED} FROM agg_client_months {in_months} GROUP BY month) AS m "
        f"JOIN (SELECT {dialect.month_key('day')} AS month, COUNT(*) AS days FROM agg_days GROUP BY 1) AS d ON d.month = m.month"),
        params)
    insert_rows(db, "overall_daily", "clients_with_data", (
        f"SELECT {dialect.day_text('day')} AS period, day AS period_start, day AS period_end, clients_with_data, 1 AS days_with_data, "
        f"{STORED} FROM agg_days {f'WHERE day {days}' if days else ''}"), params)
    # A week's clients_with_data counts distinct clients over its pieces: the one figure not a sum.
    first, last = dialect.as_date("w.week"), dialect.plus_days("w.week", 6)
    insert_rows(db, "overall_weekly", "clients_with_data", (
        f"SELECT w.week AS period, {first} AS period_start, {last} AS period_end, "
        f"(SELECT COUNT(DISTINCT client_id) FROM agg_client_pieces p WHERE p.piece BETWEEN {first} AND {last}) "
        f"AS clients_with_data, w.days AS days_with_data, {STORED} "
        f"FROM (SELECT {week_key(dialect)} AS week, COUNT(*) AS days, {ADDED} FROM agg_days GROUP BY 1) AS w "
        f"{f'WHERE w.week {weeks}' if weeks else ''}"), params)
