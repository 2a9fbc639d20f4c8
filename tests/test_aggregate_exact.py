"""The rollup rebuild (partial sums in cents, added up) gives bit for bit what the SQL of the
raw-row path (CLIENT_SUMS, OVERALL_SUMS, period_sums) gives for every period, for any as-of date;
and the reports that read those rollups give the raw path's numbers for any window."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delivery_sync.aggregate.run import aggregate_locked
from delivery_sync.aggregate.sql import (
    CLIENT_COLUMNS,
    CLIENT_SUMS,
    FINE_TABLES,
    OVERALL_COLUMNS,
    OVERALL_SUMS,
    PERIOD_COLUMNS,
    RATIOS,
    ROLLING_PERIODS,
    period_sums,
    with_ratios,
)
from delivery_sync.config import Settings
from delivery_sync.days import Window, base_window
from delivery_sync.demo_source import DemoSource
from delivery_sync.dialect import SQLITE, Dialect
from delivery_sync.metrics import AMOUNT_METRICS, METRICS
from delivery_sync.replica import open_store
from delivery_sync.sync import SyncOptions, run_sync

DAYS = 200
PAIRS_COLUMNS = ["period_start", "period_end", "base_start", "base_end", "client_id", "last_day", *METRICS, *(f"base_{m}" for m in METRICS)]


@pytest.fixture(scope="module")
def synced(tmp_path_factory) -> tuple[Path, date]:
    """A replica of 12 demo clients over DAYS days (some on one platform only), not yet aggregated."""
    path = tmp_path_factory.mktemp("exact") / "replica.db"
    with DemoSource(clients=12) as demo:
        today = demo.today()
        settings = Settings(database=path, source={"url": demo.url, "min_interval": 0, "batch": "never"})
        result = run_sync(settings, SyncOptions(Window(today - timedelta(days=DAYS - 1), today), aggregate=False))
    assert result.status == "ok"
    return path, today


def exact(value):
    """A value with its type, floats by repr: 1 == 1.0 and 0.0 == -0.0 in Python, not here."""
    return (type(value).__name__, repr(value) if isinstance(value, float) else value)


def rows(conn: sqlite3.Connection, sql: str, params: dict, columns: list[str]) -> set[tuple]:
    return {tuple(exact(row[c]) for c in columns) for row in conn.execute(sql, params)}


def raw_path(conn: sqlite3.Connection, as_of: date, dialect: Dialect = SQLITE) -> dict[str, set[tuple]]:
    """Every rollup row as the raw-row SQL computes it, keyed as the rollup tables store them
    (`conn` a connection to a replica of `dialect`'s engine)."""
    months = [m for (m,) in conn.execute(f"SELECT DISTINCT {dialect.month_key('stat_date')} FROM client_stats")]
    windows = {name: (as_of - timedelta(days=days - 1), as_of) for name, days in ROLLING_PERIODS.items()}
    for month in months:
        first = date.fromisoformat(f"{month}-01")
        windows[month] = (first, (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1))
    client_sql, overall_sql = with_ratios(CLIENT_SUMS, CLIENT_COLUMNS), with_ratios(OVERALL_SUMS, OVERALL_COLUMNS)
    expected: dict[str, set[tuple]] = {"client_aggregates": set(), "overall_aggregates": set()}
    for period, (start, end) in windows.items():
        params = {"start": start.isoformat(), "end": end.isoformat()}
        head = (exact(period), exact(start.isoformat()), exact(end.isoformat()))
        expected["client_aggregates"] |= {head + r for r in rows(conn, client_sql, params, [*CLIENT_COLUMNS, *RATIOS])}
        expected["overall_aggregates"] |= {head + r for r in rows(conn, overall_sql, params, [*OVERALL_COLUMNS, *RATIOS])}
    for by, table in FINE_TABLES.items():
        sql = with_ratios(period_sums(by, "FROM client_stats", dialect), PERIOD_COLUMNS)
        expected[table] = rows(conn, sql, {"start": "0001-01-01", "end": "9999-12-31"}, [*PERIOD_COLUMNS, *RATIOS])
    # Every rolling period beside each of its previous and year-earlier windows, per client with
    # data in the base window, in whole cents, with the client's last day of data.
    in_cents = ", ".join(f"SUM(CAST(ROUND({m} * 100) AS BIGINT)) AS {m}" if m in AMOUNT_METRICS else f"SUM({m}) AS {m}" for m in METRICS)
    rolling = [Window(as_of - timedelta(days=days - 1), as_of) for days in ROLLING_PERIODS.values()]
    pairs = {(w, base_window(w, compare)) for w in rolling for compare in ("previous", "year")}
    assert len(pairs) >= 7  # a 365-day period's previous window is its year-earlier one, but across 29 February
    sums = {}
    for w in {w for pair in pairs for w in pair}:
        start, end = dialect.as_date(":start"), dialect.as_date(":end")
        sql = f"SELECT client_id, {in_cents} FROM client_stats WHERE stat_date BETWEEN {start} AND {end} GROUP BY client_id"
        sums[w] = {row["client_id"]: [row[m] for m in METRICS] for row in conn.execute(sql, w.params())}
    last = {row["client_id"]: row["last_day"]
            for row in conn.execute("SELECT client_id, MAX(stat_date) AS last_day FROM client_stats GROUP BY client_id")}
    expected["agg_window_pairs"] = {
        tuple(exact(v) for v in (w.start.isoformat(), w.end.isoformat(), b.start.isoformat(), b.end.isoformat(), client_id, last[client_id],
                                 *sums[w].get(client_id, [None] * len(METRICS)), *then))
        for w, b in pairs for client_id, then in sums[b].items()}
    expected["agg_client_last_days"] = {(exact(client_id), exact(day)) for client_id, day in last.items()}
    return expected


@contextmanager
def aggregated(synced: tuple[Path, date], end_offset: int, days: int):
    """The replica aggregated as of its today, opened read-only, and the window of `days` days
    ending `end_offset` days after today."""
    from delivery_sync import readonly

    path, today = synced
    aggregate_locked(open_store(path), today)
    end = today + timedelta(days=end_offset)
    conn = readonly.open_readonly(path)
    try:
        yield conn, Window(end - timedelta(days=days - 1), end)
    finally:
        conn.close()


def stored(conn: sqlite3.Connection) -> dict[str, set[tuple]]:
    head = ["period", "period_start", "period_end"]
    got = {
        "client_aggregates": rows(conn, "SELECT * FROM client_aggregates", {}, [*head, *CLIENT_COLUMNS, *RATIOS]),
        "overall_aggregates": rows(conn, "SELECT * FROM overall_aggregates", {}, [*head, *OVERALL_COLUMNS, *RATIOS]),
    }
    for table in FINE_TABLES.values():
        got[table] = rows(conn, f"SELECT * FROM {table}", {}, [*PERIOD_COLUMNS, *RATIOS])
    got["agg_window_pairs"] = rows(conn, "SELECT * FROM agg_window_pairs", {}, PAIRS_COLUMNS)
    got["agg_client_last_days"] = rows(conn, "SELECT * FROM agg_client_last_days", {}, ["client_id", "last_day"])
    return got


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=-DAYS - 40, max_value=40))
def test_rollups_equal_the_raw_path_bit_for_bit_for_any_as_of(synced, offset):
    path, today = synced
    as_of = today + timedelta(days=offset)
    assert aggregate_locked(open_store(path), as_of).status == "ok"
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        expected, got = raw_path(conn, as_of), stored(conn)
    finally:
        conn.close()
    for table in expected:
        assert got[table] == expected[table], table
    assert len(got["client_aggregates"]) > 12  # months at least: the comparison is not vacuous


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=-DAYS - 20, max_value=10), st.integers(min_value=1, max_value=DAYS + 30), st.integers(1, 12))
def test_reports_of_any_window_equal_the_raw_path_bit_for_bit(synced, end_offset, days, client_id):
    """`query client`, `query top` and `query totals` (with and without --by) read rollups and
    partial sums plus raw edges: the numbers must be those of CLIENT_SUMS, OVERALL_SUMS and
    period_sums over the raw rows, type for type."""
    from delivery_sync import reports

    with aggregated(synced, end_offset, days) as (conn, window):
        raw = {r["client_id"]: r for r in conn.execute(with_ratios(CLIENT_SUMS, CLIENT_COLUMNS), window.params())}
        columns = [*CLIENT_COLUMNS, *RATIOS]
        got = reports.client(conn, window, client_id).rows[0]
        if client_id in raw:
            assert [exact(got[c]) for c in columns] == [exact(raw[client_id][c]) for c in columns]
        else:
            assert got["days_with_data"] == 0 and got["total_sales"] is None
        top = reports.top(conn, window, limit=20).rows
        assert {r["client_id"]: [exact(r[c]) for c in columns] for r in top} == {
            cid: [exact(r[c]) for c in columns] for cid, r in raw.items()
        }
        overall = [*OVERALL_COLUMNS, *RATIOS]
        raw_totals = conn.execute(with_ratios(OVERALL_SUMS, OVERALL_COLUMNS), window.params()).fetchone()
        got_totals = reports.totals(conn, window).rows[0]
        if raw_totals is None:
            assert got_totals["days_with_data"] == 0 and got_totals["clients_with_data"] == 0 and got_totals["total_sales"] is None
        else:
            assert [exact(got_totals[c]) for c in overall] == [exact(raw_totals[c]) for c in overall]
        for by in ("day", "week", "month"):
            periods = [*PERIOD_COLUMNS, *RATIOS]
            sql = with_ratios(period_sums(by, "FROM client_stats WHERE stat_date BETWEEN :start AND :end"), PERIOD_COLUMNS)
            expected = [[exact(r[c]) for c in periods] for r in conn.execute(sql + " ORDER BY period", window.params())]
            assert [[exact(r[c]) for c in periods] for r in reports.totals(conn, window, by).rows] == expected, by


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=-DAYS - 20, max_value=10), st.integers(min_value=1, max_value=DAYS + 30),
       st.sampled_from(METRICS), st.integers(1, 13))
def test_top_ranks_and_cuts_as_the_raw_path_for_any_window_metric_and_limit(synced, end_offset, days, metric, limit):
    """`query top` ranks by the one metric first, then sums every column of the clients it kept:
    order, cut-off (ties by client id, NULL sums last: some clients sell on one platform only, some
    spend nothing on ads) and numbers must be those of the raw path's ORDER BY ... LIMIT."""
    from delivery_sync import reports

    with aggregated(synced, end_offset, days) as (conn, window):
        columns = [*CLIENT_COLUMNS, *RATIOS]
        raw_sql = with_ratios(CLIENT_SUMS, CLIENT_COLUMNS) + f" ORDER BY {metric} IS NULL, {metric} DESC, client_id LIMIT :limit"
        expected = [[exact(r[c]) for c in columns] for r in conn.execute(raw_sql, {**window.params(), "limit": limit})]
        got = [[exact(r[c]) for c in columns] for r in reports.top(conn, window, by=metric, limit=limit).rows]
        assert got == expected


def test_a_window_is_read_from_the_key_indexes_alone_whatever_it_sums(synced):
    """A window of all clients reads its raw days, pieces and months from the key indexes alone
    (the stat_date index, the pieces' and months'), whatever the spans' lengths and whatever it
    sums (a ratio of four amounts, a platform's count, the headline figures), never the tables;
    a window of a few listed clients reads a span of several rows client by client. All give the
    raw path's numbers."""
    from delivery_sync.aggregate.pieces import cover
    from delivery_sync.aggregate.windows import client_window_sums, window_values

    _, today = synced

    def several_everywhere(end: date) -> bool:  # a run of 3 raw days and a span of 2 pieces or more
        months, pieces, days = cover(end - timedelta(days=44), end)
        return any((b - a).days >= 2 for a, b in days) and any((b - a).days >= 7 for a, b in pieces)

    end = next(today - timedelta(days=back) for back in range(90) if several_everywhere(today - timedelta(days=back)))
    with aggregated(synced, (end - today).days, 45) as (conn, window):
        raw = {r["client_id"]: r for r in conn.execute(with_ratios(CLIENT_SUMS, CLIENT_COLUMNS), window.params())}
        for metric, extra in (("avg_order_value", ("days_with_data",)), ("total_sales", ()), ("grab_sales", ("days_with_data",)),
                              ("ads_roas", ()), ("gojek_fake_orders", ())):
            sql, params = window_values(window.start, window.end, metric, extra)
            reads = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params) if " USING " in r[3]]
            assert all("USING COVERING INDEX" in read for read in reads), reads
            assert {"idx_client_stats_stat_date", "agg_client_pieces_piece"} <= {read.split(" INDEX ")[1].split()[0] for read in reads}, reads
            got = {r["client_id"]: [exact(r[c]) for c in (metric, *extra)] for r in conn.execute(sql, params)}
            assert got == {c: [exact(r[c]) for c in (metric, *extra)] for c, r in raw.items()}, metric
        few = sorted(raw)[:2]
        sql, params = client_window_sums(window.start, window.end, few)
        reads = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params) if " USING " in r[3]]
        assert any("INDEX idx_client_stats_client_id_stat_date" in read for read in reads), reads
        got = {r["client_id"]: [exact(r[c]) for c in CLIENT_COLUMNS[1:]] for r in conn.execute(sql, params)}
        assert got == {c: [exact(raw[c][k]) for k in CLIENT_COLUMNS[1:]] for c in few}


def test_totals_by_week_and_month_of_every_stored_period_read_their_edges_clients_from_the_rollups(synced):
    """The partial weeks and months at the ends of each rolling period have their clients with
    data stored (a count of clients is not a sum): `totals --by` of a stored period reads them,
    and gives the raw path's rows."""
    from delivery_sync import reports

    _, today = synced
    with aggregated(synced, 0, 1) as (conn, _):
        stored = {(a, b): n for a, b, n in conn.execute("SELECT period_start, period_end, clients_with_data FROM agg_edge_clients")}
        read = set()
        for days in ROLLING_PERIODS.values():
            window = Window(today - timedelta(days=days - 1), today)
            for by in ("week", "month"):
                periods = [*PERIOD_COLUMNS, *RATIOS]
                sql = with_ratios(period_sums(by, "FROM client_stats WHERE stat_date BETWEEN :start AND :end"), PERIOD_COLUMNS)
                expected = [[exact(r[c]) for c in periods] for r in conn.execute(sql + " ORDER BY period", window.params())]
                rows = reports.totals(conn, window, by).rows
                assert [[exact(r[c]) for c in periods] for r in rows] == expected, (days, by)
                for edge in (rows[0], rows[-1]):
                    span = (edge["period_start"], edge["period_end"])
                    if span in stored:
                        assert stored[span] == edge["clients_with_data"]
                        read.add(span)
    # Every stored edge with data is an edge of a stored period (the month so far among them), and
    # is read; the 365-day period begins before this replica's first day, so its edges are empty.
    assert len(read) >= 5 and all(stored[span] == 0 for span in set(stored) - read)
