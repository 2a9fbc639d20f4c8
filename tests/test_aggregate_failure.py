"""A failed aggregate after an ok sync (issue 18, item 11): recorded as a failed `aggregate` run, the
sync's summary line still printed (saying so), and `status --check` fails until an aggregate succeeds."""

from __future__ import annotations

import re

from conftest import query_db, unstamped, write_config
from hardening import integrity, run_cli


def test_a_full_disk_during_the_aggregate_after_an_ok_sync(tmp_path, demo, db_path):
    config = write_config(tmp_path / "config.toml", demo.url, db_path)
    assert run_cli("--config", str(config), "sync", "--days-back", "365", "--no-aggregate").code == 0
    # The sync of one client-day fits in 200 KB; the full rebuild of the rollups after it does not.
    result = run_cli("--config", str(config), "sync", "--days-back", "1", "--clients", "1", fsize=200_000)
    assert result.code == 1, result.stderr
    assert "Traceback" not in result.stderr and "error:" not in result.stderr
    [summary] = [line for line in unstamped(result.stderr).splitlines() if "sync ok" in line]
    assert summary.startswith("sync ok: 1/1 clients, 1 row (0 inserted, 0 updated, 1 unchanged)")
    assert summary.endswith(f"; aggregate failed: cannot write replica {db_path}: disk I/O error "
                            "(disk full or file size limit reached)")
    runs = query_db(db_path, "SELECT command, status, error FROM sync_runs ORDER BY id DESC LIMIT 2")
    assert runs == [("aggregate", "failed", f"cannot write replica {db_path}: disk I/O error (disk full or file size limit reached)"),
                    ("sync", "ok", None)]
    assert integrity(db_path) == "ok"

    check = run_cli("--config", str(config), "status", "--check")
    assert check.code == 1
    # The repair command names the config this status was given, so it acts on the same replica.
    assert re.fullmatch(r"status not ok: last aggregate failed at \d{4}-\d\d-\d\d \d\d:\d\d UTC: cannot write replica .* "
                        r"\(disk full or file size limit reached\); the rollups may be out of date; "
                        rf"run: delivery-sync --config {re.escape(str(config))} aggregate\n",
                        check.stdout), check.stdout
    prom = run_cli("--config", str(config), "status", "--format", "prometheus")
    assert "\ndelivery_sync_ok 0\n" in prom.stdout
    assert 'delivery_sync_last_run_status{command="aggregate",status="failed"} 1' in prom.stdout

    assert run_cli("--config", str(config), "aggregate").code == 0  # the advice works
    assert run_cli("--config", str(config), "status", "--check").code == 0
