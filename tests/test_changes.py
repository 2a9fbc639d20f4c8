"""The change log of restated history (`stat_changes`, docs/reference.md) and `query changes`, over
loopback, on both engines (`both_engines`, tests/conftest.py)."""

from __future__ import annotations

import csv
import io
import json
import logging
import sqlite3
from pathlib import Path

import pytest
from conftest import DEMO_CLIENTS, dialect, query_db
from freezegun import freeze_time

from delivery_sync import replica
from delivery_sync.metrics import METRICS

NOW = "2026-11-23T10:00:00Z"  # Bali 18:00 on 2026-11-23
FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = pytest.mark.both_engines


def sync(cli, *args):
    with freeze_time(NOW, tick=True):
        return cli("sync", "--days-back", "5", *args)


def changes(db_path):
    order = dialect(db_path).row_order  # the order the rows were logged in
    return query_db(db_path, f'SELECT run_id, client_id, stat_date, "column", old_value, new_value FROM stat_changes ORDER BY {order}')


def test_a_correction_logs_each_changed_value_and_nothing_else(cli, config, db_path, demo):
    assert sync(cli).code == 0
    assert changes(db_path) == []  # inserts of new days are not changes
    old_sales, old_orders = query_db(db_path, "SELECT grab_sales, gojek_orders FROM client_stats WHERE client_id = 4 AND stat_date = '2026-11-21'")[0]
    demo.faults.overrides[(4, "2026-11-21")] = {"grab_sales": "123456.00", "gojek_orders": 3}
    result = sync(cli)
    assert result.code == 0 and "1 updated" in result.stderr
    (run_id,) = query_db(db_path, "SELECT MAX(id) FROM sync_runs WHERE command = 'sync'")[0]
    assert changes(db_path) == [
        (run_id, 4, "2026-11-21", "grab_sales", old_sales, 123456.0),
        (run_id, 4, "2026-11-21", "gojek_orders", old_orders, 3),
    ]
    (changed_at,) = query_db(db_path, "SELECT DISTINCT changed_at FROM stat_changes")[0]
    assert query_db(db_path, "SELECT updated_at FROM client_stats WHERE client_id = 4 AND stat_date = '2026-11-21'") == [(changed_at,)]
    # An unchanged re-sync logs nothing more.
    assert sync(cli).code == 0
    assert len(changes(db_path)) == 2


def test_a_pruned_row_is_logged_as_star_with_the_old_row(cli, config, db_path, demo):
    assert sync(cli).code == 0
    (before,) = query_db(db_path, "SELECT grab_sales, total_orders, extra FROM client_stats WHERE client_id = 2 AND stat_date = '2026-11-20'")
    demo.faults.deleted_rows = {(2, "2026-11-20")}
    assert sync(cli, "--prune").code == 0
    ((run_id, client_id, day, column, old, new),) = changes(db_path)
    assert (client_id, day, column, new) == (2, "2026-11-20", "*", None)
    old = json.loads(old)
    assert (old["grab_sales"], old["total_orders"], old["extra"]) == before


def test_query_changes_lists_them_newest_run_first_in_every_format(cli, config, db_path, demo, monkeypatch):
    assert sync(cli).code == 0
    demo.faults.overrides[(3, "2026-11-22")] = {"grab_repeated_customers": 1}  # a long metric name (client 3 is Grab-only)
    assert sync(cli).code == 0
    demo.faults.overrides[(5, "2026-11-23")] = {"total_sales": "999.00"}
    assert sync(cli).code == 0
    with freeze_time(NOW):
        as_json = json.loads(cli("query", "changes", "--days", "7", "--format", "json").stdout)
        as_csv = list(csv.DictReader(io.StringIO(cli("query", "changes", "--days", "7", "--format", "csv").stdout)))
        table = cli("query", "changes", "--days", "7")
        one = json.loads(cli("query", "changes", "--client", "3", "--format", "json").stdout)
        outside = json.loads(cli("query", "changes", "--from", "2026-11-23", "--format", "json").stdout)
        unchanged = cli("query", "changes", "--client", "4")
        unknown = cli("query", "changes", "--client", "9999")
        monkeypatch.setenv("COLUMNS", "80")
        narrow = cli("query", "changes", "--days", "7")
    assert [(r["client_id"], r["stat_date"], r["column"]) for r in as_json] == [
        (5, "2026-11-23", "total_sales"), (3, "2026-11-22", "grab_repeated_customers")]
    newest = as_json[0]
    assert newest["new_value"] == 999.0 and newest["difference"] == round(999.0 - newest["old_value"], 2)
    assert newest["name"] and newest["run_id"] > as_json[1]["run_id"]
    assert as_json[1]["new_value"] == 1 and as_json[1]["difference"] == 1 - as_json[1]["old_value"]
    assert list(as_csv[0]) == ["client_id", "name", "stat_date", "column", "old_value", "new_value", "difference", "run_id", "changed_at"]
    assert [r["column"] for r in as_csv] == ["total_sales", "grab_repeated_customers"]
    assert table.code == 0 and "total_sales" in table.stdout and "grab_repeated_customers" in table.stdout
    # 80 columns: a table, never rows stacked; client, day, column and difference side by side.
    lines = narrow.stdout.splitlines()
    assert narrow.code == 0 and "-[ row" not in narrow.stdout and max(map(len, lines)) <= 80
    header = " ".join(line for line in lines if line.startswith("┃"))
    assert [header.find(h) >= 0 for h in ("client", "stat", "column", "difference", "run")] == [True] * 5, narrow.stdout
    assert "new" in header and "old" not in header  # the value held now, before the one it replaced
    assert any("grab_repeated_customers" in line and "│" in line for line in lines)
    assert [r["client_id"] for r in one] == [3]
    assert [r["client_id"] for r in outside] == [5]  # the window filters the restated day
    assert unchanged.code == 0 and "the remote changed no stored day of this window" in unchanged.stdout
    # A mistyped id is not "no changes": refused as `query client` refuses it.
    assert unknown.code == 2 and unknown.stdout == ""
    assert unknown.stderr.startswith("error: unknown client id 9999: not in the replica")


def test_a_change_of_extra_shows_its_old_and_new_text_side_by_side_in_a_table(cli, config, db_path, demo, monkeypatch):
    """`extra` holds the remote's other columns as JSON: its old and new text, each wider than a
    120-column table can give both, are cut with an ellipsis there, so the new value is never left
    out beside the old; csv and json keep them whole."""
    assert sync(cli).code == 0
    demo.faults.overrides[(3, "2026-11-22")] = {"created_at": "2026-11-23T09:30:00.000Z"}  # the collector ran again
    assert sync(cli).code == 0
    monkeypatch.setenv("COLUMNS", "120")
    with freeze_time(NOW):
        rows = json.loads(cli("query", "changes", "--days", "7", "--format", "json").stdout)
        table = cli("query", "changes", "--days", "7")
    assert [(r["client_id"], r["column"]) for r in rows] == [(3, "extra")]
    assert "2026-11-23T09:30:00.000Z" in rows[0]["new_value"] and "2026-11-23T09:30:00.000Z" not in rows[0]["old_value"]
    lines = table.stdout.splitlines()
    header = " ".join(line for line in lines if line.startswith("┃"))
    row = next(line for line in lines if "│ extra " in line)
    assert table.code == 0 and max(map(len, lines)) <= 120 and "old value" in header and "new value" in header, table.stdout
    assert row.count("…") == 2 and rows[0]["old_value"][:10] in row and rows[0]["new_value"][:10] in row


@pytest.mark.sqlite_only("upgrades a SQLite replica file written by schema version 1 (no PostgreSQL replica had it)")
def test_a_replica_of_schema_1_is_upgraded_in_place_without_touching_rows(cli, config, db_path, caplog):
    # tests/fixtures/replica_schema1.sql: a 3-client x 3-day replica written by schema version 1
    # (before stat_changes), dumped with sqlite3's iterdump.
    conn = sqlite3.connect(db_path)
    conn.executescript((FIXTURES / "replica_schema1.sql").read_text())
    before = conn.execute("SELECT * FROM client_stats ORDER BY client_id, stat_date").fetchall()
    conn.close()
    assert len(before) == 9
    with caplog.at_level(logging.INFO, logger="delivery_sync.replica.schema"):
        db = replica.open_replica(db_path)
    db.close()
    assert [r.getMessage() for r in caplog.records] == [
        f"replica {db_path}: upgrading its schema to version {replica.SCHEMA_VERSION} (0002_stat_changes, 0003_sync_unfetched, "
        "0004_client_stats_named, 0005_stat_date_index_sums, 0006_sync_selected, 0007_stat_date_index_all_metrics), once"]
    assert query_db(db_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(replica.SCHEMA_VERSION),)]
    assert query_db(db_path, "SELECT * FROM client_stats ORDER BY client_id, stat_date") == before
    assert {r[0] for r in query_db(db_path, "SELECT name FROM sqlite_master WHERE tbl_name = 'stat_changes'")} >= {
        "stat_changes", "idx_stat_changes_client_id_stat_date", "idx_stat_changes_run_id",
    }
    # the stat_date index (stat_date alone in schema 1) now holds every metric the reports sum from it
    assert [r[0] for r in query_db(db_path, "SELECT name FROM pragma_index_info('idx_client_stats_stat_date')")] == [
        "stat_date", "client_id", *METRICS]
    # and a sync on it works as on any replica (the demo remote has the same seed-42 data)
    assert sync(cli).code == 0
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * 5,)]


def test_the_demo_source_restates_recent_days_from_the_second_sync_on(cli, tmp_path, db_path):
    from conftest import write_config

    from delivery_sync.demo_source import DemoSource

    with DemoSource(clients=40, restate=True) as demo:
        write_config(tmp_path / "config.toml", demo.url, db_path)
        assert sync(cli).code == 0
        result = sync(cli)
    assert result.code == 0
    logged = query_db(db_path, 'SELECT DISTINCT stat_date, "column" FROM stat_changes ORDER BY 1, 2')
    assert logged and {day for day, _ in logged} <= {"2026-11-21", "2026-11-22", "2026-11-23"}
    assert {column for _, column in logged} <= {"grab_sales", "total_sales"}
    # Subtracted here: PostgreSQL keeps the values as JSON, which has no `-`.
    refunds = [new - old for old, new in query_db(db_path, "SELECT old_value, new_value FROM stat_changes WHERE \"column\" = 'grab_sales'")]
    assert refunds and all(-150_000 <= r < 0 for r in refunds)
    assert f"{len(refunds)} updated" in result.stderr
