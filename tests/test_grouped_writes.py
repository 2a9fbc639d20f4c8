"""Several clients per transaction (replica.WriteGroup): a kill while a group is open leaves every
client either as it was or fully updated, with the committed groups kept whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import date, timedelta

from conftest import DEMO_CLIENTS, query_db

DAYS = 20
MARK = 4242

# Writes clients 1..6 with what the remote now answers: 1..3 in one committed group, 4..6 in a
# group left open when the parent kills the process.
CHILD = """
import sys, time
from datetime import date
from delivery_sync import replica
from delivery_sync.config import Settings
from delivery_sync.records import parse_rows
from delivery_sync.source import SourceClient

url, path, start, end = sys.argv[1], sys.argv[2], date.fromisoformat(sys.argv[3]), date.fromisoformat(sys.argv[4])
settings = Settings(database=path, source={"url": url, "min_interval": 0})
db = replica.open_replica(settings.database)
run_id = replica.start_run(db, "sync")
group = replica.WriteGroup(db, max_rows=10**9, max_seconds=3600)
with SourceClient(settings.source) as source:
    for cid in range(1, 7):
        rows = parse_rows(source.client_stats(cid, start, end), settings.source.tz, (start, end)).stored()
        group.write(run_id, cid, (start, end), rows)
        if cid == 3:
            group.commit()
print("group open", flush=True)
time.sleep(60)
"""


def test_a_kill_during_a_grouped_transaction_leaves_every_client_old_or_new(cli, config, db_path, demo):
    assert cli("sync", "--days-back", str(DAYS)).code == 0
    today = demo.today()
    start = today - timedelta(days=DAYS - 1)
    for cid in range(1, DEMO_CLIENTS + 1):
        for i in range(DAYS):
            demo.faults.overrides[(cid, (today - timedelta(days=i)).isoformat())] = {"grab_fake_orders": MARK}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, demo.url, str(db_path), start.isoformat(), today.isoformat()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = child.stdout.readline()
        assert line == "group open\n", child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    per_client = dict(query_db(db_path, f"SELECT client_id, SUM(grab_fake_orders IS {MARK}) FROM client_stats GROUP BY client_id"))
    # The committed group is new, the open one and the clients never written are as they were.
    assert per_client == {cid: DAYS if cid <= 3 else 0 for cid in range(1, DEMO_CLIENTS + 1)}
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * DAYS,)]
    changes = dict(query_db(db_path, "SELECT client_id, COUNT(*) FROM stat_changes GROUP BY client_id"))
    assert set(changes) == {1, 2, 3}  # the change log went with its group
    assert query_db(db_path, "PRAGMA integrity_check") == [("ok",)]
    # The next sync repairs the rest.
    assert cli("sync", "--days-back", str(DAYS)).code == 0
    assert query_db(db_path, f"SELECT COUNT(*) FROM client_stats WHERE grab_fake_orders = {MARK}") == [(DEMO_CLIENTS * DAYS,)]


def test_new_rows_beyond_one_insert_statement_are_all_written(cli, config, db_path, demo, monkeypatch):
    from delivery_sync.replica import schema

    monkeypatch.setattr(schema, "INSERT_ROWS", 7)  # 20 days a client: statements of 7, 7 and 6 rows
    assert cli("sync", "--days-back", "20", "--no-aggregate").code == 0
    assert query_db(db_path, "SELECT COUNT(DISTINCT client_id), COUNT(DISTINCT stat_date), COUNT(*) FROM client_stats") == [
        (DEMO_CLIENTS, 20, DEMO_CLIENTS * 20)
    ]
    # Every value where the one-row-at-a-time path put it: the demo's own figures, by column.
    first, last = demo.today() - timedelta(days=19), demo.today()
    expected = {(row_day, row["grab_orders"], row["total_orders"]) for row_day, row in (
        (first + timedelta(days=d), r) for d, r in enumerate(demo.rows(5, first, last)))}
    stored = query_db(db_path, "SELECT stat_date, grab_orders, total_orders FROM client_stats WHERE client_id = 5")
    assert {(date.fromisoformat(d), g, t) for d, g, t in stored} == expected
    assert query_db(db_path, "SELECT rows_inserted FROM sync_runs WHERE command = 'sync'") == [(DEMO_CLIENTS * 20,)]


def test_the_writer_keeps_16_mb_of_pages(tmp_path):
    from delivery_sync.replica.schema import open_replica

    writer = open_replica(tmp_path / "replica.db")
    assert writer.execute("PRAGMA cache_size").fetchone() == (-16 * 1024,)  # KiB, negative by SQLite's convention
    writer.close()


def _window_of(cid: int, days: int, mark: int):
    """A client's `days` days ending 2026-11-30, every value `mark` (grab_orders a text when `mark` is None)."""
    from delivery_sync.metrics import METRICS
    from delivery_sync.records import ClientRows, Row

    last = date(2026, 11, 30)
    values = {last - timedelta(days=d): Row._make([mark] * len(METRICS) + [None]) for d in range(days)}
    return (last - timedelta(days=days - 1), last), ClientRows(values, [], days)


def test_an_error_inside_a_client_rolls_back_the_whole_open_group(tmp_path, monkeypatch):
    from delivery_sync import replica
    from delivery_sync.days import Window
    from delivery_sync.replica import schema

    monkeypatch.setattr(schema, "INSERT_ROWS", 4)  # client 3's first statement goes in before its second fails
    opened = replica.open_store(tmp_path / "replica.db").open()
    db = opened.db
    run_id = opened.start_run("sync")
    writer = replica.SyncWriter(opened, run_id, replica.RunCounts())
    window, rows = _window_of(1, 6, 11)
    writer.write(1, Window(*window), rows)
    writer.commit()
    for cid in (2, 3):
        window, rows = _window_of(cid, 6, 22)
        if cid == 3:
            rows.values[window[0]] = rows.values[window[0]]._replace(grab_orders=[1, 2])  # SQLite cannot bind a list
        try:
            writer.write(cid, Window(*window), rows)
        except Exception as exc:
            assert "binding parameter" in str(exc)
        else:
            assert cid == 2
    # Client 3 failed in its second INSERT: its first rows and client 2, in the same group, went with it.
    assert not db.conn.in_transaction
    writer.commit()
    assert query_db(tmp_path / "replica.db", "SELECT client_id, COUNT(*), MIN(grab_sales) FROM client_stats GROUP BY client_id") == [
        (1, 6, 11.0)
    ]
    assert writer.written == {1} and writer.counts.rows_inserted == 6
    db.close()


def test_a_group_writes_no_savepoint_and_inserts_with_or_fail(tmp_path):
    from delivery_sync import replica

    db = replica.open_replica(tmp_path / "replica.db")
    run_id = replica.start_run(db, "sync")
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    group = replica.WriteGroup(db)
    for cid in (1, 2):
        window, rows = _window_of(cid, 3, 5)
        group.write(run_id, cid, window, rows)
    group.commit()
    db.conn.set_trace_callback(None)
    # A savepoint, or a plain multi-row INSERT (which may ABORT half-way), would have SQLite copy every
    # index page a client touches to a journal first.
    assert not [s for s in statements if "SAVEPOINT" in s.upper()]
    assert [s.split(" client_stats")[0] for s in statements if "INTO client_stats" in s] == ["INSERT OR FAIL INTO"] * 2
    assert query_db(tmp_path / "replica.db", "SELECT COUNT(*) FROM client_stats") == [(6,)]
    db.close()
