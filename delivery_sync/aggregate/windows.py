"""Any window of days as a sum of partial sums: whole months and pieces from the partial-sum
tables, raw rows only at the edges; read by the reports and by the rolling periods."""

from __future__ import annotations

from datetime import date

from ..metrics import AMOUNT_METRICS, METRICS
from .pieces import cover, piece_span
from .sql import STORED, SUMMED, cents, id_list


def window_parts(start: date, end: date, clients: list[int] | None = None, columns: list[str] = SUMMED) -> tuple[str, dict]:
    """SQL of per-client partial sums over [start, end] (client_id and `columns`, by default
    days_with_data and every metric; amounts in whole cents), and its parameters (named `w_*`,
    so they mix with a caller's): the sums of `window_part_list`."""
    parts, params = window_part_list(start, end, clients, columns)
    return added_per_client(parts, columns), params


def window_part_list(start: date, end: date, clients: list[int] | None = None, columns: list[str] = SUMMED) -> tuple[list[str], dict]:
    """The SELECTs of partial-sum rows (client_id and `columns`) that together cover [start, end]
    once, and their parameters (named `w_*`).

    The whole months inside the window come from agg_client_months, the whole pieces left from
    agg_client_pieces, the days at either edge (at most 6 each side) from the raw rows: integer
    sums, so exactly the sums CLIENT_SUMS gives on the raw rows. A span of one month, one piece
    or up to two days is read by its key's index; a longer one client by client. With `clients`,
    only those, read by the (client_id, ...) keys of all three tables.
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
            if several(a, b):
                # Client by client along the (client_id, key) index, where a client's rows lie
                # together, summed as they come: by the key's own index every row is on another
                # page and then sorted (2-3x slower at 10,000 clients). Rows exist only for
                # listed clients, who are never deleted.
                sums = ", ".join(_per_client_sum(c, raw) for c in columns)
                only = f" AND c.id IN ({ids})" if clients is not None else ""
                parts.append(f"SELECT c.id AS client_id, {sums} FROM clients AS c CROSS JOIN {table} AS p "
                             f"ON p.client_id = c.id AND p.{span}{only} GROUP BY c.id")
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
    return f"SELECT client_id, {added} FROM ({' UNION ALL '.join(parts)}) GROUP BY client_id"


def client_window_sums(start: date, end: date, clients: list[int] | None = None) -> tuple[str, dict]:
    """`window_parts` with amounts back in rupiah: the columns and numbers of CLIENT_SUMS."""
    sql, params = window_parts(start, end, clients)
    return f"SELECT client_id, days_with_data, {STORED} FROM ({sql})", params


def window_ranking(start: date, end: date, metric: str) -> tuple[str, dict]:
    """SQL of the ids of the `:limit` clients with the largest sum of `metric` over [start, end],
    in `query top`'s order (NULL sums last, ties by client id), and its parameters.

    It sums the one metric, in cents as `window_parts` does, so it ranks exactly as the sums of
    every column would, at a fraction of their cost.
    """
    sql, params = window_parts(start, end, columns=[metric])
    return f"SELECT client_id FROM ({sql}) ORDER BY {metric} IS NULL, {metric} DESC, client_id LIMIT :limit", params


def clients_with_data(start: str, end: str) -> str:
    """SQL of the number of clients with a row between the days `start` and `end` (SQL
    expressions): one probe of the (client_id, stat_date) index per client, as rows exist only
    for clients the remote listed (about 1.5 us a client)."""
    return (f"(SELECT COUNT(*) FROM clients c WHERE EXISTS ("
            f"SELECT 1 FROM client_stats s WHERE s.client_id = c.id AND s.stat_date BETWEEN {start} AND {end}))")


# All clients over [:start, :end] from the per-day partial sums, with OVERALL_SUMS's columns and
# numbers (no row when the window is empty).
OVERALL_DAY_SUMS = f"""
SELECT {clients_with_data(":start", ":end")} AS clients_with_data,
       COUNT(*) AS days_with_data,
       {", ".join(f"SUM({m}) / 100.0 AS {m}" if m in AMOUNT_METRICS else f"SUM({m}) AS {m}" for m in METRICS)}
FROM agg_days
WHERE day BETWEEN :start AND :end
HAVING COUNT(*) > 0"""
