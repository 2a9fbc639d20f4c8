"""`sync --incremental`, `sync --prune`, and a sync stopped with Ctrl-C (docs/reference.md, sync), on
both engines (`both_engines`, tests/conftest.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import DEMO_CLIENTS, SCRIPT, clean_env, execute_db, last_run, query_db, stop_when, unstamped, write_config

from delivery_sync.demo_source import DemoSource

pytestmark = pytest.mark.both_engines


@pytest.fixture(autouse=True)
def _per_client_endpoint(monkeypatch):
    """These tests are about one request per client (docs/remote-api.md); tests/test_batch.py covers the batch endpoint."""
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__BATCH", "never")



def stats_windows(demo) -> dict[int, tuple[str, str]]:
    """Client id -> (start_date, end_date) of each stats request the demo received."""
    return {
        int(r.path.split("/")[4]): (r.query["start_date"], r.query["end_date"]) for r in demo.stats_requests()
    }


def last_sync(db_path):
    return last_run(db_path, "status, window_start, window_end, rows_inserted, rows_unchanged, rows_deleted, error")


# --- --incremental ---------------------------------------------------------------------------------


def test_incremental_restarts_at_the_latest_stored_day_minus_lookback(cli, demo, config, db_path):
    today = demo.today()
    demo.faults.hidden_clients = {5}
    assert cli("sync", "--days-back", "10", "--no-aggregate").code == 0
    # Client 2 has fallen behind by 4 more days: the shared window starts from its latest day.
    query_db_delete = f"DELETE FROM client_stats WHERE client_id = 2 AND stat_date > '{today - timedelta(days=4)}'"
    execute_db(db_path, query_db_delete)
    demo.faults.hidden_clients = set()
    demo.requests.clear()

    result = cli("sync", "--incremental", "--days-back", "30", "--no-aggregate")

    assert result.code == 0, result.stderr
    start = (today - timedelta(days=4 + 3)).isoformat()  # client 2's latest day minus lookback_days (3)
    windows = stats_windows(demo)
    assert windows[5] == ((today - timedelta(days=29)).isoformat(), today.isoformat())  # no rows yet: the whole window
    assert {windows[c] for c in windows if c != 5} == {(start, today.isoformat())}  # one window for the others
    status, window_start, window_end, inserted, unchanged, _, _ = last_sync(db_path)
    assert (status, window_start, window_end) == ("ok", (today - timedelta(days=29)).isoformat(), today.isoformat())
    assert inserted == 30 + 4  # client 5's month, client 2's missing days
    assert unchanged == (DEMO_CLIENTS - 1) * 8 - 4
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats WHERE client_id = 2") == [(10,)]


def test_incremental_never_starts_before_days_back(cli, demo, config, db_path):
    today = demo.today()
    assert cli("sync", "--days-back", "20", "--no-aggregate").code == 0
    execute_db(db_path, f"DELETE FROM client_stats WHERE client_id = 3 AND stat_date > '{today - timedelta(days=15)}'")
    demo.requests.clear()
    assert cli("sync", "--incremental", "--days-back", "5", "--no-aggregate").code == 0
    assert set(stats_windows(demo).values()) == {((today - timedelta(days=4)).isoformat(), today.isoformat())}


# --- --prune -------------------------------------------------------------------------------------------


def test_prune_deletes_rows_the_remote_no_longer_returns(cli, demo, config, db_path):
    today = demo.today()
    assert cli("sync", "--days-back", "7", "--no-aggregate").code == 0
    gone = (today - timedelta(days=2)).isoformat()
    outside = (today - timedelta(days=6)).isoformat()
    demo.faults.deleted_rows = {(4, gone), (4, outside)}

    plain = cli("sync", "--days-back", "7", "--no-aggregate")  # without --prune nothing is deleted
    assert plain.code == 0 and query_db(db_path, "SELECT COUNT(*) FROM client_stats WHERE client_id = 4") == [(7,)]

    pruned = cli("sync", "--days-back", "3", "--prune", "--no-aggregate")

    assert pruned.code == 0, pruned.stderr
    assert "1 deleted" in pruned.stderr
    days = [d for (d,) in query_db(db_path, "SELECT stat_date FROM client_stats WHERE client_id = 4 ORDER BY stat_date")]
    assert gone not in days and outside in days and len(days) == 6  # only inside the 3-day window
    assert last_sync(db_path)[5] == 1
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * 7 - 1,)]


def test_prune_keeps_everything_of_a_client_the_remote_returns_nothing_for(cli, demo, config, db_path):
    today = demo.today()
    assert cli("sync", "--days-back", "5", "--no-aggregate").code == 0
    demo.faults.deleted_rows = {(6, (today - timedelta(days=i)).isoformat()) for i in range(5)}

    result = cli("sync", "--days-back", "5", "--prune", "--no-aggregate")

    assert result.code == 0, result.stderr  # a warning, not a failure
    assert "warning: client 6: remote returned no rows" in result.stderr and "nothing pruned" in result.stderr
    assert "0 rejected, 1 warning, window" in result.stderr.splitlines()[-1]  # the summary, kept by -q
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats WHERE client_id = 6") == [(5,)]
    status, *_, rows_deleted, error = last_sync(db_path)
    assert (status, rows_deleted) == ("ok", 0) and "client 6" in error


# --- Ctrl-C ---------------------------------------------------------------------------------------------


def _start_sync(config: Path, tmp_path: Path, *args: str) -> subprocess.Popen:
    env = clean_env()
    return subprocess.Popen(
        [SCRIPT, "--config", str(config), "sync", *args],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


# Ctrl-C, cron's `timeout` and service managers, a closed terminal: exit 128 + the signal number.
# Each signal on SQLite; on PostgreSQL one is enough (the signal is handled before the replica).
@pytest.mark.parametrize("db_path, signum, code", [
    ("sqlite", signal.SIGINT, 130), ("sqlite", signal.SIGTERM, 143), ("sqlite", signal.SIGHUP, 129), ("postgresql", signal.SIGTERM, 143),
], indirect=["db_path"])
def test_a_stop_signal_closes_the_run_prints_its_summary_and_exits_128_plus_n(tmp_path, db_path, signum, code):
    with DemoSource(clients=DEMO_CLIENTS, latency_ms=150) as demo:
        config = write_config(tmp_path / "config.toml", demo.url, db_path, source={"concurrency": 1, "batch": "never"})
        returned, stderr = stop_when(_start_sync(config, tmp_path, "--days-back", "3"), lambda: _has_rows(db_path), signum)
    assert returned == code, stderr
    summary = unstamped(stderr).strip().splitlines()[-1]
    assert re.fullmatch(r"sync failed: \d+/12 clients, \d+ rows .*, window .*, \d+ requests, [\d.]+ s - interrupted", summary), stderr
    assert "Traceback" not in stderr
    status, *_, error = last_sync(db_path)
    assert (status, error) == ("failed", "interrupted")
    # Whatever was written is whole per client.
    per_client = query_db(db_path, "SELECT client_id, COUNT(*) FROM client_stats GROUP BY client_id")
    assert per_client and all(count == 3 for _, count in per_client) and len(per_client) < DEMO_CLIENTS
    ok = int(summary.split()[2].split("/")[0])
    assert ok == len(per_client)  # the summary counts what the run wrote


@pytest.mark.sqlite_only("how fast the run exits is the fetcher's; the stopped run's record on PostgreSQL: the test above")
def test_a_stopped_run_exits_at_once_though_a_fetch_waits_out_retry_after(tmp_path, db_path):
    with DemoSource(clients=4, latency_ms=100) as demo:
        config = write_config(tmp_path / "config.toml", demo.url, db_path, source={"concurrency": 2, "batch": "never"})
        # A replica exists already: a first sync that stores nothing leaves none (tests/test_files.py).
        assert _start_sync(config, tmp_path, "--days-back", "1", "--clients", "1").wait(timeout=30) == 0
        demo.listings = 0
        demo.requests.clear()
        proc = _start_sync(config, tmp_path, "--days-back", "3")
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not demo.listings:
                time.sleep(0.005)
            demo.faults.throttle_next, demo.faults.retry_after = 1000, "60"  # every stats request: 429, wait 60 s
            while time.monotonic() < deadline and len(demo.stats_requests()) < 2:
                time.sleep(0.02)
            time.sleep(0.2)  # both fetch threads are now sleeping out the Retry-After
            signalled = time.monotonic()
            proc.send_signal(signal.SIGINT)
            time.sleep(0.05)
            proc.send_signal(signal.SIGINT)  # an impatient second Ctrl-C
            _, stderr = proc.communicate(timeout=20)
            took = time.monotonic() - signalled
        finally:
            proc.kill()
    assert proc.returncode == 130
    assert took < 3, f"took {took:.1f} s to exit"
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].endswith("- interrupted")
    assert last_sync(db_path)[0] == "failed"


def _has_rows(db_path: Path | str) -> bool:
    try:
        return query_db(db_path, "SELECT COUNT(*) FROM client_stats")[0][0] > 0
    except Exception:  # the file or table does not exist yet
        return False


# --- absurd values --------------------------------------------------------------------------------------


def test_absurd_values_are_rejected_rows_not_a_crashed_run(cli, demo, config, db_path):
    day = demo.today().isoformat()
    demo.faults.extra_rows = {
        4: [{"stat_date": day, "grab_orders": "1e30"}],
        5: [{"stat_date": day, "grab_sales": 1e308, "gojek_sales": 1e308}],
    }
    result = cli("sync", "--days-back", "2")
    assert result.code == 1 and "sync partial: 12/12 clients" in result.stderr and "2 rejected" in result.stderr
    reasons = [r for (r,) in query_db(db_path, "SELECT reason FROM sync_rejects ORDER BY client_id")]
    assert "grab_orders: not a plausible count ('1e30')" in reasons[0] and "grab_sales: not a plausible amount" in reasons[1]
    # Every client's readable rows are stored and the rollups and reports still work.
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * 2,)]
    assert query_db(db_path, "SELECT status FROM sync_runs WHERE command = 'aggregate'") == [("ok",)]
    assert cli("query", "top", "--days", "10", "--format", "json").code == 0


# --- an empty client list ------------------------------------------------------------------------------


def test_an_empty_client_list_fails_the_run_and_deactivates_nobody(cli, demo, config, db_path):
    assert cli("sync", "--days-back", "2").code == 0
    demo.faults.hidden_clients = set(range(1, DEMO_CLIENTS + 1))
    result = cli("sync", "--days-back", "2")
    assert result.code == 1
    assert "sync failed:" in result.stderr and "the remote listed no clients; nothing changed" in result.stderr
    assert query_db(db_path, "SELECT COUNT(*), SUM(active) FROM clients") == [(DEMO_CLIENTS, DEMO_CLIENTS)]
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * 2,)]
    assert last_sync(db_path)[0] == "failed"
    assert cli("status", "--check").code == 1


# --- files that are not (our) replica ------------------------------------------------------------------


def test_a_foreign_sqlite_file_is_refused_and_left_alone(cli, demo, tmp_path):
    other = tmp_path / "accounts.db"
    execute_db(other, "CREATE TABLE invoices(id INTEGER PRIMARY KEY, total REAL)")
    before = other.read_bytes()
    write_config(tmp_path / "config.toml", demo.url, other)
    for args in (("sync", "--days-back", "1"), ("aggregate",), ("query", "top"), ("status",)):
        result = cli(*args)
        assert result.code == 2 and "not a delivery-sync replica" in result.stderr, (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1
    assert other.read_bytes() == before


@pytest.mark.parametrize("schema", [
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT); CREATE TABLE users(id INTEGER)",  # someone else's `meta`
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT); CREATE TABLE sync_runs(id INTEGER);"
    " INSERT INTO meta VALUES ('schema_version', 'two')",
])
def test_a_look_alike_database_is_refused_before_anything_changes(cli, demo, tmp_path, schema):
    other = tmp_path / "other.db"
    import sqlite3

    conn = sqlite3.connect(other)
    conn.executescript(schema)
    conn.close()
    before = other.read_bytes()
    write_config(tmp_path / "config.toml", demo.url, other)
    result = cli("sync", "--days-back", "1")
    assert result.code == 2 and "not a delivery-sync replica" in result.stderr
    assert other.read_bytes() == before and not other.with_name("other.db-wal").exists()


def test_a_replica_from_a_newer_delivery_sync_is_not_downgraded(cli, demo, config, db_path):
    assert cli("sync", "--days-back", "1").code == 0
    execute_db(db_path, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    result = cli("sync", "--days-back", "1")
    assert result.code == 2 and "schema version 99, newer than this delivery-sync knows" in result.stderr
    assert query_db(db_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [("99",)]


@pytest.mark.sqlite_only("SQLite's file lock taken by another program (PostgreSQL: tests/test_postgres.py, one writer)")
def test_a_replica_locked_by_another_program_is_one_clear_line(cli, demo, config, db_path, monkeypatch):
    import sqlite3

    from delivery_sync.replica import schema

    assert cli("sync", "--days-back", "1").code == 0
    monkeypatch.setattr(schema, "BUSY_TIMEOUT_MS", 200)  # not 10 s of waiting in a test
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # an analyst's sqlite3 session writing, say
    try:
        result = cli("sync", "--days-back", "1")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.code == 1 and "is locked by another program" in result.stderr
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr


@pytest.mark.sqlite_only("the run's record after a signal on PostgreSQL: test_a_stop_signal_closes_the_run..., for suite time")
def test_a_signal_while_the_client_list_is_retried_still_records_the_run(tmp_path, db_path):
    with DemoSource(clients=4) as demo:
        config = write_config(tmp_path / "config.toml", demo.url, db_path, source={"max_retries": 5})
        # A replica exists already: a first sync that stores nothing leaves none (tests/test_files.py).
        assert _start_sync(config, tmp_path, "--days-back", "1", "--no-aggregate").wait(timeout=30) == 0
        demo.requests.clear()
        demo.faults.throttle_next, demo.faults.retry_after = 1000, "60"  # the client list: 429, wait 60 s
        code, stderr = stop_when(_start_sync(config, tmp_path, "--days-back", "3"), lambda: bool(demo.requests), signal.SIGTERM, settle=0.3)
    assert code == 143, stderr
    summary = unstamped(stderr).strip().splitlines()[-1]
    assert re.fullmatch(r"sync failed: 0/0 clients, 0 rows .*, 1 request, [\d.]+ s - interrupted", summary), stderr
    assert query_db(db_path, "SELECT command, status, error FROM sync_runs") == [("sync", "ok", None), ("sync", "failed", "interrupted")]


def test_a_closed_stderr_does_not_change_the_exit_code(cli, config, db_path, tmp_path):
    assert cli("sync", "--days-back", "2").code == 0
    read, write = os.pipe()
    os.close(read)  # whoever read stderr is gone
    env = clean_env()
    exe = SCRIPT
    ok = subprocess.run([exe, "aggregate"], cwd=tmp_path, env=env, stderr=write, stdout=subprocess.DEVNULL, timeout=60)
    bad = subprocess.run([exe, "query", "top", "--days", "0"], cwd=tmp_path, env=env, stderr=write, stdout=subprocess.DEVNULL, timeout=60)
    os.close(write)
    assert (ok.returncode, bad.returncode) == (0, 2)
    assert query_db(db_path, "SELECT status FROM sync_runs WHERE command = 'aggregate' ORDER BY id DESC LIMIT 1") == [("ok",)]
