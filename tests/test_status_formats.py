"""`status --history N`, `--format text|json|prometheus`, paths that cannot be a replica,
and the staleness warning of `query`."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import SCRIPT, clean_env, query_db, write_config
from freezegun import freeze_time
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture
def synced(cli, config, demo, db_path):
    # No retries: client 5 fails at once, where two backoffs cost every test using this 1.5 s.
    write_config(config, demo.url, db_path, source={"batch": "never", "max_retries": 0})
    demo.faults.fail_clients = {5: 500}
    assert cli("collect").code == 0
    assert cli("sync", "--days-back", "3").code == 1  # partial: client 5
    return demo


def _samples(text: str) -> dict[tuple, float]:
    """{(name, labels...): value} of a Prometheus exposition, as the reference parser reads it."""
    return {
        (sample.name, *sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_history_lists_the_last_runs_newest_first_in_the_view_and_json(cli, synced, db_path):
    ids = [row[0] for row in query_db(db_path, "SELECT id FROM sync_runs ORDER BY id DESC")]
    assert len(ids) == 3  # collect, sync, aggregate
    data = json.loads(cli("status", "--json", "--history", "2").stdout)
    assert [run["id"] for run in data["history"]] == ids[:2]
    assert [run["command"] for run in data["history"]] == ["aggregate", "sync"]
    assert data["history"][1]["status"] == "partial" and data["history"][1]["clients_failed"] == 1
    assert "history" not in json.loads(cli("status", "--json").stdout)  # only when asked for
    view = cli("status", "--history", "5").stdout
    assert "History (last 3 runs, newest first)" in view
    lines = view[view.index("History"):].splitlines()[1:]
    assert [line.split()[0] for line in lines if line.startswith("  #")] == [f"#{i}" for i in ids]
    assert any(line.startswith(f"  #{ids[1]} sync") and "partial" in line for line in lines)


def test_prometheus_output_parses_and_carries_the_documented_metrics(cli, synced, db_path):
    result = cli("status", "--format", "prometheus")
    assert result.code == 0 and result.stderr == ""
    samples = _samples(result.stdout)
    rows, finished = query_db(db_path, "SELECT (SELECT COUNT(*) FROM client_stats), "
                              "(SELECT finished_at FROM sync_runs WHERE command = 'sync')")[0]
    from datetime import datetime

    assert samples[("delivery_sync_rows",)] == rows == 11 * 3
    assert samples[("delivery_sync_last_sync_timestamp_seconds",)] == pytest.approx(datetime.fromisoformat(finished).timestamp())
    assert samples[("delivery_sync_last_ok_sync_timestamp_seconds",)] == 0  # no ok sync yet: an age alert fires
    assert samples[("delivery_sync_fresh",)] == 0 and samples[("delivery_sync_ok",)] == 0
    assert samples[("delivery_sync_clients", ("state", "active"))] == 12
    assert samples[("delivery_sync_clients", ("state", "failed"))] == 1
    assert samples[("delivery_sync_clients", ("state", "stale"))] == 1
    assert samples[("delivery_sync_missing_days",)] == 3
    assert samples[("delivery_sync_last_run_status", ("command", "sync"), ("status", "partial"))] == 1
    assert samples[("delivery_sync_last_run_status", ("command", "sync"), ("status", "ok"))] == 0
    assert samples[("delivery_sync_last_run_status", ("command", "collect"), ("status", "ok"))] == 1
    # Its help fits both engines ("WAL included" is SQLite's alone).
    helps = {family.name: family.documentation for family in text_string_to_metric_families(result.stdout)}
    assert helps["delivery_sync_replica_bytes"] == ("Size of the replica: the SQLite file with its WAL, or its tables and indexes "
                                                    "on the PostgreSQL server.")


def test_prometheus_fresh_is_1_after_an_ok_sync_and_0_once_stale(cli, config, demo):
    assert cli("sync", "--days-back", "2").code == 0
    assert _samples(cli("status", "--format", "prometheus").stdout)[("delivery_sync_fresh",)] == 1
    with freeze_time("2100-01-01"):
        assert _samples(cli("status", "--format", "prometheus").stdout)[("delivery_sync_fresh",)] == 0


def test_prometheus_on_a_missing_replica_still_parses(cli, db_path, config):
    samples = _samples(cli("status", "--format", "prometheus").stdout)
    assert samples[("delivery_sync_exists",)] == 0 and samples[("delivery_sync_fresh",)] == 0
    assert not db_path.exists()


def test_json_flag_and_format_agree_and_conflicts_are_usage_errors(cli, synced):
    assert json.loads(cli("status", "--json").stdout)["rows"] == json.loads(cli("status", "--format", "json").stdout)["rows"]
    assert cli("status", "--json", "--format", "prometheus").code == 2
    bad = cli("status", "--format", "xml")
    assert bad.code == 2 and "'xml' is not one of text, json, prometheus" in bad.stderr
    assert cli("status", "--history", "-1").code == 2
    huge = cli("status", "--history", "99999999999999999999")  # more than SQLite can bind: refused, not a crash
    assert huge.code == 2 and "--history" in huge.stderr and "unexpected" not in huge.stderr


def test_check_keeps_its_exit_code_in_every_format(cli, synced):
    assert cli("status", "--check").code == 1
    result = cli("status", "--check", "--format", "prometheus")
    assert result.code == 1 and "delivery_sync_ok 0" in result.stdout
    for args in (("--format", "json"), ("--json",)):
        result = cli("status", "--check", *args)
        assert result.code == 1 and json.loads(result.stdout)["verdict"]["ok"] is False


def test_status_on_a_folder_or_in_a_missing_folder_says_so(cli, tmp_path):
    folder = cli("--db", str(tmp_path), "status")
    assert folder.code == 2 and folder.stderr.startswith(f"error: {tmp_path} is a folder, not a replica file")
    missing = cli("--db", str(tmp_path / "nope" / "r.db"), "status")
    assert missing.code == 2 and "does not exist" in missing.stderr and "sync" not in missing.stdout
    # A report says the same: a folder is not a replica that a sync would make.
    report = cli("--db", str(tmp_path), "query", "top")
    assert report.code == 2 and report.stderr.startswith(f"error: {tmp_path} is a folder, not a replica file")
    assert "sync" not in report.stderr


def test_a_refused_run_leaves_no_lock_beside_a_file_that_is_not_a_replica(cli, tmp_path, demo):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    before = other.read_bytes()
    for command in (("sync", "--source", demo.url, "--days-back", "1"), ("aggregate",)):
        result = cli("--db", str(other), *command)
        assert result.code == 2 and "not a delivery-sync replica" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("other")) == ["other.db"]
    assert other.read_bytes() == before


def test_a_query_on_a_stale_or_unsynced_replica_warns_once_on_stderr(cli, config, demo):
    assert cli("sync", "--days-back", "2", "--clients", "1,2").code == 0  # the other 10 clients never confirmed
    fresh_out = cli("query", "top", "--format", "csv")
    assert fresh_out.code == 0
    [warning] = fresh_out.stderr.strip().splitlines()
    assert "warning: the replica is stale (10 active clients not confirmed; stale after 26 h)" in warning
    assert cli("sync", "--days-back", "2").code == 0
    ok = cli("query", "top", "--format", "csv")
    assert ok.stderr == "" and ok.stdout.splitlines()[0] == fresh_out.stdout.splitlines()[0]
    with freeze_time("2100-01-01"):
        late = cli("query", "top", "--format", "csv", "--from", "2026-01-01", "--to", "2026-01-02")
    assert "warning: the replica is stale (last ok sync finished" in late.stderr and late.stdout.startswith("client_id,")


def test_a_query_before_any_ok_sync_warns_that_figures_may_be_incomplete(cli, synced):
    result = cli("query", "totals", "--format", "json")
    assert result.code == 0 and json.loads(result.stdout)[0]["total_orders"] > 0
    assert "warning: no sync of this replica has ended ok yet" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_sync_retrying_the_client_list_already_shows_as_running(cli, tmp_path, config, demo, db_path):
    import subprocess
    import time

    assert cli("sync", "--days-back", "1").code == 0
    demo.faults.throttle_next, demo.faults.retry_after = 2, "1"  # the listing waits ~2 s (2 retries allowed)
    env = clean_env()
    proc = subprocess.Popen([SCRIPT, "sync", "--days-back", "1"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not demo.faults.throttle_next < 2:
            time.sleep(0.02)
        data = json.loads(cli("status", "--json").stdout)
        view = cli("status").stdout
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert [(r["command"], r["status"], r["pid"]) for r in data["running"]] == [("sync", "running", proc.pid)]
    assert "  sync       running  since " in view
    assert proc.returncode == 0
