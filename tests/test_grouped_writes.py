"""Several clients per transaction (replica.WriteGroup): a kill while a group is open leaves every
client either as it was or fully updated, with the committed groups kept whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import date, timedelta

from conftest import DEMO_CLIENTS, is_postgres, query_db, store_of

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


def _rows_on(marks: dict[date, int]):
    """ClientRows with every value of each day `marks[day]`."""
    from delivery_sync.metrics import METRICS
    from delivery_sync.records import ClientRows, Row

    return ClientRows({day: Row._make([mark] * len(METRICS) + [None]) for day, mark in marks.items()}, [], len(marks))


def test_rows_read_ahead_by_expect_are_written_as_if_each_client_read_its_own(engine):
    """`expect` reads the stored rows of several clients by one statement over the span of all
    their windows: each client's write must still see only its own window (updates, unchanged
    rows, the prune of a day no longer sent), and the rows around it stay as they were."""
    from delivery_sync.metrics import METRICS

    nov = {d: date(2026, 11, d) for d in range(21, 31)}
    db = store_of(engine).open()
    try:
        run_id = db.start_run("sync")
        group = db.write_group()
        for cid in (1, 2):
            group.write(run_id, cid, (nov[21], nov[30]), _rows_on(dict.fromkeys(nov.values(), 1)))
        group.commit()
        statements: list[str] = []
        if not is_postgres(engine):
            db.db.conn.set_trace_callback(statements.append)
        windows = {1: (nov[25], nov[27]), 2: (nov[21], nov[30])}
        group.expect(list(windows.items()))
        # Client 1: two days changed, the third no longer sent (pruned); client 2: its last day changed.
        one = group.write(run_id, 1, windows[1], _rows_on({nov[25]: 2, nov[26]: 2}), prune=True)
        two = group.write(run_id, 2, windows[2], _rows_on({**dict.fromkeys(nov.values(), 1), nov[30]: 3}), prune=True)
        group.commit()
    finally:
        db.close()
    assert (one.updated, one.unchanged, one.deleted, one.inserted) == (2, 0, 1, 0)
    assert (two.updated, two.unchanged, two.deleted, two.inserted) == (1, 9, 0, 0)
    if statements:  # SQLite: the stored rows of both were read by the one statement of expect
        assert len([s for s in statements if s.startswith("SELECT") and "FROM client_stats" in s]) == 1
    stored = query_db(engine, "SELECT client_id, stat_date, grab_sales FROM client_stats ORDER BY client_id, stat_date")
    expected = [(1, d.isoformat(), 2 if d in (nov[25], nov[26]) else 1) for d in nov.values() if d != nov[27]]
    expected += [(2, d.isoformat(), 3 if d == nov[30] else 1) for d in nov.values()]
    assert [tuple(row) for row in stored] == expected
    logged = query_db(engine, 'SELECT client_id, COUNT(*) FROM stat_changes GROUP BY client_id ORDER BY client_id')
    assert [tuple(row) for row in logged] == [(1, 2 * len(METRICS) + 1), (2, len(METRICS))]


def test_the_writer_reads_ahead_clients_of_one_window_up_to_expected_rows_days(tmp_path, monkeypatch):
    from delivery_sync import replica
    from delivery_sync.days import Window
    from delivery_sync.replica import writer

    monkeypatch.setattr(writer, "EXPECTED_ROWS", 10)
    db = replica.open_replica(tmp_path / "replica.db")
    try:
        sync = replica.SyncWriter(store_of(tmp_path / "replica.db").open(), replica.start_run(db, "sync"), replica.RunCounts())
        four_days = Window(date(2026, 11, 1), date(2026, 11, 4))
        assert sync.expect((cid, four_days) for cid in range(1, 10)) == 3  # 4 + 4 + 4 days reach 10
        assert sync.expect([(1, Window(date(2025, 1, 1), date(2025, 12, 31)))]) == 1  # at least one client
        one_day = Window(date(2026, 11, 4), date(2026, 11, 4))
        assert sync.expect([(1, one_day), (2, one_day), (3, four_days), (4, one_day)]) == 2  # one window a read
        assert sync.expect([]) == 0
    finally:
        db.close()


def test_a_client_written_twice_in_one_group_compares_with_its_first_write(engine):
    """Updates wait for the group's commit; a second write of the same client in the group must
    still see the first's rows, so each change is logged once, from the value it replaced."""
    day = date(2026, 11, 30)
    db = store_of(engine).open()
    try:
        run_id = db.start_run("sync")
        group = db.write_group()
        group.write(run_id, 1, (day, day), _rows_on({day: 1}))
        group.commit()
        first = group.write(run_id, 1, (day, day), _rows_on({day: 2}))
        second = group.write(run_id, 1, (day, day), _rows_on({day: 3}))
        group.commit()
    finally:
        db.close()
    assert (first.updated, second.updated) == (1, 1)
    assert [tuple(r) for r in query_db(engine, "SELECT grab_sales, total_orders FROM client_stats")] == [(3, 3)]
    logged = query_db(engine, "SELECT old_value, new_value FROM stat_changes WHERE \"column\" = 'grab_sales'")
    assert sorted(tuple(float(v) for v in row) for row in logged) == [(1, 2), (2, 3)]


def test_a_group_runs_its_waiting_updates_once_later_max_rows_wait(engine, monkeypatch):
    """Updates wait for the commit only up to LATER_MAX_ROWS rows, so a remote that restates a
    whole year never has a group's updates and changes all held in memory."""
    from delivery_sync.replica import upsert

    monkeypatch.setattr(upsert, "LATER_MAX_ROWS", 2)
    days = [date(2026, 11, 29), date(2026, 11, 30)]
    db = store_of(engine).open()
    try:
        run_id = db.start_run("sync")
        group = db.write_group()
        for cid in (1, 2):
            group.write(run_id, cid, (days[0], days[1]), _rows_on(dict.fromkeys(days, 1)))
        group.commit()
        group.write(run_id, 1, (days[0], days[1]), _rows_on(dict.fromkeys(days, 2)))
        waiting = [tuple(r) for r in db.db.execute("SELECT grab_sales FROM client_stats WHERE client_id = 1")]
        group.write(run_id, 2, (days[0], days[1]), _rows_on(dict.fromkeys(days, 2)))  # 2 rows wait: run first
        ran = [tuple(r) for r in db.db.execute("SELECT grab_sales FROM client_stats WHERE client_id = 1")]
        group.commit()
    finally:
        db.close()
    assert (waiting, ran) == ([(1,), (1,)], [(2,), (2,)])
    assert [tuple(r) for r in query_db(engine, "SELECT DISTINCT grab_sales FROM client_stats")] == [(2,)]


def test_a_bad_row_rolls_back_the_open_group_when_it_is_written_or_at_the_commit(engine):
    """SQLite inserts a client's new rows as it writes it; PostgreSQL keeps them for the group's
    commit (one COPY, not one a client). Either way a row the engine refuses ends the group
    whole: its clients stay as they were, none counted as written, the committed group kept."""
    from delivery_sync import replica
    from delivery_sync.days import Window

    day = date(2026, 11, 30)
    db = store_of(engine).open()
    errors = []
    try:
        writer = replica.SyncWriter(db, db.start_run("sync"), replica.RunCounts())
        writer.write(1, Window(day, day), _rows_on({day: 1}))
        writer.commit()
        writer.write(2, Window(day, day), _rows_on({day: 2}))
        waiting = [tuple(r) for r in db.db.execute("SELECT client_id FROM client_stats ORDER BY client_id")]
        bad = _rows_on({day: 3})
        bad.values[day] = bad.values[day]._replace(grab_orders=[1, 2])  # neither engine stores a list
        try:
            writer.write(3, Window(day, day), bad)
            writer.commit()
        except Exception as exc:
            errors.append(exc)
    finally:
        db.close()
    assert len(errors) == 1
    assert waiting == ([(1,)] if is_postgres(engine) else [(1,), (2,)])  # client 2's row waits on PostgreSQL
    assert [tuple(r) for r in query_db(engine, "SELECT client_id, grab_sales FROM client_stats")] == [(1, 1)]
    assert writer.written == {1}
