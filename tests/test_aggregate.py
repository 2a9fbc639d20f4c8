"""The rollup tables: every row checked against sums computed here from the raw rows, on a SQLite
and a PostgreSQL replica (the module's `replica` is built on each engine)."""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from conftest import ENGINES, dialect, dict_rows, execute_db, query_db, replica_copy, setting, store_of, unstamped, write_config
from freezegun import freeze_time
from test_reports import NOW, TODAY, assert_matches, built_replica, expected_clients, expected_overall, load_rows

from delivery_sync.aggregate.run import run_aggregate
from delivery_sync.errors import LockHeld
from delivery_sync.readonly import UNRECORDED_END

ROLLING = {"last_7d": 7, "last_30d": 30, "last_90d": 90, "last_365d": 365}


@pytest.fixture(scope="module", params=ENGINES)
def replica(request, tmp_path_factory) -> Iterator[Path | str]:
    """The synced and aggregated replica the module reads: a SQLite file, then a PostgreSQL database."""
    with built_replica(request.param, tmp_path_factory.mktemp("aggregate")) as database:
        yield database


def table(database: Path | str, name: str) -> list[dict]:
    return dict_rows(database, f"SELECT * FROM {name}")


def expected_periods(as_of: date, rows: list[dict]) -> dict[str, tuple[date, date]]:
    periods = {name: (as_of - timedelta(days=days - 1), as_of) for name, days in ROLLING.items()}
    for month in sorted({r["stat_date"][:7] for r in rows}):
        first = date.fromisoformat(f"{month}-01")
        periods[month] = (first, first.replace(day=calendar.monthrange(first.year, first.month)[1]))
    return periods


def test_every_client_rollup_row_matches_the_raw_rows(replica):
    rows = load_rows(replica)
    periods = expected_periods(TODAY, rows)
    assert set(periods) == {*ROLLING, "2026-01", "2026-02", "2026-03"}
    stored = {(r["client_id"], r["period"]): r for r in table(replica, "client_aggregates")}
    expected_keys = set()
    for period, (start, end) in periods.items():
        for cid, want in expected_clients(rows, start, end).items():
            expected_keys.add((cid, period))
            row = stored[(cid, period)]
            assert (row["period_start"], row["period_end"]) == (start.isoformat(), end.isoformat())
            assert_matches(row, want)
    assert set(stored) == expected_keys  # a period with no rows has no row
    assert stored[(2, "2026-02")]["period_end"] == "2026-02-28"
    assert stored[(2, "2026-01")]["days_with_data"] == 12  # 20..31 January


def test_every_overall_rollup_row_matches_the_raw_rows(replica):
    rows = load_rows(replica)
    stored = {r["period"]: r for r in table(replica, "overall_aggregates")}
    assert set(stored) == set(expected_periods(TODAY, rows))
    for period, (start, end) in expected_periods(TODAY, rows).items():
        assert_matches(stored[period], expected_overall(rows, start, end))
        assert stored[period]["computed_at"].endswith("+00:00")


@pytest.mark.parametrize("table_name, first_day, length", [
    ("overall_daily", lambda day: day, 1),
    ("overall_weekly", lambda day: day - timedelta(days=day.weekday()), 7),  # weeks start on Monday
])
def test_every_daily_and_weekly_row_matches_the_raw_rows(replica, table_name, first_day, length):
    rows = load_rows(replica)
    groups: dict[date, list[dict]] = {}
    for r in rows:
        groups.setdefault(first_day(date.fromisoformat(r["stat_date"])), []).append(r)
    stored = {r["period"]: r for r in table(replica, table_name)}
    assert set(stored) == {start.isoformat() for start in groups}  # a period with no rows has no row
    for start, members in groups.items():
        row = stored[start.isoformat()]
        # Like a month row, a stored period spans its whole calendar period.
        assert (row["period_start"], row["period_end"]) == (start.isoformat(), (start + timedelta(days=length - 1)).isoformat())
        # clients_with_data, days_with_data and every sum, against the group's raw rows
        assert_matches(row, expected_overall(members, date.min, date.max))


def test_zero_denominators_and_one_platform_clients_are_null(replica):
    stored = {(r["client_id"], r["period"]): r for r in table(replica, "client_aggregates")}
    idle = stored[(4, "last_7d")]  # sold nothing for 7 days
    assert idle["total_orders"] == 0
    assert [idle[r] for r in ("avg_order_value", "fake_order_rate", "new_customer_share", "ads_spend_share", "ads_roas")] == [None] * 5
    grab_only = stored[(3, "last_30d")]
    assert grab_only["gojek_sales"] is None and grab_only["gojek_orders"] is None and grab_only["grab_ads_roas"] is None


def test_sync_records_its_own_aggregate_run_after_the_sync(replica):
    runs = query_db(replica, "SELECT command, status, window_start, window_end, rows_fetched, rows_inserted FROM sync_runs ORDER BY id")
    assert [r[:2] for r in runs] == [("sync", "ok"), ("aggregate", "ok")]
    tables = ("client_aggregates", "overall_aggregates", "overall_daily", "overall_weekly")
    rollup_rows = sum(query_db(replica, f"SELECT COUNT(*) FROM {table}")[0][0] for table in tables)
    assert runs[1][2:] == ((TODAY - timedelta(days=364)).isoformat(), TODAY.isoformat(), len(load_rows(replica)), rollup_rows)


def test_aggregate_command_with_as_of_rebuilds_the_rolling_periods(cli, replica, tmp_path):
    with replica_copy(replica, tmp_path) as path:
        result = cli("--db", str(path), "aggregate", "--as-of", "2026-02-15")
        assert result.code == 0, result.stderr
        rows = load_rows(path)
        stored = {r["period"]: r for r in table(path, "overall_aggregates")}
        last_run = query_db(path, "SELECT command, status, window_end FROM sync_runs ORDER BY id DESC LIMIT 1")
    assert unstamped(result.stderr).startswith("aggregate ok: 8 clients, ") and "as of 2026-02-15" in result.stderr
    assert (stored["last_7d"]["period_start"], stored["last_7d"]["period_end"]) == ("2026-02-09", "2026-02-15")
    assert_matches(stored["last_30d"], expected_overall(rows, date(2026, 1, 17), date(2026, 2, 15)))
    assert last_run == [("aggregate", "ok", "2026-02-15")]


@pytest.mark.parametrize("as_of", ["9999-12-31", "0001-01-01", "1899-12-31", "2026-03-11"])
def test_an_as_of_outside_the_calendar_or_after_today_is_refused_before_any_run(cli, replica, tmp_path, as_of):
    with replica_copy(replica, tmp_path) as path:
        runs = query_db(path, "SELECT COUNT(*) FROM sync_runs")
        with freeze_time(NOW):  # 10 March 2026 in Bali: the 11th is tomorrow
            result = cli("--db", str(path), "aggregate", "--as-of", as_of)
        assert result.code == 2 and result.stdout == ""
        assert result.stderr.strip() == f"error: --as-of {as_of} is outside 1900-01-01..2026-03-10 (today in source.timezone)"
        assert query_db(path, "SELECT COUNT(*) FROM sync_runs") == runs  # nothing recorded: status --check stays as it was


def test_aggregate_default_as_of_is_today_in_the_source_timezone(cli, replica, tmp_path):
    with replica_copy(replica, tmp_path) as path:
        with freeze_time(NOW):  # still 9 March in Honolulu and UTC-anything: Bali says 10 March
            result = cli("--db", str(path), "aggregate")
        assert result.code == 0, result.stderr
        assert query_db(path, "SELECT period_end FROM overall_aggregates WHERE period = 'last_7d'") == [(TODAY.isoformat(),)]


@pytest.mark.both_engines
def test_sync_no_aggregate_leaves_the_rollups_alone(cli, demo, tmp_path, db_path):
    write_config(tmp_path / "config.toml", demo.url, db_path)
    assert cli("sync", "--days-back", "3", "--clients", "1,2", "--no-aggregate").code == 0
    assert query_db(db_path, "SELECT command FROM sync_runs") == [("sync",)]
    assert "client_aggregates" not in {r[0] for r in query_db(db_path, dialect(db_path).table_names)}
    result = cli("sync", "--days-back", "3", "--clients", "1,2")
    assert result.code == 0 and result.stderr.count("\n") == 1 and unstamped(result.stderr).startswith("sync ok: 2/2 clients")
    verbose = cli("-v", "sync", "--days-back", "3", "--clients", "1,2")
    assert verbose.code == 0 and "aggregate ok: 2 clients, 6 rows" in verbose.stderr
    # The rollups were current before this sync: its aggregate recomputed only what it wrote.
    assert "daily and weekly totals), refreshed, as of " in verbose.stderr
    assert query_db(db_path, "SELECT command, status FROM sync_runs ORDER BY id") == [
        ("sync", "ok"), ("sync", "ok"), ("aggregate", "ok"), ("sync", "ok"), ("aggregate", "ok")
    ]
    rebuilt = cli("aggregate")  # the command always rebuilds everything
    assert rebuilt.code == 0 and "daily and weekly totals), rebuilt, as of " in rebuilt.stderr


def test_aggregate_without_a_replica_exits_2_and_creates_nothing(cli, tmp_path):
    result = cli("--db", str(tmp_path / "none.db"), "aggregate")
    assert result.code == 2 and "no replica" in result.stderr and "sync" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_aggregate_exits_75_while_another_run_holds_the_lock(cli, replica, tmp_path):
    with replica_copy(replica, tmp_path) as path:
        with store_of(path).writer_lock("sync"):
            result = cli("--db", str(path), "aggregate")
        assert result.code == 75 and "running 'sync'" in result.stderr
        with pytest.raises(LockHeld), store_of(path).writer_lock("sync"):
            run_aggregate(setting(path), TODAY)


def test_aggregate_marks_interrupted_runs(cli, replica, tmp_path):
    with replica_copy(replica, tmp_path) as path:
        execute_db(path, "INSERT INTO sync_runs(command, status, started_at) VALUES ('sync', 'running', '2026-03-10T01:00:00+00:00')")
        assert cli("--db", str(path), "aggregate", "--as-of", TODAY.isoformat()).code == 0
        interrupted = query_db(path, "SELECT status, error FROM sync_runs WHERE started_at = '2026-03-10T01:00:00+00:00'")
    assert interrupted == [("failed", UNRECORDED_END)]


def test_rebuild_replaces_rollups_of_rows_that_changed(replica, tmp_path):
    with replica_copy(replica, tmp_path) as path:
        execute_db(path, "DELETE FROM client_stats WHERE stat_date < '2026-02-01'")
        run_aggregate(setting(path), TODAY)
        periods = {r[0] for r in query_db(path, "SELECT period FROM overall_aggregates")}
        january = query_db(path, "SELECT COUNT(*) FROM client_aggregates WHERE period = '2026-01'")
    assert "2026-01" not in periods and {"2026-02", "2026-03"} <= periods
    assert january == [(0,)]


@pytest.mark.both_engines
def test_a_client_deleted_from_clients_by_hand_is_listed_again_by_the_next_aggregate(cli, demo, tmp_path, db_path):
    """Its daily rows stay; left unlisted, windows summed client by client left it out while raw
    rows counted it. The rebuild lists it again, inactive and without a name, and says so."""
    write_config(tmp_path / "config.toml", demo.url, db_path)
    assert cli("sync", "--days-back", "40").code == 0
    execute_db(db_path, "DELETE FROM clients WHERE id = 5")
    result = cli("aggregate")
    assert result.code == 0, result.stderr
    assert ("warning: aggregate: 1 client had daily rows but no row in `clients` (5): listed again, inactive and without a name"
            in unstamped(result.stderr))
    assert query_db(db_path, "SELECT name, active FROM clients WHERE id = 5") == [(None, 0)]
    today = date.fromisoformat(str(query_db(db_path, "SELECT MAX(stat_date) FROM client_stats")[0][0]))
    start, end = (today - timedelta(days=33)).isoformat(), (today - timedelta(days=2)).isoformat()  # months, pieces and days
    shown = cli("query", "client", "5", "--from", start, "--to", end, "--format", "json")
    [row] = json.loads(shown.stdout)
    [(days, cents)] = query_db(db_path, "SELECT COUNT(*), SUM(CAST(ROUND(total_sales * 100) AS BIGINT)) FROM client_stats "
                                        "WHERE client_id = 5 AND stat_date BETWEEN ? AND ?", (start, end))
    assert (row["days_with_data"], round(row["total_sales"] * 100)) == (days, cents) and days == 32
    assert cli("aggregate").stderr.count("no row in `clients`") == 0  # listed now: said once
    active = json.loads(cli("query", "movers", "--active-only", "--limit", "200", "--format", "json").stdout)
    assert 5 not in {r["client_id"] for r in active}
