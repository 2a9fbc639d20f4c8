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
    assert query_db(db_path, "SELECT status, rows_inserted FROM sync_runs ORDER BY id DESC LIMIT 1") == [("running", None)]
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
    (counters,) = query_db(db_path, "SELECT clients_ok, rows_inserted, rows_unchanged, requests FROM sync_runs WHERE error = 'interrupted'")
    assert counters == (0, 0, 0, 0)
    for args in (["status"], ["status", "--json"], ["status", "--check"]):
        result = cli("--db", str(db_path), *args)
        assert result.code in (0, 1) and "Traceback" not in result.stderr and "unexpected" not in result.stderr, result.stderr
    # A replica whose interrupted run was closed by an older delivery-sync, counters left NULL.
    conn_sql = "UPDATE sync_runs SET rows_inserted = NULL, rows_updated = NULL, rows_unchanged = NULL WHERE error = 'interrupted'"
    import sqlite3

    conn = sqlite3.connect(db_path)
    conn.execute(conn_sql)
    conn.execute("UPDATE sync_runs SET id = id + 100 WHERE error = 'interrupted'")  # make it the last sync
    conn.commit()
    conn.close()
    result = cli("--db", str(db_path), "status", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["last_sync"]["rows_inserted"] == 0
    text = cli("--db", str(db_path), "status")
    assert text.code == 0 and "TypeError" not in text.stderr, text.stderr
