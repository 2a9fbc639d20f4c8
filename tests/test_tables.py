"""Terminal tables at 80, 120 and 200 columns: nothing cut, names present, dropped columns named.

The demo remote is synced over loopback into a real file; every table is read
back against the same report as JSON, so a cut number or a hidden name fails.
"""

from __future__ import annotations

import json
import os
import re
from decimal import ROUND_HALF_UP, Decimal

import pytest

from delivery_sync.reports import _TOP_SHOWN

WIDTHS = (80, 120, 200)
BOX = "┃│┏┡└"  # the characters a table line starts with


@pytest.fixture
def synced(cli, config, demo):
    result = cli("sync", "--days-back", "10")
    assert result.code == 0, result.stderr
    return demo


def _table_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line[:1] in BOX]


def _left_out(out: str, shown_after: list[str] | None = None) -> list[str]:
    """The columns the "left out" line names; "and N more" counts the rest of `shown_after`."""
    match = re.search(r"^left out: (.*) \(see --columns, --format csv\|json\)$", out, re.M)
    if not match:
        return []
    assert len(match.group(0)) <= int(os.environ["COLUMNS"])  # one line, within the width
    listed = match.group(1)
    more = re.search(r" and (\d+) more$", listed)
    names = listed[: more.start()].split(", ") if more else listed.split(", ")
    if more and shown_after:
        names += shown_after[shown_after.index(names[-1]) + 1:]
        assert len(names) == len(listed[: more.start()].split(", ")) + int(more.group(1))
    return names


def _rupiah(value: float) -> str:
    """Whole rupiah, half a rupiah up, in exact decimal arithmetic (the amounts here are positive)."""
    return f"Rp {Decimal(value).quantize(Decimal(1), rounding=ROUND_HALF_UP):,}"


@pytest.mark.parametrize("width", WIDTHS)
def test_top_keeps_ids_names_and_whole_amounts_at_every_width(cli, synced, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    rows = json.loads(cli("query", "top", "--limit", "5", "--days", "10", "--format", "json").stdout)
    out = cli("query", "top", "--limit", "5", "--days", "10").stdout
    lines = _table_lines(out)
    assert lines and all(len(line) <= width for line in lines), out
    body = [line for line in lines if line.startswith("│")]
    for row in rows:  # each client on one line: id, whole name and the ranked amount side by side
        line = next(line for line in body if f"│ {row['name']} " in line)
        assert re.search(rf"│\s+{row['client_id']} │", line), line
        assert _rupiah(row["total_sales"]) in line, line
    shown = ["client_id", "name", *_TOP_SHOWN]
    left_out = _left_out(out, shown)
    assert left_out == shown[len(shown) - len(left_out):]  # dropped from the end, by priority
    if width == 80:
        assert "gojek_sales" in left_out
    if left_out:  # what is shown is whole: the first shown amount and count columns of row 1
        assert f"{rows[0]['total_orders']:,}" in out
    if width == 200:
        assert f"{rows[0]['new_customer_share'] * 100:.2f}%" in out or "new_customer_share" in left_out


@pytest.mark.parametrize("width", WIDTHS)
def test_daily_dates_are_never_cut(cli, synced, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    rows = json.loads(cli("query", "client", "3", "--daily", "--days", "3", "--format", "json").stdout)
    out = cli("query", "client", "3", "--daily", "--days", "3").stdout
    assert len(rows) == 3
    for row in rows:
        assert re.search(rf"│ {row['stat_date']} │ +{re.escape(_rupiah(row['total_sales']))} │", out), out


@pytest.mark.parametrize("width", WIDTHS)
def test_sql_keeps_every_column_readable(cli, synced, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    statement = "SELECT * FROM client_stats ORDER BY client_id, stat_date LIMIT 3"
    rows = json.loads(cli("query", "sql", statement, "--format", "json").stdout)
    out = cli("query", "sql", statement).stdout
    assert "left out" not in out  # query sql never drops a column: it stacks rows instead
    for row in rows:
        for column, value in row.items():
            assert column in out.replace(" ", "_") or column in out
            assert str(value) in out, (column, value)
    assert all(len(line) <= width for line in _table_lines(out))


def test_sql_shows_values_as_sqlite_gives_them(cli, synced, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    out = cli("query", "sql", "SELECT 2026 AS year, 123456 AS client_id, 0.25 AS refund_rate, NULL AS note").stdout
    line = next(line for line in out.splitlines() if "2026" in line)
    assert re.fullmatch(r"│ +2026 │ +123456 │ +0\.25 │ NULL +│", line), line
    assert "2,026" not in out and "25.00%" not in out


def test_sql_piped_without_columns_is_as_wide_as_it_needs(cli, synced, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    out = cli("query", "sql", "SELECT * FROM client_stats LIMIT 2").stdout
    header = _table_lines(out)[1]
    assert "client_id" in header and "stat_date" in header and "updated_at" in header  # every column, named as SQL gave it


def test_columns_select_and_order_every_format(cli, synced, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    args = ("query", "top", "--limit", "2", "--days", "10", "--columns", "total_orders,name")
    rows = json.loads(cli(*args, "--format", "json").stdout)
    assert [list(row) for row in rows] == [["total_orders", "name"]] * 2
    csv_lines = cli(*args, "--format", "csv").stdout.splitlines()
    assert csv_lines[0] == "total_orders,name"
    assert csv_lines[1] == f"{rows[0]['total_orders']},{rows[0]['name']}"
    table = cli(*args).stdout
    assert re.search(rf"│ +{rows[0]['total_orders']:,} │ {rows[0]['name']} +│", table), table
    assert "left out" not in table
    # a column outside the default table view can be asked for too
    wide = json.loads(cli("query", "top", "--limit", "1", "--columns", "period_start,client_id", "--format", "json").stdout)
    assert list(wide[0]) == ["period_start", "client_id"]


def test_unknown_column_is_a_usage_error_that_lists_the_columns(cli, synced):
    result = cli("query", "top", "--columns", "name,salez")
    assert result.code == 2
    assert result.stderr.startswith("error: --columns: no column 'salez' in this report (one of: client_id, name,")
    assert cli("query", "top", "--columns", " , ").code == 2


def test_a_too_narrow_terminal_stacks_rows_instead_of_cutting(cli, synced, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    rows = json.loads(cli("query", "top", "--limit", "2", "--format", "json").stdout)
    out = cli("query", "top", "--limit", "2").stdout
    assert "-[ row 2 ]" in out
    assert f"total_sales         {_rupiah(rows[1]['total_sales'])}" in out
    assert f"name                {rows[1]['name']}" in out


def test_a_too_narrow_terminal_says_why_a_report_has_no_rows(cli, synced, monkeypatch):
    monkeypatch.setenv("COLUMNS", "30")  # movers' leading columns do not fit: stacked, not a table
    out = cli("query", "movers", "--compare", "year").stdout
    assert "┏" not in out and "nothing to compare" in " ".join(out.split()) and "no rows" not in out  # said once, wrapped


HOSTILE = {
    1: "[/bold] Warung",
    2: "Kopi [red]Ubud[/red]",
    3: "Evil\x1b]0;pwned\x07\nsync ok: forged \x1b[2J",
}


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_remote_names_are_shown_literally_and_never_as_control_codes(cli, config, demo, monkeypatch, fmt):
    demo.faults.names.update(HOSTILE)
    assert cli("sync", "--days-back", "3").code == 0
    monkeypatch.setenv("COLUMNS", "200")
    result = cli("query", "top", "--limit", "12", "--days", "3", "--format", fmt, "--columns", "client_id,name")
    assert result.code == 0, result.stderr
    if fmt == "json":
        names = {row["client_id"]: row["name"] for row in json.loads(result.stdout)}
        assert {cid: names[cid] for cid in HOSTILE} == HOSTILE  # the exact text
        return
    if fmt == "csv":
        assert "[/bold] Warung" in result.stdout and '"Evil\x1b]0;pwned\x07\nsync ok: forged \x1b[2J"' in result.stdout
        return
    assert "[/bold] Warung" in result.stdout and "Kopi [red]Ubud[/red]" in result.stdout
    assert "Evil\\x1b]0;pwned\\x07\\nsync ok: forged \\x1b[2J" in result.stdout
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert not any(line.startswith("sync ok") for line in result.stdout.splitlines())
    title = cli("query", "client", "3", "--days", "3").stdout.splitlines()[0]
    assert title.startswith("Client 3 Evil\\x1b]0;pwned\\x07\\nsync ok")


def test_sql_columns_of_the_same_name_are_all_kept(cli, synced):
    as_json = cli("query", "sql", "SELECT 1 AS a, 2 AS a, 3 AS a_2", "--format", "json")
    assert json.loads(as_json.stdout) == [{"a": 1, "a_2": 2, "a_2_2": 3}]
    # Said, not silent (an analyst review): a script reads the keys.
    assert as_json.stderr.strip().endswith("warning: columns of the same name renamed: a -> a_2, a_2 -> a_2_2")
    assert cli("query", "sql", "SELECT 1 AS a, 2 AS a", "--format", "csv").stdout.splitlines() == ["a,a_2", "1,2"]
    assert "note: columns of the same name renamed: a -> a_2" in cli("query", "sql", "SELECT 1 AS a, 2 AS a").stdout
    assert "renamed" not in cli("query", "sql", "SELECT 1 AS a, 2 AS b").stdout


@pytest.mark.parametrize("width", ["200", "10"])  # a table, and stacked rows
def test_sql_aliases_are_shown_literally_too(cli, synced, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", width)
    result = cli("query", "sql", 'SELECT 1 AS "[/bold]", 2 AS "t\x1b]0;x\x07"')
    assert result.code == 0, result.stderr
    assert "[/bold]" in result.stdout and "t\\x1b]0;x\\x07" in result.stdout and "\x1b" not in result.stdout


def test_invisible_and_line_breaking_characters_are_escaped(cli, config, demo, monkeypatch):
    demo.faults.names = {1: "x\u2028sync ok: forged\u200b\ufeff\u200f"}
    assert cli("sync", "--days-back", "1").code == 0
    monkeypatch.setenv("COLUMNS", "120")
    out = cli("query", "top", "--limit", "12", "--days", "1", "--columns", "client_id,name").stdout
    assert "x\\u2028sync ok: forged\\u200b\\ufeff\\u200f" in out
    assert not any(ch in out for ch in "\u2028\u200b\ufeff\u200f")


def test_period_totals_keep_their_figures_on_a_narrow_terminal(cli, synced, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    rows = json.loads(cli("query", "totals", "--by", "week", "--days", "10", "--format", "json").stdout)
    out = cli("query", "totals", "--by", "week", "--days", "10").stdout
    for row in rows:
        assert re.search(rf"│ {row['period']} │ +{re.escape(_rupiah(row['total_sales']))} │", out), out


def test_a_column_asked_for_twice_is_a_usage_error(cli, synced):
    result = cli("query", "top", "--columns", "name,name,client_id")
    assert result.code == 2 and "'name' is given twice" in result.stderr
