"""Runs after a crash: a SIGKILLed run is shown dead at once, and a run it left
with NULL counters never breaks `status`."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from conftest import SCRIPT, query_db, write_config


def _killed_sync(tmp_path, demo, db_path):
    """A sync SIGKILLed while it waits for a slow client, after a first complete sync."""
    config = write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch": "never"})
    assert subprocess.run([SCRIPT, "--config", str(config), "sync", "--days-back", "2"], capture_output=True).returncode == 0
    demo.faults.slow_clients[5] = 30
    proc = subprocess.Popen([SCRIPT, "--config", str(config), "sync", "--days-back", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        limit = time.monotonic() + 20
        while not query_db(db_path, "SELECT 1 FROM sync_runs WHERE status = 'running'") and time.monotonic() < limit:
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return config


def test_a_killed_sync_is_shown_dead_not_running(cli, tmp_path, demo, db_path):
    _killed_sync(tmp_path, demo, db_path)
    assert query_db(db_path, "SELECT status, COALESCE(rows_inserted, 0) FROM sync_runs ORDER BY id DESC LIMIT 1") == [("running", 0)]
    result = cli("--db", str(db_path), "status", "--json")
    assert result.code == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["running"] == []
    assert facts["last_sync"]["status"] == "failed"
    assert facts["last_sync"]["error"] == "interrupted (it never recorded its end: its process was killed, or the replica failed under it)"
    assert facts["last_sync"]["rows_inserted"] == 0
    text = cli("--db", str(db_path), "status")
    assert text.code == 0 and "Traceback" not in text.stderr
    assert "last sync failed" in text.stdout and "running" not in text.stdout.lower().replace("interrupted", "")


def test_status_after_a_killed_sync_and_a_non_sync_writer(cli, tmp_path, demo, db_path):
    _killed_sync(tmp_path, demo, db_path)
    assert cli("--db", str(db_path), "aggregate").code == 0  # marks the killed run interrupted
    (counters,) = query_db(db_path, "SELECT clients_ok, rows_inserted, rows_unchanged, requests FROM sync_runs WHERE error LIKE 'interrupted%'")
    # What it committed before the kill (some of clients 1-4 may have been): two unchanged days a
    # client, never a request (counted at the end only).
    assert counters[0] < 5 and counters[1:] == (0, 2 * counters[0], 0)
    for args in (["status"], ["status", "--json"], ["status", "--check"]):
        result = cli("--db", str(db_path), *args)
        assert result.code in (0, 1) and "Traceback" not in result.stderr and "unexpected" not in result.stderr, result.stderr
    # A replica whose interrupted run was closed by an older delivery-sync, counters left NULL.
    conn_sql = "UPDATE sync_runs SET rows_inserted = NULL, rows_updated = NULL, rows_unchanged = NULL WHERE error LIKE 'interrupted%'"
    import sqlite3

    conn = sqlite3.connect(db_path)
    conn.execute(conn_sql)
    conn.execute("UPDATE sync_runs SET id = id + 100 WHERE error LIKE 'interrupted%'")  # make it the last sync
    conn.commit()
    conn.close()
    result = cli("--db", str(db_path), "status", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["last_sync"]["rows_inserted"] == 0
    text = cli("--db", str(db_path), "status")
    assert text.code == 0 and "TypeError" not in text.stderr, text.stderr


def test_a_killed_sync_s_row_says_what_it_wrote_and_when_it_was_last_seen(cli, tmp_path, demo, db_path):
    """A sync SIGKILLed after writing some clients: its row's counters are those of its last
    commit (written with the clients, in their transaction), shown by status while it is left
    `running` and kept when the next run closes it; its end is "not recorded", and its
    finished_at is its last client written, not the moment the next run found it."""
    from conftest import clean_env, kill_when

    config = write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch": "never", "concurrency": 1})
    assert subprocess.run([SCRIPT, "--config", str(config), "sync", "--days-back", "2"], capture_output=True).returncode == 0
    demo.faults.slow_clients[8] = 30  # clients 1-7 are written, then it waits on client 8
    time.sleep(1.1)  # stamps have whole seconds: the killed run starts in a later one than the first's writes
    kill_when([SCRIPT, "--config", str(config), "sync", "--days-back", "3"], clean_env(),
              lambda: query_db(db_path, "SELECT 1 FROM sync_runs WHERE status = 'running' AND clients_ok >= 7"))
    started, = query_db(db_path, "SELECT started_at FROM sync_runs WHERE status = 'running'")[0]
    written = query_db(db_path, "SELECT COUNT(*), MAX(last_synced_at) FROM clients WHERE last_synced_at >= ?", (started,))[0]
    assert written[0] == 7
    facts = json.loads(cli("--db", str(db_path), "status", "--json").stdout)["last_sync"]
    assert (facts["status"], facts["clients_ok"], facts["rows_fetched"], facts["rows_inserted"], facts["rows_unchanged"]) == (
        "failed", 7, 21, 7, 14)  # a third day each, two unchanged
    text = cli("--db", str(db_path), "status").stdout
    assert "end not recorded: 7/12 clients, 21 rows (7 inserted, 0 updated, 14 unchanged)" in " ".join(text.split()), text
    prometheus = cli("--db", str(db_path), "status", "--format", "prometheus").stdout
    assert 'delivery_sync_last_run_duration_seconds{command="sync"}' not in prometheus
    assert "delivery_sync_last_sync_timestamp_seconds 0" not in prometheus
    time.sleep(1.1)  # the next run starts in a later second than the killed one's last write
    demo.faults.slow_clients.clear()
    assert cli("--config", str(config), "aggregate").code == 0  # the next writing run closes it
    (row,) = query_db(db_path, "SELECT status, finished_at, error, clients_ok, rows_unchanged FROM sync_runs WHERE started_at = ? "
                               "AND command = 'sync'", (started,))
    assert row == ("failed", written[1], "interrupted (it never recorded its end: its process was killed, or the replica failed under it)",
                   7, 14)
