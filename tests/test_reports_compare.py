"""Comparisons, rankings, movers and the platform split, in-process, against a replica synced
from the demo remote over loopback.

Every expected figure is computed here, in Python, from the stored rows of both windows
(test_reports' helpers): sums, weighted ratios, changes and percents, NULL on a missing or
zero base. The stored-rollup, partial-sum and raw-row paths must all agree.
"""

from __future__ import annotations

import shutil
import sqlite3
from datetime import date, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time
from test_reports import NOW, RATIOS, TODAY, build_replica, expected_clients, expected_overall, load_rows

from delivery_sync import readonly, reports
from delivery_sync.aggregate.run import run_aggregate
from delivery_sync.aggregate.sql import ROLLING_PERIODS
from delivery_sync.days import Window
from delivery_sync.errors import UsageError
from delivery_sync.metrics import METRICS

# A year and some of data, so that `--compare year` has a base for March 2026 but not for February.
FIRST_DAY = date(2025, 3, 1)
CLIENT_FIGURES = ["days_with_data", *METRICS, *RATIOS]
TOTALS_FIGURES = ["clients_with_data", *CLIENT_FIGURES]
WINDOWS = {
    "last_7d": Window(TODAY - timedelta(days=6), TODAY),  # a stored rollup
    "last_30d": Window(TODAY - timedelta(days=29), TODAY),
    "across_months": Window(date(2026, 1, 25), date(2026, 3, 5)),  # partial sums
    "march": Window(date(2026, 3, 1), date(2026, 3, 9)),
    "february": Window(date(2026, 2, 1), date(2026, 2, 28)),
}


@pytest.fixture(scope="module")
def replica(tmp_path_factory) -> Path:
    return build_replica(tmp_path_factory.mktemp("compare") / "replica.db", first_day=FIRST_DAY)


@pytest.fixture(scope="module")
def rows(replica) -> list[dict]:
    return load_rows(replica)


@pytest.fixture(scope="module")
def raw_only(replica, tmp_path_factory) -> Path:
    """A copy whose rollups are not current (a sync is recorded as running), so reports read raw rows."""
    copy = tmp_path_factory.mktemp("compare_raw") / "replica.db"
    shutil.copy(replica, copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("INSERT INTO sync_runs(command, status, started_at) VALUES ('sync', 'running', '2026-03-10T04:00:00+00:00')")
    return copy


@pytest.fixture
def conn(replica):
    connection = readonly.open_readonly(replica)
    yield connection
    connection.close()


def year_earlier(window: Window) -> Window:
    return Window(window.start.replace(year=window.start.year - 1), window.end.replace(year=window.end.year - 1))


def previous(window: Window) -> Window:
    return Window(window.start - timedelta(days=window.days), window.start - timedelta(days=1))


def approx(value, rel=1e-12):
    """pytest.approx that also matches NULL exactly."""
    return None if value is None else pytest.approx(value, rel=rel, abs=1e-9)


def assert_compared(row: dict, now: dict | None, base: dict | None, figures: list[str]) -> None:
    """Each figure, its base, change and change in percent, as computed here from both windows' rows."""
    for figure in figures:
        current = now[figure] if now else (0 if figure.endswith("_with_data") else None)
        before = base[figure] if base else (0 if figure.endswith("_with_data") else None)
        assert row[figure] == approx(current), figure
        assert row[f"{figure}_base"] == approx(before), figure
        if current is None or before is None:
            assert (row[f"{figure}_change"], row[f"{figure}_change_pct"]) == (None, None), figure
            continue
        assert row[f"{figure}_change"] == pytest.approx(current - before, rel=1e-9, abs=1e-9), figure
        if before == 0:
            assert row[f"{figure}_change_pct"] is None, figure
        else:
            assert row[f"{figure}_change_pct"] == pytest.approx((current - before) / abs(before) * 100, rel=1e-9), figure


# --- the base window ----------------------------------------------------------------------------------


def test_base_window_is_the_same_length_before_or_the_same_days_a_year_earlier():
    week = Window(date(2026, 3, 4), date(2026, 3, 10))
    assert reports.base_window(week, "previous") == Window(date(2026, 2, 25), date(2026, 3, 3))
    assert reports.base_window(week, "year") == Window(date(2025, 3, 4), date(2025, 3, 10))
    leap = Window(date(2028, 2, 1), date(2028, 2, 29))
    assert reports.base_window(leap, "year") == Window(date(2027, 2, 1), date(2027, 2, 28))
    assert reports.base_window(leap, "previous") == Window(date(2028, 1, 3), date(2028, 1, 31))
    with pytest.raises(UsageError, match="--compare: 'month' is not one of previous, year"):
        reports.base_window(week, "month")


def test_change_is_exact_in_cents_and_null_on_a_missing_or_zero_base():
    assert reports.change("total_sales", 0.3, 0.1) == (0.2, pytest.approx(200.0))
    assert reports.change("total_sales", 1000000.05, 1000000.10)[0] == -0.05
    assert reports.change("total_orders", 5, 0) == (5, None)
    assert reports.change("total_orders", None, 4) == (None, None)
    assert reports.change("ads_roas", 3.0, None) == (None, None)
    assert reports.change("total_sales", 50.0, -100.0) == (150.0, 150.0)  # a refund base: the sign follows the change


# --- top, client, totals with --compare ----------------------------------------------------------------


@pytest.mark.parametrize("name", WINDOWS)
@pytest.mark.parametrize("compare", ["previous", "year"])
def test_top_compare_puts_each_client_beside_its_base_window(conn, rows, name, compare):
    window = WINDOWS[name]
    base = previous(window) if compare == "previous" else year_earlier(window)
    now, before = expected_clients(rows, window.start, window.end), expected_clients(rows, base.start, base.end)
    report = reports.top(conn, window, limit=100, compare=compare)
    assert [row["client_id"] for row in report.rows] == sorted(now, key=lambda c: (-now[c]["total_sales"], c))
    for row in report.rows:
        assert list(row) == report.columns
        assert (row["base_period_start"], row["base_period_end"]) == (base.start.isoformat(), base.end.isoformat())
        assert_compared(row, now[row["client_id"]], before.get(row["client_id"]), CLIENT_FIGURES)
    if name == "february" and compare == "year":  # no data a year earlier: every base is missing
        assert all(row["total_sales_base"] is None and row["days_with_data_base"] == 0 for row in report.rows)


def test_compare_keeps_the_report_columns_first_then_the_base_under_clear_keys(conn):
    plain = reports.top(conn, WINDOWS["last_7d"], limit=3)
    compared = reports.top(conn, WINDOWS["last_7d"], limit=3, compare="previous")
    assert compared.columns[:len(plain.columns)] == plain.columns
    assert compared.columns[len(plain.columns):len(plain.columns) + 5] == [
        "base_period_start", "base_period_end", "days_with_data_base", "days_with_data_change", "days_with_data_change_pct"]
    assert [{c: r[c] for c in plain.columns} for r in compared.rows] == plain.rows
    assert compared.subtitle == "against 2026-02-25..2026-03-03 (previous)"


@pytest.mark.parametrize("name", ["last_30d", "across_months", "march", "february"])
def test_client_compare_year(conn, rows, name):
    window = WINDOWS[name]
    base = year_earlier(window)
    report = reports.client(conn, window, 2, compare="year")
    row, = report.rows
    assert report.single and report.figures == CLIENT_FIGURES
    assert_compared(row, expected_clients(rows, window.start, window.end).get(2),
                    expected_clients(rows, base.start, base.end).get(2), CLIENT_FIGURES)


def test_a_zero_base_gives_a_change_but_no_percent(conn, rows):
    # Client 4 sells nothing in its last 7 days: 3 zero days against 3 zero days.
    window = Window(TODAY - timedelta(days=2), TODAY)
    row, = reports.client(conn, window, 4, compare="previous").rows
    assert row["total_sales_base"] == 0 and row["total_sales_change"] == 0 and row["total_sales_change_pct"] is None
    assert row["total_orders_change"] == 0 and row["total_orders_change_pct"] is None
    assert all(row[f"{ratio}_change"] is None and row[f"{ratio}_change_pct"] is None for ratio in RATIOS)
    assert row["days_with_data_change"] == 0 and row["days_with_data_change_pct"] == 0


@pytest.mark.parametrize("name", WINDOWS)
@pytest.mark.parametrize("compare", ["previous", "year"])
def test_totals_compare(conn, rows, name, compare):
    window = WINDOWS[name]
    base = previous(window) if compare == "previous" else year_earlier(window)
    row, = reports.totals(conn, window, compare=compare).rows
    assert_compared(row, expected_overall(rows, window.start, window.end), expected_overall(rows, base.start, base.end), TOTALS_FIGURES)


def test_compare_refuses_what_it_cannot_compare(conn):
    with pytest.raises(UsageError, match="does not combine with --by"):
        reports.totals(conn, WINDOWS["last_7d"], "week", compare="previous")
    with pytest.raises(UsageError, match="does not combine with --daily"):
        reports.client(conn, WINDOWS["last_7d"], 2, daily=True, compare="previous")
    with pytest.raises(UsageError, match="--compare: 'last' is not one of"):
        reports.top(conn, WINDOWS["last_7d"], compare="last")


# --- ranking: ratios, bottom, order floor, active clients -----------------------------------------------


def _ranked(expected: dict[int, dict], by: str, ascending: bool = False) -> list[int]:
    """Client ids in `query top` order: NULL last, then by value, ties by id."""
    def key(c):
        value = expected[c][by]
        return (value is None, 0 if value is None else value if ascending else -value, c)
    return sorted(expected, key=key)


@pytest.mark.parametrize("name", WINDOWS)
@pytest.mark.parametrize("by", ["ads_roas", "avg_order_value", "fake_order_rate", "gojek_ads_roas"])
def test_top_ranks_by_a_ratio_of_sums(conn, rows, name, by):
    window = WINDOWS[name]
    expected = expected_clients(rows, window.start, window.end)
    for ascending in (False, True):
        report = reports.top(conn, window, by, limit=100, ascending=ascending)
        assert [row["client_id"] for row in report.rows] == _ranked(expected, by, ascending)
        assert [row[by] for row in report.rows] == [approx(expected[c][by]) for c in _ranked(expected, by, ascending)]
    assert reports.top(conn, window, by, limit=2).title.startswith(f"Top 2 clients by {by}")
    assert reports.top(conn, window, by, limit=2, ascending=True).title.startswith(f"Bottom 2 clients by {by}")


@pytest.mark.parametrize("name", ["last_7d", "across_months"])
def test_min_orders_keeps_clients_with_enough_orders(conn, rows, name):
    window = WINDOWS[name]
    expected = expected_clients(rows, window.start, window.end)
    floor = sorted(e["total_orders"] or 0 for e in expected.values())[len(expected) // 2]  # the median: about half stay
    kept = {c: e for c, e in expected.items() if e["total_orders"] is not None and e["total_orders"] >= floor}
    assert 0 < len(kept) < len(expected)
    report = reports.top(conn, window, "total_sales", limit=100, ascending=True, min_orders=floor)
    assert [row["client_id"] for row in report.rows] == _ranked(kept, "total_sales", ascending=True)
    assert reports.top(conn, window, "avg_order_value", limit=2, min_orders=floor).rows[0]["client_id"] == _ranked(kept, "avg_order_value")[0]
    with pytest.raises(UsageError, match="--min-orders must be at least 0"):
        reports.top(conn, window, min_orders=-1)


@pytest.fixture(scope="module")
def one_inactive(replica, tmp_path_factory) -> Path:
    """A copy where the remote no longer lists client 2 (the rollups stay current)."""
    copy = tmp_path_factory.mktemp("inactive") / "replica.db"
    shutil.copy(replica, copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("UPDATE clients SET active = 0 WHERE id = 2")
    return copy


@pytest.mark.parametrize("name", ["last_7d", "across_months"])
def test_active_only_leaves_inactive_clients_out_and_show_active_says_which(one_inactive, rows, name):
    window = WINDOWS[name]
    expected = expected_clients(rows, window.start, window.end)
    connection = readonly.open_readonly(one_inactive)
    try:
        everyone = reports.top(connection, window, limit=100, show_active=True)
        active = reports.top(connection, window, limit=100, active_only=True)
        client = reports.client(connection, window, 2, show_active=True)
        daily = reports.client(connection, window, 2, daily=True, show_active=True)
    finally:
        connection.close()
    assert everyone.columns[:3] == ["client_id", "name", "active"] and everyone.table_columns[2] == "active"
    assert {row["client_id"]: row["active"] for row in everyone.rows} == {c: int(c != 2) for c in expected}
    assert [row["client_id"] for row in active.rows] == [c for c in _ranked(expected, "total_sales") if c != 2]
    assert "active" not in active.columns and active.title.endswith("active clients only")
    assert client.rows[0]["active"] == 0 and client.columns[2] == "active"
    assert daily.columns[:4] == ["client_id", "name", "active", "stat_date"] and {r["active"] for r in daily.rows} == {0}


@pytest.mark.parametrize("name", ["last_7d", "across_months", "march"])
def test_new_reports_agree_on_stored_partial_and_raw_paths(replica, raw_only, name):
    window = WINDOWS[name]
    results = []
    for path in (replica, raw_only):
        connection = readonly.open_readonly(path)
        with readonly.snapshot(connection):
            results.append([
                reports.top(connection, window, limit=100, compare="previous").rows,
                reports.top(connection, window, "ads_roas", limit=5, ascending=True, min_orders=50).rows,
                reports.client(connection, window, 2, compare="year").rows,
                reports.totals(connection, window, compare="year").rows,
                reports.totals(connection, window, "platform").rows,
                reports.movers(connection, window, "avg_order_value", limit=100).rows,
            ])
        connection.close()
    assert results[0] == results[1]


# --- movers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["last_7d", "last_30d", "across_months"])
@pytest.mark.parametrize("by", ["total_sales", "ads_roas"])
def test_movers_rank_the_biggest_rises_and_falls(conn, rows, name, by):
    window = WINDOWS[name]
    base = previous(window)
    now, before = expected_clients(rows, window.start, window.end), expected_clients(rows, base.start, base.end)
    pct = {c: (now[c][by] - before[c][by]) / abs(before[c][by]) * 100 for c in now
           if c in before and now[c][by] is not None and before[c][by]}
    report = reports.movers(conn, window, by, limit=3)
    rose = [r for r in report.rows if r["direction"] == "rose"]
    fell = [r for r in report.rows if r["direction"] == "fell"]
    assert [r["client_id"] for r in rose] == sorted((c for c in pct if pct[c] > 0), key=lambda c: (-pct[c], c))[:3]
    assert [r["client_id"] for r in fell] == sorted((c for c in pct if pct[c] < 0), key=lambda c: (pct[c], c))[:3]
    assert rose and fell and [r["rank"] for r in rose] == list(range(1, len(rose) + 1))
    for row in report.rows:
        c = row["client_id"]
        assert row[by] == approx(now[c][by]) and row[f"{by}_base"] == approx(before[c][by])
        assert row[f"{by}_change"] == pytest.approx(now[c][by] - before[c][by]) and row[f"{by}_change_pct"] == pytest.approx(pct[c])
        assert row["lagging"] == 0 and row["last_day"] == window.end.isoformat()
        assert list(row) == report.columns
        assert (row["period_start"], row["base_period_end"]) == (window.start.isoformat(), base.end.isoformat())
    assert report.columns == [*reports.MOVERS_COLUMNS, by, f"{by}_base", f"{by}_change", f"{by}_change_pct"]


@pytest.mark.parametrize(("window", "compare"), [
    (WINDOWS["across_months"], "year"),  # the base starts before the first day of data
    (WINDOWS["february"], "year"),  # the base lies wholly before it
    (Window(date(2025, 2, 10), date(2025, 3, 12)), "previous"),  # the window starts before it
    (Window(date(2026, 3, 4), date(2026, 3, 20)), "previous"),  # the window ends after the last day
])
def test_movers_of_windows_reaching_past_the_data_are_the_sums_of_the_days_with_data(replica, raw_only, rows, window, compare):
    base = reports.base_window(window, compare)
    now, before = expected_clients(rows, window.start, window.end), expected_clients(rows, base.start, base.end)
    results = []
    for path in (replica, raw_only):  # the partial sums read only the days with data; the raw rows, every day
        connection = readonly.open_readonly(path)
        with readonly.snapshot(connection):
            results.append(reports.movers(connection, window, "avg_order_value", limit=100, compare=compare).rows)
        connection.close()
    assert results[0] == results[1]
    for row in results[0]:
        c = row["client_id"]
        assert row["avg_order_value"] == approx(now[c]["avg_order_value"] if c in now else None)
        assert row["avg_order_value_base"] == approx(before[c]["avg_order_value"] if c in before else None)
    # Ranked: a change in percent, and data within 2 days of the window's end (none after 2026-03-10).
    recent = {r["client_id"] for r in rows if window.end - timedelta(days=2) <= date.fromisoformat(r["stat_date"]) <= window.end}
    ranked = {c for c in now if c in before and c in recent and before[c]["avg_order_value"]
              and now[c]["avg_order_value"] not in (None, before[c]["avg_order_value"])}
    assert {r["client_id"] for r in results[0] if r["direction"] != "lagging"} == ranked
    assert bool(ranked) == (window == WINDOWS["across_months"])  # elsewhere no base, or nobody sent data near the end


def test_movers_by_change_with_a_floor_on_the_base(conn, rows):
    window = WINDOWS["march"]
    base = year_earlier(window)
    now, before = expected_clients(rows, window.start, window.end), expected_clients(rows, base.start, base.end)
    floor = sorted(b["total_sales"] for b in before.values())[len(before) // 4]
    change = {c: now[c]["total_sales"] - before[c]["total_sales"] for c in now if c in before and before[c]["total_sales"] >= floor}
    report = reports.movers(conn, window, "total_sales", limit=100, compare="year", min_base=floor, rank="change")
    assert 0 < len(change) < len(now)  # the floor leaves some clients out
    rose = sorted((c for c in change if change[c] > 0), key=lambda c: (-change[c], c))
    fell = sorted((c for c in change if change[c] < 0), key=lambda c: (change[c], c))
    assert rose and fell
    assert [r["client_id"] for r in report.rows if r["direction"] == "rose"] == rose
    assert [r["client_id"] for r in report.rows if r["direction"] == "fell"] == fell
    assert all(r["total_sales_base"] >= floor for r in report.rows)
    assert report.subtitle == f"against {base} (year), base at least Rp {int(floor):,}" and floor == int(floor)


@pytest.fixture(scope="module")
def one_lagging(replica, tmp_path_factory) -> Path:
    """A copy where client 6 stopped sending data 4 days before TODAY and client 3 is no longer
    active, rollups rebuilt."""
    copy = tmp_path_factory.mktemp("lagging") / "replica.db"
    shutil.copy(replica, copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("DELETE FROM client_stats WHERE client_id = 6 AND stat_date > ?", [(TODAY - timedelta(days=4)).isoformat()])
        conn.execute("UPDATE clients SET active = 0 WHERE id = 3")
    with freeze_time(NOW):
        assert run_aggregate(copy, TODAY).status == "ok"
    return copy


def test_a_client_that_stopped_sending_data_is_flagged_not_ranked_as_a_fall(one_lagging):
    connection = readonly.open_readonly(one_lagging)
    try:
        report = reports.movers(connection, WINDOWS["last_7d"], limit=100, rank="change")
    finally:
        connection.close()
    six = [r for r in report.rows if r["client_id"] == 6]
    assert [(r["direction"], r["lagging"], r["last_day"]) for r in six] == [("lagging", 1, (TODAY - timedelta(days=4)).isoformat())]
    assert six[0]["total_sales_change"] < 0  # it would have ranked as a fall
    assert all(not r["lagging"] for r in report.rows if r["direction"] != "lagging")


def test_a_client_deleted_from_clients_by_hand_is_listed_without_a_name(raw_only, rows, tmp_path):
    copy = tmp_path / "replica.db"
    shutil.copy(raw_only, copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("DELETE FROM clients WHERE id = 4")
    window = WINDOWS["last_30d"]
    now, before = expected_clients(rows, window.start, window.end), expected_clients(rows, previous(window).start, previous(window).end)
    connection = readonly.open_readonly(copy)
    try:
        report = reports.movers(connection, window, limit=200, rank="change")
    finally:
        connection.close()
    four = [r for r in report.rows if r["client_id"] == 4]
    assert len(four) == 1 and (four[0]["name"], four[0]["active"]) == (None, None)
    assert four[0]["total_sales_change"] == approx(now[4]["total_sales"] - before[4]["total_sales"])


@pytest.fixture(scope="module")
def gaps(replica, tmp_path_factory) -> Path:
    """A copy where client 4 misses the day before TODAY, client 5 TODAY itself (neither lagging),
    and client 2 is no longer active; rollups rebuilt."""
    copy = tmp_path_factory.mktemp("gaps") / "replica.db"
    shutil.copy(replica, copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("DELETE FROM client_stats WHERE client_id = 4 AND stat_date = ?", [(TODAY - timedelta(days=1)).isoformat()])
        conn.execute("DELETE FROM client_stats WHERE client_id = 5 AND stat_date = ?", [TODAY.isoformat()])
        conn.execute("UPDATE clients SET active = 0 WHERE id = 2")
    with freeze_time(NOW):
        assert run_aggregate(copy, TODAY).status == "ok"
    return copy


@pytest.mark.parametrize("name", ["last_7d", "across_months"])
def test_movers_last_day_of_clients_with_gaps_and_active_only(gaps, name):
    window = WINDOWS[name]
    stored = load_rows(gaps)
    last = {c: max(r["stat_date"] for r in stored if r["client_id"] == c and r["stat_date"] <= window.end.isoformat())
            for c in {r["client_id"] for r in stored}}
    connection = readonly.open_readonly(gaps)
    try:
        every = reports.movers(connection, window, limit=100, rank="change")
        active = reports.movers(connection, window, limit=100, rank="change", active_only=True)
    finally:
        connection.close()
    assert (last[4], last[5]) == ((window.end.isoformat(),) * 2 if name == "across_months" else
                                  (TODAY.isoformat(), (TODAY - timedelta(days=1)).isoformat()))
    for row in every.rows:
        assert (row["last_day"], row["lagging"]) == (last[row["client_id"]], 0)
        assert row["active"] == (0 if row["client_id"] == 2 else 1)
    assert 2 in {r["client_id"] for r in every.rows} and {4, 5} <= {r["client_id"] for r in every.rows}
    assert {r["client_id"] for r in active.rows} == {r["client_id"] for r in every.rows} - {2}
    figures = {(r["client_id"], r["last_day"], r["total_sales"], r["total_sales_base"]) for r in every.rows if r["client_id"] != 2}
    assert {(r["client_id"], r["last_day"], r["total_sales"], r["total_sales_base"]) for r in active.rows} == figures


@pytest.mark.parametrize("days", [3, 5, 12])
def test_clients_with_data_of_any_window_counts_the_clients_with_a_row_in_it(one_lagging, days):
    # Client 6 has no row after TODAY - 4: the last 3 days lack it, the last 5 and 12 do not.
    window = Window(TODAY - timedelta(days=days - 1), TODAY)
    stored = load_rows(one_lagging)
    expected = len({r["client_id"] for r in stored if window.start.isoformat() <= r["stat_date"] <= window.end.isoformat()})
    connection = readonly.open_readonly(one_lagging)
    try:
        row = reports.totals(connection, window).rows[0]
    finally:
        connection.close()
    assert row["clients_with_data"] == expected == (7 if days == 3 else 8)


@pytest.mark.parametrize("by", ["week", "month"])
def test_clients_with_data_of_the_edge_periods_of_totals_by_period(one_lagging, by):
    # Every client has data on some day of the head edge; the tail week lacks client 6 (no row after
    # TODAY - 4), the tail month does not.
    window = Window(date(2026, 1, 28), TODAY)
    stored = load_rows(one_lagging)
    connection = readonly.open_readonly(one_lagging)
    try:
        rows = reports.totals(connection, window, by).rows
    finally:
        connection.close()
    counts = [(r["period_start"], r["period_end"], r["clients_with_data"]) for r in rows]
    assert counts == [(r["period_start"], r["period_end"], expected_overall(stored, date.fromisoformat(r["period_start"]),
                                                                          date.fromisoformat(r["period_end"]))["clients_with_data"])
                      for r in rows]
    assert (counts[0][0], counts[0][2]) == ("2026-01-28", 8) and (counts[-1][1], counts[-1][2]) == (TODAY.isoformat(), 7 if by == "week" else 8)


def test_a_base_window_reaching_before_the_data_is_noted_by_every_comparison(conn):
    # The data start 2025-03-01: this window's previous one (2025-02-08..2025-03-09) holds 9 of its
    # 30 days; the last 7 days' holds all 7, and the year-earlier window of 2025 none at all.
    note = ["the base window holds only 9 of its 30 days (the replica's data starts 2025-03-01), "
            "so its changes compare unequal spans"]
    window = Window(date(2025, 3, 10), date(2025, 4, 8))
    assert reports.movers(conn, window).notes == note
    assert reports.top(conn, window, compare="previous").notes == note
    assert reports.client(conn, window, 2, compare="previous").notes == note
    assert reports.totals(conn, window, compare="previous").notes == note
    assert reports.movers(conn, WINDOWS["last_7d"]).notes == []
    assert reports.movers(conn, window, compare="year").notes == reports.top(conn, window, compare="year").notes == [
        "the base window 2024-03-10..2024-04-08 is before the replica's first day of data (2025-03-01): nothing to compare"]
    assert reports.top(conn, window).notes == []  # nothing compared


def test_movers_refuse_bad_input(conn):
    for kwargs, message in (({"by": "revenue"}, "unknown metric"), ({"limit": 0}, "--limit must be at least 1"),
                            ({"rank": "size"}, "--rank: 'size'"), ({"compare": "week"}, "--compare: 'week'"),
                            ({"min_base": float("nan")}, "--min-base must be a finite number"),
                            ({"limit": 2**63}, r"--limit must be at least 1 and below 2\^63")):
        with pytest.raises(UsageError, match=message):
            reports.movers(conn, WINDOWS["last_7d"], **kwargs)


# --- the platform split -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WINDOWS)
def test_totals_by_platform_are_grab_and_gojek_with_their_shares(conn, rows, name):
    window = WINDOWS[name]
    e = expected_overall(rows, window.start, window.end)
    report = reports.totals(conn, window, "platform")
    assert [r["platform"] for r in report.rows] == ["Grab", "GoJek"]
    grab, gojek = report.rows
    sales = e["grab_sales"] + e["gojek_sales"]
    orders = e["grab_orders"] + e["gojek_orders"]
    for row, prefix, returning in ((grab, "grab", "grab_repeated_customers"), (gojek, "gojek", "gojek_returned_customers")):
        assert list(row) == report.columns
        assert row["sales"] == pytest.approx(e[f"{prefix}_sales"]) and row["orders"] == e[f"{prefix}_orders"]
        assert row["sales_share"] == pytest.approx(e[f"{prefix}_sales"] / sales)
        assert row["orders_share"] == pytest.approx(e[f"{prefix}_orders"] / orders)
        assert row["avg_order_value"] == pytest.approx(e[f"{prefix}_sales"] / e[f"{prefix}_orders"])
        assert row["ads_roas"] == approx(e[f"{prefix}_ads_roas"])
        assert row["returning_customers"] == e[returning]
        assert row["fake_order_rate"] == pytest.approx(e[f"{prefix}_fake_orders"] / e[f"{prefix}_orders"])
    assert grab["sales_share"] + gojek["sales_share"] == pytest.approx(1)


def test_totals_by_platform_of_an_empty_window_has_null_shares(conn):
    rows = reports.totals(conn, Window(date(2024, 6, 1), date(2024, 6, 30)), "platform").rows
    assert [r["platform"] for r in rows] == ["Grab", "GoJek"]
    assert all(r["sales"] is None and r["sales_share"] is None and r["avg_order_value"] is None for r in rows)



# --- partial periods ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_day_missing(replica, tmp_path_factory) -> Path:
    """A copy with no data at all on 2026-02-10 (a Tuesday), rollups rebuilt."""
    copy = tmp_path_factory.mktemp("missing_day") / "replica.db"
    shutil.copy(replica, copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("DELETE FROM client_stats WHERE stat_date = '2026-02-10'")
    with freeze_time(NOW):
        assert run_aggregate(copy, TODAY).status == "ok"
    return copy


@pytest.mark.parametrize("by, expected", [
    # 2026-01-25 is a Sunday, 2026-03-05 a Thursday: both edge weeks and months are cut; the week
    # of 2026-02-09 and February miss 2026-02-10.
    ("week", {"2026-01-19": (1, 1), "2026-01-26": (7, 0), "2026-02-02": (7, 0), "2026-02-09": (7, 1),
              "2026-02-16": (7, 0), "2026-02-23": (7, 0), "2026-03-02": (4, 1)}),
    ("month", {"2026-01": (7, 1), "2026-02": (28, 1), "2026-03": (5, 1)}),
])
def test_partial_periods_say_how_many_days_and_are_marked(one_day_missing, by, expected):
    connection = readonly.open_readonly(one_day_missing)
    try:
        report = reports.totals(connection, WINDOWS["across_months"], by, mark_partial=True)
        whole = reports.totals(connection, Window(date(2026, 1, 26), date(2026, 3, 1)), by, mark_partial=True)
        plain = reports.totals(connection, WINDOWS["across_months"], by)
    finally:
        connection.close()
    assert {r["period"]: (r["days"], r["partial"]) for r in report.rows} == expected
    assert report.columns[:5] == ["period", "period_start", "period_end", "days", "partial"]
    assert "days" not in plain.columns and plain.subtitle == "" and plain.table_rows is None  # unchanged without the flag
    assert [{k: v for k, v in r.items() if k not in ("days", "partial")} for r in report.rows] == plain.rows
    assert [r["period"] for r in report.table_rows] == [p + (" *" if expected[p][1] else "") for p in expected]
    assert report.subtitle.startswith("* partial")
    chosen = report.select(["period", "days", "partial"])
    assert chosen.columns == ["period", "days", "partial"]
    if by == "week":  # whole weeks with every day: nothing marked, no note
        assert [r["partial"] for r in whole.rows if r["period"] != "2026-02-09"] == [0] * 4 and whole.rows[2]["partial"] == 1
    else:
        assert [(r["period"], r["partial"]) for r in whole.rows] == [("2026-01", 1), ("2026-02", 1), ("2026-03", 1)]


def test_whole_periods_with_every_day_are_not_marked(conn):
    report = reports.totals(conn, Window(date(2026, 2, 2), date(2026, 3, 1)), "week", mark_partial=True)
    assert [(r["days"], r["partial"]) for r in report.rows] == [(7, 0)] * 4
    assert report.subtitle == "" and report.table_rows == report.rows
    with pytest.raises(UsageError, match="--mark-partial marks the periods of --by day|week|month"):
        reports.totals(conn, WINDOWS["last_7d"], mark_partial=True)


# --- trends: charts and sparklines -----------------------------------------------------------------------------


def test_charts_name_their_rows_and_metric_and_refuse_what_has_no_series(conn):
    assert reports.totals(conn, WINDOWS["across_months"], "week", chart="total_sales").chart == ("period", "total_sales", "week")
    assert reports.client(conn, WINDOWS["last_7d"], 2, daily=True, chart="ads_roas").chart == ("stat_date", "ads_roas", "day")
    assert reports.totals(conn, WINDOWS["across_months"], "week").chart is None
    for build, message in (
        (lambda: reports.totals(conn, WINDOWS["last_7d"], chart="total_sales"), "--chart draws the periods of --by"),
        (lambda: reports.totals(conn, WINDOWS["last_7d"], "platform", chart="total_sales"), "--chart draws the periods of --by"),
        (lambda: reports.totals(conn, WINDOWS["last_7d"], "day", chart="revenue"), "unknown metric 'revenue' for --chart"),
        (lambda: reports.client(conn, WINDOWS["last_7d"], 2, chart="total_sales"), "use it with --daily"),
    ):
        with pytest.raises(UsageError, match=message):
            build()


@pytest.mark.parametrize("days, step", [(7, 1), (30, 2), (90, 4)])
@pytest.mark.parametrize("by", ["total_sales", "avg_order_value"])
def test_top_spark_series_are_the_metric_per_equal_span_of_days(conn, rows, days, step, by):
    window = Window(TODAY - timedelta(days=days - 1), TODAY)
    report = reports.top(conn, window, by, limit=3, spark=True)
    assert "trend" in report.table_columns and "trend" not in report.columns  # never in csv/json
    assert report.subtitle == f"trend: {by} per {'day' if step == 1 else f'{step} days'}, oldest first"
    points = days // step
    first = TODAY - timedelta(days=points * step - 1)
    for row in report.table_rows:
        spans = [expected_clients(rows, first + timedelta(days=i * step), first + timedelta(days=(i + 1) * step - 1)).get(row["client_id"])
                 for i in range(points)]
        assert row["trend"] == [approx(s[by] if s else None) for s in spans]


def test_sparkline_scales_from_the_smallest_to_the_largest():
    from delivery_sync.render.tables import sparkline

    assert sparkline([1, None, 3, 2]) == "▁ █▅"
    assert sparkline([5, 5]) == "▄▄" and sparkline([None]) == " "


@pytest.fixture(scope="module")
def lagging_raw_only(one_lagging, tmp_path_factory) -> Path:
    """`one_lagging` with its rollups not current, so reports read its raw rows."""
    copy = tmp_path_factory.mktemp("lagging_raw") / "replica.db"
    with sqlite3.connect(one_lagging) as source, sqlite3.connect(copy) as target:
        source.backup(target)  # with what is still in the write-ahead log
    with sqlite3.connect(copy) as conn:
        conn.execute("INSERT INTO sync_runs(command, status, started_at) VALUES ('sync', 'running', '2026-03-10T04:00:00+00:00')")
    return copy


@pytest.mark.parametrize("by", ["total_sales", "ads_roas"])
def test_movers_of_a_stored_period_are_the_same_without_materialized_steps(one_lagging, monkeypatch, by):
    """SQLite before 3.35 has no `AS MATERIALIZED`: the statement goes without the word there, and
    chooses the same clients (a step named more than once is computed once anyway)."""
    from delivery_sync.dialect import SQLITE

    window = Window(TODAY - timedelta(days=29), TODAY)
    connection = readonly.open_readonly(one_lagging)
    try:
        with_word = reports.movers(connection, window, by, limit=2, min_base=1).rows
        monkeypatch.setattr(SQLITE, "materialized", "")
        without = reports.movers(connection, window, by, limit=2, min_base=1).rows
    finally:
        connection.close()
    assert without == with_word and len(with_word) >= 3


@pytest.mark.parametrize("days", ROLLING_PERIODS.values())
@pytest.mark.parametrize("compare", ["previous", "year"])
@pytest.mark.parametrize(("by", "options"), [
    ("total_sales", {"rank": "change"}),
    ("total_sales", {"limit": 2}),
    ("total_sales", {"limit": 1, "min_base": 5_000_000, "active_only": True}),
    ("avg_order_value", {"rank": "change"}),
    ("avg_order_value", {"limit": 2, "active_only": True}),
    ("total_orders", {"limit": 2, "min_base": 150}),
    ("total_orders", {"limit": 3, "rank": "change"}),
    ("ads_roas", {"limit": 2, "min_base": 2.5}),
])
def test_movers_of_a_stored_period_ranked_in_sql_are_the_raw_rows_movers(one_lagging, lagging_raw_only, days, compare, by, options):
    """Movers of a rolling period ending today choose their clients in SQL from the stored pairs of
    sums (WINDOW_PAIRS) and the clients' last days: every row, figure, rank and flag is what ranking
    every client's raw rows in Python gives, with few clients kept (`limit`), a floor on the base,
    inactive clients left out, by a sum in cents, a count or a ratio, by percent or change."""
    window = Window(TODAY - timedelta(days=days - 1), TODAY)
    base = reports.base_window(window, compare)
    options = {"limit": 100, **options}
    results = []
    for path in (one_lagging, lagging_raw_only):
        connection = readonly.open_readonly(path)
        try:
            with readonly.snapshot(connection):
                plan = reports._plan(connection, window)
                assert (plan.period is not None) == (path == one_lagging)  # read from the rollups, or every raw row
                if plan.period is not None:
                    ranking = reports._Ranking(by, by == "total_sales", True, 1, None, False, TODAY.isoformat())
                    assert reports._stored_candidates(connection, plan, base, ranking) is not None
                results.append(reports.movers(connection, window, by, compare=compare, **options).rows)
        finally:
            connection.close()
    assert results[0] == results[1]
    if options["limit"] == 100 and compare == "previous":
        assert [(r["direction"], r["last_day"]) for r in results[0] if r["client_id"] == 6] == [
            ("lagging", (TODAY - timedelta(days=4)).isoformat())]
    if options.get("active_only"):
        assert 3 not in {r["client_id"] for r in results[0]}
