"""A large first sync into an empty replica builds client_stats' deferred indexes once its rows are
in, not row by row: the index is there after the run (ok, failed or killed and then opened again),
the same as a replica migrated anew; a small first sync, and a sync into a replica with rows, leave
them alone. SQLite throughout, PostgreSQL at the end. The syncs here are small: they lower the
threshold to see the deferral."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from datetime import timedelta

import psycopg
import pytest
from conftest import DEMO_CLIENTS, SCRIPT, client_by_client_sync, kill_when, query_db, write_config
from hardening import failed_summary, run_cli

from delivery_sync.demo_source import DemoSource
from delivery_sync.replica import session
from delivery_sync.replica.schema import DEFERRED_INDEXES
from delivery_sync.replica.session import DEFERRED_FROM_ROWS

# `delivery-sync` in its own process, deferring the indexes of a first sync of any size.
DEFERRING = [sys.executable, "-c", "import delivery_sync.replica.session as s; s.DEFERRED_FROM_ROWS = 0; "
             "from delivery_sync.cli.main import main; main()"]

INDEXES = "SELECT name, sql, rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'client_stats' ORDER BY name"


def indexes(db_path) -> dict[str, tuple[str, int]]:
    return {name: (sql, root) for name, sql, root in query_db(db_path, INDEXES)}


def fresh_indexes(tmp_path) -> dict[str, str]:
    """The CREATE INDEX statements of client_stats in a replica migrated anew."""
    return {name: sql for name, (sql, _) in indexes(_fresh(tmp_path)).items()}


@pytest.fixture
def deferring(monkeypatch):
    """In-process runs defer the indexes of a first sync of any size."""
    monkeypatch.setattr(session, "DEFERRED_FROM_ROWS", 0)


def test_a_first_sync_ends_with_every_index_of_a_new_replica(cli, config, db_path, tmp_path, deferring):
    assert cli("sync", "--days-back", "5").code == 0
    assert {name: sql for name, (sql, _) in indexes(db_path).items()} == fresh_indexes(tmp_path)
    assert set(DEFERRED_INDEXES) <= set(indexes(db_path))
    assert query_db(db_path, "PRAGMA integrity_check") == [("ok",)]  # the index holds every row, rightly
    plan = query_db(db_path, "EXPLAIN QUERY PLAN SELECT client_id FROM client_stats WHERE total_sales > 1e9")
    assert any("idx_client_stats_total_sales" in str(step) for step in plan), plan


def test_a_sync_into_a_replica_with_rows_leaves_its_indexes_alone(cli, config, db_path, deferring):
    # Deferring: even a sync large enough to defer its indexes keeps them once the table has rows.
    assert cli("sync", "--days-back", "5").code == 0
    before = indexes(db_path)
    assert cli("sync", "--days-back", "7").code == 0  # two new days for every client
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * 7,)]
    assert indexes(db_path) == before  # not dropped and built again: same root pages


def test_only_a_first_sync_of_more_rows_than_the_threshold_defers_them(cli, config, db_path, tmp_path, monkeypatch):
    assert DEFERRED_FROM_ROWS == 100_000  # the README's 127 clients x 365 days write theirs row by row
    fresh = {name: root for name, (_, root) in indexes(_fresh(tmp_path)).items()}
    rows = DEMO_CLIENTS * 5
    monkeypatch.setattr(session, "DEFERRED_FROM_ROWS", rows)  # 5 days of every client: not more
    assert cli("sync", "--days-back", "5").code == 0
    assert {name: root for name, (_, root) in indexes(db_path).items()} == fresh  # made with the replica, kept
    db_path.unlink()
    monkeypatch.setattr(session, "DEFERRED_FROM_ROWS", rows - 1)
    assert cli("sync", "--days-back", "5").code == 0
    rebuilt = {name: root for name, (_, root) in indexes(db_path).items()}
    assert rebuilt.keys() == fresh.keys()
    assert {name for name in fresh if rebuilt[name] != fresh[name]} == set(DEFERRED_INDEXES)  # dropped, built at the end
    assert query_db(db_path, "PRAGMA integrity_check") == [("ok",)]


def _fresh(tmp_path):
    from delivery_sync.replica import open_replica

    open_replica(tmp_path / "fresh.db").close()
    return tmp_path / "fresh.db"


def test_a_failed_first_sync_still_builds_the_index(cli, tmp_path, db_path, demo, deferring):
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch": "never", "max_retries": 0})  # fail at once
    demo.faults.fail_clients = {3: 500}  # one client fails: the run fails, the others are stored
    result = cli("sync", "--days-back", "5")
    assert result.code == 1, result.stderr
    assert query_db(db_path, "SELECT COUNT(DISTINCT client_id) FROM client_stats") == [(DEMO_CLIENTS - 1,)]
    assert set(DEFERRED_INDEXES) <= set(indexes(db_path))
    assert query_db(db_path, "PRAGMA integrity_check") == [("ok",)]


def test_a_first_sync_killed_mid_way_gets_its_index_from_the_next_run(tmp_path, db_path):
    clients, days = 40, 20
    with DemoSource(clients=clients, latency_ms=20) as demo:
        command, env = client_by_client_sync(tmp_path, demo, db_path, days)
        command = [*DEFERRING, *command[1:]]
        config = tmp_path / "config.toml"
        kill_when(command, env, lambda: db_path.exists() and _stored(db_path) > 0)
        stored = _stored(db_path)
        assert 0 < stored < clients * days
        assert not set(DEFERRED_INDEXES) & set(indexes(db_path))  # killed before it built the index
        # Reports still answer meanwhile, from the rows stored.
        top = subprocess.run([SCRIPT, "--config", str(config), "query", "top", "--days", "5", "--format", "csv"],
                             env=env, capture_output=True, text=True, timeout=60)
        assert top.returncode == 0, top.stderr
        # The next writing run's open builds it, whatever the run: here the same sync again, as cron would.
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        today = demo.today()
    assert set(DEFERRED_INDEXES) <= set(indexes(db_path))
    assert query_db(db_path, "SELECT COUNT(*), MIN(stat_date), MAX(stat_date) FROM client_stats") == [
        (clients * days, (today - timedelta(days=days - 1)).isoformat(), today.isoformat())]
    assert query_db(db_path, "PRAGMA integrity_check") == [("ok",)]


def _stored(database) -> int:
    """Rows in client_stats of a SQLite file or a PostgreSQL database; 0 before the table exists."""
    try:
        return query_db(database, "SELECT COUNT(*) FROM client_stats")[0][0]
    except (sqlite3.Error, psycopg.Error):  # not created yet
        return 0


def test_a_first_sync_stopped_by_a_full_disk_keeps_its_clients_and_builds_the_index(tmp_path, demo, db_path):
    # The file (and its WAL, which holds every migration's pages until a checkpoint) may grow to hold
    # the first client, not the second: the write that fails raises out of the sync after a commit,
    # with no transaction left open, and the indexes are built on the way out. (410,000 bytes: the
    # migrations, 0006's table included, one client, and the room that building the index takes.)
    config = write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch": "never", "concurrency": 1})
    failed = run_cli("--config", str(config), "sync", "--days-back", "200", "--no-aggregate", fsize=410_000, script=DEFERRING)
    assert failed.code == 1, failed.stderr
    line = failed_summary(failed.stderr)
    kept = query_db(db_path, "SELECT COUNT(*), COUNT(DISTINCT client_id) FROM client_stats")[0]
    assert 0 < kept[0] < DEMO_CLIENTS * 200 and kept[0] == kept[1] * 200  # whole clients only
    # Its line says what it wrote before the disk filled, and why it stopped.
    assert line.startswith(f"sync failed: {kept[1]}/{DEMO_CLIENTS} clients, {kept[0]} rows ({kept[0]} inserted, ")
    assert "disk full or file size limit reached" in line and "every stored client is as it was or fully updated" in line
    assert set(DEFERRED_INDEXES) <= set(indexes(db_path))
    assert query_db(db_path, "PRAGMA integrity_check") == [("ok",)]
    again = run_cli("--config", str(config), "sync", "--days-back", "200", "--no-aggregate")
    assert again.code == 0, again.stderr
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * 200,)]
    assert set(DEFERRED_INDEXES) <= set(indexes(db_path))


# --- PostgreSQL: the same deferral, with its own index statements ----------------------------------

PG_INDEXES = "SELECT c.relname, i.indexdef, c.oid FROM pg_indexes i JOIN pg_class c ON c.relname = i.indexname " \
             "WHERE i.schemaname = current_schema() AND i.tablename = 'client_stats' ORDER BY 1"


def pg_indexes(pg_url) -> dict[str, tuple[str, int]]:
    return {name: (definition, int(oid)) for name, definition, oid in query_db(pg_url, PG_INDEXES)}


def test_a_first_sync_into_postgresql_builds_its_deferred_indexes_once_its_rows_are_in(cli, demo, tmp_path, pg_url, deferring):
    from delivery_sync.config import PostgresURL
    from delivery_sync.replica import open_store
    from delivery_sync.replica.postgres import DEFERRED_INDEXES as PG_DEFERRED

    open_store(PostgresURL(pg_url)).open().close()  # the schema, migrated anew
    fresh = pg_indexes(pg_url)
    write_config(tmp_path / "config.toml", demo.url, pg_url)
    assert cli("sync", "--days-back", "5").code == 0
    built = pg_indexes(pg_url)
    assert {name: definition for name, (definition, _) in built.items()} == {name: definition for name, (definition, _) in fresh.items()}
    assert {name for name in fresh if built[name][1] != fresh[name][1]} == set(PG_DEFERRED)  # dropped, built at the end
    assert set(PG_DEFERRED) == set(DEFERRED_INDEXES)  # the same indexes as on SQLite
    assert query_db(pg_url, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * 5,)]
    assert cli("sync", "--days-back", "7").code == 0  # into a table with rows: left alone
    assert pg_indexes(pg_url) == built


def test_a_first_sync_into_postgresql_killed_mid_way_gets_its_indexes_from_the_next_run(tmp_path, pg_url):
    from delivery_sync.replica.postgres import DEFERRED_INDEXES as PG_DEFERRED

    clients, days = 40, 20
    with DemoSource(clients=clients, latency_ms=20) as demo:
        command, env = client_by_client_sync(tmp_path, demo, pg_url, days)
        command = [*DEFERRING, *command[1:]]
        kill_when(command, env, lambda: _stored(pg_url) > 0)
        assert 0 < _stored(pg_url) < clients * days
        assert not set(PG_DEFERRED) & set(pg_indexes(pg_url))  # killed before it built them
        # The server ends the killed run's session (and its advisory lock) once it sees the socket closed.
        for _ in range(500):
            if not query_db(pg_url, "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory'")[0][0]:
                break
            time.sleep(0.01)
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
    assert set(PG_DEFERRED) <= set(pg_indexes(pg_url))
    assert query_db(pg_url, "SELECT COUNT(*) FROM client_stats") == [(clients * days,)]
