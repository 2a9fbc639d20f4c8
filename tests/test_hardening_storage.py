"""Storage faults: a first sync that dies or hits a file-size limit leaves a
file the next run completes; a full disk, a read-only folder, a lock path that is a folder or an
unwritable replica each give one clear line and exit 1 or 2, and never lose a stored row."""

from __future__ import annotations

import os
import sqlite3

import pytest
from conftest import DEMO_CLIENTS, query_db, write_config
from hardening import IS_ROOT, failed_summary, integrity, one_line, run_cli, shared_folder, synced_shared_replica

from delivery_sync.replica import SCHEMA_VERSION


def stored(db_path) -> list[tuple]:
    return query_db(db_path, "SELECT * FROM client_stats ORDER BY client_id, stat_date")


def tables(db_path) -> set[str]:
    return {name for (name,) in query_db(db_path, "SELECT name FROM sqlite_master WHERE type = 'table'")}


@pytest.mark.parametrize("limit", [4096, 40_960, 90_000])
def test_first_sync_under_a_file_size_limit_leaves_a_file_the_next_run_completes(tmp_path, demo, db_path, limit):
    config = write_config(tmp_path / "config.toml", demo.url, db_path)
    failed = run_cli("--config", str(config), "sync", "--days-back", "30", fsize=limit)
    assert failed.code == 1, failed.stderr
    assert "disk full or file size limit" in one_line(failed.stderr)
    assert integrity(db_path) == "ok"
    assert "client_stats" not in tables(db_path) or query_db(db_path, "SELECT COUNT(*) FROM client_stats")[0][0] == 0

    again = run_cli("--config", str(config), "sync", "--days-back", "30")
    assert again.code == 0, again.stderr
    assert query_db(db_path, "SELECT COUNT(*), COUNT(DISTINCT client_id) FROM client_stats") == [(DEMO_CLIENTS * 30, DEMO_CLIENTS)]
    assert query_db(db_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    status = run_cli("--config", str(config), "status", "--json")
    assert status.code == 0 and '"freshness": "fresh"' in status.stdout


def test_a_file_holding_only_the_migration_table_is_completed(cli, config, db_path):
    # What sqlite-utils leaves when the first migration fails: its table, created outside the transaction.
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE _sqlite_migrations (id INTEGER PRIMARY KEY, migration_set TEXT, name TEXT, applied_at TEXT)")
    conn.close()
    result = cli("sync", "--days-back", "2")
    assert result.code == 0, result.stderr
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * 2,)]


def test_tables_without_schema_version_are_completed(cli, config, db_path):
    """Killed after the first migration committed, before `schema_version` was written."""
    import sqlite_utils

    from delivery_sync.replica.schema import migrations

    db = sqlite_utils.Database(db_path)
    migrations.apply(db)
    db.close()
    result = cli("sync", "--days-back", "2")
    assert result.code == 0, result.stderr
    assert query_db(db_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]


def test_another_programs_migrations_are_still_refused(cli, config, db_path):
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE _sqlite_migrations (id INTEGER PRIMARY KEY, migration_set TEXT, name TEXT, applied_at TEXT)")
    conn.execute("INSERT INTO _sqlite_migrations VALUES (1, 'other_app', '0001', '2026-01-01')")
    conn.commit()
    conn.close()
    result = cli("sync", "--days-back", "2")
    assert result.code == 2
    assert "not a delivery-sync replica" in result.stderr
    assert tables(db_path) == {"_sqlite_migrations"}


def test_full_disk_during_a_resync_loses_no_row(tmp_path, demo, db_path):
    config = write_config(tmp_path / "config.toml", demo.url, db_path)
    assert run_cli("--config", str(config), "sync", "--days-back", "10", "--no-aggregate").code == 0
    before = stored(db_path)
    size = db_path.stat().st_size
    # Room for a few clients' new days, not for a whole year.
    failed = run_cli("--config", str(config), "sync", "--days-back", "365", fsize=size + 64 * 1024)
    assert failed.code == 1, failed.stderr
    line = failed_summary(failed.stderr)
    assert line.startswith("sync failed: ") and line.endswith("(disk full or file size limit reached) "
                                                              "(free space and run again; every stored client is as it was or fully updated)")
    # Its row, when the full disk let it be closed, says so as the line does (not "crashed: OperationalError: ...").
    [(status, error)] = query_db(db_path, "SELECT status, error FROM sync_runs WHERE command = 'sync' ORDER BY id DESC LIMIT 1")
    assert status == "failed" and line.endswith(f" - {error}") and error.startswith("cannot write replica "), error
    assert integrity(db_path) == "ok"
    after = {(row[0], row[1]): row for row in stored(db_path)}
    for row in before:  # every stored row is still there, unchanged (demo data never change)
        assert after[(row[0], row[1])][:19] == row[:19]
    # Every client is either as it was (10 days) or fully updated (365 days).
    assert {n for (_, n) in query_db(db_path, "SELECT client_id, COUNT(*) FROM client_stats GROUP BY client_id")} <= {10, 365}
    again = run_cli("--config", str(config), "sync", "--days-back", "365", "--no-aggregate")
    assert again.code == 0, again.stderr
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * 365,)]
    assert query_db(db_path, "SELECT COUNT(*) FROM sync_runs WHERE status = 'running'") == [(0,)]


def test_lock_path_that_is_a_folder(cli, config, db_path):
    db_path.with_name(db_path.name + ".lock").mkdir()
    result = cli("sync", "--days-back", "2")
    assert result.code == 2
    assert "is a folder" in one_line(result.stderr) and ".lock" in result.stderr
    assert not db_path.exists()


def test_replica_path_that_is_a_folder(cli, config, db_path):
    db_path.mkdir()
    result = cli("sync", "--days-back", "2")
    assert result.code == 2
    assert "is a folder" in one_line(result.stderr)


def _owner_run(folder, *args):
    """As the owner of nothing in `folder`: nobody when root (root ignores modes), else us after chmod."""
    return run_cli(*args, as_nobody=IS_ROOT, cwd=folder)


def test_first_sync_in_a_folder_that_is_not_writable(tmp_path, demo):
    folder = shared_folder(tmp_path)
    config = write_config(folder / "config.toml", demo.url, folder / "replica.db")
    os.chmod(config, 0o644)
    os.chmod(folder, 0o555)
    try:
        result = _owner_run(folder, "--config", str(config), "sync", "--days-back", "2")
    finally:
        os.chmod(folder, 0o755)
    assert result.code == 2, result.stderr
    line = one_line(result.stderr)
    assert "replica.db.lock" in line and "write permission" in line
    assert not (folder / "replica.db").exists()


def test_sync_of_a_replica_it_may_not_write(tmp_path, demo):
    folder, config, db = synced_shared_replica(tmp_path, demo.url, 2)
    before = stored(db)
    lock = folder / "replica.db.lock"
    os.chmod(lock, 0o644)
    denied = _owner_run(folder, "--config", str(config), "sync", "--days-back", "3")
    assert denied.code == 2 and "cannot open lock file" in one_line(denied.stderr)
    # The folder and the lock are writable, the replica is not.
    os.chmod(folder, 0o777)
    os.chmod(lock, 0o666)
    os.chmod(db, 0o444)
    try:
        for command in (["sync", "--days-back", "3"], ["aggregate"], ["collect"]):
            result = _owner_run(folder, "--config", str(config), *command)
            assert result.code == 2, (command, result.stderr)
            line = one_line(result.stderr)
            assert "cannot write replica" in line and "write permission" in line, line
    finally:
        os.chmod(folder, 0o755)
        os.chmod(db, 0o644)
    assert stored(db) == before and integrity(db) == "ok"
