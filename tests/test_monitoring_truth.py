"""Monitoring that tells the truth (issue 18, items 10 and 12): a damaged replica makes `status` say NO
and `--check` exit 1; Prometheus metrics are still written (up 0) when the replica cannot be read;
the crontab line never leaves an old "ok" file or a temporary file behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import overwrite_page
from prometheus_client.parser import text_string_to_metric_families
from test_crontab import ENTRIES


def metrics(text: str) -> dict[str, float]:
    """Every unlabelled sample, by name (the parser raises on invalid exposition text)."""
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


@pytest.fixture
def synced(cli, config, db_path):
    assert cli("sync", "--days-back", "2").code == 0
    assert cli("status", "--check").code == 0
    return db_path


@pytest.mark.parametrize("table", ["client_stats", "sync_runs", "clients"])
def test_a_damaged_replica_makes_status_say_no(cli, synced, table):
    overwrite_page(synced, table=table)
    view, check, as_json, prom = cli("status"), cli("status", "--check"), cli("status", "--json"), cli("status", "--format", "prometheus")
    said = f"replica {synced} is corrupt or unreadable ("
    assert view.code == 0 and view.stdout.startswith(f"Replica can be trusted: NO - {said}")
    assert "Run: restore it from a backup, or move it away and run a full sync" in view.stdout
    assert "Rows" not in view.stdout  # no figure read from a damaged file is shown
    assert check.code == 1 and check.stdout.startswith(f"status not ok: {said}")
    data = json.loads(as_json.stdout)
    assert data["unreadable"].startswith(said) and data["verdict"]["ok"] is False and data["rows"] == 0
    assert prom.code == 0
    assert {k: metrics(prom.stdout)[k] for k in ("delivery_sync_up", "delivery_sync_ok", "delivery_sync_exists")} == {
        "delivery_sync_up": 0, "delivery_sync_ok": 0, "delivery_sync_exists": 1}
    # The sync that would repair nothing is refused, and the refusal stays visible in status.
    refused = cli("sync", "--days-back", "1")
    assert refused.code == 2 and "is corrupt" in refused.stderr
    assert cli("status", "--check").code == 1


def test_an_intact_replica_is_up(cli, synced):
    values = metrics(cli("status", "--format", "prometheus").stdout)
    assert values["delivery_sync_up"] == 1 and values["delivery_sync_ok"] == 1


def test_metrics_of_a_replica_that_cannot_be_opened_still_parse(cli, config, db_path):
    db_path.write_bytes(b"this is not a database, just text " * 200)
    prom = cli("status", "--format", "prometheus")
    assert prom.code == 0, prom.stderr
    values = metrics(prom.stdout)
    assert (values["delivery_sync_up"], values["delivery_sync_ok"], values["delivery_sync_fresh"], values["delivery_sync_exists"]) == (0, 0, 0, 1)
    # For a person and for cron, a damaged replica like any other: the verdict NO, and --check exits 1.
    view = cli("status")
    assert view.code == 0 and view.stdout.startswith("Replica can be trusted: NO - replica ")
    assert "is corrupt or unreadable (file is not a database)" in view.stdout
    assert cli("status", "--check").code == 1


def _run_cron_line(tmp_path: Path, config: Path) -> subprocess.CompletedProcess:
    [line] = [command for _, command in ENTRIES if "--format prometheus" in command]
    shell = line.replace("/var/lib/node_exporter", str(tmp_path / "node_exporter"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DELIVERY_SYNC_CONFIG": str(config)}
    return subprocess.run(["sh", "-c", shell], env=env, cwd=tmp_path, timeout=60, capture_output=True, text=True)


def test_the_cron_line_reports_a_damaged_replica_and_never_keeps_an_old_ok(cli, synced, config, tmp_path):
    target = tmp_path / "node_exporter"
    target.mkdir()
    prom = target / "delivery_sync.prom"
    assert _run_cron_line(tmp_path, config).returncode == 0
    assert metrics(prom.read_text())["delivery_sync_ok"] == 1

    overwrite_page(synced, table="client_stats")
    assert _run_cron_line(tmp_path, config).returncode == 0
    assert [p.name for p in target.iterdir()] == ["delivery_sync.prom"]
    assert (metrics(prom.read_text())["delivery_sync_up"], metrics(prom.read_text())["delivery_sync_ok"]) == (0, 0)

    # No metrics at all (the config file is gone): neither the old file nor the temporary one stays.
    config.unlink()
    _run_cron_line(tmp_path, config)
    assert list(target.iterdir()) == []


def test_an_empty_replica_file_holds_no_replica_yet(cli, config, db_path):
    """A file cut to 0 bytes (or touched) is what status says of a missing replica: NO, --check 1,
    metrics `exists 0`; a report says there is no replica."""
    db_path.write_bytes(b"")
    view, check, prom, query = cli("status"), cli("status", "--check"), cli("status", "--format", "prometheus"), cli("query", "top")
    assert view.code == 0 and view.stdout.startswith(f"Replica can be trusted: NO - no replica at {db_path} yet")
    assert check.code == 1 and check.stdout.startswith("status not ok: no replica")
    assert prom.code == 0 and (metrics(prom.stdout)["delivery_sync_exists"], metrics(prom.stdout)["delivery_sync_ok"]) == (0, 0)
    assert query.code == 2 and query.stderr.startswith(f"error: no replica at {db_path}")
    assert db_path.read_bytes() == b""  # read, never written


def test_metrics_of_a_postgresql_server_that_cannot_be_reached_still_parse(cli, tmp_path):
    prom = cli("--db", "postgresql://someone@127.0.0.1:1/replica", "status", "--format", "prometheus")
    assert prom.code == 0, prom.stderr
    values = metrics(prom.stdout)
    # Whether the replica exists is not known: not said to.
    assert (values["delivery_sync_up"], values["delivery_sync_ok"], values["delivery_sync_exists"]) == (0, 0, 0)
    check = cli("--db", "postgresql://someone@127.0.0.1:1/replica", "status", "--check")
    assert check.code == 1 and "cannot connect to database postgresql://someone@127.0.0.1:1/replica" in check.stderr
