"""The query reports, in-process, against a replica synced from the demo remote over loopback, on
SQLite and on PostgreSQL (`both_engines("replica")`, tests/conftest.py).

Every number is checked against sums this file computes itself, in Python, from
the rows it loaded; the rollup path and the raw-rows path must agree exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import pytest
from conftest import dict_rows, execute_db, new_pg_database, replica_copy, store_of
from freezegun import freeze_time

from delivery_sync import readonly, reports
from delivery_sync.config import Settings
from delivery_sync.days import Window, resolve_window
from delivery_sync.demo_source import DemoSource
from delivery_sync.errors import QueryTimeout, ReadOnlyViolation, UsageError
from delivery_sync.metrics import AMOUNT_METRICS, METRICS
from delivery_sync.sync import SyncOptions, run_sync

# 04:00 UTC is noon on 10 March in Bali and still 9 March in Honolulu: "today" must follow source.timezone.
NOW = "2026-03-10 04:00:00"
TODAY = date(2026, 3, 10)
FIRST_DAY = date(2026, 1, 20)
CLIENTS = 8  # with seed 42: 3 is Grab-only without ads, 5 GoJek-only, 6 without ads, 7 has NULL totals
ZERO_DAY = {
    **{f"{p}_{m}": 0 for p in ("grab", "gojek") for m in ("orders", "new_customers", "fake_orders")},
    "grab_repeated_customers": 0, "gojek_returned_customers": 0, "total_orders": 0,
    **{f"{p}_{m}": "0.00" for p in ("grab", "gojek") for m in ("sales", "ads_spend", "ads_sales")}, "total_sales": "0.00",
}
EDGE_CASES = {
    # Cents across month boundaries: sums must be exact, whatever the order rows are read in.
    (2, "2026-01-31"): {"grab_sales": "1000000.05", "gojek_ads_sales": "0.10"},
    (2, "2026-02-01"): {"grab_sales": "0.10", "gojek_ads_spend": "0.07"},
    (2, "2026-02-28"): {"grab_sales": "33.33", "total_sales": "12345.67"},
    (2, "2026-03-01"): {"grab_sales": "-50000.00"},  # a refund: negative amounts are kept
    # Client 4 sells nothing for its last 7 days: every ratio of last_7d has a zero denominator.
    **{(4, (TODAY - timedelta(days=d)).isoformat()): ZERO_DAY for d in range(7)},
}
RATIOS = ["grab_ads_roas", "gojek_ads_roas", "ads_roas", "avg_order_value", "fake_order_rate",
          "new_customer_share", "ads_spend_share"]


def build_replica(path: Path, clients: int = CLIENTS, first_day: date = FIRST_DAY) -> Path:
    """Sync `first_day..TODAY` of `clients` demo clients (with EDGE_CASES) into `path`, then aggregate."""
    with freeze_time(NOW, tick=True), DemoSource(clients=clients) as demo:
        demo.faults.overrides.update(EDGE_CASES)
        settings = Settings(database=path, source={"url": demo.url, "min_interval": 0, "max_retries": 0})
        result = run_sync(settings, SyncOptions(Window(first_day, TODAY)))
    assert result.status == "ok" and result.aggregate.status == "ok"
    return path


@contextmanager
def built_replica(engine: str, folder: Path) -> Iterator[Path | str]:
    """`build_replica` on `engine`: a SQLite file in `folder`, or a new PostgreSQL database."""
    if engine == "sqlite":
        yield build_replica(folder / "replica.db")
        return
    with new_pg_database() as url:
        yield build_replica(url)


pytestmark = pytest.mark.both_engines("replica")


@pytest.fixture(scope="module")
def replica(request, tmp_path_factory) -> Iterator[Path | str]:
    """The module's synced and aggregated replica, on SQLite and then on PostgreSQL (`both_engines`)."""
    with built_replica(getattr(request, "param", "sqlite"), tmp_path_factory.mktemp("reports")) as database:
        yield database


@pytest.fixture(scope="module")
def raw_only(replica, tmp_path_factory) -> Iterator[Path | str]:
    """A copy whose rollups are not current (a sync is recorded as running), so reports read raw rows."""
    with replica_copy(replica, tmp_path_factory.mktemp("raw")) as copy:
        execute_db(copy, "INSERT INTO sync_runs(command, status, started_at) VALUES ('sync', 'running', '2026-03-10T04:00:00+00:00')")
        yield copy


@pytest.fixture
def conn(replica):
    connection = store_of(replica).open_reader()
    yield connection
    connection.close()


# --- what the reports must say, computed here from the raw rows -------------------------------------


def load_rows(database: Path | str) -> list[dict]:
    """Every client_stats row, as stored (either engine)."""
    return dict_rows(database, "SELECT * FROM client_stats")


def in_window(rows: list[dict], start: date, end: date) -> list[dict]:
    return [r for r in rows if start.isoformat() <= r["stat_date"] <= end.isoformat()]


def _plus(*values):
    return None if all(v is None for v in values) else sum(v or 0 for v in values)


def _ratio(numerator, denominator):
    return None if numerator is None or denominator is None or denominator == 0 else numerator / denominator


def expected_ratios(s: dict) -> dict:
    """The ratios of docs/reference.md from sums (or one day's values)."""
    return {
        "grab_ads_roas": _ratio(s["grab_ads_sales"], s["grab_ads_spend"]),
        "gojek_ads_roas": _ratio(s["gojek_ads_sales"], s["gojek_ads_spend"]),
        "ads_roas": _ratio(_plus(s["grab_ads_sales"], s["gojek_ads_sales"]), _plus(s["grab_ads_spend"], s["gojek_ads_spend"])),
        "avg_order_value": _ratio(s["total_sales"], s["total_orders"]),
        "fake_order_rate": _ratio(_plus(s["grab_fake_orders"], s["gojek_fake_orders"]), s["total_orders"]),
        "new_customer_share": _ratio(
            _plus(s["grab_new_customers"], s["gojek_new_customers"]),
            _plus(s["grab_new_customers"], s["grab_repeated_customers"], s["gojek_new_customers"], s["gojek_returned_customers"]),
        ),
        "ads_spend_share": _ratio(_plus(s["grab_ads_spend"], s["gojek_ads_spend"]), s["total_sales"]),
    }


def expected_sums(rows: list[dict]) -> dict:
    """Every metric summed (NULL when every value is NULL), then the ratios from those sums."""
    sums = {}
    for metric in METRICS:
        values = [r[metric] for r in rows if r[metric] is not None]
        sums[metric] = None if not values else math.fsum(values) if metric in AMOUNT_METRICS else sum(values)
    return {**sums, **expected_ratios(sums)}


def expected_clients(rows: list[dict], start: date, end: date) -> dict[int, dict]:
    """Per client with rows in the window: days_with_data, sums and ratios."""
    window = in_window(rows, start, end)
    out = {}
    for cid in sorted({r["client_id"] for r in window}):
        mine = [r for r in window if r["client_id"] == cid]
        out[cid] = {"client_id": cid, "days_with_data": len(mine), **expected_sums(mine)}
    return out


def expected_overall(rows: list[dict], start: date, end: date) -> dict | None:
    window = in_window(rows, start, end)
    if not window:
        return None
    return {
        "clients_with_data": len({r["client_id"] for r in window}),
        "days_with_data": len({r["stat_date"] for r in window}),
        **expected_sums(window),
    }


def assert_matches(actual: dict, expected: dict) -> None:
    """Every expected key: NULL stays NULL, integers exact, floats to 12 significant digits."""
    for key, want in expected.items():
        got = actual[key]
        if want is None or isinstance(want, (str, int)) and not isinstance(want, bool) and isinstance(got, int):
            assert got == want, f"{key}: {got!r} != {want!r}"
        else:
            assert got == pytest.approx(want, rel=1e-12, abs=1e-9), f"{key}: {got!r} != {want!r}"


# --- windows -----------------------------------------------------------------------------------------

WINDOWS = {
    "last_7d": Window(TODAY - timedelta(days=6), TODAY),
    "last_30d": Window(TODAY - timedelta(days=29), TODAY),
    "last_90d": Window(TODAY - timedelta(days=89), TODAY),
    "february": Window(date(2026, 2, 1), date(2026, 2, 28)),
    "across_months": Window(date(2026, 1, 25), date(2026, 3, 5)),
    "45_days": Window(TODAY - timedelta(days=44), TODAY),
    "one_day": Window(date(2026, 2, 28), date(2026, 2, 28)),
    "empty": Window(date(2025, 6, 1), date(2025, 6, 30)),
}


def test_resolve_window_counts_days_inclusively_and_refuses_nonsense():
    def days(*args):
        return resolve_window(TODAY, *args, flag="--days", default=30)

    assert days(None, None, None) == Window(TODAY - timedelta(days=29), TODAY)
    assert days(7, None, None).days == 7
    assert days(None, date(2026, 3, 1), None) == Window(date(2026, 3, 1), TODAY)
    for args in ((0, None, None), (-3, None, None), (7, date(2026, 3, 1), None), (None, None, TODAY),
                 (None, date(2026, 3, 5), date(2026, 3, 1))):
        with pytest.raises(UsageError):
            days(*args)


# --- top ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WINDOWS)
def test_top_ranks_every_client_with_sums_and_weighted_ratios(conn, replica, name):
    window = WINDOWS[name]
    expected = expected_clients(load_rows(replica), window.start, window.end)
    report = reports.top(conn, window, "total_sales", limit=100)
    assert [row["client_id"] for row in report.rows] == sorted(expected, key=lambda c: (-expected[c]["total_sales"], c))
    for row in report.rows:
        assert list(row) == report.columns
        assert (row["period_start"], row["period_end"]) == (window.start.isoformat(), window.end.isoformat())
        assert_matches(row, expected[row["client_id"]])
    assert all(row["name"] for row in report.rows)


def test_top_by_a_metric_some_clients_lack_puts_their_null_sums_last(conn, replica):
    window = WINDOWS["45_days"]
    expected = expected_clients(load_rows(replica), window.start, window.end)
    report = reports.top(conn, window, "gojek_orders", limit=5)
    with_gojek = sorted((c for c in expected if expected[c]["gojek_orders"] is not None), key=lambda c: (-expected[c]["gojek_orders"], c))
    assert [row["client_id"] for row in report.rows] == with_gojek[:5]
    everyone = reports.top(conn, window, "gojek_orders", limit=100).rows
    assert [row["client_id"] for row in everyone][-1] == 3 and everyone[-1]["gojek_orders"] is None  # Grab-only


def test_one_platform_and_zero_denominators_give_null_not_zero(conn, replica):
    rows = {row["client_id"]: row for row in reports.top(conn, WINDOWS["last_7d"], limit=100).rows}
    grab_only, gojek_only, idle = rows[3], rows[5], rows[4]
    assert grab_only["gojek_sales"] is None and grab_only["gojek_ads_roas"] is None
    assert grab_only["grab_ads_spend"] == 0 and grab_only["grab_ads_roas"] is None and grab_only["ads_roas"] is None
    assert gojek_only["grab_orders"] is None and gojek_only["ads_roas"] == pytest.approx(gojek_only["gojek_ads_roas"])
    assert idle["total_orders"] == 0 and idle["total_sales"] == 0
    assert all(idle[ratio] is None for ratio in RATIOS)


def test_top_refuses_unknown_metric_and_non_positive_limit(conn):
    for by, limit in (("revenue", 10), ("total_sales", 0), ("total_sales", -1)):
        with pytest.raises(UsageError):
            reports.top(conn, WINDOWS["last_7d"], by, limit)


# --- client ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["last_30d", "across_months", "one_day"])
def test_client_totals_are_one_row_matching_the_raw_rows(conn, replica, name):
    window = WINDOWS[name]
    expected = expected_clients(load_rows(replica), window.start, window.end)[2]
    report = reports.client(conn, window, 2)
    assert len(report.rows) == 1 and report.rows[0]["name"]
    assert_matches(report.rows[0], expected)


def test_client_cents_are_summed_exactly_across_month_boundaries(conn, replica):
    rows = [r for r in load_rows(replica) if r["client_id"] == 2 and "2026-01-31" <= r["stat_date"] <= "2026-03-01"]
    cents = sum(round(r["grab_sales"] * 100) for r in rows)
    got = reports.client(conn, Window(date(2026, 1, 31), date(2026, 3, 1)), 2).rows[0]["grab_sales"]
    assert got == cents / 100


def test_client_daily_rows_are_the_stored_rows_with_their_own_ratios(conn, replica):
    window = WINDOWS["last_7d"]
    stored = sorted(in_window([r for r in load_rows(replica) if r["client_id"] == 5], window.start, window.end), key=lambda r: r["stat_date"])
    report = reports.client(conn, window, 5, daily=True)
    assert [row["stat_date"] for row in report.rows] == [r["stat_date"] for r in stored]
    for row, raw in zip(report.rows, stored):
        assert list(row) == report.columns
        assert_matches(row, {**{m: raw[m] for m in METRICS}, **expected_ratios(raw)})


def test_client_with_no_rows_in_the_window_is_one_row_of_nulls(conn):
    row, = reports.client(conn, WINDOWS["empty"], 2).rows
    assert row["days_with_data"] == 0 and row["name"]
    assert all(row[m] is None for m in [*METRICS, *RATIOS])
    assert reports.client(conn, WINDOWS["empty"], 2, daily=True).rows == []


def test_unknown_client_is_a_usage_error(conn):
    with pytest.raises(UsageError, match="unknown client id 999"):
        reports.client(conn, WINDOWS["last_7d"], 999)


# --- totals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WINDOWS)
def test_totals_are_all_clients_together(conn, replica, name):
    window = WINDOWS[name]
    expected = expected_overall(load_rows(replica), window.start, window.end)
    row, = reports.totals(conn, window).rows
    if expected is None:
        assert row["clients_with_data"] == 0 and row["days_with_data"] == 0 and row["total_sales"] is None
    else:
        assert_matches(row, expected)


@pytest.mark.parametrize("by", ["day", "week", "month"])
def test_totals_by_period_group_days_into_monday_weeks_and_calendar_months(conn, replica, by):
    window = WINDOWS["across_months"]
    rows = in_window(load_rows(replica), window.start, window.end)

    def first_day(day: date) -> date:
        return {"day": day, "week": day - timedelta(days=day.weekday()), "month": day.replace(day=1)}[by]

    groups: dict[date, list[dict]] = {}
    for r in rows:
        groups.setdefault(first_day(date.fromisoformat(r["stat_date"])), []).append(r)
    report = reports.totals(conn, window, by)
    assert len(report.rows) == len(groups)
    for row, start in zip(report.rows, sorted(groups)):
        label = start.strftime("%Y-%m") if by == "month" else start.isoformat()
        assert row["period"] == label
        days = [date.fromisoformat(r["stat_date"]) for r in groups[start]]
        assert (row["period_start"], row["period_end"]) == (min(days).isoformat(), max(days).isoformat())
        assert row["clients_with_data"] == len({r["client_id"] for r in groups[start]})
        assert_matches(row, expected_sums(groups[start]))
    if by == "week":
        assert all(date.fromisoformat(row["period"]).weekday() == 0 for row in report.rows)
        assert report.rows[0]["period"] == "2026-01-19" and report.rows[0]["period_start"] == "2026-01-25"


def test_totals_of_an_empty_window_by_period_have_no_rows(conn):
    assert reports.totals(conn, WINDOWS["empty"], "month").rows == []


# --- the rollup path and the raw path agree exactly --------------------------------------------------


@pytest.mark.parametrize("name", [n for n in WINDOWS if n != "empty"])
def test_stored_and_raw_paths_give_identical_rows(replica, raw_only, name):
    window = WINDOWS[name]
    results = []
    for path in (replica, raw_only):
        connection = store_of(path).open_reader()
        with readonly.snapshot(connection):
            results.append([
                reports.top(connection, window, limit=100).rows,
                reports.client(connection, window, 2).rows,
                reports.totals(connection, window).rows,
                reports.totals(connection, window, "month").rows,
                reports.totals(connection, window, "week").rows,
                reports.totals(connection, window, "day").rows,
            ])
        connection.close()
    assert results[0] == results[1]


def test_top_of_a_stored_period_ranks_and_filters_as_the_raw_path(replica, tmp_path):
    # A stored period is ranked by its one column first, then its rows read: every ranking, filter
    # and limit must give the raw path's rows, in its order (client 3 made inactive, so it bites).
    variants = [
        {"limit": 3},
        {"by": "ads_roas", "ascending": True, "limit": 4},
        {"by": "grab_orders", "min_orders": 50, "limit": 5},
        {"active_only": True, "show_active": True, "limit": 100},
        {"by": "total_orders", "ascending": True, "active_only": True, "min_orders": 1, "limit": 2},
    ]
    results = []
    (tmp_path / "stored").mkdir()
    (tmp_path / "raw").mkdir()
    with replica_copy(replica, tmp_path / "stored") as stored, replica_copy(replica, tmp_path / "raw") as raw:
        running = "INSERT INTO sync_runs(command, status, started_at) VALUES ('sync', 'running', '2026-03-10T04:00:00+00:00')"
        execute_db(raw, running)
        for path in (stored, raw):
            execute_db(path, "UPDATE clients SET active = 0 WHERE id = 3")
            connection = store_of(path).open_reader()
            with readonly.snapshot(connection):
                results.append([reports.top(connection, WINDOWS[name], **kwargs).rows
                                for name in ("last_7d", "last_30d", "last_90d") for kwargs in variants])
            connection.close()
    assert results[0] == results[1]
    by_name = dict(zip([(n, i) for n in ("last_7d", "last_30d", "last_90d") for i in range(len(variants))], results[0]))
    assert [len(by_name["last_30d", i]) for i in range(len(variants))] == [3, 4, 5, CLIENTS - 1, 2]
    assert 3 not in {row["client_id"] for row in by_name["last_30d", 3]}
    assert all(row["grab_orders"] >= 0 and row["total_orders"] >= 50 for row in by_name["last_30d", 2])


def test_rollups_from_an_older_build_without_daily_tables_are_not_read(replica, raw_only, tmp_path):
    results = []
    with replica_copy(replica, tmp_path) as older:
        execute_db(older, "DROP TABLE overall_daily")
        for path in (older, raw_only):
            connection = store_of(path).open_reader()
            with readonly.snapshot(connection):
                results.append([reports.totals(connection, WINDOWS[name], by).rows
                                for name in ("february", "across_months") for by in ("day", "week", "month")])
            connection.close()
    assert results[0] == results[1] and results[0][0]


def test_a_stored_period_is_read_from_the_rollup_tables(replica, caplog):
    connection = store_of(replica).open_reader()
    with caplog.at_level("DEBUG", logger="delivery_sync.reports"):
        reports.top(connection, WINDOWS["last_30d"])
        reports.top(connection, WINDOWS["across_months"])
        reports.totals(connection, WINDOWS["across_months"], "week")
        reports.totals(connection, WINDOWS["across_months"], "day")
    connection.close()
    assert "reading stored rollup last_30d" in caplog.text
    assert "reading partial sums for 2026-01-25..2026-03-05" in caplog.text
    # 2026-01-25 is a Sunday and 2026-03-05 a Thursday: the whole weeks run from 01-26 to 03-01.
    assert "reading stored weeks 2026-01-26..2026-02-23" in caplog.text
    assert "reading stored days 2026-01-25..2026-03-05" in caplog.text


# --- sql ---------------------------------------------------------------------------------------------


# query sql on PostgreSQL (its own read-only transaction and timeout): tests/test_postgres.py.
@pytest.mark.sqlite_only("PRAGMA is SQLite's")
def test_sql_returns_columns_and_rows(conn, replica):
    report = reports.sql(conn, "SELECT client_id, COUNT(*) AS days FROM client_stats GROUP BY client_id ORDER BY client_id")
    assert report.columns == ["client_id", "days"]
    assert [row["days"] for row in report.rows] == [len([r for r in load_rows(replica) if r["client_id"] == c]) for c in range(1, CLIENTS + 1)]
    assert reports.sql(conn, "-- a comment first\nPRAGMA table_info(clients)").rows[0]["name"] == "id"


# Every kind of statement `query sql` must refuse; test_query_cli runs them through the CLI too.
REFUSED_STATEMENTS = [
    "INSERT INTO clients(id, name) VALUES (999, 'x')",
    "UPDATE client_stats SET total_sales = 0",
    "DELETE FROM client_stats",
    "DROP TABLE client_stats",
    "CREATE TABLE t(x)",
    "ATTACH DATABASE 'other.db' AS other",
    "VACUUM",
    "VACUUM INTO 'copy.db'",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA user_version = 7",
    "PRAGMA wal_checkpoint(TRUNCATE)",
    "WITH x AS (SELECT 1) DELETE FROM client_stats",
    "SELECT 1; DELETE FROM client_stats",
    "REPLACE INTO clients(id) VALUES (1)",
]


@pytest.mark.sqlite_only("SQLite's statements (ATTACH, VACUUM, PRAGMA) and its authorizer")
@pytest.mark.parametrize("statement", REFUSED_STATEMENTS)
def test_sql_refuses_anything_but_one_read(conn, statement):
    with pytest.raises(ReadOnlyViolation):
        reports.sql(conn, statement)


@pytest.mark.sqlite_only("SQLite's progress handler; PostgreSQL's statement_timeout: tests/test_postgres.py")
def test_sql_is_interrupted_after_max_seconds(conn):
    forever = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT COUNT(*) FROM n"
    with pytest.raises(QueryTimeout, match="interrupted after 0.2 s"):
        reports.sql(conn, forever, max_seconds=0.2)
    assert reports.sql(conn, "SELECT 1 AS one").rows == [{"one": 1}]  # the connection still works
