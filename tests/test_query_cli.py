"""`delivery-sync query ...` end to end: formats, read-only guarantees, bad input, import weight."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SCRIPT
from freezegun import freeze_time
from test_reports import NOW, REFUSED_STATEMENTS, TODAY, assert_matches, build_replica, expected_clients, load_rows

from delivery_sync import replica as replica_module


@pytest.fixture(scope="module")
def replica(tmp_path_factory) -> Path:
    return build_replica(tmp_path_factory.mktemp("query") / "replica.db")


@pytest.fixture
def query(cli, replica):
    """`delivery-sync --db REPLICA query ARGS...` on 10 March in Bali."""

    def run(*args: str):
        with freeze_time(NOW):
            return cli("--db", str(replica), "query", *args)

    return run


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_top_json_is_an_array_keyed_by_column_names(query, replica):
    result = query("top", "--days", "30", "--limit", "3", "--format", "json")
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)
    expected = expected_clients(load_rows(replica), TODAY.replace(day=9, month=2), TODAY)
    ranked = sorted(expected, key=lambda c: (-expected[c]["total_sales"], c))[:3]
    assert [row["client_id"] for row in rows] == ranked
    assert list(rows[0])[:5] == ["client_id", "name", "period_start", "period_end", "days_with_data"]
    assert {"total_sales", "grab_orders", "ads_roas", "avg_order_value", "new_customer_share"} <= set(rows[0])
    for row in rows:
        assert_matches(row, expected[row["client_id"]])


def test_csv_has_the_json_header_and_empty_cells_for_null(query):
    as_json = json.loads(query("client", "3", "--days", "7", "--format", "json").stdout)
    result = query("client", "3", "--days", "7", "--format", "csv")
    assert result.code == 0
    header, *rows = list(csv.reader(io.StringIO(result.stdout)))
    assert header == list(as_json[0]) and len(rows) == 1
    cells = dict(zip(header, rows[0]))
    assert cells["gojek_sales"] == "" and cells["gojek_ads_roas"] == ""  # client 3 is Grab-only
    assert float(cells["grab_sales"]) == as_json[0]["grab_sales"]


def test_table_reads_well_for_an_operator(query):
    result = query("top", "--days", "7", "--limit", "3")
    assert result.code == 0
    assert "Top 3 clients by total_sales, 2026-03-04..2026-03-10" in result.stdout
    assert "Rp " in result.stdout and "," in result.stdout and "%" in result.stdout
    single = query("totals", "--days", "7").stdout
    assert "clients with data" in single and "avg order value" in single


def test_top_title_counts_the_clients_listed_when_fewer_qualify(query, replica):
    clients = len(expected_clients(load_rows(replica), TODAY.replace(day=4), TODAY))
    result = query("top", "--days", "7", "--limit", "500")
    assert result.code == 0
    assert f"Top {clients} clients by total_sales, 2026-03-04..2026-03-10" in result.stdout
    one = query("top", "--days", "7", "--limit", "1", "--by", "ads_roas", "--asc")
    assert "Bottom 1 client by ads_roas, 2026-03-04..2026-03-10" in one.stdout


def test_totals_by_week_and_client_daily(query):
    weeks = json.loads(query("totals", "--by", "week", "--from", "2026-02-01", "--to", "2026-02-28", "--format", "json").stdout)
    assert [w["period"] for w in weeks] == ["2026-01-26", "2026-02-02", "2026-02-09", "2026-02-16", "2026-02-23"]
    assert (weeks[0]["period_start"], weeks[-1]["period_end"]) == ("2026-02-01", "2026-02-28")  # clipped to the window
    daily = json.loads(query("client", "2", "--daily", "--days", "3", "--format", "json").stdout)
    assert [d["stat_date"] for d in daily] == ["2026-03-08", "2026-03-09", "2026-03-10"]


def test_client_says_when_it_has_no_data_and_its_daily_table_shows_active_when_asked(query):
    """An analyst review: a window without the client's data was a table of dashes, unexplained;
    `--show-active` reached CSV and JSON but not the daily table."""
    note = "the client has no data in this window"
    empty = query("client", "2", "--from", "2020-01-01", "--to", "2020-01-31")
    assert empty.code == 0 and f"note: {note}" in empty.stdout
    as_csv = query("client", "2", "--from", "2020-01-01", "--to", "2020-01-31", "--format", "csv")
    assert as_csv.stderr.strip().endswith(f"warning: {note}") and as_csv.stdout.count("\n") == 2
    assert note not in query("client", "2", "--days", "7").stdout + query("client", "2", "--days", "7").stderr
    daily = query("client", "2", "--daily", "--days", "2", "--show-active").stdout
    assert daily.splitlines()[2].split("┃")[1:3] == [" stat date  ", " active "]


@pytest.mark.parametrize("args, message", [
    (("top", "--by", "revenue"), "unknown metric 'revenue'"),
    (("top", "--limit", "0"), "--limit must be at least 1"),
    (("top", "--limit", "-5"), "--limit must be at least 1"),
    (("client", "999"), "unknown client id 999"),
    (("top", "--from", "2026-02-30"), "--from: '2026-02-30' is not a date"),
    (("totals", "--to", "tomorrow", "--from", "2026-01-01"), "--to: 'tomorrow' is not a date"),
    (("totals", "--to", "2026-03-11", "--days", "7"), "--to 2026-03-11 is after today (2026-03-10 in source.timezone)"),
    (("top", "--compare", "month"), "--compare: 'month' is not one of previous, year"),
    (("totals", "--by", "week", "--compare", "year"), "--compare compares the window's totals"),
    (("top", "--min-orders", "-1"), "--min-orders must be at least 0"),
    (("movers", "--rank", "size"), "--rank: 'size' is not one of pct, change"),
    (("movers", "--by", "revenue"), "unknown metric 'revenue'"),
    (("totals", "--by", "year"), "unknown grouping 'year'"),
    (("top", "--days", "0"), "--days must be at least 1"),
    (("top", "--days", "7", "--from", "2026-03-01"), "either --days or --from/--to"),
    (("top", "--format", "xml"), "--format"),
    (("sql", "SELECT 1", "--max-seconds", "0"), "--max-seconds must be more than 0"),
])
def test_bad_input_is_one_line_and_exit_2(query, args, message):
    result = query(*args)
    assert result.code == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_query_without_a_replica_exits_2_with_a_hint_and_creates_nothing(cli, tmp_path):
    missing = tmp_path / "nothing.db"
    for args in (("top",), ("sql", "SELECT 1")):
        result = cli("--db", str(missing), "query", *args)
        assert result.code == 2 and "no replica" in result.stderr and f"run 'delivery-sync --db {missing} sync' first" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("statement", REFUSED_STATEMENTS)
def test_sql_refuses_writes_and_leaves_the_file_untouched(query, replica, tmp_path, statement):
    before = digest(replica)
    before_files = sorted(p.name for p in replica.parent.iterdir())
    result = query("sql", statement)
    assert result.code == 2 and result.stderr.startswith("error: refused")
    assert digest(replica) == before
    assert not (tmp_path / "copy.db").exists() and not (tmp_path / "other.db").exists()
    # Refused before the replica is opened: not even SQLite's -wal/-shm side files appear.
    assert sorted(p.name for p in replica.parent.iterdir()) == before_files


def test_sql_select_works_while_a_sync_holds_the_lock_and_writes(cli, replica, tmp_path):
    copy = tmp_path / "copy.db"
    copy.write_bytes(replica.read_bytes())
    with replica_module.writer_lock(copy, "sync"):
        db = replica_module.open_replica(copy)
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM client_stats WHERE client_id = 1")  # uncommitted: readers must not see it
        with freeze_time(NOW):
            counted = cli("--db", str(copy), "query", "sql", "SELECT COUNT(*) AS n FROM client_stats", "--format", "json")
            top = cli("--db", str(copy), "query", "top", "--limit", "100", "--format", "json")
        db.execute("COMMIT")
        db.close()
    assert counted.code == 0 and json.loads(counted.stdout) == [{"n": len(load_rows(replica))}]
    assert top.code == 0 and 1 in [row["client_id"] for row in json.loads(top.stdout)]


def test_sql_runaway_query_is_interrupted_with_exit_1(cli, replica):
    # Not under freeze_time: the deadline runs on the real monotonic clock.
    endless = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT COUNT(*) FROM n"
    result = cli("--db", str(replica), "query", "sql", endless, "--max-seconds", "0.3")
    assert result.code == 1 and "query interrupted after 0.3 s" in result.stderr


def test_json_report_path_imports_no_http_sync_or_rich(replica):
    probe = (
        "import sys\n"
        "from delivery_sync.cli import main\n"
        "try:\n"
        f"    main(['--db', {str(replica)!r}, 'query', 'top', '--from', '2026-03-01', '--to', '2026-03-10', '--format', 'json'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('httpx', 'tenacity', 'sqlite_utils', 'rich', 'delivery_sync.sync', 'delivery_sync.source')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stderr.strip().splitlines()[-1] == "[]"
    assert json.loads(result.stdout)


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_a_reader_that_stops_early_is_not_an_error(replica, fmt):
    """`... | head -1`: exit 0 and nothing on stderr, though most of the output was never read."""
    exe = Path(SCRIPT)
    rows = 5000 if fmt == "table" else 30000  # well past the 64 KB a pipe holds
    statement = f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) SELECT i, 'x' AS pad FROM n"
    script = f'set -o pipefail; "{exe}" --db "{replica}" query sql "{statement}" --format {fmt} | head -1'
    env = {**os.environ, "DELIVERY_SYNC_STATUS__STALE_AFTER_HOURS": "500000"}  # the March replica: no staleness warning
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.strip() in ("i,pad", "[", "┏━━━━━━┳━━━━━┓")


def test_sql_columns_are_headed_by_the_names_the_statement_gave(query):
    """A report's `total_sales` is headed `total sales`; `query sql`'s columns are the analyst's
    own names, shown as written (`my_col`, `quick_check`), never re-spelled."""
    result = query("sql", "SELECT client_id, total_sales AS my_col, 1 AS \"two words\" FROM client_stats LIMIT 1")
    assert result.code == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if line.startswith("┃"))
    assert [cell.strip() for cell in header.strip("┃").split("┃")] == ["client_id", "my_col", "two words"]
