"""`delivery-sync query` comparisons, rankings, movers and the platform split end to end:
every format, 80-column tables, window flags and bad input."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
from datetime import date
from pathlib import Path

import pytest
from conftest import SCRIPT
from freezegun import freeze_time
from test_reports import NOW, TODAY, build_replica, expected_clients, expected_overall, load_rows

from delivery_sync.aggregate.run import run_aggregate
from delivery_sync.render.tables import _cell


@pytest.fixture(scope="module")
def replica(tmp_path_factory) -> Path:
    return build_replica(tmp_path_factory.mktemp("query_compare") / "replica.db")


@pytest.fixture
def query(cli, replica, monkeypatch):
    """`delivery-sync --db REPLICA query ARGS...` on 10 March in Bali, on an 80-column terminal."""
    monkeypatch.setenv("COLUMNS", "80")

    def run(*args: str):
        with freeze_time(NOW):
            return cli("--db", str(replica), "query", *args)

    return run


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def test_top_compare_json_and_csv_carry_both_periods(query, replica):
    rows = load_rows(replica)
    result = query("top", "--days", "7", "--limit", "3", "--compare", "previous", "--format", "json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    now = expected_clients(rows, date(2026, 3, 4), TODAY)
    before = expected_clients(rows, date(2026, 2, 25), date(2026, 3, 3))
    for row in data:
        c = row["client_id"]
        assert (row["period_start"], row["base_period_start"], row["base_period_end"]) == ("2026-03-04", "2026-02-25", "2026-03-03")
        assert row["total_sales_base"] == pytest.approx(before[c]["total_sales"])
        assert row["total_sales_change"] == pytest.approx(now[c]["total_sales"] - before[c]["total_sales"])
        assert row["total_sales_change_pct"] == pytest.approx(
            (now[c]["total_sales"] - before[c]["total_sales"]) / before[c]["total_sales"] * 100)
    as_csv = query("top", "--days", "7", "--limit", "3", "--compare", "previous", "--format", "csv").stdout
    header, *lines = list(csv.reader(io.StringIO(as_csv)))
    assert header == list(data[0]) and len(lines) == 3
    assert float(dict(zip(header, lines[0]))["total_orders_change"]) == data[0]["total_orders_change"]


def test_a_missing_base_is_a_dash_in_the_table_and_empty_in_csv(query):
    # The replica starts on 2026-01-20: nothing a year earlier.
    table = query("totals", "--days", "7", "--compare", "year")
    assert table.code == 0, table.stderr
    assert "Totals, all clients, 2026-03-04..2026-03-10\nagainst 2025-03-04..2025-03-10 (year)" in table.stdout
    line = next(line for line in table.stdout.splitlines() if line.startswith("│ total sales"))
    assert line.split("│")[3].strip() == "-" and line.split("│")[4].strip() == "-"  # change %, base
    assert widest(table.stdout) <= 80
    header, row = list(csv.reader(io.StringIO(query("totals", "--days", "7", "--compare", "year", "--format", "csv").stdout)))
    cells = dict(zip(header, row))
    assert (cells["total_sales_base"], cells["total_sales_change"], cells["total_sales_change_pct"]) == ("", "", "")
    assert cells["clients_with_data_base"] == "0"


def test_client_compare_table_is_a_figure_a_line_within_80_columns(query, replica):
    result = query("client", "2", "--days", "7", "--compare", "previous")
    assert result.code == 0, result.stderr
    assert widest(result.stdout) <= 80
    now = expected_clients(load_rows(replica), date(2026, 3, 4), TODAY)[2]
    before = expected_clients(load_rows(replica), date(2026, 2, 25), date(2026, 3, 3))[2]
    line = next(line for line in result.stdout.splitlines() if line.startswith("│ total orders"))
    cells = [cell.strip() for cell in line.split("│")[1:-1]]
    diff = now["total_orders"] - before["total_orders"]
    assert cells == ["total orders", f"{now['total_orders']:,}", f"{diff / before['total_orders'] * 100:+,.1f}%",
                     f"{before['total_orders']:,}"]


def test_top_compare_table_fits_80_columns_with_the_ranked_change(query):
    result = query("top", "--days", "30", "--limit", "5", "--compare", "previous")
    assert result.code == 0, result.stderr
    assert widest(result.stdout) <= 80
    assert "total sales change %" in " ".join(result.stdout.replace("┃", " ").split())
    assert "%" in result.stdout and "left out:" in result.stdout


def test_change_cells_are_signed_in_the_figure_own_unit():
    assert _cell("total_sales_change", -1234.4) == "-Rp 1,234"
    assert _cell("total_sales_change", 5000.0) == "+Rp 5,000"
    assert _cell("total_orders_change", 0) == "0"
    # A percentage's change is in points, never a second "%" beside the change in percent.
    assert _cell("fake_order_rate_change", -0.0125) == "-1.25 pp" and _cell("new_customer_share_change", 0.0019) == "+0.19 pp"
    assert _cell("fake_order_rate_change_pct", 44.3) == "+44.3%" and _cell("fake_order_rate_base", 0.0043) == "0.43%"
    # A refund (a negative amount) reads as a fall does: the sign before the currency.
    assert _cell("grab_sales", -83332500.0) == _cell("grab_sales_change", -83332500.0) == "-Rp 83,332,500"
    assert _cell("total_sales_base", -1234.0) == "-Rp 1,234" and _cell("sales", -0.4) == "Rp 0"
    assert _cell("ads_roas_change_pct", 12.345) == "+12.3%"
    assert _cell("avg_order_value_base", 70165.2) == "Rp 70,165"


@pytest.mark.parametrize("args, window", [
    (("--to", "yesterday"), ("2026-02-08", "2026-03-09")),
    (("--days", "7", "--to", "yesterday"), ("2026-03-03", "2026-03-09")),
    (("--days", "7", "--to", "2026-03-01"), ("2026-02-23", "2026-03-01")),
    (("--from", "2026-03-01", "--to", "yesterday"), ("2026-03-01", "2026-03-09")),
    (("--days", "7", "--to", "today"), ("2026-03-04", "2026-03-10")),
])
def test_to_yesterday_and_days_ending_on_a_date(query, replica, args, window):
    result = query("totals", *args, "--format", "json")
    assert result.code == 0, result.stderr
    row, = json.loads(result.stdout)
    assert (row["period_start"], row["period_end"]) == window
    expected = expected_overall(load_rows(replica), date.fromisoformat(window[0]), date.fromisoformat(window[1]))
    assert row["total_sales"] == pytest.approx(expected["total_sales"])


def test_top_by_ratio_ascending_with_floor_and_active_column(query, replica):
    result = query("top", "--by", "avg_order_value", "--asc", "--min-orders", "100", "--show-active", "--days", "7",
                   "--limit", "3", "--format", "json")
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)
    expected = expected_clients(load_rows(replica), date(2026, 3, 4), TODAY)
    kept = [c for c in expected if (expected[c]["total_orders"] or 0) >= 100]
    assert [r["client_id"] for r in rows] == sorted(kept, key=lambda c: (expected[c]["avg_order_value"], c))[:3]
    assert all(r["active"] == 1 for r in rows) and list(rows[0])[:3] == ["client_id", "name", "active"]
    table = query("top", "--by", "avg_order_value", "--asc", "--min-orders", "100", "--days", "7", "--limit", "3")
    assert "Bottom 3 clients by avg_order_value, 2026-03-04..2026-03-10, at least 100 orders" in table.stdout


def test_movers_in_every_format(query):
    as_json = json.loads(query("movers", "--days", "7", "--limit", "2", "--format", "json").stdout)
    assert [r["direction"] for r in as_json] == ["rose", "rose", "fell", "fell"]
    assert as_json[0]["total_sales_change_pct"] >= as_json[1]["total_sales_change_pct"] > 0
    assert as_json[2]["total_sales_change_pct"] <= as_json[3]["total_sales_change_pct"] < 0
    header, *rows = list(csv.reader(io.StringIO(query("movers", "--days", "7", "--limit", "2", "--format", "csv").stdout)))
    assert header == list(as_json[0]) and len(rows) == 4
    table = query("movers", "--days", "7", "--limit", "2")
    assert table.code == 0 and widest(table.stdout) <= 80
    assert "Movers by total_sales (percent), 2026-03-04..2026-03-10\nagainst 2026-02-25..2026-03-03 (previous)" in table.stdout


def test_movers_against_a_base_window_without_data_say_so(query):
    table = query("movers", "--days", "7", "--compare", "year")
    assert table.code == 0 and widest(table.stdout) <= 80
    assert "no total_sales in the base window 2025-03-04..2025-03-10" in table.stdout
    assert table.stdout.count("nothing to compare") == 1  # the note says it; the empty table does not again
    assert "no data in this window" not in table.stdout  # the window has data: its base has none
    # In CSV and JSON only stderr can tell "no base" from "no change" (every base and change empty).
    note = "the base window 2025-03-04..2025-03-10 is before the replica's first day of data (2026-01-20): nothing to compare"
    assert f"note: {note}" in " ".join(table.stdout.split())
    as_json = query("movers", "--days", "7", "--compare", "year", "--format", "json")
    assert json.loads(as_json.stdout) == [] and as_json.stderr.strip().endswith(f"warning: {note}")
    top = query("top", "--days", "7", "--compare", "year", "--format", "csv")
    assert top.code == 0 and top.stderr.strip().endswith(f"warning: {note}") and ",," in top.stdout


def test_a_partial_base_window_is_noted_under_the_title_or_on_stderr(query):
    note = ("the base window holds only 20 of its 30 days (the replica's data starts 2026-01-20), "
            "so its changes compare unequal spans")
    table = query("movers", "--days", "30", "--limit", "2")
    assert table.code == 0 and widest(table.stdout) <= 80
    lines = table.stdout.splitlines()
    assert lines[1] == "against 2026-01-10..2026-02-08 (previous)"
    assert " ".join(line.strip() for line in lines[2:4]) == f"note: {note}"  # wrapped at a word, within 80 columns
    as_csv = query("top", "--days", "30", "--compare", "previous", "--format", "csv")
    assert as_csv.code == 0 and "note" not in as_csv.stdout
    assert as_csv.stderr.strip().endswith(f"warning: {note}")
    whole = query("movers", "--days", "7", "--format", "json")
    assert whole.code == 0 and "base window" not in whole.stderr


@pytest.mark.parametrize("args, said", [
    (("movers", "--days", "7", "--min-base", "1e15"),
     "no client rose or fell from a base of at least Rp 1,000,000,000,000,000, and none stopped sending data"),
    (("movers", "--days", "7", "--min-base", "1e15", "--active-only"),
     "no active client rose or fell from a base of at least Rp 1,000,000,000,000,000, and none stopped sending data"),
    # A floor in the unit the table shows: a share given as a fraction reads as a percentage.
    (("movers", "--days", "7", "--by", "fake_order_rate", "--min-base", "0.5"),
     "no client rose or fell from a base of at least 50%, and none stopped sending data"),
    (("movers", "--days", "7", "--by", "total_orders", "--min-base", "1e9"),
     "no client rose or fell from a base of at least 1,000,000,000, and none stopped sending data"),
    (("top", "--days", "7", "--min-orders", "100000"), "no client with at least 100,000 orders in this window"),
    (("top", "--from", "2020-01-01", "--to", "2020-01-31", "--min-orders", "1"), "no data in this window"),
])
def test_a_filter_that_leaves_no_client_is_named_under_the_empty_table(query, monkeypatch, args, said):
    monkeypatch.setenv("COLUMNS", "200")  # the caption on one line
    result = query(*args)
    assert result.code == 0 and said in result.stdout
    assert "no data in this window" not in result.stdout or said == "no data in this window"


def test_top_of_a_window_inside_a_gap_in_the_data_says_no_data_not_the_filter(cli, replica, tmp_path, monkeypatch):
    copy = tmp_path / "replica.db"
    shutil.copy(replica, copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("DELETE FROM client_stats WHERE stat_date BETWEEN '2026-03-02' AND '2026-03-04'")
    with freeze_time(NOW):
        assert run_aggregate(copy, TODAY).status == "ok"
        monkeypatch.setenv("COLUMNS", "200")
        gap = cli("--db", str(copy), "query", "top", "--from", "2026-03-02", "--to", "2026-03-04", "--min-orders", "1")
        around = cli("--db", str(copy), "query", "top", "--from", "2026-03-01", "--to", "2026-03-05", "--min-orders", "100000")
    # No client listed: no count in the title (it said "Top 10" over an empty table).
    assert gap.stdout.startswith("Top clients by total_sales, 2026-03-02..2026-03-04, at least 1 order\n")
    assert around.stdout.startswith("Top clients by total_sales, 2026-03-01..2026-03-05, at least 100,000 orders\n")
    assert gap.code == 0 and "no data in this window" in gap.stdout and "with at least" not in gap.stdout
    assert around.code == 0 and "no client with at least 100,000 orders in this window" in around.stdout


def test_movers_of_active_clients_say_so_in_the_title(query):
    assert query("movers", "--days", "7", "--active-only").stdout.startswith(
        "Movers by total_sales (percent), 2026-03-04..2026-03-10, active clients only\n")


@pytest.mark.parametrize("floor", ["nan", "inf", "-inf", "1e400"])
def test_movers_refuse_a_floor_that_is_no_finite_number(query, floor):
    result = query("movers", "--days", "7", "--min-base", floor, "--format", "csv")
    assert result.code == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines()[0] == f"error: --min-base must be a finite number (got {float(floor)})"


def test_totals_by_platform_table_and_json(query, replica):
    table = query("totals", "--by", "platform", "--days", "7")
    assert table.code == 0 and widest(table.stdout) <= 80
    assert "│ Grab " in table.stdout and "│ GoJek " in table.stdout
    grab, gojek = json.loads(query("totals", "--by", "platform", "--days", "7", "--format", "json").stdout)
    e = expected_overall(load_rows(replica), date(2026, 3, 4), TODAY)
    assert grab["orders_share"] == pytest.approx(e["grab_orders"] / (e["grab_orders"] + e["gojek_orders"]))
    assert f"{grab['sales_share'] * 100:.2f}%" in table.stdout and f"{gojek['sales_share'] * 100:.2f}%" in table.stdout


def test_partial_periods_are_marked_in_every_format(query):
    args = ("totals", "--by", "week", "--from", "2026-02-01", "--to", "2026-02-28", "--mark-partial")
    table = query(*args)
    assert table.code == 0 and widest(table.stdout) <= 80
    lines = table.stdout.splitlines()
    assert lines[1] == "* partial: cut by the window, or fewer days with data than days"
    assert any(line.startswith("│ 2026-01-26 * │") for line in lines)  # only 2026-02-01, a Sunday, is in the window
    assert any(line.startswith("│ 2026-02-02   │") for line in lines)
    as_csv = query(*args, "--columns", "period,days,partial", "--format", "csv")
    assert as_csv.stdout.splitlines() == ["period,days,partial", "2026-01-26,1,1", "2026-02-02,7,0", "2026-02-09,7,0",
                                          "2026-02-16,7,0", "2026-02-23,6,1"]
    as_json = json.loads(query(*args, "--format", "json").stdout)
    assert list(as_json[0])[:5] == ["period", "period_start", "period_end", "days", "partial"]
    assert [(w["days"], w["partial"]) for w in as_json] == [(1, 1), (7, 0), (7, 0), (7, 0), (6, 1)]
    plain = query("totals", "--by", "week", "--from", "2026-02-01", "--to", "2026-02-28", "--format", "json")
    assert "days" not in json.loads(plain.stdout)[0]


def test_totals_chart_draws_proportional_bars_within_80_columns(query, replica):
    cut = query("totals", "--by", "week", "--from", "2026-02-01", "--to", "2026-03-01", "--chart").stdout.splitlines()
    assert cut[2] == "* partial: cut by the window, or fewer days with data than days" and cut[3].startswith("2026-01-26 *  ")
    result = query("totals", "--by", "week", "--from", "2026-02-02", "--to", "2026-03-01", "--chart")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["Totals per week, all clients, 2026-02-02..2026-03-01", "total sales per week"]
    bars = {line.split()[0]: line.split("  ")[-1] for line in lines[2:]}
    assert list(bars) == ["2026-02-02", "2026-02-09", "2026-02-16", "2026-02-23"]
    assert widest(result.stdout) == 80 and "\x1b" not in result.stdout  # a pipe: no colour codes
    weekly = {w["period"]: w["total_sales"] for w in json.loads(
        query("totals", "--by", "week", "--from", "2026-02-02", "--to", "2026-03-01", "--format", "json").stdout)}
    largest = max(weekly.values())
    room = 80 - len("2026-02-02") - len(_cell("total_sales", largest)) - 4
    for period, bar in bars.items():
        eighths = len(bar.rstrip(" ▏▎▍▌▋▊▉")) * 8 + (" ▏▎▍▌▋▊▉".index(bar[-1]) if bar[-1] != "█" else 0)
        assert eighths == round(weekly[period] / largest * room * 8)


def test_client_daily_chart_and_top_spark_on_the_terminal(query):
    chart = query("client", "2", "--daily", "--days", "5", "--chart", "--chart-by", "avg_order_value")
    assert chart.code == 0 and chart.stdout.splitlines()[1] == "avg order value per day"
    assert [line.split()[0] for line in chart.stdout.splitlines()[2:]] == ["2026-03-06", "2026-03-07", "2026-03-08", "2026-03-09", "2026-03-10"]
    spark = query("top", "--days", "7", "--limit", "3", "--spark")
    assert spark.code == 0 and widest(spark.stdout) <= 80 and "trend" in spark.stdout
    assert sum(c in "▁▂▃▄▅▆▇█" for c in spark.stdout) >= 3 * 6


@pytest.mark.parametrize("args, message", [
    (("totals", "--by", "week", "--chart", "--format", "csv"), "--chart draws on the terminal, not in csv or json, which carry the numbers"),
    (("top", "--spark", "--format", "json"), "--spark draws on the terminal, not in csv or json"),
    (("totals", "--by", "week", "--chart", "--columns", "period"), "--chart does not combine with --columns"),
    (("totals", "--chart"), "--chart draws the periods of --by day|week|month"),
    (("client", "2", "--chart"), "use it with --daily"),
    (("totals", "--by", "week", "--chart-by", "ads_roas"), "--chart-by says what --chart draws: add --chart"),
    (("client", "2", "--daily", "--chart-by", "total_sales"), "--chart-by says what --chart draws: add --chart"),
    (("top", "--days", "7", "--to", "yesterday", "--from", "2026-03-01"), "either --days or --from/--to"),
])
def test_charts_are_never_drawn_into_csv_or_json(query, args, message):
    result = query(*args)
    assert result.code == 2 and message in result.stderr and result.stdout == ""


def test_charts_honour_no_color_on_a_terminal(replica, tmp_path):
    import os

    from conftest import run_on_terminal

    exe = SCRIPT
    args = [exe, "--db", str(replica), "query", "totals", "--by", "week", "--from", "2026-02-02", "--to", "2026-03-01", "--chart"]
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "80", "DELIVERY_SYNC_STATUS__STALE_AFTER_HOURS": "500000"}
    env.pop("NO_COLOR", None)
    code, coloured = run_on_terminal(args, tmp_path, env, stream="stdout")
    assert code == 0 and "\x1b[36m" in coloured and "█" in coloured
    code, plain = run_on_terminal(args, tmp_path, {**env, "NO_COLOR": "1"}, stream="stdout")
    assert code == 0 and "\x1b[36m" not in plain and "█" in plain


def test_narrow_tables_keep_what_their_rows_are_for(cli, query, replica, tmp_path, monkeypatch):
    """An analyst review at 80 columns: movers' lagging rows lost their last day (since when they
    sent nothing, the point of the row) and `totals --by day` spent two columns on its day again."""
    copy = tmp_path / "replica.db"
    shutil.copy(replica, copy)
    with sqlite3.connect(copy) as conn:  # client 3 sent nothing for its last 4 days
        conn.execute("DELETE FROM client_stats WHERE client_id = 3 AND stat_date > '2026-03-06'")
    with freeze_time(NOW):
        assert run_aggregate(copy, TODAY).status == "ok"
        movers = cli("--db", str(copy), "query", "movers", "--days", "7", "--limit", "2")
    lagging = [line for line in movers.stdout.splitlines() if line.startswith("│ lagging")]
    assert movers.code == 0 and widest(movers.stdout) <= 80 and len(lagging) == 1, movers.stdout
    assert "│ 2026-03-06 │" in lagging[0], movers.stdout
    days = query("totals", "--by", "day", "--days", "3")
    header = " ".join(days.stdout.replace("┃", " ").split())
    assert "period start" not in header and "period end" not in header and "clients with" in header and widest(days.stdout) <= 80
    assert "period_start" in query("totals", "--by", "day", "--days", "3", "--format", "csv").stdout.splitlines()[0]


def test_a_daily_view_says_how_many_of_its_days_have_data(cli, query, replica, tmp_path):
    """An analyst review: client --daily of a client that stopped sending listed 2 rows for a
    6-day window with no word; days without a row are not listed."""
    copy = tmp_path / "replica.db"
    shutil.copy(replica, copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("DELETE FROM client_stats WHERE client_id = 3 AND stat_date > '2026-03-06'")
    with freeze_time(NOW):
        daily = cli("--db", str(copy), "query", "client", "3", "--daily", "--days", "6")
        as_csv = cli("--db", str(copy), "query", "client", "3", "--daily", "--days", "6", "--format", "csv")
    note = "data on 2 of the window's 6 days (the last 2026-03-06)"
    assert daily.code == 0 and f"note: {note}" in daily.stdout
    assert as_csv.stderr.strip().endswith(f"warning: {note}") and len(as_csv.stdout.splitlines()) == 3
    assert "note:" not in query("client", "3", "--daily", "--days", "6").stdout  # every day has data


def test_half_a_rupiah_rounds_away_from_zero_as_a_bank_statement_does():
    """Rp 1,234.50 is Rp 1,235, as a spreadsheet or a bank rounds it (Python's own formatting
    rounds a half to the even neighbour, Rp 1,234); only a true half rounds up."""
    assert [_cell("total_sales", v) for v in (1234.5, 1235.5, 0.5, 1234.49, 2**53 + 0.0)] == [
        "Rp 1,235", "Rp 1,236", "Rp 1", "Rp 1,234", "Rp 9,007,199,254,740,992"]
    assert _cell("total_sales_change", -1234.5) == "-Rp 1,235" and _cell("total_sales_change", 0.5) == "+Rp 1"
    assert _cell("avg_order_value", 70165.5) == "Rp 70,166" and _cell("grab_sales", -0.5) == "-Rp 1"
