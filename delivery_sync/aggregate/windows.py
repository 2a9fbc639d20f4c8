"""Any window of days as a sum of partial sums: whole months and pieces from the partial-sum
tables, raw rows only at the edges; read by the reports and by the rolling periods."""

from __future__ import annotations

from datetime import date, timedelta

from ..days import Window, month_end
from ..dialect import SQLITE, Dialect
from ..metrics import AMOUNT_METRICS, METRICS
from .pieces import cover, piece_span
from .sql import STORED, SUMMED, cents, id_list, inputs_of, rupiah, value_of


def window_parts(start: date, end: date, clients: list[int] | None = None, columns: list[str] = SUMMED,
                 dialect: Dialect = SQLITE) -> tuple[str, dict]:
    """SQL of per-client partial sums over [start, end] (client_id and `columns`, by default
    days_with_data and every metric; amounts in whole cents), and its parameters (named `w_*`,
    so they mix with a caller's): the sums of `window_part_list`."""
    parts, params = window_part_list(start, end, clients, columns, dialect)
    return added_per_client(parts, columns), params


def window_part_list(start: date, end: date, clients: list[int] | None = None, columns: list[str] = SUMMED,
                     dialect: Dialect = SQLITE) -> tuple[list[str], dict]:
    """The SELECTs of partial-sum rows (client_id and `columns`) that together cover [start, end]
    once, and their parameters (named `w_*`).

    The whole months inside the window come from agg_client_months, the whole pieces left from
    agg_client_pieces, the days at either edge (at most 6 each side) from the raw rows: integer
    sums, so exactly the sums CLIENT_SUMS gives on the raw rows. Every span is read by its key
    (stat_date, piece or month), whatever its length: on SQLite from the key's index alone, which
    holds every sum after the key, so that the rows of a day, piece or month of every client lie
    side by side; on PostgreSQL the stat_date index holds them too, and the partial sums lie in
    key order in their tables. With `clients`, only those: a span of one month, one piece or up
    to two days by its key's index, a longer one client by client along the (client_id, ...)
    keys of the three tables.
    """
    months, pieces, days = cover(start, end)
    sources = (  # spans, table, key, key width, does a span hold several rows per client?
        (months, "agg_client_months", "month", 7, lambda a, b: a.strftime("%Y-%m") != b.strftime("%Y-%m")),
        (pieces, "agg_client_pieces", "piece", 10, lambda a, b: piece_span(a)[1] < b),
        (days, "client_stats", "stat_date", 10, lambda a, b: (b - a).days >= 2),
    )
    ids = "" if clients is None else id_list(clients)
    parts, params = [], {}
    for spans, table, key, width, several in sources:
        raw = table == "client_stats"
        for a, b in spans:
            i = len(parts)
            params.update({f"w_a{i}": a.isoformat()[:width], f"w_b{i}": b.isoformat()[:width]})
            span = f"{key} BETWEEN :w_a{i} AND :w_b{i}"
            if clients is not None and several(a, b):
                # SQLite: client by client along the (client_id, key) index, where a client's rows
                # lie together, summed as they come. Rows exist only for listed clients, who are
                # never deleted. PostgreSQL: see the dialect.
                sums = ", ".join(_per_client_sum(c, raw) for c in columns)
                if dialect.sums_client_by_client:
                    parts.append(f"SELECT c.id AS client_id, {sums} FROM clients AS c CROSS JOIN {table} AS p "
                                 f"ON p.client_id = c.id AND p.{span} AND c.id IN ({ids}) GROUP BY c.id")
                else:
                    parts.append(f"SELECT p.client_id, {sums} FROM {table} AS p WHERE p.{span} AND p.client_id IN ({ids}) GROUP BY p.client_id")
            else:
                values = ", ".join(("1 AS days_with_data" if c == "days_with_data" else f"{cents(c)} AS {c}") if raw else c for c in columns)
                only = f" AND client_id IN ({ids})" if clients is not None else ""
                parts.append(f"SELECT client_id, {values} FROM {table} WHERE {span}{only}")
    return parts, params


def _per_client_sum(column: str, raw: bool) -> str:
    """One client's sum of `column` over its rows `p` of a partial-sum table, or of client_stats (`raw`)."""
    if not raw:
        return f"SUM(p.{column}) AS {column}"
    return "COUNT(*) AS days_with_data" if column == "days_with_data" else f"SUM({cents(column, 'p')}) AS {column}"


def added_per_client(parts: list[str], columns: list[str] = SUMMED) -> str:
    """The per-client sums of `columns` over the partial-sum rows (client_id, *columns) of `parts`."""
    added = ", ".join(f"SUM({c}) AS {c}" for c in columns)
    return f"SELECT client_id, {added} FROM ({' UNION ALL '.join(parts)}) AS parts GROUP BY client_id"


def client_window_sums(start: date, end: date, clients: list[int] | None = None, dialect: Dialect = SQLITE) -> tuple[str, dict]:
    """`window_parts` with amounts back in rupiah: the columns and numbers of CLIENT_SUMS."""
    sql, params = window_parts(start, end, clients, dialect=dialect)
    return f"SELECT client_id, days_with_data, {STORED} FROM ({sql}) AS cents", params


def window_values(start: date, end: date, metric: str, extra: tuple[str, ...] = (), dialect: Dialect = SQLITE, *,
                  in_cents: bool = False) -> tuple[str, dict]:
    """SQL of per-client (client_id, `metric`, *`extra`) over [start, end] from the partial sums,
    and its parameters: a metric's sum or a ratio of sums, with CLIENT_SUMS's numbers.

    Only the metrics `metric` and `extra` need are summed (a ratio's numerator and denominator),
    at a fraction of the cost of summing every column, in whole cents and then in rupiah exactly
    as `client_window_sums` gives them: so the values, and the order they rank in, are those of
    the full sums. A ratio's inputs are among the columns too; `extra` may ask for days_with_data.
    With `in_cents`, an amount `metric` stays in whole cents, an integer (a ratio's amounts are still
    turned into rupiah first).
    """
    inputs = [m for m in SUMMED if m in inputs_of(metric) | set(extra)]
    sql, params = window_parts(start, end, columns=inputs, dialect=dialect)
    figures = [f"{value_of(metric, dialect, in_cents=in_cents)} AS {metric}"]
    figures += [f"{value_of(m, dialect)} AS {m}" for m in inputs if m != metric]
    return f"SELECT client_id, {', '.join(figures)} FROM ({sql}) AS cents", params


def window_ranking(start: date, end: date, metric: str, *, ascending: bool = False, min_orders: int | None = None,
                   active_only: bool = False, dialect: Dialect = SQLITE) -> tuple[str, dict]:
    """SQL of the ids of the `:limit` clients with the largest (`ascending`: smallest) `metric`
    over [start, end], in `query top`'s order (NULL last, ties by client id), and its parameters.

    `metric` is a metric's sum or a ratio (see `window_values`); `min_orders` keeps clients with
    at least that many orders, `active_only` those the remote lists as active.
    """
    sql, params = window_values(start, end, metric, ("total_orders",) if min_orders is not None else (), dialect)
    filters = []
    if min_orders is not None:
        filters.append(f"total_orders >= {int(min_orders)}")
    if active_only:
        filters.append("client_id IN (SELECT id FROM clients WHERE active = 1)")
    where = f" WHERE {' AND '.join(filters)}" if filters else ""
    order = "ASC" if ascending else "DESC"
    return f"SELECT client_id FROM ({sql}) AS ranked{where} ORDER BY {metric} IS NULL, {metric} {order}, client_id LIMIT :limit", params


def data_span(conn) -> tuple[date, date] | None:
    """The replica's first and last day of data, or None when it holds no row: two probes of the
    stat_date index (`conn` of either engine, whose dates may come back as text)."""
    # Two subqueries: SQLite reads one end of the date index for a lone MIN or MAX, not for both.
    first, last = conn.execute("SELECT (SELECT MIN(stat_date) FROM client_stats), (SELECT MAX(stat_date) FROM client_stats)").fetchone()
    return None if first is None else (date.fromisoformat(str(first)), date.fromisoformat(str(last)))


def trimmed(window: Window, first: date, last: date) -> Window | None:
    """The window less the days before `first` (the replica's first day of data) and after `last`
    (its last), or None when nothing is left: they add nothing to any sum, yet each span of
    months, pieces or days costs a read of every client's rows of it, and a year-earlier base on
    a year of history is mostly such days. Any day at or before the first day of data (at or
    after the last) sums the same: each cut falls on that day, or on its piece's or month's edge
    beyond it, whichever reads fewer rows per client. A window ending on the last day thus reads its month as one
    stored row, not its days so far one by one."""
    if window.start > last or window.end < first:
        return None
    starts = {max(window.start, first), *((first.replace(day=1), piece_span(first)[0]) if window.start <= first else ())}
    ends = {min(window.end, last), *((month_end(last), piece_span(last)[1]) if window.end >= last else ())}
    return min((Window(a, b) for a, b in sorted((a, b) for a in starts for b in ends)), key=_rows_per_client)


def _rows_per_client(window: Window) -> int:
    """How many partial-sum rows per client summing the window reads: months, pieces, raw days."""
    months, pieces, days = cover(window.start, window.end)
    rows = sum((b.year - a.year) * 12 + b.month - a.month + 1 for a, b in months)
    for a, b in pieces:
        while a <= b:
            rows, a = rows + 1, piece_span(a)[1] + timedelta(days=1)
    return rows + sum((b - a).days + 1 for a, b in days)


def clients_with_data(start: str, end: str, most_in_a_day: str) -> str:
    """SQL of the number of clients with a row between the days `start` and `end` (SQL
    expressions), given `most_in_a_day`, SQL of the most clients with a row on one day of that
    span (from the per-day partial sums).

    When that day had every listed client, they all have data in the span: no index is probed
    (15-20 ms at 10,000 clients, 0.3 s for a build's 8 edge spans on PostgreSQL). Otherwise one
    probe of the (client_id, stat_date) index per client, as rows exist only for clients the
    remote listed (about 1.5 us a client).
    """
    return (f"(CASE WHEN {most_in_a_day} = (SELECT COUNT(*) FROM clients) THEN {most_in_a_day} "
            f"ELSE (SELECT COUNT(*) FROM clients c WHERE EXISTS ("
            f"SELECT 1 FROM client_stats s WHERE s.client_id = c.id AND s.stat_date BETWEEN {start} AND {end})) END)")


# All clients over [:start, :end] from the per-day partial sums, with OVERALL_SUMS's columns and
# numbers (no row when the window is empty).
OVERALL_DAY_SUMS = f"""
SELECT {clients_with_data(":start", ":end", "MAX(clients_with_data)")} AS clients_with_data,
       COUNT(*) AS days_with_data,
       {", ".join(f"{rupiah(f'SUM({m})')} AS {m}" if m in AMOUNT_METRICS else f"SUM({m}) AS {m}" for m in METRICS)}
FROM agg_days
WHERE day BETWEEN :start AND :end
HAVING COUNT(*) > 0"""
