"""Readers on a folder they cannot write: `status` and `query` read a replica on a
read-only folder, a backup copy or another user's folder, or say in one line what to grant."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest
from conftest import DEMO_CLIENTS, execute_db, write_config
from hardening import IS_ROOT, one_line, run_cli, shared_folder, synced_shared_replica


@pytest.fixture
def readonly_replica(tmp_path, demo):
    """A synced replica in a folder the reader may only read (another user's when we are root)."""
    folder, config, db = synced_shared_replica(tmp_path, demo.url, 3)
    assert not db.with_name("replica.db-wal").exists()  # a clean sync leaves no side files
    os.chmod(folder, 0o555)
    yield folder, config
    os.chmod(folder, 0o755)


def reader(folder, *args):
    return run_cli(*args, as_nobody=IS_ROOT, cwd=folder)


def test_status_and_query_read_a_folder_they_cannot_write(readonly_replica):
    folder, config = readonly_replica
    status = reader(folder, "--config", str(config), "status", "--json")
    assert status.code == 0, status.stderr
    facts = json.loads(status.stdout)
    assert facts["rows"] == DEMO_CLIENTS * 3 and facts["freshness"] == "fresh"
    top = reader(folder, "--config", str(config), "query", "top", "--limit", "3", "--format", "json")
    assert top.code == 0, top.stderr
    assert len(json.loads(top.stdout)) == 3
    count = reader(folder, "--config", str(config), "query", "sql", "SELECT COUNT(*) AS n FROM client_stats", "--format", "csv")
    assert count.stdout.splitlines() == ["n", str(DEMO_CLIENTS * 3)]
    # Still read-only: a write is refused, and nothing was created in the folder.
    write = reader(folder, "--config", str(config), "query", "sql", "DELETE FROM client_stats")
    assert write.code == 2
    assert sorted(os.listdir(folder)) == ["config.toml", "replica.db", "replica.db.lock"]


def test_a_reader_that_may_not_write_is_told_the_repair_is_for_one_that_may(readonly_replica):
    """A review: an analyst's account was told 'Run: delivery-sync ... sync --retry-failed', which
    it cannot run."""
    folder, config = readonly_replica
    db = folder / "replica.db"
    execute_db(db, "UPDATE sync_runs SET status = 'partial', clients_failed = 1, clients_ok = clients_ok - 1 WHERE command = 'sync'")  # as its owner
    execute_db(db, "INSERT INTO sync_failures(run_id, client_id, error) SELECT MAX(id), 5, 'HTTP 500' FROM sync_runs WHERE command = 'sync'")
    status = run_cli("--config", str(config), "status", "--json", as_nobody=IS_ROOT, cwd=folder)
    facts = json.loads(status.stdout)
    assert facts["verdict"]["advice"] == (f"delivery-sync --config {config} sync --retry-failed "
                                          "(by a user or role that may write the replica: this one may not)")
    assert "may_write" not in facts
    os.chmod(folder, 0o755)  # the writer's own view: the repair line alone
    owner = run_cli("--config", str(config), "status", "--json", cwd=folder)
    assert json.loads(owner.stdout)["verdict"]["advice"] == f"delivery-sync --config {config} sync --retry-failed"


def test_a_running_writer_makes_the_reader_say_what_to_grant(readonly_replica):
    folder, config = readonly_replica
    lock = folder / "replica.db.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(lock)!r}, os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = reader(folder, "--config", str(config), "status")
    finally:
        holder.kill()
        holder.wait()
    assert result.code == 2
    line = one_line(result.stderr)
    assert "a writing run holds the lock" in line and f"readers need write permission on {folder}" in line


def test_a_backup_copy_with_unmerged_wal_is_not_read_as_immutable(tmp_path, demo):
    source = tmp_path / "live"
    source.mkdir()
    db = source / "replica.db"
    config = write_config(source / "config.toml", demo.url, db)
    assert run_cli("--config", str(config), "sync", "--days-back", "3").code == 0
    # A copy taken while a program had writes only in the -wal.
    live = sqlite3.connect(db)
    live.execute("PRAGMA wal_autocheckpoint = 0")
    live.execute("UPDATE clients SET name = 'changed'")
    live.commit()
    backup = shared_folder(tmp_path, "backup")
    for name in ("replica.db", "replica.db-wal"):
        shutil.copy(source / name, backup / name)
        os.chmod(backup / name, 0o644)
    live.close()
    os.chmod(backup, 0o555)
    try:
        result = reader(backup, "--db", str(backup / "replica.db"), "query", "sql", "SELECT name FROM clients LIMIT 1")
    finally:
        os.chmod(backup, 0o755)
    assert result.code == 2
    line = one_line(result.stderr)
    assert "replica.db-wal holds writes not yet in the file" in line and "readers need write permission" in line


def test_a_backup_copy_without_the_lock_file_is_read(tmp_path, demo):
    live = tmp_path / "live"
    live.mkdir()
    config = write_config(live / "config.toml", demo.url, live / "replica.db")
    assert run_cli("--config", str(config), "sync", "--days-back", "2").code == 0
    backup = shared_folder(tmp_path, "backup")
    shutil.copy(live / "replica.db", backup / "replica.db")
    os.chmod(backup / "replica.db", 0o444)
    os.chmod(backup, 0o555)
    try:
        result = reader(backup, "--db", str(backup / "replica.db"), "status", "--json")
    finally:
        os.chmod(backup, 0o755)
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == DEMO_CLIENTS * 2
