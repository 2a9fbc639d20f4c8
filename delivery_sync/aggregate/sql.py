"""The named SQL of sums and ratios that a rollup row holds, the same whether summed from raw
rows (the reports' raw path) or from partial sums; and the names of the rollup tables.

Written for both engines: `DOUBLE PRECISION` and `BIGINT` (SQLite reads them as REAL and
INTEGER), `CASE` for the larger of two values, a name for every subquery; calendar arithmetic
comes from the connection's `Dialect`.
"""

from __future__ import annotations

import re

from ..dialect import SQLITE, Dialect
from ..metrics import AMOUNT_METRICS, METRICS

# Rolling periods ending at the as-of date, inclusive.
ROLLING_PERIODS = {"last_7d": 7, "last_30d": 30, "last_90d": 90, "last_365d": 365}


def _sum(metric: str) -> str:
    # Cents as integers: an exact sum whatever the row order; NULL when every value is NULL.
    # (PostgreSQL's ROUND of a float breaks an exact tie, x.xx5 in binary, to even: rupiah
    # amounts with two decimals never are one.)
    if metric in AMOUNT_METRICS:
        return f"CAST(SUM(CAST(ROUND({metric} * 100) AS BIGINT)) AS DOUBLE PRECISION) / 100 AS {metric}"
    return f"SUM({metric}) AS {metric}"


def _plus(*columns: str) -> str:
    """Sum of columns, NULLs as 0, but NULL when every one is NULL (a platform a client does not use)."""
    all_null = " AND ".join(f"{c} IS NULL" for c in columns)
    total = " + ".join(f"COALESCE({c}, 0)" for c in columns)
    return f"(CASE WHEN {all_null} THEN NULL ELSE {total} END)"


def _ratio(numerator: str, denominator: str) -> str:
    return f"CAST({numerator} AS DOUBLE PRECISION) / NULLIF({denominator}, 0)"


# Weighted ratios over sums (or over one day's values), NULL on a zero denominator (docs/reference.md, Tables).
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


def metric_sums(dialect: Dialect = SQLITE) -> str:
    """Every metric summed, named as the metric; a count's sum an integer on `dialect`'s engine
    (PostgreSQL's SUM of BIGINTs is NUMERIC, read as Decimal and made int value by value; in a
    UNION with stored BIGINT columns, theirs too)."""
    return ",\n       ".join(_sum(m) if m in AMOUNT_METRICS else f"{dialect.counted(f'SUM({m})')} AS {m}" for m in METRICS)


SUMS = metric_sums()


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
    return f"SELECT {', '.join(columns)},\n       {ratios}\nFROM ({sums_sql}) AS sums"


def period_bounds(by: str, day: str = "stat_date", dialect: Dialect = SQLITE) -> tuple[str, str, str]:
    """SQL for the period of the date column `day`, and for the first and last day of `period`."""
    key = {"day": day, "week": dialect.day_text(dialect.week_start(day)), "month": dialect.month_key(day)}[by]
    period = dialect.as_date("period")
    first = {"day": period, "week": period, "month": dialect.month_first("period")}[by]
    last = {"day": period, "week": dialect.plus_days("period", 6), "month": dialect.month_last("period")}[by]
    return key, first, last


def period_sums(by: str, rows: str, dialect: Dialect = SQLITE) -> str:
    """Sums per day, Monday-started week or month of the `rows` clause, each period clipped to the window."""
    key, first, last = period_bounds(by, dialect=dialect)
    return f"""
SELECT period, CASE WHEN {first} > :start THEN {first} ELSE :start END AS period_start,
       CASE WHEN {last} < :end THEN {last} ELSE :end END AS period_end,
       clients_with_data, days_with_data, {', '.join(METRICS)}
FROM (SELECT {key} AS period, COUNT(DISTINCT client_id) AS clients_with_data,
             COUNT(DISTINCT stat_date) AS days_with_data,
             {SUMS}
      {rows}
      GROUP BY period) AS periods"""


# Calendar periods finer than a month, stored beside the month rollups so `query totals --by
# day|week` reads a few hundred rows instead of summing every client-day: one row per day and
# per Monday-started week with data, same columns as overall_aggregates.
FINE_TABLES = {"day": "overall_daily", "week": "overall_weekly"}
EDGE_CLIENTS = "agg_edge_clients"
# Per client with data in a base window (`movers --compare previous|year`) of a rolling period
# ending at the as-of date: the period's sums (NULL without data) beside the base window's
# (`base_<metric>`), in whole cents as the partial sums, and the client's last day of data; keyed
# by (period_start, period_end, base_start, base_end, client_id): across 29 February a 365-day
# period's previous and year-earlier windows start on one day and end on two. So movers of a
# stored period ranks its clients in one pass over one table, in SQL, instead of reading two
# windows of 10,000 rows.
WINDOW_PAIRS = "agg_window_pairs"
# Per client with data, its last day of data: who stopped sending data, without a probe a client.
LAST_DAYS = "agg_client_last_days"

CLIENT_COLUMNS = ["client_id", "days_with_data", *METRICS]
OVERALL_COLUMNS = ["clients_with_data", "days_with_data", *METRICS]
PERIOD_COLUMNS = ["period", "period_start", "period_end", *OVERALL_COLUMNS]


# --- partial sums ------------------------------------------------------------------------------
# Kept in the replica beside the rollups, amounts in whole cents, written in the same transaction:
# - agg_client_pieces: per client and piece, a piece being a Monday-started week cut at month
#   ends (so both every week and every month is a union of whole pieces);
# - agg_client_months: per client and month (the sum of its pieces);
# - agg_days: per day, all clients.
# Every rollup is a sum of partial sums (of raw rows only at the ragged edges of rolling periods,
# at most 6 days each side): integers, so exactly the numbers CLIENT_SUMS / OVERALL_SUMS /
# period_sums give on the raw rows, and NULL exactly when every value is NULL. The one row of
# agg_parts_run names the aggregate run that last brought them up to date.

PARTS_TABLES = ("agg_client_pieces", "agg_client_months", "agg_days", "agg_parts_run")


def id_list(clients: list[int]) -> str:
    """Client ids as an SQL list, `3, 17`: integers only, so nothing else can reach the SQL."""
    return ", ".join(str(int(c)) for c in clients)


def cents(metric: str, alias: str = "") -> str:
    """`metric` of the rows `alias` in whole cents (an amount) or as it is (a count)."""
    column = f"{alias}.{metric}" if alias else metric
    return f"CAST(ROUND({column} * 100) AS BIGINT)" if metric in AMOUNT_METRICS else column


def cents_of(alias: str) -> str:
    """Every metric of the rows `alias` summed in cents, named as the metric."""
    return ", ".join(f"SUM({cents(m, alias)}) AS {m}" for m in METRICS)


def rupiah(cents_sql: str) -> str:
    """An amount in whole cents back in rupiah, a float: the value CLIENT_SUMS gives."""
    return f"CAST({cents_sql} AS DOUBLE PRECISION) / 100"


_METRIC_NAME = re.compile(r"\b(" + "|".join(METRICS) + r")\b")


def inputs_of(figure: str) -> set[str]:
    """The metrics `figure` (a metric or a ratio of metrics) is computed from."""
    return set(_METRIC_NAME.findall(RATIOS[figure])) if figure in RATIOS else {figure}


def value_of(figure: str, dialect: Dialect = SQLITE, *, in_cents: bool = False, prefix: str = "") -> str:
    """SQL of `figure` (a metric, a ratio of metrics, or another count such as days_with_data)
    over per-client sums in whole cents named `prefix` + metric: the number CLIENT_SUMS gives, an
    amount in rupiah (with `in_cents`, an amount `figure` stays in whole cents, an integer), a
    count an integer on `dialect`'s engine, a ratio of those."""
    def column(metric: str) -> str:
        name = prefix + metric
        if metric in AMOUNT_METRICS and not (in_cents and metric == figure):
            return f"({rupiah(name)})"
        return dialect.counted(name)  # a sum of integers (cents or a count): an integer, not PostgreSQL's NUMERIC

    if figure in RATIOS:
        return _METRIC_NAME.sub(lambda found: column(found.group(1)), RATIOS[figure])
    return column(figure)


PLAIN = ", ".join(METRICS)
ADDED = ", ".join(f"SUM({m}) AS {m}" for m in METRICS)
# Partial sums as the rollups store them: amounts back in rupiah.
STORED = ", ".join(f"{rupiah(m)} AS {m}" if m in AMOUNT_METRICS else m for m in METRICS)
SUMMED = ["days_with_data", *METRICS]
